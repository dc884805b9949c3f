"""The pictures of a report, each a function from arrays to PNG bytes.

Every function draws on its own :class:`matplotlib.figure.Figure` attached to the
Agg canvas (no pyplot, so no global figure registry to leak into and nothing to
close), under a fixed style, and returns the PNG. They take plain arrays, not a
:class:`~pyrovi.comparison.Comparison`; :mod:`pyrovi.report.figures` decides which
pictures a comparison gets and writes their captions.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Mapping, Sequence

import arviz as az
import matplotlib
import numpy as np
import pandas as pd
from matplotlib import MatplotlibDeprecationWarning
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pyrovi.diagnostics import CAUTION_MEAN_ERROR_Z, KHAT_BAD, KHAT_GOOD, TRUST_MEAN_ERROR_Z

__all__ = [
    "REF_COLOR",
    "VI_COLOR",
    "density_png",
    "elbo_trace_png",
    "khat_png",
    "ladder_png",
    "latent_intervals_png",
    "mean_error_png",
    "pair_png",
]

VI_COLOR = "#1f6fb4"
"""Colour of the variational posterior in every picture (blue)."""

REF_COLOR = "#e07b00"
"""Colour of the reference posterior in every picture (orange)."""

GOOD, OK, BAD = "#1a7f37", "#b26a00", "#cf222e"

_STYLE = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
    "savefig.dpi": 100,
}


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def elbo_trace_png(
    losses: Sequence[float] | np.ndarray,
    *,
    elbo: float | None = None,
    log_evidence: float | None = None,
    window: int | None = None,
) -> bytes:
    """The ELBO over the SVI steps: raw values faint, a moving average on top.

    Parameters
    ----------
    losses : array_like
        The SVI loss per step (``-ELBO`` estimates); non-finite steps are left out.
    elbo, log_evidence : float, optional
        The final ELBO estimate and ``log p(x)``, drawn as horizontal lines when
        finite; the distance between them is the KL gap.
    window : int, optional
        Width of the centred moving average (default: 4% of the steps, 1 to 200).

    Returns
    -------
    bytes
        A PNG image.

    Raises
    ------
    ValueError
        If there is no finite loss.
    """
    values = -np.asarray(losses, dtype=float).reshape(-1)
    finite = np.isfinite(values)
    if not finite.any():
        raise ValueError("elbo_trace_png needs at least one finite loss")
    n = values.size
    steps = np.arange(1, n + 1)
    width = window or int(np.clip(n // 25, 1, 200))
    smooth = (
        pd.Series(np.where(finite, values, np.nan))
        .rolling(width, center=True, min_periods=1)
        .mean()
    )
    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.5, 3.2)
        ax = fig.subplots()
        ax.plot(
            steps[finite],
            values[finite],
            color=VI_COLOR,
            alpha=0.25,
            lw=0.8,
            label="ELBO per step (−loss)",
        )
        ax.plot(
            steps,
            smooth.to_numpy(),
            color=VI_COLOR,
            lw=1.8,
            label=f"moving average ({width} steps)",
        )
        levels = []
        if elbo is not None and math.isfinite(elbo):
            ax.axhline(elbo, color=GOOD, ls="--", lw=1.2, label="final ELBO estimate")
            levels.append(elbo)
        if log_evidence is not None and math.isfinite(log_evidence):
            ax.axhline(log_evidence, color="black", ls=":", lw=1.4, label="log p(x)")
            levels.append(log_evidence)
        late = values[n // 10 :][finite[n // 10 :]] if n >= 20 else values[finite]
        if late.size:
            low = min([float(np.percentile(late, 1)), *levels])
            high = max([float(late.max()), *levels])
            pad = 0.15 * (high - low) if high > low else 1.0
            ax.set_ylim(low - pad, high + pad)
            if values[finite].min() < low - pad:
                ax.set_title("y axis zoomed: the lowest values lie below it", loc="left")
        ax.set_xlabel("SVI step")
        ax.set_ylabel("ELBO (nats)")
        ax.legend(loc="lower right", fontsize=8, frameon=False)
        return _png(fig)


def _density(ax: object, x: np.ndarray, color: str, label: str) -> None:
    x = x[np.isfinite(x)]
    if x.size == 0:
        return
    if x.size < 2 or float(np.ptp(x)) == 0.0:
        ax.axvline(float(x[0]), color=color, lw=1.8, label=label)  # type: ignore[attr-defined]
        return
    with warnings.catch_warnings():
        # arviz 0.23 calls a matplotlib 3.11 API deprecated there; nothing to act on
        warnings.filterwarnings("ignore", category=MatplotlibDeprecationWarning, module="arviz")
        az.plot_dist(x, ax=ax, color=color, label=label, plot_kwargs={"linewidth": 1.6})


def density_png(
    vi: Mapping[str, np.ndarray],
    ref: Mapping[str, np.ndarray],
    names: Sequence[str],
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
) -> bytes:
    """Marginal densities of the variational and the reference draws, one panel each.

    Parameters
    ----------
    vi, ref : mapping of str to numpy.ndarray
        Scalar parameter name -> draws; both must hold every name in ``names``.
    names : sequence of str
        Parameters to draw, in panel order (left to right, top to bottom).
    titles : sequence of str, optional
        Panel titles (default: the names).
    ncols : int, default 4
        Panels per row.

    Returns
    -------
    bytes
        A PNG image. Continuous draws get a kernel density estimate and integer
        draws a histogram (:func:`arviz.plot_dist`); constant draws a vertical line.
    """
    names = list(names)
    if not names:
        raise ValueError("density_png needs at least one parameter")
    titles = list(titles) if titles is not None else names
    ncols = max(1, min(ncols, len(names)))
    nrows = math.ceil(len(names) / ncols)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(2.6 * ncols + 0.4, 2.0 * nrows + 0.5)
        axes = fig.subplots(nrows, ncols, squeeze=False)
        for ax, name, title in zip(axes.flat, names, titles, strict=False):
            _density(ax, np.asarray(ref[name], dtype=float).reshape(-1), REF_COLOR, "reference")
            _density(ax, np.asarray(vi[name], dtype=float).reshape(-1), VI_COLOR, "VI")
            if ax.get_legend() is not None:
                ax.get_legend().remove()
            ax.set_title(title)
            ax.set_yticks([])
            ax.tick_params(labelsize=8)
            ax.spines["left"].set_visible(False)
        for ax in axes.flat[len(names) :]:
            ax.set_axis_off()
        handles = [
            Line2D([], [], color=VI_COLOR, lw=2, label="VI"),
            Line2D([], [], color=REF_COLOR, lw=2, label="reference"),
        ]
        fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
        return _png(fig)


def pair_png(
    vi: np.ndarray,
    ref: np.ndarray,
    names: tuple[str, str],
    *,
    max_points: int = 1500,
    seed: int = 0,
) -> bytes:
    """Scatter plot of two parameters, reference and variational draws in two colours.

    Parameters
    ----------
    vi, ref : numpy.ndarray
        Draws of shape ``(n, 2)``: columns are the two parameters.
    names : tuple of (str, str)
        The parameters' names (x axis, y axis).
    max_points : int, default 1500
        At most this many draws of each side are drawn (a fixed random subset).
    seed : int, default 0
        Seed of the subset.

    Returns
    -------
    bytes
        A PNG image; the legend gives each side's correlation.
    """
    rng = np.random.default_rng(seed)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(4.8, 4.4)
        ax = fig.subplots()
        for draws, color, label in ((ref, REF_COLOR, "reference"), (vi, VI_COLOR, "VI")):
            xy = np.asarray(draws, dtype=float).reshape(-1, 2)
            xy = xy[np.isfinite(xy).all(axis=1)]
            with np.errstate(divide="ignore", invalid="ignore"):
                rho = float(np.corrcoef(xy, rowvar=False)[0, 1]) if len(xy) > 2 else math.nan
            if len(xy) > max_points:
                xy = xy[rng.choice(len(xy), max_points, replace=False)]
            rho_text = "n/a" if math.isnan(rho) else f"{rho:.2f}"
            ax.scatter(
                xy[:, 0],
                xy[:, 1],
                s=5,
                alpha=0.35,
                color=color,
                linewidths=0,
                label=f"{label} (ρ = {rho_text})",
            )
        ax.set_xlabel(names[0])
        ax.set_ylabel(names[1])
        legend = ax.legend(loc="best", fontsize=8, markerscale=3)
        for handle in legend.legend_handles:
            handle.set_alpha(1.0)
        return _png(fig)


def mean_error_png(
    names: Sequence[str],
    mean_error_z: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
) -> bytes:
    """Forest plot of standardized mean errors, one row per parameter.

    Parameters
    ----------
    names : sequence of str
        Parameters, top to bottom.
    mean_error_z : numpy.ndarray
        ``(mean_vi - mean_ref) / sd_ref`` per parameter (the point).
    low, high : numpy.ndarray
        The variational interval ``(mean_vi ∓ 2 sd_vi - mean_ref) / sd_ref`` (the bar).

    Returns
    -------
    bytes
        A PNG image with lines at 0, at ± the trust threshold on the mean error and at
        ± 2 (the reference's own ± 2 sd interval in these units). Points are coloured
        green, amber or red by the trust and caution thresholds.
    """
    names = list(names)
    z = np.asarray(mean_error_z, dtype=float)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    y = np.arange(len(names))[::-1]
    colors = [
        GOOD if abs(v) <= TRUST_MEAN_ERROR_Z else OK if abs(v) <= CAUTION_MEAN_ERROR_Z else BAD
        for v in z
    ]
    with matplotlib.rc_context(_STYLE):
        fig = _figure(6.5, 0.26 * len(names) + 1.5)
        ax = fig.subplots()
        ax.axvspan(-2, 2, color=REF_COLOR, alpha=0.08, lw=0, label="reference ± 2 sd")
        ax.axvline(0, color="black", lw=1)
        for sign in (-1, 1):
            ax.axvline(
                sign * TRUST_MEAN_ERROR_Z,
                color=GOOD,
                ls="--",
                lw=1,
                label=f"± {TRUST_MEAN_ERROR_Z} (trust)" if sign > 0 else None,
            )
        ax.hlines(y, low, high, color=VI_COLOR, lw=2, label="VI mean ± 2 sd")
        ax.scatter(z, y, color=colors, s=28, zorder=3, edgecolors="white", linewidths=0.5)
        ax.set_yticks(y, names)
        ax.set_ylim(-0.7, len(names) - 0.3)
        ax.set_xlabel("error in reference sd: (VI − mean_ref) / sd_ref")
        fig.legend(loc="outside upper center", ncols=3, fontsize=8, frameon=False)
        return _png(fig)


def khat_png(
    khat: float | None,
    log_weights: np.ndarray | None = None,
    interval: tuple[float, float] | None = None,
) -> bytes:
    """PSIS k-hat against its thresholds and, given the weights, their largest values.

    Parameters
    ----------
    khat : float or None
        The k-hat; None or non-finite is drawn as "not finite".
    log_weights : numpy.ndarray, optional
        The importance log weights k-hat was estimated from. When given, a second
        panel shows the largest normalised weights against their rank on log-log
        axes: a Pareto tail of shape k falls on a line of slope −k.
    interval : (float, float), optional
        An interval of k-hat (its bootstrap interval), shaded on the gauge.

    Returns
    -------
    bytes
        A PNG image.
    """
    lw = None
    if log_weights is not None:
        lw = np.asarray(log_weights, dtype=float).reshape(-1)
        lw = lw[np.isfinite(lw)]
        if lw.size < 10:
            lw = None
    finite = khat is not None and math.isfinite(khat)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(9.0 if lw is not None else 6.0, 2.9)
        if lw is not None:
            gauge, tail = fig.subplots(1, 2, width_ratios=(1.1, 1))
        else:
            gauge, tail = fig.subplots(), None
        shown_interval = (
            interval if finite and interval is not None and all(np.isfinite(interval)) else None
        )
        ends = [float(khat)] + list(shown_interval or []) if finite else []
        left = min(0.0, min(ends) - 0.1) if ends else 0.0
        right = max(1.0, max(ends) + 0.15) if ends else 1.0
        gauge.axvspan(left, KHAT_GOOD, color=GOOD, alpha=0.25, lw=0)
        gauge.axvspan(KHAT_GOOD, KHAT_BAD, color=OK, alpha=0.25, lw=0)
        gauge.axvspan(KHAT_BAD, right, color=BAD, alpha=0.25, lw=0)
        for x, word in ((KHAT_GOOD, "good | ok"), (KHAT_BAD, "ok | bad")):
            gauge.axvline(x, color="black", lw=1, ls="--")
            gauge.text(
                x,
                1.02,
                f"{x}\n{word}",
                ha="center",
                va="bottom",
                fontsize=8,
                transform=gauge.get_xaxis_transform(),
            )
        if shown_interval is not None:
            gauge.axvspan(
                *shown_interval,
                ymin=0.3,
                ymax=0.7,
                color="black",
                alpha=0.18,
                lw=0,
                label="bootstrap interval",
            )
        if finite:
            gauge.axvline(float(khat), color="black", lw=3)
            gauge.text(
                float(khat),
                0.5,
                rf"  $\hat{{k}}$ = {float(khat):.2f}",
                va="center",
                transform=gauge.get_xaxis_transform(),
                fontsize=10,
                fontweight="bold",
            )
        else:
            gauge.text(
                0.5,
                0.5,
                "k-hat not finite",
                ha="center",
                va="center",
                transform=gauge.transAxes,
                fontsize=11,
                color=BAD,
            )
        gauge.set_xlim(left, right)
        gauge.set_yticks([])
        gauge.spines["left"].set_visible(False)
        gauge.set_xlabel("PSIS k-hat (Yao et al. 2018 thresholds)")
        if tail is not None and lw is not None:
            w = np.exp(lw - lw.max())
            w = np.sort(w / w.sum())[::-1]
            m = int(min(0.2 * w.size, 3 * math.sqrt(w.size)))
            shown = w[: max(3 * m, min(w.size, 50))]
            rank = np.arange(1, shown.size + 1)
            tail.loglog(rank, shown, ".", color=VI_COLOR, ms=3, label="normalised weights")
            tail.axvspan(
                1, max(m, 1), color="grey", alpha=0.12, lw=0, label=f"tail fitted by PSIS ({m})"
            )
            if finite and float(khat) > 0 and m >= 2:
                anchor = max(1, m // 2)
                guide = shown[anchor - 1] * (rank / anchor) ** (-float(khat))
                tail.loglog(
                    rank,
                    guide,
                    "--",
                    color="black",
                    lw=1,
                    label=rf"slope $-\hat{{k}}$ = −{float(khat):.2f}",
                )
            tail.set_xlabel("rank of weight (largest first)")
            tail.set_ylabel("share of total weight")
            tail.set_title(f"largest weight: {100 * w[0]:.1f}% of {w.size} samples", loc="left")
            tail.legend(fontsize=7, frameon=False, loc="lower left")
        return _png(fig)


def latent_intervals_png(
    vi: Sequence[np.ndarray],
    ref: Sequence[np.ndarray],
    xlabel: str,
    ylabel: str,
) -> bytes:
    """Each person's latent value: the VI and reference intervals side by side.

    Parameters
    ----------
    vi, ref : sequence of numpy.ndarray
        ``(lower, middle, upper)`` arrays, one entry per person, persons in plotting
        order (left to right).
    xlabel, ylabel : str
        Axis labels.

    Returns
    -------
    bytes
        A PNG image: reference intervals in orange, variational ones in blue just right
        of them, the middle value as a dot.
    """
    ref_low, ref_mid, ref_high = (np.asarray(a, dtype=float) for a in ref)
    vi_low, vi_mid, vi_high = (np.asarray(a, dtype=float) for a in vi)
    x = np.arange(len(ref_mid))
    with matplotlib.rc_context(_STYLE):
        fig = _figure(7.5, 3.4)
        ax = fig.subplots()
        ax.vlines(x - 0.15, ref_low, ref_high, color=REF_COLOR, lw=1.6, label="reference")
        ax.scatter(x - 0.15, ref_mid, color=REF_COLOR, s=8, zorder=3)
        ax.vlines(x + 0.15, vi_low, vi_high, color=VI_COLOR, lw=1.6, label="VI")
        ax.scatter(x + 0.15, vi_mid, color=VI_COLOR, s=8, zorder=3)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_xticks([])
        fig.legend(loc="outside upper center", ncols=2, fontsize=8, frameon=False)
        return _png(fig)


VERDICT_COLORS = {"trust": GOOD, "caution": OK, "reject": BAD}
"""The colour of each verdict in the pictures."""


def ladder_png(ladder: pd.DataFrame) -> bytes:
    """The guide ladder: each rung's ELBO (± 2 se) against the gradient evaluations spent
    up to and including it, coloured by its verdict, the chosen rung ringed.

    Parameters
    ----------
    ladder : pandas.DataFrame
        ``SVIFit.ladder``: columns ``guide``, ``grad_evals``, ``elbo``, ``elbo_se``,
        ``verdict``, ``chosen``.

    Returns
    -------
    bytes
        A PNG image.
    """
    cost = np.cumsum(ladder["grad_evals"].to_numpy(dtype=float))
    elbo = ladder["elbo"].to_numpy(dtype=float)
    se = ladder["elbo_se"].to_numpy(dtype=float)
    with matplotlib.rc_context(_STYLE):
        fig = _figure(6.0, 3.0)
        ax = fig.subplots()
        ax.plot(cost, elbo, color="grey", lw=1, zorder=1)
        for x, y, e, guide, verdict, chosen in zip(
            cost, elbo, se, ladder["guide"], ladder["verdict"], ladder["chosen"], strict=True
        ):
            color = VERDICT_COLORS.get(str(verdict), "grey")
            ax.errorbar(x, y, yerr=2 * e, fmt="o", color=color, ms=7, zorder=2)
            if chosen:
                ax.plot(x, y, "o", ms=15, mfc="none", mec="black", mew=1.5, zorder=3)
            ax.annotate(
                f"{guide}\n{verdict}",
                (x, y),
                textcoords="offset points",
                xytext=(0, 9),
                ha="center",
                fontsize=8,
            )
        ax.set_xlabel("gradient evaluations, cumulative")
        ax.set_ylabel("ELBO (nats)")
        ax.margins(x=0.12, y=0.35)
        return _png(fig)
