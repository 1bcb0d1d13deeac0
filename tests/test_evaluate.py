"""`igr eval`: a guidance sweep gives one row per scale with a sample grid; bad arguments fail before any work."""

from __future__ import annotations

import json

import pytest

from igr.cli import main
from igr.errors import IGRError
from igr.evaluate import evaluate
from igr.export import export_pipeline


@pytest.fixture
def setup(tmp_path, tiny_model):
    pipe = export_pipeline(tiny_model, tmp_path / "pipe")
    assert main(["make-shards", "synthetic", "--out", str(tmp_path / "shards"), "--split", "test", "--num", "4",
                 "--size", "64x48", "--seed", "3"]) == 0
    return pipe, tmp_path / "shards" / "test.json"


def test_guidance_sweep_rows_and_grid(setup, tmp_path):
    pipe, shards = setup
    result = evaluate([("tiny", str(pipe))], str(shards), tmp_path / "eval", guidance=[1.0, 2.0], steps=2,
                      batch_size=2)
    assert set(result["rows"]) == {"tiny (s=1)", "tiny (s=2)"}
    ssim = [result["rows"][n]["paired"]["ssim"] for n in ("tiny (s=1)", "tiny (s=2)")]
    assert all(0 < v <= 1 for v in ssim) and ssim[0] != ssim[1]
    _check_grid(tmp_path / "eval" / "samples.png", shards, rows=4)  # person, s=1, s=2, ground truth
    payload = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "table3" in payload["paper"]


