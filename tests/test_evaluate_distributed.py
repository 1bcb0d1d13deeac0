"""`igr eval --devices N`: two CPU processes over gloo restore the same images and write the same metrics.json as
one; `--dtype` and `--subset spread`; the refusals of a multi-process or torchrun launch."""

from __future__ import annotations

import pytest

from igr.cli import main
from igr.errors import IGRError
from igr.evaluate import evaluate


@pytest.fixture
def shards(tmp_path):
    """5 paired test samples: with batch size 2, batches of 2, 2 and 1, dealt to ranks 0, 1, 0."""
    assert main(["make-shards", "synthetic", "--out", str(tmp_path / "shards"), "--split", "test", "--num", "5",
                 "--size", "64x48", "--seed", "3"]) == 0
    return tmp_path / "shards" / "test.json"


@pytest.fixture
def ssim_only(tmp_path):
    """SSIM alone: the metric networks are not what this file tests, and rank 0 scores every row in both runs."""
    (tmp_path / "no-weights").mkdir()
    cfg = tmp_path / "metrics.yaml"
    cfg.write_text(f"metrics: [ssim, ssim_rgb]\nweights_dir: {tmp_path / 'no-weights'}\n")
    return str(cfg)


def test_two_processes_restore_and_score_as_one(tiny_pipeline_dir, shards, ssim_only, tmp_path):
    """Catches: a rank seeding its noise from anything but the sample key (its rank, its batch position), a batch
    restored by the wrong rank or scored out of order, rows of a guidance sweep mixed up between ranks, a
    rank-0-only row (the baseline) waiting for the other rank."""
    kw = {"guidance": [1.0, 2.0], "steps": 2, "batch_size": 2, "metrics_config": ssim_only,
          "baselines": ["masked-crop"], "device": "cpu"}
    out = tmp_path / "eval"
    one = evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), out, **kw)
    metrics, grid = (out / "metrics.json").read_bytes(), (out / "samples.png").read_bytes()
    two = evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), out, devices=2, overwrite=True, **kw)
    assert set(two["rows"]) == {"tiny (s=1)", "tiny (s=2)", "masked-crop baseline"}
    assert one["rows"]["tiny (s=1)"]["paired"]["ssim"] != one["rows"]["tiny (s=2)"]["paired"]["ssim"]
    # samples.png holds all 5 restorations of each row, byte for byte: the images themselves are identical
    assert (out / "samples.png").read_bytes() == grid
    assert (out / "metrics.json").read_bytes() == metrics


def test_bf16_restores_on_the_cpu_and_fp16_is_refused(tiny_pipeline_dir, shards, ssim_only, tmp_path):
    """Catches: --dtype ignored (bf16 scores equal to fp32's), the report silent about it, fp16 tried on a CPU."""
    import json

    kw = {"steps": 2, "batch_size": 5, "metrics_config": ssim_only, "device": "cpu"}
    fp32 = evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), tmp_path / "fp32", **kw)
    bf16 = evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), tmp_path / "bf16", dtype="bf16", **kw)
    a, b = fp32["rows"]["tiny"]["paired"]["ssim"], bf16["rows"]["tiny"]["paired"]["ssim"]
    assert a != b and abs(a - b) < 0.05  # the same images at bf16's precision, not other images
    notes = json.loads((tmp_path / "bf16" / "metrics.json").read_text())["notes"]
    assert any("torch.bfloat16" in n for n in notes)
    with pytest.raises(IGRError, match="--dtype fp16 needs a CUDA device"):
        evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), tmp_path / "fp16", dtype="fp16", **kw)
    assert not (tmp_path / "fp16").exists()


def test_spread_subset_takes_samples_over_the_whole_set(shards):
    """Catches: --subset spread taking the first N, or other than ⌊i·total/N⌋."""
    from igr.evaluate import shard_batches

    every = [k for b in shard_batches(str(shards), (64, 48), 5, None, True) for k in b["key"]]
    first = [k for b in shard_batches(str(shards), (64, 48), 5, 2, True) for k in b["key"]]
    spread = [k for b in shard_batches(str(shards), (64, 48), 5, 2, True, "spread") for k in b["key"]]
    assert len(every) == 5 and first == every[:2] and spread == [every[0], every[2]]  # ⌊0·5/2⌋, ⌊1·5/2⌋


def test_refusals_before_any_process_starts(tiny_pipeline_dir, shards, tmp_path, monkeypatch):
    def ev(**kw):
        return evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), tmp_path / "e", **{"device": "cpu", **kw})

    with pytest.raises(IGRError, match="--devices 0: must be ≥ 1"):
        ev(devices=0)
    with pytest.raises(IGRError, match="--jobs 2 .* and --devices 2 .* do not combine"):
        ev(devices=2, workers=2)
    with pytest.raises(IGRError, match="--subset spread picks --limit N samples"):
        ev(subset="spread")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(IGRError, match="WORLD_SIZE=2 is set but RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not"):
        ev()
    for name, value in {"RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1",
                        "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(IGRError, match="--devices 4: under torchrun the processes are torchrun's"):
        ev(devices=4)
    assert not (tmp_path / "e").exists()


@pytest.mark.slow
def test_a_rank_failing_on_bad_input_ends_the_run_with_its_line(tiny_pipeline_dir, shards, ssim_only, tmp_path):
    """Catches: the other rank left waiting for ever (rank 0 fails on a file only it reads, while rank 1 sends), or
    a traceback instead of the one-line error."""
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(IGRError, match="other.safetensors: not a tiny-world classifier file"):
        evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), tmp_path / "e", devices=2, batch_size=1,
                 classifier=str(tmp_path / "other.safetensors"), metrics_config=ssim_only, device="cpu", steps=1)
    with pytest.raises(IGRError, match="missing.yaml: metrics config not found"):  # before any process starts
        evaluate([("tiny", str(tiny_pipeline_dir))], str(shards), tmp_path / "e", devices=2,
                 metrics_config=str(tmp_path / "missing.yaml"), device="cpu")

def test_tf32_only_while_restoring_in_float32_on_cuda():
    """Catches: TF32 left on for the metric networks after a restoration, or turned on for bf16 or the CPU."""
    import torch

    from igr.eval_distributed import restoring

    torch.set_float32_matmul_precision("highest")
    with restoring("cuda:1", torch.float32):
        assert torch.get_float32_matmul_precision() == "high"  # TF32
    assert torch.get_float32_matmul_precision() == "highest"
    for device, dtype in (("cuda", torch.bfloat16), ("cpu", torch.float32)):
        with restoring(device, dtype):
            assert torch.get_float32_matmul_precision() == "highest"
