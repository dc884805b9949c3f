"""The compiled log-density path of the fit loop (pyrovi.infer.compiled)."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc.util import initialize_model

import pyrovi
from pyrovi.guides import get_family
from pyrovi.guides.gaussian import site_slices
from pyrovi.infer import result
from pyrovi.infer.compiled import (
    LogDensity,
    batch_agrees,
    compiled_path,
    flat_posterior,
    gaussian_draws,
)
from pyrovi.infer.util import as_tensor_data, default_dtype
from pyrovi.models import normal_normal


def constrained_model(x: torch.Tensor) -> None:
    """A simplex, a positive vector and a real vector, a plate of data: every kind of
    bijection and a log-sum-exp likelihood."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(3, dtype=x.dtype)))
    locs = pyro.sample("locs", dist.Normal(torch.zeros(3, dtype=x.dtype), 5.0).to_event(1))
    scales = pyro.sample("scales", dist.LogNormal(torch.zeros(3, dtype=x.dtype), 1.0)
                         .to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.MixtureSameFamily(dist.Categorical(weights),
                                                dist.Normal(locs, scales)), obs=x)


def not_batch_safe(x: torch.Tensor) -> None:
    """Indexes ``beta[0]``: right for one draw, silently wrong under a particle plate."""
    beta = pyro.sample("beta", dist.Normal(torch.zeros(2, dtype=x.dtype), 1.0).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(beta[0] + beta[1], 1.0), obs=x)


