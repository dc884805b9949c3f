"""Undo label switching in mixture posteriors before comparing draws.

A mixture posterior is invariant to permuting its ``K`` components, so raw draws of
``locs[k]`` mix all components and their marginal means and sds say nothing about any
one component. :func:`relabel` finds, for every draw, the permutation of the components
that best matches a pivot and applies it to every mixture site; :func:`relabel_pair`
aligns variational draws and reference draws to the same pivot so that ``locs[1]`` means
the same component on both sides.

Method
------
Features of a draw are the values of the key site (``locs`` by default) per component,
flattened to shape ``(K, F)`` and divided by the across-component sd of the pivot, so
that every feature counts on the scale the components are separated on. The cost of
sending draw component ``j`` to pivot slot ``k`` is the squared distance between the
two feature vectors; the permutation minimising the total cost is an optimal
assignment (Hungarian problem). It is solved exactly and vectorised over draws: a draw
whose row-wise closest components already form a permutation needs nothing more (the
sum of row minima is a lower bound); the others are solved by enumerating the ``K!``
permutations when ``K <= ENUMERATE_MAX_K`` and by
:func:`scipy.optimize.linear_sum_assignment` otherwise.

Without a given pivot it is found by a fixed point (Stephens 2000; the ECR family of
Papastamoulis & Iliopoulos 2010): start from the mean of the first chain's draws with
each draw's components sorted by the first feature, then repeat (match every draw to
the pivot, pivot = mean of the relabelled features) until a matching changes the
permutation of fewer than ``STABLE_FRACTION`` of the draws, or ``MAX_ROUNDS`` matchings
were done. The pivot returned is the one the final permutations were matched to.

Relabelling cannot merge chains that sit in genuinely different modes (not mere
permutations of each other). :func:`chains_disagree` checks this after relabelling:
per-chain component means more than ``MODE_SEPARATION`` pooled within-chain sds apart,
or a split R-hat above ``MODE_RHAT``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
from scipy.optimize import linear_sum_assignment

from pyrovi.diagnostics.draws import scalar_name

__all__ = [
    "MAX_ROUNDS",
    "MODE_RHAT",
    "MODE_SEPARATION",
    "STABLE_FRACTION",
    "RelabelInfo",
    "chains_disagree",
    "relabel",
    "relabel_pair",
]

MODE_SEPARATION = 3.0
"""Chains whose relabelled component means differ by more pooled sds sit in different modes."""

MODE_RHAT = 1.1
"""Split R-hat of a relabelled key-site element above which chains are said to disagree."""

MAX_ROUNDS = 10
"""Most matchings of the pivot fixed point; it stops earlier once it is stable."""

STABLE_FRACTION = 1e-3
"""The fixed point stops when a matching changes the permutation of fewer draws than this."""

ENUMERATE_MAX_K = 5
"""Up to this many components the assignment is solved by enumerating all permutations."""

_CHUNK = 8192
_ADVICE = "rerun NUTS with more warm-up or inspect the chains"


@dataclass(frozen=True, eq=False)
class RelabelInfo:
    """How the components of a mixture posterior were relabelled.

    Attributes
    ----------
    method : str
        Human-readable, e.g. ``"per-draw permutation to a pivot (Hungarian matching on
        locs), 3 rounds"``.
    pivot : numpy.ndarray
        Shape ``(K, F)``: the key-site features (unstandardised) every draw was matched
        to. Passing it back as ``pivot=`` reproduces the relabelling.
    fraction_permuted : float
        Share of draws whose permutation was not the identity.
    chain_modes_agree : bool
        False when, after relabelling, chains sit in different modes
        (see :func:`chains_disagree`).
    message : str
        One line for the report.
    key_site : str
        The site whose values defined the matching.
    disagreements : tuple of str
        One line per problem found by :func:`chains_disagree` (empty when they agree).
    other_fraction_permuted : float or None
        From :func:`relabel_pair`: share of the variational draws that were permuted.
    """

    method: str
    pivot: np.ndarray
    fraction_permuted: float
    chain_modes_agree: bool
    message: str
    key_site: str = ""
    disagreements: tuple[str, ...] = ()
    other_fraction_permuted: float | None = None


def relabel(
    idata: az.InferenceData,
    sites: Sequence[str],
    *,
    pivot: np.ndarray | None = None,
    key_site: str | None = None,
) -> tuple[az.InferenceData, RelabelInfo]:
    """Permute the mixture components of every draw to match a pivot.

    Parameters
    ----------
    idata : arviz.InferenceData
        With a ``posterior`` group; each site in ``sites`` has dims
        ``(chain, draw, K, ...)`` (the component axis first among its own dims).
        Not modified.
    sites : sequence of str
        The mixture sites permuted together, e.g. ``("weights", "locs", "scales")``;
        all have the same ``K``.
    pivot : numpy.ndarray, optional
        Features to match, shape ``(K, F)`` (or the key site's own shape, e.g.
        ``(K, D)`` or ``(K,)``), in the key site's units. Default: found by the fixed
        point described in the module docstring.
    key_site : str, optional
        The site (one of ``sites``) whose values are matched. Default ``"locs"`` if it
        is in ``sites``, else ``sites[0]``.

    Returns
    -------
    (arviz.InferenceData, RelabelInfo)
        A copy of ``idata`` with the sites' components permuted (other variables and
        groups unchanged) and how it was done.

    Raises
    ------
    ValueError
        Empty ``sites``, a site not in the posterior, a site without a component axis,
        sites with different ``K``, a ``key_site`` not in ``sites`` or a pivot of the
        wrong shape.

    Examples
    --------
    >>> import arviz as az, numpy as np
    >>> locs = np.array([[[0.0, 5.0], [5.0, 0.0], [0.1, 4.9]]])  # (chain, draw, K)
    >>> new, info = relabel(az.from_dict(posterior={"locs": locs}), ["locs"])
    >>> new.posterior["locs"].values[0].round(1).tolist()
    [[0.0, 5.0], [0.0, 5.0], [0.1, 4.9]]
    >>> round(info.fraction_permuted, 2)
    0.33
    """
    values, key, num_components = _read_sites(idata, sites, key_site)
    shape = values[key].shape
    feats = values[key].reshape(shape[0] * shape[1], num_components, -1).astype(float)
    num_feats = feats.shape[2]

    if pivot is not None:
        pivot_arr = np.asarray(pivot, dtype=float)
        if pivot_arr.size != num_components * num_feats or pivot_arr.shape[0] != num_components:
            raise ValueError(
                f"pivot has shape {pivot_arr.shape}; expected ({num_components}, {num_feats})"
                f" (components x flattened {key!r} values)"
            )
        pivot_arr = pivot_arr.reshape(num_components, num_feats)
        perms = _best_permutations(feats, pivot_arr)
        how = f"to a given pivot (Hungarian matching on {key})"
    else:
        pivot_arr, perms, rounds = _fixed_point(feats, shape[1])
        how = f"to a pivot (Hungarian matching on {key}), {rounds} round{'s' * (rounds != 1)}"

    identity = np.arange(num_components)
    fraction = float(np.mean(np.any(perms != identity, axis=1))) if perms.size else 0.0

    new = idata.copy()
    posterior = new.posterior
    for name in sites:
        var = posterior[name]
        arr = values[name]
        flat = arr.reshape(shape[0] * shape[1], num_components, -1)
        permuted = np.take_along_axis(flat, perms[:, :, None], axis=1).reshape(arr.shape)
        ordered = var.transpose("chain", "draw", ...)
        posterior[name] = ordered.copy(data=permuted).transpose(*var.dims)

    problems = chains_disagree(new, key) if shape[0] >= 2 else []
    agree = not problems
    num_draws = shape[0] * shape[1]
    message = (
        f"mixture components relabelled {how}: {100 * fraction:.1f}% of {num_draws} draws permuted"
    )
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        message = f"{problems[0]}{more}"
    elif shape[0] >= 2:
        message += f"; the {shape[0]} chains agree"
    info = RelabelInfo(
        method=f"per-draw permutation {how}",
        pivot=pivot_arr,
        fraction_permuted=fraction,
        chain_modes_agree=agree,
        message=message,
        key_site=key,
        disagreements=tuple(problems),
    )
    return new, info


def relabel_pair(
    vi: az.InferenceData,
    ref: az.InferenceData,
    sites: Sequence[str],
    *,
    key_site: str | None = None,
) -> tuple[az.InferenceData, az.InferenceData, RelabelInfo]:
    """Relabel reference draws, then variational draws to the same pivot.

    Parameters
    ----------
    vi : arviz.InferenceData
        Variational draws (usually one chain).
    ref : arviz.InferenceData
        Reference draws (e.g. NUTS); its fixed-point pivot labels both sides.
    sites : sequence of str
        Mixture sites permuted together (see :func:`relabel`).
    key_site : str, optional
        As in :func:`relabel`.

    Returns
    -------
    (arviz.InferenceData, arviz.InferenceData, RelabelInfo)
        Relabelled copies of ``vi`` and ``ref`` (component ``k`` is the same component
        on both sides) and the reference's :class:`RelabelInfo`, with
        ``other_fraction_permuted`` and the message extended by the share of
        variational draws permuted.
    """
    new_ref, info = relabel(ref, sites, key_site=key_site)
    new_vi, vi_info = relabel(vi, sites, pivot=info.pivot, key_site=info.key_site)
    share = 100 * vi_info.fraction_permuted
    note = f"; variational draws matched to the reference pivot: {share:.1f}% permuted"
    return (
        new_vi,
        new_ref,
        RelabelInfo(
            method=info.method,
            pivot=info.pivot,
            fraction_permuted=info.fraction_permuted,
            chain_modes_agree=info.chain_modes_agree,
            message=info.message + note,
            key_site=info.key_site,
            disagreements=info.disagreements,
            other_fraction_permuted=vi_info.fraction_permuted,
        ),
    )


def chains_disagree(idata: az.InferenceData, key_site: str) -> list[str]:
    """Say which chains sit in different modes of a (relabelled) mixture posterior.

    Call it on relabelled draws: raw draws differ between chains by mere permutations.

    Parameters
    ----------
    idata : arviz.InferenceData
        With ``posterior[key_site]`` of dims ``(chain, draw, K, ...)``.
    key_site : str
        The site compared across chains (e.g. ``"locs"``).

    Returns
    -------
    list of str
        One line per pair of chains whose component means differ by more than
        ``MODE_SEPARATION`` pooled within-chain sds in some element (largest first),
        e.g. ``"chains 0 and 1 sit in different modes (locs[1,0] differs by 7.2 sd):
        ..."``; if no pair is that far apart but some element has split R-hat above
        ``MODE_RHAT``, one line saying so. Empty when the chains agree or there is
        only one chain.
    """
    if key_site not in idata.posterior.data_vars:
        raise ValueError(f"site {key_site!r} is not in the posterior")
    values = np.asarray(idata.posterior[key_site].transpose("chain", "draw", ...).values)
    num_chains = values.shape[0]
    if num_chains < 2 or values.shape[1] < 4:
        return []
    site_shape = values.shape[2:]
    flat = values.reshape(num_chains, values.shape[1], -1).astype(float)
    means = flat.mean(axis=1)  # (chain, element)
    pooled_sd = np.sqrt(flat.var(axis=1, ddof=1).mean(axis=0))  # (element,)
    tiny = np.finfo(float).tiny
    problems: list[tuple[float, str]] = []
    for i, j in itertools.combinations(range(num_chains), 2):
        gap = np.abs(means[i] - means[j])
        sep = np.where(gap > 0, gap / np.maximum(pooled_sd, tiny), 0.0)
        worst = int(np.argmax(sep))
        if sep[worst] > MODE_SEPARATION:
            name = scalar_name(key_site, np.unravel_index(worst, site_shape))
            problems.append(
                (
                    float(sep[worst]),
                    f"chains {i} and {j} sit in different modes ({name} differs by"
                    f" {_fmt_sd(sep[worst])} sd): pooled draws mix modes; {_ADVICE}",
                )
            )
    if problems:
        problems.sort(key=lambda item: -item[0])
        return [line for _, line in problems]

    rhat = _rhat_all(flat)
    if np.any(rhat > MODE_RHAT):
        worst = int(np.nanargmax(rhat))
        name = scalar_name(key_site, np.unravel_index(worst, site_shape))
        return [
            f"split R-hat of {name} is {rhat[worst]:.2f} (> {MODE_RHAT}) after relabelling:"
            f" the chains may sit in different modes; {_ADVICE}"
        ]
    return []


# --------------------------------------------------------------------------- helpers


def _read_sites(
    idata: Any, sites: Sequence[str], key_site: str | None
) -> tuple[dict[str, np.ndarray], str, int]:
    """Validate the sites and read them as ``(chain, draw, K, ...)`` arrays."""
    if isinstance(sites, str):
        raise ValueError(f"sites must be a list of site names, not the string {sites!r}")
    sites = list(sites)
    if not sites:
        raise ValueError("relabel needs a non-empty list of mixture site names")
    if "posterior" not in idata.groups():
        raise ValueError("InferenceData has no posterior group")
    posterior = idata.posterior
    available = list(posterior.data_vars)
    unknown = [name for name in sites if name not in posterior.data_vars]
    if unknown:
        raise ValueError(
            f"unknown site(s) {', '.join(map(repr, unknown))}: the posterior has"
            f" {', '.join(map(repr, available))}"
        )
    if key_site is None:
        key_site = "locs" if "locs" in sites else sites[0]
    elif key_site not in sites:
        raise ValueError(f"key_site {key_site!r} must be one of the relabelled sites {sites}")
    values: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for name in sites:
        var = posterior[name]
        if "chain" not in var.dims or "draw" not in var.dims or var.ndim < 3:
            raise ValueError(
                f"site {name!r} has dims {var.dims}; expected (chain, draw, component, ...)"
            )
        arr = np.asarray(var.transpose("chain", "draw", ...).values)
        if arr.shape[0] * arr.shape[1] == 0:
            raise ValueError(f"site {name!r} has no draws")
        values[name] = arr
        sizes[name] = arr.shape[2]
    if len(set(sizes.values())) != 1:
        detail = ", ".join(f"{name}: {k}" for name, k in sizes.items())
        raise ValueError(f"sites disagree on the number of components ({detail})")
    if not np.issubdtype(values[key_site].dtype, np.number):
        raise ValueError(f"key site {key_site!r} is not numeric")
    return values, key_site, sizes[key_site]


def _feature_scale(pivot: np.ndarray) -> np.ndarray:
    """Across-component sd of each pivot feature; 1 where the pivot does not vary."""
    sd = pivot.std(axis=0)
    size = np.maximum(np.abs(pivot).max(axis=0), 1.0)
    return np.where(sd > 1e-12 * size, sd, 1.0)


def _fixed_point(feats: np.ndarray, draws_per_chain: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Pivot, permutations and number of matchings of the Stephens-style fixed point."""
    num, num_components, _ = feats.shape
    first = feats[:draws_per_chain]
    order = np.argsort(first[:, :, 0], axis=1, kind="stable")
    pivot = np.take_along_axis(first, order[:, :, None], axis=1).mean(axis=0)
    perms: np.ndarray | None = None
    rounds = 0
    for rounds in range(1, MAX_ROUNDS + 1):
        new_perms = _best_permutations(feats, pivot)
        changed = 1.0 if perms is None else float(np.mean(np.any(perms != new_perms, axis=1)))
        perms = new_perms
        if changed < STABLE_FRACTION or rounds == MAX_ROUNDS:
            break
        pivot = np.take_along_axis(feats, perms[:, :, None], axis=1).mean(axis=0)
    assert perms is not None
    return pivot, perms, rounds


