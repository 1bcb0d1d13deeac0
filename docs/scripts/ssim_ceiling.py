"""What SSIM the tiny world allows: oracles built by the generator itself, and where a model's SSIM is lost.

    python docs/scripts/ssim_ceiling.py --shards shards/demo-long/test-000000.tar
    python docs/scripts/ssim_ceiling.py --shards shards/demo-long/test-000000.tar --model outputs/demo-long/pipeline

Every synthetic sample is a pure function of (seed, split, index) (``igr.data.synthetic``), so each test pair's
ground truth can be drawn again with one thing changed. The oracle rows are such redraws, scored with the pinned
SSIM against the shards' garments:

* ``solid``: the same garment (silhouette, trims, logo, colours, position) with its pattern replaced by the base
  colour: what a model that got everything but the pattern exactly right would score;
* ``mean colour``: the pattern replaced by its mean colour;
* the solid oracle blurred, shifted, scaled or with noise: how fast SSIM falls with edge errors of a pixel or two;
* ``solid at the centre``: the solid oracle without the target's vertical jitter (meta.json ``flat_offset_y``), which
  nothing in the person photo tells, so the best any model can do is to guess the centre.

With ``--model`` the pipeline's restorations (the eval's seed, so the same images as ``igr eval``) are split into
SSIM windows over the background, over the garment's edges and inside it, and aligned to the ground truth by the
best shift (a bound on what placement alone costs), and its SSIM is split by the target's jitter. Synthetic shards
only.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import tarfile

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

import igr.data.synthetic as synth
import igr.data.synthetic.garments as garments  # where render_sprite looks up _pattern_rgb
from igr.data.synthetic import SyntheticConfig
from igr.metrics import ssim as S

_KEY = re.compile(r"synth_(\w+)_s(\d+)_(\d+)$")


def read_pairs(shards: str, limit: int | None) -> tuple[list[str], np.ndarray]:
    """Keys and ground-truth garments (N, H, W, 3) of a synthetic test tar, in the tar's order."""
    keys, garments = [], []
    with tarfile.open(shards) as tar:
        for m in tar.getmembers():
            key, _, ext = m.name.partition(".")
            if ext.startswith("garment"):
                if not _KEY.match(key):
                    raise SystemExit(f"error: {shards}: {key} is not a synthetic sample (synth_SPLIT_sSEED_INDEX)")
                keys.append(key)
                garments.append(np.asarray(Image.open(io.BytesIO(tar.extractfile(m).read())).convert("RGB")))
            if limit and len(keys) == limit:
                break
    return keys, np.stack(garments)


def generator_config(shards: str, size: tuple[int, int]) -> SyntheticConfig:
    """The generator settings the shards were made with (``igr make-shards`` records the defect fraction)."""
    from igr.data.shards import find_index

    index = find_index([shards]) or {}
    return SyntheticConfig(size=size, defect_fraction=index.get("synthetic", {}).get("defect_fraction", 0.25))


def redraw(keys: list[str], cfg: SyntheticConfig, pattern: str | None) -> tuple[np.ndarray, list[dict]]:
    """The ground truths drawn again, with the pattern as it is (None), 'solid' or 'mean'; and their meta."""
    original = garments._pattern_rgb

    def flat(g, ppb, w, h, x0, y0):
        rgb = original(g, ppb, w, h, x0, y0)
        colour = np.array(g.palette[0], np.uint8) if pattern == "solid" else rgb.reshape(-1, 3).mean(0).round()
        return np.broadcast_to(colour.astype(np.uint8), rgb.shape).copy()

    images, metas = [], []
    try:
        if pattern:
            garments._pattern_rgb = flat  # the one change; nothing in _pattern_rgb draws from the sample's rng
        for key in keys:
            split, seed, index = _KEY.match(key).groups()
            s = synth.generate_sample(int(seed), split, int(index), cfg)
            # the shards hold JPEGs: compare like with like
            images.append(np.asarray(Image.open(io.BytesIO(synth.encode_jpeg(s.garment, cfg.jpeg_quality)))))
            metas.append(s.meta)
    finally:
        garments._pattern_rgb = original
    return np.stack(images), metas


def chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2)


def ssim(pred: np.ndarray | torch.Tensor, gt: torch.Tensor) -> float:
    pred = chw(pred) if isinstance(pred, np.ndarray) else pred
    return float(S.ssim_pinned(pred, gt).mean())


def oracles(keys: list[str], gt: torch.Tensor, cfg: SyntheticConfig) -> tuple[dict[str, float], list[dict]]:
    """The oracle rows, and the pairs' meta (drawn once here; the model's analysis reads the jitter from it)."""
    exact, metas = redraw(keys, cfg, None)
    if ssim(exact, gt) < 0.999:  # not == 1: another libjpeg may decode the shards' JPEGs a grey level apart
        raise SystemExit("error: the redrawn ground truths differ from the shards' garments: these shards were not "
                         "made by this generator with these settings (igr.data.synthetic)")
    solid, _ = redraw(keys, cfg, "solid")
    mean, _ = redraw(keys, cfg, "mean")
    rows = {"exact redraw": ssim(exact, gt), "solid": ssim(solid, gt), "mean colour": ssim(mean, gt)}
    for sigma in (0.5, 1.0, 2.0):
        blurred = np.stack([np.asarray(Image.fromarray(a).filter(ImageFilter.GaussianBlur(sigma))) for a in solid])
        rows[f"solid, blurred σ {sigma} px"] = ssim(blurred, gt)
    for dy, dx in ((0, 1), (0, 2), (1, 0), (2, 0)):
        rows[f"solid, shifted {dx} px right, {dy} px down"] = ssim(np.roll(solid, (dy, dx), (1, 2)), gt)
    h, w = cfg.size
    scaled = F.interpolate(chw(solid).float(), scale_factor=1.05, mode="bilinear")
    top, left = (scaled.shape[2] - h) // 2, (scaled.shape[3] - w) // 2
    rows["solid, scaled by 1.05"] = ssim(scaled[:, :, top : top + h, left : left + w].round().to(torch.uint8), gt)
    noise = torch.randn(chw(solid).shape, generator=torch.Generator().manual_seed(0)) * 7
    rows["solid + noise of std 7 grey levels"] = ssim((chw(solid).float() + noise).round().clamp(0, 255).byte(), gt)
    centred = np.stack([np.roll(a, -round(m["flat_offset_y"]), 0) for a, m in zip(solid, metas)])
    rows["solid at the centre (the target's jitter unknown)"] = ssim(centred, gt)
    return rows, metas


def restore(model: str, shards: str, size: tuple[int, int], limit: int | None) -> torch.Tensor:
    from igr.evaluate import _restore_batch, shard_batches
    from igr.export import load_pipeline

    pipe, sampling = load_pipeline(model)
    preds = [
        _restore_batch(pipe, sampling, b, seed=0, steps=None, guidance=None, sampler=None, device="cpu")
        for b in shard_batches(shards, size, 16, limit, True)
    ]
    return torch.cat(preds)


