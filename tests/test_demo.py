"""The demo path end to end at a reduced step count (what `make demo` runs, in about a minute), and the
masked-crop baseline row of reports."""

from __future__ import annotations

import json

import pytest
import torch

from igr.demo import run_demo
from igr.evaluate import masked_crop_baseline


def test_masked_crop_baseline_keeps_only_the_garment_on_white():
    person = torch.full((1, 3, 8, 6), -1.0)  # black person...
    person[..., 2:6, 1:3] = 1.0  # ...with a white 4x2 garment
    mask = torch.zeros(1, 1, 8, 6)
    mask[..., 2:6, 1:3] = 1
    out = masked_crop_baseline(person, mask, (8, 4))
    assert out.shape == (1, 3, 8, 4)
    torch.testing.assert_close(out, torch.ones_like(out))  # garment white, padding white, no black background
    person[..., 2:6, 1:3] = -1.0  # a black 4x2 garment into an 8x8 output: scaled to 8x4, centred, white sides
    out = masked_crop_baseline(person, mask, (8, 8))[0, 0]
    assert out[:, :2].eq(1).all() and out[:, 6:].eq(1).all() and out[:, 2:6].lt(0.1).all()


def _fresh_working_directory(tmp_path, monkeypatch) -> None:
    # The demo's eval reads the default metrics config, whose weights_dir (weights/metrics) is relative to the
    # working directory: run in a fresh one (with the demo's configs/ paths), so that `make download-weights` in
    # the checkout changes nothing here.
    from igr.config import CONFIG_DIR

    (tmp_path / "weights" / "metrics").mkdir(parents=True)
    (tmp_path / "configs").symlink_to(CONFIG_DIR, target_is_directory=True)
    monkeypatch.chdir(tmp_path)


@pytest.mark.slow
def test_demo_quick_profile_runs_every_stage_with_the_ablations(tmp_path, monkeypatch):
    """Catches: a Table 2 row (w/o GarmNet, w/o HQFT) missing from the demo's report, or trained from the wrong stage;
    and, with demo-long's knobs (its own UNet widths and eval guidance), a base UNet built with the default widths
    instead of the profile's (every later stage loads its UNets from the base), or an eval that ignores the
    profile's guidance."""
    import dataclasses

    import igr.demo

    _fresh_working_directory(tmp_path, monkeypatch)
    profile = dataclasses.replace(igr.demo.PROFILES["quick"], unet_channels=(16, 32), guidance=2.0, paper_hqft=True)
    monkeypatch.setitem(igr.demo.PROFILES, "quick", profile)
    report = run_demo(str(tmp_path / "out"), str(tmp_path / "shards"), profile="quick", ablations=True)
    text = report.read_text()
    for stage in ("coarse w/o GarmNet", "export coarse w/o GarmNet", "fine-tune w/o GarmNet", "export w/o GarmNet",
                  "fine-tune w/o HQFT, uncurated", "export w/o HQFT, uncurated", "HQFT curation, the paper's share",
                  "fine-tune, the paper's HQFT", "fine-tune w/o GarmNet, the paper's HQFT"):
        assert f"| {stage} |" in text, stage
    rows = json.loads((tmp_path / "out" / "metrics.json").read_text())["rows"]
    paper_rows = {"IGR tiny, the paper's HQFT (t uniform, best 20 %)", "w/o GarmNet, the paper's HQFT (t uniform, best 20 %)"}
    assert {"w/o GarmNet", "w/o HQFT", "w/o HQFT, equal steps (fine-tuned on the uncurated set)"} | paper_rows <= set(rows)
    # the equal-steps control: HQFT's fine-tune from the same coarse export, on the uncurated training shards
    out, shards = tmp_path / "out", tmp_path / "shards"
    control = next(line for line in text.splitlines() if line.startswith("| fine-tune w/o HQFT, uncurated |"))
    assert f"--data.train_shards={shards / 'train.json'}" in control and "shards-hqft" not in control
    assert f"--model.init_from={out / 'pipeline-no-hqft'}`" in control
    assert "-c configs/experiment/demo_finetune.yaml" in control
    assert "Table 2 order on SSIM: full > w/o HQFT > w/o GarmNet" in text
    # the paper's HQFT: t uniform, on the paper's share of the curated set, from each variant's coarse export
    curation = json.loads((shards.parent / "shards-hqft-paper" / "curation-report.json").read_text())
    assert curation["kept_fraction"] == pytest.approx(0.2, abs=0.05)
    for stage, root, init in (("fine-tune, the paper's HQFT", "finetune-paper-hqft", "pipeline-no-hqft"),
                              ("fine-tune w/o GarmNet, the paper's HQFT", "finetune-paper-hqft-no-garmnet",
                               "pipeline-no-hqft-no-garmnet")):
        line = next(x for x in text.splitlines() if x.startswith(f"| {stage} |"))
        assert f"--model.init_from={out / init}`" in line and "shards-hqft-paper/train.json" in line
        assert ("use_garmnet=false" in line) == ("no-garmnet" in root)
        assert "timestep_bias: none" in (out / root / "config.yaml").read_text()
    assert "timestep_bias: later" in (out / "finetune" / "config.yaml").read_text()
    # Table 2 beside the paper's, per metric and set, with each neighbour's lead on the eval's bootstrap draws
    table2 = json.loads((out / "metrics.json").read_text())["table2"]
    assert set(table2) == {"IGR tiny (coarse + HQFT)", "IGR tiny, the paper's HQFT (t uniform, best 20 %)"}
    paper = {e["metric"]: e for e in table2["IGR tiny, the paper's HQFT (t uniform, best 20 %)"]}
    assert set(paper) == {"ssim", "fd_tiny", "kd_tiny"} and "## Table 2 beside the paper's" in text
    assert all(n["difference"][1] is not None for e in paper.values() for n in e["neighbours"])
    assert paper["ssim"]["tiny"]["w/o GarmNet"] == rows["w/o GarmNet, the paper's HQFT (t uniform, best 20 %)"]["ssim"]
    assert "Table 2 order on fd_tiny (the paper's HQFT (t uniform, best 20 %)): full < w/o HQFT < w/o GarmNet" in text
    # every model the report scores has the profile's widths: the base, each trained row and the init row
    from safetensors import safe_open

    assert json.loads((out / "base" / "unet" / "config.json").read_text())["block_out_channels"] == [16, 32]
    for folder in ("pipeline", "pipeline-no-hqft", "pipeline-no-hqft-equal-steps", "pipeline-no-garmnet", "init"):
        files = sorted((out / folder).rglob("*.safetensors"))
        widths = set()
        for f in files:
            with safe_open(str(f), "pt") as st:
                widths |= {tuple(st.get_slice(k).get_shape()) for k in st.keys() if k.endswith("conv_in.weight")}
        assert widths and all(w[0] == 16 for w in widths), (folder, widths)
    evaluation = next(line for line in text.splitlines() if line.startswith("| eval |"))
    assert "--guidance 2.0 " in evaluation and "every row restored with guidance 2.0" in text


