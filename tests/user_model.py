"""A user's own Pyro model, not in the registry: used by the end-to-end tests."""

import pyro
import pyro.distributions as dist
import torch


def model(x: torch.Tensor, y: torch.Tensor) -> None:
    """Unstandardised regression written the plain way (not batch safe)."""
    b = pyro.sample("b", dist.Normal(0.0, 100.0).expand([2]).to_event(1))
    s = pyro.sample("s", dist.HalfNormal(50.0))
    with pyro.plate("n", x.shape[0]):
        pyro.sample("y", dist.Normal(b[0] + b[1] * x, s), obs=y)
