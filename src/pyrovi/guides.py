"""Variational guide families by name.

Every family is a factory ``factory(model) -> guide`` built on Pyro's autoguides, so a
guide made here works in any Pyro project::

    from pyrovi.guides import make_guide
    guide = make_guide("full_rank", model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyro.distributions.transforms as T
from pyro.infer import autoguide

GuideFactory = Callable[[Callable[..., Any]], Any]


def _flow_transform(dim: int) -> Any:
    """Two affine autoregressive (IAF) layers; an elementwise spline for 1-D latents."""
    if dim == 1:
        return T.Spline(1, count_bins=8)
    hidden = [max(3 * dim + 1, 10)]
    return T.ComposeTransformModule(
        [T.affine_autoregressive(dim, hidden_dims=hidden) for _ in range(2)]
    )


def mean_field(model: Callable[..., Any]) -> autoguide.AutoNormal:
    """Fully factorised Gaussian in the unconstrained space (``AutoNormal``)."""
    return autoguide.AutoNormal(model, init_scale=0.1)


def low_rank(model: Callable[..., Any], rank: int | None = None) -> Any:
    """Gaussian with diagonal plus low-rank covariance (``AutoLowRankMultivariateNormal``)."""
    return autoguide.AutoLowRankMultivariateNormal(model, rank=rank, init_scale=0.1)


def full_rank(model: Callable[..., Any]) -> autoguide.AutoMultivariateNormal:
    """Gaussian with a dense covariance (``AutoMultivariateNormal``)."""
    return autoguide.AutoMultivariateNormal(model, init_scale=0.1)


def flow(model: Callable[..., Any]) -> autoguide.AutoNormalizingFlow:
    """Normalising flow: two IAF layers (a rational-quadratic spline for 1-D latents)."""
    return autoguide.AutoNormalizingFlow(model, _flow_transform)


def map_point(model: Callable[..., Any]) -> autoguide.AutoDelta:
    """Point mass at the MAP estimate (``AutoDelta``)."""
    return autoguide.AutoDelta(model)


def laplace(model: Callable[..., Any]) -> autoguide.AutoLaplaceApproximation:
    """Laplace approximation: MAP plus the inverse Hessian in the unconstrained space."""
    return autoguide.AutoLaplaceApproximation(model)


GUIDE_FAMILIES: dict[str, GuideFactory] = {
    "mean_field": mean_field,
    "low_rank": low_rank,
    "full_rank": full_rank,
    "flow": flow,
    "map": map_point,
    "laplace": laplace,
}


def make_guide(guide: str | Callable[..., Any], model: Callable[..., Any]) -> Any:
    """Return a guide for ``model``.

    Parameters
    ----------
    guide : str or callable
        A family name from :data:`GUIDE_FAMILIES`, or a guide callable (returned as is).
    model : callable
        The Pyro model the guide approximates the posterior of.

    Raises
    ------
    ValueError
        If ``guide`` is a string that names no family.
    """
    if callable(guide):
        return guide
    if guide not in GUIDE_FAMILIES:
        raise ValueError(
            f"unknown guide {guide!r}; choose one of {', '.join(GUIDE_FAMILIES)} or pass a callable"
        )
    return GUIDE_FAMILIES[guide](model)
