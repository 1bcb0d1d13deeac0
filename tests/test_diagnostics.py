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
    assert "reliance on each condition" in capsys.readouterr().out


@pytest.mark.parametrize("bad", [["--timesteps", "5000"], ["--timesteps", "a,b"], ["--timesteps", ""], ["--num", "1"]])
def test_igr_diagnose_refuses_bad_arguments_in_one_line(tiny_pipeline_dir, tmp_path, capsys, bad):
    args = ["diagnose", "--model", str(tiny_pipeline_dir), "--shards", str(tmp_path / "none.json"), *bad]
    assert main(args) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and ("--timesteps" in err[0] or "--num" in err[0])
