"""``igr bench``: speed and memory of garment restoration and training, on random weights.

    igr bench -c configs/model/tiny.yaml                                  # CPU, the tiny model (targets of issue 8)
    igr bench -c configs/model/sd15.yaml --device cuda --size 1024x768    # sd15 size, bf16, on a GPU
    igr bench -c configs/model/sd15.yaml --device cuda --compile --json > bench.json

One run times, on the same inputs and initial noise: the IGR restoration; a plain SD UNet with the same config
(the cost floor); GarmNet at every step vs once; the unconditional branch's GarmNet features cached vs
recomputed; sequential vs batched CFG; the paper's literal concat attention
vs Q-only; unfused vs SDPA attention; channels-last; DPM-Solver++ at fewer steps; optionally torch.compile and VAE
slicing/tiling; and a training step. Every optimised path's output is compared with the reference path's.
Weight paths in the config are ignored (random init): speed and memory do not depend on weight values.
"""

from __future__ import annotations

import argparse
import json

from igr.bench.names import ALL_VARIANTS  # a module without imports: `igr bench --help` stays light

SKIPPABLE = tuple(n for n in ALL_VARIANTS if n != "igr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.description = __doc__
    parser.add_argument(
        "-c", "--config", required=True, help="model YAML (configs/model/*.yaml) or experiment YAML"
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument(
        "--dtype", default="auto", help="auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16, float16"
    )
    parser.add_argument(
        "--size", help="HxW of the person image (default: the config's resolution), e.g. 1024x768"
    )
    parser.add_argument("--steps", type=int, default=25, help="DDIM steps (default 25, the paper's)")
    parser.add_argument("--batch", type=int, default=1, help="images per restoration call (default 1)")
    parser.add_argument("--guidance", type=float, default=1.5, help="CFG scale (default 1.5; 1 disables CFG)")
    parser.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed runs per variant after the warm-up (the fastest is reported)",
    )
    parser.add_argument(
        "--fast-steps", type=int, default=15, help="steps of the DPM-Solver++ variant (default 15)"
    )
    parser.add_argument("--train-batch", type=int, help="batch of the training step (default: --batch)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the denoiser")
    parser.add_argument("--compile-mode", help="torch.compile mode, e.g. max-autotune, reduce-overhead")
    parser.add_argument(
        "--compile-backend", default="inductor", help="torch.compile backend (default inductor)"
    )
    parser.add_argument("--vae-slicing", action="store_true", help="also time VAE slicing (large batches)")
    parser.add_argument("--vae-tiling", action="store_true", help="also time VAE tiling (large images)")
    parser.add_argument(
        "--skip",
        default="",
        help=f"comma-separated variants not to run: {', '.join(SKIPPABLE)}",
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--json", action="store_true", help="print machine-readable JSON instead of the table"
    )


def run(args: argparse.Namespace) -> int:
    import torch

    from igr.bench import BenchOptions, format_report, parse_size, run_benchmark
    from igr.errors import IGRError

    if args.threads is not None:
        if args.threads < 1:
            raise IGRError(f"--threads {args.threads}: must be at least 1")
        torch.set_num_threads(args.threads)
    opts = BenchOptions(
        config=args.config,
        device=args.device,
        size=parse_size(args.size) if args.size else None,
        steps=args.steps,
        batch=args.batch,
        guidance=args.guidance,
        dtype=args.dtype,
        repeats=args.repeats,
        fast_steps=args.fast_steps,
        train_batch=args.train_batch,
        skip=tuple(s.strip() for s in args.skip.split(",") if s.strip()),
        compile=args.compile,
        compile_mode=args.compile_mode,
        compile_backend=args.compile_backend,
        vae_slicing=args.vae_slicing,
        vae_tiling=args.vae_tiling,
        seed=args.seed,
    )
    if opts.train_batch is not None and opts.train_batch < 1:
        raise IGRError(f"--train-batch {opts.train_batch}: must be at least 1")
    result = run_benchmark(opts)
    print(json.dumps(result, indent=2) if args.json else format_report(result))
    return 0
