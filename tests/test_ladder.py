"""The guide ladder, ``pyrovi.fit(guide="auto")``, against exact posteriors and NUTS."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
import torch

import pyrovi
from pyrovi.ladder import COLUMNS, NoTrustworthyGuideWarning, rungs
from pyrovi.models import eight_schools, linear_regression, normal_normal

DOCUMENTED = ["guide", "seconds", "grad_evals", "elbo", "elbo_se", "gain", "gain_se", "khat",
           "verdict", "basis", "verdict_without_reference", "mean_error_bound", "chosen", "why"]


def _trusted(verdict: str) -> bool:
    return verdict == "trust"


def test_rungs_follow_the_family_records() -> None:
    assert rungs() == ["mean_field", "low_rank", "full_rank", "flow"]
    assert rungs("full_rank") == ["full_rank", "flow"]


def test_normal_normal_stops_at_mean_field(tmp_path) -> None:
    """The posterior is an independent Gaussian: mean-field is exact, low-rank (the check)
    gains nothing beyond noise, and the exact posterior agrees with the verdict."""
    data = normal_normal.load_data()
    exact = normal_normal.exact_posterior(data)["mu"]
    torch.manual_seed(0)
    reference = az.from_dict(posterior={"mu": exact.sample((2, 1000)).numpy()})
    fit = pyrovi.fit(normal_normal.model, data, guide="auto", reference=reference)
    table = fit.ladder
    assert list(table.columns) == DOCUMENTED == list(COLUMNS)
    assert list(table["guide"]) == ["mean_field", "low_rank"]
    assert fit.guide_name == "mean_field" and table["chosen"].tolist() == [True, False]
    assert table["verdict"].tolist() == ["trust", "trust"]
    assert abs(table["gain"][1]) < 2 * table["gain_se"][1] + 0.01
    assert "mean_field is trusted" in fit.ladder_stop
    # the ELBO is log p(x) - KL, and KL = 0 for the exact family
    assert fit.elbo == pytest.approx(normal_normal.log_evidence(data), abs=5 * fit.elbo_se)
    # without a reference the bounds and k-hat decide, and agree
    assert table["verdict_without_reference"].tolist()[0] == "trust"
    fit.save(tmp_path / "fit.pt")
    loaded = pyrovi.load_fit(tmp_path / "fit.pt", normal_normal.model)
    assert loaded.ladder["guide"].tolist() == ["mean_field", "low_rank"]
    assert loaded.ladder_stop == fit.ladder_stop


@pytest.mark.slow
def test_regression_climbs_to_a_correlated_rung_and_every_verdict_is_right(stored_nuts
                                                                           ) -> None:
    """The badly scaled regression (correlation -0.99): mean-field cannot be trusted, the
    ladder (judging by the NUTS reference it is given) stops at low-rank or full-rank with
    "trust"; the reference-free verdict of every rung never trusts what the reference does
    not, and is "trust" or the ladder's "caution, best without a reference" on the rung
    chosen."""
    data = linear_regression.load_data()
    settings = {"num_samples": 1000, "num_warmup": 500}
    stored_nuts.install("linear_regression", linear_regression.model, data, **settings)
    reference = pyrovi.nuts(linear_regression.model, data, **settings)
    fit = pyrovi.fit(linear_regression.model, data, guide="auto", reference=reference)
    table = fit.ladder
    assert set(table["basis"]) == {"reference"}
    assert fit.guide_name in ("low_rank", "full_rank")
    assert table.loc[table["chosen"], "verdict"].item() == "trust"
    assert table["verdict"].iloc[0] != "trust"  # mean-field: sd of beta[1] 0.15 x the ref
    assert table["gain"].iloc[1] > 1.0  # low-rank gains ~1.7 nats: -log(1 - 0.99^2) / 2
    # "verdict" is the reference's (pyrovi.compare), "verdict_without_reference" the
    # bounds' and k-hat's: the second never trusts what the first does not
    for row in table.itertuples():
        assert row.verdict == "trust" or not _trusted(row.verdict_without_reference), row
    assert table["verdict_without_reference"].iloc[0] != "trust"


@pytest.mark.slow
def test_funnel_no_rung_is_trustworthy(stored_nuts) -> None:
    """Centered eight schools: every rung fails against the (non-centered) NUTS reference
    and by its k-hat alone; the ladder says so, recommends the reparameterisation or NUTS,
    and labels nothing good."""
    data = eight_schools.load_data()
    stored_nuts.install("eight_schools_noncentered", eight_schools.noncentered, data)
    reference = eight_schools.centered_draws(pyrovi.nuts(eight_schools.noncentered, data))
    with pytest.warns(NoTrustworthyGuideWarning, match="no rung is trustworthy"):
        fit = pyrovi.fit(eight_schools.centered, data, guide="auto", reference=reference)
    table = fit.ladder
    assert list(table["guide"]) == rungs()
    assert set(table["basis"]) == {"reference"}
    assert not any(_trusted(v) for v in table["verdict"])  # the reference: none is good
    assert not any(_trusted(v) for v in table["verdict_without_reference"])  # k-hat agrees
    # k-hat flags the funnel on every rung: above 0.7 on most, never at the 0.5 of a good
    # fit (k-hat from a thousand draws of a heavy tail moves by 0.1-0.3 with the fit's
    # draws: the low-rank rung read 0.99 on Pyro's ELBO and 0.63 on the compiled path)
    khat = np.asarray(table["khat"], dtype=float)
    assert np.all(khat > 0.5) and np.sum(khat > 0.7) >= 3, khat
    assert "reparameteris" in fit.ladder_stop and "NUTS" in fit.ladder_stop


def test_fit_auto_rejects_what_the_ladder_chooses() -> None:
    data = normal_normal.load_data()
    with pytest.raises(ValueError, match="chooses each rung"):
        pyrovi.fit(normal_normal.model, data, guide="auto", init="prior")
    with pytest.raises(ValueError, match="guide ladder only"):
        pyrovi.fit(normal_normal.model, data, guide="mean_field", reference=object())
    with pytest.raises(ValueError, match="pyrovi.fit"):
        pyrovi.infer.fit(normal_normal.model, data, guide="auto")
    with pytest.raises(ValueError, match="compares rungs by their ELBO"):
        pyrovi.fit(normal_normal.model, data, guide="auto", elbo="cubo")


def test_a_failing_rung_is_reported_and_the_ladder_goes_on(monkeypatch) -> None:
    """A rung whose fit fails (NonFiniteLossError) is a row that says so; the next rung
    starts from the last one that worked, and its check still decides."""
    from pyrovi.infer import svi

    real_fit = svi.fit

    def failing_low_rank(model, data, guide="mean_field", *args, **kwargs):
        if guide == "low_rank":
            raise svi.NonFiniteLossError("ELBO stayed non-finite (simulated)")
        return real_fit(model, data, guide, *args, **kwargs)

    monkeypatch.setattr(svi, "fit", failing_low_rank)
    data = normal_normal.load_data()
    fit = pyrovi.fit(normal_normal.model, data, guide="auto")
    table = fit.ladder
    assert list(table["guide"]) == ["mean_field", "low_rank", "full_rank"]
    assert "the fit failed" in table["why"][1] and table["verdict"][1] == "reject"
    assert fit.guide_name == "mean_field" and "full_rank gains only" in fit.ladder_stop
    assert [r.guide_name for r in fit.rungs] == ["mean_field", "full_rank"]
