"""``igr train-base``: pre-train the tiny world's base UNet (the SD1.5 analogue both GarmNet and the denoiser start
from) on synthetic shards, and write it as a ``model.sd_path`` folder (used by ``make demo``)."""

from __future__ import annotations

import argparse
import dataclasses

from igr.commands import _pretrain


def add_arguments(parser: argparse.ArgumentParser) -> None:
    _pretrain.add_arguments(
        parser,
        shards_help="training shards with garments (persons and garments are both trained on)",
        config="configs/experiment/demo.yaml",
        config_help="experiment YAML: its model (architecture, prompts) and diffusion (parameterisation) sections",
        out_help="output folder with unet/ text_encoder/ vae/ (set it as model.sd_path)",
        batch_size=16,
        lr=1e-3,
    )
    parser.add_argument("--vae-path", required=True, help="the autoencoder folder the later stages use (igr train-vae)")
    parser.add_argument("--model", help="model YAML replacing the experiment's model section (e.g. wider UNets; "
                        "later stages load their UNets from --out, so they get the same widths)")


def run(args: argparse.Namespace) -> int:
    from igr.base_train import train_tiny_base
    from igr.config import load_diffusion_config

    diffusion = load_diffusion_config(args.config)

    def train(config, *rest, **kwargs):
        return train_tiny_base(dataclasses.replace(config, vae_path=args.vae_path), *rest, diffusion=diffusion,
                               **kwargs)

    return _pretrain.run(args, train)
