"""``igr restore``: one image and folders; every bad input exits non-zero with one line naming the file and the
problem, and writes nothing; a folder with broken pairs restores the good ones and reports the rest."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
from PIL import Image

from igr.cli import main

STEPS = "2"


@pytest.fixture
def model_dir(tiny_pipeline_dir):
    return tiny_pipeline_dir  # conftest's session-wide folder: these tests only read it (copies are made to break)


def _photo(path, h=120, w=90, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(path)
    return path


def _mask_array(h=120, w=90):
    m = np.zeros((h, w), np.uint8)
    m[30:90, 20:70] = 255
    return m


def _save_mask(path, h=120, w=90):
    Image.fromarray(_mask_array(h, w)).save(path)
    return path


@pytest.fixture
def inputs(tmp_path):
    return {"person": _photo(tmp_path / "person.jpg"), "mask": _save_mask(tmp_path / "mask.png")}


def _run(capsys, model_dir, inputs, out, *extra, **flags):
    """Run ``igr restore`` in-process on ``inputs``; ``flags`` override (None removes) the defaults."""
    args = {"model": model_dir, "person": inputs["person"], "mask": inputs["mask"], "category": "upper"}
    args.update(out=out, steps=STEPS)
    args.update(flags)
    argv = ["restore"]
    for key, value in args.items():
        if value is not None:
            argv += [f"--{key.replace('_', '-')}", str(value)]
    rc = main(argv + list(extra))
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_restores_one_image_atomically_and_refuses_an_existing_output(capsys, model_dir, inputs, tmp_path):
    out = tmp_path / "out" / "garment.png"
    rc, stdout, stderr = _run(capsys, model_dir, inputs, out)
    assert rc == 0, stderr
    assert "wrote" in stdout and str(out) in stdout
    img = Image.open(out)
    assert img.mode == "RGB" and img.size == (48, 64)  # the model resolution, whatever the input size
    assert [p.name for p in out.parent.iterdir()] == ["garment.png"]  # no temporary file left behind
    first = out.read_bytes()

    rc, _, stderr = _run(capsys, model_dir, inputs, out, seed=1)  # asked for by name: an error, not "skipped"
    assert rc == 2 and f"{out}: exists (pass --overwrite" in stderr and len(stderr.strip().splitlines()) == 1
    assert out.read_bytes() == first

    rc, _, _ = _run(capsys, model_dir, inputs, out, "--overwrite", seed=1)
    assert rc == 0 and out.read_bytes() != first  # another seed, another image
    rc, _, _ = _run(capsys, model_dir, inputs, out, "--overwrite", seed=0)
    assert rc == 0 and out.read_bytes() == first  # the same seed, the same image


def test_grey_rgb_masks_are_thresholded_and_reported(capsys, model_dir, inputs, tmp_path):
    ref = tmp_path / "ref.png"
    assert _run(capsys, model_dir, inputs, ref)[0] == 0
    m = _mask_array()
    m[40:50, 30:40] = 200  # grey inside the garment: stays garment
    m[0:10, 0:30] = 100  # grey outside: stays background
    rgb = tmp_path / "rgb_mask.png"
    Image.fromarray(np.stack([m] * 3, -1)).save(rgb)
    out = tmp_path / "grey.png"
    rc, _, stderr = _run(capsys, model_dir, {**inputs, "mask": rgb}, out)
    assert rc == 0
    assert f"warning: {rgb}: 400 grey mask pixels binarised at threshold 127" in stderr
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(ref)))


def test_mask_from_parse_map(capsys, model_dir, inputs, tmp_path):
    ref = tmp_path / "ref.png"
    assert _run(capsys, model_dir, inputs, ref)[0] == 0
    labels = np.zeros((120, 90), np.uint8)
    labels[30:90, 20:45] = 5  # upper-clothes and coat (VITON-HD ids) make up the garment region
    labels[30:90, 45:70] = 7
    labels[90:, 20:70] = 9  # pants: not part of an upper garment
    parse = Image.fromarray(labels, "P")  # VITON-HD's image-parse-v3 are palette PNGs: index = label
    parse.putpalette([v for i in range(256) for v in (i * 37 % 256, i * 91 % 256, i * 53 % 256)])
    parse.save(tmp_path / "parse.png")
    for spec in ("5,6,7", "viton-hd"):
        out = tmp_path / f"parse-{spec}.png"
        rc, _, stderr = _run(
            capsys, model_dir, inputs, out, mask=None, mask_from_parse=tmp_path / "parse.png", labels=spec
        )
        assert rc == 0, stderr
        assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(ref))), spec


def test_resize_mask_scales_a_smaller_mask(capsys, model_dir, inputs, tmp_path):
    small = _save_mask(tmp_path / "small.png", 60, 45)
    out = tmp_path / "out.png"
    rc, _, stderr = _run(capsys, model_dir, {**inputs, "mask": small}, out)
    assert rc == 2 and "--resize-mask" in stderr and not out.exists()
    rc, _, stderr = _run(capsys, model_dir, {**inputs, "mask": small}, out, "--resize-mask")
    assert rc == 0, stderr
    assert out.exists()


def _bad_case(name, tmp_path, model_dir, inputs):
    """(input/flag overrides, expected message, file named in it) for one bad input."""
    d = tmp_path
    if name == "person missing":
        return {"person": d / "nope.jpg"}, "person file not found", d / "nope.jpg"
    if name == "person not an image":
        (d / "fake.jpg").write_text("hello")
        return {"person": d / "fake.jpg"}, "not an image", d / "fake.jpg"
    if name == "person truncated":
        (d / "cut.jpg").write_bytes(inputs["person"].read_bytes()[:600])
        return {"person": d / "cut.jpg"}, "unreadable person image", d / "cut.jpg"
    if name == "person is a folder":
        return {"person": d}, "is a directory", d
    if name == "mask missing":
        return {"mask": d / "nope.png"}, "mask file not found", d / "nope.png"
    if name == "mask not an image":
        (d / "fake.png").write_bytes(b"\x89PNG not really")
        return {"mask": d / "fake.png"}, "not an image", d / "fake.png"
    if name == "mask size differs":
        return {"mask": _save_mask(d / "m.png", 60, 45)}, r"mask is 60x45 \(HxW\) but person", d / "m.png"
    if name == "mask empty":
        Image.fromarray(np.zeros((120, 90), np.uint8)).save(d / "empty.png")
        return {"mask": d / "empty.png"}, "empty mask", d / "empty.png"
    if name == "parse labels absent":
        Image.fromarray(np.full((120, 90), 3, np.uint8), "L").save(d / "parse.png")
        flags = {"mask": None, "mask_from_parse": d / "parse.png", "labels": "5,6,7"}
        return flags, r"empty mask, no pixel has label 5,6,7 \(labels present: 3\)", d / "parse.png"
    if name == "category":
        return {"category": "shirt"}, "category 'shirt' is not one of upper, lower, full", "--category"
    if name == "model missing":
        return {"model": d / "none"}, "model folder not found", d / "none"
    if name == "model not a pipeline":
        return {"model": d}, "not a pipeline folder", d
    if name == "model weights corrupt":
        bad = shutil.copytree(model_dir, d / "bad")
        (bad / "denoiser" / "diffusion_pytorch_model.safetensors").write_bytes(b"garbage")
        return {"model": bad}, "Unable to load weights", bad / "denoiser" / "diffusion_pytorch_model.safetensors"
    if name == "model weights mismatched":
        bad = shutil.copytree(model_dir, d / "bad")
        weights = "diffusion_pytorch_model.safetensors"
        shutil.copy(bad / "denoiser" / weights, bad / "garmnet" / weights)
        return {"model": bad}, r"unet\.conv_in\.weight expected shape", bad / "garmnet"
    if name == "output not writable":
        (d / "file").write_text("")
        return {"out": d / "file" / "g.png"}, "not writable", d / "file" / "g.png"
    if name == "output extension":
        return {"out": d / "out" / "g.xyz"}, "unsupported output extension", d / "out" / "g.xyz"
    if name == "size":
        return {"size": "128x96"}, "--size 128x96: .* restores at 64x48 only", "--size"
    raise AssertionError(name)


BAD = [
    "person missing",
    "person not an image",
    "person truncated",
    "person is a folder",
    "mask missing",
    "mask not an image",
    "mask size differs",
    "mask empty",
    "parse labels absent",
    "category",
    "model missing",
    "model not a pipeline",
    "model weights corrupt",
    "model weights mismatched",
    "output not writable",
    "output extension",
    "size",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_exits_with_one_line_and_writes_nothing(case, capsys, model_dir, inputs, tmp_path):
    flags, message, named = _bad_case(case, tmp_path, model_dir, inputs)
    flags.setdefault("out", tmp_path / "out" / "g.png")
    before = {p for p in tmp_path.rglob("*")}
    rc, stdout, stderr = _run(capsys, model_dir, inputs, **flags)
    assert rc == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: {named}"), lines[0]
    assert re.search(message, lines[0]), lines[0]
    assert {p for p in tmp_path.rglob("*")} == before  # no output, no temporary file, no folder


def test_conflicting_or_missing_flags(capsys, model_dir, inputs, tmp_path):
    cases = [
        ({"input_dir": tmp_path}, "give --person (one image) or --input-dir"),
        ({"out": None}, "--out: required"),
        ({"category": None}, "--category: required"),
        ({"mask_from_parse": tmp_path / "p.png", "labels": "5"}, "give --mask MASK or --mask-from-parse"),
        ({"mask": None, "mask_from_parse": tmp_path / "p.png"}, "needs --labels"),
        ({"labels": "5"}, "--labels: only used with --mask-from-parse"),
        ({"out_dir": tmp_path}, "--out-dir is for folders"),
        ({"steps": 0}, "--steps 0: must be from 1 to 1000"),
        ({"size": "big"}, "--size 'big': expected HxW"),
        ({"device": "gpu0"}, "not a device name"),
    ]
    for flags, message in cases:
        rc, _, stderr = _run(capsys, model_dir, inputs, flags.pop("out", tmp_path / "o.png"), **flags)
        assert rc == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, (flags, stderr)
    assert not (tmp_path / "o.png").exists()


# --------------------------------------------------------------------------- folders


def _folder(root):
    """person/ + mask/ with three good pairs, a broken mask, a person without a mask; a categories CSV with
    one bad category."""
    (root / "person").mkdir(parents=True)
    (root / "mask").mkdir()
    for i, stem in enumerate(["a", "b", "c", "d", "e"]):
        _photo(root / "person" / f"{stem}.jpg", seed=i)
    for stem in ["a", "b", "c"]:
        _save_mask(root / "mask" / f"{stem}.png")
    (root / "mask" / "d.png").write_text("not a png")
    (root / "person" / ".DS_Store").write_text("ignored")
    (root / "categories.csv").write_text("name,category\na.jpg,upper\nb,lower\nc,shirt\nd,upper\ne,full\n")
    return root


def test_folder_restores_good_pairs_and_reports_bad_ones(capsys, model_dir, tmp_path):
    src = _folder(tmp_path / "in")
    out_dir = tmp_path / "out"
    argv = ["restore", "--model", str(model_dir), "--input-dir", str(src), "--out-dir", str(out_dir)]
    argv += ["--categories", str(src / "categories.csv"), "--steps", STEPS, "--batch-size", "2"]
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 1  # something failed
    assert sorted(p.name for p in out_dir.iterdir()) == ["a.png", "b.png"]
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 3, captured.err
    assert any("line 4: 'c': category 'shirt' is not one of" in e for e in errors)
    assert any(str(src / "mask" / "d.png") in e and "not an image" in e for e in errors)
    assert any(str(src / "person" / "e.jpg") in e and "no mask" in e for e in errors)
    assert "restored 2" in captured.out and "failed 3" in captured.out

    # the same pair restored alone with the same seed gives the same garment
    single = tmp_path / "a_single.png"
    argv_one = ["restore", "--model", str(model_dir), "--person", str(src / "person" / "a.jpg")]
    argv_one += ["--mask", str(src / "mask" / "a.png"), "--category", "upper", "--out", str(single)]
    assert main(argv_one + ["--steps", STEPS]) == 0
    diff = np.abs(np.asarray(Image.open(single), int) - np.asarray(Image.open(out_dir / "a.png"), int))
    assert diff.max() <= 2  # batched convolutions may round differently

    a_bytes = (out_dir / "a.png").read_bytes()
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 1 and "restored 0, skipped 2 existing" in captured.out
    assert (out_dir / "a.png").read_bytes() == a_bytes


def test_folder_of_parse_maps_with_one_category(capsys, model_dir, tmp_path):
    src = tmp_path / "in"
    (src / "image").mkdir(parents=True)
    (src / "image-parse-v3").mkdir()
    for stem in ("x", "y"):
        _photo(src / "image" / f"{stem}.jpg")
        labels = np.zeros((120, 90), np.uint8)
        labels[80:, 20:70] = 9 if stem == "x" else 2  # y has no lower garment label
        Image.fromarray(labels, "L").save(src / "image-parse-v3" / f"{stem}.png")
    argv = ["restore", "--model", str(model_dir), "--input-dir", str(src), "--out-dir", str(tmp_path / "out")]
    argv += ["--person-subdir", "image", "--mask-subdir", "image-parse-v3", "--labels", "viton-hd"]
    rc = main(argv + ["--category", "lower", "--steps", STEPS])
    captured = capsys.readouterr()
    assert rc == 1
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.png"]
    assert f"error: {src / 'image-parse-v3' / 'y.png'}: empty mask, no pixel has label 9,12" in captured.err


def test_folder_errors_before_any_work(capsys, model_dir, tmp_path):
    src = _folder(tmp_path / "in")
    base = ["restore", "--model", str(model_dir), "--input-dir", str(src), "--steps", STEPS]
    cases = [
        (["--out-dir", str(tmp_path / "o")], "give --category (one for all images) or --categories CSV"),
        (["--category", "upper"], "--out-dir: required"),
        (["--out-dir", str(src / "categories.csv"), "--category", "upper"], "exists and is not a directory"),
        (
            ["--out-dir", str(tmp_path / "o"), "--category", "upper", "--mask-subdir", "masks"],
            "folder not found",
        ),
        (
            ["--out-dir", str(tmp_path / "o"), "--categories", str(tmp_path / "no.csv")],
            "categories file not found",
        ),
    ]
    for extra, message in cases:
        rc = main(base + extra)
        err = capsys.readouterr().err
        assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "o").exists()
