"""Sampling is a function of a denoise callable: DDIM, and CFG batched or sequential."""

from __future__ import annotations

import torch

from igr.config import DiffusionConfig
from igr.sampling import guided, guided_sequential, inference_scheduler, sample


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
