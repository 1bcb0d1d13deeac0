"""``igr train-clip``: pre-train the tiny world's frozen CLIP image encoder on synthetic shards (used by ``make demo``)."""

from __future__ import annotations

import argparse

from igr.commands import _pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _pretrain.add_arguments(
        parser,
        shards_help="synthetic training shards (captions come from meta.json)",
        config="configs/model/tiny_pixel.yaml",
        config_help="model YAML with an image_encoder: section",
        out_help="output .safetensors file (set it as model.image_encoder_path)",
        batch_size=128,
        lr=2e-3,
    )


def run(args: argparse.Namespace) -> int:
    from igr.clip_train import train_tiny_clip

    return _pretrain.run(args, train_tiny_clip)
