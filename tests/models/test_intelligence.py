"""CFA models ``intelligence`` / ``intelligence_marginal``: exact densities, identification,
agreement with an independent ML fit and with cached NUTS references, scores, fit indices."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyro
import pytest
import torch
from scipy import optimize, stats

import pyrovi
from pyrovi.models import intelligence as cfa

FIXTURES = Path(__file__).parents[1] / "fixtures" / "latent"
# lavaan 0.6: cfa(HS.model, HolzingerSwineford1939, std.lv = TRUE), ML estimates
LAVAAN_LOADINGS = np.array([0.900, 0.498, 0.656, 0.990, 1.102, 0.917, 0.619, 0.731, 0.670])
LAVAAN_CORR = {(0, 1): 0.459, (0, 2): 0.471, (1, 2): 0.283}
LAVAAN_STD_ALL = np.array([0.772, 0.424, 0.581, 0.852, 0.855, 0.838, 0.570, 0.723, 0.665])


@pytest.fixture(scope="module")
def hs() -> dict:
    return cfa.load_data()


@pytest.fixture(scope="module")
def nuts_marginal():
    return pyrovi.load_reference(FIXTURES / "intelligence_marginal_nuts.nc")


@pytest.fixture(scope="module")
def nuts_person():
    return pyrovi.load_reference(FIXTURES / "intelligence_nuts.nc")


def _flat(idata, site: str) -> np.ndarray:
    values = idata.posterior[site].values.astype(np.float64)
    return values.reshape(-1, *values.shape[2:])


def _corr(chol: np.ndarray) -> np.ndarray:
    return chol @ np.swapaxes(chol, -1, -2)


def ml_cfa(x: np.ndarray, pat: np.ndarray) -> dict[str, np.ndarray]:
    """ML CFA (unit factor variances) by scipy: minimise ``log|Sigma| + tr(S Sigma^-1)``.

    The means are saturated (their ML is the sample mean), so only the covariance
    structure is fitted: loadings, log residual sds and atanh of the factor correlations.
    """
    P, K = pat.shape
    rows, cols = np.nonzero(pat.T)[1], np.nonzero(pat.T)[0]
    n_l, pairs = len(rows), [(i, j) for i in range(K) for j in range(i + 1, K)]
    centred = x - x.mean(0)
    s = centred.T @ centred / len(x)

    def unpack(u):
        lam = np.zeros((P, K))
        lam[rows, cols] = u[:n_l]
        theta = np.exp(u[n_l:n_l + P])
        phi = np.eye(K)
        for (i, j), z in zip(pairs, u[n_l + P:], strict=True):
            phi[i, j] = phi[j, i] = np.tanh(z)
        return lam, theta, phi

    def objective(u):
        lam, theta, phi = unpack(u)
        sigma = lam @ phi @ lam.T + np.diag(theta**2)
        sign, logdet = np.linalg.slogdet(sigma)
        if sign <= 0:
            return 1e10
        return logdet + np.trace(s @ np.linalg.inv(sigma))

    u0 = np.concatenate([np.full(n_l, 0.7), np.log(np.sqrt(np.diag(s)) / 2),
                         np.full(len(pairs), 0.3)])
    res = optimize.minimize(objective, u0, method="BFGS", options={"gtol": 1e-8})
    lam, theta, phi = unpack(res.x)
    fmin = res.fun - np.linalg.slogdet(s)[1] - P
    return {"loadings": lam[rows, cols], "residual_sd": theta, "corr": phi,
            "chisq": len(x) * fmin}


# --------------------------------------------------------------------------- data, structure
def test_bundled_data_is_lavaans_holzinger_swineford(hs: dict) -> None:
    frame = cfa.holzinger_swineford()
    assert frame.shape == (301, 15)
    assert list(frame.columns) == ["id", "sex", "ageyr", "agemo", "school", "grade",
                                   *cfa.INDICATORS]
    # head(HolzingerSwineford1939) in lavaan's documentation
    np.testing.assert_allclose(frame.loc[0, list(cfa.INDICATORS)].to_numpy(float),
                               [3.333333, 7.75, 0.375, 2.333333, 5.75, 1.285714, 3.391304,
                                5.75, 6.361111], atol=1e-6)
    np.testing.assert_allclose(frame.loc[2, ["x1", "x6", "x9"]].to_numpy(float),
                               [4.5, 0.4285714, 4.416667], atol=1e-6)
    assert frame["school"].value_counts().to_dict() == {"Pasteur": 156, "Grant-White": 145}
    assert frame["grade"].isna().sum() == 1 and frame["id"].iloc[-1] == 351
    np.testing.assert_allclose(frame[list(cfa.INDICATORS)].mean().to_numpy(),
                               [4.936, 6.088, 2.250, 3.061, 4.341, 2.186, 4.186, 5.527, 5.374],
                               atol=1e-3)
    assert hs["x"].shape == (301, 9) and bool(hs["mask"].all())
    assert torch.equal(hs["pattern"], cfa.pattern(cfa.STRUCTURE, cfa.INDICATORS))
    assert cfa.IDENTIFICATIONS[int(hs["identification"])] == "unit_variance"


def test_structure_and_bad_input_fail_clearly() -> None:
    pat = cfa.pattern({"a": ["x2", "x1"], "b": ["x3", "x4", "x1"]}, ["x1", "x2", "x3", "x4"])
    assert pat.tolist() == [[1, 1], [1, 0], [0, 1], [0, 1]]
    lay = cfa.layout(pat)
    assert lay.rows.tolist() == [0, 1, 0, 2, 3] and lay.first.tolist() == [1, 0, 1, 0, 0]
    custom = cfa.load_data(structure={"verbal": ["x4", "x5", "x6"], "speed": ["x7", "x9"]})
    assert custom["x"].shape == (301, 5) and custom["pattern"].shape == (5, 2)
    with pytest.raises(ValueError, match="unknown indicator"):
        cfa.pattern({"a": ["x1", "x99"]}, cfa.INDICATORS)
    with pytest.raises(ValueError, match="at least two indicators"):
        cfa.pattern({"a": ["x1"]}, cfa.INDICATORS)
    with pytest.raises(ValueError, match="identification must be one of"):
        cfa.load_data(identification="std_lv")
    with pytest.raises(ValueError, match="no bundled data set"):
        cfa.load_data("wisc")
    data = cfa.load_data()
    with pytest.raises(ValueError, match="mask has shape"):
        cfa.model(data["x"], data["pattern"], mask=data["mask"][:, :3])
    with pytest.raises(ValueError, match=r"x must be \(N, P\)"):
        cfa.model_marginal(data["x"][:, :4], data["pattern"])
    x, mask = cfa.to_masked(np.array([[1.0, np.nan], [np.nan, 2.0]]))
    assert x.tolist() == [[1.0, 0.0], [0.0, 2.0]] and mask.tolist() == [[True, False],
                                                                          [False, True]]
    with pytest.raises(ValueError, match="infinite"):
        cfa.to_masked(np.array([[np.inf, 1.0]]))


def _log_lik(model, data: dict, values: dict) -> float:
    cond = pyro.poutine.condition(model, data=values)
    trace = pyro.poutine.trace(cond).get_trace(**data)
    trace.compute_log_prob()
    return float(trace.nodes["x"]["log_prob_sum"])


def _truth64(truth: dict) -> dict:
    return {k: torch.as_tensor(v, dtype=torch.float64) for k, v in truth.items()}


def _data64(data: dict) -> dict:
    return {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
            for k, v in data.items()}


def test_marginal_density_is_exact_with_missing_values() -> None:
    data, truth = cfa.simulate(seed=3, N=40, missing=0.25)
    data, truth = _data64(data), _truth64(truth)
    assert 0.15 < 1 - data["mask"].double().mean() < 0.35
    g, _ = cfa.global_draws(_as_idata(truth), data, num_draws=1)
    x, mask = data["x"].numpy(), data["mask"].numpy()
    expected = 0.0
    for i in range(len(x)):
        o = mask[i]
        if o.any():
            expected += stats.multivariate_normal(g.nu[0, o], g.sigma[0][np.ix_(o, o)]
                                                  ).logpdf(x[i, o])
    globals_ = {k: v for k, v in truth.items() if k != "scores"}
    assert _log_lik(cfa.model_marginal, data, globals_) == pytest.approx(expected, abs=1e-8)
    complete = dict(data, mask=torch.ones_like(data["mask"]))
    full = sum(stats.multivariate_normal(g.nu[0], g.sigma[0]).logpdf(row) for row in x)
    assert _log_lik(cfa.model_marginal, complete, globals_) == pytest.approx(full, abs=1e-8)


def _as_idata(truth: dict):
    import arviz as az

    return az.from_dict(posterior={k: np.stack([v.numpy()] * 2)[None]
                                   for k, v in truth.items() if k != "scores"})


@pytest.mark.parametrize("identification", ["unit_variance", "marker"])
def test_two_forms_are_one_joint_through_the_exact_conditional(identification: str) -> None:
    """``log p(x | g) = log p(x, eta | g) - log p(eta | x, g)`` for any ``eta``: the marginal
    model, the person-level model and :func:`conditional_scores` agree, missing values
    included."""
    data, truth = cfa.simulate(seed=1, N=25, identification=identification, missing=0.2)
    data, truth = _data64(data), _truth64(truth)
    globals_ = {k: v for k, v in truth.items() if k != "scores"}
    g, _ = cfa.global_draws(_as_idata(truth), data, num_draws=1)
    mean, cov = cfa.conditional_scores(g, data["x"].numpy(), data["mask"].numpy())
    eta = torch.as_tensor(mean[0]) + 0.3  # any point works
    person = dict(globals_, scores=eta)
    trace = pyro.poutine.trace(pyro.poutine.condition(cfa.model, data=person)).get_trace(
        **data)
    trace.compute_log_prob()
    joint = float(trace.nodes["x"]["log_prob_sum"] + trace.nodes["scores"]["log_prob_sum"])
    log_cond = sum(stats.multivariate_normal(mean[0, i], cov[0, i]).logpdf(eta[i].numpy())
                   for i in range(len(eta)))
    marginal = _log_lik(cfa.model_marginal, data, globals_)
    assert marginal == pytest.approx(joint - log_cond, abs=1e-7)


def test_marker_and_unit_variance_describe_the_same_data() -> None:
    unit, t_unit = cfa.simulate(seed=5, N=60)
    marker, t_marker = cfa.simulate(seed=5, N=60, identification="marker")
    assert torch.equal(unit["x"], marker["x"]) and t_marker["loadings"].shape == (6,)
    g_u, _ = cfa.global_draws(_as_idata(_truth64(t_unit)), _data64(unit), num_draws=1)
    g_m, _ = cfa.global_draws(_as_idata(_truth64(t_marker)), _data64(marker), num_draws=1)
    np.testing.assert_allclose(g_u.sigma, g_m.sigma, rtol=1e-5)
    assert g_m.lam[0, 0, 0] == 1.0 and g_m.lam[0, 3, 1] == 1.0
    trace = pyro.poutine.trace(cfa.model).get_trace(**marker)
    assert trace.nodes["loadings"]["value"].shape == (6,)
    assert trace.nodes["factor_sd"]["value"].shape == (3,)


def test_first_loadings_are_positive_under_the_prior_and_its_transform() -> None:
    lay = cfa.layout(cfa.pattern(cfa.STRUCTURE, cfa.INDICATORS))
    prior = cfa.SignFixedLoadings(torch.full((9,), 2.0, dtype=torch.float64), lay.first)
    draws = prior.sample((4000,))
    assert bool((draws[:, lay.first] > 0).all()) and bool((draws[:, ~lay.first] < 0).any())
    # folded normal: E|z| * 2 = 2 * sqrt(2 / pi) * 2
    assert draws[:, 0].mean() == pytest.approx(2 * math.sqrt(2 / math.pi), rel=0.06)
    value = torch.tensor([0.5, -1.0, 0.2, 1.0, 0.0, -0.3, 2.0, 1.0, 0.1], dtype=torch.float64)
    manual = (stats.norm(0, 2).logpdf(value.numpy()).sum() + 3 * math.log(2))
    assert float(prior.log_prob(value)) == pytest.approx(manual)
    flipped = value.clone()
    flipped[0] = -0.5
    assert float(prior.log_prob(flipped)) == -math.inf
    transform = torch.distributions.biject_to(prior.support)
    u = torch.randn(9, dtype=torch.float64, requires_grad=True)
    y = transform(u)
    assert bool((y[lay.first] > 0).all())
    assert torch.allclose(transform.inv(y), u)
    jac = torch.autograd.functional.jacobian(transform, u.detach())
    assert float(transform.log_abs_det_jacobian(u, y).detach()) == pytest.approx(
        float(torch.linalg.slogdet(jac)[1]))


# --------------------------------------------------------------------------- references
def test_nuts_agrees_with_an_independent_ml_fit(hs: dict, nuts_marginal) -> None:
    ml = ml_cfa(hs["x"].double().numpy(), hs["pattern"].numpy())
    # the independent ML fit is lavaan's (a sanity anchor for the test's own optimiser)
    np.testing.assert_allclose(ml["loadings"], LAVAAN_LOADINGS, atol=2e-3)
    for (i, j), value in LAVAAN_CORR.items():
        assert ml["corr"][i, j] == pytest.approx(value, abs=2e-3)
    assert ml["chisq"] == pytest.approx(85.306, abs=0.05)  # lavaan's test statistic
    lam = _flat(nuts_marginal, "loadings")
    assert np.all(np.abs(lam.mean(0) - ml["loadings"]) < lam.std(0)), (lam.mean(0),
                                                                       ml["loadings"])
    corr = _corr(_flat(nuts_marginal, "factor_corr_chol"))
    for i, j in LAVAAN_CORR:
        assert abs(corr[:, i, j].mean() - ml["corr"][i, j]) < corr[:, i, j].std()
    assert int(nuts_marginal.sample_stats["diverging"].sum()) == 0


def _draws_and_ess(idata, site: str) -> tuple[np.ndarray, np.ndarray]:
    """Pooled draws ``(S, ...)`` of a site and the bulk ESS of each element (ArviZ)."""
    import arviz as az

    ess = az.ess(idata, var_names=[site], method="bulk")[site].values
    return _flat(idata, site), ess


def _mc_tolerance(a: np.ndarray, ess_a: np.ndarray, b: np.ndarray, ess_b: np.ndarray
                  ) -> np.ndarray:
    """Four Monte Carlo standard errors of a difference of two posterior means."""
    return 4 * np.sqrt(a.var(0) / ess_a + b.var(0) / ess_b)


def test_marginal_and_person_forms_give_one_posterior_over_globals(nuts_marginal,
                                                                   nuts_person) -> None:
    """NUTS on each form (the person form samples the 903 scores too): same globals within
    Monte Carlo error (means within 4 MCSE by each run's bulk ESS, sds within 25%)."""
    for site in ("loadings", "intercepts", "residual_sd"):
        (a, ess_a), (b, ess_b) = _draws_and_ess(nuts_marginal, site), _draws_and_ess(
            nuts_person, site)
        assert np.all(np.abs(a.mean(0) - b.mean(0)) < _mc_tolerance(a, ess_a, b, ess_b)), site
        np.testing.assert_allclose(a.std(0), b.std(0), rtol=0.25, err_msg=site)
    pairs = ([0, 0, 1], [1, 2, 2])
    a = _corr(_flat(nuts_marginal, "factor_corr_chol"))[:, pairs[0], pairs[1]]
    b = _corr(_flat(nuts_person, "factor_corr_chol"))[:, pairs[0], pairs[1]]
    ess = [_draws_and_ess(ref, "factor_corr_chol")[1][pairs[1], pairs[0]]
           for ref in (nuts_marginal, nuts_person)]  # ESS of the Cholesky entry (j, i)
    assert np.all(np.abs(a.mean(0) - b.mean(0)) < _mc_tolerance(a, ess[0], b, ess[1]))
    np.testing.assert_allclose(a.std(0), b.std(0), rtol=0.25)


def test_exact_scores_match_person_level_nuts(hs: dict, nuts_marginal, nuts_person) -> None:
    scores = cfa.score_draws(nuts_marginal, data=hs, num_draws=400)
    assert scores.mean.shape == (301, 3) and scores.factors == list(cfa.FACTORS)
    ref = _flat(nuts_person, "scores")  # the first 100 pupils
    n = ref.shape[1]
    sd_ref = ref.std(0)
    z = (scores.mean[:n] - ref.mean(0)) / sd_ref
    # Monte Carlo error of a mean difference: ~0.07 sd (400 mixture draws, ~500 NUTS ESS)
    assert np.abs(z).max() < 0.35 and np.abs(z).mean() < 0.1
    ratio = scores.sd[:n] / sd_ref
    assert 0.95 < ratio.mean() < 1.05 and ratio.min() > 0.75 and ratio.max() < 1.3
    frame = scores.to_frame()
    assert len(frame) == 903 and list(frame.columns[:2]) == ["person", "factor"]
    assert np.all(scores.lower < scores.mean) and np.all(scores.mean < scores.upper)
    # scoring new people: pupils with tests missing get wider intervals
    new = dict(hs, x=hs["x"][:5].clone(), mask=hs["mask"][:5].clone())
    new["mask"][:, 3:6] = False
    partial = cfa.score_draws(nuts_marginal, new_data=new, data=hs, num_draws=400)
    assert np.all(partial.sd[:, 1] > 1.5 * scores.sd[:5, 1])
    np.testing.assert_allclose(partial.sd[:, 0], scores.sd[:5, 0], rtol=0.25)


def test_parameter_table_and_fit_indices_match_lavaan(hs: dict, nuts_marginal) -> None:
    table = cfa.parameter_table(nuts_marginal, data=hs)
    assert list(table.columns) == ["lhs", "op", "rhs", "est", "sd", "lower", "upper",
                                   "std_all"]
    loadings = table[table.op == "=~"]
    assert loadings.lhs.tolist() == ["visual"] * 3 + ["textual"] * 3 + ["speed"] * 3
    np.testing.assert_allclose(loadings.est, LAVAAN_LOADINGS, atol=0.05)
    np.testing.assert_allclose(loadings.std_all, LAVAAN_STD_ALL, atol=0.03)
    cov = table[(table.op == "~~") & (table.lhs != table.rhs) & table.lhs.isin(cfa.FACTORS)]
    assert cov.rhs.tolist() == ["textual", "speed", "speed"]
    np.testing.assert_allclose(cov.est, list(LAVAAN_CORR.values()), atol=0.05)
    var = table[(table.op == "~~") & (table.lhs == "visual") & (table.rhs == "visual")]
    assert float(var.est.iloc[0]) == 1.0 and float(var.sd.iloc[0]) == 0.0
    resid = table[(table.op == "~~") & (table.lhs == "x1") & (table.rhs == "x1")]
    assert float(resid.est.iloc[0]) == pytest.approx(0.549, abs=0.08)  # lavaan x1 ~~ x1
    assert float(resid.std_all.iloc[0]) == pytest.approx(0.404, abs=0.04)
    means = table[table.op == "~1"]
    np.testing.assert_allclose(means.est, hs["x"].double().mean(0).numpy(), atol=0.02)
    assert np.all((table.lower <= table.est) & (table.est <= table.upper))

    idx = cfa.fit_indices(nuts_marginal, hs, num_draws=400)
    assert idx["p_star"] == 54 and idx["n_free"] == 30
    assert idx["pD"] == pytest.approx(30, abs=3)  # DIC pD near the free parameter count
    # lavaan ML: chi-square 85.3 on 24 df, RMSEA 0.092, CFI 0.931; the model misfits
    assert idx["ppp"] < 0.05
    assert idx["chisq"]["mean"] == pytest.approx(85.3 + idx["pD"], abs=6)
    assert idx["brmsea"]["mean"] == pytest.approx(0.092, abs=0.01)
    assert idx["bcfi"]["mean"] == pytest.approx(0.931, abs=0.01)
    assert idx["chisq_null"] == pytest.approx(918.85, abs=0.1)  # lavaan baseline chi-square
    assert idx["chisq_rep"]["mean"] == pytest.approx(54, abs=5)  # E[LR] = p* when it fits
    with pytest.raises(ValueError, match="complete data"):
        cfa.fit_indices(nuts_marginal, dict(hs, mask=~torch.eye(301, 9, dtype=torch.bool)))
    with pytest.raises(ValueError, match="pass the data"):
        cfa.parameter_table(nuts_marginal)


def test_fit_indices_do_not_reject_a_model_that_generated_the_data() -> None:
    data, truth = cfa.simulate(seed=2, N=500)
    idx = cfa.fit_indices(_as_idata(_truth64(truth)), _data64(data), num_draws=2,
                          pd_method="count")
    # at the true parameters the LR statistic is about chi-square on p* degrees of freedom
    assert stats.chi2(54).cdf(idx["chisq"]["mean"]) < 0.99
    assert idx["brmsea"]["mean"] < 0.03 and idx["bcfi"]["mean"] > 0.98


# --------------------------------------------------------------------------- guides
@pytest.mark.slow
def test_amortized_guide_fits_and_encodes(hs: dict) -> None:
    from pyrovi.guides import get_family

    assert get_family("amortized_intelligence").amortized
    assert "amortized_intelligence" in cfa.SPEC.guides
    fit = pyrovi.fit(cfa.model, hs, guide="amortized_intelligence", num_steps=30, seed=0)
    loc, scale = fit.guide.encode(fit.data)
    assert loc.shape == (301, 3) and bool((scale > 0).all())
    draws = fit.sample(num_samples=20)
    assert draws["scores"].shape == (20, 301, 3)
    assert bool((draws["loadings"][:, [0, 3, 6]] > 0).all())
    scores = cfa.score_draws(fit, num_draws=20)
    assert scores.mean.shape == (301, 3)


@pytest.mark.slow
def test_simulated_recovery_and_score_coverage() -> None:
    """N = 2,000: loadings recovered, 90% intervals of the exact scores cover the truth.

    The marginal form with a full-rank guide, 200 steps from its Laplace start (at N = 2,000
    the start is already close to the posterior of the 30 globals: the default converged fit,
    3,400 steps and ~50 s, ends with the same guide, ELBO and loadings equal to 1e-9); scores
    are the exact conditionals mixed over its draws."""
    data, truth = cfa.simulate(seed=0, N=2000)
    fit = pyrovi.fit(cfa.model_marginal, data, guide="full_rank", num_steps=200, seed=0)
    table = cfa.parameter_table(fit, num_draws=400)
    est = table[table.op == "=~"].est.to_numpy()
    assert np.corrcoef(est, truth["loadings"].numpy())[0, 1] > 0.95
    np.testing.assert_allclose(est, truth["loadings"].numpy(), atol=0.1)
    scores = cfa.score_draws(fit, num_draws=200)
    true = truth["scores"].numpy()
    covered = ((scores.lower <= true) & (true <= scores.upper)).mean()
    assert 0.85 <= covered <= 0.95, covered


@pytest.mark.slow
def test_full_rank_vi_agrees_with_ml_and_nuts_on_holzinger(hs: dict, nuts_marginal) -> None:
    fit = pyrovi.fit(cfa.model_marginal, hs, guide="full_rank", seed=0)
    assert fit.converged
    ml = ml_cfa(hs["x"].double().numpy(), hs["pattern"].numpy())
    table = cfa.parameter_table(fit)
    loadings = table[table.op == "=~"]
    assert np.all(np.abs(loadings.est - ml["loadings"]) < loadings.sd)
    cmp = pyrovi.compare(fit, nuts_marginal)
    assert cmp.summary["max_abs_mean_error_z"] < 0.3
    assert 0.75 < cmp.summary["worst_sd_ratio"] < 1.3
