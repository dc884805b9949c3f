"""Tests of the verdict: thresholds, and reasons that name parameters and fixes."""

import numpy as np
import pandas as pd
import pytest

from pyrovi.diagnostics import marginal_table, verdict


def _table(rows):
    """rows: parameter -> (mean_error_z, sd_ratio)."""
    table = pd.DataFrame(
        [(z, r) for z, r in rows.values()],
        index=pd.Index(list(rows), name="parameter"),
        columns=["mean_error_z", "sd_ratio"],
    )
    return table


MISSED = [{"a": "beta[0]", "b": "beta[1]", "rho_ref": -0.99, "rho_vi": 0.01}]


def test_matching_draws_are_trusted():
    rng = np.random.default_rng(0)
    ref = {f"mu[{i}]": rng.standard_normal(2000) for i in range(3)}
    vi = {name: draws[::-1].copy() for name, draws in ref.items()}  # same marginals
    level, reasons = verdict(marginal_table(vi, ref), khat=0.3, missed=[], health=None)
    assert level == "trust"
    assert len(reasons) == 1 and "within 0.2 reference sd" in reasons[0]
    assert "k-hat 0.30" in reasons[0]


def test_thresholds():
    assert verdict(_table({"a": (0.2, 0.8), "b": (-0.1, 1.25)}))[0] == "trust"
    assert verdict(_table({"a": (0.21, 1.0)}))[0] == "caution"
    assert verdict(_table({"a": (0.0, 0.79)}))[0] == "caution"
    assert verdict(_table({"a": (0.5, 2.0)}))[0] == "caution"
    assert verdict(_table({"a": (0.51, 1.0)}))[0] == "reject"
    assert verdict(_table({"a": (0.0, 0.49)}))[0] == "reject"


def test_accurate_fit_with_a_high_khat_is_trusted_and_the_disagreement_said():
    """Every mean within 0.1 sd, sd ratios in [0.9, 1.1], k-hat 0.75: a healthy reference
    decides, k-hat is reported as disagreeing."""
    table = _table({"a": (0.1, 0.9), "b": (-0.08, 1.1), "c": (0.0, 1.0)})
    level, reasons = verdict(table, khat=0.75, khat_interval=(0.64, 0.86))
    assert level == "trust"
    assert "within 0.2 reference sd" in reasons[0]
    khat_reason = next(r for r in reasons if "k-hat" in r)
    assert "0.75 (interval 0.64–0.86)" in khat_reason and "disagrees" in khat_reason
    assert "whole interval" not in khat_reason
    # the whole interval above 0.7: still trust, and the reason says what may be off
    level, reasons = verdict(table, khat=0.9, khat_interval=(0.78, 1.02))
    assert level == "trust" and any("whole interval is above 0.7" in r for r in reasons)


@pytest.mark.parametrize("khat", [None, 0.3, 0.75])
def test_never_trust_an_inaccurate_fit(khat):
    """|z| = 0.3 or an sd ratio of 0.79 is never trusted, whatever k-hat says."""
    for row in ((0.3, 1.0), (-0.3, 1.0), (0.0, 0.79), (0.0, 1.26), (0.21, 0.95)):
        level, reasons = verdict(_table({"a": row, "b": (0.0, 1.0)}), khat=khat)
        assert level == "caution", (row, reasons)
    level, reasons = verdict(_table({"a": (0.3, 1.0)}), khat=0.3)
    assert any("k-hat 0.30 <= 0.7 disagrees with the reference" in r for r in reasons)


def test_trust_exactly_at_the_thresholds_on_a_grid():
    rng = np.random.default_rng(1)
    for _ in range(200):
        z, ratio = rng.uniform(-0.6, 0.6), np.exp(rng.uniform(-0.8, 0.8))
        level, _ = verdict(_table({"a": (z, ratio)}), khat=rng.uniform(0.0, 1.2))
        assert (level == "trust") == (abs(z) <= 0.2 and 0.8 <= ratio <= 1.25)


def test_unhealthy_reference_lets_khat_count():
    health = {"problems": ["3 divergent transitions"]}
    level, reasons = verdict(_table({"a": (0.0, 1.0)}), khat=0.83, health=health)
    assert level == "caution"
    assert reasons[0].startswith("the reference is unhealthy")
    assert reasons[-1] == (
        "PSIS k-hat 0.83 > 0.7: importance weights are heavy tailed, the guide misses "
        "posterior mass"
    )


def test_without_a_reference_khat_decides():
    assert verdict(None, khat=0.4)[0] == "trust"
    level, reasons = verdict(None, khat=0.6, khat_interval=(0.5, 0.75))
    assert level == "trust" and "near the threshold" in reasons[0]
    level, reasons = verdict(None, khat=0.8)
    assert level == "caution" and "no reference" in reasons[0]
    with pytest.raises(ValueError, match="k-hat"):
        verdict(None)


