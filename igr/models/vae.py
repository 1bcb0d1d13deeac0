"""Frozen autoencoder: pixels ↔ scaled latents.

Two kinds, chosen by the model config's ``vae:`` section:

* SD1.5's ``AutoencoderKL`` (or the tiny one ``igr train-vae`` trains) — the paper's latent space;
* ``autoencoder: pixel_unshuffle`` — an exact, parameter-free autoencoder for the tiny world: space-to-depth
  with a fixed patch size (64×48×3 → 16×12×48 for patch 4), so diffusion runs on the pixels themselves through the
  same UNets. A tiny learned VAE trained for minutes loses most colour (its reconstructions of ground-truth garments
  are grey silhouettes, docs/design.md §7); this one reconstructs exactly, so the tiny world's ceiling is the diffusion
  model's, not the autoencoder's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

from igr.errors import IGRError, WeightsError
from igr.weights_io import load_diffusers_model

PIXEL_UNSHUFFLE = "pixel_unshuffle"
PATCH_TRANSFORMS = ("none", "dct")


def dct_matrix(n: int) -> torch.Tensor:
    """(n, n) orthonormal DCT-II: row k is the k-th cosine basis vector, so ``D @ x`` are the coefficients of x and
    ``D.T @ c`` inverts them."""
    i = torch.arange(n, dtype=torch.float64)
    d = torch.cos(torch.pi * (i[None, :] + 0.5) * i[:, None] / n) * (2.0 / n) ** 0.5
    d[0] /= 2.0**0.5
    return d


class _ExactLatent:
    """The posterior of an exact encoder: a point mass (``mode`` and ``sample`` are the same tensor)."""

    def __init__(self, z: torch.Tensor) -> None:
        self.z = z

    def mode(self) -> torch.Tensor:
        return self.z

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.z


class _Encoded:
    def __init__(self, z: torch.Tensor) -> None:
        self.latent_dist = _ExactLatent(z)


class _Decoded:
    def __init__(self, x: torch.Tensor) -> None:
        self.sample = x


class PixelUnshuffleAutoencoder(ModelMixin, ConfigMixin):
    """Space-to-depth autoencoder with the ``AutoencoderKL`` call surface (``encode(x).latent_dist``,
    ``decode(z).sample``, ``config.latent_channels``), so :class:`FrozenVAE` and the pipeline folder treat it like
    any VAE. ``decode(encode(x))`` is ``x`` exactly. Latent statistics live in the config, as for the tiny VAE."""

    @register_to_config
    def __init__(
        self,
        autoencoder: str = PIXEL_UNSHUFFLE,
        patch_size: int = 4,
        in_channels: int = 3,
        latent_channels: int | None = None,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        scaling_factor: float = 1.0,
        transform: str = "none",
    ) -> None:
        super().__init__()
        expected = in_channels * patch_size**2
        if autoencoder != PIXEL_UNSHUFFLE:
            raise ValueError(f"vae.autoencoder: '{autoencoder}' is not '{PIXEL_UNSHUFFLE}'")
        if transform not in PATCH_TRANSFORMS:
            raise ValueError(f"vae.transform: '{transform}' is not one of {', '.join(PATCH_TRANSFORMS)}")
        if latent_channels not in (None, expected):
            raise ValueError(
                f"vae.latent_channels: {latent_channels}, but patch {patch_size} of {in_channels} channels "
                f"gives {expected}"
            )
        self.register_to_config(latent_channels=expected)
        # a parameter-free module still needs a dtype/device for ModelMixin: one empty buffer carries them
        self.register_buffer("_anchor", torch.zeros(0), persistent=False)
        # (p², p²) basis over a patch's pixels in pixel_unshuffle's order (row-major): the 2-D DCT is the Kronecker
        # product of the 1-D one along rows and columns. A fixed function of the config, so not saved.
        d = dct_matrix(patch_size)
        self.register_buffer("_basis", torch.kron(d, d).float(), persistent=False)

    def _mix(self, z: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
        """Apply ``basis`` to each colour channel's p² patch values: (B, C·p², h, w) → same shape."""
        b, _, h, w = z.shape
        c = self.config.in_channels
        z = z.reshape(b, c, -1, h, w)  # pixel_unshuffle puts a colour channel's p² values next to each other
        return torch.einsum("qk,bckhw->bcqhw", basis.to(z), z).reshape(b, -1, h, w)

    @property
    def downsampling_factor(self) -> int:
        return int(self.config.patch_size)

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> _Encoded:
        z = F.pixel_unshuffle(x, self.config.patch_size)  # (B, C·p², H/p, W/p)
        return _Encoded(self._mix(z, self._basis) if self.config.transform == "dct" else z)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> _Decoded:
        if self.config.transform == "dct":
            z = self._mix(z, self._basis.T)
        return _Decoded(F.pixel_shuffle(z, self.config.patch_size))


