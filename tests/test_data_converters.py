"""Converters on tiny fake trees in the real dataset layouts, written to shards and read back."""

import json
import os
import zlib

import numpy as np
import pytest
from PIL import Image

from igr.cli import main
from igr.data import iter_samples
from igr.data.commands.check_shards import check
from igr.data.converters import common

SIZE = ["--size", "64x48"]


def _jpg(path, colour, hw=(40, 30)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.empty((*hw, 3), np.uint8)
    a[:] = colour
    # a coarse texture that differs per file, so no two fake images look alike to a perceptual hash
    rng = np.random.default_rng(zlib.crc32(os.path.basename(path).encode()))
    blocks = rng.integers(-40, 41, size=(4, 3, 1))
    a = np.clip(a.astype(int) + np.kron(blocks, np.ones((hw[0] // 4 + 1, hw[1] // 3 + 1, 1)))[:hw[0], :hw[1]], 0, 255)
    Image.fromarray(a.astype(np.uint8)).save(path, quality=95)


def _labels(path, hw=(40, 30), label=5, region=(10, 30, 8, 22), mode="P"):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.zeros(hw, np.uint8)
    a[2:8, 10:20] = 13  # face
    y0, y1, x0, x1 = region
    a[y0:y1, x0:x1] = label
    img = Image.fromarray(a, "L")
    if mode == "P":
        img = img.convert("P")
        img.putpalette([v for i in range(256) for v in (i * 7 % 256, i * 13 % 256, i * 29 % 256)])
    img.save(path)


def _read(out):
    return {s["key"]: s for s in iter_samples(out)}, json.load(open(os.path.join(out, f"{_split(out)}.json")))


def _split(out):
    return next(n[:-5] for n in os.listdir(out) if n.endswith(".json"))


def _viton(root):
    for split, names in (("train", ["00000_00", "00001_00", "00002_00", "00003_00", "00004_00", "00005_00"]),
                         ("test", ["00100_00", "00101_00"])):
        d = os.path.join(root, split)
        for i, n in enumerate(names):
            _jpg(f"{d}/image/{n}.jpg", (200, 150 - 10 * i, 100))
            _jpg(f"{d}/cloth/{n}.jpg", (20 * i, 90, 200 - 20 * i))
            _labels(f"{d}/image-parse-v3/{n}.png")
            m = np.zeros((40, 30), np.uint8)
            m[8:34, 4:26] = 255
            os.makedirs(f"{d}/agnostic-mask", exist_ok=True)
            Image.fromarray(m).save(f"{d}/agnostic-mask/{n}_mask.png")
        with open(os.path.join(root, f"{split}_pairs.txt"), "w") as f:
            f.write("".join(f"{n}.jpg {names[-1 - i]}.jpg\n" for i, n in enumerate(names)))
    t = os.path.join(root, "train")
    open(f"{t}/image/00001_00.jpg", "wb").write(b"\xff\xd8\xff broken")  # corrupt person JPEG
    os.remove(f"{t}/cloth/00002_00.jpg")  # missing garment
    _labels(f"{t}/image-parse-v3/00003_00.png", label=9)  # no upper garment in the parse map
    _labels(f"{t}/image-parse-v3/00004_00.png", hw=(40, 40))  # parse map of another shape
    # the last train garment is the first test garment (a train/test duplicate)
    with open(f"{t}/cloth/00005_00.jpg", "wb") as f:
        f.write(open(os.path.join(root, "test", "cloth", "00100_00.jpg"), "rb").read())


def test_viton_hd(tmp_path, capsys):
    root, out = str(tmp_path / "zalando"), str(tmp_path / "shards")
    _viton(root)
    assert main(["make-shards", "viton-hd", "--root", root, "--out", out, *SIZE]) == 0
    text = capsys.readouterr().out
    assert "wrote 2 samples (upper 2, lower 0, full 0)" in text
    for reason in ("undecodable: 1", "missing_file: 1", "empty_mask: 1", "size_mismatch: 1"):
        assert reason in text
    assert "1 train garment(s) also appear in test/" in text
    samples, index = _read(out)
    assert sorted(samples) == ["vitonhd_train_00000_00", "vitonhd_train_00005_00"]
    s = samples["vitonhd_train_00000_00"]
    assert s["person"].shape == (64, 48, 3) and s["garment"].shape == (64, 48, 3) and s["category"] == "upper"
    # the parse map's upper-clothes label (5) becomes the mask: rows 10..30 of 40 -> 16..48 of 64
    ys, xs = np.nonzero(s["mask"])
    assert abs(ys.min() - 16) <= 1 and abs(ys.max() - 47) <= 1 and abs(xs.min() - 12.8) <= 1.5
    assert s["meta"] == {"source": "viton-hd", "split": "train", "id": "00000_00", "mask_source": "parse"}
    assert index["skipped"] == {"empty_mask": 1, "missing_file": 1, "size_mismatch": 1, "undecodable": 1}
    assert index["test_duplicates"] == {"found": 1, "dropped": False}
    # the test split pairs each person with its own garment (the pairs file's 2nd column is ignored)
    assert main(["make-shards", "viton-hd", "--root", root, "--out", out, "--split", "test", *SIZE,
                 "--mask-source", "agnostic"]) == 0
    test = {s["key"]: s for s in iter_samples(os.path.join(out, "test.json"))}
    g = test["vitonhd_test_00100_00"]["garment"].astype(float)
    own = np.asarray(Image.open(os.path.join(root, "test", "cloth", "00100_00.jpg")).resize((48, 64)), float)
    other = np.asarray(Image.open(os.path.join(root, "test", "cloth", "00101_00.jpg")).resize((48, 64)), float)
    assert np.abs(g - own).mean() < np.abs(g - other).mean()  # its own cloth, not the pairs file's 2nd column


def test_viton_hd_drop_duplicates_and_overwrite(tmp_path, capsys):
    root, out = str(tmp_path / "zalando"), str(tmp_path / "shards")
    _viton(root)
    assert main(["make-shards", "viton-hd", "--root", root, "--out", out, *SIZE]) == 0
    assert main(["make-shards", "viton-hd", "--root", root, "--out", out, *SIZE, "--dedupe", "drop"]) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert main(["make-shards", "viton-hd", "--root", root, "--out", out, *SIZE, "--dedupe", "drop",
                 "--overwrite"]) == 0
    samples, index = _read(out)
    assert list(samples) == ["vitonhd_train_00000_00"] and index["skipped"]["test_duplicate"] == 1


def test_dresscode(tmp_path, capsys):
    root, out = str(tmp_path / "DressCode"), str(tmp_path / "shards")
    for subset, label, n in (("upper_body", 4, 2), ("lower_body", 6, 1), ("dresses", 7, 1)):
        d = os.path.join(root, subset)
        ids = [f"{subset[:2]}{i:04d}" for i in range(n)]
        for i in ids:
            _jpg(f"{d}/images/{i}_0.jpg", (180, 170, 160))
            _jpg(f"{d}/images/{i}_1.jpg", (40, 140, 60))
            _labels(f"{d}/label_maps/{i}_4.png", label=label, mode="L")
        with open(f"{d}/train_pairs.txt", "w") as f:
            f.write("".join(f"{i}_0.jpg {i}_1.jpg\n" for i in ids))
        with open(f"{d}/test_pairs_paired.txt", "w") as f:
            f.write(f"{ids[0]}_0.jpg {ids[0]}_1.jpg\n")
    os.remove(os.path.join(root, "upper_body", "label_maps", "up0001_4.png"))
    assert main(["make-shards", "dresscode", "--root", root, "--out", out, *SIZE]) == 0
    samples, index = _read(out)
    assert index["categories"] == {"upper": 1, "lower": 1, "full": 1} and index["skipped"] == {"missing_file": 1}
    assert samples["dresscode_train_lower_body_lo0000"]["category"] == "lower"
    assert samples["dresscode_train_dresses_dr0000"]["mask"].sum() > 0
    assert main(["make-shards", "dresscode", "--root", root, "--out", out, "--split", "test", *SIZE,
                 "--categories", "full"]) == 0
    assert [s["category"] for s in iter_samples(os.path.join(out, "test.json"))] == ["full"]
    assert main(["make-shards", "dresscode", "--root", root, "--out", out, "--categories", "hats"]) == 2
    assert main(["make-shards", "dresscode", "--root", str(tmp_path), "--out", str(tmp_path / "x")]) == 2
    assert "not the DressCode layout" in capsys.readouterr().err


def test_streettryon_is_unpaired(tmp_path):
    root, out = str(tmp_path / "street_tryon"), str(tmp_path / "shards")
    d = os.path.join(root, "validation")
    for name, label in (("a", 4), ("b", 7), ("c", 6)):
        _jpg(f"{d}/image/{name}.jpg", (90, 90, 90), hw=(60, 40))
        _labels(f"{d}/segm/{name}.png", hw=(60, 40), label=label, region=(15, 45, 10, 30), mode="L")
    _jpg(f"{d}/image/nomask.jpg", (90, 90, 90))
    os.makedirs(os.path.join(root, "annotations"))
    with open(os.path.join(root, "annotations", "street2street_test_pairs_dress.csv"), "w") as f:
        f.write("idx,garment,person\n0,x.jpg,b.jpg\n")
    assert main(["make-shards", "streettryon", "--root", root, "--out", out, "--split", "test", *SIZE]) == 0
    samples, index = _read(out)
    assert index["paired"] is False and index["skipped"] == {"missing_file": 1}
    assert {k: s["category"] for k, s in samples.items()} == {
        "streettryon_test_a": "upper", "streettryon_test_b": "full", "streettryon_test_c": "lower"}
    assert all("garment" not in s for s in samples.values())
    # 60x40 persons are resized into 64x48 keeping their aspect: 64x43, padded left and right
    m = samples["streettryon_test_a"]["mask"]
    xs = np.nonzero(m.any(axis=0))[0]
    assert abs(xs.min() - (2 + 10 * 64 / 60)) <= 1.5
    assert check(out, progress=False)["ok"]  # the index says unpaired: no garment required


def test_folder_layout(tmp_path, capsys):
    root, out = tmp_path / "mine", str(tmp_path / "shards")
    for key, colour in (("p1", (200, 20, 20)), ("p2", (20, 200, 20)), ("p3", (20, 20, 200))):
        os.makedirs(root / "person", exist_ok=True)
        Image.fromarray(np.full((50, 50, 3), colour, np.uint8)).save(root / "person" / f"{key}.png")  # square, PNG
        _jpg(str(root / "garment" / f"{key}.jpg"), colour)
        m = np.zeros((50, 50), np.uint8)
        m[10:40, 15:35] = 180  # grey mask: binarised at 127
        os.makedirs(root / "mask", exist_ok=True)
        Image.fromarray(m).save(root / "mask" / f"{key}.png")
    os.remove(root / "garment" / "p3.jpg")
    (root / "categories.csv").write_text("key,category\np1,upper\np2,socks\np3,full\n")
    assert main(["make-shards", "folder", "--root", str(root), "--out", out, *SIZE]) == 0
    text = capsys.readouterr().out
    assert "wrote 1 samples" in text and "unknown_category: 1" in text and "missing_file: 1" in text
    samples, _ = _read(out)
    s = samples["p1"]
    # a 50x50 person in a 64x48 frame: 48x48, padded 8 rows top and bottom, never stretched
    assert s["person"].shape == (64, 48, 3)
    ys = np.nonzero(s["mask"].any(axis=1))[0]
    assert abs(ys.min() - (8 + 10 * 48 / 50)) <= 1 and abs(ys.max() + 1 - (8 + 40 * 48 / 50)) <= 1
    assert main(["make-shards", "folder", "--root", str(root), "--out", str(tmp_path / "o2"),
                 "--csv", str(tmp_path / "none.csv")]) == 2
    assert "category CSV not found" in capsys.readouterr().err


def test_interrupted_conversion_leaves_no_half_shard(tmp_path, monkeypatch):
    root, out = str(tmp_path / "zalando"), str(tmp_path / "shards")
    _viton(root)
    calls = {"n": 0}

    def flaky(job):  # two samples go through, then the user presses Ctrl-C
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return common.encode_sample(job[0].key, b"p", b"m", "upper", b"g")

    monkeypatch.setattr(common, "process_item", flaky)
    assert main(["make-shards", "viton-hd", "--root", root, "--out", out, *SIZE, "--max-per-shard", "1",
                 "--dedupe", "off"]) == 130
    # two complete one-sample shards were renamed into place; nothing half-written, no index
    assert sorted(os.listdir(out)) == ["train-000000.tar", "train-000001.tar"]


@pytest.mark.parametrize("args,message", [
    (["viton-hd", "--root", "{tmp}/none"], "not a folder"),
    (["viton-hd", "--root", "{tmp}"], "train: not found"),
    (["folder"], "--root is required"),
    (["synthetic", "--num", "0"], "must be at least 1"),
])
def test_converter_errors(tmp_path, capsys, args, message):
    args = [a.format(tmp=tmp_path) for a in args]
    assert main(["make-shards", *args, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err
