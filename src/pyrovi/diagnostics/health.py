"""Is the reference itself trustworthy? Convergence checks of MCMC reference draws.

==============  =========  ==========================================================
check           threshold  source
==============  =========  ==========================================================
R-hat           <= 1.01    rank-normalised split R-hat (Vehtari et al. 2021)
bulk/tail ESS   >= 400     effective sample sizes of the same paper
divergences     0          ``sample_stats.diverging`` of a NUTS run
==============  =========  ==========================================================

R-hat needs two chains at least; with one chain it is NaN and not counted as a
problem.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import arviz as az
import numpy as np

from pyrovi.diagnostics.draws import flatten_dataset

__all__ = ["ESS_MIN", "RHAT_MAX", "reference_health"]

RHAT_MAX = 1.01
"""Largest acceptable rank-normalised split R-hat."""

ESS_MIN = 400
"""Smallest acceptable bulk and tail effective sample size (over all chains)."""


def reference_health(idata: Any, var_names: Iterable[str] | None = None) -> dict[str, Any]:
    """Convergence summary of reference (MCMC) draws.

    Parameters
    ----------
    idata : arviz.InferenceData
        With a ``posterior`` group (dims ``chain, draw, ...``) and optionally
        ``sample_stats`` holding a boolean ``diverging``.
    var_names : iterable of str, optional
        Posterior variables to check (default all).

    Returns
    -------
    dict
        ``max_rhat`` (float, NaN with one chain), ``min_ess_bulk``, ``min_ess_tail``
        (floats), ``divergences`` (int, 0 without ``sample_stats.diverging``),
        ``num_chains``, ``num_draws`` (ints, draws per chain) and ``problems``: one
        line per failed check, e.g. ``"R-hat of mu[0] is 1.08 (> 1.01)"``; empty when
        the reference is healthy.
    """
    posterior = idata.posterior
    if var_names is not None:
        posterior = posterior[list(var_names)]
    num_chains = int(posterior.sizes["chain"])
    num_draws = int(posterior.sizes["draw"])
    problems: list[str] = []

    if num_chains >= 2:
        with np.errstate(invalid="ignore", divide="ignore"):  # constant draws: 0 / 0
            rhat = flatten_dataset(az.rhat(posterior), ())
    else:
        rhat = {}
    ess_bulk = flatten_dataset(az.ess(posterior, method="bulk"), ())
    ess_tail = flatten_dataset(az.ess(posterior, method="tail"), ())

    max_rhat, worst, count = _extreme(rhat, max, lambda r: r > RHAT_MAX)
    if count:
        problems.append(
            f"R-hat of {worst} is {_format_rhat(max_rhat)} (> {RHAT_MAX})" + _others(count)
        )
    min_bulk, worst, count = _extreme(ess_bulk, min, lambda e: e < ESS_MIN)
    if count:
        problems.append(f"bulk ESS of {worst} is {min_bulk:.0f} (< {ESS_MIN})" + _others(count))
    min_tail, worst, count = _extreme(ess_tail, min, lambda e: e < ESS_MIN)
    if count:
        problems.append(f"tail ESS of {worst} is {min_tail:.0f} (< {ESS_MIN})" + _others(count))

    divergences = 0
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        divergences = int(np.asarray(idata.sample_stats["diverging"].values).sum())
    if divergences:
        plural = "s" if divergences != 1 else ""
        problems.append(f"{divergences} divergent transition{plural}")

    return {
        "max_rhat": max_rhat,
        "min_ess_bulk": min_bulk,
        "min_ess_tail": min_tail,
        "divergences": divergences,
        "num_chains": num_chains,
        "num_draws": num_draws,
        "problems": problems,
    }


def _extreme(values: dict[str, np.ndarray], pick: Any, fails: Any) -> tuple[float, str, int]:
    """Worst finite value, its parameter, and how many parameters fail the check."""
    finite = {name: float(v) for name, v in values.items() if np.isfinite(v)}
    if not finite:
        return float("nan"), "", 0
    worst = pick(finite, key=finite.__getitem__)
    return finite[worst], worst, sum(1 for v in finite.values() if fails(v))


def _others(count: int) -> str:
    if count <= 1:
        return ""
    return f"; {count} parameters fail this check"


def _format_rhat(value: float) -> str:
    text = f"{value:.2f}"
    return text if float(text) > RHAT_MAX else f"{value:.3f}"
