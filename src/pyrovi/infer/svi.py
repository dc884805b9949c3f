"""The SVI fit loop: :func:`fit` and its result, :class:`SVIFit`.

The loop is built to reach the posterior without hand tuning:

1. **MAP / Laplace initialisation.** For the Gaussian guide families the MAP point is
   found with L-BFGS in the unconstrained space (deterministic, insensitive to bad
   scaling) and the guide starts at the Laplace approximation: its location at the MAP
   point, its scales (and, for ``full_rank``, its Cholesky factor) from the inverse
   Hessian.
2. **Step-size adaptation.** Adam runs in windows of ``WINDOW`` steps. When the mean loss
   of a window is not significantly below that of the window before it, nor below that
   of the window three back (by the noise of the windows), the learning rate is halved.
3. **Convergence detection.** With ``num_steps=None`` the fit stops after
   ``PLATEAUS_TO_STOP`` halvings, or at ``max_steps`` with a :class:`ConvergenceWarning`.
4. **Iterate averaging.** The returned parameters are the average of the iterates of the
   last window (Polyak-Ruppert), which removes most of the optimiser's jitter; fits
   shorter than two windows, or ending inside one, return the last iterate.

Non-finite losses stop the fit, restore the last finite parameters and raise
:class:`NonFiniteLossError` naming the site whose log-density went non-finite.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.distributions import constraints
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    Predictive,
    RenyiELBO,
    Trace_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
    autoguide,
)
from pyro.infer.autoguide.initialization import init_to_median, init_to_sample
from pyro.infer.autoguide.utils import deep_setattr
from pyro.nn.module import PyroParam
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from pyrovi import guides
from pyrovi.diagnostics.psis import batch_safe, guide_log_weights, plate_nesting
from pyrovi.guides import GUIDE_FAMILIES, make_guide

WINDOW = 100
PLATEAUS_TO_STOP = 4
DEFAULT_MAX_STEPS = 20_000
ELBO_ESTIMATE_PARTICLES = 1000

ELBO_FAMILIES: dict[str, Callable[..., Any]] = {
    "trace": Trace_ELBO,
    "mean_field": TraceMeanField_ELBO,
    "graph": TraceGraph_ELBO,
    "renyi": RenyiELBO,
    "jit": JitTrace_ELBO,
    "jit_mean_field": JitTraceMeanField_ELBO,
    "jit_graph": JitTraceGraph_ELBO,
}
_LAPLACE_INITIALISED = ("mean_field", "low_rank", "full_rank", "map", "laplace", "flow")


class NonFiniteLossError(FloatingPointError):
    """The ELBO or its gradient went non-finite during a fit."""


class ConvergenceWarning(UserWarning):
    """The fit hit its step cap before the smoothed ELBO stopped improving."""


@dataclass(frozen=True)
class SVIFit:
    """The result of :func:`fit`.

    Attributes
    ----------
    model : callable
        The Pyro model.
    guide : callable
        The fitted guide (a Pyro autoguide module or the user's callable).
    data : dict
        The model's keyword arguments, as tensors.
    losses : np.ndarray
        Loss (negative ELBO estimate) at every SVI step.
    elbo : float
        A fresh ELBO estimate with ``ELBO_ESTIMATE_PARTICLES`` particles after the fit.
    elbo_se : float
        Monte Carlo standard error of ``elbo``.
    guide_name : str
        The guide family name, or ``"custom"`` for a callable.
    elbo_name : str
        The ELBO family used for the fit.
    converged : bool
        Whether the convergence criterion was met (always True for a fixed step count).
    seed : int
        The seed the fit used.
    """

    model: Callable[..., Any]
    guide: Callable[..., Any]
    data: dict[str, Any]
    losses: np.ndarray
    elbo: float
    elbo_se: float
    guide_name: str
    elbo_name: str
    converged: bool
    seed: int
    params: dict[str, torch.Tensor] = field(repr=False, default_factory=dict)
    module_local_params: bool = True

    def sample(self, num_samples: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        """Draw latent and deterministic sites from the guide, in constrained space.

        Returns
        -------
        dict
            Site name -> tensor of shape ``(num_samples, *site_shape)``.
        """
        sites = posterior_sites(self.model, self.data)
        deterministic = deterministic_sites(self.model, self.data)
        attempts = [(self.model, self.guide, True)]
        if not deterministic:  # latents only: the (batch-safe) guide alone suffices
            attempts.append((self.guide, None, True))
        attempts.append((self.model, self.guide, False))  # not batch safe: one by one
        with _params_loaded(self), torch.no_grad():
            for i, (fn, guide, parallel) in enumerate(attempts):
                pyro.set_rng_seed(seed)
                predictive = Predictive(fn, guide=guide, num_samples=num_samples,
                                        return_sites=list(sites), parallel=parallel)
                try:
                    draws = predictive(**self.data)
                    return {k: draws[k].detach().reshape(num_samples, *sites[k])
                            for k in sites}
                except Exception:  # noqa: BLE001 - try the next, slower way
                    if i == len(attempts) - 1:
                        raise
        raise AssertionError("unreachable")

    def posterior(self, num_samples: int = 1000, seed: int = 0) -> az.InferenceData:
        """Draws from the variational posterior as ``arviz.InferenceData`` (one chain).

        Every latent and deterministic site of the model is included, in the model's
        constrained space.
        """
        draws = self.sample(num_samples=num_samples, seed=seed)
        return az.from_dict(posterior={k: v.numpy()[None] for k, v in draws.items()})

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fit to ``path`` (a ``torch.save`` file of tensors and plain values).

        The file is written to a temporary name and moved into place, so an existing
        file is never left half-written.
        """
        from pyrovi.infer.persist import save_fit

        save_fit(self, path)


def _as_tensor_data(data: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray):
            value = torch.as_tensor(value, dtype=torch.get_default_dtype()
                                    if value.dtype.kind == "f" else None)
        elif isinstance(value, list):
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not torch.isfinite(value).all():
                raise ValueError(f"data entry {key!r} contains NaN or infinite values")
        out[key] = value
    return out


def posterior_sites(model: Callable[..., Any], data: dict[str, Any]) -> dict[str, torch.Size]:
    """Latent and deterministic sample sites of ``model(**data)`` and their shapes."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(**data)
    sites = {}
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        if site["infer"].get("_deterministic") or not site["is_observed"]:
            sites[name] = site["value"].shape
    return sites


def deterministic_sites(model: Callable[..., Any], data: dict[str, Any]) -> list[str]:
    """Names of the ``pyro.deterministic`` sites of ``model(**data)``."""
    with poutine.block(), torch.no_grad():
        trace = poutine.trace(model).get_trace(**data)
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["infer"].get("_deterministic")]


def _param_tensors(guide: Callable[..., Any], model: Callable[..., Any],
                   data: dict[str, Any], elbo: Any) -> list[torch.Tensor]:
    """Unconstrained tensors of every parameter the loss touches (creating them)."""
    with poutine.trace(param_only=True) as capture:
        elbo.loss(model, guide, **data)
    found = {}
    for site in capture.trace.nodes.values():
        value = site["value"]
        leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
        if leaf.requires_grad and leaf.is_leaf:
            found[id(leaf)] = leaf
    for module in (guide, model):
        if isinstance(module, torch.nn.Module):
            found.update({id(p): p for p in module.parameters()})
    return list(found.values())


def _snapshot(params: list[torch.Tensor]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


def _nonfinite_site(model: Callable[..., Any], guide: Callable[..., Any],
                    data: dict[str, Any], params: list[torch.Tensor]) -> str:
    """Describe where the loss went non-finite: the sample site whose log-density (or its
    gradient) is non-finite on a fresh draw, or the parameters."""
    for _ in range(20):
        with poutine.block():
            try:
                guide_trace = poutine.trace(guide).get_trace(**data)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                    **data)
            except Exception as exc:  # noqa: BLE001 - reported to the user as the cause
                return f"the model or guide raised {type(exc).__name__}: {exc}"
        for where, trace in (("guide", guide_trace), ("model", model_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                if not torch.isfinite(site["value"]).all():
                    return f"value of {where} site '{name}' is non-finite"
                log_density = site["fn"].log_prob(site["value"]).sum()
                if not torch.isfinite(log_density):
                    return f"log-density of {where} site '{name}' is non-finite"
                if log_density.requires_grad:
                    grads = torch.autograd.grad(log_density, params, allow_unused=True,
                                                retain_graph=True)
                    if any(g is not None and not torch.isfinite(g).all() for g in grads):
                        return f"gradient of the log-density of {where} site '{name}' is " \
                               "non-finite"
    return "no single site is non-finite on resampling (an unlucky draw)"


def _make_elbo(name: str, num_particles: int, vectorize: bool, max_plate_nesting: int,
               alpha: float) -> Any:
    if name not in ELBO_FAMILIES:
        raise ValueError(f"unknown elbo {name!r}; choose one of {', '.join(ELBO_FAMILIES)}")
    kwargs: dict[str, Any] = {"num_particles": num_particles,
                              "vectorize_particles": vectorize,
                              "max_plate_nesting": max_plate_nesting}
    if name == "renyi":
        kwargs["alpha"] = alpha
    if name.startswith("jit"):
        kwargs["ignore_jit_warnings"] = True
    return ELBO_FAMILIES[name](**kwargs)


def _positional(fn: Callable[..., Any], keys: list[str], static: dict[str, Any]
                ) -> Callable[..., Any]:
    """Adapt ``fn(**data)`` to ``fn(*tensors)`` for the JIT ELBOs (tensors must be args)."""
    def call(*tensors: torch.Tensor) -> Any:
        return fn(**dict(zip(keys, tensors, strict=True)), **static)
    return call


MAP_RESTARTS = 4


def _map_and_laplace(model: Callable[..., Any], data: dict[str, Any]
                     ) -> tuple[autoguide.AutoLaplaceApproximation, torch.Tensor]:
    """MAP in the unconstrained space by L-BFGS; returns the guide and the Laplace cov.

    The search starts from the prior median; if it ends where the Hessian is not positive
    definite (a saddle, such as the label-symmetric point of a mixture where all
    components coincide), it restarts from up to ``MAP_RESTARTS`` prior draws and keeps
    the best mode found.
    """
    best, failure = None, None
    starts = [init_to_median] + [init_to_sample] * MAP_RESTARTS
    for init_fn in starts:
        guide = autoguide.AutoLaplaceApproximation(model, init_loc_fn=init_fn)
        try:
            loss = _lbfgs_map(model, guide, data)
            gaussian = guide.laplace_approximation(**data)
        except Exception as exc:  # noqa: BLE001 - a saddle or a failed start: try another
            failure = exc
            continue
        if best is None or loss < best[0]:
            scale_tril = gaussian.scale[:, None] * gaussian.scale_tril
            best = (loss, guide, (scale_tril @ scale_tril.T).detach())
        if init_fn is init_to_median:
            break  # the median start found a mode: the usual case
    if best is None:
        raise RuntimeError(f"no MAP start led to a mode ({failure})")
    return best[1], best[2]


def _lbfgs_map(model: Callable[..., Any], guide: autoguide.AutoLaplaceApproximation,
               data: dict[str, Any]) -> float:
    """Run L-BFGS on the guide's unconstrained point; returns the final loss."""
    guide(**data)
    loss_fn = Trace_ELBO(max_plate_nesting=plate_nesting(model, guide, data))
    optimizer = torch.optim.LBFGS([guide.loc], lr=1.0, max_iter=500,
                                  tolerance_grad=1e-9, tolerance_change=1e-12,
                                  line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn.differentiable_loss(model, guide, **data)
        loss.backward()
        return loss

    for _ in range(5):
        optimizer.step(closure)
    if not torch.isfinite(guide.loc).all():
        raise NonFiniteLossError("MAP search diverged: the unconstrained MAP is non-finite")
    with torch.no_grad():
        return float(loss_fn.differentiable_loss(model, guide, **data))


def _initialise(guide: Any, guide_name: str, model: Callable[..., Any],
                data: dict[str, Any]) -> Any:
    """Start a Gaussian-family guide at the Laplace approximation (returns the guide)."""
    try:
        laplace, cov = _map_and_laplace(model, data)
    except Exception as exc:  # noqa: BLE001 - fall back to the guide's own init
        warnings.warn(f"MAP/Laplace initialisation failed ({exc}); using the default init",
                      stacklevel=3)
        return guide
    loc = laplace.loc.detach()
    if not (torch.isfinite(cov).all() and torch.linalg.eigvalsh(cov).min() > 0):
        cov = torch.diag(torch.full_like(loc, 0.01))
    # Diagonal guides start at the conditional sds 1 / sqrt(diag(precision)): for a
    # Gaussian posterior that is exactly the mean-field optimum of KL(q || p).
    conditional_std = torch.linalg.inv(cov).diagonal().rsqrt()
    if guide_name == "laplace":
        return laplace.laplace_approximation(**data)
    if guide_name == "flow":
        return guides.flow(model, loc=loc, scale_tril=torch.linalg.cholesky(cov))
    guide(**data)  # set up the prototype
    if guide_name == "full_rank":
        chol = torch.linalg.cholesky(cov)  # = diag(scale) @ unit lower-triangular
        guide.loc = torch.nn.Parameter(loc.clone())
        guide.scale = PyroParam(chol.diagonal().clone(), guide.scale_constraint)
        guide.scale_tril = PyroParam(chol / chol.diagonal()[:, None],
                                     constraints.unit_lower_cholesky)
    elif guide_name == "low_rank":  # S (F F^T + I) S, F from the leading eigenvectors
        rank = guide.cov_factor.shape[-1]
        residual = cov - torch.diag(conditional_std**2)
        eigval, eigvec = torch.linalg.eigh(residual)
        top = eigval.flip(0)[:rank].clamp(min=0.0)
        guide.loc = torch.nn.Parameter(loc.clone())
        guide.scale = PyroParam(conditional_std.clone(), guide.scale_constraint)
        factor = eigvec.flip(1)[:, :rank] * top.sqrt()  # Pyro scales rows by `scale`
        guide.cov_factor = torch.nn.Parameter(factor / conditional_std[:, None] + 1e-3)
    else:  # mean_field, map: per-site values
        for name, (start, end, site_shape) in _site_slices(laplace).items():
            site_loc = loc[start:end].reshape(site_shape)
            site_fn = laplace.prototype_trace.nodes[name]["fn"]
            if guide_name == "map":
                value = torch.distributions.transform_to(site_fn.support)(site_loc)
                deep_setattr(guide, name, PyroParam(value.detach().clone(), site_fn.support,
                                                    site_fn.event_dim))
                continue
            with torch.no_grad():
                deep_getattr(guide.locs, name + "_unconstrained").copy_(site_loc)
                deep_getattr(guide.scales, name + "_unconstrained").copy_(
                    _softplus_inverse(conditional_std[start:end].reshape(site_shape)))
    return guide


def deep_getattr(obj: Any, dotted: str) -> Any:
    """``getattr`` along a dotted path (site names may contain dots)."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def _site_slices(guide: autoguide.AutoContinuous) -> dict[str, tuple[int, int, torch.Size]]:
    """Where each latent site lives in an AutoContinuous guide's flat unconstrained vector."""
    slices, start = {}, 0
    for name, _site in guide.prototype_trace.iter_stochastic_nodes():
        unconstrained_shape = guide._unconstrained_shapes[name]
        size = math.prod(unconstrained_shape)
        slices[name] = (start, start + size, torch.Size(unconstrained_shape))
        start += size
    return slices


def _significantly_lower(earlier: np.ndarray, later: np.ndarray) -> bool:
    """Is the mean loss of ``later`` below that of ``earlier`` beyond their noise?"""
    noise = math.sqrt((earlier.var() + later.var()) / len(later))
    return earlier.mean() - later.mean() > 2.0 * noise + 1e-9 * abs(earlier.mean())


def _plateaued(losses: list[float]) -> bool:
    """No significant progress over the last window, nor over the last three windows.

    The three-window horizon catches a slow steady drift that a single window's noise
    hides. Before four windows have run, the fit is never declared on a plateau.
    """
    if len(losses) < 4 * WINDOW:
        return False
    last = np.asarray(losses[-WINDOW:])
    one_back = np.asarray(losses[-2 * WINDOW:-WINDOW])
    three_back = np.asarray(losses[-4 * WINDOW:-3 * WINDOW])
    return not (_significantly_lower(one_back, last) or _significantly_lower(three_back, last))


def estimate_elbo(model: Callable[..., Any], guide: Callable[..., Any], data: dict[str, Any],
                  num_particles: int = ELBO_ESTIMATE_PARTICLES, seed: int = 0
                  ) -> tuple[float, float]:
    """Monte Carlo ELBO estimate and its standard error.

    The ELBO is the mean of the log importance weights ``log p(x, z) - log q(z)`` over
    ``z ~ q`` (vectorised when the model allows). A point-mass guide (``map``) has no
    density; its "ELBO" is the log joint at the point, as Trace_ELBO computes it.
    """
    try:
        logw = guide_log_weights(model, guide, data, num_samples=num_particles, seed=seed)
    except ValueError:
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            return -float(Trace_ELBO().loss(model, guide, **data)), 0.0
    return float(np.mean(logw)), float(np.std(logw, ddof=1) / math.sqrt(len(logw)))


def fit(
    model: Callable[..., Any],
    data: dict[str, Any],
    guide: str | Callable[..., Any] = "mean_field",
    elbo: str = "trace",
    num_steps: int | None = None,
    lr: float | None = None,
    num_particles: int = 1,
    seed: int = 0,
    progress: bool = False,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    alpha: float = 0.5,
    init: str = "auto",
) -> SVIFit:
    """Fit a variational guide to ``model(**data)`` with Pyro SVI.

    Parameters
    ----------
    model : callable
        Pyro model called as ``model(**data)``.
    data : dict
        Keyword arguments of the model; arrays and lists become tensors.
    guide : str or callable
        A family of :data:`pyrovi.guides.GUIDE_FAMILIES` (``mean_field``, ``low_rank``,
        ``full_rank``, ``flow``, ``map``, ``laplace``) or a guide callable. ``laplace``
        is the Laplace approximation at the MAP point itself: no SVI steps are taken.
    elbo : str
        ``trace`` (Trace_ELBO), ``mean_field`` (analytic KL where available), ``graph``,
        ``renyi`` (with ``alpha``), or the JIT variants ``jit``, ``jit_mean_field``,
        ``jit_graph``.
    num_steps : int or None
        Fixed number of SVI steps; ``None`` runs until the smoothed ELBO stops improving
        (at most ``max_steps`` steps, with a :class:`ConvergenceWarning` at the cap).
    lr : float or None
        Initial Adam learning rate; by default 0.001 for Gaussian guides started at the
        Laplace approximation (Adam's stationary jitter grows with the step size), 0.005
        for flows and 0.02 otherwise. It is halved whenever a window of ``WINDOW`` steps brings no
        significant improvement.
    num_particles : int
        Particles per ELBO estimate; vectorised when the model is batch safe.
    seed : int
        Seed for Pyro, torch and numpy; the same seed gives identical losses.
    progress : bool
        Show a tqdm bar with the smoothed ELBO.
    max_steps : int
        Step cap when ``num_steps`` is None.
    alpha : float
        The order of the Rényi divergence for ``elbo="renyi"``.
    init : str
        ``"auto"`` starts the Gaussian families at the Laplace approximation (``"prior"``
        uses the autoguide's own initialisation).

    Returns
    -------
    SVIFit

    Raises
    ------
    NonFiniteLossError
        If the loss or its gradient goes non-finite; the parameters are restored to the
        last finite values and the message names the offending site.
    """
    # Module guides keep their parameters to themselves, so that fits made one after
    # another do not share Pyro's global param store; the JIT ELBOs read parameters from
    # that store and need it.
    with pyro.settings.context(module_local_params=not elbo.startswith("jit")):
        return _fit(model, _as_tensor_data(data), guide, elbo, num_steps, lr, num_particles,
                    seed, progress, max_steps, alpha, init)


def _fit(model: Callable[..., Any], data: dict[str, Any], guide: str | Callable[..., Any],
         elbo: str, num_steps: int | None, lr: float | None, num_particles: int, seed: int,
         progress: bool, max_steps: int, alpha: float, init: str) -> SVIFit:
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide_name = guide if isinstance(guide, str) else "custom"
    guide_obj = make_guide(guide, model)
    laplace_init = init == "auto" and guide_name in _LAPLACE_INITIALISED
    if laplace_init:
        guide_obj = _initialise(guide_obj, guide_name, model, data)
        pyro.set_rng_seed(seed)
    if guide_name == "laplace":  # the Laplace approximation is the answer: no SVI steps
        elbo_value, elbo_se = estimate_elbo(model, guide_obj, data, seed=seed)
        return SVIFit(model, guide_obj, data, np.zeros(0), elbo_value, elbo_se, guide_name,
                      elbo, True, seed, _collect_params(guide_obj),
                      pyro.settings.get("module_local_params"))

    mpn = plate_nesting(model, guide_obj, data)
    vectorize = num_particles > 1 and batch_safe(model, guide_obj, data, num_particles)
    loss_fn = _make_elbo(elbo, num_particles, vectorize, mpn, alpha)
    loss_model, loss_guide, loss_args, loss_kwargs = model, guide_obj, (), data
    if elbo.startswith("jit"):
        keys = [k for k, v in data.items() if isinstance(v, torch.Tensor)]
        static = {k: v for k, v in data.items() if k not in keys}
        loss_model = _positional(model, keys, static)
        loss_guide = _positional(guide_obj, keys, static)
        loss_args, loss_kwargs = tuple(data[k] for k in keys), {}

    params = _param_tensors(guide_obj, model, data, _make_elbo("trace", 1, False, mpn, alpha))
    if lr is None:  # Laplace-initialised Gaussians start near the optimum: small steps
        lr = 0.02 if not laplace_init else 0.005 if guide_name == "flow" else 0.001
    optimizer = torch.optim.Adam(params, lr=lr)
    pyro.set_rng_seed(seed)

    losses: list[float] = []
    plateaus, converged = 0, num_steps is not None
    ema = None
    window_sum = [torch.zeros_like(p) for p in params]
    bar = tqdm(total=num_steps or max_steps, disable=not progress, desc="SVI",
               dynamic_ncols=True)
    last_good = _snapshot(params)
    try:
        for step in range(num_steps or max_steps):
            optimizer.zero_grad()
            try:
                loss = loss_fn.loss_and_grads(loss_model, loss_guide, *loss_args,
                                              **loss_kwargs)
            except ValueError as exc:  # distribution validation of a NaN parameter
                if "invalid values" not in str(exc):
                    raise
                loss = float("nan")
            grads_ok = all(p.grad is None or torch.isfinite(p.grad).all() for p in params)
            if not (math.isfinite(loss) and grads_ok):
                with pyro.validation_enabled(False):
                    where = _nonfinite_site(model, guide_obj, data, params)
                _restore(params, last_good)
                raise NonFiniteLossError(
                    f"ELBO became non-finite at step {step}: {where}; "
                    "parameters restored to the last finite values")
            last_good = _snapshot(params)
            optimizer.step()
            losses.append(float(loss))
            if step % WINDOW == 0:
                window_sum = [torch.zeros_like(p) for p in params]
            with torch.no_grad():
                for total, p in zip(window_sum, params, strict=True):
                    total += p
            ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            if progress and step % 10 == 0:
                bar.set_postfix(elbo=f"{-ema:.4g}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            bar.update(1)
            if (step + 1) % WINDOW == 0 and _plateaued(losses):
                plateaus += 1
                for group in optimizer.param_groups:
                    group["lr"] *= 0.5
                if num_steps is None and plateaus >= PLATEAUS_TO_STOP:
                    converged = True
                    break
    finally:
        bar.close()
    if len(losses) >= 2 * WINDOW and len(losses) % WINDOW == 0:
        # Polyak-Ruppert: the average of the last (complete) window's iterates
        _restore(params, [total / WINDOW for total in window_sum])
    if not converged:
        warnings.warn(
            f"SVI did not converge in {max_steps} steps (the smoothed ELBO was still "
            "improving); pass a larger max_steps or a fixed num_steps",
            ConvergenceWarning, stacklevel=2)
    elbo_value, elbo_se = estimate_elbo(model, guide_obj, data, seed=seed)
    return SVIFit(model, guide_obj, data, np.asarray(losses), elbo_value, elbo_se, guide_name,
                  elbo, converged, seed, _collect_params(guide_obj),
                  pyro.settings.get("module_local_params"))


def _collect_params(guide: Any) -> dict[str, torch.Tensor]:
    """Constrained values of the guide's parameters (module state or param store)."""
    if isinstance(guide, torch.nn.Module):
        return {k: v.detach().clone() for k, v in guide.state_dict().items()}
    store = pyro.get_param_store()
    return {k: store[k].detach().clone() for k in store.keys()}


@contextlib.contextmanager
def _params_loaded(fit_result: SVIFit) -> Iterator[None]:
    """Run with a fit's parameters in force.

    Module guides keep their parameters locally (``module_local_params``), so fits made
    one after another do not overwrite each other through Pyro's global param store.
    A callable guide's ``pyro.param`` values are put back into the param store, created
    first by one blocked call so that their constraints are the guide's own.
    """
    with pyro.settings.context(module_local_params=fit_result.module_local_params):
        if not isinstance(fit_result.guide, torch.nn.Module) and fit_result.params:
            store = pyro.get_param_store()
            if any(name not in store for name in fit_result.params):
                with poutine.block(), torch.no_grad():
                    fit_result.guide(**fit_result.data)
            for name, value in fit_result.params.items():
                store[name] = value
        yield


__all__ = [
    "ConvergenceWarning",
    "ELBO_FAMILIES",
    "GUIDE_FAMILIES",
    "NonFiniteLossError",
    "SVIFit",
    "estimate_elbo",
    "fit",
    "posterior_sites",
]


def _initialise_for_load(guide: Any, guide_name: str, model: Callable[..., Any],
                         data: dict[str, Any], params: dict[str, torch.Tensor]) -> Any:
    """An empty guide of the saved family, shaped to receive the saved state."""
    if guide_name == "laplace":  # the fitted object is a Gaussian with buffers
        laplace = autoguide.AutoLaplaceApproximation(model)
        with pyro.settings.context(module_local_params=True), poutine.block():
            laplace(**data)
            return laplace.laplace_approximation(**data)
    affine = [value for key, value in params.items() if key.endswith("affine_loc")]
    if guide_name == "flow" and affine:  # a Laplace-preconditioned flow
        dim = affine[0].shape[-1]
        return guides.flow(model, loc=torch.zeros(dim), scale_tril=torch.eye(dim))
    return guide
