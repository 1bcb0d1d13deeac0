"""MetricSuite: paired and unpaired modes, n/a reporting, labelled random backbones, caching, merging."""

import numpy as np
import pytest
from metrics_helpers import random_pairs
from tolerance import INCEPTION_OPS, assert_close_f32, f32_rtol

from igr.metrics import MetricsConfig, MetricSuite, frechet_distance, kernel_distance, ssim_pinned
from igr.metrics.cache import FeatureCache
from igr.metrics.config import KIDConfig

SIZE = (64, 48)


@pytest.fixture(scope="module")
def random_backbones():
    """Random-init backbones, built once for the module (labelled as such in every result)."""
    return MetricSuite(MetricsConfig(resolution=SIZE, allow_random_backbone=True)).backbones


def _config(**kw):
    kw.setdefault("resolution", SIZE)
    kw.setdefault("allow_random_backbone", True)
    return MetricsConfig(**kw)


def test_paired_mode_values_and_random_labels(random_backbones):
    pred, gt = random_pairs(4, *SIZE, noise=40)
    suite = MetricSuite(_config(kid=KIDConfig(num_subsets=10)), backbones=random_backbones)
    suite.update(pred[:3], gt[:3], keys=list("abc"))
    suite.update(pred[3:], gt[3:], keys=list("d"))
    out = suite.compute()

    assert out["ssim"] == pytest.approx(ssim_pinned(pred, gt).mean().item(), abs=1e-12)
    labelled = {f"{m}_random_backbone" for m in ("lpips", "dists", "fid", "clip_fid", "kid_x1e3")}
    assert set(out) == {"ssim", "ssim_rgb"} | labelled
    state = suite.local_state()
    fp, fg = state["pred"]["inception"], state["real"]["inception"]
    assert fp.shape == (4, 2048)
    assert_close_f32(fp[:1], random_backbones["inception"](pred[:1]), ops=INCEPTION_OPS)  # batch of 4 vs 1
    assert out["fid_random_backbone"] == pytest.approx(frechet_distance(fp, fg), rel=1e-9)
    assert out["kid_x1e3_random_backbone"] == pytest.approx(
        1e3 * kernel_distance(fp, fg, 10, 1000, 0), rel=1e-9
    )
    assert out["lpips_random_backbone"] == pytest.approx(random_backbones["alexnet"](pred, gt).mean().item())
    protocol = suite.protocol()
    assert protocol["kid"]["subset_size_used"] == 4
    assert protocol["num_samples"] == 4 and protocol["resolution"] == list(SIZE)
    assert set(protocol["random_backbones"]) == {"alexnet", "clip_vit_b_32", "inception", "vgg16"}


def test_unpaired_mode_uses_the_separate_real_set(random_backbones):
    pred, _ = random_pairs(4, *SIZE, seed=1)
    real, _ = random_pairs(5, *SIZE, seed=2)
    suite = MetricSuite(
        _config(metrics=("ssim", "lpips", "clip_fid")), real="separate", backbones=random_backbones
    )
    suite.update(pred)
    suite.update_real(real)
    out = suite.compute()
    assert out["ssim"] == out["lpips"] == "n/a (no ground truth)"
    clip = random_backbones["clip_vit_b_32"]
    expected = frechet_distance(clip(pred).numpy(), clip(real).numpy())
    assert out["clip_fid_random_backbone"] == pytest.approx(expected, rel=1e-6)
    assert suite.protocol()["num_real"] == {"clip_vit_b_32": 5}


def test_without_weights_metrics_are_na_with_reason():
    pred, gt = random_pairs(3, *SIZE)
    suite = MetricSuite(_config(allow_random_backbone=False, weights_dir="/nonexistent/w"))
    suite.update(pred, gt)
    out = suite.compute()
    assert isinstance(out["ssim"], float)
    assert out["fid"] == "n/a (no Inception weights at /nonexistent/w/inception-2015-12-05.pt)"
    assert out["lpips"] == "n/a (no AlexNet weights at /nonexistent/w/alexnet-owt-7be5be79.pth)"
    assert not any(k.endswith("_random_backbone") for k in out)


