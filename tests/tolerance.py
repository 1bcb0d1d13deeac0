"""The suite's float32 tolerance rule (tests/README.md, "Numerical tolerances").

Two float32 computations of the same value by different operation orders (another code path, another batch
size, another kernel the CPU's SIMD width picks, another thread count) differ by rounding alone. Each rounding is
at most eps/2 relative to the running value; summed with random signs over the ``ops`` roundings that feed one
output, the error grows like eps * sqrt(ops) relative to the values' scale (max |value|), not to each element:
an element near zero that came out of a long reduction carries the error of the large terms it summed.

    atol = safety * eps * sqrt(ops) * scale          (rtol = 0)

``ops`` is the accumulation length behind one output: the widest reduction a value passes through times the
number of such reductions in a row (layers, sampler steps). The constants below give it for the networks the
suite runs. ``safety`` (default 4) covers the gain of the layers between (normalisation, guidance). The bound
is far below what a real bug moves (1e-3 and more on values of scale 1); each test that relies on it also checks
that the alternative it rules out is farther away than that.
"""

from __future__ import annotations

import math

import numpy as np
import torch

EPS32 = float(torch.finfo(torch.float32).eps)  # 1.19e-7

# One forward of the tiny UNet (configs/model/tiny.yaml): its widest reduction is a 3x3 conv over the
# 128-channel skip concatenation (1,152 terms), ~24 such layers in a row (resnets, attention, up/down blocks).
TINY_UNET_OPS = 3 * 3 * 128 * 24
# One encode or decode of the tiny VAE: 3x3 convs over at most 64 (decoder: 128 at the skip-free mid) channels,
# ~16 in a row; bounded by the UNet's figure.
TINY_VAE_OPS = TINY_UNET_OPS


def tiny_restore_ops(steps: int) -> int:
    """A whole restoration with the tiny model: encode, ``steps`` denoiser calls in a row, decode."""
    return TINY_VAE_OPS + steps * TINY_UNET_OPS + TINY_VAE_OPS


# Torchvision/open_clip backbones of the metrics at their real widths (random weights in the tests).
ALEXNET_OPS = 3 * 3 * 384 * 5  # LPIPS: five conv layers, the widest 3x3x384
VGG16_OPS = 3 * 3 * 512 * 13  # DISTS: thirteen conv layers, the widest 3x3x512
INCEPTION_OPS = 3 * 3 * 384 * 48  # FID: ~48 conv layers in a row, the widest 3x3x384
VIT_B_32_OPS = 3072 * 12 * 2  # CLIP ViT-B/32: 12 blocks, two matmuls each, the widest over 3,072 features


def _f64(x) -> torch.Tensor:
    if torch.is_tensor(x):
        return x.detach().cpu().to(torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def f32_rtol(ops: int, safety: float = 4.0) -> float:
    """The relative error bound for float32 work of accumulation length ``ops``."""
    return safety * EPS32 * math.sqrt(max(ops, 1))


def f32_atol(expected, ops: int, safety: float = 4.0, scale: float | None = None) -> float:
    """The absolute bound: ``f32_rtol`` times the values' scale (max |expected| unless given)."""
    if scale is None:
        e = _f64(expected)
        scale = float(e.abs().max()) if e.numel() else 0.0
    return f32_rtol(ops, safety) * max(scale, 1e-30)


def assert_close_f32(actual, expected, *, ops: int, safety: float = 4.0, scale: float | None = None, msg=None):
    """Assert that ``actual`` equals ``expected`` up to float32 rounding of accumulation length ``ops``.

    Takes tensors, arrays or floats; compares in float64 so that the check itself adds no rounding."""
    a, e = _f64(actual), _f64(expected)
    atol = f32_atol(e, ops, safety, scale)
    note = f"float32 bound for ops={ops}: atol={atol:.3g}" + (f"; {msg}" if msg else "")
    torch.testing.assert_close(a, e, atol=atol, rtol=0, msg=lambda m: f"{m}\n{note}")
