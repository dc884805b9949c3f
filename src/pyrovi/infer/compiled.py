"""The model's log density on the flat unconstrained vector, compiled once.

A Gaussian guide is a distribution over one flat vector ``u`` of the model's latent sites
in the unconstrained space, so its ELBO needs nothing of Pyro's ELBO machinery:

    ELBO(q) = E_q[ log p(x, T(u)) + log |det J_T(u)| ] + H(q),

with ``T`` the bijections onto the sites' supports (``biject_to``) and ``H(q)`` q's
entropy in closed form. :class:`LogDensity` is the first term's integrand for a batch of
``K`` draws at once: the draws are cut into the sites' blocks, mapped onto the supports,
and the model is run once, conditioned on them, inside a plate of ``K`` particles left of
its own plates. Tracing that run with :func:`torch.jit.trace` for each particle count
leaves a graph of tensor operations: the model's Python, Pyro's effect handlers and the
guide's trace are gone from the fit loop, which is where the time of a Pyro SVI step goes
for the small and medium models a reference comparison is made on.

The path is taken only where it gives the same numbers as the model run by Pyro:

* the batched density of a few draws equals the unbatched density of each (the model
  broadcasts correctly under a particle plate; where it does not, as a model indexing
  ``beta[0]``, the draws are mapped over the model as written with
  :func:`torch.func.vmap` instead, and that is checked the same way), and
* the traced graph equals the eager run at draws other than those it was traced at (their
  negation and a random perturbation: no control flow that depends on the latent values
  was frozen into it); a graph that fails the check is dropped and the eager batched run
  is used instead.

:func:`flat_posterior` gives q of the Gaussian guides of :mod:`pyrovi.guides.gaussian` as
one distribution over ``u`` with ``rsample``, ``log_prob`` and ``entropy``;
:func:`compiled_path` says whether (and why not) a model and guide can take the path.
Models with discrete latents, parameters of their own, minibatches, or guides other than
the Gaussian families use Pyro's ELBOs instead.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.distributions import biject_to

from pyrovi.guides.gaussian import (
    AutoWhitenedNormal,
    MeanFieldNormal,
    SiteSlices,
    deep_getattr,
    site_slices,
)
from pyrovi.infer.util import in_particle_plate, max_plate_nesting, model_trace

TRACE_CHECK_RTOL = {torch.float64: 1e-6, torch.float32: 1e-4}
"""Relative tolerance (of the density's scale), by dtype, of the checks that the batched
run equals the unbatched one and the traced graph the eager run."""
MAX_TRACED = 8
"""Traced graphs kept per density (one per particle count); beyond, the eager run."""


class LogDensity:
    """``u -> log p(x, T(u)) + log |det J_T(u)|`` of ``model(**data)``.

    Parameters
    ----------
    model : callable
        The Pyro model, called as ``model(**data)``.
    data : dict
        Its keyword arguments (tensors already in the fit's dtype and device).
    sites : dict
        Site name -> ``(start, end, unconstrained shape)`` of its block in ``u``
        (:func:`~pyrovi.guides.gaussian.site_slices`).
    nesting : int, optional
        The model's plate nesting; the particle plate sits left of it. By default read
        from a trace of the model.
    vmap : bool, optional
        Batch the draws with :func:`torch.func.vmap` over the model as written, one draw
        at a time, instead of a particle plate: for models that broadcast wrongly under
        a plate (``beta[0] + beta[1] * x``). One graph, traced for a single draw, then
        serves every particle count.

    Attributes
    ----------
    compiled : bool
        Whether traced graphs are used (False after a graph failed its check).
    num_traces, num_calls : int
        Graphs traced and calls made: a fit traces once per particle count and reuses
        the graph for every step.
    """

    def __init__(self, model: Callable[..., Any], data: dict[str, Any], sites: SiteSlices,
                 nesting: int | None = None, vmap: bool = False) -> None:
        self.model = model
        self.vmap = vmap
        self.data = data
        self.sites = sites
        self.dim = max((hi for _, hi, _ in sites.values()), default=0)
        trace = model_trace(model, data)
        self.nesting = max_plate_nesting(trace) if nesting is None else nesting
        self.transforms = {name: biject_to(trace.nodes[name]["fn"].support)
                           for name in sites}
        self.event_dims = {name: trace.nodes[name]["fn"].event_dim + len(shape)
                           - len(trace.nodes[name]["value"].shape)
                           for name, (_, _, shape) in sites.items()}
        self.compiled = True
        self.num_traces = 0
        self.num_calls = 0
        self._graphs: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {}

    def eager(self, u: torch.Tensor) -> torch.Tensor:
        """The log density run by Pyro: ``u`` of shape ``(d,)`` gives a scalar (the model
        as written), ``(K, d)`` a vector of ``K`` (the model in a particle plate, or
        mapped over the draws with ``vmap``)."""
        if self.vmap and u.dim() == 2:
            with pyro.validation_enabled(False):  # its checks branch on the values
                return torch.func.vmap(self._run)(u)
        return self._run(u)

    def _run(self, u: torch.Tensor) -> torch.Tensor:
        batched = u.dim() == 2
        num = u.shape[0] if batched else 1
        lead = (num,) + (1,) * self.nesting
        values, log_det = {}, u.new_zeros(num if batched else ())
        for name, (lo, hi, shape) in self.sites.items():
            block = u[..., lo:hi]
            event_dim = self.event_dims[name]
            if batched:
                block = block.reshape(torch.broadcast_shapes(shape, lead + (1,) * event_dim))
            else:
                block = block.reshape(shape)
            value = self.transforms[name](block)
            jac = self.transforms[name].log_abs_det_jacobian(block, value)
            log_det = log_det + (jac.reshape(num, -1).sum(-1) if batched else jac.sum())
            values[name] = value
        model = poutine.condition(self.model, data=values)
        if batched:
            model = in_particle_plate(model, num, -(self.nesting + 1))
        with poutine.block():
            trace = poutine.trace(model).get_trace(**self.data)
        trace.compute_log_prob()
        total = log_det
        for site in trace.nodes.values():
            if site["type"] != "sample" or site_is_subsample(site):
                continue
            log_p = site["log_prob"]
            if batched:
                if log_p.dim() != self.nesting + 1 or log_p.shape[0] != num:
                    raise ValueError(f"site {site['name']!r} has log_prob shape "
                                     f"{tuple(log_p.shape)} under the particle plate")
                total = total + log_p.reshape(num, -1).sum(-1)
            else:
                total = total + log_p.sum()
        return total

    def __call__(self, u: torch.Tensor) -> torch.Tensor:
        """The log density of the draws ``u`` (shape ``(K, d)``): the traced graph for
        ``K`` (traced and checked on first use), or the eager run."""
        self.num_calls += 1
        graph = self._graphs.get(self._graph_key(u))
        if graph is None and self.compiled and len(self._graphs) < MAX_TRACED:
            graph = self._trace(u)
        return graph(u) if graph is not None else self.eager(u)

    def _trace(self, u: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor] | None:
        example = u.detach()
        with pyro.validation_enabled(False), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            try:
                if self.vmap:  # one draw traced, mapped over any number of them
                    graph = torch.func.vmap(torch.jit.trace(self._run, (example[0],),
                                                            check_trace=False))
                else:
                    graph = torch.jit.trace(self.eager, (example,), check_trace=False)
            except Exception:  # noqa: BLE001 - a model that cannot be traced runs eagerly
                self.compiled = False
                return None
        self.num_traces += 1
        with torch.no_grad():  # the check draws from its own generator: a fit's stream of
            # random numbers must not depend on when a graph is traced (resumed fits)
            noise = probe_noise(tuple(example.shape), example.dtype)
            for other in (-example, example + noise.to(example.device)):
                if not _close(graph(other), self.eager(other)):
                    self.compiled = False  # control flow on latent values: not traceable
                    return None
        self._graphs[self._graph_key(u)] = graph
        return graph

    def _graph_key(self, u: torch.Tensor) -> int:
        """Graphs are kept by particle count; a mapped one serves every count (key 0)."""
        return 0 if self.vmap else u.shape[0]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal up to rounding (relative to the density's scale), non-finite values alike."""
    if a.shape != b.shape:
        return False
    finite = torch.isfinite(a) & torch.isfinite(b)
    if not torch.equal(finite, torch.isfinite(a)) or not torch.equal(finite, torch.isfinite(b)):
        return False
    scale = 1.0 + b[finite].abs()
    rtol = TRACE_CHECK_RTOL.get(b.dtype, TRACE_CHECK_RTOL[torch.float32])
    return bool(((a[finite] - b[finite]).abs() <= rtol * scale).all())


def probe_noise(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Standard normal noise from a generator of its own (seed 0, on the CPU): checks that
    draw it leave the global random stream, and so a fit's draws, untouched."""
    return torch.randn(shape, dtype=dtype, generator=torch.Generator().manual_seed(0))


def probe_draws(guide: Any, num: int = 2) -> torch.Tensor:
    """``num`` draws near q of a Gaussian guide (its mean plus independent noise of its
    marginal sds), from :func:`probe_noise`."""
    with torch.no_grad():
        q = flat_posterior(guide)
        noise = probe_noise((num, *q.event_shape), q.mean.dtype).to(q.mean.device)
        return q.mean + noise * q.variance.sqrt()


def batch_agrees(density: LogDensity, u: torch.Tensor) -> bool:
    """Whether the batched density of the rows of ``u`` equals each row's unbatched one
    (a model indexing ``beta[0]`` broadcasts silently wrong under a particle plate)."""
    with torch.no_grad(), pyro.validation_enabled(False):
        try:
            batched = density.eager(u)
            single = torch.stack([density.eager(row) for row in u])
        except Exception:  # noqa: BLE001 - any failure means "not batch safe"
            return False
    return _close(batched, single)


def batched_density(model: Callable[..., Any], data: dict[str, Any], sites: SiteSlices,
                    probe: torch.Tensor, nesting: int | None = None,
                    plate: bool = True) -> LogDensity | None:
    """The model's log density with its draws in a particle plate where the model
    broadcasts correctly there, else mapped over them (``vmap``: a model written for one
    draw, ``beta[0] + beta[1] * x``), else None; each checked by :func:`batch_agrees` on
    the draws ``probe`` (shape ``(K, d)``). ``plate=False`` skips the plate (known not to
    broadcast)."""
    if plate:
        density = LogDensity(model, data, sites, nesting)
        if batch_agrees(density, probe):
            return density
    density = LogDensity(model, data, sites, nesting, vmap=True)
    return density if batch_agrees(density, probe) else None


def guide_density(model: Callable[..., Any], guide: Any, data: dict[str, Any]
                  ) -> LogDensity | None:
    """:func:`batched_density` for a built Gaussian guide of ``model``, or None where the
    pair cannot take the compiled path (:func:`compiled_path`)."""
    if compiled_path(model, guide, data):
        return None
    return batched_density(model, data, site_slices(guide), probe_draws(guide))


def flat_posterior(guide: Any) -> dist.Distribution:
    """q of a Gaussian guide as one distribution over the flat unconstrained vector, laid
    out as :func:`~pyrovi.guides.gaussian.site_slices` (differentiable in the guide's
    parameters).

    Parameters
    ----------
    guide : MeanFieldNormal or AutoWhitenedNormal
        A guide whose prototype has been built (it has been called once).

    Returns
    -------
    pyro.distributions.Distribution
        Event shape ``(d,)``: a diagonal ``Normal`` for ``MeanFieldNormal``, the guide's
        own ``MultivariateNormal`` or ``LowRankMultivariateNormal`` otherwise.
    """
    if isinstance(guide, AutoWhitenedNormal):
        return guide.get_posterior()
    if isinstance(guide, MeanFieldNormal):
        return dist.Normal(*_mean_field_loc_scale(guide)).to_event(1)
    raise TypeError(f"{type(guide).__name__} is not a Gaussian guide of pyrovi.guides")


def _mean_field_loc_scale(guide: MeanFieldNormal) -> tuple[torch.Tensor, torch.Tensor]:
    """The flat location and sds of a mean-field guide, in its sites' order."""
    names = [name for name, _ in guide.prototype_trace.iter_stochastic_nodes()]
    loc = torch.cat([deep_getattr(guide.locs, n).reshape(-1) for n in names])
    scale = torch.cat([deep_getattr(guide.scales, n).reshape(-1) for n in names])
    return loc, scale


def compiled_path(model: Callable[..., Any], guide: Any, data: dict[str, Any]) -> str:
    """Why ``model`` and ``guide`` cannot take the compiled path, or ``""`` if they can.

    Parameters
    ----------
    model, guide : callable
        The model and a guide whose prototype has been built.
    data : dict
        The model's keyword arguments.
    """
    if not isinstance(guide, MeanFieldNormal | AutoWhitenedNormal):
        return f"the guide is a {type(guide).__name__}, not a Gaussian family"
    if isinstance(getattr(model, "__self__", model), torch.nn.Module):
        return "the model is a module (its parameters would be frozen into the graph)"
    for name, site in model_trace(model, data).nodes.items():
        if site["type"] == "param":
            return f"the model has a parameter of its own ({name!r})"
        if site["type"] == "sample" and not site["is_observed"] \
                and not site_is_subsample(site) and site["fn"].support.is_discrete:
            return f"site {name!r} is discrete"
    return ""



def gaussian_draws(guide: Any, num: int, eps: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``num`` reparameterised draws of a Gaussian guide's q over the flat vector, and q's
    entropy, computed directly from the guide's parameters (no distribution objects: this
    runs at every step).

    Parameters
    ----------
    guide : MeanFieldNormal or AutoWhitenedNormal
        A guide whose prototype has been built.
    num : int
        Number of draws.
    eps : torch.Tensor, optional
        The standard normal draws to use, shape ``(num, d)`` (``(num, d + rank)`` for a
        low-rank guide); by default drawn from torch's global stream.

    Returns
    -------
    draws : torch.Tensor
        Shape ``(num, d)``, differentiable in the guide's parameters.
    entropy : torch.Tensor
        ``H(q)``, a scalar, differentiable likewise.
    """
    if isinstance(guide, AutoWhitenedNormal):
        shape = guide.cov_factor if guide.low_rank else guide.tril
        return whitened_normal_draws(guide, guide.loc, guide.log_scale, shape, num, eps)
    if isinstance(guide, MeanFieldNormal):
        loc, scale = _mean_field_loc_scale(guide)
        if eps is None:
            eps = torch.randn((num, loc.shape[0]), dtype=loc.dtype, device=loc.device)
        draws = loc + eps * scale
        return draws, _entropy(2.0 * scale.log().sum(), draws.shape[1])
    raise TypeError(f"{type(guide).__name__} is not a Gaussian guide of pyrovi.guides")


def whitened_normal_draws(guide: AutoWhitenedNormal, loc: torch.Tensor,
                          log_scale: torch.Tensor, shape: torch.Tensor, num: int,
                          eps: torch.Tensor | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`gaussian_draws` of a dense or low-rank guide with its learned parameters
    given as tensors: ``loc``, ``log_scale`` and ``shape`` (the ``cov_factor`` of the low
    rank form, the ``tril`` of the dense one); the guide supplies its whitening
    (``center``, ``precond``)."""
    d = loc.shape[0]
    if guide.low_rank:  # covariance S (F F^T + I) S, S = diag(precond * exp(log_scale))
        mean = guide.center + guide.precond * loc
        scale = guide.precond * log_scale.exp()
        if eps is None:
            eps = torch.randn((num, d + shape.shape[1]), dtype=loc.dtype, device=loc.device)
        draws = mean + (eps[:, :d] + eps[:, d:] @ shape.T) * scale
        inner = torch.eye(shape.shape[1], dtype=loc.dtype, device=loc.device) \
            + shape.T @ shape
        log_det = 2.0 * scale.log().sum() \
            + torch.linalg.cholesky(inner).diagonal().log().sum() * 2.0
    else:
        mean = guide.center + guide.precond @ loc
        eye = torch.eye(d, dtype=loc.dtype, device=loc.device)
        tril = guide.precond @ (log_scale.exp()[:, None] * (shape.tril(-1) + eye))
        if eps is None:
            eps = torch.randn((num, d), dtype=loc.dtype, device=loc.device)
        draws = mean + eps @ tril.T
        log_det = 2.0 * tril.diagonal().abs().log().sum()
    return draws, _entropy(log_det, d)


def _entropy(log_det: torch.Tensor, d: int) -> torch.Tensor:
    """Entropy of a d-dimensional Gaussian with log-determinant ``log_det``."""
    return 0.5 * (log_det + d * (1.0 + math.log(2.0 * math.pi)))


def log_weights(density: LogDensity, guide: Any, num_samples: int, seed: int
                ) -> np.ndarray:
    """Log importance weights ``log p(x, z) - log q(z)`` of ``num_samples`` draws of a
    Gaussian guide, on the model's log density (:class:`LogDensity`): the counterpart of
    :func:`~pyrovi.infer.util.guide_log_weights` on the compiled path.

    Parameters
    ----------
    density : LogDensity
        The model's log density, laid out as the guide's flat vector.
    guide : MeanFieldNormal or AutoWhitenedNormal
        The guide.
    num_samples : int
        Draws.
    seed : int
        Passed to :func:`pyro.set_rng_seed` first.

    Returns
    -------
    numpy.ndarray
        Shape ``(num_samples,)``, float64.
    """
    pyro.set_rng_seed(seed)
    with torch.no_grad():
        q = flat_posterior(guide)
        draws = q.sample((num_samples,))
        log_w = density.eager(draws) - q.log_prob(draws)  # a few calls: not traced
    return log_w.double().cpu().numpy()
