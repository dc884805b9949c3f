"""Item response theory: the two-parameter logistic model (2PL) and its Rasch variant.

``N`` people answer ``J`` items, right (1) or wrong (0). Person ``i`` has an ability
``theta[i]``, item ``j`` a discrimination ``a[j]`` and a difficulty ``b[j]``::

    theta[i] ~ Normal(0, 1)                        (site "theta", shape (N,), local)
    a[j]     ~ LogNormal(0, 0.5)                   (site "a", shape (J,), global)
    b[j]     ~ Normal(0, 2)                        (site "b", shape (J,), global)
    y[i, j]  ~ Bernoulli(sigmoid(a[j] * (theta[i] - b[j])))

``b[j]`` is the ability at which the chance of a right answer is one half, ``a[j]`` the
slope of the item's curve there (on the logit scale, per sd of ability). The prior on
``a`` puts 90% of its mass between 0.44 and 2.3, the usual range of logistic
discriminations; the one on ``b`` is weak (most items lie within ±3).

**Identification.** The likelihood depends on ``theta`` only through ``a (theta - b)``,
so ``theta -> s theta + t`` with ``a -> a / s`` and ``b -> s b + t`` leaves it unchanged:
fixing the ability distribution at ``Normal(0, 1)`` fixes the location ``t`` and the
scale ``|s|``. The reflection ``s = -1`` (abilities and difficulties negated,
discriminations made negative) is excluded by ``a > 0``; the posterior has one mode and
the reported ``theta`` is "ability", not its negative.

**Parameterisation.** ``a`` is sampled on the log scale by every guide and by NUTS (its
support is positive), ``b`` and ``theta`` on the real line. In the 2PL, ``a[j]`` and the
abilities trade off (a larger ``a`` with abilities pulled towards 0 fits a similar
pattern), so the per-person mean-field guide, which treats each ``theta[i]`` as
independent of ``a``, typically misjudges the spread of the discriminations; the
comparison with NUTS (``case_studies/irt_lsat.py``) measures by how much.

**Rasch variant** (:func:`model_rasch`, registered as ``irt_rasch``): one discrimination
``a`` shared by all items (site ``a``, a scalar with the same prior), abilities still
``Normal(0, 1)``. This is the one-parameter logistic model (1PL) as ``ltm::rasch`` fits it
with a free discrimination; it is the same model as the Rasch model with ``a = 1`` and
``theta ~ Normal(0, sigma^2)``, with ``sigma = a`` (and the difficulties unchanged), but
keeps the abilities on the 2PL's scale so that scores of the two models compare directly.

**Marginal form.** Integrating each ``theta[i]`` out by Gauss–Hermite quadrature gives
``p(y_i | a, b) = sum_k w_k prod_j p_j(x_k)^y_ij (1 - p_j(x_k))^(1 - y_ij)``, the
likelihood of marginal maximum likelihood (Bock and Aitkin 1981). :func:`marginal_model`
is that likelihood with the same priors: the posterior of ``(a, b)`` without the N
abilities, for NUTS references and checks.

**Missing answers** are allowed: ``y`` holds 0 where an answer is missing and ``mask``
(same shape, boolean) is False there; the likelihood is masked (a missing answer says
nothing, it is not imputed). :func:`responses_and_mask` turns an array or DataFrame with
NaN into ``(y, mask)``.

Family outputs: :func:`parameter_table` (one row per item and parameter, lavaan-like),
:func:`score` (abilities of new people: per posterior draw of the items, the exact
posterior of ``theta`` by grid quadrature, mixed over the draws; or the amortized
encoder), :func:`fit_indices` (posterior predictive p-value of the likelihood-ratio
statistic ``G²`` on the table of response patterns).

Bundled data (:func:`load_data`): the Law School Admission Test, sections 6 (``lsat6``,
default; R ``ltm::LSAT``, ``mirt::LSAT6``) and 7 (``lsat7``, ``mirt::LSAT7``), 1,000
examinees by 5 items each, published as 32 response patterns with counts (Bock and
Lieberman 1970); ``load_data`` gives one row per examinee, in pattern order.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from scipy import special, stats

from pyrovi import diagnostics as dg
from pyrovi.guides import GUIDE_FAMILIES, register_family
from pyrovi.guides.amortized import amortized_family
from pyrovi.infer.result import SVIFit
from pyrovi.models._data import pick_dataset, read_json
from pyrovi.models.missing import masked_features, split_missing
from pyrovi.models.spec import ModelSpec

DATASETS = ("lsat6", "lsat7")
A_PRIOR_SCALE = 0.5
"""Prior sd of ``log a`` (``a ~ LogNormal(0, A_PRIOR_SCALE)``)."""
B_PRIOR_SCALE = 2.0
"""Prior sd of each difficulty ``b``."""
GRID = np.linspace(-6.0, 6.0, 401)
"""The ability grid of :func:`score` (step 0.03; prior mass outside is below 1e-8)."""
QUASI_DRAWS = 2000
"""Stratified quantile points per person from which :func:`score` summarises."""
MAX_PATTERN_ITEMS = 16
""":func:`fit_indices` enumerates all ``2**J`` response patterns: at most this many items."""


# --------------------------------------------------------------------------- data


def _as_responses(y: torch.Tensor, mask: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Check ``y`` (N, J) 0/1 where observed and return ``(y, mask as bool)``."""
    if not isinstance(y, torch.Tensor) or y.dim() != 2:
        raise ValueError(f"y must be a 2-D tensor (people x items), got shape "
                         f"{tuple(getattr(y, 'shape', ()))}")
    if mask is None:
        mask = torch.ones(y.shape, dtype=torch.bool, device=y.device)
    else:
        if tuple(mask.shape) != tuple(y.shape):
            raise ValueError(f"mask has shape {tuple(mask.shape)}, y has {tuple(y.shape)}: "
                             "they must match")
        mask = mask.bool()
    if (((y != 0) & (y != 1)) & mask).any():
        raise ValueError("y must hold 0 or 1 where observed (mask True)")
    return y, mask


