"""``igr eval-folders``: the happy paths and each bad input (one-line error, exit code 2, nothing written)."""

import json

import pytest
from metrics_helpers import files_in, random_pairs, save_folder
from PIL import Image

from igr.cli import main
from igr.metrics import ssim_pinned

NAMES = [f"{i:05d}_00" for i in range(4)]


@pytest.fixture
def folders(tmp_path):
    pred, gt = random_pairs(4, 64, 48, noise=25)
    save_folder(tmp_path / "pred", pred, NAMES, ".png")
    save_folder(tmp_path / "gt", gt, NAMES, ".png")
    return tmp_path, pred, gt


def _run(capsys, *argv):
    rc = main(["eval-folders", *map(str, argv)])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


def test_paired_happy_path(folders, capsys):
    root, pred, gt = folders
    out = root / "out"
    empty = root / "no-weights"  # not the checkout's weights/metrics, which `make download-weights` fills
    empty.mkdir()
    cfg = root / "metrics.yaml"
    cfg.write_text(f"weights_dir: {empty}\n")
    rc, stdout, _ = _run(
        capsys, "--pred", root / "pred", "--gt", root / "gt", "--size", "64x48", "--weights-config", cfg, "--out", out
    )
    assert rc == 0
    assert files_in(out) == ["metrics.csv", "metrics.json", "report.md", "samples.jpg"]
    data = json.loads((out / "metrics.json").read_text())
    (row,) = data["rows"]
    assert row["name"] == "pred" and row["unpaired"] is None
    assert row["paired"]["ssim"] == pytest.approx(ssim_pinned(pred, gt).mean().item(), abs=1e-12)
    assert row["paired"]["fid"] == f"n/a (no Inception weights at {empty / 'inception-2015-12-05.pt'})"
    md = (out / "report.md").read_text()
    assert "scored at 64×48" in md and "Not the paper's protocol resolution" in md
    assert "ssim: " in stdout


def test_unpaired_with_real_set_and_weights_config(tmp_path, capsys):
    pred, _ = random_pairs(3, 64, 48, seed=1)
    real, _ = random_pairs(4, 64, 48, seed=2)
    save_folder(tmp_path / "street", pred, ["a", "b", "c"], ".jpg")
    save_folder(tmp_path / "real", real, ["w", "x", "y", "z"], ".png")
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text("metrics: [fid, kid]\nkid: {subset_size: 1000, num_subsets: 10, seed: 0}\n")
    rc, _, _ = _run(
        capsys,
        "--pred",
        tmp_path / "street",
        "--real",
        tmp_path / "real",
        "--size",
        "64x48",
        "--weights-config",
        cfg,
        "--out",
        tmp_path / "out",
        "--allow-random-backbone",
        "--cache-dir",
        tmp_path / "c",
    )
    assert rc == 0
    data = json.loads((tmp_path / "out" / "metrics.json").read_text())
    unpaired = data["rows"][0]["unpaired"]
    assert set(unpaired) == {"fid_random_backbone", "kid_x1e3_random_backbone"}
    assert data["rows"][0]["paired"] is None
    md = (tmp_path / "out" / "report.md").read_text()
    assert "10 subsets of 3 images" in md and "smaller than clean-fid's 1000" in md
    assert "RANDOM-INIT BACKBONES" in md and "compare --pred with --real" in md
    assert len(list((tmp_path / "c").glob("*.npz"))) == 1  # the real set's features are cached


def test_resize_flag_resizes_and_says_so(folders, capsys):
    root, _, _ = folders
    Image.open(root / "gt" / f"{NAMES[0]}.png").resize((96, 128)).save(root / "gt" / f"{NAMES[0]}.png")
    out = root / "out"
    rc, _, err = _run(capsys, "--pred", root / "pred", "--gt", root / "gt", "--size", "64x48", "--out", out)
    assert rc == 2 and not out.exists()
    assert err.startswith(f"error: {root / 'gt' / NAMES[0]}.png: --gt image is 128x96, expected 64x48")
    assert "pass --resize" in err and err.count("\n") == 1
    rc, _, _ = _run(
        capsys, "--pred", root / "pred", "--gt", root / "gt", "--size", "64x48", "--out", out, "--resize"
    )
    assert rc == 0
    assert "--resize: 1 --gt image(s) were not 64x48; resized to it" in (out / "report.md").read_text()


def _bad(root, case):
    """Break the folders in one way; return the extra argv and the expected error text."""
    pred, gt = root / "pred", root / "gt"
    if case == "missing names":
        (gt / f"{NAMES[1]}.png").unlink()
        (pred / f"{NAMES[3]}.png").rename(pred / "zzz.png")
        return [], "file names differ from"
    if case == "too few for FID":
        for n in NAMES[1:]:
            (gt / f"{n}.png").unlink()
            (pred / f"{n}.png").unlink()
        return [], "--pred: FID/CLIP-FID/KID need at least 2 images, found 1"
    if case == "corrupt image":
        (pred / f"{NAMES[2]}.png").write_bytes(b"not an image")
        return [], f"{NAMES[2]}.png: not an image (cannot identify the --pred file's format)"
    if case == "duplicate names":
        Image.open(pred / f"{NAMES[0]}.png").save(pred / f"{NAMES[0]}.jpg")
        return [], f"two images named '{NAMES[0]}'"
    if case == "bad size":
        return ["--size", "64by48"], "--size '64by48': expected HxW"
    if case == "no gt or real":
        return ["--gt", None], "give --gt (paired test) and/or --real"
    if case == "no such folder":
        return ["--real", root / "nope"], "nope: --real folder not found"
    if case == "bad weights config":
        (root / "w.yaml").write_text("weights:\n  inceptoin: x.pt\n")
        return ["--weights-config", root / "w.yaml"], "unknown key 'inceptoin'"
    if case == "unreadable weights":
        (root / "inception.pt").write_bytes(b"truncated download")
        (root / "w.yaml").write_text(f"weights:\n  inception: {root / 'inception.pt'}\n")
        return ["--weights-config", root / "w.yaml"], "inception.pt: not clean-fid's TorchScript Inception"
    if case == "empty folder":
        for p in pred.iterdir():
            p.unlink()
        return [], "no images"
    raise AssertionError(case)


CASES = [
    "missing names",
    "too few for FID",
    "corrupt image",
    "duplicate names",
    "bad size",
    "no gt or real",
    "no such folder",
    "bad weights config",
    "unreadable weights",
    "empty folder",
]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_one_line_error_and_writes_nothing(folders, capsys, case):
    root, _, _ = folders
    extra, message = _bad(root, case)
    argv = ["--pred", root / "pred", "--gt", root / "gt", "--size", "64x48", "--out", root / "out"]
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        i = argv.index(flag) if flag in argv else None
        if i is not None:
            del argv[i : i + 2]
        if value is not None:
            argv += [flag, value]
    rc, stdout, err = _run(capsys, *argv)
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (root / "out").exists()


def test_missing_names_message_lists_first_names(folders, capsys):
    root, _, _ = folders
    _bad(root, "missing names")
    rc, _, err = _run(capsys, "--pred", root / "pred", "--gt", root / "gt", "--size", "64x48")
    assert rc == 2
    assert f"1 ground-truth image(s) have no prediction (first: {NAMES[3]})" in err
    assert f"2 prediction(s) have no ground truth (first: {NAMES[1]}, zzz)" in err
