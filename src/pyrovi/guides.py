"""Variational guide families by name.

Every family is a factory ``factory(model) -> guide`` built on Pyro's autoguides, so a
guide made here works in any Pyro project::

    from pyrovi.guides import make_guide
    guide = make_guide("full_rank", model)
    svi = pyro.infer.SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), pyro.infer.Trace_ELBO())
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.infer import autoguide

GuideFactory = Callable[[Callable[..., Any]], Any]


class FixedAffine(TransformModule):
    """The fixed map ``z = loc + scale_tril @ u``, kept as buffers so it is saved with the
    guide's ``state_dict``."""

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, loc: torch.Tensor, scale_tril: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("affine_loc", loc.detach().clone())
        self.register_buffer("affine_scale_tril", scale_tril.detach().clone())

    def _call(self, u: torch.Tensor) -> torch.Tensor:
        return self.affine_loc + (self.affine_scale_tril @ u.unsqueeze(-1)).squeeze(-1)

    def _inverse(self, z: torch.Tensor) -> torch.Tensor:
        diff = (z - self.affine_loc).unsqueeze(-1)
        return torch.linalg.solve_triangular(self.affine_scale_tril, diff, upper=False).squeeze(-1)

    def log_abs_det_jacobian(self, u: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        log_det = self.affine_scale_tril.diagonal().abs().log().sum()
        return log_det.expand(u.shape[:-1])


def _flow_transform(
    dim: int, loc: torch.Tensor | None = None, scale_tril: torch.Tensor | None = None
) -> Any:
    """Two affine autoregressive (IAF) layers; an elementwise spline for 1-D latents.

    With ``loc`` and ``scale_tril`` (a Laplace approximation) a fixed affine map
    ``z = loc + scale_tril @ u`` follows the learned layers, so the flow starts at the
    Laplace approximation and only learns the departure from it.
    """
    if dim == 1:
        layers = [T.Spline(1, count_bins=8)]
    else:
        hidden = [max(3 * dim + 1, 10)]
        layers = [T.affine_autoregressive(dim, hidden_dims=hidden) for _ in range(2)]
    if loc is not None and scale_tril is not None:
        layers.append(FixedAffine(loc, scale_tril))
    return T.ComposeTransformModule(layers)


def mean_field(model: Callable[..., Any]) -> autoguide.AutoNormal:
    """Fully factorised Gaussian in the unconstrained space (``AutoNormal``)."""
    return autoguide.AutoNormal(model, init_scale=0.1)


def low_rank(model: Callable[..., Any], rank: int | None = None) -> Any:
    """Gaussian with diagonal plus low-rank covariance (``AutoLowRankMultivariateNormal``)."""
    return autoguide.AutoLowRankMultivariateNormal(model, rank=rank, init_scale=0.1)


def full_rank(model: Callable[..., Any]) -> autoguide.AutoMultivariateNormal:
    """Gaussian with a dense covariance (``AutoMultivariateNormal``)."""
    return autoguide.AutoMultivariateNormal(model, init_scale=0.1)


def flow(
    model: Callable[..., Any],
    loc: torch.Tensor | None = None,
    scale_tril: torch.Tensor | None = None,
) -> autoguide.AutoNormalizingFlow:
    """Normalising flow: two IAF layers (a rational-quadratic spline for 1-D latents).

    ``loc`` and ``scale_tril`` (optional, e.g. from a Laplace approximation) precondition
    the flow with a fixed affine map in the unconstrained space.
    """
    return autoguide.AutoNormalizingFlow(
        model, functools.partial(_flow_transform, loc=loc, scale_tril=scale_tril)
    )


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
