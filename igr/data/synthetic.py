"""Procedural try-off data: flat in-shop garments and the same garments worn by a simple figure.

Every sample is a pure function of ``(seed, split, index)``: a garment is drawn once as an RGBA
"sprite" (silhouette × pattern × details, in body units), then

* the **target** is that sprite centred on a plain light background at a fixed scale, and
* the **person** wears the same sprite, warped (similarity + perspective + smooth bumps +
  sways, as a piecewise-bilinear mesh), shaded with folds, partly covered by hands and hair,
  on a varied background under coloured light,

so the task is learnable (same colours and pattern) but the worn garment is never a copy of the
target. The mask is exactly the visible garment pixels. A configurable fraction of samples
carries one *defect* the HQFT rules should catch (truncated, occluded, side view, extreme
proportion); ``meta.json`` records it as ground-truth ``flags``.
"""

from __future__ import annotations

import colorsys
import io
import math
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from igr.data.shards import encode_sample

DEFECTS = ("truncated", "occluded", "side_view", "extreme_proportion")
GARMENT_TYPES = {"upper": ("tee", "longsleeve", "tank"), "lower": ("trousers", "shorts", "skirt"),
                 "full": ("dress", "sleeved_dress")}
PATTERNS = ("solid", "stripes_h", "stripes_v", "stripes_d", "checks", "dots", "blocks")
KINDS = tuple(k for kinds in GARMENT_TYPES.values() for k in kinds)
# Colour families of a garment's dominant colour (meta.json "colour_family"): six 60° hue sectors centred on
# the primaries/secondaries, and three achromatic families. What a person would say the garment's colour is.
COLOUR_FAMILIES = ("red", "yellow", "green", "cyan", "blue", "magenta", "white", "grey", "black")

# Camera windows (body units, 0 = top of head, 1 = soles) framing each category like the real
# datasets: VITON-HD-style half-body for tops, waist-down for bottoms, full figure for dresses.
_WINDOWS = {"upper": (-0.04, 0.64), "lower": (0.22, 1.02), "full": (-0.03, 1.03)}
_SHOULDER_Y, _WAIST_Y = 0.165, 0.42


@dataclass
class SyntheticConfig:
    """Knobs of the generator. ``size`` is (H, W) of the written images."""

    size: tuple[int, int] = (128, 96)
    category_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)  # upper, lower, full
    defect_fraction: float = 0.25
    defect_weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)  # order of DEFECTS
    supersample: int | None = None  # None: 2 below 300 px height, else 1
    jpeg_quality: int = 95
    flat_fill: tuple[float, float] = (0.8, 0.84)  # fraction of (H, W) a flat garment's bbox may fill

    def ss(self) -> int:
        return self.supersample or (2 if self.size[0] < 300 else 1)


@dataclass
class SyntheticSample:
    person: np.ndarray  # uint8 (H, W, 3)
    mask: np.ndarray  # uint8 (H, W) {0, 1}
    garment: np.ndarray  # uint8 (H, W, 3)
    category: str
    meta: dict = field(default_factory=dict)


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # crc32 keeps the split id stable across Python runs (hash() is salted).
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, zlib.crc32(split.encode()), index])))


# --------------------------------------------------------------------------- colours


def _hsv(h: float, s: float, v: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, min(max(s, 0), 1), min(max(v, 0), 1))
    return int(r * 255 + 0.5), int(g * 255 + 0.5), int(b * 255 + 0.5)


def colour_family(rgb: tuple[int, int, int]) -> str:
    """The family of one sRGB colour: achromatic by value when saturation is low or value is very low,
    else the 60° hue sector (red centred on 0°)."""
    h, sat, v = colorsys.rgb_to_hsv(*(c / 255 for c in rgb))
    if v < 0.32:
        return "black"
    if sat < 0.15:
        return "white" if v > 0.75 else "grey"
    return COLOUR_FAMILIES[int(((h * 360 + 30) % 360) // 60)]


def _hex(c: tuple[int, int, int]) -> str:
    return "#" + "".join(f"{v:02x}" for v in c)


def _dominant_colour(sprite: Image.Image, palette: list[tuple[int, int, int]]) -> int:
    """Index of the palette colour nearest to most of the garment's pixels (pattern, trim and logo included)."""
    a = np.asarray(sprite).astype(np.float32)
    px = a[a[..., 3] > 127][:, :3]
    if len(px) == 0:
        return 0
    d = ((px[:, None, :] - np.asarray(palette, np.float32)[None]) ** 2).sum(-1)
    return int(np.bincount(d.argmin(1), minlength=len(palette)).argmax())


def _shade(c: tuple[int, int, int], f: float) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, v * f))) for v in c)


