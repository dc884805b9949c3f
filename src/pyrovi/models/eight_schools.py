"""Eight schools, the hierarchical model whose centered form is a funnel.

``mu ~ Normal(0, 5)``, ``tau ~ HalfCauchy(5)`` and, for each school ``j``,
``theta[j] ~ Normal(mu, tau)``, ``y[j] ~ Normal(theta[j], sigma[j])`` with the standard
errors ``sigma`` known (Rubin 1981; the model of posteriordb's ``eight_schools_centered``).

**Centered** (:func:`centered`, registry ``eight_schools``) samples ``theta`` itself. Its
posterior is Neal's funnel: as ``tau`` shrinks, every ``theta[j]`` is squeezed towards
``mu``, so in the unconstrained coordinates ``(mu, log tau, theta)`` the spread of
``theta`` changes by orders of magnitude along ``log tau``. No Gaussian has that shape,
and the neck of the funnel is where NUTS diverges: this is the posterior on which no rung
of the guide ladder can be trusted, and the ladder has to say so.

**Non-centered** (:func:`noncentered`, registry ``eight_schools_noncentered``) samples
``theta_tilde[j] ~ Normal(0, 1)`` and sets ``theta = mu + tau * theta_tilde``: the same
model, a posterior with no funnel, that Gaussian guides and NUTS both handle. It is the
reparameterisation the ladder recommends (Pyro does it for any model with
``pyro.infer.reparam.LocScaleReparam``). :func:`centered_draws` maps its draws to the
centered model's sites, which makes the non-centered NUTS run the reference of the
centered fits.
"""

from __future__ import annotations

from typing import Any

import arviz as az
import pyro
import pyro.distributions as dist
import torch

from pyrovi.guides import GUIDE_FAMILIES
from pyrovi.models._data import pick_dataset, read_json
from pyrovi.models.spec import ModelSpec

DATASETS = ("eight_schools",)


def centered(y: torch.Tensor, sigma: torch.Tensor) -> None:
    """The centered model: ``theta[j] ~ Normal(mu, tau)`` sampled directly (a funnel)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(y)):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def noncentered(y: torch.Tensor, sigma: torch.Tensor) -> None:
    """The non-centered model: ``theta = mu + tau * theta_tilde`` (deterministic)."""
    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("school", len(y)):
        theta_tilde = pyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = pyro.deterministic("theta", mu + tau * theta_tilde)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def centered_draws(idata: az.InferenceData) -> az.InferenceData:
    """Draws of the non-centered model as draws of the centered one (``mu``, ``tau``,
    ``theta``): the same posterior, so a reference for centered fits."""
    post = idata.posterior
    mu, tau = post["mu"].values, post["tau"].values
    theta = mu[..., None] + tau[..., None] * post["theta_tilde"].values
    return az.from_dict(posterior={"mu": mu, "tau": tau, "theta": theta})


def load_data(name: str | None = None) -> dict[str, Any]:
    """Bundled data: ``eight_schools`` (Rubin 1981), the estimated coaching effects ``y``
    and their standard errors ``sigma``."""
    pick_dataset(name, DATASETS, "eight_schools")
    raw = read_json("eight_schools.json")
    return {"y": torch.tensor(raw["y"], dtype=torch.float64),
            "sigma": torch.tensor(raw["sigma"], dtype=torch.float64)}


def simulate(seed: int = 0, J: int = 8, mu: float = 4.0, tau: float = 3.0
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """``J`` schools with eight schools' standard errors (cycled), effects drawn from
    ``Normal(mu, tau)`` and one estimate per school."""
    gen = torch.Generator().manual_seed(seed)
    sigma = torch.tensor(read_json("eight_schools.json")["sigma"], dtype=torch.float64)
    sigma = sigma.repeat(J // len(sigma) + 1)[:J]
    theta = mu + tau * torch.randn(J, generator=gen, dtype=torch.float64)
    y = theta + sigma * torch.randn(J, generator=gen, dtype=torch.float64)
    return {"y": y, "sigma": sigma}, {"mu": torch.tensor(mu), "tau": torch.tensor(tau),
                                      "theta": theta}


SPEC = ModelSpec(
    name="eight_schools",
    model=centered,
    guides=dict(GUIDE_FAMILIES),
    load_data=load_data,
    simulate=simulate,
    description="hierarchical eight schools, centered: a funnel no Gaussian guide fits",
    datasets=DATASETS,
    site_roles={"mu": "global", "tau": "global", "theta": "global"},
)

SPEC_NONCENTERED = ModelSpec(
    name="eight_schools_noncentered",
    model=noncentered,
    guides=dict(GUIDE_FAMILIES),
    load_data=load_data,
    simulate=simulate,
    description="hierarchical eight schools, non-centered: the funnel reparameterised away",
    datasets=DATASETS,
    site_roles={"mu": "global", "tau": "global", "theta_tilde": "global"},
)
