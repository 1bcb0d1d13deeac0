"""``igr diagnose --model DIR --shards test.json``: which conditions the model's prediction follows (GarmNet, the
IP-Adapter, the category prompt) at a few noise levels — :mod:`igr.diagnostics`."""

from __future__ import annotations

import argparse
import dataclasses
import json

from igr.errors import IGRError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="pipeline folder")
    parser.add_argument("--shards", required=True, help="paired shards (with garments), e.g. the demo's test.json")
    parser.add_argument("--num", type=int, default=16, help="samples (the first N of the shards)")
    parser.add_argument("--timesteps", default="999,600,300", help="training timesteps to probe, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="also write the figures to this JSON file")


def run(args: argparse.Namespace) -> int:
    from igr.atomic import atomic_file
    from igr.diagnostics import condition_reliance
    from igr.evaluate import shard_batches
    from igr.export import load_pipeline

    try:
        steps = [int(s) for s in args.timesteps.split(",") if s.strip()]
    except ValueError as exc:
        raise IGRError(f"--timesteps {args.timesteps!r}: expected comma-separated integers") from exc
    if not steps:
        raise IGRError("--timesteps: give at least one timestep")
    if args.num < 2:
        raise IGRError(f"--num {args.num}: the swap needs at least 2 samples")
    model, _ = load_pipeline(args.model)
    model.eval()
    bad = [s for s in steps if not 0 <= s < model.diffusion.train_timesteps]
    if bad:
        raise IGRError(f"--timesteps: {bad} outside 0..{model.diffusion.train_timesteps - 1}")
    batch = next(shard_batches(args.shards, model.config.resolution, args.num, args.num, require_garment=True), None)
    if batch is None or batch["person"].shape[0] < 2:
        raise IGRError(f"{args.shards}: fewer than 2 samples with garments")
    garment = batch["garment_uint8"].float() / 127.5 - 1
    rows = condition_reliance(model, batch["person"], batch["mask"], batch["category"], garment, steps, args.seed)
    n = batch["person"].shape[0]
    print(f"{args.model}: reliance on each condition ({n} samples; 0 = ignored, 1 = as much as all together); "
          "z0 error: RMS error of the clean latent the prediction implies, beside the noisy input's own")
    names = list(rows[0].reliance)
    print(f"{'t':>5} {'loss':>8} {'all swapped':>12} " + " ".join(f"{w:>11}" for w in names)
          + f" {'z0 error':>9} {'input z0 error':>15}")
    for r in rows:
        given = "n/a" if r.input_z0_error is None else f"{r.input_z0_error:.4f}"
        print(f"{r.t:>5} {r.loss:>8.4f} {r.all_swapped:>12.5f} " + " ".join(f"{r.reliance[w]:>11.3f}" for w in names)
              + f" {r.z0_error:>9.4f} {given:>15}")
    if args.out:
        doc = {"model": args.model, "shards": args.shards, "samples": n, "seed": args.seed,
               "rows": [dataclasses.asdict(r) for r in rows]}
        with atomic_file(args.out, "w", encoding="utf-8") as f:
            f.write(json.dumps(doc, indent=2) + "\n")
    return 0
