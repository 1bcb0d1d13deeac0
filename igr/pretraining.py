"""What the tiny world's small pre-trainings share (its VAE, CLIP encoder, base UNet and the garment classifier
of the metrics): the progress bar and the learning-rate schedule."""

from __future__ import annotations

import numpy as np
import torch
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


def step_progress(title: str, metric: str, disable: bool = False) -> Progress:
    """The progress bar of the tiny world's pre-trainings: steps done, the running ``metric`` field, times."""
    return Progress(
        TextColumn(title), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn(f"{metric} {{task.fields[{metric}]:.4f}}"), TimeElapsedColumn(), TimeRemainingColumn(),
        disable=disable,
    )


def warmup_cosine(opt: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 5 % of ``steps``, then cosine decay to 0 (the tiny world's pre-trainings)."""
    warmup = max(1, steps // 20)
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda i: min((i + 1) / warmup, 0.5 * (1 + np.cos(np.pi * min(i, steps) / steps)))
    )
