"""Tests of pyrovi.diagnostics.marginal_table against known mean shifts and scalings."""

import math

import numpy as np
import pytest

from pyrovi.diagnostics import TABLE_COLUMNS, marginal_table


def test_known_shift_and_scale():
    # Same standard normal draws, VI = 0.5 + 2 * ref for "a", identical for "b": every
    # column is then exact (no Monte Carlo error) except through the sample sd itself.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((2, 2000))
    ref = {"b": z[1], "a": z[0]}
    vi = {"a": 0.5 + 2.0 * z[0], "b": z[1].copy(), "extra": z[0]}
    table = marginal_table(vi, ref)
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert table.index.name == "parameter"
    assert list(table.index) == ["b", "a"]  # reference order, "extra" dropped
    a = table.loc["a"]
    sd = np.std(z[0], ddof=1)
    assert a.mean_error_z == pytest.approx((0.5 + np.mean(z[0])) / sd)
    assert a.sd_ratio == pytest.approx(2.0)
    b = table.loc["b"]
    assert b.mean_error_z == 0.0 and b.sd_ratio == 1.0 and b.w1_std == 0.0


def test_w1_std_of_translation():
    # A pure translation by t moves every quantile by t: W1 = |t| exactly.
    z = np.random.default_rng(1).standard_normal(1000)
    table = marginal_table({"x": z + 0.3}, {"x": z})
    assert table.loc["x", "w1_std"] == pytest.approx(0.3 / np.std(z, ddof=1))
    assert table.loc["x", "sd_ratio"] == pytest.approx(1.0)


def test_w1_std_scale_closed_form():
    # W1(N(0,1), N(0,s^2)) = |s - 1| sqrt(2/pi); with quantile-spaced draws the
    # empirical value is within 1e-3 of it.
    from scipy.stats import norm

    n = 4000
    z = norm.ppf((np.arange(n) + 0.5) / n)
    table = marginal_table({"x": 1.5 * z}, {"x": z})
    assert table.loc["x", "w1_std"] == pytest.approx(0.5 * math.sqrt(2 / math.pi), abs=2e-3)


def test_no_common_parameters():
    with pytest.raises(ValueError, match="no parameters in common"):
        marginal_table({"a": np.zeros(3)}, {"b": np.zeros(3)})
