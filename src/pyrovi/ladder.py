"""The guide ladder: ``pyrovi.fit(model, data, guide="auto")``.

A guide family is a rung; its record names the next richer one
(:attr:`pyrovi.guides.GuideFamily.richer`): ``mean_field`` → ``low_rank`` →
``full_rank`` → ``flow``. The ladder fits the first rung and climbs while the evidence
says the fit cannot be trusted, each rung started from the fitted q of the rung below
(its ``as_start()``), so a richer rung begins where the simpler one ended and its ELBO
can only rise from there.

**Evidence on each rung.** With a healthy reference (given, or the default
:func:`pyrovi.nuts` run found in its cache; the ladder never runs NUTS itself) the rung's
verdict is that of :func:`pyrovi.compare`: measured marginal errors. Without one (or with a
reference whose R-hat, ESS or divergences are not good enough), it is the reference-free
verdict of :func:`pyrovi.compare.reference_free`: PSIS k-hat and the bounds of validated
VI (Huggins et al. 2020) computed from the ELBO and the CUBO of the same guide. Both are
in the table either way: ``verdict`` (what decided) and ``verdict_without_reference``.

**The ELBO gain of the next rung.** Both rungs approximate the same posterior, so the
difference of their ELBOs is exactly the difference of their KL(q || p): a richer rung
that gains more than ``GAIN_SIGMAS`` standard errors of the difference, and more than
``MIN_GAIN`` nats, was closer to the posterior, and the rung below it is not the answer
whatever its own verdict said.

**The stopping rule.** The ladder stops at the first rung whose verdict is "trust" and
which the rung above it does not beat by more than noise (so a trusted rung below the top
costs one more fit, the check). The top rung is the answer if it is trusted.

Without a reference, "trust" needs the validated bounds to *guarantee* errors within the
reference-based trust thresholds, which only very close fits achieve (``CUBO - ELBO``
below about 0.013 nats): the bounds are worst cases over every direction, and they are
not estimable at all when the squared weights are heavy tailed. A rung whose k-hat is good
(at most 0.7) but whose bounds are above those thresholds or missing is "caution"; if the
rung above it gains nothing beyond noise, no guide of the ladder does better, and the
ladder stops there, returns it as "caution" and says that a reference is needed to trust
it (a correct, well-fitted guide on a posterior that is nearly Gaussian ends here).

If no rung is trusted or best in that sense, the ladder says so (a
:class:`NoTrustworthyGuideWarning`, ``fit.ladder_stop``), returns the rung with the best
ELBO labelled with its own verdict, and recommends a
reparameterisation (non-centered hierarchies: ``pyro.infer.reparam.LocScaleReparam``) or
NUTS: a funnel or a multimodal posterior defeats every rung, and a fit labelled good would
be the worst answer.

=================  ====================================================================
column             meaning
=================  ====================================================================
guide              the family of the rung
seconds            wall time of the rung's fit and assessment
grad_evals         gradient evaluations of its fit (MAP search and trials included)
elbo, elbo_se      the rung's ELBO and its Monte Carlo standard error (nats)
gain, gain_se      ELBO gain over the rung below and its standard error (nats)
khat               PSIS k-hat of the rung's importance weights
verdict            "trust", "caution" or "reject": what decided the ladder
basis              what the verdict rests on ("reference" or "k-hat and bounds")
verdict_without_reference   the reference-free verdict (equal to ``verdict`` without one)
mean_error_bound   bound on every |mean error| in q sds (validated VI; upper confidence)
chosen             whether this rung is the answer
why                why the ladder climbed past the rung, or stopped at it
=================  ====================================================================
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import arviz as az
import pandas as pd

from pyrovi import diagnostics as dg
from pyrovi.compare import compare, reference_free
from pyrovi.guides import get_family
from pyrovi.infer import svi
from pyrovi.infer.nuts import cached_reference
from pyrovi.infer.objectives import get_objective
from pyrovi.infer.result import SVIFit
from pyrovi.infer.schedule import MIN_GAIN

__all__ = ["COLUMNS", "FIRST_RUNG", "GAIN_SIGMAS", "NoTrustworthyGuideWarning", "climb", "fit",
           "rungs"]

COLUMNS = ("guide", "seconds", "grad_evals", "elbo", "elbo_se", "gain", "gain_se", "khat",
           "verdict", "basis", "verdict_without_reference", "mean_error_bound", "chosen",
           "why")
"""The columns of ``SVIFit.ladder``, in order (the table of the module docstring)."""

FIRST_RUNG = "mean_field"
"""Where the ladder starts."""

GAIN_SIGMAS = 2.0
"""A richer rung beats the one below when its ELBO gain exceeds this many standard errors
of the difference (and ``MIN_GAIN`` nats)."""

RECOMMENDATION = (
    "reparameterise the model (a hierarchy: non-centered, e.g. with "
    "pyro.infer.reparam.LocScaleReparam; see eight_schools_noncentered) or use NUTS "
    "(pyrovi.nuts)")


class NoTrustworthyGuideWarning(UserWarning):
    """No rung of the guide ladder could be trusted; the fit returned is not good."""


@dataclass(frozen=True)
class _Rung:
    fit: SVIFit
    verdict: str
    basis: str
    reasons: tuple[str, ...]
    free: dict[str, Any]
    by_reference: bool


def rungs(first: str = FIRST_RUNG) -> list[str]:
    """The families of the ladder from ``first`` upwards, following each record's
    ``richer``."""
    names = [first]
    while (richer := get_family(names[-1]).richer) is not None:
        names.append(richer)
    return names


def _start_from(below: SVIFit | None) -> Any:
    """The init of the next rung: the rung below's q, when its guide can give it."""
    if below is None or not hasattr(below.guide, "as_start"):
        return "auto"
    with below.in_force():
        return below.guide.as_start(below.guide_name)