def _family_hue(h: float) -> float:
    """Squeeze a hue into the central 40° of its 60° family sector, so no garment colour sits on a family
    boundary and ``colour_family`` is a label a classifier (or a person) can get right."""
    deg = (h * 360 + 30) % 360
    sector, u = divmod(deg, 60)
    return ((sector * 60 + (u / 60 - 0.5) * 40) % 360) / 360


def _palette(rng: np.random.Generator) -> list[tuple[int, int, int]]:
    h = _family_hue(rng.random())
    base = _hsv(h, rng.uniform(0.4, 0.9), rng.uniform(0.42, 0.92))
    mode = rng.integers(4)
    if mode == 0:  # complementary
        second = _hsv(_family_hue(h + 0.5 + rng.uniform(-0.08, 0.08)), rng.uniform(0.4, 0.9), rng.uniform(0.5, 0.95))
    elif mode == 1:  # same hue, other value
        second = _hsv(h, rng.uniform(0.25, 0.6), rng.uniform(0.85, 1.0) if rng.random() < 0.5 else rng.uniform(0.1, 0.22))
    elif mode == 2:  # white or near-black
        second = (245, 245, 240) if rng.random() < 0.6 else (30, 30, 38)
    else:  # analogous
        second = _hsv(_family_hue(h + rng.choice([-1, 1]) * rng.uniform(0.12, 0.25)), rng.uniform(0.5, 0.9),
                      rng.uniform(0.5, 0.95))
    third = _hsv(_family_hue(rng.random()), rng.uniform(0.6, 1.0), rng.uniform(0.7, 1.0))
    return [base, second, third]


_SKIN = [(241, 194, 167), (224, 172, 138), (198, 134, 98), (161, 102, 70), (110, 70, 50), (255, 219, 190)]
_HAIR = [(30, 22, 18), (70, 45, 28), (120, 80, 40), (200, 160, 90), (90, 30, 20), (160, 160, 160)]


# --------------------------------------------------------------------------- garment sprite


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


# --------------------------------------------------------------------------- person figure


@dataclass
class Camera:
    """Body units → render pixels: frontal layout, then view (yaw, shear, zoom, shift)."""

    k: float  # pixels per body unit
    cx: float
    win0: float
    k_left: float = 1.0  # horizontal compression of the left / right half (yaw)
    k_right: float = 1.0
    shear: float = 0.0  # x shift per pixel below y_ref
    zoom: float = 1.0
    tx: float = 0.0
    ty: float = 0.0
    y_ref: float = 0.0

    def frontal(self, xb, yb):
        return self.cx + np.asarray(xb) * self.k, (np.asarray(yb) - self.win0) * self.k

    def view(self, x, y):
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        xr = x - self.cx
        xr = np.where(xr < 0, xr * self.k_left, xr * self.k_right)
        xr = xr + self.shear * (y - self.y_ref)
        return self.cx + self.zoom * xr + self.tx, self.y_ref + self.zoom * (y - self.y_ref) + self.ty

    def view_inv(self, x, y):
        y0 = self.y_ref + (np.asarray(y) - self.ty - self.y_ref) / self.zoom
        xr = (np.asarray(x) - self.cx - self.tx) / self.zoom
        xr = xr - self.shear * (y0 - self.y_ref)
        xr = np.where(xr < 0, xr / self.k_left, xr / self.k_right)
        return self.cx + xr, y0

    def pt(self, xb, yb) -> tuple[float, float]:
        x, y = self.view(*self.frontal(xb, yb))
        return float(x), float(y)

    def scale_x(self, xb: float) -> float:
        return self.zoom * (self.k_left if xb < 0 else self.k_right)


def _body(rng: np.random.Generator) -> dict:
    return {
        "shoulder": float(rng.uniform(0.105, 0.125)),
        "waist": float(rng.uniform(0.075, 0.09)),
        "hip": float(rng.uniform(0.095, 0.11)),
        "skin": _SKIN[rng.integers(len(_SKIN))],
        "hair": _HAIR[rng.integers(len(_HAIR))],
        "long_hair": bool(rng.random() < 0.45),
        "elbow_out": float(rng.uniform(0.0, 0.03)),
        "hand_pose": str(rng.choice(["down", "down", "hip"])),
    }


def _poly(draw: ImageDraw.ImageDraw, cam: Camera, pts, fill) -> None:
    draw.polygon([cam.pt(x, y) for x, y in pts], fill=fill)