def _check_grid(path, shards, rows: int) -> None:
    """The grid has one 128-px row per model row plus the person (mask faded) and the ground truth, 4 samples
    wide, after a label column; the first and last rows hold the test pairs' person and garment."""
    import numpy as np
    from PIL import Image

    from igr.evaluate import shard_batches

    grid = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert grid.shape[0] == 128 * rows
    label_w = grid.shape[1] - 4 * 96
    assert label_w > 0 and grid[:, :label_w].min() < 128  # dark label text on white
    b = next(iter(shard_batches(str(shards), (64, 48), 4, None, True)))

    def tile(r: int, i: int) -> np.ndarray:  # back to 64x48 by 2x2 box averaging of the 128x96 tile
        t = grid[128 * r : 128 * (r + 1), label_w + 96 * i : label_w + 96 * (i + 1)]
        return t.reshape(64, 2, 48, 2, 3).mean((1, 3))

    for i in range(4):
        gt = b["garment_uint8"][i].permute(1, 2, 0).numpy().astype(float)
        person = ((b["person"][i].permute(1, 2, 0).numpy() + 1) * 127.5).astype(float)
        m = np.pad(b["mask"][i, 0].numpy() > 0.5, 1)  # away from the mask's edge (bicubic blends across it)
        inside = np.logical_and.reduce([m[1 + dy : 65 + dy, 1 + dx : 49 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        m = ~m
        outside = np.logical_and.reduce([m[1 + dy : 65 + dy, 1 + dx : 49 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        assert np.abs(tile(rows - 1, i) - gt).mean() < 8
        assert np.abs(tile(0, i)[inside] - person[inside]).mean() < 12  # textured: resampling blurs it
        assert np.abs(tile(0, i)[outside] - person[outside]).mean() > 20  # faded outside the mask


def test_bad_arguments_fail_before_work(setup, tmp_path):
    pipe, shards = setup
    with pytest.raises(IGRError, match="give --shards"):
        evaluate([("tiny", str(pipe))], None, tmp_path / "e1")
    with pytest.raises(IGRError, match="--unpaired-shards needs --real"):
        evaluate([("tiny", str(pipe))], None, tmp_path / "e2", unpaired_shards=str(shards))
    (tmp_path / "e3").mkdir()
    (tmp_path / "e3" / "report.md").write_text("keep me")
    with pytest.raises(IGRError, match="already exists and is not empty"):
        evaluate([("tiny", str(pipe))], str(shards), tmp_path / "e3")
    assert (tmp_path / "e3" / "report.md").read_text() == "keep me"


@pytest.fixture
def train_shards(tmp_path):
    assert main(["make-shards", "synthetic", "--out", str(tmp_path / "train"), "--split", "train", "--num", "24",
                 "--size", "64x48", "--seed", "0"]) == 0
    return tmp_path / "train" / "train.json"


def test_a_saved_classifier_scores_as_one_trained_in_the_evaluation(setup, train_shards, tmp_path):
    """Catches: `--classifier` ignored (a classifier of other steps trained instead) or loaded without its
    weights or batch-norm statistics; a classifier trained at another size accepted."""
    pipe, shards = setup
    clf = tmp_path / "clf.safetensors"
    assert main(["train-classifier", "--shards", str(train_shards), "--out", str(clf), "--steps", "40"]) == 0
    kw = {"steps": 2, "batch_size": 2, "bootstrap_resamples": 5}
    here = evaluate([("tiny", str(pipe))], str(shards), tmp_path / "e1", train_shards=str(train_shards),
                    classifier_steps=40, **kw)["rows"]["tiny"]["paired"]
    saved = evaluate([("tiny", str(pipe))], str(shards), tmp_path / "e2", classifier=str(clf), **kw)
    saved = saved["rows"]["tiny"]["paired"]
    assert {k: here[k] for k in ("kind_acc", "colour_acc", "fd_tiny", "kd_tiny")} == \
        {k: saved[k] for k in ("kind_acc", "colour_acc", "fd_tiny", "kd_tiny")}
    metrics = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    protocol = metrics["tiny_protocol"]
    assert protocol["classifier_file"] == str(clf) and protocol["classifier_steps"] == 40
    _check_bootstrap_file(tmp_path, metrics)
    assert main(["train-classifier", "--shards", str(train_shards), "--out", str(clf), "--steps", "2",
                 "--size", "32x24", "--overwrite"]) == 0
    with pytest.raises(IGRError, match=r"clf.safetensors: the classifier was trained on \[32, 24\] garments"):
        evaluate([("tiny", str(pipe))], str(shards), tmp_path / "e3", classifier=str(clf), **kw)


def _check_bootstrap_file(tmp_path, metrics: dict) -> None:
    """bootstrap.json holds the values each row's interval in metrics.json was taken from (so two rows can be
    differenced later on the same draws); an evaluation without tiny-world metrics into the same folder removes it."""
    import numpy as np

    from igr.evaluate import read_bootstrap

    draws = read_bootstrap(tmp_path / "e2" / "bootstrap.json")
    row = next(r for r in metrics["rows"] if r["name"] == "tiny")
    assert set(draws) == {"tiny", "ground truth (classifier ceiling)"}
    point, samples = draws["tiny"]
    assert point["kind_acc"] == row["paired"]["kind_acc"] and len(samples["ssim"]) == 5
    for key in ("ssim", "kind_acc", "fd_tiny"):
        assert row["ci95"][key] == pytest.approx([np.percentile(samples[key], 2.5), np.percentile(samples[key], 97.5)])
    evaluate([("tiny", str(tmp_path / "pipe"))], str(tmp_path / "shards" / "test.json"), tmp_path / "e2", steps=1,
             batch_size=4, overwrite=True)
    assert not (tmp_path / "e2" / "bootstrap.json").exists()
    (tmp_path / "bad.json").write_text("[]")
    with pytest.raises(IGRError, match="bad.json: not a bootstrap file written by igr eval"):
        read_bootstrap(tmp_path / "bad.json")


def test_a_file_that_is_not_a_classifier_is_refused_by_name(tmp_path):
    import torch
    from safetensors.torch import save_file

    from igr.metrics.tiny import load_classifier

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(IGRError, match="other.safetensors: not a tiny-world classifier file"):
        load_classifier(other)
    with pytest.raises(IGRError, match="missing.safetensors: tiny-world classifier not found"):
        load_classifier(tmp_path / "missing.safetensors")
    (tmp_path / "keep.safetensors").write_text("keep me")
    assert main(["train-classifier", "--shards", str(tmp_path / "none.json"),
                 "--out", str(tmp_path / "keep.safetensors")]) != 0  # the one-line error: igr.cli
    assert (tmp_path / "keep.safetensors").read_text() == "keep me"


def test_rows_restored_in_worker_processes_score_as_in_this_one(setup, tmp_path):
    """Catches: a worker's row restored with other noise, steps or guidance, or its batches scored out of order."""
    pipe, shards = setup
    kw = {"steps": 2, "batch_size": 2, "baselines": ["masked-crop"]}
    one = evaluate([("a", str(pipe)), ("b", str(pipe))], str(shards), tmp_path / "e1", guidance=[1.0, 2.0], **kw)
    two = evaluate([("a", str(pipe)), ("b", str(pipe))], str(shards), tmp_path / "e2", guidance=[1.0, 2.0],
                   workers=2, **kw)
    assert one["rows"] == two["rows"] and len(one["rows"]) == 5
    assert one["rows"]["a (s=1)"]["paired"]["ssim"] != one["rows"]["a (s=2)"]["paired"]["ssim"]
    from PIL import Image

    assert (Image.open(tmp_path / "e1" / "samples.png").tobytes() == Image.open(tmp_path / "e2" / "samples.png").tobytes())
    with pytest.raises(IGRError, match="--jobs 0: must be ≥ 1"):
        evaluate([("a", str(pipe))], str(shards), tmp_path / "e3", workers=0)
