"""Held-out log-likelihood per data point by importance weighting with the guide as proposal.

A model whose latent variables are all *local* (one ``z_i`` per data point ``x_i``,
conditionally independent given the data, no global latents: a VAE's decoder with its
weights fixed, or any amortized model once its globals are point estimates) has a log
evidence that is a sum over data points,

    log p(x) = sum_i log p(x_i),    p(x_i) = integral p(x_i | z_i) p(z_i) dz_i,

and each term can be estimated with its own importance sampler. With the guide
``q(z_i | x_i)`` (the encoder) as proposal and ``K`` draws ``z_ik ~ q``, the weights
``w_ik = p(x_i, z_ik) / q(z_ik | x_i)`` give the importance weighted bound of Burda,
Grosse and Salakhutdinov (2016)::

    L_K(x_i) = E[ log (1/K) sum_k w_ik ]   (one estimate: the log of the sample mean)

    ELBO(x_i) = L_1(x_i) <= L_K(x_i) <= L_{K+1}(x_i) <= log p(x_i),

with ``L_K -> log p(x_i)`` as ``K`` grows when the weights have finite variance. The gap
``log p(x_i) - L_K`` shrinks like ``Var(w) / (2 K p(x_i)^2)`` (the delta method), so a
proposal close to the posterior needs few draws and a poor one many.

================================  ================================================
function                          returns
================================  ================================================
:func:`pointwise_log_weights`     ``log w_ik``, shape ``(K, N)``: the plate is kept
:func:`iw_log_likelihood`         ``K -> (mean_i L_K(x_i), se)`` in nats per point
================================  ================================================

The particles are vectorised: model and guide run inside an outer ``pyro.plate`` to the
left of their own plates, in chunks of particles small enough that ``K = 5,000`` draws
for 300 images fit in memory. The first particle of the first chunk is re-evaluated on
its own; a model or guide that broadcasts wrongly under the extra plate is refused rather
than silently wrong.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from pyrovi.infer.util import in_particle_plate

__all__ = ["CHUNK_POINTS", "iw_log_likelihood", "pointwise_log_weights"]

CHUNK_POINTS = 32_768
"""Default chunk: ``CHUNK_POINTS // N`` particles (at least one) per vectorised pass."""

_BATCH_SIZE = "batch_size"


