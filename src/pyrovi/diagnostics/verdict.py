"""One word on a variational fit, "trust", "caution" or "reject", and the reasons in words.

The verdict reads the marginal table of :func:`pyrovi.diagnostics.marginal_table`
(``|mean_error_z|`` is the mean error in reference sds, ``sd_ratio`` is
``sd_vi / sd_ref``) and, when given, the PSIS k-hat with its bootstrap interval, the
missed correlations and the health of the reference. Every threshold is here, once.

**With a healthy reference the measured errors decide**:

=========  =====================  ================
verdict    max |mean_error_z|     every sd_ratio
=========  =====================  ================
trust      <= 0.2                 in [0.8, 1.25]
caution    <= 0.5                 in [0.5, 2]
reject     otherwise
=========  =====================  ================

"trust" is given exactly when every mean is within 0.2 reference sd and every sd ratio
is in [0.8, 1.25], and never otherwise. 0.2 sd and a ratio of 0.8 are the size of error
at which posterior summaries (intervals, tail probabilities) start to mislead.

*k-hat* does not move this verdict. With a reference in hand the marginal errors are
measured directly, while k-hat is an estimate from the largest few percent of the
weights: from 2,000 to 4,000 draws its standard deviation is about 0.1, and accurate fits
(every mean within 0.1 sd) routinely land at 0.71 - 0.80. It is reported with its
interval, and a reason says when it disagrees with the reference: above 0.7 on accurate
marginals (the tails or the joint shape of q may still be off; if the whole interval is
above 0.7, that is likely), or at most 0.7 on inaccurate ones (light-tailed weights do not
make q right, e.g. when q is wider than the posterior).

*Missed correlations* (:func:`pyrovi.diagnostics.missed_correlations`) do not block
"trust" either: the verdict is about the marginal summaries the table measures, and when
those are accurate they can be used. A missed correlation is still a reason, naming the
pair, because quantities that combine parameters (sums, differences, predictions) are
then wrong; when the guide family cannot represent correlations
(``represents_correlations=False``) the reason says so and suggests the family's next
richer rung (``richer``). When marginals fail, a missed pair involving the worst sd
explains it.

**With an unhealthy reference** (any problem reported by
:func:`pyrovi.diagnostics.reference_health`) the comparison is only as good as the
reference, so k-hat counts as well, as it did before references were trusted:

=========  =====================  ================  =========
verdict    max |mean_error_z|     every sd_ratio    k-hat
=========  =====================  ================  =========
caution    <= 0.5                 in [0.5, 2]       any
reject     otherwise
=========  =====================  ================  =========

The verdict is capped at "caution" (a fit that would be trusted gets "caution", a reject
stays a reject), the first reason says the reference is unhealthy, and a k-hat above
0.7 is one of the reasons.

**Without a reference** (``table=None``) and without bounds, k-hat with its interval
decides: "trust" when k-hat <= 0.7, "caution" above (a reason notes an interval that
straddles 0.7). The k-hat thresholds are those of Yao, Vehtari, Simpson and Gelman (2018).

**Without a reference, with bounds** (``bounds=`` from
:func:`pyrovi.diagnostics.validated_bounds`, basis :data:`BASIS_BOUNDS`) k-hat and the
validated bounds of Huggins et al. (2020) decide together. The bounds are in q sds
(``|mean_p - mean_q| / sd_q`` and ``|sd_p - sd_q| / sd_q``); the verdict reads their upper
confidence values (``*_high``, the bound at the divergence plus two standard errors):

=========  ========  ====================  ===================  ==================
verdict    k-hat     CUBO estimable        mean_error_bound     sd_error_bound
=========  ========  ====================  ===================  ==================
trust      <= 0.7    yes (``reliable``)    high <= 0.16         high <= 0.2
caution    otherwise
=========  ========  ====================  ===================  ==================

The thresholds are those of the reference-based "trust" carried over to q's units, so
that a bounded fit would also be trusted against a reference. With every
``|sd_p - sd_q| <= S sd_q`` the ratio ``sd_q / sd_p`` is in ``[1 / (1 + S), 1 / (1 - S)]``:
``S = 0.2`` (:data:`BOUND_TRUST_SD`, ``1 - 1 / 1.25``) gives ``[0.83, 1.25]``, inside
``[0.8, 1.25]``. A mean error of ``M`` q sd is ``M sd_q / sd_p <= M / (1 - S)`` reference
sd: ``M = 0.16`` (:data:`BOUND_TRUST_MEAN`, ``0.2 (1 - 0.2)``) keeps it within 0.2. The
bounds are worst cases over every direction of the unconstrained space (the Mahalanobis
norm of the mean error), so they are met only by close fits: roughly ``CUBO - ELBO`` below
0.013 nats. Bounds never give "reject": they are upper bounds, and a large one shows that
an error cannot be ruled out, not that it is there. When the CUBO is not estimable
(k-hat of the squared weights above 0.5) the verdict is "caution" and the reason says why.
The bounds are stated in the unconstrained space, where the guide lives (``log sigma``
for a scale): for parameters with real support that is the table's space, for
constrained ones the guarantee is about their unconstrained transform.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pyrovi.diagnostics.psis import KHAT_BAD

__all__ = [
    "BASIS_BOUNDS",
    "BASIS_KHAT",
    "BASIS_REFERENCE",
    "BASIS_UNHEALTHY",
    "BOUND_TRUST_MEAN",
    "BOUND_TRUST_SD",
    "CAUTION_MEAN_ERROR_Z",
    "CAUTION_SD_RATIO",
    "TRUST_KHAT",
    "TRUST_MEAN_ERROR_Z",
    "TRUST_SD_RATIO",
    "verdict",
    "verdict_basis",
]

TRUST_MEAN_ERROR_Z = 0.2
"""Trust needs every ``|mean_error_z|`` at or below this (reference sds)."""

TRUST_SD_RATIO = (0.8, 1.25)
"""Trust needs every ``sd_ratio`` inside this closed interval."""

TRUST_KHAT = KHAT_BAD
"""Without a healthy reference, trust needs the PSIS k-hat at or below this."""

CAUTION_MEAN_ERROR_Z = 0.5
"""Caution (rather than reject) needs every ``|mean_error_z|`` at or below this."""

CAUTION_SD_RATIO = (0.5, 2.0)
"""Caution (rather than reject) needs every ``sd_ratio`` inside this closed interval."""

BASIS_REFERENCE = "reference"
"""The verdict was decided by the marginal errors against a healthy reference."""

BASIS_UNHEALTHY = "reference and k-hat"
"""The reference is unhealthy: errors and k-hat both count, capped at caution."""

BASIS_KHAT = "k-hat"
"""No reference: k-hat alone decided."""

BASIS_BOUNDS = "k-hat and bounds"
"""No reference: k-hat and the validated bounds (ELBO and CUBO) decided."""

BOUND_TRUST_SD = round(1.0 - 1.0 / TRUST_SD_RATIO[1], 10)  # 0.2, not 0.19999999999999996
"""Without a reference, trust needs the upper value of ``sd_error_bound`` (q sd) at or
below this (0.2): then every sd ratio is in ``[1 / 1.2, 1.25]``, inside
:data:`TRUST_SD_RATIO`."""

BOUND_TRUST_MEAN = round(TRUST_MEAN_ERROR_Z * (1.0 - BOUND_TRUST_SD), 10)  # 0.16
"""Without a reference, trust needs the upper value of ``mean_error_bound`` (q sd) at or
below this (0.16): then every mean error is within :data:`TRUST_MEAN_ERROR_Z` reference
sd."""

Interval = tuple[float, float]


def verdict_basis(
    table: pd.DataFrame | None,
    health: Mapping[str, Any] | None,
    *,
    bounds: Mapping[str, Any] | None = None,
) -> str:
    """What decides the verdict: :data:`BASIS_REFERENCE`, :data:`BASIS_UNHEALTHY`,
    :data:`BASIS_BOUNDS` (no reference, bounds given) or :data:`BASIS_KHAT` (see the
    module docstring)."""
    if table is None:
        return BASIS_KHAT if bounds is None else BASIS_BOUNDS
    return BASIS_UNHEALTHY if _problems(health) else BASIS_REFERENCE


def verdict(
    table: pd.DataFrame | None,
    *,
    khat: float | None = None,
    khat_interval: Interval | None = None,
    missed: Sequence[Mapping[str, Any]] = (),
    health: Mapping[str, Any] | None = None,
    represents_correlations: bool | None = None,
    richer: str | None = None,
    guide_name: str | None = None,
    bounds: Mapping[str, Any] | None = None,
) -> tuple[str, list[str]]:
    """Judge a variational fit against its reference (or by k-hat and bounds without one).

    Parameters
    ----------
    table : pandas.DataFrame or None
        From :func:`pyrovi.diagnostics.marginal_table`: indexed by parameter, with
        columns ``mean_error_z`` and ``sd_ratio`` at least. None: no reference.
    khat : float, optional
        PSIS k-hat of the guide's importance weights (:func:`pyrovi.diagnostics.psis_khat`).
    khat_interval : (float, float), optional
        Its bootstrap interval (:func:`pyrovi.diagnostics.psis_khat_interval`).
    missed : sequence of dict, optional
        From :func:`pyrovi.diagnostics.missed_correlations`, largest gap first.
    health : dict, optional
        From :func:`pyrovi.diagnostics.reference_health`; None counts as healthy.
    represents_correlations : bool, optional
        Whether the guide family can represent posterior correlations (its
        :class:`pyrovi.guides.GuideFamily` record); None when unknown (a custom guide).
    richer : str, optional
        The family's next richer rung, suggested when the guide falls short.
    guide_name : str, optional
        The guide's name, used in the sentences only (never compared).
    bounds : mapping, optional
        From :func:`pyrovi.diagnostics.validated_bounds` (keys ``reliable``, ``reason``,
        ``mean_error_bound``, ``mean_error_bound_high``, ``sd_error_bound``,
        ``sd_error_bound_high``, ``kl_upper``); used only without a reference table.

    Returns
    -------
    verdict : str
        ``"trust"``, ``"caution"`` or ``"reject"`` (rules in the module docstring).
    reasons : list of str
        Sentences, most important first; for "trust" the first says why.

    Raises
    ------
    ValueError
        If the table is empty or lacks a required column, or there is neither a table
        nor a k-hat.
    """
    guide = _Guide(represents_correlations, richer, guide_name)
    khat = None if khat is None else float(khat)
    if table is None:
        if khat is None:
            raise ValueError("without a reference table the verdict needs a k-hat")
        if bounds is not None:
            return _by_bounds(khat, khat_interval, bounds)
        return _by_khat(khat, khat_interval)
    marginals = _Marginals.of(table)
    missed = list(missed)
    problems = _problems(health)

    level = marginals.level()
    reasons: list[str] = []
    if problems:
        reasons.append(
            f"the reference is unhealthy ({'; '.join(problems)}): the comparison is only "
            "as good as the reference, rerun NUTS longer or reparameterise"
        )
    if level == "trust":
        agreement = marginals.agreement()
        if khat is not None and khat <= TRUST_KHAT:
            agreement += f"; PSIS k-hat {_khat_text(khat, khat_interval)} <= {TRUST_KHAT} agrees"
        reasons.append(agreement)
        if problems:
            level = "caution"
            if khat is not None and not khat <= TRUST_KHAT:
                reasons.append(_khat_bad(khat, khat_interval))
        elif khat is not None and not khat <= TRUST_KHAT:
            reasons.append(_khat_disagrees_accurate(khat, khat_interval))
        reasons.extend(_missed_reasons(missed, set(), guide, accurate=True))
    else:
        explained: set[tuple[str, str]] = set()
        severe, mild = marginals.problems(missed, guide, explained)
        reasons += severe + mild
        if khat is not None:
            if not khat <= TRUST_KHAT:
                reasons.append(_khat_bad(khat, khat_interval))
            elif not problems:
                reasons.append(_khat_disagrees_inaccurate(khat, khat_interval))
        reasons.extend(_missed_reasons(missed, explained, guide, accurate=False))
    if marginals.skipped:
        s = "s" if marginals.skipped > 1 else ""
        reasons.append(
            f"{marginals.skipped} parameter{s} could not be compared "
            "(zero or undefined reference sd)"
        )
    return level, reasons


class _Guide:
    """What the verdict knows of the guide family: wording and the suggestion."""

    def __init__(self, represents: bool | None, richer: str | None, name: str | None) -> None:
        self.represents, self.richer, self.name = represents, richer, name

    @property
    def who(self) -> str:
        return f"the {self.name} guide" if self.name else "the guide"

    @property
    def suggestion(self) -> str:
        if self.richer:
            return f"try {self.richer}"
        return "try a guide family that represents correlations"


class _Marginals:
    """The finite rows of a marginal table and the checks on them."""

    def __init__(self, abs_z: pd.Series, ratio: pd.Series, skipped: int) -> None:
        self.abs_z, self.ratio, self.skipped = abs_z, ratio, skipped
        self.worst_z_name = str(abs_z.idxmax())
        self.worst_z = float(abs_z.max())
        self.worst_sd_name = str(np.abs(np.log(ratio)).idxmax())
        self.worst_sd = float(ratio[self.worst_sd_name])
        self.trust_sd_fail = _outside(ratio, TRUST_SD_RATIO)
        self.caution_sd_fail = _outside(ratio, CAUTION_SD_RATIO)

    @classmethod
    def of(cls, table: pd.DataFrame) -> _Marginals:
        missing = [c for c in ("mean_error_z", "sd_ratio") if c not in table.columns]
        if missing:
            raise ValueError(f"the table lacks the column(s) {', '.join(missing)}")
        if table.empty:
            raise ValueError("the table has no parameters to judge")
        abs_z = table["mean_error_z"].astype(float).abs()
        ratio = table["sd_ratio"].astype(float)
        finite = np.isfinite(abs_z) & np.isfinite(ratio) & (ratio > 0)
        if not finite.any():
            raise ValueError("no parameter has a finite mean error and sd ratio")
        return cls(abs_z[finite], ratio[finite], int((~finite).sum()))

    def level(self) -> str:
        if self.worst_z > CAUTION_MEAN_ERROR_Z or self.caution_sd_fail.any():
            return "reject"
        if self.worst_z > TRUST_MEAN_ERROR_Z or self.trust_sd_fail.any():
            return "caution"
        return "trust"

    def agreement(self) -> str:
        low, high = TRUST_SD_RATIO
        return (
            f"every mean is within {TRUST_MEAN_ERROR_Z} reference sd of the reference (worst "
            f"{_num(self.worst_z)}, {self.worst_z_name}) and every sd ratio within "
            f"[{low}, {high}] (worst {_num(self.worst_sd, 2)}, {self.worst_sd_name})"
        )

    def problems(
        self, missed: list[Mapping[str, Any]], guide: _Guide, explained: set[tuple[str, str]]
    ) -> tuple[list[str], list[str]]:
        """Sentences for the failed checks: (forcing a reject, the others)."""
        severe: list[str] = []
        mild: list[str] = []
        if self.trust_sd_fail.any():
            text = f"sd of {self.worst_sd_name} is {_num(self.worst_sd)} × the reference"
            pair = next((m for m in missed if self.worst_sd_name in (m["a"], m["b"])), None)
            if pair is not None and guide.represents is not True:
                explained.add((pair["a"], pair["b"]))
                verb = "cannot represent" if guide.represents is False else "misses"
                text += (
                    f": {guide.who} {verb} the posterior correlation of {pair['a']} and "
                    f"{pair['b']} (ρ = {float(pair['rho_ref']):.2f}); {guide.suggestion}"
                )
            elif self.worst_sd < 1:
                text += ": the guide is overconfident (posterior too narrow)"
            else:
                text += ": the guide is too wide"
            others = int(self.trust_sd_fail.sum()) - 1
            if others:
                low, high = TRUST_SD_RATIO
                have = "s have sd ratios" if others > 1 else " has an sd ratio"
                text += f"; {others} other parameter{have} outside [{low}, {high}]"
            (severe if self.caution_sd_fail.any() else mild).append(text)
        if self.worst_z > TRUST_MEAN_ERROR_Z:
            text = (
                f"mean of {self.worst_z_name} is {_num(self.worst_z)} reference sd away "
                "from the reference"
            )
            others = int((self.abs_z > TRUST_MEAN_ERROR_Z).sum()) - 1
            if others:
                are = "s are" if others > 1 else " is"
                text += f"; {others} other parameter{are} off by more than {TRUST_MEAN_ERROR_Z} sd"
            (severe if self.worst_z > CAUTION_MEAN_ERROR_Z else mild).append(text)
        return severe, mild


def _by_khat(khat: float, interval: Interval | None) -> tuple[str, list[str]]:
    if not khat <= TRUST_KHAT:
        return "caution", [_khat_bad(khat, interval) + " (no reference to check against)"]
    text = (
        f"PSIS k-hat {_khat_text(khat, interval)} <= {TRUST_KHAT}: the guide covers the "
        "posterior as far as importance weights can tell (no reference to check against)"
    )
    if interval is not None and interval[1] > TRUST_KHAT:
        text += f"; the interval reaches above {TRUST_KHAT}, so this is near the threshold"
    return "trust", [text]


def _by_bounds(
    khat: float, interval: Interval | None, bounds: Mapping[str, Any]
) -> tuple[str, list[str]]:
    reasons: list[str] = []
    if not khat <= TRUST_KHAT:
        reasons.append(_khat_bad(khat, interval) + " (no reference to check against)")
    if not bounds.get("reliable", False):
        why = str(bounds.get("reason") or "the CUBO is not estimable")
        reasons.append(f"no error bound: {why}")
        return "caution", reasons
    mean, mean_high = float(bounds["mean_error_bound"]), float(bounds["mean_error_bound_high"])
    sd, sd_high = float(bounds["sd_error_bound"]), float(bounds["sd_error_bound_high"])
    values = (
        f"every mean within {_num(mean)} q sd of the posterior's (upper value "
        f"{_num(mean_high)}) and every sd within {_num(sd)} q sd (upper value {_num(sd_high)}), "
        f"from CUBO - ELBO = {_num(float(bounds.get('kl_upper', math.nan)))} nats"
    )
    if mean_high <= BOUND_TRUST_MEAN and sd_high <= BOUND_TRUST_SD and not reasons:
        text = (
            f"the validated bounds (Huggins et al. 2020) guarantee {values}: within "
            f"{_num(BOUND_TRUST_MEAN)} and {_num(BOUND_TRUST_SD)}, so every mean is within "
            f"{TRUST_MEAN_ERROR_Z} posterior sd and every sd ratio within "
            f"[{TRUST_SD_RATIO[0]}, {TRUST_SD_RATIO[1]}] (no reference needed); PSIS k-hat "
            f"{_khat_text(khat, interval)} <= {TRUST_KHAT} agrees"
        )
        return "trust", [text]
    if mean_high > BOUND_TRUST_MEAN or sd_high > BOUND_TRUST_SD:
        reasons.append(
            f"the validated bounds allow {values}: above the {_num(BOUND_TRUST_MEAN)} and "
            f"{_num(BOUND_TRUST_SD)} q sd that guarantee trust; they are worst cases over "
            "every direction, so the errors may be smaller, but a reference (NUTS) or a "
            "richer guide is needed to tell"
        )
    else:
        reasons.append(f"the validated bounds guarantee {values}, but k-hat does not agree")
    if khat <= TRUST_KHAT:
        reasons.append(f"PSIS k-hat {_khat_text(khat, interval)} <= {TRUST_KHAT}")
    return "caution", reasons


def _khat_bad(khat: float, interval: Interval | None) -> str:
    return (
        f"PSIS k-hat {_khat_text(khat, interval)} > {TRUST_KHAT}: importance weights are "
        "heavy tailed, the guide misses posterior mass"
    )


def _khat_disagrees_accurate(khat: float, interval: Interval | None) -> str:
    text = (
        f"PSIS k-hat {_khat_text(khat, interval)} is above {TRUST_KHAT} and disagrees "
        "with the reference, which shows every marginal accurate; the verdict follows the "
        "reference, as k-hat is a noisy estimate from the largest few weights"
    )
    if interval is not None and interval[0] > TRUST_KHAT:
        text += (
            f"; the whole interval is above {TRUST_KHAT}, so the far tails or the joint "
            "shape of q are likely off: check tail probabilities and functions of "
            "several parameters against the reference"
        )
    return text


def _khat_disagrees_inaccurate(khat: float, interval: Interval | None) -> str:
    return (
        f"PSIS k-hat {_khat_text(khat, interval)} <= {TRUST_KHAT} disagrees with the "
        "reference and does not flag these errors: weights stay light tailed when q is "
        "wider than the posterior or shifted within it; the reference measures the "
        "errors directly"
    )


def _missed_reasons(
    missed: list[Mapping[str, Any]], explained: set[tuple[str, str]], guide: _Guide, accurate: bool
) -> list[str]:
    rest = [m for m in missed if (m["a"], m["b"]) not in explained]
    if not rest:
        return []
    first = rest[0]
    text = (
        f"the guide misses the posterior correlation of {first['a']} and {first['b']} "
        f"(ρ = {float(first['rho_ref']):.2f} in the reference, "
        f"{float(first['rho_vi']):.2f} in the guide)"
    )
    if accurate:
        text += (
            ": every marginal is accurate, but quantities combining these parameters "
            "(sums, differences, predictions) are not"
        )
    if guide.represents is False:
        text += f"; {guide.who} cannot represent correlations, {guide.suggestion}"
    if len(rest) > 1:
        more = len(rest) - 1
        text += f"; {more} other strongly correlated pair{'s' if more > 1 else ''} missed"
    return [text]


def _khat_text(khat: float, interval: Interval | None) -> str:
    if khat == float("-inf"):
        return "-inf (constant weights)"
    text = _num(khat, 2)
    if interval is not None and all(np.isfinite(interval)):
        text += f" (interval {_num(interval[0], 2)}–{_num(interval[1], 2)})"
    return text


def _problems(health: Mapping[str, Any] | None) -> list[str]:
    return [str(p) for p in (health or {}).get("problems", []) or []]


def _outside(ratio: pd.Series, bounds: tuple[float, float]) -> pd.Series:
    return (ratio < bounds[0]) | (ratio > bounds[1])


def _num(value: float, decimals: int | None = None) -> str:
    """Two significant figures (``0.14``, ``0.8``, ``12``), or fixed decimals."""
    if decimals is not None:
        return f"{value:.{decimals}f}"
    return f"{value:.2g}" if abs(value) < 100 else f"{value:.0f}"
