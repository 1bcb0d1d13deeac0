"""Common mistakes and hostile files outside restore's image checks: each is one `error:` line (exact), a
non-zero exit, nothing partial and nothing outside the output folder. Also: outputs other users can read, and
a resume after `kill -9` during a checkpoint save."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fit_helpers import fit_args, make_shards
from PIL import Image

from igr.cli import main
from igr.config import CONFIG_DIR

DEMO = str(CONFIG_DIR / "experiment" / "demo.yaml")
BROKEN_YAML = "model:\n  optim: {lr: 0.1\ntrainer: {}\n"  # the flow mapping is never closed


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return make_shards(tmp_path_factory.mktemp("bad-shards"))


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from igr.config import load_model_config
    from igr.export import export_pipeline
    from igr.models import build_model

    torch.manual_seed(0)
    model = build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")).eval()
    return export_pipeline(model, tmp_path_factory.mktemp("bad-pipe") / "pipe")


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


def _last_line(capsys) -> str:
    """The last stderr line. (An escaping exception would fail the test earlier: main() raises instead of
    returning 2.)"""
    return capsys.readouterr().err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- configs


def test_broken_yaml_config_is_one_line(tmp_path, capsys):
    """Catches PyYAML's multi-line scanner error (or a traceback) reaching the user from `igr fit -c`."""
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    assert main(["fit", "-c", str(bad)]) == 2
    assert _last_line(capsys) == (
        f"error: {bad}: not a readable YAML config (did not find expected ',' or '}}' "
        "at line 3, column 8)"
    )


def test_broken_pipeline_model_index_is_one_line(pipe, tmp_path, capsys):
    """Catches a broken model_index.json in a pipeline folder giving a traceback, in restore and in fit's
    init_from."""
    bad = shutil.copytree(pipe, tmp_path / "pipe")
    (bad / "model_index.json").write_text(BROKEN_YAML)
    want = f"error: {bad / 'model_index.json'}: cannot load (OSError: It looks like the config file is not a valid JSON file.)"
    person, mask = tmp_path / "p.png", tmp_path / "m.png"
    Image.fromarray(np.full((64, 48, 3), 90, np.uint8)).save(person)
    m = np.zeros((64, 48), np.uint8)
    m[10:50, 8:40] = 255
    Image.fromarray(m).save(mask)
    assert main(["restore", "--model", str(bad), "--person", str(person), "--mask", str(mask), "--category",
                 "upper", "--out", str(tmp_path / "o.png")]) == 2
    assert _last_line(capsys) == want and not (tmp_path / "o.png").exists()
    assert main(["fit", "-c", DEMO, f"--model.init_from={bad}", f"--trainer.default_root_dir={tmp_path / 'run'}"]) == 2
    assert _last_line(capsys) == want and not (tmp_path / "run").exists()


@pytest.mark.parametrize("override,message", [
    ("--model.optim.lr=-1", "optim.lr: -1.0 must be > 0"),
    ("--data.batch_size=0", "data.batch_size: 0 must be >= 1"),
    ("--data.train_shards={tmp}/nowhere", "data.train_shards: {tmp}/nowhere: shard not found"),
])
def test_bad_value_fails_before_any_run_file(override, message, shards, tmp_path, capsys):
    """Catches errors that surface only once training starts: AdamW's ValueError after config.yaml and the
    TensorBoard events file exist (lr=-1), a stray events file for a missing shard, a batch_size message that
    names neither the key nor the value."""
    run = tmp_path / "run"
    argv = ["fit", "-c", DEMO, f"--data.train_shards={shards / 'train.json'}",
            f"--data.val_shards={shards / 'val.json'}", f"--trainer.default_root_dir={run}",
            "--trainer.max_steps=1", override.format(tmp=tmp_path)]
    assert main(argv) == 2
    assert _last_line(capsys) == "error: " + message.format(tmp=tmp_path)
    assert _files(run) == []


# --------------------------------------------------------------------------- restore --out


