"""Set statistics on feature matrices: Fréchet distance (FID, CLIP-FID) and kernel distance (KID).

Both take two ``(N, D)`` feature arrays and work in float64. They agree with clean-fid's
``frechet_distance`` / ``kernel_distance`` (tests pin this to 1e-4); the differences are deliberate:
the matrix square root goes through two symmetric eigendecompositions instead of ``scipy.linalg.sqrtm``
(stable when a covariance is singular, e.g. fewer images than feature dimensions), and KID draws its
subsets from a seeded generator instead of numpy's global one, so reruns agree.
"""

from __future__ import annotations

import numpy as np


def _as_features(feats, name: str) -> np.ndarray:
    x = np.asarray(feats, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name}: expected a (N, D) feature matrix, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or inf")
    return x


def mean_cov(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance (``np.cov(rowvar=False)``, as clean-fid) of an ``(N, D)`` matrix."""
    x = _as_features(feats, "feats")
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {x.shape[0]}")
    return x.mean(axis=0), np.atleast_2d(np.cov(x, rowvar=False))


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance_from_stats(mu_a, sigma_a, mu_b, sigma_b) -> float:
    """||mu_a - mu_b||² + Tr(Σa + Σb - 2 (Σa Σb)^½)."""
    mu_a, mu_b = np.atleast_1d(mu_a).astype(np.float64), np.atleast_1d(mu_b).astype(np.float64)
    sigma_a, sigma_b = np.atleast_2d(sigma_a).astype(np.float64), np.atleast_2d(sigma_b).astype(np.float64)
    if mu_a.shape != mu_b.shape or sigma_a.shape != sigma_b.shape:
        raise ValueError(f"feature dimensions differ: {mu_a.shape} vs {mu_b.shape}")
    diff = mu_a - mu_b
    # Tr((Σa Σb)^½) = Σ sqrt(eig(Σa^½ Σb Σa^½)); the inner matrix is symmetric PSD, so eigvalsh is exact
    # up to rounding where sqrtm of the non-symmetric product Σa Σb can return complex noise.
    root_a = _psd_sqrt(sigma_a)
    inner = root_a @ sigma_b @ root_a
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum()
    return float(diff @ diff + np.trace(sigma_a) + np.trace(sigma_b) - 2 * tr_covmean)


def frechet_distance(feats_a, feats_b) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (each needs ≥ 2 rows)."""
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    (na, d), nb = a.shape, b.shape[0]
    if b.shape[1] != d:
        raise ValueError(f"feature dimensions differ: {d} vs {b.shape[1]}")
    if min(na, nb) < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {na} and {nb}")
    if max(na, nb) >= d:
        return frechet_distance_from_stats(*mean_cov(a), *mean_cov(b))
    # Fewer images than dimensions (small validation sets): with centred Ca, Cb, Σa Σb has the same non-zero
    # eigenvalues as (Ca Cbᵀ)(Ca Cbᵀ)ᵀ / ((na-1)(nb-1)), so Tr((Σa Σb)^½) is the nuclear norm of the small
    # na×nb matrix Ca Cbᵀ — exact, and no d×d decomposition.
    ca, cb = a - a.mean(axis=0), b - b.mean(axis=0)
    diff = a.mean(axis=0) - b.mean(axis=0)
    tr_covmean = np.linalg.svd(ca @ cb.T, compute_uv=False).sum() / np.sqrt((na - 1) * (nb - 1))
    tr_a, tr_b = (ca**2).sum() / (na - 1), (cb**2).sum() / (nb - 1)
    return float(diff @ diff + tr_a + tr_b - 2 * tr_covmean)


def kid_subset_size(n_a: int, n_b: int, subset_size: int = 1000) -> int:
    """The subset size KID actually uses: clean-fid's min(n_a, n_b, subset_size)."""
    return min(n_a, n_b, subset_size)


def kernel_distance(
    feats_a, feats_b, num_subsets: int = 100, subset_size: int = 1000, seed: int = 0
) -> float:
    """Unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y / D + 1)³, averaged over subsets.

    Same estimator and draw order as clean-fid's ``kernel_distance(feats_a, feats_b)`` (each subset: first
    ``feats_b`` rows, then ``feats_a`` rows, without replacement); seeding ``np.random`` with ``seed``
    before calling clean-fid reproduces the same subsets. Raw value: reports multiply it by 1e3.
    """
    a, b = _as_features(feats_a, "feats_a"), _as_features(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    m = kid_subset_size(a.shape[0], b.shape[0], subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 feature vectors per set, got {a.shape[0]} and {b.shape[0]}")
    d = a.shape[1]
    rng = np.random.RandomState(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = b[rng.choice(b.shape[0], m, replace=False)]
        y = a[rng.choice(a.shape[0], m, replace=False)]
        k_xx_yy = (x @ x.T / d + 1) ** 3 + (y @ y.T / d + 1) ** 3
        k_xy = (x @ y.T / d + 1) ** 3
        t += (k_xx_yy.sum() - np.diag(k_xx_yy).sum()) / (m - 1) - k_xy.sum() * 2 / m
    return float(t / num_subsets / m)
