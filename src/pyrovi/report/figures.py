"""Which pictures a comparison gets, and what their alt texts and captions say.

:func:`report_figures` reads a :class:`~pyrovi.comparison.Comparison`, picks the data
for each picture of :mod:`pyrovi.report.plots` from the draws the comparison holds
(never drawing or extracting them again), skips those that do not apply (no loss trace,
fewer than two parameters, no k-hat) and describes each in words, with units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pyrovi import diagnostics as dg
from pyrovi.report import plots
from pyrovi.report.text import fmt

if TYPE_CHECKING:
    from pyrovi.comparison import Comparison

__all__ = ["MAX_DENSITIES", "MAX_FOREST_ROWS", "ReportFigure", "report_figures", "worst_first"]

MAX_DENSITIES = 12
"""At most this many marginal density panels (the worst mean errors)."""

MAX_FOREST_ROWS = 40
"""At most this many rows in the mean-error plot (the worst mean errors)."""

MAX_PERSONS = 60
"""At most this many persons in the latent-interval plot (evenly spaced in rank)."""


@dataclass(frozen=True)
class ReportFigure:
    """One picture of a report.

    Attributes
    ----------
    key : str
        Short identifier (``"elbo"``, ``"densities"``, ``"pair"``, ``"mean_error"``,
        ``"khat"``); the HTML uses it as the element id.
    title : str
        Heading above the picture.
    png : bytes
        The PNG image.
    alt : str
        Alternative text: what the picture shows, for screen readers.
    caption : str
        How to read the picture.
    """

    key: str
    title: str
    png: bytes = b""
    alt: str = ""
    caption: str = ""


def worst_first(table: pd.DataFrame) -> list[str]:
    """Parameter names ordered by ``|mean_error_z|``, largest first, undefined ones last."""
    strength = table["mean_error_z"].abs().to_numpy(dtype=float)
    order = np.argsort(-np.nan_to_num(strength, nan=-1.0), kind="stable")
    return [str(table.index[i]) for i in order]


def _elbo(cmp: Comparison) -> ReportFigure | None:
    losses = cmp.losses
    if losses is None:
        return None
    losses = np.asarray(losses, dtype=float).reshape(-1)
    if losses.size == 0 or not np.isfinite(losses).any():
        return None
    elbo, log_ev = _float(cmp.summary.get("elbo")), _float(cmp.summary.get("log_evidence"))
    png = plots.elbo_trace_png(losses, elbo=elbo, log_evidence=log_ev)
    lines = ""
    if elbo is not None and math.isfinite(elbo) and log_ev is not None and math.isfinite(log_ev):
        lines = (
            " The dashed line is the final ELBO estimate and the dotted line log p(x); the "
            f"distance between them is the KL gap ({fmt(cmp.summary.get('kl_gap'))} nats)."
        )
    return ReportFigure(
        "elbo",
        "ELBO trace",
        png,
        f"Line chart of the ELBO over {losses.size} SVI steps, in nats.",
        "ELBO (−loss) at each SVI step in nats, faint, with a centred moving average. "
        "A flat curve at the end means the optimiser has converged." + lines,
    )


def _named(cmp: Comparison, name: str) -> str:
    """``name (unit)`` when the parameter has a unit of its own."""
    return f"{name} ({cmp.units[name]})" if name in cmp.units else name


def _densities(cmp: Comparison, vi: dict[str, Any], ref: dict[str, Any]) -> ReportFigure | None:
    names = [n for n in worst_first(cmp.table) if n in vi and n in ref][:MAX_DENSITIES]
    if not names:
        return None
    z = cmp.table["mean_error_z"]
    titles = [
        f"{_named(cmp, name)}  (error {fmt(z[name], 2)} sd)"
        if np.isfinite(z[name])
        else f"{_named(cmp, name)}  (error n/a)"
        for name in names
    ]
    png = plots.density_png(vi, ref, names, titles=titles)
    total = len(cmp.table)
    shown = f"all {total}" if len(names) == total else f"{len(names)} of {total}"
    return ReportFigure(
        "densities",
        "Marginal densities",
        png,
        f"Density curves of {shown} parameters, VI in blue and reference in orange.",
        f"Marginal posterior densities, VI (blue) against the reference (orange), {shown} "
        "parameters, the largest |mean error| first; each title gives the parameter's unit "
        f"and the mean error in reference sd. Axes in {cmp.summary.parameter_units}.",
    )


def _pair(cmp: Comparison, vi: dict[str, Any], ref: dict[str, Any]) -> ReportFigure | None:
    listed = cmp.listed_table()  # globals: per-person values would square the cost
    common = {name: ref[name] for name in listed.index if name in ref and name in vi}
    pair = dg.strongest_pair(common) if len(common) >= 2 else None
    if pair is None:
        return None
    a, b, rho = pair
    png = plots.pair_png(
        dg.stack_draws(vi, [a, b]), dg.stack_draws(ref, [a, b]), (_named(cmp, a), _named(cmp, b))
    )
    return ReportFigure(
        "pair",
        "Strongest correlation",
        png,
        f"Scatter plot of {b} against {a}, VI draws in blue and reference draws in orange.",
        f"Draws of {a} and {b}, the most correlated pair in the reference "
        f"(ρ = {rho:.2f}); reference orange, VI blue. A guide without correlations "
        "(mean field) shows an axis-aligned cloud where the reference is tilted.",
    )


def _mean_error(cmp: Comparison) -> ReportFigure | None:
    t = cmp.table
    z = t["mean_error_z"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        low = ((t["mean_vi"] - 2 * t["sd_vi"] - t["mean_ref"]) / t["sd_ref"]).to_numpy(float)
        high = ((t["mean_vi"] + 2 * t["sd_vi"] - t["mean_ref"]) / t["sd_ref"]).to_numpy(float)
    ok = np.isfinite(z) & np.isfinite(low) & np.isfinite(high)
    if not ok.any():
        return None
    keep = set(worst_first(t[ok])[:MAX_FOREST_ROWS])
    rows = [i for i, name in enumerate(t.index) if ok[i] and name in keep]
    names = [str(t.index[i]) for i in rows]
    png = plots.mean_error_png(names, z[rows], low[rows], high[rows])
    notes = []
    if len(rows) < ok.sum():
        notes.append(f"showing the {len(rows)} largest |mean errors| of {int(ok.sum())}")
    if (~ok).any():
        notes.append(f"{int((~ok).sum())} parameter(s) with an undefined error left out")
    extra = f" ({'; '.join(notes)})" if notes else ""
    return ReportFigure(
        "mean_error",
        "Standardized mean errors",
        png,
        f"Forest plot of the standardized mean error of {len(rows)} parameters.",
        "Mean error of each parameter in reference sd: the point is "
        "(mean_vi − mean_ref) / sd_ref, the bar the VI interval mean_vi ± 2 sd_vi in the "
        "same units, the shaded band the reference's own ± 2 sd. Dashed lines mark ± "
        f"{dg.TRUST_MEAN_ERROR_Z}, the largest error that still allows trust." + extra,
    )


def _khat(cmp: Comparison) -> ReportFigure | None:
    khat = _float(cmp.summary.get("khat"))
    label = cmp.summary.get("khat_label")
    if khat is None and (label is None or cmp.log_weights is None):
        return None
    samples = cmp.summary.get("khat_samples") or (
        0 if cmp.log_weights is None else np.asarray(cmp.log_weights).size
    )
    low, high = _float(cmp.summary.get("khat_low")), _float(cmp.summary.get("khat_high"))
    interval = (low, high) if low is not None and high is not None else None
    png = plots.khat_png(khat, cmp.log_weights, interval=interval)
    value = "not finite" if khat is None else f"{khat:.2f} ({label})"
    if interval is not None:
        level = _float(cmp.summary.get("khat_level")) or 0.9
        value += f", {100 * level:.0f}% bootstrap interval {low:.2f}–{high:.2f}"
    tail = ""
    if cmp.log_weights is not None:
        tail = (
            " Right: the largest normalised importance weights by rank on log-log axes; a "
            "Pareto tail of shape k falls on a line of slope −k, so a flat run of similar "
            "large weights is good and a few dominant weights are bad."
        )
    return ReportFigure(
        "khat",
        "PSIS k-hat",
        png,
        f"Gauge of the PSIS k-hat, {value}, against the thresholds 0.5 and 0.7.",
        f"PSIS k-hat = {value} from {samples} importance samples, against the thresholds "
        f"of Yao et al. (2018): ≤ {dg.KHAT_GOOD} good, ≤ {dg.KHAT_BAD} ok, above bad. "
        "k-hat is itself a Monte Carlo estimate and can be noisy near a threshold (the grey "
        "band is its bootstrap interval); with a healthy reference the verdict follows the "
        "measured marginal errors, not k-hat." + tail,
    )


def _local_intervals(
    cmp: Comparison, vi: dict[str, Any], ref: dict[str, Any]
) -> ReportFigure | None:
    if cmp.local_sites is None or cmp.local_sites.empty:
        return None
    site = str(cmp.local_sites["site"].iloc[0])
    names = [str(n) for n in cmp.table.index if dg.site_of(str(n)) == site and n in vi and n in ref]
    if not names:
        return None
    ref_mean = np.asarray([np.mean(ref[n]) for n in names])
    order = np.argsort(ref_mean, kind="stable")
    picked = order[
        np.unique(np.linspace(0, len(order) - 1, min(MAX_PERSONS, len(order))).round().astype(int))
    ]
    tail = (1.0 - dg.INTERVAL_PROB) / 2.0

    def bands(draws: dict[str, Any]) -> list[np.ndarray]:
        q = np.asarray(
            [np.quantile(np.ravel(draws[names[i]]), [tail, 0.5, 1 - tail]) for i in picked]
        )
        return [q[:, 0], q[:, 1], q[:, 2]]

    png = plots.latent_intervals_png(
        bands(vi),
        bands(ref),
        f"{len(picked)} of {len(names)} elements of {site}, sorted by reference median",
        site,
    )
    row = cmp.local_sites.iloc[0]
    level = int(round(100 * dg.INTERVAL_PROB))
    return ReportFigure(
        "local_intervals",
        f"Per-person values of {site}",
        png,
        f"Interval plot of {len(picked)} elements of {site}: {level}% intervals, reference "
        "orange and VI blue, sorted by the reference median.",
        f"Central {level}% intervals and medians of {site} for {len(picked)} of its "
        f"{len(names)} elements (evenly spaced in the reference's order), reference orange, "
        f"VI blue. Over all elements the VI intervals hold {fmt(row['coverage'], 2)} of the "
        f"reference draws (calibrated: {dg.INTERVAL_PROB}); the median sd ratio is "
        f"{fmt(row['median_sd_ratio'], 2)}.",
    )


def _ladder(cmp: Comparison) -> ReportFigure | None:
    if cmp.ladder is None or cmp.ladder.empty:
        return None
    chosen = cmp.ladder.loc[cmp.ladder["chosen"], "guide"]
    name = str(chosen.iloc[0]) if len(chosen) else "none"
    return ReportFigure(
        "ladder",
        "Guide ladder",
        plots.ladder_png(cmp.ladder),
        f"The ELBO of each of {len(cmp.ladder)} rungs against the gradient evaluations "
        f"spent, coloured by verdict; the chosen rung, {name}, is ringed.",
        "Each rung's ELBO (nats, ± 2 standard errors) against the gradient evaluations spent "
        "up to it: green trust, amber caution, red reject; ringed, the rung the ladder "
        f"returned. Why it stopped: {cmp.ladder_stop}",
    )


def _float(x: Any) -> float | None:
    try:
        return None if x is None else float(x)
    except (TypeError, ValueError):
        return None


def report_figures(cmp: Comparison) -> list[ReportFigure]:
    """The pictures of a comparison, in report order.

    Parameters
    ----------
    cmp : pyrovi.comparison.Comparison
        The comparison to draw; its ``vi_draws`` and ``ref_draws`` are plotted.

    Returns
    -------
    list of ReportFigure
        The guide ladder (a ``guide="auto"`` fit), ELBO trace (when there is a loss
        trace), marginal densities, strongest pair
        (two parameters or more), standardized mean errors (when any is finite), the
        per-person intervals of the first local site (when there is one) and PSIS k-hat
        (when computed).
    """
    vi, ref = cmp.vi_draws, cmp.ref_draws
    figures = [
        _ladder(cmp),
        _elbo(cmp),
        _densities(cmp, vi, ref),
        _pair(cmp, vi, ref),
        _mean_error(cmp),
        _local_intervals(cmp, vi, ref),
        _khat(cmp),
    ]
    return [figure for figure in figures if figure is not None]
