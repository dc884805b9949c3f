"""Guide families as records, in one table.

What varies by family is written once, here, as fields of :class:`GuideFamily`: how the
guide is built, whether it is started from a Gaussian approximation (and how), how an
empty one is rebuilt to receive a saved state, whether it can represent posterior
correlations, and the next richer family (the rung above it on the guide ladder). The
fit loop, the verdict, the CLI and persistence ask the record; none of them compares
family names.

A model's hand-written guides are records too (:func:`register_family`), so
``pyrovi.fit(model, data, guide="mean_field_gmm")`` finds them by name. Amortized guides
(an encoder network per local latent) set ``amortized=True``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro.infer import autoguide
from torch.distributions import biject_to, transform_to

from pyrovi.guides.flow import flow, flow_affine
from pyrovi.guides.gaussian import (
    AutoWhitenedNormal,
    GaussianStart,
    MeanFieldNormal,
    deep_getattr,
    init_to_median_or_feasible,
)

Model = Callable[..., Any]
GuideFactory = Callable[[Model], Any]


@dataclass(frozen=True)
class GuideFamily:
    """One guide family.

    Attributes
    ----------
    name : str
        The name users pass as ``guide=``.
    build : callable
        ``build(model) -> guide``: a fresh guide.
    represents_correlations : bool
        Whether q can represent posterior correlations between latents.
    richer : str or None
        The next richer family (the ladder's next rung), if any.
    start : callable or None
        ``start(model, data, gaussian) -> guide``: a guide whose q starts at (or
        is preconditioned by) the :class:`GaussianStart`. ``None``: the guide starts at
        its own initialisation and the fit does not search for a start.
    rebuild : callable or None
        ``rebuild(model, state) -> guide``: an empty guide shaped to receive the saved
        ``state_dict``; by default ``build``.
    takes_steps : bool
        False where the start is the answer and SVI takes no steps (``laplace``).
    prior_start : bool
        Whether ``init="auto"`` also tries the model's initial point when a Laplace start
        exists. False for flows: IAF layers learning in the raw coordinates of a badly
        scaled posterior can reach numerically broken densities (their inverse is
        iterative), so a flow starts from the Laplace approximation when there is one.
    amortized : bool
        An encoder maps each data point to its local latents' q.
    preconditioned : bool
        Whether the guide measures steps in units of q's sds (its ``step_scales`` or
        ``rewhiten``), so the trial's step sizes are the engine's ``STEP_SIZES``; else the
        smaller ``RAW_STEP_SIZES`` of raw coordinates.
    description : str
        One line for listings.
    """

    name: str
    build: GuideFactory
    represents_correlations: bool
    richer: str | None = None
    start: Callable[[Model, dict[str, Any], GaussianStart], Any] | None = None
    rebuild: Callable[[Model, dict[str, torch.Tensor]], Any] | None = None
    takes_steps: bool = True
    prior_start: bool = True
    amortized: bool = False
    preconditioned: bool = False
    description: str = ""

    def empty(self, model: Model, state: dict[str, torch.Tensor]) -> Any:
        """A guide of this family ready for ``load_state_dict(state)``."""
        return self.rebuild(model, state) if self.rebuild else self.build(model)


def _started(guide: Any, data: dict[str, Any], gaussian: GaussianStart) -> Any:
    guide.start_at(gaussian, **data)
    return guide


def _flow_start(model: Model, data: dict[str, Any], gaussian: GaussianStart) -> Any:
    return flow(model, loc=gaussian.loc, scale_tril=gaussian.dense_tril)


def _flow_rebuild(model: Model, state: dict[str, torch.Tensor]) -> Any:
    affine = flow_affine(state)
    if affine is None:
        return flow(model)
    dim = affine[0].shape[-1]
    eye = torch.eye(dim, dtype=affine[0].dtype)
    return flow(model, loc=torch.zeros(dim, dtype=affine[0].dtype), scale_tril=eye)


class _Laplace:
    """The Laplace approximation itself as a guide: built from the start, no steps."""

    @staticmethod
    def build(model: Model) -> Any:
        return autoguide.AutoLaplaceApproximation(model, init_loc_fn=init_to_median_or_feasible)

    @staticmethod
    def start(model: Model, data: dict[str, Any], gaussian: GaussianStart) -> Any:
        guide = autoguide.AutoMultivariateNormal(model, init_loc_fn=init_to_median_or_feasible)
        with torch.no_grad():
            guide._setup_prototype(**data)
            guide.loc.data.copy_(gaussian.loc)
            scale = gaussian.marginal_std
        guide.scale = scale  # PyroParam setter keeps the constraint
        guide.scale_tril = gaussian.dense_tril / scale[:, None]
        return guide

    @staticmethod
    def rebuild(model: Model, state: dict[str, torch.Tensor]) -> Any:
        return autoguide.AutoMultivariateNormal(model, init_loc_fn=init_to_median_or_feasible)


def _map_start(model: Model, data: dict[str, Any], gaussian: GaussianStart) -> Any:
    guide = autoguide.AutoDelta(model, init_loc_fn=init_to_median_or_feasible)
    with torch.no_grad():
        guide._setup_prototype(**data)
        for name, (lo, hi, shape) in gaussian.sites.items():
            support = guide.prototype_trace.nodes[name]["fn"].support
            value = biject_to(support)(gaussian.loc[lo:hi].reshape(shape))
            deep_getattr(guide, name + "_unconstrained").copy_(transform_to(support).inv(value))
    return guide


FAMILIES: dict[str, GuideFamily] = {}
"""Every guide family by name: the built-in ones and those models registered."""


def register_family(family: GuideFamily) -> GuideFamily:
    """Add ``family`` to :data:`FAMILIES` (a model module registers its hand-written guides).

    Raises
    ------
    ValueError
        If a different family already has that name.
    """
    existing = FAMILIES.get(family.name)
    if existing is not None and existing != family:
        raise ValueError(f"a guide family named {family.name!r} is already registered")
    FAMILIES[family.name] = family
    return family


def get_family(name: str) -> GuideFamily:
    """The family registered as ``name``.

    Raises
    ------
    ValueError
        If no family has that name; the message lists the registered ones.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown guide {name!r}; choose one of {', '.join(FAMILIES)} "
                         "or pass a guide callable") from None


