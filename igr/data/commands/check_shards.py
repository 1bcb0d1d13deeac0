"""``igr check-shards PATTERN``: decode and validate every sample of a shard set.

Prints the number of good samples and of each failure kind (undecodable image, missing field,
size mismatch between person/mask/garment, unknown category, unreadable shard), and the grey
masks the loader will binarise. Exit code 0 when every sample is usable, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

from igr.data.schema import (
    DUPLICATE_KEY,
    SKIP_DESCRIPTIONS,
    SKIP_REASONS,
    SampleError,
    SkipStats,
    decode_sample,
)
from igr.data.shards import find_index, iter_raw, resolve_shards


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pattern", help="shards: brace pattern, directory, {split}.json index or URL")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--unpaired", action="store_true",
                        help="samples need no garment (default: from the index, else garments are required)")
    parser.add_argument("--mask-threshold", type=int, default=127, help="grey mask threshold (default: 127)")
    parser.add_argument("--allow-outside-index", action="store_true",
                        help="let an index name shards outside its own folder (absolute paths, '..'): only for an "
                             "index you trust")


def check(pattern: str, *, unpaired: bool | None = None, threshold: int = 127, progress: bool = True,
          allow_outside_index: bool | None = None) -> dict:
    """Validate a shard set; returns the report dict that ``--json`` prints."""
    urls = resolve_shards(pattern, allow_outside_index=allow_outside_index)
    index = find_index(urls)
    if unpaired is None:
        unpaired = index is not None and not index.get("paired", True)
    stats = SkipStats(quiet=True)
    categories: Counter = Counter()
    seen = 0
    first_url: dict[str, str] = {}  # key -> the shard that first held it

    bar = None
    if progress:
        from rich.progress import Progress, SpinnerColumn, TextColumn

        bar = Progress(SpinnerColumn(), TextColumn("checked {task.completed} samples"), transient=True)
        task = bar.add_task("check", total=None)
        bar.start()
    try:
        for raw in iter_raw(urls, stats):
            seen += 1
            if bar is not None:
                bar.advance(task)
            key, url = raw.get("__key__", "?"), raw.get("__url__", "?")
            if key in first_url:  # readers would train on one sample twice, curate would keep only one
                stats.skip(DUPLICATE_KEY, url, key, f"key also in {first_url[key]}")
                continue
            first_url[key] = url
            try:
                d = decode_sample(raw, require_garment=not unpaired, threshold=threshold)
            except SampleError as err:
                stats.skip(err.reason, raw.get("__url__", "?"), raw.get("__key__", "?"), err.detail)
                continue
            if d.n_nonbinary:
                stats.nonbinary(d.url, d.key, d.n_nonbinary)
            stats.good += 1
            categories[d.category] += 1
    finally:
        if bar is not None:
            bar.stop()
    report = stats.as_dict()
    report.update({
        "pattern": pattern,
        "shards": len(urls),
        "samples_seen": seen,
        "paired": not unpaired,
        "categories": {c: categories.get(c, 0) for c in ("upper", "lower", "full")},
        "failed": stats.total_skipped,
        "ok": stats.total_skipped == 0 and stats.good > 0,
    })
    if index is not None:
        report["index_num_samples"] = index.get("num_samples")
    return report


def run(args) -> int:
    report = check(args.pattern, unpaired=True if args.unpaired else None, threshold=args.mask_threshold,
                   progress=not args.json, allow_outside_index=args.allow_outside_index or None)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0 if report["ok"] else 1
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    cats = ", ".join(f"{k} {v}" for k, v in report["categories"].items())
    console.print(f"{report['shards']} shard(s), {report['samples_seen']} samples "
                  f"({'paired' if report['paired'] else 'unpaired'})")
    console.print(f"good: {report['good']} ({cats})")
    if report.get("index_num_samples") not in (None, report["samples_seen"]):
        console.print(f"warning: the index lists {report['index_num_samples']} samples, the shards hold {report['samples_seen']}")
    for reason in SKIP_REASONS:
        n = report["skipped"][reason]
        console.print(f"{SKIP_DESCRIPTIONS[reason]} ({reason}): {n}")
        for ex in report["examples"].get(reason, []):
            console.print(f"    e.g. {ex}")
    console.print(f"grey masks, binarised at load (nonbinary_mask): {report['nonbinary_masks']}")
    for ex in report["examples"].get("nonbinary_mask", []):
        console.print(f"    e.g. {ex}")
    if report["good"] == 0:
        console.print("no usable samples")
    return 0 if report["ok"] else 1