def branching(x: torch.Tensor) -> None:
    """Control flow on a latent value: a traced graph would freeze one branch."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=x.dtype), 3.0))
    shift = 1.0 if mu > 0 else -1.0
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu + shift, 1.0), obs=x)


def with_param(x: torch.Tensor) -> None:
    sigma = pyro.param("sigma", torch.ones((), dtype=x.dtype), constraint=dist.constraints.positive)
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=x.dtype), 3.0))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Normal(mu, sigma), obs=x)


def _data() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    return as_tensor_data({"x": rng.normal([-2.0, 0.0, 3.0] * 20, 1.0)}, torch.float64)


def _built(family: str, model=constrained_model, data=None):  # noqa: ANN001, ANN202
    data = data or _data()
    pyro.clear_param_store()
    guide = get_family(family).build(model)
    with pyro.poutine.block(), torch.no_grad():
        guide(**data)
    return guide, data


@pytest.mark.parametrize("family", ["mean_field", "low_rank", "full_rank"])
def test_density_equals_pyros_potential(family: str) -> None:
    with default_dtype(torch.float64):
        guide, data = _built(family)
        sites = site_slices(guide)
        density = LogDensity(constrained_model, data, sites, nesting=1)
        torch.manual_seed(0)
        u = 1.5 * torch.randn(5, density.dim, dtype=torch.float64)
        # Pyro's own potential for NUTS (initialize_model): an independent implementation
        _, minus_potential, _, _ = initialize_model(constrained_model, model_kwargs=data)
        expected = torch.stack([-minus_potential({
            name: row[lo:hi].reshape(shape) for name, (lo, hi, shape) in sites.items()})
            for row in u])
        assert torch.allclose(density.eager(u), expected, rtol=1e-10, atol=1e-8)
        assert torch.allclose(density(u), expected, rtol=1e-10, atol=1e-8)  # traced
        assert density.compiled and density.num_traces == 1
        density(u + 1.0)  # the same particle count reuses its graph
        assert density.num_traces == 1 and density.num_calls == 2
        assert batch_agrees(density, u[:2])


@pytest.mark.parametrize("family", ["mean_field", "low_rank", "full_rank"])
def test_draws_and_entropy_are_those_of_q(family: str) -> None:
    with default_dtype(torch.float64):
        guide, _ = _built(family)
        with torch.no_grad():  # a q with correlations and unequal scales
            for p in guide.parameters():
                p.add_(0.3 * torch.randn_like(p))
        q = flat_posterior(guide)
        torch.manual_seed(1)
        draws, entropy = gaussian_draws(guide, 40_000)
        assert float(entropy.detach()) == pytest.approx(float(q.entropy().detach()), rel=1e-10)
        sd = q.variance.sqrt()
        z = (draws.detach().mean(0) - q.mean) / sd
        assert float(z.abs().max()) < 5.0 / math.sqrt(40_000) * 1.5
        cov = torch.cov(draws.T.detach())
        assert torch.allclose(cov, q.covariance_matrix if family != "mean_field"
                              else torch.diag(q.variance), atol=0.03 * float(sd.max()) ** 2)
        assert draws.requires_grad and entropy.requires_grad


@pytest.mark.parametrize("family", ["mean_field", "full_rank"])
def test_compiled_fit_reaches_the_exact_evidence(family: str) -> None:
    """normal_normal's posterior is Gaussian with a diagonal covariance: both families are
    exact, so the ELBO reaches log p(x); on the compiled path, traced once per particle
    count and reused at every stochastic step, and by the default fixed-draw solve."""
    data = normal_normal.load_data()
    solved = pyrovi.fit(normal_normal.model, data, guide=family)
    assert solved.history["saa"]["certified"] and solved.converged
    assert abs(normal_normal.log_evidence(data) - solved.elbo) < 1e-6
    fit = pyrovi.fit(normal_normal.model, data, guide=family, optimizer="adam")
    used = fit.history["compiled"]
    assert used["used"] and used["graphs"], used
    assert used["traces"] <= 5 and used["calls"] >= 50 * used["traces"]
    assert fit.converged
    assert normal_normal.log_evidence(data) - fit.elbo < 0.01
    plain = pyrovi.fit(normal_normal.model, data, guide=family, compiled=False)
    assert not plain.history["compiled"]["used"]
    assert abs(plain.elbo - fit.elbo) < 0.01


def test_models_that_cannot_take_the_path_fall_back() -> None:
    data = _data()
    guide, _ = _built("mean_field", with_param, data)
    assert "parameter" in compiled_path(with_param, guide, data)
    guide, _ = _built("flow", constrained_model, data)
    assert "not a Gaussian family" in compiled_path(constrained_model, guide, data)

    fit = pyrovi.fit(branching, data, guide="mean_field", num_steps=200)
    assert not fit.history["compiled"]["used"]  # neither in a plate nor mapped
    assert "differs" in fit.history["compiled"]["why"]


def test_a_model_written_for_one_draw_is_mapped_over_the_draws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """``beta[0] + beta[1]`` broadcasts wrongly in a particle plate; mapped over the draws
    (vmap) each draw gets its own density, so the model takes the compiled path with one
    graph for every particle count, and the full-rank fit is the exact posterior:
    ``x ~ N(0, I + 2 11^T)`` and both coefficients' means ``sum(x) / (2 N + 1)``."""
    data = _data()
    fit = pyrovi.fit(not_batch_safe, data, guide="full_rank")
    used = fit.history["compiled"]
    assert used["used"] and used["batching"] == "vmap" and used["traces"] == 1, used
    n = data["x"].shape[0]
    covariance = torch.eye(n, dtype=torch.float64) + 2.0
    evidence = dist.MultivariateNormal(torch.zeros(n, dtype=torch.float64), covariance) \
        .log_prob(data["x"])
    assert abs(fit.elbo - float(evidence)) < 1e-6
    mean = float(data["x"].sum()) / (2 * n + 1)
    assert torch.allclose(flat_posterior(fit.guide).mean,
                          torch.full((2,), mean, dtype=torch.float64), rtol=1e-6)
    # the fit's log weights (PSIS, compare) on the same density, not Pyro's traces: q = p,
    # so every one is log p(x)
    monkeypatch.setattr(result, "guide_log_weights", None)
    log_w = fit.log_weights(500)
    assert log_w.shape == (500,) and np.allclose(log_w, float(evidence), atol=1e-6)


def test_value_dependent_control_flow_runs_eagerly() -> None:
    data = _data()
    guide, _ = _built("mean_field", branching, data)
    density = LogDensity(branching, data, site_slices(guide), nesting=1)
    x = data["x"]

    def exact(mu: float) -> torch.Tensor:
        shift = 1.0 if mu > 0 else -1.0
        return dist.Normal(0.0, 3.0).log_prob(torch.tensor(mu, dtype=torch.float64)) \
            + dist.Normal(mu + shift, 1.0).log_prob(x).sum()

    above = torch.tensor([[2.0]], dtype=torch.float64)
    assert torch.allclose(density(above), exact(2.0))  # traced where mu > 0 ...
    assert not density.compiled  # ... and the check at -mu caught the frozen branch
    below = torch.tensor([[-1.0]], dtype=torch.float64)
    assert torch.allclose(density(below), exact(-1.0))
    assert not batch_agrees(density, torch.tensor([[2.0], [-1.0]], dtype=torch.float64))
