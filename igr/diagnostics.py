"""Which conditions a trained model uses: swap one condition between the samples of a batch and measure how far
the prediction moves (``igr diagnose``).

The paper's Table 2 says GarmNet matters; this measures whether it does in a given model. For a noise level t,
z_t is drawn once from the ground-truth garments and kept; then one condition at a time — GarmNet's features
F_hl, the IP-Adapter's image embedding, the category prompt — is taken from the next sample in the batch (a cyclic
shift), the others kept. ``reliance`` is the mean squared change of the prediction, divided by the change when
every condition comes from the next sample: 0 means the model ignores that condition, 1 that it moves the
prediction as much as all of them together.

Each row also says how well the model denoises at that t: ``z0_error`` is the RMS error of the clean latent its
prediction implies, ``input_z0_error`` that of the noisy input itself, rescaled (z_t/α_t: what returning the input
unchanged would give; None at zero SNR). A model whose ``z0_error`` stays above ``input_z0_error`` at small t loses
detail it was given: its samples come out grainy or soft whatever their conditions.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from igr.models.model import Conditions, IGRModel
from igr.sampling import predicted_z0, training_scheduler, training_target

CONDITIONS = ("garmnet", "ip_adapter", "prompt")


@dataclass
class Reliance:
    t: int
    loss: float  # MSE of the prediction against the training target
    all_swapped: float  # mean squared prediction change when every condition comes from the next sample
    reliance: dict[str, float]  # condition → change when only it is swapped, / all_swapped
    z0_error: float = float("nan")  # RMS of the implied ẑ_0 − z_0
    input_z0_error: float | None = None  # RMS of z_t/α_t − z_0; None where α_t = 0


def _shift(x: torch.Tensor) -> torch.Tensor:
    return x.roll(1, dims=0)


def swapped(cond: Conditions, which: str) -> Conditions:
    """``cond`` with one condition (or ``"all"``) taken from the next sample of the batch."""
    text, image, feats = cond.text, cond.image_embeds, cond.garm_feats
    if which in ("prompt", "all"):
        text = _shift(text)
    if which in ("ip_adapter", "all"):
        image = _shift(image)
    if which in ("garmnet", "all") and feats is not None:
        feats = {k: _shift(v) for k, v in feats.items()}
    return Conditions(text, image, feats)


@torch.no_grad()
def condition_reliance(
    model: IGRModel,
    person: torch.Tensor,
    mask: torch.Tensor,
    category: list[str],
    garment: torch.Tensor,
    timesteps: list[int],
    seed: int = 0,
) -> list[Reliance]:
    """person/garment (B,3,H,W) in [-1,1], mask (B,1,H,W); B ≥ 2 (the swap needs another sample)."""
    if person.shape[0] < 2:
        raise ValueError("condition_reliance needs at least 2 samples to swap conditions between")
    scheduler = training_scheduler(model.diffusion)
    cond = model.conditions(model.encode_inputs(person, mask, category))
    z0 = model.vae.encode(garment).float()
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    names = [c for c in CONDITIONS if c != "garmnet" or cond.garm_feats is not None]
    out = []
    try:
        for step in timesteps:
            t = torch.full((z0.shape[0],), int(step), dtype=torch.long)
            z_t = scheduler.add_noise(z0, noise, t)
            pred = model.eps(z_t, t, cond).float()
            change = {w: (model.eps(z_t, t, swapped(cond, w)).float() - pred).pow(2).mean().item()
                      for w in (*names, "all")}
            total = change.pop("all")
            target = training_target(scheduler, z0, noise, t).float()
            alpha = scheduler.alphas_cumprod[int(step)].float().sqrt()
            out.append(Reliance(
                t=int(step), loss=(pred - target).pow(2).mean().item(), all_swapped=total,
                reliance={w: (v / total if total > 0 else float("nan")) for w, v in change.items()},
                z0_error=(predicted_z0(scheduler, pred, z_t, t) - z0).pow(2).mean().sqrt().item(),
                input_z0_error=(z_t / alpha - z0).pow(2).mean().sqrt().item() if alpha > 0 else None,
            ))
    finally:
        model.denoiser.bank.set(None)
    return out
