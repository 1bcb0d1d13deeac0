"""Tiny-world metrics that need no downloaded weights: a small garment classifier trained on the synthetic
training garments, with one head per attribute the generator records in ``meta.json`` (kind, colour family of the
dominant colour, pattern).

For every row of an evaluation it gives

* ``kind_acc`` / ``colour_acc`` / ``pattern_acc`` — the share of restored garments the classifier puts in the
  ground truth's class (the classifier's accuracy on the ground-truth test garments is the ceiling);
* ``fd_tiny`` / ``kd_tiny`` — Fréchet and kernel (KID-estimator) distances between the classifier's penultimate
  features of the restored and of the ground-truth garments, through :mod:`igr.metrics.stats`, the code FID and KID
  use. They are tiny-world distances on a 64-d feature space learnt in seconds: never FID.

Every score also gets a bootstrap 95 % interval over test pairs (:func:`bootstrap`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from igr.errors import IGRError
from igr.metrics import stats
from igr.metrics.config import CLASSIFIER_STEPS

ATTRIBUTES = ("kind", "colour", "pattern")
DISTANCE_RESAMPLES = 50
TINY_KEYS = ("ssim", "kind_acc", "colour_acc", "pattern_acc", "fd_tiny", "kd_tiny")


def _classes() -> dict[str, tuple[str, ...]]:
    from igr.data.synthetic import COLOUR_FAMILIES, KINDS, PATTERNS

    return {"kind": KINDS, "colour": COLOUR_FAMILIES, "pattern": PATTERNS}


def labels_from_meta(meta: Mapping | None, where: str) -> dict[str, int]:
    """Class indices of one synthetic sample's garment (meta.json ``garment``: kind, colour_family, pattern)."""
    garment = (meta or {}).get("garment") or {}
    classes = _classes()
    values = {"kind": garment.get("kind"), "colour": garment.get("colour_family"), "pattern": garment.get("pattern")}
    out = {}
    for attr, value in values.items():
        if value not in classes[attr]:
            raise IGRError(
                f"{where}: meta.json has no garment {attr} the tiny-world metrics know ({value!r}); these metrics "
                "need shards from `igr make-shards synthetic` (regenerate older shards)"
            )
        out[attr] = classes[attr].index(value)
    return out


@dataclass
class GarmentSet:
    """Garments of a shard set: uint8 images (N,3,H,W), categories and attribute labels {attr: (N,) int64}."""

    images: torch.Tensor
    categories: list[str]
    labels: dict[str, torch.Tensor]
    keys: list[str]


def load_garments(shards: str, size: tuple[int, int], limit: int | None = None) -> GarmentSet:
    from igr.data.shards import iter_samples

    images, cats, keys, labels = [], [], [], {a: [] for a in ATTRIBUTES}
    for s in iter_samples(shards, image_size=size, require_garment=True):
        if limit is not None and len(images) >= limit:
            break
        for attr, v in labels_from_meta(s.get("meta"), f"{s['url']}: {s['key']}").items():
            labels[attr].append(v)
        # np.array copies: decoded arrays are read-only, which torch.from_numpy warns about
        images.append(torch.from_numpy(np.array(s["garment"])).permute(2, 0, 1))
        cats.append(s["category"])
        keys.append(s["key"])
    if not images:
        raise IGRError(f"{shards}: no garments to train the tiny-world classifier on")
    return GarmentSet(torch.stack(images), cats, {a: torch.tensor(v) for a, v in labels.items()}, keys)


