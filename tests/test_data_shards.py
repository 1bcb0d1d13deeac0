"""Shard sets: writing (atomic, no silent overwrite, reproducible), resolving patterns, reading back."""

import hashlib
import json
import os

import numpy as np
import pytest
from data_helpers import H, W, good_sample, write_keyed, write_synthetic

from igr.cli import main
from igr.data import iter_samples, resolve_shards
from igr.data.shards import ShardSetWriter, iter_raw
from igr.errors import IGRError


def _digest(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_write_and_read_back(tmp_path):
    out = str(tmp_path / "set")
    with ShardSetWriter(out, "train", max_count=3, source="test", image_size=(H, W)) as w:
        for i in range(7):
            w.write(good_sample(f"s{i}", ["upper", "lower", "full"][i % 3]))
        index = w.close()
    assert sorted(os.listdir(out)) == ["train-000000.tar", "train-000001.tar", "train-000002.tar", "train.json"]
    assert index["num_samples"] == 7 and index["categories"] == {"upper": 3, "lower": 2, "full": 2}
    assert [s["num_samples"] for s in index["shards"]] == [3, 3, 1] and index["paired"] is True
    assert json.load(open(os.path.join(out, "train.json"))) == index
    samples = list(iter_samples(out))
    assert [s["key"] for s in samples] == [f"s{i}" for i in range(7)]
    s = samples[0]
    assert s["person"].shape == (H, W, 3) and s["person"].dtype == np.uint8
    assert s["mask"].shape == (H, W) and set(np.unique(s["mask"])) == {0, 1}
    assert s["garment"].shape == (H, W, 3) and s["category"] == "upper" and s["meta"] == {"source": "test"}


def test_existing_shards_are_not_overwritten_and_stale_ones_are_removed(tmp_path):
    out = str(tmp_path / "set")
    write_synthetic(out, 5, per_shard=2)  # 3 shards
    with pytest.raises(IGRError, match="already holds 'train' shards"):
        ShardSetWriter(out, "train")
    ShardSetWriter(out, "test").close()  # another split in the same folder is fine
    with ShardSetWriter(out, "train", overwrite=True, max_count=2) as w:
        w.write(good_sample("only"))
    assert sorted(os.listdir(out)) == ["test.json", "train-000000.tar", "train.json"]
    assert [s["key"] for s in iter_samples(os.path.join(out, "train.json"))] == ["only"]


def test_interrupted_write_leaves_no_half_shard(tmp_path):
    out = tmp_path / "set"
    with pytest.raises(RuntimeError), ShardSetWriter(str(out), "train", max_count=3) as w:
        for i in range(5):
            w.write(good_sample(f"s{i}"))
        raise RuntimeError("interrupted")
    # The complete first shard stays; the half-written second one and the index do not exist.
    assert sorted(os.listdir(out)) == ["train-000000.tar"]
    assert len(list(iter_raw([str(out / "train-000000.tar")]))) == 3


def test_duplicate_and_bad_keys_are_refused(tmp_path):
    with ShardSetWriter(str(tmp_path), "train") as w:
        w.write(good_sample("a"))
        with pytest.raises(ValueError, match="duplicate"):
            w.write(good_sample("a"))
    with pytest.raises(ValueError, match="contain no '.'"):
        good_sample("a.b")


def test_synthetic_shards_are_byte_identical_per_seed(tmp_path):
    a, b, c = (str(tmp_path / n) for n in "abc")
    write_synthetic(a, 6, seed=3)
    write_synthetic(b, 6, seed=3)
    write_synthetic(c, 6, seed=4)
    assert _digest(os.path.join(a, "train-000000.tar")) == _digest(os.path.join(b, "train-000000.tar"))
    assert open(os.path.join(a, "train.json")).read() == open(os.path.join(b, "train.json")).read()
    assert _digest(os.path.join(a, "train-000000.tar")) != _digest(os.path.join(c, "train-000000.tar"))


def test_make_shards_synthetic_cli_with_workers_matches_serial(tmp_path, capsys):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert main(["make-shards", "synthetic", "--out", a, "--num", "12", "--size", "64x48", "--seed", "5",
                 "--max-per-shard", "5"]) == 0
    assert main(["make-shards", "synthetic", "--out", b, "--num", "12", "--size", "64x48", "--seed", "5",
                 "--max-per-shard", "5", "--workers", "2"]) == 0
    out = capsys.readouterr().out
    assert "wrote 12 synthetic samples" in out and "samples/min" in out
    for name in ("train-000000.tar", "train-000001.tar", "train-000002.tar", "train.json"):
        assert _digest(os.path.join(a, name)) == _digest(os.path.join(b, name))
    assert main(["make-shards", "synthetic", "--out", a, "--num", "3"]) == 2
    assert "use --overwrite" in capsys.readouterr().err
    assert main(["make-shards", "synthetic", "--out", a, "--num", "3", "--overwrite", "--size", "64x48"]) == 0
    assert sorted(os.listdir(a)) == ["train-000000.tar", "train.json"]


def test_resolve_shards_forms(tmp_path):
    paths = write_keyed(str(tmp_path / "d"), 3, 2)
    d = str(tmp_path / "d")
    assert resolve_shards(d) == paths
    assert resolve_shards(os.path.join(d, "train-{000000..000002}.tar")) == paths
    assert resolve_shards(os.path.join(d, "train-*.tar")) == paths
    assert resolve_shards(f"{paths[0]}::{paths[2]}") == [paths[0], paths[2]]
    assert resolve_shards([paths[1], paths[0]]) == [paths[1], paths[0]]
    assert resolve_shards("pipe:cat /x/train-{0..1}.tar") == ["pipe:cat /x/train-0.tar", "pipe:cat /x/train-1.tar"]
    assert resolve_shards("https://h/s-{0..1}.tar") == ["https://h/s-0.tar", "https://h/s-1.tar"]
    # an index lists its shards relative to itself
    out = str(tmp_path / "indexed")
    write_synthetic(out, 3, per_shard=2)
    assert resolve_shards(os.path.join(out, "train.json")) == [os.path.join(out, f"train-00000{i}.tar") for i in (0, 1)]


@pytest.mark.parametrize("spec,message", [
    ("{tmp}/nope", "shard not found"),
    ("{tmp}/d/train-{{000000..000005}}.tar", "train-000003.tar: shard not found"),
    ("{tmp}/empty", "holds no .tar shards"),
    ("{tmp}/d/nothing-*.tar", "matches no shards"),
    ("{tmp}/bad.json", "not a readable JSON index"),
    ("{tmp}/missing.json", "index not found"),
    ("{tmp}/two", "holds several splits \\(test, train\\); name one"),
])
def test_resolve_shards_fails_clearly(tmp_path, spec, message):
    write_keyed(str(tmp_path / "d"), 3, 1)
    os.makedirs(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{not json")
    write_keyed(str(tmp_path / "two"), 1, 1, split="train")
    write_keyed(str(tmp_path / "two"), 1, 1, split="test")
    with pytest.raises(IGRError, match=message):
        resolve_shards(spec.format(tmp=tmp_path))


def test_pipe_url_is_read_through_webdataset(tmp_path):
    paths = write_keyed(str(tmp_path / "d"), 2, 2)
    urls = resolve_shards("pipe:cat " + os.path.join(str(tmp_path / "d"), "train-{000000..000001}.tar"))
    keys = [s["key"] for s in iter_samples(urls)]
    assert keys == ["k0_0", "k0_1", "k1_0", "k1_1"] and len(paths) == 2


def test_iter_samples_resizes_keeping_aspect(tmp_path):
    write_keyed(str(tmp_path / "d"), 1, 1, h=100, w=50)
    s = next(iter_samples(str(tmp_path / "d"), image_size=(64, 48)))
    assert s["person"].shape == (64, 48, 3) and s["mask"].shape == (64, 48)
    # 100x50 into 64x48 -> 64x32, padded 8 px left and right with the border colour
    assert (s["mask"][:, :8] == 0).all() and (s["mask"][:, -8:] == 0).all()
    assert abs(int(s["person"][32, 2, 0]) - 200) < 8
