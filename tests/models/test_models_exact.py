"""The exact models: closed forms checked against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pytest
import torch
from pyro.poutine.util import site_is_subsample
from scipy import integrate, stats

import pyrovi
from pyrovi.models import beta_bernoulli, normal_normal


def test_registry_lists_and_gets_models() -> None:
    names = pyrovi.list_models()
    assert {"normal_normal", "beta_bernoulli", "linear_regression"} <= set(names)
    assert names == sorted(names)
    for name in names:
        spec = pyrovi.get_model(name)
        assert spec.name == name
        if spec.name == "vae":  # its networks are trained by the fit: its encoder only
            assert set(spec.guides) == {"vae_encoder"}
            continue
        assert {"mean_field", "full_rank", "low_rank", "flow", "map", "laplace"} <= set(spec.guides)


def test_unknown_model_names_the_registered_ones() -> None:
    with pytest.raises(KeyError, match="normal_normal"):
        pyrovi.get_model("no_such_model")


def test_normal_normal_evidence_matches_the_marginal_gaussian() -> None:
    data, _ = normal_normal.simulate(seed=3, N=7, D=3, sigma=1.5, prior_scale=2.0)
    x = data["x"].double().numpy()
    sigma, scale0 = 1.5, 2.0
    expected = 0.0
    for d in range(x.shape[1]):  # x[:, d] ~ MVN(0, sigma^2 I + scale0^2 11^T)
        cov = sigma**2 * np.eye(7) + scale0**2 * np.ones((7, 7))
        expected += stats.multivariate_normal(np.zeros(7), cov).logpdf(x[:, d])
    assert normal_normal.log_evidence(data) == pytest.approx(expected, abs=1e-8)


def test_normal_normal_posterior_is_bayes_rule() -> None:
    data = normal_normal.load_data()
    post = normal_normal.exact_posterior(data)["mu"]
    # eight schools, one observation per school: precision-weighted average
    y, s = data["x"][0].double(), data["sigma"].double()
    prec = 1 / 10.0**2 + 1 / s**2
    assert torch.allclose(post.mean, (8.0 / 10.0**2 + y / s**2) / prec)
    assert torch.allclose(post.stddev, prec.rsqrt())


def test_beta_bernoulli_evidence_matches_quadrature() -> None:
    data, _ = beta_bernoulli.simulate(seed=1, N=40, alpha=2.0, beta=3.0)
    s, n = float(data["x"].sum()), 40

    def integrand(p: float) -> float:
        return p**s * (1 - p) ** (n - s) * stats.beta(2.0, 3.0).pdf(p)

    value, _ = integrate.quad(integrand, 0, 1, epsabs=1e-30, limit=200)
    assert beta_bernoulli.log_evidence(data) == pytest.approx(math.log(value), abs=1e-6)


def test_bundled_data_have_the_cited_counts() -> None:
    pp = beta_bernoulli.load_data()
    assert pp["x"].numel() == 980 and float(pp["x"].sum()) == 437
    schools = normal_normal.load_data()
    assert schools["x"].shape == (1, 8)
    assert schools["x"][0, 0] == 28.0 and schools["sigma"][0] == 15.0
    with pytest.raises(ValueError, match="no bundled data set"):
        normal_normal.load_data("nope")


@pytest.mark.parametrize("name", pyrovi.list_models())
def test_simulate_returns_data_the_model_accepts(name: str) -> None:
    spec = pyrovi.get_model(name)
    data, truth = spec.simulate(seed=0)
    trace = pyro.poutine.trace(spec.model).get_trace(**data)
    for site, value in truth.items():
        assert trace.nodes[site]["value"].shape == torch.as_tensor(value).shape
    again, _ = spec.simulate(seed=0)
    for key, value in data.items():
        assert torch.equal(torch.as_tensor(value), torch.as_tensor(again[key]))


@pytest.mark.parametrize("name", pyrovi.list_models())
def test_every_registered_model_loads_fits_and_samples(name: str) -> None:
    spec = pyrovi.get_model(name)
    for dataset in spec.datasets:
        data = spec.load_data(dataset)
        trace = pyro.poutine.trace(spec.model).get_trace(**data)
        assert trace.log_prob_sum().isfinite()
    guide = "mean_field" if "mean_field" in spec.guides else next(iter(spec.guides))
    data = spec.load_data()
    if spec.name == "vae":  # a network: 64 images do (the final ELBO draws 1,000 per image)
        data = {"x": data["x"][:64]}
    fit = pyrovi.fit(spec.model, data, guide=guide, num_steps=20)
    draws = fit.posterior(num_samples=50).posterior
    latent = {n for n, s in trace.nodes.items() if s["type"] == "sample"
              and not s["is_observed"] and not site_is_subsample(s)}
    assert latent <= set(draws.data_vars)
    assert set(spec.site_roles) <= set(draws.data_vars)
