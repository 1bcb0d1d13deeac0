"""Fault injection for the restore CLI, image and weights I/O (issue 36): every bad input or argument gives one
line, the right exit code, and nothing written — and an input is never replaced, ``--overwrite`` or not."""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from igr.cli import main

STEPS = "2"


def _photo(path, h=120, w=90, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _mask(path, h=120, w=90):
    m = np.zeros((h, w), np.uint8)
    m[30:90, 20:70] = 255
    Image.fromarray(m).save(path)
    return path


def _one_line_error(rc, err, code=2):
    lines = err.strip().splitlines()
    assert rc == code and len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in err, err
    return lines[0]


def _restore(capsys, *argv):
    rc = main(["restore", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------------- --overwrite never replaces inputs


@pytest.mark.parametrize("which", ["person", "mask", "person-link", "person-hardlink"])
def test_out_naming_an_input_is_refused_even_with_overwrite(capsys, tiny_pipeline_dir, tmp_path, which):
    """Catches: `--out <the person photo> --overwrite` replacing the photo (also through a link or another
    spelling of the path), and the check coming after the model load."""
    person = _photo(tmp_path / "person.png")
    mask = _mask(tmp_path / "mask.png")
    kept = {p: p.read_bytes() for p in (person, mask)}
    out = {"person": tmp_path / "." / "person.png", "mask": mask}.get(which)
    if which == "person-link":
        out = tmp_path / "link.png"
        out.symlink_to(person)
    elif which == "person-hardlink":
        out = tmp_path / "hard.png"
        os.link(person, out)
    rc, _, err = _restore(capsys, "--model", tmp_path / "no-model", "--person", person, "--mask", mask,
                          "--category", "upper", "--out", out, "--overwrite", "--steps", STEPS)  # fmt: skip
    line = _one_line_error(rc, err)
    assert "is the input" in line and "never replaced" in line
    assert {p: p.read_bytes() for p in kept} == kept


def test_save_mask_naming_an_input_is_refused(capsys, tiny_pipeline_dir, tmp_path):
    """Catches: --save-mask writing OUT_mask.png over an input mask of that name."""
    person = _photo(tmp_path / "g.png")
    mask = _mask(tmp_path / "g_mask.png")
    before = mask.read_bytes()
    rc, _, err = _restore(capsys, "--model", tiny_pipeline_dir, "--person", person, "--mask", mask,
                          "--category", "upper", "--out", tmp_path / "g.jpg", "--save-mask", "--overwrite")  # fmt: skip
    assert "--save-mask" in _one_line_error(rc, err) and mask.read_bytes() == before
    assert not (tmp_path / "g.jpg").exists()


def _batch(root, n=3):
    (root / "person").mkdir(parents=True)
    (root / "mask").mkdir()
    for i in range(n):
        _photo(root / "person" / f"p{i}.png", seed=i)
        _mask(root / "mask" / f"p{i}.png")
    return root


@pytest.mark.parametrize("sub", ["person", "mask", "person/deeper"])
def test_out_dir_inside_an_input_folder_is_refused(capsys, tmp_path, sub):
    """Catches: `--input-dir batch --out-dir batch/person --overwrite` replacing the photos with garments, and
    without --overwrite the inputs reported as 'skipped existing'."""
    src = _batch(tmp_path / "batch")
    before = {p: p.read_bytes() for p in src.rglob("*.png")}
    for extra in ([], ["--overwrite"]):
        rc, out, err = _restore(capsys, "--model", tmp_path / "no-model", "--input-dir", src,
                                "--out-dir", src / sub, "--category", "upper", *extra)  # fmt: skip
        line = _one_line_error(rc, err)
        assert "inside the input folder" in line and "skipped" not in out
    assert {p: p.read_bytes() for p in src.rglob("*.png")} == before
    assert not (src / "person" / "deeper").exists()


def test_out_dir_linked_to_an_input_file_fails_that_pair_only(capsys, tiny_pipeline_dir, tmp_path):
    """Catches: an output that is a link to an input (here STEM.png → the person photo) being replaced."""
    src = _batch(tmp_path / "batch", n=2)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "p0.png").symlink_to(src / "person" / "p0.png")
    before = (src / "person" / "p0.png").read_bytes()
    rc, out, err = _restore(capsys, "--model", tiny_pipeline_dir, "--input-dir", src, "--out-dir", out_dir,
                            "--category", "upper", "--overwrite", "--steps", STEPS)  # fmt: skip
    assert rc == 1 and "is the input" in err and "restored 1" in out and "failed 1" in out
    assert (src / "person" / "p0.png").read_bytes() == before
    assert (out_dir / "p1.png").is_file()


# --------------------------------------------------------------------------- weights, arguments, results


def _corrupt_weights(src, dst, change):
    """A copy of the pipeline folder whose denoiser weights (diffusers layout: ``denoiser/`` holds them) have one
    tensor changed by ``change(name, t)``."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    path = dst / "denoiser" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    name = next(k for k, v in state.items() if v.is_floating_point() and v.numel() > 1)
    state[name] = change(state[name])
    save_file(state, str(path))
    return path, name


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda t: t.to(torch.int8), "is int8, expected floating-point weights"),
        (lambda t: t.clone().fill_(float("nan")), "NaN/inf value(s)"),
    ],
    ids=["int8", "nan"],
)
def test_unusable_weights_are_one_line_naming_the_file_and_tensor(capsys, tiny_pipeline_dir, tmp_path, inputs_1,
                                                                    change, message):  # fmt: skip
    """Catches: an int8 tensor loaded and failing deep in the first forward pass (286 lines), and NaN weights
    restoring an all-black PNG with exit 0."""
    path, name = _corrupt_weights(tiny_pipeline_dir, tmp_path / "pipe", change)
    out = tmp_path / "out.png"
    rc, _, err = _restore(capsys, "--model", tmp_path / "pipe", *inputs_1, "--out", out, "--steps", STEPS)
    line = _one_line_error(rc, err)
    assert str(path) in line and f"'{name}'" in line and message in line
    assert not out.exists()


@pytest.fixture
def inputs_1(tmp_path):
    person, mask = _photo(tmp_path / "person.png"), _mask(tmp_path / "mask.png")
    return ["--person", person, "--mask", mask, "--category", "upper"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--steps", "5000"], "--steps 5000: must be from 1 to 1000"),
        (["--steps", "0"], "--steps 0: must be from 1 to 1000"),
        (["--guidance", "inf"], "--guidance inf: must be a finite number"),
        (["--guidance", "nan"], "--guidance nan: must be a finite number"),
    ],
)
def test_sampling_flags_out_of_range_are_refused_before_loading(capsys, tiny_pipeline_dir, tmp_path, inputs_1,
                                                                  monkeypatch, flags, message):  # fmt: skip
    """Catches: --steps 5000 failing with a ValueError after the model load, and --guidance inf/nan writing an
    all-black PNG with exit 0."""
    from igr.pipeline import IGRPipeline

    def no_load(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(IGRPipeline, "from_pretrained", no_load)
    out = tmp_path / "out.png"
    rc, _, err = _restore(capsys, "--model", tiny_pipeline_dir, *inputs_1, "--out", out, *flags)
    assert message in _one_line_error(rc, err) and not out.exists()


def test_a_nan_result_is_an_error_and_no_image_is_written(capsys, tiny_pipeline_dir, tmp_path, inputs_1,
                                                         monkeypatch):  # fmt: skip
    """Catches: a NaN result clamped to an all-black PNG, written with exit 0."""
    from igr.pipeline import IGRPipeline

    monkeypatch.setattr(IGRPipeline, "generate", lambda self, person, *a, **k: torch.full_like(person, float("nan")))
    out = tmp_path / "out.png"
    rc, _, err = _restore(capsys, "--model", tiny_pipeline_dir, *inputs_1, "--out", out, "--steps", STEPS)
    assert "NaN/inf" in _one_line_error(rc, err) and not out.exists()


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from igr.config import CONFIG_DIR, load_model_config
    from igr.export import export_pipeline
    from igr.models import build_model
    from igr.pipeline import IGRPipeline

    torch.manual_seed(0)
    folder = export_pipeline(
        build_model(load_model_config(CONFIG_DIR / "model" / "tiny.yaml")).eval(), tmp_path_factory.mktemp("p") / "pipe"
    )
    return IGRPipeline.from_pretrained(folder, device="cpu")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_inference_steps=5000), "num_inference_steps=5000: must be an integer from 1 to 1000"),
        (dict(num_inference_steps=0), "num_inference_steps=0: must be an integer from 1 to 1000"),
        (dict(num_inference_steps=2.5), "num_inference_steps=2.5: must be an integer"),
        (dict(guidance_scale=float("inf")), "guidance_scale=inf: must be a finite number"),
        (dict(guidance_scale=float("nan")), "guidance_scale=nan: must be a finite number"),
        (dict(guidance_scale="a lot"), "guidance_scale='a lot': expected a number"),
    ],
)
def test_python_api_refuses_bad_sampling_arguments_by_name(pipe, kwargs, message):
    """Catches: the Python API taking steps out of the scheduler's range (a ValueError from diffusers, or 0
    silently meaning the default) or a non-finite guidance (a black image), in __call__ and in generate."""
    from igr.errors import IGRError

    person = torch.rand(3, 80, 60)
    mask = torch.zeros(1, 80, 60)
    mask[:, 20:60, 10:50] = 1
    with pytest.raises(IGRError, match=re.escape(message)):
        pipe(person, mask, **kwargs)
    with pytest.raises(IGRError, match=re.escape(message)):
        pipe.generate(torch.zeros(1, 3, 64, 48), torch.ones(1, 1, 64, 48), ["upper"], **kwargs)


# --------------------------------------------------------------------------- special files, eval-folders --out


def test_person_as_a_fifo_or_dev_zero_is_refused_without_reading(tmp_path):
    """Catches: --person on a FIFO hanging forever, and /dev/zero read until memory runs out. In a subprocess
    with a timeout and a memory cap, so that a regression fails instead of taking the machine down."""
    import resource
    import subprocess
    import sys

    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    mask = _mask(tmp_path / "mask.png")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))

    for person in (fifo, "/dev/zero"):
        argv = [sys.executable, "-m", "igr.cli", "restore", "--model", str(tmp_path / "no-model"), "--person",
                str(person), "--mask", str(mask), "--category", "upper", "--out", str(tmp_path / "out.png")]  # fmt: skip
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, preexec_fn=cap)
        line = _one_line_error(proc.returncode, proc.stderr)
        assert f"{person}: not a regular file" in line
    assert not (tmp_path / "out.png").exists()


def test_image_reads_are_capped(tmp_path, monkeypatch):
    """Catches: an image file read whole whatever its size (the cap counts bytes read, not st_size)."""
    from igr import imageio
    from igr.errors import IGRError

    big = tmp_path / "big.png"
    big.write_bytes(b"\0" * 2048)
    with pytest.raises(IGRError, match="over 0 MiB"):
        imageio.read_file_bytes(big, "person", limit=1024)


@pytest.mark.parametrize("where", ["pred", "pred/eval", "gt"])
def test_eval_folders_out_inside_an_input_folder_is_refused(capsys, tmp_path, where):
    """Catches: `eval-folders --out PRED` writing samples.jpg among the predictions, which the next run scores."""
    for sub in ("pred", "gt"):
        (tmp_path / sub).mkdir()
        _photo(tmp_path / sub / "a.png", 64, 48)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    rc = main(["eval-folders", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
               "--out", str(tmp_path / where), "--size", "64x48"])  # fmt: skip
    line = _one_line_error(rc, capsys.readouterr().err)
    assert "inside the" in line and sorted(p.name for p in tmp_path.rglob("*")) == before