def test_missed_correlation_names_the_pair_and_the_richer_family():
    table = _table({"beta[0]": (0.05, 0.9), "beta[1]": (0.1, 0.14), "sigma": (0.0, 1.0)})
    level, reasons = verdict(table, missed=MISSED, represents_correlations=False,
                             richer="low_rank", guide_name="mean_field")
    assert level == "reject"
    first = reasons[0]
    assert first.startswith("sd of beta[1] is 0.14 × the reference")
    assert "the mean_field guide cannot represent" in first
    assert "beta[0] and beta[1]" in first and "ρ = -0.99" in first
    assert first.endswith("try low_rank")
    # a hand-written diagonal guide: its own name, its family's richer rung
    _, reasons = verdict(table, missed=MISSED, represents_correlations=False,
                         richer="full_rank", guide_name="mean_field_gmm")
    assert "the mean_field_gmm guide cannot represent" in reasons[0]
    assert reasons[0].endswith("try full_rank")
    # unknown family (a custom guide): the miss explains the sd, no claim about the family
    _, reasons = verdict(table, missed=MISSED)
    assert "the guide misses the posterior correlation of beta[0] and beta[1]" in reasons[0]
    # a family with correlations: no advice to change family, the miss still reported
    _, reasons = verdict(table, missed=MISSED, represents_correlations=True, richer="flow")
    assert "overconfident" in reasons[0]
    assert any("misses the posterior correlation of beta[0] and beta[1]" in r for r in reasons)


def test_missed_correlation_with_accurate_marginals_is_a_reason_not_a_block():
    table = _table({"beta[0]": (0.05, 0.9), "beta[1]": (0.1, 0.85)})
    missed = [{"a": "beta[0]", "b": "beta[1]", "rho_ref": 0.6, "rho_vi": 0.02}]
    level, reasons = verdict(table, missed=missed, represents_correlations=False,
                             richer="low_rank", guide_name="mean_field")
    assert level == "trust"
    assert "misses the posterior correlation of beta[0] and beta[1]" in reasons[1]
    assert "combining these parameters" in reasons[1] and "try low_rank" in reasons[1]


def test_mean_error_reason():
    level, reasons = verdict(_table({"mu[0]": (0.1, 1.0), "mu[2]": (-0.8, 1.1)}))
    assert level == "reject"
    assert reasons == ["mean of mu[2] is 0.8 reference sd away from the reference"]


def test_unhealthy_reference_caps_at_caution_and_comes_first():
    health = {"problems": ["R-hat of mu[0] is 1.08 (> 1.01)", "12 divergent transitions"]}
    level, reasons = verdict(_table({"mu[0]": (0.0, 1.0)}), health=health)
    assert level == "caution"
    assert reasons[0].startswith("the reference is unhealthy")
    assert "R-hat of mu[0] is 1.08" in reasons[0] and "12 divergent" in reasons[0]
    assert "within 0.2 reference sd" in reasons[1]
    assert verdict(_table({"mu[0]": (0.0, 1.0)}), health=health, khat=0.3)[0] == "caution"
    level, reasons = verdict(_table({"mu[0]": (2.0, 1.0)}), health=health)
    assert level == "reject" and reasons[0].startswith("the reference is unhealthy")
    assert verdict(_table({"mu[0]": (0.0, 1.0)}), health={"problems": []})[0] == "trust"


def test_bad_tables():
    with pytest.raises(ValueError, match="sd_ratio"):
        verdict(pd.DataFrame({"mean_error_z": [0.0]}))
    with pytest.raises(ValueError):
        verdict(_table({}))


def _bounds(mean_high, sd_high, reliable=True):
    return {"reliable": reliable, "reason": "" if reliable else "the CUBO is not estimable",
            "mean_error_bound": mean_high - 0.01, "mean_error_bound_high": mean_high,
            "sd_error_bound": sd_high - 0.01, "sd_error_bound_high": sd_high,
            "kl_upper": 0.004}


def test_reference_free_thresholds_with_bounds():
    """Trust needs k-hat <= 0.7, an estimable CUBO, mean bound <= 0.16 and sd bound <= 0.2
    (upper values, q sd): these guarantee the reference-based trust thresholds."""
    from pyrovi.diagnostics import (
        BASIS_BOUNDS,
        BASIS_KHAT,
        BOUND_TRUST_MEAN,
        BOUND_TRUST_SD,
        verdict_basis,
    )

    assert BOUND_TRUST_SD == pytest.approx(0.2) and BOUND_TRUST_MEAN == pytest.approx(0.16)
    # the guarantee: sd ratios and mean errors in reference sd stay within trust
    assert 1 / (1 + BOUND_TRUST_SD) >= 0.8 and 1 / (1 - BOUND_TRUST_SD) <= 1.25 + 1e-12
    assert BOUND_TRUST_MEAN / (1 - BOUND_TRUST_SD) <= 0.2 + 1e-12
    level, reasons = verdict(None, khat=0.3, bounds=_bounds(0.16, 0.2))
    assert level == "trust" and "0.16" in reasons[0] and "0.2" in reasons[0]
    assert verdict(None, khat=0.3, bounds=_bounds(0.17, 0.1))[0] == "caution"
    assert verdict(None, khat=0.3, bounds=_bounds(0.1, 0.21))[0] == "caution"
    assert verdict(None, khat=0.75, bounds=_bounds(0.1, 0.1))[0] == "caution"
    level, reasons = verdict(None, khat=0.3, bounds=_bounds(0.1, 0.1, reliable=False))
    assert level == "caution" and "not estimable" in reasons[0]
    # without bounds nothing changes
    assert verdict(None, khat=0.3) == verdict(None, khat=0.3, bounds=None)
    assert verdict_basis(None, None) == BASIS_KHAT
    assert verdict_basis(None, None, bounds=_bounds(0.1, 0.1)) == BASIS_BOUNDS