# slow (~3 min CPU, a quarter of the default suite): the whole quick demo end to end, run by `make test-all` (its
# ablations variant above is slow too). The default suite keeps its parts: the stage wiring and lanes
# (test_demo_long_trains_the_papers_hqft_from_each_coarse_export, test_a_lane_runs_its_stages_in_order_...,
# test_side_by_side_stages_...), the demo's fit configs training (test_train.py::
# test_every_experiment_config_trains_on_the_tiny_model[demo.yaml, demo_finetune.yaml]), the base UNet and CLIP
# stages (test_tiny_base.py, test_tiny_clip.py), export and eval rows (test_export.py, test_evaluate.py).
@pytest.mark.slow
def test_demo_quick_profile_runs_every_stage(tmp_path, monkeypatch):
    _fresh_working_directory(tmp_path, monkeypatch)
    out = tmp_path / "out"
    stale = out / "coarse" / "checkpoints" / "last.ckpt"  # a previous demo's run: must not be fine-tuned from
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    old_diag = out / "diagnose" / "pipeline-no-garmnet.json"  # an earlier ablation run's: not this run's row
    old_diag.parent.mkdir()
    old_diag.write_text('{"rows": []}')
    report = run_demo(str(out), str(tmp_path / "shards"), profile="quick")
    assert not old_diag.exists() and "| pipeline-no-garmnet |" not in report.read_text()
    assert not (out / "coarse" / "checkpoints" / "last-v1.ckpt").exists() and stale.stat().st_size > 5
    text = report.read_text()
    for stage in ("autoencoder", "base UNet (tiny SD1.5)", "image encoder (tiny CLIP)", "tiny-world classifier",
                  "HQFT curation", "coarse", "export coarse", "fine-tune", "export", "export init", "eval"):
        assert f"| {stage} |" in text, stage
    # HQFT starts from the coarse stage's EMA weights as exported (the model a w/o HQFT row scores)
    assert f"--out {out / 'pipeline-no-hqft'} --ema" in text and f"--model.init_from={out / 'pipeline-no-hqft'}" in text
    # both UNets start from the pre-trained base, and the init row is the model the coarse stage started from
    assert "--model.model.sd_path=" in text and f"--sd-path {out / 'base'}" in text
    assert "## Goals (issue 13)" in text and "Tiny-world metrics" in text
    assert "| pipeline | 999 |" in text and json.loads((out / "diagnose" / "pipeline.json").read_text())["rows"]
    summary = json.loads((out / "metrics.json").read_text())
    rows = summary["rows"]
    assert set(rows) == {
        "IGR tiny (coarse + HQFT)", "same model at initialisation",
        "masked-crop baseline", "category-mean baseline", "autoencoder reconstruction of the ground truth",
        "ground truth (classifier ceiling)",
    }
    for name, values in rows.items():
        assert 0 < values["ssim"] <= 1, name
        for key in ("kind_acc", "colour_acc", "pattern_acc", "fd_tiny", "kd_tiny"):
            assert isinstance(values[key], float), (name, key)
            lo, hi = summary["ci95"][name][key]
            assert lo <= hi, (name, key)
    diff = summary["differences"]["same model at initialisation"]
    assert diff["versus"] == "IGR tiny (coarse + HQFT)" and "ground truth (classifier ceiling)" not in summary["differences"]
    assert diff["ssim"][0] == pytest.approx(rows["IGR tiny (coarse + HQFT)"]["ssim"] - rows["same model at initialisation"]["ssim"])
    assert "minus each row** (paired bootstrap" in text
    assert rows["autoencoder reconstruction of the ground truth"]["ssim"] == 1.0  # the exact autoencoder
    assert summary["autoencoder_reconstruction_ssim"] == 1.0
    assert rows["masked-crop baseline"]["fid"].startswith("n/a")  # no Inception weights here: said, not faked
    assert set(summary["goals"]) >= {"SSIM above the masked-crop baseline", "colour family right ≥ 70 %"}
    assert summary["table2"] == {} and "Table 2 beside" not in text  # no ablation rows, nothing to set beside
    assert (out / "pipeline" / "model_index.json").is_file() and (out / "eval" / "samples.png").is_file()


