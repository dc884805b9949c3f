"""Tracing a Pyro model: its sites and plates, log importance weights, batch safety, and
the data it is given. Every other module of pyrovi that needs to look inside a model asks
here (the fit loop, NUTS, PSIS and evidence terms of the comparison)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger
from pyro.poutine.util import site_is_subsample

from pyrovi.guides import init_to_median_or_feasible

__all__ = [
    "as_tensor_data",
    "batch_safe",
    "default_dtype",
    "deterministic_sites",
    "guide_log_weights",
    "latent_dim",
    "model_trace",
    "plate_nesting",
    "posterior_sites",
    "subsample_plates",
]

SMALL_DATA = 1_000_000
"""Models whose data hold at most this many numbers are fitted in float64."""


def as_tensor_data(data: Mapping[str, Any], dtype: torch.dtype | None = None,
                   device: str | torch.device | None = None) -> dict[str, Any]:
    """The model's keyword arguments with arrays and lists as tensors.

    Floating-point arrays become ``dtype`` (by default torch's default dtype), integer
    arrays stay integer; everything moves to ``device`` when given.

    Raises
    ------
    ValueError
        If a floating-point entry holds NaN or infinite values.
    """
    dtype = dtype or torch.get_default_dtype()
    out = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.as_tensor(value, dtype=dtype if value.dtype.kind == "f" else None)
        elif isinstance(value, list):
            value = torch.as_tensor(value, dtype=dtype)
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                if not torch.isfinite(value).all():
                    raise ValueError(f"data entry {key!r} contains NaN or infinite values")
                value = value.to(dtype)
            if device is not None:
                value = value.to(device)
        out[key] = value
    return out


def data_size(data: Mapping[str, Any]) -> int:
    """How many numbers the data hold (tensors and arrays)."""
    return sum(int(np.prod(np.shape(v))) for v in data.values()
               if isinstance(v, torch.Tensor | np.ndarray | list))


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run with torch's default floating-point dtype set to ``dtype``, then restore it."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def model_trace(model: Callable[..., Any], data: Mapping[str, Any]) -> poutine.Trace:
    """One trace of ``model(**data)``, latent sites at their initial values (prior median,
    or a feasible point where the prior cannot be sampled), nothing recorded elsewhere."""
    init_model = InitMessenger(init_to_median_or_feasible)(model)
    with poutine.block(), torch.no_grad(), pyro.validation_enabled(False):
        return poutine.trace(init_model).get_trace(**data)


def posterior_sites(model: Callable[..., Any], data: Mapping[str, Any]
                    ) -> dict[str, torch.Size]:
    """Latent and deterministic sample sites of ``model(**data)`` and their shapes."""
    sites = {}
    for name, site in model_trace(model, data).nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["infer"].get("_deterministic") or not site["is_observed"]:
            sites[name] = site["value"].shape
    return sites


def deterministic_sites(model: Callable[..., Any], data: Mapping[str, Any]) -> list[str]:
    """Names of the ``pyro.deterministic`` sites of ``model(**data)``."""
    return [name for name, site in model_trace(model, data).nodes.items()
            if site["type"] == "sample" and site["infer"].get("_deterministic")]


def subsample_plates(model: Callable[..., Any], data: Mapping[str, Any]
                     ) -> dict[str, tuple[int, int]]:
    """Plates that ``model(**data)`` subsamples: name -> (full size, subsample size)."""
    plates = {}
    for name, site in model_trace(model, data).nodes.items():
        if site["type"] == "sample" and site_is_subsample(site):
            fn = site["fn"]
            if fn.subsample_size is not None and 0 < fn.subsample_size < fn.size:
                plates[name] = (int(fn.size), int(fn.subsample_size))
    return plates


_PARTICLES = "_particles"


class VectorizationError(RuntimeError):
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
        nesting = max(max_plate_nesting(guide_tr), max_plate_nesting(model_tr))
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


def latent_dim(model: Callable[..., Any], guide: Callable[..., Any],
               data: Mapping[str, Any]) -> int:
    """Number of unconstrained latent coordinates: the dimension ``d`` of the space q lives in.

    The guide is traced once and the model replayed at its draw; every latent sample site
    of the model (not observed, not deterministic, not a subsample index) counts the numel
    of its value mapped to the unconstrained space (``biject_to(support).inv``), so a
    simplex of ``K`` entries counts ``K - 1``. Run it inside ``fit.in_force()`` for a fit.
    """
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
        _, model_tr = _traces(model, guide, dict(data))
    total = 0
    for _, site in _sample_sites(model_tr):
        if site["is_observed"] or site["infer"].get("_deterministic"):
            continue
        support = site["fn"].support
        if support.is_discrete:
            continue
        total += int(torch.distributions.biject_to(support).inv(site["value"]).numel())
    return total


def plate_nesting(model: Callable[..., Any], guide: Callable[..., Any],
                  data: Mapping[str, Any]) -> int:
    """How many plate dimensions ``model(**data)`` and ``guide(**data)`` use at most."""
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
        guide_tr, model_tr = _traces(model, guide, dict(data))
    return max(max_plate_nesting(guide_tr), max_plate_nesting(model_tr))


def batch_safe(model: Callable[..., Any], guide: Callable[..., Any], data: Mapping[str, Any],
               num_particles: int = 4) -> bool:
    """Whether ``num_particles`` draws can be evaluated at once in an outer plate.

    True when the batched log weights agree with one-at-a-time evaluations of the same
    draws; plainly written models (``beta[0] + beta[1] * x``) can broadcast silently
    wrong under a particle plate, and this catches them.
    """
    data = dict(data)
    with torch.no_grad(), poutine.block(), pyro.validation_enabled(False):
        guide_tr, model_tr = _traces(model, guide, data)
        nesting = max(max_plate_nesting(guide_tr), max_plate_nesting(model_tr))
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


def max_plate_nesting(trace: poutine.Trace) -> int:
    """How many plate dimensions the sample sites of ``trace`` use at most."""
    nesting = 0
    for _, site in _sample_sites(trace):
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
        nesting = max(nesting, len(getattr(site["fn"], "batch_shape", ())))
    return nesting


def in_particle_plate(fn: Callable[..., Any], num: int, dim: int) -> Callable[..., Any]:
    """``fn`` run inside a plate of ``num`` particles at ``dim`` (vectorised draws)."""
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
            raise VectorizationError(f"site {name!r} has log_prob shape {tuple(log_p.shape)}")
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
    guide_tr = poutine.trace(in_particle_plate(guide, num, dim)).get_trace(**data)
    model_tr = poutine.trace(
        poutine.replay(in_particle_plate(model, num, dim), trace=guide_tr)
    ).get_trace(**data)
    log_w = (_per_particle(model_tr, num, nesting) - _per_particle(guide_tr, num, nesting)).numpy()
    if log_w.shape != (num,) or np.isnan(log_w).any():
        raise VectorizationError("batched log weights have the wrong shape or NaNs")
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
            raise VectorizationError(f"site {name!r} has value shape {tuple(value.shape)}")
        one = value[j]
        if one.numel() != math.prod(shapes[name]):
            raise VectorizationError(f"site {name!r} changes size under batching")
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
    guide_tr = poutine.trace(in_particle_plate(guide, num, dim)).get_trace(**data)
    log_q = _per_particle(guide_tr, num, nesting).numpy()
    log_p = np.empty(num)
    for j in range(num):
        values = _one_particle(guide_tr, j, nesting, shapes)
        model_tr = poutine.trace(poutine.replay(model, trace=values)).get_trace(**data)
        log_p[j] = float(model_tr.log_prob_sum())
    first = _one_particle(guide_tr, 0, nesting, shapes)
    single, single_scale = _log_weight(*_traces(model, guide, data, first))
    if abs(single - (log_p[0] - log_q[0])) > 1e-3 + 1e-5 * single_scale:
        raise VectorizationError("batched guide log density disagrees with one draw")
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
        raise VectorizationError(
            f"batched log weight {batched_value} differs from one-particle {single}"
        )


