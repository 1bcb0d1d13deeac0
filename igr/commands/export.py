"""``igr export``: a pipeline folder (safetensors + config; no pickles, no optimizer state).

igr export CKPT --out DIR                 from a training checkpoint (.ckpt, or a DeepSpeed folder)
igr export --untrained CONFIG.yaml --out DIR [--sd-path P] [--vae-path P] [--image-encoder-path P] [--seed S]
                                          the same model at initialisation (the "init" row of reports); CONFIG
                                          is a model YAML or an experiment YAML (then its diffusion settings too)
igr export --upgrade OLD_DIR --out DIR    an older pipeline folder (model.yaml + <part>.safetensors) rewritten in
                                          the diffusers layout (model_index.json + one folder per module)

Checkpoints are read weights-only (no code from the file runs); --trust-pickle allows one that needs unpickling.
"""

from __future__ import annotations

import argparse

from igr.errors import IGRError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "ckpt", nargs="?", help="Lightning checkpoint (.ckpt file or DeepSpeed checkpoint folder)"
    )
    parser.add_argument(
        "--untrained",
        metavar="CONFIG_YAML",
        help="export an untrained model built from this model or experiment config",
    )
    parser.add_argument(
        "--sd-path", help="with --untrained: the pre-trained base folder both UNets start from (overrides the config)"
    )
    parser.add_argument("--vae-path", help="with --untrained: the model's VAE folder (overrides the config)")
    parser.add_argument(
        "--image-encoder-path", help="with --untrained: the frozen CLIP image encoder's weights (overrides the config)"
    )
    parser.add_argument("--model", help="with --untrained: a model YAML replacing the config's model section")
    parser.add_argument(
        "--upgrade",
        metavar="OLD_DIR",
        help="convert an older pipeline folder (model.yaml + .safetensors per part) to the diffusers layout",
    )
    parser.add_argument("--seed", type=int, default=0, help="with --untrained: initialisation seed")
    parser.add_argument("--out", required=True, help="pipeline folder to write")
    parser.add_argument("--ema", action="store_true", help="export the EMA weights stored in the checkpoint")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="allow a checkpoint that needs unpickling (runs code from the file: only for a source you trust)",
    )


def run(args: argparse.Namespace) -> int:
    from igr.export import export_checkpoint, export_pipeline

    if sum(bool(x) for x in (args.ckpt, args.untrained, args.upgrade)) != 1:
        raise IGRError("give one of: a checkpoint, --untrained CONFIG_YAML, --upgrade OLD_DIR")
    if args.upgrade:
        from igr.export import upgrade_pipeline

        out = upgrade_pipeline(args.upgrade, args.out, overwrite=args.overwrite)
        print(f"upgraded {args.upgrade} → {out}")
        return 0
    if args.model and not args.untrained:
        raise IGRError("--model goes with --untrained (a checkpoint carries its own model config)")
    if args.ckpt:
        out = export_checkpoint(
            args.ckpt, args.out, ema=args.ema, overwrite=args.overwrite, trust_pickle=args.trust_pickle
        )
        print(f"exported {args.ckpt} → {out}")
        return 0
    import dataclasses

    import torch

    from igr.config import load_diffusion_config, load_model_config
    from igr.models import build_model

    cfg, diffusion = load_model_config(args.model or args.untrained), load_diffusion_config(args.untrained)
    paths = {k: getattr(args, k) for k in ("sd_path", "vae_path", "image_encoder_path") if getattr(args, k)}
    cfg = dataclasses.replace(cfg, **paths)
    torch.manual_seed(args.seed)
    out = export_pipeline(build_model(cfg, diffusion).eval(), args.out, overwrite=args.overwrite)
    print(f"exported untrained {cfg.name} (seed {args.seed}) → {out}")
    return 0
