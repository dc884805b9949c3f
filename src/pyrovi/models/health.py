"""Latent health behind measurements of mixed types: a generalized linear factor model.

Each person ``i`` has ``K`` latent health factors ``z_i ~ Normal(0, I_K)`` (the site
``health``, shape ``(N, K)``). Measurement ``j`` of person ``i`` depends on them through a
linear predictor::

    eta_ij = nu_j + sum_k lambda_jk z_ik

and a link that depends on the measurement's type:

==========  =====================================================  ==========================
type        likelihood                                             parameters beyond lambda
==========  =====================================================  ==========================
normal      ``y ~ Normal(eta, sigma_j)``                           ``nu_j``, ``sigma_j``
count       ``y ~ NegBinomial(mean exp(eta), Var = mu + a_j mu²)``  ``nu_j``, ``a_j``
binary      ``y ~ Bernoulli(logit⁻¹(eta))``                        ``nu_j``
ordinal     ``P(y <= c) = logit⁻¹(tau_jc - eta)`` (0 .. C_j - 1)   ``tau_j0 < ... < tau_j,C-2``
==========  =====================================================  ==========================

The ordinal likelihood is the proportional-odds (ordered logistic) model: ``y`` is the
number of cutpoints ``tau`` that a latent response ``eta + Logistic(0, 1)`` exceeds. An
ordinal measurement has no intercept: a common shift of its cutpoints is one.

Counts are negative binomial: ``a_j`` (``count_overdispersion``) is the squared
coefficient of variation of a Gamma frailty, ``a_j = 0`` is Poisson. Visits to a doctor
are overdispersed even given health (RAND: ``a`` ≈ 1 for ``mdvis``), so a Poisson model
would make the factor chase the heavy tail.

**Identification.** ``z ~ Normal(0, I)`` fixes the location and scale of each factor, so
intercepts and loadings are on the scale of one sd of health. What is left is the sign
(``z -> -z``, ``lambda -> -lambda`` leaves the likelihood unchanged) and, for ``K > 1``,
any rotation ``z -> R z``. The loadings matrix is lower triangular (measurement ``k``
loads on factors ``0 .. k`` only), which removes the rotations, and every output reports
draws in the orientation where the diagonal is positive: measurement ``k``'s loading on
factor ``k`` is positive. With ``K = 1``: "the first column loads positively".

The sign is fixed *after* sampling (:func:`canonical_signs`, also the spec's aligner),
not by a positive prior: the model itself is symmetric, with a ``Normal(0, 2)`` prior on
the diagonal, so its posterior has two mirror-image modes of equal mass and every output
folds them onto the positive one (identification by post-processing, as for the labels of
a mixture). A positivity constraint gives the same folded posterior but a trap for
optimisers: a fit that starts with the other columns loading the "wrong" way cannot cross
the boundary at zero and stops with the anchor's loading at about 0 (seen with the
amortized guide on simulated data: anchor loading 0.01 against a truth of 0.9). The
column order chooses the factor's direction: the bundled RAND data put self-rated health
(0 = poor ... 3 = excellent) first, so ``health`` is *good* health and visits, chronic
diseases and physical limitation load negatively. The sites are ``loading_diag``
(``K``, either sign in the raw draws) and ``loading_lower`` (the ``P K - K (K + 1) / 2``
free entries below the diagonal, row by row); :func:`loading_matrix` assembles the
``(P, K)`` matrix.

**Priors** (a unit-scale latent, data on their natural scales; normal columns are
standardised by :func:`make_data`): ``loading_diag ~ Normal(0, 2)``, ``loading_lower ~
Normal(0, 2)``, ``intercept ~ Normal(0, 5)`` (normal, count and binary columns, in this
order of columns), ``residual_sd ~ HalfNormal(2)``, ``count_overdispersion ~
Exponential(1)``, ``cutpoints`` = ``C_max - 1`` sorted ``Normal(0, 4)`` draws per ordinal
column (:class:`pyrovi.models.gmm.SortedNormal`). An ordinal column with fewer categories
than ``C_max`` uses its first ``C_j - 1`` cutpoints; the rest do not enter the likelihood
(they follow their prior and :func:`parameter_table` omits them).

**Missing values.** The data are one ``(N, P)`` matrix ``y`` with missing entries filled
with 0 and a boolean ``mask`` (True: observed). Each likelihood term is multiplied by its
mask (``Distribution.mask``), so a missing value contributes nothing and is not imputed.
:func:`nan_to_mask` and :func:`make_data` build both from a table with NaN.

**Minibatches.** The person plate ``data`` is subsampled with ``batch_size``; with the
amortized guide (``guide="amortized_health"``, an encoder from a person's answers to
q(health_i)) the full RAND data fit in minutes on two cores.

**Outputs.** :func:`score` gives each person's health (posterior mean, sd and 90%
interval) from the encoder of an amortized fit, or else by quadrature over health given
each posterior draw of the global parameters (exact up to the grid). :func:`parameter_table`
is the lavaan-style table (``=~`` loadings, ``~1`` intercepts, ``~~`` residual variances,
``|`` thresholds) with standardised loadings, and :func:`fit_indices` the posterior
predictive p-value of the marginal deviance.

The bundled data set ``randhie`` is the RAND Health Insurance Experiment extract of
Cameron and Trivedi (2005) that statsmodels ships (see ``pyrovi/data/README.md`` and
:func:`load_data` for how the columns were coded).
"""

from __future__ import annotations

import functools
import gzip
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from io import StringIO
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints

from pyrovi.diagnostics.predictive import (
    INTERVAL_PROB,
    interval_summary,
    posterior_predictive_pvalue,
)
from pyrovi.guides import GUIDE_FAMILIES, amortized_family, register_family
from pyrovi.infer.result import SVIFit
from pyrovi.models._data import pick_dataset
from pyrovi.models.gmm import SortedNormal
from pyrovi.models.missing import masked_features, split_missing
from pyrovi.models.spec import ModelSpec

TYPES = ("normal", "count", "binary", "ordinal")
"""Measurement types; ``types`` in the data holds their index in this tuple."""
NORMAL, COUNT, BINARY, ORDINAL = range(4)

DATASETS = ("randhie_1000", "randhie")
SAMPLE_SIZE = 1000
"""People in ``randhie_1000``, the default: a fixed random sample (seed 0) of the rows."""
RANDHIE_COLUMNS = ("hlth", "mdvis", "disea", "physlm")
"""Columns of the bundled RAND data in model order (the first fixes the factor's sign)."""
RANDHIE_TYPES = ("ordinal", "count", "count", "binary")

LOADING_SCALE = 2.0
INTERCEPT_SCALE = 5.0
RESIDUAL_SD_SCALE = 2.0
OVERDISPERSION_RATE = 1.0
CUTPOINT_SCALE = 4.0

GRID_HALF_WIDTH = 6.0
GRID_POINTS = {1: 121, 2: 49}
"""Quadrature grid over each factor (uniform on ``[-6, 6]``) for :func:`score` and
:func:`fit_indices`; the prior mass outside is below 1e-8."""

_BIG = 1e4  # a cutpoint that never binds: logistic(eta - _BIG) is exactly 0
_LOGISTIC_VARIANCE = math.pi**2 / 3


# --------------------------------------------------------------------------- likelihood


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(x))`` for ``x <= 0``, stable at both ends (Mächler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)),
                       torch.log1p(-torch.exp(x)))


