"""Frozen VAE (SD1.5's ``AutoencoderKL``, or the tiny VAE the demo trains): pixels ↔ scaled latents."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL

from igr.models.weights import load_diffusers_model


def build_vae(config: dict[str, Any], sd_path: str | None, vae_path: str | None) -> AutoencoderKL:
    if vae_path:
        return load_diffusers_model(AutoencoderKL, vae_path)
    if sd_path:
        return load_diffusers_model(AutoencoderKL, Path(sd_path) / "vae")
    return AutoencoderKL(**config)


class FrozenVAE(torch.nn.Module):
    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.scaling_factor = float(vae.config.scaling_factor)
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
        return z * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents → (B,3,H,W) in [-1,1]."""
        return self.vae.decode(z.to(self.vae.dtype) / self.scaling_factor).sample.clamp(-1, 1)
