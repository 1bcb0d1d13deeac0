"""VITON-HD (zalando-hd-resized) → shards.

Layout: ``ROOT/{train,test}/image/*.jpg`` (persons), ``cloth/*.jpg`` (in-shop garments, same
name as the person they belong to), ``image-parse-v3/*.png`` (parsing; labels 5, 6, 7 = upper
clothes, dress, coat — the upper garment) and/or ``agnostic-mask/*_mask.png`` (the try-on
inpainting region, larger than the garment), plus ``ROOT/{train,test}_pairs.txt``.

Try-off is paired by construction: each person is matched with *its own* garment (the cloth of
the same name), as TryOffDiff evaluates; the second column of ``test_pairs.txt`` (an unpaired
try-on garment) is ignored. All garments are ``upper``.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image

from igr.data.converters.common import MISSING_FILE, TEST_DUPLICATE, Item, Skip, sanitize_key
from igr.errors import IGRError

UPPER_LABELS = (5, 6, 7)  # upper-clothes, dress, coat in VITON-HD's 20-label parsing


def read_pairs(path: str) -> list[str]:
    """Person file names (first column) of a pairs file."""
    names = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if parts:
                names.append(parts[0])
    return names


def _split_dir(root: str, split: str) -> str:
    d = os.path.join(root, split)
    if not os.path.isdir(d):
        raise IGRError(f"{d}: not found (expected the VITON-HD layout ROOT/{split}/image, ROOT/{split}/cloth, ...)")
    return d


def person_names(root: str, split: str) -> list[str]:
    d = _split_dir(root, split)
    pairs = os.path.join(root, f"{split}_pairs.txt")
    if os.path.isfile(pairs):
        return read_pairs(pairs)
    image_dir = os.path.join(d, "image")
    if not os.path.isdir(image_dir):
        raise IGRError(f"{image_dir}: not found")
    return sorted(n for n in os.listdir(image_dir) if n.lower().endswith((".jpg", ".jpeg", ".png")))


def build_items(root: str, split: str, mask_source: str = "auto") -> tuple[list[Item], list[Skip]]:
    """Items for ``split``; ``mask_source``: ``parse`` (image-parse-v3), ``agnostic`` (agnostic-mask) or ``auto``."""
    d = _split_dir(root, split)
    parse_dir, agn_dir = os.path.join(d, "image-parse-v3"), os.path.join(d, "agnostic-mask")
    if mask_source == "auto":
        mask_source = "parse" if os.path.isdir(parse_dir) else "agnostic" if os.path.isdir(agn_dir) else ""
        if not mask_source:
            raise IGRError(f"{d}: neither image-parse-v3/ nor agnostic-mask/ found; the garment mask comes from one of them")
    elif mask_source == "parse" and not os.path.isdir(parse_dir):
        raise IGRError(f"{parse_dir}: not found")
    elif mask_source == "agnostic" and not os.path.isdir(agn_dir):
        raise IGRError(f"{agn_dir}: not found")
    items, skips = [], []
    for name in person_names(root, split):
        stem = os.path.splitext(name)[0]
        key = sanitize_key(f"vitonhd_{split}_{stem}")
        garment = os.path.join(d, "cloth", name)
        if mask_source == "parse":
            mask, kind, labels = os.path.join(parse_dir, stem + ".png"), "labels", UPPER_LABELS
        else:
            mask = os.path.join(agn_dir, stem + "_mask.png")
            if not os.path.isfile(mask) and os.path.isfile(os.path.join(agn_dir, stem + ".png")):
                mask = os.path.join(agn_dir, stem + ".png")
            kind, labels = "binary", ()
        person = os.path.join(d, "image", name)
        if not os.path.isfile(person):
            skips.append(Skip(key, MISSING_FILE, f"person {person} not found"))
            continue
        items.append(Item(key, "upper", person, mask, garment, kind, labels,
                          {"source": "viton-hd", "split": split, "id": stem, "mask_source": mask_source}))
    return items, skips


def dhash(path: str, size: int = 8) -> int | None:
    """64-bit difference hash of an image (None if unreadable): near-duplicates differ in few bits."""
    try:
        with warnings.catch_warnings():  # a bomb is refused, with a reason, when the sample is converted
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
            img.draft("L", (size * 8, size * 8))  # JPEG: decode at 1/8 scale, the hash needs 9x8 pixels
            g = np.asarray(img.convert("L").resize((size + 1, size), Image.Resampling.BOX), np.int16)
    except Exception:  # unreadable, truncated, a decompression bomb: no hash, no duplicate
        return None
    bits = (g[:, 1:] > g[:, :-1]).ravel()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def find_test_duplicates(items: list[Item], root: str, max_distance: int = 4) -> dict[str, str]:
    """Train items whose garment matches a test garment (exact or near, by dHash); key -> test id."""
    test_dir = os.path.join(root, "test", "cloth")
    if not os.path.isdir(test_dir):
        return {}
    test = {}
    for name in sorted(os.listdir(test_dir)):
        h = dhash(os.path.join(test_dir, name))
        if h is not None:
            test.setdefault(h, os.path.splitext(name)[0])
    hashes = np.array(list(test.keys()), dtype=np.uint64)
    ids = list(test.values())
    dup = {}
    for it in items:
        h = dhash(it.garment) if it.garment else None
        if h is None or len(hashes) == 0:
            continue
        x = np.bitwise_xor(hashes, np.uint64(h))
        dist = np.unpackbits(x.view(np.uint8).reshape(-1, 8), axis=1).sum(axis=1)
        j = int(dist.argmin())
        if dist[j] <= max_distance:
            dup[it.key] = ids[j]
    return dup


def drop_duplicates(items: list[Item], dup: dict[str, str]) -> tuple[list[Item], list[Skip]]:
    kept, skips = [], []
    for it in items:
        if it.key in dup:
            skips.append(Skip(it.key, TEST_DUPLICATE, f"garment matches test garment {dup[it.key]}"))
        else:
            kept.append(it)
    return kept, skips
