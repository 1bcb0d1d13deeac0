"""The paper-scale plumbing outside Python: Makefile targets take ARGS= and DEVICES=, `make help` lists every
target, and scripts/merge-shard-index.py makes the coarse set's index from the converted sets."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from igr.data.shards import resolve_shards

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


def _shard_set(folder: Path, n: int, size=(1024, 768)) -> Path:
    folder.mkdir(parents=True)
    names = []
    for i in range(n):
        (folder / f"train-{i:06d}.tar").write_bytes(b"\0" * 1024)
        names.append({"name": f"train-{i:06d}.tar", "num_samples": 3})
    index = {"format": "igr-shards/1", "split": "train", "image_size": list(size), "shards": names,
             "num_samples": 3 * n, "categories": {"upper": 2 * n, "full": n}}
    (folder / "train.json").write_text(json.dumps(index))
    return folder / "train.json"


def _merge(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "merge-shard-index.py"), *map(str, args)],
                          capture_output=True, text=True, timeout=60)


def test_merge_shard_index_lists_both_sets_relative_to_the_new_index(tmp_path):
    a, b = _shard_set(tmp_path / "viton-hd", 2), _shard_set(tmp_path / "dresscode", 3)
    out = tmp_path / "coarse" / "train.json"
    assert _merge(out, a, b).returncode == 0
    merged = json.loads(out.read_text())
    assert merged["num_samples"] == 15 and merged["categories"] == {"upper": 10, "full": 5}
    assert merged["shards"][0]["name"] == "../viton-hd/train-000000.tar"
    expected = [str(tmp_path / "viton-hd" / f"train-{i:06d}.tar") for i in range(2)]
    expected += [str(tmp_path / "dresscode" / f"train-{i:06d}.tar") for i in range(3)]
    assert [str(Path(p).resolve()) for p in resolve_shards(str(out))] == expected
    # an existing index is kept; a set of another image size is refused, naming it
    again = _merge(out, a)
    assert again.returncode == 2 and "exists" in again.stderr and json.loads(out.read_text()) == merged
    c = _shard_set(tmp_path / "small", 1, size=(512, 384))
    bad = _merge(tmp_path / "x" / "train.json", a, c, "--overwrite")
    assert bad.returncode != 0 and str(c) in bad.stderr and not (tmp_path / "x" / "train.json").exists()


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
