"""The words of a report, shared by the HTML and the Markdown renderers.

Numbers are formatted here, the summary figures get their labels, units and
explanations here, and the thresholds quoted are read from
:mod:`pyrovi.diagnostics`, never restated, so that the report cannot drift from
the verdict it explains.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pyrovi.comparison import MODEL_UNITS, Summary
from pyrovi.diagnostics import (
    CAUTION_MEAN_ERROR_Z,
    CAUTION_SD_RATIO,
    ESS_MIN,
    KHAT_BAD,
    KHAT_GOOD,
    RHAT_MAX,
    TRUST_MEAN_ERROR_Z,
    TRUST_SD_RATIO,
)

SUMMARY_UNITS: dict[str, str] = Summary.units()
"""Unit of each numeric summary field (read from :class:`~pyrovi.comparison.Summary`)."""

__all__ = [
    "LOCAL_SITE_HEADER",
    "SUMMARY_UNITS",
    "VERDICTS",
    "SummaryRow",
    "context_rows",
    "fmt",
    "health_rows",
    "local_site_note",
    "local_site_rows",
    "pyrovi_version",
    "summary_rows",
    "verdict_of",
]

VERDICTS: dict[str, str] = {
    "trust": "The variational posterior agrees with the reference.",
    "caution": "Usable with care: read the reasons before relying on it.",
    "reject": "Do not use the variational posterior for these parameters.",
}
"""Verdict -> one-sentence meaning."""

KHAT_CITATION = "Yao, Vehtari, Simpson and Gelman (2018), Yes, but did it work?"


@dataclass(frozen=True)
class SummaryRow:
    """One summary figure: what it is, its value, its unit, and how to read it."""

    label: str
    value: str
    unit: str
    note: str


def pyrovi_version() -> str:
    """The installed pyrovi version, as written into every report."""
    from pyrovi import __version__

    return str(__version__)


def verdict_of(summary: Mapping[str, Any]) -> str:
    """The verdict of a summary, lower case; unknown values become ``"reject"``."""
    word = str(summary.get("verdict", "")).strip().lower()
    return word if word in VERDICTS else "reject"


def fmt(x: Any, decimals: int = 3) -> str:
    """Format a number for people: ``n/a`` for None/NaN, ``∞`` for infinities.

    Parameters
    ----------
    x : Any
        A number (Python or numpy), None, or anything else (shown with ``str``).
    decimals : int, default 3
        Decimals of fixed-point output. Magnitudes of a million or more, and with
        three decimals or more those below ``10**-decimals``, use 3 significant digits
        in exponent form instead.

    Returns
    -------
    str
    """
    if x is None:
        return "n/a"
    if isinstance(x, bool):
        return str(x)
    try:
        value = float(x)
    except (TypeError, ValueError):
        return str(x)
    if math.isnan(value):
        return "n/a"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    if isinstance(x, (int, np.integer)):
        return str(int(x)).replace("-", "−")
    magnitude = abs(value)
    if magnitude >= 1e6 or (decimals >= 3 and 0 < magnitude < 10 ** (-decimals)):
        return f"{value:.3g}".replace("-", "−")
    return f"{value:.{decimals}f}".replace("-", "−")


def _finite(x: Any) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def _plus_minus(value: Any, se: Any) -> str:
    """``value ± 2 se`` when the standard error is positive, else the value alone."""
    if _finite(value) and _finite(se) and float(se) > 0:
        return f"{fmt(value)} ± {fmt(2 * float(se))}"
    return fmt(value)


def _evidence_note(method: str) -> str:
    if method == "exact":
        return "method: exact (closed form of the conjugate model)"
    if method == "given":
        return "method: given by the user"
    if method.startswith("iwae"):
        return (
            f"method: {method}, an importance-weighted estimate that is a lower bound "
            "on log p(x) in expectation; ± 2 standard errors"
        )
    if method in ("", "none"):
        return "method: none (not estimated: needs the model and data, or an exact value)"
    return f"method: {method}"


def _khat_row(summary: Mapping[str, Any]) -> SummaryRow:
    khat, label = summary.get("khat"), summary.get("khat_label")
    samples = int(summary.get("khat_samples") or 0)
    thresholds = (
        f"thresholds (Yao et al. 2018): ≤ {KHAT_GOOD} good, {KHAT_GOOD}–{KHAT_BAD} ok, "
        f"> {KHAT_BAD} bad"
    )
    if khat is None and label is None:
        return SummaryRow(
            "PSIS k-hat",
            "not computed",
            SUMMARY_UNITS["khat"],
            "needs a fitted guide with a density and the data; " + thresholds,
        )
    value = f"{fmt(khat, 2)} ({label})" if _finite(khat) else f"not finite ({label or 'bad'})"
    low, high = summary.get("khat_low"), summary.get("khat_high")
    interval = ""
    if _finite(low) and _finite(high):
        level = float(summary.get("khat_level") or 0.9)
        value += f" [{fmt(low, 2)}, {fmt(high, 2)}]"
        interval = f"the bracket is a {100 * level:.0f}% bootstrap interval over those draws; "
    basis = str(summary.get("verdict_basis") or "")
    role = (
        "with a healthy reference the verdict follows the measured marginal errors, and "
        "k-hat is reported beside them; "
        if basis == "reference"
        else ""
    )
    note = (
        f"from {samples} importance samples of the guide; k-hat is itself a Monte Carlo "
        f"estimate from these {samples} draws and can be noisy, so a value near a threshold "
        f"may fall on the other side with another seed; {interval}{role}{thresholds}"
    )
    return SummaryRow("PSIS k-hat", value, SUMMARY_UNITS["khat"], note)


def summary_rows(summary: Mapping[str, Any]) -> list[SummaryRow]:
    """The headline figures of a comparison summary, with units and explanations.

    Parameters
    ----------
    summary : mapping
        :attr:`pyrovi.comparison.Comparison.summary` (or a dict with its keys); missing
        keys show as ``n/a``.

    Returns
    -------
    list of SummaryRow
        Mean error, sd ratio, joint W1, ELBO, log evidence, KL gap, the CUBO and the
        validated error bounds (when computed), k-hat, the number of parameters and the
        units of the table's means and sds, in this order.
    """
    get = summary.get
    method = str(get("log_evidence_method") or "none")
    gap_note = "log p(x) − ELBO = KL(q ‖ p(z | x)) ≥ 0; interval ± 2 standard errors"
    if _finite(get("kl_gap_high")) and float(get("kl_gap_high")) < 0:
        gap_note += "; negative beyond the noise: the ELBO or the log p(x) estimate is biased"
    elif method.startswith("iwae"):
        gap_note += "; with an IWAE lower bound on log p(x) the gap is underestimated"
    gap = fmt(get("kl_gap"))
    if _finite(get("kl_gap_low")) and _finite(get("kl_gap_high")):
        gap += f" [{fmt(get('kl_gap_low'))}, {fmt(get('kl_gap_high'))}]"
    elbo_note = "± 2 Monte Carlo standard errors"
    if not _finite(get("elbo")):
        elbo_note = "not available: the variational side was given as draws, not a fit"
    return [
        SummaryRow(
            "Largest |mean error|",
            fmt(get("max_abs_mean_error_z")),
            SUMMARY_UNITS["max_abs_mean_error_z"],
            f"|mean_vi − mean_ref| / sd_ref over parameters; trust ≤ {TRUST_MEAN_ERROR_Z}, "
            f"caution ≤ {CAUTION_MEAN_ERROR_Z}",
        ),
        SummaryRow(
            "Worst sd ratio",
            fmt(get("worst_sd_ratio")),
            SUMMARY_UNITS["worst_sd_ratio"],
            f"furthest from 1; trust within [{TRUST_SD_RATIO[0]}, {TRUST_SD_RATIO[1]}], "
            f"caution within [{CAUTION_SD_RATIO[0]}, {CAUTION_SD_RATIO[1]}]; "
            "below 1 the guide is overconfident",
        ),
        SummaryRow(
            "Joint 1-Wasserstein distance",
            fmt(get("w1_joint")),
            SUMMARY_UNITS["w1_joint"],
            "between all parameters jointly, each scaled by its reference sd; finite samples "
            "give a positive distance even between identical distributions: compare with "
            f"{fmt(get('w1_joint_baseline'))}, the distance between two halves of the "
            "reference",
        ),
        SummaryRow("ELBO", _plus_minus(get("elbo"), get("elbo_se")), "nats", elbo_note),
        SummaryRow(
            "Log evidence log p(x)",
            _plus_minus(get("log_evidence"), get("log_evidence_se")),
            "nats",
            _evidence_note(method),
        ),
        SummaryRow("KL gap", gap, "nats", gap_note),
        *_bound_rows(summary),
        _khat_row(summary),
        SummaryRow(
            "Parameters compared",
            fmt(get("num_parameters")),
            SUMMARY_UNITS["num_parameters"],
            "scalar parameters present in both posteriors",
        ),
        SummaryRow(
            "Units of means and sds",
            str(get("parameter_units") or MODEL_UNITS),
            "",
            "the parameter table's means and sds, and the density and pair plots, are in "
            "these units; the ELBO, log p(x) and KL gap are of the data as the model sees it",
        ),
    ]


def _bound_rows(summary: Mapping[str, Any]) -> list[SummaryRow]:
    """The CUBO with the evidence sandwich, and the validated error bounds (no reference)."""
    get = summary.get
    if not _finite(get("cubo")):
        return []
    elbo, log_ev, cubo = get("elbo"), get("log_evidence"), get("cubo")
    sandwich = f"ELBO {fmt(elbo)} ≤ log p(x) {fmt(log_ev)} ≤ CUBO {fmt(cubo)}"
    if _finite(elbo) and _finite(log_ev):
        slack = [
            2 * float(get(k)) if _finite(get(k)) else 0.0
            for k in ("elbo_se", "log_evidence_se", "cubo_se")
        ]
        low, mid, high = float(elbo) - slack[0], float(log_ev), float(cubo) + slack[2]
        if not (low <= mid + slack[1] and mid - slack[1] <= high):
            sandwich += " (out of order beyond 2 standard errors: an estimate is off)"
    rows = [
        SummaryRow(
            "CUBO (chi upper bound)",
            _plus_minus(cubo, get("cubo_se")),
            SUMMARY_UNITS["cubo"],
            f"1/2 log E_q[w²] ≥ log p(x) (Dieng et al. 2017): {sandwich}; estimated from "
            "the k-hat draws, biased low",
        )
    ]
    if get("bounds_reliable") is False:
        rows.append(
            SummaryRow(
                "Validated error bounds",
                "not estimable",
                SUMMARY_UNITS["mean_error_bound"],
                str(get("bounds_reason") or "the CUBO is not estimable"),
            )
        )
        return rows
    rows.append(
        SummaryRow(
            "Validated error bounds",
            f"mean ≤ {fmt(get('mean_error_bound'))} ({fmt(get('mean_error_bound_high'))}), "
            f"sd ≤ {fmt(get('sd_error_bound'))} ({fmt(get('sd_error_bound_high'))})",
            SUMMARY_UNITS["mean_error_bound"],
            "no reference needed (Huggins et al. 2020): every |mean error| and |sd error| in "
            "the unconstrained space is at most this many q sds, from CUBO − ELBO = "
            f"{fmt(get('kl_upper'))} nats ≥ KL(q ‖ p); in brackets the upper values at 2 "
            f"standard errors; W2 ≤ {fmt(get('w2_bound'))} (whitened)",
        )
    )
    return rows


def health_rows(health: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Convergence figures of the reference as ``(label, text)`` pairs."""
    chains, draws = health.get("num_chains"), health.get("num_draws")
    return [
        ("Chains × draws", f"{fmt(chains)} × {fmt(draws)}"),
        ("Largest R-hat", f"{fmt(health.get('max_rhat'))} (healthy ≤ {RHAT_MAX})"),
        ("Smallest bulk ESS", f"{fmt(health.get('min_ess_bulk'), 0)} (healthy ≥ {ESS_MIN})"),
        ("Smallest tail ESS", f"{fmt(health.get('min_ess_tail'), 0)} (healthy ≥ {ESS_MIN})"),
        ("Divergent transitions", fmt(health.get("divergences"))),
    ]


