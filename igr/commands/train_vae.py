"""``igr train-vae``: train the tiny world's frozen VAE on a shard set (used by ``make demo``)."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", required=True, help="training shards (pattern, folder or index)")
    parser.add_argument(
        "-c", "--config", default="configs/model/tiny.yaml", help="model YAML with a vae: section"
    )
    parser.add_argument("--out", required=True, help="output diffusers folder (set it as model.vae_path)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from igr.config import load_model_config
    from igr.vae_train import train_vae

    cfg = load_model_config(args.config)
    result = train_vae(
        cfg,
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
