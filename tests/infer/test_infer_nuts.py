"""pyrovi.nuts: exact posteriors recovered within Monte Carlo error, stats, warnings, cache."""

from __future__ import annotations

import importlib
import warnings

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovi
from pyrovi.guides import GaussianStart
from pyrovi.models import beta_bernoulli, normal_normal

nuts_module = importlib.import_module("pyrovi.infer.nuts")  # the package re-exports nuts()


@pytest.mark.parametrize("module", [normal_normal, beta_bernoulli])
def test_nuts_matches_the_exact_posterior_within_mcse(module, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
    data = module.load_data()
    idata = pyrovi.nuts(module.model, data, num_samples=1000, num_warmup=500, seed=1)
    (site, exact), = module.exact_posterior(data).items()
    draws = idata.posterior[site]
    mean_mcse = az.mcse(idata, var_names=[site], method="mean")[site].values
    sd_mcse = az.mcse(idata, var_names=[site], method="sd")[site].values
    mean = draws.mean(("chain", "draw")).values
    sd = draws.std(("chain", "draw")).values
    # 4 Monte Carlo standard errors: each of the up to 8 comparisons fails w.p. < 1e-4
    assert np.all(np.abs(mean - exact.mean.numpy()) < 4 * mean_mcse)
    assert np.all(np.abs(sd - exact.stddev.numpy()) < 4 * sd_mcse)


def test_sample_stats_and_shapes(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyrovi.ReferenceQualityWarning)
        idata = pyrovi.nuts(beta_bernoulli.model, beta_bernoulli.load_data(), num_samples=60,
                            num_warmup=60, num_chains=2)
    stats = idata.sample_stats
    for name in ("diverging", "tree_depth", "step_size", "energy", "lp"):
        assert stats[name].shape == (2, 60), name
    assert stats["diverging"].dtype == bool
    assert (stats["tree_depth"] >= 1).all() and (stats["step_size"] > 0).all()
    assert np.isfinite(stats["energy"]).all() and np.isfinite(stats["lp"]).all()
    assert az.bfmi(idata).shape == (2,)


def test_short_runs_warn_about_ess(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
    with pytest.warns(pyrovi.ReferenceQualityWarning, match="bulk ESS"):
        pyrovi.nuts(beta_bernoulli.model, beta_bernoulli.load_data(), num_samples=30,
                    num_warmup=30, num_chains=2, cache=False)


def test_cache_is_reused_and_corruption_is_detected(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
    data = beta_bernoulli.load_data()
    kwargs = dict(num_samples=50, num_warmup=50, num_chains=1, seed=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyrovi.ReferenceQualityWarning)
        first = pyrovi.nuts(beta_bernoulli.model, data, **kwargs)
        entries = list(tmp_path.glob("*.nc"))
        assert len(entries) == 1
        calls = []
        monkeypatch.setattr(nuts_module, "_Chain",
                            lambda *a: calls.append(a) or pytest.fail("cache not used"))
        again = pyrovi.nuts(beta_bernoulli.model, data, **kwargs)
        assert np.array_equal(first.posterior["p"].values, again.posterior["p"].values)
        monkeypatch.undo()
        monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
        blob = bytearray(entries[0].read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        entries[0].write_bytes(bytes(blob))
        with pytest.warns(UserWarning, match="corrupted NUTS cache entry"):
            recomputed = pyrovi.nuts(beta_bernoulli.model, data, **kwargs)
    assert np.array_equal(first.posterior["p"].values, recomputed.posterior["p"].values)


def test_cache_key_depends_on_data_and_settings() -> None:
    data = beta_bernoulli.load_data()
    base = nuts_module.cache_key(beta_bernoulli.model, data, {"num_samples": 10})
    other = dict(data, x=1 - data["x"])
    assert base != nuts_module.cache_key(beta_bernoulli.model, other, {"num_samples": 10})
    assert base != nuts_module.cache_key(beta_bernoulli.model, data, {"num_samples": 11})
    assert base != nuts_module.cache_key(normal_normal.model, data, {"num_samples": 10})


def test_target_ess_stops_early_with_enough_ess(tmp_path, monkeypatch) -> None:
    """An ESS-sized run on the conjugate normal mean (8 parameters): it stops at the first
    block boundary where every bulk ESS is >= 400 and R-hat <= 1.01, well before the cap,
    and its means match the exact posterior within Monte Carlo error."""
    monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
    data = normal_normal.load_data()
    settings = dict(num_samples=2000, num_warmup=300, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", pyrovi.ReferenceQualityWarning)  # it passes the check
        idata = pyrovi.nuts(normal_normal.model, data, target_ess=nuts_module.ESS_MIN,
                            **settings)
    draws = idata.posterior.sizes["draw"]
    assert draws < settings["num_samples"] and draws % nuts_module.ESS_BLOCK == 0
    assert float(az.ess(idata, method="bulk")["mu"].min()) >= nuts_module.ESS_MIN
    assert float(az.rhat(idata)["mu"].max()) <= nuts_module.RHAT_MAX
    # one block fewer would not have passed: the run stops at the first block that does
    shorter = idata.posterior.isel(draw=slice(0, draws - nuts_module.ESS_BLOCK))
    if shorter.sizes["draw"] >= 4:
        rhat, ess = nuts_module._worst_rhat_and_ess(shorter)
        assert ess < nuts_module.ESS_MIN or rhat > nuts_module.RHAT_MAX
    exact = normal_normal.exact_posterior(data)["mu"]
    mean = idata.posterior["mu"].mean(("chain", "draw")).values
    mcse = az.mcse(idata, var_names=["mu"], method="mean")["mu"].values
    # 4 Monte Carlo standard errors: each of the 8 comparisons fails w.p. < 1e-4
    assert np.all(np.abs(mean - exact.mean.numpy()) < 4 * mcse)
    assert idata.sample_stats["lp"].shape == (2, draws)
    # the setting is part of the cache key: the fixed-size run of the same settings is not it
    cached = nuts_module.cached_reference(normal_normal.model, data,
                                          target_ess=nuts_module.ESS_MIN, **settings)
    assert cached is not None and cached.posterior.sizes["draw"] == draws
    assert nuts_module.cached_reference(normal_normal.model, data, **settings) is None
    assert nuts_module.cached_reference(normal_normal.model, data, target_ess=1000,
                                        **settings) is None


def test_chains_give_the_same_draws_in_processes_and_in_turn(tmp_path, monkeypatch) -> None:
    """Each chain has its own random stream: the chains interleaved block by block in one
    process give the draws of their own processes. An unreachable target runs to the cap,
    a part block included."""
    monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
    data = beta_bernoulli.load_data()
    kwargs = dict(num_samples=150, num_warmup=50, num_chains=2, target_ess=1e9, cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyrovi.ReferenceQualityWarning)
        parallel = pyrovi.nuts(beta_bernoulli.model, data, **kwargs)
        monkeypatch.setattr(nuts_module, "_can_fork", lambda: False)
        sequential = pyrovi.nuts(beta_bernoulli.model, data, **kwargs)
    assert parallel.posterior["p"].shape == (2, 150)
    np.testing.assert_array_equal(parallel.posterior["p"].values, sequential.posterior["p"].values)
    np.testing.assert_array_equal(parallel.sample_stats["tree_depth"].values,
                                  sequential.sample_stats["tree_depth"].values)
    assert not np.array_equal(parallel.posterior["p"].values[0], parallel.posterior["p"].values[1])


def _two_coefficients(x: torch.Tensor, y: torch.Tensor) -> None:
    slope = pyro.sample("slope", dist.Normal(x.new_zeros(()), 10.0))  # before "intercept"
    intercept = pyro.sample("intercept", dist.Normal(x.new_zeros(()), 10.0))
    with pyro.plate("data", len(x)):
        pyro.sample("y", dist.Normal(intercept + slope * x, 0.5), obs=y)


def test_chains_start_from_the_laplace_approximation() -> None:
    """A Gaussian linear model: the Laplace approximation is the exact posterior. A chain's
    initial inverse mass matrix is its covariance, laid out in Pyro's site order, and its
    initial point is ``mode + L u`` with ``u`` in (-2, 2)^2, different for each seed."""
    x = torch.linspace(2.0, 4.0, 20, dtype=torch.float64)  # slope and intercept correlate
    y = 1.0 + 0.5 * x + 0.5 * torch.randn(20, dtype=torch.float64)
    design = torch.stack([torch.ones_like(x), x], dim=1)  # (intercept, slope): sorted names
    exact_cov = torch.linalg.inv(design.T @ design / 0.25 + torch.eye(2) / 100.0)
    data = {"x": x, "y": y}
    start = nuts_module._laplace_start(_two_coefficients, data, seed=0)
    assert start is not None
    dense = nuts_module._Chain(_two_coefficients, data, 0, 0, True, start, False, 0)
    inverse_mass = dense.kernel.inverse_mass_matrix[("intercept", "slope")]
    torch.testing.assert_close(inverse_mass, exact_cov, rtol=1e-4, atol=0.0)
    diagonal = nuts_module._Chain(_two_coefficients, data, 0, 1, False, start, False, 1)
    torch.testing.assert_close(diagonal.kernel.inverse_mass_matrix[("intercept", "slope")],
                               exact_cov.diagonal(), rtol=1e-4, atol=0.0)
    order = sorted(start.sites, key=lambda name: start.sites[name][0])  # the trace's order
    assert order == ["slope", "intercept"]
    exact_mean = (exact_cov @ (design.T @ y / 0.25)).flip(0)  # in that order
    torch.testing.assert_close(start.loc, exact_mean, rtol=1e-5, atol=0.0)
    starts = []
    for chain in (dense, diagonal):
        point = torch.stack([chain.kernel.initial_params[name] for name in order])
        u = torch.linalg.solve_triangular(start.scale_tril, (point - start.loc)[:, None],
                                          upper=False)
        assert u.abs().max() < 2.0
        starts.append(point)
    assert not torch.allclose(starts[0], starts[1])


def _year_regression(year: torch.Tensor, y: torch.Tensor) -> None:
    """A trend over calendar years with known noise: the intercept (sd ~ 30) and the slope
    (sd ~ 0.015) are correlated -0.9999, like posteriordb's kilpisjarvi."""
    zero = torch.zeros((), dtype=year.dtype)
    intercept = pyro.sample("intercept", dist.Normal(zero, 1000.0))
    slope = pyro.sample("slope", dist.Normal(zero, 100.0))
    with pyro.plate("data", year.shape[0]):
        pyro.sample("y", dist.Normal(intercept + slope * year, 1.0), obs=y)


def test_adaptation_keeps_the_scale_of_a_badly_scaled_posterior(tmp_path,
                                                                monkeypatch) -> None:
    """The adapted covariance is regularised towards the Laplace covariance, not the
    identity (whose 1e-3 swamps the slope's variance of 2e-4 here): the step size stays
    near the posterior's own scale, trees stay shallow, and the exact Gaussian posterior
    is recovered within Monte Carlo error."""
    monkeypatch.setenv("PYROVI_CACHE_DIR", str(tmp_path))
    gen = torch.Generator().manual_seed(0)
    year = torch.arange(1952.0, 2014.0, dtype=torch.float64)
    y = -30.0 + 0.02 * year + torch.randn(len(year), generator=gen, dtype=torch.float64)
    idata = pyrovi.nuts(_year_regression, {"year": year, "y": y}, num_samples=500,
                        num_warmup=300, num_chains=1, cache=False)
    design = torch.stack([torch.ones_like(year), year], 1)
    precision = design.T @ design + torch.diag(torch.tensor([1e-6, 1e-4],
                                                            dtype=torch.float64))
    covariance = torch.linalg.inv(precision)
    mean = covariance @ design.T @ y
    assert float(covariance[1, 0] / covariance.diagonal().prod().sqrt()) < -0.999
    assert float(idata.sample_stats["tree_depth"].mean()) < 3.0  # 2.1; towards I: 4.7
    for i, site in enumerate(("intercept", "slope")):
        draws = idata.posterior[site].values.ravel()
        mcse = float(az.mcse(idata, var_names=[site], method="mean")[site])
        assert abs(draws.mean() - float(mean[i])) < 4 * mcse
        assert abs(draws.std() / float(covariance[i, i].sqrt()) - 1) < 0.15


def test_the_adapted_metric_is_shrunk_towards_the_laplace_covariance() -> None:
    """Stan's regularisation with the Laplace covariance C in place of the identity, and a
    window with no more draws than dimensions (a singular estimate) keeps the metric."""
    tril = torch.tensor([[2.0, 0.0, 0.0], [1.0, 0.1, 0.0], [0.0, 0.0, 0.01]],
                        dtype=torch.float64)
    start = GaussianStart(torch.zeros(3, dtype=torch.float64), tril,
                          {"z": (0, 3, torch.Size([3]))}, "laplace")
    mass = nuts_module._ShrunkToLaplace(start)
    mass.configure({("z",): (3, 3)}, options={"dtype": torch.float64})
    initial = mass.inverse_mass_matrix[("z",)].clone()
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(12, 3, generator=gen, dtype=torch.float64) @ tril.T
    for row in draws[:3]:  # 3 draws in 3 dimensions: singular
        mass.update({"z": row}, None)
    mass.end_adaptation()
    assert torch.equal(mass.inverse_mass_matrix[("z",)], initial)
    for row in draws:
        mass.update({"z": row}, None)
    mass.end_adaptation()
    n = len(draws)
    expected = torch.cov(draws.T) * n / (n + 5) + tril @ tril.T * 1e-3 * 5 / (n + 5)
    assert torch.allclose(mass.inverse_mass_matrix[("z",)], expected, rtol=1e-10)
