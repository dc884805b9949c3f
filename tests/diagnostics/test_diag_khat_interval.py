"""The bootstrap interval of PSIS k-hat: it covers the truth, it is seeded, edge cases."""

import numpy as np
import pytest
from scipy import stats

from pyrovi.diagnostics import KHAT_LEVEL, psis_khat, psis_khat_interval


def _pareto_log_weights(k: float, n: int, seed: int) -> np.ndarray:
    return np.log(stats.genpareto(c=k).rvs(size=n, random_state=seed))


def test_interval_covers_the_true_shape_about_as_often_as_it_says() -> None:
    """Generalized Pareto weights of known shape: 90% intervals from 4,000 draws cover
    k in 40 repetitions at least 30 times (binomial(40, 0.9) gives >= 31 with 99%)."""
    hits = 0
    for seed in range(40):
        log_w = _pareto_log_weights(0.7, 4000, seed)
        low, high = psis_khat_interval(log_w, num_bootstrap=60, seed=seed)
        assert low <= psis_khat(log_w) <= high
        hits += low <= 0.7 <= high
    assert hits >= 30


def test_interval_is_seeded_and_about_two_tenths_either_side() -> None:
    log_w = _pareto_log_weights(0.5, 2000, 3)
    first = psis_khat_interval(log_w, seed=1)
    assert first == psis_khat_interval(log_w, seed=1)
    assert 0.1 < first[1] - first[0] < 0.6
    assert KHAT_LEVEL == 0.9


def test_edge_cases() -> None:
    constant = np.full(100, -3.0)
    assert psis_khat_interval(constant) == (float("-inf"), float("-inf"))
    with pytest.raises(ValueError, match="num_bootstrap"):
        psis_khat_interval(np.zeros(10), num_bootstrap=1)
    with pytest.raises(ValueError, match="level"):
        psis_khat_interval(np.zeros(10), level=1.0)
    with pytest.raises(ValueError, match="NaN"):
        psis_khat_interval(np.array([0.0, np.nan, 1.0]))
    mostly_zero = np.r_[np.full(990, -np.inf), np.random.default_rng(0).normal(size=10)]
    low, high = psis_khat_interval(mostly_zero, num_bootstrap=20)
    assert low <= high
