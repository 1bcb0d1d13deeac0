"""SSIM as the paper's table reports it (pyiqa's "ssim", which TryOffDiff used) and torchmetrics' RGB SSIM.

Pinned definition (docs/design.md §5): Y of YIQ (0.299 R + 0.587 G + 0.114 B) on the 0–255 scale, rounded;
11×11 Gaussian window, σ = 1.5; "valid" filtering (no padding); C1 = (0.01·255)², C2 = (0.03·255)²;
the contrast-structure term clamped at ≥ 0; mean of the SSIM map per image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from igr.metrics.images import check_uint8_pair

_C1 = (0.01 * 255) ** 2
_C2 = (0.03 * 255) ** 2


def gaussian_window_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Normalised 1-D Gaussian; its outer product is MATLAB's ``fspecial('gaussian', 11, 1.5)``."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def y_channel(img_uint8: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) uint8 → (B, 1, H, W) float64 rounded luma, computed like pyiqa.

    pyiqa reads images as float32 in [0, 1] and applies the YIQ matrix in float32 before scaling and
    rounding; doing the same keeps pixels whose luma lies exactly on .5 rounding the same way.
    """
    x = img_uint8.to(torch.float32) / 255.0
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float32, device=x.device)
    y = torch.matmul(x.permute(0, 2, 3, 1), w).unsqueeze(1)  # (B, 1, H, W)
    return (y * 255).round().to(torch.float64)


def _filter_valid_torch(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # The 2-D Gaussian is separable: two 1-D passes give the same valid-mode result as the 11×11 kernel.
    x = F.conv2d(x, g.view(1, 1, -1, 1))
    return F.conv2d(x, g.view(1, 1, 1, -1))


def _filter_valid_scipy(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # torch has no fast float64 convolution on the CPU; scipy's correlate1d is ~10x faster here.
    from scipy.ndimage import correlate1d

    r = (g.numel() - 1) // 2
    a, w = x.numpy(), g.numpy()
    a = correlate1d(a, w, axis=-2, mode="constant")[..., r:-r, :]
    a = correlate1d(a, w, axis=-1, mode="constant")[..., r:-r]
    return torch.from_numpy(np.ascontiguousarray(a))


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    return _filter_valid_scipy(x, g) if x.device.type == "cpu" else _filter_valid_torch(x, g)


def ssim_pinned(pred_uint8: torch.Tensor, gt_uint8: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM, shape (B,), float64 — the number in the paper's SSIM column."""
    check_uint8_pair(pred_uint8, gt_uint8)
    if min(pred_uint8.shape[-2:]) < 11:
        raise ValueError(f"SSIM needs images of at least 11×11 pixels, got {tuple(pred_uint8.shape[-2:])}")
    x, y = y_channel(pred_uint8), y_channel(gt_uint8)  # (B, 1, H, W) float64
    g = gaussian_window_1d().to(x.device)
    # one filtering call for all five moment maps
    moments = _filter_valid(torch.cat([x, y, x * x, y * y, x * y], dim=1), g)  # (B, 5, H-10, W-10)
    mu_x, mu_y, e_xx, e_yy, e_xy = moments.unbind(1)
    sigma_xx = e_xx - mu_x**2
    sigma_yy = e_yy - mu_y**2
    sigma_xy = e_xy - mu_x * mu_y
    cs = F.relu((2 * sigma_xy + _C2) / (sigma_xx + sigma_yy + _C2))
    ssim_map = (2 * mu_x * mu_y + _C1) / (mu_x**2 + mu_y**2 + _C1) * cs
    return ssim_map.mean(dim=(1, 2)).cpu()


def ssim_rgb(pred_uint8: torch.Tensor, gt_uint8: torch.Tensor) -> torch.Tensor:
    """Per-image torchmetrics SSIM on RGB (Gaussian 11, σ 1.5, data range 255), shape (B,), float64.

    Reported next to the pinned SSIM for reference only; it differs from it by a few hundredths. Computed in
    float32: torchmetrics in float64 takes ~19 s per 1024×768 pair on a 2-core CPU, float32 ~1.4 s.
    """
    from torchmetrics.functional.image import structural_similarity_index_measure

    check_uint8_pair(pred_uint8, gt_uint8)
    values = structural_similarity_index_measure(
        pred_uint8.to(torch.float32), gt_uint8.to(torch.float32), data_range=255.0, reduction="none"
    )
    return values.reshape(-1).double().cpu()
