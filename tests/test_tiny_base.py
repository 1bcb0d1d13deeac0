"""The tiny world's pre-trained base UNet (igr/base_train.py, `igr train-base`): the SD1.5 analogue that GarmNet and
the denoiser both start from through ``model.sd_path``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from igr.config import CATEGORIES, CONFIG_DIR, load_diffusion_config, load_model_config
from igr.errors import IGRError

EXPERIMENT = CONFIG_DIR / "experiment" / "demo.yaml"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic shards and the exact autoencoder's folder with its measured statistics."""
    from igr.cli import main

    root = tmp_path_factory.mktemp("base")
    assert main(["make-shards", "synthetic", "--out", str(root / "s"), "--split", "train", "--num", "24",
                 "--size", "64x48", "--seed", "5"]) == 0
    shards = str(root / "s" / "train.json")
    assert main(["train-vae", "--shards", shards, "-c", str(CONFIG_DIR / "model" / "tiny_pixel.yaml"),
                 "--out", str(root / "vae")]) == 0
    return {"shards": shards, "vae": str(root / "vae")}


@pytest.fixture
def config(world):
    return dataclasses.replace(load_model_config(EXPERIMENT), vae_path=world["vae"])


def test_batches_pair_each_image_with_its_prompt():
    """Catches: a garment trained under another category's prompt or the person prompt (rows swapped), persons
    under a garment prompt, no prompt drop (the base would not know CFG's empty prompt) or dropping everything,
    and no mirroring."""
    from igr.base_train import EMPTY_ROW, PERSON_ROW, draw_batch

    n = 12
    persons, garments = torch.randn(n, 3, 8, 6), torch.randn(n, 3, 8, 6)  # asymmetric: a mirror is detectable
    cats = torch.arange(n) % 3
    x, rows = draw_batch(persons, garments, cats, 2000, torch.Generator().manual_seed(0))
    seen = {"person": 0, "garment": 0, "mirrored": 0, "dropped": 0}
    for img, row in zip(x, rows.tolist()):
        for kind, bank in (("person", persons), ("garment", garments)):
            for i in range(n):
                for mirrored in (False, True):
                    if torch.equal(img, bank[i].flip(-1) if mirrored else bank[i]):
                        match = (kind, i, mirrored)
        kind, i, mirrored = match
        seen[kind] += 1
        seen["mirrored"] += mirrored
        if row == EMPTY_ROW:
            seen["dropped"] += 1
        elif kind == "person":
            assert row == PERSON_ROW
        else:
            assert row == i % 3, (i, row)  # its own category's prompt (CATEGORIES order)
    assert 900 < seen["person"] < 1100 and 900 < seen["mirrored"] < 1100
    assert 140 < seen["dropped"] < 260  # 10 %


