"""One sample as shard members (JPEG/PNG bytes, key, ``meta.json``) for the shard writer."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from igr.data.shards import encode_sample
from igr.data.synthetic.config import SyntheticConfig
from igr.data.synthetic.sample import generate_sample


def encode_jpeg(a: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    # 4:4:4 chroma: thin coloured stripes survive at 96 px width.
    Image.fromarray(a).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def encode_png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def synthetic_key(split: str, seed: int, index: int) -> str:
    return f"synth_{split}_s{seed}_{index:07d}"


def make_shard_sample(seed: int, split: str, index: int, cfg: SyntheticConfig) -> dict:
    """Generate and encode one sample for :class:`~igr.data.shards.ShardSetWriter`."""
    s = generate_sample(seed, split, index, cfg)
    return encode_sample(
        synthetic_key(split, seed, index),
        person=encode_jpeg(s.person, cfg.jpeg_quality),
        mask=encode_png(s.mask * 255),
        category=s.category,
        garment=encode_jpeg(s.garment, cfg.jpeg_quality),
        meta=s.meta,
    )
