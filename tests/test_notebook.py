"""notebooks/explore.ipynb runs top to bottom (nbclient, the venv's kernel): on a pipeline folder and shards,
and on nothing at all (random-init tiny model, synthetic people), saying which it used."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "explore.ipynb"


def _png(a: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format=fmt)
    return buf.getvalue()


def _write_shard(folder: Path, n: int = 4) -> Path:
    """A test shard in the DESIGN §4 layout, written with webdataset directly (not our writer)."""
    import webdataset as wds

    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with wds.TarWriter(str(folder / "test-000000.tar")) as sink:
        for i in range(n):
            mask = np.zeros((64, 48), np.uint8)
            mask[12:40, 10:38] = 255
            sink.write(
                {
                    "__key__": f"sample{i:03d}",
                    "person.jpg": _png((rng.random((64, 48, 3)) * 255).astype(np.uint8), "JPEG"),
                    "mask.png": _png(mask),
                    "garment.jpg": _png((rng.random((64, 48, 3)) * 255).astype(np.uint8), "JPEG"),
                    "category.txt": ["upper", "lower", "full"][i % 3].encode(),
                }
            )
    return folder


def _execute(monkeypatch, **env) -> tuple[str, int]:
    """Run the notebook with ``env``; returns (all printed text, number of figures)."""
    import nbformat
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = NotebookClient(
        nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if any cell fails
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    figures = sum("image/png" in o.get("data", {}) for o in outputs if o.output_type == "display_data")
    return text, figures


def test_notebook_runs_on_a_pipeline_folder_and_shards(tiny_model, tmp_path, monkeypatch):
    from igr.export import export_pipeline

    model_dir = export_pipeline(tiny_model, tmp_path / "pipe")
    shards = _write_shard(tmp_path / "shards")
    metrics = tmp_path / "metrics.json"  # the demo's summary layout (igr.demo.write_demo_report)
    metrics.write_text(json.dumps({
        "profile": "default",
        "rows": {"category-mean baseline": {"ssim": 0.4012, "kind_acc": 0.25, "fid": "n/a (no weights)"}},
        "ci95": {"category-mean baseline": {"ssim": [0.3811, 0.4213]}},
        "differences": {"category-mean baseline": {"versus": "IGR tiny", "ssim": [-0.004, -0.02, 0.012],
                                                   "kind_acc": [0.55, 0.48, 0.62]}},
        "goals": {"SSIM above the category-mean baseline": False},
        "table2": {"IGR tiny": [{  # igr.metrics.table2.compare's entries
            "metric": "fd_tiny", "paper_metric": "fid", "higher_is_better": False,
            "paper_order": ["IGR (paper)", "w/o HQFT", "w/o GarmNet"], "tiny_order": ["IGR (paper)", "w/o GarmNet", "w/o HQFT"],
            "same_order": False,
            "neighbours": [{"better": "IGR (paper)", "worse": "w/o GarmNet", "difference": [1.5, 0.5, 2.5], "resolved": True},
                           {"better": "w/o GarmNet", "worse": "w/o HQFT", "difference": [0.2, -0.1, 0.4], "resolved": False}],
        }]},
    }))
    text, figures = _execute(monkeypatch, IGR_MODEL_DIR=model_dir, IGR_SHARDS=shards, IGR_STEPS=2,
                             IGR_DEMO_METRICS=metrics)
    assert f"loaded the pipeline in {model_dir}" in text
    assert "category-mean baseline" in text and "0.401 [ 0.381, 0.421]" in text and "0.250" in text
    assert "NOT met: SSIM above the category-mean baseline" in text
    assert "IGR tiny minus each row" in text and "ssim -0.004 [-0.020,+0.012] tie" in text
    assert "kind_acc +0.550 [+0.480,+0.620]" in text and "+0.620] tie" not in text
    assert "Table 2 beside the paper's, full = IGR tiny:" in text
    assert "fd_tiny  paper (fid): IGR (paper) < w/o HQFT < w/o GarmNet" in text
    assert "(IGR (paper) over w/o GarmNet +1.500; w/o GarmNet over w/o HQFT +0.200 tie)  NOT the paper's order" in text
    assert f"4 samples from {shards}" in text
    assert "RANDOM-INIT" not in text and "SYNTHETIC" not in text
    assert figures == 4  # batch, p_g crops, guidance rows, attention heat map
    assert "notebook ran in" in text


def test_notebook_falls_back_to_a_random_tiny_model_and_synthetic_people(tmp_path, monkeypatch):
    text, figures = _execute(
        monkeypatch, IGR_MODEL_DIR=tmp_path / "no-model", IGR_SHARDS=tmp_path / "no-shards", IGR_STEPS=2,
        IGR_DEMO_METRICS=tmp_path / "no-metrics.json",
    )
    assert "RANDOM-INIT tiny model" in text and "4 SYNTHETIC person images" in text
    assert "no demo metrics at" in text
    assert figures == 4