def _is_pixel_unshuffle(config: dict[str, Any]) -> bool:
    return config.get("autoencoder") == PIXEL_UNSHUFFLE


def load_vae_folder(folder: str | Path) -> torch.nn.Module:
    """An autoencoder folder: the exact pixel-unshuffle one (`igr train-vae` on a tiny_pixel config) or a diffusers
    ``AutoencoderKL``."""
    meta = Path(folder) / "config.json"
    if meta.is_file() and json.loads(meta.read_text()).get("_class_name") == PixelUnshuffleAutoencoder.__name__:
        try:
            return PixelUnshuffleAutoencoder.from_config(PixelUnshuffleAutoencoder.load_config(str(folder)))
        except Exception as exc:
            raise WeightsError(f"{folder}: cannot load the pixel-unshuffle autoencoder ({exc})") from exc
    return load_diffusers_model(AutoencoderKL, folder)


def build_vae(config: dict[str, Any], sd_path: str | None, vae_path: str | None) -> torch.nn.Module:
    if vae_path:
        return load_vae_folder(vae_path)
    if sd_path:  # SD1.5's vae/, or the tiny base's copy of the demo's autoencoder (igr train-base)
        return load_vae_folder(Path(sd_path) / "vae")
    if _is_pixel_unshuffle(config):
        return PixelUnshuffleAutoencoder(**config)
    return AutoencoderKL(**config)


def effective_config(vae: torch.nn.Module) -> dict[str, Any]:
    """The config the autoencoder was actually built with (from vae_path or sd_path when given), as plain JSON
    types: it holds what the model config's ``vae:`` dict may not — latents_mean/std, scaling_factor — and rebuilds
    the same autoencoder with no file."""
    return json.loads(json.dumps({k: v for k, v in dict(vae.config).items() if not k.startswith("_")}))


def downsampling_factor(vae: torch.nn.Module) -> int:
    """Pixels per latent along each side: the patch size, or 2 per ``AutoencoderKL`` down block after the first
    (8 for SD1.5)."""
    if isinstance(vae, PixelUnshuffleAutoencoder):
        return vae.downsampling_factor
    return 2 ** (len(vae.config.block_out_channels) - 1)


class FrozenVAE(torch.nn.Module):
    """Latents are ``(z - mean) / std * scaling_factor`` with diffusers' per-channel ``latents_mean``/``latents_std``
    when the VAE config has them (the demo's tiny autoencoders, as Playground/SDXL-style VAEs do), else SD1.5's plain
    ``z * scaling_factor``. Zero-mean latents matter: sampling starts from zero-mean noise, so a latent offset
    the model never learns to produce shows up as washed-out, grey images."""

    def __init__(self, vae: torch.nn.Module) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.scaling_factor = float(vae.config.scaling_factor)
        c = self.latent_channels = int(vae.config.latent_channels)
        mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
        self.register_buffer("latents_mean", torch.tensor(mean or [0.0] * c).view(1, c, 1, 1), persistent=False)
        self.register_buffer("latents_std", torch.tensor(std or [1.0] * c).view(1, c, 1, 1), persistent=False)
        self.factor = downsampling_factor(vae)

    def train(self, mode: bool = True):
        return super().train(False)

    @property
    def _dtype(self) -> torch.dtype:
        return self.vae.dtype

    @torch.no_grad()
    def encode(
        self, x: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """(B,3,H,W) in [-1,1] → (B,C,H/f,W/f) scaled latents (posterior mean unless ``sample``)."""
        dist = self.vae.encode(x.to(self._dtype)).latent_dist
        z = dist.sample(generator) if sample else dist.mode()
        return (z - self.latents_mean.to(z)) / self.latents_std.to(z) * self.scaling_factor

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled latents → (B,3,H,W) in [-1,1]."""
        z = z / self.scaling_factor * self.latents_std.to(z) + self.latents_mean.to(z)
        return self.vae.decode(z.to(self._dtype)).sample.clamp(-1, 1)


def check_latent_channels(vae: FrozenVAE, unet_config: dict[str, Any]) -> None:
    """The denoiser predicts latents: its output channels must be the autoencoder's latent channels."""
    out = unet_config.get("out_channels")
    if out != vae.latent_channels:
        raise IGRError(
            f"model.unet.out_channels: {out}, but the autoencoder has {vae.latent_channels} latent channels "
            "(set unet in_channels/out_channels to the VAE's latent_channels)"
        )
