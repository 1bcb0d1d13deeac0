"""Sampling is a function of a denoise callable: DDIM, and CFG batched or sequential."""

from __future__ import annotations

import pytest
import torch

from igr.config import DiffusionConfig
from igr.errors import IGRError
from igr.sampling import (
    guided,
    guided_sequential,
    inference_scheduler,
    loss_weights,
    predicted_z0,
    sample,
    training_scheduler,
    training_target,
)


def _toy_model(cond_scale):
    """ε(z; c) = a_c · z with a different a for the conditional and unconditional halves."""

    def fn(z, t):
        half = z.shape[0] // 2
        scale = torch.tensor([cond_scale] * half + [0.3] * (z.shape[0] - half)).view(-1, 1, 1, 1)
        return scale * z

    return fn


def test_batched_and_sequential_guidance_agree():
    z, t = torch.randn(3, 4, 8, 6), torch.full((3,), 500)
    batched = guided(_toy_model(0.9), 1.5)(z, t)
    sequential = guided_sequential(lambda z, t: 0.9 * z, lambda z, t: 0.3 * z, 1.5)(z, t)
    torch.testing.assert_close(batched, sequential)
    torch.testing.assert_close(batched, (0.3 + 1.5 * (0.9 - 0.3)) * z)


def test_ddim_sampling_calls_denoiser_once_per_step_and_is_deterministic():
    calls = []

    def denoise(z, t):
        calls.append(int(t[0]))
        return torch.zeros_like(z)

    z_T = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(0))
    out = sample(denoise, z_T, inference_scheduler(DiffusionConfig(), "ddim"), 25)
    assert len(calls) == 25 and calls == sorted(calls, reverse=True)
    again = sample(denoise, z_T, inference_scheduler(DiffusionConfig(), "ddim"), 25)
    assert torch.equal(out, again)
    # with ε̂ = 0 DDIM (η = 0) rescales z_T by sqrt(ᾱ) ratios: finite and not the input
    assert torch.isfinite(out).all() and not torch.equal(out, z_T)


def test_dpm_solver_runs():
    z_T = torch.randn(1, 4, 8, 6)
    out = sample(lambda z, t: 0.1 * z, z_T, inference_scheduler(DiffusionConfig(), "dpmsolver++"), 15)
    assert out.shape == z_T.shape and torch.isfinite(out).all()


PARAMETERISATIONS = [
    DiffusionConfig(),  # SD1.5 / the paper: ε on the scaled-linear schedule, leading DDIM spacing
    DiffusionConfig(prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing"),
    DiffusionConfig(prediction_type="sample", zero_terminal_snr=True, timestep_spacing="trailing"),
]


@pytest.mark.parametrize("cfg", PARAMETERISATIONS, ids=lambda c: c.prediction_type)
@pytest.mark.parametrize("sampler", ["ddim", "dpmsolver++"])
def test_oracle_denoiser_recovers_the_clean_latent(cfg, sampler):
    """A network that outputs exactly the training target for a known z_0 makes the sampler land on z_0: the
    training target and the scheduler's reading of the network output use the same parameterisation."""
    train = training_scheduler(cfg)
    z0 = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(1))
    acp = train.alphas_cumprod

    def oracle(z_t, t):
        a, s = acp[t].sqrt().view(-1, 1, 1, 1), (1 - acp[t]).sqrt().view(-1, 1, 1, 1)
        noise = (z_t - a * z0) / s  # the ε that explains z_t
        return training_target(train, z0, noise, t)

    z_T = torch.randn(2, 4, 8, 6, generator=torch.Generator().manual_seed(2))
    out = sample(oracle, z_T, inference_scheduler(cfg, sampler), 10)
    # SD1.5's DDIM (set_alpha_to_one=False) stops at ᾱ_0 = 0.99915, leaving √(1-ᾱ_0) ≈ 0.03 of noise; a wrong
    # parameterisation misses by O(1) (z_0 ~ N(0, 1)).
    assert float((out - z0).abs().mean()) < (0.04 if sampler == "ddim" else 2e-3)


def test_zero_terminal_snr_reaches_pure_noise_and_v_target():
    cfg = DiffusionConfig(prediction_type="v_prediction", zero_terminal_snr=True, timestep_spacing="trailing")
    sched = training_scheduler(cfg)
    assert float(sched.alphas_cumprod[-1]) < 1e-6  # SD1.5's schedule stops at ᾱ_T ≈ 0.0047
    assert float(training_scheduler(DiffusionConfig()).alphas_cumprod[-1]) > 1e-3
    z0, noise, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0, 500, 999])
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    torch.testing.assert_close(training_target(sched, z0, noise, t), a * noise - s * z0)
    ddim = inference_scheduler(cfg)
    ddim.set_timesteps(25)
    assert int(ddim.timesteps[0]) == 999  # trailing spacing starts sampling at the pure-noise step


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_the_exact_target_implies_the_clean_latent(kind):
    """ε, v and z_0 written out by hand from z_t = α·z_0 + σ·ε: each one, fed back, gives z_0 at every t."""
    sched = training_scheduler(DiffusionConfig(prediction_type=kind))
    z0, noise, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0, 500, 999])
    a = sched.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - sched.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    z_t = a * z0 + s * noise
    exact = {"epsilon": noise, "v_prediction": a * noise - s * z0, "sample": z0}[kind]
    torch.testing.assert_close(predicted_z0(sched, exact, z_t, t), z0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_truncated_snr_weights_the_z0_error_by_the_clamped_snr_in_every_parameterisation(kind):
    """An arbitrary wrong prediction: its weighted squared error equals clamp(SNR, 1, γ) times the squared error of
    the z0 it implies, z0 and SNR written by hand from z_t = α·z_0 + σ·ε."""
    sched = training_scheduler(DiffusionConfig(prediction_type=kind))
    g = torch.Generator().manual_seed(0)
    z0, noise, pred = (torch.randn(4, 3, 2, 2, generator=g) for _ in range(3))
    t = torch.tensor([0, 40, 300, 998])
    ab = sched.alphas_cumprod[t].double()
    a, s = ab.sqrt().view(-1, 1, 1, 1), (1 - ab).sqrt().view(-1, 1, 1, 1)
    z_t = a * z0 + s * noise
    target = {"epsilon": noise, "v_prediction": a * noise - s * z0, "sample": z0}[kind]
    z0_hat = {"epsilon": (z_t - s * pred) / a, "v_prediction": a * z_t - s * pred, "sample": pred}[kind]
    snr = ab / (1 - ab)
    assert snr[0] > 5 > snr[2] and snr[3] < 1  # the clamp's three regimes are all exercised
    want = snr.clamp(1, 5) * (z0_hat - z0).pow(2).flatten(1).mean(1)
    got = loss_weights(sched, t, 5.0).double() * (pred - target).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"prediction_type": "x0"}, "prediction_type"),
        ({"timestep_spacing": "even"}, "timestep_spacing"),
        ({"zero_terminal_snr": True}, "zero_terminal_snr"),
        ({"loss_weighting": "min_snr"}, "loss_weighting"),
        ({"snr_gamma": 0.5}, "snr_gamma"),
    ],
)
def test_bad_diffusion_settings_are_named(kwargs, message):
    with pytest.raises(IGRError, match=message):
        DiffusionConfig(**kwargs)
