"""Posterior correlations the variational guide misses.

A diagonal (mean-field) guide has no correlations at all; when the posterior has
strong ones it underestimates marginal sds. These functions find the pairs
responsible, so a report can name them.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pyrovi.diagnostics.draws import stack_draws

__all__ = ["missed_correlations", "strongest_pair"]


def _correlation(draws: Mapping[str, np.ndarray], names: list[str]) -> np.ndarray:
    matrix = stack_draws(draws, names)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.atleast_2d(np.corrcoef(matrix, rowvar=False))


def missed_correlations(
    vi: Mapping[str, np.ndarray],
    ref: Mapping[str, np.ndarray],
    threshold: float = 0.5,
    min_gap: float = 0.3,
) -> list[dict[str, object]]:
    """Strong reference correlations that the variational draws do not reproduce.

    Parameters
    ----------
    vi, ref : mapping of str to numpy.ndarray
        Scalar parameter name -> draws (as from :func:`pyrovi.diagnostics.scalar_draws`).
        Only parameters present in both are used, in the order of ``ref``.
    threshold : float, default 0.5
        A pair is considered when its reference correlation has ``|rho_ref| >= threshold``.
    min_gap : float, default 0.3
        ... and reported when ``|rho_ref - rho_vi| > min_gap``.

    Returns
    -------
    list of dict
        ``{"a", "b", "rho_ref", "rho_vi"}`` per pair (``a`` before ``b`` in reference
        order), sorted by ``|rho_ref - rho_vi|``, largest first. Pairs with an undefined
        correlation (a constant parameter) are skipped.
    """
    names = [name for name in ref if name in vi]
    if len(names) < 2:
        return []
    rho_ref = _correlation(ref, names)
    rho_vi = _correlation(vi, names)
    gap = np.abs(rho_ref - rho_vi)
    upper = np.triu(np.ones_like(gap, dtype=bool), k=1)
    with np.errstate(invalid="ignore"):
        hits = upper & (np.abs(rho_ref) >= threshold) & (gap > min_gap)
    rows, cols = np.nonzero(hits)
    order = np.argsort(-gap[rows, cols], kind="stable")
    return [
        {
            "a": names[rows[k]],
            "b": names[cols[k]],
            "rho_ref": float(rho_ref[rows[k], cols[k]]),
            "rho_vi": float(rho_vi[rows[k], cols[k]]),
        }
        for k in order
    ]


def strongest_pair(ref: Mapping[str, np.ndarray]) -> tuple[str, str, float] | None:
    """The pair of parameters with the largest absolute correlation in ``ref``.

    Parameters
    ----------
    ref : mapping of str to numpy.ndarray
        Scalar parameter name -> draws.

    Returns
    -------
    tuple of (str, str, float) or None
        ``(a, b, rho)`` with ``a`` before ``b`` in the order of ``ref``; None with
        fewer than two parameters or when no correlation is defined.
    """
    names = list(ref)
    if len(names) < 2:
        return None
    rho = _correlation(ref, names)
    strength = np.where(np.triu(np.ones_like(rho, dtype=bool), k=1), np.abs(rho), np.nan)
    if np.all(np.isnan(strength)):
        return None
    i, j = np.unravel_index(np.nanargmax(strength), strength.shape)
    return names[i], names[j], float(rho[i, j])
