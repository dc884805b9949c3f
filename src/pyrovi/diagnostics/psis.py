"""Importance weights of a guide against its model, and the PSIS k-hat diagnostic.

For ``z ~ q`` the log importance weight is ``log w = log p(x, z) - log q(z)``. Its mean
is the ELBO, its log-mean-exp estimates ``log p(x)``, and the shape ``k`` of a
generalized Pareto distribution fitted to the largest weights says whether those
estimates can be trusted (Yao, Vehtari, Simpson and Gelman 2018, "Yes, but did it
work?: evaluating variational inference"):

==========  =========  ===============================================================
k-hat       label      meaning
==========  =========  ===============================================================
<= 0.5      good       weights have finite variance; the guide covers the posterior
0.5 - 0.7   ok         finite mean, infinite variance; usable, converges slowly
> 0.7       bad        heavy tails: the guide misses posterior mass; do not trust
==========  =========  ===============================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

__all__ = [
    "CONSTANT_SPREAD",
    "batch_safe",
    "plate_nesting",
    "KHAT_BAD",
    "KHAT_GOOD",
    "guide_log_weights",
    "khat_label",
    "psis_khat",
]

KHAT_GOOD = 0.5
"""k-hat at or below this: importance weights have finite variance ("good")."""

KHAT_BAD = 0.7
"""k-hat above this: weights too heavy tailed to trust ("bad"); in between is "ok"."""

CONSTANT_SPREAD = 1e-3
"""Log weights whose range is below this are constant: all weights agree within 0.1%."""

_PARTICLES = "_particles"


class _VectorizationError(RuntimeError):
    """The model or guide cannot be evaluated for many particles at once."""


def guide_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Mapping[str, Any],
    num_samples: int = 1000,
    seed: int = 0,
) -> np.ndarray:
    """Log importance weights ``log p(x, z) - log q(z)`` for draws ``z ~ q``.

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide, called as ``model(**data)`` and ``guide(**data)``.
    data : mapping
        Keyword arguments of the model and the guide.
    num_samples : int, default 1000
        Number of draws from the guide.
    seed : int, default 0
        Passed to :func:`pyro.set_rng_seed` first.

    Returns
    -------
    numpy.ndarray
        Shape ``(num_samples,)``, float64. ``log p`` sums every sample site of the
        model (observed ones included) replayed at the guide's draws, ``log q`` every
        sample site of the guide (auxiliary ones included), as ``Trace_ELBO`` does.

    Raises
    ------
    ValueError
        If the guide is a point mass (every latent site a ``Delta``: ``AutoDelta``, or
        ``AutoLaplaceApproximation`` before ``laplace_approximation()``): a point mass
        has no density, so its "weights" would be constant and k-hat falsely "good".

    Notes
    -----
    All particles are first evaluated at once inside an outer
    ``pyro.plate("_particles", num_samples)`` left of the model's plates. The result
    is checked against a one-particle evaluation at the same draws; if the batched
    run raises, gives wrong shapes, or disagrees (a model that is not batch safe, such
    as one indexing ``beta[0]``), it falls back silently to a Python loop.
    Runs under :func:`torch.no_grad`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    data = dict(data)
    with torch.no_grad():
        pyro.set_rng_seed(seed)
        guide_tr, model_tr = _traces(model, guide, data)
        latent = [site for _, site in _sample_sites(guide_tr) if not site["is_observed"]]
        if latent and all(isinstance(_base(site["fn"]), dist.Delta) for site in latent):
            raise ValueError(
                "the guide is a point mass (every sample site is a Delta, e.g. a MAP guide): "
                "it has no density, so importance weights and k-hat are undefined"
            )
        nesting = max(_max_plate_nesting(guide_tr), _max_plate_nesting(model_tr))
        shapes = {name: site["value"].shape for name, site in _sample_sites(guide_tr)}
        try:
            log_w = _vectorized_log_weights(model, guide, data, num_samples, nesting, shapes)
        except Exception:  # any failure of the batched run means "use a loop"
            try:  # draws from the (batch-safe) guide at once, the model one draw at a time
                pyro.set_rng_seed(seed)
                log_w = _batched_guide_log_weights(
                    model, guide, data, num_samples, nesting, shapes
                )
            except Exception:
                pyro.set_rng_seed(seed)
                log_w = np.array(
                    [_log_weight(*_traces(model, guide, data))[0] for _ in range(num_samples)]
                )
    return np.asarray(log_w, dtype=np.float64)


