"""Pre-training the tiny world's base UNet: the analogue of the Stable Diffusion 1.5 that IGR starts from.

IGR initialises GarmNet *and* the GarmDenoiser from SD1.5's UNet (§3.2, docs/design.md §2). Its reference attention works
because the two copies share self-attention weights that were trained to match similar content, so GarmNet's
features of the person and the denoiser's features of the garment it draws live in one space from step 0. A
random-init miniature has nothing of that (docs/tiny-world.md, rounds 3–6: GarmNet stayed unused).

This trains a text-conditioned UNet of the model config's architecture on the tiny world's images — flat garments
under their category prompt, dressed persons under a person prompt, each prompt dropped to "" 10 % of the time as
SD does for classifier-free guidance — in the diffusion parameterisation the later stages use, through the frozen
autoencoder they use. It is written as a diffusers folder (``unet/``, ``text_encoder/``, ``vae/``) that
``model.sd_path`` loads exactly as the paper's runs load SD1.5; the text encoder is written too, so the prompt
embeddings the UNet learnt are the ones the later stages encode.

t is drawn uniformly, as SD1.5 was trained: ``diffusion.timestep_bias`` belongs to IGR's own stages (the coarse
training and the fine-tune), and the demo measured it on a uniformly trained base (docs/tiny-world.md, round 11).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from igr.atomic import atomic_directory
from igr.config import CATEGORIES, DiffusionConfig, ModelConfig
from igr.errors import IGRError

# What the base model is told a dressed-person image is (SD1.5 saw photos of people under captions like it).
PERSON_PROMPT = "a photo of a person"
PROMPT_DROP = 0.1  # SD1.5's unconditional share, so the base also knows the empty prompt CFG uses
# Rows of the prompt table: one per category (CATEGORIES order), then the person prompt, then the empty prompt.
PERSON_ROW, EMPTY_ROW = len(CATEGORIES), len(CATEGORIES) + 1


def load_images(shards: str, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Persons (N,3,H,W), garments (N,3,H,W) in [-1,1] and each garment's category index (N,) into CATEGORIES."""
    from igr.data.shards import iter_samples
    from igr.vae_train import stack_images

    persons, garments, cats = [], [], []
    for s in iter_samples(shards, image_size=size):
        if "garment" not in s:
            continue
        persons.append(s["person"])
        garments.append(s["garment"])
        cats.append(CATEGORIES.index(s["category"]))
    if not garments:
        raise IGRError(f"{shards}: no paired samples (person + garment) to pre-train the base UNet on")
    return stack_images(persons), stack_images(garments), torch.tensor(cats)


def draw_batch(
    persons: torch.Tensor, garments: torch.Tensor, cats: torch.Tensor, batch_size: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch: images (B,3,H,W), each a person or a garment with even odds and mirrored half the time, and their
    prompt rows (B,): the garment's category, PERSON_ROW for a person, EMPTY_ROW for a dropped prompt."""
    idx = torch.randint(0, len(cats), (batch_size,), generator=gen)
    is_person = torch.rand(batch_size, generator=gen) < 0.5
    x = torch.where(is_person[:, None, None, None], persons[idx], garments[idx])
    flip = torch.rand(batch_size, generator=gen) < 0.5  # a mirrored garment or person is as likely
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    prompt = torch.where(is_person, PERSON_ROW, cats[idx])
    dropped = torch.rand(batch_size, generator=gen) < PROMPT_DROP
    return x, torch.where(dropped, EMPTY_ROW, prompt)


def train_tiny_base(
    config: ModelConfig,
    shards: str,
    out: str | Path,
    steps: int = 1000,
    batch_size: int = 16,
    lr: float = 1e-3,
    seed: int = 0,
    overwrite: bool = False,
    diffusion: DiffusionConfig | None = None,
) -> dict:
    """Train the base UNet for ``steps`` and write the folder ``out`` (``model.sd_path``). ``config.vae_path`` must
    name the autoencoder the later stages use (its latent statistics define the latents)."""
    from diffusers import UNet2DConditionModel

    from igr.models.prompts import build_text_encoder, tokenize
    from igr.models.vae import FrozenVAE, build_vae
    from igr.pretraining import step_progress, warmup_cosine
    from igr.sampling import training_scheduler, training_target

    out = Path(out)
    if out.exists() and not overwrite:
        raise IGRError(f"{out}: already exists (pass --overwrite to replace it)")
    if config.sd_path:
        raise IGRError(f"model.sd_path is set ({config.sd_path}): that UNet is already pre-trained; the tiny "
                       "base is for random-init configs")
    if not config.vae_path:
        raise IGRError("train-base needs the autoencoder the later stages use: pass --vae-path (igr train-vae's "
                       "output)")
    if steps < 1 or batch_size < 2:
        raise IGRError(f"train-base: --steps {steps} must be ≥ 1 and --batch-size {batch_size} ≥ 2")
    diffusion = diffusion or DiffusionConfig()
    if diffusion.timestep_bias != "none":
        print(f"train-base: t uniform, as SD1.5 was trained (diffusion.timestep_bias={diffusion.timestep_bias} "
              "applies to the coarse and fine-tune stages only)", flush=True)
    torch.manual_seed(seed)
    vae = FrozenVAE(build_vae(config.vae, None, config.vae_path))
    unet = UNet2DConditionModel(**config.unet).train()
    if unet.config.out_channels != vae.latent_channels:
        raise IGRError(f"model.unet.out_channels: {unet.config.out_channels}, but {config.vae_path} has "
                       f"{vae.latent_channels} latent channels")
    text_encoder = build_text_encoder(config.text_encoder, None).eval()
    texts = [config.prompts[c] for c in CATEGORIES] + [PERSON_PROMPT, ""]  # the rows PERSON_ROW, EMPTY_ROW name
    with torch.no_grad():  # (5, 77, D)
        prompts = text_encoder(tokenize(texts, config.tokenizer, None)).last_hidden_state

    persons, garments, cats = load_images(shards, tuple(config.resolution))
    scheduler = training_scheduler(diffusion)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0, foreach=True)
    sched = warmup_cosine(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    losses, t0 = [], time.perf_counter()
    with step_progress("tiny base UNet", "loss") as progress:
        task = progress.add_task("base", total=steps, loss=float("nan"))
        for _ in range(steps):
            x, prompt = draw_batch(persons, garments, cats, batch_size, gen)
            z0 = vae.encode(x).float()  # frozen, no grad
            noise = torch.randn(z0.shape, generator=gen)
            t = torch.randint(0, diffusion.train_timesteps, (batch_size,), generator=gen)
            z_t = scheduler.add_noise(z0, noise, t)
            pred = unet(z_t, t, encoder_hidden_states=prompts[prompt]).sample
            loss = F.mse_loss(pred, training_target(scheduler, z0, noise, t))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            progress.update(task, advance=1, loss=float(np.mean(losses[-20:])))
    unet.eval()
    with atomic_directory(out, overwrite, kind="tiny-base", inputs=[shards, config.vae_path]) as tmp:
        unet.save_pretrained(tmp / "unet")
        text_encoder.save_pretrained(tmp / "text_encoder")
        shutil.copytree(config.vae_path, tmp / "vae")  # the folder is then a whole "SD1.5" for model.sd_path
    return {
        "steps": steps,
        "images": 2 * len(cats),
        "first_loss": round(float(np.mean(losses[:10])), 4),
        "final_loss": round(float(np.mean(losses[-20:])), 4),
        "seconds": round(time.perf_counter() - t0, 1),
        "out": str(out),
    }

