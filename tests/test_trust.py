"""Checkpoints from strangers and from crashes.

No code runs from a checkpoint: `igr export`, `igr restore --weights`, `igr fit --model.init_from` and
`--ckpt_path` load weights-only and refuse a pickle payload with one line naming --trust-pickle; our own
checkpoints (callback states, loops, hyper-parameters) load that way. A resume after `kill -9` picks the newest
complete checkpoint (the real kill is in test_bad_input.py, marked slow)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
from fit_helpers import fit_args, make_shards
from PIL import Image

from igr.cli import main
from igr.config import CONFIG_DIR


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    shards = make_shards(root / "shards")
    assert main(fit_args(shards, root / "run", steps=4, every=2)) == 0
    return {"shards": shards, "ckpt": root / "run" / "checkpoints" / "last.ckpt", "root": root}


class _Payload:
    """Unpickling this runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def evil(run, tmp_path):
    """Our own checkpoint with a payload added, as a stranger could share it."""
    marker = tmp_path / "PWNED"
    data = torch.load(run["ckpt"], weights_only=True)
    data["note"] = _Payload(marker)  # a top-level entry: Lightning and igr ignore it once loaded
    path = tmp_path / "shared.ckpt"
    torch.save(data, path)
    return path, marker


def refused(path) -> str:
    return (f"error: {path}: refused: the checkpoint holds a Python object (posix.system) that only unpickling can "
            "rebuild, and unpickling runs code from the file; if you trust its source, pass --trust-pickle")


def test_our_checkpoint_loads_weights_only(run):
    """Catches a Lightning or igr change that puts a pickled class into our checkpoints (an AttributeDict of
    hyper-parameters, a callback state object): they would all need --trust-pickle."""
    data = torch.load(run["ckpt"], weights_only=True)  # torch's own loader, not ours
    assert {"state_dict", "callbacks", "loops", "hyper_parameters", "optimizer_states"} <= data.keys()
    assert any(k.startswith("EMA") for k in data["callbacks"]) and any("ModelCheckpoint" in k for k in data["callbacks"])


