"""Drawing a garment: its silhouette, pattern and details in body units, rendered as an RGBA sprite."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from igr.data.synthetic.colours import _palette, _shade
from igr.data.synthetic.config import _SHOULDER_Y, _WAIST_Y, GARMENT_TYPES, PATTERNS


@dataclass
class Garment:
    category: str
    kind: str
    poly: list[tuple[float, float]]  # silhouette in body units, relative to the anchor (x right, y down)
    anchor_y: float  # body y of the garment's top edge
    sleeve_dir: float  # radians below horizontal of the sleeves (arms follow it)
    palette: list[tuple[int, int, int]]
    pattern: str
    pattern_params: dict
    logo: dict | None
    details: dict
    legs: list[tuple[float, float]] = field(default_factory=list)  # (x centre, half width) at the hem, trousers

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        xs = [p[0] for p in self.poly]
        ys = [p[1] for p in self.poly]
        return min(xs), min(ys), max(xs), max(ys)


def _mirror(right: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Closed polygon from its right half listed top-centre → bottom-centre (x ≥ 0)."""
    left = [(-x, y) for x, y in reversed(right) if x != 0]
    return right + left


def _make_garment(rng: np.random.Generator, category: str, body: dict) -> Garment:
    kind = str(rng.choice(GARMENT_TYPES[category]))
    sw, hipw = body["shoulder"], body["hip"]
    sleeve_dir = math.radians(rng.uniform(70, 80))
    legs: list[tuple[float, float]] = []
    if category in ("upper", "full"):
        nw, nd = rng.uniform(0.03, 0.045), rng.uniform(0.015, 0.045)
        v_neck = rng.random() < 0.3
        a = (sw + 0.006, 0.012)
        bw = sw * rng.uniform(0.84, 0.95)
        right = [(0.0, nd * (2.2 if v_neck else 1.0)), (nw * 0.75, nd * 0.65), (nw, 0.0), a]
        if kind in ("tee", "longsleeve", "sleeved_dress"):
            long = kind == "longsleeve"
            phi = math.radians(rng.uniform(66, 78) if long else rng.uniform(50, 62))
            sleeve_dir = phi
            length = rng.uniform(0.27, 0.32) if long else rng.uniform(0.07, 0.11)
            width = rng.uniform(0.045, 0.06) if not long else rng.uniform(0.04, 0.05)
            d = (math.cos(phi), math.sin(phi))
            n = (-math.sin(phi), math.cos(phi))  # perpendicular, towards the body
            b = (a[0] + length * d[0], a[1] + length * d[1])
            c = (b[0] + width * n[0], b[1] + width * n[1])
            armpit = (bw, a[1] + width / max(math.cos(phi), 0.25) * 0.9)
            right += [b, c, armpit]
        else:  # tank / sleeveless dress
            right = [(0.0, nd * 2.0), (nw * 0.9, nd * 1.2), (nw * 1.1, 0.0), (sw * 0.72, 0.0),
                     (sw * 0.74, 0.06), (bw, 0.1)]
        if category == "upper":
            length = rng.uniform(0.30, 0.38)
            hem = bw * rng.uniform(0.95, 1.1)
            right += [(hem, length), (0.0, length)]
        else:
            waist_y = _WAIST_Y - _SHOULDER_Y - rng.uniform(0.0, 0.03)
            length = rng.uniform(0.5, 0.72)
            hem = rng.uniform(0.14, 0.22)
            right += [(body["waist"] * 1.02, waist_y), (hem, length), (0.0, length)]
        poly = _mirror(right)
        anchor = _SHOULDER_Y
    else:
        ww = hipw * rng.uniform(0.88, 0.98)
        if kind == "skirt":
            length = rng.uniform(0.2, 0.38)
            hem = ww + rng.uniform(0.03, 0.1)
            poly = _mirror([(0.0, 0.0), (ww, 0.0), (ww * 1.06, 0.06), (hem, length), (0.0, length)])
        else:
            length = rng.uniform(0.5, 0.54) if kind == "trousers" else rng.uniform(0.17, 0.24)
            crotch = rng.uniform(0.1, 0.13)
            leg_w = rng.uniform(0.055, 0.075) if kind == "trousers" else rng.uniform(0.07, 0.085)
            outer = ww * rng.uniform(0.8, 1.0) if kind == "trousers" else ww * rng.uniform(1.0, 1.1)
            inner = max(outer - leg_w, 0.012)
            poly = _mirror([(0.0, 0.0), (ww, 0.0), (ww * 1.07, 0.08), (outer, length), (inner, length),
                            (0.0, crotch)])
            legs = [(-(outer + inner) / 2, (outer - inner) / 2), ((outer + inner) / 2, (outer - inner) / 2)]
        anchor = _WAIST_Y
    palette = _palette(rng)
    pattern = str(rng.choice(PATTERNS, p=[0.16, 0.14, 0.14, 0.12, 0.16, 0.14, 0.14]))
    params = {
        "period": float(rng.uniform(0.035, 0.075)),  # body units
        "duty": float(rng.uniform(0.25, 0.4)),  # the base colour stays dominant (colour_family is unambiguous)
        "angle": float(rng.choice([-1, 1]) * rng.uniform(0.6, 0.9)),
        "radius": float(rng.uniform(0.008, 0.015)),
        "phase": float(rng.random()),
        "split": float(rng.uniform(0.6, 0.75)),
        "blocks": str(rng.choice(["h", "v", "yoke"])),
    }
    logo = None
    if rng.random() < 0.55:
        xs = [p[0] for p in poly]
        size = (max(xs) - min(xs)) * rng.uniform(0.13, 0.22)
        ys = [p[1] for p in poly]
        if category == "lower":
            pos = (rng.choice([-1, 1]) * (max(xs) * 0.45), (max(ys)) * rng.uniform(0.12, 0.22))
            size = min(size, 0.05)
        else:
            pos = (rng.uniform(-0.03, 0.03) + (rng.choice([-1, 1]) * 0.04 if rng.random() < 0.4 else 0.0),
                   rng.uniform(0.08, 0.13))
            size = min(size, 0.08)
        logo = {"shape": str(rng.choice(["circle", "square", "triangle", "star", "diamond", "ring"])),
                "pos": (float(pos[0]), float(pos[1])), "size": float(size),
                "colour": palette[2] if rng.random() < 0.7 else palette[1]}
    details = {"hem": bool(rng.random() < 0.7), "collar": bool(rng.random() < 0.6),
               "placket": bool(category == "upper" and rng.random() < 0.3),
               "waistband": bool(category == "lower"), "trim": _shade(palette[0], rng.uniform(0.55, 0.75))}
    return Garment(category, kind, poly, anchor, sleeve_dir, palette, pattern, params, logo, details, legs)


