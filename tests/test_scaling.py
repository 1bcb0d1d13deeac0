"""The paper-scale plumbing outside Python: Makefile targets take ARGS= and DEVICES=, `make help` lists every
target, and the docs' batch arithmetic and targets are real."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TRAIN_TARGETS = ["train-coarse", "finetune"]
EVAL_TARGETS = ["eval", "eval-guidance", "ablate"]

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="no make")


def _dry_run(target: str, *assignments: str) -> list[str]:
    """The igr command lines ``make -n`` would run for ``target`` (no install: the stamp is taken as made)."""
    out = subprocess.run(
        ["make", "-n", "-C", str(ROOT), target, "STAMP=", "BIN=bin", *assignments],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    out = re.sub(r"\\\n\s*", "", out)  # one line per command (make -n keeps the recipe's continuations)
    return [line for line in out.splitlines() if line.startswith("bin/igr ")]


def test_every_training_and_eval_target_appends_args():
    for target in TRAIN_TARGETS + EVAL_TARGETS:
        lines = _dry_run(target, "ARGS=--zz.extra 7")
        fits = [line for line in lines if " fit " in line or " eval " in line]
        assert fits, f"make {target} runs no igr fit/eval"
        assert all(line.endswith("--zz.extra 7") for line in fits), (target, fits)


def test_eval_targets_pass_devices_default_one():
    for target in EVAL_TARGETS:
        assert "--devices 1" in _dry_run(target)[0]
        assert "--devices 4" in _dry_run(target, "DEVICES=4")[0]


def test_help_lists_every_target():
    text = (ROOT / "Makefile").read_text()
    phony = set(re.search(r"^\.PHONY:(.*?)(?<!\\)$", text, re.S | re.M).group(1).replace("\\", " ").split())
    listed = subprocess.run(["make", "-s", "-C", str(ROOT), "help"], capture_output=True, text=True, check=True).stdout
    shown = {m.group(1) for m in re.finditer(r"^\s+make (\S+)", listed, re.M)}
    assert phony == shown


def test_the_4xa100_overlay_trains_at_the_papers_global_batch_and_the_docs_name_real_targets():
    import yaml

    overlay = yaml.safe_load((ROOT / "igr" / "configs" / "trainer" / "deepspeed_4xa100.yaml").read_text())
    t = overlay["trainer"]
    assert t["num_nodes"] * t["devices"] * overlay["data"]["batch_size"] * t["accumulate_grad_batches"] == 32
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):", (ROOT / "Makefile").read_text(), re.M))
    docs = (ROOT / "docs" / "scaling.md").read_text()
    named = set(re.findall(r"\bmake ([a-z][a-z0-9-]+)", docs))
    assert named and named <= targets, named - targets
    # every worked example of section 2 multiplies out to 32
    rows = re.findall(r"\| (\d+) × (\d+) × (\d+) × (\d+) \|", docs)
    assert len(rows) >= 5 and all(int(a) * int(b) * int(c) * int(d) == 32 for a, b, c, d in rows)
