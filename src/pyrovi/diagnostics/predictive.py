"""Posterior summaries of draws and posterior predictive checks.

A posterior predictive p-value (PPP) compares a discrepancy ``D(x, θ)`` of the observed
data with the same discrepancy of data replicated from the model, one pair per posterior
draw ``θ``::

    PPP = P(D(x_rep, θ) >= D(x, θ) | x)

A model that fits gives values near 0.5; values below about 0.05 say the observed data are
more discrepant than the model's own replicates (the usual cut-off in Bayesian SEM, Muthén
& Asparouhov 2012). ``interval_summary`` is the one place where a column of ``mean``,
``sd``, ``lower``, ``upper`` (equal-tailed interval) is computed from draws, for parameter
tables and person scores alike.
"""

from __future__ import annotations

import numpy as np

INTERVAL_PROB = 0.9
"""Probability of the equal-tailed intervals in tables and scores."""


def posterior_predictive_pvalue(observed: np.ndarray, replicated: np.ndarray) -> float:
    """The share of posterior draws whose replicated discrepancy is at least the observed one.

    Parameters
    ----------
    observed, replicated : numpy.ndarray
        One discrepancy per posterior draw, ``D(x, θ_s)`` and ``D(x_rep_s, θ_s)``.

    Returns
    -------
    float
        ``mean(replicated >= observed)``.

    Raises
    ------
    ValueError
        If the arrays differ in length, are empty or hold non-finite values.
    """
    observed = np.asarray(observed, dtype=float).ravel()
    replicated = np.asarray(replicated, dtype=float).ravel()
    if observed.shape != replicated.shape or observed.size == 0:
        raise ValueError(
            "observed and replicated discrepancies need one value per draw each, "
            f"got {observed.size} and {replicated.size}"
        )
    if not (np.isfinite(observed).all() and np.isfinite(replicated).all()):
        raise ValueError("discrepancies hold non-finite values")
    return float(np.mean(replicated >= observed))


def interval_summary(draws: np.ndarray, prob: float = INTERVAL_PROB) -> dict[str, np.ndarray]:
    """Posterior mean, sd and equal-tailed ``prob`` interval over the first axis of ``draws``.

    Parameters
    ----------
    draws : numpy.ndarray
        Shape ``(num_draws, ...)``.
    prob : float
        Probability inside the interval (0.9: the 5% and 95% quantiles).

    Returns
    -------
    dict
        ``mean``, ``sd`` (``ddof=1``), ``lower``, ``upper``, each of shape ``draws.shape[1:]``.
    """
    if not 0.0 < prob < 1.0:
        raise ValueError(f"prob must lie in (0, 1), got {prob}")
    draws = np.asarray(draws, dtype=float)
    if draws.ndim == 0 or draws.shape[0] < 2:
        raise ValueError("interval_summary needs at least two draws on the first axis")
    tail = (1.0 - prob) / 2.0
    lower, upper = np.quantile(draws, [tail, 1.0 - tail], axis=0)
    return {
        "mean": draws.mean(axis=0),
        "sd": draws.std(axis=0, ddof=1),
        "lower": lower,
        "upper": upper,
    }
