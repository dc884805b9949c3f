"""log p(x) = ELBO(q) + KL(q || p(z|x)), made executable on the exact models."""

from __future__ import annotations

import pyro
import pytest
import torch
from torch.distributions import kl_divergence

import pyrovi
from pyrovi.models import beta_bernoulli, normal_normal


def _normal_q(fit: pyrovi.SVIFit) -> torch.distributions.Normal:
    """The AutoNormal guide's q(mu): unconstrained space is the identity for mu."""
    with pyro.settings.context(module_local_params=True):
        loc, scale = fit.guide.locs.mu.detach(), fit.guide.scales.mu.detach()
        return torch.distributions.Normal(loc.double(), scale.double())


def _beta_q(fit: pyrovi.SVIFit) -> torch.distributions.Beta:
    mean = fit.params["beta_guide.mean"].double()
    conc = fit.params["beta_guide.concentration"].double()
    return torch.distributions.Beta(mean * conc, (1 - mean) * conc)


@pytest.mark.parametrize("num_steps", [30, None])
def test_gap_equals_analytic_kl_normal_normal(num_steps: int | None) -> None:
    data = normal_normal.load_data()
    fit = pyrovi.fit(
        normal_normal.model,
        data,
        guide="mean_field",
        num_steps=num_steps,
        init="prior" if num_steps else "auto",
    )
    kl = float(kl_divergence(_normal_q(fit), normal_normal.exact_posterior(data)["mu"]).sum())
    gap = normal_normal.log_evidence(data) - fit.elbo
    # the ELBO is a 1000-particle Monte Carlo mean: 4 standard errors of slack
    assert gap == pytest.approx(kl, abs=4 * fit.elbo_se + 1e-6)
    assert gap > -4 * fit.elbo_se


@pytest.mark.parametrize("num_steps", [20, None])
def test_gap_equals_analytic_kl_beta_bernoulli(num_steps: int | None) -> None:
    data = beta_bernoulli.load_data()
    fit = pyrovi.fit(
        beta_bernoulli.model, data, guide=beta_bernoulli.beta_guide, num_steps=num_steps
    )
    kl = float(kl_divergence(_beta_q(fit), beta_bernoulli.exact_posterior(data)["p"]))
    gap = beta_bernoulli.log_evidence(data) - fit.elbo
    assert gap == pytest.approx(kl, abs=4 * fit.elbo_se + 1e-6)
    assert gap > -4 * fit.elbo_se


def test_mean_field_recovers_the_exact_normal_posterior() -> None:
    data = normal_normal.load_data()
    fit = pyrovi.fit(normal_normal.model, data, guide="mean_field")
    exact = normal_normal.exact_posterior(data)["mu"]
    q = _normal_q(fit)
    # the last window's average still carries the optimiser's noise at its final step
    # size: a few hundredths of a posterior sd (0.026 measured at worst)
    assert torch.all((q.mean - exact.mean).abs() <= 0.03 * exact.stddev)
    assert torch.all((q.stddev / exact.stddev - 1).abs() <= 0.03)
    assert normal_normal.log_evidence(data) - fit.elbo < 0.01


def _elbo_and_kl_grads(guide, model, data, params, kl_fn, num_particles):
    elbo = pyro.infer.Trace_ELBO(
        num_particles=num_particles, vectorize_particles=True, max_plate_nesting=2
    )
    loss = elbo.differentiable_loss(model, guide, **data)  # = -ELBO
    grad_elbo = torch.autograd.grad(-loss, params)
    grad_kl = torch.autograd.grad(kl_fn(), params)
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])  # noqa: E731
    return flat(grad_elbo), flat(grad_kl)


def test_elbo_gradient_is_minus_kl_gradient_normal_normal() -> None:
    data = normal_normal.load_data()
    exact = normal_normal.exact_posterior(data)["mu"]
    with pyro.settings.context(module_local_params=True):
        guide = pyrovi.make_guide("mean_field", normal_normal.model)
        guide(**data)
        params = [guide.locs.mu_unconstrained, guide.scales.mu_unconstrained]

        def kl() -> torch.Tensor:
            q = torch.distributions.Normal(guide.locs.mu, guide.scales.mu)
            return kl_divergence(
                q, torch.distributions.Normal(exact.mean.float(), exact.stddev.float())
            ).sum()

        g_elbo, g_kl = _elbo_and_kl_grads(guide, normal_normal.model, data, params, kl, 20000)
    cosine = torch.nn.functional.cosine_similarity(g_elbo, -g_kl, dim=0)
    assert cosine > 0.99


def test_elbo_gradient_is_minus_kl_gradient_beta_bernoulli() -> None:
    data = beta_bernoulli.load_data()
    exact = beta_bernoulli.exact_posterior(data)["p"]
    guide = beta_bernoulli.beta_guide
    guide(**data)  # create the parameters at their initial values
    store = pyro.get_param_store()
    params = [
        store["beta_guide.mean"].unconstrained(),
        store["beta_guide.concentration"].unconstrained(),
    ]

    def kl() -> torch.Tensor:
        mean, conc = store["beta_guide.mean"], store["beta_guide.concentration"]
        q = torch.distributions.Beta(mean * conc, (1 - mean) * conc)
        p = torch.distributions.Beta(exact.concentration1.float(), exact.concentration0.float())
        return kl_divergence(q, p)

    g_elbo, g_kl = _elbo_and_kl_grads(guide, beta_bernoulli.model, data, params, kl, 20000)
    cosine = torch.nn.functional.cosine_similarity(g_elbo, -g_kl, dim=0)
    assert cosine > 0.99
