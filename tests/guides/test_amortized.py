"""The amortized guide: an encoder of each person's data gives that person's q.

On a one-factor model with Gaussian measurements and known noise the exact posterior of a
person's score given the loadings is Gaussian, with a mean linear in the person's data, so
an encoder (which can represent a linear map) must reproduce it: these tests compare the
encoder's output with the closed form, not with another approximation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.optimize
import torch

import pyrovi
from pyrovi.guides import AmortizedGuide, amortized_family, get_family, register_family

SIGMA = 0.5
LOADINGS = torch.tensor([1.0, 0.8, 1.2, 0.5])


def factor_model(x: torch.Tensor, mask: torch.Tensor, batch_size: int | None = None) -> None:
    """theta_i ~ N(0, 1); x_ij ~ N(w_j theta_i, SIGMA²) where observed; w_j > 0."""
    w = pyro.sample("w", dist.HalfNormal(2.0).expand([x.shape[1]]).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
        theta = pyro.sample("theta", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(theta[:, None] * w, SIGMA).mask(mask[idx]).to_event(1),
                    obs=x[idx])


def features(data: dict) -> torch.Tensor:
    mask = data["mask"].to(data["x"].dtype)
    return torch.cat([data["x"] * mask, mask], -1)


FAMILY = register_family(amortized_family("amortized_test_factor", ["theta"], features))


def simulate(n: int, seed: int, missing: float = 0.0) -> tuple[dict, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    theta = torch.randn(n, generator=gen)
    x = theta[:, None] * LOADINGS + SIGMA * torch.randn(n, 4, generator=gen)
    mask = torch.rand(n, 4, generator=gen) >= missing
    return {"x": torch.where(mask, x, 0.0), "mask": mask}, theta


def exact_conditional(data: dict, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and sd of theta_i given loadings w (observed entries only)."""
    mask = data["mask"].to(w.dtype)
    x = data["x"].to(w.dtype)
    precision = 1.0 + (mask * w**2).sum(-1) / SIGMA**2
    return (mask * x * w).sum(-1) / SIGMA**2 / precision, precision.rsqrt()


def mean_field_optimum(data: dict) -> float:
    """The largest ELBO of the per-person family (``mean_field``: q(log w_j) and q(theta_i)
    independent Gaussians), exactly.

    Every term of this ELBO is closed form: with w_j = exp(u_j), u_j ~ N(a_j, b_j²),
    E[w_j] = exp(a_j + b_j²/2) and E[w_j²] = exp(2a_j + 2b_j²); the entropy of w_j is that
    of u_j plus a_j. Given q(w), the best q(theta_i) is the exact conditional of
    :func:`exact_conditional` with E[w_j²] in the precision and E[w_j] in the mean, so only
    the eight (a_j, log b_j) are left to L-BFGS. On the module's data this gives -703.724;
    ``pyrovi.fit(..., guide="mean_field")`` run to its stop reaches -703.765 in 5,400 steps.
    """
    x, mask = data["x"].double(), data["mask"].double()

    def negative_elbo(params: torch.Tensor) -> torch.Tensor:
        a, b2 = params[:4], torch.exp(2 * params[4:])
        mean_w, mean_w2 = torch.exp(a + b2 / 2), torch.exp(2 * a + 2 * b2)
        precision = 1 + (mask * mean_w2).sum(-1) / SIGMA**2
        m, s2 = (mask * x * mean_w).sum(-1) / SIGMA**2 / precision, 1 / precision
        square = x**2 - 2 * x * m[:, None] * mean_w + (m**2 + s2)[:, None] * mean_w2
        likelihood = (mask * (-0.5 * math.log(2 * math.pi * SIGMA**2)
                              - square / (2 * SIGMA**2))).sum()
        theta = (-(m**2 + s2) / 2 + 0.5 + 0.5 * torch.log(s2)).sum()  # prior + entropy
        w = (-0.5 * math.log(2 * math.pi) - mean_w2 / 8  # HalfNormal(2) prior + entropy
             + 0.5 * torch.log(2 * math.pi * math.e * b2) + a).sum()
        return -(likelihood + theta + w)

    def value_and_grad(p: np.ndarray) -> tuple[float, np.ndarray]:
        params = torch.tensor(p, dtype=torch.float64, requires_grad=True)
        value = negative_elbo(params)
        value.backward()
        return float(value.detach()), params.grad.numpy()

    result = scipy.optimize.minimize(value_and_grad, np.r_[np.zeros(4), np.full(4, -2.0)],
                                     jac=True, method="L-BFGS-B",
                                     options={"gtol": 1e-10, "ftol": 1e-15})
    assert result.success, result.message
    return -float(result.fun)


