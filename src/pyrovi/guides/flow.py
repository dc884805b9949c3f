"""Normalizing-flow guides: learned IAF layers followed by a fixed affine start."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.infer import autoguide

from pyrovi.guides.gaussian import init_to_median_or_feasible


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

    With ``loc`` and ``scale_tril`` a fixed affine map ``z = loc + scale_tril @ u`` follows
    the learned layers, so the flow starts at that Gaussian and learns only the departure
    from it.
    """
    if dim == 1:
        layers = [T.Spline(1, count_bins=8)]
    else:
        hidden = [max(3 * dim + 1, 10)]
        layers = [T.affine_autoregressive(dim, hidden_dims=hidden) for _ in range(2)]
    if loc is not None and scale_tril is not None:
        layers.append(FixedAffine(loc, scale_tril))
    return T.ComposeTransformModule(layers)


class NormalizingFlow(autoguide.AutoNormalizingFlow):
    """Pyro's ``AutoNormalizingFlow``, set up at the prior median or a feasible point
    without drawing from the prior (Stan's flat priors, ported as ``ImproperUniform``,
    cannot be drawn from)."""

    def __init__(self, model: Callable[..., Any],
                 init_transform_fn: Callable[[int], Any]) -> None:
        autoguide.AutoContinuous.__init__(self, model,
                                          init_loc_fn=init_to_median_or_feasible)
        self._init_transform_fn = init_transform_fn
        self.transform = None
        self._prototype_tensor = torch.tensor(0.0)


def flow(
    model: Callable[..., Any],
    loc: torch.Tensor | None = None,
    scale_tril: torch.Tensor | None = None,
) -> NormalizingFlow:
    """Normalising flow: two IAF layers (a rational-quadratic spline for 1-D latents).

    Parameters
    ----------
    model : callable
        The Pyro model.
    loc, scale_tril : torch.Tensor, optional
        A Gaussian start in the unconstrained space (e.g. a Laplace approximation): the
        flow is preconditioned by the fixed affine map ``z = loc + scale_tril @ u``.
    """
    return NormalizingFlow(
        model, functools.partial(_flow_transform, loc=loc, scale_tril=scale_tril)
    )


def flow_affine(state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fixed affine start stored in a flow guide's ``state_dict``, if it has one."""
    loc = [v for k, v in state.items() if k.endswith("affine_loc")]
    tril = [v for k, v in state.items() if k.endswith("affine_scale_tril")]
    return (loc[0], tril[0]) if loc and tril else None
