"""Fault-injection cases of issue 36 for data files, --overwrite, run folders and config interpolation: nothing
runs, leaks or is deleted unless the user typed it, and each unclean case is one line, the right exit code and
nothing left behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from data_helpers import good_sample, write_tar

from igr.cli import main
from igr.data.shards import resolve_shards, split_shards
from igr.errors import IGRError


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def _shard_folder(folder: Path, keys=("a", "b", "c"), index: dict | None = None) -> Path:
    """``folder/train-000000.tar`` with good samples, and ``folder/train.json`` (``index`` or one listing it)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_tar(str(folder / "train-000000.tar"), [good_sample(k) for k in keys])
    doc = index if index is not None else {"shards": [{"name": "train-000000.tar"}]}
    (folder / "train.json").write_text(json.dumps(doc))
    return folder


# --------------------------------------------------------------------------- 1. data files name data


@pytest.mark.parametrize("name", ["pipe:touch PWNED; cat train-000000.tar", "PIPE:touch PWNED",
                                  "http://127.0.0.1:9/train-000000.tar", "file:/etc/passwd"])
def test_an_index_never_names_a_command_or_url(name, tmp_path, capsys, monkeypatch):
    """Catches an index entry handed to webdataset's opener, which runs `pipe:` names as shell commands, through
    every reader of an index: check-shards, curate FOLDER and resolve_shards (fit's and eval's data)."""
    monkeypatch.chdir(tmp_path)  # an index in the current folder: os.path.join("", name) keeps "pipe:" in front
    _shard_folder(tmp_path, index={"shards": [{"name": name}]})
    want = "is a URL or command; an index names files beside it"
    assert main(["check-shards", "train.json"]) == 2
    assert want in _last_line(capsys)
    assert main(["curate", str(tmp_path), "--out", str(tmp_path / "out")]) == 2
    assert want in _last_line(capsys)
    for spec in ("train.json", str(tmp_path / "train.json")):
        with pytest.raises(IGRError, match=want):
            resolve_shards(spec, allow_outside_index=True)  # the flag widens local paths only
    with pytest.raises(IGRError, match=want):
        split_shards(str(tmp_path), "train")
    assert not (tmp_path / "PWNED").exists() and not (tmp_path / "out").exists()


def test_pipe_and_urls_from_the_command_line_still_pass(tmp_path):
    """The user's own `pipe:` spec is theirs to give (webdataset's documented way to stream from a bucket)."""
    assert resolve_shards("pipe:cat a-{000000..000001}.tar") == ["pipe:cat a-000000.tar", "pipe:cat a-000001.tar"]


