"""Confirmatory factor analysis (CFA) of mental-ability tests: ``intelligence`` and
``intelligence_marginal``.

Each of ``N`` people takes ``P`` tests; test ``p`` measures some of ``K`` latent abilities
(factors), as a fixed 0/1 loading *pattern* ``(P, K)`` says. For person ``i``::

    eta_i ~ MVN(0, Phi)                                  factor scores, (K,)
    x_ip  ~ Normal(nu_p + sum_k Lambda_pk eta_ik, theta_p)   test scores, (P,)

``Lambda`` (``P x K``) is zero outside the pattern; ``nu`` are the intercepts, ``theta``
the residual sds (``Theta = diag(theta^2)``), ``Phi`` the factor covariance. Integrating
the scores out gives the *marginal* form::

    x_i ~ MVN(nu, Sigma),    Sigma = Lambda Phi Lambda^T + Theta

Two registered models with the same posterior over the globals: ``intelligence``
(:func:`model`, the scores are a latent site ``scores`` (N, K), one row per person: the
role ``"local"``) and ``intelligence_marginal`` (:func:`model_marginal`, no scores: the
posterior of a person's scores given the globals is Gaussian in closed form, and
:func:`score` computes it exactly).

Identification
--------------
``Sigma`` is unchanged when ``Lambda`` becomes ``Lambda A`` and ``Phi`` becomes
``A^{-1} Phi A^{-T}`` for any invertible ``A`` that keeps the pattern: a scale per factor
(``A`` diagonal) and a sign per factor. Left free, the posterior is a ridge in the scales
and a mixture of ``2^K`` sign-flipped copies. Two ways to pin it down, chosen by
``identification`` in the data:

``"unit_variance"`` (default; lavaan's ``std.lv = TRUE``)
    Every factor has variance 1, so ``Phi`` is a correlation matrix with an
    ``LKJCholesky(K, 2)`` prior on its Cholesky factor (site ``factor_corr_chol``); the
    first indicator's loading of each factor is constrained positive (half-normal prior),
    which fixes the factor's sign, and the other loadings are ``Normal(0, 2)``.
``"marker"`` (lavaan's default)
    The first indicator's loading of each factor is fixed at 1 (it is not a latent: the
    ``loadings`` site holds only the others, ``Normal(0, 2)``), which fixes the factor's
    scale and sign; the factor covariance is free: sds ``factor_sd`` ~ HalfNormal(2) and
    correlations ``factor_corr_chol`` ~ LKJCholesky(K, 2).

The positivity constraint leaves the reflected copies outside the support, but not their
pull: a sampler or optimiser that starts with a factor's *other* loadings negative cannot
reach the identified mode without the first loading crossing zero, and settles at a
boundary mode instead (first loading about 0.01, the others reflected, the factor's
correlations with the rest sign-flipped). That region holds negligible posterior mass on
the Holzinger - Swineford data, but a NUTS chain started there stays (Pyro's default start,
uniform in ``(-2, 2)`` in the unconstrained space, lands there for some seeds; in the
person-level form scores started at random set the factors' orientation). Start inside the
identified basin: the engine's variational fits do (prior median: first loadings 1, the
others 0, scores 0); ``tests/fixtures/latent/make_intelligence.py`` shows a NUTS start.
Under ``"marker"`` the factor sd plays the first loading's part (the effective loadings
``factor_sd * loadings`` cross zero only through ``factor_sd = 0``).

The loadings site is a vector over the nonzero pattern entries taken factor by factor, in
indicator order within a factor (lavaan's order: ``visual =~ x1, x2, x3``, then
``textual =~ ...``); :func:`loading_matrix` scatters it back into ``Lambda``.

Priors and scale
----------------
The data are fitted raw, as lavaan does, so every estimate is in the tests' own units and
lines up with lavaan's table. The priors are weakly informative for indicators on a
roughly unit scale (sds between about 0.3 and 3, means within about +-10; the Holzinger -
Swineford tests have sds 1.0 - 1.3 and means 2.2 - 6.1): intercepts ``Normal(0, 10)``,
loadings ``Normal(0, 2)`` (half-normal for the sign-fixing ones), residual sds
``HalfNormal(2)``, ``LKJCholesky(K, 2)`` for factor correlations (mild shrinkage towards
0). Standardise other data first (or rescale the priors' constants below).

The person-level form has no useful joint mode: its density over (globals, scores) grows
like ``theta_p^-N`` as a residual sd shrinks while the scores fit that test exactly, so a
MAP search over globals and scores finds degenerate points (``theta_p`` near
``N^-1/2``), not a summary of the posterior. Posterior draws (NUTS) and the ELBO are
unaffected: that region holds negligible mass.

Missing values
--------------
The models take ``x`` with missing entries filled (any value) and a boolean ``mask``
(True: observed) of the same shape; :func:`to_masked` makes the pair from a NaN-holding
array or DataFrame. The person-level likelihood masks each missing test out. The marginal
form uses the exact marginal of the observed tests per row: the missing coordinates get a
decoupled variance ``1 / (2 pi)`` and a residual of zero, whose Gaussian density is
exactly 1, so one batched MVN gives ``prod_i N(x_iO | nu_O, Sigma_OO)`` exactly. The MVN
is Pyro's ``LowRankMultivariateNormal`` with factor ``Lambda chol(Phi)`` (P x K) and
diagonal ``theta^2``: its log-density costs O(P K^2) per row and needs the Cholesky factor
only of the K x K capacitance matrix, which is positive definite for any draw. Without
missing values the factor and diagonal are shared by all rows.

Outputs
-------
:func:`parameter_table` (lavaan's long form with ``std_all``), :func:`score` (exact
Gaussian conditional ``E[eta | x]``, ``Var[eta | x]`` per posterior draw, mixed over
draws), :func:`fit_indices` (PPP of the likelihood-ratio discrepancy, BRMSEA and BCFI of
Garnier-Villarreal and Jorgensen 2020), from a fit of either form or draws of the globals.

Data: Holzinger, K. J. and Swineford, F. (1939), *A study in factor analysis: the
stability of a bi-factor solution*, Supplementary Educational Monographs 48, University of
Chicago; lavaan's ``HolzingerSwineford1939`` (301 pupils, tests ``x1``..``x9``).
"""