def _pattern_rgb(g: Garment, ppb: float, w: int, h: int, x0: float, y0: float) -> np.ndarray:
    """Pattern as uint8 (h, w, 3); pixel (i, j) is body point (x0 + j/ppb, y0 + i/ppb)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    x = x0 + (xx + 0.5) / ppb
    y = y0 + (yy + 0.5) / ppb
    p = g.pattern_params
    c0, c1, c2 = (np.array(c, np.float32) for c in g.palette)
    period, duty = p["period"], p["duty"]
    if g.pattern == "solid":
        idx = np.zeros((h, w), np.uint8)
    elif g.pattern in ("stripes_h", "stripes_v", "stripes_d"):
        t = {"stripes_h": y, "stripes_v": x, "stripes_d": x * math.cos(p["angle"]) + y * math.sin(p["angle"])}[g.pattern]
        idx = (((t / period + p["phase"]) % 1.0) < duty).astype(np.uint8)
    elif g.pattern == "checks":
        a = ((x / period + p["phase"]) % 1.0) < 0.5
        b = ((y / period + p["phase"]) % 1.0) < 0.5
        idx = np.where(a & b, 2, np.where(a ^ b, 1, 0)).astype(np.uint8)
        c2 = (c0 + c1) / 2 * 0.85  # gingham: the overlap is the darker mix
    elif g.pattern == "dots":
        sp = p["radius"] * 3.4
        row = np.round(y / sp)
        xs = x / sp + 0.5 * (row % 2)
        dx = (xs - np.round(xs)) * sp
        dy = (y / sp - row) * sp
        idx = ((dx * dx + dy * dy) < p["radius"] ** 2).astype(np.uint8)
    else:  # blocks
        xmin, ymin, xmax, ymax = g.bbox
        if p["blocks"] == "h":
            idx = (y > ymin + p["split"] * (ymax - ymin)).astype(np.uint8)
        elif p["blocks"] == "v":
            idx = (x > xmin + p["split"] * (xmax - xmin)).astype(np.uint8)
        else:  # yoke: a band across the chest/hips in the third colour
            band = (y > ymin + 0.12 * (ymax - ymin)) & (y < ymin + 0.28 * (ymax - ymin))
            idx = np.where(band, 2, (y > ymin + p["split"] * (ymax - ymin)).astype(np.uint8)).astype(np.uint8)
    lut = np.stack([c0, c1, c2]).astype(np.uint8)
    return lut[idx]


def _logo_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "triangle":
        return [(cx, cy - r), (cx + r * 0.95, cy + r * 0.75), (cx - r * 0.95, cy + r * 0.75)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    return [(cx - r, cy - r), (cx + r, cy + r)]  # bbox for circle/square/ring


def render_sprite(g: Garment, ppb: float) -> tuple[Image.Image, tuple[float, float]]:
    """The garment as an RGBA image at ``ppb`` pixels per body unit, and its body-unit origin."""
    xmin, ymin, xmax, ymax = g.bbox
    pad = 2.0 / ppb
    x0, y0 = xmin - pad, ymin - pad
    w = int(math.ceil((xmax - xmin) * ppb + 4))
    h = int(math.ceil((ymax - ymin) * ppb + 4))

    def px(pt):
        return ((pt[0] - x0) * ppb, (pt[1] - y0) * ppb)

    rgb = Image.fromarray(_pattern_rgb(g, ppb, w, h, x0, y0))
    draw = ImageDraw.Draw(rgb)
    trim = g.details["trim"]
    lw = max(1, round(0.006 * ppb))
    if g.details["hem"]:
        draw.rectangle([0, (ymax - y0 - 0.012) * ppb, w, h], fill=trim)
    if g.details["waistband"]:
        draw.rectangle([0, 0, w, (0.028 - y0) * ppb], fill=trim)
        draw.line([px((0, 0.028)), px((0, 0.09))], fill=_shade(trim, 0.8), width=lw)
    if g.details["placket"]:
        draw.line([px((0, 0.03)), px((0, ymax))], fill=trim, width=lw)
        for k in range(1, 6):
            bx, by = px((0, 0.03 + k * (ymax - 0.05) / 6))
            r = max(1.0, 0.005 * ppb)
            draw.ellipse([bx - r, by - r, bx + r, by + r], fill=g.palette[1])
    if g.logo is not None:
        lg = g.logo
        cx, cy = px(lg["pos"])
        r = lg["size"] * ppb / 2
        pts = _logo_points(lg["shape"], cx, cy, r)
        if lg["shape"] == "circle":
            draw.ellipse(pts, fill=lg["colour"])
        elif lg["shape"] == "ring":
            draw.ellipse(pts, outline=lg["colour"], width=max(1, round(r * 0.35)))
        elif lg["shape"] == "square":
            draw.rectangle(pts, fill=lg["colour"])
        else:
            draw.polygon(pts, fill=lg["colour"])
    alpha = Image.new("L", (w, h), 0)
    ImageDraw.Draw(alpha).polygon([px(p) for p in g.poly], fill=255)
    if g.details["collar"] and g.category != "lower":
        # The neckline edge, drawn along the top of the silhouette between the shoulders.
        neck = [p for p in g.poly if p[1] < 0.06 and abs(p[0]) < 0.06]
        neck.sort(key=lambda p: p[0])
        if len(neck) >= 3:
            draw.line([px(p) for p in neck], fill=trim, width=lw + 1)
    sprite = rgb.convert("RGBA")
    sprite.putalpha(alpha)
    return sprite, (x0, y0)