def plate_nesting(model: Callable[..., Any], guide: Callable[..., Any],
                  data: Mapping[str, Any]) -> int:
    """How many plate dimensions ``model(**data)`` and ``guide(**data)`` use at most."""
    with torch.no_grad(), poutine.block():
        guide_tr, model_tr = _traces(model, guide, dict(data))
    return max(_max_plate_nesting(guide_tr), _max_plate_nesting(model_tr))


def batch_safe(model: Callable[..., Any], guide: Callable[..., Any], data: Mapping[str, Any],
               num_particles: int = 4) -> bool:
    """Whether ``num_particles`` draws can be evaluated at once in an outer plate.

    True when the batched log weights agree with one-at-a-time evaluations of the same
    draws; plainly written models (``beta[0] + beta[1] * x``) can broadcast silently
    wrong under a particle plate, and this catches them.
    """
    data = dict(data)
    with torch.no_grad(), poutine.block():
        guide_tr, model_tr = _traces(model, guide, data)
        nesting = max(_max_plate_nesting(guide_tr), _max_plate_nesting(model_tr))
        shapes = {name: site["value"].shape for name, site in _sample_sites(guide_tr)}
        try:
            _vectorized_log_weights(model, guide, data, num_particles, nesting, shapes)
        except Exception:  # noqa: BLE001 - any failure means "not batch safe"
            return False
    return True


def _traces(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: dict[str, Any],
    values: poutine.Trace | None = None,
) -> tuple[poutine.Trace, poutine.Trace]:
    """Trace the guide (replaying ``values`` if given) and replay the model at its draws."""
    guide_fn = guide if values is None else poutine.replay(guide, trace=values)
    guide_tr = poutine.trace(guide_fn).get_trace(**data)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**data)
    return guide_tr, model_tr


def _log_weight(guide_tr: poutine.Trace, model_tr: poutine.Trace) -> tuple[float, float]:
    """Return ``log p - log q`` and ``|log p| + |log q|`` (the scale of rounding errors)."""
    log_p = float(model_tr.log_prob_sum())
    log_q = float(guide_tr.log_prob_sum())
    return log_p - log_q, abs(log_p) + abs(log_q)


def _sample_sites(trace: poutine.Trace) -> list[tuple[str, dict[str, Any]]]:
    return [
        (name, site)
        for name, site in trace.nodes.items()
        if site["type"] == "sample" and not site_is_subsample(site)
    ]


def _max_plate_nesting(trace: poutine.Trace) -> int:
    nesting = 0
    for _, site in _sample_sites(trace):
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
        nesting = max(nesting, len(getattr(site["fn"], "batch_shape", ())))
    return nesting


def _in_particle_plate(fn: Callable[..., Any], num: int, dim: int) -> Callable[..., Any]:
    def wrapped(**kwargs: Any) -> Any:
        with pyro.plate(_PARTICLES, num, dim=dim):
            return fn(**kwargs)

    return wrapped


def _per_particle(trace: poutine.Trace, num: int, nesting: int) -> torch.Tensor:
    """Sum each site's log-prob over everything but the particle dimension."""
    trace.compute_log_prob()
    total = torch.zeros(num, dtype=torch.float64)
    for name, site in _sample_sites(trace):
        log_p = site["log_prob"]
        if log_p.dim() != nesting + 1 or log_p.shape[0] != num:
            raise _VectorizationError(f"site {name!r} has log_prob shape {tuple(log_p.shape)}")
        total = total + log_p.double().reshape(num, -1).sum(-1)
    return total


def _base(fn: Any) -> Any:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _vectorized_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: dict[str, Any],
    num: int,
    nesting: int,
    shapes: dict[str, torch.Size],
) -> np.ndarray:
    """All particles at once; raises if the result cannot be trusted."""
    dim = -(nesting + 1)
    guide_tr = poutine.trace(_in_particle_plate(guide, num, dim)).get_trace(**data)
    model_tr = poutine.trace(
        poutine.replay(_in_particle_plate(model, num, dim), trace=guide_tr)
    ).get_trace(**data)
    log_w = (_per_particle(model_tr, num, nesting) - _per_particle(guide_tr, num, nesting)).numpy()
    if log_w.shape != (num,) or np.isnan(log_w).any():
        raise _VectorizationError("batched log weights have the wrong shape or NaNs")
    for j in sorted({0, num - 1}):
        _check_particle(model, guide, data, guide_tr, j, nesting, shapes, log_w[j])
    return log_w


