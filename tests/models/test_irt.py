"""The IRT models (2PL and Rasch): data, likelihood, scores, tables and fit checked against
independent computations (scipy quadrature and optimisation) and cached NUTS references
(``tests/fixtures/latent/make_irt.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from scipy import integrate, optimize, special, stats

import pyrovi
from pyrovi.models import irt

FIXTURES = Path(__file__).parents[1] / "fixtures" / "latent"
ITEMS = ("item1", "item2", "item3", "item4", "item5")


@pytest.fixture(scope="module")
def nuts_ref() -> az.InferenceData:
    return pyrovi.load_reference(FIXTURES / "irt_lsat6_nuts.nc")


@pytest.fixture(scope="module")
def marginal_ref() -> az.InferenceData:
    return pyrovi.load_reference(FIXTURES / "irt_lsat6_marginal_nuts.nc")


def _idata(a: np.ndarray, b: np.ndarray, draws: int = 2) -> az.InferenceData:
    """Posterior 'draws' that are all the same item parameters."""
    return az.from_dict(posterior={"a": np.tile(a, (1, draws, 1)), "b": np.tile(b, (1, draws, 1))})


def _mml(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Marginal maximum likelihood of the 2PL (theta ~ N(0, 1) integrated by 61-node
    Gauss-Hermite quadrature), in the slope-intercept form a theta + c, by BFGS."""
    t, w = np.polynomial.hermite.hermgauss(61)
    x, log_w = np.sqrt(2.0) * t, np.log(w / np.sqrt(np.pi))
    patterns, counts = np.unique(y, axis=0, return_counts=True)
    J = y.shape[1]

    def nll(p: np.ndarray) -> float:
        z = p[:J] * x[:, None] + p[J:]
        ll = patterns @ special.log_expit(z).T + (1 - patterns) @ special.log_expit(-z).T
        return -float(counts @ special.logsumexp(ll + log_w, axis=1))

    start = np.r_[np.ones(J), special.logit(y.mean(0))]
    res = optimize.minimize(nll, start, method="BFGS", options={"gtol": 1e-5})
    assert np.abs(res.jac).max() < 1e-3  # at the maximum
    a, c = res.x[:J], res.x[J:]
    return a, -c / a


# ----------------------------------------------------------------------------- data


def test_bundled_lsat_tables_have_the_published_margins() -> None:
    """Bock & Lieberman (1970): 1000 examinees each; proportions right per item."""
    expected = {"lsat6": [0.924, 0.709, 0.553, 0.763, 0.870],
                "lsat7": [0.828, 0.658, 0.772, 0.606, 0.843]}
    for name, props in expected.items():
        data = irt.load_data(name)
        assert data["y"].shape == (1000, 5) and bool(data["mask"].all())
        np.testing.assert_allclose(data["y"].mean(0).numpy(), props, atol=5e-7)
        table = irt.pattern_table(name)
        assert len(table) == 32 and table["count"].sum() == 1000
        assert tuple(table.columns[:5]) == ITEMS
    assert irt.pattern_table()["count"].iloc[-1] == 298  # all five right, section 6
    assert irt.pattern_table("lsat7")["count"].iloc[0] == 12  # all five wrong, section 7
    with pytest.raises(ValueError, match="no bundled data set"):
        irt.load_data("lsat8")


def test_responses_with_nan_become_answers_and_a_mask() -> None:
    frame = pd.DataFrame({"q1": [1.0, np.nan, 0.0], "q2": [0.0, 1.0, None]})
    y, mask = irt.responses_and_mask(frame)
    assert y.tolist() == [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]
    assert mask.tolist() == [[True, True], [False, True], [True, False]]
    assert y.dtype == torch.float32 and mask.dtype == torch.bool
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        irt.responses_and_mask([[0.0, 2.0]])
    with pytest.raises(ValueError, match="two-dimensional"):
        irt.responses_and_mask([0.0, 1.0])


def test_bad_input_is_refused_in_one_line() -> None:
    y = torch.zeros(4, 3)
    with pytest.raises(ValueError, match="mask has shape"):
        irt.model(y, mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="0 or 1 where observed"):
        irt.model(y + 2 * torch.eye(4, 3))
    with pytest.raises(ValueError, match="2-D"):
        irt.model_rasch(torch.zeros(4))
    # a masked entry may hold anything: it is not an answer
    mask = torch.ones(4, 3, dtype=torch.bool)
    mask[0, 0] = False
    irt.model(y + 2 * torch.eye(4, 3) * ~mask, mask=mask)


