"""HQFT curation: each rule checked against the synthetic ground-truth flags; the CLI end to end."""

import json
import os

import numpy as np
import pytest
from data_helpers import write_synthetic

from igr.cli import main
from igr.data import iter_samples
from igr.data.commands.curate import load_config
from igr.data.curation import (
    CurationConfig,
    Decision,
    decide,
    fix_proportion,
    flag_agreement,
    measure_garment,
    measure_mask,
)
from igr.data.synthetic import SyntheticConfig, generate_sample


@pytest.fixture(scope="module")
def decisions():
    cfg = load_config(None, [])  # the shipped thresholds
    scfg = SyntheticConfig(size=(128, 96), defect_fraction=0.6)
    out = []
    for i in range(240):
        s = generate_sample(11, "curate", i, scfg)
        m = measure_mask(s.mask, cfg.measure_size)
        m.update(measure_garment(s.garment, cfg.garment_bg_threshold))
        action, rule, failed = decide(m, s.category, cfg)
        out.append(Decision(str(i), s.category, action, rule, failed, m, s.meta["flags"]))
    return out


@pytest.mark.parametrize("rule,min_precision,min_recall", [
    ("truncation", 0.95, 0.95),
    ("occlusion", 0.95, 0.9),
    ("side_view", 0.85, 0.8),
    ("extreme_proportion", 0.95, 0.9),
])
def test_rule_agrees_with_ground_truth_flags(decisions, rule, min_precision, min_recall):
    a = flag_agreement(decisions)[rule]
    assert a["tp"] >= 15, a  # each defect kind is well represented
    assert a["precision"] >= min_precision, a
    assert a["recall"] >= min_recall, a


def test_clean_samples_are_kept(decisions):
    clean = [d for d in decisions if not any(d.flags.values())]
    kept = sum(d.action == "keep" for d in clean)
    assert len(clean) > 60 and kept / len(clean) >= 0.95
    assert all(d.action == "fix" for d in decisions if d.rule == "extreme_proportion")


def test_measures_on_hand_made_masks():
    m = np.zeros((100, 80), np.uint8)
    m[20:80, 20:60] = 1
    base = measure_mask(m)
    assert base["border_frac"] == 0 and base["hole_frac"] == 0 and base["fragment_frac"] == 0
    assert base["asymmetry"] < 0.02 and abs(base["bbox_fill"] - 1) < 1e-6
    cut = m.copy()
    cut[60:] = 0
    cut[40:100, 30:50] = 1  # reaches the bottom edge over half the garment width
    assert measure_mask(cut)["border_frac"] == pytest.approx(20 / 40)
    holed = m.copy()
    holed[40:55, 30:45] = 0
    assert measure_mask(holed)["hole_frac"] == pytest.approx(225 / 2400, abs=1e-3)
    split = m.copy()
    split[45:50] = 0
    assert measure_mask(split)["fragment_frac"] == pytest.approx(25 / 55, abs=0.01)  # rows 20-45 of 20-45, 50-80
    side = m.copy()
    side[20:40, 60:75] = 1  # one sleeve only
    assert measure_mask(side)["asymmetry"] > 0.18
    leaning = np.zeros((100, 80), np.uint8)
    for y in range(10, 90):  # a symmetric bar, leaning 15 degrees: not a side view
        x = int(40 + (y - 50) * 0.27)
        leaning[y, x - 6:x + 6] = 1
    assert measure_mask(leaning)["asymmetry"] < 0.1


def test_fix_proportion_reframes_without_stretching():
    cfg = CurationConfig()
    g = np.full((128, 96, 3), 240, np.uint8)
    g[54:74, 40:56] = (20, 120, 200)  # a tiny 20x16 garment
    before = measure_garment(g)
    assert before["frame_fill"] < 0.2
    fixed = fix_proportion(g, cfg)
    after = measure_garment(fixed)
    assert fixed.shape == g.shape and abs(after["frame_fill"] - cfg.target_fill) < 0.04
    assert abs(after["aspect"] - before["aspect"]) < 0.1  # same proportions, only re-framed
    assert (fixed[0, 0] == 240).all()


