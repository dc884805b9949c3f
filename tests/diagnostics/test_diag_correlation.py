"""Tests of missed_correlations and strongest_pair on Gaussians with set correlations."""

import numpy as np
import pytest

from pyrovi.diagnostics import missed_correlations, strongest_pair


def _gaussian(cov, n=4000, seed=0):
    draws = np.random.default_rng(seed).multivariate_normal(np.zeros(len(cov)), cov, size=n)
    return {f"beta[{i}]": draws[:, i] for i in range(len(cov))}


REF_COV = np.array([[1.0, -0.95, 0.0], [-0.95, 1.0, 0.3], [0.0, 0.3, 1.0]])


def test_mean_field_misses_the_strong_pair():
    ref = _gaussian(REF_COV)
    vi = _gaussian(np.eye(3), seed=1)  # a diagonal guide: no correlation at all
    missed = missed_correlations(vi, ref)
    # only (0, 1) has |rho_ref| >= 0.5; sampling error of rho at n = 4000 is < 0.02
    assert len(missed) == 1
    hit = missed[0]
    assert (hit["a"], hit["b"]) == ("beta[0]", "beta[1]")
    assert hit["rho_ref"] == pytest.approx(-0.95, abs=0.02)
    assert hit["rho_vi"] == pytest.approx(0.0, abs=0.05)
    assert missed_correlations(ref, ref) == []
    # a lower threshold brings in (1, 2) too, sorted by gap
    both = missed_correlations(vi, ref, threshold=0.25, min_gap=0.2)
    assert [(m["a"], m["b"]) for m in both] == [("beta[0]", "beta[1]"), ("beta[1]", "beta[2]")]


def test_strongest_pair():
    a, b, rho = strongest_pair(_gaussian(REF_COV))
    assert (a, b) == ("beta[0]", "beta[1]")
    assert rho == pytest.approx(-0.95, abs=0.02)
    assert strongest_pair({"x": np.zeros(5)}) is None
    assert strongest_pair({"x": np.zeros(5), "y": np.ones(5)}) is None  # undefined rho