def _one_particle(
    batched_guide_tr: poutine.Trace,
    j: int,
    nesting: int,
    shapes: dict[str, torch.Size],
    skip_deltas: bool = False,
) -> poutine.Trace:
    """The draws of particle ``j`` of a batched guide trace, shaped as unbatched draws.

    With ``skip_deltas`` the ``Delta`` sites (deterministic functions of the other draws,
    recomputed when the guide is replayed) are left out.
    """
    values = poutine.Trace()
    for name, site in _sample_sites(batched_guide_tr):
        if site["is_observed"] or (skip_deltas and isinstance(_base(site["fn"]), dist.Delta)):
            continue
        value = site["value"]
        if value.dim() - site["fn"].event_dim != nesting + 1 or name not in shapes:
            raise _VectorizationError(f"site {name!r} has value shape {tuple(value.shape)}")
        one = value[j]
        if one.numel() != math.prod(shapes[name]):
            raise _VectorizationError(f"site {name!r} changes size under batching")
        values.add_node(
            name, type="sample", value=one.reshape(shapes[name]), is_observed=False,
            infer=site["infer"],
        )
    return values


def _batched_guide_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: dict[str, Any],
    num: int,
    nesting: int,
    shapes: dict[str, torch.Size],
) -> np.ndarray:
    """Guide draws and ``log q`` for all particles at once; ``log p`` one draw at a time.

    For models that are not batch safe the guide (an autoguide) usually still is, and it
    is the expensive half.
    """
    dim = -(nesting + 1)
    guide_tr = poutine.trace(_in_particle_plate(guide, num, dim)).get_trace(**data)
    log_q = _per_particle(guide_tr, num, nesting).numpy()
    log_p = np.empty(num)
    for j in range(num):
        values = _one_particle(guide_tr, j, nesting, shapes)
        model_tr = poutine.trace(poutine.replay(model, trace=values)).get_trace(**data)
        log_p[j] = float(model_tr.log_prob_sum())
    first = _one_particle(guide_tr, 0, nesting, shapes)
    single, single_scale = _log_weight(*_traces(model, guide, data, first))
    if abs(single - (log_p[0] - log_q[0])) > 1e-3 + 1e-5 * single_scale:
        raise _VectorizationError("batched guide log density disagrees with one draw")
    return log_p - log_q


def _check_particle(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: dict[str, Any],
    batched_guide_tr: poutine.Trace,
    j: int,
    nesting: int,
    shapes: dict[str, torch.Size],
    batched_value: float,
) -> None:
    """Re-evaluate particle ``j`` alone and compare with the batched log weight."""
    values = _one_particle(batched_guide_tr, j, nesting, shapes, skip_deltas=True)
    single, scale = _log_weight(*_traces(model, guide, data, values))
    if not (single == batched_value or abs(single - batched_value) <= 1e-3 + 1e-5 * scale):
        raise _VectorizationError(
            f"batched log weight {batched_value} differs from one-particle {single}"
        )


def psis_khat(log_weights: np.ndarray) -> float:
    """Pareto k-hat of importance weights, by Pareto smoothed importance sampling.

    Parameters
    ----------
    log_weights : numpy.ndarray
        Log importance weights of independent draws (any shape, flattened), e.g. from
        :func:`guide_log_weights`. ``-inf`` (zero weight) is allowed.

    Returns
    -------
    float
        The shape estimate of :func:`arviz.psislw` (``reff=1``, independent draws).
        ``-inf`` when the finite log weights are constant (range below
        :data:`CONSTANT_SPREAD`): the weights are bounded, there is no tail to fit, and
        importance sampling is as good as it gets (ArviZ would report ``inf``, its
        value for a tail it cannot fit). ``inf`` when ArviZ cannot fit the tail (fewer
        than five distinct tail values, e.g. one weight dominating the rest).

    Raises
    ------
    ValueError
        On NaN or ``+inf`` log weights, when every weight is zero, or with fewer than
        two draws.
    """
    lw = np.asarray(log_weights, dtype=np.float64).reshape(-1)
    if lw.size < 2:
        raise ValueError(f"psis_khat needs at least two log weights, got {lw.size}")
    if np.isnan(lw).any() or np.isposinf(lw).any():
        raise ValueError("log weights contain NaN or +inf")
    finite = lw[np.isfinite(lw)]
    if finite.size == 0:
        raise ValueError("every importance weight is zero (all log weights are -inf)")
    if np.ptp(finite) < CONSTANT_SPREAD:
        return float("-inf")
    _, khat = az.psislw(lw, reff=1.0)
    return float(khat)


def khat_label(k: float) -> str:
    """Label a k-hat: ``"good"`` (<= 0.5), ``"ok"`` (<= 0.7) or ``"bad"`` (above, or NaN)."""
    if math.isnan(k):
        return "bad"
    if k <= KHAT_GOOD:
        return "good"
    if k <= KHAT_BAD:
        return "ok"
    return "bad"