def test_restore_out_is_a_directory(pipe, tmp_path, capsys):
    """Catches `--out DIR` being taken for an existing output ("skipped", exit 0); in folder mode, an output
    name taken by a directory fails that pair (exit 1) while the others are restored."""
    person, mask = tmp_path / "in" / "person" / "a.png", tmp_path / "in" / "mask" / "a.png"
    for p in (person, mask, person.with_name("b.png"), mask.with_name("b.png")):
        p.parent.mkdir(parents=True, exist_ok=True)
    for stem in ("a", "b"):
        Image.fromarray(np.full((64, 48, 3), 90, np.uint8)).save(person.with_name(f"{stem}.png"))
        m = np.zeros((64, 48), np.uint8)
        m[10:50, 8:40] = 255
        Image.fromarray(m).save(mask.with_name(f"{stem}.png"))
    out = tmp_path / "existing"
    out.mkdir()
    assert main(["restore", "--model", str(pipe), "--person", str(person), "--mask", str(mask), "--category",
                 "upper", "--out", str(out), "--steps", "1"]) == 2
    assert _last_line(capsys) == (
        f"error: {out}: is a directory; --out takes the output image's file name (a folder: --out-dir)")
    assert _files(out) == []

    out_dir = tmp_path / "restored"
    (out_dir / "a.png").mkdir(parents=True)
    assert main(["restore", "--model", str(pipe), "--input-dir", str(tmp_path / "in"), "--category", "upper",
                 "--out-dir", str(out_dir), "--steps", "1"]) == 1
    captured = capsys.readouterr()
    assert f"error: {out_dir / 'a.png'}: is a directory, cannot write the output of {person} there" in captured.err
    assert "restored 1, failed 1" in captured.out
    assert _files(out_dir) == ["a.png", "b.png"] and (out_dir / "b.png").is_file()


# --------------------------------------------------------------------------- curate