def responses_and_mask(x: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Turn responses with missing values into the ``(y, mask)`` the models take.

    Parameters
    ----------
    x : array_like or pandas.DataFrame, shape (N, J)
        0/1 answers, NaN (or None) where an answer is missing.

    Returns
    -------
    y : Tensor, float32, shape (N, J)
        The answers with missing entries set to 0.
    mask : Tensor, bool, shape (N, J)
        True where an answer was given.

    Raises
    ------
    ValueError
        If ``x`` is not two-dimensional or holds a value other than 0, 1 or NaN.
    """
    try:
        y, mask = split_missing(x)
    except ValueError as exc:
        raise ValueError(f"responses: {exc}") from None
    if not np.isin(y[mask].numpy(), (0.0, 1.0)).all():
        raise ValueError("responses must be 0, 1 or NaN (missing)")
    return y.float(), mask


@functools.cache
def _patterns_and_counts(name: str) -> tuple[np.ndarray, np.ndarray]:
    raw = read_json("lsat.json")
    patterns = np.array(raw["patterns"], dtype=np.int64)
    counts = np.array(raw["counts"][name], dtype=np.int64)
    patterns.flags.writeable = False
    counts.flags.writeable = False
    return patterns, counts


def item_names(name: str | None = None) -> tuple[str, ...]:
    """Names of the items of a bundled data set (``item1`` ... ``item5``)."""
    pick_dataset(name, DATASETS, "irt_2pl")
    return tuple(read_json("lsat.json")["items"])


def pattern_table(name: str | None = None) -> pd.DataFrame:
    """The published table of a bundled data set: one row per response pattern.

    Returns
    -------
    pandas.DataFrame
        Columns ``item1`` ... ``item5`` (0/1) and ``count``; 32 rows (patterns nobody
        gave have count 0), counts summing to 1,000.
    """
    chosen = pick_dataset(name, DATASETS, "irt_2pl")
    patterns, counts = _patterns_and_counts(chosen)
    table = pd.DataFrame(patterns, columns=list(item_names(chosen)))
    table["count"] = counts
    return table


def load_data(name: str | None = None) -> dict[str, Any]:
    """Bundled data: ``{"y": Tensor (1000, 5), "mask": Tensor (1000, 5) bool}``.

    ``lsat6`` (default): LSAT section 6 (R ``ltm::LSAT``); ``lsat7``: section 7
    (``mirt::LSAT7``). Each is expanded from the 32 published response patterns and
    their counts (:func:`pattern_table`), one row per examinee in pattern order; nothing
    is missing.
    """
    chosen = pick_dataset(name, DATASETS, "irt_2pl")
    patterns, counts = _patterns_and_counts(chosen)
    y = np.repeat(patterns, counts, axis=0)
    return {"y": torch.tensor(y, dtype=torch.float32),
            "mask": torch.ones(y.shape, dtype=torch.bool)}


# --------------------------------------------------------------------------- models


def _logits(a: torch.Tensor, b: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """``a[j] (theta[i] - b[j])`` of shape ``(..., N, J)``; ``a`` is ``(..., J)`` or a
    shared ``(...,)``-batched scalar with a trailing 1 (Rasch), ``theta`` ``(..., N)``."""
    return a.unsqueeze(-2) * (theta.unsqueeze(-1) - b.unsqueeze(-2))


def _observe(y: torch.Tensor, mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
             batch_size: int | None) -> None:
    N = y.shape[0]
    with pyro.plate("data", N, subsample_size=batch_size) as idx:
        theta = pyro.sample("theta", dist.Normal(y.new_zeros(()), y.new_ones(())))
        pyro.sample("y", dist.Bernoulli(logits=_logits(a, b, theta)).mask(mask[idx])
                    .to_event(1), obs=y[idx])


def _items(J: int, like: torch.Tensor, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    zero, one = like.new_zeros(()), like.new_ones(())
    if shared:  # shape () alone, (P, 1) under a vectorised particle plate at dim -2
        a = pyro.sample("a", dist.LogNormal(zero, A_PRIOR_SCALE * one))
        a = a.unsqueeze(-1) if a.dim() == 0 else a
    with pyro.plate("items", J):
        if not shared:
            a = pyro.sample("a", dist.LogNormal(zero, A_PRIOR_SCALE * one))
        b = pyro.sample("b", dist.Normal(zero, B_PRIOR_SCALE * one))
    return a, b


def model(y: torch.Tensor, mask: torch.Tensor | None = None,
          batch_size: int | None = None) -> None:
    """Two-parameter logistic IRT model (module docstring).

    Parameters
    ----------
    y : Tensor, shape (N, J)
        0/1 answers, 0 where missing.
    mask : Tensor of bool, shape (N, J), optional
        True where an answer was given (default: all).
    batch_size : int, optional
        Subsample the people (plate ``"data"``) in minibatches of this size.

    Notes
    -----
    Latent sites ``a`` (J,) and ``b`` (J,) in plate ``"items"``, ``theta`` (N,) in plate
    ``"data"``; the observed ``y`` is one event of J answers per person. Batch safe with
    ``max_plate_nesting=1``.

    Raises
    ------
    ValueError
        If ``y`` is not (N, J), holds values other than 0/1 where observed, or ``mask``
        has another shape.
    """
    y, mask = _as_responses(y, mask)
    a, b = _items(y.shape[1], y, shared=False)
    _observe(y, mask, a, b, batch_size)


def model_rasch(y: torch.Tensor, mask: torch.Tensor | None = None,
                batch_size: int | None = None) -> None:
    """Rasch (1PL) model: one discrimination ``a`` (a scalar site) shared by all items.

    Arguments, sites and errors as in :func:`model`, except that ``a`` has shape ``()``.
    """
    y, mask = _as_responses(y, mask)
    a, b = _items(y.shape[1], y, shared=True)
    _observe(y, mask, a, b, batch_size)


def hermite_nodes(num_nodes: int = 41) -> tuple[np.ndarray, np.ndarray]:
    """Gauss–Hermite nodes and log weights for expectations under ``Normal(0, 1)``.

    ``E f(theta) ~= sum_k exp(log_w[k]) f(x[k])``, exact for polynomials of degree below
    ``2 * num_nodes``.
    """
    t, w = np.polynomial.hermite.hermgauss(num_nodes)
    return np.sqrt(2.0) * t, np.log(w / np.sqrt(np.pi))


def _marginal_loglik(y: torch.Tensor, mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                     nodes: torch.Tensor, log_w: torch.Tensor) -> torch.Tensor:
    """``log p(y_i | a, b)`` with theta integrated out, shape ``(..., N)``."""
    z = _logits(a, b, nodes.expand(*a.shape[:-1], -1))  # (..., K, J)
    right, wrong = (y * mask).to(z.dtype), ((1 - y) * mask).to(z.dtype)
    ll = torch.einsum("nj,...kj->...nk", right, torch.nn.functional.logsigmoid(z)) + \
        torch.einsum("nj,...kj->...nk", wrong, torch.nn.functional.logsigmoid(-z))
    return torch.logsumexp(ll + log_w, dim=-1)


def marginal_model(y: torch.Tensor, mask: torch.Tensor | None = None,
                   batch_size: int | None = None, num_nodes: int = 41,
                   rasch: bool = False) -> None:
    """The 2PL (or, with ``rasch=True``, the Rasch model) with every ``theta[i]``
    integrated out by Gauss–Hermite quadrature.

    Same priors and arguments as :func:`model` (:func:`model_rasch`); latent sites ``a``
    and ``b`` only. The likelihood of person ``i`` enters as ``pyro.factor("y",
    log p(y_i | a, b))`` in plate ``"data"``. With 41 nodes the quadrature error is below
    1e-6 nats per person for discriminations up to 2.
    """
    y, mask = _as_responses(y, mask)
    a, b = _items(y.shape[1], y, shared=rasch)
    x, log_w = hermite_nodes(num_nodes)
    nodes = torch.as_tensor(x, dtype=y.dtype)
    log_w_t = torch.as_tensor(log_w, dtype=y.dtype)
    with pyro.plate("data", y.shape[0], subsample_size=batch_size) as idx:
        pyro.factor("y", _marginal_loglik(y[idx], mask[idx], a, b, nodes, log_w_t))


# --------------------------------------------------------------------------- simulation


def _simulate(seed: int, N: int, J: int, missing: float, shared: bool
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    if N < 1 or J < 1:
        raise ValueError(f"N and J must be positive, got N={N}, J={J}")
    if not 0.0 <= missing < 1.0:
        raise ValueError(f"missing must lie in [0, 1), got {missing}")
    rng = np.random.default_rng(seed)
    a = np.exp(rng.normal(0.0, 0.3)) if shared else np.exp(rng.normal(0.0, 0.3, size=J))
    b = np.sort(rng.normal(0.0, 1.0, size=J))
    theta = rng.standard_normal(N)
    p = special.expit(np.atleast_1d(a)[None, :] * (theta[:, None] - b[None, :]))
    y = (rng.random((N, J)) < p).astype(np.float64)
    mask = rng.random((N, J)) >= missing
    f32 = torch.float32
    data = {"y": torch.tensor(np.where(mask, y, 0.0), dtype=f32), "mask": torch.tensor(mask)}
    truth = {"a": torch.tensor(a, dtype=f32), "b": torch.tensor(b, dtype=f32),
             "theta": torch.tensor(theta, dtype=f32)}
    return data, truth


def simulate(seed: int = 0, N: int = 500, J: int = 10, missing: float = 0.0
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate 2PL answers of ``N`` people to ``J`` items.

    ``log a[j] ~ Normal(0, 0.3)`` (discriminations 0.5 to 2), ``b[j] ~ Normal(0, 1)``
    sorted, ``theta[i] ~ Normal(0, 1)``; each answer is then missing with probability
    ``missing`` (completely at random).

    Returns
    -------
    data : dict
        ``{"y": Tensor (N, J), "mask": Tensor (N, J) bool}``.
    truth : dict
        ``a`` (J,), ``b`` (J,), ``theta`` (N,).
    """
    return _simulate(seed, N, J, missing, shared=False)


def simulate_rasch(seed: int = 0, N: int = 500, J: int = 10, missing: float = 0.0
                   ) -> tuple[dict[str, Any], dict[str, Any]]:
    """As :func:`simulate` with one shared discrimination ``a`` (truth ``a`` is a scalar)."""
    return _simulate(seed, N, J, missing, shared=True)


# --------------------------------------------------------------------------- draws


def _stacked(idata: az.InferenceData, site: str) -> np.ndarray:
    values = idata.posterior[site].values
    return values.reshape(-1, *values.shape[2:]).astype(np.float64)


def item_draws(fit_or_idata: SVIFit | az.InferenceData, num_draws: int = 1000,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Posterior draws of the item parameters, ``a`` and ``b``, each ``(S, J)``.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` or :func:`model_rasch` (its guide is sampled) or posterior
        draws (e.g. NUTS; chains are pooled and at most ``num_draws`` evenly spaced draws
        kept).
    num_draws : int
        Draws from a fit; the most kept from InferenceData.
    seed : int
        Seed of the guide draws.

    Returns
    -------
    a, b : numpy.ndarray, shape (S, J)
        A shared Rasch discrimination is repeated over the items.
    """
    if isinstance(fit_or_idata, SVIFit):
        draws = fit_or_idata.sample(num_samples=num_draws, seed=seed)
        a, b = (draws[k].double().numpy() for k in ("a", "b"))
    elif isinstance(fit_or_idata, az.InferenceData):
        a, b = _stacked(fit_or_idata, "a"), _stacked(fit_or_idata, "b")
        if len(b) > num_draws:
            keep = np.linspace(0, len(b) - 1, num_draws).round().astype(int)
            a, b = a[keep], b[keep]
    else:
        raise ValueError(f"expected an SVIFit or arviz.InferenceData, got "
                         f"{type(fit_or_idata).__name__}")
    a = np.broadcast_to(a.reshape(len(a), -1), b.shape).copy()
    return a, b


def _numpy_responses(data: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    if "y" not in data:
        raise ValueError("data must hold the answers 'y' (and optionally 'mask')")
    y = torch.as_tensor(data["y"]).double()
    mask = data.get("mask")
    y, mask_t = _as_responses(y, None if mask is None else torch.as_tensor(mask))
    return y.numpy(), mask_t.numpy()


# --------------------------------------------------------------------------- scores


def _grid_posterior(y: np.ndarray, mask: np.ndarray, a: np.ndarray, b: np.ndarray,
                    grid: np.ndarray, chunk: int = 16) -> np.ndarray:
    """Mixture over draws of p(theta = grid[g] | y_i, a_s, b_s): shape (N, G), rows sum to 1."""
    right = torch.as_tensor(y * mask)
    wrong = torch.as_tensor((1.0 - y) * mask)
    g = torch.as_tensor(grid)
    log_prior = torch.as_tensor(stats.norm.logpdf(grid))
    total = torch.zeros(y.shape[0], len(grid), dtype=torch.float64)
    for start in range(0, len(a), chunk):
        a_s = torch.as_tensor(a[start:start + chunk])
        b_s = torch.as_tensor(b[start:start + chunk])
        z = a_s[:, None, :] * (g[None, :, None] - b_s[:, None, :])  # (S, G, J)
        ll = torch.einsum("nj,sgj->sng", right, torch.nn.functional.logsigmoid(z)) + \
            torch.einsum("nj,sgj->sng", wrong, torch.nn.functional.logsigmoid(-z))
        total += torch.softmax(ll + log_prior, dim=-1).sum(0)
    return (total / len(a)).numpy()


def _quasi_draws_from_grid(probs: np.ndarray, grid: np.ndarray, num: int) -> np.ndarray:
    """Stratified quantiles ``F^-1((k + 1/2) / num)`` of each row's grid distribution (each
    grid mass spread uniformly over its cell), shape ``(num, N)``."""
    step = grid[1] - grid[0]
    edges = np.concatenate([[grid[0] - step / 2], grid + step / 2])
    u = (np.arange(num) + 0.5) / num
    out = np.empty((num, probs.shape[0]))
    for i, p in enumerate(probs):
        cdf = np.concatenate([[0.0], np.cumsum(p)])
        cdf /= cdf[-1]
        out[:, i] = np.interp(u, cdf, edges)
    return out


def score(fit_or_idata: SVIFit | az.InferenceData, new_data: Mapping[str, Any],
          method: str = "quadrature", num_draws: int = 200, prob: float = dg.INTERVAL_PROB,
          seed: int = 0) -> pd.DataFrame:
    """Abilities of people not in the fit: posterior mean, sd and interval of ``theta``.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` / :func:`model_rasch`, or their posterior draws.
    new_data : dict
        ``{"y": (M, J), "mask": (M, J)}`` for the people to score (the same items).
    method : {"quadrature", "encoder"}
        ``"quadrature"`` (default): for each of ``num_draws`` posterior draws of the item
        parameters, the exact posterior of ``theta_i`` given ``y_i`` on a grid of 401
        abilities (:data:`GRID`), averaged over the draws: exact up to the grid and the
        Monte Carlo error of the item draws, and it carries the items' uncertainty.
        ``"encoder"``: the fitted amortized guide's ``q(theta_i | y_i)`` (one forward
        pass; needs a fit with an amortized guide such as ``amortized_irt``).
    num_draws : int
        Item-parameter draws of the quadrature.
    prob : float
        Probability of the equal-tailed interval.
    seed : int
        Seed of the item draws.

    Returns
    -------
    pandas.DataFrame
        One row per person, columns ``mean``, ``sd``, ``lower``, ``upper``
        (:func:`pyrovi.diagnostics.interval_summary` of stratified quantile points of each
        person's posterior).

    Raises
    ------
    ValueError
        On an unknown method, an encoder request without an amortized fit, or answers
        whose number of items differs from the fit's.
    """
    y, mask = _numpy_responses(new_data)
    u = (np.arange(QUASI_DRAWS) + 0.5) / QUASI_DRAWS
    if method == "quadrature":
        a, b = item_draws(fit_or_idata, num_draws=num_draws, seed=seed)
        if a.shape[1] != y.shape[1]:
            raise ValueError(f"the fit has {a.shape[1]} items, new_data has {y.shape[1]}")
        # people with the same answers (and the same missing items) share a posterior
        rows, inverse = np.unique(np.concatenate([y, mask], axis=1), axis=0,
                                  return_inverse=True)
        J = y.shape[1]
        probs = _grid_posterior(rows[:, :J], rows[:, J:].astype(bool), a, b, GRID)
        draws = _quasi_draws_from_grid(probs, GRID, QUASI_DRAWS)[:, inverse.ravel()]
    elif method == "encoder":
        encode = getattr(getattr(fit_or_idata, "guide", None), "encode", None)
        if encode is None:
            raise ValueError("method='encoder' needs a fit with an amortized guide "
                             "(e.g. guide='amortized_irt')")
        with fit_or_idata.in_force(), torch.no_grad():
            data = {"y": torch.as_tensor(y, dtype=fit_or_idata.dtype),
                    "mask": torch.as_tensor(mask)}
            loc, scale = encode(data)
        loc, scale = loc[:, 0].double().numpy(), scale[:, 0].double().numpy()
        draws = loc[None, :] + scale[None, :] * stats.norm.ppf(u)[:, None]
    else:
        raise ValueError(f"unknown method {method!r}; choose 'quadrature' or 'encoder'")
    return pd.DataFrame(dg.interval_summary(draws, prob=prob))


# --------------------------------------------------------------------------- tables


def parameter_table(fit_or_idata: SVIFit | az.InferenceData,
                    items: Sequence[str] | None = None, num_draws: int = 1000,
                    prob: float = dg.INTERVAL_PROB, seed: int = 0) -> pd.DataFrame:
    """Item parameters in long form, one row per item and parameter (lavaan-like).

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` / :func:`model_rasch`, or their posterior draws.
    items : sequence of str, optional
        Item names (default ``item1``, ``item2``, ...).
    num_draws, seed
        Draws taken from a fit (all draws of InferenceData up to ``num_draws``).
    prob : float
        Probability of the equal-tailed interval.

    Returns
    -------
    pandas.DataFrame
        Columns ``lhs`` (item), ``op`` (``"a"`` discrimination, ``"b"`` difficulty, in
        ``a (theta - b)``), ``rhs`` (``"theta"``), ``est`` (posterior mean), ``sd``,
        ``lower``, ``upper`` and ``std_all``: the posterior mean of the parameter on the
        scale of the latent response ``y* = a theta + e`` with standard logistic ``e``
        (variance ``pi^2 / 3``) standardised to variance 1: the loading
        ``a / sqrt(a^2 + pi^2 / 3)`` for ``a``, the threshold ``a b / sqrt(a^2 + pi^2 / 3)``
        for ``b``. Rows are item-major: ``a`` then ``b`` of each item.
    """
    a, b = item_draws(fit_or_idata, num_draws=num_draws, seed=seed)
    J = a.shape[1]
    names = list(items) if items is not None else [f"item{j + 1}" for j in range(J)]
    if len(names) != J:
        raise ValueError(f"{len(names)} item names for {J} items")
    scale = np.sqrt(a**2 + np.pi**2 / 3.0)
    parts = {"a": (a, (a / scale).mean(0)), "b": (b, (a * b / scale).mean(0))}
    summaries = {op: dg.interval_summary(draws, prob=prob) for op, (draws, _) in parts.items()}
    rows = []
    for j, name in enumerate(names):
        for op in ("a", "b"):
            s = summaries[op]
            rows.append({"lhs": name, "op": op, "rhs": "theta", "est": s["mean"][j],
                         "sd": s["sd"][j], "lower": s["lower"][j], "upper": s["upper"][j],
                         "std_all": parts[op][1][j]})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- fit


def pattern_probabilities(a: np.ndarray, b: np.ndarray, num_nodes: int = 61) -> np.ndarray:
    """Marginal probability of every response pattern, by Gauss–Hermite quadrature.

    Parameters
    ----------
    a, b : numpy.ndarray, shape (S, J)
        Item parameters, one row per draw.
    num_nodes : int
        Quadrature nodes.

    Returns
    -------
    numpy.ndarray, shape (S, 2**J)
        Column ``p`` is the pattern whose answer to item ``j`` is bit ``J - 1 - j`` of
        ``p`` (item 1 is the most significant bit: the order of :func:`pattern_table`).
    """
    J = a.shape[1]
    patterns = ((np.arange(2**J)[:, None] >> np.arange(J - 1, -1, -1)) & 1).astype(float)
    x, log_w = hermite_nodes(num_nodes)
    z = a[:, None, :] * (x[None, :, None] - b[:, None, :])  # (S, K, J)
    ll = np.einsum("pj,skj->skp", patterns, -np.logaddexp(0.0, -z)) + \
        np.einsum("pj,skj->skp", 1.0 - patterns, -np.logaddexp(0.0, z))
    return np.exp(special.logsumexp(ll + log_w[None, :, None], axis=1))


def _g2(counts: np.ndarray, expected: np.ndarray) -> np.ndarray:
    """``G^2 = 2 sum n log(n / E)`` over the cells with ``n > 0``, per row."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(counts > 0, counts * np.log(counts / expected), 0.0)
    return 2.0 * terms.sum(-1)


def fit_indices(fit_or_idata: SVIFit | az.InferenceData, data: Mapping[str, Any],
                num_draws: int = 400, seed: int = 0) -> dict[str, float]:
    """Posterior predictive check of the response-pattern table with the ``G²`` statistic.

    For each posterior draw ``s`` of the item parameters, the expected count of each of
    the ``2**J`` patterns is ``N P_s(pattern)`` (abilities integrated out,
    :func:`pattern_probabilities`), and ``G²_s = 2 sum n log(n / (N P_s))`` measures how
    far the observed counts are from it. Replicated counts are drawn from
    ``Multinomial(N, P_s)`` (new people answering the same items) and scored the same
    way; the PPP is the share of draws whose replicate is at least as discrepant.

    Parameters
    ----------
    fit_or_idata : SVIFit or arviz.InferenceData
        A fit of :func:`model` / :func:`model_rasch`, or their posterior draws.
    data : dict
        The answers, ``{"y": (N, J), "mask": (N, J)}``; only people who answered every
        item enter the table.
    num_draws : int
        Posterior draws used.
    seed : int
        Seed of the draws and the replicates.

    Returns
    -------
    dict
        ``g2`` (posterior mean of the observed ``G²``), ``g2_replicated`` (mean of the
        replicates'), ``ppp``, ``num_patterns`` (``2**J``), ``num_observed_patterns``,
        ``num_people`` (complete answer rows), ``num_draws``.

    Raises
    ------
    ValueError
        If there are more than :data:`MAX_PATTERN_ITEMS` items or no complete rows.
    """
    y, mask = _numpy_responses(data)
    J = y.shape[1]
    if J > MAX_PATTERN_ITEMS:
        raise ValueError(f"fit_indices enumerates 2**J patterns; J={J} exceeds "
                         f"{MAX_PATTERN_ITEMS}")
    complete = y[mask.all(axis=1)].astype(np.int64)
    if len(complete) == 0:
        raise ValueError("no person answered every item: the pattern table is empty")
    codes = complete @ (1 << np.arange(J - 1, -1, -1))
    counts = np.bincount(codes, minlength=2**J).astype(float)
    n = len(complete)
    a, b = item_draws(fit_or_idata, num_draws=num_draws, seed=seed)
    probs = pattern_probabilities(a, b)
    probs /= probs.sum(-1, keepdims=True)
    rng = np.random.default_rng(seed)
    replicated = np.stack([rng.multinomial(n, p) for p in probs]).astype(float)
    observed_g2 = _g2(counts[None, :], n * probs)
    replicated_g2 = _g2(replicated, n * probs)
    return {"g2": float(observed_g2.mean()), "g2_replicated": float(replicated_g2.mean()),
            "ppp": dg.posterior_predictive_pvalue(observed_g2, replicated_g2),
            "num_patterns": 2**J, "num_observed_patterns": int((counts > 0).sum()),
            "num_people": n, "num_draws": len(a)}


# --------------------------------------------------------------------------- alignment


@dataclass(frozen=True)
class PersonAlignment:
    """What :func:`align_persons` did, in the fields :func:`pyrovi.compare` reads.

    Attributes
    ----------
    method : str
        One line, e.g. ``"theta of the 30 people the reference keeps"``.
    message : str
        The same line, for the report.
    chain_modes_agree : bool
        Always True: nothing is relabelled, so chains cannot disagree about labels.
    """

    method: str
    message: str
    chain_modes_agree: bool = True


def align_persons(vi: az.InferenceData, ref: az.InferenceData,
                  site_roles: Mapping[str, str]
                  ) -> tuple[az.InferenceData, az.InferenceData, PersonAlignment | None]:
    """Compare ``theta`` of the people a stored reference kept, and nothing is relabelled.

    A reference may keep the abilities of a few people only (the LSAT fixture keeps one
    person per response pattern: people with the same answers have the same posterior).
    It then lists their indices in ``ref.constant_data["theta_person"]``, and the
    variational ``theta`` is cut to the same people, in the same order.

    Returns
    -------
    (arviz.InferenceData, arviz.InferenceData, PersonAlignment or None)
        The aligned draws and what was done (None when nothing was cut).
    """
    del site_roles  # no component sites: the 2PL is identified (module docstring)
    if "constant_data" not in ref.groups() or "theta_person" not in ref.constant_data \
            or "theta" not in vi.posterior or "theta" not in ref.posterior:
        return vi, ref, None
    persons = np.asarray(ref.constant_data["theta_person"].values, dtype=int)
    theta = vi.posterior["theta"]
    if theta.shape[-1] == len(persons):
        return vi, ref, None
    cut = theta.isel({theta.dims[-1]: persons}).values
    post = vi.posterior.drop_vars("theta")
    post["theta"] = (("chain", "draw", "theta_person"), cut)
    groups = {group: vi[group] for group in vi.groups()}
    note = f"theta of the {len(persons)} people the reference keeps"
    return (az.InferenceData(**{**groups, "posterior": post}), ref,
            PersonAlignment(method=note, message=note))


# --------------------------------------------------------------------------- registry


def features(data: Mapping[str, Any]) -> torch.Tensor:
    """The encoder's input per person: answers with missing ones zeroed, then the mask."""
    return masked_features(data["y"], data.get("mask"))


AMORTIZED_IRT = register_family(amortized_family(
    "amortized_irt", ("theta",), features, plate="data",
    description="mean-field items, encoder q(theta_i | y_i, mask_i) for the IRT models",
))
"""The amortized guide family of the IRT models (an MLP of each person's answers)."""

_ROLES = {"a": "global", "b": "global", "theta": "local"}

SPEC = ModelSpec(
    name="irt_2pl",
    model=model,
    guides={**GUIDE_FAMILIES, AMORTIZED_IRT.name: AMORTIZED_IRT.build},
    load_data=load_data,
    simulate=simulate,
    description="2PL item response model: sigmoid(a_j (theta_i - b_j)), theta ~ N(0, 1)",
    datasets=DATASETS,
    site_roles=dict(_ROLES),
    aligner=align_persons,
)

SPEC_RASCH = ModelSpec(
    name="irt_rasch",
    model=model_rasch,
    guides={**GUIDE_FAMILIES, AMORTIZED_IRT.name: AMORTIZED_IRT.build},
    load_data=load_data,
    simulate=simulate_rasch,
    description="Rasch / 1PL item response model: one shared discrimination a",
    datasets=DATASETS,
    site_roles=dict(_ROLES),
    aligner=align_persons,
)

__all__ = [
    "AMORTIZED_IRT", "DATASETS", "SPEC", "SPEC_RASCH", "PersonAlignment", "align_persons",
    "features", "fit_indices", "hermite_nodes", "item_draws", "item_names", "load_data",
    "marginal_model", "model", "model_rasch", "parameter_table", "pattern_probabilities",
    "pattern_table", "responses_and_mask", "score", "simulate", "simulate_rasch",
]
