"""The tiny world's ablations set beside the paper's Table 2, metric by metric.

The paper's Table 2 does not rank its three rows alike on every metric: on VITON-HD's SSIM the full model is last
(w/o HQFT 0.7984 > w/o GarmNet 0.7931 > IGR 0.7895), while LPIPS, DISTS, FID and KID, and all three StreetTryOn
columns, put it first and w/o GarmNet last. So "the order of Table 2" is a statement per metric, and this module
makes it one: for each tiny-world metric with a counterpart among the paper's columns it gives both orders, and the
paired bootstrap difference of each pair of neighbouring tiny-world rows (``igr eval``'s bootstrap.json), so that
an order is called only where the interval leaves out 0.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from igr.metrics.paper_tables import PAIRED_COLUMNS, PAPER_TABLES, UNPAIRED_COLUMNS
from igr.metrics.tiny import paired_difference

# (tiny-world metric, the paper's paired column, higher is better). fd_tiny / kd_tiny are Fréchet and kernel
# distances on the tiny classifier's features: the tiny world's stand-ins for FID and KID, never reported as them.
COUNTERPARTS = (("ssim", "ssim", True), ("fd_tiny", "fid", False), ("kd_tiny", "kid_x1e3", False))
PAPER_FULL_ROW = "IGR (paper)"
LABELS = {"ssim": "SSIM ↑", "lpips": "LPIPS ↓", "dists": "DISTS ↓", "fid": "FID ↓", "clip_fid": "CLIP-FID ↓",
          "kid_x1e3": "KID×1e3 ↓", "fd_tiny": "fd_tiny ↓", "kd_tiny": "kd_tiny ↓"}


def _order(values: Mapping[str, float], higher: bool) -> list[str]:
    return sorted(values, key=values.get, reverse=higher)


def paper_orders() -> dict[str, list[str]]:
    """{'<test> <column>': the paper's Table 2 rows, best first} for every column of the table."""
    _, rows = PAPER_TABLES["table2"]
    out = {}
    for test, columns, index in (("VITON-HD", PAIRED_COLUMNS, 1), ("StreetTryOn", UNPAIRED_COLUMNS, 2)):
        for c, column in enumerate(columns):
            out[f"{test} {column}"] = _order({r[0]: r[index][c] for r in rows}, higher=column == "ssim")
    return out


def compare(
    rows: Mapping[str, Mapping[str, object]],
    row_names: Mapping[str, str],
    draws: Mapping[str, tuple[dict, dict]] | None = None,
) -> list[dict]:
    """One entry per counterpart metric that every mapped row has.

    ``rows``: {tiny row: {metric: value}}; ``row_names``: {paper row of Table 2: tiny row}; ``draws``: the rows'
    bootstrap values (``igr.evaluate.read_bootstrap``), or None, which leaves the neighbours' intervals out.
    Orders are written in the paper's row names, best first. A neighbour's ``difference`` is [better − worse,
    low, high] (low/high None without draws), so a positive difference means the order as listed; "resolved"
    means its interval leaves out 0.
    """
    _, paper_rows = PAPER_TABLES["table2"]
    out = []
    for tiny_key, paper_key, higher in COUNTERPARTS:
        col = PAIRED_COLUMNS.index(paper_key)
        paper = {name: paired[col] for name, paired, _ in paper_rows}
        tiny = {}
        for name, tiny_row in row_names.items():
            value = (rows.get(tiny_row) or {}).get(tiny_key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                tiny[name] = float(value)
        if set(tiny) != set(paper):
            continue
        paper_order, tiny_order = _order(paper, higher), _order(tiny, higher)
        neighbours = []
        for better, worse in zip(tiny_order, tiny_order[1:]):
            a, b = row_names[better], row_names[worse]
            if draws and a in draws and b in draws and tiny_key in draws[a][1] and tiny_key in draws[b][1]:
                d, low, high = paired_difference(draws[a], draws[b])[tiny_key]
            else:
                d, low, high = tiny[better] - tiny[worse], None, None
            # the better row's lead, counted so that > 0 means "as listed" whichever way the metric improves
            sign = 1 if higher else -1
            ends = [None, None] if low is None else sorted((sign * low, sign * high))
            neighbours.append({
                "better": better, "worse": worse, "difference": [sign * d, *ends],
                "resolved": None if low is None else bool(ends[0] > 0 or ends[1] < 0),
            })
        out.append({
            "metric": tiny_key, "paper_metric": paper_key, "higher_is_better": higher,
            "paper": paper, "tiny": tiny, "paper_order": paper_order, "tiny_order": tiny_order,
            "same_order": paper_order == tiny_order, "neighbours": neighbours,
        })
    return out


# decimals per metric: the paper's columns as printed there (SSIM 4), the tiny world's as in the demo's tables
DECIMALS = {"ssim": 4, "tiny ssim": 3, "fd_tiny": 2, "kd_tiny": 3}


def _fmt(metric: str, v: float, sign: str = "") -> str:
    return f"{v:{sign}.{DECIMALS.get(metric, 2)}f}"


def section(sets: Mapping[str, Sequence[dict]]) -> list[str]:
    """Markdown lines: one comparison table per set of ablations ({the set's full row: :func:`compare`'s
    entries}), then the paper's orders on the columns with no tiny counterpart."""
    sets = {full: entries for full, entries in sets.items() if entries}
    if not sets:
        return []

    def name(row: str) -> str:
        return "full" if row == PAPER_FULL_ROW else row

    lines = [
        "## Table 2 beside the paper's",
        "",
        "The paper's Table 2 ranks its rows per metric, and not alike on all of them. Here each tiny-world metric "
        "with a counterpart among its columns (fd_tiny / kd_tiny stand in for FID / KID: the same statistics on the "
        "tiny classifier's features) is ranked beside it. For each pair of neighbouring tiny-world rows: the better "
        "one's lead, on the same resampled test pairs (paired bootstrap, 95 %); \"tie\" where that interval holds 0.",
    ]
    for full_row, entries in sets.items():
        lines += [
            "",
            f"Full = {full_row}:",
            "",
            "| metric | paper (VITON-HD), best → worst | tiny world, best → worst | tiny world: lead of each over the "
            "next | same order |",
            "|---|---|---|---|---|",
        ]
        for e in entries:
            m, pm = e["metric"], e["paper_metric"]
            rel = " > " if e["higher_is_better"] else " < "
            paper = rel.join(f"{name(r)} {_fmt(pm, e['paper'][r])}" for r in e["paper_order"])
            tm = f"tiny {m}" if m == pm else m
            tiny = rel.join(f"{name(r)} {_fmt(tm, e['tiny'][r])}" for r in e["tiny_order"])
            leads = []
            for n in e["neighbours"]:
                d, low, high = (None if v is None else _fmt(tm, v, "+") for v in n["difference"])
                ci = "" if low is None else f" [{low}, {high}]" + ("" if n["resolved"] else " tie")
                leads.append(f"{name(n['better'])} over {name(n['worse'])}: {d}{ci}")
            label = f"{LABELS[pm]} / {LABELS[m]}" if m != pm else LABELS[m]
            lines.append(f"| {label} | {paper} | {tiny} | {'; '.join(leads)} | {'yes' if e['same_order'] else 'no'} |")
    shown = {f"VITON-HD {e['paper_metric']}" for entries in sets.values() for e in entries}
    others = [f"{k.replace('_x1e3', '×1e3')}: {' > '.join(name(r) for r in order)}"
              for k, order in paper_orders().items() if k not in shown]
    lines += ["", "The paper's orders, best first, on its columns with no tiny-world counterpart: "
              + "; ".join(others) + ".", ""]
    return lines
