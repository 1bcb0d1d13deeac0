"""Shared command line of the tiny world's frozen-part pre-trainings (``igr train-vae``, ``igr train-clip``)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable


def add_arguments(
    parser: argparse.ArgumentParser, *, shards_help: str, config: str, config_help: str, out_help: str,
    batch_size: int, lr: float,
) -> None:
    parser.add_argument("--shards", required=True, help=shards_help)
    parser.add_argument("-c", "--config", default=config, help=config_help)
    parser.add_argument("--out", required=True, help=out_help)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace, train: Callable[..., dict]) -> int:
    """``train(config, shards, out, steps=, batch_size=, lr=, seed=, overwrite=)`` → its summary, printed as JSON."""
    from igr.config import load_model_config

    # train-base may take its architecture from a separate model YAML (--model) and the rest from -c
    config = load_model_config(getattr(args, "model", None) or args.config)
    result = train(
        config, args.shards, args.out, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        overwrite=args.overwrite,
    )
    print(json.dumps(result))
    return 0