def _low_rank(model: Model) -> AutoWhitenedNormal:
    return AutoWhitenedNormal(model, structure="low_rank")


def _low_rank_rebuild(model: Model, state: dict[str, torch.Tensor]) -> AutoWhitenedNormal:
    return AutoWhitenedNormal(model, structure="low_rank", rank=state["cov_factor"].shape[-1])


BUILT_IN = (
    GuideFamily("mean_field", MeanFieldNormal, represents_correlations=False,
                richer="low_rank", start=lambda m, d, g: _started(MeanFieldNormal(m), d, g),
                preconditioned=True,
                description="independent Gaussians in the unconstrained space (AutoNormal)"),
    GuideFamily("low_rank", _low_rank, represents_correlations=True, richer="full_rank",
                start=lambda m, d, g: _started(_low_rank(m), d, g), rebuild=_low_rank_rebuild,
                preconditioned=True,
                description="Gaussian with diagonal plus low-rank covariance"),
    GuideFamily("full_rank", AutoWhitenedNormal, represents_correlations=True, richer="flow",
                start=lambda m, d, g: _started(AutoWhitenedNormal(m), d, g),
                preconditioned=True,
                description="Gaussian with a dense covariance"),
    GuideFamily("flow", flow, represents_correlations=True, start=_flow_start,
                rebuild=_flow_rebuild, prior_start=False,
                description="normalizing flow (two IAF layers) after a Gaussian start"),
    GuideFamily("map", lambda m: autoguide.AutoDelta(m, init_loc_fn=init_to_median_or_feasible),
                represents_correlations=False, start=_map_start,
                preconditioned=True,
                description="point mass at the posterior mode (AutoDelta)"),
    GuideFamily("laplace", _Laplace.build, represents_correlations=True, start=_Laplace.start,
                rebuild=_Laplace.rebuild, takes_steps=False,
                description="Gaussian at the mode with the inverse Hessian: no SVI steps"),
)
for _family in BUILT_IN:
    register_family(_family)

GUIDE_FAMILIES: dict[str, GuideFactory] = {family.name: family.build for family in BUILT_IN}
"""The built-in families' factories by name (``factory(model) -> guide``), as
``ModelSpec.guides`` lists them."""


def make_guide(guide: str | Callable[..., Any], model: Model) -> Any:
    """Return a guide for ``model``.

    Parameters
    ----------
    guide : str or callable
        A family name from :data:`FAMILIES`, or a guide callable (returned as is).
    model : callable
        The Pyro model the guide approximates the posterior of.

    Raises
    ------
    ValueError
        If ``guide`` is a string that names no family.
    """
    if callable(guide):
        return guide
    return get_family(guide).build(model)
