"""pyrovi.compare end to end: the verdict is right, and for the right reason."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import arviz as az
import numpy as np
import pytest

import pyrovi
from pyrovi.models import linear_regression, normal_normal

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def regression_reference(stored_nuts) -> az.InferenceData:
    data = linear_regression.load_data()
    stored_nuts.install("linear_regression", linear_regression.model, data,
                          num_samples=1000, num_warmup=500)
    return pyrovi.nuts(linear_regression.model, data, num_samples=1000, num_warmup=500)


def _user_model():
    spec = importlib.util.spec_from_file_location("user_model", HERE / "user_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.model


@pytest.mark.slow
def test_mean_field_is_flagged_for_the_missed_correlation(regression_reference) -> None:
    data = linear_regression.load_data()
    fit = pyrovi.fit(linear_regression.model, data, guide="mean_field")
    cmp = pyrovi.compare(fit, regression_reference)
    assert cmp.summary["verdict"] != "trust"
    reason = next(r for r in cmp.reasons if "correlation" in r)
    assert "beta[0]" in reason and "beta[1]" in reason
    assert "the mean_field guide cannot represent" in reason and "try low_rank" in reason
    # mean field on a Gaussian with correlation rho has sd ratio sqrt(1 - rho^2) ~ 0.15
    assert cmp.table.loc["beta[1]", "sd_ratio"] < 0.3
    assert cmp.summary["khat"] > 0.7
    assert cmp.summary["kl_gap"] > 0.3  # the missed correlation costs KL


@pytest.mark.slow
def test_full_rank_is_trusted(regression_reference) -> None:
    data = linear_regression.load_data()
    fit = pyrovi.fit(linear_regression.model, data, guide="full_rank")
    cmp = pyrovi.compare(fit, regression_reference)
    assert cmp.summary["verdict"] == "trust", cmp.reasons
    assert cmp.summary["log_evidence_method"].startswith("iwae")
    # full rank is nearly exact here: the KL gap is close to zero
    assert cmp.summary["kl_gap_low"] < 0.05


def test_exact_model_uses_the_closed_form_evidence() -> None:
    data = normal_normal.load_data()
    fit = pyrovi.fit(normal_normal.model, data, guide="mean_field")
    ref = pyrovi.nuts(normal_normal.model, data, num_samples=1000, num_warmup=500)
    cmp = pyrovi.compare(fit, ref)
    assert cmp.summary["log_evidence_method"] == "exact"
    assert cmp.summary["log_evidence"] == pytest.approx(normal_normal.log_evidence(data))
    assert cmp.summary["kl_gap"] < 0.01
    assert cmp.summary["verdict"] == "trust"
    assert list(cmp.table.columns) == ["mean_vi", "mean_ref", "sd_vi", "sd_ref",
                                       "mean_error_z", "sd_ratio", "w1_std"]
    assert list(cmp.table.index) == [f"mu[{i}]" for i in range(8)]


@pytest.mark.slow
def test_user_model_end_to_end_through_the_api(tmp_path, stored_nuts) -> None:
    model = _user_model()
    data = linear_regression.load_data()
    stored_nuts.install("user_model_regression", model, data, num_samples=800,
                          num_warmup=400)
    ref = pyrovi.nuts(model, data, num_samples=800, num_warmup=400)
    fit = pyrovi.fit(model, data, guide="full_rank")
    cmp = pyrovi.compare(fit, ref)
    assert cmp.summary["verdict"] == "trust", cmp.reasons
    written = cmp.write(tmp_path / "report")
    summary = json.loads(written["json"].read_text())
    assert summary["verdict"] == "trust"
    assert {row["parameter"] for row in summary["table"]} == {"b[0]", "b[1]", "s"}


def test_inference_data_against_a_loaded_reference(tmp_path) -> None:
    """VI draws given as InferenceData; the reference read back from posteriordb JSON."""
    rng = np.random.default_rng(0)
    ref_draws = rng.normal([1.0, -2.0], [1.0, 0.5], size=(2, 500, 2))
    chains = [{"theta[1]": list(c[:, 0]), "theta[2]": list(c[:, 1])} for c in ref_draws]
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(chains))
    ref = pyrovi.load_reference(path)
    vi = az.from_dict(posterior={"theta": rng.normal([1.0, -2.0], [1.0, 0.5],
                                                     size=(1, 1000, 2))})
    cmp = pyrovi.compare(vi, ref)
    assert list(cmp.table.index) == ["theta[0]", "theta[1]"]
    assert cmp.summary["verdict"] == "trust"
    assert cmp.summary["khat"] is None and np.isnan(cmp.summary["elbo"])


@pytest.fixture(scope="module")
def exact_reference() -> az.InferenceData:
    """Exact posterior draws of normal_normal on eight schools: a healthy reference."""
    import torch

    torch.manual_seed(0)
    post = normal_normal.exact_posterior(normal_normal.load_data())["mu"]
    return az.from_dict(posterior={"mu": post.sample((2, 2000)).double().numpy()})


def test_accurate_fit_with_a_khat_of_075_is_trusted(exact_reference, monkeypatch) -> None:
    """The over-caution defect: an accurate fit whose k-hat lands at 0.75 is trusted when a
    healthy reference shows it accurate, and the reasons say k-hat disagrees."""
    from pyrovi import diagnostics as dg

    data = normal_normal.load_data()
    fit = pyrovi.fit(normal_normal.model, data, guide="mean_field", num_steps=1000)
    monkeypatch.setattr(dg, "psis_khat", lambda log_w: 0.75)
    monkeypatch.setattr(dg, "psis_khat_interval", lambda log_w, seed=0: (0.66, 0.85))
    cmp = pyrovi.compare(fit, exact_reference)
    assert cmp.summary["max_abs_mean_error_z"] <= 0.1, cmp.table
    assert 0.9 <= cmp.table["sd_ratio"].min() and cmp.table["sd_ratio"].max() <= 1.1
    assert cmp.summary["verdict"] == "trust", cmp.reasons
    assert cmp.summary["verdict_basis"] == "reference"
    assert cmp.summary["khat"] == 0.75
    assert (cmp.summary["khat_low"], cmp.summary["khat_high"]) == (0.66, 0.85)
    assert any("k-hat 0.75" in r and "disagrees with the reference" in r for r in cmp.reasons)


def test_a_mean_error_of_03_sd_is_never_trusted(exact_reference) -> None:
    post = exact_reference.posterior["mu"].values
    vi = post.reshape(1, -1, 8).copy()  # the reference itself, one mean moved by 0.3 sd
    vi[..., 3] += 0.3 * post[..., 3].std(ddof=1)
    cmp = pyrovi.compare(az.from_dict(posterior={"mu": vi}), exact_reference)
    assert cmp.summary["max_abs_mean_error_z"] == pytest.approx(0.3, abs=1e-9)
    assert cmp.summary["verdict"] == "caution"
    assert "mean of mu[3] is 0.3 reference sd away" in cmp.reasons[0]


def test_no_common_parameters_is_an_error() -> None:
    ref = az.from_dict(posterior={"alpha": np.zeros((1, 10))})
    vi = az.from_dict(posterior={"beta": np.zeros((1, 10))})
    with pytest.raises(ValueError, match="no parameters in common"):
        pyrovi.compare(vi, ref)
