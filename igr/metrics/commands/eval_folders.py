"""``igr eval-folders``: score a folder of predicted garments against ground truth and/or a real set.

    igr eval-folders --pred out/pred --gt data/test/garment --out out/eval --weights-config weights.yaml
    igr eval-folders --pred out/street --real data/viton-test/garment          # unpaired: FID/CLIP-FID/KID

Predictions and ground truth are paired by file name without extension (``00001_00.png`` ↔
``00001_00.jpg``). Every image must already be ``--size`` (default 1024x768, the protocol) unless
``--resize`` is given; then the report says how many were resized. Everything is checked before any
output is written: a bad input gives one ``error:`` line, exit code 2, and no files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

from igr.config import parse_size
from igr.errors import IGRError
from igr.imageio import image_size
from igr.metrics.cache import files_set_id
from igr.metrics.config import SET_METRICS, MetricsConfig
from igr.metrics.images import IMAGE_EXTENSIONS, load_rgb
from igr.metrics.report import ReportRow, save_sample_grid, write_report
from igr.metrics.suite import MetricSuite

SHOW = 5  # how many offending names an error message lists


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pred", required=True, type=Path, help="folder of predicted garment images")
    parser.add_argument(
        "--gt", type=Path, help="folder of ground-truth garments, same file names (paired test)"
    )
    parser.add_argument(
        "--real", type=Path, help="real set for FID/CLIP-FID/KID (default: --gt); unpaired test"
    )
    parser.add_argument("--out", type=Path, help="output folder (default: outputs/eval/<pred folder name>)")
    parser.add_argument(
        "--size", default="1024x768", help="evaluation size HxW (default: 1024x768, the protocol)"
    )
    parser.add_argument(
        "--resize", action="store_true", help="resize images that are not --size (PIL bicubic)"
    )
    parser.add_argument(
        "--weights-config",
        type=Path,
        help="metrics YAML with local weight paths (default: configs/metrics/default.yaml)",
    )
    parser.add_argument("--name", help="row name in the report (default: the --pred folder name)")
    parser.add_argument("--batch-size", type=int, help="images per batch (default: from the config)")
    parser.add_argument("--device", help="torch device, e.g. cuda (default: from the config)")
    parser.add_argument(
        "--cache-dir", type=Path, help="cache real-set features here (default: from the config)"
    )
    # Tests only: build missing backbones with random weights; every such value is labelled.
    parser.add_argument("--allow-random-backbone", action="store_true", help=argparse.SUPPRESS)


def _is_within(path: Path, folder: Path) -> bool:
    """``path`` is ``folder`` or under it, links and ``..`` resolved (neither need exist)."""
    p, f = Path(os.path.realpath(path)), Path(os.path.realpath(folder))
    return p == f or f in p.parents


def _list_images(folder: Path, flag: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise IGRError(f"{folder}: {flag} folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise IGRError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) in the {flag} folder")
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise IGRError(f"{folder}: two images named '{f.stem}' ({by_stem[f.stem].name}, {f.name})")
        by_stem[f.stem] = f
    return by_stem


def _check_same_names(pred: dict[str, Path], gt: dict[str, Path], pred_dir: Path, gt_dir: Path) -> None:
    no_pred = sorted(set(gt) - set(pred))
    no_gt = sorted(set(pred) - set(gt))
    if no_pred or no_gt:
        parts = []
        if no_pred:
            shown = ", ".join(no_pred[:SHOW])
            parts.append(f"{len(no_pred)} ground-truth image(s) have no prediction (first: {shown})")
        if no_gt:
            shown = ", ".join(no_gt[:SHOW])
            parts.append(f"{len(no_gt)} prediction(s) have no ground truth (first: {shown})")
        raise IGRError(f"{pred_dir}: file names differ from {gt_dir}: " + "; ".join(parts))


def _check_sizes(files: list[Path], size: tuple[int, int], resize: bool, flag: str) -> int:
    """Number of images whose size is not ``size``; an error unless ``resize``."""
    wrong = []
    for f in files:
        hw = image_size(f, flag)  # as displayed: EXIF orientation applied, like the pixels read later
        if hw != size:
            wrong.append((f, hw))
    if wrong and not resize:
        f, hw = wrong[0]
        raise IGRError(
            f"{f}: {flag} image is {hw[0]}x{hw[1]}, expected {size[0]}x{size[1]} "
            f"({len(wrong)} of {len(files)} {flag} images differ; pass --resize to resize them, or --size)"
        )
    return len(wrong)


def _load_batch(files: list[Path], size: tuple[int, int], what: str) -> torch.Tensor:
    images = []
    for f in files:
        images.append(load_rgb(f, size, what))
    return torch.stack(images)


def _progress(done: int, prev: int, total: int, what: str) -> None:
    """Report roughly every 10% on stderr."""
    if done == total or done * 10 // total > prev * 10 // total:
        print(f"  {what}: {done}/{total}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    size = parse_size(args.size)
    if args.gt is None and args.real is None:
        raise IGRError(f"{args.pred}: give --gt (paired test) and/or --real (real set for FID/CLIP-FID/KID)")
    if args.batch_size is not None and args.batch_size < 1:
        raise IGRError(f"--batch-size: must be >= 1, got {args.batch_size}")

    # ---- check every input before anything is computed or written
    out = args.out if args.out is not None else Path("outputs") / "eval" / args.pred.resolve().name
    for flag, folder in (("--pred", args.pred), ("--gt", args.gt), ("--real", args.real)):
        if folder is not None and _is_within(out, folder):  # its samples.jpg would be scored next time
            raise IGRError(f"--out {out}: is inside the {flag} folder {folder}; choose an output folder outside it")
    pred = _list_images(args.pred, "--pred")
    gt = _list_images(args.gt, "--gt") if args.gt is not None else None
    if gt is not None:
        _check_same_names(pred, gt, args.pred, args.gt)
    real = _list_images(args.real, "--real") if args.real is not None else None

    overrides = {"resolution": size, "allow_random_backbone": bool(args.allow_random_backbone)}
    if args.device:
        overrides["device"] = args.device
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    if args.cache_dir:
        overrides["cache_dir"] = str(args.cache_dir)
    config = MetricsConfig.load(args.weights_config, **overrides)
    wants_sets = any(m in config.metrics for m in SET_METRICS)
    if wants_sets:
        for flag, files in (("--pred", pred), ("--real", real) if real is not None else ("--gt", gt)):
            if files is not None and len(files) < 2:
                raise IGRError(f"{flag}: FID/CLIP-FID/KID need at least 2 images, found {len(files)}")

    names = sorted(pred)
    resized = {"--pred": _check_sizes([pred[n] for n in names], size, args.resize, "--pred")}
    if gt is not None:
        resized["--gt"] = _check_sizes([gt[n] for n in names], size, args.resize, "--gt")
    if real is not None:
        resized["--real"] = _check_sizes(list(real.values()), size, args.resize, "--real")

    # ---- compute
    real_dir = args.real if args.real is not None else args.gt
    real_files = list((real if real is not None else gt).values())
    real_id = f"folder:{real_dir.resolve()}:{files_set_id(real_files, real_dir)}:resize={args.resize}"
    suite = MetricSuite(config, real="separate" if real is not None else "gt", real_id=real_id)
    bs = config.batch_size
    grid_pred, grid_gt = [], []
    for i in range(0, len(names), bs):
        chunk = names[i : i + bs]
        p = _load_batch([pred[n] for n in chunk], size, "--pred")
        g = _load_batch([gt[n] for n in chunk], size, "--gt") if gt is not None else None
        suite.update(p, g, keys=chunk)
        if len(grid_pred) < 8:
            grid_pred += list(p[: 8 - len(grid_pred)])
            if g is not None:
                grid_gt += list(g[: 8 - len(grid_gt)])
        _progress(min(i + bs, len(names)), i, len(names), "predictions scored")
    if real is not None and wants_sets and not suite.real_is_cached():
        files = sorted(real.values())
        for i in range(0, len(files), bs):
            suite.update_real(_load_batch(files[i : i + bs], size, "--real"))
            _progress(min(i + bs, len(files)), i, len(files), "real images")
    results = suite.compute()
    protocol = suite.protocol()

    # ---- write
    notes = [
        f"inputs: --pred {args.pred}"
        + (f" --gt {args.gt}" if args.gt else "")
        + (f" --real {args.real}" if args.real else "")
    ]
    for flag, n in resized.items():
        if n:
            notes.append(
                f"--resize: {n} {flag} image(s) were not {size[0]}x{size[1]}; resized to it (PIL bicubic)"
            )
    if real is not None:
        notes.append(
            f"FID/CLIP-FID/KID compare --pred with --real ({args.real})" + (", not --gt" if gt else "")
        )
    protocol["notes"] = notes
    out.mkdir(parents=True, exist_ok=True)
    grid = save_sample_grid(out / "samples.jpg", grid_pred, grid_gt or None)
    name = args.name or args.pred.resolve().name
    row = ReportRow(
        name, paired=results if gt is not None else None, unpaired=None if gt is not None else results
    )
    label = "paired test" if gt is not None else "unpaired test"
    paths = write_report(out, [row], {label: protocol}, title=f"igr eval-folders: {name}", sample_grid=grid)
    for key, value in results.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"{key:>28}: {shown}")
    print(f"wrote {paths['md']}, {paths['json'].name}, {paths['csv'].name}, {grid.name}")
    return 0
