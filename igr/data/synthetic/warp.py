"""Wearing the garment: the sprite warped onto the figure through the camera (similarity + perspective +
smooth bumps and sways, as a piecewise-bilinear mesh)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from igr.data.synthetic.figure import Camera
from igr.data.synthetic.garments import Garment


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
