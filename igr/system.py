"""``IGRSystem``: the LightningModule. It only wires the parts of :class:`igr.models.IGRModel` into a training
step — encode the batch, drop conditions, add noise, ε-MSE — and an optimiser. Sampling lives in
:mod:`igr.sampling`; metrics in :mod:`igr.metrics`.

Precision and ranks, as a real run sees them (docs/design.md §6):

- Under DeepSpeed the parameters and the batch are bf16, buffers stay fp32 and no autocast runs. The frozen
  preprocessing computes in fp32 and each trainable part casts its inputs once (``GarmNet``/``GarmDenoiser``);
  noise, ``add_noise`` and the regression target are fp32.
- Each rank draws ε, t and the condition-drop mask from its own CPU ``torch.Generator`` seeded with the global
  seed (``seed_everything``) plus the global rank. The states of all ranks are saved in the checkpoint
  (``noise_rng``) and restored on resume, so a resumed run continues the stream it would have drawn.
- ``init_from`` is applied once, when a fit starts; a resumed run takes every weight from its own checkpoint and
  ``load_from_checkpoint`` never reads the ``init_from`` file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F

from igr.config import (
    CONFIG_DIR,
    DiffusionConfig,
    ModelConfig,
    OptimConfig,
    SamplingConfig,
    load_model_config,
    model_config_from_dict,
)
from igr.ds_checkpoint import is_deepspeed_folder
from igr.errors import IGRError
from igr.init_weights import check_parameterisation, load_trainable_weights
from igr.models import IGRModel, adapter, build_model
from igr.models.unet import base_unet_config
from igr.models.vae import effective_config
from igr.sampling import loss_weights, timestep_probabilities, training_scheduler, training_target

__all__ = ["Draws", "IGRSystem", "load_trainable_weights"]


@dataclass
class Draws:
    """The random draws of one training step (besides the VAE posterior sample)."""

    keep: torch.Tensor  # (B,) bool: False = every condition of that sample dropped (p = diffusion.condition_drop)
    noise: torch.Tensor  # (B,C,h,w) float32 ε
    t: torch.Tensor  # (B,) long, over the training timesteps (uniform unless diffusion.timestep_bias)
    keep_image: torch.Tensor | None = None  # (B,) bool: False = image embedding alone dropped (diffusion.image_drop)


class IGRSystem(L.LightningModule):
    def __init__(
        self,
        model: ModelConfig | None = None,
        diffusion: DiffusionConfig | None = None,
        optim: OptimConfig | None = None,
        sampling: SamplingConfig | None = None,
        init_from: str | None = None,
    ) -> None:
        """
        Args:
            model: architecture and weight paths (default: the embedded tiny config).
            diffusion: noise schedule and condition-drop probability.
            optim: AdamW settings (paper: lr 1e-5).
            sampling: DDIM steps and guidance used by validation sampling and metrics.
            init_from: start the trainable weights from a checkpoint (``.ckpt``) or exported pipeline folder —
                how the HQFT fine-tune starts from the coarse run (paper §3.3). Applied once, when a fresh fit
                starts (``setup``); a resume or ``load_from_checkpoint`` does not read it.
        """
        super().__init__()
        if isinstance(model, dict):  # from a checkpoint's hyper-parameters
            model = model_config_from_dict(model, where="checkpoint hyper-parameters")
        self.model_config = model or load_model_config(CONFIG_DIR / "model" / "tiny.yaml")
        self.diffusion = _typed(DiffusionConfig, diffusion)
        self.optim = _typed(OptimConfig, optim)
        self.sampling = _typed(SamplingConfig, sampling)
        self.model: IGRModel = build_model(self.model_config, self.diffusion)
        # Plain dicts, so checkpoints describe the model without pickled classes; `igr export` rebuilds from them.
        # vae: the autoencoder's own config, not the YAML's — a vae_path folder's latent statistics and scaling
        # factor live only there (its non-persistent buffers are not in the state dict), and an export that
        # rebuilt the YAML's autoencoder decoded every latent with the wrong mean and scale.
        model_dict = dataclasses.asdict(self.model_config)
        model_dict["vae"] = effective_config(self.model.vae.vae)
        # unet likewise: with sd_path (SD1.5, or the tiny world's pre-trained base) the folder's config is the truth
        model_dict["unet"] = base_unet_config(self.model.denoiser.unet)
        self.save_hyperparameters(
            {
                "model": model_dict,
                "diffusion": dataclasses.asdict(self.diffusion),
                "optim": dataclasses.asdict(self.optim),
                "sampling": dataclasses.asdict(self.sampling),
                "init_from": init_from,
            }
        )
        for m in self.model.frozen_modules():
            m.requires_grad_(False)
        self.noise_scheduler = training_scheduler(self.diffusion)
        self.timestep_probabilities = timestep_probabilities(self.diffusion)  # None: uniform t
        self.init_from = init_from
        self._init_from_missing = False
        self._init_from_applied = False
        self._resumed = False
        self.noise_generator: torch.Generator | None = None  # this rank's training stream (set in ``setup``)

    # --- start of a fit: init_from, per-rank noise stream --------------------------------------------------
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        if self.init_from and not self._init_from_applied:
            # Loaded here, before the strategy wraps or casts the module (DeepSpeed copies the weights into its
            # fp32 master copy when it starts). On a resume the checkpoint's weights replace these right after,
            # so there the file need not exist: whether it is missing is decided in on_train_start.
            if not Path(self.init_from).exists():
                self._init_from_missing = True
            elif is_deepspeed_folder(self.init_from):
                self._apply_deepspeed_init_from()
            else:
                self.apply_init_from()
        if self.noise_generator is None:
            self.noise_generator = torch.Generator().manual_seed(self.noise_seed())

    def apply_init_from(self) -> None:
        """Load ``init_from`` into the trainable parts now (once: ``setup`` then skips it). ``igr fit`` calls this
        before the run folder exists, so a refused or broken file leaves nothing behind.

        A DeepSpeed checkpoint folder is only checked here (complete, readable, trained with this run's
        parameterisation): converting one unpickles every optimizer shard (≈21 GB for the paper's model), so it
        is converted in ``setup``, once per node (:meth:`_apply_deepspeed_init_from`)."""
        if is_deepspeed_folder(self.init_from):
            from igr.export import deepspeed_trust_error, pickles_trusted, read_checkpoint

            hparams = read_checkpoint(self.init_from, mmap=True).get("hyper_parameters") or {}
            if not pickles_trusted():  # the conversion in setup unpickles: refuse now, before any run file
                raise deepspeed_trust_error(self.init_from)
            check_parameterisation(self.model, hparams.get("diffusion"), self.init_from)
            return
        load_trainable_weights(self.model, self.init_from)
        self._init_from_applied = True

    def _apply_deepspeed_init_from(self) -> None:
        """``init_from`` a DeepSpeed folder, converted once per node: local rank 0 consolidates it and writes the
        trainable parts (fp32 master weights; frozen ones from this run's own model) to a cache in the run folder, written atomically so nodes on
        a shared filesystem may write it alike; every rank waits at a barrier, loads the cache, and after a second
        barrier local rank 0 removes it."""
        from igr.atomic import atomic_file
        from igr.ds_checkpoint import frozen_parameter_names
        from igr.export import load_checkpoint_state, read_checkpoint

        trainer, source = self.trainer, Path(self.init_from)
        digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
        cache = Path(trainer.default_root_dir) / f".init_from-{digest}.pt"
        if trainer.local_rank == 0:
            print(f"converting DeepSpeed checkpoint {source} for init_from (once on this node)", file=sys.stderr)
            state, hparams = load_checkpoint_state(source)
            # zero_to_fp32 rebuilt the frozen parameters (GarmNet's unused tail) from bf16 copies: they never
            # trained, so this run's own, built from its weight files in fp32, are the exact ones
            frozen, own = set(frozen_parameter_names(read_checkpoint(source, mmap=True))), self.state_dict()
            parts = {
                k: own[k] if k in frozen and k in own else v
                for k, v in state.items()
                if k.startswith(("model.garmnet.", "model.denoiser."))
            }
            cache.parent.mkdir(parents=True, exist_ok=True)
            with atomic_file(cache) as f:
                torch.save({"state_dict": parts, "hyper_parameters": {"diffusion": hparams.get("diffusion")}}, f)
        trainer.strategy.barrier("igr_init_from_converted")
        try:
            load_trainable_weights(self.model, cache)
        except IGRError as exc:
            raise IGRError(f"{source}: init_from: {exc}") from exc
        trainer.strategy.barrier("igr_init_from_loaded")
        if trainer.local_rank == 0:
            cache.unlink(missing_ok=True)
        self._init_from_applied = True

    def noise_seed(self) -> int:
        """The global seed (``seed_everything``; 0 when unset) plus this process's global rank."""
        rank = self.trainer.global_rank if self._trainer is not None else 0
        return int(os.environ.get("PL_GLOBAL_SEED", 0)) + rank

    def on_train_start(self) -> None:
        if self._init_from_missing and not self._resumed:
            raise IGRError(f"{self.init_from}: init_from checkpoint not found")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Every rank runs this hook; rank 0 writes the file, so it carries every rank's stream.
        if self.noise_generator is None:
            return
        state = self.noise_generator.get_state().to(self.device)
        gathered = self.all_gather(state) if self._trainer is not None else state
        gathered = gathered if gathered.dim() == 2 else gathered[None]  # one process: no rank axis
        checkpoint["noise_rng"] = [g.cpu().clone() for g in gathered]  # own storage each (set_state needs it)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._resumed = True
        states = checkpoint.get("noise_rng")
        if not states:
            return  # a checkpoint from before per-rank streams: this rank starts afresh from its seed
        rank = self.trainer.global_rank if self._trainer is not None else 0
        if rank >= len(states):
            warnings.warn(
                f"checkpoint holds noise streams for {len(states)} ranks; rank {rank} starts a fresh one",
                stacklevel=2,
            )
            return
        if self.noise_generator is None:
            self.noise_generator = torch.Generator()
        # A copy with its own storage: set_state crashes on a view into a larger one (older checkpoints).
        self.noise_generator.set_state(states[rank].to("cpu", torch.uint8).clone())

    # --- loss ---------------------------------------------------------------------------------------------
    def draw(self, b: int, shape: tuple[int, ...], device: torch.device, generator: torch.Generator | None) -> Draws:
        """Condition-drop mask, ε and t for a batch of ``b``, drawn on the CPU (``generator`` is a CPU generator
        or None for the global RNG) and moved to ``device``: a seed draws the same numbers on any hardware."""
        keep = torch.rand(b, generator=generator) >= self.diffusion.condition_drop
        noise = torch.randn(shape, generator=generator, dtype=torch.float32)
        if self.timestep_probabilities is None:
            t = torch.randint(0, self.diffusion.train_timesteps, (b,), generator=generator)
        else:
            t = torch.multinomial(self.timestep_probabilities, b, replacement=True, generator=generator)
        keep_image = None
        if self.diffusion.image_drop > 0:  # drawn last and only when used: image_drop 0 leaves the stream as it was
            keep_image = (torch.rand(b, generator=generator) >= self.diffusion.image_drop).to(device)
        return Draws(keep.to(device), noise.to(device), t.to(device), keep_image)

    def diffusion_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        person, mask, garment = batch["person"], batch["mask"], batch["garment"]
        b, dev = person.shape[0], person.device
        z0 = self.model.vae.encode(garment, sample=True, generator=generator).float()  # (B,4,h,w) target latent
        inputs = self.model.encode_inputs(person, mask, list(batch["category"]))
        d = self.draw(b, tuple(z0.shape), dev, generator)
        cond = self.model.conditions(inputs, d.keep, d.keep_image)
        z_t = self.noise_scheduler.add_noise(z0, d.noise, d.t)  # fp32; the denoiser casts at its boundary
        pred = self.model.eps(z_t, d.t, cond)  # ε̂, v̂ or ẑ_0 (diffusion.prediction_type)
        target = training_target(self.noise_scheduler, z0, d.noise, d.t).float()
        if self.diffusion.loss_weighting == "none":
            return F.mse_loss(pred.float(), target)
        per_sample = (pred.float() - target).pow(2).flatten(1).mean(1)  # (B,)
        return (loss_weights(self.noise_scheduler, d.t, self.diffusion.snr_gamma) * per_sample).mean()

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch, generator=self.noise_generator)
        # Every rank takes the same decision, so DDP/DeepSpeed stop together; checkpoints already written
        # are left as they are (nothing is saved after a bad step).
        finite = bool(torch.isfinite(loss))
        if self._trainer is not None:
            finite = self.trainer.strategy.reduce_boolean_decision(finite, all=True)
        if not finite:
            raise FloatingPointError(
                f"non-finite training loss at step {self.global_step}; stopping. The last good checkpoint is the "
                "newest file in the run's checkpoints/ folder (lower optim.lr or check the data)."
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["person"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Fixed noise per batch index, so val loss curves compare across epochs and runs.
        gen = torch.Generator().manual_seed(1000 + batch_idx)
        loss = self.diffusion_loss(batch, generator=gen)
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["person"].shape[0])
        return loss

    @torch.no_grad()
    def restore(
        self,
        batch: dict,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Restored garments for a batch: (B,3,H,W) in [0,1] (used by metrics and image logging)."""
        return self.model.restore(
            batch["person"],
            batch["mask"],
            list(batch["category"]),
            num_inference_steps=num_inference_steps or self.sampling.steps,
            guidance_scale=self.sampling.guidance_scale if guidance_scale is None else guidance_scale,
            generator=generator,
            sampler=self.sampling.sampler,
            eta=self.sampling.eta,
        )

    # --- optimisation -------------------------------------------------------------------------------------
    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for m in self.model.trainable_modules() for p in m.parameters() if p.requires_grad]

    def parameter_groups(self) -> list[dict]:
        """AdamW groups, one per part with its ``optim.lr_scale`` multiplier (no scales: one group, the paper's)."""
        scales = dict(self.optim.lr_scale)
        if not scales:
            return [{"params": self.trainable_parameters()}]
        parts: dict[str, list[torch.nn.Parameter]] = {}
        for part, module in (("garmnet", self.model.garmnet), ("denoiser", self.model.denoiser)):
            if module is None:
                continue
            # the whole module, as trainable_parameters() takes it: a parameter outside .unet still gets a group
            for name, p in module.named_parameters():
                if p.requires_grad:
                    in_adapter = part == "denoiser" and adapter.is_adapter_parameter(name.removeprefix("unet."))
                    parts.setdefault("adapter" if in_adapter else part, []).append(p)
        missing = sorted(set(scales) - set(parts))
        if missing:
            raise IGRError(f"optim.lr_scale: this model trains no {', '.join(missing)} parameters")
        return [{"params": ps, "lr": self.optim.lr * scales.get(key, 1.0), "name": key} for key, ps in parts.items()]

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.parameter_groups(),
            lr=self.optim.lr,
            betas=tuple(self.optim.betas),
            weight_decay=self.optim.weight_decay,
            # One multi-tensor update instead of ~10 small kernels per parameter tensor: torch picks that by
            # itself only on CUDA; on CPU the per-tensor loop took 0.053 s of a 0.39 s tiny-world step.
            foreach=True,
        )
        total = self.trainer.max_steps if self._trainer is not None else -1
        if self.optim.decay != "constant" and total <= 0:
            raise IGRError(f"optim.decay: {self.optim.decay} needs trainer.max_steps > 0 (it decays to 0 there)")
        warmup, decay = self.optim.warmup_steps, self.optim.decay
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warmup, decay, total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def lr_factor(step: int, warmup_steps: int, decay: str, total_steps: int) -> float:
    """Multiplier on optim.lr at optimiser step ``step``: linear warm-up, then constant or cosine to 0."""
    warm = min(1.0, (step + 1) / max(1, warmup_steps))
    if decay == "constant":
        return warm
    span = max(1, total_steps - warmup_steps)
    done = min(1.0, max(0, step - warmup_steps) / span)
    return min(warm, 0.5 * (1.0 + math.cos(math.pi * done)))


def _typed(cls, value):
    if value is None:
        return cls()
    if isinstance(value, dict):
        value = dict(value)
        if cls is OptimConfig:
            value.pop("max_grad_norm", None)  # checkpoints from before clipping moved to trainer.gradient_clip_val
        return cls(**value)
    return value
