"""Missing measurements: a filled table and a mask, never dropped rows.

pyrovi refuses NaN in a model's data (:func:`pyrovi.infer.util.as_tensor_data`), so a
model with missing values takes the measurements with missing entries filled (0) and a
boolean ``mask`` of the same shape, and masks its likelihood (``Distribution.mask``): a
missing value contributes nothing and is not imputed. The latent factor models share the
two pieces here: turning a table with NaN into ``(values, mask)``, and the input an
amortized encoder sees for each person (values zeroed where missing, then the mask).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = ["masked_features", "split_missing"]


def split_missing(values: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a table with NaN (or None) for missing into filled values and a mask.

    Parameters
    ----------
    values : array-like, torch.Tensor or pandas.DataFrame, shape (N, P)
        Measurements, NaN where missing.

    Returns
    -------
    values : torch.Tensor of float64, shape (N, P)
        The measurements with missing entries set to 0.
    mask : torch.Tensor of bool, shape (N, P)
        True where observed.

    Raises
    ------
    ValueError
        If the table is not two-dimensional or holds infinite values.
    """
    if isinstance(values, pd.DataFrame):
        array = values.to_numpy(dtype=float, na_value=np.nan)
    else:
        array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError("expected a two-dimensional (2-D) table (people x measurements), "
                         f"got shape {array.shape}")
    mask = ~np.isnan(array)
    if np.isinf(array[mask]).any():
        raise ValueError("the measurements hold infinite values")
    return torch.as_tensor(np.where(mask, array, 0.0)), torch.as_tensor(mask)


def masked_features(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """An encoder's input per person: the values zeroed where missing, then the mask.

    Parameters
    ----------
    values : torch.Tensor, shape (N, P)
        Measurements (any value where missing); integer values become the default dtype.
    mask : torch.Tensor or None, shape (N, P)
        True where observed; None: everything observed.

    Returns
    -------
    torch.Tensor, shape (N, 2 P)
    """
    values = torch.as_tensor(values)
    if not values.is_floating_point():
        values = values.to(torch.get_default_dtype())
    mask = torch.ones_like(values) if mask is None else torch.as_tensor(mask).to(values.dtype)
    return torch.cat([values * mask, mask], dim=-1)
