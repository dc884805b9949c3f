"""Tests of the W1 estimators against closed forms.

Finite samples bias W1 upward; where the draws are random the tolerance comes from
the triangle inequality, using the W1 between two samples of the same distribution.
"""

import math

import numpy as np
import pytest
from scipy.special import gammaln
from scipy.stats import norm, wasserstein_distance

from pyrovi.diagnostics import sliced_w1, w1_joint


def test_translation_of_same_sample_is_exact():
    # W1 >= |E x - E y| = ||m||, and matching x_i to x_i + m costs exactly ||m||.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 3))
    m = np.array([1.0, -2.0, 0.5])
    y = (x + m)[rng.permutation(300)]
    assert w1_joint(x, y) == pytest.approx(np.linalg.norm(m), rel=1e-12)


def test_translation_of_independent_gaussians():
    # W1(N(0, I), N(m, I)) = ||m||. For samples, the triangle inequality gives
    # ||mean(x) - mean(y)|| <= W1(x, y) <= ||m|| + W1(x, y - m), where y - m is a
    # second N(0, I) sample: that W1 is the finite-sample bias bound.
    rng = np.random.default_rng(1)
    d, n = 2, 500
    m = np.array([3.0, 4.0])
    x = rng.standard_normal((n, d))
    y = m + rng.standard_normal((n, d))
    w = w1_joint(x, y)
    bias = w1_joint(x, y - m)
    assert np.linalg.norm(x.mean(0) - y.mean(0)) - 1e-9 <= w <= np.linalg.norm(m) + bias + 1e-9
    assert abs(w - 5.0) < bias


def test_one_dimensional_scale():
    # W1(N(0,1), N(0,s^2)) = |s - 1| sqrt(2/pi).
    s = 2.0
    truth = abs(s - 1) * math.sqrt(2 / math.pi)
    # quantile-spaced draws: deterministic, error O(log n / n)
    n = 600
    z = norm.ppf((np.arange(n) + 0.5) / n)
    assert w1_joint(z, s * z[::-1]) == pytest.approx(truth, abs=5e-3)
    # random draws: |W1(x, y) - truth| <= W1(x, P) + W1(y, Q); each term is estimated
    # by the W1 between two independent samples of the same size.
    rng = np.random.default_rng(2)
    x, x2 = rng.standard_normal((2, n))
    y, y2 = s * rng.standard_normal((2, n))
    w = w1_joint(x, y)
    assert w == pytest.approx(wasserstein_distance(x, y), rel=1e-10)  # exact in 1-D
    assert abs(w - truth) < w1_joint(x, x2) + w1_joint(y, y2)


def test_standardize_by_is_scale_free():
    rng = np.random.default_rng(3)
    x, y, ref = rng.standard_normal((3, 200, 2))
    scale = np.array([100.0, 0.01])
    plain = w1_joint(x, y + 1.0, standardize_by=ref)
    scaled = w1_joint(x * scale, (y + 1.0) * scale, standardize_by=ref * scale)
    assert scaled == pytest.approx(plain, rel=1e-9)


def test_subsampling_is_seeded():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 1000, 2))
    assert w1_joint(x, y, max_points=100, seed=1) == w1_joint(x, y, max_points=100, seed=1)


@pytest.mark.parametrize("d", [3, 5])
def test_sliced_translation(d):
    # For y = x + m every projection is a 1-D translation by theta . m, so the sliced
    # W1 is ||m|| E|theta_1| = ||m|| Gamma(d/2) / (sqrt(pi) Gamma((d+1)/2)) up to the
    # Monte Carlo error of the directions: sd(|theta_1|) = sqrt(1/d - c^2).
    rng = np.random.default_rng(5)
    x = rng.standard_normal((400, d))
    m = rng.standard_normal(d)
    c = math.exp(gammaln(d / 2) - gammaln((d + 1) / 2)) / math.sqrt(math.pi)
    num = 500
    se = np.linalg.norm(m) * math.sqrt(1 / d - c**2) / math.sqrt(num)
    got = sliced_w1(x, x + m, num_projections=num, seed=0)
    assert abs(got - np.linalg.norm(m) * c) < 4 * se