def _limb(draws, cam: Camera, a, b, width_bu: float, fill) -> None:
    pa, pb = cam.pt(*a), cam.pt(*b)
    w = max(1, round(width_bu * cam.k * cam.zoom * (cam.k_left + cam.k_right) / 2))
    for d, f in draws:
        d.line([pa, pb], fill=fill if f is None else f, width=w)
        r = w / 2
        for p in (pa, pb):
            d.ellipse([p[0] - r, p[1] - r, p[0] + r, p[1] + r], fill=fill if f is None else f)


def _ellipse(draw, cam: Camera, c, rx_bu, ry_bu, fill) -> None:
    x, y = cam.pt(*c)
    rx = rx_bu * cam.k * cam.scale_x(c[0])
    ry = ry_bu * cam.k * cam.zoom
    draw.ellipse([x - rx, y - ry, x + rx, y + ry], fill=fill)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    kind = rng.integers(4)
    c0 = np.array(_hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.35, 0.98)), np.float32)
    c1 = np.array(_hsv(rng.random(), rng.uniform(0.0, 0.5), rng.uniform(0.3, 0.95)), np.float32)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    xx = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    if kind == 0:
        img = np.broadcast_to(c0, (h, w, 3)).copy()
    elif kind == 1:
        img = c0 * (1 - yy) + c1 * yy + 0 * xx
    elif kind == 2:  # wall and floor
        horizon = rng.uniform(0.6, 0.85)
        img = np.where(yy < horizon, c0, c1 * 0.85) + 0 * xx
    else:  # soft wallpaper stripes
        period = rng.uniform(0.05, 0.15)
        s = (((xx / period) % 1.0) < 0.5).astype(np.float32)
        img = c0 * (1 - 0.12 * s) + 0 * yy
    return np.clip(img, 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- warping


def _mesh(out_w: int, out_h: int, cell: int, inverse) -> list:
    """PIL MESH data for an inverse map ``inverse(x, y) -> (sx, sy)`` sampled on a grid."""
    nx, ny = max(1, math.ceil(out_w / cell)), max(1, math.ceil(out_h / cell))
    xs = np.linspace(0, out_w, nx + 1)
    ys = np.linspace(0, out_h, ny + 1)
    gx, gy = np.meshgrid(xs, ys)
    sx, sy = inverse(gx, gy)
    data = []
    for i in range(ny):
        for j in range(nx):
            box = (int(xs[j]), int(ys[i]), int(xs[j + 1]), int(ys[i + 1]))
            if box[2] <= box[0] or box[3] <= box[1]:
                continue
            quad = (sx[i, j], sy[i, j], sx[i + 1, j], sy[i + 1, j], sx[i + 1, j + 1], sy[i + 1, j + 1],
                    sx[i, j + 1], sy[i, j + 1])
            data.append((box, tuple(float(v) for v in quad)))
    return data


@dataclass
class Warp:
    """Garment-only deformation in frontal pixels, defined as an inverse map (what is sampled)."""

    bumps: list[tuple[float, float, float, float, float]]  # (cx, cy, dx, dy, sigma)
    sway: tuple[float, float, float]  # amplitude px, wavelength px, phase
    rot: float  # radians about the anchor
    fit: tuple[float, float]  # garment scale vs body (x, y)
    # One-sided bulge (side views: chest/belly/knee in profile): (y centre, y spread, amplitude,
    # axis x, half width, near side ±1), all in frontal pixels.
    bulge: tuple[float, float, float, float, float, int] | None = None

    def displace(self, x, y):
        dx = np.zeros_like(x)
        dy = np.zeros_like(y)
        for cx, cy, ax, ay, s in self.bumps:
            g = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * s * s))
            dx += ax * g
            dy += ay * g
        a, lam, ph = self.sway
        dx += a * np.sin(2 * math.pi * y / lam + ph)
        if self.bulge is not None:
            yc, sy, amp, ax, hw, near = self.bulge
            w = np.clip(near * (x - ax) / hw, 0.0, 1.0)
            dx += near * amp * w * np.exp(-(((y - yc) / sy) ** 2))
        return dx, dy


