"""``igr curate SRC --out DIR``: build the HQFT fine-tune set from the coarse shards (paper §3.3, §4.1).

Either keep the keys of a hand-curated list (``--keep-list keys.txt``: one key per line, ``#``
comments; the paper curated by hand), or apply the automatic rules of
:mod:`igr.data.curation` with the thresholds of ``configs/curate.yaml`` (override with
``--config`` and ``--set name=value``). Garments with extreme proportions are re-framed
(cropped, padded to the frame aspect, resized) unless ``--no-fix``. Prints how many samples each
rule removed and the kept fraction (the paper kept 20 %), writes ``curation-report.json``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from igr.data.curation import (
    FIX_RULE,
    REMOVE_RULES,
    CurationConfig,
    Decision,
    decide,
    fix_proportion,
    flag_agreement,
    judge,
    measure_garment,
    measure_mask,
    quality_score,
)
from igr.data.schema import (
    DUPLICATE_KEY,
    SKIP_DESCRIPTIONS,
    SampleError,
    SkipStats,
    decode_sample,
    parse_meta,
)
from igr.data.shards import ShardSetWriter, existing_split_files, iter_raw, resolve_shards, split_shards
from igr.errors import IGRError

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "curate.yaml"
def _paper_fraction() -> float:
    from igr.config import PAPER

    return float(PAPER["hqft_keep_fraction"])


PAPER_KEEP_FRACTION = _paper_fraction()  # configs/paper.yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", help="coarse shards: directory, brace pattern, {split}.json index or URL")
    parser.add_argument("--out", required=True, help="output folder for the fine-tune shards")
    parser.add_argument("--keep-list", help="text file of sample keys to keep (hand curation); rules are not applied")
    parser.add_argument("--config", help=f"curation thresholds YAML (default: {DEFAULT_CONFIG.name} shipped with igr)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override one threshold, e.g. --set side_view_max_asymmetry=0.2 (repeatable)")
    parser.add_argument("--split", default="train",
                        help="split to curate when SRC is a folder of several splits; also the output split name "
                             "(default: train)")
    parser.add_argument("--no-fix", action="store_true", help="keep extreme-proportion garments as they are")
    parser.add_argument("--overwrite", action="store_true", help="replace existing shards of this split in --out")
    parser.add_argument("--max-per-shard", type=int, default=1000, help="samples per output shard (default: 1000)")
    parser.add_argument("--allow-outside-index", action="store_true",
                        help="let SRC's index name shards outside its own folder (absolute paths, '..'): only for an "
                             "index you trust")


def load_config(path: str | None, overrides: list[str]) -> CurationConfig:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from igr.config import yaml_error_line

    src = Path(path) if path else DEFAULT_CONFIG
    if not src.is_file():
        raise IGRError(f"{src}: curation config not found")
    try:
        conf = OmegaConf.load(src)
    except Exception as exc:  # PyYAML's scanner/parser errors span several lines
        raise IGRError(f"{src}: not a readable YAML config ({yaml_error_line(exc)})") from None
    try:
        if overrides:
            conf = OmegaConf.merge(conf, OmegaConf.from_dotlist(overrides))
        # read literally: thresholds are numbers, and a ${oc.env:...} must not pull the environment into the report
        data = OmegaConf.to_container(conf, resolve=False) or {}
        if not isinstance(data, dict):
            raise ValueError("expected a mapping at the top level")
        return CurationConfig.from_dict(data)
    except (OmegaConfBaseException, ValueError, TypeError) as exc:
        raise IGRError(f"{src}: {exc}") from None


def read_keep_list(path: str) -> list[str]:
    if not os.path.isfile(path):
        raise IGRError(f"{path}: keep list not found")
    keys = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].replace(",", " ").split()
            if line:
                keys.append(line[0])
    if not keys:
        raise IGRError(f"{path}: keep list holds no keys")
    return keys


def plan(urls: list[str], cfg: CurationConfig, keep: set[str] | None, fix: bool, stats: SkipStats,
         progress=None) -> list[Decision]:
    """Pass 1: measure every valid sample and decide its fate."""
    decisions = []
    seen: set[str] = set()
    for raw in iter_raw(urls, stats):
        if progress is not None:
            progress()
        if raw.get("__key__") in seen:  # pass 2 copies the first sample of a key: the one measured here
            stats.skip(DUPLICATE_KEY, raw.get("__url__", "?"), raw["__key__"], "key seen earlier in the shards")
            continue
        seen.add(raw.get("__key__"))
        try:
            d = decode_sample(raw, require_garment=True)
        except SampleError as err:
            stats.skip(err.reason, raw.get("__url__", "?"), raw.get("__key__", "?"), err.detail)
            continue
        stats.good += 1
        m = measure_mask(d.mask, cfg.measure_size)
        m.update(measure_garment(np.asarray(d.garment), cfg.garment_bg_threshold))
        if keep is not None:
            failed = judge(m, d.category, cfg)
            if d.key not in keep:
                action, rule = "remove", "not_in_keep_list"
            elif FIX_RULE in failed:
                action, rule = "fix", FIX_RULE
            else:
                action, rule = "keep", None
        else:
            action, rule, failed = decide(m, d.category, cfg)
        if action == "fix" and not fix:
            action = "keep"
        flags = d.meta.get("flags") if isinstance(d.meta.get("flags"), dict) else None
        decisions.append(Decision(d.key, d.category, action, rule, failed, m, flags, quality_score(m, cfg)))
    if cfg.keep_fraction is not None and keep is None:
        kept = sorted((x for x in decisions if x.action != "remove"), key=lambda x: -x.score)
        budget = round(cfg.keep_fraction * len(decisions))
        for x in kept[budget:]:
            x.action, x.rule = "remove", "below_keep_fraction"
    return decisions


def _encode_jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=95, subsampling=0 if a.shape[0] <= 512 else 2)
    return buf.getvalue()


def write(urls: list[str], decisions: list[Decision], writer: ShardSetWriter, cfg: CurationConfig, progress=None) -> None:
    """Pass 2: copy kept samples (bytes untouched), re-framing the garments marked ``fix``."""
    by_key = {d.key: d for d in decisions if d.action != "remove"}
    for raw in iter_raw(urls):
        if progress is not None:
            progress()
        d = by_key.pop(raw.get("__key__"), None)
        if d is None:
            continue
        sample = {k: v for k, v in raw.items() if not k.startswith("__") and v is not None}
        sample["__key__"] = raw["__key__"]
        meta = parse_meta(raw.get("meta.json"))  # pass 1 checked it
        meta["curation"] = {"rules_failed": d.failed, "fixed": d.action == "fix"}
        if d.action == "fix":
            garment = np.asarray(Image.open(io.BytesIO(raw["garment.jpg"])).convert("RGB"))
            sample["garment.jpg"] = _encode_jpeg(fix_proportion(garment, cfg))
        sample["meta.json"] = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
        writer.write(sample)


def summarize(decisions: list[Decision], stats: SkipStats, hand_curated: bool) -> dict:
    total = len(decisions)
    removed = Counter(d.rule for d in decisions if d.action == "remove")
    kept = sum(1 for d in decisions if d.action != "remove")
    rules = ("not_in_keep_list",) if hand_curated else (*REMOVE_RULES, FIX_RULE, "below_keep_fraction")
    return {
        "mode": "keep_list" if hand_curated else "rules",
        "valid_samples": total,
        "invalid_samples": stats.total_skipped,
        "removed": {r: removed.get(r, 0) for r in rules if removed.get(r, 0) or r in (*REMOVE_RULES, "not_in_keep_list")},
        "fixed": sum(1 for d in decisions if d.action == "fix"),
        "kept": kept,
        "kept_fraction": kept / total if total else 0.0,
        "paper_kept_fraction": PAPER_KEEP_FRACTION,
        "flag_agreement": {} if hand_curated else flag_agreement(decisions),
    }


def _refuse_replacing_inputs(urls: list[str], out: str, split: str) -> None:
    """``--out`` the source folder with ``--overwrite`` would replace the shards being curated while reading them."""
    if not os.path.isdir(out):
        return
    for path in existing_split_files(out, split):
        for url in urls:
            if os.path.exists(url) and os.path.samefile(path, url):
                raise IGRError(f"{out}: {os.path.basename(path)} is one of the shards being curated; "
                               "--overwrite never replaces an input (choose another --out or --split)")


def run(args) -> int:
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn

    cfg = load_config(args.config, args.set)
    keep_keys = read_keep_list(args.keep_list) if args.keep_list else None
    allow = args.allow_outside_index or None
    urls = (split_shards(args.src, args.split, allow_outside_index=allow) if os.path.isdir(args.src)
            else resolve_shards(args.src, allow_outside_index=allow))
    _refuse_replacing_inputs(urls, args.out, args.split)
    writer = ShardSetWriter(args.out, args.split, overwrite=args.overwrite, max_count=args.max_per_shard,
                            source=f"curated from {args.src}")
    stats = SkipStats(quiet=True)
    with Progress(SpinnerColumn(), TextColumn("{task.description} {task.completed} samples"), transient=True) as bar:
        t1 = bar.add_task("measuring", total=None)
        decisions = plan(urls, cfg, set(keep_keys) if keep_keys else None, not args.no_fix, stats,
                         lambda: bar.advance(t1))
        if not decisions:
            raise IGRError(f"{args.src}: no valid samples to curate ({stats.total_skipped} invalid)")
        t2 = bar.add_task("writing", total=None)
        with writer:
            write(urls, decisions, writer, cfg, lambda: bar.advance(t2))
            summary = summarize(decisions, stats, keep_keys is not None)
            if keep_keys is not None:
                known = {d.key for d in decisions}
                summary["keep_list"] = {"keys": len(keep_keys), "not_found": sum(1 for k in keep_keys if k not in known)}
            index = writer.close(skipped=dict(stats.counts), extra={"curation": {**summary, "config": cfg.as_dict()}})
    report_path = os.path.join(args.out, "curation-report.json")
    with open(report_path, "w", encoding="utf-8") as f:
        json.dump({**summary, "config": cfg.as_dict(), "samples": [
            {"key": d.key, "category": d.category, "action": d.action, "rule": d.rule, "failed": d.failed,
             "measures": {k: round(v, 4) for k, v in d.measures.items()}} for d in decisions]}, f, indent=1)

    console = Console(highlight=False, soft_wrap=True)
    console.print(f"curated {summary['valid_samples']} samples from {args.src} "
                  f"({summary['invalid_samples']} invalid, skipped)")
    for reason, n in sorted(stats.counts.items()):
        console.print(f"  invalid, {SKIP_DESCRIPTIONS.get(reason, reason)} ({reason}): {n}")
    for rule, n in summary["removed"].items():
        console.print(f"  removed by {rule}: {n}")
    console.print(f"  extreme proportion, re-framed: {summary['fixed']}")
    if index["num_samples"] != summary["kept"]:  # the shards changed between the two passes
        console.print(f"warning: decided to keep {summary['kept']} samples but wrote {index['num_samples']}; "
                      f"were the shards of {args.src} changed during curation?")
    console.print(f"kept {index['num_samples']} ({summary['kept_fraction']:.1%}; the paper kept "
                  f"{PAPER_KEEP_FRACTION:.0%}) -> {args.out} ({len(index['shards'])} shard(s), report {report_path})")
    if "keep_list" in summary and summary["keep_list"]["not_found"]:
        console.print(f"warning: {summary['keep_list']['not_found']} key(s) of the keep list are not in {args.src}")
    if summary["flag_agreement"]:
        console.print("against the synthetic ground-truth flags:")
        for rule, a in summary["flag_agreement"].items():
            p, r = (f"{v:.2f}" if v is not None else "n/a" for v in (a["precision"], a["recall"]))
            console.print(f"  {rule}: precision {p}, recall {r} (tp {a['tp']}, fp {a['fp']}, fn {a['fn']})")
    return 0
