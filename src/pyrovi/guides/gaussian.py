"""Gaussian guides in the unconstrained space, in coordinates the optimiser can use.

Adam moves every parameter by about its learning rate per step, whatever the units: a
location whose posterior sd is 1,000 crawls, and a posterior correlation of -0.99 leaves
Adam zig-zagging across a narrow valley. The guides here therefore learn in
*preconditioned* coordinates. A fixed point ``center`` and a fixed matrix ``P`` (kept as
buffers, saved with the guide) map the learned ``a`` and ``B`` to

    z = center + P (a + B eps),    eps ~ N(0, I),

so the step size is measured in posterior standard deviations. :meth:`rewhiten` folds the
learned part into ``center`` and ``P`` at any time without changing q, which lets the fit
loop re-centre the coordinates on the current q whenever it changes the step size.

==========================  ==========  ==================  =============================
guide                        family      P                   covariance of q
==========================  ==========  ==================  =============================
:class:`MeanFieldNormal`     mean_field  per-element steps   diagonal (Pyro ``AutoNormal``)
:class:`AutoWhitenedNormal`  low_rank    diagonal            S(FF^T + I)S, rank r
:class:`AutoWhitenedNormal`  full_rank   lower triangular    dense
==========================  ==========  ==================  =============================

``MeanFieldNormal`` stays an ``AutoNormal`` (per-site, so it handles subsampled local
latents); its preconditioning is a per-element step scale read by the fit loop
(:meth:`MeanFieldNormal.step_scales`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.infer import autoguide
from pyro.infer.autoguide.initialization import init_to_median
from torch import nn
from torch.distributions import biject_to

SiteSlices = dict[str, tuple[int, int, torch.Size]]


def init_to_median_or_feasible(site: dict[str, Any], num_samples: int = 15) -> torch.Tensor:
    """Initialise a site at its prior median, or at a feasible point if its prior cannot
    be sampled (e.g. ``ImproperUniform``, as Stan's flat priors are ported)."""
    try:
        value = init_to_median(site, num_samples=num_samples)
    except (NotImplementedError, RuntimeError, ValueError):
        return feasible_point(site)
    if not torch.isfinite(value).all():
        return feasible_point(site)
    return value


def feasible_point(site: dict[str, Any]) -> torch.Tensor:
    """The image of zero in the unconstrained space: a point of the support found without
    drawing from the prior (which an ``ImproperUniform`` cannot do)."""
    fn = site["fn"]
    transform = biject_to(fn.support)
    shape = transform.inverse_shape(fn.batch_shape + fn.event_shape)
    return transform(torch.zeros(shape)).detach()


@dataclass(frozen=True)
class GaussianStart:
    """A Gaussian in the model's flat unconstrained space that a guide can start from.

    Attributes
    ----------
    loc : torch.Tensor
        Mean, shape ``(d,)``.
    scale_tril : torch.Tensor or None
        Lower Cholesky factor of the covariance, shape ``(d, d)``; None for a diagonal
        covariance given by ``std`` (no ``d x d`` matrix is formed: a model with a
        latent per data point has tens of thousands of dimensions).
    sites : dict
        Site name -> ``(start, end, unconstrained shape)`` of its block in ``loc``.
    source : str
        Where it came from: ``"laplace"`` (MAP and inverse Hessian), ``"init"`` (the
        model's initial point with a small isotropic spread), or the family of a fitted
        guide whose q it is (``as_start()``: the guide ladder's rungs).
    std : torch.Tensor or None
        The sds of a diagonal covariance (when ``scale_tril`` is None).
    """

    loc: torch.Tensor
    scale_tril: torch.Tensor | None
    sites: SiteSlices
    source: str
    std: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if (self.scale_tril is None) == (self.std is None):
            raise ValueError("a GaussianStart needs exactly one of scale_tril and std")

    @property
    def dense_tril(self) -> torch.Tensor:
        """The Cholesky factor as a ``(d, d)`` matrix (diagonal starts: formed here)."""
        return self.scale_tril if self.scale_tril is not None else torch.diag(self.std)

    @property
    def conditional_std(self) -> torch.Tensor:
        """``1 / sqrt(diag(precision))``: for a Gaussian posterior, exactly the mean-field
        optimum of KL(q || p)."""
        if self.scale_tril is None:
            return self.std
        eye = torch.eye(len(self.loc), dtype=self.loc.dtype, device=self.loc.device)
        inv_tril = torch.linalg.solve_triangular(self.scale_tril, eye, upper=False)
        return (inv_tril**2).sum(0).rsqrt()

    @property
    def marginal_std(self) -> torch.Tensor:
        """Square roots of the diagonal of the covariance."""
        if self.scale_tril is None:
            return self.std
        return (self.scale_tril**2).sum(1).sqrt()


def site_slices(guide: autoguide.AutoContinuous) -> SiteSlices:
    """Where each latent site lives in an AutoContinuous guide's flat unconstrained vector."""
    slices, start = {}, 0
    for name, site in guide.prototype_trace.iter_stochastic_nodes():
        shape = biject_to(site["fn"].support).inv(site["value"]).shape
        size = math.prod(shape)
        slices[name] = (start, start + size, torch.Size(shape))
        start += size
    return slices


def initial_start(model: Callable[..., Any], data: dict[str, Any],
                  init_scale: float = 0.1) -> GaussianStart:
    """The model's initial point (prior median, or a feasible point) with sd ``init_scale``
    in every unconstrained coordinate: where Pyro's autoguides start by default."""
    proto = autoguide.AutoDiagonalNormal(model, init_loc_fn=init_to_median_or_feasible)
    with pyro.poutine.block(), torch.no_grad():
        proto._setup_prototype(**data)
        loc = proto._init_loc().detach()
    return GaussianStart(loc, None, site_slices(proto), "init",
                         std=torch.full_like(loc, init_scale))


def _softplus_inverse(y: torch.Tensor) -> torch.Tensor:
    return y + torch.log(-torch.expm1(-y))


def deep_getattr(obj: Any, dotted: str) -> Any:
    """``getattr`` along a dotted path (Pyro nests modules for site names with dots)."""
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


class MeanFieldNormal(autoguide.AutoNormal):
    """Pyro's ``AutoNormal`` (a Gaussian per latent site, unconstrained space) with a start
    at a :class:`GaussianStart` and per-element step scales for the fit loop."""

    def __init__(self, model: Callable[..., Any], init_scale: float = 0.1) -> None:
        super().__init__(model, init_loc_fn=init_to_median_or_feasible, init_scale=init_scale)

    def start_at(self, start: GaussianStart, **data: Any) -> None:
        """Set every site's location to ``start.loc`` and its scale to the conditional sd."""
        if self.prototype_trace is None:
            with pyro.poutine.block(), torch.no_grad():
                self(**data)
        sd = start.conditional_std
        with torch.no_grad():
            for name, (lo, hi, shape) in start.sites.items():
                deep_getattr(self.locs, name + "_unconstrained").copy_(
                    start.loc[lo:hi].reshape(shape))
                deep_getattr(self.scales, name + "_unconstrained").copy_(
                    _softplus_inverse(sd[lo:hi].reshape(shape)))

    def as_start(self, source: str = "mean_field") -> GaussianStart:
        """q itself as a :class:`GaussianStart` (diagonal), for a richer guide to start at."""
        slices = site_slices(self)
        with torch.no_grad():
            loc = torch.cat([deep_getattr(self.locs, name).detach().reshape(-1)
                             for name in slices])
            std = torch.cat([deep_getattr(self.scales, name).detach().reshape(-1)
                             for name in slices])
        return GaussianStart(loc, None, slices, source, std=std)

    def step_scales(self) -> dict[str, torch.Tensor]:
        """Per-element multipliers of the step size, by parameter name.

        A location moves in units of its current sd; a scale ``s = softplus(u)`` moves by a
        fixed fraction of itself (``ds/du = 1 - exp(-s)``).
        """
        out = {}
        with torch.no_grad():
            for name, _site in self.prototype_trace.iter_stochastic_nodes():
                scale = deep_getattr(self.scales, name).detach()
                out[f"locs.{name}_unconstrained"] = scale.clone()
                out[f"scales.{name}_unconstrained"] = scale / -torch.expm1(-scale)
        return out


class AutoWhitenedNormal(autoguide.AutoContinuous):
    """A Gaussian over all latents jointly, learned in preconditioned coordinates.

    Parameters
    ----------
    model : callable
        The Pyro model.
    structure : {"full", "low_rank"}
        ``"full"``: a dense covariance (``full_rank``), ``P`` lower triangular.
        ``"low_rank"``: covariance ``S (F F^T + I) S`` with ``F`` of ``rank`` columns,
        as Pyro's ``AutoLowRankMultivariateNormal``; ``P`` diagonal.
    rank : int or None
        Columns of ``F`` (low rank only); by default ``round(sqrt(d))``.
    init_scale : float
        Initial sd in every unconstrained coordinate.

    Notes
    -----
    ``q`` is ``N(center + P a, L L^T)`` with ``L = P diag(exp(log_scale)) U`` for the
    dense form (``U`` unit lower triangular) and covariance
    ``(p s) (F F^T + I) (p s)`` with ``p = diag(P)`` for the low-rank form.
    """

    def __init__(self, model: Callable[..., Any], structure: str = "full",
                 rank: int | None = None, init_scale: float = 0.1) -> None:
        if structure not in ("full", "low_rank"):
            raise ValueError(f"structure must be 'full' or 'low_rank', got {structure!r}")
        if rank is not None and rank < 1:
            raise ValueError(f"rank must be a positive integer, got {rank}")
        self.structure = structure
        self.rank = rank
        self._init_scale = init_scale
        super().__init__(model, init_loc_fn=init_to_median_or_feasible)

    @property
    def low_rank(self) -> bool:
        return self.structure == "low_rank"

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        init = self._init_loc().detach()
        d = self.latent_dim
        self.register_buffer("center", init.clone())
        self.loc = nn.Parameter(torch.zeros_like(init))
        self.log_scale = nn.Parameter(torch.full_like(init, math.log(self._init_scale)))
        if self.low_rank:
            self.rank = min(self.rank or max(1, round(d**0.5)), d)
            self.register_buffer("precond", torch.ones_like(init))
            self.cov_factor = nn.Parameter(torch.randn(d, self.rank, dtype=init.dtype,
                                                       device=init.device) * 1e-2)
        else:
            eye = torch.eye(d, dtype=init.dtype, device=init.device)
            self.register_buffer("precond", eye)
            self.tril = nn.Parameter(torch.zeros_like(eye))

    def _unit_tril(self) -> torch.Tensor:
        eye = torch.eye(self.latent_dim, dtype=self.tril.dtype, device=self.tril.device)
        return self.tril.tril(-1) + eye

    def scale_tril(self) -> torch.Tensor:
        """Lower Cholesky factor of q's covariance (dense form only)."""
        return self.precond @ (self.log_scale.exp()[:, None] * self._unit_tril())

    def get_posterior(self, *args: Any, **kwargs: Any) -> dist.Distribution:
        """q as a Pyro distribution over the flat unconstrained latent vector."""
        if self.low_rank:
            scale = self.precond * self.log_scale.exp()
            return dist.LowRankMultivariateNormal(self.center + self.precond * self.loc,
                                                  self.cov_factor * scale[:, None], scale**2)
        return dist.MultivariateNormal(self.center + self.precond @ self.loc,
                                       scale_tril=self.scale_tril())

    def _loc_scale(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        posterior = self.get_posterior()
        return posterior.mean, posterior.variance.sqrt()

    def start_at(self, start: GaussianStart, **data: Any) -> None:
        """Make q equal to ``start`` (low rank: its diagonal and leading correlations)."""
        if self.prototype_trace is None:
            with pyro.poutine.block(), torch.no_grad():
                self(**data)
        with torch.no_grad():
            self.center.copy_(start.loc)
            self.loc.zero_()
            if not self.low_rank:
                self.precond.copy_(start.dense_tril)
                self.log_scale.zero_()
                self.tril.zero_()
                return
            marginal = start.marginal_std
            self.precond.copy_(marginal)
            if start.scale_tril is None:  # diagonal: nothing to correlate yet
                self.log_scale.zero_()
                self.cov_factor.copy_(1e-2 * torch.randn_like(self.cov_factor))
                return
            # in units of the marginal sds: q = S (F F^T + I) S with S the conditional sds,
            # shrunk just enough that what they leave unexplained is positive semidefinite,
            # and F its leading eigenvectors (exact at full rank)
            cond = start.conditional_std / marginal
            corr_tril = start.scale_tril / marginal[:, None]
            scaled = (corr_tril @ corr_tril.T) / (cond[:, None] * cond[None, :])
            shrink = 0.95 * min(1.0, float(torch.linalg.eigvalsh(scaled).min()))
            cond = cond * shrink**0.5
            residual = scaled / shrink - torch.eye(len(cond), dtype=cond.dtype,
                                                   device=cond.device)
            eigval, eigvec = torch.linalg.eigh(residual)
            top = eigval.flip(0)[: self.rank].clamp(min=0.0)
            factor = eigvec.flip(1)[:, : self.rank] * top.sqrt()
            self.log_scale.copy_(cond.log())
            self.cov_factor.copy_(factor + 1e-2 * torch.randn_like(factor))

    def as_start(self, source: str = "gaussian") -> GaussianStart:
        """q itself as a :class:`GaussianStart` (dense), for a richer guide to start at."""
        with torch.no_grad():
            posterior = self.get_posterior()
            tril = posterior.scale_tril if not self.low_rank \
                else torch.linalg.cholesky(posterior.covariance_matrix)
            return GaussianStart(posterior.mean.detach().clone(), tril.detach().clone(),
                                 site_slices(self), source)

    def rewhiten(self) -> None:
        """Fold the learned location and scales into ``center`` and ``P`` (q unchanged),
        so that the next steps are again measured in units of q's own spread."""
        with torch.no_grad():
            if self.low_rank:
                scale = self.log_scale.exp()
                marginal = scale * (self.cov_factor.pow(2).sum(-1) + 1).sqrt()
                self.center.add_(self.precond * self.loc)
                self.precond.mul_(marginal)
                self.log_scale.copy_((scale / marginal).log())
            else:
                self.center.add_(self.precond @ self.loc)
                self.precond.copy_(self.scale_tril())
                self.log_scale.zero_()
                self.tril.zero_()
            self.loc.zero_()
