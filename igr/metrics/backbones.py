"""Backbone bookkeeping shared by the feature extractors: availability, weight identity, random init.

A backbone is built from a local weights file, or — only when a test asks for it — with a fixed random
init. ``build_backbone`` returns :class:`Unavailable` (carrying the ``n/a (...)`` text the report prints)
when the file is not configured or missing; a file that exists but cannot be loaded is an error.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from igr.metrics.config import BACKBONE_FILES, MetricsConfig

RANDOM_INIT_SEED = 0  # every rank and every run builds the same random network


@dataclass(frozen=True)
class Unavailable:
    """A metric that cannot be computed; ``reason`` is the full ``n/a (...)`` text."""

    reason: str


def fingerprint(path: Path) -> str:
    """Cheap identity of a weights file (name, size, hash of the first and last MiB) for cache keys."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read(1 << 20))
        if size > 2 << 20:
            f.seek(-(1 << 20), 2)
            h.update(f.read(1 << 20))
    return f"{path.name}:{size}:{h.hexdigest()[:16]}"


@contextlib.contextmanager
def seeded_init(seed: int = RANDOM_INIT_SEED) -> Iterator[None]:
    """Deterministic parameter init without touching the caller's global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def resolve_weights(config: MetricsConfig, key: str) -> Path | Unavailable | None:
    """The weights file for ``key``; ``None`` means "build with random init" (tests only)."""
    name = BACKBONE_FILES[key][0]
    path = config.weight_path(key)
    if path is not None and path.is_file():
        return path
    if config.allow_random_backbone:
        return None
    if path is None:
        return Unavailable(f"n/a (no {name} weights configured)")
    return Unavailable(f"n/a (no {name} weights at {path})")


def build_backbone(config: MetricsConfig, key: str, device: torch.device | str = "cpu"):
    """The extractor for backbone ``key`` on ``device``, or :class:`Unavailable`."""
    from igr.metrics import extractors, perceptual

    source = resolve_weights(config, key)
    if isinstance(source, Unavailable):
        return source
    if key == "inception":
        return extractors.InceptionFeatures(source, device=device)
    if key == "clip_vit_b_32":
        return extractors.ClipFeatures(source, device=device)
    if key == "alexnet":
        return perceptual.LPIPSMetric(source, linear_path=config.weights.lpips_linear, device=device)
    if key == "vgg16":
        return perceptual.DISTSMetric(source, alpha_beta_path=config.weights.dists_alpha_beta, device=device)
    raise KeyError(key)
