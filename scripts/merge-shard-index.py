#!/usr/bin/env python3
"""Write one shard index that lists the shards of several indexes (no sample is copied).

    python scripts/merge-shard-index.py shards/coarse/train.json shards/viton-hd/train.json shards/dresscode/train.json

This is how ``shards/coarse/train.json`` (what ``configs/experiment/coarse.yaml`` reads) is made from the converted
sets: shard names are written relative to the new index's folder, counts and categories are summed. Standard
library only; refuses to overwrite an existing index unless --overwrite, and refuses sets of different image sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile


def merge(out: str, sources: list[str]) -> dict:
    base = os.path.dirname(os.path.abspath(out))
    merged: dict = {"format": "igr-shards/1", "shards": [], "num_samples": 0, "categories": {}, "merged_from": []}
    for src in sources:
        try:
            with open(src, encoding="utf-8") as f:
                index = json.load(f)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"error: {src}: not a readable shard index ({exc})") from None
        if not isinstance(index, dict) or not isinstance(index.get("shards"), list) or not index["shards"]:
            raise SystemExit(f"error: {src}: not a shard index (no 'shards' list)")
        size = index.get("image_size")
        if size is not None and merged.setdefault("image_size", size) != size:
            raise SystemExit(f"error: {src}: image size {size} differs from {merged['image_size']} of the sets before it")
        for key in ("paired", "split"):
            if key in index:
                merged.setdefault(key, index[key])
        for entry in index["shards"]:
            entry = dict(entry) if isinstance(entry, dict) else {"name": str(entry)}
            name = entry["name"]
            if "://" not in name and not name.startswith("pipe:"):
                path = name if os.path.isabs(name) else os.path.join(os.path.dirname(os.path.abspath(src)), name)
                if not os.path.isfile(path):
                    raise SystemExit(f"error: {path}: shard listed in {src} not found")
                entry["name"] = os.path.relpath(path, base)
            merged["shards"].append(entry)
        merged["num_samples"] += int(index.get("num_samples") or 0)
        for cat, n in (index.get("categories") or {}).items():
            merged["categories"][cat] = merged["categories"].get(cat, 0) + int(n)
        merged["merged_from"].append(os.path.relpath(os.path.abspath(src), base))
    return merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="index to write, e.g. shards/coarse/train.json")
    parser.add_argument("sources", nargs="+", help="indexes to list, e.g. shards/viton-hd/train.json")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing OUT")
    args = parser.parse_args(argv)
    if os.path.exists(args.out) and not args.overwrite:
        print(f"error: {args.out} exists (--overwrite replaces it)", file=sys.stderr)
        return 2
    merged = merge(args.out, args.sources)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(args.out)), suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(merged, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, args.out)
    print(f"{args.out}: {len(merged['shards'])} shards, {merged['num_samples']} samples from {len(args.sources)} sets")
    return 0


if __name__ == "__main__":
    sys.exit(main())
