"""Bad input: every skip reason, counted and logged once with shard and key; never fatal to training."""

import json
import logging
import os

import numpy as np
import pytest
from data_helpers import H, W, box_mask, good_sample, jpeg, png, solid, write_tar

from igr.cli import main
from igr.data import SkipStats, iter_samples
from igr.data.commands.check_shards import check
from igr.data.pipeline import ShardStream


def _broken_set(tmp_path) -> str:
    """One shard: 3 good samples and one sample per failure kind, plus a grey (kept) mask."""
    grey = box_mask(value=200)
    grey[0, 0] = 90  # grey pixels below and above the threshold
    samples = [
        good_sample("good0"),
        {**good_sample("bad_jpeg"), "person.jpg": jpeg(solid())[:200]},  # truncated JPEG
        {**good_sample("bad_bytes"), "garment.jpg": b"not an image at all"},
        {k: v for k, v in good_sample("no_mask").items() if k != "mask.png"},
        {k: v for k, v in good_sample("no_garment").items() if k != "garment.jpg"},
        {**good_sample("wrong_size"), "mask.png": png(box_mask(H // 2, W))},
        {**good_sample("bad_category"), "category.txt": b"shoes"},
        {**good_sample("bad_meta"), "meta.json": b"{oops"},
        {**good_sample("grey_mask"), "mask.png": png(grey)},
        good_sample("good1", "full"),
    ]
    d = tmp_path / "broken"
    os.makedirs(d)
    write_tar(str(d / "train-000000.tar"), samples)
    (d / "train-000001.tar").write_bytes(b"this is not a tar file" * 100)  # unreadable shard
    return str(d)


EXPECTED = {"undecodable": 3, "missing_field": 2, "size_mismatch": 1, "unknown_category": 1, "unreadable_shard": 1}


def test_iter_samples_skips_and_counts_each_failure_kind(tmp_path, caplog):
    d = _broken_set(tmp_path)
    stats = SkipStats()
    with caplog.at_level(logging.WARNING, logger="igr.data"):
        keys = [s["key"] for s in iter_samples(d, require_garment=True, stats=stats)]
    assert keys == ["good0", "grey_mask", "good1"]
    assert dict(stats.counts) == EXPECTED
    assert stats.nonbinary_masks == 1 and stats.good == 3
    # Each bad sample is logged with its shard and key.
    text = caplog.text
    for key in ("bad_jpeg", "bad_bytes", "no_mask", "no_garment", "wrong_size", "bad_category", "bad_meta"):
        assert f"train-000000.tar key={key}" in text
    assert "train-000001.tar" in text and "grey mask" in text
    grey = next(s for s in iter_samples(d) if s["key"] == "grey_mask")["mask"]
    assert set(np.unique(grey)) == {0, 1} and grey[0, 0] == 0 and grey[H // 2, W // 2] == 1


def test_bad_samples_are_logged_once_even_when_seen_again(tmp_path, caplog):
    d = _broken_set(tmp_path)
    stats = SkipStats()
    with caplog.at_level(logging.WARNING, logger="igr.data"):
        for _ in range(2):
            list(iter_samples(d, stats=stats))
    assert caplog.text.count("key=bad_category") == 1 and stats.counts["unknown_category"] == 1


def test_check_shards_reports_every_kind(tmp_path, capsys):
    d = _broken_set(tmp_path)
    report = check(d, progress=False)
    assert report["skipped"] == {**EXPECTED, "unsafe_key": 0, "duplicate_key": 0} and report["good"] == 3 and report["nonbinary_masks"] == 1
    assert report["samples_seen"] == 10 and not report["ok"]
    assert main(["check-shards", d, "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["skipped"] == {**EXPECTED, "unsafe_key": 0, "duplicate_key": 0} and printed["categories"] == {"upper": 2, "lower": 0, "full": 1}
    assert main(["check-shards", d]) == 1
    out = capsys.readouterr().out
    assert "good: 3" in out and "unknown category (unknown_category): 1" in out and "e.g." in out


def test_check_shards_passes_a_clean_set_and_understands_unpaired(tmp_path, capsys):
    d = tmp_path / "clean"
    os.makedirs(d)
    write_tar(str(d / "test-000000.tar"), [good_sample(f"u{i}", garment=False) for i in range(3)])
    assert main(["check-shards", str(d)]) == 1  # garments required by default ...
    assert main(["check-shards", str(d), "--unpaired"]) == 0  # ... not for an unpaired set
    assert "good: 3" in capsys.readouterr().out
    assert main(["check-shards", str(tmp_path / "missing")]) == 2
    assert "shard not found" in capsys.readouterr().err


def test_training_stream_survives_bad_samples(tmp_path):
    d = _broken_set(tmp_path)
    urls = [os.path.join(d, n) for n in sorted(os.listdir(d))]
    stream = ShardStream(urls, image_size=(H, W), batch_size=2, train=True, num_batches=4, rank=0, world_size=1)
    batches = list(stream.batches())
    assert len(batches) == 4
    keys = {k for b in batches for k in b["key"]}
    assert keys == {"good0", "grey_mask", "good1"}  # training requires garments: no_garment is skipped
    assert stream.stats.counts["unknown_category"] == 1 and stream.stats.counts["unreadable_shard"] == 1


def test_training_stream_with_nothing_usable_fails_clearly(tmp_path):
    d = tmp_path / "allbad"
    os.makedirs(d)
    write_tar(str(d / "train-000000.tar"), [{**good_sample("x"), "category.txt": b"hat"}])
    stream = ShardStream([str(d / "train-000000.tar")], image_size=(H, W), batch_size=1, train=True,
                         num_batches=1, rank=0, world_size=1)
    with pytest.raises(RuntimeError, match="failed validation"):
        next(stream.batches())
