"""Pipeline folders: export → load gives the same outputs; bad folders fail with one clear line."""

from __future__ import annotations

import pytest
import torch
from tolerance import assert_close_f32

from igr.errors import IGRError, WeightsError
from igr.export import export_pipeline, load_pipeline, write_legacy_pipeline
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
        ".igr-output",  # igr.atomic's marker: what --overwrite may replace
        "README.md",  # the model card (igr.model_card)
        "denoiser",
        "garmnet",
        "igr_pipeline.py",  # the class shim DiffusionPipeline.from_pretrained(trust_remote_code=True) imports
        "image_encoder",
        "model_index.json",
        "prompts",
        "scheduler",
        "vae",
    ]
    assert sorted(p.name for p in (out / "denoiser").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    loaded, sampling = load_pipeline(out)
    assert sampling.steps == 25 and sampling.guidance_scale == 1.5
    for m in (tiny_model, loaded):
        g = torch.Generator().manual_seed(0)
        m._out = m.restore(
            batch["person"], batch["mask"], batch["category"], num_inference_steps=3, generator=g
        )
    assert torch.equal(tiny_model._out, loaded._out)  # the same weights through the same ops: bit-equal


def test_export_refuses_to_overwrite(tiny_model, tmp_path):
    (tmp_path / "pipe").mkdir()
    with pytest.raises(IGRError, match="already exists"):
        export_pipeline(tiny_model, tmp_path / "pipe")
    assert list((tmp_path / "pipe").iterdir()) == []


def test_load_rejects_incomplete_or_mismatched_folders(tiny_model, tmp_path):
    out = export_pipeline(tiny_model, tmp_path / "new")
    (out / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(IGRError, match=r"new/vae: cannot load \(OSError: Error no file named diffusion_pytorch_model\.safetensors\)$") as info:
        load_pipeline(out)
    assert "\n" not in str(info.value)
    # the older format (model.yaml + one .safetensors per part)
    out = write_legacy_pipeline(tiny_model, tmp_path / "pipe")
    with pytest.raises(IGRError, match="not a pipeline folder"):
        load_pipeline(tmp_path)
    (out / "vae.safetensors").unlink()
    with pytest.raises(WeightsError, match=r"vae\.safetensors: missing"):
        load_pipeline(out)
    out2 = write_legacy_pipeline(tiny_model, tmp_path / "pipe2")
    from safetensors.torch import load_file, save_file

    state = load_file(str(out2 / "denoiser.safetensors"))
    key = next(k for k in state if k.endswith("conv_in.weight"))
    state[key] = torch.zeros(1)
    save_file(state, str(out2 / "denoiser.safetensors"))
    with pytest.raises(
        WeightsError, match=r"denoiser\.safetensors: 'unet\.conv_in\.weight' has shape \(1,\)"
    ):
        load_pipeline(out2)


def test_a_checkpoint_export_keeps_the_latent_statistics_of_vae_path(tmp_path):
    """Catches the export that rebuilt the YAML's autoencoder from a checkpoint: a vae_path folder's latents_mean /
    latents_std / scaling_factor (not in the state dict) were dropped, and the pipeline decoded with the wrong ones."""
    import dataclasses

    import torch.nn.functional as F

    from igr.config import CONFIG_DIR, DiffusionConfig, load_model_config
    from igr.export import export_checkpoint
    from igr.models.vae import PixelUnshuffleAutoencoder
    from igr.system import IGRSystem

    cfg = load_model_config(CONFIG_DIR / "model" / "tiny_pixel.yaml")
    vae_dir = tmp_path / "vae"
    stats = {"latents_mean": [0.3] * 48, "latents_std": [0.5] * 48, "scaling_factor": 0.7}
    PixelUnshuffleAutoencoder(patch_size=4, **stats).save_pretrained(vae_dir)
    model_cfg = dataclasses.replace(cfg, vae_path=str(vae_dir))
    system = IGRSystem(model=model_cfg, diffusion=DiffusionConfig(prediction_type="sample"))
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": system.state_dict(), "hyper_parameters": dict(system.hparams)}, ckpt)
    model, _ = load_pipeline(export_checkpoint(ckpt, tmp_path / "pipeline"))
    x = torch.rand(2, 3, 64, 48) * 2 - 1
    want = (F.pixel_unshuffle(x, 4) - 0.3) / 0.5 * 0.7  # written out here, not through FrozenVAE
    assert_close_f32(model.vae.encode(x), want, ops=4)  # elementwise: the same four ops, maybe fused otherwise
    assert_close_f32(model.vae.decode(want), x, ops=8)
