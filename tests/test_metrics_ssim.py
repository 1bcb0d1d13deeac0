"""The pinned SSIM against a reference written independently from its definition (numpy + scipy)."""

import numpy as np
import pytest
import torch
from metrics_helpers import np_images, random_pairs
from scipy.signal import correlate2d

from igr.metrics import ssim_pinned, ssim_rgb


def _reference_ssim(pred_hwc: np.ndarray, gt_hwc: np.ndarray, clamp_cs: bool = True) -> float:
    """docs/design.md §5 / pyiqa "ssim", restated: luma rounded, 11x11 Gaussian (σ 1.5), valid, cs ≥ 0."""

    def luma(img):
        return np.round(img.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))

    ax = np.arange(11) - 5.0
    window = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    window /= window.sum()

    def filt(a):
        return correlate2d(a, window, mode="valid")

    x, y = luma(pred_hwc), luma(gt_hwc)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    cs = (2 * cxy + c2) / (vx + vy + c2)
    if clamp_cs:
        cs = np.maximum(cs, 0)
    return float(((2 * mx * my + c1) / (mx**2 + my**2 + c1) * cs).mean())


def _luma_sum(img: torch.Tensor) -> torch.Tensor:
    """1000 × luma, exactly, in integers."""
    r, g, b = img.long().unbind(1)
    return 299 * r + 587 * g + 114 * b


def _without_luma_ties(img: torch.Tensor) -> torch.Tensor:
    """Nudge blue where luma is exactly k + 0.5: there pyiqa's float32 arithmetic decides the rounding."""
    img = img.clone()
    ties = _luma_sum(img) % 1000 == 500
    blue = img[:, 2]
    blue[ties] = torch.where(blue[ties] < 255, blue[ties] + 1, blue[ties] - 1)
    assert not (_luma_sum(img) % 1000 == 500).any()
    return img


def test_luma_is_exact_except_at_half_level_ties():
    from igr.metrics.ssim import y_channel

    img = torch.randint(
        0, 256, (1, 3, 200, 200), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    s = _luma_sum(img)
    exact = torch.div(s + 499, 1000, rounding_mode="floor")  # round half down; ties checked separately
    ties = s % 1000 == 500
    y = y_channel(img)[:, 0].long()
    assert ties.any() and torch.equal(y[~ties], exact[~ties])
    assert ((y[ties] - exact[ties]) <= 1).all() and ((y[ties] - exact[ties]) >= 0).all()


@pytest.mark.parametrize("noise", [5, 40, 120])
def test_ssim_pinned_matches_reference_definition(noise):
    pred, gt = random_pairs(3, 40, 36, noise=noise, seed=noise)
    pred, gt = _without_luma_ties(pred), _without_luma_ties(gt)
    got = ssim_pinned(pred, gt)
    assert got.shape == (3,) and got.dtype == torch.float64
    expected = [_reference_ssim(p, g) for p, g in zip(np_images(pred), np_images(gt), strict=True)]
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-6)
    assert got.max() < 0.999  # noisy predictions: far from the identity value


def test_identical_images_score_one():
    _, gt = random_pairs(2, 32, 24)
    np.testing.assert_allclose(ssim_pinned(gt, gt).numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(ssim_rgb(gt, gt).numpy(), 1.0, atol=1e-6)


def test_contrast_structure_term_is_clamped_at_zero():
    _, gt = random_pairs(1, 48, 48, seed=3)
    gt = _without_luma_ties(gt)
    inverted = _without_luma_ties(
        255 - gt
    )  # anti-correlated: unclamped cs would be negative almost everywhere
    unclamped = _reference_ssim(np_images(inverted)[0], np_images(gt)[0], clamp_cs=False)
    assert unclamped < 0
    got = ssim_pinned(inverted, gt).item()
    assert got >= 0
    assert got == pytest.approx(_reference_ssim(np_images(inverted)[0], np_images(gt)[0]), abs=1e-6)


def test_luma_is_rounded_so_sub_level_colour_changes_do_not_count():
    grey = torch.arange(40 * 32, dtype=torch.float32).reshape(1, 1, 40, 32) % 200 + 20
    gt = grey.expand(1, 3, 40, 32).round().to(torch.uint8).contiguous()
    pred = gt.clone()
    pred[:, 2] += 1  # +1 in blue moves luma by 0.114: rounds back to the same level
    assert ssim_pinned(pred, gt).item() == pytest.approx(1.0, abs=1e-12)
    assert ssim_rgb(pred, gt).item() < 1.0  # the RGB variant sees the change: it is a different metric


def test_rejects_non_uint8_and_mismatched_shapes():
    pred, gt = random_pairs(1, 32, 24)
    with pytest.raises(TypeError, match="uint8"):
        ssim_pinned(pred.float(), gt)
    with pytest.raises(ValueError, match="shapes differ"):
        ssim_pinned(pred, gt[:, :, :16])


def test_scipy_and_torch_filters_agree():
    from igr.metrics.ssim import _filter_valid_scipy, _filter_valid_torch, gaussian_window_1d

    x = torch.rand(2, 5, 30, 27, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 255
    g = gaussian_window_1d()
    a, b = _filter_valid_scipy(x, g), _filter_valid_torch(x.reshape(10, 1, 30, 27), g).reshape(2, 5, 20, 17)
    assert a.shape == (2, 5, 20, 17)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