@pytest.mark.parametrize("kind", ["absolute", "dotdot", "symlink"])
def test_index_entries_stay_inside_the_index_folder(kind, tmp_path, capsys):
    """Catches `/etc/passwd`, `../elsewhere.tar` or a symlink out of the folder being opened from an index; the
    explicit --allow-outside-index reads them."""
    outside = _shard_folder(tmp_path / "outside")
    name = {"absolute": str(outside / "train-000000.tar"), "dotdot": "../outside/train-000000.tar",
            "symlink": "link.tar"}[kind]
    data = tmp_path / "data"
    _shard_folder(data, index={"shards": [{"name": name}]})
    if kind == "symlink":
        (data / "link.tar").symlink_to(outside / "train-000000.tar")
    assert main(["check-shards", str(data / "train.json")]) == 2
    assert _last_line(capsys) == (
        f"error: {data / 'train.json'}: shard entry 0 ({name!r}) is outside the index's folder; "
        "pass --allow-outside-index (or set IGR_ALLOW_OUTSIDE_INDEX=1) if you trust this index")
    with pytest.raises(IGRError, match="outside the index's folder"):
        resolve_shards(str(data / "train.json"))
    assert main(["check-shards", str(data / "train.json"), "--allow-outside-index", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["good"] == 3


def test_allow_outside_index_from_the_environment(tmp_path, monkeypatch):
    """`igr fit` and `igr eval` take the opt-in from IGR_ALLOW_OUTSIDE_INDEX=1."""
    outside = _shard_folder(tmp_path / "outside")
    data = _shard_folder(tmp_path / "data", index={"shards": [{"name": "../outside/train-000000.tar"}]})
    with pytest.raises(IGRError):
        resolve_shards(str(data / "train.json"))
    monkeypatch.setenv("IGR_ALLOW_OUTSIDE_INDEX", "1")
    assert resolve_shards(str(data / "train.json")) == [str(data / "../outside/train-000000.tar")]
    assert os.path.samefile(resolve_shards(str(data / "train.json"))[0], outside / "train-000000.tar")


@pytest.mark.parametrize("entry", [{"num_samples": 3}, {"name": None}, 7])
def test_index_entry_without_a_name_is_one_line(entry, tmp_path, capsys):
    """Catches KeyError (a traceback) for an entry without "name"."""
    data = _shard_folder(tmp_path / "data", index={"shards": [entry]})
    assert main(["check-shards", str(data / "train.json")]) == 2
    assert _last_line(capsys) == (
        f"error: {data / 'train.json'}: shard entry 0 has no 'name' (a file name beside the index)")


def test_deep_or_huge_index_is_one_line(tmp_path, capsys, monkeypatch):
    """Catches RecursionError from json on an index nested 100,000 deep, and an unbounded read of a huge one."""
    data = _shard_folder(tmp_path / "data")
    (data / "train.json").write_text('{"shards": [{"name": "train-000000.tar"}], "x": ' + "[" * 100_000
                                     + "]" * 100_000 + "}")
    assert main(["check-shards", str(data / "train.json")]) == 2
    assert _last_line(capsys) == (f"error: {data / 'train.json'}: not a readable JSON index "
                                  "(nested 100001 deep, more than the 100 allowed)")
    import igr.data.shards as shards

    (data / "train.json").write_text(json.dumps({"shards": [{"name": "train-000000.tar"}], "pad": "x" * 2000}))
    monkeypatch.setattr(shards, "MAX_INDEX_BYTES", 1000)
    assert main(["check-shards", str(data / "train.json")]) == 2
    assert "more than the 1000 allowed" in _last_line(capsys)


def test_deep_meta_json_is_a_counted_skip(tmp_path, capsys):
    """Catches one sample's meta.json nested 100,000 deep stopping check-shards, curate and training with
    RecursionError: it is one undecodable sample, counted, and the others are used."""
    from igr.data import iter_samples

    data = tmp_path / "data"
    data.mkdir()
    deep = {**good_sample("deep"), "meta.json": b"[" * 100_000 + b"]" * 100_000}
    write_tar(str(data / "train-000000.tar"), [good_sample("a"), deep, good_sample("b")])
    assert main(["check-shards", str(data), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["good"] == 2 and report["skipped"]["undecodable"] == 1
    assert "nested 100000 deep" in report["examples"]["undecodable"][0]
    assert [s["key"] for s in iter_samples(str(data))] == ["a", "b"]  # the training/eval reader
    assert main(["curate", str(data), "--out", str(tmp_path / "out"), "--set", "keep_fraction=null"]) == 0
    assert "invalid, undecodable image or metadata (undecodable): 1" in capsys.readouterr().out


def test_duplicate_keys_are_reported_and_curate_counts_what_it_wrote(tmp_path, capsys):
    """Catches duplicate keys passing check-shards silently, and `curate --keep-list` printing "kept 3" for a
    set it wrote with 2 samples."""
    data = tmp_path / "data"
    data.mkdir()
    write_tar(str(data / "train-000000.tar"), [good_sample("a"), good_sample("b")])
    write_tar(str(data / "train-000001.tar"), [good_sample("a", "full")])
    assert main(["check-shards", str(data), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"]["duplicate_key"] == 1 and report["good"] == 2 and not report["ok"]
    assert str(data / "train-000001.tar") in report["examples"]["duplicate_key"][0]
    keep = tmp_path / "keep.txt"
    keep.write_text("a\nb\n")
    out = tmp_path / "out"
    assert main(["curate", str(data), "--out", str(out), "--keep-list", str(keep)]) == 0
    printed = capsys.readouterr().out
    written = json.loads((out / "train.json").read_text())["num_samples"]
    assert written == 2 and "\nkept 2 (" in printed
    assert "(duplicate_key): 1" in printed


# --------------------------------------------------------------------------- 2. --overwrite


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _a_run(root: Path) -> Path:
    """A run folder as `igr fit` leaves it (the checkpoint's content does not matter: the refusal comes first)."""
    run = root / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"weights")
    (run / "config.yaml").write_text("trainer: {}\n")
    (run / "events.out.tfevents.1").write_bytes(b"log")
    return run


@pytest.mark.parametrize("out", [".", "..", "{root}"])
def test_export_never_replaces_the_current_folder_or_a_parent(out, tmp_path, capsys, monkeypatch):
    """Catches `igr export CKPT --out . --overwrite` deleting the whole current folder, checkpoint included."""
    work = tmp_path / "work"
    run = _a_run(work)
    monkeypatch.chdir(run)
    before = _tree(tmp_path)
    assert main(["export", "checkpoints/last.ckpt", "--out", out.format(root=work), "--overwrite"]) == 2
    assert _last_line(capsys) == (f"error: {out.format(root=work)}: is the current folder or one of its parents; "
                                  "--overwrite never replaces that")
    assert _tree(tmp_path) == before


def test_export_never_replaces_the_folder_holding_its_checkpoint(tmp_path, capsys, monkeypatch):
    """Catches `igr export run/checkpoints/last.ckpt --out run --overwrite` deleting the run's checkpoints,
    config.yaml and logs (and reporting success)."""
    run = _a_run(tmp_path)
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    assert main(["export", "run/checkpoints/last.ckpt", "--out", "run", "--overwrite"]) == 2
    assert _last_line(capsys) == ("error: run: holds run/checkpoints/last.ckpt, an input of this command; "
                                  "--overwrite never replaces an input")
    assert _tree(tmp_path) == before and run.is_dir()


def test_overwrite_replaces_only_an_earlier_output_of_the_same_kind(tiny_model, tmp_path):
    """Catches --overwrite replacing any folder it is pointed at: only a folder with igr's marker of the same kind
    (here a pipeline folder) is replaced; a plain folder, another kind's output and a file are refused."""
    from igr.atomic import MARKER, atomic_directory
    from igr.export import export_pipeline

    plain = tmp_path / "photos"
    plain.mkdir()
    (plain / "me.jpg").write_bytes(b"jpeg")
    with pytest.raises(IGRError, match=r"photos: not an earlier pipeline folder written by igr \(no \.igr-output"):
        export_pipeline(tiny_model, plain, overwrite=True)
    with atomic_directory(tmp_path / "vae", kind="tiny-vae") as tmp:
        (tmp / "config.json").write_text("{}")
    with pytest.raises(IGRError, match=r"vae: not an earlier pipeline folder written by igr \(an igr tiny-vae output"):
        export_pipeline(tiny_model, tmp_path / "vae", overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(IGRError, match="file: not an earlier pipeline folder"):
        export_pipeline(tiny_model, tmp_path / "file", overwrite=True)
    assert (plain / "me.jpg").read_bytes() == b"jpeg" and (tmp_path / "vae" / "config.json").is_file()
    assert (tmp_path / "file").read_text() == "x"

    pipe = export_pipeline(tiny_model, tmp_path / "pipe")
    assert json.loads((pipe / MARKER).read_text())["kind"] == "pipeline"
    (pipe / "stale.txt").write_text("from the earlier export")
    export_pipeline(tiny_model, pipe, overwrite=True)
    assert not (pipe / "stale.txt").exists() and (pipe / "model_index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "photos", "pipe", "vae"]  # no temporaries


KILLED_EXPORT = """
import os, signal, sys
import torch
import igr.export
from igr.config import CONFIG_DIR, load_model_config
from igr.export import export_pipeline
from igr.models import build_model

real = igr.export.save_file
def save_file(state, path, *a, **k):
    real(state, path, *a, **k)
    os.kill(os.getpid(), signal.SIGKILL)  # after the first weights file: the folder is half written
igr.export.save_file = save_file
export_pipeline(build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")), sys.argv[1])
"""


@pytest.mark.slow
def test_kill_9_during_export_leaves_no_temporary_for_ever(tiny_model, tmp_path):
    """Catches the hidden .tmp folder of a `kill -9`ed export staying for ever: the next export to the same
    output removes it (its writer's pid is dead); a temporary whose writer still runs is left alone."""
    import subprocess
    import sys

    from igr.atomic import MARKER
    from igr.export import export_pipeline

    out = tmp_path / "pipe"
    proc = subprocess.run([sys.executable, "-c", KILLED_EXPORT, str(out)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr[-2000:]
    (orphan,) = tmp_path.iterdir()
    assert orphan.name.startswith(".pipe.") and orphan.name.endswith(".tmp") and not out.exists()
    alive = tmp_path / ".pipe.alive.tmp"  # another export of the same folder, still writing
    alive.mkdir()
    (alive / MARKER).write_text(json.dumps({"kind": "pipeline", "pid": os.getpid(), "host": os.uname().nodename}))
    export_pipeline(tiny_model, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pipe.alive.tmp", "pipe"]


def test_curate_overwrite_never_replaces_the_shards_it_reads(tmp_path, capsys):
    """Catches `igr curate data --out data --overwrite` writing its output over the input shards mid-read."""
    data = _shard_folder(tmp_path / "data")
    before = _tree(data)
    assert main(["curate", str(data), "--out", str(data), "--overwrite"]) == 2
    assert _last_line(capsys) == (f"error: {data}: train-000000.tar is one of the shards being curated; "
                                  "--overwrite never replaces an input (choose another --out or --split)")
    assert _tree(data) == before


# --------------------------------------------------------------------------- 3. one run folder, one writer


HOLDING_FIT = """
import os, sys, time
from pathlib import Path
import igr.fit_cli
from igr.cli import main

def fit(self, *args, **kwargs):  # the run is under way (its lock taken): hold it until the test says go
    ready, go = Path(os.environ["READY"]), Path(os.environ["GO"])
    ready.write_text("")
    for _ in range(600):
        if go.exists():
            return
        time.sleep(0.1)
igr.fit_cli.IGRCLI.fit = fit
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def fit_shards(tmp_path_factory):
    from fit_helpers import make_shards

    return make_shards(tmp_path_factory.mktemp("faults-shards"))


def _start_holding_fit(fit_shards, run: Path, tmp_path: Path):
    import subprocess
    import sys
    import time

    from fit_helpers import fit_args

    ready, go = tmp_path / "ready", tmp_path / "go"
    env = {**os.environ, "READY": str(ready), "GO": str(go),
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", HOLDING_FIT, *fit_args(fit_shards, run, 1, 1)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(1200):
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    assert ready.exists(), proc.communicate()[1][-2000:]
    return proc, go


@pytest.mark.slow
def test_a_second_fit_into_a_run_folder_is_refused(fit_shards, tmp_path, capsys):
    """Catches two `igr fit` runs into one folder both going ahead (checkpoints of one, hparams.yaml of the
    other, two event files): the second, a separate process, is refused with one line before it writes anything;
    the lock goes with the first."""
    from fit_helpers import fit_args

    from igr.runlock import LOCK_NAME

    run = tmp_path / "run"
    first, go = _start_holding_fit(fit_shards, run, tmp_path)
    try:
        lock = json.loads((run / LOCK_NAME).read_text())
        assert lock["pid"] == first.pid
        before = _tree(run)
        assert main(fit_args(fit_shards, run, 1, 1)) == 2
        assert _last_line(capsys).startswith(
            f"error: {run}: another igr fit is writing this run folder (pid {first.pid} on ")
        assert _tree(run) == before  # no second config.yaml, hparams.yaml or event file
    finally:
        go.write_text("")
        first.communicate(timeout=300)
    assert first.returncode == 0 and not (run / LOCK_NAME).exists()


@pytest.mark.slow
def test_a_lock_left_by_a_killed_fit_is_taken_over(fit_shards, tmp_path, caplog):
    """Catches a run folder locked for ever after `kill -9`: the dead writer's lock is taken over, with a warning;
    a live writer's lock is not."""
    import signal

    from igr.runlock import LOCK_NAME, RunLock

    run = tmp_path / "run"
    first, _ = _start_holding_fit(fit_shards, run, tmp_path)
    with pytest.raises(IGRError, match="another igr fit is writing this run folder"):
        RunLock(run).acquire()
    first.send_signal(signal.SIGKILL)
    first.communicate()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == first.pid  # left behind
    lock = RunLock(run).acquire()
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert f"taking over the lock of an igr fit that ended without removing it (pid {first.pid}" in caplog.text
    lock.release()
    assert not (run / LOCK_NAME).exists()


# --------------------------------------------------------------------------- 4. no interpolation of loaded files

TOKEN = "hf_SECRET_token_0123456789"


def _holds_token(folder: Path) -> list[str]:
    return [name for name, data in _tree(folder).items() if TOKEN.encode() in data]


@pytest.mark.parametrize("layout", ["diffusers", "legacy"])
def test_a_pipeline_folder_is_read_literally(tiny_pipeline_dir, tmp_path, monkeypatch, layout):
    """Catches `name: ${oc.env:HF_TOKEN}` in a downloaded folder's config (model_index.json's model_config, or an
    old folder's model.yaml) putting the token into the model_index.json and model card that save_pretrained
    writes."""
    import shutil

    import yaml

    from igr.config import load_model_config
    from igr.export import load_pipeline, write_legacy_pipeline
    from igr.pipeline import IGRPipeline

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    if layout == "diffusers":
        src = Path(shutil.copytree(tiny_pipeline_dir, tmp_path / "downloaded"))
        doc = json.loads((src / "model_index.json").read_text())
        doc["model_config"]["name"] = "${oc.env:HF_TOKEN}"
        (src / "model_index.json").write_text(json.dumps(doc))
        model_doc = doc["model_config"]
    else:
        src = write_legacy_pipeline(load_pipeline(tiny_pipeline_dir)[0], tmp_path / "downloaded")
        doc = yaml.safe_load((src / "model.yaml").read_text())
        doc["model"]["name"] = "${oc.env:HF_TOKEN}"
        (src / "model.yaml").write_text(yaml.safe_dump(doc))
        model_doc = doc["model"]
    pipe = IGRPipeline.from_pretrained(src)
    assert pipe.model.config.name == "${oc.env:HF_TOKEN}"
    out = pipe.save_pretrained(tmp_path / "saved")
    assert _holds_token(out) == []
    assert json.loads((out / "model_index.json").read_text())["model_config"]["name"] == "${oc.env:HF_TOKEN}"
    model_yaml = tmp_path / "model.yaml"
    model_yaml.write_text(yaml.safe_dump(model_doc))
    assert load_model_config(model_yaml).name == "${oc.env:HF_TOKEN}"


@pytest.mark.parametrize("where", ["config", "override"])
def test_fit_configs_resolve_key_references_only(where, fit_shards, tmp_path, capsys, monkeypatch):
    """Catches `${oc.env:HF_TOKEN}` in a fit config (or an override) copying the token into config.yaml and
    hparams.yaml: one line, exit 2, no run folder. (References between keys, `${...default_root_dir}` in every
    experiment file, keep working: every other fit test uses them.)"""
    from fit_helpers import fit_args

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    run = tmp_path / "run"
    extra = tmp_path / "extra.yaml"
    extra.write_text("model:\n  model:\n    name: ${oc.env:HF_TOKEN}\n")
    more = ["-c", str(extra)] if where == "config" else ["--model.model.name=${oc.env:HF_TOKEN}"]
    assert main(fit_args(fit_shards, run, 1, 1, *more)) == 2
    assert _last_line(capsys) == ("error: ${oc.env:...} in the fit config: igr fit resolves only references between "
                                  "keys; set IGR_FIT_RESOLVERS=1 to let it run oc.env")
    assert not run.exists() and _holds_token(tmp_path) == []
    from omegaconf import OmegaConf

    assert OmegaConf.create({"x": "${oc.env:HF_TOKEN}"}).x == TOKEN  # OmegaConf's own resolvers are back after


def test_masking_config_is_read_literally(tmp_path, monkeypatch):
    from igr.masking import load_masking_config

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    path = tmp_path / "masking.yaml"
    path.write_text("parser_path: ${oc.env:HF_TOKEN}\n")
    assert load_masking_config(path).parser_path == "${oc.env:HF_TOKEN}"


# --------------------------------------------------------------------------- 5. unclean cases

BROKEN_YAML = "min_mask_fraction: {a: 0.1\nkeep_fraction: 0.2\n"  # the flow mapping is never closed


def test_curate_broken_config_is_one_line(tmp_path, capsys):
    """Catches PyYAML's multi-line error (a traceback) from `igr curate --config`."""
    data = _shard_folder(tmp_path / "data")
    bad = tmp_path / "bad.yaml"
    bad.write_text(BROKEN_YAML)
    assert main(["curate", str(data), "--out", str(tmp_path / "out"), "--config", str(bad)]) == 2
    assert _last_line(capsys) == (f"error: {bad}: not a readable YAML config (did not find expected ',' or '}}' "
                                  "at line 2, column 14)")
    assert not (tmp_path / "out").exists()


def test_negative_max_steps_is_one_line(fit_shards, tmp_path, capsys):
    """Catches Lightning's MisconfigurationException traceback for --trainer.max_steps=-5."""
    from fit_helpers import fit_args

    run = tmp_path / "run"
    assert main(fit_args(fit_shards, run, 1, 1, "--trainer.max_steps=-5")) == 2
    assert _last_line(capsys) == ("error: trainer: `max_steps` must be a non-negative integer or -1 (infinite steps). "
                                  "You passed in -5.")
    assert not run.exists()


def test_every_shard_unreadable_stops_before_the_run_folder(fit_shards, tmp_path, capsys):
    """Catches a 72-line traceback once training starts, with config.yaml, the event log and hparams.yaml left
    behind: the train shards are checked before the run folder is made."""
    import shutil

    from fit_helpers import fit_args

    shards = Path(shutil.copytree(fit_shards, tmp_path / "shards"))
    (shards / "train-000000.tar").write_bytes(b"not a tar file" * 100)
    run = tmp_path / "run"
    assert main(fit_args(shards, run, 1, 1)) == 2
    line = _last_line(capsys)
    assert line.startswith("error: data.train_shards: no usable sample in 1 shard(s) (1 unreadable_shard); e.g. "), line
    assert not run.exists()


ENOSPC_FIT = """
import errno, os, sys
import torch
from igr.cli import main

def save(obj, f, *args, **kwargs):  # the disk fills up during the first checkpoint save
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
torch.save = save
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_full_disk_during_a_checkpoint_save_is_one_line(fit_shards, tmp_path):
    """Catches a 69-line traceback when the disk fills up during a checkpoint save."""
    import subprocess
    import sys

    from fit_helpers import fit_args

    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-c", ENOSPC_FIT, *fit_args(fit_shards, run, 2, 1)],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: {run}: no space left on device while training; the last complete checkpoint is kept (resume with "
        "--ckpt_path last once there is room)")
    assert not [p for p in run.rglob("*.tmp")]  # no torn temporary beside the checkpoints


SIGINT_FIT = """
import os, sys, time
from pathlib import Path
import igr.system
from igr.cli import main

real = igr.system.IGRSystem.training_step
def training_step(self, *args, **kwargs):
    Path(os.environ["READY"]).write_text("")
    time.sleep(120)  # the user presses Ctrl-C now
    return real(self, *args, **kwargs)
igr.system.IGRSystem.training_step = training_step
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_sigint_during_fit_exits_130(fit_shards, tmp_path):
    """Catches Lightning's exit(1) after Ctrl-C becoming igr fit's exit code (the CLI's convention is 130)."""
    import signal
    import subprocess
    import sys
    import time

    from fit_helpers import fit_args

    from igr.runlock import LOCK_NAME

    ready, run = tmp_path / "ready", tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_FIT, *fit_args(fit_shards, run, 2, 1)],
                            env={**os.environ, "READY": str(ready)}, stderr=subprocess.PIPE, text=True)
    for _ in range(3000):
        if ready.exists() or proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 130, err[-3000:]
    assert err.strip().splitlines()[-1] == "interrupted" and not (run / LOCK_NAME).exists()
