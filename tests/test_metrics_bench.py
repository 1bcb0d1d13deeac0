"""`igr bench-metrics`: the metric-cost figures the README quotes come from this command."""

from __future__ import annotations

import json

import torch
import torchvision
import yaml

from igr.cli import main


def test_bench_metrics_times_each_metric_once_per_extractor_and_labels_random_weights(tmp_path, capsys):
    """Catches: a configured backbone reported as random-init (or a missing one as configured), FID and KID's
    shared Inception features counted twice in the per-pair total, a set metric timed for one image of a pair
    instead of two, or a --json into a missing folder writing anything instead of one error line."""
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), tmp_path / "alexnet.pth")
    config = tmp_path / "metrics.yaml"
    config.write_text(yaml.safe_dump({"weights": {"alexnet": str(tmp_path / "alexnet.pth")}, "weights_dir": None,
                                      "metrics": ["ssim", "lpips", "fid", "kid"]}))
    out = tmp_path / "bench.json"
    argv = ["bench-metrics", "-c", str(config), "--size", "96x64", "--pairs", "2", "--repeats", "1",
            "--test-pairs", "40"]  # no --threads: it would set torch's thread count for every later test
    assert main([*argv, "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    rows = {row["metric"]: row for row in r["rows"]}
    assert list(rows) == ["ssim", "lpips", "fid", "kid"]
    assert (rows["ssim"]["weights"], rows["lpips"]["weights"], rows["fid"]["weights"]) == (
        "-", "configured", "random-init")
    assert rows["fid"]["per"] == rows["kid"]["per"] == "pair (2 images)"
    assert [row["shared"] for row in r["rows"]] == [False, False, False, True]
    assert rows["kid"]["s_per_pair"] == rows["fid"]["s_per_pair"]
    assert abs(r["total_s_per_pair"] - sum(rows[m]["s_per_pair"] for m in ("ssim", "lpips", "fid"))) < 1e-12
    once = sum(s["seconds"] for s in r["set_statistics"])
    assert [(s["statistic"], s["features"], s["n"]) for s in r["set_statistics"]] == [
        ("frechet", 2048, 40), ("kernel", 2048, 40)]
    assert abs(r["test_set_hours"] * 3600 - (r["total_s_per_pair"] * 40 + once)) < 1e-9
    assert r["size"] == "96x64" and r["machine"] and r["versions"]["torch"]
    capsys.readouterr()
    assert main([*argv, "--json", str(tmp_path / "missing" / "bench.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --json ") and "does not exist" in err[0], err
    assert not (tmp_path / "missing").exists()


def test_bench_metrics_counts_both_images_of_a_pair_for_set_metrics(monkeypatch):
    """Catches: a set metric's extractor cost counted for the prediction only (under the paired protocol it also
    reads every ground truth), or per batch instead of per pair. A fake extractor sleeps 20 ms per image."""
    import time

    from igr.metrics.commands import bench_metrics
    from igr.metrics.config import MetricsConfig

    class SleepyExtractor:
        random_init = True

        def __call__(self, images):
            time.sleep(0.02 * images.shape[0])
            return torch.zeros(images.shape[0], 8)

    monkeypatch.setattr("igr.metrics.backbones.build_backbone", lambda config, key, device: SleepyExtractor())
    r = bench_metrics.measure(MetricsConfig(metrics=("fid",)), (32, 24), pairs=3, repeats=1, test_pairs=10)
    (row,) = r["rows"]
    assert 0.039 < row["s_per_pair"] < 0.06, row  # 2 images x 20 ms
