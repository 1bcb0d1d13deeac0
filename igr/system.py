"""``IGRSystem``: the LightningModule. It only wires the parts of :class:`igr.models.IGRModel` into a training
step — encode the batch, drop conditions, add noise, ε-MSE — and an optimiser. Sampling lives in
:mod:`igr.sampling`; metrics in :mod:`igr.metrics`.
"""

from __future__ import annotations

import dataclasses

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
from igr.errors import IGRError
from igr.models import IGRModel, build_model
from igr.sampling import training_scheduler, training_target


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
                how the HQFT fine-tune starts from the coarse run (paper §3.3).
        """
        super().__init__()
        if isinstance(model, dict):  # from a checkpoint's hyper-parameters
            model = model_config_from_dict(model, where="checkpoint hyper-parameters")
        self.model_config = model or load_model_config(CONFIG_DIR / "model" / "tiny.yaml")
        self.diffusion = _typed(DiffusionConfig, diffusion)
        self.optim = _typed(OptimConfig, optim)
        self.sampling = _typed(SamplingConfig, sampling)
        # Plain dicts, so checkpoints describe the model without pickled classes; `igr export` rebuilds from them.
        self.save_hyperparameters(
            {
                "model": dataclasses.asdict(self.model_config),
                "diffusion": dataclasses.asdict(self.diffusion),
                "optim": dataclasses.asdict(self.optim),
                "sampling": dataclasses.asdict(self.sampling),
                "init_from": init_from,
            }
        )
        self.model: IGRModel = build_model(self.model_config, self.diffusion)
        for m in self.model.frozen_modules():
            m.requires_grad_(False)
        self.noise_scheduler = training_scheduler(self.diffusion)
        if init_from:
            load_trainable_weights(self.model, init_from)

    # --- loss ---------------------------------------------------------------------------------------------
    def diffusion_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        person, mask, garment = batch["person"], batch["mask"], batch["garment"]
        b, dev = person.shape[0], person.device
        z0 = self.model.vae.encode(garment, sample=True, generator=generator)  # (B,4,h,w) target latent
        inputs = self.model.encode_inputs(person, mask, list(batch["category"]))
        keep = torch.rand(b, device=dev, generator=generator) >= self.diffusion.condition_drop
        cond = self.model.conditions(inputs, keep)
        noise = torch.randn(z0.shape, device=dev, dtype=z0.dtype, generator=generator)
        t = torch.randint(0, self.diffusion.train_timesteps, (b,), device=dev, generator=generator)
        z_t = self.noise_scheduler.add_noise(z0, noise, t)
        pred = self.model.eps(z_t, t, cond)  # ε̂, v̂ or ẑ_0 (diffusion.prediction_type)
        return F.mse_loss(pred.float(), training_target(self.noise_scheduler, z0, noise, t).float())

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(batch)
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
        gen = torch.Generator(device=batch["person"].device).manual_seed(1000 + batch_idx)
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

    def configure_optimizers(self):
        opt = torch.optim.AdamW(
            self.trainable_parameters(),
            lr=self.optim.lr,
            betas=tuple(self.optim.betas),
            weight_decay=self.optim.weight_decay,
        )
        warmup = max(1, self.optim.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _typed(cls, value):
    if value is None:
        return cls()
    return cls(**value) if isinstance(value, dict) else value


def load_trainable_weights(model: IGRModel, source: str) -> None:
    """Copy GarmNet/denoiser(+adapter) weights from a Lightning checkpoint or a pipeline folder into ``model``."""
    from pathlib import Path

    from igr.export import load_checkpoint_state, read_pipeline_config
    from igr.weights_io import load_into, read_state_dict

    path = Path(source)
    if path.is_dir() and (path / "model.yaml").is_file():
        doc = read_pipeline_config(path)
        _check_parameterisation(model, doc.get("diffusion"), path)
        for name in ("garmnet", "denoiser"):
            module = getattr(model, name)
            if module is not None:
                load_into(module, read_state_dict(path / f"{name}.safetensors"), path / f"{name}.safetensors")
        return
    if not path.exists():
        raise IGRError(f"{path}: init_from checkpoint not found")
    state, hparams = load_checkpoint_state(path)
    _check_parameterisation(model, hparams.get("diffusion"), path)
    for name in ("garmnet", "denoiser"):
        module = getattr(model, name)
        if module is None:
            continue
        prefix = f"model.{name}."
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        load_into(module, part, f"{path} [{name}]")


def _check_parameterisation(model: IGRModel, source: dict | None, path) -> None:
    """Weights trained for one output parameterisation (ε, v, z_0; schedule) are wrong for another: refuse."""
    if not source:
        return
    ours, default = dataclasses.asdict(model.diffusion), dataclasses.asdict(DiffusionConfig())
    for key in ("prediction_type", "zero_terminal_snr"):
        theirs = source.get(key, default[key])  # older checkpoints predate the option: SD1.5's ε
        if theirs != ours[key]:
            raise IGRError(
                f"{path}: init_from weights were trained with diffusion.{key}={theirs}, this run has "
                f"{ours[key]}; set model.diffusion.{key} to match"
            )
