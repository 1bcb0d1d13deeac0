"""``igr train-clip``: pre-train the tiny world's frozen CLIP image encoder on synthetic shards (used by ``make demo``)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="synthetic training shards (captions come from meta.json)")
    parser.add_argument(
        "-c", "--config", default="configs/model/tiny_pixel.yaml", help="model YAML with an image_encoder: section"
    )
    parser.add_argument("--out", required=True, help="output .safetensors file (set it as model.image_encoder_path)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from igr.clip_train import train_tiny_clip
    from igr.config import load_model_config

    result = train_tiny_clip(
        load_model_config(args.config),
        args.shards,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        overwrite=args.overwrite,
    )
    print(json.dumps(result))
    return 0
