"""Set-level feature extractors: clean-fid's Inception-V3 (FID, KID) and CLIP ViT-B/32 (CLIP-FID).

Each maps a (B, 3, H, W) uint8 batch to a (B, D) float32 CPU tensor and reproduces clean-fid's own
preprocessing, so features match what ``cleanfid.fid.compute_fid`` computes from image files:

- Inception, mode "clean": each channel resized to 299×299 separately as a float32 PIL image with bicubic
  filtering (no quantisation), clipped to [0, 255], then (x − 128)/128 into the TorchScript network's
  ``layers`` (pool3, 2048-d).
- CLIP (``model_name="clip_vit_b_32"``): PIL bicubic resize of the short side to 224, centre crop 224×224,
  back to uint8, /255, OpenAI CLIP mean/std, ``encode_image`` (512-d, not L2-normalised).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision.transforms.functional as TF
from PIL import Image
from torch import nn

from igr.errors import WeightsError
from igr.metrics.backbone_base import fingerprint, seeded_init
from igr.metrics.images import check_uint8_batch, tensor_to_hwc

PREPROCESS_VERSION = "1"  # bump when preprocessing changes so cached real-set features are recomputed


class FeatureExtractor:
    """(B, 3, H, W) uint8 → (B, dim) float32 features on the CPU."""

    key: str
    dim: int
    label: str

    def __init__(self, weights: Path | None, device: torch.device | str) -> None:
        self.weights = weights
        self.random_init = weights is None
        self.device = torch.device(device)
        source = "random-init" if weights is None else fingerprint(weights)
        self.identity = f"{self.key}|{source}|preprocess-{PREPROCESS_VERSION}"
        self.net: nn.Module

    @property
    def description(self) -> str:
        if self.random_init:
            return f"{self.label}: RANDOM-INIT weights (test only; values are meaningless)"
        return f"{self.label}: weights {self.weights}"

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        check_uint8_batch(images)
        if images.shape[0] == 0:
            return torch.zeros(0, self.dim)
        x = self.preprocess(images).to(self.device)
        feats = self.net(x).reshape(images.shape[0], -1)
        if feats.shape[1] != self.dim:
            raise WeightsError(
                f"{self.weights}: {self.label} produced {feats.shape[1]}-d features, expected {self.dim}"
            )
        return feats.float().cpu()


def _jit_load(path: Path) -> torch.jit.ScriptModule:
    # clean-fid's Inception and OpenAI's CLIP are published as TorchScript archives; torch 2.x warns that
    # TorchScript is deprecated, which is noise for a read-only load of a fixed file.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return torch.jit.load(str(path), map_location="cpu")


# ---------------------------------------------------------------------------------------------- Inception


def _clean_resize_299(image_hwc: np.ndarray) -> np.ndarray:
    """clean-fid's "clean" resize: per-channel float32 PIL bicubic to 299×299, clipped, not quantised."""
    channels = []
    for c in range(3):
        im = Image.fromarray(image_hwc[:, :, c].astype(np.float32))  # mode "F"
        channels.append(np.asarray(im.resize((299, 299), resample=Image.BICUBIC)).clip(0, 255))
    return np.stack(channels, axis=0).astype(np.float32)  # (3, 299, 299)


class _Normalise128(nn.Module):
    """clean-fid feeds the TorchScript network (x − 128)/128 for x in [0, 255]."""

    def __init__(self, layers: nn.Module) -> None:
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - 128) / 128)


