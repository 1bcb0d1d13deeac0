"""The tiny world's pre-trained CLIP image encoder (igr/clip_train.py, `igr train-clip`)."""

from __future__ import annotations

import pytest
import torch

from igr.config import CONFIG_DIR, load_model_config
from igr.errors import IGRError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from igr.cli import main

    out = tmp_path_factory.mktemp("clip") / "s"
    assert main(["make-shards", "synthetic", "--out", str(out), "--split", "train", "--num", "48",
                 "--size", "64x48", "--seed", "3"]) == 0
    return str(out / "train.json")


@pytest.fixture
def config():
    return load_model_config(CONFIG_DIR / "model" / "tiny_pixel.yaml")


def _caption_retrieval(weights: dict, config, shards: str) -> float:
    """Share of crops whose nearest caption (among the distinct ones) is their own, with the saved weights loaded
    into a fresh open_clip CLIP; crops and captions are made here, not by igr/clip_train.py."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.tokenizer import SimpleTokenizer

    from igr.clip_train import TEXT_CFG, build_clip
    from igr.data.shards import iter_samples
    from igr.models.image_encoder import garment_crop

    clip = build_clip(config).eval()
    clip.load_state_dict(weights)
    samples = list(iter_samples(shards, load_garment=False, image_size=(64, 48)))
    captions = [f"a {g['colour_family']} {g['pattern']} {g['kind'].replace('_', ' ')}, a {s['category']} garment"
                for s, g in ((s, s["meta"]["garment"]) for s in samples)]
    person = torch.stack([torch.tensor(s["person"]).permute(2, 0, 1).float() / 127.5 - 1 for s in samples])
    mask = torch.stack([torch.tensor(s["mask"])[None].float() for s in samples])
    mean, std = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    pixels = (garment_crop(person, mask, config.clip_size) - mean) / std
    distinct = sorted(set(captions))
    with torch.no_grad():
        im = torch.nn.functional.normalize(clip.encode_image(pixels), dim=-1)
        tx = torch.nn.functional.normalize(
            clip.encode_text(SimpleTokenizer(context_length=TEXT_CFG["context_length"])(distinct)), dim=-1)
    best = (im @ tx.T).argmax(1)
    return sum(distinct[i] == c for i, c in zip(best.tolist(), captions)) / len(captions)


def test_pretraining_aligns_crops_with_their_captions_and_the_model_loads_it(shards, config, tmp_path):
    """Catches: crops paired with the wrong captions (a shuffled or offset caption list), a loop that does not
    learn (no optimiser step), and a saved file whose vision weights `model.image_encoder_path` does not load as
    they were trained (wrong key prefix, text keys in the vision tower)."""
    from dataclasses import replace

    from safetensors.torch import load_file

    from igr.clip_train import train_tiny_clip
    from igr.models import build_model

    out = tmp_path / "clip.safetensors"
    result = train_tiny_clip(config, shards, out, steps=200, batch_size=32, lr=3e-3)
    assert result["crops"] == 48 and out.exists()
    weights = load_file(out)
    chance = 1 / result["distinct_captions"]
    accuracy = _caption_retrieval(weights, config, shards)
    assert accuracy > max(0.5, 5 * chance), (accuracy, chance)

    torch.manual_seed(0)
    model = build_model(replace(config, image_encoder_path=str(out)))
    pixels = torch.randn(2, 3, config.clip_size, config.clip_size)
    from igr.clip_train import build_clip

    clip = build_clip(config).eval()
    clip.load_state_dict(weights)
    with torch.no_grad():
        torch.testing.assert_close(model.image_encoder.visual(pixels), clip.visual(pixels))


def test_refuses_unlabelled_samples_an_existing_file_and_a_pretrained_encoder(shards, config, tmp_path):
    """Catches: captions invented for samples without the generator's labels, an existing encoder overwritten
    without --overwrite, and a real CLIP (image_encoder_path set) being replaced by a tiny one."""
    from dataclasses import replace

    from igr.clip_train import caption, train_tiny_clip

    assert caption({"garment": {"kind": "sleeved_dress", "colour_family": "red", "pattern": "dots"}}, "full",
                   "x") == "a red dots sleeved dress, a full garment"
    with pytest.raises(IGRError, match=r"^a\.tar: k1: meta\.json has no garment kind"):
        caption({"source": "viton-hd"}, "upper", "a.tar: k1")
    out = tmp_path / "clip.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(IGRError, match="already exists"):
        train_tiny_clip(config, shards, out, steps=1)
    assert out.read_bytes() == b"keep me"
    with pytest.raises(IGRError, match="already pre-trained"):
        train_tiny_clip(replace(config, image_encoder_path="weights/clip.bin"), shards, tmp_path / "b.safetensors")


def test_cli_writes_the_encoder(shards, tmp_path, capsys):
    """Catches: `igr train-clip` not registered or not passing its arguments through."""
    import json

    from igr.cli import main

    out = tmp_path / "c.safetensors"
    assert main(["train-clip", "--shards", shards, "--out", str(out), "--steps", "2", "--batch-size", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 2 and out.exists()
