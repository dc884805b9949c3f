"""Validated variational inference: bounds on the posterior's errors without a reference.

Huggins, Kasprzak, Campbell and Broderick (2020), "Validated variational inference via
practical posterior error bounds" (AISTATS; arXiv:1910.04102), bound how far the means
and standard deviations of a variational posterior ``q`` can be from those of the exact
posterior ``p = p(z | x)``, from two numbers of the same guide: the ELBO and the chi-square
upper bound (CUBO, Dieng, Tran, Ranganath, Paisley and Blei 2017). Both are estimated
from the log importance weights of guide draws,

    log w_s = log p(x, z_s) - log q(z_s),   z_s ~ q,   s = 1..S,

the weights behind k-hat (:mod:`pyrovi.diagnostics.psis`). The results below are cited by
section and content; the theorem numbers could not be checked against the paper's text
here, so they are given as "(HKCB section N)".

Step 1: a divergence from the ELBO and the CUBO
-----------------------------------------------
``ELBO = E_q[log w] <= log p(x) <= CUBO_2 = 1/2 log E_q[w^2]`` (Jensen twice; Dieng et
al. 2017, and HKCB section 5 for the bound on the divergence). Two divergences follow:

* ``KL(q || p) = log p(x) - ELBO <= CUBO_2 - ELBO``  (``kl_upper``);
* the Rényi divergence of order 2 of the *posterior from q*,
  ``D_2(p || q) = log E_q[(p(z | x) / q(z))^2] = 2 (CUBO_2 - log p(x))``, so
  ``D_2(p || q) <= 2 (CUBO_2 - ELBO)``  (``d2_upper``; HKCB: ``D_alpha <=
  alpha / (alpha - 1) (CUBO_alpha - ELBO)`` at ``alpha = 2``).

Any lower bound on ``log p(x)`` may replace the ELBO (``log_evidence=``); the exact value
removes the slack ``2 KL(q || p)``, but the estimate gets noisier: with the ELBO from the
same draws the first-order noise of ``mean(w^2)`` cancels against that of ``mean(log w)``
(for a mean shift of 0.15 q sd in 5 dimensions the standard error of ``d2_upper`` is 0.001
with the ELBO, 0.005 with the exact ``log p(x)``), so the default is the ELBO.
The chi-square divergence is
``chi2(p || q) = E_q[(p / q - 1)^2] = exp(D_2(p || q)) - 1 <= expm1(d2_upper)``
(``chi2_upper``). Everything else is a function of it, so it is the one number whose
Monte Carlo error matters (below).

Step 2: whitened coordinates
----------------------------
Divergences are invariant under bijections, so the bounds may be stated in q's whitened
unconstrained coordinates ``u = L^{-1}(zeta - mu_q)`` (``zeta`` the unconstrained latent
vector, ``L L^T = Sigma_q``). There q has mean 0 and covariance ``I_d``; for a Gaussian
guide it is ``N(0, I_d)`` and every moment constant is known from ``d``:
``C_4 = inf_y E||u - y||^4 = E||u||^4 = d (d + 2)`` and, for every unit vector ``a``,
``E(a^T u)^4 = 3``. For a non-Gaussian guide (a flow) pass whitened draws of q and they
are estimated: ``C_4`` by the mean of ``||u - u_bar||^4``, and ``sup_a E(a^T u)^4`` by the
largest eigenvalue of ``E[||u||^2 u u^T]`` (valid, as ``(a^T u)^4 <= ||u||^2 (a^T u)^2``,
but loose by a factor up to ``(d + 2) / 3``).

A bound ``B`` on ``||m_p - m_q||`` in whitened coordinates is a bound on the Mahalanobis
norm of the mean error, hence on **every** coordinate's ``|mean error| / (q's marginal
sd)``: ``|e_i^T L du| <= ||L^T e_i|| ||du||`` and ``||L^T e_i|| = sd_q,i``. Likewise the
marginal sd of coordinate ``i`` is ``sd_q,i`` times the sd of ``a^T u`` with
``a = L^T e_i / sd_q,i``, so a bound on ``|sd_p(a^T u) - 1|`` over unit vectors is a bound
on every ``|sd_p,i - sd_q,i| / sd_q,i``. Both are in **q sds**, in the unconstrained space.

Step 3: from the divergence to the errors
------------------------------------------
Two routes, each valid; the reported bound is the smaller.

*The paper's route, through the 2-Wasserstein distance* (HKCB section 4, "polynomial
moments"): Villani (2009, Theorem 6.15) gives ``W_p^p(q, p) <= 2^(p-1) int ||u - y||^p
|p - q|(du)``, and Cauchy-Schwarz against ``q`` turns the integral into
``C_2p^(1/2) chi2(p || q)^(1/2)``, so

    W_2(q, p) <= sqrt(2) C_4^(1/4) chi2(p || q)^(1/4)                  (w2_bound)

(HKCB state it with the looser constant 2 for every ``p``; ``2^(1 - 1/p) = sqrt(2)`` at
``p = 2``). The moment bounds of HKCB section 3 then give ``||m_p - m_q|| <= W_1 <= W_2``
and, per direction, ``|sd_p - sd_q| <= W_2`` (a projection is 1-Lipschitz and an sd is an
L2 norm of the centred variable).

*Direct Cauchy-Schwarz* (the step inside the paper's argument, applied to the moments
themselves): for any ``f``, ``E_p f - E_q f = E_q[(f - E_q f)(p / q - 1)]``, so
``|E_p f - E_q f| <= sd_q(f) sqrt(chi2)``. With ``f = a^T u`` (``sd_q = 1``):

    ||m_p - m_q|| <= sqrt(chi2(p || q))                                (mean route)

With ``f = (a^T u)^2`` (``sd_q(f) = sqrt(kappa - 1)``, ``kappa = E(a^T u)^4``, 3 for a
Gaussian) and ``s = sqrt(chi2)``: ``E_p (a^T u)^2`` is within ``c s`` of 1
(``c = sqrt(kappa - 1)``) and ``(E_p a^T u)^2 <= s^2``, so the variance under p is in
``[1 - c s - s^2, 1 + c s]`` and

    |sd_p - 1| <= max(sqrt(1 + c s) - 1, 1 - sqrt(max(0, 1 - c s - s^2)))   (sd route)

The W2 route grows as the fourth root of chi2, the direct one as its square root: for a
small discrepancy ``delta`` (a mean shift of ``delta`` q sd, or an sd off by a factor
``1 + delta``) the direct bounds are about ``1.4 delta`` while the W2 bound is of order
``sqrt(delta)``; the W2 bound wins only for large divergences. ``w2_bound`` itself is
reported as the paper's bound on ``W_2`` (it also bounds correlations and tails), and is
loose by construction for small discrepancies.

Monte Carlo uncertainty and when the CUBO is not estimable
-----------------------------------------------------------
``CUBO_2`` is estimated by ``1/2 log mean(w_s^2)``: biased low (Jensen) and heavy tailed,
because ``w^2`` has a Pareto tail of twice the shape of ``w``. Its standard error is by
the delta method: the estimate of ``d2_upper = log mean(w^2) - 2 mean(log w)`` has
influence ``w_s^2 / mean(w^2) - 1 - 2 (log w_s - mean(log w))`` per draw (the ELBO from
the same draws, so the two errors partly cancel). Each ``*_high`` value is the bound at
``d2_upper + 2 se``: an upper confidence value (about 97.5%, one sided, where the delta
method holds). The first-order bias of the log is ``-se^2``-sized, smaller than the margin.

The delta method needs a finite variance of ``w^2``, and the CUBO a finite mean of it.
The PSIS k-hat of ``2 log w`` (``cubo_khat``) estimates the tail shape of ``w^2``, twice
that of ``w``: below 1 the mean is finite, below 0.5 the variance too. The bounds are
reported only when it is at most :data:`CUBO_KHAT_MAX` (0.5, i.e. k-hat of ``log w`` about
0.25), where the standard error means something. The margin is needed: for Gaussian q and
p the weights' tail is only asymptotically Pareto and k-hat reads low; with q the
mean-field fit of a 20-dimensional posterior with correlations 0.05 (the largest variance
ratio exactly 2, so ``E_q[w^2]`` is infinite) 4,000 draws gave 0.68. For Gaussians,
``cubo_khat`` near 0.5 is q narrower than the posterior by about 13% in sd in some
direction. Above it the CUBO is not estimable: every bound is ``inf`` and ``reliable`` is
False with a reason, rather than a small number that is an artefact of the draws.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.special import logsumexp

from pyrovi.diagnostics.psis import KHAT_GOOD, psis_khat

__all__ = [
    "BOUND_SE_MULTIPLIER",
    "CUBO_KHAT_MAX",
    "cubo",
    "validated_bounds",
]

CUBO_KHAT_MAX = KHAT_GOOD
"""The CUBO is estimable when the PSIS k-hat of ``2 log w`` is at or below this."""

BOUND_SE_MULTIPLIER = 2.0
"""The ``*_high`` values are the bounds at the divergence plus this many standard errors."""

GAUSSIAN_KURTOSIS = 3.0
"""``E(a^T u)^4`` for a unit vector ``a`` and ``u ~ N(0, I)``."""


def cubo(log_weights: np.ndarray, n: float = 2) -> tuple[float, float]:
    """The chi upper bound ``CUBO_n = 1/n log E_q[w^n]`` on ``log p(x)``, estimated.

    Parameters
    ----------
    log_weights : numpy.ndarray
        Log importance weights ``log p(x, z_s) - log q(z_s)`` of independent draws
        ``z_s ~ q`` (any shape, flattened). ``-inf`` (zero weight) is allowed.
    n : float, default 2
        Order, at least 1 (``n = 1`` is the importance sampling estimate of ``log p(x)``).

    Returns
    -------
    value : float
        ``1/n (logsumexp(n log w) - log S)``, computed stably. Biased low (see the module
        docstring). ``-inf`` when every weight is zero.
    se : float
        Delta-method standard error, ``sd(w^n / mean(w^n)) / (n sqrt(S))``; meaningful only
        while ``w^n`` has a finite variance (check the PSIS k-hat of ``n log w``).

    Raises
    ------
    ValueError
        On NaN or ``+inf`` log weights, ``n < 1``, or fewer than two draws.
    """
    lw = _checked(log_weights)
    if not n >= 1:
        raise ValueError(f"the CUBO order n must be at least 1, got {n}")
    log_mean = float(logsumexp(n * lw) - math.log(lw.size))
    if log_mean == -math.inf:
        return -math.inf, math.nan
    ratio = np.exp(n * lw - log_mean)  # w^n / mean(w^n), mean 1
    return log_mean / n, float(np.std(ratio, ddof=1) / (n * math.sqrt(lw.size)))


def validated_bounds(
    log_weights: np.ndarray,
    dim: int,
    *,
    whitened_draws: np.ndarray | None = None,
    log_evidence: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Bounds on the errors of q's means and sds, in q sds, from the ELBO and the CUBO.

    Parameters
    ----------
    log_weights : numpy.ndarray
        Log importance weights of ``S`` independent guide draws (flattened), e.g. from
        :func:`pyrovi.infer.util.guide_log_weights`.
    dim : int
        ``d``, the number of unconstrained latent coordinates
        (:func:`pyrovi.infer.util.latent_dim`).
    whitened_draws : numpy.ndarray, optional
        Shape ``(n, d)``: draws of q in its whitened unconstrained coordinates (mean 0,
        covariance ``I``), for a guide that is not Gaussian. By default q is taken to be
        Gaussian in the unconstrained space and its moment constants are exact.
    log_evidence : float, optional
        A lower bound on ``log p(x)``, or its exact value, used instead of the ELBO
        (tighter: the slack ``2 KL(q || p)`` goes). It must not be an overestimate.
    seed : int, default 0
        Unused today (the standard errors are by the delta method, not resampled); kept
        so that callers seed every diagnostic alike.

    Returns
    -------
    dict
        ``num_draws`` (S), ``dim`` (d); ``elbo``, ``elbo_se`` (mean of ``log w``);
        ``cubo``, ``cubo_se`` (:func:`cubo`, n = 2); ``cubo_khat`` (PSIS k-hat of
        ``2 log w``); ``log_evidence_lower`` (the ELBO or ``log_evidence``);
        ``kl_upper`` (``CUBO - ELBO >= KL(q || p)``, nats); ``d2_upper`` (bound on the
        Rényi-2 divergence ``D_2(p || q)``, nats) and its ``d2_upper_se``;
        ``chi2_upper`` (bound on ``chi2(p || q)``); ``w2_bound`` (bound on the
        2-Wasserstein distance between q and p in q's whitened coordinates, q sd);
        ``mean_error_bound`` (bound on every ``|mean_p - mean_q| / sd_q``, q sd);
        ``sd_error_bound`` (bound on every ``|sd_p - sd_q| / sd_q``, q sd); for each of
        ``kl_upper``, ``d2_upper``, ``chi2_upper``, ``w2_bound``, ``mean_error_bound`` and
        ``sd_error_bound`` a ``*_high`` value (at ``d2_upper`` plus
        :data:`BOUND_SE_MULTIPLIER` standard errors); ``c4`` (``inf_y E||u - y||^4``)
        and ``kurtosis`` (``sup_a E(a^T u)^4``) of q; ``moments`` (``"gaussian"`` or
        ``"draws"``); ``reliable`` (bool) and ``reason`` (why not, or ``""``). When not
        reliable every bound and its high value is ``inf``.

    Raises
    ------
    ValueError
        On NaN or ``+inf`` log weights, fewer than two draws, ``dim < 1``, or whitened
        draws of the wrong shape.
    """
    lw = _checked(log_weights)
    dim = int(dim)
    if dim < 1:
        raise ValueError(f"dim must be a positive integer, got {dim}")
    c4, kurtosis, moments = _moment_constants(dim, whitened_draws)
    size = lw.size
    out: dict[str, Any] = {
        "num_draws": size,
        "dim": dim,
        "c4": c4,
        "kurtosis": kurtosis,
        "moments": moments,
    }
    finite = np.isfinite(lw)
    elbo = float(np.mean(lw)) if finite.all() else -math.inf
    out["elbo"] = elbo
    out["elbo_se"] = float(np.std(lw, ddof=1) / math.sqrt(size)) if finite.all() else math.nan
    out["cubo"], out["cubo_se"] = cubo(lw, 2)
    out["cubo_khat"] = _khat(2.0 * lw)
    lower = elbo if log_evidence is None else float(log_evidence)
    out["log_evidence_lower"] = lower

    reason = _unreliable(lw, out["cubo_khat"], lower)
    if reason:
        names = (
            "kl_upper",
            "d2_upper",
            "chi2_upper",
            "w2_bound",
            "mean_error_bound",
            "sd_error_bound",
        )
        out.update({key: math.inf for name in names for key in (name, f"{name}_high")})
        out["d2_upper_se"] = math.nan
        out.update(reliable=False, reason=reason)
        return out

    log_m2 = 2.0 * out["cubo"]  # log mean(w^2)
    influence = np.exp(2.0 * lw - log_m2) - 1.0
    if log_evidence is None:
        influence = influence - 2.0 * (lw - elbo)
    d2 = max(log_m2 - 2.0 * lower, 0.0)
    d2_se = float(np.std(influence, ddof=1) / math.sqrt(size))
    out["d2_upper_se"] = d2_se
    for suffix, value in (("", d2), ("_high", d2 + BOUND_SE_MULTIPLIER * d2_se)):
        out.update({f"{key}{suffix}": v for key, v in _errors(value, c4, kurtosis).items()})
    if log_evidence is not None:  # KL(q || p) <= CUBO - ELBO needs the ELBO, not log p(x)
        d2_elbo = max(log_m2 - 2.0 * elbo, 0.0)
        se_elbo = float(
            np.std(np.exp(2.0 * lw - log_m2) - 1.0 - 2.0 * (lw - elbo), ddof=1) / math.sqrt(size)
        )
        out["kl_upper"] = d2_elbo / 2.0
        out["kl_upper_high"] = (d2_elbo + BOUND_SE_MULTIPLIER * se_elbo) / 2.0
    out.update(reliable=True, reason="")
    return out


