"""``igr eval``: restore test shards with pipeline folders and write metrics.json / metrics.csv / report.md."""

from __future__ import annotations

import argparse
import json

from igr.metrics.config import CLASSIFIER_STEPS


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got '{text}'") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", action="append", required=True, help="pipeline folder (repeat for more rows)"
    )
    parser.add_argument("--name", action="append", help="row name for each --model (default: folder name)")
    parser.add_argument("--shards", help="paired test shards (with garments), e.g. VITON-HD test")
    parser.add_argument("--unpaired-shards", help="unpaired test shards (no garments), e.g. StreetTryOn test")
    parser.add_argument("--real", help="garment shards used as the real set of the unpaired test")
    parser.add_argument("-c", "--metrics-config", help="metrics YAML (configs/metrics/default.yaml)")
    parser.add_argument("--guidance", type=_floats, help="guidance scales, e.g. 1.0,1.5,2.0,2.5 (Table 3)")
    parser.add_argument("--steps", type=int, help="sampling steps (default: the pipeline's, 25)")
    parser.add_argument("--sampler", choices=["ddim", "dpmsolver++"], help="sampler (default: the pipeline's, DDIM)")
    parser.add_argument(
        "--baseline",
        action="append",
        choices=["masked-crop", "category-mean"],
        default=[],
        help="add a no-model row (repeatable): masked-crop (the person crop under the mask), category-mean (the "
        "mean training garment of the sample's category; needs --train-shards)",
    )
    parser.add_argument(
        "--train-shards",
        help="the tiny world's training shards: trains the garment classifier for kind/colour/pattern accuracy, "
        "fd_tiny and kd_tiny (with bootstrap intervals), and gives the category-mean baseline its garments",
    )
    parser.add_argument(
        "--reconstruction",
        action="store_true",
        help="add the row 'autoencoder reconstruction of the ground truth' (the first model's VAE): its ceiling",
    )
    parser.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples of the tiny-world intervals")
    parser.add_argument(
        "--classifier-steps", type=int, default=CLASSIFIER_STEPS, help="training steps of the tiny-world classifier"
    )
    parser.add_argument(
        "--classifier",
        help="a tiny-world classifier saved by igr train-classifier: scored with it instead of training one here "
        "(the same network for every evaluation; --train-shards is then needed only for the category-mean baseline)",
    )
    parser.add_argument("--limit", type=int, help="evaluate only N samples (the first N; see --subset)")
    parser.add_argument(
        "--subset", choices=["first", "spread"], default="first",
        help="with --limit N: the first N samples, or N spread evenly over the whole set (needs the shards' index)",
    )
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto (CUDA when there is one, else the CPU), cpu, cuda")
    parser.add_argument(
        "--devices", type=int, default=1,
        help="processes on this node that share every row's batches (rank r on cuda:r, or the CPU over gloo); "
        "rank 0 scores, so the metrics are those of one process. Under torchrun (one node or several) leave it "
        "out: the processes are torchrun's",
    )
    parser.add_argument(
        "--dtype", choices=["fp32", "bf16", "fp16"], default="fp32",
        help="precision the pipelines restore in (weights and sampling; the metric networks stay float32). "
        "fp32 on CUDA uses TF32 matmuls; fp16 needs CUDA",
    )
    parser.add_argument(
        "--jobs", type=int, default=1,
        help="CPU processes that restore the model rows side by side, a row each (each with the thread settings of "
        "this one, e.g. OMP_NUM_THREADS=1); every prediction is held in memory until scored, so this is for small "
        "models; --device auto then means the CPU. --devices splits every row instead, on GPUs too",
    )
    parser.add_argument("--out", default="outputs/eval", help="report folder")
    parser.add_argument("--overwrite", action="store_true")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from igr.errors import IGRError
    from igr.evaluate import evaluate

    names = args.name or []
    if names and len(names) != len(args.model):
        raise IGRError(f"--name given {len(names)} times for {len(args.model)} --model folders")
    models = [(names[i] if names else Path(m).name, m) for i, m in enumerate(args.model)]
    result = evaluate(
        models,
        args.shards,
        args.out,
        guidance=args.guidance,
        steps=args.steps,
        sampler=args.sampler,
        metrics_config=args.metrics_config,
        unpaired_shards=args.unpaired_shards,
        real=args.real,
        baselines=args.baseline,
        train_shards=args.train_shards,
        reconstruction=args.reconstruction,
        bootstrap_resamples=args.bootstrap,
        classifier_steps=args.classifier_steps,
        classifier=args.classifier,
        limit=args.limit,
        subset=args.subset,
        batch_size=args.batch_size,
        seed=args.seed,
        device=args.device,
        devices=args.devices,
        dtype=args.dtype,
        workers=args.jobs,
        overwrite=args.overwrite,
    )
    if result is not None:  # every rank but 0 of a torchrun launch returns None
        print(json.dumps(result["paths"]))
    return 0