def context_rows(labels: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Model, guide, data, relabelling and any other labels as ``(label, text)`` pairs.

    Parameters
    ----------
    labels : mapping
        :attr:`pyrovi.comparison.Comparison.labels`.

    Returns
    -------
    list of tuple of (str, str)
        The known keys first, in the order model, guide, data, relabelling; a
        relabelling is spelled out as the method used to match components (or that
        none was). Missing known keys are shown as ``not recorded`` except the
        relabelling, which is left out.
    """
    rows = [
        (name.capitalize(), str(labels[name]) if labels.get(name) is not None else "not recorded")
        for name in ("model", "guide", "data")
    ]
    if "relabelling" in labels:
        value = labels["relabelling"]
        if value in (None, False, "", "none"):
            rows.append(("Relabelling", "none: draws compared with their labels as sampled"))
        else:
            rows.append(
                (
                    "Relabelling",
                    f"components were relabelled before comparing, using {value}",
                )
            )
    for name, value in labels.items():
        if name not in ("model", "guide", "data", "relabelling"):
            rows.append((str(name).replace("_", " ").capitalize(), str(value)))
    return rows


LOCAL_SITE_HEADER = (
    "site",
    "elements",
    "median |error| (ref sd)",
    "max |error| (ref sd)",
    "median sd ratio",
    "sd ratio 5–95%",
    "coverage",
)
"""Column titles of the local-site table of a report."""


def local_site_rows(sites: pd.DataFrame) -> list[tuple[str, ...]]:
    """The rows of the local-site table, formatted (one per per-person site)."""
    return [
        (
            str(r.site),
            fmt(r.parameters),
            fmt(r.median_abs_error_z, 2),
            fmt(r.max_abs_error_z, 2),
            fmt(r.median_sd_ratio, 2),
            f"{fmt(r.sd_ratio_low, 2)} – {fmt(r.sd_ratio_high, 2)}",
            fmt(r.coverage, 3),
        )
        for r in sites.itertuples()
    ]


def local_site_note(level: float) -> str:
    """What the local-site table holds and how to read its coverage."""
    return (
        f"One row per per-person site; every element is in table.csv. Coverage: the "
        f"share of reference draws inside the VI {level:g} intervals ({level:g} when "
        "calibrated, less when q is over-confident)."
    )


LADDER_HEADER = (
    "guide",
    "seconds",
    "gradient evaluations",
    "ELBO (nats)",
    "gain (nats)",
    "k-hat",
    "verdict",
    "why",
)
"""Column titles of the guide-ladder table of a report."""


def ladder_rows(ladder: pd.DataFrame) -> list[tuple[str, ...]]:
    """The rows of the guide-ladder table, formatted; the chosen rung is marked."""
    return [
        (
            f"{r.guide} (chosen)" if r.chosen else str(r.guide),
            fmt(r.seconds, 1),
            fmt(r.grad_evals),
            _plus_minus(r.elbo, r.elbo_se),
            "–" if not _finite(r.gain) else _plus_minus(r.gain, r.gain_se),
            fmt(r.khat, 2),
            str(r.verdict),
            str(r.why),
        )
        for r in ladder.itertuples()
    ]
