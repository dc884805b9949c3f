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
    level, reasons = verdict(_table({"a": (0.0, 1.0)}), khat=0.83)
    assert level == "caution"
    assert reasons == [
        "PSIS k-hat 0.83 > 0.7: importance weights are heavy tailed, the guide misses "
        "posterior mass"
    ]


def test_missed_correlation_names_the_pair_and_full_rank():
    table = _table({"beta[0]": (0.05, 0.9), "beta[1]": (0.1, 0.14), "sigma": (0.0, 1.0)})
    for guide_name in ("mean_field", None):
        level, reasons = verdict(table, missed=MISSED, guide_name=guide_name)
        assert level == "reject"
        first = reasons[0]
        assert first.startswith("sd of beta[1] is 0.14 × the reference")
        assert "beta[0] and beta[1]" in first and "ρ = -0.99" in first
        assert "full_rank" in first
    _, reasons = verdict(table, missed=MISSED, guide_name="mean_field")
    assert "the mean_field guide cannot represent" in reasons[0]
    # a full-rank guide is not diagonal: no full_rank advice, but the miss is reported
    _, reasons = verdict(table, missed=MISSED, guide_name="full_rank")
    assert "overconfident" in reasons[0]
    assert any("misses the posterior correlation of beta[0] and beta[1]" in r for r in reasons)


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
    level, reasons = verdict(_table({"mu[0]": (2.0, 1.0)}), health=health)
    assert level == "reject" and reasons[0].startswith("the reference is unhealthy")
    assert verdict(_table({"mu[0]": (0.0, 1.0)}), health={"problems": []})[0] == "trust"


def test_bad_tables():
    with pytest.raises(ValueError, match="sd_ratio"):
        verdict(pd.DataFrame({"mean_error_z": [0.0]}))
    with pytest.raises(ValueError):
        verdict(_table({}))
