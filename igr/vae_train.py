"""Training the tiny world's VAE: the frozen "pretrained" autoencoder that SD1.5's VAE stands for in the demo.

An ``AutoencoderKL`` with the architecture of the model config, trained on the person and garment images of a
shard set with L1 + a small KL term (SD's VAE also used LPIPS and a GAN loss; both need weights or time the tiny
world does not have). Afterwards the latent statistics are measured — SD1.5 sets scaling_factor = 1/std; here the
tiny latents also have large per-channel offsets, so the per-channel mean and std are stored as diffusers'
``latents_mean``/``latents_std`` and the diffusion model sees zero-mean, unit-variance latents. Saved as a diffusers
folder (``vae_path`` in the model config).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL

from igr.atomic import atomic_directory
from igr.config import ModelConfig
from igr.errors import IGRError
from igr.models.vae import PIXEL_UNSHUFFLE, PixelUnshuffleAutoencoder
from igr.pretraining import step_progress, warmup_cosine


def load_images(shards: str, size: tuple[int, int], limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Person and garment images of a shard set: two (N,3,H,W) tensors in [-1,1]."""
    from igr.data.shards import iter_samples

    persons, garments = [], []
    for i, s in enumerate(iter_samples(shards, image_size=size)):
        if limit is not None and i >= limit:
            break
        persons.append(s["person"])
        if "garment" in s:
            garments.append(s["garment"])
    if not persons or not garments:
        raise IGRError(f"{shards}: no usable paired samples to train the VAE on")
    return stack_images(persons), stack_images(garments)


def stack_images(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H,W,3) images → one (N,3,H,W) tensor in [-1,1]."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1


def train_vae(
    config: ModelConfig,
    shards: str,
    out: str | Path,
    steps: int = 400,
    batch_size: int = 16,
    lr: float = 1e-3,
    kl_weight: float = 1e-6,
    seed: int = 0,
    overwrite: bool = False,
) -> dict:
    out = Path(out)
    if out.exists() and not overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
    if not config.vae:
        raise IGRError("model.vae: the config has no VAE architecture to train")
    torch.manual_seed(seed)
    persons, garments = load_images(shards, tuple(config.resolution))
    data = torch.cat([persons, garments])  # the VAE encodes both: persons for GarmNet, garments as targets
    gen = torch.Generator().manual_seed(seed)
    if config.vae.get("autoencoder") == PIXEL_UNSHUFFLE:
        # exact and parameter-free: nothing to train, only the latent statistics to measure
        vae = PixelUnshuffleAutoencoder(**config.vae)
        steps = 0
    else:
        vae = AutoencoderKL(**config.vae).train()
    return _fit_and_save(vae, data, garments, gen, out, steps, batch_size, lr, kl_weight, overwrite)


def _fit_and_save(vae, data, garments, gen, out, steps, batch_size, lr, kl_weight, overwrite) -> dict:
    if steps:
        opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
        sched = warmup_cosine(opt, steps)
    losses: list[float] = []
    with step_progress("tiny VAE", "l1", disable=steps == 0) as progress:
        task = progress.add_task("vae", total=steps, l1=float("nan"))
        for _ in range(steps):
            idx = torch.randint(0, len(data), (batch_size,), generator=gen)
            x = data[idx]
            flip = torch.rand(batch_size, generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            post = vae.encode(x).latent_dist
            rec = vae.decode(post.sample(gen)).sample
            l1 = (rec - x).abs().mean()
            loss = l1 + kl_weight * post.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(l1.item())
            progress.update(task, advance=1, l1=float(np.mean(losses[-20:])))  # never empty here
    vae.eval()
    with torch.no_grad():
        # statistics of the diffusion *targets*: garment latents
        sample = garments[torch.randperm(len(garments), generator=gen)[:256]]
        latents = torch.cat([vae.encode(b).latent_dist.mode() for b in sample.split(64)])
        rec_l1 = float(
            torch.cat(
                [(vae.decode(vae.encode(b).latent_dist.mode()).sample - b).abs() for b in sample.split(64)]
            ).mean()
        )
    # Per-channel statistics (diffusers' latents_mean / latents_std): the diffusion model then predicts zero-mean,
    # unit-variance garment latents. scaling_factor stays 1 (SD1.5 uses a single 1/std factor on near-zero-mean latents).
    mean, std = latents.mean((0, 2, 3)), latents.std((0, 2, 3))
    vae.register_to_config(latents_mean=mean.tolist(), latents_std=std.tolist(), scaling_factor=1.0)
    with atomic_directory(out, overwrite, kind="tiny-vae") as tmp:
        vae.save_pretrained(tmp)
    return {
        "steps": steps,
        "images": len(data),
        # mean of the last 20 steps' L1 (fewer in a shorter run); None when nothing was trained (no NaN in the JSON)
        "final_l1": float(np.mean(losses[-20:])) if losses else None,
        "reconstruction_l1": rec_l1,
        "latents_mean": [round(v, 4) for v in mean.tolist()],
        "latents_std": [round(v, 4) for v in std.tolist()],
        "raw_latent_std": round(float(latents.std()), 4),
        "out": str(out),
    }