@pytest.fixture(scope="module")
def amortized_fit() -> pyrovi.infer.SVIFit:
    pyro.set_rng_seed(0)
    data, _ = simulate(200, seed=1, missing=0.2)
    return pyrovi.fit(factor_model, data, guide=FAMILY.name)


def test_the_record_is_amortized_and_preconditioned() -> None:
    family = get_family("amortized_test_factor")
    assert family.amortized and family.preconditioned and not family.represents_correlations
    assert isinstance(family.build(factor_model), AmortizedGuide)


@pytest.mark.slow
def test_encoder_matches_the_exact_conditional_with_missing_values(amortized_fit) -> None:
    fit = amortized_fit
    assert fit.converged
    w = torch.as_tensor(fit.posterior(400).posterior["w"].values.reshape(-1, 4).mean(0))
    assert torch.allclose(w, LOADINGS.double(), atol=0.15)
    new, _ = simulate(300, seed=2, missing=0.3)  # people the guide never saw
    with fit.in_force(), torch.no_grad():
        loc, scale = fit.guide.encode(new)
    mean, sd = exact_conditional(new, w)
    # the encoder is a function of (x * mask, mask): it must learn the missingness too.
    # Typical people are reproduced to a few hundredths of a posterior sd; people with one
    # answer out of four are rare in training and off by up to ~0.8 sd (amortization).
    z = ((loc[:, 0] - mean) / sd).abs()
    assert z.median() < 0.1 and z.quantile(0.95) < 0.5
    ratio = ((scale[:, 0] / sd) - 1).abs()
    assert ratio.median() < 0.05 and ratio.quantile(0.95) < 0.15


@pytest.mark.slow
def test_amortized_elbo_is_at_most_the_per_person_elbo(amortized_fit) -> None:
    per_person = mean_field_optimum(amortized_fit.data)
    gap = per_person - amortized_fit.elbo  # the amortization gap, >= 0 at the optima
    # Linear-Gaussian posterior: the encoder can be exact, so the gap is small (0.25 nats
    # measured); the amortized fit stops within about 0.1 nats of its own optimum (the stop
    # is confirmed by the paired ELBO gain over ten windows), hence the slack below zero.
    assert -0.2 < gap < 2.0


@pytest.mark.slow
def test_minibatched_fit_draws_every_person(amortized_fit) -> None:
    data = {**amortized_fit.data, "batch_size": 50}
    fit = pyrovi.fit(factor_model, data, guide=FAMILY.name, batch_size=50, num_epochs=40)
    draws = fit.posterior(100).posterior
    assert draws["theta"].shape == (1, 100, 200)
    assert np.isfinite(fit.log_weights(20)).all()
    w = draws["w"].values.reshape(-1, 4).mean(0)
    assert np.allclose(w, LOADINGS.numpy(), atol=0.2)


@pytest.mark.slow
def test_save_and_load_keep_the_encoder(amortized_fit, tmp_path: Path) -> None:
    path = tmp_path / "fit.pt"
    amortized_fit.save(path)
    loaded = pyrovi.load_fit(path, factor_model)
    with torch.no_grad(), amortized_fit.in_force():
        before = amortized_fit.guide.encode(amortized_fit.data)
    with torch.no_grad(), loaded.in_force():
        after = loaded.guide.encode(loaded.data)
    assert torch.equal(before[0], after[0]) and torch.equal(before[1], after[1])


def test_a_local_site_outside_the_plate_is_refused() -> None:
    guide = AmortizedGuide(factor_model, ["w"], features)
    data, _ = simulate(10, seed=0)
    with pytest.raises(ValueError, match="not inside the plate 'data'"):
        guide(**data)
    with pytest.raises(ValueError, match="no sample site"):
        AmortizedGuide(factor_model, ["nope"], features)(**data)