from __future__ import annotations

import csv
import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions import biject_to, transform_to
from torch.distributions.transforms import Transform

from pyrovi.diagnostics import interval_summary, posterior_predictive_pvalue
from pyrovi.guides import GUIDE_FAMILIES, amortized_family, register_family
from pyrovi.models._data import pick_dataset
from pyrovi.models.missing import masked_features, split_missing
from pyrovi.models.spec import ModelSpec

DATASETS = ("holzinger_swineford",)
FACTORS = ("visual", "textual", "speed")
"""Factor names of the default (three-factor) Holzinger - Swineford structure."""
INDICATORS = tuple(f"x{i}" for i in range(1, 10))
"""Indicator (test) names of the Holzinger - Swineford data, in column order."""
STRUCTURE: dict[str, list[str]] = {
    "visual": ["x1", "x2", "x3"],
    "textual": ["x4", "x5", "x6"],
    "speed": ["x7", "x8", "x9"],
}
"""The classic three-factor structure: factor -> its indicators."""
IDENTIFICATIONS = ("unit_variance", "marker")

INTERCEPT_SCALE = 10.0
LOADING_SCALE = 2.0
RESIDUAL_SCALE = 2.0
FACTOR_SD_SCALE = 2.0
LKJ_ETA = 2.0
VARIANCE_FLOOR = 1e-12
"""Residual variances below this are raised to it in the marginal likelihood, so that the
decomposition of ``Sigma`` stays finite at absurd draws (a residual sd of 1e-6 is no
restriction for tests on a unit scale)."""


# --------------------------------------------------------------------------- loadings prior
class PartlyPositive(constraints.Constraint):
    """Vectors whose entries flagged in ``positive`` are > 0 (the others are real)."""

    is_discrete = False
    event_dim = 1

    def __init__(self, positive: torch.Tensor) -> None:
        self.positive = positive.bool()
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return torch.where(self.positive, value > 0, torch.ones_like(value, dtype=torch.bool)
                           ).all(-1)


class PartlyExpTransform(Transform):
    """``y = exp(x)`` on the entries flagged in ``positive``, ``y = x`` elsewhere."""

    domain = constraints.real_vector
    bijective = True
    sign = 1

    def __init__(self, positive: torch.Tensor, cache_size: int = 0) -> None:
        self.positive = positive.bool()
        super().__init__(cache_size=cache_size)

    @property
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return PartlyPositive(self.positive)

    def with_cache(self, cache_size: int = 1) -> PartlyExpTransform:
        if self._cache_size == cache_size:
            return self
        return PartlyExpTransform(self.positive, cache_size=cache_size)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PartlyExpTransform) and torch.equal(self.positive,
                                                                     other.positive)

    def _call(self, x: torch.Tensor) -> torch.Tensor:
        safe = torch.where(self.positive, x, torch.zeros_like(x))  # no exp overflow elsewhere
        return torch.where(self.positive, safe.exp(), x)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        safe = torch.where(self.positive, y, torch.ones_like(y))
        return torch.where(self.positive, safe.log(), y)

    def log_abs_det_jacobian(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(self.positive, x, torch.zeros_like(x)).sum(-1)


@biject_to.register(PartlyPositive)
@transform_to.register(PartlyPositive)
def _partly_positive_transform(constraint: PartlyPositive) -> Transform:
    return PartlyExpTransform(constraint.positive)


class SignFixedLoadings(dist.TorchDistribution):
    """Independent ``Normal(0, scale)`` entries, folded to half-normal where ``positive``.

    The prior of the ``loadings`` site under ``"unit_variance"``: the first loading of
    each factor is positive, which picks one of the factor's two sign-symmetric modes.

    Parameters
    ----------
    scale : Tensor, shape (..., n)
        Scale of each entry.
    positive : Tensor of bool, shape (n,)
        Entries constrained positive.
    """

    arg_constraints = {"scale": constraints.positive}
    has_rsample = True

    def __init__(self, scale: torch.Tensor, positive: torch.Tensor,
                 validate_args: bool | None = None) -> None:
        self.scale = scale
        self.positive = positive.bool()
        super().__init__(scale.shape[:-1], scale.shape[-1:], validate_args=validate_args)

    @property
    def support(self) -> constraints.Constraint:  # type: ignore[override]
        return PartlyPositive(self.positive)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> SignFixedLoadings:
        shape = torch.Size(batch_shape) + self.event_shape
        return SignFixedLoadings(self.scale.expand(shape), self.positive, validate_args=False)

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.scale.dtype, device=self.scale.device)
        return torch.where(self.positive, eps.abs(), eps) * self.scale

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lp = dist.Normal(torch.zeros_like(self.scale), self.scale).log_prob(value)
        lp = lp + self.positive.to(lp.dtype) * math.log(2.0)
        lp = torch.where(self.positive & (value < 0), -math.inf, lp)
        return lp.sum(-1)


# --------------------------------------------------------------------------- structure
def pattern(structure: Mapping[str, Sequence[str]], columns: Sequence[str]) -> torch.Tensor:
    """The 0/1 loading pattern ``(P, K)`` of a factor structure.

    Parameters
    ----------
    structure : mapping of str to list of str
        Factor name -> the indicator (column) names it loads on, e.g. :data:`STRUCTURE`.
    columns : sequence of str
        The indicators in the data's column order (length ``P``).

    Returns
    -------
    Tensor, shape (P, K)
        ``pattern[p, k] = 1`` when indicator ``columns[p]`` loads on the ``k``-th factor
        of ``structure`` (in its order).

    Raises
    ------
    ValueError
        If a factor names an unknown column or has fewer than two indicators.
    """
    columns = list(columns)
    if not structure:
        raise ValueError("the factor structure is empty: give at least one factor")
    out = torch.zeros(len(columns), len(structure))
    for k, (factor, items) in enumerate(structure.items()):
        unknown = [c for c in items if c not in columns]
        if unknown:
            raise ValueError(f"factor {factor!r} names unknown indicator(s) {unknown}; "
                             f"columns are {columns}")
        if len(set(items)) < 2:
            raise ValueError(f"factor {factor!r} needs at least two indicators to be "
                             f"identified, got {list(items)}")
        for c in items:
            out[columns.index(c), k] = 1.0
    return out