def test_too_few_images_for_set_metrics_is_na(random_backbones):
    pred, gt = random_pairs(1, *SIZE)
    suite = MetricSuite(_config(metrics=("ssim", "fid")), backbones=random_backbones)
    suite.update(pred, gt)
    assert suite.compute()["fid"] == "n/a (needs >= 2 images per set, got 1 predicted and 1 real)"


def test_wrong_resolution_and_mixed_gt_are_rejected(random_backbones):
    suite = MetricSuite(_config(metrics=("ssim",)), backbones=random_backbones)
    pred, gt = random_pairs(2, 32, 24)
    with pytest.raises(ValueError, match="images are 32x24, expected 64x48"):
        suite.update(pred, gt)
    pred, gt = random_pairs(2, *SIZE)
    suite.update(pred, gt)
    with pytest.raises(ValueError, match="with and without ground truth"):
        suite.update(pred)


def test_real_set_features_are_cached_per_set_and_backbone(tmp_path, random_backbones):
    pred, _ = random_pairs(4, *SIZE, seed=3)
    real, _ = random_pairs(4, *SIZE, seed=4)
    config = _config(metrics=("fid",), cache_dir=str(tmp_path / "cache"))
    first = MetricSuite(config, real="separate", real_id="set-A", backbones=random_backbones)
    assert not first.real_is_cached()
    first.update(pred)
    first.update_real(real)
    fid = first.compute()["fid_random_backbone"]
    assert len(list((tmp_path / "cache").glob("inception-*.npz"))) == 1

    again = MetricSuite(config, real="separate", real_id="set-A", backbones=random_backbones)
    assert again.real_is_cached()  # the real images need not be read again
    again.update(pred)
    assert again.compute()["fid_random_backbone"] == pytest.approx(fid, rel=1e-6)
    assert again.protocol()["real_features_cached"] == ["inception"]
    assert not MetricSuite(
        config, real="separate", real_id="set-B", backbones=random_backbones
    ).real_is_cached()
    # features of other weights never match the entry (identity includes the weights fingerprint)
    identity = random_backbones["inception"].identity
    cache = FeatureCache(tmp_path / "cache")
    assert cache.load("set-A", identity, SIZE) is not None
    assert cache.load("set-A", identity.replace("random-init", "inception-2015-12-05.pt:1:abc"), SIZE) is None
    assert cache.load("set-A", identity, (128, 96)) is None


def test_merging_rank_states_counts_repeated_keys_once(random_backbones):
    pred, gt = random_pairs(5, *SIZE, seed=5)
    config = _config(metrics=("ssim", "lpips", "fid"))
    keys = [f"k{i}" for i in range(5)]
    # rank 0 gets samples 0, 2, 4; rank 1 gets 1, 3 and a padded repeat of 0 (DistributedSampler-style)
    rank0 = MetricSuite(config, backbones=random_backbones)
    rank0.update(pred[[0, 2, 4]], gt[[0, 2, 4]], keys=[keys[i] for i in (0, 2, 4)])
    rank1 = MetricSuite(config, backbones=random_backbones)
    rank1.update(pred[[1, 3, 0]], gt[[1, 3, 0]], keys=[keys[i] for i in (1, 3, 0)])
    merged = MetricSuite(config, backbones=random_backbones)
    merged.load_states([rank0.local_state(), rank1.local_state()])
    single = MetricSuite(config, backbones=random_backbones)
    single.update(pred, gt, keys=keys)

    assert merged.num_samples() == 5 and merged.protocol()["duplicates_dropped"] == 1
    got, expected = merged.compute(), single.compute()
    assert got.keys() == expected.keys()
    for k in expected:
        # same samples, features from batches of 3 vs 5 (float32 kernels may differ) and another summation order
        assert got[k] == pytest.approx(expected[k], rel=f32_rtol(INCEPTION_OPS)), k


def test_unkeyed_states_are_concatenated():
    pred, gt = random_pairs(2, *SIZE)
    a = MetricSuite(_config(metrics=("ssim",)))
    a.update(pred, gt)
    merged = MetricSuite(_config(metrics=("ssim",)))
    merged.load_states([a.local_state(), a.local_state()])
    assert merged.num_samples() == 4
    assert merged.compute()["ssim"] == pytest.approx(float(np.mean(ssim_pinned(pred, gt).numpy())))
