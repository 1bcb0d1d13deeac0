"""Frozen VAE (SD1.5's ``AutoencoderKL``, or the tiny VAE the demo trains): pixels ↔ scaled latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from igr.weights_io import load_diffusers_model


def build_vae(config: dict[str, Any], sd_path: str | None, vae_path: str | None) -> AutoencoderKL:
    if vae_path:
        return load_diffusers_model(AutoencoderKL, vae_path)
    if sd_path:
        return load_diffusers_model(AutoencoderKL, Path(sd_path) / "vae")
    return AutoencoderKL(**config)


class FrozenVAE(torch.nn.Module):
    """Latents are ``(z - mean) / std * scaling_factor`` with diffusers' per-channel ``latents_mean``/``latents_std``
    when the VAE config has them (the demo's tiny VAE, as Playground/SDXL-style VAEs do), else SD1.5's plain
    ``z * scaling_factor``. Zero-mean latents matter: sampling starts from zero-mean noise, so a latent offset
    the model never learns to produce shows up as washed-out, grey images."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.scaling_factor = float(vae.config.scaling_factor)
        c = vae.config.latent_channels
        mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
        self.register_buffer("latents_mean", torch.tensor(mean or [0.0] * c).view(1, c, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(std or [1.0] * c).view(1, c, 1, 1), persistent=False)
        # spatial down-sampling factor: 2 per down block after the first (8 for SD1.5)
        self.factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def train(self, mode: bool = True):
        return super().train(False)

    @torch.no_grad()
    def encode(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] → (B,C,H/f,W/f) scaled latents (posterior mean unless ``sample``)."""
        dist = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self.latents_mean.to(z)) / self.latents_std.to(z) * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents → (B,3,H,W) in [-1,1]."""
        z = z / self.scaling_factor * self.latents_std.to(z) + self.latents_mean.to(z)
        return self.vae.decode(z.to(self.vae.dtype)).sample.clamp(-1, 1)
