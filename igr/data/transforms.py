"""Image transforms shared by the converters, the training pipeline and the restoration CLI.

Resizing always keeps the aspect ratio and pads (never stretches), so a garment keeps its
proportions whatever the source resolution. Paired augmentations move person and mask with one
transform, so the mask stays on the garment pixels.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

Fill = int | tuple[int, ...] | str

_BICUBIC = Image.Resampling.BICUBIC
_BILINEAR = Image.Resampling.BILINEAR
_BOX = Image.Resampling.BOX


def resize_pad_box(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Placement of a ``src_hw`` image inside ``dst_hw`` by :func:`resize_pad`.

    Returns ``(scale, (new_h, new_w), (top, left))``; lets a caller map boxes or undo the resize.
    """
    (h, w), (H, W) = src_hw, dst_hw
    scale = min(H / h, W / w)
    new_h = min(H, max(1, round(h * scale)))
    new_w = min(W, max(1, round(w * scale)))
    return scale, (new_h, new_w), ((H - new_h) // 2, (W - new_w) // 2)


def border_colour(img: Image.Image | np.ndarray) -> tuple[int, ...] | int:
    """Median colour of the outermost pixel ring: the padding colour that continues the background."""
    a = np.asarray(img)
    ring = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]], axis=0)
    med = np.median(ring, axis=0)
    if np.ndim(med) == 0:
        return int(med)
    return tuple(int(v) for v in med)


def resize_pad(
    img: Image.Image | np.ndarray,
    size: tuple[int, int],
    fill: Fill = "auto",
    resample: Image.Resampling = _BICUBIC,
) -> Image.Image | np.ndarray:
    """Resize ``img`` to fit ``size`` = (H, W) keeping its aspect ratio, and pad the rest.

    ``fill`` is a colour (int or tuple) or ``"auto"`` (the median border colour). A numpy input
    gives a numpy output. For a binary mask use :func:`resize_pad_mask`, which keeps it binary and
    places it exactly where this function places the image it belongs to.
    """
    as_array = isinstance(img, np.ndarray)
    pil = Image.fromarray(img) if as_array else img
    H, W = size
    if (pil.size[1], pil.size[0]) == (H, W):
        return np.asarray(pil).copy() if as_array else pil.copy()
    if isinstance(fill, str):
        if fill != "auto":
            raise ValueError(f"fill={fill!r}: expected a colour or 'auto'")
        fill = border_colour(pil)
    _, (nh, nw), (top, left) = resize_pad_box((pil.size[1], pil.size[0]), size)
    resized = pil.resize((nw, nh), resample, reducing_gap=3.0 if nw < pil.size[0] else None)
    if isinstance(fill, int) and pil.mode in ("RGB", "RGBA"):
        fill = (fill,) * len(pil.mode)
    canvas = Image.new(pil.mode, (W, H), fill)
    canvas.paste(resized, (left, top))
    return np.asarray(canvas).copy() if as_array else canvas


def resize_pad_mask(mask: np.ndarray | Image.Image, size: tuple[int, int]) -> np.ndarray:
    """:func:`resize_pad` for a binary mask ({0,1} or {0,255}): returns uint8 {0,1} of ``size``, padded with 0."""
    m = np.asarray(mask)
    m01 = (m > (127 if m.max(initial=0) > 1 else 0)).astype(np.uint8)
    if m01.shape == tuple(size):
        return m01
    pil = Image.fromarray(m01 * 255)
    _, (nh, nw), (top, left) = resize_pad_box(m01.shape, size)
    # Area/bilinear resampling then thresholding at half keeps edges where the image's edges go.
    resampled = pil.resize((nw, nh), _BOX if nw < pil.size[0] else _BILINEAR)
    out = np.zeros(size, np.uint8)
    out[top:top + nh, left:left + nw] = np.asarray(resampled) >= 128
    return out


def binarize_mask(mask: np.ndarray | Image.Image, threshold: int = 127) -> tuple[np.ndarray, int]:
    """Binarise a mask: returns ``(mask uint8 {0,1}, n_nonbinary)``.

    A mask stored as 0/255 (the shard format) is thresholded at ``threshold`` (value > threshold
    is garment); ``n_nonbinary`` counts the pixels that were neither 0 nor 255 (grey, e.g. from a
    JPEG-compressed or anti-aliased mask). A mask holding only 0 and 1 is already binary.
    Multi-channel input is reduced to its first channel.
    """
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., 0]
    if m.dtype != np.uint8:
        m = np.clip(m, 0, 255).astype(np.uint8)
    hist = np.bincount(m.ravel(), minlength=256)
    if hist[2:].sum() == 0:
        return m.astype(np.uint8, copy=True), 0  # only 0/1 values
    n_nonbinary = int(hist.sum() - hist[0] - hist[255])
    return (m > threshold).astype(np.uint8), n_nonbinary