def _assess(fit: SVIFit, reference: az.InferenceData | None, seed: int) -> _Rung:
    """The rung's verdict: the reference's when it is healthy, else the reference-free
    one (k-hat and the validated bounds)."""
    if reference is None:
        free = reference_free(fit, seed=seed)
        return _Rung(fit, free["verdict"], free["verdict_basis"], tuple(free["reasons"]),
                     free, by_reference=False)
    comparison = compare(fit, reference, seed=seed)
    free = comparison.reference_free or reference_free(fit, seed=seed)
    if comparison.summary["reference_problems"]:  # not evidence enough: the bounds decide
        return _Rung(fit, free["verdict"], f"{free['verdict_basis']} (the reference is "
                     "unhealthy)", tuple(free["reasons"]), free, by_reference=False)
    return _Rung(fit, comparison.summary["verdict"], comparison.summary["verdict_basis"],
                 tuple(comparison.reasons), free, by_reference=True)


def _best_without_reference(rung: _Rung) -> bool:
    """A "caution" from the reference-free verdict whose importance weights are good
    (PSIS k-hat at most 0.7): what keeps it from "trust" is that the validated bounds are
    loose or not estimable, not evidence of a bad fit. If no richer rung gains beyond
    noise, no guide of the ladder does better, and only a reference can tell more."""
    khat = rung.free.get("khat")
    return (rung.verdict == "caution" and not rung.by_reference
            and khat is not None and khat <= dg.TRUST_KHAT)


def _stop_text(rung: _Rung, kind: str, check: str) -> str:
    name = rung.fit.guide_name
    if kind == "trust":
        return f"{name} is trusted ({rung.basis}) and {check}"
    free = rung.free
    if free.get("reliable"):
        bounds = (f"the validated bounds allow every mean within "
                  f"{free['mean_error_bound_high']:.2g} and every sd within "
                  f"{free['sd_error_bound_high']:.2g} of q's sds (trust needs "
                  f"{dg.BOUND_TRUST_MEAN} and {dg.BOUND_TRUST_SD})")
    else:
        bounds = f"the validated bounds are not available ({free.get('reason', '')})"
    return (f"{name} is the best guide of the ladder without a reference: PSIS k-hat "
            f"{free['khat']:.2f} <= {dg.TRUST_KHAT} and {check}, but {bounds}: caution; "
            "compare it with a NUTS reference (pyrovi.nuts, or pass reference=) before "
            "trusting it")


