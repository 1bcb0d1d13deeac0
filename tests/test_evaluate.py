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
    assert (tmp_path / "eval" / "samples.png").is_file()
    payload = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "table3" in payload["paper"]


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
