"""Model-level behaviour on the tiny config: conditioning paths, GarmNet once per sample, frozen tail."""

from __future__ import annotations

import copy

import pytest
import torch
from diffusers import UNet2DConditionModel
from tolerance import TINY_VAE_OPS, assert_close_f32

from igr.errors import IGRError
from igr.models.garmnet import GarmNet
from igr.models.image_encoder import garment_crop
from igr.models.unet import add_input_channels


def test_changing_the_person_changes_eps(tiny_model, batch):
    m = tiny_model
    z, t = torch.randn(m.latent_shape(2)), torch.tensor([10, 400])
    eps = []
    for person in (batch["person"], batch["person"].flip(-1)):
        cond = m.conditions(m.encode_inputs(person, batch["mask"], batch["category"]))
        eps.append(m.eps(z, t, cond))
    assert eps[0].shape == z.shape
    assert (eps[0] - eps[1]).abs().max() > 1e-4


def test_pixels_outside_the_mask_do_not_reach_the_ip_adapter(tiny_model, batch):
    person, mask = batch["person"], batch["mask"]
    outside = person.clone()
    outside[mask.expand_as(person) == 0] = torch.rand_like(person)[mask.expand_as(person) == 0]
    assert not torch.equal(outside, person)
    assert torch.equal(garment_crop(person, mask, 32), garment_crop(outside, mask, 32))
    enc = tiny_model.image_encoder
    assert torch.equal(enc(person, mask), enc(outside, mask))
    inside = person.clone()
    inside[mask.expand_as(person) == 1] *= -1
    assert not torch.equal(enc(person, mask), enc(inside, mask))


def test_garment_crop_keeps_proportions():
    person = torch.ones(1, 3, 64, 48)
    mask = torch.zeros(1, 1, 64, 48)
    mask[..., 10:50, 20:30] = 1  # tall thin garment: 40 x 10
    crop = garment_crop(person, mask, 32)
    assert crop.shape == (1, 3, 32, 32)
    cols = (crop[0, 0] > 0.5).any(0).nonzero().flatten()
    assert 6 <= len(cols) <= 10  # ~ 32 * 10/40 wide, not stretched to 32
    assert torch.equal(garment_crop(person, torch.zeros_like(mask), 32), torch.zeros(1, 3, 32, 32))


@pytest.mark.parametrize("steps,guidance", [(3, 1.5), (7, 1.5), (4, 1.0)])
def test_garmnet_runs_once_per_sample_call(tiny_model, batch, steps, guidance):
    calls = []
    hook = tiny_model.garmnet.register_forward_hook(lambda *a: calls.append(1))
    den_calls = []
    hook2 = tiny_model.denoiser.register_forward_hook(lambda *a: den_calls.append(1))
    try:
        out = tiny_model.restore(
            batch["person"],
            batch["mask"],
            batch["category"],
            num_inference_steps=steps,
            guidance_scale=guidance,
        )
    finally:
        hook.remove()
        hook2.remove()
    # the conditional inputs, plus with CFG the constant unconditional input once per model (then cached)
    assert len(calls) == (1 if guidance == 1.0 else 2)
    assert len(den_calls) == steps  # CFG branches batched into one call per step
    assert out.shape == (2, 3, 64, 48) and out.min() >= 0 and out.max() <= 1


def test_restore_is_seeded(tiny_model, batch):
    def run(seed):
        g = torch.Generator().manual_seed(seed)
        return tiny_model.restore(
            batch["person"], batch["mask"], batch["category"], num_inference_steps=2, generator=g
        )

    assert torch.equal(run(1), run(1))  # the same call twice in one process: bit-equal
    assert not torch.equal(run(1), run(2))


def test_unknown_category_names_the_key(tiny_model, batch):
    with pytest.raises(IGRError, match="unknown category 'shoes'"):
        tiny_model.encode_inputs(batch["person"], batch["mask"], ["upper", "shoes"])


def test_garmnet_mask_channel_starts_at_zero(tiny_config):
    base = UNet2DConditionModel(**tiny_config.unet)
    wide = add_input_channels(copy.deepcopy(base), 1)
    assert wide.config.in_channels == 5
    assert torch.equal(wide.conv_in.weight[:, :4], base.conv_in.weight)
    assert torch.count_nonzero(wide.conv_in.weight[:, 4]) == 0
    # so GarmNet's first layer on [latent, mask] equals SD's on the latent alone
    x = torch.randn(1, 4, 16, 12)
    torch.testing.assert_close(wide.conv_in(torch.cat([x, torch.ones(1, 1, 16, 12)], 1)), base.conv_in(x))