@dataclass(frozen=True)
class Layout:
    """Where the ``loadings`` vector sits in ``Lambda`` (factor-major, lavaan's order).

    Attributes
    ----------
    rows, cols : Tensor of int64
        Indicator and factor of each nonzero pattern entry.
    first : Tensor of bool
        True for each factor's first indicator (sign-fixing or marker entry).
    P, K : int
        Indicators and factors.
    """

    rows: torch.Tensor
    cols: torch.Tensor
    first: torch.Tensor
    P: int
    K: int


def layout(pattern_: torch.Tensor) -> Layout:
    """The :class:`Layout` of a 0/1 pattern ``(P, K)``.

    Raises
    ------
    ValueError
        If the pattern is not a 2-D 0/1 array or a factor has fewer than two indicators.
    """
    pat = torch.as_tensor(pattern_)
    if pat.dim() != 2 or not bool(((pat == 0) | (pat == 1)).all()):
        raise ValueError("pattern must be a (P, K) array of 0/1 entries")
    P, K = pat.shape
    counts = pat.sum(0)
    if bool((counts < 2).any()):
        raise ValueError(f"every factor needs at least two indicators; pattern column counts "
                         f"{counts.long().tolist()}")
    kp = pat.T.nonzero()  # sorted by factor, then indicator
    cols, rows = kp[:, 0], kp[:, 1]
    first = torch.ones_like(cols, dtype=torch.bool)
    first[1:] = cols[1:] != cols[:-1]
    return Layout(rows, cols, first, int(P), int(K))


def _check_identification(identification: str | int | torch.Tensor) -> str:
    """The identification's name, from a name or its code (index in IDENTIFICATIONS)."""
    if isinstance(identification, torch.Tensor | np.ndarray | int) \
            and not isinstance(identification, bool):
        code = int(identification)
        if 0 <= code < len(IDENTIFICATIONS):
            return IDENTIFICATIONS[code]
    elif identification in IDENTIFICATIONS:
        return str(identification)
    raise ValueError(f"identification must be one of {IDENTIFICATIONS} (or its index), got "
                     f"{identification!r}")


def identification_code(identification: str | int | torch.Tensor) -> torch.Tensor:
    """The tensor code of an identification, as data dicts carry it (0: unit_variance,
    1: marker), so that the data hold tensors only and fits save and reload."""
    return torch.tensor(IDENTIFICATIONS.index(_check_identification(identification)))


def loading_matrix(loadings: torch.Tensor, pattern_: torch.Tensor,
                   identification: str | int | torch.Tensor = "unit_variance") -> torch.Tensor:
    """Scatter the ``loadings`` site into ``Lambda`` (..., P, K).

    Under ``"marker"`` the site holds only the non-marker loadings; the markers are 1.
    """
    lay = layout(pattern_)
    identification = _check_identification(identification)
    batch = loadings.shape[:-1]
    lam = loadings.new_zeros(batch + (lay.P, lay.K))
    if identification == "marker":
        full = loadings.new_ones(batch + (len(lay.rows),))
        full[..., ~lay.first] = loadings
    else:
        full = loadings
    lam[..., lay.rows, lay.cols] = full
    return lam


