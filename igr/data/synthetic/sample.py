"""One sample: the flat target, the person wearing the same garment, the visible-garment mask, and the defect
(truncation, occlusion, side view, extreme proportion) that HQFT's rules should catch."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy import ndimage

from igr.data.synthetic.colours import _dominant_colour, _hex, _hsv, colour_family
from igr.data.synthetic.config import _WINDOWS, DEFECTS, SyntheticConfig, SyntheticSample, sample_rng
from igr.data.synthetic.figure import (
    Camera,
    _arm_points,
    _background,
    _body,
    _draw_figure_back,
    _ellipse,
    _head,
    _limb,
    _poly,
)
from igr.data.synthetic.garments import Garment, _make_garment, render_sprite
from igr.data.synthetic.warp import Warp, _worn_layer


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