def test_side_by_side_stages_are_all_waited_for_and_a_failure_names_its_stage(tmp_path):
    """Catches: a failed side-by-side stage going unnoticed, a failure raised while another stage still runs (left
    behind, writing into the next stage's files), and stages missing from the report's command table."""
    import sys

    from igr.demo import Runner
    from igr.errors import IGRError

    done = tmp_path / "done"
    slow = [sys.executable, "-c", f"import time, pathlib; time.sleep(1); pathlib.Path({str(done)!r}).write_text('x')"]
    failing = [sys.executable, "-c", "raise SystemExit(3)"]
    run = Runner()
    with pytest.raises(IGRError, match=r"^demo stage 'broken stage' failed \(exit 3\)"):
        run.parallel([("broken stage", failing), ("slow stage", slow)], tmp_path / "logs")
    assert done.read_text() == "x"
    assert [(e["stage"], e["rc"]) for e in run.log] == [("broken stage", 3), ("slow stage", 0)]
    assert run.log[0]["seconds"] < 0.8 <= run.log[1]["seconds"]  # each timed to its own end
    assert (tmp_path / "logs" / "slow-stage.log").is_file()


def test_a_lane_runs_its_stages_in_order_and_stops_at_a_failure(tmp_path):
    """Catches: a lane's stages started together (the second reading what the first has not written yet), a stage
    started after another lane failed, and a lane's stages missing from the report's command table."""
    import sys

    from igr.demo import Runner
    from igr.errors import IGRError

    first = tmp_path / "first"
    write = [sys.executable, "-c", f"import time, pathlib; time.sleep(0.5); pathlib.Path({str(first)!r}).write_text('1')"]
    read = [sys.executable, "-c", f"import pathlib; assert pathlib.Path({str(first)!r}).read_text() == '1'"]
    run = Runner()
    run.parallel([("alone", [sys.executable, "-c", "pass"]), [("write", write), ("read", read)]], tmp_path / "logs")
    assert [(e["stage"], e["rc"]) for e in run.log] == [("alone", 0), ("write", 0), ("read", 0)]
    never = tmp_path / "never"
    failing = [sys.executable, "-c", "raise SystemExit(4)"]
    slow = [sys.executable, "-c", "import time; time.sleep(0.5)"]
    with pytest.raises(IGRError, match=r"^demo stage 'fails' failed \(exit 4\)"):
        run.parallel([("fails", failing),
                      [("slow", slow), ("after", [sys.executable, "-c", f"open({str(never)!r}, 'w')"])]],
                     tmp_path / "logs")
    assert not never.exists() and [e["stage"] for e in run.log[3:]] == ["fails", "slow"]


