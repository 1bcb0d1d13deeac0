"""Image files in the formats users bring, each with the RGB pixels a correct reader must see.

Expected pixels are written down from the format's definition (a 16-bit value v·257 is the 8-bit v; a
transparent pixel is white; EXIF orientation 6 means "rotate 90° clockwise to display"), never computed with
igr's reader. Images are 64×48 (H×W) as displayed, the tiny model's resolution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

H, W = 64, 48
FORMATS = ("exif_rotated", "rgba", "grey16", "cmyk", "palette", "grey", "la")
# JPEG is lossy: the EXIF case is a JPEG (as phones write it) and compares with a tolerance.
TOLERANCE = {"exif_rotated": 12}


def displayed(seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8 test picture: four flat quadrants, so rotations and flips are visible."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(4, 3))
    a = np.empty((H, W, 3), np.uint8)
    a[: H // 2, : W // 2], a[: H // 2, W // 2 :] = colours[0], colours[1]
    a[H // 2 :, : W // 2], a[H // 2 :, W // 2 :] = colours[2], colours[3]
    return a


def _object_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[8:56, 6:42] = True
    return m


def write(fmt: str, folder: Path, stem: str, seed: int = 0) -> tuple[Path, np.ndarray]:
    """Write ``stem.<ext>`` in format ``fmt``; return its path and the (H, W, 3) uint8 RGB a reader must give."""
    folder.mkdir(parents=True, exist_ok=True)
    pic = displayed(seed)
    if fmt == "exif_rotated":
        # Stored sideways (W×H) with Orientation 6: a viewer rotates it 90° clockwise to show `pic`.
        stored = Image.fromarray(pic).transpose(Image.Transpose.ROTATE_90)
        exif = Image.Exif()
        exif[0x0112] = 6
        path = folder / f"{stem}.jpg"
        stored.save(path, quality=98, subsampling=0, exif=exif)
        return path, pic
    if fmt == "rgba":
        # Garment opaque, background transparent with black RGB underneath (what PNG exporters write).
        m = _object_mask()
        rgba = np.zeros((H, W, 4), np.uint8)
        rgba[m, :3], rgba[m, 3] = pic[m], 255
        path = folder / f"{stem}.png"
        Image.fromarray(rgba, "RGBA").save(path)
        expected = np.full((H, W, 3), 255, np.uint8)
        expected[m] = pic[m]
        return path, expected
    if fmt == "grey16":
        grey = pic[..., 0]
        path = folder / f"{stem}.png"
        Image.fromarray(grey.astype(np.uint16) * 257).save(path)  # 16-bit PNG: v·257 is v at 8 bits
        assert Image.open(path).mode.startswith("I")
        return path, np.repeat(grey[..., None], 3, axis=2)
    if fmt == "cmyk":
        cmy = 255 - pic  # K = 0: R = 255 − C, G = 255 − M, B = 255 − Y exactly
        cmyk = np.concatenate([cmy, np.zeros((H, W, 1), np.uint8)], axis=2)
        path = folder / f"{stem}.tif"
        Image.fromarray(cmyk, "CMYK").save(path)
        return path, pic
    if fmt == "palette":
        path = folder / f"{stem}.png"
        img = Image.fromarray(pic).quantize(colors=8)  # four colours: the palette holds them exactly
        img.save(path)
        assert Image.open(path).mode == "P"
        return path, pic
    if fmt == "grey":
        grey = pic[..., 1]
        path = folder / f"{stem}.png"
        Image.fromarray(grey, "L").save(path)
        return path, np.repeat(grey[..., None], 3, axis=2)
    if fmt == "la":
        grey, m = pic[..., 2], _object_mask()
        la = np.stack([np.where(m, grey, 0), np.where(m, 255, 0)], axis=2).astype(np.uint8)
        path = folder / f"{stem}.png"
        Image.fromarray(la, "LA").save(path)
        expected = np.where(m, grey, 255).astype(np.uint8)
        return path, np.repeat(expected[..., None], 3, axis=2)
    raise KeyError(fmt)


def assert_pixels(got: np.ndarray, expected: np.ndarray, fmt: str) -> None:
    got = np.asarray(got)
    assert got.shape == expected.shape, f"{fmt}: shape {got.shape}, expected {expected.shape}"
    err = np.abs(got.astype(int) - expected.astype(int)).max()
    assert err <= TOLERANCE.get(fmt, 1), f"{fmt}: pixels differ by up to {err}"


def write_mask(path: Path, value: int = 255) -> Path:
    """An 8-bit 0/255 garment mask of the displayed size."""
    path.parent.mkdir(parents=True, exist_ok=True)
    m = np.zeros((H, W), np.uint8)
    m[10:50, 8:40] = value
    Image.fromarray(m).save(path)
    return path
