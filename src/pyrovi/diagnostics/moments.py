"""Marginal comparison of variational and reference draws, one row per scalar parameter.

Columns of the table (``vi`` is the variational posterior, ``ref`` the reference):

============  ==============================================================
mean_vi       mean of the variational draws
mean_ref      mean of the reference draws
sd_vi         standard deviation of the variational draws (``ddof=1``)
sd_ref        standard deviation of the reference draws (``ddof=1``)
mean_error_z  ``(mean_vi - mean_ref) / sd_ref``: mean error in reference sds
sd_ratio      ``sd_vi / sd_ref``: below 1 the guide is overconfident
w1_std        1-Wasserstein distance between the two marginals over ``sd_ref``
============  ==============================================================
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

__all__ = ["TABLE_COLUMNS", "marginal_table"]

TABLE_COLUMNS = ("mean_vi", "mean_ref", "sd_vi", "sd_ref", "mean_error_z", "sd_ratio", "w1_std")


def marginal_table(vi: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """Compare the marginals of variational and reference draws parameter by parameter.

    Parameters
    ----------
    vi, ref : mapping of str to numpy.ndarray
        Scalar parameter name -> draws of any shape (flattened), e.g. from
        :func:`pyrovi.diagnostics.scalar_draws`.

    Returns
    -------
    pandas.DataFrame
        One row per parameter present in both, in the order of ``ref``; index named
        ``"parameter"``; columns :data:`TABLE_COLUMNS` (see the module docstring).
        A reference sd of zero gives infinite or NaN standardised columns.

    Raises
    ------
    ValueError
        If ``vi`` and ``ref`` have no parameter in common.
    """
    names = [name for name in ref if name in vi]
    if not names:
        raise ValueError(
            "no parameters in common between the VI and reference draws "
            f"(VI: {_preview(vi)}; reference: {_preview(ref)})"
        )
    rows = []
    with np.errstate(divide="ignore", invalid="ignore"):
        for name in names:
            x = np.asarray(vi[name], dtype=float).reshape(-1)
            y = np.asarray(ref[name], dtype=float).reshape(-1)
            mean_vi, mean_ref = float(np.mean(x)), float(np.mean(y))
            sd_vi, sd_ref = _sd(x), _sd(y)
            w1 = float(wasserstein_distance(x, y))
            rows.append(
                (
                    mean_vi,
                    mean_ref,
                    sd_vi,
                    sd_ref,
                    np.float64(mean_vi - mean_ref) / sd_ref,
                    np.float64(sd_vi) / sd_ref,
                    np.float64(w1) / sd_ref,
                )
            )
    table = pd.DataFrame(rows, index=pd.Index(names, name="parameter"), columns=TABLE_COLUMNS)
    return table.astype(float)


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if x.size > 1 else float("nan")


def _preview(draws: Mapping[str, np.ndarray], limit: int = 4) -> str:
    names = list(draws)
    shown = ", ".join(names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} in all)"
    return shown or "none"
