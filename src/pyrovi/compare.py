"""Comparing a variational posterior with a reference: :func:`compare`.

:func:`compare` aligns the two posteriors (the model's :meth:`ModelSpec.align`), puts
their draws in the data's own units where the model works on standardised data
(:meth:`ModelSpec.to_data_units`), and combines the pure functions of
:mod:`pyrovi.diagnostics` into a :class:`~pyrovi.comparison.Comparison` (re-exported
here), which :mod:`pyrovi.report` renders.

Without a reference, :func:`reference_free` judges a fit by PSIS k-hat and the validated
bounds of :func:`pyrovi.diagnostics.validated_bounds` (ELBO and CUBO of the same guide
draws); :func:`compare` puts those bounds in the :class:`Summary` as well.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pyro
import torch
from pyro.infer.autoguide import AutoContinuous

from pyrovi import diagnostics as dg
from pyrovi.comparison import MODEL_UNITS, Comparison, Summary
from pyrovi.guides import get_family
from pyrovi.infer.batches import whole_data
from pyrovi.infer.result import SVIFit
from pyrovi.infer.util import as_tensor_data, latent_dim
from pyrovi.models import REGISTRY, ModelSpec
from pyrovi.models.spec import DataUnits, convert_draws, relabel_components

__all__ = ["IWAE_K", "KHAT_SAMPLES", "Comparison", "Summary", "compare", "reference_free"]

KHAT_SAMPLES = 4000
"""Importance samples of the guide behind k-hat and the IWAE evidence estimate."""

IWAE_K = 200
"""Importance samples per IWAE batch."""

MAX_CORRELATED = 2000
"""Missed correlations are searched among at most this many parameters (globals first):
the correlation matrices grow with the square of the count."""


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


def _bound_fields(bounds: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`Summary` fields of the validated bounds (defaults when not computed)."""
    if not bounds:
        return {}
    keys = ("cubo", "cubo_se", "kl_upper", "kl_upper_high", "mean_error_bound",
            "mean_error_bound_high", "sd_error_bound", "sd_error_bound_high", "w2_bound")
    return {**{key: float(bounds[key]) for key in keys},
            "bounds_reliable": bool(bounds["reliable"]), "bounds_reason": str(bounds["reason"])}


def _family(guide_name: str | None) -> tuple[bool | None, str | None]:
    """``represents_correlations`` and ``richer`` of a guide family (None, None if unknown)."""
    if guide_name is None:
        return None, None
    try:
        family = get_family(guide_name)
    except ValueError:  # "custom", a callable guide
        return None, None
    return family.represents_correlations, family.richer


def _align(spec: ModelSpec | None, vi: az.InferenceData, ref: az.InferenceData,
           mixture_sites: tuple[str, ...] | None) -> tuple[az.InferenceData, az.InferenceData,
                                                           Any]:
    """Align through the spec's hook; ``mixture_sites`` overrides its component sites."""
    roles: dict[str, str] = dict(spec.site_roles) if spec is not None else {}
    if mixture_sites is not None:
        roles = {site: role for site, role in roles.items() if role != "component"}
        roles.update({site: "component" for site in mixture_sites})
    if spec is not None:
        return spec.align(vi, ref, roles)
    return relabel_components(vi, ref, roles)


def _parameter_units(draws: Mapping[str, Any], units: DataUnits | None,
                     idata: az.InferenceData) -> dict[str, str]:
    """Scalar parameter -> unit label, from the data units of each site element."""
    if units is None:
        return {}
    out: dict[str, str] = {}
    for site in idata.posterior.data_vars:
        shape = idata.posterior[site].shape[2:]
        for index in np.ndindex(*shape):
            name = dg.draws.scalar_name(str(site), index)
            if name in draws:
                out[name] = units.unit(str(site), index)
    return out


def _whitened_draws(fit: SVIFit, num: int, seed: int) -> np.ndarray | None:
    """Draws of a non-Gaussian guide (a flow) in its whitened unconstrained coordinates;
    None for a Gaussian guide (its moment constants are exact) or one whose unconstrained
    draws cannot be had (then q is taken as Gaussian)."""
    guide = fit.guide
    if hasattr(guide, "as_start") or not isinstance(guide, AutoContinuous):
        return None
    with fit.in_force(), torch.no_grad():
        pyro.set_rng_seed(seed)
        posterior = guide.get_posterior(**whole_data(fit.data))
        if isinstance(posterior, (torch.distributions.MultivariateNormal,
                                  torch.distributions.Normal)):
            return None
        z = posterior.sample((num,)).double().reshape(num, -1).numpy()
    centred = z - z.mean(axis=0)
    tril = np.linalg.cholesky(np.atleast_2d(np.cov(centred, rowvar=False)))
    return np.linalg.solve(tril, centred.T).T


