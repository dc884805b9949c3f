"""What a comparison found: :class:`Comparison` and its typed :class:`Summary`.

Data only. This module imports no other pyrovi module (:func:`pyrovi.compare` builds the
records, :mod:`pyrovi.report` renders them), so anything may import it. The one late
reference to another pyrovi module is inside :meth:`Comparison.write`, which loads
:mod:`pyrovi.report` when called: the record has no import-time dependency on it.

Units
-----
Every number carries its unit in one place: the ``unit`` metadata of each
:class:`Summary` field (:meth:`Summary.units`) and :data:`TABLE_UNITS` for the table
columns. "reference sd" means the figure is divided by the reference posterior's
standard deviation of the parameter concerned; "nats" are natural-log units of
probability. The table's means and sds are in each parameter's own unit, given by
:attr:`Comparison.units` (the data's units where the model works on standardised data).
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd

__all__ = ["MODEL_UNITS", "TABLE_UNITS", "Comparison", "Summary"]

MODEL_UNITS = "model units"
"""Unit label of a parameter reported on the scale the model works on."""

TABLE_UNITS: dict[str, str] = {
    "mean_vi": "the parameter's unit",
    "mean_ref": "the parameter's unit",
    "sd_vi": "the parameter's unit",
    "sd_ref": "the parameter's unit",
    "mean_error_z": "reference sd",
    "sd_ratio": "ratio (sd_vi / sd_ref)",
    "w1_std": "reference sd",
}
"""Unit of each column of :attr:`Comparison.table` ("the parameter's unit": see
:attr:`Comparison.units`)."""


def _unit(unit: str) -> Any:
    return {"unit": unit}


@dataclass(frozen=True)
class Summary(Mapping[str, Any]):
    """The headline figures of a comparison, each with its unit.

    A frozen record that also reads as a read-only mapping, so the public contract's
    ``cmp.summary["verdict"]`` keeps working: ``summary["khat"]``, ``summary.get(...)``,
    ``summary.keys()``, ``dict(summary)``, ``{**summary}`` and :meth:`as_dict` all give
    the fields below by name (in this order). Fields are read as attributes too
    (``summary.verdict``). A ``dict`` with these keys converts with :meth:`from_mapping`.

    Attributes
    ----------
    max_abs_mean_error_z : float
        Largest ``|mean_vi - mean_ref| / sd_ref`` over the parameters. Unit: reference sd.
    worst_sd_ratio : float
        The ``sd_vi / sd_ref`` furthest from 1 (in log ratio) over the parameters with a
        spread; NaN if none. Unit: ratio.
    w1_joint : float
        1-Wasserstein distance between all parameters jointly, each divided by its
        reference sd. Unit: reference sd (standardized).
    w1_joint_baseline : float
        The same distance between two halves of the reference: what finite samples alone
        produce. Unit: reference sd (standardized).
    khat : float or None
        PSIS k-hat of the guide's importance weights; None when not computed (draws
        given, or a point-mass guide). Unit: Pareto shape (dimensionless).
    khat_low, khat_high : float or None
        Bootstrap interval of ``khat`` (:data:`khat_level` coverage). Unit: Pareto shape.
    khat_level : float or None
        Coverage of that interval (e.g. 0.9). Unit: probability.
    khat_label : str or None
        ``"good"``, ``"ok"`` or ``"bad"`` (Yao et al. 2018 thresholds).
    khat_samples : int
        Importance samples the k-hat was computed from (0 when not computed). Unit: draws.
    elbo, elbo_se : float
        ELBO estimate of the fit and its Monte Carlo standard error (NaN for draws).
        Unit: nats.
    log_evidence, log_evidence_se : float
        ``log p(x)`` and its standard error (NaN when not estimated). Unit: nats.
    log_evidence_method : str
        ``"exact"``, ``"given"``, ``"iwae (K=..., ... batches)"`` or ``"none"``.
    kl_gap, kl_gap_low, kl_gap_high : float
        ``log p(x) - ELBO = KL(q || p(z | x))`` with a ± 2 standard-error interval.
        Unit: nats.
    num_parameters : int
        Scalar parameters compared. Unit: count.
    reference_problems : tuple of str
        What is wrong with the reference (empty when it is healthy).
    verdict : str
        ``"trust"``, ``"caution"`` or ``"reject"`` (see :mod:`pyrovi.diagnostics.verdict`).
    verdict_basis : str
        What decided it: ``"reference"`` (measured marginal errors against a healthy
        reference) or ``"reference and k-hat"`` (an unhealthy reference: k-hat counts too).
    reasons : tuple of str
        Why, most important first.
    parameter_units : str
        The unit system of the table's means and sds: ``"model units"`` or a description
        of the data's units (e.g. ``"data units of old_faithful: eruptions (min), ..."``).
    cubo, cubo_se : float
        The chi upper bound ``CUBO_2 = 1/2 log E_q[w^2] >= log p(x)`` of the guide and its
        delta-method standard error, from the k-hat draws; with the ELBO it sandwiches
        the evidence, ``ELBO <= log p(x) <= CUBO``. NaN for draws. Unit: nats.
    kl_upper, kl_upper_high : float
        ``CUBO - ELBO >= KL(q || p(z | x))``, from the same draws, and its value plus two
        standard errors; ``inf`` when the CUBO is not estimable. Unit: nats.
    mean_error_bound, mean_error_bound_high : float
        Validated bound (Huggins et al. 2020, :func:`pyrovi.diagnostics.validated_bounds`)
        on every ``|mean_p - mean_q| / sd_q`` in the unconstrained space, no reference
        needed, and its upper confidence value. Unit: q sd.
    sd_error_bound, sd_error_bound_high : float
        The same for every ``|sd_p - sd_q| / sd_q``. Unit: q sd.
    w2_bound : float
        The paper's bound on the 2-Wasserstein distance between q and the posterior in
        q's whitened unconstrained coordinates. Unit: q sd (whitened).
    bounds_reliable : bool or None
        Whether the CUBO, hence the bounds, could be estimated (None: not computed).
    bounds_reason : str
        Why not, when not.
    """

    max_abs_mean_error_z: float = field(metadata=_unit("reference sd"))
    worst_sd_ratio: float = field(metadata=_unit("ratio (sd_vi / sd_ref)"))
    w1_joint: float = field(metadata=_unit("reference sd (standardized)"))
    w1_joint_baseline: float = field(metadata=_unit("reference sd (standardized)"))
    khat: float | None = field(metadata=_unit("Pareto shape (dimensionless)"))
    khat_low: float | None = field(metadata=_unit("Pareto shape (dimensionless)"))
    khat_high: float | None = field(metadata=_unit("Pareto shape (dimensionless)"))
    khat_level: float | None = field(metadata=_unit("probability"))
    khat_label: str | None = field(metadata=_unit(""))
    khat_samples: int = field(metadata=_unit("importance samples"))
    elbo: float = field(metadata=_unit("nats"))
    elbo_se: float = field(metadata=_unit("nats"))
    log_evidence: float = field(metadata=_unit("nats"))
    log_evidence_se: float = field(metadata=_unit("nats"))
    log_evidence_method: str = field(metadata=_unit(""))
    kl_gap: float = field(metadata=_unit("nats"))
    kl_gap_low: float = field(metadata=_unit("nats"))
    kl_gap_high: float = field(metadata=_unit("nats"))
    num_parameters: int = field(metadata=_unit("count"))
    reference_problems: tuple[str, ...] = field(metadata=_unit(""))
    verdict: str = field(metadata=_unit(""))
    verdict_basis: str = field(metadata=_unit(""))
    reasons: tuple[str, ...] = field(metadata=_unit(""))
    parameter_units: str = field(default=MODEL_UNITS, metadata=_unit(""))
    cubo: float = field(default=math.nan, metadata=_unit("nats"))
    cubo_se: float = field(default=math.nan, metadata=_unit("nats"))
    kl_upper: float = field(default=math.nan, metadata=_unit("nats"))
    kl_upper_high: float = field(default=math.nan, metadata=_unit("nats"))
    mean_error_bound: float = field(default=math.nan, metadata=_unit("q sd (unconstrained)"))
    mean_error_bound_high: float = field(default=math.nan,
                                         metadata=_unit("q sd (unconstrained)"))
    sd_error_bound: float = field(default=math.nan, metadata=_unit("q sd (unconstrained)"))
    sd_error_bound_high: float = field(default=math.nan, metadata=_unit("q sd (unconstrained)"))
    w2_bound: float = field(default=math.nan, metadata=_unit("q sd (whitened)"))
    bounds_reliable: bool | None = field(default=None, metadata=_unit(""))
    bounds_reason: str = field(default="", metadata=_unit(""))

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference_problems", tuple(self.reference_problems))
        object.__setattr__(self, "reasons", tuple(self.reasons))

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Summary:
        """A summary from a mapping with these keys (unknown keys are an error).

        Raises
        ------
        TypeError
            If a key is unknown or a field without a default is missing.
        """
        return cls(**dict(values))

    @classmethod
    def units(cls) -> dict[str, str]:
        """Field name -> unit, for the numeric fields (those with a unit)."""
        return {f.name: f.metadata["unit"] for f in fields(cls) if f.metadata.get("unit")}

    def as_dict(self) -> dict[str, Any]:
        """The fields as a plain ``dict`` (tuples stay tuples)."""
        return asdict(self)

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


@dataclass(frozen=True)
class Comparison:
    """A variational posterior measured against a reference.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per scalar parameter (``mu[0]``) with ``mean_vi, mean_ref, sd_vi,
        sd_ref, mean_error_z, sd_ratio, w1_std`` (units: :data:`TABLE_UNITS`; means and
        sds in each parameter's unit, :attr:`units`).
    summary : Summary
        The headline figures; reads as a dict too (``cmp.summary["verdict"]``). A plain
        mapping passed here is converted with :meth:`Summary.from_mapping`.
    vi, ref : arviz.InferenceData
        The variational and reference draws compared: aligned (mixture components
        relabelled to a common order) and in the units of the table.
    vi_draws, ref_draws : dict of str to numpy.ndarray
        The same draws as named scalar parameters (``"mu[0]"`` -> array of shape
        ``(chain, draw)``): what the table was computed from and the pictures show.
    health : dict
        Health of the reference (:func:`pyrovi.diagnostics.reference_health`).
    missed : list of dict
        Posterior correlations the guide misses.
    losses : numpy.ndarray or None
        The SVI loss trace, when the variational side is a fit.
    log_weights : numpy.ndarray or None
        Guide importance log weights used for k-hat and the evidence estimate.
    labels : dict
        Context for the report: ``model``, ``guide``, ``data``, ``relabelling``.
    units : dict of str to str
        Scalar parameter -> its unit (``"min"``, ``"probability"``); parameters not
        listed are in :data:`MODEL_UNITS`.
    local_sites : pandas.DataFrame or None
        One row per local (per-person) site: errors, sd ratios and interval calibration
        of its elements (:func:`pyrovi.diagnostics.local_site_table`); None when the
        model has no local site. Reports then list only the other parameters one by one
        (:meth:`listed_table`); :attr:`table` keeps every row.
    reference_free : dict or None
        The verdict the fit gets without the reference, from the same importance draws
        (:func:`pyrovi.compare.reference_free`'s result: ``verdict``, ``reasons``,
        ``khat``, the validated bounds); None when the variational side is draws.
    ladder : pandas.DataFrame or None
        The guide ladder of a fit made with ``guide="auto"`` (``SVIFit.ladder``: one row
        per rung); None otherwise.
    ladder_stop : str
        Why the ladder stopped where it did (empty without a ladder).
    """

    table: pd.DataFrame
    summary: Summary
    vi: az.InferenceData
    ref: az.InferenceData
    vi_draws: dict[str, np.ndarray] = field(repr=False)
    ref_draws: dict[str, np.ndarray] = field(repr=False)
    health: dict[str, Any] = field(default_factory=dict)
    missed: list[dict[str, Any]] = field(default_factory=list)
    losses: np.ndarray | None = None
    log_weights: np.ndarray | None = field(default=None, repr=False)
    labels: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    local_sites: pd.DataFrame | None = None
    reference_free: dict[str, Any] | None = field(default=None, repr=False)
    ladder: pd.DataFrame | None = None
    ladder_stop: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.summary, Summary):
            object.__setattr__(self, "summary", Summary.from_mapping(self.summary))

    @property
    def verdict(self) -> str:
        """``"trust"``, ``"caution"`` or ``"reject"``."""
        return str(self.summary.verdict)

    @property
    def reasons(self) -> list[str]:
        """Why the verdict is what it is, most important first."""
        return list(self.summary.reasons)

    def listed_table(self) -> pd.DataFrame:
        """The rows a report lists one by one: every parameter not of a local site."""
        if self.local_sites is None or self.local_sites.empty:
            return self.table
        local = set(self.local_sites["site"])
        keep = [str(name).split("[", 1)[0] not in local for name in self.table.index]
        return self.table[keep]

    def unit_of(self, parameter: str) -> str:
        """The unit of a scalar parameter's mean and sd in :attr:`table`."""
        return self.units.get(parameter, MODEL_UNITS)

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.html``, ``report.md``, ``comparison.json`` and ``table.csv``.

        Returns
        -------
        dict
            File kind -> path written.
        """
        report = importlib.import_module("pyrovi.report")  # late: the renderer sits above
        return report.write_report(self, out_dir)

