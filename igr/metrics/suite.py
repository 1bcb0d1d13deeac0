"""``MetricSuite``: accumulate per-image scores and features batch by batch, then compute every metric.

    suite = MetricSuite(MetricsConfig.load(path))
    for pred, gt in batches:                   # (B, 3, H, W) uint8 each
        suite.update(pred, gt, keys=keys)
    results = suite.compute()                  # {"ssim": 0.79, "fid": 13.1, "lpips": "n/a (...)", ...}

Paired metrics (SSIM, LPIPS, DISTS) are per-image means. Set metrics (FID, CLIP-FID, KID×1e3) compare the
predictions with a real set: the ground truth of the same pairs (``real="gt"``, the paired protocol) or a
separate set fed through :meth:`update_real` (``real="separate"``, e.g. the unpaired StreetTryOn test with
VITON-HD garments as the real set). With ``real_id`` and ``config.cache_dir`` set, real-set features are
cached on disk. Values from a random-init test backbone are stored under ``<name>_random_backbone``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from igr.metrics.backbones import Unavailable, build_backbone
from igr.metrics.cache import FeatureCache
from igr.metrics.config import METRIC_BACKBONE, PAIRED_METRICS, MetricsConfig
from igr.metrics.images import check_uint8_batch, check_uint8_pair
from igr.metrics.ssim import ssim_pinned, ssim_rgb
from igr.metrics.stats import frechet_distance, kernel_distance, kid_subset_size

PROTOCOL_RESOLUTION = (1024, 768)
RANDOM_SUFFIX = "_random_backbone"
RESULT_NAMES = {
    "ssim": "ssim",
    "ssim_rgb": "ssim_rgb",
    "lpips": "lpips",
    "dists": "dists",
    "fid": "fid",
    "clip_fid": "clip_fid",
    "kid": "kid_x1e3",
}
SET_BACKBONES = {"fid": "inception", "kid": "inception", "clip_fid": "clip_vit_b_32"}


class MetricSuite:
    def __init__(
        self,
        config: MetricsConfig | None = None,
        *,
        real: str = "gt",
        real_id: str | None = None,
        device: torch.device | str | None = None,
        backbones: dict[str, Any] | None = None,
    ) -> None:
        if real not in ("gt", "separate"):
            raise ValueError(f"real must be 'gt' or 'separate', got {real!r}")
        self.config = config or MetricsConfig.load()
        self.real = real
        self.real_id = real_id
        self.device = torch.device(device if device is not None else self.config.device)
        needed = sorted({METRIC_BACKBONE[m] for m in self.config.metrics if m in METRIC_BACKBONE})
        # Backbones may be shared between suites (e.g. one per guidance scale) to load weights once.
        shared = backbones or {}
        self.backbones = {
            k: shared[k] if k in shared else build_backbone(self.config, k, self.device) for k in needed
        }
        for key, b in self.backbones.items():
            if not self.config.allow_random_backbone and getattr(b, "random_init", False):
                raise ValueError(f"backbone '{key}' has random weights but allow_random_backbone is off")
        self.cache = FeatureCache(self.config.cache_dir) if self.config.cache_dir and real_id else None
        self.reset()

    # ------------------------------------------------------------------------------------ accumulation
    def reset(self) -> None:
        self._keys: list[str] | None = []
        self._paired: dict[str, list[np.ndarray]] = {m: [] for m in self._paired_metrics()}
        self._pred: dict[str, list[np.ndarray]] = {k: [] for k in self._set_backbones()}
        self._real: dict[str, list[np.ndarray]] = {k: [] for k in self._set_backbones()}
        self._n = 0
        self._n_gt = 0
        self._n_real_separate = 0
        self._resolution: tuple[int, int] | None = None
        self._duplicates_dropped = 0
        self._real_cached: dict[str, np.ndarray] = {}
        self._real_saved: set[str] = set()
        self._kid_subset: int | None = None
        if self.cache is not None:
            for key in self._set_backbones():
                feats = self.cache.load(self.real_id, self.backbones[key].identity, self.config.resolution)
                if feats is not None:
                    self._real_cached[key] = feats

    def _paired_metrics(self) -> list[str]:
        return [m for m in PAIRED_METRICS if m in self.config.metrics]

    def _set_backbones(self) -> list[str]:
        keys = {SET_BACKBONES[m] for m in self.config.metrics if m in SET_BACKBONES}
        return sorted(k for k in keys if not isinstance(self.backbones[k], Unavailable))

    def real_is_cached(self) -> bool:
        """True when every available set backbone has cached real features (real images not needed)."""
        return all(k in self._real_cached for k in self._set_backbones())

    def _check_resolution(self, images: torch.Tensor, name: str) -> None:
        size = (int(images.shape[-2]), int(images.shape[-1]))
        expected = self.config.resolution or self._resolution
        if expected is not None and size != tuple(expected):
            raise ValueError(
                f"{name}: images are {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]} "
                "(resize them explicitly; metrics never resize silently)"
            )
        self._resolution = size

    @torch.no_grad()
    def update(
        self, pred: torch.Tensor, gt: torch.Tensor | None = None, keys: Sequence[str] | None = None
    ) -> None:
        """Add a batch of predictions (and their ground truth, for paired metrics and ``real="gt"``)."""
        check_uint8_batch(pred, "pred")
        self._check_resolution(pred, "pred")
        if gt is not None:
            check_uint8_pair(pred, gt)
        if self._n > 0 and (gt is None) != (self._n_gt == 0):
            raise ValueError("mix of batches with and without ground truth in one MetricSuite")
        b = pred.shape[0]
        if keys is not None and len(keys) != b:
            raise ValueError(f"keys: {len(keys)} keys for a batch of {b} images")
        if keys is None or self._keys is None:
            self._keys = None  # one unkeyed batch makes the whole set unkeyed (no de-duplication possible)
        else:
            self._keys.extend(str(k) for k in keys)
        pred_d = pred.to(self.device)
        gt_d = gt.to(self.device) if gt is not None else None
        if gt_d is not None:
            for m in self._paired_metrics():
                fn = self._paired_fn(m)
                if fn is not None:
                    self._paired[m].append(fn(pred_d, gt_d).numpy())
            self._n_gt += b
        for key in self._set_backbones():
            self._pred[key].append(self.backbones[key](pred_d).numpy())
            if self.real == "gt" and gt_d is not None and key not in self._real_cached:
                self._real[key].append(self.backbones[key](gt_d).numpy())
        self._n += b

    def _paired_fn(self, metric: str):
        if metric == "ssim":
            return ssim_pinned
        if metric == "ssim_rgb":
            return ssim_rgb
        backbone = self.backbones[METRIC_BACKBONE[metric]]
        return None if isinstance(backbone, Unavailable) else backbone

    @torch.no_grad()
    def update_real(self, images: torch.Tensor) -> None:
        """Add a batch of the separate real set (``real="separate"``)."""
        if self.real != "separate":
            raise ValueError("update_real() needs MetricSuite(real='separate')")
        check_uint8_batch(images, "real")
        self._check_resolution(images, "real")
        images = images.to(self.device)
        for key in self._set_backbones():
            if key not in self._real_cached:
                self._real[key].append(self.backbones[key](images).numpy())
        self._n_real_separate += images.shape[0]

    # ------------------------------------------------------------------------- multi-process merging
    def local_state(self) -> dict[str, Any]:
        """Everything accumulated so far, as plain numpy arrays (for ``all_gather_object``)."""
        return {
            "keys": None if self._keys is None else list(self._keys),
            "n": self._n,
            "n_gt": self._n_gt,
            "n_real_separate": self._n_real_separate,
            "resolution": self._resolution,
            "paired": {m: _cat(v, 1) for m, v in self._paired.items()},
            "pred": {k: _cat(v, 2) for k, v in self._pred.items()},
            "real": {k: _cat(v, 2) for k, v in self._real.items()},
        }

    def load_states(self, states: Sequence[dict[str, Any]]) -> None:
        """Replace the accumulated data with the union of ``states`` (one per rank, in rank order).

        When every sample has a key, repeated keys (a distributed sampler pads the last batch with
        samples another rank already has) are counted once, keeping the first occurrence.
        """
        keyed = all(s["keys"] is not None for s in states)
        keys = [k for s in states for k in s["keys"]] if keyed else None
        keep = None
        if keyed:
            seen: set[str] = set()
            keep = np.zeros(len(keys), dtype=bool)
            for i, k in enumerate(keys):
                if k not in seen:
                    seen.add(k)
                    keep[i] = True
        resolutions = {tuple(s["resolution"]) for s in states if s["resolution"] is not None}
        if len(resolutions) > 1:
            raise ValueError(f"ranks saw different resolutions: {sorted(resolutions)}")

        def merge(field: str, name: str, per_sample: bool) -> np.ndarray:
            parts = [s[field][name] for s in states if len(s[field][name])]
            if not parts:
                return np.zeros((0,))
            arr = np.concatenate(parts, axis=0)
            return arr[keep] if keep is not None and per_sample else arr

        paired_per_sample = all(s["n_gt"] == s["n"] for s in states)
        self._paired = {m: [merge("paired", m, paired_per_sample)] for m in self._paired}
        self._pred = {k: [merge("pred", k, True)] for k in self._pred}
        self._real = {k: [merge("real", k, self.real == "gt")] for k in self._real}
        total = sum(s["n"] for s in states)
        self._n = int(keep.sum()) if keep is not None else total
        self._duplicates_dropped = total - self._n
        self._n_gt = self._n if sum(s["n_gt"] for s in states) else 0
        self._n_real_separate = sum(s["n_real_separate"] for s in states)
        self._keys = [k for k, kept in zip(keys, keep) if kept] if keyed else None
        self._resolution = next(iter(resolutions)) if resolutions else None

    def num_samples(self) -> int:
        """Samples accumulated (after de-duplication, once states are merged)."""
        return self._n

    # ---------------------------------------------------------------------------------------- results
    def _real_features(self, key: str) -> np.ndarray | None:
        if key in self._real_cached:
            return self._real_cached[key]
        feats = _cat(self._real[key], 2)
        return feats if len(feats) else None

    def compute(self) -> dict[str, float | str]:
        """Metric name → value (float) or ``"n/a (reason)"``; random-backbone values get RANDOM_SUFFIX."""
        out: dict[str, float | str] = {}
        self._kid_subset = None
        for m in self.config.metrics:
            name = RESULT_NAMES[m]
            backbone = self.backbones.get(METRIC_BACKBONE.get(m, ""), None)
            if isinstance(backbone, Unavailable):
                out[name] = backbone.reason
                continue
            value = self._paired_value(m) if m in PAIRED_METRICS else self._set_value(m)
            if backbone is not None and backbone.random_init and not isinstance(value, str):
                name += RANDOM_SUFFIX
            out[name] = value
        self.save_real_cache()
        return out

    def _paired_value(self, m: str) -> float | str:
        if self._n_gt == 0:
            return "n/a (no ground truth)"
        values = _cat(self._paired[m], 1)
        return float(values.mean()) if len(values) else "n/a (no images)"

    def _set_value(self, m: str) -> float | str:
        key = SET_BACKBONES[m]
        pred = _cat(self._pred[key], 2)
        real = self._real_features(key)
        n_real = 0 if real is None else len(real)
        if self.real == "gt" and self._n_gt == 0 and key not in self._real_cached:
            return "n/a (no real set: no ground truth given and no separate real set)"
        if len(pred) < 2 or n_real < 2:
            return f"n/a (needs >= 2 images per set, got {len(pred)} predicted and {n_real} real)"
        if m == "kid":
            k = self.config.kid
            self._kid_subset = kid_subset_size(len(pred), n_real, k.subset_size)
            return 1e3 * kernel_distance(pred, real, k.num_subsets, k.subset_size, k.seed)
        return frechet_distance(pred, real)

    def save_real_cache(self) -> None:
        """Write newly computed real-set features to the cache (no-op without ``real_id``/``cache_dir``)."""
        if self.cache is None:
            return
        for key in self._set_backbones():
            if key in self._real_cached or key in self._real_saved:
                continue
            feats = _cat(self._real[key], 2)
            if len(feats) >= 2:
                self.cache.save(self.real_id, self.backbones[key].identity, self.config.resolution, feats)
                self._real_saved.add(key)

    def protocol(self) -> dict[str, Any]:
        """How the numbers were produced, for the report (call after :meth:`compute`)."""
        res = self._resolution or self.config.resolution
        backbones = {}
        for key, b in sorted(self.backbones.items()):
            backbones[key] = b.reason if isinstance(b, Unavailable) else b.description
        set_keys = self._set_backbones()
        n_real = {k: (0 if (r := self._real_features(k)) is None else len(r)) for k in set_keys}
        kid = self.config.kid
        kid_info = {
            "num_subsets": kid.num_subsets,
            "max_subset_size": kid.subset_size,
            "seed": kid.seed,
            "subset_size_used": self._kid_subset,
        }
        return {
            "resolution": list(res) if res else None,
            "protocol_resolution": list(PROTOCOL_RESOLUTION),
            "num_samples": self._n,
            "paired": self._n_gt > 0,
            "real_set": ("ground truth of the pairs" if self.real == "gt" else "separate real set")
            + (f" ({self.real_id})" if self.real_id else ""),
            "num_real": n_real,
            "real_features_cached": sorted(self._real_cached),
            "duplicates_dropped": self._duplicates_dropped,
            "kid": kid_info,
            "backbones": backbones,
            "random_backbones": sorted(
                k for k, b in self.backbones.items() if not isinstance(b, Unavailable) and b.random_init
            ),
            "metrics": list(self.config.metrics),
        }


def _cat(chunks: list[np.ndarray], ndim: int) -> np.ndarray:
    chunks = [c for c in chunks if len(c)]
    if not chunks:
        return np.zeros((0,) if ndim == 1 else (0, 0))
    return np.concatenate(chunks, axis=0)