def _hostile_tar(src: Path, dst: Path, renames: dict[str, str]) -> None:
    """A copy of shard ``src`` with some sample keys renamed (member ``KEY.ext`` → ``NEW.ext``)."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            key, ext = member.name.split(".", 1)
            data = tin.extractfile(member).read()
            info = tarfile.TarInfo(f"{renames.get(key, key)}.{ext}")
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_curate_refuses_unsafe_tar_keys_with_a_count(shards, tmp_path, capsys):
    """Catches `igr curate` copying member names such as ../../evil or /abs/evil into its output shard, where
    whoever extracts it writes outside the folder."""
    src = sorted(shards.glob("train-*.tar"))[0]
    with tarfile.open(src) as t:
        keys = sorted({m.name.split(".", 1)[0] for m in t.getmembers()})
    hostile = tmp_path / "in" / "train-000000.tar"
    hostile.parent.mkdir()
    _hostile_tar(src, hostile, {keys[0]: "../../evil", keys[1]: "/abs/evil"})
    out = tmp_path / "out"
    assert main(["curate", str(hostile), "--out", str(out)]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "invalid, unsafe sample key (an absolute path or one with '..') (unsafe_key): 2" in text
    names = [m.name for shard in out.glob("*.tar") for m in tarfile.open(shard).getmembers()]
    assert names and not [n for n in names if n.startswith("/") or ".." in n.split("/")]
    assert not [p for p in tmp_path.rglob("*evil*")]


# --------------------------------------------------------------------------- permissions


def _as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd],
                          capture_output=True)


@pytest.fixture
def shared_dir():
    """A folder another user can enter (pytest's tmp_path is 0700)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as another user")
    d = Path(tempfile.mkdtemp(prefix="igr-shared-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_outputs_get_umask_permissions_and_others_can_read_them(pipe, shared_dir, capsys):
    """Catches mkstemp's 0600 files and mkdtemp's 0700 folders reaching final outputs (restore, export,
    shards): another user then gets a PermissionError."""
    person, mask = shared_dir / "p.png", shared_dir / "m.png"
    Image.fromarray(np.full((64, 48, 3), 90, np.uint8)).save(person)
    m = np.zeros((64, 48), np.uint8)
    m[10:50, 8:40] = 255
    Image.fromarray(m).save(mask)
    old = os.umask(0o022)
    try:
        out = shared_dir / "g.png"
        assert main(["restore", "--model", str(pipe), "--person", str(person), "--mask", str(mask), "--category",
                     "upper", "--out", str(out), "--steps", "1"]) == 0
        from igr.config import load_model_config
        from igr.export import export_pipeline
        from igr.models import build_model

        exported = export_pipeline(build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")),
                                   shared_dir / "pipe")
        assert main(["make-shards", "synthetic", "--out", str(shared_dir / "shards"), "--num", "2",
                     "--size", "64x48"]) == 0
    finally:
        os.umask(old)
    capsys.readouterr()
    parts = [p for p in exported.rglob("*") if p.is_file()]  # the pipeline folder has one folder per module
    files = [out, *parts, *(shared_dir / "shards").iterdir()]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in files} == {"0o644"}
    folders = [exported, *(p for p in exported.rglob("*") if p.is_dir())]
    assert {oct(stat.S_IMODE(p.stat().st_mode)) for p in folders} == {"0o755"}
    proc = _as_nobody("cat", *map(str, files))
    assert proc.returncode == 0, proc.stderr


def test_unreadable_weights_file_says_it_cannot_be_read(shared_dir):
    """Catches an unreadable weights file being reported as "not found"."""
    path = shared_dir / "w.safetensors"
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(path))
    path.chmod(0o000)
    code = f"from igr.weights_io import read_state_dict; read_state_dict({str(path)!r})"
    proc = _as_nobody(sys.executable, "-c", code)
    assert proc.returncode != 0
    assert proc.stderr.decode().strip().splitlines()[-1] == (
        f"igr.errors.WeightsError: {path}: weights file cannot be read (permission denied)")


# --------------------------------------------------------------------------- resume after a crash


KILL_DURING_SAVE = """
import io, os, signal, sys
import torch
from igr.cli import main

real_save = torch.save
saves_at_4 = []

def save(obj, f, *args, **kwargs):
    # At step 4 Lightning saves step000004.ckpt, then last.ckpt: kill -9 halfway through the second.
    if isinstance(obj, dict) and obj.get("global_step") == 4:
        saves_at_4.append(1)
        if len(saves_at_4) == 2:
            buf = io.BytesIO()
            real_save(obj, buf)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)

torch.save = save
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_9_during_a_checkpoint_save(shards, tmp_path):
    """A real SIGKILL in the middle of writing last.ckpt: the finished files are whole, the torn write is a
    hidden temporary beside them (none in the system temp folder), and the resume goes on from step 4 without
    a duplicate step file or the orphan."""
    script = tmp_path / "killed_fit.py"
    script.write_text(KILL_DURING_SAVE)
    run = tmp_path / "run"
    env = {**os.environ, "TMPDIR": str(tmp_path / "systmp")}
    (tmp_path / "systmp").mkdir()
    proc = subprocess.run([sys.executable, str(script), *fit_args(shards, run, 6, 2)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    ck = run / "checkpoints"
    orphan, *names = sorted(p.name for p in ck.iterdir())
    assert names == ["last.ckpt", "step000002.ckpt", "step000004.ckpt"]
    assert orphan.startswith(".last.ckpt.") and orphan.endswith(".tmp")
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 2  # the previous one, whole
    assert _files(tmp_path / "systmp") == []

    proc = subprocess.run([sys.executable, "-m", "igr.cli", *fit_args(shards, run, 6, 2), "--ckpt_path=last"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resuming from {ck / 'step000004.ckpt'} (step 4" in proc.stderr
    assert sorted(p.name for p in ck.iterdir()) == [
        "last.ckpt", "step000002.ckpt", "step000004.ckpt", "step000006.ckpt"]
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 6


def test_os_refusal_is_one_line(tmp_path, capsys):
    """Catches an OSError with a file name (here: an output folder under a plain file) escaping as a
    traceback from a command that has no check of its own for it."""
    from image_cases import write

    for d in ("pred", "gt"):
        for seed in (0, 1):
            write("grey", tmp_path / d, f"{seed}", seed=seed)
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "eval"
    assert main(["eval-folders", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--size", "64x48", "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: {out}: Not a directory"
