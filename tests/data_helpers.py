"""Builders shared by the data tests: tiny images, raw samples (good and deliberately broken), shards."""

from __future__ import annotations

import io
import json
import os
import tarfile

import numpy as np
from PIL import Image

from igr.data.shards import ShardSetWriter, encode_sample
from igr.data.synthetic import SyntheticConfig, make_shard_sample

H, W = 64, 48


def jpeg(a: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def solid(h: int = H, w: int = W, colour=(200, 60, 40)) -> np.ndarray:
    a = np.empty((h, w, 3), np.uint8)
    a[:] = colour
    return a


def box_mask(h: int = H, w: int = W, value: int = 255) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = value
    return m


def good_sample(key: str, category: str = "upper", h: int = H, w: int = W, garment: bool = True) -> dict:
    return encode_sample(key, jpeg(solid(h, w)), png(box_mask(h, w)), category,
                         jpeg(solid(h, w, (30, 90, 200))) if garment else None, {"source": "test"})


def write_tar(path: str, samples: list[dict]) -> None:
    """A tar shard from raw sample dicts (values bytes), bypassing every validation."""
    with tarfile.open(path, "w") as tar:
        for s in samples:
            for ext, data in s.items():
                if ext.startswith("__"):
                    continue
                info = tarfile.TarInfo(f"{s['__key__']}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def write_synthetic(out_dir: str, num: int, *, split: str = "train", seed: int = 0, size=(H, W),
                    per_shard: int = 1000, defect_fraction: float = 0.25) -> dict:
    cfg = SyntheticConfig(size=size, defect_fraction=defect_fraction)
    with ShardSetWriter(out_dir, split, max_count=per_shard, source="synthetic", image_size=size) as w:
        for i in range(num):
            w.write(make_shard_sample(seed, split, i, cfg))
        return w.close()


def write_keyed(out_dir: str, n_shards: int, per_shard: int, split: str = "train", h: int = H, w: int = W) -> list[str]:
    """Shards of plain good samples with keys k{shard}_{i}; returns the shard paths."""
    paths = []
    os.makedirs(out_dir, exist_ok=True)
    for s in range(n_shards):
        path = os.path.join(out_dir, f"{split}-{s:06d}.tar")
        write_tar(path, [good_sample(f"k{s}_{i}", h=h, w=w) for i in range(per_shard)])
        paths.append(path)
    return paths


def read_meta(raw: dict) -> dict:
    return json.loads(raw["meta.json"]) if raw.get("meta.json") else {}
