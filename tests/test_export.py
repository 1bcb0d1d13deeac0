"""Pipeline folders: export → load gives the same outputs; bad folders fail with one clear line."""

from __future__ import annotations

import pytest
import torch

from igr.errors import IGRError, WeightsError
from igr.export import export_pipeline, load_pipeline
from igr.models import adapter


def _perturb(model):
    # make the adapter and mask channel non-trivial so a lost tensor would show
    for name, p in model.denoiser.unet.named_parameters():
        if adapter.is_adapter_parameter(name):
            p.data.normal_(std=0.2)
    model.garmnet.unet.conv_in.weight.data[:, 4].normal_()


def test_export_then_load_gives_identical_outputs(tiny_model, batch, tmp_path):
    _perturb(tiny_model)
    out = export_pipeline(tiny_model, tmp_path / "pipe")
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",  # the model card (igr.model_card)
        "denoiser.safetensors",
        "garmnet.safetensors",
        "image_encoder.safetensors",
        "model.yaml",
        "prompts.safetensors",
        "vae.safetensors",
    ]
    loaded, sampling = load_pipeline(out)
    assert sampling.steps == 25 and sampling.guidance_scale == 1.5
    for m in (tiny_model, loaded):
        g = torch.Generator().manual_seed(0)
        m._out = m.restore(
            batch["person"], batch["mask"], batch["category"], num_inference_steps=3, generator=g
        )
    assert torch.equal(tiny_model._out, loaded._out)


def test_export_refuses_to_overwrite(tiny_model, tmp_path):
    (tmp_path / "pipe").mkdir()
    with pytest.raises(IGRError, match="already exists"):
        export_pipeline(tiny_model, tmp_path / "pipe")
    assert list((tmp_path / "pipe").iterdir()) == []


def test_load_rejects_incomplete_or_mismatched_folders(tiny_model, tmp_path):
    out = export_pipeline(tiny_model, tmp_path / "pipe")
    with pytest.raises(IGRError, match="not a pipeline folder"):
        load_pipeline(tmp_path)
    (out / "vae.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"vae\.safetensors: missing"):
        load_pipeline(out)
    out2 = export_pipeline(tiny_model, tmp_path / "pipe2")
    from safetensors.torch import load_file, save_file

    state = load_file(str(out2 / "denoiser.safetensors"))
    key = next(k for k in state if k.endswith("conv_in.weight"))
    state[key] = torch.zeros(1)
    save_file(state, str(out2 / "denoiser.safetensors"))
    with pytest.raises(
        WeightsError, match=r"denoiser\.safetensors: 'unet\.conv_in\.weight' has shape \(1,\)"
    ):
        load_pipeline(out2)
