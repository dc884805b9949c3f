"""Log-evidence estimates and the KL gap of the identity ``log p(x) = ELBO + KL(q || p)``.

The importance weighted bound (IWAE, Burda, Grosse and Salakhutdinov 2016)

    L_K = E[ log (1/K) sum_k w_k ],  w_k = p(x, z_k) / q(z_k),  z_k ~ q,

satisfies ``ELBO = L_1 <= L_K <= L_{K+1} <= log p(x)`` and tends to ``log p(x)`` as
``K`` grows when the weights have finite variance. The gap
``log p(x) - ELBO`` is exactly ``KL(q || p(z | x))``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import logsumexp

__all__ = ["iwae_bound", "kl_gap"]


def iwae_bound(log_weights: np.ndarray, K: int) -> tuple[float, float]:
    """Importance weighted lower bound on ``log p(x)`` from batches of ``K`` weights.

    Parameters
    ----------
    log_weights : numpy.ndarray
        Log importance weights of independent guide draws (flattened), e.g. from
        :func:`pyrovi.infer.util.guide_log_weights`.
    K : int
        Batch size. The weights are cut, in order, into ``len // K`` batches of ``K``;
        a remainder of fewer than ``K`` weights is dropped.

    Returns
    -------
    mean : float
        Mean over batches of ``log mean exp`` of each batch: an unbiased estimate of
        the bound ``L_K``.
    se : float
        Standard error of that mean (sd across batches, ``ddof=1``, over
        ``sqrt(num_batches)``).

    Raises
    ------
    ValueError
        If ``K < 1`` or there are fewer than two batches.
    """
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    K = int(K)
    if K < 1:
        raise ValueError(f"K must be a positive integer, got {K}")
    num_batches = lw.size // K
    if num_batches < 2:
        raise ValueError(
            f"iwae_bound needs at least two batches of K={K} weights, got {lw.size} weights"
        )
    batches = lw[: num_batches * K].reshape(num_batches, K)
    bounds = logsumexp(batches, axis=1) - math.log(K)
    return float(np.mean(bounds)), float(np.std(bounds, ddof=1) / math.sqrt(num_batches))


def kl_gap(
    log_evidence: float,
    elbo: float,
    log_evidence_se: float = 0.0,
    elbo_se: float = 0.0,
) -> dict[str, float]:
    """The gap ``log p(x) - ELBO = KL(q || p(z | x))`` with a two-standard-error interval.

    Parameters
    ----------
    log_evidence : float
        ``log p(x)``, exact or estimated (e.g. :func:`iwae_bound` with a large ``K``).
    elbo : float
        The evidence lower bound of the guide.
    log_evidence_se, elbo_se : float, default 0
        Monte Carlo standard errors of the two estimates, taken as independent.

    Returns
    -------
    dict
        ``kl_gap`` (``log_evidence - elbo``), ``kl_gap_low`` and ``kl_gap_high``
        (``kl_gap`` minus / plus twice ``sqrt(log_evidence_se**2 + elbo_se**2)``).
    """
    gap = float(log_evidence) - float(elbo)
    half_width = 2.0 * math.hypot(float(log_evidence_se), float(elbo_se))
    return {"kl_gap": gap, "kl_gap_low": gap - half_width, "kl_gap_high": gap + half_width}
