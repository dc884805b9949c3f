"""Closed-form coordinate ascent for Gaussian mixtures: EM and variational EM (CAVI).

Both algorithms climb the same objective, the evidence lower bound

    ELBO(q, theta) = E_q[log p(x, z | theta)] + H(q)
                   = log p(x | theta) - KL(q(z) || p(z | x, theta)),

and this module is written so that the story can be read off the code:

* :func:`em_gmm` is classical EM for a maximum-likelihood Gaussian mixture. Its
  :func:`e_step` maximises the ELBO over ``q`` with ``theta`` fixed (the optimum is the
  exact posterior of the assignments, which closes the KL gap, so the ELBO then equals
  the log-likelihood); its :func:`m_step` maximises the ELBO over ``theta`` with ``q``
  fixed. :func:`elbo` evaluates the bound for any pair, so both claims can be checked.
* :func:`cavi_gmm` is variational EM (coordinate-ascent variational inference) for the
  conjugate Bayesian mixture of Bishop (2006), *Pattern Recognition and Machine
  Learning*, section 10.2: a Dirichlet prior on the weights and a Normal-Wishart prior
  on each component's mean and precision. The factorised posterior
  ``q(z) q(pi) prod_k q(mu_k, Lambda_k)`` is updated in closed form
  (:func:`cavi_e_step`, :func:`cavi_m_step`) and the full lower bound (Bishop eqs
  10.70-10.77, every constant included) is computed by :func:`cavi_elbo`.

Everything here is numpy/scipy only; results are small frozen dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import solve_triangular
from scipy.special import digamma, gammaln, logsumexp

__all__ = [
    "BayesGMMPrior",
    "CAVIResult",
    "EMResult",
    "GMMParams",
    "NormalWishartPosterior",
    "bayes_gmm_prior",
    "cavi_e_step",
    "cavi_elbo",
    "cavi_gmm",
    "cavi_m_step",
    "e_step",
    "elbo",
    "em_gmm",
    "log_likelihood",
    "m_step",
]

_LOG_2PI = float(np.log(2.0 * np.pi))
_TINY = 10.0 * np.finfo(np.float64).eps


# --------------------------------------------------------------------------- helpers


def _as_2d(x: ArrayLike) -> NDArray[np.float64]:
    """Return ``x`` as a float64 array of shape ``(N, D)`` (a 1-D input becomes ``(N, 1)``)."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"x must have shape (N, D) or (N,); got {arr.shape}")
    return arr


def _normalise_log(log_rho: NDArray[np.float64]) -> NDArray[np.float64]:
    """Row-wise softmax of unnormalised log responsibilities."""
    return np.exp(log_rho - logsumexp(log_rho, axis=1, keepdims=True))


