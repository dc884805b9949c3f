"""Saving and loading :class:`~pyrovi.infer.svi.SVIFit` results.

Files hold tensors and plain Python values only, so they load with
``torch.load(weights_only=True)`` (the default from torch 2.6 on).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch

from pyrovi.guides import make_guide
from pyrovi.infer.svi import SVIFit, _initialise_for_load

FORMAT_VERSION = 1


def save_fit(fit_result: SVIFit, path: str | os.PathLike[str]) -> None:
    """Write ``fit_result`` to ``path`` atomically (temporary file, then rename)."""
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "guide_name": fit_result.guide_name,
        "elbo_name": fit_result.elbo_name,
        "losses": torch.as_tensor(fit_result.losses, dtype=torch.float64),
        "elbo": fit_result.elbo,
        "elbo_se": fit_result.elbo_se,
        "converged": fit_result.converged,
        "seed": fit_result.seed,
        "data": {k: v for k, v in fit_result.data.items()
                 if isinstance(v, torch.Tensor | int | float | bool | str)},
        "params": fit_result.params,
        "module_local_params": fit_result.module_local_params,
    }
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_fit(
    path: str | os.PathLike[str],
    model: Callable[..., Any],
    guide: Callable[..., Any] | None = None,
) -> SVIFit:
    """Load a fit written by :meth:`SVIFit.save`.

    Parameters
    ----------
    path : str or path
        The file written by ``save``.
    model : callable
        The same Pyro model the fit was made with.
    guide : callable, optional
        Required when the fit used a custom guide callable (it cannot be stored).

    Raises
    ------
    ValueError
        If the file is not a pyrovi fit, or a custom guide is needed and not given.
    """
    try:
        payload = torch.load(path, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{path}: not a readable pyrovi fit file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: not a pyrovi fit file (format version mismatch)")
    name = payload["guide_name"]
    data = payload["data"]
    if name == "custom" and guide is None:
        raise ValueError(f"{path}: the fit used a custom guide; pass it as guide=")
    local = bool(payload.get("module_local_params", True))
    with pyro.settings.context(module_local_params=local):  # as in fit()
        guide_obj = guide if name == "custom" else _initialise_for_load(
            make_guide(name, model), name, model, data, payload["params"])
        if isinstance(guide_obj, torch.nn.Module):
            with poutine.block(), torch.no_grad():
                guide_obj(**data)
            guide_obj.load_state_dict(payload["params"])
    return SVIFit(
        model=model,
        guide=guide_obj,
        data=data,
        losses=np.asarray(payload["losses"].numpy()),
        elbo=float(payload["elbo"]),
        elbo_se=float(payload["elbo_se"]),
        guide_name=name,
        elbo_name=payload["elbo_name"],
        converged=bool(payload["converged"]),
        seed=int(payload["seed"]),
        params=payload["params"],
        module_local_params=local,
    )
