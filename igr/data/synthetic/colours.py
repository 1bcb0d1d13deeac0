"""Colours: garment palettes, skin and hair tones, and the colour family a person would name (a label of
``meta.json``)."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

from igr.data.synthetic.config import COLOUR_FAMILIES


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def colour_family(rgb: tuple[int, int, int]) -> str:
    """The family of one sRGB colour: achromatic by value when saturation is low or value is very low,
    else the 60° hue sector (red centred on 0°)."""
    h, sat, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if v < 0.32:
        return "black"
    if sat < 0.15:
        return "white" if v > 0.75 else "grey"
    return COLOUR_FAMILIES[int(((h * 360 + 30) % 360) // 60)]


def _hex(c: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{v:02x}" for v in c)


def _dominant_colour(sprite: Image.Image, palette: list[tuple[int, int, int]]) -> int:
    """Index of the palette colour nearest to most of the garment's pixels (pattern, trim and logo included)."""
    a = np.asarray(sprite).astype(np.float32)
    px = a[a[..., 3] > 127][:, :3]
    if len(px) == 0:
        return 0
    d = ((px[:, None, :] - np.asarray(palette, np.float32)[None]) ** 2).sum(-1)
    return int(np.bincount(d.argmin(1), minlength=len(palette)).argmax())


def _shade(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v * f))) for v in c)


def _family_hue(h: float) -> float:
    """Squeeze a hue into the central 40° of its 60° family sector, so no garment colour sits on a family
    boundary and ``colour_family`` is a label a classifier (or a person) can get right."""
    deg = (h * 360 + 30) % 360
    sector, u = divmod(deg, 60)
    return ((sector * 60 + (u / 60 - 0.5) * 40) % 360) / 360


def _palette(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    h = _family_hue(rng.random())
    base = _hsv(h, rng.uniform(0.4, 0.9), rng.uniform(0.42, 0.92))
    mode = rng.integers(4)
    if mode == 0:  # complementary
        second = _hsv(_family_hue(h + 0.5 + rng.uniform(-0.08, 0.08)), rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95))
    elif mode == 1:  # same hue, other value
        second = _hsv(h, rng.uniform(0.25, 0.6), rng.uniform(0.85, 1.0) if rng.random() < 0.5 else rng.uniform(0.1, 0.22))
    elif mode == 2:  # white or near-black
        second = (245, 245, 240) if rng.random() < 0.6 else (30, 30, 38)
    else:  # analogous
        second = _hsv(_family_hue(h + rng.choice([-1, 1]) * rng.uniform(0.12, 0.25)), rng.uniform(0.5, 0.9),
                      rng.uniform(0.5, 0.95))
    third = _hsv(_family_hue(rng.random()), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return [base, second, third]


_SKIN = [(241, 194, 167), (224, 172, 138), (198, 134, 98), (161, 102, 70), (110, 70, 50), (255, 219, 190)]


_HAIR = [(30, 22, 18), (70, 45, 28), (120, 80, 40), (200, 160, 90), (90, 30, 20), (160, 160, 160)]
