"""ModelSpec hooks: site roles of every registered model, the alignment hook, data units."""

from __future__ import annotations

import dataclasses

import arviz as az
import numpy as np
import pyro
import pytest
import torch
from pyro.poutine.util import site_is_subsample

import pyrovi
from pyrovi.models import REGISTRY, ModelSpec, gmm, gmm_full
from pyrovi.models.spec import SITE_ROLES, relabel_components

ROLES = {
    "normal_normal": {"mu": "global"},
    "beta_bernoulli": {"p": "global"},
    "linear_regression": {"beta": "global", "sigma": "global"},
    "gmm": {"weights": "component", "locs": "component", "scales": "component"},
    "gmm_lkj": {"weights": "component", "locs": "component", "scales": "component",
                "corr_chol": "component"},
    "gmm_full": {"weights": "component", "locs": "component", "precisions": "component"},
    "irt_2pl": {"a": "global", "b": "global", "theta": "local"},
    "irt_rasch": {"a": "global", "b": "global", "theta": "local"},
    "health": {"loading_diag": "global", "loading_lower": "global", "intercept": "global",
               "count_overdispersion": "global", "cutpoints": "global", "health": "local"},
    "intelligence": {"loadings": "global", "intercepts": "global", "residual_sd": "global",
                     "factor_corr_chol": "global", "scores": "local"},
    "intelligence_marginal": {"loadings": "global", "intercepts": "global",
                              "residual_sd": "global", "factor_corr_chol": "global"},
    "vae": {"z": "local"},
    "eight_schools": {"mu": "global", "tau": "global", "theta": "global"},
    "eight_schools_noncentered": {"mu": "global", "tau": "global", "theta_tilde": "global"},
}


def _latent_sites(spec: ModelSpec) -> set[str]:
    trace = pyro.poutine.trace(spec.model).get_trace(**spec.load_data())
    return {name for name, site in trace.nodes.items() if site["type"] == "sample"
            and not site["is_observed"] and not site_is_subsample(site)}


def test_the_roles_table_covers_the_registry() -> None:
    assert set(ROLES) == set(pyrovi.list_models())


@pytest.mark.parametrize("name", pyrovi.list_models())
def test_every_latent_site_has_its_role(name: str) -> None:
    spec = pyrovi.get_model(name)
    assert spec.site_roles == ROLES[name]
    assert set(spec.site_roles) == _latent_sites(spec)
    assert set(spec.site_roles.values()) <= set(SITE_ROLES)


def test_a_bad_role_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown site role"):
        dataclasses.replace(gmm.SPEC, site_roles={"locs": "cluster"})
    assert gmm.SPEC.sites_with_role("component") == ("weights", "locs", "scales")


def _fake_gmm_draws(seed: int, shift: float = 0.0, chains: int = 1) -> az.InferenceData:
    """Draws around the Old Faithful clusters in standardised units (components swapped
    in every other draw)."""
    rng = np.random.default_rng(seed)
    n = 800
    locs = np.array([[-1.25, -1.2], [0.7, 0.65]]) + shift
    locs = locs + 0.05 * rng.standard_normal((chains, n, 2, 2))
    scales = np.exp(np.log([[0.25, 0.4], [0.35, 0.45]]) + 0.05 * rng.standard_normal(
        (chains, n, 2, 2)))
    weights = np.stack([np.full((chains, n), 0.36), np.full((chains, n), 0.64)], -1)
    weights = weights + 0.02 * rng.standard_normal((chains, n, 1)) * [1, -1]
    for values in (locs, scales, weights):
        values[:, ::2] = values[:, ::2, ::-1].copy()
    return az.from_dict(posterior={"weights": weights, "locs": locs, "scales": scales})


