"""Gaussian mean with known noise and a Gaussian prior: the exact reference model.

``mu[d] ~ Normal(prior_loc, prior_scale)`` independently for ``d < D`` and
``x[n, d] ~ Normal(mu[d], sigma[d])`` for ``n < N``. The posterior of each ``mu[d]``
is Gaussian and the log evidence is available in closed form, so every term of
``log p(x) = ELBO(q) + KL(q || p(mu | x))`` can be computed exactly.
"""

from __future__ import annotations

from typing import Any

import pyro
import pyro.distributions as dist
import torch

from pyrovi.guides import GUIDE_FAMILIES
from pyrovi.models._data import pick_dataset, read_json
from pyrovi.models.spec import ModelSpec

DATASETS = ("eight_schools",)


def model(
    x: torch.Tensor,
    sigma: torch.Tensor | float = 1.0,
    prior_loc: torch.Tensor | float = 0.0,
    prior_scale: torch.Tensor | float = 10.0,
) -> None:
    """Pyro model; ``x`` has shape ``(N, D)``, the other arguments broadcast to ``(D,)``."""
    num_obs, dim = x.shape
    with pyro.plate("dim", dim, dim=-1):
        mu = pyro.sample("mu", dist.Normal(prior_loc, prior_scale))
        with pyro.plate("obs", num_obs, dim=-2):
            pyro.sample("x", dist.Normal(mu, sigma), obs=x)


def _posterior_params(data: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.as_tensor(data["x"], dtype=torch.float64)
    num_obs, dim = x.shape
    sigma = torch.as_tensor(data.get("sigma", 1.0), dtype=torch.float64).expand(dim)
    loc0 = torch.as_tensor(data.get("prior_loc", 0.0), dtype=torch.float64).expand(dim)
    scale0 = torch.as_tensor(data.get("prior_scale", 10.0), dtype=torch.float64).expand(dim)
    precision = scale0**-2 + num_obs * sigma**-2
    loc = (loc0 * scale0**-2 + x.sum(0) * sigma**-2) / precision
    return loc, precision.rsqrt()


def exact_posterior(data: dict[str, Any]) -> dict[str, dist.Distribution]:
    """Closed-form posterior: ``{"mu": Normal(loc, scale)}`` with batch shape ``(D,)``."""
    loc, scale = _posterior_params(data)
    return {"mu": dist.Normal(loc, scale)}


def log_evidence(data: dict[str, Any]) -> float:
    """Exact ``log p(x)`` by the candidate's formula ``p(x|mu) p(mu) / p(mu|x)`` at any mu."""
    x = torch.as_tensor(data["x"], dtype=torch.float64)
    dim = x.shape[1]
    sigma = torch.as_tensor(data.get("sigma", 1.0), dtype=torch.float64).expand(dim)
    loc0 = torch.as_tensor(data.get("prior_loc", 0.0), dtype=torch.float64).expand(dim)
    scale0 = torch.as_tensor(data.get("prior_scale", 10.0), dtype=torch.float64).expand(dim)
    loc, scale = _posterior_params(data)
    log_lik = dist.Normal(loc, sigma).log_prob(x).sum()
    log_prior = dist.Normal(loc0, scale0).log_prob(loc).sum()
    log_post = dist.Normal(loc, scale).log_prob(loc).sum()
    return float(log_lik + log_prior - log_post)


def simulate(
    seed: int = 0, N: int = 50, D: int = 3, sigma: float = 1.0, prior_scale: float = 2.0
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Draw ``mu`` from the prior and ``N`` observations of dimension ``D``."""
    gen = torch.Generator().manual_seed(seed)
    mu = prior_scale * torch.randn(D, generator=gen)
    x = mu + sigma * torch.randn(N, D, generator=gen)
    data = {"x": x, "sigma": torch.full((D,), float(sigma)), "prior_loc": 0.0,
            "prior_scale": float(prior_scale)}
    return data, {"mu": mu}


def load_data(name: str | None = None) -> dict[str, Any]:
    """Bundled data: ``eight_schools`` (Rubin 1981), one observation of dimension 8.

    The school effects get independent ``Normal(prior_loc, prior_scale)`` priors with the
    hyperparameters fixed as stored in the file, which makes the model conjugate.
    """
    pick_dataset(name, DATASETS, "normal_normal")
    raw = read_json("eight_schools.json")
    return {
        "x": torch.tensor([raw["y"]], dtype=torch.float32),
        "sigma": torch.tensor(raw["sigma"], dtype=torch.float32),
        "prior_loc": float(raw["prior_loc"]),
        "prior_scale": float(raw["prior_scale"]),
    }


SPEC = ModelSpec(
    name="normal_normal",
    model=model,
    guides=dict(GUIDE_FAMILIES),
    load_data=load_data,
    simulate=simulate,
    description="Gaussian mean, known noise, Gaussian prior (exact posterior and evidence)",
    datasets=DATASETS,
    exact_posterior=exact_posterior,
    log_evidence=log_evidence,
    site_roles={"mu": "global"},
)
