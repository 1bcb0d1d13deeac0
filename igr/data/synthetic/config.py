"""What the generator draws from (garment kinds, patterns, colour families, defects), its settings, one
sample's fields, and the random stream of each sample."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

DEFECTS = ("truncated", "occluded", "side_view", "extreme_proportion")


GARMENT_TYPES = {"upper": ("tee", "longsleeve", "tank"), "lower": ("trousers", "shorts", "skirt"),
                 "full": ("dress", "sleeved_dress")}


PATTERNS = ("solid", "stripes_h", "stripes_v", "stripes_d", "checks", "dots", "blocks")


KINDS = tuple(k for kinds in GARMENT_TYPES.values() for k in kinds)


# Colour families of a garment's dominant colour (meta.json "colour_family"): six 60° hue sectors centred on
# the primaries/secondaries, and three achromatic families. What a person would say the garment's colour is.
COLOUR_FAMILIES = ("red", "yellow", "green", "cyan", "blue", "magenta", "white", "grey", "black")


# Camera windows (body units, 0 = top of head, 1 = soles) framing each category like the real
# datasets: VITON-HD-style half-body for tops, waist-down for bottoms, full figure for dresses.
_WINDOWS = {"upper": (-0.04, 0.64), "lower": (0.22, 1.02), "full": (-0.03, 1.03)}


_SHOULDER_Y, _WAIST_Y = 0.165, 0.42


@dataclass
class SyntheticConfig:
    """Knobs of the generator. ``size`` is (H, W) of the written images."""

    size: tuple[int, int] = (128, 96)
    category_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)  # upper, lower, full
    defect_fraction: float = 0.25
    defect_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # order of DEFECTS
    supersample: int | None = None  # None: 2 below 300 px height, else 1
    jpeg_quality: int = 95
    flat_fill: tuple[float, float] = (0.8, 0.84)  # fraction of (H, W) a flat garment's bbox may fill

    def ss(self) -> int:
        return self.supersample or (2 if self.size[0] < 300 else 1)


@dataclass
class SyntheticSample:
    person: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # uint8 (H, W) {0, 1}
    garment: np.ndarray  # uint8 (H, W, 3)
    category: str
    meta: dict = field(default_factory=dict)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # crc32 keeps the split id stable across Python runs (hash() is salted).
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index])))