def _bounds(fit: SVIFit, log_w: np.ndarray, seed: int) -> dict[str, Any]:
    """:func:`pyrovi.diagnostics.validated_bounds` of a fit's log weights."""
    data = whole_data(fit.data)
    with fit.in_force():
        dim = latent_dim(fit.model, fit.guide, data)
    draws = _whitened_draws(fit, len(log_w), seed)
    if draws is not None and draws.shape[1] != dim:
        draws = None
    bounds = dg.validated_bounds(log_w, max(dim, 1), whitened_draws=draws, seed=seed)
    gaussian = hasattr(fit.guide, "as_start") or (
        isinstance(fit.guide, AutoContinuous) and draws is None)
    if draws is None and not gaussian and bounds["reliable"]:
        # a hand-written or amortized guide: its moment constants are unknown, and the
        # Gaussian ones the sd and W2 bounds would use are no guarantee
        bounds = {**bounds, "reliable": False,
                  "reason": "q's moment constants are unknown for this guide (not a "
                            "Gaussian family, no whitened draws): the bounds are not "
                            "guaranteed"}
    return bounds


def reference_free(fit: SVIFit, *, num_draws: int = KHAT_SAMPLES, seed: int = 0
                   ) -> dict[str, Any]:
    """The verdict on a fit without a reference: PSIS k-hat and the validated bounds.

    Parameters
    ----------
    fit : SVIFit
        A fitted guide with a density (a point mass has no importance weights).
    num_draws : int, default :data:`KHAT_SAMPLES`
        Guide draws behind k-hat, the ELBO and the CUBO.
    seed : int, default 0
        Seed of the draws and of the k-hat bootstrap.

    Returns
    -------
    dict
        ``verdict`` (``"trust"`` or ``"caution"``: the rule of
        :mod:`pyrovi.diagnostics.verdict` with ``bounds``), ``reasons`` (list of str),
        ``verdict_basis`` (:data:`pyrovi.diagnostics.BASIS_BOUNDS`), ``khat``,
        ``khat_low``, ``khat_high`` (its bootstrap interval), and every key of
        :func:`pyrovi.diagnostics.validated_bounds` (``elbo``, ``cubo``, ``cubo_se``,
        ``kl_upper``, ``w2_bound``, ``mean_error_bound``, ``sd_error_bound``, their
        ``*_high`` values, ``reliable``, ``reason``, ...). For a point-mass guide the
        verdict is ``"caution"``, k-hat None and the bounds absent.
    """
    try:
        log_w = fit.log_weights(num_draws, seed=seed)
    except ValueError as err:  # a point mass: no density, no weights
        return {"verdict": "caution", "reasons": [f"no reference-free check: {err}"],
                "verdict_basis": dg.BASIS_KHAT, "khat": None, "khat_low": None,
                "khat_high": None, "reliable": False, "reason": str(err)}
    khat = dg.psis_khat(log_w)
    interval = dg.psis_khat_interval(log_w, seed=seed)
    return _free_verdict(khat, interval, _bounds(fit, log_w, seed))


