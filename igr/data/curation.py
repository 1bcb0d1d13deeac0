"""HQFT curation (paper §3.3, §4.1): measure each coarse sample and decide keep / remove / fix.

The paper hand-picked 20 % of its coarse set, removing garments that are truncated, occluded or
seen from the side, and resizing + padding garments with extreme proportions. The rules here
are automatic proxies computed from the garment mask and the target image:

* ``truncation``  — the mask runs into the image border along a clear stretch of its outline;
* ``occlusion``   — the visible garment is small, holed, or far from convex (hands, bags, arms);
* ``side_view``   — the (hole-filled) mask is strongly left/right asymmetric;
* ``extreme_proportion`` — the target garment's bounding box fills too little or too much of
  the frame, or has an unusual aspect for its category; it is *fixed* (cropped, padded to the
  frame aspect, resized) rather than removed.

Rules apply in that order; a removed sample is counted under the first rule that fires.
Thresholds live in ``igr/configs/curate.yaml``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from igr.data.transforms import border_colour


def _paper_keep_fraction() -> float:
    from igr.config import PAPER  # the paper's numbers live in configs/paper.yaml

    return float(PAPER["hqft_keep_fraction"])

REMOVE_RULES = ("truncation", "occlusion", "side_view")
FIX_RULE = "extreme_proportion"
# Which synthetic ground-truth flag each rule is meant to find.
RULE_FLAGS = {"truncation": "truncated", "occlusion": "occluded", "side_view": "side_view",
              "extreme_proportion": "extreme_proportion"}


@dataclass
class CurationConfig:
    """Thresholds of the automatic rules (defaults calibrated on the synthetic set, see README of the
    data module); every field can be set from ``configs/curate.yaml`` or ``--set name=value``."""

    measure_size: int = 128  # masks are measured at this longest side (resolution-independent)
    # truncation: fraction of the mask's extent along one side that lies on the image border
    truncation_max_border_frac: float = 0.08
    # occlusion
    occlusion_min_area_frac: float = 0.02  # visible garment / image area
    occlusion_max_hole_frac: float = 0.04  # enclosed holes / filled garment area
    occlusion_max_fragment_frac: float = 0.05  # mask area outside its largest connected piece
    occlusion_min_bbox_fill: float = 0.3  # garment area / its bounding-box area
    occlusion_min_solidity: float = 0.0  # garment area / convex hull area (0 disables)
    # side view: 1 - IoU(filled mask, its mirror about the mask's centroid column)
    side_view_max_asymmetry: float = 0.16
    # extreme proportion of the target garment image
    extreme_fill_range: tuple[float, float] = (0.65, 0.93)  # max(bbox_h/H, bbox_w/W)
    extreme_aspect_ranges: dict[str, tuple[float, float]] = field(default_factory=lambda: {
        "upper": (0.5, 2.2), "lower": (0.4, 4.5), "full": (0.7, 5.0)})  # bbox h / w in pixels
    extreme_action: str = "fix"  # fix | remove | keep
    target_fill: float = 0.82  # a fixed garment's bbox fills this fraction of the limiting side
    garment_bg_threshold: int = 40  # max channel difference from the border colour that is garment
    # After the rules, keep only the best-scoring fraction of the coarse set: the paper's 20 % (§4.1, from
    # configs/paper.yaml). None keeps every sample that passes the rules.
    keep_fraction: float | None = field(default_factory=_paper_keep_fraction)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CurationConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown curation setting(s): {', '.join(unknown)}")
        d = dict(d)
        if "extreme_fill_range" in d:
            d["extreme_fill_range"] = tuple(d["extreme_fill_range"])
        if "extreme_aspect_ranges" in d:
            d["extreme_aspect_ranges"] = {k: tuple(v) for k, v in d["extreme_aspect_ranges"].items()}
        cfg = cls(**d)
        if cfg.extreme_action not in ("fix", "remove", "keep"):
            raise ValueError(f"extreme_action={cfg.extreme_action!r}: expected fix, remove or keep")
        return cfg

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["extreme_fill_range"] = list(self.extreme_fill_range)
        d["extreme_aspect_ranges"] = {k: list(v) for k, v in self.extreme_aspect_ranges.items()}
        return d


def _downsample(mask: np.ndarray, longest: int) -> np.ndarray:
    h, w = mask.shape
    f = max(1, int(np.ceil(max(h, w) / longest)))
    if f == 1:
        return mask.astype(bool)
    hh, ww = h // f * f, w // f * f
    # Keep the border rows/cols: a truncation touches them, so crop the far side, not the near one.
    blocks = mask[:hh, :ww].reshape(hh // f, f, ww // f, f).mean(axis=(1, 3))
    out = blocks >= 0.5
    if hh < h:
        out[-1] |= mask[-1, :ww].reshape(-1, f).max(axis=1) > 0
    if ww < w:
        out[:, -1] |= mask[:hh, -1].reshape(-1, f).max(axis=1) > 0
    return out


def _convex_area(m: np.ndarray) -> float:
    edge = m & ~ndimage.binary_erosion(m)
    ys, xs = np.nonzero(edge)
    if len(xs) < 3:
        return float(m.sum())
    # Pixel corners, so a one-pixel-wide shape still has an area.
    pts = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    try:
        return float(ConvexHull(pts).volume)
    except QhullError:
        return float(m.sum())


def _fragment_frac(m: np.ndarray) -> float:
    """Share of the mask outside its largest connected piece: an arm or strap across a garment
    cuts it in two; a whole garment is one piece (8-connectivity, so thin straps still join)."""
    labels, n = ndimage.label(m, structure=np.ones((3, 3), bool))
    if n <= 1:
        return 0.0
    sizes = np.bincount(labels.ravel())[1:]
    return float(1.0 - sizes.max() / sizes.sum())


def _mirror_asymmetry(m: np.ndarray, max_lean_deg: float = 25.0) -> float:
    """1 − IoU of a (filled) mask and its mirror image about its symmetry axis.

    The axis passes through the centroid; it follows the mask's long axis when the mask is clearly
    elongated (a person leaning is not a side view), within ``max_lean_deg`` of vertical, and is
    vertical otherwise (a T-shirt's moments do not say which way is up).
    """
    ys, xs = np.nonzero(m)
    cx, cy = xs.mean(), ys.mean()
    dx, dy = xs - cx, ys - cy
    evals, evecs = np.linalg.eigh(np.cov(np.stack([dx, dy])))
    lean = np.degrees(np.arctan2(evecs[0, 1], evecs[1, 1]))  # long axis, degrees from vertical
    lean = (lean + 90.0) % 180.0 - 90.0
    if evals[1] < 2.25 * max(evals[0], 1e-9) or abs(lean) > 45.0:
        lean = 0.0
    t = np.radians(np.clip(lean, -max_lean_deg, max_lean_deg))
    ux, uy = np.sin(t), np.cos(t)
    # Sample the mask at every pixel's reflection (a reflection is its own inverse): no holes
    # from rounding, unlike pushing the mask's own pixels across the axis.
    H, W = m.shape
    gy, gx = np.mgrid[0:H, 0:W].astype(np.float64)
    along = (gx - cx) * ux + (gy - cy) * uy
    rx = np.round(2 * (cx + along * ux) - gx).astype(int)
    ry = np.round(2 * (cy + along * uy) - gy).astype(int)
    ok = (rx >= 0) & (rx < W) & (ry >= 0) & (ry < H)
    mirrored = np.zeros_like(m)
    mirrored[ok] = m[ry[ok], rx[ok]]
    inter = float((m & mirrored).sum())
    return 1.0 - inter / float(m.sum() + mirrored.sum() - inter)


def measure_mask(mask: np.ndarray, measure_size: int = 128) -> dict[str, float]:
    """Shape statistics of a garment mask (H, W) used by the rules; all in [0, 1] and size-independent."""
    m = _downsample(np.asarray(mask) > 0, measure_size)
    H, W = m.shape
    area = float(m.sum())
    out = {"area_frac": area / (H * W), "border_frac": 0.0, "hole_frac": 0.0, "solidity": 1.0,
           "bbox_fill": 0.0, "fragment_frac": 0.0, "asymmetry": 0.0}
    if area < 4:
        return out
    ys, xs = np.nonzero(m)
    bh, bw = ys.max() - ys.min() + 1, xs.max() - xs.min() + 1
    out["border_frac"] = float(max(m[0].sum() / bw, m[-1].sum() / bw, m[:, 0].sum() / bh, m[:, -1].sum() / bh))
    filled = ndimage.binary_fill_holes(m)
    fa = float(filled.sum())
    out["hole_frac"] = (fa - area) / fa
    out["solidity"] = area / max(_convex_area(m), area)
    out["bbox_fill"] = area / float(bh * bw)
    out["fragment_frac"] = _fragment_frac(m)
    out["asymmetry"] = _mirror_asymmetry(filled)
    return out


def garment_bbox(garment: np.ndarray, threshold: int = 40) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right) of what differs from the border colour, or None for a blank image."""
    g = np.asarray(garment).astype(np.int16)
    bg = np.asarray(border_colour(garment), np.int16)
    fg = np.abs(g - bg).max(axis=-1) > threshold
    H, W = fg.shape
    rows = np.nonzero(fg.sum(axis=1) >= max(2, W // 100))[0]
    cols = np.nonzero(fg.sum(axis=0) >= max(2, H // 100))[0]
    if len(rows) == 0 or len(cols) == 0:
        return None
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def measure_garment(garment: np.ndarray, threshold: int = 40) -> dict[str, float]:
    H, W = garment.shape[:2]
    box = garment_bbox(garment, threshold)
    if box is None:
        return {"frame_fill": 0.0, "aspect": 0.0}
    top, left, bottom, right = box
    bh, bw = bottom - top, right - left
    return {"frame_fill": max(bh / H, bw / W), "aspect": bh / max(bw, 1)}


def judge(m: dict[str, float], category: str, cfg: CurationConfig) -> list[str]:
    """Names of the rules a sample breaks, in rule order (``extreme_proportion`` last)."""
    failed = []
    if m["border_frac"] > cfg.truncation_max_border_frac:
        failed.append("truncation")
    if (m["area_frac"] < cfg.occlusion_min_area_frac or m["hole_frac"] > cfg.occlusion_max_hole_frac
            or m["fragment_frac"] > cfg.occlusion_max_fragment_frac or m["bbox_fill"] < cfg.occlusion_min_bbox_fill
            or m["solidity"] < cfg.occlusion_min_solidity):
        failed.append("occlusion")
    if m["asymmetry"] > cfg.side_view_max_asymmetry:
        failed.append("side_view")
    if "frame_fill" in m:
        lo, hi = cfg.extreme_fill_range
        alo, ahi = cfg.extreme_aspect_ranges.get(category, (0.0, float("inf")))
        if m["frame_fill"] > 0 and not (lo <= m["frame_fill"] <= hi and alo <= m["aspect"] <= ahi):
            failed.append(FIX_RULE)
    return failed


def quality_score(m: dict[str, float], cfg: CurationConfig) -> float:
    """How far inside all the removal thresholds a sample is (higher is cleaner); ranks for ``keep_fraction``."""
    margins = [
        1 - m["border_frac"] / max(cfg.truncation_max_border_frac, 1e-6),
        1 - m["hole_frac"] / max(cfg.occlusion_max_hole_frac, 1e-6),
        1 - m["fragment_frac"] / max(cfg.occlusion_max_fragment_frac, 1e-6),
        1 - m["asymmetry"] / max(cfg.side_view_max_asymmetry, 1e-6),
    ]
    return float(min(margins))


def fix_proportion(garment: np.ndarray, cfg: CurationConfig) -> np.ndarray:
    """Crop the garment to its box, pad to the frame's aspect so it fills ``target_fill``, resize back.

    Never stretches: the garment keeps its own aspect; padding uses the image's border colour.
    """
    H, W = garment.shape[:2]
    box = garment_bbox(garment, cfg.garment_bg_threshold)
    if box is None:
        return garment
    top, left, bottom, right = box
    bh, bw = bottom - top, right - left
    # Size of the canvas (in source pixels) in which the box fills target_fill of the limiting side.
    scale = min(cfg.target_fill * H / bh, cfg.target_fill * W / bw)
    ch, cw = round(H / scale), round(W / scale)
    bg = border_colour(garment)
    canvas = np.empty((max(ch, bh), max(cw, bw), 3), np.uint8)
    canvas[:] = bg
    oy, ox = (canvas.shape[0] - bh) // 2, (canvas.shape[1] - bw) // 2
    canvas[oy:oy + bh, ox:ox + bw] = garment[top:bottom, left:right]
    img = Image.fromarray(canvas)
    return np.asarray(img.resize((W, H), Image.Resampling.LANCZOS))


# --------------------------------------------------------------------------- running a curation


@dataclass
class Decision:
    key: str
    category: str
    action: str  # keep | fix | remove
    rule: str | None  # the rule that removed (or fixed) the sample
    failed: list[str]
    measures: dict[str, float]
    flags: dict[str, bool] | None = None
    score: float = 0.0


def decide(m: dict[str, float], category: str, cfg: CurationConfig) -> tuple[str, str | None, list[str]]:
    """(action, rule, failed) for one measured sample under the automatic rules."""
    failed = judge(m, category, cfg)
    removing = [r for r in failed if r in REMOVE_RULES]
    if removing:
        return "remove", removing[0], failed
    if FIX_RULE in failed:
        if cfg.extreme_action == "remove":
            return "remove", FIX_RULE, failed
        if cfg.extreme_action == "fix":
            return "fix", FIX_RULE, failed
    return "keep", None, failed


def flag_agreement(decisions: list[Decision]) -> dict[str, dict[str, float]]:
    """Per rule, against the synthetic ground-truth flags: precision and recall of the samples the
    rule removed (or fixed), counting each sample under the first rule that fired."""
    out = {}
    with_flags = [d for d in decisions if d.flags is not None]
    if not with_flags:
        return out
    for rule, flag in RULE_FLAGS.items():
        tp = sum(1 for d in with_flags if d.rule == rule and d.flags.get(flag))
        fp = sum(1 for d in with_flags if d.rule == rule and not d.flags.get(flag))
        fn = sum(1 for d in with_flags if d.rule != rule and d.flags.get(flag))
        out[rule] = {"tp": tp, "fp": fp, "fn": fn,
                     "precision": tp / (tp + fp) if tp + fp else None,
                     "recall": tp / (tp + fn) if tp + fn else None}
    return out
