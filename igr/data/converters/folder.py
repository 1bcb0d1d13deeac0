"""A plain folder of your own data → shards.

Layout: ``ROOT/person/KEY.{jpg,png}``, ``ROOT/mask/KEY.png`` (garment = white/255, or any
value above 127), optionally ``ROOT/garment/KEY.{jpg,png}``, and a CSV (``ROOT/categories.csv``
or ``--csv``) with a header and columns ``key,category`` (category ``upper``, ``lower`` or
``full``). Without a ``garment/`` folder the shards are unpaired (test-only).
"""

from __future__ import annotations

import os

from igr import imageio
from igr.data.converters.common import MISSING_FILE, UNKNOWN_CATEGORY, Item, Skip, sanitize_key
from igr.data.schema import CATEGORIES
from igr.errors import IGRError

EXTS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp")


def _find(directory: str, key: str) -> str | None:
    for ext in EXTS + tuple(e.upper() for e in EXTS):
        p = os.path.join(directory, key + ext)
        if os.path.isfile(p):
            return p
    return None


def read_categories(path: str) -> list[tuple[str, str]]:
    if not os.path.isfile(path):
        raise IGRError(f"{path}: category CSV not found (columns key,category)")
    rows = imageio.read_csv(path, "category CSV")  # UTF-8 (with or without Excel's BOM) or Windows-1252
    if not rows:
        raise IGRError(f"{path}: empty CSV")
    header = [h.strip().lower() for h in rows[0]]
    if "key" not in header or "category" not in header:
        raise IGRError(f"{path}: first row must name the columns key,category (got {','.join(rows[0])})")
    ki, ci = header.index("key"), header.index("category")
    return [(r[ki].strip(), r[ci].strip().lower()) for r in rows[1:] if len(r) > max(ki, ci) and r[ki].strip()]


def build_items(root: str, split: str, csv_path: str | None = None) -> tuple[list[Item], list[Skip], bool]:
    """Items, early skips, and whether the set is paired (a ``garment/`` folder exists)."""
    person_dir, mask_dir, garment_dir = (os.path.join(root, n) for n in ("person", "mask", "garment"))
    for d in (person_dir, mask_dir):
        if not os.path.isdir(d):
            raise IGRError(f"{d}: not found (expected ROOT/person, ROOT/mask, optional ROOT/garment, a key,category CSV)")
    paired = os.path.isdir(garment_dir)
    items, skips = [], []
    for key, category in read_categories(csv_path or os.path.join(root, "categories.csv")):
        safe = sanitize_key(key)
        if category not in CATEGORIES:
            skips.append(Skip(safe, UNKNOWN_CATEGORY, f"category {category!r} (expected {', '.join(CATEGORIES)})"))
            continue
        person, mask = _find(person_dir, key), _find(mask_dir, key)
        garment = _find(garment_dir, key) if paired else None
        missing = [n for n, p in (("person", person), ("mask", mask), ("garment", garment if paired else "-")) if p is None]
        if missing:
            skips.append(Skip(safe, MISSING_FILE, f"no {', '.join(missing)} image for key {key!r}"))
            continue
        items.append(Item(safe, category, person, mask, garment, "binary", (),
                          {"source": "folder", "split": split, "id": key}))
    return items, skips, paired
