"""The conjugate full-covariance Bayesian GMM (:mod:`pyrovi.models.gmm_full`) against CAVI."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoNormal, init_to_value
from scipy.optimize import linear_sum_assignment
from scipy.special import logsumexp
from scipy.stats import dirichlet, multivariate_normal, wishart
from torch.distributions import biject_to

import pyrovi
from pyrovi.infer import em
from pyrovi.infer.util import batch_safe, guide_log_weights
from pyrovi.models import gmm, gmm_full


def _data(K: int = 3, D: int = 2, N: int = 200, seed: int = 1, dtype=torch.float64) -> dict:
    data, _ = gmm_full.simulate(seed=seed, N=N, K=K, D=D)
    return {"x": data["x"].to(dtype), "K": K}


def _cavi(data: dict) -> em.CAVIResult:
    return em.cavi_gmm(data["x"].double().numpy(), data["K"])


def _log_weights_scipy(x: np.ndarray, weights, locs, precisions) -> np.ndarray:
    """``log weights_k + log N(x_n | locs_k, inv(precisions_k))`` per draw: (S, N, K)."""
    dim = x.shape[-1]
    _, logdet = np.linalg.slogdet(precisions)  # (S, K)
    diff = x[None, :, None, :] - locs[:, None, :, :]  # (S, N, K, D)
    quad = np.einsum("snki,skij,snkj->snk", diff, precisions, diff)
    log_normal = 0.5 * logdet[:, None, :] - 0.5 * dim * math.log(2 * math.pi) - 0.5 * quad
    return np.log(weights)[:, None, :] + log_normal


# ------------------------------------------------------------- the Wishart bijection


@pytest.mark.parametrize("D", [1, 2, 3])
def test_transform_round_trip_and_log_jacobian(D):
    """The log-Jacobian is w.r.t. the D(D+1)/2 free entries: compare with autograd."""
    transform = biject_to(gmm_full.positive_definite_matrix)
    assert isinstance(transform, gmm_full.PositiveDefiniteVecTransform)
    v = torch.randn(4, D * (D + 1) // 2, dtype=torch.float64)
    y = transform(v)
    assert y.shape == (4, D, D)
    assert bool(gmm_full.positive_definite_matrix.check(y).all())
    torch.testing.assert_close(transform.inv(y), v)
    rows, cols = torch.tril_indices(D, D)
    for i in range(4):
        jac = torch.autograd.functional.jacobian(lambda u: transform(u)[rows, cols], v[i])
        expected = torch.linalg.slogdet(jac).logabsdet
        torch.testing.assert_close(transform.log_abs_det_jacobian(v[i], y[i]), expected)
    # torch's own constraint is left alone
    with pytest.raises(NotImplementedError):
        biject_to(constraints.positive_definite)


def test_bijective_wishart_density_moments_and_no_warning():
    W = np.array([[2.0, 0.5], [0.5, 1.0]])
    df = 5.0
    d = gmm_full.BijectiveWishart(
        df=torch.tensor(df, dtype=torch.float64),
        scale_tril=torch.tensor(np.linalg.cholesky(W)),
    ).expand([3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's rsample warns on every call; ours must not
        draws = d.rsample((20_000,))
    assert draws.shape == (20_000, 3, 2, 2)
    lam = draws[:, 0].numpy()
    se = lam.std(axis=0) / math.sqrt(len(lam))
    assert np.all(np.abs(lam.mean(axis=0) - df * W) <= 4 * se)
    expected = wishart(df=df, scale=W).logpdf(np.moveaxis(lam[:5], 0, -1))
    np.testing.assert_allclose(d.log_prob(draws[:5])[:, 0].numpy(), expected, rtol=1e-10)
    # reparametrised: gradients reach df and the scale
    df_t = torch.tensor(df, requires_grad=True)
    tril = torch.eye(2, requires_grad=True)
    gmm_full.BijectiveWishart(df=df_t, scale_tril=tril).rsample((10,)).sum().backward()
    assert df_t.grad is not None and tril.grad is not None


# ------------------------------------------------------------------------- the model


@pytest.mark.parametrize(("K", "D"), [(3, 2), (2, 1)])
@pytest.mark.parametrize("explicit", [False, True])
def test_log_joint_matches_scipy(K, D, explicit):
    data = _data(K=K, D=D, N=50)
    x = data["x"].numpy()
    rng = np.random.default_rng(3)
    if explicit:
        hyper = {
            "alpha0": 2.5,
            "beta0": 0.3,
            "mean0": rng.normal(size=D),
            "W0": np.eye(D) * 0.7 + 0.1,
            "nu0": D + 1.5,
        }
        p = em.BayesGMMPrior(**hyper)
    else:
        hyper = {}
        p = em.bayes_gmm_prior(x, K)  # the defaults must be resolved exactly like this
    weights = rng.dirichlet(np.full(K, 3.0))
    locs = rng.normal(size=(K, D))
    precisions = np.stack(
        [wishart(df=D + 3, scale=np.eye(D)).rvs(random_state=rng).reshape(D, D) for _ in range(K)]
    )
    values = {
        "weights": torch.tensor(weights),
        "locs": torch.tensor(locs),
        "precisions": torch.tensor(precisions),
    }
    conditioned = poutine.condition(gmm_full.model, data=values)
    trace = poutine.trace(conditioned).get_trace(**data, **hyper)
    log_joint = float(trace.log_prob_sum())

    expected = dirichlet.logpdf(weights, np.full(K, p.alpha0))
    for k in range(K):
        expected += wishart(df=p.nu0, scale=p.W0).logpdf(precisions[k])
        expected += multivariate_normal.logpdf(
            locs[k], p.mean0, np.linalg.inv(p.beta0 * precisions[k])
        )
    log_comp = _log_weights_scipy(x, weights[None], locs[None], precisions[None])[0]
    expected += logsumexp(log_comp, axis=1).sum()
    assert log_joint == pytest.approx(expected, rel=1e-10, abs=1e-8)
    assert trace.nodes["precisions"]["value"].shape == (K, D, D)
    assert trace.nodes["locs"]["value"].shape == (K, D)


def test_prior_defaults_are_cavi_defaults():
    data = _data()
    p = gmm_full.prior(data["x"], data["K"])
    q = _cavi(data).prior
    assert p.alpha0 == q.alpha0 and p.beta0 == q.beta0 and p.nu0 == q.nu0
    np.testing.assert_allclose(p.mean0, q.mean0)
    np.testing.assert_allclose(p.W0, q.W0)


def test_model_is_batch_safe_and_works_with_autoguides():
    data = _data(K=2, dtype=torch.float32)
    result = _cavi(data)
    assert batch_safe(gmm_full.model, gmm_full.guide_from_cavi(result), data)
    values = {
        "weights": torch.tensor(result.weights, dtype=torch.float32),
        "locs": torch.tensor(result.m, dtype=torch.float32),
        "precisions": torch.tensor(result.nu[:, None, None] * result.W, dtype=torch.float32),
    }
    guide = AutoNormal(gmm_full.model, init_loc_fn=init_to_value(values=values), init_scale=0.01)
    log_w = guide_log_weights(gmm_full.model, guide, data, num_samples=200)
    assert np.all(np.isfinite(log_w))
    # the autoguide starts (in the unconstrained space) at CAVI's means: ELBO near CAVI's
    assert abs(log_w.mean() - result.elbo) < 20.0
    draws = pyro.infer.Predictive(gmm_full.model, guide=guide, num_samples=50)(**data)
    assert draws["precisions"].shape == (50, 2, 2, 2)
    assert bool(constraints.positive_definite.check(draws["precisions"]).all())


# ------------------------------------------------------------------------ the guides


def test_cavi_guide_params_and_start():
    data = _data()
    K, D = data["K"], data["x"].shape[1]
    trace = poutine.trace(gmm_full.cavi_guide).get_trace(**data)
    store = pyro.get_param_store()
    names = {"alpha": (K,), "beta": (K,), "m": (K, D), "W_tril": (K, D, D), "nu": (K,)}
    assert set(store.keys()) == {f"gmm_full_guide.{n}" for n in names}
    for name, shape in names.items():
        assert store[f"gmm_full_guide.{name}"].shape == shape
    # starts where cavi_gmm starts: one q(pi, mu, Lambda) update from k-means
    x = data["x"].numpy()
    first = em.cavi_m_step(x, em._kmeans_resp(x, K, seed=0), em.bayes_gmm_prior(x, K))
    np.testing.assert_allclose(store["gmm_full_guide.m"].detach().numpy(), first.m)
    np.testing.assert_allclose(store["gmm_full_guide.nu"].detach().numpy(), first.nu)
    assert trace.nodes["precisions"]["value"].shape == (K, D, D)
    assert trace.nodes["locs"]["value"].shape == (K, D)


def test_guide_from_cavi_is_fixed():
    data = _data()
    guide = gmm_full.guide_from_cavi(_cavi(data))
    trace = poutine.trace(guide).get_trace(**data)
    assert len(pyro.get_param_store()) == 0
    sites = {n for n, s in trace.nodes.items() if s["type"] == "sample"}
    assert sites - {"components"} == {
        "weights",
        "precisions",
        "locs",
    }
    with pytest.raises(ValueError, match="K=3"):
        guide(data["x"], K=2)


def test_marginalised_elbo_tightens_cavi_bound():
    """ELBO of CAVI's q(theta) with z summed out = CAVI's ELBO + E_q[KL(q(z) || p(z|x,theta))].

    The identity is exact (every constant kept on both sides), so the gap is checked
    against an independent Monte Carlo estimate of the expected KL computed in numpy from
    :func:`cavi_draws`. On these well-separated clusters q(z) is nearly one-hot and the
    gap is tiny: observed 0.011 nats (K=3, N=200; 4e-4 for K=2) with Monte Carlo standard
    errors below 1e-3, so ``gap < 0.05`` has wide margin while still saying "small" (the
    ELBO itself is about -271).
    """
    data = _data(K=3)
    result = _cavi(data)
    log_w = guide_log_weights(
        gmm_full.model, gmm_full.guide_from_cavi(result), data, num_samples=2000
    )
    marginal = log_w.mean()
    se = log_w.std(ddof=1) / math.sqrt(len(log_w))
    gap = marginal - result.elbo
    assert gap >= -3 * se  # summing z out exactly can only tighten the bound

    draws = gmm_full.cavi_draws(result, num_samples=2000, seed=1).posterior
    weights, locs, precisions = (draws[k].values[0] for k in ("weights", "locs", "precisions"))
    log_joint = _log_weights_scipy(data["x"].numpy(), weights, locs, precisions)
    log_post = log_joint - logsumexp(log_joint, axis=-1, keepdims=True)  # log p(z | x, theta)
    resp = result.resp
    log_resp = np.log(np.where(resp > 0, resp, 1.0))
    kl = np.sum(resp[None] * (log_resp[None] - log_post), axis=(1, 2))
    kl_se = kl.std(ddof=1) / math.sqrt(len(kl))
    assert abs(gap - kl.mean()) <= 4 * math.hypot(se, kl_se) + 1e-6
    assert gap < 0.05


def test_cavi_draws_match_analytic_moments():
    result = _cavi(_data())
    S = 4000
    post = gmm_full.cavi_draws(result, num_samples=S, seed=0).posterior
    K, D = result.m.shape
    assert post["weights"].shape == (1, S, K)
    assert post["locs"].shape == (1, S, K, D)
    assert post["precisions"].shape == (1, S, K, D, D)
    expected = {
        "weights": result.alpha / result.alpha.sum(),
        "locs": result.m,
        "precisions": result.nu[:, None, None] * result.W,
    }
    for name, mean in expected.items():
        draws = post[name].values[0]
        se = draws.std(axis=0, ddof=1) / math.sqrt(S)
        assert np.all(np.abs(draws.mean(axis=0) - mean) <= 4 * se), name
    # E[Lambda^-1] = inv(W) / (nu - D - 1) for the Wishart; checks that scipy's ``scale`` is W
    cov = np.linalg.inv(post["precisions"].values[0]).mean(axis=0)
    analytic = np.linalg.inv(result.W) / (result.nu - D - 1)[:, None, None]
    np.testing.assert_allclose(cov, analytic, rtol=0.05)


# ------------------------------------------------------------------- SVI and NUTS


def _vague_cavi_guide(x: torch.Tensor, K: int = 2, **hyper) -> None:
    """``cavi_guide`` started away from the optimum: means at the k-means centres only.

    Pre-creating the parameters overrides ``cavi_guide``'s own start (one CAVI update),
    so SVI has real work to do: every component starts with the whole data's precision
    and equal weight.
    """
    N, D = x.shape
    p = gmm_full.prior(x, K)
    n = N / K
    arr = x.double().numpy()
    resp = em._kmeans_resp(arr, K, seed=0)
    centres = torch.tensor((resp.T @ arr) / resp.sum(0)[:, None], dtype=x.dtype)
    w_tril = torch.tensor(np.linalg.cholesky(p.W0 / (p.nu0 + n)), dtype=x.dtype)
    pre = "gmm_full_guide."
    pyro.param(pre + "alpha", lambda: torch.full((K,), n + p.alpha0), constraints.positive)
    pyro.param(pre + "beta", lambda: torch.full((K,), n + p.beta0), constraints.positive)
    pyro.param(pre + "m", lambda: centres)
    pyro.param(pre + "W_tril", lambda: w_tril.expand(K, D, D).clone(), constraints.lower_cholesky)
    pyro.param(pre + "nu", lambda: torch.full((K,), p.nu0 + n), constraints.greater_than(D - 1.0))
    gmm_full.cavi_guide(x, K, **hyper)


@pytest.mark.slow
def test_svi_reaches_cavi_elbo():
    """SVI on the marginalised model climbs from about -400 to CAVI's -270.78.

    Its optimum over the same family is at least CAVI's marginalised ELBO (which is at
    least CAVI's ELBO), so only optimiser error can put it below: the tolerance 0.25 nats
    (0.1% of |ELBO|) covers the jitter of Adam's averaged final iterate, observed 0.11.
    """
    data = _data(K=3, dtype=torch.float32)
    result = _cavi(data)
    fit = pyrovi.fit(gmm_full.model, data, guide=_vague_cavi_guide, lr=0.02, max_steps=4000)
    assert -fit.losses[0] < result.elbo - 50  # it did start far away
    assert fit.elbo >= result.elbo - 3 * fit.elbo_se - 0.25


def test_nuts_agrees_with_cavi():
    data = _data(K=2, dtype=torch.float32)
    result = _cavi(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chain: low-ESS reference warnings expected
        idata = pyrovi.nuts(
            gmm_full.model, data, num_samples=100, num_warmup=100, num_chains=1, cache=False
        )
    locs = idata.posterior["locs"].values[0]  # (S, K, D)
    assert idata.posterior["precisions"].shape == (1, 100, 2, 2, 2)
    mean, sd = locs.mean(axis=0), locs.std(axis=0)
    cost = ((mean[:, None, :] - result.m[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert np.all(np.abs(mean[rows] - result.m[cols]) <= 3 * sd[rows])


# ------------------------------------------------------------------- data and SPEC


def test_simulate_and_load_data():
    data, truth = gmm_full.simulate(seed=0, N=500, K=3, D=2)
    assert data["x"].shape == (500, 2) and data["K"] == 3
    assert truth["weights"].shape == (3,) and truth["locs"].shape == (3, 2)
    assert truth["precisions"].shape == (3, 2, 2)
    assert bool(constraints.positive_definite.check(truth["precisions"]).all())
    assert torch.all(truth["locs"][:-1, 0] <= truth["locs"][1:, 0])
    x = data["x"].double()
    assert torch.allclose(x.mean(0), torch.zeros(2, dtype=x.dtype), atol=0.2)
    assert torch.allclose(x.std(0), torch.ones(2, dtype=x.dtype), atol=0.2)
    for name in (None, "iris"):
        ours, theirs = gmm_full.load_data(name), gmm.load_data(name)
        assert ours["K"] == theirs["K"] and torch.equal(ours["x"], theirs["x"])


def test_spec():
    spec = gmm_full.SPEC
    assert spec.name == "gmm_full" and spec.model is gmm_full.model
    assert spec.guides["cavi_family"](spec.model) is gmm_full.cavi_guide
    assert {"mean_field", "full_rank"} <= set(spec.guides)
    assert spec.datasets == gmm.DATASETS
    data = spec.load_data()
    trace = poutine.trace(spec.model).get_trace(**data)
    assert np.isfinite(float(trace.log_prob_sum()))
    assert isinstance(trace.nodes["precisions"]["fn"], dist.Wishart)
