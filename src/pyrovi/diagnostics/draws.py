"""Flatten posterior draws into named scalar parameters.

Every diagnostic in :mod:`pyrovi.diagnostics` works on scalar parameters named
``site[i,j]`` (zero-based; a scalar site keeps its bare name, a vector site gives
``mu[0]``, ``mu[1]``, ...). This module turns an :class:`arviz.InferenceData` group
into that form and stacks named draws into a matrix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["scalar_draws", "stack_draws"]


def scalar_name(site: str, index: tuple[int, ...]) -> str:
    """Name of one element of a site: ``site`` for a scalar, ``site[i,j]`` otherwise."""
    if not index:
        return site
    return f"{site}[{','.join(str(i) for i in index)}]"


def flatten_dataset(
    dataset: Any, lead_dims: Sequence[str] = (), var_names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Flatten the variables of an :class:`xarray.Dataset` into scalar parameters.

    Parameters
    ----------
    dataset : xarray.Dataset
        Variables with dims ``(*lead_dims, *site_dims)``.
    lead_dims : sequence of str
        Dimensions kept on every output array (``("chain", "draw")`` for draws, ``()``
        for per-parameter summaries such as R-hat).
    var_names : iterable of str, optional
        Variables to keep, in this order. Default: all, in dataset order.

    Returns
    -------
    dict of str to numpy.ndarray
        ``site[i,j]`` -> array of shape ``[len(d) for d in lead_dims]``; elements of each
        site in C order.
    """
    names = list(dataset.data_vars) if var_names is None else list(var_names)
    missing = [name for name in names if name not in dataset.data_vars]
    if missing:
        raise KeyError(f"variables not found: {', '.join(missing)}")
    out: dict[str, np.ndarray] = {}
    for name in names:
        var = dataset[name]
        absent = [dim for dim in lead_dims if dim not in var.dims]
        if absent:
            raise ValueError(f"variable {name!r} lacks the dimension(s) {', '.join(absent)}")
        values = np.asarray(var.transpose(*lead_dims, ...).values)
        site_shape = values.shape[len(lead_dims) :]
        for index in np.ndindex(*site_shape):
            out[scalar_name(name, index)] = np.array(values[(Ellipsis, *index)])
    return out


def scalar_draws(
    idata: Any, group: str = "posterior", var_names: Iterable[str] | None = None
) -> dict[str, np.ndarray]:
    """Split the draws of an InferenceData group into named scalar parameters.

    Parameters
    ----------
    idata : arviz.InferenceData
        Holds ``group`` with dims ``(chain, draw, *site_dims)``.
    group : str, default "posterior"
        The group to read.
    var_names : iterable of str, optional
        Sites to keep, in this order. Default: every variable, in dataset order.

    Returns
    -------
    dict of str to numpy.ndarray
        ``"site[i,j]"`` (zero-based; ``"site"`` for a scalar site) -> draws of shape
        ``(chain, draw)``. Variables in dataset order, elements of a site in C order.

    Examples
    --------
    >>> import arviz as az, numpy as np
    >>> idata = az.from_dict(posterior={"mu": np.zeros((2, 5, 3))})
    >>> list(scalar_draws(idata))
    ['mu[0]', 'mu[1]', 'mu[2]']
    """
    if group not in idata.groups():
        raise KeyError(f"InferenceData has no group {group!r} (groups: {idata.groups()})")
    return flatten_dataset(idata[group], ("chain", "draw"), var_names)


def stack_draws(draws: Mapping[str, np.ndarray], names: Sequence[str]) -> np.ndarray:
    """Stack named draws into a matrix with one column per parameter.

    Parameters
    ----------
    draws : mapping of str to numpy.ndarray
        As returned by :func:`scalar_draws`; every array has the same number of elements.
    names : sequence of str
        Parameters to stack, in column order.

    Returns
    -------
    numpy.ndarray
        Shape ``(chain * draw, len(names))``; rows in C order of ``(chain, draw)``.
    """
    names = list(names)
    if not names:
        raise ValueError("stack_draws needs at least one parameter name")
    columns = [np.asarray(draws[name]).reshape(-1) for name in names]
    sizes = {column.size for column in columns}
    if len(sizes) != 1:
        raise ValueError(f"parameters have different numbers of draws: {sorted(sizes)}")
    return np.column_stack(columns)
