"""``comparison.json`` and ``table.csv``: the machine-readable side of a report.

The JSON is strict: NaN and infinities become ``null`` (so ``json.loads`` in any
language accepts it), numpy scalars and arrays become plain numbers and lists.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pyrovi.comparison import TABLE_UNITS
from pyrovi.report.text import SUMMARY_UNITS, pyrovi_version

if TYPE_CHECKING:
    from pyrovi.comparison import Comparison

__all__ = ["comparison_dict", "render_csv", "render_json", "to_jsonable"]


def to_jsonable(value: Any) -> Any:
    """Turn ``value`` into plain JSON types; NaN and ±inf become None.

    Parameters
    ----------
    value : Any
        Nested dicts, lists, tuples, numpy scalars and arrays, pandas objects, paths
        and plain Python values. Anything else is converted with ``str``.

    Returns
    -------
    Any
        Only dict (with str keys), list, str, int, float (finite), bool and None.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {str(key): to_jsonable(item) for key, item in value.items()}
    if isinstance(value, pd.DataFrame):
        return [to_jsonable(row) for row in value.reset_index().to_dict(orient="records")]
    if isinstance(value, (pd.Series, pd.Index)):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, np.ndarray):
        return [to_jsonable(item) for item in value.tolist()]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(item) for item in value]
    if isinstance(value, (PurePath, os.PathLike)):
        return os.fspath(value)
    if value is pd.NA or value is pd.NaT:
        return None
    return str(value)


def comparison_dict(cmp: Comparison) -> dict[str, Any]:
    """Everything ``comparison.json`` holds, as plain JSON types.

    Parameters
    ----------
    cmp : pyrovi.comparison.Comparison

    Returns
    -------
    dict
        ``verdict``, ``reasons``, ``summary`` (every field of ``cmp.summary``),
        ``units`` (summary field or table column -> unit), ``table`` (one object per
        parameter with ``parameter``, its ``unit`` and the table's columns),
        ``reference_health``, ``missed_correlations``, ``local_sites`` (one object per
        per-person site), ``ladder`` (one object per rung of a ``guide="auto"`` fit) and
        ``ladder_stop``, ``labels`` and ``pyrovi_version``.
    """
    table = _with_units(cmp)
    units = {**SUMMARY_UNITS, **TABLE_UNITS}
    return to_jsonable(
        {
            "verdict": cmp.verdict,
            "reasons": list(cmp.reasons),
            "summary": dict(cmp.summary),
            "units": units,
            "table": table,
            "reference_health": dict(cmp.health),
            "missed_correlations": list(cmp.missed),
            "local_sites": []
            if cmp.local_sites is None
            else cmp.local_sites.to_dict(orient="records"),
            "ladder": [] if cmp.ladder is None else cmp.ladder.to_dict(orient="records"),
            "ladder_stop": cmp.ladder_stop,
            "labels": dict(cmp.labels),
            "pyrovi_version": pyrovi_version(),
        }
    )


def _with_units(cmp: Comparison) -> pd.DataFrame:
    """The table with its index named ``parameter`` and a ``unit`` column first."""
    table = cmp.table.copy()
    table.index = table.index.rename("parameter")
    table.insert(0, "unit", [cmp.unit_of(str(name)) for name in table.index])
    return table


def render_json(cmp: Comparison) -> bytes:
    """``comparison.json``: :func:`comparison_dict`, strict JSON, UTF-8, indented."""
    text = json.dumps(comparison_dict(cmp), indent=2, allow_nan=False, ensure_ascii=False)
    return (text + "\n").encode("utf-8")


def render_csv(cmp: Comparison) -> bytes:
    """``table.csv``: the comparison table, its index column named ``parameter`` and each
    parameter's ``unit`` (of its means and sds) beside it."""
    return _with_units(cmp).to_csv(lineterminator="\n").encode("utf-8")
