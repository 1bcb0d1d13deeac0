"""Image tensors the metrics accept: (B, 3, H, W) uint8 RGB, and the conversions into that form."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from igr.imageio import read_rgb

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def check_uint8_batch(images: torch.Tensor, name: str = "images") -> None:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise TypeError(f"{name}: expected dtype uint8 (0–255), got {images.dtype}; use to_uint8() first")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{name}: expected shape (B, 3, H, W), got {tuple(images.shape)}")


def check_uint8_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    check_uint8_batch(pred, "pred")
    check_uint8_batch(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred and gt shapes differ: {tuple(pred.shape)} vs {tuple(gt.shape)}")


def to_uint8(
    images: torch.Tensor, value_range: tuple[float, float] = (0.0, 1.0), name: str = "images"
) -> torch.Tensor:
    """Float (B, 3, H, W) in ``value_range`` → uint8 by round(255·(x − lo)/(hi − lo)), as saving a PNG does.

    Values outside the range by more than a rounding slack are a caller bug (wrong range), not something to
    clamp silently.
    """
    if images.dtype == torch.uint8:
        return images
    lo, hi = value_range
    x = (images.detach().to(torch.float32) - lo) / (hi - lo)
    slack = 1e-3
    if x.numel() and (x.min() < -slack or x.max() > 1 + slack):
        raise ValueError(
            f"{name}: values span [{images.min().item():.3g}, {images.max().item():.3g}], "
            f"outside the declared range [{lo}, {hi}]"
        )
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def hwc_to_tensor(array: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 → (3, H, W) uint8."""
    return torch.from_numpy(np.array(array, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()


def tensor_to_hwc(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 → (H, W, 3) uint8 numpy (on the CPU)."""
    return image.detach().cpu().permute(1, 2, 0).numpy()


def load_rgb(path, size_hw: tuple[int, int] | None = None, what: str = "image") -> torch.Tensor:
    """Read an image file as (3, H, W) uint8 RGB (:mod:`igr.imageio`: EXIF orientation, alpha on white,
    16-bit scaled); resize to ``size_hw`` with PIL bicubic if given."""
    im = read_rgb(path, what)
    if size_hw is not None and (im.height, im.width) != tuple(size_hw):
        im = im.resize((size_hw[1], size_hw[0]), resample=Image.BICUBIC)
    return hwc_to_tensor(np.asarray(im))