def test_base_folder_starts_garmnet_the_denoiser_and_the_prompts(world, config, tmp_path, monkeypatch):
    """Catches: a folder `model.sd_path` cannot load (no vae/ or text_encoder/), GarmNet or the denoiser not
    starting from the trained base (random init, or GarmNet's mask channel not zero), prompt embeddings encoded by
    another text encoder than the one the base learnt them from, UNets left in eval mode by from_pretrained, and a
    loop that does not learn (the trained base denoises a fixed batch no better than its own initialisation)."""
    from diffusers import UNet2DConditionModel
    from open_clip.tokenizer import SimpleTokenizer
    from transformers import CLIPTextModel

    from igr.base_train import train_tiny_base
    from igr.models import build_model
    from igr.models.adapter import is_adapter_parameter

    diffusion = load_diffusion_config(EXPERIMENT)
    out = tmp_path / "base"
    fed = []  # the prompt embeddings training conditions on
    forward = UNet2DConditionModel.forward

    def recording(self, sample, timestep, encoder_hidden_states, *args, **kwargs):
        fed.append(encoder_hidden_states.detach().clone())
        return forward(self, sample, timestep, encoder_hidden_states, *args, **kwargs)

    monkeypatch.setattr(UNet2DConditionModel, "forward", recording)
    result = train_tiny_base(config, world["shards"], out, steps=60, batch_size=8, lr=3e-3, diffusion=diffusion)
    monkeypatch.undo()
    assert result["steps"] == 60 and result["images"] == 48

    base = UNet2DConditionModel.from_pretrained(out / "unet").eval()
    model = build_model(dataclasses.replace(config, sd_path=str(out), vae_path=None), diffusion)
    assert model.denoiser.unet.training and model.garmnet.unet.training
    base_state = base.state_dict()
    den = {k: v for k, v in model.denoiser.unet.state_dict().items() if not is_adapter_parameter(k)}
    assert den.keys() == base_state.keys()
    for k, v in den.items():
        torch.testing.assert_close(v, base_state[k], rtol=0, atol=0, msg=k)
    garm = model.garmnet.unet.state_dict()
    c = base.config.in_channels
    torch.testing.assert_close(garm["conv_in.weight"][:, :c], base_state["conv_in.weight"], rtol=0, atol=0)
    assert garm["conv_in.weight"][:, c:].abs().max() == 0  # the mask channel starts at zero
    for k, v in base_state.items():
        if k != "conv_in.weight":
            torch.testing.assert_close(garm[k], v, rtol=0, atol=0, msg=k)

    text = CLIPTextModel.from_pretrained(out / "text_encoder").eval()
    ids = SimpleTokenizer(context_length=77)([config.prompts[k] for k in CATEGORIES] + ["a photo of a person", ""])
    with torch.no_grad():
        table = text(ids).last_hidden_state  # (5, 77, D): the saved encoder's prompts
    torch.testing.assert_close(model.prompts.embeddings, table[[0, 1, 2, 4]])
    # every prompt training fed is one of the saved encoder's, and each of them was fed
    rows = [((table - e).abs().amax((1, 2)) < 1e-5).nonzero().flatten().tolist() for b in fed for e in b]
    assert all(rows), "training fed a prompt embedding the saved text encoder does not give"
    assert {r[0] for r in rows} == {0, 1, 2, 3, 4}
    stats = json.loads((Path(world["vae"]) / "config.json").read_text())  # base/vae is the demo's autoencoder
    assert model.vae.latents_std.flatten().tolist() == pytest.approx(stats["latents_std"])

    # The loss, written out here: x0-prediction on the zero-terminal-SNR schedule (the demo's), on fixed draws.
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                          beta_end=0.012, rescale_betas_zero_snr=True, prediction_type="sample")
    from igr.base_train import load_images

    _, garments, cats = load_images(world["shards"], (64, 48))
    g = torch.Generator().manual_seed(1)
    z0 = model.vae.encode(garments[:16])
    noise, t = torch.randn(z0.shape, generator=g), torch.randint(0, 1000, (16,), generator=g)
    z_t = sched.add_noise(z0, noise, t)
    prompts = model.prompts.embeddings[cats[:16]]
    torch.manual_seed(0)  # train_tiny_base's seed: the same initial weights
    init = UNet2DConditionModel(**config.unet).eval()
    with torch.no_grad():
        before = torch.nn.functional.mse_loss(init(z_t, t, prompts).sample, z0)
        after = torch.nn.functional.mse_loss(base(z_t, t, prompts).sample, z0)
    assert after < 0.8 * before, (float(before), float(after))


def test_refuses_an_existing_folder_a_pretrained_base_and_a_missing_autoencoder(world, config, tmp_path):
    """Catches: an existing base overwritten without --overwrite, a real SD1.5 (sd_path set) replaced by a tiny
    one, and a base trained on latents without the autoencoder the later stages use."""
    from igr.base_train import train_tiny_base

    out = tmp_path / "base"
    out.mkdir()
    (out / "keep").write_text("me")
    with pytest.raises(IGRError, match="already exists"):
        train_tiny_base(config, world["shards"], out, steps=1)
    assert (out / "keep").read_text() == "me"
    with pytest.raises(IGRError, match="already pre-trained"):
        train_tiny_base(dataclasses.replace(config, sd_path="weights/sd15"), world["shards"], tmp_path / "b")
    with pytest.raises(IGRError, match="--vae-path"):
        train_tiny_base(dataclasses.replace(config, vae_path=None), world["shards"], tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_cli_writes_the_folder(world, tmp_path, capsys):
    """Catches: `igr train-base` not registered or not passing its arguments (the autoencoder) through."""
    from igr.cli import main

    out = tmp_path / "b"
    assert main(["train-base", "--shards", world["shards"], "--vae-path", world["vae"], "--out", str(out),
                 "--steps", "2", "--batch-size", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2
    for part in ("unet", "text_encoder", "vae"):
        assert (out / part / "config.json").is_file(), part