def test_config_overrides_and_errors(tmp_path):
    cfg = load_config(None, ["side_view_max_asymmetry=0.3", "extreme_fill_range=[0.5,0.95]"])
    assert cfg.side_view_max_asymmetry == 0.3 and cfg.extreme_fill_range == (0.5, 0.95)
    bad = tmp_path / "bad.yaml"
    bad.write_text("no_such_threshold: 1\n")
    from igr.errors import IGRError

    with pytest.raises(IGRError, match="unknown curation setting"):
        load_config(str(bad), [])
    with pytest.raises(IGRError, match="not found"):
        load_config(str(tmp_path / "missing.yaml"), [])


def test_curate_cli_automatic_rules(tmp_path, capsys):
    src, out = str(tmp_path / "coarse"), str(tmp_path / "hqft")
    write_synthetic(src, 60, size=(128, 96), defect_fraction=0.5, seed=4)
    write_synthetic(src, 5, split="val", size=(128, 96), seed=5)  # another split in the same folder
    assert main(["curate", src, "--split", "train", "--out", out]) == 0
    text = capsys.readouterr().out
    assert "removed by truncation" in text and "the paper kept 20%" in text and "precision" in text
    index = json.load(open(os.path.join(out, "train.json")))
    report = json.load(open(os.path.join(out, "curation-report.json")))
    removed = sum(report["removed"].values())
    assert index["num_samples"] == report["kept"] == 60 - removed and removed > 5
    assert len(report["samples"]) == 60 and report["fixed"] >= 1  # only the train split was read
    kept = list(iter_samples(out))
    assert all("curation" in s["meta"] for s in kept)
    fixed = [s for s in kept if s["meta"]["curation"]["fixed"]]
    assert fixed and all(0.7 < measure_garment(s["garment"])["frame_fill"] < 0.9 for s in fixed)
    # the kept samples carry no truncation/occlusion/side-view flag (the rules are precise here)
    bad = [s for s in kept if any(s["meta"]["flags"][f] for f in ("truncated", "occluded"))]
    assert not bad
    assert main(["curate", src, "--out", out]) == 2  # no silent overwrite


def test_curate_cli_keep_list(tmp_path, capsys):
    src, out = str(tmp_path / "coarse"), str(tmp_path / "hand")
    write_synthetic(src, 8, defect_fraction=0.0)
    keys = [s["key"] for s in iter_samples(src)]
    keep = tmp_path / "keys.txt"
    keep.write_text(f"# hand-picked\n{keys[1]}\n{keys[5]}  good pose\n\nmissing_key\n")
    assert main(["curate", src, "--out", out, "--keep-list", str(keep)]) == 0
    assert [s["key"] for s in iter_samples(out)] == [keys[1], keys[5]]
    text = capsys.readouterr().out
    assert "removed by not_in_keep_list: 6" in text and "1 key(s) of the keep list are not in" in text
    assert main(["curate", src, "--out", str(tmp_path / "x"), "--keep-list", str(tmp_path / "nope.txt")]) == 2


def test_the_fine_tune_set_is_the_papers_20_percent_by_default(tmp_path, capsys):
    """configs/paper.yaml's hqft_keep_fraction drives the default (it used to be null: 78 % of the synthetic set
    passed the rules and all of it was kept). `--set keep_fraction=null` keeps every sample that passes."""
    from igr.config import PAPER

    assert PAPER["hqft_keep_fraction"] == 0.2
    assert load_config(None, []).keep_fraction == 0.2 and CurationConfig().keep_fraction == 0.2
    src = str(tmp_path / "coarse")
    write_synthetic(src, 30, size=(128, 96), defect_fraction=0.3, seed=4)
    assert main(["curate", src, "--out", str(tmp_path / "hqft")]) == 0
    report = json.load(open(tmp_path / "hqft" / "curation-report.json"))
    assert report["kept"] == 6 and report["removed"]["below_keep_fraction"] > 0  # round(0.2 * 30)
    assert main(["curate", src, "--out", str(tmp_path / "all"), "--set", "keep_fraction=null"]) == 0
    assert json.load(open(tmp_path / "all" / "curation-report.json"))["kept"] > 6
