"""``MetricsCallback``: restore a fixed subset of validation batches each validation epoch and log metrics.

On every rank it takes the first ``num_batches`` batches of validation dataloader ``dataloader_idx`` (a
fixed subset as long as the validation loader is deterministic, as a validation split should be), calls
``pl_module.restore(batch, num_inference_steps=..., guidance_scale=..., generator=...)`` — float
(B, 3, H, W) in [0, 1] — and scores the result against ``batch[gt_key]``. Each image's noise comes from its
own generator seeded by its key (``igr.sampling.image_generators``, as ``igr eval`` and the ``ImageLogger``),
so a sample's score does not depend on its batch, its rank or the number of ranks; a batch without
``batch[key_key]`` gets one generator, seeded ``seed + i·w + r`` for batch ``i`` on rank ``r`` of ``w``. At the
end of the epoch the per-sample scores and features of all ranks are gathered (``all_gather_object``: exact
counts, no padding) and samples whose ``batch[key_key]`` was already seen (a distributed sampler pads the last
batch with repeats) are counted once. Every rank then computes the same numbers and logs them as
``<prefix><metric>``; a metric without weights is warned about once and not logged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn

from igr.metrics.config import MetricsConfig
from igr.metrics.images import to_uint8
from igr.metrics.suite import MetricSuite
from igr.sampling import image_generators


class MetricsCallback(L.Callback):
    def __init__(
        self,
        metrics_config: str | Path | MetricsConfig | None = None,
        num_batches: int = 4,
        seed: int = 0,
        num_inference_steps: int = 25,
        guidance_scale: float = 1.5,
        every_n_epochs: int = 1,
        gt_key: str = "garment",
        gt_range: tuple[float, float] = (-1.0, 1.0),
        key_key: str = "key",
        prefix: str = "val/",
        dataloader_idx: int = 0,
        allow_random_backbone: bool = False,  # tests only: labelled random-init backbones
    ) -> None:
        super().__init__()
        if num_batches < 1 or every_n_epochs < 1:
            raise ValueError("num_batches and every_n_epochs must be >= 1")
        if isinstance(metrics_config, MetricsConfig):
            config = metrics_config
        else:
            config = MetricsConfig.load(metrics_config)
        # Validation images may be any size (e.g. the tiny config); the report records the size used.
        self.config = dataclasses.replace(
            config,
            resolution=None,
            allow_random_backbone=allow_random_backbone or config.allow_random_backbone,
        )
        self.num_batches = num_batches
        self.seed = seed
        self.num_inference_steps = num_inference_steps
        self.guidance_scale = guidance_scale
        self.every_n_epochs = every_n_epochs
        self.gt_key = gt_key
        self.gt_range = tuple(gt_range)
        self.key_key = key_key
        self.prefix = prefix
        self.dataloader_idx = dataloader_idx
        self._suite: MetricSuite | None = None
        self._warned: set[str] = set()
        self.last_results: dict[str, float | str] = {}
        self.last_protocol: dict[str, Any] = {}

    def _active(self, trainer: L.Trainer) -> bool:
        return not trainer.sanity_checking and trainer.current_epoch % self.every_n_epochs == 0

    def _get_suite(self, pl_module: L.LightningModule) -> MetricSuite:
        if self._suite is None:
            self._suite = MetricSuite(self.config, real="gt", device=pl_module.device)
        return self._suite

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._suite is not None:
            self._suite.reset()

    @torch.no_grad()
    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if (
            not self._active(trainer)
            or dataloader_idx != self.dataloader_idx
            or batch_idx >= self.num_batches
        ):
            return
        suite = self._get_suite(pl_module)
        keys = batch.get(self.key_key) if isinstance(batch, dict) else None
        if keys is not None:
            keys = [str(k) for k in keys]
            generator = image_generators(self.seed, keys)
        else:
            generator = torch.Generator(device=pl_module.device)
            generator.manual_seed(self.seed + batch_idx * trainer.world_size + trainer.global_rank)
        pred = pl_module.restore(
            batch,
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            generator=generator,
        )
        pred_u8 = to_uint8(pred, (0.0, 1.0), name="restore() output")
        gt = batch.get(self.gt_key) if isinstance(batch, dict) else None
        gt_u8 = None if gt is None else to_uint8(gt, self.gt_range, name=f"batch['{self.gt_key}'] (gt_range)")
        suite.update(pred_u8, gt_u8, keys=keys)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active(trainer):
            return
        # Every rank takes part in the gather, even one that saw no batch, or the collective would hang.
        state = self._suite.local_state() if self._suite is not None else None
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered: list[Any] = [None] * torch.distributed.get_world_size()
            torch.distributed.all_gather_object(gathered, state)
        else:
            gathered = [state]
        states = [s for s in gathered if s is not None and s["n"] > 0]
        if not states:
            return
        if len(states) > 1 and any(s["keys"] is None for s in states):
            msg = f"MetricsCallback: no batch['{self.key_key}'], so padded repeats cannot be de-duplicated"
            self._warn_once("keys", msg)
        suite = self._get_suite(pl_module)
        suite.load_states(states)
        results = suite.compute()
        self.last_results, self.last_protocol = results, suite.protocol()
        for name, value in results.items():
            if isinstance(value, str):
                self._warn_once(name, f"MetricsCallback: {name} not logged: {value}")
                continue
            # Every rank holds the same gathered data and value; sync_dist only quiets Lightning's check.
            pl_module.log(self.prefix + name, value, sync_dist=True)
        pl_module.log(self.prefix + "metrics_num_samples", float(suite.num_samples()), sync_dist=True)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message)
