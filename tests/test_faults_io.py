"""Fault injection for the restore CLI, image and weights I/O (issue 36): every bad input or argument gives one
line, the right exit code, and nothing written — and an input is never replaced, ``--overwrite`` or not."""

from __future__ import annotations

import os

import numpy as np
import pytest
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