def test_gmm_compares_in_minutes() -> None:
    """Means and sds in the data's units: eruption 1.6 - 5.1 min, waiting 43 - 96 min."""
    data = gmm.load_data("old_faithful")
    cmp = pyrovi.compare(_fake_gmm_draws(0), _fake_gmm_draws(1, chains=2), model=gmm.model,
                         data=data)
    raw = gmm.unstandardize(data["x"].numpy(), "old_faithful")
    for k in range(2):
        for d in range(2):
            name = f"locs[{k},{d}]"
            for column in ("mean_vi", "mean_ref"):
                assert raw[:, d].min() < cmp.table.loc[name, column] < raw[:, d].max(), name
            assert cmp.unit_of(name) == "min"
    eruptions = sorted(cmp.table.loc[["locs[0,0]", "locs[1,0]"], "mean_ref"])
    assert eruptions[0] == pytest.approx(2.0, abs=0.3)
    assert eruptions[1] == pytest.approx(4.3, abs=0.3)
    waits = sorted(cmp.table.loc[["locs[0,1]", "locs[1,1]"], "mean_ref"])
    assert waits[0] == pytest.approx(54.5, abs=3) and waits[1] == pytest.approx(80, abs=3)
    sd = gmm.standardization("old_faithful")[1]
    short = int(np.argmin(cmp.table.loc[["locs[0,0]", "locs[1,0]"], "mean_ref"]))
    scale = cmp.table.loc[f"scales[{short},1]", "mean_ref"]  # 0.4 sd of the waiting time
    assert scale == pytest.approx(0.4 * sd[1], rel=0.05) and cmp.unit_of("scales[0,1]") == "min"
    assert cmp.unit_of("weights[0]") == "probability"
    assert cmp.summary["parameter_units"].startswith("data units of old_faithful")
    assert "permutation" in cmp.labels["relabelling"]
    # standardised errors do not depend on the units
    assert cmp.summary["verdict"] == "trust", cmp.reasons
    posterior = cmp.vi.posterior["locs"].values
    assert raw[:, 1].min() < posterior[..., 1].mean() < raw[:, 1].max()


def test_to_data_units_is_unstandardize_and_leaves_other_data_alone() -> None:
    data = gmm.load_data("iris")
    draws = {"locs": np.zeros((5, 3, 4)), "scales": np.ones((5, 3, 4)),
             "weights": np.full((5, 3), 1 / 3)}
    out = gmm.SPEC.to_data_units(draws, data)
    mean, sd = gmm.standardization("iris")
    np.testing.assert_allclose(out["locs"], np.broadcast_to(mean, (5, 3, 4)))
    np.testing.assert_allclose(out["scales"], np.broadcast_to(sd, (5, 3, 4)))
    np.testing.assert_array_equal(out["weights"], draws["weights"])
    assert gmm.SPEC.units(data).unit("locs", (0, 2)) == "cm"
    simulated, _ = gmm.simulate(seed=0)
    assert gmm.SPEC.units(simulated) is None
    assert gmm.SPEC.to_data_units(draws, simulated) is draws
    assert gmm.bundled_dataset({"x": data["x"].double()}) == "iris"
    assert gmm.bundled_dataset({"x": data["x"] + 0.01}) is None
    assert REGISTRY["normal_normal"].units(REGISTRY["normal_normal"].load_data()) is None


def test_precisions_convert_as_inverse_covariances() -> None:
    """Sigma_data = D Sigma D for D = diag(sd), so precision_data = D^-1 P D^-1."""
    data = gmm_full.load_data()
    _, sd = gmm.standardization("old_faithful")
    cov = np.array([[1.0, 0.6], [0.6, 2.0]])
    out = gmm_full.SPEC.to_data_units({"precisions": np.linalg.inv(cov)[None, None]}, data)
    np.testing.assert_allclose(np.linalg.inv(out["precisions"][0, 0]),
                               np.diag(sd) @ cov @ np.diag(sd))
    assert gmm_full.SPEC.units(data).unit("precisions", (0, 0, 1)) == "1/min²"


def test_compare_routes_alignment_and_mixture_sites_through_the_hook(monkeypatch) -> None:
    calls = []

    def spy(vi, ref, roles):
        calls.append(dict(roles))
        return relabel_components(vi, ref, roles)

    monkeypatch.setitem(REGISTRY, "gmm", dataclasses.replace(gmm.SPEC, aligner=spy))
    vi, ref = _fake_gmm_draws(0), _fake_gmm_draws(1)
    data = gmm.load_data()
    pyrovi.compare(vi, ref, model=gmm.model, data=data)
    assert calls[-1] == ROLES["gmm"]
    cmp = pyrovi.compare(vi, ref, model=gmm.model, data=data, mixture_sites=("locs",))
    assert calls[-1] == {"locs": "component"}
    assert "locs" in cmp.labels["relabelling"]
    # an unregistered model: mixture_sites alone, through the same default alignment
    other = pyrovi.compare(vi, ref, mixture_sites=("weights", "locs", "scales"))
    assert "permutation" in other.labels["relabelling"] and not other.units
    assert other.summary["parameter_units"] == "model units"


def test_hand_written_guides_are_family_records() -> None:
    from pyrovi.guides import get_family

    family = get_family("mean_field_gmm")
    assert family.represents_correlations is False and family.richer == "full_rank"
    assert gmm.SPEC.guides["mean_field_gmm"](gmm.model) is gmm.mean_field_guide
    assert get_family("beta").represents_correlations is True
    assert get_family("cavi_family").build(gmm_full.model) is gmm_full.cavi_guide
    assert torch.is_tensor(gmm.load_data()["x"])
