"""Procedural try-off data: flat in-shop garments and the same garments worn by a simple figure.

Every sample is a pure function of ``(seed, split, index)``: a garment is drawn once as an RGBA
"sprite" (silhouette × pattern × details, in body units), then

* the **target** is that sprite centred on a plain light background at a fixed scale, and
* the **person** wears the same sprite, warped (similarity + perspective + smooth bumps +
  sways, as a piecewise-bilinear mesh), shaded with folds, partly covered by hands and hair,
  on a varied background under coloured light,

so the task is learnable (same colours and pattern) but the worn garment is never a copy of the
target. The mask is exactly the visible garment pixels. A configurable fraction of samples
carries one *defect* the HQFT rules should catch (truncated, occluded, side view, extreme
proportion); ``meta.json`` records it as ground-truth ``flags``.

Modules: :mod:`~igr.data.synthetic.config` (labels, settings, seeding), :mod:`~.colours`, :mod:`~.garments` (the
garment sprite), :mod:`~.figure` (the person and camera), :mod:`~.warp` (the worn garment), :mod:`~.sample` (one
sample and its defects), :mod:`~.encode` (shard members).
"""

from igr.data.synthetic.colours import _family_hue, colour_family
from igr.data.synthetic.config import (
    COLOUR_FAMILIES,
    DEFECTS,
    GARMENT_TYPES,
    KINDS,
    PATTERNS,
    SyntheticConfig,
    SyntheticSample,
    sample_rng,
)
from igr.data.synthetic.encode import encode_jpeg, encode_png, make_shard_sample, synthetic_key
from igr.data.synthetic.garments import Garment, render_sprite
from igr.data.synthetic.sample import generate_sample

__all__ = [
    "COLOUR_FAMILIES",
    "DEFECTS",
    "GARMENT_TYPES",
    "KINDS",
    "PATTERNS",
    "Garment",
    "SyntheticConfig",
    "SyntheticSample",
    "_family_hue",
    "colour_family",
    "encode_jpeg",
    "encode_png",
    "generate_sample",
    "make_shard_sample",
    "render_sprite",
    "sample_rng",
    "synthetic_key",
]