def test_masked_answers_do_not_enter_the_likelihood() -> None:
    """log p(y | a, b, theta) summed over the observed answers only, by hand."""
    data, truth = irt.simulate(seed=1, N=30, J=4, missing=0.2)
    assert 0.1 < 1 - data["mask"].float().mean() < 0.3
    conditioned = pyro.condition(irt.model, data={k: v.double() for k, v in truth.items()})
    args = {"y": data["y"].double(), "mask": data["mask"]}
    trace = pyro.poutine.trace(conditioned).get_trace(**args)
    a, b, theta = (truth[k].double().numpy() for k in ("a", "b", "theta"))
    p = special.expit(a * (theta[:, None] - b))
    y, m = args["y"].numpy(), data["mask"].numpy()
    expected = (m * stats.bernoulli(p).logpmf(y)).sum()
    assert float(trace.nodes["y"]["fn"].log_prob(trace.nodes["y"]["value"]).sum()) == \
        pytest.approx(expected, rel=1e-10)
    # changing a masked answer changes nothing
    flipped = args["y"].clone()
    flipped[~data["mask"]] = 1.0
    again = pyro.poutine.trace(conditioned).get_trace(y=flipped, mask=data["mask"])
    assert float(again.log_prob_sum()) == pytest.approx(float(trace.log_prob_sum()), rel=1e-12)


def test_simulate_draws_rasch_with_one_discrimination() -> None:
    data, truth = irt.simulate_rasch(seed=2, N=50, J=6)
    assert truth["a"].shape == () and truth["b"].shape == (6,)
    trace = pyro.poutine.trace(irt.model_rasch).get_trace(**data)
    assert trace.nodes["a"]["value"].shape == ()
    with pytest.raises(ValueError, match="missing must lie"):
        irt.simulate(missing=1.0)


def test_marginal_model_integrates_theta_as_scipy_quad() -> None:
    """pyro.factor of the marginal model = log of the integral over theta, by adaptive quad."""
    data, _ = irt.simulate(seed=3, N=6, J=5, missing=0.1)
    a = np.array([0.6, 1.4, 2.0, 0.9, 1.1])
    b = np.array([-1.5, -0.3, 0.2, 0.9, 2.2])
    conditioned = pyro.condition(irt.marginal_model,
                                 data={"a": torch.tensor(a), "b": torch.tensor(b)})
    trace = pyro.poutine.trace(conditioned).get_trace(y=data["y"].double(), mask=data["mask"])
    factor = trace.nodes["y"]["fn"].log_prob(trace.nodes["y"]["value"]).numpy()
    y, m = data["y"].double().numpy(), data["mask"].numpy()
    for i in range(6):
        def lik(t: float, i: int = i) -> float:
            p = special.expit(a * (t - b))
            return float(np.prod(np.where(m[i], p**y[i] * (1 - p) ** (1 - y[i]), 1.0))
                         * stats.norm.pdf(t))

        value, _ = integrate.quad(lik, -10, 10, epsabs=1e-13, limit=200)
        assert factor[i] == pytest.approx(math.log(value), abs=1e-6)  # 41 nodes


# ----------------------------------------------------------------------------- scores


def test_quadrature_scores_are_the_exact_posterior_of_theta() -> None:
    """Given the items, p(theta | y_i) by scipy quad: mean, sd, 5% and 95% quantiles."""
    a = np.array([0.5, 1.2, 2.5, 0.8])
    b = np.array([-2.0, -0.5, 0.4, 1.5])
    y = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0], [1, 0, 1, 0], [1, 1, 0, 0], [1, 0, 0, 1]],
                     dtype=torch.float64)
    mask = torch.ones_like(y, dtype=torch.bool)
    mask[3, 2] = mask[4, 0] = False
    table = irt.score(_idata(a, b), {"y": y, "mask": mask})
    assert list(table.columns) == ["mean", "sd", "lower", "upper"] and len(table) == 5
    for i in range(5):
        obs = mask[i].numpy()

        def post(t: float, i: int = i, obs: np.ndarray = obs) -> float:
            p = special.expit(a * (t - b))
            yi = y[i].numpy()
            return float(np.prod(np.where(obs, p**yi * (1 - p) ** (1 - yi), 1.0))
                         * stats.norm.pdf(t))

        def moment(f, post=post) -> float:  # noqa: ANN001
            return integrate.quad(lambda t: f(t) * post(t), -12, 12, epsabs=1e-14)[0]

        z = moment(lambda t: 1.0)
        mean = moment(lambda t: t) / z
        var = moment(lambda t: t * t) / z - mean**2

        def tail(q: float, p: float, post=post, z=z) -> float:  # noqa: ANN001
            return integrate.quad(post, -12, q, epsabs=1e-14)[0] / z - p

        lo = optimize.brentq(tail, -8, 8, args=(0.05,))
        hi = optimize.brentq(tail, -8, 8, args=(0.95,))
        row = table.iloc[i]
        assert row["mean"] == pytest.approx(mean, abs=2e-3)
        assert row["sd"] == pytest.approx(math.sqrt(var), abs=2e-3)
        assert row["lower"] == pytest.approx(lo, abs=5e-3)
        assert row["upper"] == pytest.approx(hi, abs=5e-3)


