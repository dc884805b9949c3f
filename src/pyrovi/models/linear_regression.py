"""Unstandardised simple linear regression: a badly scaled, strongly correlated posterior.

``beta ~ Normal(0, 100)`` (two coefficients), ``sigma ~ HalfNormal(50)`` and
``y[n] ~ Normal(beta[0] + beta[1] * x[n], sigma)``. With ``x`` far from zero (an IQ-like
covariate around 100) the intercept and slope are correlated at about -0.99 and their
posterior scales differ a hundredfold: the stress test for a fit loop and for the
comparison's ability to name what a mean-field guide misses. The model is written the
plain way (``beta[0] + beta[1] * x``), which is not batch safe.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch

from pyrovi.guides import GUIDE_FAMILIES
from pyrovi.models._data import pick_dataset
from pyrovi.models.spec import ModelSpec

DATASETS = ("iq_synthetic",)


def model(x: torch.Tensor, y: torch.Tensor | None = None) -> None:
    """Pyro model of ``y`` given the covariate ``x`` (both shape ``(N,)``)."""
    beta = pyro.sample("beta", dist.Normal(0.0, 100.0).expand([2]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(50.0))
    mean = beta[0] + beta[1] * x
    with pyro.plate("obs", x.shape[0]):
        pyro.sample("y", dist.Normal(mean, sigma), obs=y)


def simulate(
    seed: int = 0,
    N: int = 400,
    intercept: float = 26.0,
    slope: float = 0.6,
    sigma: float = 18.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Covariate ``x ~ Normal(100, 15)`` (an IQ scale) and ``y`` from the regression."""
    rng = np.random.default_rng(seed)
    x = rng.normal(100.0, 15.0, size=N)
    y = intercept + slope * x + rng.normal(0.0, sigma, size=N)
    data = {"x": torch.tensor(x, dtype=torch.float32), "y": torch.tensor(y, dtype=torch.float32)}
    truth = {"beta": torch.tensor([intercept, slope]), "sigma": torch.tensor(sigma)}
    return data, truth


def load_data(name: str | None = None) -> dict[str, Any]:
    """``iq_synthetic``: 400 simulated rows (seed 0) on the scale of the classic kid-IQ data."""
    pick_dataset(name, DATASETS, "linear_regression")
    return simulate(seed=0)[0]


SPEC = ModelSpec(
    name="linear_regression",
    model=model,
    guides=dict(GUIDE_FAMILIES),
    load_data=load_data,
    simulate=simulate,
    description="Unstandardised linear regression (intercept-slope correlation about -0.99)",
    datasets=DATASETS,
    site_roles={"beta": "global", "sigma": "global"},
)
