"""Beta prior, Bernoulli likelihood: the exact reference model on a bounded latent.

``p ~ Beta(alpha, beta)`` and ``x[n] ~ Bernoulli(p)``. The posterior is
``Beta(alpha + s, beta + n - s)`` and ``log p(x) = log B(alpha + s, beta + n - s) -
log B(alpha, beta)``. The hand-written :func:`beta_guide` is a Beta family, so its KL to
the exact posterior is analytic.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

from pyrovi.guides import GUIDE_FAMILIES, GuideFamily, register_family
from pyrovi.models._data import pick_dataset, read_json
from pyrovi.models.spec import ModelSpec

DATASETS = ("placenta_previa",)


def model(
    x: torch.Tensor, alpha: torch.Tensor | float = 1.0, beta: torch.Tensor | float = 1.0
) -> None:
    """Pyro model; ``x`` is a vector of 0/1 outcomes."""
    p = pyro.sample("p", dist.Beta(torch.as_tensor(alpha), torch.as_tensor(beta)))
    with pyro.plate("obs", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(p), obs=x)


def beta_guide(
    x: torch.Tensor, alpha: torch.Tensor | float = 1.0, beta: torch.Tensor | float = 1.0
) -> None:
    """Hand-written guide ``q(p) = Beta(m c, (1 - m) c)``: learnable mean ``m`` and
    concentration ``c``.

    The mean/concentration parametrisation is far better conditioned for gradient
    ascent than ``(a, b)``; ``c`` starts at the number of observations, the scale of the
    posterior's concentration ``alpha + beta + n``, and ``m`` at 1/2.
    """
    mean = pyro.param("beta_guide.mean", torch.tensor(0.5), constraint=constraints.unit_interval)
    concentration = pyro.param("beta_guide.concentration", torch.tensor(float(x.shape[0])),
                               constraint=constraints.positive)
    pyro.sample("p", dist.Beta(mean * concentration, (1.0 - mean) * concentration))


def _counts(data: dict[str, Any]) -> tuple[float, float, float, float]:
    x = torch.as_tensor(data["x"], dtype=torch.float64)
    alpha = float(data.get("alpha", 1.0))
    beta = float(data.get("beta", 1.0))
    return alpha, beta, float(x.sum()), float(x.numel())


def exact_posterior(data: dict[str, Any]) -> dict[str, dist.Distribution]:
    """Closed-form posterior ``{"p": Beta(alpha + s, beta + n - s)}``."""
    alpha, beta, s, n = _counts(data)
    return {"p": dist.Beta(torch.tensor(alpha + s, dtype=torch.float64),
                           torch.tensor(beta + n - s, dtype=torch.float64))}


def log_evidence(data: dict[str, Any]) -> float:
    """Exact ``log p(x) = log B(alpha + s, beta + n - s) - log B(alpha, beta)``."""
    alpha, beta, s, n = _counts(data)

    def log_beta_fn(a: float, b: float) -> float:
        return float(torch.lgamma(torch.tensor(a, dtype=torch.float64))
                     + torch.lgamma(torch.tensor(b, dtype=torch.float64))
                     - torch.lgamma(torch.tensor(a + b, dtype=torch.float64)))

    return log_beta_fn(alpha + s, beta + n - s) - log_beta_fn(alpha, beta)


def simulate(
    seed: int = 0, N: int = 100, alpha: float = 1.0, beta: float = 1.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw ``p`` from the prior and ``N`` Bernoulli outcomes."""
    rng = np.random.default_rng(seed)
    p = float(rng.beta(alpha, beta))
    x = torch.as_tensor(rng.random(N) < p, dtype=torch.float32)
    return {"x": x, "alpha": alpha, "beta": beta}, {"p": torch.tensor(p)}


def load_data(name: str | None = None) -> dict[str, Any]:
    """Bundled data: ``placenta_previa`` (Gelman et al., BDA3 §2.4): 437 girls in 980 births."""
    pick_dataset(name, DATASETS, "beta_bernoulli")
    raw = read_json("placenta_previa.json")
    x = torch.zeros(raw["births"])
    x[: raw["girls"]] = 1.0
    return {"x": x, "alpha": 1.0, "beta": 1.0}


BETA_FAMILY = register_family(GuideFamily(
    "beta", lambda _model: beta_guide, represents_correlations=True,
    description="hand-written Beta guide of beta_bernoulli: the exact posterior's family",
))
"""The hand-written :func:`beta_guide` as a guide family record (one latent: nothing to
correlate, and the family holds the exact posterior)."""

SPEC = ModelSpec(
    name="beta_bernoulli",
    model=model,
    guides={**GUIDE_FAMILIES, BETA_FAMILY.name: BETA_FAMILY.build},
    load_data=load_data,
    simulate=simulate,
    description="Beta prior, Bernoulli likelihood (exact posterior and evidence)",
    datasets=DATASETS,
    exact_posterior=exact_posterior,
    log_evidence=log_evidence,
    site_roles={"p": "global"},
)