class GarmentClassifier(nn.Module):
    """Four stride-2 conv blocks → global average pool → a 64-d feature → one linear head per attribute."""

    def __init__(self, num_classes: Mapping[str, int], width: int = 32, feature_dim: int = 64) -> None:
        super().__init__()
        w = width
        layers, c = [], 3
        for out in (w, 2 * w, 2 * w, feature_dim):
            layers += [nn.Conv2d(c, out, 3, stride=2, padding=1), nn.BatchNorm2d(out), nn.SiLU()]
            c = out
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({a: nn.Linear(feature_dim, n) for a, n in num_classes.items()})

    @staticmethod
    def _prep(images_uint8: torch.Tensor) -> torch.Tensor:
        return images_uint8.float() / 127.5 - 1

    def features(self, images_uint8: torch.Tensor) -> torch.Tensor:
        return self.trunk(self._prep(images_uint8)).mean((2, 3))

    def forward(self, images_uint8: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.trunk(self._prep(images_uint8)).mean((2, 3))
        return {a: head(f) for a, head in self.heads.items()}


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Flips, shifts of a few pixels and random blur: restorations are softer than the crisp training garments,
    and a classifier that only knows crisp edges would call every soft garment 'solid'."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
    x = torch.roll(x, (dy, dx), dims=(2, 3))
    blur = torch.rand(b, generator=gen) < 0.3
    if blur.any():
        k = torch.tensor([1.0, 2.0, 1.0])
        k = (k[:, None] * k[None]) / 16
        soft = F.conv2d(F.pad(x.float(), (1, 1, 1, 1), mode="replicate"), k.expand(3, 1, 3, 3), groups=3)
        x = torch.where(blur[:, None, None, None], soft.round().clamp(0, 255).to(x.dtype), x)
    return x


def train_classifier(
    train: GarmentSet, steps: int = CLASSIFIER_STEPS, batch_size: int = 64, lr: float = 3e-3, seed: int = 0,
    log: Callable[[str], None] | None = print,
) -> GarmentClassifier:
    """Fit the classifier on the training garments (about a minute on one core at 64×48)."""
    from igr.pretraining import step_progress

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = GarmentClassifier({a: len(c) for a, c in _classes().items()})
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.1)
    start = time.perf_counter()
    model.train()
    with step_progress("tiny-world classifier", "loss", disable=log is None) as progress:
        task = progress.add_task("classifier", total=steps, loss=float("nan"))
        for _ in range(steps):
            idx = torch.randint(0, len(train.images), (batch_size,), generator=gen)
            logits = model(_augment(train.images[idx], gen))
            loss = sum(F.cross_entropy(logits[a], train.labels[a][idx]) for a in ATTRIBUTES)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            progress.update(task, advance=1, loss=loss.item())
    if log:
        log(f"tiny-world classifier: {steps} steps on {len(train.images)} garments in "
            f"{time.perf_counter() - start:.0f} s")
    return model.eval()


CLASSIFIER_FORMAT = "igr-tiny-classifier/1"


def save_classifier(model: GarmentClassifier, path: str | Path, info: Mapping[str, object]) -> Path:
    """Write the classifier as ``.safetensors``; its classes and how it was trained (``info``: image size,
    training shards, steps, seed) go in the metadata, so an evaluation can check that it fits its test set."""
    from safetensors.torch import save

    from igr.atomic import atomic_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise IGRError(f"{path}: the tiny-world classifier is written as a .safetensors file")
    meta = {"format": CLASSIFIER_FORMAT, "classes": json.dumps(_classes()), "info": json.dumps(dict(info))}
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_file(path) as f:
        f.write(save(state, metadata=meta))
    return path


def load_classifier(path: str | Path) -> tuple[GarmentClassifier, dict]:
    """The classifier :func:`save_classifier` wrote and its ``info``; a file of another format, or one trained on
    classes the synthetic generator no longer draws, is refused with the reason."""
    from safetensors import safe_open

    from igr.weights_io import check_readable, load_into, read_state_dict

    path = check_readable(path, "tiny-world classifier")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise IGRError(f"{path}: not a tiny-world classifier file ({exc.__class__.__name__})") from exc
    if meta.get("format") != CLASSIFIER_FORMAT:
        raise IGRError(f"{path}: not a tiny-world classifier file (format {meta.get('format')!r}, expected "
                       f"{CLASSIFIER_FORMAT!r}; write one with `igr train-classifier`)")
    classes = {a: tuple(v) for a, v in json.loads(meta["classes"]).items()}
    if classes != _classes():
        raise IGRError(f"{path}: trained on other garment classes than the synthetic generator draws now "
                       "(retrain it with `igr train-classifier`)")
    model = GarmentClassifier({a: len(c) for a, c in classes.items()})
    load_into(model, read_state_dict(path), path)
    return model.eval(), json.loads(meta["info"])


@torch.no_grad()
def classify(model: GarmentClassifier, images_uint8: torch.Tensor, batch_size: int = 256) -> dict[str, np.ndarray]:
    """{"features": (N,64) float64, attr: (N,) predicted class} for uint8 images (N,3,H,W)."""
    feats, preds = [], {a: [] for a in ATTRIBUTES}
    for b in images_uint8.split(batch_size):
        f = model.features(b)
        feats.append(f)
        for a, head in model.heads.items():
            preds[a].append(head(f).argmax(1))
    out = {a: torch.cat(v).numpy() for a, v in preds.items()}
    out["features"] = torch.cat(feats).double().numpy()
    return out


@dataclass
class Scored:
    """Per-pair scores of one row, the inputs of the bootstrap."""

    ssim: np.ndarray  # (N,) pinned SSIM per pair
    correct: dict[str, np.ndarray]  # attr → (N,) bool
    features: np.ndarray  # (N, D)


