"""Tests of guide importance weights and PSIS k-hat on conjugate Gaussian models.

With the exact posterior as guide, ``log w = log p(x, z) - log q(z) = log p(x)`` for
every draw: the weights are constant and equal to the closed-form log evidence.
"""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDelta, AutoNormal
from scipy.stats import multivariate_normal

from pyrovi.diagnostics import KHAT_BAD, KHAT_GOOD, khat_label, psis_khat
from pyrovi.infer import util as psis_module
from pyrovi.infer.util import guide_log_weights

PRIOR_SCALE = 10.0


@pytest.fixture(autouse=True)
def _clean_param_store():
    pyro.clear_param_store()
    yield
    pyro.clear_param_store()


def normal_model(x):
    """``mu[d] ~ N(0, 10^2)``, ``x[n, d] ~ N(mu[d], 1)``: batch safe, nested plates."""
    num_obs, dim = x.shape
    with pyro.plate("dim", dim, dim=-1):
        mu = pyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
        with pyro.plate("obs", num_obs, dim=-2):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)


def normal_posterior(x):
    precision = PRIOR_SCALE**-2 + x.shape[0]
    return x.sum(0) / precision, torch.full((x.shape[1],), precision**-0.5)


def normal_log_evidence(x):
    """Each column of x is N(0, I + 10^2 11')."""
    n = x.shape[0]
    cov = np.eye(n) + PRIOR_SCALE**2 * np.ones((n, n))
    return sum(multivariate_normal(np.zeros(n), cov).logpdf(col) for col in x.numpy().T)


def make_normal_guide(loc, scale):
    def guide(x):
        with pyro.plate("dim", x.shape[1], dim=-1):
            pyro.sample("mu", dist.Normal(loc, scale))

    return guide


@pytest.fixture
def normal_data():
    gen = torch.Generator().manual_seed(0)
    return {"x": 1.5 + torch.randn(20, 3, generator=gen)}


@pytest.fixture
def spy(monkeypatch):
    """Record whether the batched evaluation succeeded."""
    outcomes = []
    original = psis_module._vectorized_log_weights

    def wrapped(*args, **kwargs):
        try:
            result = original(*args, **kwargs)
        except Exception as error:
            outcomes.append(type(error).__name__)
            raise
        outcomes.append("ok")
        return result

    monkeypatch.setattr(psis_module, "_vectorized_log_weights", wrapped)
    return outcomes


def test_exact_guide_gives_constant_weights(normal_data, spy):
    loc, scale = normal_posterior(normal_data["x"])
    lw = guide_log_weights(normal_model, make_normal_guide(loc, scale), normal_data, 500)
    assert spy == ["ok"]  # the batched path was used
    assert lw.shape == (500,) and lw.dtype == np.float64
    # float32 rounding of sums of ~60 terms: 1e-3 absolute
    assert np.ptp(lw) < 1e-3
    assert lw.mean() == pytest.approx(normal_log_evidence(normal_data["x"]), abs=1e-3)
    khat = psis_khat(lw)
    assert khat < KHAT_GOOD
    assert khat_label(khat) == "good"


def test_seeded(normal_data):
    guide = make_normal_guide(*normal_posterior(normal_data["x"]))
    wide = make_normal_guide(torch.zeros(3), torch.ones(3))
    a = guide_log_weights(normal_model, wide, normal_data, 50, seed=3)
    b = guide_log_weights(normal_model, wide, normal_data, 50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert guide_log_weights(normal_model, guide, normal_data, 5).shape == (5,)


def test_narrow_guide_has_heavy_tailed_weights(normal_data):
    # Guide N(m, (r s)^2) for posterior N(m, s^2), r < 1: the weights have a Pareto
    # tail of shape k = 1 - r^2 (0.96 for r = 0.2, one dimension). The tail is Pareto
    # only asymptotically: at n = 2000 k-hat is about 0.8 (0.79-1.05 over seeds 0-4).
    x = normal_data["x"][:, :1]
    loc, scale = normal_posterior(x)
    lw = guide_log_weights(normal_model, make_normal_guide(loc, 0.2 * scale), {"x": x}, 2000)
    khat = psis_khat(lw)
    assert khat > KHAT_BAD
    assert khat_label(khat) == "bad"


def test_autoguide_is_batched(normal_data, spy):
    guide = AutoNormal(normal_model)
    lw = guide_log_weights(normal_model, guide, normal_data, 200)
    assert spy == ["ok"] and lw.shape == (200,) and np.isfinite(lw).all()


def unsafe_model(t, y):
    """Two-coefficient regression written the plain, non batch-safe way."""
    beta = pyro.sample("beta", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
    with pyro.plate("obs", t.shape[0]):
        pyro.sample("y", dist.Normal(beta[0] + beta[1] * t, 1.0), obs=y)


def test_not_batch_safe_model_falls_back(spy):
    # With two observations, beta[0] + beta[1] * t broadcasts under the particle plate
    # to the right shape but mixes particles: only the one-particle check catches it.
    t = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    y = torch.tensor([0.5, 3.0], dtype=torch.float64)
    design = torch.stack([torch.ones(2, dtype=torch.float64), t], dim=1)
    precision = torch.eye(2, dtype=torch.float64) / PRIOR_SCALE**2 + design.T @ design
    cov = torch.linalg.inv(precision)
    loc = cov @ design.T @ y

    def exact_guide(t, y):
        pyro.sample("beta", dist.MultivariateNormal(loc, covariance_matrix=cov))

    lw = guide_log_weights(unsafe_model, exact_guide, {"t": t, "y": y}, 100)
    assert spy == ["VectorizationError"]
    marginal = design @ design.T * PRIOR_SCALE**2 + torch.eye(2, dtype=torch.float64)
    truth = multivariate_normal(np.zeros(2), marginal.numpy()).logpdf(y.numpy())
    np.testing.assert_allclose(lw, truth, atol=1e-8)


def test_point_mass_guide_is_refused(normal_data):
    with pytest.raises(ValueError, match="point mass"):
        guide_log_weights(normal_model, AutoDelta(normal_model), normal_data, 10)


def test_khat_of_pareto_weights():
    # w = U^(-k) has a Pareto tail with shape k. With n = 10000 PSIS fits the largest
    # 300 weights; the sd of k-hat is then about (1 + k) / sqrt(300) = 0.1.
    rng = np.random.default_rng(0)
    for k in (0.3, 0.8):
        lw = -k * np.log(rng.uniform(size=10_000))
        assert abs(psis_khat(lw) - k) < 0.3


def test_khat_edge_cases():
    assert psis_khat(np.full(100, -3.0)) == -math.inf
    assert psis_khat(np.r_[np.full(99, -3.0), -np.inf]) == -math.inf  # bounded weights
    with pytest.raises(ValueError):
        psis_khat(np.r_[np.zeros(99), np.nan])
    with pytest.raises(ValueError):
        psis_khat(np.full(10, -np.inf))


def test_khat_label():
    assert [khat_label(k) for k in (-0.2, 0.5, 0.6, 0.7, 0.71, math.inf, math.nan)] == [
        "good",
        "good",
        "ok",
        "ok",
        "bad",
        "bad",
        "bad",
    ]
