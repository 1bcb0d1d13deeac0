"""``igr bench-metrics``: what each evaluation metric costs per test pair, and so what a test set costs to score.

    igr bench-metrics                                   # 1024x768 (the protocol), every metric, CPU
    igr bench-metrics --json outputs/bench/metrics-cpu.json --test-pairs 2032

Each metric is timed on the same random uint8 images at the metrics config's resolution: the paired scores
(SSIM, LPIPS, DISTS) per pair, the set metrics' feature extractors (Inception for FID and KID, CLIP for
CLIP-FID) per image — twice per pair under the paired protocol, once for the prediction and once for its ground
truth — and the Fréchet / kernel statistics once per set. A backbone whose weights are configured and present
is timed with them; any other is built with the same topology and random weights, and its row says so: the
cost does not depend on the weight values, the scores would (none is reported here).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
import torch

from igr.bench_json import check_json_path, write_json_record
from igr.config import parse_size
from igr.errors import IGRError
from igr.metrics.config import METRIC_BACKBONE, PAIRED_METRICS, MetricsConfig

# VITON-HD's paired test set (the paper's Table 1): the default projection of the whole evaluation's cost
VITON_HD_TEST_PAIRS = 2032


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", "--metrics-config", help="metrics YAML (default: configs/metrics/default.yaml)")
    parser.add_argument("--size", help="HxW of the images (default: the config's resolution, 1024x768)")
    parser.add_argument("--pairs", type=int, default=4, help="pairs per timed batch (default: 4)")
    parser.add_argument("--repeats", type=int, default=2, help="timed batches per metric; the fastest counts")
    parser.add_argument("--test-pairs", type=int, default=VITON_HD_TEST_PAIRS,
                        help=f"project the cost of a test set this size (default: {VITON_HD_TEST_PAIRS}, VITON-HD)")
    parser.add_argument("--device", help="cpu or cuda (default: the config's)")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the rows and the machine to this JSON file")


def _best_seconds(fn, repeats: int, device: torch.device) -> float:
    from igr.bench import sync  # waits for the device's queued kernels (CUDA), so each time is the whole call

    fn()  # warm-up: first-call allocations and lazy initialisation are not the metric's cost
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def measure(config: MetricsConfig, size: tuple[int, int], pairs: int, repeats: int, test_pairs: int,
            seed: int = 0) -> dict:
    """Seconds per pair of every configured metric (dict with ``rows`` and ``total_s_per_pair``)."""
    from igr.metrics.backbones import build_backbone
    from igr.metrics.ssim import ssim_pinned, ssim_rgb
    from igr.metrics.stats import frechet_distance, kernel_distance

    # Missing backbones are built with random weights here (and labelled): only their speed is measured.
    config = dataclasses.replace(config, allow_random_backbone=True, resolution=size)
    device = torch.device(config.device)
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, 256, (pairs, 3, *size), dtype=torch.uint8, generator=g).to(device)
    gt = torch.randint(0, 256, (pairs, 3, *size), dtype=torch.uint8, generator=g).to(device)
    paired_fns = {"ssim": ssim_pinned, "ssim_rgb": ssim_rgb}
    rows, backbones, extractor_s = [], {}, {}
    for metric in config.metrics:
        key = METRIC_BACKBONE.get(metric)
        if key is not None and key not in backbones:
            backbones[key] = build_backbone(config, key, device)
        backbone = backbones.get(key)
        weights = "-" if backbone is None else ("random-init" if backbone.random_init else "configured")
        with torch.no_grad():
            if metric in PAIRED_METRICS:
                fn = paired_fns.get(metric) or backbone
                seconds, per = _best_seconds(lambda fn=fn: fn(pred, gt), repeats, device) / pairs, "pair"
            else:  # a set metric: its extractor reads the prediction and the ground truth of every pair
                if key not in extractor_s:  # FID and KID share the Inception features: timed and counted once
                    extractor_s[key] = _best_seconds(lambda b=backbone: b(pred), repeats, device) / pairs * 2
                seconds, per = extractor_s[key], "pair (2 images)"
        rows.append({"metric": metric, "backbone": key, "weights": weights, "s_per_pair": seconds, "per": per,
                     "shared": key is not None and any(r["backbone"] == key for r in rows)})
    total = sum(r["s_per_pair"] for r in rows if not r["shared"])
    set_stats = []
    for key in sorted({k for k in backbones if k in ("inception", "clip_vit_b_32")}):
        with torch.no_grad():
            dim = int(backbones[key](pred[:1]).shape[-1])
        feats = np.random.default_rng(seed).standard_normal((2, test_pairs, dim))
        stats = [("frechet", lambda f=feats: frechet_distance(f[0], f[1]))]
        if key == "inception" and "kid" in config.metrics:
            stats.append(("kernel", lambda f=feats: kernel_distance(
                f[0], f[1], subset_size=min(config.kid.subset_size, test_pairs), num_subsets=config.kid.num_subsets,
                seed=config.kid.seed)))
        for name, fn in stats:
            t0 = time.perf_counter()
            fn()
            set_stats.append({"statistic": name, "backbone": key, "features": dim, "n": test_pairs,
                              "seconds": time.perf_counter() - t0})
    once = sum(s["seconds"] for s in set_stats)
    return {"size": f"{size[0]}x{size[1]}", "pairs_timed": pairs, "rows": rows, "set_statistics": set_stats,
            "total_s_per_pair": total, "test_pairs": test_pairs,
            "test_set_hours": (total * test_pairs + once) / 3600}


def run(args) -> int:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if args.pairs < 1 or args.repeats < 1 or args.test_pairs < 2:
        raise IGRError("--pairs and --repeats must be >= 1, --test-pairs >= 2")
    check_json_path(args.json)
    config = MetricsConfig.load(args.metrics_config)
    if args.device:
        config = dataclasses.replace(config, device=args.device)
    size = parse_size(args.size) if args.size else tuple(config.resolution or (1024, 768))
    if args.threads:
        torch.set_num_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from igr.bench import device_name

    console = Console(highlight=False, soft_wrap=True)
    load_before = os.getloadavg()[0]
    result = measure(config, size, args.pairs, args.repeats, args.test_pairs, seed=args.seed)
    load = max(load_before, os.getloadavg()[0])
    table = Table("metric", "backbone", "weights", "seconds", "per")
    for r in result["rows"]:
        seconds = f"{r['s_per_pair']:.3f}" + (" (shared)" if r["shared"] else "")
        table.add_row(r["metric"], r["backbone"] or "-", r["weights"], seconds, r["per"])
    console.print(f"{device_name(torch.device(config.device))}, {result['size']}, {args.pairs} pairs per batch")
    console.print(table)
    for s in result["set_statistics"]:
        console.print(f"{s['statistic']} distance on {s['n']} x {s['features']} {s['backbone']} features: "
                      f"{s['seconds']:.2f} s once per set")
    console.print(f"all metrics: {result['total_s_per_pair']:.2f} s per pair (FID and KID share the Inception "
                  f"features); {result['test_pairs']} test pairs: {result['test_set_hours']:.2f} h "
                  "(scoring only, restoration not included)")
    if any(r["weights"] == "random-init" for r in result["rows"]):
        console.print("random-init: that backbone's weights are not configured here; the same network with random "
                      "weights was timed (the cost does not depend on the weights; no score is reported)")
    if args.json:
        write_json_record(args.json, torch.device(config.device), load, **result)
    return 0
