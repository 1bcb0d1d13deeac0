"""Write an evaluation as ``metrics.json``, ``metrics.csv`` and ``report.md`` (the paper's table layout).

    rows = [ReportRow("IGR (ours)", paired=suite_p.compute(), unpaired=suite_u.compute()),
            ReportRow("masked-crop baseline", paired=...)]
    write_report(out_dir, rows, {"paired": suite_p.protocol(), "unpaired": suite_u.protocol()})

Values computed with a random-init test backbone (keys ending in ``_random_backbone``) are marked † in
the table, listed in the CSV's ``random_backbone`` column, and kept under their labelled keys in the JSON.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from igr.metrics.paper_tables import PAIRED_COLUMNS, PAPER_TABLES, UNPAIRED_COLUMNS
from igr.metrics.suite import PROTOCOL_RESOLUTION, RANDOM_SUFFIX

HEADERS = {
    "ssim": "SSIM ↑",
    "lpips": "LPIPS ↓",
    "dists": "DISTS ↓",
    "fid": "FID ↓",
    "clip_fid": "CLIP-FID ↓",
    "kid_x1e3": "KID* ↓",
    "ssim_rgb": "SSIM-RGB ↑",
}
CSV_PAIRED = ("ssim", "ssim_rgb", "lpips", "dists", "fid", "clip_fid", "kid_x1e3")

DEFINITIONS = [
    "SSIM: pyiqa's definition (as TryOffDiff): Y of YIQ (0.299 R + 0.587 G + 0.114 B) on 0-255, rounded; "
    "11×11 Gaussian window σ = 1.5, valid filtering; C1 = (0.01·255)², C2 = (0.03·255)²; contrast-structure "
    "term clamped ≥ 0; mean per image, then over images. SSIM-RGB: torchmetrics on RGB (reference only).",
    "LPIPS: lpips package v0.1, AlexNet trunk, inputs scaled to [-1, 1] at the evaluation resolution.",
    "DISTS: VGG16 with DISTS_pytorch's published α/β, both images first resized (PIL bilinear) to short side "
    "256 when it is longer (1024×768 → 341×256; smaller images are left as they are).",
    "FID / KID: clean-fid mode 'clean' Inception-V3 pool3 features (per-channel float bicubic resize to "
    "299×299); KID = clean-fid's unbiased cubic-kernel MMD over random subsets, reported ×1e3 (KID*), "
    "subsets drawn from a seeded generator.",
    "CLIP-FID: Fréchet distance on CLIP ViT-B/32 (OpenAI weights) image embeddings, preprocessed as "
    "clean-fid's model_name='clip_vit_b_32' (bicubic short side 224, centre crop 224).",
]


@dataclass
class ReportRow:
    name: str
    paired: Mapping[str, float | str] | None = None  # MetricSuite.compute() of the paired test
    unpaired: Mapping[str, float | str] | None = None  # MetricSuite.compute() of the unpaired test
    notes: list[str] = field(default_factory=list)
    intervals: Mapping[str, Sequence[float]] = field(default_factory=dict)  # metric → bootstrap 95 % [low, high]
    # {"versus": the first row's name, metric: [that row − this row, low, high]} (paired bootstrap, tiny world)
    difference: Mapping[str, Any] = field(default_factory=dict)


def _lookup(values: Mapping[str, Any] | None, name: str) -> tuple[Any, bool]:
    """(value, computed with a random backbone?); value None when the metric was not evaluated."""
    if values is None:
        return None, False
    if name in values:
        return values[name], False
    if name + RANDOM_SUFFIX in values:
        return values[name + RANDOM_SUFFIX], True
    return None, False


def _fmt(value: Any, random: bool) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.4f}" + ("†" if random else "")


def _table(rows: Sequence[ReportRow]) -> list[str]:
    head = (
        ["Model"]
        + [HEADERS[c] for c in PAIRED_COLUMNS]
        + [f"{HEADERS[c]} (unpaired)" for c in UNPAIRED_COLUMNS]
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row.name]
        cells += [_fmt(*_lookup(row.paired, c)) for c in PAIRED_COLUMNS]
        cells += [_fmt(*_lookup(row.unpaired, c)) for c in UNPAIRED_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


TINY_HEADERS = {
    "ssim": "SSIM ↑",
    "kind_acc": "kind ↑",
    "colour_acc": "colour ↑",
    "pattern_acc": "pattern ↑",
    "fd_tiny": "fd_tiny ↓",
    "kd_tiny": "kd_tiny ↓",
}


def _fmt_ci(value: Any, ci: Sequence[float] | None, pct: bool) -> str:
    if value is None or isinstance(value, str):
        return "–"
    if pct:
        text = f"{100 * value:.1f} %"
        return text + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else "")
    text = f"{value:.3f}"
    return text + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def tiny_table(rows: Sequence[ReportRow]) -> list[str]:
    """The tiny world's table (docs/design.md §7): SSIM, attribute accuracy of the garment classifier, and the
    tiny-world distances on its features, each with its bootstrap 95 % interval over test pairs."""
    keys = list(TINY_HEADERS)
    lines = [
        "**Tiny-world metrics** (no downloaded weights; [bootstrap 95 % interval over test pairs])",
        "",
        "| Row | " + " | ".join(TINY_HEADERS[k] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for row in rows:
        if not row.paired or "kind_acc" not in row.paired:
            continue
        cells = [_fmt_ci(row.paired.get(k), row.intervals.get(k), k.endswith("_acc")) for k in keys]
        lines.append(f"| {row.name} | " + " | ".join(cells) + " |")
    return lines


def difference_table(rows: Sequence[ReportRow]) -> list[str]:
    """The first row against every other, on the same test pairs: the difference and its paired-bootstrap 95 %
    interval. The rows' own intervals overlap far more often than their difference is uncertain."""
    diffs = [r for r in rows if r.difference]
    if not diffs:
        return []
    keys = list(TINY_HEADERS)
    ref = diffs[0].difference["versus"]

    def cell(k: str, d: Sequence[float]) -> str:
        tie = " tie" if d[1] <= 0 <= d[2] else ""
        if k.endswith("_acc"):
            return f"{100 * d[0]:+.1f} pts [{100 * d[1]:+.1f}, {100 * d[2]:+.1f}]{tie}"
        return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]{tie}"

    lines = [
        f"**{ref} minus each row** (paired bootstrap over the same resampled test pairs, 95 %; 'tie' where the "
        "interval contains 0; for SSIM and accuracies a positive difference favours the first row, for fd_tiny / "
        "kd_tiny a negative one)",
        "",
        "| Row | " + " | ".join(TINY_HEADERS[k] for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for r in diffs:
        lines.append(f"| {r.name} | " + " | ".join(cell(k, r.difference[k]) if k in r.difference else "–"
                                                   for k in keys) + " |")
    return lines


def tiny_protocol_lines(p: Mapping[str, Any]) -> list[str]:
    return [
        f"- Tiny-world classifier: a 4-block CNN trained for {p.get('classifier_steps')} steps on the "
        f"{p.get('num_train_garments')} training garments"
        + (f" (`igr train-classifier`, loaded from {p['classifier_file']})" if p.get("classifier_file") else "")
        + ", one head each for garment kind, colour family (of the dominant colour) and pattern, labels from "
        "the generator's meta.json. kind/colour/pattern: share of restored garments classified as the ground "
        "truth's class; the 'ground truth (classifier ceiling)' row is the classifier on the ground-truth garments.",
        "- fd_tiny / kd_tiny: Fréchet distance and kernel distance (KID's unbiased cubic-kernel estimator, raw, "
        "not ×1e3) between the classifier's 64-d features of restored and ground-truth garments, computed by the "
        "same code as FID/KID (igr/metrics/stats.py). Tiny-world distances, not FID/KID.",
        f"- Intervals: percentile bootstrap over the {p.get('num_pairs')} test pairs, {p.get('bootstrap_resamples')} "
        f"resamples (the first {p.get('distance_resamples')} of them for fd_tiny / kd_tiny), seed "
        f"{p.get('bootstrap_seed')}, the same draws for every row. Resampling with replacement repeats pairs, "
        "which biases the set distances upwards: their intervals show the spread and may sit above the point value.",
    ]


def _paper_table(name: str) -> list[str]:
    caption, paper_rows = PAPER_TABLES[name]
    rows = [
        ReportRow(n, dict(zip(PAIRED_COLUMNS, p)), dict(zip(UNPAIRED_COLUMNS, u))) for n, p, u in paper_rows
    ]
    return [f"**{caption}** (1024×768, the paper's own numbers)", "", *_table(rows), ""]


def _unavailable(rows: Sequence[ReportRow]) -> list[str]:
    lines = []
    for row in rows:
        for test, values in (("paired", row.paired), ("unpaired", row.unpaired)):
            for key, value in (values or {}).items():
                if isinstance(value, str):
                    lines.append(f"- {row.name}, {test} {HEADERS.get(key, key).split(' ')[0]}: {value}")
    return lines


def _protocol_lines(label: str, p: Mapping[str, Any]) -> list[str]:
    res = p.get("resolution")
    out = [f"**{label}**", ""]
    if res:
        out.append(f"- Resolution: images scored at {res[0]}×{res[1]} (H×W), uint8 RGB.")
        if tuple(res) != PROTOCOL_RESOLUTION:
            ph, pw = PROTOCOL_RESOLUTION
            out.append(
                f"- **Not the paper's protocol resolution ({ph}×{pw}): these numbers are not comparable "
                "with the paper's rows.**"
            )
    sizes = ", ".join(f"{n} images for {k}" for k, n in (p.get("num_real") or {}).items())
    out.append(
        f"- Images: {p.get('num_samples')} predictions; real set: {p.get('real_set')}"
        + (f" ({sizes})." if sizes else ".")
    )
    if p.get("real_features_cached"):
        out.append(f"- Real-set features read from the cache for: {', '.join(p['real_features_cached'])}.")
    if p.get("duplicates_dropped"):
        out.append(f"- {p['duplicates_dropped']} duplicate samples (same key on several ranks) counted once.")
    kid = p.get("kid") or {}
    used, max_size = kid.get("subset_size_used"), kid.get("max_subset_size")
    if used is not None:
        reduced = used < max_size
        out.append(
            f"- KID: {kid.get('num_subsets')} subsets of {used} images, seed {kid.get('seed')}"
            + (
                f" — **smaller than clean-fid's {max_size}** because a set has only {used} images."
                if reduced
                else "."
            )
        )
    for key, text in (p.get("backbones") or {}).items():
        out.append(f"- Backbone {key}: {text}")
    for note in p.get("notes") or []:
        out.append(f"- {note}")
    out.append("")
    return out


def write_report(
    out_dir: str | Path,
    rows: Sequence[ReportRow],
    protocols: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "IGR evaluation",
    sample_grid: str | Path | None = None,
    paper_tables: Sequence[str] = ("table1",),
    notes: Sequence[str] = (),
    tiny_protocol: Mapping[str, Any] | None = None,
) -> dict[str, Path]:
    """Write the three files into ``out_dir`` (created); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    unknown = [t for t in paper_tables if t not in PAPER_TABLES]
    if unknown:
        raise ValueError(f"paper_tables: unknown table '{unknown[0]}' (known: {', '.join(PAPER_TABLES)})")
    any_random = any(
        _lookup(vals, c)[1] for r in rows for vals in (r.paired, r.unpaired) for c in CSV_PAIRED
    ) or any(p.get("random_backbones") for p in protocols.values())
    grid = None if sample_grid is None else Path(sample_grid)

    paths = {"json": out_dir / "metrics.json", "csv": out_dir / "metrics.csv", "md": out_dir / "report.md"}
    payload = {
        "title": title,
        "rows": [
            {
                "name": r.name,
                "paired": None if r.paired is None else dict(r.paired),
                "unpaired": None if r.unpaired is None else dict(r.unpaired),
                "notes": list(r.notes),
                "ci95": {k: list(v) for k, v in r.intervals.items()},
                "difference": dict(r.difference),
            }
            for r in rows
        ],
        "protocol": {k: dict(v) for k, v in protocols.items()},
        "notes": list(notes),
        "random_backbone": any_random,
        "sample_grid": None if grid is None else str(grid),
        "paper": {t: PAPER_TABLES[t][1] for t in paper_tables},
        "tiny_protocol": None if tiny_protocol is None else dict(tiny_protocol),
    }
    paths["json"].write_text(json.dumps(payload, indent=2, default=str) + "\n")

    with open(paths["csv"], "w", newline="") as f:
        writer = csv.writer(f)
        header = ["name"] + [f"paired_{c}" for c in CSV_PAIRED] + [f"unpaired_{c}" for c in UNPAIRED_COLUMNS]
        writer.writerow(header + ["random_backbone"])
        for r in rows:
            cells, randoms = [r.name], []
            for test, values, cols in (
                ("paired", r.paired, CSV_PAIRED),
                ("unpaired", r.unpaired, UNPAIRED_COLUMNS),
            ):
                for c in cols:
                    value, rnd = _lookup(values, c)
                    cells.append("" if value is None else value)
                    if rnd:
                        randoms.append(f"{test}_{c}")
            writer.writerow(cells + [" ".join(randoms)])

    md = [f"# {title}", ""]
    if any_random:
        md += [
            "> **RANDOM-INIT BACKBONES (test only).** Values marked † come from randomly initialised "
            "networks and mean nothing.",
            "",
        ]
    md += _table(rows) + [""]
    if tiny_protocol is not None:
        md += tiny_table(rows) + [""]
        diff = difference_table(rows)
        md += (diff + [""] if diff else []) + tiny_protocol_lines(tiny_protocol) + [""]
    if any(_lookup(r.paired, "ssim_rgb")[0] is not None for r in rows):
        ssim_rgb = "; ".join(f"{r.name} {_fmt(*_lookup(r.paired, 'ssim_rgb'))}" for r in rows)
        md += [f"SSIM-RGB (torchmetrics, not the paper's SSIM): {ssim_rgb}", ""]
    unavailable = _unavailable(rows)
    if unavailable:
        md += ["Not computed (n/a):", "", *unavailable, ""]
    for r in rows:
        md += [f"- {r.name}: {n}" for n in r.notes]
    if grid is not None:
        md += [f"![samples]({grid.name if grid.parent == out_dir else grid})", ""]
    md += ["## Protocol", "", *[f"- {d}" for d in DEFINITIONS], ""]
    for label, p in protocols.items():
        md += _protocol_lines(label, p)
    md += [f"- {n}" for n in notes] + ([""] if notes else [])
    md += ["## The paper's numbers", ""]
    for t in paper_tables:
        md += _paper_table(t)
    paths["md"].write_text("\n".join(md) + "\n")
    return paths


def save_sample_grid(
    path: str | Path, preds: Sequence[Any], gts: Sequence[Any] | None = None, height: int = 256
) -> Path:
    """Save predictions (top row) over ground truth (bottom row) as one image; tensors are (3, H, W) uint8."""
    rows = [("", preds)] + ([("", gts)] if gts else [])
    return save_labelled_grid(path, rows, height=height)


def save_labelled_grid(path: str | Path, rows: Sequence[tuple[str, Sequence[Any]]], height: int = 256) -> Path:
    """One row of tiles per ``(label, images)``, the label in a column on the left (none when every label is
    empty); images are (3, H, W) uint8 tensors, each scaled to ``height``."""
    from PIL import Image, ImageDraw, ImageFont

    def tile(t) -> Image.Image:
        im = Image.fromarray(t.detach().cpu().permute(1, 2, 0).numpy())
        w = max(1, round(im.width * height / im.height))
        return im.resize((w, height), resample=Image.BICUBIC)

    tiles = [[tile(t) for t in images] for _, images in rows]
    font = ImageFont.load_default(size=max(10, height // 8))  # bundled with Pillow: no font file needed
    labels = [label for label, _ in rows]
    margin = max(8, height // 16)
    label_w = 0
    if any(labels):
        label_w = 2 * margin + max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(x, font=font)) for x in labels)
    width = label_w + max(sum(im.width for im in row) for row in tiles)
    canvas = Image.new("RGB", (width, height * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, row) in enumerate(zip(labels, tiles)):
        if label:
            draw.text((margin, r * height + height // 2), label, fill="black", font=font, anchor="lm")
        x = label_w
        for im in row:
            canvas.paste(im, (x, r * height))
            x += im.width
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return path
