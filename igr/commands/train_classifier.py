"""``igr train-classifier``: train the tiny world's garment classifier once and save it, so that every ``igr eval
--classifier`` scores kind / colour / pattern accuracy, fd_tiny and kd_tiny with the same network (``make demo``
trains it beside the base UNet, on the core the tiny CLIP leaves idle)."""

from __future__ import annotations

import argparse
import json

from igr.metrics.config import CLASSIFIER_STEPS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="synthetic training shards (labels come from meta.json)")
    parser.add_argument("--out", required=True, help="output .safetensors file (pass it to igr eval --classifier)")
    parser.add_argument("--size", help="HxW the garments are scored at (default: the shards' image_size)")
    parser.add_argument("--steps", type=int, default=CLASSIFIER_STEPS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from igr.config import parse_size
    from igr.data.shards import find_index, resolve_shards
    from igr.errors import IGRError
    from igr.metrics import tiny

    out = Path(args.out)
    if out.exists() and not args.overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
    if out.suffix != ".safetensors":
        raise IGRError(f"{out}: the tiny-world classifier is written as a .safetensors file")
    if args.steps < 1:
        raise IGRError(f"train-classifier: --steps {args.steps} must be ≥ 1")
    if args.size:
        size = parse_size(args.size)
    else:
        index = find_index(resolve_shards(args.shards))
        if not index or not index.get("image_size"):
            raise IGRError(f"{args.shards}: no index with an image_size; give --size HxW")
        size = tuple(index["image_size"])
    garments = tiny.load_garments(args.shards, size)
    model = tiny.train_classifier(garments, steps=args.steps, seed=args.seed)
    info = {"size": list(size), "shards": str(args.shards), "num_train": len(garments.images), "steps": args.steps,
            "seed": args.seed}
    tiny.save_classifier(model, out, info)
    print(json.dumps({**info, "out": str(out)}))
    return 0
