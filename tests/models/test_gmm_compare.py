"""Mixtures end to end: recovery of simulated truth, relabelling in compare, the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
import xarray as xr

import pyrovi
from pyrovi.diagnostics import relabel
from pyrovi.infer import em
from pyrovi.models import gmm, gmm_full


@pytest.mark.parametrize("guide", ["mean_field", "full_rank"])
def test_vi_recovers_simulated_truth_within_posterior_uncertainty(guide: str) -> None:
    data, truth = gmm.simulate(seed=1, N=400, K=3, D=2)
    fit = pyrovi.fit(gmm.model, data, guide=guide, seed=0)
    idata, _ = relabel(fit.posterior(2000), ("weights", "locs", "scales"),
                       pivot=truth["locs"].numpy())
    for site in ("weights", "locs"):
        draws = idata.posterior[site].values.reshape(2000, -1)
        z = (draws.mean(0) - truth[site].numpy().reshape(-1)) / draws.std(0)
        # 3 posterior sd per element (K + K*D = 9 comparisons)
        assert np.all(np.abs(z) < 3), (site, z)


def test_label_switched_reference_is_realigned() -> None:
    data = gmm.load_data()
    fit = pyrovi.fit(gmm.model, data, guide="mean_field", num_steps=300)
    ref = fit.posterior(1000, seed=1)
    post = ref.posterior
    for site in ("weights", "locs", "scales"):  # swap the labels of every other draw
        values = post[site].values.copy()
        values[:, ::2] = values[:, ::2, ::-1]
        post[site] = (post[site].dims, values)
    cmp = pyrovi.compare(fit, ref)
    assert "permutation" in cmp.labels["relabelling"]
    assert cmp.summary["max_abs_mean_error_z"] < 0.2
    assert cmp.summary["verdict"] == "trust", cmp.reasons


def test_chains_in_different_modes_are_reported_not_averaged() -> None:
    data = gmm.load_data()
    fit = pyrovi.fit(gmm.model, data, guide="mean_field", num_steps=300)
    ref = fit.posterior(500, seed=1)
    second = fit.posterior(500, seed=2).posterior
    second["locs"] = (second["locs"].dims, second["locs"].values + 3.0)  # another mode
    ref.posterior = xr.concat([fit.posterior(500, seed=1).posterior,
                               second.assign_coords(chain=[1])], dim="chain")
    cmp = pyrovi.compare(fit, ref)
    assert cmp.summary["verdict"] != "trust"
    assert "different modes" in cmp.reasons[0] or "different modes" in " ".join(
        cmp.summary["reference_problems"])


@pytest.mark.slow
def test_cli_compare_gmm_reports_the_relabelling(tmp_path: Path, stored_nuts) -> None:
    # the CLI's NUTS run (2 chains, seed 0 by default) reads the stored run from the cache
    # folder this process hands down ($PYROVI_CACHE_DIR, tests/conftest.py)
    stored_nuts.install("gmm_cli", gmm.model, gmm.load_data(), num_samples=300,
                          num_warmup=300, num_chains=2, seed=0)
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    result = subprocess.run(
        [sys.executable, "-m", "pyrovi.cli", "compare", "gmm", "--guide", "full_rank",
         "--num-samples", "300", "--num-warmup", "300", "--out", str(tmp_path / "r")],
        capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "comparison.json").read_text())
    assert "permutation" in report["labels"]["relabelling"]
    assert "relabel" in (tmp_path / "r" / "report.html").read_text().lower()


def test_autoguide_svi_reaches_the_cavi_elbo_on_old_faithful() -> None:
    """The MAP start restarts past the label-symmetric saddle; SVI then matches CAVI.

    Marginalising the assignments can only tighten the bound, and the full-rank Gaussian
    (in the unconstrained space) is close to CAVI's Dirichlet x Normal-Wishart family, so
    the SVI ELBO must reach CAVI's within Monte Carlo error.
    """
    data = gmm_full.load_data()
    cavi = em.cavi_gmm(data["x"].double().numpy(), data["K"], seed=0)
    fit = pyrovi.fit(gmm_full.model, data, guide="full_rank")
    assert fit.converged
    assert fit.elbo >= cavi.elbo - 3 * fit.elbo_se - 0.05, (fit.elbo, cavi.elbo)


def test_lkj_variant_with_identity_correlation_is_the_diagonal_model() -> None:
    data, truth = gmm.simulate(seed=2, N=50, K=3, D=2)
    eye = torch.eye(2).expand(3, 2, 2)
    values = {**truth, "corr_chol": eye}
    full = pyro.poutine.trace(pyro.poutine.condition(gmm.model_lkj, values)).get_trace(**data)
    diag = pyro.poutine.trace(pyro.poutine.condition(gmm.model, truth)).get_trace(**data)
    full.compute_log_prob()
    diag.compute_log_prob()
    assert torch.allclose(full.nodes["x"]["log_prob_sum"], diag.nodes["x"]["log_prob_sum"])


@pytest.mark.slow
def test_lkj_variant_full_rank_against_nuts(stored_nuts) -> None:
    data = gmm.load_data()
    stored_nuts.install("gmm_lkj", gmm.model_lkj, data, num_samples=500, num_warmup=500)
    ref = pyrovi.nuts(gmm.model_lkj, data, num_samples=500, num_warmup=500)
    fit = pyrovi.fit(gmm.model_lkj, data, guide="full_rank")
    cmp = pyrovi.compare(fit, ref)
    assert cmp.labels["model"] == "gmm_lkj" and "permutation" in cmp.labels["relabelling"]
    assert cmp.summary["max_abs_mean_error_z"] < 0.3
    assert 0.8 < cmp.summary["worst_sd_ratio"] < 1.25
    # the fixed entries of a correlation Cholesky factor (1 and 0) have no spread
    assert np.isnan(cmp.table.loc["corr_chol[0,0,0]", "mean_error_z"])