def test_quadrature_scores_mix_over_item_draws() -> None:
    """Two item draws: the score posterior is the equal mixture of the two posteriors."""
    y = {"y": torch.tensor([[1.0, 0.0, 1.0]])}
    a1, a2 = np.array([1.0, 1.0, 1.0]), np.array([2.0, 2.0, 2.0])
    b = np.zeros(3)
    one = irt.score(_idata(a1, b), y).iloc[0]
    two = irt.score(_idata(a2, b), y).iloc[0]
    both = az.from_dict(posterior={"a": np.stack([a1, a2])[None], "b": np.stack([b, b])[None]})
    mixed = irt.score(both, y).iloc[0]
    assert mixed["mean"] == pytest.approx((one["mean"] + two["mean"]) / 2, abs=1e-3)
    second_moment = (one["sd"] ** 2 + one["mean"] ** 2 + two["sd"] ** 2 + two["mean"] ** 2) / 2
    assert mixed["sd"] == pytest.approx(math.sqrt(second_moment - mixed["mean"] ** 2), abs=2e-3)
    with pytest.raises(ValueError, match="unknown method"):
        irt.score(both, y, method="eap")
    with pytest.raises(ValueError, match="amortized guide"):
        irt.score(both, y, method="encoder")
    with pytest.raises(ValueError, match="items"):
        irt.score(both, {"y": torch.zeros(2, 4)})


# ----------------------------------------------------------------------------- LSAT


def test_lsat6_nuts_posterior_agrees_with_marginal_ml(nuts_ref, marginal_ref) -> None:
    """Posterior means of a and b within one posterior sd of the MML estimates (which are
    ltm's: a = 0.83 0.72 0.89 0.69 0.66, b = -3.36 -1.37 -0.28 -1.87 -3.13); the full model
    (1000 abilities sampled) and the marginal one (abilities integrated) agree."""
    a_ml, b_ml = _mml(irt.load_data("lsat6")["y"].double().numpy())
    np.testing.assert_allclose(a_ml, [0.826, 0.723, 0.891, 0.688, 0.657], atol=2e-3)
    np.testing.assert_allclose(b_ml, [-3.359, -1.370, -0.280, -1.866, -3.126], atol=2e-3)
    for ref in (nuts_ref, marginal_ref):
        for site, ml in (("a", a_ml), ("b", b_ml)):
            draws = ref.posterior[site].values.reshape(-1, 5)
            z = (draws.mean(0) - ml) / draws.std(0)
            assert np.all(np.abs(z) < 1.0), (site, z)
    for site in ("a", "b"):
        full = nuts_ref.posterior[site].values.reshape(-1, 5)
        marginal = marginal_ref.posterior[site].values.reshape(-1, 5)
        se = np.sqrt(full.var(0) / 150 + marginal.var(0) / 150)  # ESS about 300 each
        assert np.all(np.abs(full.mean(0) - marginal.mean(0)) < 4 * se), site
        np.testing.assert_allclose(full.std(0), marginal.std(0), rtol=0.2)


