"""Sampling as a function of a denoise callable (DDIM + classifier-free guidance), independent of Lightning.

``sample(denoise_fn, z_T, scheduler, steps)`` runs any diffusers scheduler over a function ``(z_t, t) → ε̂`` (or
v̂ / ẑ_0: whatever ``DiffusionConfig.prediction_type`` the scheduler was built with; guidance is linear in all three).
Guidance (paper eq. 2, ε̃ = ε(∅) + s·(ε(c) − ε(∅))) wraps a model function into such a callable, either with both
branches in one batched call (default) or as two calls (kept for the benchmark's comparison).
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Sequence

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from igr.config import DiffusionConfig

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (z_t (B,C,h,w), t (B,)) -> eps (B,C,h,w)


def image_seed(seed: int, key: str) -> int:
    """The seed of the image named ``key`` in a request with seed ``seed``: ``seed + crc32(key)`` (mod 2⁶³)."""
    return (int(seed) + zlib.crc32(str(key).encode("utf-8"))) % 2**63


def image_generators(seed: int, keys: Sequence[str]) -> list[torch.Generator]:
    """One CPU generator per image, seeded by :func:`image_seed` from the image's key (the sample key in shards,
    the file stem for ``igr restore``). An image's noise then depends neither on the other images of the batch,
    nor on the batch size or order, nor on the device (CPU generators; the noise is moved). ``igr restore``,
    ``igr eval`` and the training callbacks seed this way; pass ``image_generators(seed, keys)`` as the
    pipeline's ``generator`` to get the same images."""
    return [torch.Generator().manual_seed(image_seed(seed, k)) for k in keys]


def _schedule_kwargs(cfg: DiffusionConfig) -> dict:
    return dict(
        num_train_timesteps=cfg.train_timesteps,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        beta_schedule=cfg.beta_schedule,
        prediction_type=cfg.prediction_type,
        rescale_betas_zero_snr=cfg.zero_terminal_snr,
        timestep_spacing=cfg.timestep_spacing,
    )


def training_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    """SD1.5's forward process (``add_noise``)."""
    return DDPMScheduler(**_schedule_kwargs(cfg), clip_sample=False)


def training_target(
    scheduler: DDPMScheduler, z0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the network regresses for the scheduler's prediction type: ε, v = α·ε − σ·z_0, or z_0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(z0, noise, t)
    if kind == "sample":
        return z0
    raise ValueError(f"unknown prediction_type '{kind}'")


def loss_weights(scheduler: DDPMScheduler, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Truncated-SNR weights (B,) on the squared error of the scheduler's prediction type: the z0 error weighted by
    clamp(SNR, 1, γ), written in the prediction's own units
    (|ẑ0 − z0|² = |ε̂ − ε|²/SNR = |v̂ − v|²/(SNR + 1))."""
    ab = scheduler.alphas_cumprod.to(t.device)[t].double()
    snr = ab / (1 - ab)
    weight = snr.clamp(1.0, gamma)
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        weight = weight / snr
    elif kind == "v_prediction":
        weight = weight / (snr + 1)
    elif kind != "sample":
        raise ValueError(f"unknown prediction_type '{kind}'")
    return weight.float()


def timestep_probabilities(cfg: DiffusionConfig) -> torch.Tensor | None:
    """(T,) probabilities of drawing each training t, or None for uniform (``timestep_bias: none``). "later" /
    "earlier": the last / first ``round(portion · T)`` timesteps weigh ``multiplier``, the others 1."""
    if cfg.timestep_bias == "none":
        return None
    n = cfg.train_timesteps
    k = max(1, round(cfg.timestep_bias_portion * n))
    weights = torch.ones(n, dtype=torch.float64)
    favoured = slice(n - k, n) if cfg.timestep_bias == "later" else slice(0, k)
    weights[favoured] = cfg.timestep_bias_multiplier
    return weights / weights.sum()


def predicted_z0(
    scheduler: DDPMScheduler, pred: torch.Tensor, z_t: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The clean latent a prediction implies at training timestep ``t`` (B,): ẑ_0 itself, α·z_t − σ·v̂, or
    (z_t − σ·ε̂)/α."""
    ab = scheduler.alphas_cumprod.to(z_t.device)[t].float().view(-1, *([1] * (z_t.dim() - 1)))
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    kind = scheduler.config.prediction_type
    if kind == "sample":
        return pred
    if kind == "v_prediction":
        return alpha * z_t - sigma * pred
    if kind == "epsilon":
        return (z_t - sigma * pred) / alpha
    raise ValueError(f"unknown prediction_type '{kind}'")


def inference_scheduler(cfg: DiffusionConfig, name: str = "ddim"):
    """A fresh scheduler per call (multistep solvers keep state). DDIM settings are SD1.5's."""
    if name == "ddim":
        return DDIMScheduler(
            **_schedule_kwargs(cfg), clip_sample=False, set_alpha_to_one=False, steps_offset=1
        )
    if name in ("dpmsolver++", "dpm"):
        return DPMSolverMultistepScheduler(
            **_schedule_kwargs(cfg), algorithm_type="dpmsolver++", steps_offset=1
        )
    raise ValueError(f"unknown sampler '{name}' (expected ddim or dpmsolver++)")


def guided(model_fn: DenoiseFn, guidance_scale: float) -> DenoiseFn:
    """Batched CFG: ``model_fn`` evaluates inputs whose first half carries the conditions and second half the
    dropped ones, so both branches run as one (2B) call."""

    def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_c, eps_u = model_fn(torch.cat([z, z]), torch.cat([t, t])).chunk(2)
        return eps_u + guidance_scale * (eps_c - eps_u)

    return denoise


def guided_sequential(cond_fn: DenoiseFn, uncond_fn: DenoiseFn, guidance_scale: float) -> DenoiseFn:
    """Two-call CFG; the same numbers as :func:`guided` up to float rounding."""

    def denoise(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps_c, eps_u = cond_fn(z, t), uncond_fn(z, t)
        return eps_u + guidance_scale * (eps_c - eps_u)

    return denoise


@torch.no_grad()
def sample(
    denoise_fn: DenoiseFn,
    z_T: torch.Tensor,
    scheduler,
    steps: int,
    generator: torch.Generator | list[torch.Generator] | None = None,
    eta: float = 0.0,
    progress: Callable | None = None,
    callback: Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor | None] | None = None,
) -> torch.Tensor:
    """Run ``steps`` scheduler steps from noise ``z_T`` (B,C,h,w) to a clean latent z_0, with any diffusers
    scheduler: ``eta`` and ``generator`` go to ``scheduler.step`` where it takes them (DDIM: both; DPM-Solver++:
    the generator). ``callback(i, t, z)`` runs after step ``i`` and may return replacement latents."""
    scheduler.set_timesteps(steps, device=z_T.device)
    z = z_T * scheduler.init_noise_sigma
    params = set(inspect.signature(scheduler.step).parameters)
    step_kwargs = {k: v for k, v in (("eta", eta), ("generator", generator)) if k in params}
    timesteps = scheduler.timesteps
    for i, t in enumerate(progress(timesteps) if progress else timesteps):
        t_batch = t.expand(z.shape[0]).to(z.device)
        eps = denoise_fn(scheduler.scale_model_input(z, t), t_batch)
        z = scheduler.step(eps, t, z, **step_kwargs).prev_sample
        if callback is not None:
            replaced = callback(i, t, z)
            z = z if replaced is None else replaced
    return z
