"""Local sites summarised per site: one row for all of a site's per-person values.

A latent-factor model has a few global parameters and a latent value per person: 301
pupils' factor scores, 20,190 people's health. Listed one by one the persons drown the
globals, and no one reads a thousand rows. So a local site (role ``"local"`` in
:attr:`pyrovi.ModelSpec.site_roles`) gets one row here, summarising its elements' rows of
the marginal table and the calibration of the variational intervals:

=====================  ==================================================================
column                 meaning
=====================  ==================================================================
``parameters``         elements of the site compared (persons × factors)
``median_abs_error_z`` median over elements of ``|mean_vi - mean_ref| / sd_ref``
``max_abs_error_z``    the largest one
``median_sd_ratio``    median of ``sd_vi / sd_ref`` (below 1: q too narrow)
``sd_ratio_low``       5% quantile of the sd ratios
``sd_ratio_high``      95% quantile of the sd ratios
``coverage``           share of reference draws inside the variational central
                       ``INTERVAL_PROB`` interval, averaged over elements: equal to
                       ``INTERVAL_PROB`` when q's intervals are calibrated, below it when
                       they are too narrow (over-confident), above when too wide
=====================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from pyrovi.diagnostics.predictive import INTERVAL_PROB

__all__ = ["LOCAL_SITE_COLUMNS", "interval_coverage", "local_site_table", "site_of"]

LOCAL_SITE_COLUMNS = (
    "site",
    "parameters",
    "median_abs_error_z",
    "max_abs_error_z",
    "median_sd_ratio",
    "sd_ratio_low",
    "sd_ratio_high",
    "coverage",
)


def site_of(parameter: str) -> str:
    """The site of a scalar parameter name: ``"theta[3]"`` -> ``"theta"``."""
    return parameter.split("[", 1)[0]


def interval_coverage(vi: np.ndarray, ref: np.ndarray, prob: float = INTERVAL_PROB) -> float:
    """Share of ``ref`` draws inside the central ``prob`` interval of ``vi`` draws."""
    tail = (1.0 - prob) / 2.0
    lower, upper = np.quantile(np.ravel(vi), [tail, 1.0 - tail])
    ref = np.ravel(ref)
    return float(np.mean((ref >= lower) & (ref <= upper)))


def local_site_table(
    table: pd.DataFrame,
    vi: Mapping[str, np.ndarray],
    ref: Mapping[str, np.ndarray],
    sites: Sequence[str],
    prob: float = INTERVAL_PROB,
) -> pd.DataFrame:
    """One row per local site: errors, sd ratios and interval calibration of its elements.

    Parameters
    ----------
    table : pandas.DataFrame
        The marginal table (:func:`pyrovi.diagnostics.marginal_table`), indexed by
        scalar parameter.
    vi, ref : mapping of str to numpy.ndarray
        Scalar parameter -> draws, as the table was computed from.
    sites : sequence of str
        The local sites to summarise (those with no parameter in the table are skipped).
    prob : float
        Probability of the intervals whose calibration is measured.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`LOCAL_SITE_COLUMNS` (see the module docstring).
    """
    rows = []
    names = np.asarray([site_of(str(name)) for name in table.index])
    for site in sites:
        part = table[names == site]
        if part.empty:
            continue
        error = part["mean_error_z"].abs().to_numpy(dtype=float)
        ratio = part["sd_ratio"].to_numpy(dtype=float)
        ratio = ratio[np.isfinite(ratio)]
        coverage = [interval_coverage(vi[name], ref[name], prob) for name in part.index]
        rows.append(
            {
                "site": site,
                "parameters": len(part),
                "median_abs_error_z": float(np.nanmedian(error)),
                "max_abs_error_z": float(np.nanmax(error)),
                "median_sd_ratio": float(np.median(ratio)) if len(ratio) else float("nan"),
                "sd_ratio_low": float(np.quantile(ratio, 0.05)) if len(ratio) else float("nan"),
                "sd_ratio_high": float(np.quantile(ratio, 0.95)) if len(ratio) else float("nan"),
                "coverage": float(np.mean(coverage)),
            }
        )
    return pd.DataFrame(rows, columns=list(LOCAL_SITE_COLUMNS))