def test_parameter_table_is_long_form_with_standardised_loadings(nuts_ref) -> None:
    table = irt.parameter_table(nuts_ref, items=ITEMS)
    assert list(table.columns) == ["lhs", "op", "rhs", "est", "sd", "lower", "upper",
                                   "std_all"]
    assert list(table["lhs"]) == [i for i in ITEMS for _ in range(2)]
    assert list(table["op"]) == ["a", "b"] * 5 and set(table["rhs"]) == {"theta"}
    a = nuts_ref.posterior["a"].values.reshape(-1, 5).astype(float)
    b = nuts_ref.posterior["b"].values.reshape(-1, 5).astype(float)
    rows_a, rows_b = table[table["op"] == "a"], table[table["op"] == "b"]
    np.testing.assert_allclose(rows_a["est"], a.mean(0))
    np.testing.assert_allclose(rows_b["sd"], b.std(0, ddof=1))
    np.testing.assert_allclose(rows_a["upper"], np.quantile(a, 0.95, axis=0))
    loading = a / np.sqrt(a**2 + np.pi**2 / 3)
    np.testing.assert_allclose(rows_a["std_all"], loading.mean(0))
    np.testing.assert_allclose(rows_b["std_all"], (loading * b).mean(0))
    assert (rows_a["std_all"].between(0.3, 0.5)).all()  # weak items: loadings about 0.4
    with pytest.raises(ValueError, match="item names"):
        irt.parameter_table(nuts_ref, items=ITEMS[:3])
    rasch = az.from_dict(posterior={"a": np.full((1, 4), 0.75), "b": np.zeros((1, 4, 3))})
    shared = irt.parameter_table(rasch)
    assert (shared.loc[shared["op"] == "a", "est"] == 0.75).all()


def test_g2_ppp_accepts_lsat6_and_rejects_the_wrong_data(nuts_ref) -> None:
    """The 2PL fits section 6 (ML G² = 21.8 on 21 df); section 7's table under section 6's
    item parameters is far off."""
    good = irt.fit_indices(nuts_ref, irt.load_data("lsat6"))
    assert good["num_patterns"] == 32 and good["num_observed_patterns"] == 30
    assert good["num_people"] == 1000 and good["num_draws"] == 400
    assert 0.1 < good["ppp"] < 0.9
    assert 20 < good["g2"] < 40
    bad = irt.fit_indices(nuts_ref, irt.load_data("lsat7"))
    assert bad["ppp"] == 0.0 and bad["g2"] > 200
    mask = torch.ones(3, 20, dtype=torch.bool)
    with pytest.raises(ValueError, match="exceeds"):
        irt.fit_indices(nuts_ref, {"y": torch.zeros(3, 20), "mask": mask})


def test_pattern_probabilities_sum_to_one_and_match_independence() -> None:
    """With a -> 0 the answers are independent: P(pattern) = prod of item marginals."""
    a = np.full((1, 4), 1e-6)
    b = np.array([[-1.0, 0.0, 0.5, 2.0]]) * 1e6  # a b stays finite: p_j = expit(-a b)
    p = irt.pattern_probabilities(a, b)
    assert p.shape == (1, 16) and p.sum() == pytest.approx(1.0, abs=1e-12)
    q = special.expit(-a[0] * b[0])
    code = 0b1010  # items 1 and 3 right
    assert p[0, code] == pytest.approx(q[0] * (1 - q[1]) * q[2] * (1 - q[3]), rel=1e-6)


def test_compare_cuts_theta_to_the_reference_people(nuts_ref) -> None:
    """The fixture keeps one person per pattern; compare() aligns a fit's 1000 abilities."""
    persons = nuts_ref.constant_data["theta_person"].values
    theta = nuts_ref.posterior["theta"].values.reshape(-1, len(persons))
    full = np.zeros((1, theta.shape[0], 1000))
    full[0][:, persons] = theta  # the reference's own draws as a 1000-person "fit"
    vi = az.from_dict(posterior={"a": nuts_ref.posterior["a"].values.reshape(1, -1, 5),
                                 "b": nuts_ref.posterior["b"].values.reshape(1, -1, 5),
                                 "theta": full})
    cmp = pyrovi.compare(vi, nuts_ref, model=irt.model, data=irt.load_data())
    names = set(cmp.table.index)
    assert {f"theta[{k}]" for k in range(len(persons))} <= names and "theta[30]" not in names
    np.testing.assert_allclose(cmp.table.loc["theta[0]", "mean_vi"],
                               cmp.table.loc["theta[0]", "mean_ref"])
    assert cmp.table["mean_error_z"].abs().max() < 1e-9


# ----------------------------------------------------------------------------- slow