def score_row(
    model: GarmentClassifier, pred_uint8: torch.Tensor, gt_uint8: torch.Tensor, labels: Mapping[str, torch.Tensor]
) -> Scored:
    from igr.metrics.ssim import ssim_pinned

    if pred_uint8.shape != gt_uint8.shape:
        raise IGRError(f"tiny-world metrics: {tuple(pred_uint8.shape)} predictions for {tuple(gt_uint8.shape)} "
                       "ground-truth garments")
    c = classify(model, pred_uint8)
    return Scored(
        ssim=ssim_pinned(pred_uint8, gt_uint8).numpy(),
        correct={a: c[a] == labels[a].numpy() for a in ATTRIBUTES},
        features=c["features"],
    )


def _values(row: Scored, gt_features: np.ndarray, idx: np.ndarray | None, kd_subsets: int) -> dict[str, float]:
    sel = slice(None) if idx is None else idx
    out = {"ssim": float(row.ssim[sel].mean())}
    for a in ATTRIBUTES:
        out[f"{a}_acc"] = float(row.correct[a][sel].mean())
    a, b = row.features[sel], gt_features[sel]
    out["fd_tiny"] = stats.frechet_distance(a, b)
    # When the subset size is the whole set, every KID subset is the same set permuted (the estimator is
    # permutation-invariant): one subset gives the identical value at a hundredth of the cost.
    subsets = 1 if stats.kid_subset_size(len(a), len(b)) == min(len(a), len(b)) == max(len(a), len(b)) else kd_subsets
    out["kd_tiny"] = stats.kernel_distance(a, b, num_subsets=subsets, seed=0)
    return out


def bootstrap_draws(
    row: Scored, gt_features: np.ndarray, resamples: int = 200, seed: int = 0
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Point values and each metric's value on every bootstrap resample of the test pairs (drawn with replacement;
    the seed fixes the draws, so rows of one test set are resampled alike and can be differenced draw by draw).
    Distances are recomputed on each resample against the resampled ground truth."""
    n = len(row.ssim)
    point = _values(row, gt_features, None, kd_subsets=100)
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, n) for _ in range(resamples)]
    means = {"ssim": row.ssim, **{f"{a}_acc": row.correct[a].astype(np.float64) for a in ATTRIBUTES}}
    samples = {k: [float(v[idx].mean()) for idx in draws] for k, v in means.items()}
    # The distances cost ~0.1 s per resample on 2 busy cores: their intervals use the first DISTANCE_RESAMPLES draws.
    dist = [_values(row, gt_features, idx, kd_subsets=10) for idx in draws[:DISTANCE_RESAMPLES]]
    samples.update({k: [d[k] for d in dist] for k in ("fd_tiny", "kd_tiny")})
    return point, samples


def interval(samples: Sequence[float]) -> list[float]:
    """The 95 % percentile interval of bootstrap values."""
    return [float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))]


def intervals(samples: Mapping[str, Sequence[float]]) -> dict[str, list[float]]:
    """{metric: 95 % interval} of :func:`bootstrap_draws`' values."""
    return {k: interval(v) for k, v in samples.items()}


def bootstrap(
    row: Scored, gt_features: np.ndarray, resamples: int = 200, seed: int = 0
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Point values and 95 % percentile intervals over test pairs (:func:`bootstrap_draws`)."""
    point, samples = bootstrap_draws(row, gt_features, resamples, seed)
    return point, intervals(samples)


def paired_difference(
    a: tuple[dict[str, float], dict[str, list[float]]], b: tuple[dict[str, float], dict[str, list[float]]]
) -> dict[str, list[float]]:
    """{metric: [a − b, low, high]}: the difference of two rows scored on the same test pairs, with the 95 %
    interval of its values on the same resamples (:func:`bootstrap_draws` of both with one seed). Sharing the
    pairs removes their common spread, so this interval is narrower than the rows' own; containing 0, it is a tie."""
    (point_a, draws_a), (point_b, draws_b) = a, b
    out = {}
    for k in point_a:
        if len(draws_a[k]) != len(draws_b[k]):
            raise ValueError(f"paired_difference: {k} resampled {len(draws_a[k])} and {len(draws_b[k])} times")
        diffs = np.asarray(draws_a[k]) - np.asarray(draws_b[k])
        out[k] = [point_a[k] - point_b[k], *interval(diffs)]
    return out


def category_mean_garments(train: GarmentSet) -> dict[str, torch.Tensor]:
    """The mean training garment of each category, uint8 (3,H,W): the category-mean baseline's output."""
    means = {}
    for cat in sorted(set(train.categories)):
        sel = torch.tensor([c == cat for c in train.categories])
        means[cat] = train.images[sel].float().mean(0).round().to(torch.uint8)
    return means


def category_mean_baseline(means: Mapping[str, torch.Tensor], categories: Sequence[str]) -> torch.Tensor:
    missing = sorted({c for c in categories if c not in means})
    if missing:
        raise IGRError(f"category-mean baseline: no training garments of categories {missing}")
    return torch.stack([means[c] for c in categories])
