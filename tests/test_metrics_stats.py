"""Fréchet and kernel distances against clean-fid's own implementations on the same random features."""

import numpy as np
import pytest
from cleanfid import fid as cleanfid

from igr.metrics import frechet_distance, frechet_distance_from_stats, kernel_distance
from igr.metrics.stats import kid_subset_size


def _feats(n, d, seed, shift=0.0, scale=1.0):
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)  # correlated dimensions, so the covariance is not diagonal
    return (rng.normal(size=(n, d)) @ mix) * scale + shift


@pytest.mark.parametrize("shift,scale", [(0.0, 1.0), (0.3, 1.0), (0.1, 1.7)])
def test_frechet_matches_cleanfid(shift, scale):
    a, b = _feats(400, 32, 0), _feats(300, 32, 1, shift, scale)
    expected = cleanfid.frechet_distance(
        a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    )
    got = frechet_distance(a, b)
    assert got == pytest.approx(expected, abs=1e-4)
    assert got > 0.01  # the sets differ, so a trivially-zero implementation would fail
    assert frechet_distance(b, a) == pytest.approx(got, abs=1e-8)


def test_frechet_of_a_set_with_itself_is_zero_even_when_covariance_is_singular():
    full_rank = _feats(200, 16, 2)
    assert abs(frechet_distance(full_rank, full_rank)) < 1e-8
    rank_deficient = _feats(10, 64, 3)  # fewer samples than dimensions, like a tiny eval with Inception
    scale = np.trace(np.cov(rank_deficient, rowvar=False))  # rounding error grows with the feature scale
    assert abs(frechet_distance(rank_deficient, rank_deficient)) < 1e-6 * scale


@pytest.mark.parametrize("na,nb", [(10, 12), (30, 50)])
def test_low_rank_shortcut_equals_the_covariance_formula(na, nb):
    a, b = _feats(na, 64, 10), _feats(nb, 64, 11, shift=0.2, scale=1.3)  # fewer rows than dimensions
    mu_a, mu_b = a.mean(0), b.mean(0)
    expected = frechet_distance_from_stats(mu_a, np.cov(a, rowvar=False), mu_b, np.cov(b, rowvar=False))
    # abs 1e-4: the eigendecomposition route itself is off by ~1e-6 here (square roots of the rounding
    # noise in the zero eigenvalues), the shortcut is not
    assert frechet_distance(a, b) == pytest.approx(expected, abs=1e-4)
    assert frechet_distance(a, b) > 1.0


def test_frechet_from_stats_closed_form_for_diagonal_gaussians():
    mu_a, mu_b = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
    var_a, var_b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 4.0, 1.0])
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    got = frechet_distance_from_stats(mu_a, np.diag(var_a), mu_b, np.diag(var_b))
    assert got == pytest.approx(expected, abs=1e-10)


@pytest.mark.parametrize("seed", [0, 7])
def test_kernel_distance_matches_cleanfid_with_the_same_subsets(seed):
    a, b = _feats(150, 24, 4), _feats(120, 24, 5, shift=0.2)
    np.random.seed(seed)  # clean-fid draws subsets from numpy's global RNG; ours from RandomState(seed)
    expected = cleanfid.kernel_distance(a, b, num_subsets=20, max_subset_size=50)
    got = kernel_distance(a, b, num_subsets=20, subset_size=50, seed=seed)
    assert got == pytest.approx(expected, abs=1e-4, rel=1e-9)
    assert got > 1e-3  # shifted sets: clearly non-zero


def test_kernel_distance_is_reproducible_and_seed_dependent():
    a, b = _feats(80, 8, 6), _feats(80, 8, 7, shift=0.1)
    assert kernel_distance(a, b, 10, 30, seed=1) == kernel_distance(a, b, 10, 30, seed=1)
    assert kernel_distance(a, b, 10, 30, seed=1) != kernel_distance(a, b, 10, 30, seed=2)


def test_kernel_distance_uses_smaller_subsets_for_small_sets_like_cleanfid():
    a, b = _feats(40, 8, 8), _feats(30, 8, 9)
    assert kid_subset_size(40, 30, 1000) == 30
    np.random.seed(3)
    expected = cleanfid.kernel_distance(a, b, num_subsets=5, max_subset_size=1000)
    assert kernel_distance(a, b, num_subsets=5, subset_size=1000, seed=3) == pytest.approx(expected, abs=1e-4)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="at least 2"):
        kernel_distance(np.zeros((1, 4)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="dimensions differ"):
        kernel_distance(np.zeros((3, 4)), np.zeros((3, 5)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((3, 2), np.nan), np.zeros((3, 2)))