def _globals(pattern_: torch.Tensor, identification: str | int | torch.Tensor, dtype: torch.dtype
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample the global sites; return ``Lambda`` (.., P, K), ``nu`` (.., P), ``theta``
    (.., P) and the Cholesky factor of ``Phi`` (.., K, K)."""
    lay = layout(pattern_)
    identification = _check_identification(identification)
    n = len(lay.rows)
    if identification == "marker":
        loadings = pyro.sample("loadings", dist.Normal(torch.zeros(n - lay.K, dtype=dtype),
                                                       LOADING_SCALE).to_event(1))
    else:
        loadings = pyro.sample("loadings", SignFixedLoadings(
            torch.full((n,), LOADING_SCALE, dtype=dtype), lay.first))
    lam = loading_matrix(loadings, pattern_, identification)
    nu = pyro.sample("intercepts", dist.Normal(torch.zeros(lay.P, dtype=dtype),
                                               INTERCEPT_SCALE).to_event(1))
    theta = pyro.sample("residual_sd", dist.HalfNormal(
        torch.full((lay.P,), RESIDUAL_SCALE, dtype=dtype)).to_event(1))
    if lay.K > 1:
        chol = pyro.sample("factor_corr_chol",
                           dist.LKJCholesky(lay.K, torch.tensor(LKJ_ETA, dtype=dtype)))
    else:
        chol = torch.ones(1, 1, dtype=dtype)
    if identification == "marker":
        sd = pyro.sample("factor_sd", dist.HalfNormal(
            torch.full((lay.K,), FACTOR_SD_SCALE, dtype=dtype)).to_event(1))
        chol = sd.unsqueeze(-1) * chol
    return lam, nu, theta, chol


def _mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return torch.ones_like(x, dtype=torch.bool)
    mask = torch.as_tensor(mask)
    if mask.shape != x.shape:
        raise ValueError(f"mask has shape {tuple(mask.shape)}, x has {tuple(x.shape)}")
    return mask.bool()


def _check_x(x: torch.Tensor, pattern_: torch.Tensor) -> None:
    if x.dim() != 2 or x.shape[1] != pattern_.shape[0]:
        raise ValueError(f"x must be (N, P) with P = {pattern_.shape[0]} rows of the "
                         f"pattern, got shape {tuple(x.shape)}")


def model(
    x: torch.Tensor,
    pattern: torch.Tensor,
    mask: torch.Tensor | None = None,
    identification: str | int | torch.Tensor = "unit_variance",
    batch_size: int | None = None,
) -> None:
    """Person-level CFA: each person's factor scores are the latent site ``scores``.

    Parameters
    ----------
    x : Tensor, shape (N, P)
        Test scores, missing entries filled with any value (0).
    pattern : Tensor, shape (P, K)
        0/1 loading pattern (:func:`pattern`).
    mask : Tensor of bool, shape (N, P), optional
        True where ``x`` is observed (default: all).
    identification : str
        ``"unit_variance"`` (default) or ``"marker"`` (module docstring).
    batch_size : int, optional
        Minibatch size of the person plate ``data``.

    Notes
    -----
    Sites: ``loadings``, ``intercepts`` (P,), ``residual_sd`` (P,), ``factor_corr_chol``
    (K, K; absent when K = 1), ``factor_sd`` (K,; ``"marker"`` only), ``scores`` (N, K)
    in the plate ``data``; observed ``x``. Batch safe with ``max_plate_nesting=1``: under
    a particle plate the globals carry a singleton at the person dimension.
    """
    _check_x(x, pattern)
    mask = _mask(x, mask)
    lam, nu, theta, chol = _globals(pattern, identification, x.dtype)
    K = pattern.shape[1]
    with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        scores = pyro.sample("scores", dist.MultivariateNormal(
            torch.zeros(K, dtype=x.dtype), scale_tril=chol))
        mean = nu + (lam @ scores.unsqueeze(-1)).squeeze(-1)
        pyro.sample("x", dist.Normal(mean, theta).mask(mask[idx]).to_event(1),
                    obs=x[idx])


def implied_moments(lam: torch.Tensor, theta: torch.Tensor, chol: torch.Tensor
                    ) -> torch.Tensor:
    """Model-implied covariance ``Sigma = Lambda Phi Lambda^T + diag(theta^2)``."""
    lc = lam @ chol
    return lc @ lc.transpose(-1, -2) + torch.diag_embed(theta**2)


def model_marginal(
    x: torch.Tensor,
    pattern: torch.Tensor,
    mask: torch.Tensor | None = None,
    identification: str | int | torch.Tensor = "unit_variance",
    batch_size: int | None = None,
) -> None:
    """Marginal CFA: the scores integrated out, ``x_i ~ MVN(nu, Lambda Phi Lambda^T + Theta)``.

    Arguments and global sites as in :func:`model`; no ``scores`` site. Rows with missing
    entries use the exact marginal density of their observed tests (module docstring).
    """
    _check_x(x, pattern)
    mask = _mask(x, mask)
    lam, nu, theta, chol = _globals(pattern, identification, x.dtype)
    factor = lam @ chol  # Sigma = factor factor^T + diag(theta^2)
    variance = (theta**2).clamp_min(VARIANCE_FLOOR)
    with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        xb, mb = x[idx], mask[idx]
        if bool(mb.all()):
            likelihood = dist.LowRankMultivariateNormal(nu, factor, variance)
        else:  # missing tests: decoupled, zero residual, density exactly 1
            m = mb.to(x.dtype)
            likelihood = dist.LowRankMultivariateNormal(
                torch.where(mb, nu, xb), factor * m.unsqueeze(-1),
                torch.where(mb, variance, 1.0 / (2.0 * math.pi)))
        pyro.sample("x", likelihood, obs=xb)


# --------------------------------------------------------------------------- data
def to_masked(values: np.ndarray | pd.DataFrame | torch.Tensor
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Split measurements with NaN for missing into ``(x, mask)``.

    Parameters
    ----------
    values : array-like or DataFrame, shape (N, P)
        Measurements, NaN where missing.

    Returns
    -------
    x : Tensor, shape (N, P)
        The values with missing entries set to 0.
    mask : Tensor of bool, shape (N, P)
        True where observed.

    Raises
    ------
    ValueError
        If the input is not 2-D or holds infinite values.
    """
    x, mask = split_missing(values)
    return x.to(torch.get_default_dtype()), mask


def make_data(values: np.ndarray | pd.DataFrame, structure: Mapping[str, Sequence[str]],
              columns: Sequence[str] | None = None,
              identification: str | int | torch.Tensor = "unit_variance",
              batch_size: int | None = None) -> dict[str, Any]:
    """The models' data dict from a table with NaN for missing values.

    Parameters
    ----------
    values : DataFrame or array, shape (N, P)
        Indicators as columns (a DataFrame's columns are the names unless ``columns``).
    structure : mapping
        Factor -> indicator names.
    columns : sequence of str, optional
        Indicator names of ``values``' columns.
    identification : str
        ``"unit_variance"`` or ``"marker"``.
    batch_size : int, optional
        Minibatch size (pass it to :func:`pyrovi.fit` too).

    Returns
    -------
    dict
        ``x``, ``mask``, ``pattern``, ``identification`` (its tensor code,
        :func:`identification_code`) and ``batch_size`` when given.
    """
    if columns is None:
        if not isinstance(values, pd.DataFrame):
            raise ValueError("give the indicator names as columns= for a plain array")
        columns = [str(c) for c in values.columns]
    used = [c for c in columns if any(c in items for items in structure.values())]
    frame = pd.DataFrame(np.asarray(values, dtype=np.float64), columns=list(columns))[used]
    x, mask = to_masked(frame.to_numpy())
    data: dict[str, Any] = {"x": x, "mask": mask, "pattern": pattern(structure, used),
                            "identification": identification_code(identification)}
    if batch_size is not None:
        data["batch_size"] = int(batch_size)
    return data


@functools.cache
def _read_holzinger() -> pd.DataFrame:
    text = resources.files("pyrovi.data").joinpath("holzinger_swineford.csv").read_text(
        encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    frame = pd.DataFrame(rows)
    for column in frame.columns:
        if column != "school":
            frame[column] = pd.to_numeric(frame[column].replace("", np.nan))
    return frame


def holzinger_swineford() -> pd.DataFrame:
    """The bundled Holzinger - Swineford (1939) data: 301 pupils, ``id``, ``sex``,
    ``ageyr``, ``agemo``, ``school``, ``grade`` (one missing) and tests ``x1``..``x9``."""
    return _read_holzinger().copy()


def load_data(name: str | None = None, structure: Mapping[str, Sequence[str]] | None = None,
              identification: str | int | torch.Tensor = "unit_variance") -> dict[str, Any]:
    """Bundled data: Holzinger and Swineford (1939), 301 pupils, tests ``x1``..``x9``, raw.

    Parameters
    ----------
    name : str, optional
        ``"holzinger_swineford"`` (the only one).
    structure : mapping, optional
        Factor -> tests; default :data:`STRUCTURE` (visual x1-x3, textual x4-x6, speed
        x7-x9). Only the tests named in it are kept, in column order.
    identification : str
        ``"unit_variance"`` (default) or ``"marker"``.
    """
    pick_dataset(name, DATASETS, "intelligence")
    frame = _read_holzinger()
    return make_data(frame[list(INDICATORS)], structure or STRUCTURE,
                     identification=identification)


def _truth_globals(rng: np.random.Generator, P: int, K: int, per_factor: int
                   ) -> tuple[np.ndarray, ...]:
    loadings = rng.uniform(0.5, 1.1, size=P)
    intercepts = rng.uniform(2.0, 6.0, size=P)
    residual_sd = rng.uniform(0.4, 0.8, size=P)
    a = rng.standard_normal((K, K))
    cov = a @ a.T + K * np.eye(K)
    d = np.sqrt(np.diag(cov))
    corr = cov / np.outer(d, d)
    return loadings, intercepts, residual_sd, corr


def simulate(seed: int = 0, N: int = 300, K: int = 3, per_factor: int = 3,
             identification: str | int | torch.Tensor = "unit_variance", missing: float = 0.0
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate a simple-structure CFA: ``K`` factors with ``per_factor`` tests each.

    Truth (on the unit-variance scale): loadings ``Uniform(0.5, 1.1)`` (all positive),
    intercepts ``Uniform(2, 6)``, residual sds ``Uniform(0.4, 0.8)``, factor correlation
    ``C = D^-1 (A A^T + K I) D^-1`` with ``A`` standard normal ``(K, K)`` (correlations
    of about 0.1 - 0.5), scores ``MVN(0, C)``. Under ``"marker"`` the same data-generating
    process is expressed with the first loadings at 1: loadings divided by the factor's
    first loading, ``factor_sd`` its first loading, scores multiplied by it.

    Parameters
    ----------
    seed : int
    N : int
        People.
    K, per_factor : int
        Factors and tests per factor (P = K * per_factor).
    identification : str
        Parameterisation of the returned truth and data.
    missing : float
        Share of test scores deleted completely at random (then ``mask`` marks them).

    Returns
    -------
    data : dict
        ``x`` (N, P), ``mask`` (N, P), ``pattern`` (P, K), ``identification``.
    truth : dict
        ``loadings``, ``intercepts``, ``residual_sd``, ``factor_corr_chol`` (when K > 1),
        ``factor_sd`` (marker only) and ``scores`` (N, K).
    """
    identification = _check_identification(identification)
    rng = np.random.default_rng(seed)
    P = K * per_factor
    pat = np.zeros((P, K))
    for k in range(K):
        pat[k * per_factor:(k + 1) * per_factor, k] = 1.0
    loadings, intercepts, residual_sd, corr = _truth_globals(rng, P, K, per_factor)
    chol = np.linalg.cholesky(corr)
    scores = rng.standard_normal((N, K)) @ chol.T
    lam = pat * loadings[:, None]
    x = intercepts + scores @ lam.T + residual_sd * rng.standard_normal((N, P))
    mask = rng.random((N, P)) >= missing
    x = np.where(mask, x, 0.0)
    f = torch.float32
    truth: dict[str, Any] = {"intercepts": torch.tensor(intercepts, dtype=f),
                             "residual_sd": torch.tensor(residual_sd, dtype=f)}
    first = loadings[::per_factor]  # each factor's first loading (factor-major order)
    if identification == "marker":
        scaled = loadings / np.repeat(first, per_factor)
        keep = np.ones(P, dtype=bool)
        keep[::per_factor] = False
        truth["loadings"] = torch.tensor(scaled[keep], dtype=f)
        truth["factor_sd"] = torch.tensor(first, dtype=f)
        scores = scores * first
    else:
        truth["loadings"] = torch.tensor(loadings, dtype=f)
    if K > 1:
        truth["factor_corr_chol"] = torch.tensor(chol, dtype=f)
    truth["scores"] = torch.tensor(scores, dtype=f)
    data = {"x": torch.tensor(x, dtype=f), "mask": torch.as_tensor(mask),
            "pattern": torch.tensor(pat, dtype=f),
            "identification": identification_code(identification)}
    return data, truth


def simulate_marginal(seed: int = 0, **sizes: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`simulate` with the truth of the marginal model's sites (no ``scores``)."""
    data, truth = simulate(seed, **sizes)
    truth.pop("scores")
    return data, truth


def features(data: Mapping[str, Any]) -> torch.Tensor:
    """Encoder input per person: the tests with missing entries zeroed, then the mask."""
    x = torch.as_tensor(data["x"])
    return masked_features(x, _mask(x, data.get("mask")))


# --------------------------------------------------------------------------- draws
@dataclass(frozen=True)
class GlobalDraws:
    """Posterior draws of the CFA's matrices, numpy float64.

    Attributes
    ----------
    lam : (S, P, K) loadings ``Lambda``; nu : (S, P) intercepts; theta : (S, P) residual
    sds; phi : (S, K, K) factor covariance.
    """

    lam: np.ndarray
    nu: np.ndarray
    theta: np.ndarray
    phi: np.ndarray

    @property
    def sigma(self) -> np.ndarray:
        """Model-implied covariance per draw, (S, P, P)."""
        return self.lam @ self.phi @ np.swapaxes(self.lam, -1, -2) \
            + np.einsum("sp,pq->spq", self.theta**2, np.eye(self.theta.shape[-1]))


def _draws_of(fit_or_idata: Any, num_draws: int, seed: int
              ) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    if isinstance(fit_or_idata, az.InferenceData):
        post = fit_or_idata.posterior
        out = {}
        for site in ("loadings", "intercepts", "residual_sd", "factor_corr_chol", "factor_sd"):
            if site in post.data_vars:
                values = post[site].values
                out[site] = values.reshape(-1, *values.shape[2:])
        total = len(out["loadings"])
        keep = np.unique(np.linspace(0, total - 1, min(num_draws, total)).round().astype(int))
        return {k: v[keep] for k, v in out.items()}, None
    if hasattr(fit_or_idata, "sample") and hasattr(fit_or_idata, "data"):
        draws = fit_or_idata.sample(num_samples=num_draws, seed=seed)
        return {k: v.double().numpy() for k, v in draws.items()}, fit_or_idata.data
    raise ValueError("expected an SVIFit or an arviz.InferenceData of the globals")


def global_draws(fit_or_idata: Any, data: Mapping[str, Any] | None = None,
                 num_draws: int = 1000, seed: int = 0) -> tuple[GlobalDraws, dict[str, Any]]:
    """Draws of ``Lambda``, ``nu``, ``theta``, ``Phi`` from a fit of either form or draws.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` or :func:`model_marginal`, or posterior draws of their
        global sites (NUTS).
    data : dict, optional
        The data (for ``pattern`` and ``identification``); by default the fit's.
    num_draws : int
        Draws taken (an InferenceData is thinned evenly to at most this many).
    seed : int

    Returns
    -------
    (GlobalDraws, dict)
        The draws and the data used.
    """
    raw, fit_data = _draws_of(fit_or_idata, num_draws, seed)
    data = dict(data if data is not None else (fit_data or {}))
    if "pattern" not in data:
        raise ValueError("pass the data (with its pattern) to read draws of an InferenceData")
    pat = torch.as_tensor(data["pattern"], dtype=torch.float64)
    ident = _check_identification(data.get("identification", "unit_variance"))
    lay = layout(pat)
    expected = len(lay.rows) - (lay.K if ident == "marker" else 0)
    if raw["loadings"].shape[-1] != expected:
        raise ValueError(f"the draws have {raw['loadings'].shape[-1]} loadings, the pattern "
                         f"and identification {ident!r} need {expected}")
    lam = loading_matrix(torch.as_tensor(raw["loadings"], dtype=torch.float64), pat,
                         ident).numpy()
    S = lam.shape[0]
    chol = raw.get("factor_corr_chol", np.ones((S, 1, 1)))
    if ident == "marker":
        chol = raw["factor_sd"][..., None] * chol
    phi = chol @ np.swapaxes(chol, -1, -2)
    return GlobalDraws(lam, raw["intercepts"], raw["residual_sd"], phi), data


def _names(data: Mapping[str, Any], factors: Sequence[str] | None,
           indicators: Sequence[str] | None) -> tuple[list[str], list[str]]:
    P, K = torch.as_tensor(data["pattern"]).shape
    if factors is None:
        factors = FACTORS if K == len(FACTORS) else [f"f{k + 1}" for k in range(K)]
    if indicators is None:
        indicators = INDICATORS if P == len(INDICATORS) else [f"y{p + 1}" for p in range(P)]
    if len(factors) != K or len(indicators) != P:
        raise ValueError(f"need {K} factor names and {P} indicator names, got "
                         f"{len(factors)} and {len(indicators)}")
    return list(factors), list(indicators)


# --------------------------------------------------------------------------- parameter table
def parameter_table(fit_or_idata: Any, data: Mapping[str, Any] | None = None,
                    factors: Sequence[str] | None = None,
                    indicators: Sequence[str] | None = None, num_draws: int = 1000,
                    prob: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """lavaan's long parameter table from posterior draws.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of either form or draws of the globals.
    data : dict, optional
        The data (pattern, identification); by default the fit's.
    factors, indicators : sequence of str, optional
        Names; by default :data:`FACTORS` / :data:`INDICATORS` when the sizes match.
    num_draws, prob, seed
        Draws used, interval probability, seed of the variational draws.

    Returns
    -------
    pandas.DataFrame
        Columns ``lhs``, ``op``, ``rhs``, ``est`` (posterior mean), ``sd``, ``lower``,
        ``upper`` (equal-tailed ``prob`` interval) and ``std_all`` (posterior mean of the
        per-draw completely standardised value: ``lambda * sd(factor) / sd(indicator)``,
        factor correlations, residual variance / implied variance, intercept / implied sd).
        Rows: loadings (``=~``), residual variances, factor (co)variances (``~~``),
        intercepts (``~1``). Fixed parameters (unit factor variances, marker loadings) have
        ``sd`` 0.
    """
    g, data = global_draws(fit_or_idata, data, num_draws, seed)
    fac, ind = _names(data, factors, indicators)
    lay = layout(torch.as_tensor(data["pattern"]))
    sd_ind = np.sqrt(np.diagonal(g.sigma, axis1=-2, axis2=-1))  # (S, P)
    sd_fac = np.sqrt(np.diagonal(g.phi, axis1=-2, axis2=-1))  # (S, K)
    rows: list[tuple[str, str, str, np.ndarray, np.ndarray]] = []
    for p, k in zip(lay.rows.tolist(), lay.cols.tolist(), strict=True):
        value = g.lam[:, p, k]
        rows.append((fac[k], "=~", ind[p], value, value * sd_fac[:, k] / sd_ind[:, p]))
    for p in range(lay.P):
        var = g.theta[:, p] ** 2
        rows.append((ind[p], "~~", ind[p], var, var / sd_ind[:, p] ** 2))
    for k in range(lay.K):
        for j in range(k, lay.K):
            value = g.phi[:, k, j]
            rows.append((fac[k], "~~", fac[j], value, value / (sd_fac[:, k] * sd_fac[:, j])))
    for p in range(lay.P):
        rows.append((ind[p], "~1", "", g.nu[:, p], g.nu[:, p] / sd_ind[:, p]))
    values = np.stack([r[3] for r in rows], axis=1)
    summary = interval_summary(values, prob)
    return pd.DataFrame({
        "lhs": [r[0] for r in rows], "op": [r[1] for r in rows], "rhs": [r[2] for r in rows],
        "est": summary["mean"], "sd": summary["sd"], "lower": summary["lower"],
        "upper": summary["upper"], "std_all": np.stack([r[4] for r in rows], 1).mean(0),
    })


# --------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class FactorScores:
    """Posterior factor scores: a mixture over posterior draws of the globals.

    Attributes
    ----------
    mean, sd, lower, upper : ndarray, shape (N, K)
        Mixture mean, sd and equal-tailed ``prob`` interval of each person's score.
    draws : ndarray, shape (S, N, K)
        One draw of the scores per draw of the globals (the mixture's draws).
    cond_mean, cond_sd : ndarray, shape (S, N, K)
        The exact Gaussian conditional ``E[eta | x, globals]`` and its marginal sds per
        draw of the globals.
    factors : list of str
    prob : float
    """

    mean: np.ndarray
    sd: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    draws: np.ndarray
    cond_mean: np.ndarray
    cond_sd: np.ndarray
    factors: list[str]
    prob: float

    def to_frame(self) -> pd.DataFrame:
        """One row per person and factor: ``person``, ``factor``, ``mean``, ``sd``,
        ``lower``, ``upper``."""
        N, K = self.mean.shape
        return pd.DataFrame({
            "person": np.repeat(np.arange(N), K), "factor": self.factors * N,
            "mean": self.mean.ravel(), "sd": self.sd.ravel(),
            "lower": self.lower.ravel(), "upper": self.upper.ravel()})


def conditional_scores(g: GlobalDraws, x: np.ndarray, mask: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Exact ``E[eta_i | x_i]`` and ``Var[eta_i | x_i]`` given each draw of the globals.

    With ``W_i = diag(mask_i / theta^2)`` (a missing test carries no information)::

        Var = (Phi^-1 + Lambda^T W_i Lambda)^-1,    E = Var Lambda^T W_i (x_i - nu)

    Returns
    -------
    mean : ndarray (S, N, K); cov : ndarray (S, N, K, K)
    """
    m = mask.astype(np.float64)
    w = m[None] / g.theta[:, None, :] ** 2  # (S, N, P)
    lam = g.lam
    prec = np.linalg.inv(g.phi)[:, None] + np.einsum("spk,snp,spj->snkj", lam, w, lam)
    cov = np.linalg.inv(prec)
    resid = np.where(mask[None], x[None] - g.nu[:, None, :], 0.0)
    rhs = np.einsum("spk,snp->snk", lam, w * resid)
    mean = np.einsum("snkj,snj->snk", cov, rhs)
    return mean, cov


def score_draws(fit_or_idata: Any, new_data: Mapping[str, Any] | None = None,
                data: Mapping[str, Any] | None = None, factors: Sequence[str] | None = None,
                num_draws: int = 400, prob: float = 0.9, seed: int = 0) -> FactorScores:
    """Factor scores of ``new_data``'s people: the exact Gaussian conditional per draw.

    For each posterior draw of the globals the scores' posterior is Gaussian
    (:func:`conditional_scores`); the posterior of a person's scores is the mixture of
    these over the draws. One draw is taken from each component; the mean, sd and interval
    are those of the mixture's draws (:func:`pyrovi.diagnostics.interval_summary`).

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of either form, or draws of the global sites (then give ``data``).
    new_data : dict, optional
        People to score (``x``, ``mask``, same pattern); by default the fit's data.
    data : dict, optional
        The fit's data (pattern and identification) when ``fit_or_idata`` is draws.
    factors : sequence of str, optional
        Factor names.
    num_draws, prob, seed
        Draws of the globals, interval probability, seed.

    Returns
    -------
    FactorScores
    """
    if data is None and new_data is not None and "pattern" in new_data:
        data = new_data  # new people given with their structure
    g, fit_data = global_draws(fit_or_idata, data, num_draws, seed)
    target = dict(new_data if new_data is not None else fit_data)
    if "x" not in target:
        raise ValueError("no data to score: pass new_data with x (and mask)")
    x = torch.as_tensor(target["x"]).double().numpy()
    if x.ndim != 2 or x.shape[1] != g.lam.shape[1]:
        raise ValueError(f"new_data x must have shape (N, {g.lam.shape[1]}), got {x.shape}")
    mask = _mask(torch.as_tensor(x), target.get("mask")).numpy()
    fac, _ = _names(fit_data, factors, None)
    mean, cov = conditional_scores(g, x, mask)
    chol = np.linalg.cholesky(cov)
    rng = np.random.default_rng(seed)
    eps = rng.standard_normal(mean.shape)
    draws = mean + np.einsum("snkj,snj->snk", chol, eps)
    summary = interval_summary(draws, prob)
    return FactorScores(summary["mean"], summary["sd"], summary["lower"], summary["upper"],
                        draws, mean, np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1)), fac, prob)


# --------------------------------------------------------------------------- fit indices

def score(fit_or_idata: Any, new_data: Mapping[str, Any] | None = None,
          data: Mapping[str, Any] | None = None, factors: Sequence[str] | None = None,
          num_draws: int = 400, prob: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """Factor scores of people, as a table: one row per person and factor.

    The exact Gaussian conditional per posterior draw of the globals, mixed over the
    draws (:func:`score_draws`, which also returns the draws themselves).

    Parameters
    ----------
    fit_or_idata, new_data, data, factors, num_draws, prob, seed
        As for :func:`score_draws`: ``new_data`` needs only ``x`` (and ``mask``) of the
        people to score; the structure comes from the fit.

    Returns
    -------
    pandas.DataFrame
        Columns ``person``, ``factor``, ``mean``, ``sd``, ``lower``, ``upper``.
    """
    return score_draws(fit_or_idata, new_data, data, factors, num_draws, prob,
                       seed).to_frame()

def _ml_moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(0)
    centred = x - mean
    return mean, centred.T @ centred / len(x)


def lr_chisq(mu: np.ndarray, sigma: np.ndarray, xbar: np.ndarray, s: np.ndarray,
             n: int) -> np.ndarray:
    """Likelihood-ratio statistic of ``MVN(mu, sigma)`` against the saturated model.

    ``N (log|Sigma| + tr(S Sigma^-1) + (xbar - mu)^T Sigma^-1 (xbar - mu) - log|S| - P)``,
    with ``xbar``, ``S`` the data's ML mean and covariance; broadcasts over leading axes
    of ``mu`` / ``sigma`` / ``xbar`` / ``s``.
    """
    P = sigma.shape[-1]
    inv = np.linalg.inv(sigma)
    d = xbar - mu
    value = (np.linalg.slogdet(sigma)[1] + np.einsum("...ij,...ji->...", s, inv)
             + np.einsum("...i,...ij,...j->...", d, inv, d) - np.linalg.slogdet(s)[1] - P)
    return n * value


def fit_indices(fit_or_idata: Any, data: Mapping[str, Any] | None = None,
                num_draws: int = 400, prob: float = 0.9, seed: int = 0,
                pd_method: str = "dic") -> dict[str, Any]:
    """Posterior predictive and Bayesian fit indices of the CFA.

    For each posterior draw ``s`` of the globals (``mu_s = nu_s``, ``Sigma_s``):

    * ``chisq_s`` = :func:`lr_chisq` of the observed data (its ML mean and covariance
      against the saturated model), and ``chisq_rep_s`` the same for a data set of the
      same size replicated from ``MVN(mu_s, Sigma_s)`` (against *its* own saturated ML).
      ``ppp = mean(chisq_rep >= chisq_obs)``.
    * Garnier-Villarreal and Jorgensen (2020), rescaling ``devM``: the Bayesian chi-square
      ``chisq_s - pD`` on ``df = p* - pD`` degrees of freedom, ``p* = P (P + 3) / 2``
      observed moments. ``BRMSEA_s = sqrt(max(0, (chisq_s - pD - df) / (df N)))``
      ``= sqrt(max(0, (chisq_s - p*) / ((p* - pD) N)))``.
      ``BCFI_s = 1 - max(chisq_s - p*, 0) / max(chisq_s - p*, chisq_0 - p*, 0)`` with the
      null (independence) model fitted by ML (closed form: means and variances of the
      data; ``chisq_0 = N (sum log S_pp - log|S|)``, ``pD_0 = 2P`` so
      ``chisq_0 - pD_0 - df_0 = chisq_0 - p*``), the same for every draw.
    * ``pD``: with ``pd_method="dic"`` the DIC effective number of parameters,
      ``mean_s(chisq_s) - chisq(posterior means of Lambda, Phi, theta, nu)`` (deviances
      differ from chi-squares by a constant); with ``"count"`` the free parameters
      (``loadings + intercepts + residual sds + factor correlations (+ factor sds)``).

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
    data : dict, optional
        Observed data (complete); by default the fit's.
    num_draws, prob, seed
    pd_method : str
        ``"dic"`` or ``"count"``.

    Returns
    -------
    dict
        ``ppp``; ``chisq``, ``chisq_rep``, ``brmsea``, ``bcfi``: each a dict ``mean``,
        ``lower``, ``upper`` (``prob`` interval); ``pD``, ``pD_method``, ``n_free``,
        ``p_star``, ``df``, ``chisq_null``, ``N``.

    Raises
    ------
    ValueError
        If the data have missing values (the saturated ML then needs EM) or ``pd_method``
        is unknown.
    """
    if pd_method not in ("dic", "count"):
        raise ValueError(f"pd_method must be 'dic' or 'count', got {pd_method!r}")
    g, data = global_draws(fit_or_idata, data, num_draws, seed)
    x = torch.as_tensor(data["x"]).double().numpy()
    mask = _mask(torch.as_tensor(x), data.get("mask")).numpy()
    if not mask.all():
        raise ValueError("fit_indices needs complete data (missing values present)")
    N, P = x.shape
    K = g.phi.shape[-1]
    xbar, s = _ml_moments(x)
    sigma = g.sigma
    chisq = lr_chisq(g.nu, sigma, xbar, s, N)
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(sigma)
    rep = g.nu[:, None, :] + np.einsum("spq,snq->snp", chol,
                                       rng.standard_normal((len(sigma), N, P)))
    rbar = rep.mean(1)
    rc = rep - rbar[:, None, :]
    rs = np.einsum("snp,snq->spq", rc, rc) / N
    chisq_rep = lr_chisq(g.nu, sigma, rbar, rs, N)
    ident = _check_identification(data.get("identification", "unit_variance"))
    lay = layout(torch.as_tensor(data["pattern"]))
    n_free = (len(lay.rows) - (K if ident == "marker" else 0) + 2 * P + K * (K - 1) // 2
              + (K if ident == "marker" else 0))
    if pd_method == "dic":
        mean_g = GlobalDraws(g.lam.mean(0)[None], g.nu.mean(0)[None], g.theta.mean(0)[None],
                             g.phi.mean(0)[None])
        p_d = float(chisq.mean() - lr_chisq(mean_g.nu[0], mean_g.sigma[0], xbar, s, N))
    else:
        p_d = float(n_free)
    p_star = P * (P + 3) // 2
    df = p_star - p_d
    chisq_null = float(N * (np.log(np.diag(s)).sum() - np.linalg.slogdet(s)[1]))
    excess = chisq - p_star
    brmsea = np.sqrt(np.maximum(0.0, excess / (df * N)))
    denom = np.maximum(np.maximum(excess, chisq_null - p_star), 0.0)
    bcfi = 1.0 - np.maximum(excess, 0.0) / np.where(denom > 0, denom, 1.0)

    def summary(values: np.ndarray) -> dict[str, float]:
        out = interval_summary(values, prob)
        return {k: float(out[k]) for k in ("mean", "lower", "upper")}

    return {"ppp": posterior_predictive_pvalue(chisq, chisq_rep), "chisq": summary(chisq),
            "chisq_rep": summary(chisq_rep), "brmsea": summary(brmsea),
            "bcfi": summary(bcfi), "pD": p_d, "pD_method": pd_method, "n_free": n_free,
            "p_star": p_star, "df": df, "chisq_null": chisq_null, "N": N}


# --------------------------------------------------------------------------- registry
AMORTIZED = register_family(amortized_family(
    "amortized_intelligence", ("scores",), features, plate="data",
    description="intelligence: mean-field globals, encoder q(scores_i | x_i, mask_i)"))
"""Amortized guide of :func:`model`: an MLP maps each pupil's tests (and mask) to q of the
pupil's factor scores."""

_GLOBAL_ROLES = {"loadings": "global", "intercepts": "global", "residual_sd": "global",
                 "factor_corr_chol": "global"}

SPEC = ModelSpec(
    name="intelligence",
    model=model,
    guides={**GUIDE_FAMILIES, AMORTIZED.name: AMORTIZED.build},
    load_data=load_data,
    simulate=simulate,
    description="CFA of mental-ability tests (Holzinger-Swineford), factor scores as latents",
    datasets=DATASETS,
    site_roles={**_GLOBAL_ROLES, "scores": "local"},
)

SPEC_MARGINAL = ModelSpec(
    name="intelligence_marginal",
    model=model_marginal,
    guides=dict(GUIDE_FAMILIES),
    load_data=load_data,
    simulate=simulate_marginal,
    description="CFA of mental-ability tests (Holzinger-Swineford), scores integrated out",
    datasets=DATASETS,
    site_roles=dict(_GLOBAL_ROLES),
)
