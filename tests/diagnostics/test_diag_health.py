"""Tests of reference_health on independent draws (healthy) and disagreeing chains."""

import math

import arviz as az
import numpy as np

from pyrovi.diagnostics import ESS_MIN, RHAT_MAX, reference_health


def _idata(posterior, diverging=None):
    sample_stats = None if diverging is None else {"diverging": diverging}
    return az.from_dict(posterior=posterior, sample_stats=sample_stats)


def test_independent_chains_are_healthy():
    # iid N(0,1) draws: R-hat ~ 1 within 0.005, ESS ~ 4 * 1000.
    rng = np.random.default_rng(0)
    idata = _idata(
        {"mu": rng.standard_normal((4, 1000, 2)), "sigma": rng.standard_normal((4, 1000))},
        diverging=np.zeros((4, 1000), dtype=bool),
    )
    health = reference_health(idata)
    assert health["problems"] == []
    assert health["max_rhat"] < RHAT_MAX
    assert health["min_ess_bulk"] > ESS_MIN and health["min_ess_tail"] > ESS_MIN
    assert health["divergences"] == 0
    assert (health["num_chains"], health["num_draws"]) == (4, 1000)


def test_shifted_chain_and_divergences():
    # chain 1 of mu[1] sits one sd away from chain 0: split R-hat is about 1.1.
    rng = np.random.default_rng(1)
    mu = rng.standard_normal((2, 1000, 2))
    mu[1, :, 1] += 1.0
    diverging = np.zeros((2, 1000), dtype=bool)
    diverging[0, :12] = True
    health = reference_health(_idata({"mu": mu}, diverging))
    assert health["max_rhat"] > 1.05
    assert health["divergences"] == 12
    problems = health["problems"]
    assert problems[0].startswith("R-hat of mu[1] is ") and problems[0].endswith("(> 1.01)")
    assert "12 divergent transitions" in problems


def test_one_chain_and_low_ess():
    # one chain: R-hat NaN and not a problem; a random walk has a tiny ESS.
    rng = np.random.default_rng(2)
    walk = np.cumsum(rng.standard_normal((1, 500)), axis=1)
    health = reference_health(_idata({"w": walk}))
    assert math.isnan(health["max_rhat"])
    assert health["divergences"] == 0
    assert not any("R-hat" in p for p in health["problems"])
    assert any(p.startswith("bulk ESS of w is") for p in health["problems"])
    assert health["min_ess_bulk"] < ESS_MIN