def _sufficient_stats(
    x: NDArray[np.float64], resp: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Soft counts ``N_k``, weighted means ``xbar_k`` and weighted covariances ``S_k``.

    ``S_k = sum_n r_nk (x_n - xbar_k)(x_n - xbar_k)^T / N_k`` (Bishop eqs 10.51-10.53);
    an empty component gets ``xbar_k = 0`` and ``S_k = 0`` (they enter only multiplied
    by ``N_k``).
    """
    nk = resp.sum(axis=0)
    safe = nk + _TINY
    xbar = (resp.T @ x) / safe[:, None]
    diff = x[None, :, :] - xbar[:, None, :]  # (K, N, D)
    sk = np.einsum("nk,kni,knj->kij", resp, diff, diff) / safe[:, None, None]
    return nk, xbar, sk


def _kmeans_resp(x: NDArray[np.float64], num_components: int, seed: int) -> NDArray[np.float64]:
    """Hard responsibilities from k-means++ seeding followed by Lloyd iterations."""
    rng = np.random.default_rng(seed)
    num_obs = x.shape[0]
    if num_components > num_obs:
        raise ValueError(f"K={num_components} components but only {num_obs} observations")
    centres = [x[rng.integers(num_obs)]]
    for _ in range(1, num_components):
        dist2 = np.min(((x[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        total = dist2.sum()
        probs = dist2 / total if total > 0 else np.full(num_obs, 1.0 / num_obs)
        centres.append(x[rng.choice(num_obs, p=probs)])
    mu = np.asarray(centres)
    labels = np.full(num_obs, -1)
    for _ in range(100):
        new = np.argmin(((x[:, None, :] - mu[None]) ** 2).sum(-1), axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for k in range(num_components):
            if np.any(labels == k):
                mu[k] = x[labels == k].mean(axis=0)
    resp = np.zeros((num_obs, num_components))
    resp[np.arange(num_obs), labels] = 1.0
    return resp


def _check_resp(resp: ArrayLike, num_obs: int, num_components: int) -> NDArray[np.float64]:
    r = np.asarray(resp, dtype=np.float64)
    if r.shape != (num_obs, num_components):
        raise ValueError(
            f"responsibilities must have shape ({num_obs}, {num_components}); got {r.shape}"
        )
    if np.any(r < 0) or not np.allclose(r.sum(axis=1), 1.0):
        raise ValueError("responsibilities must be non-negative and sum to one per row")
    return r


def _converged(new: float, old: float, tol: float) -> bool:
    """Relative-change stopping rule ``|new - old| <= tol * max(1, |new|)``."""
    return abs(new - old) <= tol * max(1.0, abs(new))


# ------------------------------------------------------------------- maximum-likelihood EM


@dataclass(frozen=True)
class GMMParams:
    """Parameters ``theta`` of a Gaussian mixture with full covariances.

    Attributes
    ----------
    weights : ndarray, shape (K,)
        Mixing proportions (non-negative, summing to one).
    means : ndarray, shape (K, D)
        Component means.
    covariances : ndarray, shape (K, D, D)
        Component covariance matrices (symmetric positive definite).
    """

    weights: NDArray[np.float64]
    means: NDArray[np.float64]
    covariances: NDArray[np.float64]


@dataclass(frozen=True)
class EMResult:
    """Outcome of :func:`em_gmm`.

    Attributes
    ----------
    weights : ndarray, shape (K,)
        Maximum-likelihood mixing proportions.
    means : ndarray, shape (K, D)
        Maximum-likelihood component means.
    covariances : ndarray, shape (K, D, D)
        Maximum-likelihood covariances (each with ``reg_covar`` added to its diagonal).
    responsibilities : ndarray, shape (N, K)
        ``p(z_n = k | x_n, theta)`` at the returned parameters (the final E-step).
    log_likelihood_trace : ndarray, shape (num_iter + 1,)
        ``log p(x | theta_t)`` at the initial parameters and after every iteration. It
        equals the ELBO after each E-step and never decreases.
    converged : bool
        Whether the relative change of the log-likelihood fell below ``tol``.
    num_iter : int
        Number of M-steps taken after the initial one.
    """

    weights: NDArray[np.float64]
    means: NDArray[np.float64]
    covariances: NDArray[np.float64]
    responsibilities: NDArray[np.float64]
    log_likelihood_trace: NDArray[np.float64]
    converged: bool
    num_iter: int

    @property
    def params(self) -> GMMParams:
        """The fitted ``theta`` as a :class:`GMMParams`."""
        return GMMParams(self.weights, self.means, self.covariances)

    @property
    def log_likelihood(self) -> float:
        """Final log-likelihood ``log p(x | theta)``."""
        return float(self.log_likelihood_trace[-1])


def _log_joint(x: NDArray[np.float64], params: GMMParams) -> NDArray[np.float64]:
    """``log pi_k + log N(x_n | mu_k, Sigma_k)`` as an ``(N, K)`` array."""
    num_obs, dim = x.shape
    num_components = params.weights.shape[0]
    out = np.empty((num_obs, num_components))
    with np.errstate(divide="ignore"):
        log_w = np.log(params.weights)
    for k in range(num_components):
        chol = np.linalg.cholesky(params.covariances[k])
        white = solve_triangular(chol, (x - params.means[k]).T, lower=True)
        log_det = 2.0 * np.log(np.diag(chol)).sum()
        out[:, k] = log_w[k] - 0.5 * (dim * _LOG_2PI + log_det + (white**2).sum(axis=0))
    return out


def log_likelihood(x: ArrayLike, params: GMMParams) -> float:
    """Marginal log-likelihood ``log p(x | theta) = sum_n log sum_k pi_k N(x_n | mu_k, Sigma_k)``.

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    params : GMMParams
        Mixture parameters ``theta``.

    Returns
    -------
    float
    """
    return float(logsumexp(_log_joint(_as_2d(x), params), axis=1).sum())


def e_step(x: ArrayLike, params: GMMParams) -> NDArray[np.float64]:
    """E-step: maximise the ELBO over ``q`` with ``theta`` fixed: ``q(z_n) = p(z_n | x_n, theta)``.

    The maximiser is the exact posterior of each assignment, so after this step
    ``KL(q || p(z | x, theta)) = 0`` and ``elbo(x, params, resp) == log_likelihood(x, params)``.

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    params : GMMParams
        Current ``theta``.

    Returns
    -------
    ndarray, shape (N, K)
        Responsibilities ``r_nk = q(z_n = k)``.
    """
    return _normalise_log(_log_joint(_as_2d(x), params))


def m_step(x: ArrayLike, resp: ArrayLike, reg_covar: float = 1e-6) -> GMMParams:
    """M-step: maximise the ELBO over ``theta`` with ``q`` fixed.

    Only ``E_q[log p(x, z | theta)]`` depends on ``theta``; its maximiser is the weighted
    maximum-likelihood estimate ``pi_k = N_k / N``, ``mu_k = xbar_k``, ``Sigma_k = S_k``.
    ``reg_covar`` is added to the diagonal of every ``Sigma_k`` (a small ridge keeping
    the covariances invertible; with ``reg_covar=0`` the step is the exact maximiser).

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    resp : array_like, shape (N, K)
        Responsibilities ``q(z_n = k)``.
    reg_covar : float, default 1e-6
        Ridge added to each covariance diagonal.

    Returns
    -------
    GMMParams
    """
    x = _as_2d(x)
    resp = np.asarray(resp, dtype=np.float64)
    nk, xbar, sk = _sufficient_stats(x, resp)
    covariances = sk + reg_covar * np.eye(x.shape[1])[None]
    return GMMParams(weights=nk / nk.sum(), means=xbar, covariances=covariances)


def elbo(x: ArrayLike, params: GMMParams, resp: ArrayLike) -> float:
    """Evidence lower bound ``E_q[log p(x, z | theta)] + H(q)`` for ``q(z_n = k) = resp[n, k]``.

    Equals ``log p(x | theta) - KL(q || p(z | x, theta)) <= log p(x | theta)``, with
    equality exactly when ``resp`` is the E-step output for ``params``.

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    params : GMMParams
        Mixture parameters ``theta``.
    resp : array_like, shape (N, K)
        Variational distribution of the assignments.

    Returns
    -------
    float
    """
    resp = np.asarray(resp, dtype=np.float64)
    log_joint = _log_joint(_as_2d(x), params)
    pos = resp > 0
    expected = np.sum(resp[pos] * log_joint[pos])
    entropy = -np.sum(resp[pos] * np.log(resp[pos]))
    return float(expected + entropy)


def em_gmm(
    x: ArrayLike,
    K: int,
    *,
    max_iter: int = 200,
    tol: float = 1e-8,
    seed: int = 0,
    init: GMMParams | ArrayLike | None = None,
    reg_covar: float = 1e-6,
) -> EMResult:
    """Maximum-likelihood Gaussian mixture (full covariances) by expectation-maximisation.

    Each iteration is one M-step followed by one E-step; both are coordinate-ascent
    steps on the ELBO, so the log-likelihood (the ELBO after an E-step) never decreases.

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    K : int
        Number of components.
    max_iter : int, default 200
        Maximum number of iterations.
    tol : float, default 1e-8
        Stop when ``|ll_t - ll_{t-1}| <= tol * max(1, |ll_t|)``.
    seed : int, default 0
        Seed of the k-means++ initialisation (used when ``init`` is None).
    init : GMMParams or array_like of shape (N, K), optional
        Initial parameters, or initial responsibilities from which a first M-step is
        taken. Default: hard assignments from k-means (k-means++ seeding).
    reg_covar : float, default 1e-6
        Ridge added to the covariance diagonals in every M-step.

    Returns
    -------
    EMResult
    """
    x = _as_2d(x)
    num_obs = x.shape[0]
    if isinstance(init, GMMParams):
        params = init
    else:
        resp0 = _kmeans_resp(x, K, seed) if init is None else _check_resp(init, num_obs, K)
        params = m_step(x, resp0, reg_covar)
    resp = e_step(x, params)
    trace = [log_likelihood(x, params)]
    converged = False
    num_iter = 0
    for num_iter in range(1, max_iter + 1):  # noqa: B007
        params = m_step(x, resp, reg_covar)  # max over theta, q fixed
        resp = e_step(x, params)  # max over q, theta fixed: ELBO == log-likelihood
        trace.append(log_likelihood(x, params))
        if _converged(trace[-1], trace[-2], tol):
            converged = True
            break
    return EMResult(
        weights=params.weights,
        means=params.means,
        covariances=params.covariances,
        responsibilities=resp,
        log_likelihood_trace=np.asarray(trace),
        converged=converged,
        num_iter=num_iter,
    )


# ------------------------------------------------------------ Bayesian GMM by CAVI


@dataclass(frozen=True)
class BayesGMMPrior:
    """Conjugate prior of the Bayesian Gaussian mixture (Bishop 2006, eqs 10.39-10.40).

    ``pi ~ Dirichlet(alpha0 * 1_K)`` and, for each component,
    ``Lambda_k ~ Wishart(W0, nu0)``, ``mu_k | Lambda_k ~ Normal(mean0, (beta0 Lambda_k)^-1)``.

    Attributes
    ----------
    alpha0 : float
        Dirichlet concentration of each weight.
    beta0 : float
        Precision scaling of the mean prior.
    mean0 : ndarray, shape (D,)
        Prior mean of the component means.
    W0 : ndarray, shape (D, D)
        Wishart scale matrix (``E[Lambda_k] = nu0 * W0``).
    nu0 : float
        Wishart degrees of freedom (``> D - 1``).
    """

    alpha0: float
    beta0: float
    mean0: NDArray[np.float64]
    W0: NDArray[np.float64]
    nu0: float


def bayes_gmm_prior(
    x: ArrayLike,
    K: int,
    *,
    alpha0: float | None = None,
    beta0: float = 1.0,
    mean0: ArrayLike | None = None,
    W0: ArrayLike | None = None,
    nu0: float | None = None,
) -> BayesGMMPrior:
    """Fill in the defaults of scikit-learn's ``BayesianGaussianMixture``.

    With ``weight_concentration_prior_type="dirichlet_distribution"`` and
    ``covariance_type="full"`` scikit-learn uses ``alpha0 = 1 / K``, ``mean0 = mean(x)``,
    ``beta0 = 1``, ``nu0 = D`` and ``covariance_prior = cov(x)`` (``ddof=1``), which is
    its name for ``W0^-1``; hence ``W0 = inv(cov(x))``.

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations (used only for the data-dependent defaults).
    K : int
        Number of components.
    alpha0, beta0, mean0, W0, nu0
        Prior hyperparameters; None picks the default above.

    Returns
    -------
    BayesGMMPrior
    """
    x = _as_2d(x)
    dim = x.shape[1]
    if W0 is None:
        W0 = np.linalg.inv(np.atleast_2d(np.cov(x.T)))
    w0 = np.asarray(W0, dtype=np.float64)
    mean = x.mean(axis=0) if mean0 is None else np.asarray(mean0, dtype=np.float64)
    nu = float(dim) if nu0 is None else float(nu0)
    if nu <= dim - 1:
        raise ValueError(f"nu0 must exceed D - 1 = {dim - 1}; got {nu}")
    if w0.shape != (dim, dim) or mean.shape != (dim,):
        raise ValueError(f"W0 must be ({dim}, {dim}) and mean0 ({dim},)")
    return BayesGMMPrior(
        alpha0=1.0 / K if alpha0 is None else float(alpha0),
        beta0=float(beta0),
        mean0=mean,
        W0=w0,
        nu0=nu,
    )


@dataclass(frozen=True)
class NormalWishartPosterior:
    """Variational factor ``q(pi) prod_k q(mu_k, Lambda_k)`` (Bishop eqs 10.57-10.63).

    ``q(pi) = Dirichlet(alpha)``, ``q(Lambda_k) = Wishart(W_k, nu_k)`` and
    ``q(mu_k | Lambda_k) = Normal(m_k, (beta_k Lambda_k)^-1)``.

    Attributes
    ----------
    alpha : ndarray, shape (K,)
    beta : ndarray, shape (K,)
    m : ndarray, shape (K, D)
    W : ndarray, shape (K, D, D)
    nu : ndarray, shape (K,)
    """

    alpha: NDArray[np.float64]
    beta: NDArray[np.float64]
    m: NDArray[np.float64]
    W: NDArray[np.float64]
    nu: NDArray[np.float64]


def _expected_log_weights(alpha: NDArray[np.float64]) -> NDArray[np.float64]:
    """``E[ln pi_k] = psi(alpha_k) - psi(sum alpha)`` (Bishop eq 10.66)."""
    return digamma(alpha) - digamma(alpha.sum())


def _expected_log_det(W: NDArray[np.float64], nu: NDArray[np.float64]) -> NDArray[np.float64]:
    """``E[ln |Lambda_k|] = sum_i psi((nu_k + 1 - i) / 2) + D ln 2 + ln |W_k|`` (eq 10.65)."""
    dim = W.shape[-1]
    _, logdet = np.linalg.slogdet(W)
    i = np.arange(1, dim + 1)
    return digamma(0.5 * (nu[:, None] + 1.0 - i)).sum(axis=1) + dim * np.log(2.0) + logdet


def _log_wishart_norm(W: NDArray[np.float64], nu: NDArray[np.float64] | float) -> NDArray:
    """``ln B(W, nu)``, the log normaliser of the Wishart density (Bishop eq B.79)."""
    W = np.asarray(W, dtype=np.float64)
    nu = np.asarray(nu, dtype=np.float64)
    dim = W.shape[-1]
    _, logdet = np.linalg.slogdet(W)
    i = np.arange(1, dim + 1)
    log_gamma_d = 0.25 * dim * (dim - 1) * np.log(np.pi) + gammaln(
        0.5 * (nu[..., None] + 1.0 - i)
    ).sum(axis=-1)
    return -0.5 * nu * logdet - (0.5 * nu * dim * np.log(2.0) + log_gamma_d)


def _log_dirichlet_norm(alpha: NDArray[np.float64]) -> float:
    """``ln C(alpha) = ln Gamma(sum alpha) - sum ln Gamma(alpha_k)`` (Bishop eq B.23)."""
    return float(gammaln(alpha.sum()) - gammaln(alpha).sum())


def cavi_m_step(x: ArrayLike, resp: ArrayLike, prior: BayesGMMPrior) -> NormalWishartPosterior:
    """Update ``q(pi, mu, Lambda)`` with ``q(z)`` fixed: the optimal factor in closed form.

    Implements Bishop eqs 10.58 and 10.60-10.63 (with the corrected
    ``nu_k = nu0 + N_k``).

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    resp : array_like, shape (N, K)
        ``q(z_n = k)``.
    prior : BayesGMMPrior
        Prior hyperparameters.

    Returns
    -------
    NormalWishartPosterior
    """
    x = _as_2d(x)
    resp = np.asarray(resp, dtype=np.float64)
    nk, xbar, sk = _sufficient_stats(x, resp)
    alpha = prior.alpha0 + nk
    beta = prior.beta0 + nk
    m = (prior.beta0 * prior.mean0 + nk[:, None] * xbar) / beta[:, None]
    diff = xbar - prior.mean0
    w_inv = (
        np.linalg.inv(prior.W0)[None]
        + nk[:, None, None] * sk
        + (prior.beta0 * nk / beta)[:, None, None] * np.einsum("ki,kj->kij", diff, diff)
    )
    W = np.linalg.inv(w_inv)
    W = 0.5 * (W + np.swapaxes(W, -1, -2))
    nu = prior.nu0 + nk
    return NormalWishartPosterior(alpha=alpha, beta=beta, m=m, W=W, nu=nu)


def cavi_e_step(x: ArrayLike, post: NormalWishartPosterior) -> NDArray[np.float64]:
    """Update ``q(z)`` with ``q(pi, mu, Lambda)`` fixed: ``q(z_n = k) ∝ exp E[ln p(x_n, z_n=k)]``.

    Implements Bishop eqs 10.46-10.49 and 10.64-10.66.

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    post : NormalWishartPosterior
        Current factor over weights, means and precisions.

    Returns
    -------
    ndarray, shape (N, K)
        Responsibilities.
    """
    x = _as_2d(x)
    dim = x.shape[1]
    diff = x[:, None, :] - post.m[None]  # (N, K, D)
    quad = dim / post.beta + post.nu * np.einsum("nki,kij,nkj->nk", diff, post.W, diff)
    log_rho = (
        _expected_log_weights(post.alpha)
        + 0.5 * _expected_log_det(post.W, post.nu)
        - 0.5 * dim * _LOG_2PI
        - 0.5 * quad
    )
    return _normalise_log(log_rho)


def cavi_elbo(
    x: ArrayLike, resp: ArrayLike, post: NormalWishartPosterior, prior: BayesGMMPrior
) -> float:
    """The full variational lower bound ``L(q)`` of the Bayesian GMM (Bishop eqs 10.70-10.77).

    Valid for any responsibilities and any posterior hyperparameters (not only at a
    CAVI fixed point); every normalising constant is kept, so ``L(q) <= log p(x)``.

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    resp : array_like, shape (N, K)
        ``q(z)``.
    post : NormalWishartPosterior
        ``q(pi, mu, Lambda)``.
    prior : BayesGMMPrior
        Prior hyperparameters.

    Returns
    -------
    float
    """
    x = _as_2d(x)
    resp = np.asarray(resp, dtype=np.float64)
    dim = x.shape[1]
    num_components = resp.shape[1]
    nk, xbar, sk = _sufficient_stats(x, resp)
    alpha, beta, m, W, nu = post.alpha, post.beta, post.m, post.W, post.nu
    log_pi = _expected_log_weights(alpha)  # ln pi~_k
    log_lam = _expected_log_det(W, nu)  # ln Lambda~_k
    d_xm = xbar - m
    d_m0 = m - prior.mean0
    tr_sw = np.einsum("kij,kji->k", sk, W)
    # 10.71  E[ln p(X | Z, mu, Lambda)]
    e_log_px = 0.5 * np.sum(
        nk
        * (
            log_lam
            - dim / beta
            - nu * tr_sw
            - nu * np.einsum("ki,kij,kj->k", d_xm, W, d_xm)
            - dim * _LOG_2PI
        )
    )
    # 10.72  E[ln p(Z | pi)]
    e_log_pz = float(np.sum(resp * log_pi))
    # 10.73  E[ln p(pi)]
    e_log_ppi = _log_dirichlet_norm(np.full(num_components, prior.alpha0)) + (
        prior.alpha0 - 1.0
    ) * float(log_pi.sum())
    # 10.74  E[ln p(mu, Lambda)]
    w0_inv = np.linalg.inv(prior.W0)
    e_log_pmulam = (
        0.5
        * np.sum(
            dim * np.log(prior.beta0 / (2.0 * np.pi))
            + log_lam
            - dim * prior.beta0 / beta
            - prior.beta0 * nu * np.einsum("ki,kij,kj->k", d_m0, W, d_m0)
        )
        + num_components * float(_log_wishart_norm(prior.W0, prior.nu0))
        + 0.5 * (prior.nu0 - dim - 1.0) * float(log_lam.sum())
        - 0.5 * float(np.sum(nu * np.einsum("ij,kji->k", w0_inv, W)))
    )
    # 10.75  E[ln q(Z)]
    pos = resp > 0
    e_log_qz = float(np.sum(resp[pos] * np.log(resp[pos])))
    # 10.76  E[ln q(pi)]
    e_log_qpi = float(np.sum((alpha - 1.0) * log_pi)) + _log_dirichlet_norm(alpha)
    # 10.77  E[ln q(mu, Lambda)], with H[q(Lambda_k)] from eq B.82
    entropy_lam = -_log_wishart_norm(W, nu) - 0.5 * (nu - dim - 1.0) * log_lam + 0.5 * nu * dim
    e_log_qmulam = float(
        np.sum(0.5 * log_lam + 0.5 * dim * np.log(beta / (2.0 * np.pi)) - 0.5 * dim - entropy_lam)
    )
    return float(
        e_log_px + e_log_pz + e_log_ppi + e_log_pmulam - e_log_qz - e_log_qpi - e_log_qmulam
    )


@dataclass(frozen=True)
class CAVIResult:
    """Outcome of :func:`cavi_gmm`: the variational posterior of a Bayesian GMM.

    Attributes
    ----------
    alpha : ndarray, shape (K,)
        ``q(pi) = Dirichlet(alpha)``.
    beta : ndarray, shape (K,)
        Precision scaling of ``q(mu_k | Lambda_k) = Normal(m_k, (beta_k Lambda_k)^-1)``.
    m : ndarray, shape (K, D)
        Posterior means of the component means.
    W : ndarray, shape (K, D, D)
        Wishart scale matrices of ``q(Lambda_k) = Wishart(W_k, nu_k)``.
    nu : ndarray, shape (K,)
        Wishart degrees of freedom.
    resp : ndarray, shape (N, K)
        ``q(z_n = k)``: the responsibilities from which the returned factor was computed
        (each iteration ends with the update of ``q(pi, mu, Lambda)``).
    elbo_trace : ndarray, shape (num_iter + 1,)
        Full lower bound ``L(q)`` (Bishop eqs 10.70-10.77, constants included) after the
        initial update and after every iteration. It never decreases.
    converged : bool
        Whether the relative change of ``L(q)`` fell below ``tol``.
    num_iter : int
        Number of iterations after the initial update.
    prior : BayesGMMPrior
        The prior hyperparameters used (defaults filled in).
    """

    alpha: NDArray[np.float64]
    beta: NDArray[np.float64]
    m: NDArray[np.float64]
    W: NDArray[np.float64]
    nu: NDArray[np.float64]
    resp: NDArray[np.float64]
    elbo_trace: NDArray[np.float64]
    converged: bool
    num_iter: int
    prior: BayesGMMPrior

    @property
    def posterior(self) -> NormalWishartPosterior:
        """The factor ``q(pi, mu, Lambda)`` as a :class:`NormalWishartPosterior`."""
        return NormalWishartPosterior(self.alpha, self.beta, self.m, self.W, self.nu)

    @property
    def weights(self) -> NDArray[np.float64]:
        """Posterior mean of the weights, ``alpha / sum(alpha)``."""
        return self.alpha / self.alpha.sum()

    @property
    def means(self) -> NDArray[np.float64]:
        """Posterior mean of the component means, ``m``."""
        return self.m

    @property
    def covariances(self) -> NDArray[np.float64]:
        """``inv(nu_k W_k) = inv(E[Lambda_k])`` (scikit-learn's ``covariances_``)."""
        return np.linalg.inv(self.nu[:, None, None] * self.W)

    @property
    def elbo(self) -> float:
        """Final lower bound."""
        return float(self.elbo_trace[-1])


def cavi_gmm(
    x: ArrayLike,
    K: int,
    *,
    alpha0: float | None = None,
    beta0: float = 1.0,
    mean0: ArrayLike | None = None,
    W0: ArrayLike | None = None,
    nu0: float | None = None,
    max_iter: int = 500,
    tol: float = 1e-8,
    seed: int = 0,
    init_resp: ArrayLike | None = None,
) -> CAVIResult:
    """Variational Bayesian Gaussian mixture by coordinate ascent (Bishop 2006, section 10.2).

    Starts from responsibilities, updates ``q(pi, mu, Lambda)`` (:func:`cavi_m_step`),
    then alternates ``q(z)`` (:func:`cavi_e_step`) and ``q(pi, mu, Lambda)`` updates. Each
    update maximises the lower bound over one factor, so :attr:`CAVIResult.elbo_trace`
    never decreases. Defaults match scikit-learn's ``BayesianGaussianMixture`` with
    ``weight_concentration_prior_type="dirichlet_distribution"`` and
    ``covariance_type="full"`` (see :func:`bayes_gmm_prior`).

    Parameters
    ----------
    x : array_like, shape (N, D) or (N,)
        Observations.
    K : int
        Number of components.
    alpha0, beta0, mean0, W0, nu0
        Prior hyperparameters (:class:`BayesGMMPrior`); None picks scikit-learn's default.
    max_iter : int, default 500
        Maximum number of iterations.
    tol : float, default 1e-8
        Stop when ``|L_t - L_{t-1}| <= tol * max(1, |L_t|)``.
    seed : int, default 0
        Seed of the k-means++ initialisation (used when ``init_resp`` is None).
    init_resp : array_like of shape (N, K), optional
        Initial responsibilities. Default: hard assignments from k-means.

    Returns
    -------
    CAVIResult
    """
    x = _as_2d(x)
    prior = bayes_gmm_prior(x, K, alpha0=alpha0, beta0=beta0, mean0=mean0, W0=W0, nu0=nu0)
    resp = _kmeans_resp(x, K, seed) if init_resp is None else _check_resp(init_resp, len(x), K)
    post = cavi_m_step(x, resp, prior)
    trace = [cavi_elbo(x, resp, post, prior)]
    converged = False
    num_iter = 0
    for num_iter in range(1, max_iter + 1):  # noqa: B007
        resp = cavi_e_step(x, post)  # optimal q(z) given q(pi, mu, Lambda)
        post = cavi_m_step(x, resp, prior)  # optimal q(pi, mu, Lambda) given q(z)
        trace.append(cavi_elbo(x, resp, post, prior))
        if _converged(trace[-1], trace[-2], tol):
            converged = True
            break
    return CAVIResult(
        alpha=post.alpha,
        beta=post.beta,
        m=post.m,
        W=post.W,
        nu=post.nu,
        resp=resp,
        elbo_trace=np.asarray(trace),
        converged=converged,
        num_iter=num_iter,
        prior=prior,
    )
