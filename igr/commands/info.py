"""``igr info -c CONFIG``: parameter counts per component, built on the meta device (no weights, no memory)."""

from __future__ import annotations

import argparse
import json
import time


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", required=True, help="model YAML (configs/model/*.yaml) or experiment YAML"
    )
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON")


def run(args: argparse.Namespace) -> int:
    from igr.config import load_model_config
    from igr.models import build_parts, parameter_counts

    start = time.perf_counter()
    cfg = load_model_config(args.config)
    counts = parameter_counts(build_parts(cfg, meta=True))
    seconds = time.perf_counter() - start
    if args.json:
        print(
            json.dumps(
                {"config": args.config, "name": cfg.name, "parameters": counts, "seconds": round(seconds, 2)}
            )
        )
        return 0
    print(
        f"{cfg.name} ({args.config}) — {cfg.resolution[0]}x{cfg.resolution[1]}, built on the meta device in {seconds:.1f}s"
    )
    for name, n in counts.items():
        if name in ("trainable", "frozen"):
            continue
        print(f"  {name:<14} {n:>15,}  ({n / 1e6:,.1f} M)")
    print(f"  {'trainable':<14} {counts['trainable']:>15,}  ({counts['trainable'] / 1e6:,.1f} M)")
    print(f"  {'frozen':<14} {counts['frozen']:>15,}  ({counts['frozen'] / 1e6:,.1f} M)")
    return 0
