"""Bayesian Gaussian mixture with diagonal covariances: multimodal posteriors and label switching.

For ``K`` components in ``D`` dimensions (data standardised)::

    weights ~ Dirichlet(alpha0 * ones(K))
    locs[k, d] ~ Normal(0, prior_scale)
    scales[k, d] ~ LogNormal(0, 1)
    x[n] ~ sum_k weights[k] * Normal(locs[k], diag(scales[k] ** 2))

:func:`model` sums the assignments out (a ``MixtureSameFamily`` likelihood, i.e. a
log-sum-exp over components), so it has continuous latents only and works with
``Trace_ELBO``, the autoguides and NUTS. :func:`model_enum` is the same joint with the
assignments kept as discrete ``assign`` sites, enumerated in parallel; it works with
``TraceEnum_ELBO`` and :func:`pyro.infer.infer_discrete` (see
:func:`cluster_assignments`). Both give the same marginal likelihood.

The posterior is invariant to relabelling the components, so it has ``K!`` symmetric
modes. In one dimension ``ordered=True`` identifies the labels: ``locs`` then has shape
``(K,)`` and the prior :class:`SortedNormal` (the distribution of ``K`` sorted iid
``Normal(0, prior_scale)`` draws) restricts the symmetric prior to ``locs[0] < ... <
locs[K-1]`` without changing the marginal likelihood.
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.distributions.transforms import OrderedTransform
from pyro.infer import infer_discrete
from pyro.ops.indexing import Vindex

from pyrovi.guides import GUIDE_FAMILIES, GuideFamily, register_family
from pyrovi.models._data import pick_dataset
from pyrovi.models.spec import DataUnits, ModelSpec

DATASETS = ("old_faithful", "iris")

#: Bundled file, feature columns and the number of components fitted by default.
_FILES: dict[str, tuple[str, tuple[str, ...], int]] = {
    "old_faithful": ("old_faithful.csv", ("eruptions", "waiting"), 2),
    "iris": ("iris.csv", ("sepal_length", "sepal_width", "petal_length", "petal_width"), 3),
}

#: Unit of every feature of a bundled data set.
_UNITS: dict[str, str] = {"old_faithful": "min", "iris": "cm"}

GUIDE_PREFIX = "gmm_guide"


class SortedNormal(dist.TorchDistribution):
    """``K`` iid ``Normal(loc, scale)`` draws sorted in increasing order.

    The density on the ordered set is ``K! * prod_k Normal(y_k | loc, scale)``: the
    symmetric iid prior restricted to ``y_0 < ... < y_{K-1}``. Its support is
    ``constraints.ordered_vector``, so autoguides and NUTS work in the unconstrained
    space given by :class:`~pyro.distributions.transforms.OrderedTransform`.

    Parameters
    ----------
    loc, scale : float or Tensor
        Location and scale of each unsorted draw (scalars or batch tensors).
    size : int
        Length ``K`` of the vector (the event shape).
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.ordered_vector
    has_rsample = True

    def __init__(
        self,
        loc: torch.Tensor | float,
        scale: torch.Tensor | float,
        size: int,
        validate_args: bool | None = None,
    ) -> None:
        loc_t, scale_t = (
            v if isinstance(v, torch.Tensor) else torch.tensor(float(v)) for v in (loc, scale)
        )
        self.loc, self.scale = torch.broadcast_tensors(loc_t, scale_t)
        self.size = int(size)
        super().__init__(self.loc.shape, torch.Size([self.size]), validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> SortedNormal:
        batch_shape = torch.Size(batch_shape)
        return SortedNormal(
            self.loc.expand(batch_shape),
            self.scale.expand(batch_shape),
            self.size,
            validate_args=False,
        )

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        draws = self.loc[..., None] + self.scale[..., None] * eps
        return draws.sort(dim=-1).values

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        base = dist.Normal(self.loc[..., None], self.scale[..., None]).log_prob(value)
        return base.sum(-1) + math.lgamma(self.size + 1)


def _locs_prior(K: int, D: int, prior_scale: float, ordered: bool) -> dist.Distribution:
    if ordered:
        if D != 1:
            raise ValueError(f"ordered=True needs one-dimensional data (D == 1); got D={D}")
        return SortedNormal(0.0, prior_scale, K)
    return dist.Normal(0.0, prior_scale).expand([K, D]).to_event(2)


def _global_sites(
    x: torch.Tensor, K: int, alpha0: float, prior_scale: float, ordered: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample ``weights``, ``locs`` and ``scales``; return locs with a trailing D axis."""
    D = x.shape[-1]
    weights = pyro.sample("weights", dist.Dirichlet(torch.full((K,), float(alpha0))))
    locs = pyro.sample("locs", _locs_prior(K, D, prior_scale, ordered))
    if ordered:
        locs = locs.unsqueeze(-1)
    scales = pyro.sample("scales", dist.LogNormal(0.0, 1.0).expand([K, D]).to_event(2))
    return weights, locs, scales


def _observe(x: torch.Tensor, weights: torch.Tensor, components: dist.Distribution) -> None:
    """The data, with the assignments summed out: ``x[n] ~ sum_k weights[k] component_k``."""
    mixture = dist.MixtureSameFamily(dist.Categorical(probs=weights), components)
    with pyro.plate("obs", x.shape[0], dim=-1):
        pyro.sample("x", mixture, obs=x)


def model(
    x: torch.Tensor,
    K: int = 2,
    alpha0: float = 1.0,
    prior_scale: float = 2.0,
    ordered: bool = False,
) -> None:
    """Mixture model with the assignments summed out (continuous latents only).

    Parameters
    ----------
    x : Tensor, shape (N, D)
        Observations (standardised: the priors assume unit scale).
    K : int, default 2
        Number of components.
    alpha0 : float, default 1.0
        Dirichlet concentration of each weight.
    prior_scale : float, default 2.0
        Prior standard deviation of each component mean.
    ordered : bool, default False
        Identify the labels by ordering the means (needs ``D == 1``; ``locs`` then has
        shape ``(K,)`` instead of ``(K, D)``).

    Notes
    -----
    Latent sites: ``weights`` (K,), ``locs`` (K, D) or (K,), ``scales`` (K, D); the
    observed site ``x`` sits in the plate ``obs`` (dim -1). Batch safe for vectorised
    particles with ``max_plate_nesting=1``.
    """
    weights, locs, scales = _global_sites(x, K, alpha0, prior_scale, ordered)
    _observe(x, weights, dist.Normal(locs, scales).to_event(1))


def model_lkj(
    x: torch.Tensor,
    K: int = 2,
    alpha0: float = 1.0,
    prior_scale: float = 2.0,
    eta: float = 2.0,
) -> None:
    """Full-covariance variant: per-component correlations with an LKJ-Cholesky prior.

    Sites as in :func:`model` plus ``corr_chol`` (K, D, D), each a Cholesky factor of a
    correlation matrix with ``LKJCholesky(D, eta)`` prior; component ``k`` has covariance
    ``diag(scales[k]) corr[k] diag(scales[k])``. Assignments are summed out.
    """
    D = x.shape[-1]
    weights, locs, scales = _global_sites(x, K, alpha0, prior_scale, False)
    corr_chol = pyro.sample(
        "corr_chol", dist.LKJCholesky(D, torch.tensor(float(eta))).expand([K]).to_event(1)
    )
    scale_tril = scales.unsqueeze(-1) * corr_chol
    _observe(x, weights, dist.MultivariateNormal(locs, scale_tril=scale_tril))


def model_enum(
    x: torch.Tensor,
    K: int = 2,
    alpha0: float = 1.0,
    prior_scale: float = 2.0,
    ordered: bool = False,
) -> None:
    """The same joint with explicit discrete assignments ``assign`` (enumerated in parallel).

    Use with ``TraceEnum_ELBO(max_plate_nesting=1)`` and a guide over the continuous
    sites only (for example ``AutoNormal(poutine.block(model_enum, hide=["assign"]))``,
    or any guide of :func:`model`, which has the same continuous sites). Arguments as in
    :func:`model`.
    """
    weights, locs, scales = _global_sites(x, K, alpha0, prior_scale, ordered)
    with pyro.plate("obs", x.shape[0], dim=-1):
        assign = pyro.sample(
            "assign", dist.Categorical(probs=weights), infer={"enumerate": "parallel"}
        )
        loc = Vindex(locs)[..., assign, :]
        scale = Vindex(scales)[..., assign, :]
        pyro.sample("x", dist.Normal(loc, scale).to_event(1), obs=x)


def cluster_assignments(
    model_enum: Callable[..., Any],
    guide: Callable[..., Any],
    data: dict[str, Any],
    seed: int = 0,
) -> torch.Tensor:
    """MAP cluster assignments by ``infer_discrete`` given one draw of the globals.

    Draws ``weights``, ``locs`` and ``scales`` from ``guide`` (seeded), replays
    ``model_enum`` on them and returns the jointly most probable ``assign`` values
    (``temperature=0``), which for a mixture are the per-point argmax responsibilities.

    Parameters
    ----------
    model_enum : callable
        The enumerated model (:func:`model_enum` or one with the same sites).
    guide : callable
        A guide over the continuous sites, called as ``guide(**data)``.
    data : dict
        Model arguments.
    seed : int, default 0
        Seed of the guide draw.

    Returns
    -------
    Tensor of int64, shape (N,)
    """
    with pyro.poutine.seed(rng_seed=seed):
        guide_trace = poutine.trace(guide).get_trace(**data)
    replayed = poutine.replay(model_enum, trace=guide_trace)
    decoded = infer_discrete(replayed, first_available_dim=-2, temperature=0)
    with pyro.poutine.seed(rng_seed=seed):
        trace = poutine.trace(decoded).get_trace(**data)
    return trace.nodes["assign"]["value"].detach().long()


def _spread_init(x: torch.Tensor, K: int) -> torch.Tensor:
    """K data points at evenly spaced quantiles of the first coordinate (breaks symmetry)."""
    order = torch.argsort(x[:, 0])
    idx = ((torch.arange(K, dtype=torch.float64) + 0.5) / K * x.shape[0]).long()
    return x[order[idx]].detach().clone()


def mean_field_guide(
    x: torch.Tensor,
    K: int = 2,
    alpha0: float = 1.0,
    prior_scale: float = 2.0,
    ordered: bool = False,
) -> None:
    """Hand-written mean-field guide for :func:`model` and :func:`model_enum`.

    ``q(weights) = Dirichlet(c)``, ``q(locs) = Normal(mu, sigma)`` elementwise (for
    ``ordered=True``: a Normal in the unconstrained space pushed through
    ``OrderedTransform``) and ``q(scales) = LogNormal(s_loc, s_scale)`` elementwise.
    Parameters are named ``gmm_guide.<name>``; the component means start at data points
    spread along the first coordinate, which breaks the label symmetry.
    """
    del alpha0, prior_scale  # part of the shared signature only
    N, D = x.shape
    p = f"{GUIDE_PREFIX}."
    conc = pyro.param(
        p + "weights_concentration",
        lambda: torch.full((K,), N / K + 1.0),
        constraint=constraints.positive,
    )
    pyro.sample("weights", dist.Dirichlet(conc))
    init_locs = _spread_init(x, K)
    if ordered:
        if D != 1:
            raise ValueError(f"ordered=True needs one-dimensional data (D == 1); got D={D}")
        loc_u = pyro.param(p + "locs_loc", lambda: OrderedTransform().inv(init_locs[:, 0]))
        scale_u = pyro.param(
            p + "locs_scale", lambda: torch.full((K,), 0.1), constraint=constraints.positive
        )
        base = dist.Normal(loc_u, scale_u).to_event(1)
        pyro.sample("locs", dist.TransformedDistribution(base, [OrderedTransform()]))
    else:
        loc = pyro.param(p + "locs_loc", lambda: init_locs)
        scale = pyro.param(
            p + "locs_scale", lambda: torch.full((K, D), 0.1), constraint=constraints.positive
        )
        pyro.sample("locs", dist.Normal(loc, scale).to_event(2))
    s_loc = pyro.param(p + "scales_loc", lambda: torch.full((K, D), math.log(0.5)))
    s_scale = pyro.param(
        p + "scales_scale", lambda: torch.full((K, D), 0.1), constraint=constraints.positive
    )
    pyro.sample("scales", dist.LogNormal(s_loc, s_scale).to_event(2))


def separated_means(rng: np.random.Generator, K: int, D: int, min_gap: float = 2.5
                    ) -> np.ndarray:
    """``K`` component means in ``D`` dimensions, ``Normal(0, 2)`` draws redrawn until every
    pair is at least ``min_gap`` apart (so simulated clusters are identifiable)."""
    for _ in range(10_000):
        locs = rng.normal(0.0, 2.0, size=(K, D))
        gaps = np.linalg.norm(locs[:, None] - locs[None], axis=-1) + np.eye(K) * 1e9
        if gaps.min() >= min_gap:
            return locs
    raise RuntimeError(f"could not draw {K} means {min_gap} apart in {D} dimensions")


def simulate(
    seed: int = 0, N: int = 300, K: int = 3, D: int = 2
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate ``N`` points from a well-separated ``K``-component mixture in ``D`` dims.

    Weights ~ Dirichlet(5, ..., 5) (no near-empty component); means are drawn from
    ``Normal(0, 2)`` until every pair is at least 2.5 apart; scales ~
    ``Uniform(0.3, 0.6)``, so means are at least about four component sds apart. The
    parameters are then mapped affinely, per dimension, so that the *population*
    mixture has mean 0 and sd 1 (the scale of standardised data the priors assume);
    the sample is drawn after that map, so ``truth`` is exactly what generated ``x``.
    Components are sorted by the first coordinate of their means.

    Returns
    -------
    data : dict
        ``{"x": Tensor (N, D), "K": K}``, ready for ``model(**data)``.
    truth : dict
        ``weights`` (K,), ``locs`` (K, D) and ``scales`` (K, D), the latent sites of
        :func:`model` (with ``ordered=True`` and ``D == 1`` the fitted ``locs`` has shape
        ``(K,)``: compare with ``truth["locs"][:, 0]``).
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 5.0))
    locs = separated_means(rng, K, D)
    scales = rng.uniform(0.3, 0.6, size=(K, D))
    centre = weights @ locs
    sd = np.sqrt(weights @ (scales**2 + locs**2) - centre**2)
    locs, scales = (locs - centre) / sd, scales / sd
    order = np.argsort(locs[:, 0])
    weights, locs, scales = weights[order], locs[order], scales[order]
    assign = rng.choice(K, size=N, p=weights)
    x = locs[assign] + scales[assign] * rng.standard_normal((N, D))
    f32 = torch.float32
    data = {"x": torch.tensor(x, dtype=f32), "K": K}
    truth = {
        "weights": torch.tensor(weights, dtype=f32),
        "locs": torch.tensor(locs, dtype=f32),
        "scales": torch.tensor(scales, dtype=f32),
    }
    return data, truth


@functools.cache
def _read_raw(name: str) -> np.ndarray:
    filename, columns, _ = _FILES[name]
    text = resources.files("pyrovi.data").joinpath(filename).read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    raw = np.array([[float(row[c]) for c in columns] for row in rows], dtype=np.float64)
    raw.flags.writeable = False
    return raw


def feature_names(name: str | None = None) -> tuple[str, ...]:
    """Column names of the features of a bundled data set, with their units."""
    chosen = pick_dataset(name, DATASETS, "gmm")
    return tuple(f"{c} ({_UNITS[chosen]})" for c in _FILES[chosen][1])


def standardization(name: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation (``ddof=1``) of each feature of a bundled data set.

    ``load_data(name)["x"] == (raw - mean) / sd``.

    Returns
    -------
    mean, sd : ndarray, shape (D,)
    """
    chosen = pick_dataset(name, DATASETS, "gmm")
    raw = _read_raw(chosen)
    return raw.mean(axis=0), raw.std(axis=0, ddof=1)


def unstandardize(
    values: np.ndarray | torch.Tensor, name: str | None = None, scale: bool = False
) -> np.ndarray:
    """Map values from the standardised scale back to the data's units.

    Parameters
    ----------
    values : array_like, shape (..., D)
        Locations (for example posterior ``locs``) or, with ``scale=True``, standard
        deviations (``scales``) on the standardised scale.
    name : str, optional
        Data set (default ``old_faithful``).
    scale : bool, default False
        Multiply by the feature sd only (for scales) instead of ``values * sd + mean``.

    Returns
    -------
    ndarray
    """
    mean, sd = standardization(name)
    arr = values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else values
    arr = np.asarray(arr, dtype=np.float64)
    return arr * sd if scale else arr * sd + mean


def bundled_dataset(data: Mapping[str, Any]) -> str | None:
    """Which bundled data set ``data`` holds, standardised as :func:`load_data` gives it.

    Returns
    -------
    str or None
        The data set's name, or None for any other data (simulated, the user's own).
    """
    x = data.get("x")
    if x is None:
        return None
    x = torch.as_tensor(x).detach().cpu().double().numpy()
    for name in DATASETS:
        mean, sd = standardization(name)
        raw = _read_raw(name)
        if x.shape == raw.shape and np.allclose(x, (raw - mean) / sd, rtol=0.0, atol=1e-5):
            return name
    return None


def data_units(data: Mapping[str, Any]) -> DataUnits | None:
    """How draws of the mixtures on bundled data read in the data's units.

    ``locs`` become ``locs * sd + mean`` and ``scales`` ``scales * sd`` per feature (the
    data's unit, e.g. minutes), ``precisions`` (:mod:`pyrovi.models.gmm_full`) become
    ``precisions / (sd_i sd_j)`` (unit ``1/min²``); ``weights`` (probabilities) and
    ``corr_chol`` (correlations) have no unit and stay as they are.

    Returns
    -------
    DataUnits or None
        None unless ``data`` is a bundled data set (:func:`bundled_dataset`): the
        constants of other data are not known.
    """
    name = bundled_dataset(data)
    if name is None:
        return None
    mean, sd = standardization(name)
    unit = _UNITS[name]

    def convert(site: str, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        if site == "locs":
            return values * sd + mean
        if site == "scales":
            return values * sd
        if site == "precisions":
            return values / np.outer(sd, sd)
        return values

    def unit_of(site: str, index: tuple[int, ...]) -> str:
        if site in ("locs", "scales"):
            return unit
        if site == "precisions":
            return f"1/{unit}²"
        if site == "weights":
            return "probability"
        return "dimensionless"

    names = ", ".join(feature_names(name))
    return DataUnits(f"data units of {name}: {names}", convert, unit_of)


def load_data(name: str | None = None) -> dict[str, Any]:
    """Bundled data, standardised per feature: ``{"x": Tensor (N, D), "K": K}``.

    ``old_faithful`` (default): 272 eruptions of the Old Faithful geyser, duration and
    waiting time (R ``datasets::faithful``), ``K = 2``. ``iris``: Fisher's 150 flowers,
    four measurements in cm (R ``datasets::iris``), ``K = 3``. See
    :func:`standardization` and :func:`unstandardize` for the original units;
    :func:`pyrovi.compare` reports in them (:func:`data_units`).
    """
    chosen = pick_dataset(name, DATASETS, "gmm")
    mean, sd = standardization(chosen)
    x = (_read_raw(chosen) - mean) / sd
    return {"x": torch.tensor(x, dtype=torch.float32), "K": _FILES[chosen][2]}


MEAN_FIELD_GMM = register_family(GuideFamily(
    "mean_field_gmm", lambda m: mean_field_guide, represents_correlations=False,
    richer="full_rank",
    description="hand-written mean field of gmm: Dirichlet x Normal x LogNormal",
))
"""The hand-written :func:`mean_field_guide` as a guide family record."""

SPEC = ModelSpec(
    name="gmm",
    model=model,
    guides={**GUIDE_FAMILIES, MEAN_FIELD_GMM.name: MEAN_FIELD_GMM.build},
    load_data=load_data,
    simulate=simulate,
    description="Bayesian Gaussian mixture, assignments summed out (multimodal, label switching)",
    datasets=DATASETS,
    site_roles={"weights": "component", "locs": "component", "scales": "component"},
    data_units=data_units,
)

SPEC_LKJ = ModelSpec(
    name="gmm_lkj",
    model=model_lkj,
    guides=dict(GUIDE_FAMILIES),
    load_data=load_data,
    simulate=simulate,
    description="Bayesian Gaussian mixture, full covariances with LKJ-Cholesky correlations",
    datasets=DATASETS,
    site_roles={"weights": "component", "locs": "component", "scales": "component",
                "corr_chol": "component"},
    data_units=data_units,
)
