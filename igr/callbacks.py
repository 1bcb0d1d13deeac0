"""Training callbacks: throughput and gradient-norm logging, image grids, EMA, and the non-finite-loss guard."""

from __future__ import annotations

import copy
import time

import lightning as L
import torch
from lightning.pytorch.utilities import grad_norm, rank_zero_only


class ThroughputLogger(L.Callback):
    """Logs ``train/samples_per_sec`` (global, all ranks) and ``train/grad_norm`` (before clipping)."""

    def __init__(self) -> None:
        self._last: float | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._last = self._last or time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if self._last is not None and now > self._last:
            samples = batch["person"].shape[0] * trainer.world_size
            pl_module.log("train/samples_per_sec", samples / (now - self._last), batch_size=1)
        self._last = now

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        norms = grad_norm(pl_module, norm_type=2)
        if "grad_2.0_norm_total" in norms:
            pl_module.log("train/grad_norm", norms["grad_2.0_norm_total"], batch_size=1)


class ImageLogger(L.Callback):
    """Every ``every_n_steps``: restore a fixed validation batch and log a grid person | mask | restored | target."""

    def __init__(
        self, every_n_steps: int = 500, num_images: int = 4, steps: int | None = None, seed: int = 0
    ) -> None:
        self.every_n_steps = every_n_steps
        self.num_images = num_images
        self.steps = steps
        self.seed = seed
        self._batch: dict | None = None

    def _fixed_batch(self, trainer) -> dict | None:
        if self._batch is None:
            loaders = trainer.val_dataloaders
            if loaders is None:
                return None
            loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
            batch = next(iter(loader), None)
            if batch is None:
                return None
            n = self.num_images
            self._batch = {k: v[:n] for k, v in batch.items()}
        return self._batch

    @rank_zero_only
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps:
            return
        self.log_grid(trainer, pl_module, step)

    def log_grid(self, trainer, pl_module, step: int) -> None:
        fixed = self._fixed_batch(trainer)
        logger = trainer.logger
        if fixed is None or logger is None or not hasattr(logger.experiment, "add_image"):
            return
        dev = pl_module.device
        b = {k: v.to(dev) if torch.is_tensor(v) else v for k, v in fixed.items()}
        was_training = pl_module.training
        pl_module.eval()
        gen = torch.Generator(device=dev).manual_seed(self.seed)
        restored = pl_module.restore(b, num_inference_steps=self.steps, generator=gen)
        pl_module.train(was_training)
        logger.experiment.add_image("val/person|mask|restored|target", make_grid(b, restored), step)


def make_grid(batch: dict, restored: torch.Tensor) -> torch.Tensor:
    """(3, B*H, 4*W) grid in [0,1]: one row per sample, columns person | mask | restored | target."""
    person = (batch["person"].float().cpu() + 1) / 2
    mask = batch["mask"].float().cpu().expand_as(person)
    cols = [person, mask, restored.float().cpu()]
    if "garment" in batch:
        cols.append((batch["garment"].float().cpu() + 1) / 2)
    rows = torch.cat(cols, dim=-1)  # (B,3,H,k*W)
    return torch.cat(list(rows), dim=-2).clamp(0, 1)


class EMA(L.Callback):
    """Exponential moving average of the trainable weights (off by default, as in the paper).

    The averaged weights replace the live ones during validation and are stored in checkpoints under
    ``ema_state`` so ``igr export --ema`` can write them.
    """

    def __init__(self, decay: float = 0.999) -> None:
        self.decay = decay
        self.shadow: dict[str, torch.Tensor] | None = None
        self._backup: dict[str, torch.Tensor] | None = None

    def _params(self, pl_module) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.shadow is None:
            self.shadow = {n: p.detach().clone() for n, p in self._params(pl_module).items()}

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        for n, p in self._params(pl_module).items():
            self.shadow[n].lerp_(p.detach(), 1 - self.decay)

    def _swap_in(self, pl_module) -> None:
        params = self._params(pl_module)
        self._backup = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.shadow[n])

    def _swap_out(self, pl_module) -> None:
        with torch.no_grad():
            for n, p in self._params(pl_module).items():
                p.copy_(self._backup[n])
        self._backup = None

    def on_validation_start(self, trainer, pl_module) -> None:
        if self.shadow is not None and not trainer.sanity_checking:
            self._swap_in(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._backup is not None:
            self._swap_out(pl_module)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        self.decay = state["decay"]
        self.shadow = state["shadow"]

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.shadow is not None:
            checkpoint["ema_state"] = {k: v.detach().cpu() for k, v in self.shadow.items()}

    def copy_into(self, pl_module) -> L.LightningModule:
        """A copy of the module carrying the averaged weights."""
        clone = copy.deepcopy(pl_module)
        with torch.no_grad():
            for n, p in self._params(clone).items():
                p.copy_(self.shadow[n])
        return clone
