"""Metric configuration: which metrics, at what resolution, with which local backbone weights.

Weights come only from local files named here (``igr download-weights`` fetches them once). A backbone
whose file is not configured or not present makes its metrics ``n/a (...)``; nothing is downloaded and
nothing is silently computed with random weights. ``allow_random_backbone`` exists for tests only: the
same architectures are built with a fixed random init and every value they produce is labelled.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from igr.errors import IGRError

PAIRED_METRICS = ("ssim", "ssim_rgb", "lpips", "dists")
SET_METRICS = ("fid", "clip_fid", "kid")
ALL_METRICS = PAIRED_METRICS + SET_METRICS

# Training steps of the tiny world's garment classifier (igr.metrics.tiny). On the default demo's ground-truth test
# garments it reads kind / colour / pattern right 96.9 / 88.1 / 85.6 % after 600 steps and 98.8 / 90.0 / 95.6 %
# after 1,200: a lower ceiling under-states how far a model's pattern is from right (docs/tiny-world.md, round 10).
CLASSIFIER_STEPS = 1200

# backbone key -> (display name, file name `igr download-weights` writes, source URL)
BACKBONE_FILES: dict[str, tuple[str, str, str]] = {
    "inception": (
        "Inception",
        "inception-2015-12-05.pt",
        "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt",
    ),
    "clip_vit_b_32": (
        "CLIP ViT-B/32",
        "ViT-B-32.pt",
        "https://openaipublic.azureedge.net/clip/models/"
        "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
    ),
    "alexnet": (
        "AlexNet",
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    ),
    "vgg16": ("VGG16", "vgg16-397923af.pth", "https://download.pytorch.org/models/vgg16-397923af.pth"),
}

# metric -> backbone key it needs (SSIM needs none)
METRIC_BACKBONE = {
    "fid": "inception",
    "kid": "inception",
    "clip_fid": "clip_vit_b_32",
    "lpips": "alexnet",
    "dists": "vgg16",
}

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "metrics" / "default.yaml"


@dataclass
class WeightPaths:
    inception: str | None = None  # clean-fid's TorchScript Inception-V3
    clip_vit_b_32: str | None = None  # OpenAI CLIP ViT-B/32 (JIT archive or state dict)
    alexnet: str | None = None  # torchvision AlexNet state dict (LPIPS trunk)
    vgg16: str | None = None  # torchvision VGG16 state dict (DISTS trunk)
    lpips_linear: str | None = None  # None: the lpips package's bundled v0.1 alex.pth
    dists_alpha_beta: str | None = None  # None: DISTS_pytorch's bundled weights.pt


@dataclass
class KIDConfig:
    subset_size: int = 1000
    num_subsets: int = 100
    seed: int = 0


@dataclass
class MetricsConfig:
    weights: WeightPaths = field(default_factory=WeightPaths)
    weights_dir: str | None = None  # a null weights.<key> is looked up here under its standard file name
    resolution: tuple[int, int] | None = (1024, 768)  # H x W every image must have; None: any, but consistent
    metrics: tuple[str, ...] = ALL_METRICS
    kid: KIDConfig = field(default_factory=KIDConfig)
    batch_size: int = 8
    device: str = "cpu"
    cache_dir: str | None = None  # real-set feature cache; None: no caching
    allow_random_backbone: bool = False  # TESTS ONLY: build missing backbones with random weights, labelled

    def __post_init__(self) -> None:
        if isinstance(self.weights, dict):  # plain mappings, e.g. from a LightningCLI/YAML callback config
            self.weights = WeightPaths(**self.weights)
        if isinstance(self.kid, dict):
            self.kid = KIDConfig(**self.kid)
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise IGRError(f"metrics: unknown metric '{unknown[0]}' (known: {', '.join(ALL_METRICS)})")
        self.metrics = tuple(self.metrics)
        if self.resolution is not None:
            if len(self.resolution) != 2 or min(self.resolution) < 1:
                raise IGRError(f"resolution: expected [H, W], got {self.resolution}")
            self.resolution = (int(self.resolution[0]), int(self.resolution[1]))
        if self.kid.subset_size < 2 or self.kid.num_subsets < 1:
            raise IGRError("kid: subset_size must be >= 2 and num_subsets >= 1")

    def weight_path(self, key: str) -> Path | None:
        """The file configured for backbone ``key`` (explicit path, else ``weights_dir``/standard name)."""
        value = getattr(self.weights, key)
        if value is None and self.weights_dir is not None and key in BACKBONE_FILES:
            value = str(Path(self.weights_dir) / BACKBONE_FILES[key][1])
        return None if value is None else Path(os.path.expandvars(os.path.expanduser(value)))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "metrics config") -> MetricsConfig:
        data = dict(data or {})
        _check_keys(data, cls, source)
        weights = data.pop("weights", None) or {}
        kid = data.pop("kid", None) or {}
        _check_keys(weights, WeightPaths, f"{source}: weights")
        _check_keys(kid, KIDConfig, f"{source}: kid")
        if "resolution" in data and data["resolution"] is not None:
            data["resolution"] = tuple(data["resolution"])
        if "metrics" in data:
            data["metrics"] = tuple(data["metrics"])
        return cls(weights=WeightPaths(**weights), kid=KIDConfig(**kid), **data)

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> MetricsConfig:
        """Read a YAML config (default: the packaged ``configs/metrics/default.yaml``) and apply overrides."""
        path = Path(path) if path is not None else DEFAULT_CONFIG
        if not path.is_file():
            raise IGRError(f"{path}: metrics config not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise IGRError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
        if not isinstance(data, dict):
            raise IGRError(f"{path}: expected a mapping at the top level")
        config = cls.from_dict(data, source=str(path))
        return dataclasses.replace(config, **overrides) if overrides else config


def _check_keys(data: dict, cls, source: str) -> None:
    if not isinstance(data, dict):
        raise IGRError(f"{source}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise IGRError(f"{source}: unknown key '{unknown[0]}' (known: {', '.join(sorted(known))})")
