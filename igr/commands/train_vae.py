"""``igr train-vae``: train the tiny world's frozen VAE on a shard set (used by ``make demo``)."""

from __future__ import annotations

import argparse

from igr.commands import _pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _pretrain.add_arguments(
        parser,
        shards_help="training shards (pattern, folder or index)",
        config="configs/model/tiny.yaml",
        config_help="model YAML with a vae: section",
        out_help="output diffusers folder (set it as model.vae_path)",
        batch_size=16,
        lr=1e-3,
    )


def run(args: argparse.Namespace) -> int:
    from igr.vae_train import train_vae

    return _pretrain.run(args, train_vae)
