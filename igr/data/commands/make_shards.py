"""``igr make-shards SOURCE``: convert a dataset, or generate synthetic data, into WebDataset shards.

    igr make-shards viton-hd    --root data/zalando-hd-resized --out shards/viton-hd --split train
    igr make-shards dresscode   --root data/DressCode --out shards/dresscode --split test
    igr make-shards streettryon --root data/street_tryon --out shards/street --split test
    igr make-shards folder      --root my_data --out shards/mine --split train [--csv cats.csv]
    igr make-shards synthetic   --out shards/synth --split train --num 2000 --size 128x96 --seed 0

Writes ``{split}-%06d.tar`` and ``{split}.json`` into ``--out`` and prints what was skipped and why.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from multiprocessing import get_context

from igr.config import parse_size as config_parse_size
from igr.data.converters import common
from igr.data.shards import ShardSetWriter
from igr.errors import IGRError

SOURCES = ("viton-hd", "dresscode", "streettryon", "folder", "synthetic")


def parse_size(text: str) -> tuple[int, int]:
    h, w = config_parse_size(text)
    if h < 8 or w < 8:
        raise IGRError(f"--size '{text}': each side must be at least 8 pixels")
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", choices=SOURCES, help="dataset layout to read, or 'synthetic'")
    parser.add_argument("--root", help="dataset root folder (not for synthetic)")
    parser.add_argument("--out", required=True, help="output folder for the shards")
    parser.add_argument("--split", default="train", help="split to convert / name of the output (default: train)")
    parser.add_argument("--size", type=parse_size, help="HxW of the stored images (default 1024x768; synthetic 128x96)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards of this split")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default: 1)")
    parser.add_argument("--max-per-shard", type=int, default=1000, help="samples per shard (default: 1000)")
    g = parser.add_argument_group("synthetic")
    g.add_argument("--num", type=int, default=1000, help="number of samples (default: 1000)")
    g.add_argument("--seed", type=int, default=0, help="generator seed; same seed, same bytes (default: 0)")
    g.add_argument("--defect-fraction", type=float, default=0.25,
                   help="share of samples with a curation defect (truncated, occluded, side view, extreme proportion)")
    g = parser.add_argument_group("viton-hd")
    g.add_argument("--mask-source", choices=("auto", "parse", "agnostic"), default="auto",
                   help="garment mask from image-parse-v3 (exact) or agnostic-mask (coarser); auto prefers parse")
    g.add_argument("--dedupe", choices=("off", "report", "drop"), default="report",
                   help="train split: find garments that also appear in test/ (dHash); report or drop them")
    g = parser.add_argument_group("dresscode")
    g.add_argument("--categories", default="upper,lower,full", help="comma-separated subset (default: all)")
    g = parser.add_argument_group("streettryon")
    g.add_argument("--mask-dir", help="folder of parsing maps or masks (default: found next to image/)")
    g.add_argument("--category", default="auto", choices=("auto", "upper", "lower", "full"),
                   help="garment category of every person (default: from annotations / parsing)")
    g = parser.add_argument_group("folder")
    g.add_argument("--csv", help="key,category CSV (default: ROOT/categories.csv)")


def _synthetic(args, size: tuple[int, int]) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from igr.data.synthetic import DEFECTS, SyntheticConfig

    if args.num < 1:
        raise IGRError(f"--num {args.num}: must be at least 1")
    if not 0.0 <= args.defect_fraction <= 1.0:
        raise IGRError(f"--defect-fraction {args.defect_fraction}: must be in [0, 1]")
    cfg = SyntheticConfig(size=size, defect_fraction=args.defect_fraction)
    writer = ShardSetWriter(args.out, args.split, overwrite=args.overwrite, max_count=args.max_per_shard,
                            source="synthetic", image_size=size)
    jobs = [(args.seed, args.split, i, cfg) for i in range(args.num)]
    t0 = time.perf_counter()
    pool = get_context("fork").Pool(args.workers) if args.workers > 1 else None
    try:
        results = pool.imap(_make_one, jobs, chunksize=16) if pool else map(_make_one, jobs)
        flags = dict.fromkeys(DEFECTS, 0)
        with writer, Progress(TextColumn("generating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                              transient=True) as progress:
            task = progress.add_task("gen", total=args.num)
            for sample in results:
                writer.write(sample)
                for k, v in json.loads(sample["meta.json"])["flags"].items():
                    flags[k] += bool(v)
                progress.advance(task)
            index = writer.close(extra={"synthetic": {"seed": args.seed, "defect_fraction": args.defect_fraction}})
    finally:
        if pool is not None:
            pool.terminate()
    dt = time.perf_counter() - t0
    console = Console(highlight=False, soft_wrap=True)
    cats = ", ".join(f"{k} {v}" for k, v in index["categories"].items())
    console.print(f"wrote {index['num_samples']} synthetic samples ({cats}) at {size[0]}x{size[1]} in "
                  f"{len(index['shards'])} shard(s) to {args.out} (index {args.split}.json); "
                  f"{args.num / dt * 60:.0f} samples/min with {max(args.workers, 1)} worker(s)")
    console.print("defects (ground-truth flags): " + ", ".join(f"{k} {v}" for k, v in flags.items()))
    return 0


def _make_one(job):
    from igr.data.synthetic import make_shard_sample

    seed, split, index, cfg = job
    return make_shard_sample(seed, split, index, cfg)


def run(args) -> int:
    size = args.size or ((128, 96) if args.source == "synthetic" else (1024, 768))
    if args.workers < 1:
        raise IGRError(f"--workers {args.workers}: must be at least 1")
    if args.max_per_shard < 1:
        raise IGRError(f"--max-per-shard {args.max_per_shard}: must be at least 1")
    if args.source == "synthetic":
        return _synthetic(args, size)
    if not args.root:
        raise IGRError(f"make-shards {args.source}: --root is required")
    if not os.path.isdir(args.root):
        raise IGRError(f"{args.root}: not a folder")
    # Fail on an existing output before scanning a large dataset.
    writer = ShardSetWriter(args.out, args.split, overwrite=args.overwrite, max_count=args.max_per_shard,
                            source=args.source, image_size=size)
    paired, extra = True, {}
    if args.source == "viton-hd":
        from igr.data.converters import viton_hd

        items, skips = viton_hd.build_items(args.root, args.split, args.mask_source)
        if args.split == "train" and args.dedupe != "off":
            dup = viton_hd.find_test_duplicates(items, args.root)
            extra["test_duplicates"] = {"found": len(dup), "dropped": args.dedupe == "drop"}
            print(f"{len(dup)} train garment(s) also appear in test/ (dHash distance <= 4)"
                  + ("; dropping them" if args.dedupe == "drop" and dup else ""))
            if args.dedupe == "drop":
                items, more = viton_hd.drop_duplicates(items, dup)
                skips += more
    elif args.source == "dresscode":
        from igr.data.converters import dresscode

        cats = tuple(c.strip() for c in args.categories.split(",") if c.strip())
        bad = [c for c in cats if c not in ("upper", "lower", "full")]
        if bad:
            raise IGRError(f"--categories: unknown {', '.join(bad)} (use upper, lower, full)")
        items, skips = dresscode.build_items(args.root, args.split, cats)
    elif args.source == "streettryon":
        from igr.data.converters import streettryon

        items, skips = streettryon.build_items(args.root, args.split, args.mask_dir, args.category)
        paired = False
    else:
        from igr.data.converters import folder

        items, skips, paired = folder.build_items(args.root, args.split, args.csv)
    if not items:
        raise IGRError(f"{args.root}: found no {args.split} samples to convert ({len(skips)} skipped early)")
    report, index = common.run_conversion(items, writer, size, paired=paired, workers=args.workers, total=len(items),
                                          description=f"{args.source} {args.split}", pre_skipped=skips,
                                          extra_index=extra or None)
    common.print_summary(report, index, args.out)
    return 0 if report.written else 1
