"""One image reader and one CSV reader for every command: restore, make-shards (folder) and eval-folders see
EXIF-rotated, transparent, 16-bit, CMYK, palette, grey and grey+alpha images as a viewer shows them, refuse
decompression bombs with one line, and read Excel's CSVs."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from image_cases import FORMATS, H, W, assert_pixels, write, write_mask
from PIL import Image

from igr import imageio, restore_io
from igr.cli import main
from igr.data import iter_samples


@pytest.fixture(scope="module")
def model_dir(tiny_pipeline_dir):
    return tiny_pipeline_dir


class _Seen(Exception):
    """Stops `igr restore` once the model inputs are prepared: the test has what it needs."""


def _capture_persons(monkeypatch, stop_after: int) -> list:
    seen = []
    original = restore_io.model_inputs

    def spy(person, mask, resolution, mask_name):
        seen.append((np.asarray(person).copy(), mask.copy()))
        if len(seen) == stop_after:
            raise _Seen
        return original(person, mask, resolution, mask_name)

    monkeypatch.setattr(restore_io, "model_inputs", spy)
    return seen


def test_restore_folder_reads_every_format_as_displayed(model_dir, tmp_path, monkeypatch, capsys):
    """Catches: 16-bit persons clipped to white, alpha dropped (black background), EXIF ignored (a rotated
    photo, refused as a mask size mismatch), CMYK/palette/LA read wrongly — in restore's folder mode."""
    expected = {}
    for fmt in FORMATS:
        _, expected[fmt] = write(fmt, tmp_path / "in" / "person", fmt)
        write_mask(tmp_path / "in" / "mask" / f"{fmt}.png")
    seen = _capture_persons(monkeypatch, stop_after=len(FORMATS))
    with pytest.raises(_Seen):
        main(["restore", "--model", str(model_dir), "--input-dir", str(tmp_path / "in"), "--category", "upper",
              "--out-dir", str(tmp_path / "out"), "--steps", "1", "--batch-size", "8"])
    assert "error" not in capsys.readouterr().err
    for fmt, (person, _) in zip(sorted(FORMATS), seen, strict=True):  # pairs are taken in stem order
        assert_pixels(person, expected[fmt], fmt)


def test_restore_one_image_exif_and_16bit_mask(model_dir, tmp_path, monkeypatch):
    """Catches: the single-image path ignoring EXIF, and a 16-bit mask clipped (every grey pixel → garment)."""
    person, expected = write("exif_rotated", tmp_path, "me")
    m = np.full((H, W), 100 * 257, np.uint16)  # background 100/255: below the threshold 127
    m[10:50, 8:40] = 200 * 257
    Image.fromarray(m).save(tmp_path / "mask16.png")
    seen = _capture_persons(monkeypatch, stop_after=1)
    with pytest.raises(_Seen):
        main(["restore", "--model", str(model_dir), "--person", str(person), "--mask", str(tmp_path / "mask16.png"),
              "--category", "upper", "--out", str(tmp_path / "o.png"), "--steps", "1"])
    got_person, got_mask = seen[0]
    assert_pixels(got_person, expected, "exif_rotated")
    want = np.zeros((H, W), np.uint8)
    want[10:50, 8:40] = 1
    assert np.array_equal(got_mask, want)


def test_make_shards_folder_reads_every_format(tmp_path, capsys):
    """Catches the make-shards `folder` converter reading any format differently from restore (EXIF photos
    skipped as size mismatches, 16-bit white, transparent → black, CMYK inverted) and clipping 16-bit masks."""
    root = tmp_path / "mine"
    expected = {}
    for i, fmt in enumerate(FORMATS):
        _, expected[fmt] = write(fmt, root / "person", fmt, seed=i)
        write(fmt, root / "garment", fmt, seed=i)
        m = np.full((H, W), 100 * 257, np.uint16)  # a 16-bit mask: background 100/255, garment 200/255
        m[10:50, 8:40] = 200 * 257
        (root / "mask").mkdir(exist_ok=True)
        Image.fromarray(m).save(root / "mask" / f"{fmt}.png")
    (root / "categories.csv").write_text("key,category\n" + "".join(f"{f},upper\n" for f in FORMATS))
    out = tmp_path / "shards"
    assert main(["make-shards", "folder", "--root", str(root), "--out", str(out), "--size", f"{H}x{W}"]) == 0
    assert f"wrote {len(FORMATS)} samples" in capsys.readouterr().out
    samples = {s["key"]: s for s in iter_samples(str(out))}
    want_mask = np.zeros((H, W), np.uint8)
    want_mask[10:50, 8:40] = 1
    for fmt in FORMATS:
        s = samples[fmt]
        for part in ("person", "garment"):  # re-encoded as JPEG: compare the mean error
            err = np.abs(s[part].astype(int) - expected[fmt].astype(int)).mean()
            assert err < 3, f"{fmt} {part}: mean error {err:.1f}"
        assert np.array_equal(s["mask"], want_mask), fmt


