"""The result of a fit, :class:`SVIFit`, and its persistence (:func:`load_fit`).

Files hold tensors and plain Python values only, so they load with
``torch.load(weights_only=True)``; they are written to a temporary name and moved into
place, so an existing file is never left half-written.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Predictive, Trace_ELBO

from pyrovi.guides import get_family
from pyrovi.infer.batches import whole_data
from pyrovi.infer.compiled import guide_density
from pyrovi.infer.compiled import log_weights as compiled_log_weights
from pyrovi.infer.util import (
    as_tensor_data,
    default_dtype,
    deterministic_sites,
    guide_log_weights,
    posterior_sites,
)

FORMAT_VERSION = 2
ELBO_ESTIMATE_PARTICLES = 1000
NUMERICAL_FAILURE = 1e8
"""Log importance weights above this are numerical failures of a density."""


@dataclass(frozen=True)
class SVIFit:
    """The result of :func:`pyrovi.fit`.

    Attributes
    ----------
    model : callable
        The Pyro model.
    guide : callable
        The fitted guide (a Pyro autoguide module or the user's callable).
    data : dict
        The model's keyword arguments, as tensors (in ``dtype``).
    losses : np.ndarray
        Loss (negative ELBO estimate) at every SVI step, start trials included.
    elbo : float
        A fresh ELBO estimate with ``ELBO_ESTIMATE_PARTICLES`` particles after the fit.
    elbo_se : float
        Monte Carlo standard error of ``elbo``.
    guide_name : str
        The guide family name, or ``"custom"`` for a callable.
    elbo_name : str
        The ELBO family used for the fit.
    converged : bool
        Whether the stopping rule was met: a fit that ran a fixed ``num_steps`` (or
        ``num_epochs``) is converged only if the rule had fired by then; held-out early
        stopping counts as a stop.
    seed : int
        The seed the fit used.
    params : dict
        The guide's state (module ``state_dict`` or param-store values).
    module_local_params : bool
        Whether the guide keeps its parameters to itself (Pyro's ``module_local_params``).
    num_grad_evals : int
        Gradient evaluations spent: steps times particles, start trials and the MAP search
        included.
    dtype : torch.dtype
        The floating-point type the fit computed in; draws and estimates use it too.
    start : str
        Where the guide started: ``"laplace"``, ``"init"``, or ``"none"``.
    history : dict
        What the schedule did: ``lr`` per step, ``num_particles`` per step, the step at
        which each plateau was declared, the trial results, held-out ELBOs per epoch.
    ladder : pandas.DataFrame or None
        For ``pyrovi.fit(guide="auto")``: one row per rung of the guide ladder (guide,
        seconds, gradient evaluations, ELBO, gain over the rung below, k-hat, verdict,
        why it climbed or stopped); see :mod:`pyrovi.ladder`. None for a single family.
    ladder_stop : str
        Why the ladder stopped where it did (empty without a ladder).
    rungs : tuple of SVIFit
        The fit of every rung the ladder climbed whose fit did not fail, in order (empty
        without a ladder).
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
    num_grad_evals: int = 0
    dtype: torch.dtype = torch.float32
    start: str = "none"
    history: dict[str, Any] = field(repr=False, default_factory=dict)
    ladder: pd.DataFrame | None = field(repr=False, default=None)
    ladder_stop: str = ""
    rungs: tuple[SVIFit, ...] = field(repr=False, default=())

    @property
    def represents_correlations(self) -> bool | None:
        """Whether the guide's family can represent posterior correlations (None: a
        custom guide, unknown)."""
        try:
            return get_family(self.guide_name).represents_correlations
        except ValueError:
            return None

    @contextlib.contextmanager
    def in_force(self) -> Iterator[None]:
        """Run with this fit's dtype and parameters in force.

        Module guides keep their parameters locally (``module_local_params``), so fits made
        one after another do not overwrite each other through Pyro's global param store.
        A callable guide's ``pyro.param`` values are put back into the param store, created
        first by one blocked call so that their constraints are the guide's own.
        """
        with default_dtype(self.dtype), \
                pyro.settings.context(module_local_params=self.module_local_params):
            if owner_module(self.guide) is None and self.params:
                store = pyro.get_param_store()
                if any(name not in store for name in self.params):
                    with poutine.block(), torch.no_grad():
                        self.guide(**self.data)
                for name, value in self.params.items():
                    store[name] = value
            yield

    def sample(self, num_samples: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
        """Draw latent and deterministic sites from the guide, in constrained space.

        A model fitted in minibatches is drawn on the whole data set (its ``batch_size``
        entry set to None), so every data point's local sites are drawn.

        Returns
        -------
        dict
            Site name -> tensor of shape ``(num_samples, *site_shape)``.
        """
        data = whole_data(self.data)
        with self.in_force(), torch.no_grad():
            sites = posterior_sites(self.model, data)
            attempts = [(self.model, self.guide, True)]
            if not deterministic_sites(self.model, data):  # the guide alone suffices
                attempts.append((self.guide, None, True))
            attempts.append((self.model, self.guide, False))  # not batch safe: one by one
            for i, (fn, guide, parallel) in enumerate(attempts):
                pyro.set_rng_seed(seed)
                predictive = Predictive(fn, guide=guide, num_samples=num_samples,
                                        return_sites=list(sites), parallel=parallel)
                try:
                    draws = predictive(**data)
                    return {k: draws[k].detach().cpu().reshape(num_samples, *sites[k])
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
        return az.from_dict(posterior={k: v.double().numpy()[None] for k, v in draws.items()})

    def log_weights(self, num_samples: int = 1000, seed: int = 0,
                    data: dict[str, Any] | None = None) -> np.ndarray:
        """Log importance weights ``log p(x, z) - log q(z)`` of ``num_samples`` guide draws
        (on ``data``, by default the fit's own; on the whole data set, not a minibatch).
        A Gaussian guide of a model that can take the compiled path is evaluated on the
        model's log density (:func:`~pyrovi.infer.compiled.log_weights`), the rest
        through Pyro's traces."""
        with self.in_force():
            data = whole_data(self.data if data is None else as_tensor_data(data, self.dtype))
            density = guide_density(self.model, self.guide, data)
            if density is not None:
                return compiled_log_weights(density, self.guide, num_samples, seed)
            return guide_log_weights(self.model, self.guide, data, num_samples=num_samples,
                                     seed=seed)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the fit to ``path`` (a ``torch.save`` file of tensors and plain values),
        atomically: an existing file is never left half-written."""
        payload = {
            "format_version": FORMAT_VERSION,
            "guide_name": self.guide_name,
            "elbo_name": self.elbo_name,
            "losses": torch.as_tensor(self.losses, dtype=torch.float64),
            "elbo": self.elbo,
            "elbo_se": self.elbo_se,
            "converged": self.converged,
            "seed": self.seed,
            "data": {k: v for k, v in self.data.items()
                     if isinstance(v, torch.Tensor | int | float | bool | str)},
            "params": self.params,
            "module_local_params": self.module_local_params,
            "num_grad_evals": self.num_grad_evals,
            "dtype": str(self.dtype).removeprefix("torch."),
            "start": self.start,
            "ladder": None if self.ladder is None else {
                column: [_plain(v) for v in self.ladder[column]] for column in self.ladder},
            "ladder_stop": self.ladder_stop,
        }
        atomic_torch_save(payload, Path(path))


def _plain(value: Any) -> Any:
    """A table cell as a plain Python value (``torch.load(weights_only=True)`` reads it)."""
    if isinstance(value, np.generic):
        value = value.item()
    return None if isinstance(value, float) and math.isnan(value) else value


def atomic_torch_save(payload: Any, path: Path) -> None:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def estimate_elbo(model: Callable[..., Any], guide: Callable[..., Any], data: dict[str, Any],
                  num_particles: int = ELBO_ESTIMATE_PARTICLES, seed: int = 0
                  ) -> tuple[float, float]:
    """Monte Carlo ELBO estimate and its standard error.

    The ELBO is the mean of the log importance weights ``log p(x, z) - log q(z)`` over
    ``z ~ q`` (vectorised when the model allows). A point-mass guide (``map``) has no
    density; its "ELBO" is the log joint at the point, as Trace_ELBO computes it.

    A non-finite log weight, or one above ``NUMERICAL_FAILURE`` (no posterior puts that
    much mass where a sensible guide puts little: it is a broken density, e.g. a flow's
    iterative inverse diverging), gives ``(-inf, inf)``: no estimate, rather than an
    absurd one.
    """
    try:
        logw = guide_log_weights(model, guide, data, num_samples=num_particles, seed=seed)
    except ValueError:
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            return -float(Trace_ELBO().loss(model, guide, **data)), 0.0
    return elbo_from_log_weights(logw)


def elbo_from_log_weights(logw: np.ndarray) -> tuple[float, float]:
    """The ELBO estimate (mean log weight) and its standard error, or ``(-inf, inf)`` for
    weights that are not finite or above ``NUMERICAL_FAILURE`` (see :func:`estimate_elbo`)."""
    if not np.isfinite(logw).all() or logw.max() > NUMERICAL_FAILURE:
        return float("-inf"), float("inf")
    return float(np.mean(logw)), float(np.std(logw, ddof=1) / math.sqrt(len(logw)))


def owner_module(fn: Any) -> torch.nn.Module | None:
    """The module that holds a guide's (or model's) parameters.

    The guide itself when it is a module (Pyro's autoguides); the module a bound-method
    guide belongs to, as in Pyro's ``SVI(vae.model, vae.guide)`` pattern, where one module
    owns the decoder of the model and the encoder of the guide; None for a plain callable,
    whose parameters live in Pyro's param store.
    """
    if isinstance(fn, torch.nn.Module):
        return fn
    owner = getattr(fn, "__self__", None)
    return owner if isinstance(owner, torch.nn.Module) else None


def rebind(fn: Callable[..., Any], old: torch.nn.Module, new: torch.nn.Module
           ) -> Callable[..., Any]:
    """``fn`` moved from module ``old`` to its copy ``new``: ``new`` itself, a method of
    ``old`` bound to ``new`` instead, or ``fn`` unchanged when it belongs to neither."""
    if fn is old:
        return new
    if getattr(fn, "__self__", None) is old:
        return types.MethodType(fn.__func__, new)
    return fn


def guide_state(guide: Any) -> dict[str, torch.Tensor]:
    """The guide's state: its owning module's ``state_dict`` (:func:`owner_module`; the
    model's network too when one module owns both), else the param store's values."""
    owner = owner_module(guide)
    if owner is not None:
        return {k: v.detach().clone() for k, v in owner.state_dict().items()}
    store = pyro.get_param_store()
    return {k: store[k].detach().clone() for k in store.keys()}


def load_fit(
    path: str | os.PathLike[str],
    model: Callable[..., Any],
    guide: Callable[..., Any] | None = None,
) -> SVIFit:
    """Load a fit written by :meth:`SVIFit.save`.

    Parameters
    ----------
    path : str or path
        The file written by ``save``.
    model : callable
        The same Pyro model the fit was made with.
    guide : callable, optional
        Required when the fit used a custom guide callable (it cannot be stored).

    Raises
    ------
    ValueError
        If the file is not a pyrovi fit, or a custom guide is needed and not given.
    """
    try:
        payload = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable pyrovi fit file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a pyrovi fit file (format version mismatch)")
    name = payload["guide_name"]
    data = payload["data"]
    if name == "custom" and guide is None:
        raise ValueError(f"{path}: the fit used a custom guide; pass it as guide=")
    local = bool(payload.get("module_local_params", True))
    dtype = getattr(torch, payload.get("dtype", "float32"))
    with default_dtype(dtype), pyro.settings.context(module_local_params=local):
        guide_obj = guide if name == "custom" else get_family(name).empty(model,
                                                                           payload["params"])
        owner = owner_module(guide_obj)
        if owner is not None:
            with poutine.block(), torch.no_grad():
                guide_obj(**data)
            owner.load_state_dict(payload["params"])
    return SVIFit(
        model=model, guide=guide_obj, data=data,
        losses=np.asarray(payload["losses"].numpy()), elbo=float(payload["elbo"]),
        elbo_se=float(payload["elbo_se"]), guide_name=name, elbo_name=payload["elbo_name"],
        converged=bool(payload["converged"]), seed=int(payload["seed"]),
        params=payload["params"], module_local_params=local,
        num_grad_evals=int(payload.get("num_grad_evals", 0)), dtype=dtype,
        start=str(payload.get("start", "none")),
        ladder=None if payload.get("ladder") is None else pd.DataFrame(payload["ladder"]),
        ladder_stop=str(payload.get("ladder_stop", "")),
    )