def _call_kwargs(fn: Callable[..., Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with arrays as tensors, and ``batch_size=None`` where ``fn`` takes that
    keyword and ``data`` do not set it (the whole data set, no minibatch)."""
    kwargs = {k: torch.as_tensor(v) if isinstance(v, np.ndarray) else v
              for k, v in data.items()}
    try:
        takes = _BATCH_SIZE in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        takes = False
    if takes and _BATCH_SIZE not in kwargs:
        kwargs[_BATCH_SIZE] = None
    return kwargs


def _sample_sites(trace: poutine.Trace) -> list[tuple[str, dict[str, Any]]]:
    return [(name, site) for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)]


def _structure(guide_tr: poutine.Trace, model_tr: poutine.Trace, plate: str
               ) -> tuple[int, int, int]:
    """Check that every sample site lies in ``plate``; return its size, dim and the
    deepest plate nesting of model and guide."""
    size = dim = None
    nesting = 0
    for where, trace in (("guide", guide_tr), ("model", model_tr)):
        for name, site in _sample_sites(trace):
            frames = [f for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
            for frame in frames:
                nesting = max(nesting, -frame.dim)
            nesting = max(nesting, len(getattr(site["fn"], "batch_shape", ())))
            mine = [f for f in frames if f.name == plate]
            if not mine:
                kind = "observed" if site["is_observed"] else "latent"
                raise ValueError(
                    f"{kind} {where} site {name!r} is not inside plate {plate!r}: the "
                    "log-likelihood does not split into one term per data point "
                    "(a global latent?)")
            frame = mine[0]
            full = frame.full_size if frame.full_size is not None else frame.size
            if frame.size != full:
                raise ValueError(
                    f"plate {plate!r} is subsampled ({frame.size} of {full}): pass the whole "
                    "data (batch_size=None)")
            if size is not None and (frame.size, frame.dim) != (size, dim):
                raise ValueError(f"plate {plate!r} has different sizes or dims across sites")
            size, dim = frame.size, frame.dim
    if size is None:
        raise ValueError(f"no sample site is inside plate {plate!r}")
    return int(size), int(dim), nesting


def _per_point(trace: poutine.Trace, dims: int, plate_dim: int, size: int,
               num: int | None) -> torch.Tensor:
    """Sum each site's log-density over everything but the particle and plate dims.

    ``dims`` is the number of batch dims a site's log-density is padded to; with ``num``
    particles the first of them is the particle dim.
    """
    trace.compute_log_prob()
    shape = (size,) if num is None else (num, size)
    total = torch.zeros(shape, dtype=torch.float64)
    for name, site in _sample_sites(trace):
        log_p = site["log_prob"]
        if log_p.dim() > dims:
            raise ValueError(f"site {name!r} has log-density shape {tuple(log_p.shape)} under "
                             "the particle plate: its batch dims are not all plates")
        log_p = log_p.reshape((1,) * (dims - log_p.dim()) + tuple(log_p.shape))
        log_p = log_p.movedim(dims + plate_dim, -1)
        if log_p.shape[-1] != size or (num is not None and log_p.shape[0] != num):
            raise ValueError(f"site {name!r} has log-density shape {tuple(log_p.shape)}, "
                             f"expected {shape} after summing")
        lead = (num,) if num is not None else ()
        total = total + log_p.double().reshape(*lead, -1, size).sum(-2)
    return total


def pointwise_log_weights(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Mapping[str, Any],
    num_samples: int,
    plate: str = "data",
    seed: int | None = 0,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Log importance weights ``log p(x_i, z_ik) - log q(z_ik | x_i)`` per data point.

    Parameters
    ----------
    model, guide : callable
        Pyro model and guide, called as ``model(**data)`` and ``guide(**data)``; one that
        takes a ``batch_size`` keyword the data do not set is given ``batch_size=None``.
        Every sample site of both (latent and observed) must lie inside ``plate``.
    data : mapping
        Keyword arguments of the model and the guide (numpy arrays become tensors).
    num_samples : int
        ``K``, the number of draws ``z_ik ~ q(z_i | x_i)`` per data point.
    plate : str, default "data"
        Name of the data plate.
    seed : int or None, default 0
        Passed to :func:`pyro.set_rng_seed` first; ``None`` continues the current stream.
    chunk_size : int, optional
        Particles per vectorised pass; by default ``max(1, CHUNK_POINTS // N)``. The draws
        depend on it (the same seed and chunk size give the same numbers).

    Returns
    -------
    torch.Tensor
        Shape ``(num_samples, N)``, float64, on the CPU: ``log p`` sums the model's sample
        sites (observed ones included) replayed at the guide's draws, ``log q`` the guide's,
        each over every dimension but the plate's.

    Raises
    ------
    ValueError
        If a sample site is outside ``plate`` (a global latent: the bound does not split
        by data point), the plate is subsampled, or the model or guide broadcasts wrongly
        under an outer particle plate.

    Notes
    -----
    Runs under :func:`torch.no_grad`.
    """
    if num_samples < 1:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    model_kwargs, guide_kwargs = _call_kwargs(model, data), _call_kwargs(guide, data)
    with torch.no_grad():
        if seed is not None:
            pyro.set_rng_seed(seed)
        guide_tr = poutine.trace(guide).get_trace(**guide_kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**model_kwargs)
        size, plate_dim, nesting = _structure(guide_tr, model_tr, plate)
        shapes = {name: site["value"].shape for name, site in _sample_sites(guide_tr)
                  if not site["is_observed"]}
        if seed is not None:
            pyro.set_rng_seed(seed)
        chunk = int(chunk_size) if chunk_size else max(1, CHUNK_POINTS // size)
        dim = -(nesting + 1)
        parts = []
        done = 0
        while done < num_samples:
            num = min(chunk, num_samples - done)
            g = poutine.trace(in_particle_plate(guide, num, dim)).get_trace(**guide_kwargs)
            m = poutine.trace(poutine.replay(in_particle_plate(model, num, dim), trace=g)
                              ).get_trace(**model_kwargs)
            log_w = (_per_point(m, nesting + 1, plate_dim, size, num)
                     - _per_point(g, nesting + 1, plate_dim, size, num))
            if done == 0:
                _check_first(model, guide, model_kwargs, guide_kwargs, g, shapes, log_w[0],
                             nesting, plate_dim, size)
            parts.append(log_w)
            done += num
    return torch.cat(parts)


def _check_first(model: Callable[..., Any], guide: Callable[..., Any],
                 model_kwargs: dict[str, Any], guide_kwargs: dict[str, Any],
                 batched: poutine.Trace, shapes: dict[str, torch.Size],
                 batched_log_w: torch.Tensor, nesting: int, plate_dim: int, size: int) -> None:
    """Re-evaluate particle 0 without the particle plate and compare per data point."""
    values = poutine.Trace()
    for name, site in _sample_sites(batched):
        if site["is_observed"]:
            continue
        one = site["value"][0]
        if name not in shapes or one.numel() != math.prod(shapes[name]):
            raise ValueError(f"guide site {name!r} changes size under an outer particle "
                             "plate: the guide is not batch safe")
        values.add_node(name, type="sample", value=one.reshape(shapes[name]),
                        is_observed=False, infer=site["infer"])
    g = poutine.trace(poutine.replay(guide, trace=values)).get_trace(**guide_kwargs)
    m = poutine.trace(poutine.replay(model, trace=g)).get_trace(**model_kwargs)
    log_p = _per_point(m, nesting, plate_dim, size, None)
    log_q = _per_point(g, nesting, plate_dim, size, None)
    scale = log_p.abs() + log_q.abs()
    if not torch.all((log_p - log_q - batched_log_w).abs() <= 1e-3 + 1e-5 * scale):
        raise ValueError("the model or guide is not batch safe: log weights under an outer "
                         "particle plate differ from one-particle evaluations")


def iw_log_likelihood(
    model: Callable[..., Any],
    guide: Callable[..., Any],
    data: Mapping[str, Any],
    ks: Sequence[int] = (1, 10, 100, 1000, 5000),
    plate: str = "data",
    seed: int = 0,
    chunk_size: int | None = None,
) -> dict[int, tuple[float, float]]:
    """Importance weighted bounds on the log-likelihood per data point, for several ``K``.

    Parameters
    ----------
    model, guide, data, plate, chunk_size
        As for :func:`pointwise_log_weights`.
    ks : sequence of int, default (1, 10, 100, 1000, 5000)
        Numbers of draws per data point.
    seed : int, default 0
        Seed of the one random stream all the draws come from.

    Returns
    -------
    dict
        ``K -> (mean, se)``: the mean over data points of the per-point bound estimate
        ``log (1/K) sum_k w_ik`` (nats per data point) and its standard error over data
        points (sd with ``ddof=1`` over ``sqrt(N)``; NaN for one data point).

    Notes
    -----
    Every ``K`` gets **fresh draws** (consecutive, disjoint parts of one stream), so each
    entry is an unbiased estimate of ``mean_i L_K(x_i)`` on its own. Nested draws (the
    first ``K`` of one long run) would cost less but make the entries dependent, and the
    sequence is monotone per data point only in expectation either way: rises with ``K``
    are to be read against the noise.

    The standard error mostly measures how much ``log p(x_i)`` varies across data points
    (the uncertainty of the mean as an estimate for the population the points come
    from), not the Monte Carlo error, which is much smaller; differences between two
    ``K`` on the same points are far more precise than either se suggests.
    """
    pyro.set_rng_seed(seed)
    out: dict[int, tuple[float, float]] = {}
    for k in ks:
        k = int(k)
        log_w = pointwise_log_weights(model, guide, data, k, plate=plate, seed=None,
                                      chunk_size=chunk_size)
        bound = (torch.logsumexp(log_w, dim=0) - math.log(k)).numpy()
        se = float(np.std(bound, ddof=1) / math.sqrt(bound.size)) if bound.size > 1 \
            else float("nan")
        out[k] = (float(np.mean(bound)), se)
    return out
