"""pyrovi.nuts: exact posteriors recovered within Monte Carlo error, stats, warnings, cache."""

from __future__ import annotations

import importlib
import warnings

import arviz as az
import numpy as np
import pytest

import pyrovi
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
        monkeypatch.setattr(nuts_module, "_run_chain",
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