def test_a_profile_with_its_own_unet_widths_writes_the_model_every_stage_reads(tmp_path, monkeypatch):
    """Catches: demo-long's model file losing anything of configs/model/tiny_pixel.yaml but the widths (it must load
    as the same model with wider UNets), or a default profile writing one (the default demo builds from the file)."""
    import dataclasses

    from igr.config import CONFIG_DIR, load_model_config
    from igr.demo import PROFILES, write_model_yaml

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(CONFIG_DIR, target_is_directory=True)
    assert write_model_yaml(PROFILES["default"], tmp_path / "default") is None
    assert not (tmp_path / "default").exists()
    path = write_model_yaml(PROFILES["long"], tmp_path / "long")
    wide, base = load_model_config(path), load_model_config(CONFIG_DIR / "model" / "tiny_pixel.yaml")
    assert wide.unet["block_out_channels"] == list(PROFILES["long"].unet_channels) != base.unet["block_out_channels"]
    assert dataclasses.replace(wide, name=base.name, unet={**wide.unet, "block_out_channels": [48, 64]}) == base


def test_export_model_override_needs_untrained(tmp_path, capsys):
    """Catches: --model silently ignored beside a checkpoint (which carries its own model config)."""
    from igr.cli import main

    assert main(["export", str(tmp_path / "x.ckpt"), "--model", "m.yaml", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--model goes with --untrained" in err[0] and not (tmp_path / "o").exists()


def test_demo_long_trains_the_papers_hqft_from_each_coarse_export(tmp_path, monkeypatch):
    """demo-long's stages as its Runner is given them (nothing run). Catches: the second Table 2's fine-tunes given
    the demo's curated set or its timestep bias instead of the paper's share with t uniform, started from the wrong
    coarse export, w/o GarmNet's trained with GarmNet, a fine-tune not followed by the export the eval scores, or its
    rows missing from the eval."""
    import igr.demo

    lanes_seen: list[list[list[tuple[str, list[str]]]]] = []

    class Recorder:
        log: list = []

        def __call__(self, stage, cmd):
            self.parallel([(stage, cmd)])

        def parallel(self, lanes, logs=None):
            lanes_seen.append([[lane] if isinstance(lane, tuple) else list(lane) for lane in lanes])

    from igr.config import CONFIG_DIR

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(CONFIG_DIR, target_is_directory=True)  # demo-long writes its model file
    monkeypatch.setattr(igr.demo, "Runner", Recorder)
    monkeypatch.setattr(igr.demo, "_shards_current", lambda *a: True)
    monkeypatch.setattr(igr.demo, "write_demo_report", lambda *a, **k: tmp_path / "report.md")
    igr.demo.run_demo("out", "sh", profile="long")
    stages = {stage: " ".join(cmd) for stage_lanes in lanes_seen for lane in stage_lanes for stage, cmd in lane}
    assert "--out sh-hqft-paper --set keep_fraction=0.2 " in stages["HQFT curation, the paper's share"]
    for stage, init in (("fine-tune, the paper's HQFT", "out/pipeline-no-hqft"),
                        ("fine-tune w/o GarmNet, the paper's HQFT", "out/pipeline-no-hqft-no-garmnet")):
        cmd = stages[stage]
        assert "--data.train_shards=sh-hqft-paper/train.json" in cmd and "--model.diffusion.timestep_bias=none" in cmd
        assert cmd.endswith(f"--model.init_from={init}") and ("use_garmnet=false" in cmd) == ("GarmNet" in stage)
    assert "timestep_bias" not in stages["fine-tune"] + stages["fine-tune w/o GarmNet"]
    # each fine-tune runs after its coarse export, and its export after it, in one lane
    lanes = [[stage for stage, _ in lane] for stage_lanes in lanes_seen for lane in stage_lanes]
    assert ["coarse w/o GarmNet", "export coarse w/o GarmNet", "fine-tune w/o GarmNet",
            "fine-tune w/o GarmNet, the paper's HQFT"] in lanes
    assert ["fine-tune, the paper's HQFT", "export, the paper's HQFT"] in lanes
    assert "finetune-paper-hqft/checkpoints/last.ckpt --out out/pipeline-paper-hqft --ema" in stages[
        "export, the paper's HQFT"]
    assert "finetune-paper-hqft-no-garmnet/checkpoints/last.ckpt --out out/pipeline-paper-hqft-no-garmnet --ema" in \
        stages["export w/o GarmNet, the paper's HQFT"]
    evaluation = stages["eval"]
    for folder, name in (("pipeline-paper-hqft", "IGR tiny, the paper's HQFT (t uniform, best 20 %)"),
                         ("pipeline-paper-hqft-no-garmnet", "w/o GarmNet, the paper's HQFT (t uniform, best 20 %)")):
        assert f"--model out/{folder} --name {name} --model" in evaluation
