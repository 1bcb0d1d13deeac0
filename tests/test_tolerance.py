"""The float32 tolerance rule of tests/tolerance.py: wide enough for reordered float32 sums, narrow enough to
catch an error of one term."""

from __future__ import annotations

import pytest
import torch
from tolerance import EPS32, assert_close_f32, f32_atol, tiny_restore_ops


def test_reordered_float32_reductions_stay_inside_the_bound():
    g = torch.Generator().manual_seed(0)
    n = 4096
    x = torch.randn(64, n, generator=g)
    exact = x.double().sum(1)
    # four orders: float32 forward, reversed, pairwise (torch), and a blocked matmul
    orders = [x.cumsum(1)[:, -1], x.flip(1).cumsum(1)[:, -1], x.sum(1), x @ torch.ones(n)]
    for got in orders:
        assert_close_f32(got, exact, ops=n)
    # the bound is about eps * sqrt(n) of the scale, far from one term's worth of error
    scale = float(exact.abs().max())
    assert f32_atol(exact, n) == pytest.approx(4 * EPS32 * n**0.5 * scale)
    wrong = exact.clone()
    wrong[3] += 1e-3 * scale
    with pytest.raises(AssertionError, match="float32 bound for ops=4096"):
        assert_close_f32(orders[0], wrong, ops=n)


def test_scale_is_the_largest_value_not_each_element():
    expected = torch.tensor([1.0, 1e-6])
    # ops=100: atol = 40 eps = 4.8e-6 of the scale 1.0, though the second element is only 1e-6
    assert_close_f32(torch.tensor([1.0, 2e-6]), expected, ops=100)
    with pytest.raises(AssertionError):
        assert_close_f32(torch.tensor([1.0, 1e-6 + 1e-5]), expected, ops=100)


def test_a_tiny_restoration_bound_is_far_below_a_visible_change():
    # the pipeline tests compare images in [0, 1]; one 8-bit level is 1/255
    assert f32_atol(torch.ones(1), tiny_restore_ops(3)) < 0.1 / 255
