"""MetricsCallback with a fake LightningModule: subset, seeding, logging, n/a handling, 2-process DDP."""

import json
import os
import subprocess
import sys
import textwrap
import warnings
import zlib
from pathlib import Path

import lightning as L
import pytest
import torch
from metrics_helpers import FakeRestorer, KeyedGarments, fake_restore
from tolerance import INCEPTION_OPS, f32_rtol

from igr.metrics import MetricsConfig, MetricSuite
from igr.metrics.callback import MetricsCallback
from igr.metrics.config import KIDConfig
from igr.metrics.images import to_uint8

TESTS = Path(__file__).resolve().parent


def _trainer(callback, devices=1, strategy="auto"):
    return L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy=strategy,
        callbacks=[callback],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


def _expected(indices, metrics, **config):
    """The same metrics computed directly on the given samples in one process."""
    ds = KeyedGarments(5)
    garment = torch.stack([ds[i]["garment"] for i in indices])
    keys = [ds[i]["key"] for i in indices]
    suite = MetricSuite(MetricsConfig(resolution=None, metrics=metrics, **config))
    suite.update(to_uint8(fake_restore(garment, keys)), to_uint8(garment, (-1.0, 1.0)), keys=keys)
    return suite.compute()


def test_callback_scores_the_first_batches_and_logs(tmp_path):
    cb = MetricsCallback(
        MetricsConfig(metrics=("ssim", "fid")),
        num_batches=2,
        seed=7,
        num_inference_steps=3,
        guidance_scale=2.0,
        allow_random_backbone=True,
    )
    model = FakeRestorer()
    _trainer(cb).validate(model, torch.utils.data.DataLoader(KeyedGarments(5), batch_size=2), verbose=False)

    assert model.restored_keys == ["s0", "s1", "s2", "s3"]  # the first 2 batches only
    # one generator per image, seeded 7 + crc32(key): the same noise for a sample in any batch, on any rank
    assert [c["seed"] for c in model.calls] == [[7 + zlib.crc32(f"s{i}".encode()) for i in b] for b in ((0, 1), (2, 3))]
    assert model.calls[0]["steps"] == 3
    assert model.calls[0]["guidance"] == 2.0
    expected = _expected([0, 1, 2, 3], ("ssim", "fid"), allow_random_backbone=True)
    logged = {k: v.item() for k, v in model.trainer.callback_metrics.items()}
    assert logged["val/metrics_num_samples"] == 4
    assert logged["val/ssim"] == pytest.approx(expected["ssim"], rel=1e-6)
    # features from other batch sizes: float32 rounding of the backbone (tests/tolerance.py)
    assert logged["val/fid_random_backbone"] == pytest.approx(expected["fid_random_backbone"], rel=f32_rtol(INCEPTION_OPS))
    assert "val/fid" not in logged  # a random-backbone value is never logged under the real name


def test_unavailable_metrics_are_warned_once_and_not_logged():
    cb = MetricsCallback(MetricsConfig(metrics=("ssim", "lpips")), num_batches=1)
    model = FakeRestorer()
    loader = torch.utils.data.DataLoader(KeyedGarments(4), batch_size=2)
    trainer = _trainer(cb)
    with pytest.warns(UserWarning, match=r"lpips not logged: n/a \(no AlexNet weights configured\)"):
        trainer.validate(model, loader, verbose=False)
    assert "val/lpips" not in trainer.callback_metrics and "val/ssim" in trainer.callback_metrics
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.validate(model, loader, verbose=False)
    assert not [w for w in caught if "lpips not logged" in str(w.message)]


def test_wrong_gt_range_is_an_error():
    cb = MetricsCallback(MetricsConfig(metrics=("ssim",)), num_batches=1, gt_range=(0.0, 1.0))
    with pytest.raises(ValueError, match=r"batch\['garment'\].*outside the declared range \[0.0, 1.0\]"):
        _trainer(cb).validate(FakeRestorer(), torch.utils.data.DataLoader(KeyedGarments(2), batch_size=2))


DDP_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
import lightning as L
import torch
from metrics_helpers import FakeRestorer, KeyedGarments
from igr.metrics import MetricsConfig
from igr.metrics.callback import MetricsCallback
from igr.metrics.config import KIDConfig
from igr.metrics.config import KIDConfig

if __name__ == "__main__":
    config = MetricsConfig(metrics=("ssim", "fid", "kid"), kid=KIDConfig(num_subsets=10))
    cb = MetricsCallback(config, num_batches=10, num_inference_steps=3, allow_random_backbone=True)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp", callbacks=[cb], logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    model = FakeRestorer()
    trainer.validate(model, torch.utils.data.DataLoader(KeyedGarments(5), batch_size=2), verbose=False)
    out = {{"rank": trainer.global_rank, "restored": model.restored_keys,
           "logged": {{k: v.item() for k, v in trainer.callback_metrics.items()}},
           "protocol": cb.last_protocol}}
    with open({out!r} + f".rank{{trainer.global_rank}}.json", "w") as f:
        json.dump(out, f)
"""


@pytest.mark.slow
def test_two_process_ddp_counts_every_sample_once(tmp_path):
    script = tmp_path / "ddp_validate.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(tests=str(TESTS), out=str(tmp_path / "result"))))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"result.rank{r}.json").read_text()) for r in (0, 1)]

    restored = ranks[0]["restored"] + ranks[1]["restored"]
    assert sorted(set(restored)) == ["s0", "s1", "s2", "s3", "s4"]
    assert len(restored) == 6  # the distributed sampler padded rank 1 with a repeat of s0
    expected = _expected(
        range(5), ("ssim", "fid", "kid"), allow_random_backbone=True, kid=KIDConfig(num_subsets=10)
    )
    for r in ranks:  # both ranks log the same numbers, computed over the 5 distinct samples
        assert r["logged"]["val/metrics_num_samples"] == 5
        assert r["protocol"]["duplicates_dropped"] == 1
        assert r["logged"]["val/ssim"] == pytest.approx(expected["ssim"], rel=1e-6)
        assert r["logged"]["val/fid_random_backbone"] == pytest.approx(
            expected["fid_random_backbone"], rel=f32_rtol(INCEPTION_OPS)
        )
        assert r["logged"]["val/kid_x1e3_random_backbone"] == pytest.approx(
            expected["kid_x1e3_random_backbone"], rel=f32_rtol(INCEPTION_OPS), abs=1e-6
        )