def _best_permutations(feats: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """Optimal assignment of every draw's components to the pivot's slots.

    Parameters
    ----------
    feats : numpy.ndarray
        Shape ``(N, K, F)``.
    pivot : numpy.ndarray
        Shape ``(K, F)``.

    Returns
    -------
    numpy.ndarray
        Shape ``(N, K)`` of ints: ``perm[n, k]`` is the component of draw ``n`` sent to
        slot ``k``, i.e. relabelled ``x[n, k] = x[n, perm[n, k]]``.
    """
    num, num_components, _ = feats.shape
    if num == 0:
        return np.zeros((0, num_components), dtype=np.intp)
    scale = _feature_scale(pivot)
    x = feats / scale
    p = pivot / scale
    perms = np.empty((num, num_components), dtype=np.intp)
    for start in range(0, num, _CHUNK):
        block = slice(start, min(start + _CHUNK, num))
        perms[block] = _solve_block(_costs(x[block], p))
    return perms


def _costs(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Squared distances ``cost[n, k, j] = |p[k] - x[n, j]|^2``, shape ``(N, K, K)``."""
    cross = np.einsum("kf,njf->nkj", p, x)
    cost = (p * p).sum(-1)[None, :, None] + (x * x).sum(-1)[:, None, :] - 2.0 * cross
    return np.maximum(cost, 0.0)


def _solve_block(cost: np.ndarray) -> np.ndarray:
    """Minimum-cost permutations for a block of cost matrices ``(N, K, K)``."""
    num, num_components, _ = cost.shape
    perms = cost.argmin(axis=2)
    sorted_rows = np.sort(perms, axis=1)
    done = np.all(sorted_rows == np.arange(num_components), axis=1)
    todo = np.flatnonzero(~done)
    if todo.size == 0:
        return perms
    if num_components <= ENUMERATE_MAX_K:
        candidates = np.array(list(itertools.permutations(range(num_components))))
        flat = cost[todo].reshape(todo.size, -1)
        index = np.arange(num_components) * num_components + candidates  # (P, K)
        total = np.zeros((todo.size, len(candidates)))
        for k in range(num_components):
            total += flat[:, index[:, k]]
        perms[todo] = candidates[total.argmin(axis=1)]
    else:
        for n in todo:
            _, cols = linear_sum_assignment(cost[n])
            perms[n] = cols
    return perms


def _rhat_all(flat: np.ndarray) -> np.ndarray:
    """Rank-normalised split R-hat of each element of ``flat`` (chain, draw, element)."""
    return np.array([az.rhat(flat[:, :, e]) for e in range(flat.shape[2])], dtype=float)


def _fmt_sd(value: float) -> str:
    return f"{value:.1f}" if np.isfinite(value) and value < 1e6 else "many"
