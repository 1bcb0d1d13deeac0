"""`make gpu-smoke` without a GPU: it refuses in one line, and what it builds and times is checked on the CPU
(the sd15 config on the meta device, a tiny bf16 run of the same training harness)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest
import torch

from igr.commands import gpu_smoke
from igr.config import CONFIG_DIR


def test_without_cuda_it_stops_at_once_with_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    proc = subprocess.run([sys.executable, "-m", "igr.commands.gpu_smoke"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: gpu-smoke needs a CUDA GPU and none is visible here (torch.cuda.is_available() is False)"
    )


def test_arguments_bad_values_and_the_json_name():
    assert gpu_smoke.card_file("o", "NVIDIA H100 80GB HBM3").as_posix() == "o/NVIDIA_H100_80GB_HBM3.json"
    cfg = gpu_smoke.smoke_config(CONFIG_DIR / "model" / "sd15.yaml", (1024, 768))
    assert (cfg.sd_path, cfg.vae_path, cfg.ip_adapter_path, cfg.image_encoder_path) == (None,) * 4
    assert cfg.resolution == (1024, 768) and cfg.gradient_checkpointing and cfg.unet["block_out_channels"] == [
        320, 640, 1280, 1280]
    args = gpu_smoke.parse_args([])
    assert (args.size, args.batch, args.steps, args.stage) == ((1024, 768), 8, 20, 2)
    assert args.config == "configs/model/sd15.yaml"
    for bad in (["--size", "1000x770"], ["--steps", "2"], ["--batch", "0"]):
        assert gpu_smoke.main(bad) == 2


def test_the_smoke_model_is_sd15_at_random_init_with_checkpointing():
    """Built on the meta device from configs/model/sd15.yaml: no weight path left, the paper's sizes."""
    from igr.models import build_parts, parameter_counts

    cfg = gpu_smoke.smoke_config(CONFIG_DIR / "model" / "sd15.yaml", (1024, 768))
    assert (cfg.sd_path, cfg.vae_path, cfg.ip_adapter_path, cfg.image_encoder_path) == (None,) * 4
    assert cfg.resolution == (1024, 768) and cfg.gradient_checkpointing and cfg.tokenizer == "open_clip"
    counts = parameter_counts(build_parts(dataclasses.replace(cfg, gradient_checkpointing=False), meta=True))
    assert 855e6 < counts["denoiser"] < 865e6  # SD1.5's UNet: 859.5 M
    assert 855e6 < counts["garmnet"] < 865e6 and 20e6 < counts["adapter"] < 25e6


def test_the_training_harness_runs_tiny_in_bf16_on_the_cpu():
    """The smoke run's trainer loop and timer, with the tiny model, CPU and bf16-true instead of DeepSpeed."""
    cfg = gpu_smoke.smoke_config(CONFIG_DIR / "model" / "tiny.yaml", (64, 48))
    out = gpu_smoke.train_smoke(cfg, batch=2, steps=3, accelerator="cpu", devices=1, precision="bf16-true")
    assert out["steps"] == 3 and len(out["step_seconds"]) == 3 and out["losses_finite"]
    assert out["seconds_per_step"] > 0 and out["parameter_dtype"] == "bfloat16" and out["size"] == [64, 48]