class OrderedLogit(dist.TorchDistribution):
    """Ordered logistic distribution on ``0 .. C - 1`` with cutpoints padded by ``+inf``.

    ``P(y <= c) = sigmoid(cutpoints[c] - predictor)``; a cutpoint of ``+inf`` (or any
    value ``>= 1e4``) closes the scale, so columns with different numbers of categories
    share one ``(..., C_max - 1)`` cutpoint tensor.

    Parameters
    ----------
    predictor : Tensor
        Linear predictor, batch shape.
    cutpoints : Tensor
        Shape ``batch_shape + (C_max - 1,)``, increasing along the last axis.
    """

    arg_constraints = {"predictor": constraints.real}
    support = constraints.nonnegative_integer
    has_enumerate_support = False

    def __init__(self, predictor: torch.Tensor, cutpoints: torch.Tensor,
                 validate_args: bool | None = None) -> None:
        batch_shape = torch.broadcast_shapes(predictor.shape, cutpoints.shape[:-1])
        self.predictor = predictor.expand(batch_shape)
        self.cutpoints = cutpoints.expand(batch_shape + cutpoints.shape[-1:])
        super().__init__(batch_shape, torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> OrderedLogit:
        batch_shape = torch.Size(batch_shape)
        return OrderedLogit(self.predictor.expand(batch_shape),
                            self.cutpoints.expand(batch_shape + self.cutpoints.shape[-1:]),
                            validate_args=False)

    def _extended_cutpoints(self) -> torch.Tensor:
        c = self.cutpoints.clamp(max=_BIG)
        lo = torch.full_like(c[..., :1], -_BIG)
        hi = torch.full_like(c[..., :1], _BIG)
        return torch.cat([lo, c, hi], -1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        # P(y = k) = sigmoid(eta - c[k-1]) - sigmoid(eta - c[k])
        #          = sigmoid(a) sigmoid(-b) (1 - exp(b - a)),  a = eta - c[k-1], b = eta - c[k]
        k = value.long()
        shape = torch.broadcast_shapes(k.shape, self.batch_shape)
        ext = self._extended_cutpoints().expand(shape + (self.cutpoints.shape[-1] + 2,))
        k = k.expand(shape).clamp(0, self.cutpoints.shape[-1]).unsqueeze(-1)
        lower = ext.gather(-1, k).squeeze(-1)
        upper = ext.gather(-1, k + 1).squeeze(-1)
        eta = self.predictor.expand(shape)
        a, b = eta - lower, eta - upper
        return (torch.nn.functional.logsigmoid(a) + torch.nn.functional.logsigmoid(-b)
                + _log1mexp((b - a).clamp(max=0.0)))

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            latent = self.predictor.expand(shape) + dist.Logistic(
                torch.zeros((), dtype=self.predictor.dtype), 1.0).sample(shape)
            return (latent.unsqueeze(-1) > self.cutpoints.expand(
                shape + self.cutpoints.shape[-1:])).sum(-1).to(self.predictor.dtype)


@functools.cache
def _loading_index(P: int, K: int) -> torch.Tensor:
    """Where each entry of the (P, K) loadings comes from in ``[0, diag..., lower...]``."""
    index = torch.zeros(P * K, dtype=torch.long)
    position = 1 + K
    for j in range(P):
        for k in range(min(j + 1, K)):
            if j == k:
                index[j * K + k] = 1 + k
            else:
                index[j * K + k] = position
                position += 1
    return index


def num_lower(P: int, K: int) -> int:
    """Number of free loadings below the diagonal: ``P K - K (K + 1) / 2``."""
    return P * K - K * (K + 1) // 2


def loading_matrix(diag: torch.Tensor, lower: torch.Tensor, P: int, K: int) -> torch.Tensor:
    """The ``(..., P, K)`` loadings from the sites ``loading_diag`` and ``loading_lower``.

    Entry ``(j, k)`` is ``diag[k]`` for ``j == k``, zero above the diagonal, and the next
    entry of ``lower`` below it (row by row: ``(1, 0), (2, 0), (2, 1), ...``).
    """
    batch = torch.broadcast_shapes(diag.shape[:-1], lower.shape[:-1])
    values = torch.cat([torch.zeros(batch + (1,), dtype=diag.dtype, device=diag.device),
                        diag.expand(batch + diag.shape[-1:]),
                        lower.expand(batch + lower.shape[-1:])], -1)
    return values[..., _loading_index(P, K).to(diag.device)].reshape(batch + (P, K))


class _Layout:
    """Column indices of each type and the sizes the sites need, from ``types``."""

    def __init__(self, types: torch.Tensor, num_categories: torch.Tensor, K: int) -> None:
        types = torch.as_tensor(types).long().cpu()
        self.P = int(types.numel())
        self.K = int(K)
        self.cols = {code: torch.nonzero(types == code).flatten() for code in range(4)}
        self.non_ordinal = torch.nonzero(types != ORDINAL).flatten()
        ncat = torch.as_tensor(num_categories).long().cpu()
        self.ncat = ncat[self.cols[ORDINAL]]
        self.cmax = int(self.ncat.max()) if self.ncat.numel() else 0

    def has(self, code: int) -> bool:
        return self.cols[code].numel() > 0


def _check_model_args(y: torch.Tensor, mask: torch.Tensor, types: torch.Tensor,
                      num_categories: torch.Tensor, K: int) -> None:
    if y.dim() != 2:
        raise ValueError(f"y must be a matrix (people x measurements), got shape {tuple(y.shape)}")
    if tuple(mask.shape) != tuple(y.shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, y has {tuple(y.shape)}")
    P = y.shape[1]
    if types.numel() != P or num_categories.numel() != P:
        raise ValueError(f"types and num_categories need one entry per column of y ({P})")
    if not 1 <= int(K) <= P:
        raise ValueError(f"K = {K} factors need 1 <= K <= {P} (the number of measurements)")


def _globals(layout: _Layout, dtype: torch.dtype, device: torch.device) -> dict[str, Any]:
    """Sample the global sites; return the parameters the likelihood needs."""
    P, K = layout.P, layout.K

    def zeros(n: int) -> torch.Tensor:
        return torch.zeros(n, dtype=dtype, device=device)

    diag = pyro.sample("loading_diag", dist.Normal(zeros(K), LOADING_SCALE).to_event(1))
    params: dict[str, Any] = {"loading_diag": diag}
    if num_lower(P, K):
        params["loading_lower"] = pyro.sample(
            "loading_lower", dist.Normal(zeros(num_lower(P, K)), LOADING_SCALE).to_event(1))
    if layout.non_ordinal.numel():
        params["intercept"] = pyro.sample(
            "intercept",
            dist.Normal(zeros(layout.non_ordinal.numel()), INTERCEPT_SCALE).to_event(1))
    if layout.has(NORMAL):
        params["residual_sd"] = pyro.sample(
            "residual_sd",
            dist.HalfNormal(zeros(layout.cols[NORMAL].numel()) + RESIDUAL_SD_SCALE).to_event(1))
    if layout.has(COUNT):
        params["count_overdispersion"] = pyro.sample(
            "count_overdispersion",
            dist.Exponential(zeros(layout.cols[COUNT].numel()) + OVERDISPERSION_RATE
                             ).to_event(1))
    if layout.has(ORDINAL):
        params["cutpoints"] = pyro.sample(
            "cutpoints",
            SortedNormal(zeros(layout.cols[ORDINAL].numel()), CUTPOINT_SCALE, layout.cmax - 1
                         ).to_event(1))
    return params


def _structure(params: Mapping[str, torch.Tensor], layout: _Layout) -> dict[str, torch.Tensor]:
    """Loadings ``(..., P, K)`` and intercepts ``(..., P)`` (zero for ordinal columns) from
    the sites; batch dimensions of the sites are kept."""
    P, K = layout.P, layout.K
    diag = params["loading_diag"]
    lower = params.get("loading_lower", diag[..., :0])
    lam = loading_matrix(diag, lower, P, K)
    nu = torch.zeros(lam.shape[:-1], dtype=lam.dtype, device=lam.device)
    if "intercept" in params:
        intercept = params["intercept"]
        nu = nu.expand(torch.broadcast_shapes(nu.shape[:-1], intercept.shape[:-1]) + (P,))
        nu = nu.index_copy(-1, layout.non_ordinal.to(nu.device),
                           intercept.expand(nu.shape[:-1] + intercept.shape[-1:]))
    return {"loadings": lam, "intercepts": nu}


def _likelihoods(eta: torch.Tensor, params: Mapping[str, torch.Tensor], layout: _Layout
                 ) -> list[tuple[int, torch.Tensor, dist.Distribution]]:
    """``(type code, columns, distribution)`` per type present, batch shape ``eta[..., cols]``.

    Global parameters carry one more dimension than a person's (the person plate) on the
    left of their own; ``eta`` has shape ``(..., N, P)``.
    """
    out = []
    for code in range(4):
        if not layout.has(code):
            continue
        cols = layout.cols[code].to(eta.device)
        e = eta.index_select(-1, cols)
        if code == NORMAL:
            d: dist.Distribution = dist.Normal(e, params["residual_sd"])
        elif code == COUNT:
            od = params["count_overdispersion"].clamp(min=1e-8)
            d = dist.NegativeBinomial(total_count=1.0 / od, logits=e + od.log())
        elif code == BINARY:
            d = dist.Bernoulli(logits=e)
        else:
            positions = torch.arange(layout.cmax - 1, device=eta.device)
            used = positions < (layout.ncat.to(eta.device)[:, None] - 1)
            cut = torch.where(used, params["cutpoints"], torch.full_like(
                params["cutpoints"], _BIG))
            d = OrderedLogit(e, cut)
        out.append((code, cols, d))
    return out


def model(
    y: torch.Tensor,
    mask: torch.Tensor,
    types: torch.Tensor,
    num_categories: torch.Tensor,
    K: int = 1,
    batch_size: int | None = None,
) -> None:
    """Generalized linear factor model over measurements of mixed types.

    Parameters
    ----------
    y : Tensor, shape (N, P)
        Measurements, missing entries filled (with 0); ordinal ones coded ``0 .. C_j - 1``.
    mask : Tensor of bool, shape (N, P)
        True where ``y`` is observed.
    types : Tensor of int, shape (P,)
        Type of each column, an index into :data:`TYPES` (0 normal, 1 count, 2 binary,
        3 ordinal).
    num_categories : Tensor of int, shape (P,)
        Categories of each ordinal column (>= 2); 0 for the other types.
    K : int, default 1
        Number of latent health factors (``1 <= K <= P``).
    batch_size : int, optional
        Subsample the person plate ``data`` to this many people per step.

    Notes
    -----
    Latent sites: ``loading_diag`` (K,), ``loading_lower`` (P K - K (K + 1) / 2,),
    ``intercept`` (non-ordinal columns), ``residual_sd`` (normal columns),
    ``count_overdispersion`` (count columns), ``cutpoints`` (ordinal columns, C_max - 1),
    each present when its columns are, and ``health`` (N, K) in the plate ``data``.
    Observed sites ``y_normal``, ``y_count``, ``y_binary``, ``y_ordinal``. Batch safe for
    vectorised particles with ``max_plate_nesting=1``.
    """
    _check_model_args(y, mask, types, num_categories, K)
    layout = _Layout(types, num_categories, K)
    params = _globals(layout, y.dtype, y.device)
    structure = _structure(params, layout)
    # global sites have batch shape () or, under vectorised particles, (S, 1): the 1 is
    # the person plate's slot, so they broadcast against (..., B) person values as is
    lam, nu = structure["loadings"], structure["intercepts"]   # (..., P, K), (..., P)
    with pyro.plate("data", y.shape[0], subsample_size=batch_size) as idx:
        z = pyro.sample("health", dist.Normal(torch.zeros(K, dtype=y.dtype, device=y.device),
                                              1.0).to_event(1))
        eta = nu + (z.unsqueeze(-2) * lam).sum(-1)           # (..., B, P)
        y_b, mask_b = y[idx], mask[idx]
        for code, cols, d in _likelihoods(eta, params, layout):
            pyro.sample(f"y_{TYPES[code]}", d.mask(mask_b[:, cols]).to_event(1),
                        obs=y_b[:, cols])


# ------------------------------------------------------------------------------ guides


def features(data: Mapping[str, Any]) -> torch.Tensor:
    """The amortized encoder's input per person: transformed answers (0 where missing)
    and the mask, shape ``(N, 2 P)``.

    Counts enter as ``log1p(y)``, ordinal answers as ``y / (C_j - 1)``, normal and binary
    ones as they are (the guide standardises each feature).
    """
    y = torch.as_tensor(data["y"])
    if not y.is_floating_point():
        y = y.to(torch.get_default_dtype())
    mask = torch.as_tensor(data["mask"]).to(y.dtype)
    types = torch.as_tensor(data["types"]).to(y.device)
    ncat = torch.as_tensor(data["num_categories"]).to(device=y.device, dtype=y.dtype)
    x = torch.where(types == COUNT, torch.log1p(y.clamp(min=0.0)), y)
    x = torch.where(types == ORDINAL, y / (ncat - 1.0).clamp(min=1.0), x)
    return masked_features(x, mask)


AMORTIZED_FAMILY = register_family(amortized_family(
    "amortized_health", ("health",), features, plate="data",
    description="health: mean-field globals, q(health_i | answers_i) from an MLP encoder"))
"""The amortized guide of :func:`model`: an encoder from a person's answers and mask to
q(health_i); the globals are mean-field. Use with ``batch_size`` for large N."""


# -------------------------------------------------------------------------------- data


def nan_to_mask(values: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a table with NaN into filled values and a mask.

    Parameters
    ----------
    values : array-like or pandas.DataFrame, shape (N, P)
        Measurements with NaN (or None) where missing.

    Returns
    -------
    y : Tensor of float64, shape (N, P)
        The values with missing entries set to 0.
    mask : Tensor of bool, shape (N, P)
        True where observed.
    """
    if isinstance(values, pd.DataFrame):
        values = values.to_numpy(dtype=float, na_value=np.nan)
    array = np.asarray(values, dtype=float)
    return split_missing(array[:, None] if array.ndim == 1 else array)


def make_data(
    values: Any,
    types: Sequence[str],
    columns: Sequence[str] | None = None,
    num_categories: Mapping[str, int] | None = None,
    K: int = 1,
    standardize: bool = True,
) -> dict[str, Any]:
    """The model's data dict from a table of measurements with NaN where missing.

    Parameters
    ----------
    values : array-like or pandas.DataFrame, shape (N, P)
        One row per person, one column per measurement.
    types : sequence of str
        Each column's type: ``"normal"``, ``"count"``, ``"binary"`` or ``"ordinal"``.
    columns : sequence of str, optional
        Column names (default: the DataFrame's, or ``m0``, ``m1``, ...).
    num_categories : mapping, optional
        Categories of ordinal columns by name; default ``max + 1`` of the observed codes
        (codes must then include 0).
    K : int, default 1
        Number of factors. The first ``K`` columns anchor them (module docstring).
    standardize : bool, default True
        Centre and scale normal columns to mean 0 and sd 1 (the priors' scale).

    Returns
    -------
    dict
        ``y``, ``mask``, ``types``, ``num_categories``, ``K`` (all tensors or ints: the
        names stay with the caller; :func:`parameter_table` takes them as ``names``).

    Raises
    ------
    ValueError
        On an unknown type, a column with no observed value, counts that are not
        non-negative integers, binary values other than 0/1, ordinal codes that are not
        integers in ``0 .. C - 1``, or ``K`` outside ``1 .. P``.
    """
    if columns is None:
        columns = (list(map(str, values.columns)) if isinstance(values, pd.DataFrame)
                   else [f"m{j}" for j in range(np.shape(values)[-1])])
    y, mask = nan_to_mask(values)
    N, P = y.shape
    if len(types) != P or len(columns) != P:
        raise ValueError(f"{P} columns of measurements but {len(types)} types and "
                         f"{len(columns)} names")
    if not 1 <= K <= P:
        raise ValueError(f"K = {K} factors need 1 <= K <= {P} (the number of measurements)")
    num_categories = dict(num_categories or {})
    unknown = set(num_categories) - {c for c, t in zip(columns, types, strict=True)
                                     if t == "ordinal"}
    if unknown:
        raise ValueError(f"num_categories names {sorted(unknown)}, which are not ordinal columns")
    codes, ncat = [], []
    for j, (name, kind) in enumerate(zip(columns, types, strict=True)):
        if kind not in TYPES:
            raise ValueError(f"unknown measurement type {kind!r} for column {name!r}; choose "
                             f"one of {', '.join(TYPES)}")
        observed = y[mask[:, j], j]
        if observed.numel() == 0:
            raise ValueError(f"column {name!r} has no observed value")
        whole = bool(torch.all(observed == observed.round()))
        categories = 0
        if kind == "normal" and standardize:
            sd = float(observed.std()) if observed.numel() > 1 else 0.0
            if not sd > 0:
                raise ValueError(f"normal column {name!r} is constant: it cannot be standardised")
            y[:, j] = torch.where(mask[:, j], (y[:, j] - observed.mean()) / sd, 0.0)
        elif kind == "count" and not (whole and observed.min() >= 0):
            bad = observed[(observed != observed.round()) | (observed < 0)][0]
            raise ValueError(f"count column {name!r} holds {float(bad):g}: counts must be "
                             "non-negative integers")
        elif kind == "binary" and not bool(torch.all((observed == 0) | (observed == 1))):
            raise ValueError(f"binary column {name!r} holds values other than 0 and 1")
        elif kind == "ordinal":
            if not (whole and observed.min() >= 0):
                raise ValueError(f"ordinal column {name!r} must hold integer codes 0 .. C-1")
            categories = int(num_categories.get(name, int(observed.max()) + 1))
            if name not in num_categories and int(observed.min()) > 0:
                raise ValueError(f"ordinal column {name!r} has no category 0: code the "
                                 "categories 0 .. C-1 or pass num_categories")
            if categories < 2 or int(observed.max()) >= categories:
                raise ValueError(f"ordinal column {name!r} needs codes in 0 .. {categories - 1} "
                                 "and at least 2 categories")
        codes.append(TYPES.index(kind))
        ncat.append(categories)
    return {"y": y, "mask": mask, "types": torch.tensor(codes),
            "num_categories": torch.tensor(ncat), "K": int(K)}


def from_csv(
    path: str | Path,
    columns: Mapping[str, str],
    K: int = 1,
    num_categories: Mapping[str, int] | None = None,
    standardize: bool = True,
) -> dict[str, Any]:
    """Read a user's table into the model's data dict.

    Parameters
    ----------
    path : str or path
        A CSV file (gzip-compressed if it ends in ``.gz``) with a header line; empty cells
        and ``NA`` are missing.
    columns : mapping of str to str
        Column name -> type (``"normal"``, ``"count"``, ``"binary"``, ``"ordinal"``), in
        model order: the first column fixes the sign of the first factor.
    K, num_categories, standardize
        As for :func:`make_data`.

    Returns
    -------
    dict
        Data for :func:`model` (see :func:`make_data`).

    Raises
    ------
    ValueError
        On a missing column, non-numeric values, or any error of :func:`make_data`.
    """
    if not columns:
        raise ValueError("columns must name at least one measurement and its type")
    frame = pd.read_csv(path)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"column(s) {missing} not in {path}; it has {list(frame.columns)}")
    table = frame[list(columns)]
    for name in columns:
        numeric = pd.to_numeric(table[name], errors="coerce")
        bad = numeric.isna() & table[name].notna()
        if bad.any():
            raise ValueError(f"column {name!r} holds non-numeric values, e.g. "
                             f"{table[name][bad].iloc[0]!r}")
    table = table.apply(pd.to_numeric, errors="coerce")
    return make_data(table, list(columns.values()), list(columns), num_categories, K,
                     standardize)


@functools.cache
def _randhie_raw() -> pd.DataFrame:
    raw = resources.files("pyrovi.data").joinpath("randhie.csv.gz").read_bytes()
    return pd.read_csv(StringIO(gzip.decompress(raw).decode("utf-8")))


def _disease_count(disea: np.ndarray) -> np.ndarray:
    """Chronic conditions from the RAND disease index; NaN for imputed values.

    The index is ``100 * conditions / asked`` to one decimal with 29 or 23 conditions
    asked, so it lies on one of two grids; the four values on neither are imputations.
    """
    out = np.full(disea.shape, np.nan)
    for asked in (29, 23):
        count = np.round(disea * asked / 100.0)
        on_grid = np.isclose(np.round(count * 100.0 / asked, 1), disea, atol=1e-6)
        out = np.where(np.isnan(out) & on_grid, count, out)
    return out


def randhie_frame() -> pd.DataFrame:
    """The bundled RAND HIE measurements as coded for the model (NaN where missing).

    ``hlth``: self-rated health 0 poor, 1 fair, 2 good, 3 excellent (from the dummies
    ``hlthp``, ``hlthf``, ``hlthg``; none set: excellent). ``mdvis``: outpatient visits
    to a doctor. ``disea``: number of chronic conditions, recovered from the disease index
    (:func:`_disease_count`); the index's imputed values (9.967326, 10.57626, 11.84267,
    13.73189, 8,001 rows) are missing. ``physlm``: physical limitation, fractional
    (imputed) values missing (1,052 rows).
    """
    raw = _randhie_raw()
    hlth = 3 - raw["hlthg"] - 2 * raw["hlthf"] - 3 * raw["hlthp"]
    physlm = raw["physlm"].where(raw["physlm"].isin([0.0, 1.0]))
    return pd.DataFrame({"hlth": hlth.astype(float), "mdvis": raw["mdvis"].astype(float),
                         "disea": _disease_count(raw["disea"].to_numpy(float)),
                         "physlm": physlm.astype(float)})


def load_data(name: str | None = None) -> dict[str, Any]:
    """Bundled data: the RAND Health Insurance Experiment extract (Cameron and Trivedi
    2005, as shipped by statsmodels, public domain).

    ``randhie`` holds all 20,190 rows (fit it with ``guide="amortized_health"`` and
    ``batch_size``); ``randhie_1000`` (the default) a fixed random sample of 1,000 rows
    (``numpy.random.default_rng(0).choice(20190, 1000, replace=False)``, sorted), small
    enough for NUTS and per-person guides.

    Columns, in model order: ``hlth`` (ordinal, 4 categories, first: ``health`` is good
    health), ``mdvis`` (count), ``disea`` (count, 40% missing), ``physlm`` (binary);
    see :func:`randhie_frame` for the coding.
    """
    chosen = pick_dataset(name, DATASETS, "health")
    frame = randhie_frame()
    if chosen == "randhie_1000":
        rows = np.sort(np.random.default_rng(0).choice(len(frame), SAMPLE_SIZE, replace=False))
        frame = frame.iloc[rows].reset_index(drop=True)
    data = make_data(frame, RANDHIE_TYPES, list(RANDHIE_COLUMNS), {"hlth": 4})
    data["y"] = data["y"].float()
    return data


def subset(data: Mapping[str, Any], people: Any) -> dict[str, Any]:
    """The data of some people only (``people``: indices or a boolean mask over rows)."""
    index = torch.as_tensor(np.asarray(people))
    out = {k: v for k, v in data.items() if k != "batch_size"}
    out["y"], out["mask"] = data["y"][index], data["mask"][index]
    return out


# ----------------------------------------------------------------------------- simulate

SIM_COLUMNS = ("grip", "walk", "visits", "meds", "limited", "sleep_problem", "srh", "mood")
SIM_TYPES = ("normal", "normal", "count", "count", "binary", "binary", "ordinal", "ordinal")
SIM_CATEGORIES = (0, 0, 0, 0, 0, 0, 4, 5)
SIM_LOADINGS = np.array([[0.9, 0.0], [0.6, 0.7], [-0.5, 0.4], [-0.3, 0.6], [-1.5, 0.3],
                         [-1.0, -0.8], [2.0, 0.5], [1.2, 1.5]])
"""True loadings of the simulation (``K = 1`` uses the first column)."""
SIM_INTERCEPTS = np.array([0.0, 0.3, 1.0, 0.0, -1.0, 0.5])
SIM_RESIDUAL_SD = np.array([0.5, 0.8])
SIM_OVERDISPERSION = np.array([0.5, 0.1])
SIM_CUTPOINTS = np.array([[-2.0, 0.0, 2.0, 4.0], [-2.5, -1.0, 0.5, 2.0]])
"""Cutpoints of ``srh`` (4 categories: the last entry is unused, prior only) and ``mood``."""
SIM_MISSING = 0.1


def simulate(seed: int = 0, N: int = 500, K: int = 1, missing: float = SIM_MISSING
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate ``N`` people answering 8 measurements of all four types.

    The truth is fixed (module constants ``SIM_*``): two normal columns (``grip``,
    ``walk``: intercepts 0 and 0.3, residual sds 0.5 and 0.8), two negative-binomial counts
    (``visits``, ``meds``: log-mean intercepts 1 and 0, overdispersion 0.5 and 0.1), two
    binary (``limited``, ``sleep_problem``: logit intercepts -1 and 0.5) and two ordinal
    (``srh``, 4 categories, cutpoints -2, 0, 2; ``mood``, 5 categories, cutpoints -2.5, -1,
    0.5, 2), with the loadings :data:`SIM_LOADINGS` (first ``K`` columns; lower triangular
    for ``K = 2``). ``health ~ Normal(0, I)`` is drawn, then each answer from its
    likelihood, and a fraction ``missing`` of the answers is deleted completely at random.
    Values are drawn with numpy, independently of the model's code.

    Returns
    -------
    data : dict
        Data for :func:`model` (normal columns not re-standardised: their truth holds).
    truth : dict
        The latent sites: ``health`` (N, K), ``loading_diag``, ``loading_lower``,
        ``intercept``, ``residual_sd``, ``count_overdispersion``, ``cutpoints``.
    """
    if K not in (1, 2):
        raise ValueError(f"simulate has a true structure for K = 1 or 2, not {K}")
    rng = np.random.default_rng(seed)
    lam = SIM_LOADINGS[:, :K].copy()
    if K == 2:
        lam[0, 1] = 0.0
    z = rng.standard_normal((N, K))
    types = [TYPES.index(t) for t in SIM_TYPES]
    non_ordinal = [j for j, t in enumerate(types) if t != ORDINAL]
    nu = np.zeros(len(types))
    nu[non_ordinal] = SIM_INTERCEPTS
    eta = nu + z @ lam.T
    y = np.zeros_like(eta)
    normal, count, binary, ordinal = ([j for j, t in enumerate(types) if t == code]
                                      for code in range(4))
    y[:, normal] = eta[:, normal] + SIM_RESIDUAL_SD * rng.standard_normal((N, len(normal)))
    mu = np.exp(eta[:, count])
    frailty = rng.gamma(1.0 / SIM_OVERDISPERSION, SIM_OVERDISPERSION, size=mu.shape)
    y[:, count] = rng.poisson(mu * frailty)
    y[:, binary] = rng.random((N, len(binary))) < 1.0 / (1.0 + np.exp(-eta[:, binary]))
    for i, j in enumerate(ordinal):
        latent = eta[:, j] + rng.logistic(size=N)
        used = SIM_CUTPOINTS[i, :SIM_CATEGORIES[j] - 1]
        y[:, j] = (latent[:, None] > used).sum(-1)
    observed = rng.random(y.shape) >= missing
    frame = pd.DataFrame(np.where(observed, y, np.nan), columns=list(SIM_COLUMNS))
    categories = {c: n for c, n in zip(SIM_COLUMNS, SIM_CATEGORIES, strict=True) if n}
    data = make_data(frame, SIM_TYPES, list(SIM_COLUMNS), categories, K, standardize=False)
    data["y"] = data["y"].float()
    f32 = torch.float32
    diag = np.array([lam[k, k] for k in range(K)])
    lower = np.array([lam[j, k] for j in range(lam.shape[0]) for k in range(min(j, K))])
    truth = {
        "health": torch.tensor(z, dtype=f32),
        "loading_diag": torch.tensor(diag, dtype=f32),
        "loading_lower": torch.tensor(lower, dtype=f32),
        "intercept": torch.tensor(SIM_INTERCEPTS, dtype=f32),
        "residual_sd": torch.tensor(SIM_RESIDUAL_SD, dtype=f32),
        "count_overdispersion": torch.tensor(SIM_OVERDISPERSION, dtype=f32),
        "cutpoints": torch.tensor(SIM_CUTPOINTS, dtype=f32),
    }
    return data, truth


# ------------------------------------------------------------------------------ outputs

GLOBAL_SITES = ("loading_diag", "loading_lower", "intercept", "residual_sd",
                "count_overdispersion", "cutpoints")
QUASI_DRAWS = 2000
"""Stratified quantile points per person behind each row of :func:`score`."""


def _plain(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k != "batch_size"}


def _layout_of(data: Mapping[str, Any]) -> _Layout:
    return _Layout(torch.as_tensor(data["types"]), torch.as_tensor(data["num_categories"]),
                   int(data.get("K", 1)))


def column_names(data: Mapping[str, Any], names: Sequence[str] | None = None) -> list[str]:
    """``names`` checked against the data's measurements, or ``m0``, ``m1``, ...

    The bundled RAND data are recognised by their shape and get :data:`RANDHIE_COLUMNS`.
    """
    types = torch.as_tensor(data["types"])
    P = int(types.numel())
    if names is None:
        if tuple(TYPES[int(t)] for t in types) == RANDHIE_TYPES:
            return list(RANDHIE_COLUMNS)
        if tuple(TYPES[int(t)] for t in types) == SIM_TYPES:
            return list(SIM_COLUMNS)
        return [f"m{j}" for j in range(P)]
    if len(names) != P:
        raise ValueError(f"{len(names)} names for {P} measurements")
    return list(names)


def _lower_factor(P: int, K: int) -> np.ndarray:
    """The factor of each entry of ``loading_lower`` (row by row below the diagonal)."""
    return np.array([k for j in range(P) for k in range(min(j, K))], dtype=int)


def canonical_signs(draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Fold draws onto the orientation with a positive diagonal of the loadings.

    In each draw, every factor ``k`` with ``loading_diag[k] < 0`` is reflected: its
    ``loading_diag`` entry, its column of ``loading_lower`` and ``health[..., k]`` change
    sign (the likelihood and the prior are unchanged). Arrays have any leading dimensions
    (``(S,)`` or ``(chain, draw)``) and the site's shape last; other sites pass through.
    """
    out = dict(draws)
    if "loading_diag" not in draws:
        return out
    diag = np.asarray(draws["loading_diag"])
    K = diag.shape[-1]
    sign = np.where(diag < 0, -1.0, 1.0)
    out["loading_diag"] = diag * sign
    if "loading_lower" in draws:
        lower = np.asarray(draws["loading_lower"])
        P = (lower.shape[-1] + K * (K + 1) // 2) // K
        out["loading_lower"] = lower * sign[..., _lower_factor(P, K)]
    if "health" in draws:
        out["health"] = np.asarray(draws["health"]) * sign[..., None, :]
    return out


@dataclass(frozen=True)
class SignAlignment:
    """What :func:`align_signs` did, in the fields :func:`pyrovi.compare` reads."""

    method: str
    message: str
    chain_modes_agree: bool = True


def _fold_idata(idata: az.InferenceData) -> tuple[az.InferenceData, float]:
    post = idata.posterior
    raw = {name: post[name].values for name in ("loading_diag", "loading_lower", "health")
           if name in post.data_vars}
    folded = canonical_signs(raw)
    share = float(np.mean(raw["loading_diag"] < 0)) if "loading_diag" in raw else 0.0
    new = post.copy()
    for name, values in folded.items():
        new[name] = (post[name].dims, values)
    groups = {group: idata[group] for group in idata.groups()}
    return az.InferenceData(**{**groups, "posterior": new}), share


def align_signs(vi: az.InferenceData, ref: az.InferenceData, site_roles: Mapping[str, str]
                ) -> tuple[az.InferenceData, az.InferenceData, SignAlignment]:
    """The spec's aligner: both posteriors folded by :func:`canonical_signs`."""
    del site_roles
    vi, vi_share = _fold_idata(vi)
    ref, ref_share = _fold_idata(ref)
    note = (f"factor signs folded to a positive loading diagonal (reflected factor draws: "
            f"{vi_share:.0%} variational, {ref_share:.0%} reference)")
    return vi, ref, SignAlignment(method=note, message=note)


def global_draws(fit_or_idata: SVIFit | az.InferenceData, num_draws: int = 1000,
                 seed: int = 0, canonical: bool = True) -> dict[str, np.ndarray]:
    """Posterior draws of the global sites, each ``(S, *site_shape)`` in float64.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` (its guide is sampled ``num_draws`` times on the whole
        data, one draw at a time, so N people cost N numbers per draw, not N x S), or
        posterior draws (chains pooled, at most ``num_draws`` evenly spaced draws kept).
    num_draws : int
        Draws from a fit; the most kept from InferenceData.
    seed : int
        Seed of the guide draws.
    canonical : bool
        Fold the draws onto the positive diagonal (:func:`canonical_signs`).
    """
    fold = canonical_signs if canonical else dict
    if isinstance(fit_or_idata, SVIFit):
        fit = fit_or_idata
        data = _plain(fit.data)
        out: dict[str, list[np.ndarray]] = {}
        with fit.in_force(), torch.no_grad(), torch.random.fork_rng(), \
                pyro.validation_enabled(False):
            pyro.set_rng_seed(seed)
            for _ in range(num_draws):
                trace = poutine.trace(poutine.block(fit.guide, hide_types=["param"])
                                      ).get_trace(**data)
                for name in GLOBAL_SITES:
                    if name in trace.nodes:
                        out.setdefault(name, []).append(
                            trace.nodes[name]["value"].detach().double().cpu().numpy())
        return fold({k: np.stack(v) for k, v in out.items()})
    if isinstance(fit_or_idata, az.InferenceData):
        post = fit_or_idata.posterior
        draws = {}
        for name in GLOBAL_SITES:
            if name in post.data_vars:
                values = post[name].values
                draws[name] = values.reshape(-1, *values.shape[2:]).astype(np.float64)
        total = len(next(iter(draws.values())))
        if total > num_draws:
            keep = np.linspace(0, total - 1, num_draws).round().astype(int)
            draws = {k: v[keep] for k, v in draws.items()}
        return fold(draws)
    raise ValueError(f"expected an SVIFit or arviz.InferenceData, got "
                     f"{type(fit_or_idata).__name__}")


def _check_same_design(data: Mapping[str, Any], draws: Mapping[str, np.ndarray]) -> None:
    layout = _layout_of(data)
    expected = {"loading_diag": (layout.K,), "loading_lower": (num_lower(layout.P, layout.K),)}
    for name, shape in expected.items():
        if name in draws and draws[name].shape[1:] != shape:
            raise ValueError(f"the fit's {name} has shape {draws[name].shape[1:]}, the data "
                             f"need {shape}: the data have other measurements or K")


def _grid(K: int) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Quadrature nodes (G, K), their log prior density, and the cell volume."""
    if K not in GRID_POINTS:
        raise ValueError(f"quadrature over health needs K <= 2 factors, got K = {K}; use an "
                         "amortized fit (method='encoder')")
    axis = torch.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_POINTS[K],
                          dtype=torch.float64)
    nodes = torch.cartesian_prod(*([axis] * K)).reshape(-1, K)
    log_prior = dist.Normal(0.0, 1.0).log_prob(nodes).sum(-1)
    return nodes, log_prior, float(axis[1] - axis[0]) ** K


def _draw_params(draws: Mapping[str, np.ndarray], s: int) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(v[s]) for k, v in draws.items()}


def _conditional_loglik(y: torch.Tensor, mask: torch.Tensor, layout: _Layout,
                        params: Mapping[str, torch.Tensor], health: torch.Tensor,
                        chunk: int = 4096) -> torch.Tensor:
    """``log p(y_i | health_g, theta)`` summed over observed measurements, shape (N, G):
    every person at every point ``health`` (G, K)."""
    structure = _structure(params, layout)
    lam, nu = structure["loadings"], structure["intercepts"]
    eta = nu + health @ lam.T                                  # (G, P)
    out = []
    for start in range(0, y.shape[0], chunk):
        y_c, m_c = y[start:start + chunk, None, :], mask[start:start + chunk, None, :]
        total = torch.zeros(y_c.shape[0], eta.shape[0], dtype=eta.dtype)
        for _, cols, d in _likelihoods(eta, params, layout):
            lp = d.log_prob(y_c[..., cols])
            total = total + torch.where(m_c[..., cols], lp, 0.0).sum(-1)
        out.append(total)
    return torch.cat(out)


def _unique_rows(data: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Distinct (answers, mask) rows and the index of each person's row: people with the
    same answers share a posterior."""
    y = torch.as_tensor(data["y"]).double()
    mask = torch.as_tensor(data["mask"]).bool()
    rows, inverse = np.unique(np.concatenate([y.numpy(), mask.numpy()], axis=1), axis=0,
                              return_inverse=True)
    P = y.shape[1]
    return (torch.as_tensor(rows[:, :P]), torch.as_tensor(rows[:, P:] > 0.5),
            inverse.ravel())


def _quantile_points(probs: np.ndarray, axis: np.ndarray, num: int) -> np.ndarray:
    """Stratified quantiles ``F^-1((k + 1/2) / num)`` of each row's distribution on the
    grid ``axis`` (each node's mass spread uniformly over its cell), shape ``(num, rows)``."""
    step = axis[1] - axis[0]
    edges = np.concatenate([[axis[0] - step / 2], axis + step / 2])
    u = (np.arange(num) + 0.5) / num
    out = np.empty((num, probs.shape[0]))
    for i, p in enumerate(probs):
        cdf = np.concatenate([[0.0], np.cumsum(p)])
        out[:, i] = np.interp(u, cdf / cdf[-1], edges)
    return out


def _score_frame(draws: np.ndarray, K: int, prob: float) -> pd.DataFrame:
    """``draws`` (num, N, K) -> one row per person and factor."""
    summary = interval_summary(draws.reshape(draws.shape[0], -1), prob=prob)
    N = draws.shape[1]
    frame = pd.DataFrame({"person": np.repeat(np.arange(N), K),
                          "factor": np.tile(np.arange(K), N)})
    for key in ("mean", "sd", "lower", "upper"):
        frame[key] = summary[key]
    return frame


def score(fit_or_idata: SVIFit | az.InferenceData, new_data: Mapping[str, Any],
          method: str = "auto", num_draws: int = 200, prob: float = INTERVAL_PROB,
          seed: int = 0) -> pd.DataFrame:
    """Health of people (new or not): posterior mean, sd and interval of each factor.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model`, or posterior draws of its global sites (e.g. NUTS).
    new_data : dict
        Data of the people to score, with the fit's measurements (:func:`make_data`,
        :func:`subset`).
    method : {"auto", "encoder", "quadrature"}
        ``"encoder"``: the amortized guide's ``q(health_i | answers_i)`` (one forward
        pass). ``"quadrature"``: for each of ``num_draws`` posterior draws of the global
        parameters, the exact posterior of ``health_i`` on a grid (:data:`GRID_POINTS`
        nodes per factor on ``[-6, 6]``), averaged over the draws: exact up to the grid and
        the draws' Monte Carlo error, and it carries the globals' uncertainty (``K <= 2``).
        ``"auto"``: the encoder for an amortized fit, else quadrature.
    num_draws : int
        Global draws of the quadrature.
    prob : float
        Probability of the equal-tailed interval.
    seed : int
        Seed of the global draws.

    Returns
    -------
    pandas.DataFrame
        One row per person and factor: ``person``, ``factor``, ``mean``, ``sd``,
        ``lower``, ``upper`` (:func:`pyrovi.diagnostics.interval_summary` of
        :data:`QUASI_DRAWS` stratified quantile points of each person's posterior).

    Raises
    ------
    ValueError
        On an unknown method, ``"encoder"`` without an amortized fit, or data whose
        measurements differ from the fit's.
    """
    layout = _layout_of(new_data)
    encode = getattr(getattr(fit_or_idata, "guide", None), "encode", None)
    if method == "auto":
        method = "encoder" if encode is not None else "quadrature"
    u = (np.arange(QUASI_DRAWS) + 0.5) / QUASI_DRAWS
    if method == "encoder":
        if encode is None:
            raise ValueError("method='encoder' needs a fit with an amortized guide "
                             "(guide='amortized_health')")
        fit = fit_or_idata
        if int(torch.as_tensor(fit.data["types"]).numel()) != layout.P:
            raise ValueError(f"the fit has {int(torch.as_tensor(fit.data['types']).numel())} "
                             f"measurements, new_data has {layout.P}")
        with fit.in_force(), torch.no_grad():
            data = _plain(new_data)
            data["y"] = torch.as_tensor(data["y"]).to(fit.dtype)
            loc, scale = encode(data)
        raw = global_draws(fit, num_draws=50, seed=seed, canonical=False)["loading_diag"]
        orientation = np.where(np.median(raw, axis=0) < 0, -1.0, 1.0)  # the fit's mirror
        loc = loc.double().numpy().reshape(-1, layout.K) * orientation
        scale = scale.double().numpy().reshape(-1, layout.K)
        normal_points = torch.distributions.Normal(0.0, 1.0).icdf(
            torch.as_tensor(u)).numpy()
        draws = loc[None] + scale[None] * normal_points[:, None, None]
        return _score_frame(draws, layout.K, prob)
    if method != "quadrature":
        raise ValueError(f"unknown method {method!r}; choose 'auto', 'encoder' or "
                         "'quadrature'")
    globals_ = global_draws(fit_or_idata, num_draws=num_draws, seed=seed)
    _check_same_design(new_data, globals_)
    y, mask, inverse = _unique_rows(new_data)
    nodes, log_prior, _ = _grid(layout.K)
    S = len(next(iter(globals_.values())))
    probs = torch.zeros(y.shape[0], nodes.shape[0], dtype=torch.float64)
    for s in range(S):
        ll = _conditional_loglik(y, mask, layout, _draw_params(globals_, s), nodes)
        probs += torch.softmax(ll + log_prior, dim=-1)
    probs = (probs / S).numpy()
    axis = np.linspace(-GRID_HALF_WIDTH, GRID_HALF_WIDTH, GRID_POINTS[layout.K])
    grid_shape = (probs.shape[0],) + (len(axis),) * layout.K
    per_factor = []
    for k in range(layout.K):
        others = tuple(1 + i for i in range(layout.K) if i != k)
        marginal = probs.reshape(grid_shape).sum(axis=others) if others else probs
        per_factor.append(_quantile_points(marginal, axis, QUASI_DRAWS)[:, inverse])
    return _score_frame(np.stack(per_factor, -1), layout.K, prob)


def _sum_sq_loadings(lam: np.ndarray) -> np.ndarray:
    return (lam**2).sum(-1)


def parameter_table(fit_or_idata: SVIFit | az.InferenceData,
                    data: Mapping[str, Any] | None = None,
                    names: Sequence[str] | None = None, num_draws: int = 1000,
                    prob: float = INTERVAL_PROB, seed: int = 0) -> pd.DataFrame:
    """The measurement model in lavaan's long form, one row per parameter.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` or posterior draws of it.
    data : dict, optional
        The data (types, K); by default the fit's. Needed for InferenceData.
    names : sequence of str, optional
        Measurement names (:func:`column_names`).
    num_draws, seed
        Draws taken from a fit (all draws of InferenceData, up to ``num_draws``).
    prob : float
        Probability of the equal-tailed interval.

    Returns
    -------
    pandas.DataFrame
        Columns ``lhs``, ``op``, ``rhs``, ``est`` (posterior mean), ``sd``, ``lower``,
        ``upper``, ``std_all``. Rows: ``health =~ m`` loadings (``health0``, ``health1``,
        ... for ``K > 1``; the zeros above the diagonal are omitted), ``health ~~ health``
        (1, fixed), ``m ~1`` intercepts, ``m ~~ m`` residual variances of normal columns,
        ``m disp overdispersion`` (count columns: ``a`` in ``Var = mu + a mu²``, not a
        lavaan operator) and ``m | t1``, ``t2``, ... thresholds of ordinal columns.

        ``std_all`` is the posterior mean of the parameter on the scale of the latent
        response ``y* = eta + e`` standardised to variance 1, with ``Var(y*) = sum_k
        lambda_jk² + Var(e)``: ``Var(e) = sigma_j²`` for normal columns, ``pi²/3`` for the
        logit links (binary, ordinal), and for counts the log-link approximation
        ``log(1 + 1/mu_j + a_j)`` with ``mu_j = exp(nu_j + sum_k lambda_jk² / 2)`` the
        marginal mean (Nakagawa, Johnson and Schielzeth 2017): an approximation, since a
        count has no latent response. Loadings, intercepts and thresholds are divided by
        ``sqrt(Var(y*))``, a residual variance by ``Var(y*)``.
    """
    if data is None:
        if not isinstance(fit_or_idata, SVIFit):
            raise ValueError("parameter_table of posterior draws needs the data (types, names)")
        data = fit_or_idata.data
    layout = _layout_of(data)
    names = column_names(data, names)
    draws = global_draws(fit_or_idata, num_draws=num_draws, seed=seed)
    _check_same_design(data, draws)
    tensors = {k: torch.as_tensor(v) for k, v in draws.items()}
    structure = _structure(tensors, layout)
    lam = structure["loadings"].numpy()                      # (S, P, K)
    nu = structure["intercepts"].numpy()                     # (S, P)
    common = _sum_sq_loadings(lam)                           # (S, P)
    resid = np.full_like(common, _LOGISTIC_VARIANCE)
    types = torch.as_tensor(data["types"]).numpy()
    cols = {code: layout.cols[code].numpy() for code in range(4)}
    if layout.has(NORMAL):
        resid[:, cols[NORMAL]] = draws["residual_sd"] ** 2
    if layout.has(COUNT):
        od = draws["count_overdispersion"]
        mu = np.exp(nu[:, cols[COUNT]] + common[:, cols[COUNT]] / 2.0)
        resid[:, cols[COUNT]] = np.log1p(1.0 / mu + od)
    total_sd = np.sqrt(common + resid)                        # (S, P)
    K = layout.K
    factor = ["health"] if K == 1 else [f"health{k}" for k in range(K)]
    rows: list[dict[str, Any]] = []

    def add(lhs: str, op: str, rhs: str, values: np.ndarray, std: np.ndarray) -> None:
        s = interval_summary(values[:, None], prob=prob)
        rows.append({"lhs": lhs, "op": op, "rhs": rhs, "est": float(s["mean"][0]),
                     "sd": float(s["sd"][0]), "lower": float(s["lower"][0]),
                     "upper": float(s["upper"][0]), "std_all": float(np.mean(std))})

    for k in range(K):
        for j in range(k, layout.P):
            add(factor[k], "=~", names[j], lam[:, j, k], lam[:, j, k] / total_sd[:, j])
    for k in range(K):
        ones = np.ones(lam.shape[0])
        add(factor[k], "~~", factor[k], ones, ones)
    for j in range(layout.P):
        if types[j] != ORDINAL:
            add(names[j], "~1", "", nu[:, j], nu[:, j] / total_sd[:, j])
    for i, j in enumerate(cols[NORMAL]):
        var = draws["residual_sd"][:, i] ** 2
        add(names[j], "~~", names[j], var, var / total_sd[:, j] ** 2)
    for i, j in enumerate(cols[COUNT]):
        od = draws["count_overdispersion"][:, i]
        add(names[j], "disp", "overdispersion", od, od)
    for i, j in enumerate(cols[ORDINAL]):
        for c in range(int(layout.ncat[i]) - 1):
            tau = draws["cutpoints"][:, i, c]
            add(names[j], "|", f"t{c + 1}", tau, tau / total_sd[:, j])
    return pd.DataFrame(rows)


def _replicate(mask: torch.Tensor, layout: _Layout, params: Mapping[str, torch.Tensor],
               health: torch.Tensor) -> torch.Tensor:
    """New answers of the same people (same missing entries) given their health (N, K)."""
    structure = _structure(params, layout)
    eta = structure["intercepts"] + health @ structure["loadings"].T   # (N, P)
    y = torch.zeros_like(eta)
    for _, cols, d in _likelihoods(eta, params, layout):
        y[:, cols] = d.sample().to(y.dtype)
    return torch.where(mask, y, 0.0)


def fit_indices(fit_or_idata: SVIFit | az.InferenceData,
                data: Mapping[str, Any] | None = None, num_draws: int = 100,
                seed: int = 0) -> dict[str, float]:
    """Posterior predictive check with the marginal deviance, a likelihood-ratio-type
    discrepancy.

    For each posterior draw ``theta_s`` of the global parameters, the discrepancy is the
    deviance with health integrated out, ``D(x, theta) = -2 sum_i log p(x_i | theta)``
    (:func:`_grid` quadrature; ``K <= 2``). Replicated data are new people drawn from
    the model (``health ~ Normal(0, I)``, then the answers) with the observed pattern of
    missing entries; the PPP is the share of draws whose replicate's deviance is at
    least the observed one (:func:`pyrovi.diagnostics.posterior_predictive_pvalue`).
    Near 0.5: the data look like the model's own; below 0.05: they do not (too many
    unusual people, a second factor, the wrong count distribution).

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` or posterior draws of it.
    data : dict, optional
        The observed data (default: the fit's).
    num_draws : int
        Posterior draws used.
    seed : int
        Seed of the draws and the replicates.

    Returns
    -------
    dict
        ``ppp``, ``deviance`` (posterior mean of the observed), ``deviance_replicated``
        (mean of the replicates'), ``num_people``, ``num_draws``.
    """
    if data is None:
        if not isinstance(fit_or_idata, SVIFit):
            raise ValueError("fit_indices of posterior draws needs the data")
        data = fit_or_idata.data
    layout = _layout_of(data)
    draws = global_draws(fit_or_idata, num_draws=num_draws, seed=seed)
    _check_same_design(data, draws)
    y_u, mask_u, inverse = _unique_rows(data)
    counts = torch.as_tensor(np.bincount(inverse, minlength=y_u.shape[0]), dtype=torch.float64)
    mask = torch.as_tensor(data["mask"]).bool()
    nodes, log_prior, volume = _grid(layout.K)
    log_w = log_prior + math.log(volume)
    S = len(next(iter(draws.values())))
    observed, replicated = np.empty(S), np.empty(S)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for s in range(S):
            params = _draw_params(draws, s)
            ll = _conditional_loglik(y_u, mask_u, layout, params, nodes)
            observed[s] = -2.0 * float((torch.logsumexp(ll + log_w, -1) * counts).sum())
            health = torch.randn(mask.shape[0], layout.K, dtype=torch.float64)
            y_rep = _replicate(mask, layout, params, health)
            ll_rep = _conditional_loglik(y_rep, mask, layout, params, nodes)
            replicated[s] = -2.0 * float(torch.logsumexp(ll_rep + log_w, -1).sum())
    return {"ppp": posterior_predictive_pvalue(observed, replicated),
            "deviance": float(observed.mean()), "deviance_replicated": float(replicated.mean()),
            "num_people": int(mask.shape[0]), "num_draws": S}


# ----------------------------------------------------------------------------- registry

SITE_ROLES = {"loading_diag": "global", "loading_lower": "global", "intercept": "global",
              "count_overdispersion": "global", "cutpoints": "global", "health": "local"}
"""Roles of the sites on the bundled data (simulated data with normal columns add the
global ``residual_sd``)."""

SPEC = ModelSpec(
    name="health",
    model=model,
    guides={**GUIDE_FAMILIES, AMORTIZED_FAMILY.name: AMORTIZED_FAMILY.build},
    load_data=load_data,
    simulate=simulate,
    description="latent health factor(s) behind normal, count, binary and ordinal measurements",
    datasets=DATASETS,
    site_roles=dict(SITE_ROLES),
    aligner=align_signs,
)

__all__ = [
    "AMORTIZED_FAMILY", "DATASETS", "OrderedLogit", "SPEC", "SignAlignment", "TYPES",
    "align_signs", "canonical_signs", "column_names",
    "features", "fit_indices", "from_csv", "global_draws", "load_data", "loading_matrix",
    "make_data", "model", "nan_to_mask", "num_lower", "parameter_table", "randhie_frame",
    "score", "simulate", "subset",
]
