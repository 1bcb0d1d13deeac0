"""Report files from a tiny run: paper layout, several rows, protocol, paper rows, n/a and random labels."""

import csv
import json

import pytest
from metrics_helpers import random_pairs

from igr.metrics import MetricsConfig, MetricSuite
from igr.metrics.report import ReportRow, save_sample_grid, write_report


@pytest.fixture
def tiny_run():
    """A real suite at 64x48 without backbone weights: SSIM numbers, everything else n/a."""
    pred, gt = random_pairs(4, 64, 48, noise=20)
    suite = MetricSuite(MetricsConfig(resolution=(64, 48)))
    suite.update(pred, gt, keys=["a", "b", "c", "d"])
    return suite.compute(), suite.protocol(), pred, gt


def test_report_files_for_several_rows(tmp_path, tiny_run):
    results, protocol, pred, gt = tiny_run
    protocol["kid"]["subset_size_used"] = 4  # as after a KID on 4 images
    random_row = {"ssim": 0.5, "fid_random_backbone": 12.3456789, "kid_x1e3_random_backbone": 1.5}
    rows = [
        ReportRow("IGR (ours)", paired=results, unpaired={"fid": 31.5, "clip_fid": 10.25, "kid_x1e3": 8.5}),
        ReportRow("init", paired=random_row),
        ReportRow("masked-crop baseline", paired=results, notes=["person image cropped to the mask box"]),
    ]
    grid = save_sample_grid(tmp_path / "out" / "samples.jpg", list(pred), list(gt), height=32)
    paths = write_report(tmp_path / "out", rows, {"paired test": protocol}, sample_grid=grid, title="tiny")

    md = paths["md"].read_text()
    assert "| Model | SSIM ↑ | LPIPS ↓ | DISTS ↓ | FID ↓ | CLIP-FID ↓ | KID* ↓ |" in md
    assert (
        f"| IGR (ours) | {results['ssim']:.4f} | n/a | n/a | n/a | n/a | n/a | 31.5000 | 10.2500 | 8.5000 |"
        in md
    )
    assert "| init | 0.5000 | – | – | 12.3457† | – | 1.5000† | – | – | – |" in md
    assert "RANDOM-INIT BACKBONES" in md
    assert "n/a (no Inception weights configured)" in md
    assert "scored at 64×48" in md and "Not the paper's protocol resolution (1024×768)" in md
    assert "smaller than clean-fid's 1000" in md
    assert (
        "| TryOffDiff | 0.7576 | 0.4288 | 0.2680 | 28.8638 | 14.7685 | 16.4532 | 39.8455 | 19.7795 | 20.5915 |"
        in md
    )
    assert "![samples](samples.jpg)" in md and grid.is_file()
    assert "masked-crop baseline: person image cropped to the mask box" in md

    with open(paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert [r["name"] for r in table] == ["IGR (ours)", "init", "masked-crop baseline"]
    assert float(table[0]["paired_ssim"]) == pytest.approx(results["ssim"])
    assert table[0]["paired_fid"] == "n/a (no Inception weights configured)"
    assert table[1]["random_backbone"] == "paired_fid paired_kid_x1e3" and table[0]["random_backbone"] == ""
    assert float(table[1]["paired_fid"]) == pytest.approx(12.3456789)

    data = json.loads(paths["json"].read_text())
    assert data["random_backbone"] is True
    assert data["rows"][1]["paired"]["fid_random_backbone"] == pytest.approx(12.3456789)
    assert data["protocol"]["paired test"]["resolution"] == [64, 48]
    assert len(data["paper"]["table1"]) == 5


def test_protocol_resolution_has_no_warning_and_other_paper_tables(tmp_path):
    protocol = {"resolution": [1024, 768], "num_samples": 2032, "real_set": "ground truth of the pairs"}
    rows = [ReportRow(f"s = {s}", paired={"ssim": 0.7}) for s in (1.0, 1.5)]
    md = write_report(tmp_path, rows, {"paired": protocol}, paper_tables=("table1", "table3"))[
        "md"
    ].read_text()
    assert "Not the paper's protocol" not in md and "RANDOM-INIT" not in md
    assert "Table 3 (paper): guidance scale" in md and "| s = 2.5 | 0.7651 |" in md
    with pytest.raises(ValueError, match="unknown table 'table9'"):
        write_report(tmp_path, rows, {"paired": protocol}, paper_tables=("table9",))