@pytest.mark.slow
def test_simulated_items_are_recovered_and_theta_intervals_cover() -> None:
    """N = 2000, J = 10: the Laplace approximation of the marginal model (abilities
    integrated out) recovers a and b; the quadrature scores' 90% intervals cover the true
    abilities 85-95% of the time (binomial sd at 90%: 0.7 points)."""
    data, truth = irt.simulate(seed=0, N=2000, J=10)
    fit = pyrovi.fit(irt.marginal_model, data, guide="laplace")
    table = irt.parameter_table(fit)
    a = table.loc[table["op"] == "a", "est"].to_numpy()
    b = table.loc[table["op"] == "b", "est"].to_numpy()
    assert np.corrcoef(a, truth["a"].numpy())[0, 1] > 0.95
    assert np.corrcoef(b, truth["b"].numpy())[0, 1] > 0.95
    z_a = (a - truth["a"].numpy()) / table.loc[table["op"] == "a", "sd"].to_numpy()
    assert np.abs(z_a).max() < 3.5
    scores = irt.score(fit, data)
    theta = truth["theta"].numpy()
    covered = ((scores["lower"] <= theta) & (theta <= scores["upper"])).mean()
    assert 0.85 <= covered <= 0.95, covered
    # ten items of discrimination about 1: reliability near 0.7, so corr near 0.84
    assert np.corrcoef(scores["mean"], theta)[0, 1] > 0.75


@pytest.mark.slow
def test_lsat6_amortized_fit_against_nuts(nuts_ref) -> None:
    """The amortized guide finds the NUTS means of a and theta and the spread of theta,
    but its mean-field globals, blind to the a-theta coupling, make the discriminations
    far too certain; the encoder's scores agree with the quadrature scores."""
    data = irt.load_data("lsat6")
    fit = pyrovi.fit(irt.model, data, guide="amortized_irt", num_steps=1000)
    cmp = pyrovi.compare(fit, nuts_ref)
    table = cmp.table
    a_rows = table.loc[[f"a[{j}]" for j in range(5)]]
    theta_rows = table.loc[[n for n in table.index if n.startswith("theta[")]]
    assert len(theta_rows) == 30  # one examinee per response pattern
    assert a_rows["mean_error_z"].abs().max() < 0.5
    assert theta_rows["mean_error_z"].abs().max() < 0.5
    assert 0.85 < theta_rows["sd_ratio"].median() < 1.15
    assert a_rows["sd_ratio"].max() < 0.6  # what mean-field globals get wrong
    assert cmp.summary["verdict"] != "trust"
    people = nuts_ref.constant_data["theta_person"].values
    few = {"y": data["y"][people], "mask": data["mask"][people]}
    encoder = irt.score(fit, few, method="encoder")
    quadrature = irt.score(nuts_ref, few)
    assert np.abs(encoder["mean"] - quadrature["mean"]).max() < 0.25
    np.testing.assert_allclose(encoder["sd"], quadrature["sd"], rtol=0.2)


def test_rasch_is_the_2pl_with_one_discrimination() -> None:
    data, truth = irt.simulate_rasch(seed=5, N=40, J=5, missing=0.1)
    values = {k: v.double() for k, v in truth.items()}
    rasch = pyro.poutine.trace(pyro.condition(irt.model_rasch, data=values)).get_trace(
        y=data["y"].double(), mask=data["mask"])
    two_pl = pyro.poutine.trace(pyro.condition(
        irt.model, data={**values, "a": values["a"].expand(5)})).get_trace(
        y=data["y"].double(), mask=data["mask"])
    for site in ("y", "theta", "b"):
        assert float(rasch.nodes[site]["fn"].log_prob(rasch.nodes[site]["value"]).sum()) == \
            pytest.approx(float(two_pl.nodes[site]["fn"].log_prob(
                two_pl.nodes[site]["value"]).sum()), rel=1e-12)


def test_rasch_recovers_its_shared_discrimination() -> None:
    """Rasch data (one a = 0.82 for all items), 15% of the answers missing: the Laplace
    approximation of the marginal Rasch model recovers a and the difficulties."""
    data, truth = irt.simulate_rasch(seed=4, N=1000, J=6, missing=0.15)
    fit = pyrovi.fit(irt.marginal_model, {**data, "rasch": True}, guide="laplace")
    table = irt.parameter_table(fit)
    a = table.loc[table["op"] == "a"]
    assert np.ptp(a["est"]) == 0.0  # one shared discrimination
    assert abs(a["est"].iloc[0] - float(truth["a"])) < 3 * a["sd"].iloc[0]
    b = table.loc[table["op"] == "b"]
    assert np.all(np.abs(b["est"] - truth["b"].numpy()) < 3 * b["sd"])
    assert np.corrcoef(b["est"], truth["b"].numpy())[0, 1] > 0.97
