"""Training callbacks: throughput and gradient-norm logging, image grids, EMA, and the non-finite-loss guard."""

from __future__ import annotations

import copy
import time

import lightning as L
import torch
from diffusers.training_utils import EMAModel
from lightning.pytorch.utilities import rank_zero_only

from igr.sampling import image_generators


def deepspeed_engine(trainer):
    """The DeepSpeed engine training the module, or None under any other strategy."""
    engine = getattr(trainer.strategy, "deepspeed_engine", None)
    return engine if callable(getattr(engine, "get_global_grad_norm", None)) else None


class ThroughputLogger(L.Callback):
    """Logs ``train/samples_per_sec`` (global, all ranks) and ``train/grad_norm`` (before clipping).

    Under DeepSpeed the gradients are not in ``p.grad``: ZeRO-2 reduces them into partitioned buffers and clears
    ``p.grad`` during backward, so a norm over ``p.grad`` reads nothing or one rank's leftovers. The engine's global
    norm is computed inside its optimizer step, so it is read after the step (``on_train_batch_end``), and only
    when the step was applied (not between accumulation boundaries, not on an fp16 overflow)."""

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
        engine = deepspeed_engine(trainer)
        if engine is not None and engine.was_step_applied():
            norm = engine.get_global_grad_norm()  # None when the ZeRO config turns the norm off
            if norm is not None:
                pl_module.log("train/grad_norm", float(norm), batch_size=1)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        if deepspeed_engine(trainer) is not None:
            return  # logged after the step, from the engine
        # One fused norm over all gradients, as gradient clipping computes it. Lightning's grad_norm() builds a
        # named norm per parameter: ~16 ms of a 0.32 s tiny-model step on CPU (profiled, docs/tiny-world.md round 9).
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("train/grad_norm", torch.nn.utils.get_total_norm(grads, 2.0), batch_size=1)


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
        keys = b.get("key") or [str(i) for i in range(len(b["person"]))]
        gens = image_generators(self.seed, keys)  # per image, on the CPU (igr.sampling)
        restored = pl_module.restore(b, num_inference_steps=self.steps, generator=gens)
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


class _ConstantDecayEMA(EMAModel):
    """EMAModel without warm-up: every update, the first included, uses ``decay`` (diffusers' schedule returns 0
    for the first update and ramps up from there)."""

    def get_decay(self, optimization_step: int) -> float:
        return self.decay


class EMA(L.Callback):
    """Exponential moving average of the trainable weights (off by default, as in the paper), with diffusers'
    :class:`~diffusers.training_utils.EMAModel` doing the arithmetic.

    - The shadow is fp32 whatever the parameters' dtype: under bf16 (DeepSpeed) an update of weight 1 − 0.999
      is below bf16's resolution near 1 and would be lost.
    - It steps once per optimizer step (``trainer.global_step`` advanced), not per micro-batch, so
      ``accumulate_grad_batches`` does not change the averaging horizon.
    - Warm-up (``warmup=True``, diffusers' schedule): the first update copies the weights and update k > 1 uses
      min(decay, k/(9+k)), so the shadow is not dominated by the starting weights. ``warmup=False`` uses
      ``decay`` from the first update.

    The averaged weights replace the live ones during validation and are stored in checkpoints under
    ``ema_state`` (name → fp32 tensor), which ``igr export --ema`` writes into the pipeline folder.
    """

    def __init__(self, decay: float = 0.999, warmup: bool = True, foreach: bool = False) -> None:
        """``foreach``: update the shadow with fused multi-tensor ops (diffusers' ``foreach``). On CPU that saves
        ~10 ms of the tiny model's 0.32 s step; it briefly holds a full-size fp32 copy of the difference, so it is
        off by default (the paper-size model's 1.7 B trainable weights would need another 7 GB)."""
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay={decay}: expected 0 <= decay < 1")
        self.decay = decay
        self.warmup = warmup
        self.foreach = foreach
        self.ema = None  # diffusers EMAModel, built at fit start
        self._names: list[str] = []
        self._last_step: int | None = None
        self._pending: dict | None = None  # state restored from a checkpoint before the shadow exists
        self._swapped = False

    @staticmethod
    def _params(pl_module) -> dict[str, torch.nn.Parameter]:
        return {n: p for n, p in pl_module.named_parameters() if p.requires_grad}

    def _build(self, pl_module) -> None:
        params = self._params(pl_module)
        self._names = list(params)
        cls = EMAModel if self.warmup else _ConstantDecayEMA
        # cloned: an fp32 shadow
        self.ema = cls([p.detach().float() for p in params.values()], decay=self.decay, foreach=self.foreach)

    def on_fit_start(self, trainer, pl_module) -> None:
        if self.ema is None:
            self._build(pl_module)
        if self._pending is not None:
            self._restore(self._pending)
            self._pending = None
        self._last_step = trainer.global_step

    @torch.no_grad()
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._last_step:  # a micro-batch of an accumulation: no optimizer step yet
            return
        self._last_step = trainer.global_step
        self.ema.step(self._params(pl_module).values())

    # --- validation with the averaged weights -------------------------------------------------------------
    def on_validation_start(self, trainer, pl_module) -> None:
        if self.ema is not None and not trainer.sanity_checking:
            params = list(self._params(pl_module).values())
            self.ema.store(params)
            self.ema.copy_to(params)
            self._swapped = True

    def on_validation_end(self, trainer, pl_module) -> None:
        if self._swapped:
            self.ema.restore(list(self._params(pl_module).values()))
            self._swapped = False

    # --- checkpoints: the shadow once, by name (ema_state); the schedule in the callback state ------------
    def shadow(self) -> dict[str, torch.Tensor]:
        """Parameter name → fp32 averaged tensor."""
        return dict(zip(self._names, self.ema.shadow_params)) if self.ema is not None else {}

    def state_dict(self) -> dict:
        if self.ema is None:
            return {"decay": self.decay, "warmup": self.warmup}
        state = {k: v for k, v in self.ema.state_dict().items() if k != "shadow_params"}
        return {**state, "warmup": self.warmup}

    def load_state_dict(self, state: dict) -> None:
        self._pending = {**(self._pending or {}), "callback": dict(state)}
        if self.ema is not None:  # DeepSpeed restores after fit start
            self._restore(self._pending)
            self._pending = None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if self.ema is not None:
            checkpoint["ema_state"] = {k: v.detach().cpu() for k, v in self.shadow().items()}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        if "ema_state" in checkpoint:
            self._pending = {**(self._pending or {}), "shadow": checkpoint["ema_state"]}
            if self.ema is not None:  # DeepSpeed restores after fit start
                self._restore(self._pending)
                self._pending = None

    def _restore(self, pending: dict) -> None:
        shadow = pending.get("shadow")
        if shadow is not None:
            missing = [n for n in self._names if n not in shadow]
            if missing:
                raise ValueError(f"checkpoint EMA state lacks {len(missing)} parameter(s), e.g. {missing[0]}")
            device = self.ema.shadow_params[0].device if self.ema.shadow_params else None
            self.ema.shadow_params = [shadow[n].to(device, torch.float32, copy=True) for n in self._names]
        cb = pending.get("callback") or {}
        if "optimization_step" in cb:
            self.ema.optimization_step = int(cb["optimization_step"])

    def copy_into(self, pl_module) -> L.LightningModule:
        """A copy of the module carrying the averaged weights."""
        clone = copy.deepcopy(pl_module)
        params = self._params(clone)
        with torch.no_grad():
            for n, v in self.shadow().items():
                params[n].copy_(v)
        return clone