def _free_verdict(khat: float, interval: tuple[float, float], bounds: dict[str, Any]
                  ) -> dict[str, Any]:
    """:func:`reference_free`'s result from k-hat, its interval and the bounds."""
    # bounds that could not be computed are no evidence: never trust on k-hat alone
    bounds = bounds or {"reliable": False,
                        "reason": "the validated bounds could not be computed for this guide"}
    label, reasons = dg.verdict(None, khat=khat, khat_interval=interval, bounds=bounds)
    return {"verdict": label, "reasons": reasons,
            "verdict_basis": dg.verdict_basis(None, None, bounds=bounds),
            "khat": khat, "khat_low": interval[0], "khat_high": interval[1], **bounds}


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
    local_sites: tuple[str, ...] | None = None,
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
        Sites whose first axis indexes mixture components: they are given the role
        ``"component"`` (replacing the registered model's component sites) and both
        posteriors are aligned through the same hook, :meth:`ModelSpec.align`, which by
        default relabels them to a common component order (label switching).
        Registered mixtures (:attr:`ModelSpec.site_roles`) are aligned without asking.
    local_sites : tuple of str, optional
        Per-person sites, summarised per site (:attr:`Comparison.local_sites`) rather
        than listed one by one; by default the registered model's ``"local"`` sites.

    Returns
    -------
    Comparison
        Its ``vi`` and ``ref`` are the aligned draws; for a registered model whose
        bundled data are standardised (``gmm`` on Old Faithful) every mean and sd is in
        the data's own units (minutes), as :meth:`ModelSpec.to_data_units` gives them,
        and :attr:`Comparison.units` names the unit of each parameter.

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
    vi_idata, ref, info = _align(spec, vi_idata, ref, mixture_sites)
    relabel_note = None
    if info is not None:
        labels["relabelling"] = info.method
        relabel_note = None if info.chain_modes_agree else info.message
    health = dg.reference_health(ref)
    if relabel_note:  # chains in different modes: the reference itself is in question
        health["problems"] = [relabel_note, *health.get("problems", [])]

    units = spec.units(data) if spec is not None else None
    if units is not None:
        vi_idata, ref = convert_draws(vi_idata, units), convert_draws(ref, units)
    vi_draws = dg.scalar_draws(vi_idata)
    ref_draws = dg.scalar_draws(ref)
    common = [name for name in ref_draws if name in vi_draws]
    if not common:
        raise ValueError(
            "the reference has no parameters in common with the variational posterior "
            f"(reference: {', '.join(list(ref_draws)[:5])}; "
            f"variational: {', '.join(list(vi_draws)[:5])})")
    table = dg.marginal_table(vi_draws, ref_draws)
    ref_stack = dg.stack_draws(ref_draws, common)
    w1 = dg.w1_joint(dg.stack_draws(vi_draws, common), ref_stack, standardize_by=ref_stack,
                     seed=seed)
    halves = np.random.default_rng(seed).permutation(len(ref_stack))
    w1_baseline = dg.w1_joint(ref_stack[halves[::2]], ref_stack[halves[1::2]],
                              standardize_by=ref_stack, seed=seed)
    if local_sites is None:
        local_sites = spec.sites_with_role("local") if spec is not None else ()
    local = set(local_sites)
    ordered = sorted(common, key=lambda name: dg.site_of(name) in local)  # globals first
    kept = set(ordered[:MAX_CORRELATED])
    missed = dg.missed_correlations({k: v for k, v in vi_draws.items() if k in kept},
                                    {k: v for k, v in ref_draws.items() if k in kept})
    site_table = dg.local_site_table(table, vi_draws, ref_draws, tuple(local_sites)) \
        if local_sites else None

    khat = log_w = interval = None
    elbo = elbo_se = float("nan")
    if fit is not None:
        elbo, elbo_se = fit.elbo, fit.elbo_se
        try:
            log_w = fit.log_weights(KHAT_SAMPLES, seed=seed,
                                    data=None if data is fit.data else data)
            khat = dg.psis_khat(log_w)
            interval = dg.psis_khat_interval(log_w, seed=seed)
        except ValueError:  # a point-mass guide has no density: no weights, no k-hat
            log_w = None
    bounds: dict[str, Any] = {}
    if fit is not None and log_w is not None:
        try:
            bounds = _bounds(fit, log_w, seed)
        except (ValueError, RuntimeError, NotImplementedError):  # e.g. a support with no
            bounds = {}  # bijection to the reals: the summary keeps its defaults (NaN)
    free = _free_verdict(khat, interval, bounds) if log_w is not None else None

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

    represents, richer = _family(fit.guide_name if fit is not None else labels.get("guide"))
    label, reasons = dg.verdict(table, khat=khat, khat_interval=interval, missed=missed,
                                health=health, represents_correlations=represents,
                                richer=richer, guide_name=labels.get("guide"))
    finite_khat = khat is not None and math.isfinite(khat)
    summary = Summary(
        max_abs_mean_error_z=float(table["mean_error_z"].abs().max()),
        worst_sd_ratio=_worst_sd_ratio(table),
        w1_joint=float(w1),
        w1_joint_baseline=float(w1_baseline),
        khat=float(khat) if finite_khat else None,
        khat_low=float(interval[0]) if finite_khat and interval else None,
        khat_high=float(interval[1]) if finite_khat and interval else None,
        khat_level=dg.KHAT_LEVEL if finite_khat else None,
        khat_label=None if khat is None else dg.khat_label(khat),
        khat_samples=KHAT_SAMPLES if khat is not None else 0,
        elbo=elbo,
        elbo_se=elbo_se,
        log_evidence=log_ev,
        log_evidence_se=log_ev_se,
        log_evidence_method=method,
        kl_gap=gap["kl_gap"],
        kl_gap_low=gap["kl_gap_low"],
        kl_gap_high=gap["kl_gap_high"],
        num_parameters=len(table),
        reference_problems=tuple(health.get("problems", [])),
        verdict=label,
        verdict_basis=dg.verdict_basis(table, health),
        reasons=tuple(reasons),
        parameter_units=units.description if units is not None else MODEL_UNITS,
        **_bound_fields(bounds),
    )
    return Comparison(table=table, summary=summary, vi=vi_idata, ref=ref, vi_draws=vi_draws,
                      ref_draws=ref_draws, health=health, missed=missed,
                      losses=None if fit is None else fit.losses, log_weights=log_w,
                      labels=labels, units=_parameter_units(vi_draws, units, vi_idata),
                      local_sites=site_table,
                      reference_free=free,
                      ladder=fit.ladder if fit is not None else None,
                      ladder_stop=fit.ladder_stop if fit is not None else "")
