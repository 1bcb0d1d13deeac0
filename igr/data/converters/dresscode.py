"""DressCode → shards.

Layout: ``ROOT/{upper_body,lower_body,dresses}/images/{id}_0.jpg`` (person) and ``{id}_1.jpg``
(in-shop garment), ``label_maps/{id}_4.png`` (18-label parsing: 4 upper clothes, 5 skirt,
6 pants, 7 dress), and per category ``train_pairs.txt`` / ``test_pairs_paired.txt``
(``{id}_0.jpg {id}_1.jpg``). Categories map to ``upper`` / ``lower`` / ``full``.
"""

from __future__ import annotations

import os

from igr.data.converters.common import MISSING_FILE, Item, Skip, sanitize_key
from igr.errors import IGRError

SUBSETS = {"upper_body": "upper", "lower_body": "lower", "dresses": "full"}
LABELS = {"upper": (4,), "lower": (5, 6), "full": (7,)}
PAIR_FILES = {"train": ("train_pairs.txt",), "test": ("test_pairs_paired.txt", "test_pairs.txt")}


def _pairs(path: str) -> list[tuple[str, str]]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2:
                out.append((parts[0], parts[1]))
    return out


def build_items(root: str, split: str, categories: tuple[str, ...] = ("upper", "lower", "full")) -> tuple[list[Item], list[Skip]]:
    if split not in PAIR_FILES:
        raise IGRError(f"split {split!r}: DressCode has train and test")
    found = [s for s in SUBSETS if os.path.isdir(os.path.join(root, s))]
    if not found:
        raise IGRError(f"{root}: no upper_body/, lower_body/ or dresses/ folder (not the DressCode layout)")
    items, skips = [], []
    for subset, category in SUBSETS.items():
        if category not in categories or subset not in found:
            continue
        d = os.path.join(root, subset)
        pair_file = next((os.path.join(d, n) for n in PAIR_FILES[split] if os.path.isfile(os.path.join(d, n))), None)
        if pair_file is None:
            raise IGRError(f"{d}: no {' or '.join(PAIR_FILES[split])}")
        for person_name, garment_name in _pairs(pair_file):
            stem = os.path.splitext(person_name)[0]
            ident = stem[:-2] if stem.endswith("_0") else stem
            key = sanitize_key(f"dresscode_{split}_{subset}_{ident}")
            person = os.path.join(d, "images", person_name)
            if not os.path.isfile(person):
                skips.append(Skip(key, MISSING_FILE, f"person {person} not found"))
                continue
            mask = os.path.join(d, "label_maps", f"{ident}_4.png")
            items.append(Item(key, category, person, mask, os.path.join(d, "images", garment_name), "labels",
                              LABELS[category], {"source": "dresscode", "split": split, "id": ident, "subset": subset}))
    return items, skips
