"""StreetTryOn test persons → *unpaired* shards (person + mask, no garment).

Layout (the benchmark's): ``ROOT/validation/image/*.jpg`` (its test persons are the validation
split; ``ROOT/test/image`` is accepted too) and a parsing folder next to it — the first of
``segm``, ``parsing``, ``atr``, ``human_parsing``, ``mask`` that exists, or ``--mask-dir`` — with
one PNG per person (same stem). Parsing maps use the ATR labels (4 upper clothes, 5 skirt,
6 pants, 7 dress); a folder of 0/255 masks works too. ``ROOT/annotations/*.csv`` (e.g.
``street2street_test_pairs_top.csv`` / ``..._dress.csv``) sets the category of the persons it
lists; otherwise the category is the garment class with most pixels in the parsing map.
"""

from __future__ import annotations

import os

import numpy as np

from igr import imageio
from igr.data.converters.common import MISSING_FILE, UNDECODABLE, Item, Skip, sanitize_key
from igr.errors import IGRError

ATR_LABELS = {"upper": (4,), "lower": (5, 6), "full": (7,)}
MASK_DIRS = ("segm", "parsing", "atr", "human_parsing", "mask")


def _person_dir(root: str, split: str) -> str:
    names = ("validation", "test") if split == "test" else (split,)
    for n in names:
        d = os.path.join(root, n, "image")
        if os.path.isdir(d):
            return os.path.dirname(d)
    raise IGRError(f"{root}: no {' or '.join(n + '/image' for n in names)} (not the StreetTryOn layout)")


def _csv_categories(root: str) -> dict[str, str]:
    """Person file stem -> category from the benchmark's annotation CSVs (the person is the last column)."""
    ann = os.path.join(root, "annotations")
    out: dict[str, str] = {}
    if not os.path.isdir(ann):
        return out
    for name in sorted(os.listdir(ann)):
        low = name.lower()
        if not low.endswith(".csv"):
            continue
        cat = "full" if "dress" in low else "lower" if any(w in low for w in ("bottom", "pants", "lower")) else \
            "upper" if any(w in low for w in ("top", "upper")) else None
        if cat is None:
            continue
        for row in imageio.read_csv(os.path.join(ann, name), "annotation CSV")[1:]:
            if row:
                out.setdefault(os.path.splitext(os.path.basename(row[-1]))[0], cat)
    return out


def infer_category(mask_path: str) -> str | None:
    """The ATR garment class with most pixels (None if the map holds none, or is not a label map)."""
    try:
        img = imageio.decode(mask_path, "parsing map")  # bomb-limited; a bad file is skipped later, with why
    except IGRError:
        return None
    if img.mode not in ("P", "L"):
        return None
    a = np.asarray(img)
    if a.max(initial=0) > 17:  # a 0/255 mask, not ATR labels
        return None
    counts = {c: int(np.isin(a, labels).sum()) for c, labels in ATR_LABELS.items()}
    best = max(counts, key=counts.get)
    return best if counts[best] > 0 else None


def build_items(root: str, split: str = "test", mask_dir: str | None = None,
                category: str = "auto") -> tuple[list[Item], list[Skip]]:
    d = _person_dir(root, split)
    if mask_dir is None:
        mask_dir = next((os.path.join(d, m) for m in MASK_DIRS if os.path.isdir(os.path.join(d, m))), None)
        if mask_dir is None:
            raise IGRError(f"{d}: no parsing folder ({', '.join(MASK_DIRS)}); give --mask-dir")
    elif not os.path.isdir(mask_dir):
        raise IGRError(f"{mask_dir}: not found")
    from_csv = _csv_categories(root) if category == "auto" else {}
    items, skips = [], []
    image_dir = os.path.join(d, "image")
    for name in sorted(os.listdir(image_dir)):
        if not name.lower().endswith((".jpg", ".jpeg", ".png")):
            continue
        stem = os.path.splitext(name)[0]
        key = sanitize_key(f"streettryon_{split}_{stem}")
        mask = os.path.join(mask_dir, stem + ".png")
        if not os.path.isfile(mask):
            skips.append(Skip(key, MISSING_FILE, f"mask {mask} not found"))
            continue
        is_labels = infer_category(mask) is not None or _looks_like_labels(mask)
        cat = category if category != "auto" else from_csv.get(stem) or infer_category(mask)
        if cat is None:
            skips.append(Skip(key, UNDECODABLE, f"{mask}: cannot tell the garment category (give --category)"))
            continue
        items.append(Item(key, cat, os.path.join(image_dir, name), mask, None,
                          "labels" if is_labels else "binary", ATR_LABELS[cat] if is_labels else (),
                          {"source": "streettryon", "split": split, "id": stem}))
    return items, skips


def _looks_like_labels(path: str) -> bool:
    try:
        img = imageio.decode(path, "parsing map")
    except IGRError:
        return False
    return img.mode in ("P", "L") and np.asarray(img).max(initial=0) <= 17