def _random_fid_inception() -> nn.Module:
    """pytorch-fid's Inception-V3 topology (the TF FID network) up to pool3, random init (tests only)."""
    import torchvision
    from cleanfid import inception_pytorch as ip

    with seeded_init():
        # torchvision's public constructor, as clean-fid's private _inception_v3 calls it (its own init skipped)
        net = torchvision.models.inception_v3(num_classes=1008, aux_logits=False, weights=None, init_weights=False)
        net.Mixed_5b = ip.FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = ip.FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = ip.FIDInceptionA(288, pool_features=64)
        net.Mixed_6b = ip.FIDInceptionC(768, channels_7x7=128)
        net.Mixed_6c = ip.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6d = ip.FIDInceptionC(768, channels_7x7=160)
        net.Mixed_6e = ip.FIDInceptionC(768, channels_7x7=192)
        net.Mixed_7b = ip.FIDInceptionE_1(1280)
        net.Mixed_7c = ip.FIDInceptionE_2(2048)
        for m in net.modules():
            if isinstance(m, nn.Conv2d):  # variance-preserving, so random features neither vanish nor explode
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return nn.Sequential(
        net.Conv2d_1a_3x3,
        net.Conv2d_2a_3x3,
        net.Conv2d_2b_3x3,
        nn.MaxPool2d(3, 2),
        net.Conv2d_3b_1x1,
        net.Conv2d_4a_3x3,
        nn.MaxPool2d(3, 2),
        net.Mixed_5b,
        net.Mixed_5c,
        net.Mixed_5d,
        net.Mixed_6a,
        net.Mixed_6b,
        net.Mixed_6c,
        net.Mixed_6d,
        net.Mixed_6e,
        net.Mixed_7a,
        net.Mixed_7b,
        net.Mixed_7c,
        nn.AdaptiveAvgPool2d(1),
    )


class InceptionFeatures(FeatureExtractor):
    key = "inception"
    dim = 2048
    label = "Inception-V3 pool3 (clean-fid TorchScript, mode 'clean')"

    def __init__(self, weights: Path | None, device: torch.device | str = "cpu") -> None:
        super().__init__(weights, device)
        if weights is None:
            layers = _random_fid_inception()
        else:
            try:
                layers = _jit_load(weights).eval().layers
            except Exception as exc:
                msg = str(exc).splitlines()[0] if str(exc) else ""
                raise WeightsError(
                    f"{weights}: not clean-fid's TorchScript Inception ({exc.__class__.__name__}: {msg})"
                ) from exc
        self.net = _Normalise128(layers).eval().to(self.device)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.stack([_clean_resize_299(tensor_to_hwc(im)) for im in images]))


# ---------------------------------------------------------------------------------------------------- CLIP

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_resize_crop(image_hwc: np.ndarray) -> np.ndarray:
    """clean-fid's ``img_preprocess_clip``: bicubic short side → 224, centre crop 224, uint8."""
    im = Image.fromarray(image_hwc)
    im = TF.resize(im, 224, interpolation=TF.InterpolationMode.BICUBIC)
    im = TF.center_crop(im, [224, 224])
    return np.asarray(im).clip(0, 255).astype(np.uint8)


def read_clip_visual_state(path: Path) -> dict[str, torch.Tensor]:
    """The image-tower weights from OpenAI's ``ViT-B-32.pt`` (a JIT archive) or an open_clip state dict."""
    from igr.weights_io import read_state_dict

    try:
        state = _jit_load(path).state_dict()
    except Exception:  # not a TorchScript archive: a plain state dict (.pt/.bin/.safetensors)
        state = read_state_dict(path)
    state = state.get("state_dict", state)
    visual = {k[len("visual.") :]: v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise WeightsError(
            f"{path}: no 'visual.*' keys (expected an OpenAI/open_clip CLIP ViT-B/32 checkpoint)"
        )
    return {k: v.float() for k, v in visual.items()}


class ClipFeatures(FeatureExtractor):
    key = "clip_vit_b_32"
    dim = 512
    label = "CLIP ViT-B/32 image embedding (OpenAI weights, open_clip, clean-fid preprocessing)"

    def __init__(self, weights: Path | None, device: torch.device | str = "cpu") -> None:
        import open_clip
        from open_clip.model import _build_vision_tower

        from igr.weights_io import load_into

        super().__init__(weights, device)
        cfg = open_clip.get_model_config("ViT-B-32")
        with seeded_init():
            # Only the image tower (what CLIP.encode_image runs); OpenAI's ViT-B/32 uses QuickGELU.
            visual = _build_vision_tower(cfg["embed_dim"], cfg["vision_cfg"], quick_gelu=True)
        if weights is not None:
            load_into(visual, read_clip_visual_state(weights), weights)
        self.net = visual.eval().to(self.device)
        self.mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.from_numpy(np.stack([clip_resize_crop(tensor_to_hwc(im)) for im in images]))
        x = x.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std
