"""EM and CAVI for Gaussian mixtures: ascent, the ELBO identity, truth and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import dirichlet, multivariate_normal, wishart

from pyrovi.infer.em import (
    GMMParams,
    NormalWishartPosterior,
    bayes_gmm_prior,
    cavi_e_step,
    cavi_elbo,
    cavi_gmm,
    cavi_m_step,
    e_step,
    elbo,
    em_gmm,
    log_likelihood,
    m_step,
)

TRUE_MEANS = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, -1.0]])
TRUE_WEIGHTS = np.array([0.3, 0.5, 0.2])


def _separated(seed: int = 1, n: int = 300, sd: float = 0.7) -> np.ndarray:
    """2-D data from 3 well-separated components with known means and weights."""
    rng = np.random.default_rng(seed)
    counts = (TRUE_WEIGHTS * n).astype(int)
    return np.concatenate(
        [rng.normal(m, sd, size=(c, 2)) for m, c in zip(TRUE_MEANS, counts, strict=True)]
    )


def _overlapping(seed: int = 2) -> np.ndarray:
    """Overlapping components: EM and CAVI need many iterations (a real ascent to check)."""
    return _separated(seed=seed, n=300, sd=2.0)


def _random_resp(n: int, k: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(k), size=n)


def _mvn_logpdf(v: np.ndarray, mean: np.ndarray, prec: np.ndarray) -> np.ndarray:
    """Log density of ``Normal(mean, inv(prec))`` at ``v`` (all arguments broadcast)."""
    diff = v - mean
    _, logdet = np.linalg.slogdet(prec)
    quad = np.einsum("...i,...ij,...j->...", diff, prec, diff)
    return 0.5 * (logdet - diff.shape[-1] * np.log(2 * np.pi) - quad)


def _sorted_by_first(means: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    order = np.argsort(means[:, 0])
    return [means[order], *(o[order] for o in others)]


# ----------------------------------------------------------------------- maximum likelihood


def test_em_log_likelihood_never_decreases_and_recovers_means():
    x = _separated()
    fit = em_gmm(x, 3, seed=0)
    assert fit.converged
    assert np.all(np.diff(fit.log_likelihood_trace) >= -1e-9)
    means, weights = _sorted_by_first(fit.means, fit.weights)
    # 300 points, component sd 0.7: the standard error of a mean is below 0.1.
    np.testing.assert_allclose(means, TRUE_MEANS, atol=0.25)
    np.testing.assert_allclose(weights, TRUE_WEIGHTS, atol=1e-12)  # every point classified
    assert fit.responsibilities.shape == (300, 3)
    assert fit.covariances.shape == (3, 2, 2)
    assert fit.log_likelihood == pytest.approx(log_likelihood(x, fit.params), abs=1e-10)


def test_em_monotone_from_random_start_on_overlapping_data():
    x = _overlapping()
    fit = em_gmm(x, 3, init=_random_resp(len(x), 3, seed=3), max_iter=150)
    trace = fit.log_likelihood_trace
    assert fit.num_iter > 10  # a genuine climb, not a one-step convergence
    assert len(trace) == fit.num_iter + 1
    assert np.all(np.diff(trace) >= -1e-9)


def test_em_is_elbo_ascent():
    """After each E-step ELBO == log-likelihood; after each M-step the ELBO does not drop."""
    x = _overlapping()
    resp = _random_resp(len(x), 3, seed=4)
    params = m_step(x, resp)
    for _ in range(30):
        before = elbo(x, params, resp)
        resp = e_step(x, params)  # max over q
        after_e = elbo(x, params, resp)
        assert after_e == pytest.approx(log_likelihood(x, params), abs=1e-8)
        assert after_e >= before - 1e-9
        params = m_step(x, resp)  # max over theta
        assert elbo(x, params, resp) >= after_e - 1e-9


def test_elbo_is_a_lower_bound_with_gap_equal_to_kl():
    x = _overlapping()
    params = m_step(x, _random_resp(len(x), 3, seed=5))
    q = _random_resp(len(x), 3, seed=6)
    post = e_step(x, params)
    kl = np.sum(q * (np.log(q) - np.log(post)))
    assert elbo(x, params, q) == pytest.approx(log_likelihood(x, params) - kl, abs=1e-8)


def test_log_likelihood_matches_scipy():
    x = _separated()
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3, 2, 2))
    params = GMMParams(
        weights=np.array([0.2, 0.3, 0.5]),
        means=rng.normal(size=(3, 2)),
        covariances=a @ a.transpose(0, 2, 1) + np.eye(2),
    )
    dens = sum(
        w * multivariate_normal(m, c).pdf(x)
        for w, m, c in zip(params.weights, params.means, params.covariances, strict=True)
    )
    assert log_likelihood(x, params) == pytest.approx(np.log(dens).sum(), rel=1e-12)


def test_em_accepts_params_init_and_1d_data():
    x = np.concatenate([np.random.default_rng(0).normal(mu, 0.5, 100) for mu in (-2.0, 2.0)])
    init = GMMParams(np.array([0.5, 0.5]), np.array([[-1.0], [1.0]]), np.ones((2, 1, 1)))
    fit = em_gmm(x, 2, init=init)
    assert fit.means.shape == (2, 1)
    np.testing.assert_allclose(np.sort(fit.means[:, 0]), [-2.0, 2.0], atol=0.2)


# ------------------------------------------------------------------------ Bayesian CAVI


def test_cavi_elbo_never_decreases():
    x = _overlapping()
    fit = cavi_gmm(x, 3, init_resp=_random_resp(len(x), 3, seed=7), max_iter=1000)
    assert fit.num_iter > 10
    assert np.all(np.diff(fit.elbo_trace) >= -1e-9 * np.abs(fit.elbo_trace[1:]).max())


def test_cavi_each_update_raises_elbo():
    x = _overlapping()
    prior = bayes_gmm_prior(x, 3)
    resp = _random_resp(len(x), 3, seed=8)
    post = cavi_m_step(x, resp, prior)
    current = cavi_elbo(x, resp, post, prior)
    for _ in range(20):
        resp = cavi_e_step(x, post)
        after_z = cavi_elbo(x, resp, post, prior)
        post = cavi_m_step(x, resp, prior)
        after_theta = cavi_elbo(x, resp, post, prior)
        assert after_z >= current - 1e-8
        assert after_theta >= after_z - 1e-8
        current = after_theta


def test_cavi_defaults_match_sklearn_convention():
    x = _separated()
    prior = bayes_gmm_prior(x, 3)
    assert prior.alpha0 == pytest.approx(1 / 3)
    assert prior.beta0 == 1.0
    assert prior.nu0 == 2.0
    np.testing.assert_allclose(prior.mean0, x.mean(0))
    np.testing.assert_allclose(np.linalg.inv(prior.W0), np.cov(x.T))


def test_cavi_agrees_with_sklearn():
    sklearn_mixture = pytest.importorskip("sklearn.mixture")
    x = _separated()
    ref = sklearn_mixture.BayesianGaussianMixture(
        n_components=3,
        weight_concentration_prior_type="dirichlet_distribution",
        covariance_type="full",
        reg_covar=0.0,
        tol=1e-10,
        max_iter=1000,
        random_state=0,
    ).fit(x)
    fit = cavi_gmm(x, 3, tol=1e-12, max_iter=1000)
    assert fit.converged and ref.converged_
    ours = _sorted_by_first(fit.means, fit.weights, fit.covariances, fit.nu)
    theirs = _sorted_by_first(ref.means_, ref.weights_, ref.covariances_, ref.degrees_of_freedom_)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-2)
    # same start (sklearn's k-means labels) gives the same path: agreement to round-off
    labels = pytest.importorskip("sklearn.cluster").KMeans(3, n_init=1, random_state=0).fit(x)
    same = cavi_gmm(x, 3, init_resp=np.eye(3)[labels.labels_], tol=1e-12, max_iter=1000)
    np.testing.assert_allclose(same.means, ref.means_, atol=1e-8)
    np.testing.assert_allclose(same.weights, ref.weights_, atol=1e-8)
    np.testing.assert_allclose(same.covariances, ref.covariances_, atol=1e-8)


def test_cavi_recovers_truth():
    x = _separated()
    fit = cavi_gmm(x, 3)
    means, weights = _sorted_by_first(fit.means, fit.weights)
    np.testing.assert_allclose(means, TRUE_MEANS, atol=0.3)
    np.testing.assert_allclose(weights, TRUE_WEIGHTS, atol=0.02)
    assert fit.covariances.shape == (3, 2, 2)
    assert fit.W.shape == (3, 2, 2) and fit.nu.shape == (3,) and fit.beta.shape == (3,)


@pytest.mark.parametrize("perturbed", [False, True])
def test_cavi_elbo_is_exact_by_monte_carlo(perturbed):
    """Bishop's closed-form L(q) equals a Monte Carlo estimate of E_q[log p - log q].

    ``z`` is summed out exactly; the draws are of (pi, mu, Lambda) from q. At a CAVI
    update ``q(theta) ∝ exp E_z[log p(x, z, theta)]`` the integrand is constant, so the
    estimate is exact up to round-off; for perturbed hyperparameters the tolerance is
    5 Monte Carlo standard errors.
    """
    x = _separated(n=60)
    prior = bayes_gmm_prior(x, 3)
    resp = _random_resp(len(x), 3, seed=9) * 0.3 + 0.7 * e_step(x, em_gmm(x, 3).params)
    post = cavi_m_step(x, resp, prior)
    if perturbed:
        post = NormalWishartPosterior(
            alpha=post.alpha * 1.3,
            beta=post.beta * 0.7,
            m=post.m + 0.1,
            W=post.W * 0.8,
            nu=post.nu + 3.0,
        )
    exact = cavi_elbo(x, resp, post, prior)

    rng = np.random.default_rng(0)
    num_draws, num_comp = 4000, 3
    pi = rng.dirichlet(post.alpha, size=num_draws)  # (S, K)
    q_lam = [wishart(df=nu, scale=w) for nu, w in zip(post.nu, post.W, strict=True)]
    p_lam = wishart(df=prior.nu0, scale=prior.W0)
    lam = np.stack([q.rvs(num_draws, random_state=rng) for q in q_lam], axis=1)  # (S, K, D, D)
    chol = np.linalg.cholesky(post.beta[:, None, None] * lam)  # beta_k Lambda_k = L L^T
    eps = rng.standard_normal((num_draws, num_comp, 2, 1))
    mu = post.m + np.linalg.solve(np.swapaxes(chol, -1, -2), eps)[..., 0]  # (S, K, D)

    log_ratio = (
        dirichlet.logpdf(pi.T, np.full(num_comp, prior.alpha0))
        - dirichlet.logpdf(pi.T, post.alpha)
        + _mvn_logpdf(mu, prior.mean0, prior.beta0 * lam).sum(-1)
        - _mvn_logpdf(mu, post.m, post.beta[:, None, None] * lam).sum(-1)
    )
    for k in range(num_comp):
        lam_k = np.moveaxis(lam[:, k], 0, -1)  # scipy wants (D, D, S)
        log_ratio += p_lam.logpdf(lam_k) - q_lam[k].logpdf(lam_k)
        log_lik = _mvn_logpdf(x[:, None, :], mu[None, :, k], lam[None, :, k])  # (N, S)
        log_ratio += (resp[:, k : k + 1] * (np.log(pi[None, :, k]) + log_lik)).sum(0)
    entropy_z = -np.sum(resp * np.log(resp))
    estimate = float(log_ratio.mean() + entropy_z)
    se = float(log_ratio.std() / num_draws**0.5)
    assert (se > 0.01) == perturbed
    assert abs(estimate - exact) < 5 * se + 1e-6 * abs(exact), (estimate, exact, se)
