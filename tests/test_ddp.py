"""`igr fit` as two real DDP processes on the CPU (gloo): what each rank drew and read, the checkpoint written
once with every rank's noise stream, and (slow) a resume with ``--ckpt_path last``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import draw_recorder
import pytest
import torch

from igr.cli import main
from igr.config import CONFIG_DIR

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-shards")
    args = ["make-shards", "synthetic", "--out", str(root), "--split", "train", "--num", "24", "--size", "64x48"]
    assert main(args) == 0
    return root


def _fit(shards: Path, run: Path, steps: int, *extra: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "igr.cli", "fit",
        "-c", str(CONFIG_DIR / "experiment" / "demo.yaml"),
        "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu",
        f"--model.model={CONFIG_DIR / 'model' / 'tiny.yaml'}",
        "--model.diffusion.condition_drop=0.5",  # drop masks with as much information as possible
        f"--data.train_shards={shards / 'train.json'}",
        "--data.image_size=[64, 48]", "--data.batch_size=4", "--data.num_workers=0",
        # An epoch is one pass of the 24 samples (2 ranks x 3 batches x 4), so the ranks' contiguous ranges of it
        # are disjoint; the default 10 000-sample epoch spans ~400 passes of this set, each rank's range ~200.
        "--data.train_samples_per_epoch=24",
        f"--trainer.default_root_dir={run}", f"--trainer.max_steps={steps}", "--trainer.limit_val_batches=0",
        "--trainer.callbacks+=draw_recorder.DrawRecorder", f"--trainer.callbacks.out={run / 'draws'}",
        *extra,
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _check_ranks(rows: dict[int, list[dict]], steps: range) -> None:
    """Two ranks, every step recorded on both; different ε, t and drop masks; disjoint samples."""
    assert sorted(rows) == [0, 1]
    for r in (0, 1):
        assert [row["step"] for row in rows[r]] == list(steps) and {row["world"] for row in rows[r]} == {2}
    for a, b in zip(rows[0], rows[1]):
        assert a["noise"] != b["noise"] and a["t"] != b["t"], a["step"]  # seed + rank: distinct streams
    keep0 = [k for row in rows[0] for k in row["keep"]]
    keep1 = [k for row in rows[1] for k in row["keep"]]
    assert keep0 != keep1  # 4 samples x steps at p = 0.5: equal by chance with probability 2^-(4·steps)
    keys0 = {k for row in rows[0] for k in row["keys"]}
    keys1 = {k for row in rows[1] for k in row["keys"]}
    assert keys0 and keys1 and not keys0 & keys1  # data dealt disjointly per rank


def test_two_ddp_ranks_draw_different_noise_read_disjoint_data_and_write_once(shards, tmp_path):
    """Catches every rank drawing the same ε/t/drop mask (seed_everything seeds all ranks alike), ranks sharing
    samples, and a checkpoint that keeps only rank 0's noise stream."""
    run = tmp_path / "run"
    _fit(shards, run, 2)
    _check_ranks(draw_recorder.read(run / "draws"), range(1, 3))
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # one file, from rank 0
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == 2
    states = ckpt["noise_rng"]
    assert len(states) == 2 and not torch.equal(states[0], states[1])


@pytest.mark.slow
def test_two_ddp_ranks_resume_from_last_at_the_right_step_with_their_own_streams(shards, tmp_path):
    """Train 2 steps, resume with --ckpt_path last to 4: global step 4, and each rank's draws of steps 3-4 are
    the ones an uninterrupted 4-step run draws (each rank restored its own stream, not rank 0's)."""
    whole = tmp_path / "whole"
    _fit(shards, whole, 4)
    run = tmp_path / "run"
    _fit(shards, run, 2)
    _fit(shards, run, 4, "--ckpt_path=last")
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 4
    rows, ref = draw_recorder.read(run / "draws"), draw_recorder.read(whole / "draws")
    _check_ranks(rows, range(1, 5))
    for r in (0, 1):
        for a, b in zip(rows[r], ref[r]):
            assert (a["t"], a["keep"], a["noise"]) == (b["t"], b["keep"], b["noise"]), (r, a["step"])