def test_frozen_tail_is_exactly_what_gets_no_gradient(tiny_config):
    garmnet = GarmNet(add_input_channels(UNet2DConditionModel(**tiny_config.unet), 1))
    for p in garmnet.parameters():
        p.requires_grad_(True)
    feats = garmnet(torch.randn(2, 4, 16, 12), torch.ones(2, 1, 64, 48), torch.randn(2, 77, 32))
    sum(f.square().mean() for f in feats.values()).backward()
    no_grad = {n for n, p in garmnet.named_parameters() if p.grad is None}
    fresh = GarmNet(add_input_channels(UNet2DConditionModel(**tiny_config.unet), 1))
    frozen = {n for n, p in fresh.named_parameters() if not p.requires_grad}
    assert frozen and frozen == no_grad


def test_vae_latent_normalisation_round_trips(tiny_config):
    """With diffusers' latents_mean/std in the VAE config, latents are normalised per channel and decoding
    undoes it exactly; without them the SD1.5 convention (z * scaling_factor) applies."""
    from diffusers import AutoencoderKL

    from igr.models.vae import FrozenVAE

    torch.manual_seed(0)
    raw = AutoencoderKL(**tiny_config.vae).eval()
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    z_raw = raw.encode(x).latent_dist.mode()
    mean, std = [0.5, -1.0, 2.0, 0.0], [2.0, 1.0, 0.5, 1.5]
    norm = AutoencoderKL(**{**tiny_config.vae, "latents_mean": mean, "latents_std": std}).eval()
    norm.load_state_dict(raw.state_dict())
    vae = FrozenVAE(norm)
    z = vae.encode(x)
    expected = (z_raw - torch.tensor(mean).view(1, 4, 1, 1)) / torch.tensor(std).view(1, 4, 1, 1)
    torch.testing.assert_close(z, expected)
    # z went through (z_raw - mean) / std and back: a rounding of the input, grown through the decoder
    assert_close_f32(vae.decode(z), raw.decode(z_raw).sample.clamp(-1, 1), ops=TINY_VAE_OPS)
    plain = FrozenVAE(raw)
    torch.testing.assert_close(plain.encode(x), z_raw * raw.config.scaling_factor)


def test_garmnet_timestep_comes_from_the_diffusion_config(tiny_config):
    from igr.config import DiffusionConfig
    from igr.models import build_model

    assert build_model(tiny_config).garmnet.timestep == 0  # the paper's t = 0
    assert build_model(tiny_config, DiffusionConfig(garmnet_timestep=7)).garmnet.timestep == 7


@pytest.mark.parametrize("offset", range(4))
def test_a_thin_strap_reaches_garmnet_at_every_offset(tiny_model, offset):
    """A 3-px strap in the tiny world's 4×4 latent cells (SD1.5: 6 px in 8×8), at every horizontal offset. GarmNet's
    mask channel must hold the strap's whole area: 3/4 of a cell column, or split over two. Catches nearest
    sampling (one pixel per cell: the strap is kept at some offsets and vanishes at others)."""
    m = tiny_model
    mask = torch.zeros(1, 1, 64, 48)
    mask[..., 8:56, 20 + offset : 23 + offset] = 1  # rows 8..55 (12 cells), columns 20+o .. 22+o
    seen = {}
    hook = m.garmnet.unet.conv_in.register_forward_pre_hook(lambda mod, args: seen.setdefault("x", args[0]))
    try:
        m.garmnet(torch.zeros(1, 4, 16, 12), mask, torch.zeros(1, 77, 32))
    finally:
        hook.remove()
    small = seen["x"][0, 4]  # (16, 12): GarmNet's mask channel
    expected = torch.zeros(16, 12)
    for col in range(20 + offset, 23 + offset):  # each strap pixel column adds 1/4 to its cell column
        expected[2:14, col // 4] += 0.25
    torch.testing.assert_close(small, expected)


def test_guidance_combines_the_conditional_and_dropped_halves_as_eq_2(tiny_model, batch, monkeypatch):
    """restore() hands the sampler ε(∅) + s·(ε(c) − ε(∅)). A fake denoiser returns 5 where it sees the conditions
    and 2 where they were dropped (empty prompt, zero image embedding); the sampler is replaced by one call of the
    guided function. Catches swapped halves (5 + s·(2 − 5)), a wrong formula, or guidance applied at s = 1."""
    import igr.models.model as model_module

    m = tiny_model
    empty = m.prompts.embeddings[-1]

    def fake_eps(z_t, t, cond):
        dropped = (cond.text == empty).flatten(1).all(1) & (cond.image_embeds == 0).all(1)
        return torch.where(dropped, 2.0, 5.0).view(-1, 1, 1, 1).expand_as(z_t).clone()

    monkeypatch.setattr(m, "eps", fake_eps)
    monkeypatch.setattr(model_module, "sample", lambda fn, z, *a, **k: fn(z, torch.zeros(z.shape[0], dtype=torch.long)))
    for s, want in ((1.5, 2 + 1.5 * (5 - 2)), (2.5, 2 + 2.5 * (5 - 2)), (1.0, 5.0)):
        out = m.restore(batch["person"], batch["mask"], batch["category"], guidance_scale=s, return_latents=True)
        torch.testing.assert_close(out, torch.full_like(out, want))