def _worn_layer(g: Garment, sprite: Image.Image, origin, ppb_sprite: float, cam: Camera, warp: Warp,
                size: tuple[int, int]) -> Image.Image:
    """The sprite as worn: RGBA at render size, transparent outside the garment."""
    H, W = size
    ax, ay = cam.frontal(0.0, g.anchor_y)
    ca, sa = math.cos(warp.rot), math.sin(warp.rot)

    def inverse(x, y):
        fx, fy = cam.view_inv(x, y)
        dx, dy = warp.displace(fx, fy)
        fx, fy = fx - dx, fy - dy
        # undo the rotation about the anchor, then frontal px -> body units -> sprite px
        rx, ry = fx - ax, fy - ay
        ux, uy = ca * rx + sa * ry, -sa * rx + ca * ry
        xb = ux / cam.k / warp.fit[0]
        yb = uy / cam.k / warp.fit[1]
        return (xb - origin[0]) * ppb_sprite, (yb - origin[1]) * ppb_sprite

    cell = max(6, round(min(H, W) / 24))
    # Premultiplied alpha keeps the bilinear edge from blending towards black.
    layer = sprite.convert("RGBa").transform((W, H), Image.Transform.MESH, _mesh(W, H, cell, inverse),
                                             Image.Resampling.BILINEAR)
    return layer.convert("RGBA")


# --------------------------------------------------------------------------- one sample


def _draw_figure_back(draw: ImageDraw.ImageDraw, cam: Camera, body: dict, lower_cloth, side: int) -> None:
    skin, hair = body["skin"], body["hair"]
    if body["long_hair"]:
        _poly(draw, cam, [(-0.06, 0.03), (0.06, 0.03), (0.075, 0.27), (-0.075, 0.27)], hair)
    # legs and shoes
    for sgn in (-1, 1):
        if side and sgn == side:
            continue
        _poly(draw, cam, [(sgn * 0.012, 0.5), (sgn * 0.095, 0.5), (sgn * 0.065, 0.95), (sgn * 0.025, 0.95)], skin)
        _poly(draw, cam, [(sgn * 0.02, 0.94), (sgn * 0.07, 0.94), (sgn * 0.09, 0.99), (sgn * 0.015, 0.99)], (40, 36, 40))
    # neck and torso
    _poly(draw, cam, [(-0.022, 0.1), (0.022, 0.1), (0.026, 0.18), (-0.026, 0.18)], skin)
    sh, hip, wa = body["shoulder"], body["hip"], body["waist"]
    _poly(draw, cam, [(-sh, 0.17), (sh, 0.17), (wa, 0.4), (hip, 0.52), (-hip, 0.52), (-wa, 0.4)], skin)
    if lower_cloth is not None:
        kind, colour = lower_cloth
        if kind == "skirt":
            _poly(draw, cam, [(-hip * 0.95, 0.42), (hip * 0.95, 0.42), (hip * 1.5, 0.7), (-hip * 1.5, 0.7)], colour)
        else:
            _poly(draw, cam, [(-hip * 0.95, 0.42), (hip * 0.95, 0.42), (hip * 1.02, 0.5), (0.075, 0.93),
                              (0.02, 0.93), (0.0, 0.55), (-0.02, 0.93), (-0.075, 0.93), (-hip * 1.02, 0.5)], colour)


def _arm_points(body: dict, sgn: int, sleeve_dir: float, pose: str):
    sh = body["shoulder"]
    s = (sgn * (sh - 0.012), 0.185)
    up = 0.16
    e = (s[0] + sgn * (up * math.cos(sleeve_dir) + body["elbow_out"]), s[1] + up * math.sin(sleeve_dir))
    if pose == "hip":
        w = (sgn * (body["hip"] * 0.8), 0.47)
    else:
        w = (e[0] + sgn * 0.01, e[1] + 0.15)
    return s, e, w


def _head(draw, cam: Camera, body: dict) -> None:
    _ellipse(draw, cam, (0.0, 0.065), 0.046, 0.06, body["skin"])
    _poly(draw, cam, [(-0.05, 0.01), (0.05, 0.01), (0.052, 0.06), (0.035, 0.03), (-0.035, 0.03), (-0.052, 0.06)],
          body["hair"])
    _ellipse(draw, cam, (0.0, 0.03), 0.05, 0.03, body["hair"])


