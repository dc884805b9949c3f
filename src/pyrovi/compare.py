"""Comparing a variational posterior with a reference: :func:`compare` and :class:`Comparison`.

:func:`compare` only combines the pure functions of :mod:`pyrovi.diagnostics`; the
:class:`Comparison` it returns is rendered by :mod:`pyrovi.report`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd

from pyrovi import diagnostics as dg
from pyrovi.infer.result import SVIFit
from pyrovi.infer.util import as_tensor_data, guide_log_weights
from pyrovi.models import REGISTRY, ModelSpec

KHAT_SAMPLES = 2000
IWAE_K = 200


@dataclass(frozen=True)
class Comparison:
    """A variational posterior measured against a reference.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per scalar parameter (``mu[0]``) with ``mean_vi, mean_ref, sd_vi,
        sd_ref, mean_error_z, sd_ratio, w1_std``.
    summary : dict
        ``max_abs_mean_error_z, worst_sd_ratio, w1_joint, khat, elbo, log_evidence,
        kl_gap, verdict`` and the supporting figures (standard errors, intervals,
        methods, reasons; ``w1_joint_baseline`` is the same distance between two halves of
        the reference, the size finite samples alone produce).
    reasons : list of str
        Why the verdict is what it is, most important first.
    vi, ref : arviz.InferenceData
        The variational draws and the reference draws compared.
    health : dict
        Health of the reference (:func:`pyrovi.diagnostics.reference_health`).
    missed : list of dict
        Posterior correlations the guide misses.
    losses : np.ndarray or None
        The SVI loss trace, when the variational side is an :class:`SVIFit`.
    log_weights : np.ndarray or None
        Guide importance log weights used for k-hat and the evidence estimate.
    labels : dict
        Free-form context for the report: ``model``, ``guide``, ``data``, ``relabelling``.
    """

    table: pd.DataFrame
    summary: dict[str, Any]
    reasons: list[str]
    vi: az.InferenceData
    ref: az.InferenceData
    health: dict[str, Any]
    missed: list[dict[str, Any]]
    losses: np.ndarray | None = None
    log_weights: np.ndarray | None = field(default=None, repr=False)
    labels: dict[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> str:
        """``"trust"``, ``"caution"`` or ``"reject"``."""
        return str(self.summary["verdict"])

    def write(self, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
        """Write ``report.html``, ``report.md``, ``comparison.json`` and ``table.csv``.

        Returns
        -------
        dict
            File kind -> path written.
        """
        from pyrovi.report import write_report

        return write_report(self, out_dir)


def _registered(model: Callable[..., Any] | None) -> ModelSpec | None:
    """The registry entry whose model is ``model``, if any."""
    for spec in REGISTRY.values():
        if spec.model is model:
            return spec
    return None


def _worst_sd_ratio(table: pd.DataFrame) -> float:
    ratios = table["sd_ratio"].to_numpy(dtype=float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]  # constants have no ratio
    return float(ratios[np.argmax(np.abs(np.log(ratios)))]) if len(ratios) else float("nan")


def compare(
    vi: SVIFit | az.InferenceData,
    ref: az.InferenceData,
    model: Callable[..., Any] | None = None,
    data: dict[str, Any] | None = None,
    *,
    num_draws: int = 2000,
    seed: int = 0,
    log_evidence: float | None = None,
    labels: dict[str, Any] | None = None,
    mixture_sites: tuple[str, ...] | None = None,
) -> Comparison:
    """Compare a variational posterior with a reference posterior.

    Parameters
    ----------
    vi : SVIFit or arviz.InferenceData
        The variational fit (its guide enables k-hat and the evidence terms) or draws.
    ref : arviz.InferenceData
        Reference draws, e.g. from :func:`pyrovi.nuts` or :func:`pyrovi.load_reference`.
    model, data : optional
        The model and its data; taken from ``vi`` when it is an :class:`SVIFit`.
    num_draws : int
        Variational draws used for the table.
    seed : int
        Seed of the variational draws and importance samples.
    log_evidence : float, optional
        Exact ``log p(x)``. By default the registered model's closed form is used where
        it exists, an importance-weighted (IWAE) estimate otherwise.
    labels : dict, optional
        Context shown in the report (``model``, ``guide``, ``data``, ``relabelling``).
    mixture_sites : tuple of str, optional
        Sites whose first axis indexes mixture components; both posteriors are relabelled
        to a common component order first (label switching). Registered mixtures
        (:attr:`ModelSpec.mixture_sites`) are relabelled without being asked.

    Returns
    -------
    Comparison

    Raises
    ------
    ValueError
        If the reference and the variational draws have no parameter in common.
    """
    labels = dict(labels or {})
    fit = vi if isinstance(vi, SVIFit) else None
    if fit is not None:
        model = model or fit.model
        data = data if data is not None else fit.data
        labels.setdefault("guide", fit.guide_name)
        vi_idata = fit.posterior(num_samples=num_draws, seed=seed)
    else:
        vi_idata = vi
    spec = _registered(model)
    if spec is not None:
        labels.setdefault("model", spec.name)
    if mixture_sites is None:
        mixture_sites = spec.mixture_sites if spec is not None else ()
    relabel_note = None
    if mixture_sites:
        vi_idata, ref, info = dg.relabel_pair(vi_idata, ref, mixture_sites)
        labels["relabelling"] = info.method
        relabel_note = None if info.chain_modes_agree else info.message
    vi_draws = dg.scalar_draws(vi_idata)
    ref_draws = dg.scalar_draws(ref)
    common = [name for name in ref_draws if name in vi_draws]
    if not common:
        raise ValueError(
            "the reference has no parameters in common with the variational posterior "
            f"(reference: {', '.join(list(ref_draws)[:5])}; "
            f"variational: {', '.join(list(vi_draws)[:5])})")
    table = dg.marginal_table(vi_draws, ref_draws)
    w1 = dg.w1_joint(dg.stack_draws(vi_draws, common), dg.stack_draws(ref_draws, common),
                     standardize_by=dg.stack_draws(ref_draws, common), seed=seed)
    ref_stack = dg.stack_draws(ref_draws, common)
    halves = np.random.default_rng(seed).permutation(len(ref_stack))
    w1_baseline = dg.w1_joint(ref_stack[halves[::2]], ref_stack[halves[1::2]],
                              standardize_by=ref_stack, seed=seed)
    health = dg.reference_health(ref)
    if relabel_note:  # chains in different modes: the reference itself is in question
        health["problems"] = [relabel_note, *health.get("problems", [])]
    missed = dg.missed_correlations(vi_draws, ref_draws)

    khat = log_w = None
    elbo = elbo_se = float("nan")
    if fit is not None:
        elbo, elbo_se = fit.elbo, fit.elbo_se
    if fit is not None and data is not None:
        try:
            log_w = guide_log_weights(model, fit.guide, as_tensor_data(data),
                                         num_samples=KHAT_SAMPLES, seed=seed)
            khat = dg.psis_khat(log_w)
        except ValueError:  # a point-mass guide has no density: no weights, no k-hat
            log_w = None

    method, log_ev, log_ev_se = "none", float("nan"), float("nan")
    exact = spec.log_evidence if spec is not None else None
    if log_evidence is not None:
        method, log_ev, log_ev_se = "given", float(log_evidence), 0.0
    elif exact is not None and data is not None:
        method, log_ev, log_ev_se = "exact", float(exact(as_tensor_data(data))), 0.0
    elif log_w is not None:
        log_ev, log_ev_se = dg.iwae_bound(log_w, IWAE_K)
        method = f"iwae (K={IWAE_K}, {len(log_w) // IWAE_K} batches)"
    gap = dg.kl_gap(log_ev, elbo, log_ev_se, elbo_se)

    label, reasons = dg.verdict(table, khat=khat, missed=missed, health=health,
                                guide_name=labels.get("guide"))
    summary = {
        "max_abs_mean_error_z": float(table["mean_error_z"].abs().max()),
        "worst_sd_ratio": _worst_sd_ratio(table),
        "w1_joint": float(w1),
        "w1_joint_baseline": float(w1_baseline),
        "khat": None if khat is None or not math.isfinite(khat) else float(khat),
        "khat_label": None if khat is None else dg.khat_label(khat),
        "khat_samples": KHAT_SAMPLES if khat is not None else 0,
        "elbo": elbo,
        "elbo_se": elbo_se,
        "log_evidence": log_ev,
        "log_evidence_se": log_ev_se,
        "log_evidence_method": method,
        "kl_gap": gap["kl_gap"],
        "kl_gap_low": gap["kl_gap_low"],
        "kl_gap_high": gap["kl_gap_high"],
        "num_parameters": len(table),
        "reference_problems": list(health.get("problems", [])),
        "verdict": label,
        "reasons": reasons,
    }
    return Comparison(table=table, summary=summary, reasons=reasons, vi=vi_idata, ref=ref,
                      health=health, missed=missed,
                      losses=None if fit is None else fit.losses, log_weights=log_w,
                      labels=labels)
