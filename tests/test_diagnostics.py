"""``igr diagnose``: the condition-reliance measure tells a used condition from an ignored one."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from conftest import make_batch

from igr.cli import main
from igr.diagnostics import condition_reliance


def _reliance(model, steps=(999, 400)):
    b = make_batch(4, seed=3)
    b["mask"][2:, :, :20] = 0  # different masks, so GarmNet's inputs differ in more than the person pixels
    return condition_reliance(model, b["person"], b["mask"], b["category"][:4], b["garment"], list(steps))


def test_a_condition_the_model_cannot_see_has_zero_reliance_and_the_others_do_not(tiny_config):
    from igr.models import build_model

    torch.manual_seed(0)
    # ip_scale 0: the IP-Adapter's tokens are multiplied by zero, so swapping the image embedding changes nothing
    model = build_model(dataclasses.replace(tiny_config, ip_scale=0.0)).eval()
    for r in _reliance(model):
        assert r.all_swapped > 0
        assert r.reliance["ip_adapter"] == 0.0
        assert r.reliance["garmnet"] > 0.01  # a random-init denoiser gives GarmNet's tokens ~half its attention
        assert r.reliance["prompt"] > 0.0
        assert r.loss > 0


def test_the_denoising_errors_are_the_prediction_s_and_the_input_s(tiny_config):
    """input_z0_error is σ/α times the noise's RMS; z0_error the RMS error of (z_t − σ·ε̂)/α for this ε-model
    (both by hand, from the schedule)."""
    from igr.models import build_model
    from igr.sampling import training_scheduler

    torch.manual_seed(0)
    model = build_model(tiny_config).eval()
    b = make_batch(4, seed=3)
    rows = condition_reliance(model, b["person"], b["mask"], b["category"][:4], b["garment"], [999, 30], seed=5)
    z0 = model.vae.encode(b["garment"]).float()
    noise_rms = torch.randn(z0.shape, generator=torch.Generator().manual_seed(5)).pow(2).mean().sqrt().item()
    ab = float(training_scheduler(model.diffusion).alphas_cumprod[30])
    assert rows[1].input_z0_error == pytest.approx(((1 - ab) / ab) ** 0.5 * noise_rms, rel=1e-4)
    assert rows[0].input_z0_error is None or rows[0].input_z0_error > 10 * rows[1].input_z0_error
    assert model.diffusion.prediction_type == "epsilon"
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(5))
    t = torch.full((4,), 30)
    z_t = ab**0.5 * z0 + (1 - ab) ** 0.5 * noise
    with torch.no_grad():
        cond = model.conditions(model.encode_inputs(b["person"], b["mask"], b["category"][:4]))
        eps = model.eps(z_t, t, cond).float()
    by_hand = ((z_t - (1 - ab) ** 0.5 * eps) / ab**0.5 - z0).pow(2).mean().sqrt().item()
    assert rows[1].z0_error == pytest.approx(by_hand, rel=1e-3)


def test_without_garmnet_there_is_no_garmnet_row(tiny_config):
    from igr.models import build_model

    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_config, use_garmnet=False)).eval()
    rows = _reliance(model, steps=(500,))
    assert set(rows[0].reliance) == {"ip_adapter", "prompt"}
    assert rows[0].reliance["ip_adapter"] > 0.05


def test_igr_diagnose_writes_its_figures(tiny_pipeline_dir, tmp_path, capsys):
    from data_helpers import write_synthetic

    write_synthetic(str(tmp_path / "shards"), 4, split="test", size=(64, 48))
    out = tmp_path / "diag.json"
    args = ["diagnose", "--model", str(tiny_pipeline_dir), "--shards", str(tmp_path / "shards" / "test.json"),
            "--num", "3", "--timesteps", "999,10", "--out", str(out)]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert doc["samples"] == 3 and [r["t"] for r in doc["rows"]] == [999, 10]
    assert set(doc["rows"][0]["reliance"]) == {"garmnet", "ip_adapter", "prompt"}
    assert doc["rows"][1]["z0_error"] > 0 and doc["rows"][1]["input_z0_error"] > 0
    assert "reliance on each condition" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--timesteps", "5000"], ["--timesteps", "a,b"], ["--timesteps", ""], ["--num", "1"]])
def test_igr_diagnose_refuses_bad_arguments_in_one_line(tiny_pipeline_dir, tmp_path, capsys, bad):
    args = ["diagnose", "--model", str(tiny_pipeline_dir), "--shards", str(tmp_path / "none.json"), *bad]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("--timesteps" in err[0] or "--num" in err[0])
