"""The oracle of every parity figure, :func:`metalearn_shared.tolerances.measure`, and the
assertions built on it: each path (plain, rtol-only, exact, scaled, allowance, non-finite,
empty, shape mismatch) decides as its docstring says, at the boundary."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared import tolerances
from metalearn_shared.tolerances import TOL, assert_close, assert_measured, measure


def test_plain_path_passes_at_the_bound_and_fails_past_it():
    rtol, atol = TOL["default"]
    e = np.array([0.0, 2.0], np.float64)
    at = e + np.array([atol, atol + rtol * 2.0])  # exactly on the bound, element-wise
    m = measure(at, e, "default")
    assert m.passed and m.ratio == pytest.approx(1.0)
    past = e + np.array([0.0, 1.01 * (atol + rtol * 2.0)])
    m = measure(past, e, "default")
    assert not m.passed and m.ratio == pytest.approx(1.01)
    assert m.max_abs == pytest.approx(1.01 * (atol + rtol * 2.0))
    assert m.max_rel == pytest.approx(m.max_abs / 2.0)


def test_rtol_only_path_allows_nothing_where_expected_is_zero():
    rtol, atol = TOL["loss"]
    assert atol == 0.0 and rtol > 0
    assert measure([1.0 + 0.5 * rtol], [1.0], "loss").passed
    assert not measure([1.0 + 2 * rtol], [1.0], "loss").passed
    m = measure([1e-30], [0.0], "loss")  # any difference where |e| = 0 fails
    assert not m.passed and m.ratio == np.inf
    assert measure([0.0, 1.0], [0.0, 1.0], "loss").ratio == 0.0  # equal zeros are fine


def test_exact_path():
    assert measure([3, 1, 2], [3, 1, 2], "exact").passed
    m = measure([3, 2, 1], [3, 1, 2], "exact")
    assert not m.passed and m.ratio == np.inf and m.max_abs == 1.0


def test_scaled_path_applies_the_bound_relative_to_size_above_one():
    rtol, atol = TOL["grad"]
    e = np.array([25.0, -3.0])
    diff = 20 * atol  # fails the plain bound, passes relative to a size of 25
    assert not measure(e + diff, e, "grad").passed
    m = measure(e + diff, e, "grad", scale=None)  # None: scale = max |expected| = 25
    assert m.passed and m.ratio == pytest.approx(diff / (atol * 25.0))
    assert measure(e + diff, e, "grad", scale=30.0).ratio == pytest.approx(diff / (atol * 30))
    # Below 1 the scale does nothing: small quantities keep the absolute bound.
    small = np.array([0.5])
    assert measure(small + 2 * atol, small, "grad", scale=None).ratio == pytest.approx(2.0)


def test_allowance_widens_only_the_absolute_bound():
    rtol, atol = TOL["train"]
    e = np.zeros(3)
    assert not measure(e + 3 * atol, e, "train").passed
    m = measure(e + 3 * atol, e, "train", allow=2 * atol)
    assert m.passed and m.ratio == pytest.approx(1.0)
    # In scaled units: the allowance is multiplied by max(1, scale), like atol.
    assert measure(e + 6 * atol, e, "train", scale=2.0, allow=2 * atol).ratio == pytest.approx(1.0)
    # An rtol-only kind gets an absolute bound from its allowance.
    assert measure([1e-9], [0.0], "loss", allow=1e-8).passed


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_fail(bad):
    for actual, expected in (([bad, 0.0], [0.0, 0.0]), ([0.0, 0.0], [bad, 0.0])):
        m = measure(actual, expected, "default", allow=1e9)
        assert not m.passed and m.ratio == np.inf


def test_empty_arrays_pass_and_shapes_must_match():
    assert measure(np.zeros((0, 3)), np.zeros((0, 3))).passed
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(3, 2\)"):
        measure(np.zeros((2, 3)), np.zeros((3, 2)))


def test_float32_arrays_are_measured_exactly():
    """float32 inputs are compared in float32 (a difference of two nearby floats is exact)."""
    e = np.float32(1.0)
    a = np.nextafter(e, np.float32(2.0))
    assert measure([a], [e]).max_abs == float(a) - 1.0


def test_assertions_agree_with_measure():
    rtol, atol = TOL["forward"]
    assert_measured([1.0 + atol / 2], [1.0], "forward")
    with pytest.raises(AssertionError):
        assert_measured([1.0 + 2 * atol], [1.0], "forward")
    with pytest.raises(AssertionError, match="allowance"):
        assert_measured([1.0 + 9 * atol], [1.0], "forward", allow=2 * atol)
    assert_close([1.0 + atol / 2], [1.0], "forward")
    with pytest.raises(AssertionError):
        assert_close([1.0 + 2 * atol], [1.0], "forward")


def test_one_table_with_documented_multipliers():
    assert {"default", "forward", "loss", "grad", "train", "step", "spec", "exact"} <= set(TOL)
    assert all(r >= 0 and a >= 0 for r, a in TOL.values())
    assert 0 < tolerances.EVENT_SHARE < 1 and tolerances.FLOOR_MULTIPLE >= 1
    # Teacher-forced steps are held tighter than free-running ones.
    assert TOL["step"][1] < TOL["train"][1]
