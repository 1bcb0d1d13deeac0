"""Drawing the person: body proportions, the camera that frames each category, limbs, head and background."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import ImageDraw

from igr.data.synthetic.colours import _HAIR, _SKIN, _hsv


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