def windows(pred: torch.Tensor, gt: torch.Tensor) -> dict[str, dict[str, float]]:
    """Mean SSIM over the 11×11 windows that see only background, the garment's edge, or only garment."""
    x, y = S.y_channel(pred), S.y_channel(gt)
    mx, my, exx, eyy, exy = S._filter_valid(torch.cat([x, y, x * x, y * y, x * y], 1), S.gaussian_window_1d()).unbind(1)
    sxx, syy, sxy = exx - mx**2, eyy - my**2, exy - mx * my
    smap = (2 * mx * my + S._C1) / (mx**2 + my**2 + S._C1) * F.relu((2 * sxy + S._C2) / (sxx + syy + S._C2))
    # garment pixels: far from the flat background's colour (its corner)
    corner = gt[:, :, :3, :3].float().mean((2, 3), keepdim=True)
    fg = ((gt.float() - corner).abs().amax(1, keepdim=True) > 20).float()
    share = F.avg_pool2d(fg, 11, 1)[:, 0].double()  # (B, H-10, W-10): garment fraction of each window
    out = {}
    for name, w in (("background", share == 0), ("edge", (share > 0) & (share < 1)), ("inside", share == 1)):
        w = w.double()
        out[name] = {
            "share of windows": float(w.mean()),
            "ssim": float((smap * w).sum() / w.sum()),
            "pred std": float((sxx.clamp(min=0).sqrt() * w).sum() / w.sum()),
            "gt std": float((syy.clamp(min=0).sqrt() * w).sum() / w.sum()),
        }
    return out


def best_shift(pred: torch.Tensor, gt: torch.Tensor, reach: int = 3) -> tuple[float, list[int]]:
    """Mean over pairs of the best SSIM over shifts of up to ``reach`` px down/up and 2 px sideways, and each pair's
    best vertical shift (+ = down)."""
    best = torch.full((len(pred),), -1.0, dtype=torch.float64)
    best_dy = torch.zeros(len(pred), dtype=torch.long)
    for dy in range(-reach, reach + 1):
        for dx in range(-2, 3):
            s = S.ssim_pinned(torch.roll(pred, (dy, dx), (2, 3)), gt)
            best_dy[s > best] = dy
            best = torch.maximum(best, s)
    return float(best.mean()), best_dy.tolist()


def by_jitter(pred: torch.Tensor, gt: torch.Tensor, best_dy: list[int], metas: list[dict]) -> dict:
    """The model's SSIM per value of the target's vertical jitter, and how its best vertical shift follows it."""
    per_pair = S.ssim_pinned(pred, gt).numpy()
    jitter = np.array([m["flat_offset_y"] for m in metas])
    return {
        # (pairs, SSIM) per jitter; a half pixel where the garment fills the frame and its position was clamped
        "ssim by jitter (px)": {f"{j:+g}": [int((jitter == j).sum()), float(per_pair[jitter == j].mean())]
                                for j in sorted(set(jitter))},
        "corr(best vertical shift, jitter)": float(np.corrcoef(best_dy, jitter)[0, 1]),
        "best vertical shift minus jitter (px): pairs": {
            f"{k:+g}": int(v) for k, v in zip(*np.unique(np.array(best_dy) - jitter, return_counts=True))
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", required=True, help="a synthetic test tar, e.g. shards/demo-long/test-000000.tar")
    ap.add_argument("--model", help="also analyse this pipeline folder's restorations")
    ap.add_argument("--limit", type=int, help="only the first N pairs")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    keys, garments = read_pairs(args.shards, args.limit)
    size = garments.shape[1:3]
    gt = chw(garments)
    rows, metas = oracles(keys, gt, generator_config(args.shards, size))
    result = {"pairs": len(keys), "oracles": rows}
    if args.model:
        pred = restore(args.model, args.shards, size, args.limit)
        shifted, best_dy = best_shift(pred, gt)
        result["model"] = {"ssim": ssim(pred, gt), "windows": windows(pred, gt), "best shift": shifted,
                           "jitter": by_jitter(pred, gt, best_dy, metas)}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{len(keys)} pairs")
    for name, v in result["oracles"].items():
        print(f"  {name:<52} {v:.3f}")
    if args.model:
        m = result["model"]
        print(f"model SSIM {m['ssim']:.3f}; best shift {m['best shift']:.3f}")
        for name, w in m["windows"].items():
            print(f"  {name:<11} " + ", ".join(f"{k} {v:.3f}" for k, v in w.items()))
        print(f"  {json.dumps(m['jitter'])}")


if __name__ == "__main__":
    main()