@dataclass(frozen=True)
class AugmentParams:
    """One draw of the paired augmentation."""

    flip: bool
    scale: float
    shift: tuple[float, float]  # (dx, dy) in pixels


@dataclass(frozen=True)
class PairedAugment:
    """Flip, small scale and shift, applied identically to person and mask.

    Flipping is off by default: the paper does not flip, and a flipped pair mirrors logos and
    text into the training target. When on (``hflip_p`` > 0) the garment is flipped with the
    person, so a logo on the left of the worn garment stays on the left of the target. The
    garment is never scaled or shifted: the target framing is what the model must learn.
    """

    hflip_p: float = 0.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    shift_frac: float = 0.05

    def draw(self, rng: random.Random, hw: tuple[int, int]) -> AugmentParams:
        H, W = hw
        lo, hi = self.scale_range
        scale = math.exp(rng.uniform(math.log(lo), math.log(hi))) if hi > lo else lo
        dx = rng.uniform(-self.shift_frac, self.shift_frac) * W
        dy = rng.uniform(-self.shift_frac, self.shift_frac) * H
        return AugmentParams(rng.random() < self.hflip_p, scale, (dx, dy))

    @staticmethod
    def apply(person: Image.Image, mask: np.ndarray, garment: Image.Image | None, p: AugmentParams):
        """Returns (person, mask, garment) transformed by ``p``; person and mask share one mapping."""
        if p.flip:
            person = person.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            mask = mask[:, ::-1]
            if garment is not None:
                garment = garment.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if p.scale != 1.0 or p.shift != (0.0, 0.0):
            person = zoom_shift(person, p.scale, p.shift, border_colour(person), _BILINEAR)
            m = zoom_shift(Image.fromarray(np.ascontiguousarray(mask) * 255), p.scale, p.shift, 0, _BILINEAR)
            mask = (np.asarray(m) >= 128).astype(np.uint8)
        return person, np.ascontiguousarray(mask), garment


def zoom_shift(img: Image.Image, scale: float, shift: tuple[float, float], fill, resample=_BILINEAR) -> Image.Image:
    """The affine map out = scale·(in − centre) + centre + shift, as one box resize and a paste.

    The output rectangle the input lands on is snapped to whole pixels and the input box is
    computed back from it exactly, so two images of one size (person and mask) get the same
    sub-pixel mapping. A box resize is ~2x faster than PIL's generic affine transform.
    """
    W, H = img.size
    cx, cy = W / 2, H / 2
    tx, ty = shift
    ox0 = max(0, math.ceil(cx + tx - scale * cx))
    oy0 = max(0, math.ceil(cy + ty - scale * cy))
    ox1 = min(W, math.floor(cx + tx + scale * (W - cx)))
    oy1 = min(H, math.floor(cy + ty + scale * (H - cy)))
    canvas = Image.new(img.mode, (W, H), fill)
    if ox1 <= ox0 or oy1 <= oy0:
        return canvas

    def back(o, c, t):
        return (o - c - t) / scale + c

    box = (max(0.0, back(ox0, cx, tx)), max(0.0, back(oy0, cy, ty)),
           min(float(W), back(ox1, cx, tx)), min(float(H), back(oy1, cy, ty)))
    canvas.paste(img.resize((ox1 - ox0, oy1 - oy0), resample, box=box), (ox0, oy0))
    return canvas


def image_to_tensor(img: Image.Image | np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 (3, H, W) in [-1, 1]."""
    import torch  # here, not at the top: the converters and `igr make-shards` need no torch

    a = np.asarray(img)
    t = torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1).float()
    return t.div_(127.5).sub_(1.0)


def mask_to_tensor(mask: np.ndarray) -> torch.Tensor:
    """uint8 HxW {0,1} -> float32 (1, H, W) in {0, 1}."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask)).float().unsqueeze(0)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """float (3, H, W) in [-1, 1] -> uint8 HxWx3 (the inverse of :func:`image_to_tensor`)."""
    import torch

    a = ((t.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return a.permute(1, 2, 0).numpy()