def _errors(d2: float, c4: float, kurtosis: float) -> dict[str, float]:
    """Every bound as a function of the bound ``d2`` on ``D_2(p || q)``."""
    chi2 = math.expm1(d2) if d2 < 700 else math.inf
    w2 = math.sqrt(2.0) * c4**0.25 * chi2**0.25
    s = math.sqrt(chi2)
    c = math.sqrt(max(kurtosis - 1.0, 0.0))
    sd_direct = max(math.sqrt(1.0 + c * s) - 1.0, 1.0 - math.sqrt(max(0.0, 1.0 - c * s - chi2)))
    return {
        "kl_upper": d2 / 2.0,
        "d2_upper": d2,
        "chi2_upper": chi2,
        "w2_bound": w2,
        "mean_error_bound": min(w2, s),
        "sd_error_bound": min(w2, sd_direct),
    }


def _moment_constants(dim: int, draws: np.ndarray | None) -> tuple[float, float, str]:
    """``C_4 = inf_y E||u - y||^4`` and ``sup_a E(a^T u)^4`` of q in whitened coordinates."""
    if draws is None:
        return float(dim * (dim + 2)), GAUSSIAN_KURTOSIS, "gaussian"
    u = np.asarray(draws, dtype=np.float64)
    if u.ndim == 1:
        u = u[:, None]
    if u.ndim != 2 or u.shape[1] != dim or u.shape[0] < 2:
        raise ValueError(f"whitened_draws must have shape (n >= 2, {dim}), got {u.shape}")
    v = u - u.mean(axis=0)
    sq = np.sum(v * v, axis=1)
    c4 = float(np.mean(sq**2))
    fourth = (v * sq[:, None]).T @ v / len(v)  # E[||v||^2 v v^T]
    return c4, float(np.linalg.eigvalsh(fourth)[-1]), "draws"


def _unreliable(lw: np.ndarray, cubo_khat: float, lower: float) -> str:
    if not np.isfinite(lw).all():
        return (
            "some draws of q have zero posterior density (log weight -inf): the ELBO "
            "is -inf and KL(q || p) infinite, so there is no bound"
        )
    if not math.isfinite(lower):
        return "the lower bound on log p(x) is not finite"
    if not cubo_khat <= CUBO_KHAT_MAX:
        return (
            f"the CUBO is not estimable: PSIS k-hat of the squared weights is "
            f"{cubo_khat:.2f} > {CUBO_KHAT_MAX}, so E_q[w^2] may be infinite (q narrower "
            "than the posterior in some direction) and the bounds are not computed"
        )
    return ""


def _khat(log_weights: np.ndarray) -> float:
    try:
        return psis_khat(log_weights)
    except ValueError:
        return math.inf


def _checked(log_weights: np.ndarray) -> np.ndarray:
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if lw.size < 2:
        raise ValueError(f"the bounds need at least two log weights, got {lw.size}")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError("log weights contain NaN or +inf")
    return lw