@pytest.mark.parametrize("fmt", FORMATS)
def test_eval_folders_reads_every_format(fmt, tmp_path, capsys):
    """Catches eval-folders scoring a prediction other than as displayed: transparent → black (SSIM 0.46 for
    identical pixels), 16-bit → white, EXIF ignored (size error or a stretched image)."""
    for seed in (0, 1):
        _, expected = write(fmt, tmp_path / "pred", f"{seed:05d}", seed=seed)
        (tmp_path / "gt").mkdir(exist_ok=True)
        Image.fromarray(expected).save(tmp_path / "gt" / f"{seed:05d}.png")
    out = tmp_path / "eval"
    rc = main(["eval-folders", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
               "--size", f"{H}x{W}", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    ssim = json.loads((out / "metrics.json").read_text())["rows"][0]["paired"]["ssim"]
    assert ssim > (0.97 if fmt == "exif_rotated" else 0.9999), f"{fmt}: SSIM {ssim}"


# --------------------------------------------------------------------------- decompression bombs


@pytest.fixture
def small_limit(monkeypatch):
    """A 2000-pixel limit, so a 64x48 (3072-pixel) image is a "bomb" for PIL (warning zone) and for us."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 2000)


def _no_bomb_warning(run):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = run()
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    return result


BOMB_LINE = "{path}: {what} image is 48x64 (W×H, 3,072 pixels), over the limit of 2,000 pixels that guards " \
            "against decompression bombs"


def test_bomb_restore_is_one_line(small_limit, model_dir, tmp_path, capsys):
    """Catches PIL's two-line DecompressionBombWarning leaking out, or the image being decoded anyway."""
    person = tmp_path / "p.png"
    Image.fromarray(np.zeros((H, W, 3), np.uint8)).save(person)
    mask = write_mask(tmp_path / "m.png")
    out = tmp_path / "o.png"
    rc = _no_bomb_warning(lambda: main(["restore", "--model", str(model_dir), "--person", str(person), "--mask",
                                        str(mask), "--category", "upper", "--out", str(out)]))
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert err.strip() == "error: " + BOMB_LINE.format(path=person, what="person")


def test_bomb_make_shards_and_eval_folders(small_limit, tmp_path, capsys):
    """Catches the bomb limit missing from make-shards (decoded, or a raw warning) and eval-folders."""
    root = tmp_path / "mine"
    write("grey", root / "person", "k")
    write_mask(root / "mask" / "k.png")
    (root / "categories.csv").write_text("key,category\nk,upper\n")
    rc = _no_bomb_warning(lambda: main(["make-shards", "folder", "--root", str(root), "--out",
                                        str(tmp_path / "s"), "--size", f"{H}x{W}"]))
    text = capsys.readouterr().out
    assert rc == 1 and "wrote 0 samples" in text and "undecodable: 1" in text  # 1: nothing written
    assert BOMB_LINE.format(path=root / "person" / "k.png", what="person") in " ".join(text.split())

    for d in ("pred", "gt"):
        for seed in (0, 1):
            write("grey", tmp_path / d, f"{seed}", seed=seed)
    rc = _no_bomb_warning(lambda: main(["eval-folders", "--pred", str(tmp_path / "pred"), "--gt",
                                        str(tmp_path / "gt"), "--size", f"{H}x{W}", "--out", str(tmp_path / "e")]))
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "e").exists()
    assert err.strip() == "error: " + BOMB_LINE.format(path=tmp_path / "pred" / "0.png", what="--pred")


# --------------------------------------------------------------------------- CSV files

CSV_CASES = {
    "utf8_bom": ("\ufeffkey,category\ncafé,upper\n".encode(), None),  # Excel's "CSV UTF-8"
    "cp1252": ("key,category\ncafé,upper\n".encode("cp1252"), None),  # Excel's plain "CSV" on Windows
    "undecodable": (b"key,category\n\x81\x8d,upper\n", "cannot decode the {what} file as UTF-8 or Windows-1252 "
                    "(byte 0x81 at offset {offset}); save it as UTF-8"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00", "not a text {what} file (it holds NUL bytes)"),
}


@pytest.mark.parametrize("case", CSV_CASES)
def test_make_shards_folder_csv_encodings(case, tmp_path, capsys):
    """Catches make-shards refusing a BOM CSV (the BOM glued to 'key'), a traceback on latin-1/cp1252, or a
    vague message for an undecodable file."""
    data, error = CSV_CASES[case]
    root = tmp_path / "mine"
    write("grey", root / "person", "café")
    write_mask(root / "mask" / "café.png")
    (root / "categories.csv").write_bytes(data)
    out = tmp_path / "s"
    rc = main(["make-shards", "folder", "--root", str(root), "--out", str(out), "--size", f"{H}x{W}"])
    captured = capsys.readouterr()
    if error is None:
        assert rc == 0 and "wrote 1 samples" in captured.out
    else:
        assert rc == 2 and not out.exists()
        csv_path = root / "categories.csv"
        offset = data.find(b"\x81")
        assert captured.err.strip() == f"error: {csv_path}: " + error.format(what="category CSV", offset=offset)


@pytest.mark.parametrize("case", CSV_CASES)
def test_restore_categories_csv_encodings(case, tmp_path):
    """Catches restore's CSV reader and make-shards' disagreeing (they are one reader now)."""
    data, error = CSV_CASES[case]
    path = tmp_path / "categories.csv"
    data = data.replace(b"key,category", b"name,category")
    path.write_bytes(data)
    if error is None:
        assert restore_io.read_categories(path) == {"café": ("upper", 2)}
    else:
        with pytest.raises(Exception) as info:
            restore_io.read_categories(path)
        offset = data.find(b"\x81")
        assert str(info.value) == f"{path}: " + error.format(what="categories CSV", offset=offset)