def test_export_refuses_a_payload_and_trusts_it_only_when_told(evil, tmp_path, capsys):
    """Catches `igr export` unpickling (weights_only=False): the shell command would create the marker."""
    path, marker = evil
    out = tmp_path / "pipe"
    assert main(["export", str(path), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip() == refused(path)
    assert not marker.exists() and not out.exists()
    # --trust-pickle really unpickles: the payload runs (which is why it is opt-in) and the export goes through
    assert main(["export", str(path), "--out", str(out), "--trust-pickle"]) == 0
    assert marker.exists() and (out / "model_index.json").is_file()


def test_restore_weights_refuses_a_payload(evil, tmp_path, capsys):
    """Catches `igr restore --model MODEL.yaml --weights X.ckpt` unpickling the checkpoint."""
    path, marker = evil
    Image.fromarray(np.full((64, 48, 3), 128, np.uint8)).save(tmp_path / "p.png")
    m = np.zeros((64, 48), np.uint8)
    m[10:50, 8:40] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    out = tmp_path / "o.png"
    rc = main(["restore", "--model", str(CONFIG_DIR / "model" / "tiny.yaml"), "--weights", str(path),
               "--person", str(tmp_path / "p.png"), "--mask", str(tmp_path / "m.png"), "--category", "upper",
               "--out", str(out), "--steps", "1"])
    assert rc == 2 and capsys.readouterr().err.strip() == refused(path)
    assert not marker.exists() and not out.exists()


def _run_files(run_dir):
    return sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*")) if run_dir.exists() else []


def test_fit_init_from_refuses_a_payload(run, evil, tmp_path, capsys):
    """Catches `--model.init_from=X.ckpt` unpickling; the refusal comes before any run file is written."""
    path, marker = evil
    run_dir = tmp_path / "run"
    assert main(fit_args(run["shards"], run_dir, 2, 2, f"--model.init_from={path}")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == refused(path)
    assert not marker.exists() and _run_files(run_dir) == []


def test_fit_ckpt_path_refuses_a_payload(run, evil, tmp_path, capsys):
    """Catches Lightning's resume path (`--ckpt_path X.ckpt`) unpickling, or its traceback for the refusal."""
    path, marker = evil
    run_dir = tmp_path / "run"
    assert main(fit_args(run["shards"], run_dir, 6, 2, f"--ckpt_path={path}")) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == refused(path)  # main() returned: no exception escaped
    assert not marker.exists() and _run_files(run_dir) == []


@pytest.mark.slow
def test_fit_ckpt_path_trusted_resumes(run, evil, tmp_path, capsys):
    """Catches --trust-pickle not reaching Lightning's loader (it would refuse) — with it, the resume runs."""
    path, marker = evil
    run_dir = tmp_path / "run"
    assert main(fit_args(run["shards"], run_dir, 6, 2, f"--ckpt_path={path}", "--trust-pickle")) == 0
    assert marker.exists()
    assert torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6


def test_resume_picks_the_newest_complete_checkpoint(run, tmp_path, capsys):
    """The state `kill -9` between (or during) checkpoint saves leaves: last.ckpt one save behind, a torn file,
    a temporary of the interrupted save. Catches a resume from the stale last.ckpt (it re-runs steps 3-4 and
    rewrites step000004), a `-v1` duplicate, resuming from the torn file, and the orphan staying."""
    shards, out = run["shards"], tmp_path / "run"
    shutil.copytree(run["ckpt"].parents[1], out)
    ck = out / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["last.ckpt", "step000002.ckpt", "step000004.ckpt"]
    shutil.copy(ck / "step000002.ckpt", ck / "last.ckpt")  # last.ckpt written before step 4's save
    (ck / "step000006.ckpt").write_bytes((ck / "step000004.ckpt").read_bytes()[:5000])  # a torn copy
    (ck / ".last.ckpt.k2j4x9.tmp").write_bytes(b"half a checkpoint")
    step4 = (ck / "step000004.ckpt").read_bytes()
    capsys.readouterr()

    assert main([*fit_args(shards, out, 6, 2), "--ckpt_path=last"]) == 0
    err = capsys.readouterr().err
    assert f"resuming from {ck / 'step000004.ckpt'} (step 4, the newest complete checkpoint)" in err
    assert f"warning: not resuming from {ck / 'step000006.ckpt'}: cannot read checkpoint" in err
    assert f"removed {ck / '.last.ckpt.k2j4x9.tmp'} (an interrupted checkpoint save)" in err
    assert sorted(p.name for p in ck.iterdir()) == [
        "last.ckpt", "step000002.ckpt", "step000004.ckpt", "step000006.ckpt"]
    assert (ck / "step000004.ckpt").read_bytes() == step4  # not re-trained and re-saved
    assert torch.load(ck / "step000006.ckpt", weights_only=True)["global_step"] == 6  # replaced, complete
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 6


def test_deepspeed_folder_needs_trust(tmp_path, capsys):
    """Catches DeepSpeed folders being converted (DeepSpeed's converter unpickles) without the user's say-so."""
    folder = tmp_path / "ds.ckpt"
    (folder / "checkpoint").mkdir(parents=True)
    assert main(["export", str(folder), "--out", str(tmp_path / "pipe")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: {folder}: a DeepSpeed checkpoint folder is read by unpickling its files (DeepSpeed's converter "
        "cannot load weights-only), which runs code from them; if you trust its source, pass --trust-pickle"
    )


def test_unsafe_lpips_linear_file_is_one_line(tmp_path):
    """Catches the LPIPS linear file going to lpips' own torch.load (a traceback on a refused payload)."""
    from igr.errors import WeightsError
    from igr.metrics.perceptual import LPIPSMetric

    marker = tmp_path / "PWNED"
    path = tmp_path / "alex.pth"
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1), "x": _Payload(marker)}, path)
    with pytest.raises(WeightsError) as info:
        LPIPSMetric(None, linear_path=str(path))
    assert str(info.value).startswith(f"{path}: cannot read weights (UnpicklingError: ")
    assert "\n" not in str(info.value) and not marker.exists()
