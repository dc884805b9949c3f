"""One word on a variational fit, "trust", "caution" or "reject", and the reasons in words.

The verdict reads the marginal table of :func:`pyrovi.diagnostics.marginal_table`
(``|mean_error_z|`` is the mean error in reference sds, ``sd_ratio`` is
``sd_vi / sd_ref``) and, when given, the PSIS k-hat, the missed correlations and the
health of the reference:

=========  =====================  ================  =========  ======================
verdict    max |mean_error_z|     every sd_ratio    k-hat      missed correlations
=========  =====================  ================  =========  ======================
trust      <= 0.2                 in [0.8, 1.25]    <= 0.7     none
caution    <= 0.5                 in [0.5, 2]       any        any
reject     otherwise
=========  =====================  ================  =========  ======================

A k-hat that was not computed (None) does not count against trust. An unhealthy
reference (any problem reported by :func:`pyrovi.diagnostics.reference_health`) caps
the verdict at "caution": a fit that would be trusted gets "caution", a reject stays a
reject. Then the first reason says the reference is unhealthy, since the disagreement
may be the reference's fault. The k-hat thresholds are those of Yao et al. (2018);
0.2 sd and a ratio of 0.8 are the size of error at which posterior summaries
(intervals, tail probabilities) start to mislead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pyrovi.diagnostics.psis import KHAT_BAD

__all__ = [
    "CAUTION_MEAN_ERROR_Z",
    "CAUTION_SD_RATIO",
    "DIAGONAL_GUIDES",
    "TRUST_KHAT",
    "TRUST_MEAN_ERROR_Z",
    "TRUST_SD_RATIO",
    "verdict",
]

TRUST_MEAN_ERROR_Z = 0.2
"""Trust needs every ``|mean_error_z|`` at or below this (reference sds)."""

TRUST_SD_RATIO = (0.8, 1.25)
"""Trust needs every ``sd_ratio`` inside this closed interval."""

TRUST_KHAT = KHAT_BAD
"""Trust needs the PSIS k-hat, when computed, at or below this."""

CAUTION_MEAN_ERROR_Z = 0.5
"""Caution (rather than reject) needs every ``|mean_error_z|`` at or below this."""

CAUTION_SD_RATIO = (0.5, 2.0)
"""Caution (rather than reject) needs every ``sd_ratio`` inside this closed interval."""

DIAGONAL_GUIDES = ("mean_field",)
"""Guide families without correlations: a missed correlation is then explained."""


def verdict(
    table: pd.DataFrame,
    *,
    khat: float | None = None,
    missed: Sequence[Mapping[str, Any]] = (),
    health: Mapping[str, Any] | None = None,
    guide_name: str | None = None,
) -> tuple[str, list[str]]:
    """Judge a variational fit against its reference.

    Parameters
    ----------
    table : pandas.DataFrame
        From :func:`pyrovi.diagnostics.marginal_table`: indexed by parameter, with
        columns ``mean_error_z`` and ``sd_ratio`` at least.
    khat : float, optional
        PSIS k-hat of the guide's importance weights (:func:`pyrovi.diagnostics.psis_khat`).
    missed : sequence of dict, optional
        From :func:`pyrovi.diagnostics.missed_correlations`, largest gap first.
    health : dict, optional
        From :func:`pyrovi.diagnostics.reference_health`.
    guide_name : str, optional
        The guide family (``"mean_field"``, ``"full_rank"``, ...), used to explain a
        missed correlation and suggest a better family.

    Returns
    -------
    verdict : str
        ``"trust"``, ``"caution"`` or ``"reject"`` (thresholds in the module docstring).
    reasons : list of str
        Sentences, most important first; for "trust" one sentence saying why.

    Raises
    ------
    ValueError
        If the table is empty or lacks a required column.
    """
    missing = [col for col in ("mean_error_z", "sd_ratio") if col not in table.columns]
    if missing:
        raise ValueError(f"the table lacks the column(s) {', '.join(missing)}")
    if table.empty:
        raise ValueError("the table has no parameters to judge")

    abs_z = table["mean_error_z"].astype(float).abs()
    ratio = table["sd_ratio"].astype(float)
    finite = np.isfinite(abs_z) & np.isfinite(ratio) & (ratio > 0)
    if not finite.any():
        raise ValueError("no parameter has a finite mean error and sd ratio")
    abs_z, ratio = abs_z[finite], ratio[finite]
    worst_z_name = str(abs_z.idxmax())
    worst_z = float(abs_z.max())
    log_ratio = np.abs(np.log(ratio))
    worst_sd_name = str(log_ratio.idxmax())
    worst_sd = float(ratio[worst_sd_name])

    def outside(bounds: tuple[float, float]) -> pd.Series:
        return (ratio < bounds[0]) | (ratio > bounds[1])

    trust_sd_fail, caution_sd_fail = outside(TRUST_SD_RATIO), outside(CAUTION_SD_RATIO)
    khat_bad = khat is not None and not khat <= TRUST_KHAT
    missed = list(missed)

    failed = worst_z > TRUST_MEAN_ERROR_Z or trust_sd_fail.any() or khat_bad or bool(missed)
    if worst_z > CAUTION_MEAN_ERROR_Z or caution_sd_fail.any():
        level = "reject"
    elif failed:
        level = "caution"
    else:
        level = "trust"

    reasons: list[str] = []
    problems = list(health.get("problems", [])) if health is not None else []
    if problems:
        if level == "trust":
            level = "caution"
        reasons.append(
            f"the reference is unhealthy ({'; '.join(problems)}): the comparison is only "
            "as good as the reference, rerun NUTS longer or reparameterise"
        )

    if failed:
        reasons.extend(
            _problem_reasons(
                abs_z,
                ratio,
                worst_z_name,
                worst_sd_name,
                trust_sd_fail,
                caution_sd_fail,
                khat,
                khat_bad,
                missed,
                guide_name,
            )
        )
    else:
        reasons.append(_agreement(worst_z, worst_z_name, worst_sd, worst_sd_name, khat))

    skipped = int((~finite).sum())
    if skipped:
        reasons.append(
            f"{skipped} parameter{'s' if skipped > 1 else ''} could not be compared "
            "(zero or undefined reference sd)"
        )
    return level, reasons


def _problem_reasons(
    abs_z: pd.Series,
    ratio: pd.Series,
    worst_z_name: str,
    worst_sd_name: str,
    trust_sd_fail: pd.Series,
    caution_sd_fail: pd.Series,
    khat: float | None,
    khat_bad: bool,
    missed: list[Mapping[str, Any]],
    guide_name: str | None,
) -> list[str]:
    """Sentences for every failed check, the checks that force a reject first."""
    severe: list[str] = []
    mild: list[str] = []
    explained: set[tuple[str, str]] = set()

    if trust_sd_fail.any():
        worst_sd = float(ratio[worst_sd_name])
        text = f"sd of {worst_sd_name} is {_num(worst_sd)} × the reference"
        pair = next((m for m in missed if worst_sd_name in (m["a"], m["b"])), None)
        diagonal = guide_name in DIAGONAL_GUIDES or (guide_name is None and bool(missed))
        if pair is not None and diagonal:
            explained.add((pair["a"], pair["b"]))
            who = f"the {guide_name} guide" if guide_name else "a diagonal guide"
            text += (
                f": {who} cannot represent the posterior correlation of {pair['a']} and "
                f"{pair['b']} (ρ = {float(pair['rho_ref']):.2f}); try full_rank"
            )
        elif worst_sd < 1:
            text += ": the guide is overconfident (posterior too narrow)"
        else:
            text += ": the guide is too wide"
        others = int(trust_sd_fail.sum()) - 1
        if others:
            low, high = TRUST_SD_RATIO
            have = "s have sd ratios" if others > 1 else " has an sd ratio"
            text += f"; {others} other parameter{have} outside [{low}, {high}]"
        (severe if caution_sd_fail.any() else mild).append(text)

    worst_z = float(abs_z[worst_z_name])
    if worst_z > TRUST_MEAN_ERROR_Z:
        text = f"mean of {worst_z_name} is {_num(worst_z)} reference sd away from the reference"
        others = int((abs_z > TRUST_MEAN_ERROR_Z).sum()) - 1
        if others:
            are = "s are" if others > 1 else " is"
            text += f"; {others} other parameter{are} off by more than {TRUST_MEAN_ERROR_Z} sd"
        (severe if worst_z > CAUTION_MEAN_ERROR_Z else mild).append(text)

    if khat_bad:
        mild.append(
            f"PSIS k-hat {_num(float(khat), 2)} > {TRUST_KHAT}: importance weights are heavy "
            "tailed, the guide misses posterior mass"
        )

    unexplained = [m for m in missed if (m["a"], m["b"]) not in explained]
    if unexplained:
        first = unexplained[0]
        text = (
            f"the guide misses the posterior correlation of {first['a']} and {first['b']} "
            f"(ρ = {float(first['rho_ref']):.2f} in the reference, "
            f"{float(first['rho_vi']):.2f} in the guide)"
        )
        if guide_name in DIAGONAL_GUIDES:
            text += "; try full_rank"
        if len(unexplained) > 1:
            more = len(unexplained) - 1
            text += f"; {more} other strongly correlated pair{'s' if more > 1 else ''} missed"
        mild.append(text)
    return severe + mild


def _agreement(
    worst_z: float, worst_z_name: str, worst_sd: float, worst_sd_name: str, khat: float | None
) -> str:
    low, high = TRUST_SD_RATIO
    text = (
        f"every mean is within {TRUST_MEAN_ERROR_Z} reference sd of the reference (worst "
        f"{_num(worst_z)}, {worst_z_name}) and every sd ratio within [{low}, {high}] (worst "
        f"{_num(worst_sd, 2)}, {worst_sd_name})"
    )
    if khat is not None:
        text += f"; PSIS k-hat {_num(khat, 2)} <= {TRUST_KHAT}"
    return text


def _num(value: float, decimals: int | None = None) -> str:
    """Two significant figures (``0.14``, ``0.8``, ``12``), or fixed decimals."""
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return f"{value:.2g}" if abs(value) < 100 else f"{value:.0f}"