def _gain(fit: SVIFit, below: SVIFit | None) -> tuple[float, float, bool]:
    if below is None:
        return math.nan, math.nan, False
    gain = fit.elbo - below.elbo
    se = math.hypot(fit.elbo_se, below.elbo_se)
    return gain, se, gain > max(MIN_GAIN, GAIN_SIGMAS * se)


def _nats(gain: float, se: float) -> str:
    return f"{gain:.3g} ± {se:.2g} nats"


def climb(
    model: Callable[..., Any],
    data: dict[str, Any],
    *,
    reference: az.InferenceData | None = None,
    first: str = FIRST_RUNG,
    **fit_options: Any,
) -> SVIFit:
    """Climb the guide ladder; the answer is an :class:`SVIFit` with ``ladder`` filled.

    Parameters
    ----------
    model, data
        As for :func:`pyrovi.infer.fit`.
    reference : arviz.InferenceData, optional
        Reference draws (:func:`pyrovi.nuts`, :func:`pyrovi.load_reference`). By default
        the cached run of ``pyrovi.nuts(model, data)`` with its default settings, if any;
        without one the reference-free verdict decides.
    first : str
        The first rung.
    **fit_options
        Every other argument of :func:`pyrovi.infer.fit` (``elbo``, ``seed``,
        ``max_steps``, ...), passed to every rung's fit; not ``guide`` or ``init``.

    Returns
    -------
    SVIFit
        The chosen rung's fit; ``fit.ladder`` (the table of the module docstring),
        ``fit.ladder_stop`` (why the ladder stopped) and ``fit.rungs`` (every rung's fit).

    Warns
    -----
    NoTrustworthyGuideWarning
        When no rung can be trusted.
    """
    if "init" in fit_options or "guide" in fit_options:
        raise ValueError("the guide ladder chooses each rung's guide and start itself")
    elbo = fit_options.get("elbo", "trace")
    seed = fit_options.get("seed", 0)
    if not get_objective(elbo).judged_by_elbo:
        raise ValueError(f"the guide ladder compares rungs by their ELBO; elbo={elbo!r} "
                         "optimises another objective: use an ELBO family (trace, mean_field, "
                         "graph) or fit one family")
    if reference is None:
        reference = cached_reference(model, data)
    done: list[_Rung | None] = []  # None: the rung's fit failed
    rows: list[dict[str, Any]] = []
    waiting: tuple[int, str] | None = None  # (rung, "trust" | "best") awaiting its check
    answer: int | None = None
    stop = ""
    for i, name in enumerate(rungs(first)):
        below = next((r.fit for r in reversed(done) if r is not None), None)
        began = time.perf_counter()
        try:
            fit = svi.fit(model, data, guide=name, init=_start_from(below), **fit_options)
        except svi.NonFiniteLossError as exc:  # the next rung starts from the one below
            done.append(None)
            rows.append({"guide": name, "seconds": time.perf_counter() - began,
                         "verdict": "reject", "basis": "the fit failed",
                         "verdict_without_reference": "reject", "chosen": False,
                         "why": f"the fit failed ({exc}): climb"})
            continue
        rung = _assess(fit, reference, seed)
        verdict, free = rung.verdict, rung.free
        done.append(rung)
        gain, gain_se, beats = _gain(fit, below)
        rows.append({
            "guide": name, "seconds": time.perf_counter() - began,
            "grad_evals": fit.num_grad_evals,
            "elbo": fit.elbo, "elbo_se": fit.elbo_se, "gain": gain, "gain_se": gain_se,
            "khat": free.get("khat"), "verdict": verdict, "basis": rung.basis,
            "verdict_without_reference": free["verdict"],
            "mean_error_bound": free.get("mean_error_bound_high"), "chosen": False,
            "why": ""})
        if waiting is not None:
            j, kind = waiting
            held = rows[j]["guide"]
            if beats:
                rows[j]["why"] = (f"{rows[j]['verdict']}, but {name} gained "
                                  f"{_nats(gain, gain_se)}: climb")
                waiting = None
            elif kind == "trust" or verdict != "trust":
                rows[j]["why"] = (f"{rows[j]['verdict']}, and {name} gained only "
                                  f"{_nats(gain, gain_se)}: stop")
                rows[i]["why"] = f"the check of {held}: no gain beyond noise"
                answer = j
                stop = _stop_text(done[j], kind, f"the richer {name} gains only "
                                                 f"{_nats(gain, gain_se)}")
                break
            else:  # no gain, but this rung is trusted where the one below was not
                rows[j]["why"] = f"caution, and {name} gained only {_nats(gain, gain_se)} " \
                                 "but is trusted: climb"
                waiting = None
        if verdict == "trust":
            waiting = (i, "trust")
        elif _best_without_reference(rung):
            waiting = (i, "best")
        else:
            rows[i]["why"] = f"{verdict}: {rung.reasons[0] if rung.reasons else ''}: climb"
    if answer is None and waiting is not None:  # the top rung
        answer, kind = waiting
        rows[answer]["why"] = f"{rows[answer]['verdict']}, and no richer rung: stop"
        stop = _stop_text(done[answer], kind, "it is the top rung")
    if answer is None:
        fitted = [j for j, r in enumerate(done) if r is not None]
        if not fitted:
            raise svi.NonFiniteLossError(f"every rung of the guide ladder failed: "
                                         f"{'; '.join(row['why'] for row in rows)}")
        answer = max(fitted, key=lambda j: done[j].fit.elbo)
        rows[-1]["why"] = rows[-1]["why"].removesuffix(": climb") + ": no richer rung"
        verdicts = ", ".join(f"{row['guide']} {row['verdict']} (k-hat {row['khat']:.2f})"
                             if row.get("khat") is not None
                             else f"{row['guide']} {row['verdict']}" for row in rows)
        stop = (f"no rung is trustworthy ({verdicts}); returned {rows[answer]['guide']}, "
                f"the best ELBO, which is not good: {RECOMMENDATION}")
        warnings.warn(stop, NoTrustworthyGuideWarning, stacklevel=2)
    rows[answer]["chosen"] = True
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    return dataclasses.replace(done[answer].fit, ladder=table, ladder_stop=stop,
                               rungs=tuple(r.fit for r in done if r is not None))


def fit(
    model: Callable[..., Any],
    data: dict[str, Any],
    guide: str | Callable[..., Any] = "mean_field",
    *args: Any,
    reference: az.InferenceData | None = None,
    **kwargs: Any,
) -> SVIFit:
    """Fit a variational guide: :func:`pyrovi.infer.fit`, plus ``guide="auto"``.

    ``guide="auto"`` climbs the guide ladder (:func:`climb`, the recommended way to run
    pyrovi): mean-field first, richer families only while the evidence says the fit cannot
    be trusted, every rung reported in ``fit.ladder``. ``reference`` (reference draws) is
    used by the ladder only. Every other argument is that of :func:`pyrovi.infer.fit`.
    """
    if guide == "auto":
        options = inspect.signature(svi.fit).bind(model, data, guide, *args, **kwargs)
        options.arguments.pop("guide")
        return climb(reference=reference, **options.arguments)
    if reference is not None:
        raise ValueError("reference= is used by the guide ladder only (guide='auto')")
    return svi.fit(model, data, guide, *args, **kwargs)


fit.__doc__ = (fit.__doc__ or "") + "\n" + (svi.fit.__doc__ or "").split("\n", 1)[1]
