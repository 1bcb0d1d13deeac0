"""Which metric backbone to build, and whether it can be: its weights file, or why the metric is n/a.

A backbone is built from a local weights file, or — only when a test asks for it — with a fixed random
init. ``build_backbone`` returns :class:`Unavailable` (carrying the ``n/a (...)`` text the report prints)
when the file is not configured or missing; a file that exists but cannot be loaded is an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from igr.metrics.config import BACKBONE_FILES, MetricsConfig


@dataclass(frozen=True)
class Unavailable:
    """A metric that cannot be computed; ``reason`` is the full ``n/a (...)`` text."""

    reason: str


def resolve_weights(config: MetricsConfig, key: str) -> Path | Unavailable | None:
    """The weights file for ``key``; ``None`` means "build with random init" (tests only)."""
    name = BACKBONE_FILES[key][0]
    path = config.weight_path(key)
    if path is not None and path.is_file():
        return path
    if config.allow_random_backbone:
        return None
    if path is None:
        return Unavailable(f"n/a (no {name} weights configured)")
    return Unavailable(f"n/a (no {name} weights at {path})")


def build_backbone(config: MetricsConfig, key: str, device: torch.device | str = "cpu"):
    """The extractor for backbone ``key`` on ``device``, or :class:`Unavailable`."""
    from igr.metrics import extractors, perceptual

    source = resolve_weights(config, key)
    if isinstance(source, Unavailable):
        return source
    if key == "inception":
        return extractors.InceptionFeatures(source, device=device)
    if key == "clip_vit_b_32":
        return extractors.ClipFeatures(source, device=device)
    if key == "alexnet":
        return perceptual.LPIPSMetric(source, linear_path=config.weights.lpips_linear, device=device)
    if key == "vgg16":
        return perceptual.DISTSMetric(source, alpha_beta_path=config.weights.dists_alpha_beta, device=device)
    raise KeyError(key)