def generate_sample(seed: int, split: str, index: int, cfg: SyntheticConfig | None = None) -> SyntheticSample:
    """One synthetic sample; a pure function of its arguments."""
    cfg = cfg or SyntheticConfig()
    rng = sample_rng(seed, split, index)
    H, W = cfg.size
    ss = cfg.ss()
    RH, RW = H * ss, W * ss
    category = str(rng.choice(["upper", "lower", "full"], p=np.asarray(cfg.category_weights) / sum(cfg.category_weights)))
    defect = None
    if rng.random() < cfg.defect_fraction:
        w = np.asarray(cfg.defect_weights, np.float64)
        defect = DEFECTS[int(rng.choice(len(DEFECTS), p=w / w.sum()))]
    body = _body(rng)
    g = _make_garment(rng, category, body)
    xmin, ymin, xmax, ymax = g.bbox
    gw, gh = xmax - xmin, ymax - ymin

    # ---- flat target: the sprite at a fixed scale, centred on a light background
    fill_h, fill_w = cfg.flat_fill
    ppb_flat = min(fill_h * RH / gh, fill_w * RW / gw)
    extreme_kind = None
    if defect == "extreme_proportion":
        extreme_kind = "small" if rng.random() < 0.5 else "large"
        if extreme_kind == "small":
            ppb_flat *= rng.uniform(0.45, 0.6)
        else:
            ppb_flat = min(0.985 * RH / gh, 0.985 * RW / gw)
    sprite, origin = render_sprite(g, ppb_flat)
    dominant = g.palette[_dominant_colour(sprite, g.palette)]
    bg = int(rng.integers(232, 251))
    tint = rng.integers(-4, 5, size=3)
    flat_bg = tuple(int(np.clip(bg + t, 0, 255)) for t in tint)
    flat = Image.new("RGB", (RW, RH), flat_bg)
    ox = (RW - sprite.size[0]) // 2
    oy = (RH - sprite.size[1]) // 2 + int(rng.integers(-2, 3)) * ss
    ox, oy = min(max(ox, 0), RW - sprite.size[0]), min(max(oy, 0), RH - sprite.size[1])
    # The target's vertical jitter: nothing in the person photo tells it, so a model can only guess it (meta.json).
    flat_offset_y = (oy - (RH - sprite.size[1]) // 2) / ss
    shadow = sprite.getchannel("A").filter(ImageFilter.GaussianBlur(2 * ss)).point(lambda v: int(v * 0.22))
    flat.paste(Image.new("RGB", sprite.size, (0, 0, 0)), (ox + ss, oy + 2 * ss), shadow)
    flat.paste(sprite, (ox, oy), sprite)
    garment_img = np.asarray(flat.reduce(ss) if ss > 1 else flat)

    # ---- person
    win0, win1 = _WINDOWS[category]
    k = RH / (win1 - win0)
    side = 0
    cam = Camera(k=k, cx=RW / 2 + rng.uniform(-0.03, 0.03) * RW, win0=win0,
                 k_left=rng.uniform(0.97, 1.0), k_right=rng.uniform(0.97, 1.0),
                 zoom=rng.uniform(0.95, 1.03), y_ref=RH / 2)
    cam.tx = rng.uniform(-0.02, 0.02) * RW
    cam.ty = rng.uniform(-0.02, 0.02) * RH
    if defect == "side_view":
        side = int(rng.choice([-1, 1]))  # which half turns away
        far = rng.uniform(0.15, 0.3)
        if side < 0:
            cam.k_left, cam.k_right = far, rng.uniform(1.0, 1.1)
        else:
            cam.k_left, cam.k_right = rng.uniform(1.0, 1.1), far
        cam.shear = side * rng.uniform(0.06, 0.12)
    gh_px = gh * k
    warp = Warp(
        bumps=[(float(rng.uniform(0, RW)), float(cam.frontal(0, g.anchor_y + rng.uniform(0, gh))[1]),
                float(rng.normal(0, 0.015 * gh_px)), float(rng.normal(0, 0.015 * gh_px)),
                float(rng.uniform(0.2, 0.35) * gh_px)) for _ in range(int(rng.integers(2, 5)))],
        sway=(float(rng.uniform(0, 0.008) * gh_px), float(rng.uniform(0.4, 0.8) * gh_px), float(rng.uniform(0, 6.28))),
        rot=float(rng.uniform(-0.035, 0.035)),
        fit=(float(rng.uniform(0.95, 1.04)), float(rng.uniform(0.97, 1.03))),
    )
    if defect == "truncated":
        _truncating_camera(rng, cam, g, RH, RW, category)
    if side:
        near = -side
        _, y_top = cam.frontal(0.0, g.anchor_y + ymin)
        frac = {"upper": 0.35, "lower": 0.55, "full": 0.3}[category]
        warp.bulge = (float(y_top + frac * gh_px), float(rng.uniform(0.15, 0.25) * gh_px),
                      float(rng.uniform(0.12, 0.2) * gw * k), float(cam.cx), float(0.5 * gw * k), near)

    lower_cloth = None
    if category == "upper":
        lower_cloth = (str(rng.choice(["trousers", "skirt"])), _hsv(rng.random(), rng.uniform(0.1, 0.6), rng.uniform(0.15, 0.6)))
    top_cloth = _hsv(rng.random(), rng.uniform(0.1, 0.7), rng.uniform(0.3, 0.95)) if category == "lower" else None
    occluder_plan = _plan_occluder(rng, category, g.kind) if defect == "occluded" else None
    if g.kind == "longsleeve":
        body["hand_pose"] = "down"  # a forearm over a long sleeve would cut the sleeve off
    light = {
        "grad": (float(rng.uniform(-0.25, 0.25)), float(rng.uniform(-0.15, 0.15))),
        "cast": rng.uniform(0.9, 1.1, size=3).astype(np.float32),
        "gain": float(rng.uniform(0.85, 1.1)),
        "noise": float(rng.uniform(0.0, 3.0)),
        "folds": [(float(rng.uniform(0.04, 0.09)), float(rng.uniform(0.15, 0.35) * gh_px),
                   float(rng.uniform(-0.6, 0.6)), float(rng.uniform(0, 6.28))) for _ in range(2)],
    }
    bg_img = _background(rng, RH, RW)
    sprite_worn, origin_w = render_sprite(g, max(k, 4.0))
    noise = rng.normal(0.0, 1.0, size=(H, W, 3)).astype(np.float32)

    for _attempt in range(6):
        person, mask = _compose_person(g, body, cam, warp, sprite_worn, origin_w, max(k, 4.0), bg_img, lower_cloth,
                                       top_cloth, side, occluder_plan, light, RH, RW)
        mask_f = np.asarray(Image.fromarray(mask * 255).reduce(ss)) if ss > 1 else mask * 255
        mask_out = (mask_f >= 128).astype(np.uint8)
        if defect == "truncated" or not _touches_border(mask_out):
            break
        # A sample that is not meant to be truncated must not touch the frame: pull the camera back.
        cam.zoom *= 0.92
        cam.tx *= 0.5
        cam.ty *= 0.5

    person_small = np.asarray(person.reduce(ss) if ss > 1 else person).astype(np.float32)
    yy = np.linspace(-0.5, 0.5, H, dtype=np.float32)[:, None, None]
    xx = np.linspace(-0.5, 0.5, W, dtype=np.float32)[None, :, None]
    shade = light["gain"] * (1 + light["grad"][0] * xx + light["grad"][1] * yy) * light["cast"]
    person_small = np.clip(person_small * shade + noise * light["noise"], 0, 255).astype(np.uint8)

    flags = {d: d == defect for d in DEFECTS}
    meta = {
        "source": "synthetic",
        "seed": int(seed),
        "split": split,
        "index": int(index),
        "flags": flags,
        "garment": {"kind": g.kind, "pattern": g.pattern, "logo": g.logo["shape"] if g.logo else None,
                    "colours": [_hex(c) for c in g.palette],
                    "dominant_colour": _hex(dominant),
                    "colour_family": colour_family(dominant)},
    }
    meta["flat_offset_y"] = flat_offset_y  # output pixels, + = down, from the centred position
    if extreme_kind:
        meta["extreme"] = extreme_kind
    if side:
        meta["turned"] = "left" if side < 0 else "right"
    return SyntheticSample(person_small, mask_out, garment_img, category, meta)


def _touches_border(mask: np.ndarray) -> bool:
    return bool(mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def _truncating_camera(rng: np.random.Generator, cam: Camera, g: Garment, RH: int, RW: int, category: str) -> None:
    """Zoom in and shift so a clear part of the garment leaves the frame."""
    cam.zoom = rng.uniform(1.2, 1.5)
    cam.tx = cam.ty = 0.0
    xmin, ymin, xmax, ymax = g.bbox
    (x0, x1), (y0, y1) = cam.view(*cam.frontal(np.array([xmin, xmax]), np.array([g.anchor_y + ymin, g.anchor_y + ymax])))
    gw, gh = x1 - x0, y1 - y0
    cut = rng.uniform(0.15, 0.35)
    sides = ["bottom", "left", "right"] if category != "upper" else ["bottom", "left", "right", "bottom"]
    side = str(rng.choice(sides))
    if side == "bottom":
        cam.ty = RH + cut * gh - y1
        cam.ty = max(cam.ty, -y0 + 2)  # keep the top of the garment in frame
    elif side == "left":
        cam.tx = -cut * gw - x0
        cam.ty = (RH - (y0 + y1)) / 2
    else:
        cam.tx = RW + cut * gw - x1
        cam.ty = (RH - (y0 + y1)) / 2


def _plan_occluder(rng: np.random.Generator, category: str, garment_kind: str) -> dict:
    if category == "lower":
        # Trouser legs are too narrow to hide much inside: a bag across the thighs instead.
        kind = "band" if garment_kind == "trousers" or rng.random() < 0.5 else "object"
    else:
        kind = "crossed_arms" if rng.random() < 0.45 else "object"
    return {
        "kind": kind,
        "u": float(rng.uniform(0.3, 0.7)),  # centre, fraction of the garment bbox
        "v": float(rng.uniform(0.35, 0.65)),
        "w": float(rng.uniform(0.38, 0.6)),  # size, fraction of the garment bbox
        "h": float(rng.uniform(0.25, 0.4)),
        "colour": _hsv(rng.random(), rng.uniform(0.3, 0.9), rng.uniform(0.25, 0.85)),
        "shape": str(rng.choice(["rect", "ellipse", "rounded"])),
    }


def _compose_person(g, body, cam, warp, sprite, origin, ppb, bg_img, lower_cloth, top_cloth, side, occ_plan,
                    light, RH, RW):
    img = Image.fromarray(bg_img)
    draw = ImageDraw.Draw(img)
    _draw_figure_back(draw, cam, body, lower_cloth, side)
    sleeve = g.sleeve_dir if g.category != "lower" else math.radians(80)
    arms = {sgn: _arm_points(body, sgn, sleeve, body["hand_pose"] if g.category != "lower" else "down")
            for sgn in (-1, 1)}
    # Arms hang under the sleeves: drawn before the garment. A turned figure hides its far arm.
    for sgn, (s, e, w) in arms.items():
        if side and sgn == side:
            continue
        _limb([(draw, None)], cam, s, e, 0.036, body["skin"])
        _limb([(draw, None)], cam, e, w, 0.03, body["skin"])

    layer = _worn_layer(g, sprite, origin, ppb, cam, warp, (RH, RW))
    if side:
        layer = _hide_far_side(layer, cam, g, body, side)
    # Folds: soft light/dark bands across the garment only.
    rgba = np.asarray(layer).astype(np.float32)
    yy, xx = np.mgrid[0:RH, 0:RW].astype(np.float32)
    fold = np.ones((RH, RW), np.float32)
    for amp, lam, ang, ph in light["folds"]:
        fold += amp * np.sin(2 * math.pi * (xx * math.cos(ang) + yy * math.sin(ang)) / lam + ph)
    rgba[..., :3] *= fold[..., None]
    layer = Image.fromarray(np.clip(rgba, 0, 255).astype(np.uint8), "RGBA")
    alpha = np.asarray(layer.getchannel("A"))
    img.paste(layer, (0, 0), layer)

    occ = Image.new("L", (RW, RH), 0)
    odraw = ImageDraw.Draw(occ)
    both = [(draw, None), (odraw, 255)]
    if top_cloth is not None:  # an untucked top over the waistband of the target bottoms
        hip, sh = body["hip"], body["shoulder"]
        pts = [(-sh, 0.17), (sh, 0.17), (hip * 1.05, 0.445), (-hip * 1.05, 0.445)]
        for d, f in both:
            _poly(d, cam, pts, top_cloth if f is None else f)
    for sgn, (_, e, w) in arms.items():
        if side and sgn == side:
            continue
        if g.category == "lower" or body["hand_pose"] == "hip":
            # Hands (and forearms at the hip) in front: the small, normal occlusion.
            if body["hand_pose"] == "hip" and g.category != "lower":
                _limb(both, cam, e, w, 0.03, body["skin"])
            hx, hy = w
            for d, f in both:
                _ellipse(d, cam, (hx, hy + 0.012), 0.02, 0.024, body["skin"] if f is None else f)
    if occ_plan is not None:
        _draw_occluder(both, cam, g, body, occ_plan, alpha, np.asarray(occ))
    if g.category != "lower":
        _head(draw, cam, body)
        if body["long_hair"]:
            # Strands over the shoulders: part of the normal occlusion.
            for sgn in (-1, 1):
                pts = [(sgn * 0.04, 0.05), (sgn * 0.06, 0.05), (sgn * 0.068, 0.24), (sgn * 0.045, 0.24)]
                for d, f in both:
                    _poly(d, cam, pts, body["hair"] if f is None else f)
    mask = ((alpha > 127) & (np.asarray(occ) == 0)).astype(np.uint8)
    return img, mask


def _draw_occluder(both, cam: Camera, g: Garment, body: dict, plan: dict, alpha: np.ndarray,
                   occ: np.ndarray) -> None:
    inside = (alpha > 127) & (occ == 0)
    ys, xs = np.nonzero(inside)
    if len(xs) == 0:
        return
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    bw, bh = x1 - x0, y1 - y0
    if plan["kind"] == "crossed_arms":
        # Forearms across the whole garment: the visible garment falls apart in two pieces.
        yc = y0 + plan["v"] * bh
        t = max(2, round(0.13 * bh))
        for d, f in both:
            fill = body["skin"] if f is None else f
            d.line([(x0 - 0.05 * bw, yc - t * 0.3), (x1 + 0.05 * bw, yc + t * 0.3)], fill=fill, width=t)
            d.line([(x0 - 0.05 * bw, yc + t * 0.6), (x1 + 0.05 * bw, yc - t * 0.2)], fill=fill, width=t)
        return
    if plan["kind"] == "band":
        yc = y0 + (0.3 + 0.3 * plan["v"]) * bh
        t = max(3.0, plan["h"] * 0.6 * bh)
        box = [x0 - 0.1 * bw, yc - t / 2, x1 + 0.1 * bw, yc + t / 2]
        for d, f in both:
            d.rounded_rectangle(box, radius=t * 0.25, fill=plan["colour"] if f is None else f)
        return
    # A held object (bag, book, phone) in front of the garment, placed where the garment is widest so
    # it stays inside the outline: the mask gets a hole rather than a notch.
    dist = ndimage.distance_transform_edt(inside)
    cand = np.argwhere(dist >= 0.85 * dist.max())
    cy, cx = cand[int(plan["u"] * (len(cand) - 1))]
    r = float(dist[cy, cx]) - max(3.0, 0.03 * bh)  # margin: the hole must survive downsampling
    if r < 2:
        return
    rx = r * (0.9 if plan["shape"] == "ellipse" else 0.68)
    ry = rx * plan["h"] / plan["w"] * 1.6
    ry = min(ry, r * (0.9 if plan["shape"] == "ellipse" else 0.68))
    box = [cx - rx, cy - ry, cx + rx, cy + ry]
    for d, f in both:
        fill = plan["colour"] if f is None else f
        if plan["shape"] == "ellipse":
            d.ellipse(box, fill=fill)
        elif plan["shape"] == "rounded":
            d.rounded_rectangle(box, radius=min(rx, ry) * 0.4, fill=fill)
        else:
            d.rectangle(box, fill=fill)
        hand = body["skin"] if f is None else f
        hr = max(1.5, 0.3 * ry)
        for hx in (cx - rx + hr, cx + rx - hr):  # hands on the lower corners, within the object
            d.ellipse([hx - hr, cy + ry - 2 * hr, hx + hr, cy + ry], fill=hand)


def _hide_far_side(layer: Image.Image, cam: Camera, g: Garment, body: dict, side: int) -> Image.Image:
    """A turned figure hides the far sleeve (tops, dresses) or the far leg (bottoms) behind the body."""
    H, W = layer.size[1], layer.size[0]
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    fx, fy = cam.view_inv(xx, yy)
    xb = (fx - cam.cx) / cam.k
    yb = fy / cam.k + cam.win0
    if g.category == "lower":
        crotch = g.anchor_y + 0.1
        hide = (side * xb > -0.005) & (yb > crotch)
    else:
        hide = (side * xb > body["shoulder"] * 0.8) & (yb < g.anchor_y + 0.34)
    a = np.asarray(layer).copy()
    a[hide] = 0
    return Image.fromarray(a, "RGBA")


# --------------------------------------------------------------------------- encoding


def encode_jpeg(a: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    # 4:4:4 chroma: thin coloured stripes survive at 96 px width.
    Image.fromarray(a).save(buf, format="JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def encode_png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def synthetic_key(split: str, seed: int, index: int) -> str:
    return f"synth_{split}_s{seed}_{index:07d}"


def make_shard_sample(seed: int, split: str, index: int, cfg: SyntheticConfig) -> dict:
    """Generate and encode one sample for :class:`~igr.data.shards.ShardSetWriter`."""
    s = generate_sample(seed, split, index, cfg)
    return encode_sample(
        synthetic_key(split, seed, index),
        person=encode_jpeg(s.person, cfg.jpeg_quality),
        mask=encode_png(s.mask * 255),
        category=s.category,
        garment=encode_jpeg(s.garment, cfg.jpeg_quality),
        meta=s.meta,
    )
