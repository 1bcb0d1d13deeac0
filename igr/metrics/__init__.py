"""Evaluation metrics (docs/design.md §5): a feature extractor × a statistic, each usable and testable alone.

Statistics: :func:`frechet_distance`, :func:`kernel_distance` (clean-fid's estimators, seeded).
Paired scores: :func:`ssim_pinned` (the paper's SSIM), :func:`ssim_rgb`, LPIPS and DISTS
(:mod:`igr.metrics.perceptual`). Extractors: Inception and CLIP (:mod:`igr.metrics.extractors`).
:class:`MetricSuite` accumulates and computes them all; :mod:`igr.metrics.report` writes the tables;
:class:`igr.metrics.callback.MetricsCallback` runs them during validation.
"""

from igr.metrics.config import MetricsConfig
from igr.metrics.ssim import ssim_pinned, ssim_rgb
from igr.metrics.stats import frechet_distance, frechet_distance_from_stats, kernel_distance
from igr.metrics.suite import RANDOM_SUFFIX, MetricSuite

__all__ = [
    "RANDOM_SUFFIX",
    "MetricSuite",
    "MetricsConfig",
    "frechet_distance",
    "frechet_distance_from_stats",
    "kernel_distance",
    "ssim_pinned",
    "ssim_rgb",
]
