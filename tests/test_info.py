"""`igr info`: parameter counts on the meta device, SD1.5 size included."""

from __future__ import annotations

import json
import subprocess
import sys

from igr.cli import main

SD15_UNET = 859_520_964  # UNet2DConditionModel of SD1.5


def test_info_sd15_counts(capsys):
    assert main(["info", "-c", "configs/model/sd15.yaml", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    p = out["parameters"]
    assert p["denoiser"] == SD15_UNET
    assert p["garmnet"] == SD15_UNET + 320 * 3 * 3  # one zero-initialised mask input channel
    # IP-Adapter SD1.5: ImageProjection (1024 -> 4 x 768, LayerNorm) + K/V for the 16 cross-attention layers
    # (2 per down level, 3 per up level at widths 320/640/1280, 1 in the middle at 1280)
    widths = 5 * (320 + 640 + 1280) + 1280
    assert p["adapter"] == 1024 * 3072 + 3072 + 2 * 768 + 2 * 768 * widths == 22_319_616
    assert p["image_encoder"] == 632_076_800  # open_clip ViT-H-14 vision tower
    assert p["text_encoder"] == 123_060_480  # CLIP ViT-L/14 text encoder
    assert p["vae"] == 83_653_863
    assert out["seconds"] < 60


def test_info_bad_config_is_one_line(tmp_path):
    cfg = tmp_path / "m.yaml"
    cfg.write_text("name: x\nunett: {}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "igr.cli", "info", "-c", str(cfg)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {cfg}: unknown key 'unett'; did you mean unet?"


def test_experiment_files_name_their_model_and_diffusion(tmp_path):
    """`igr export --untrained` and friends read an experiment YAML like LightningCLI does: ``model.model`` may
    be a path relative to the experiment file; ``model.diffusion`` holds the parameterisation."""
    import pytest

    from igr.config import CONFIG_DIR, DiffusionConfig, load_diffusion_config, load_model_config
    from igr.errors import IGRError

    demo = CONFIG_DIR / "experiment" / "demo.yaml"
    assert load_model_config(demo) == load_model_config(CONFIG_DIR / "model" / "tiny_pixel.yaml")
    assert load_diffusion_config(demo).prediction_type == "sample"
    assert load_diffusion_config(CONFIG_DIR / "experiment" / "demo_finetune.yaml") == load_diffusion_config(demo)
    assert load_diffusion_config(CONFIG_DIR / "experiment" / "coarse.yaml") == DiffusionConfig()  # the paper's ε
    assert load_diffusion_config(CONFIG_DIR / "model" / "tiny.yaml") == DiffusionConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  model: tiny.yaml\n  diffusion: {prediction: v_prediction}\n")
    with pytest.raises(IGRError, match=r"bad.yaml: model.diffusion: unknown key 'prediction'.*prediction_type"):
        load_diffusion_config(bad)
