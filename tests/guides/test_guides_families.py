"""Guide families as records: the table, the preconditioned Gaussian guides (a start that
is exact, re-centring that leaves q unchanged), and hand-written guides found by name."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovi
from pyrovi.guides import (
    FAMILIES,
    AutoWhitenedNormal,
    GaussianStart,
    GuideFamily,
    MeanFieldNormal,
    get_family,
    register_family,
)
from pyrovi.models import beta_bernoulli, gmm


def model(y: torch.Tensor) -> None:
    mu = pyro.sample("mu", dist.Normal(torch.zeros(2), 10.0).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfNormal(3.0))
    with pyro.plate("n", len(y)):
        pyro.sample("y", dist.Normal(mu[0] + mu[1], sigma), obs=y)


DATA = {"y": torch.tensor([1.0, 2.0, 0.5, 1.5])}


def a_start() -> GaussianStart:
    gen = torch.Generator().manual_seed(0)
    factor = torch.randn(3, 3, generator=gen)
    cov = factor @ factor.T + 0.5 * torch.eye(3)
    loc = torch.tensor([1.0, -2.0, 0.3])
    sites = {"mu": (0, 2, torch.Size([2])), "sigma": (2, 3, torch.Size([]))}
    return GaussianStart(loc, torch.linalg.cholesky(cov), sites, "laplace")


def test_the_table_is_consistent() -> None:
    for name, family in FAMILIES.items():
        assert isinstance(family, GuideFamily) and family.name == name
        assert family.richer is None or family.richer in FAMILIES
    assert not get_family("mean_field").represents_correlations
    assert get_family("full_rank").represents_correlations
    assert [get_family(n).richer for n in ("mean_field", "low_rank", "full_rank")] == [
        "low_rank", "full_rank", "flow"]
    with pytest.raises(ValueError, match="unknown guide 'nope'"):
        get_family("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_family(GuideFamily("mean_field", MeanFieldNormal, True))


def test_full_rank_starts_exactly_and_rewhitening_keeps_q() -> None:
    start = a_start()
    with pyro.settings.context(module_local_params=True):
        guide = AutoWhitenedNormal(model)
        guide.start_at(start, **DATA)
        q = guide.get_posterior()
        cov = start.scale_tril @ start.scale_tril.T
        assert torch.allclose(q.mean, start.loc) and torch.allclose(q.covariance_matrix, cov)
        with torch.no_grad():  # move it somewhere, then fold the move into the coordinates
            guide.loc.add_(torch.tensor([0.3, -0.1, 0.2]))
            guide.log_scale.add_(torch.tensor([0.2, -0.4, 0.1]))
            guide.tril.add_(torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [-0.2, 0.3, 0]]))
        before = guide.get_posterior()
        guide.rewhiten()
        after = guide.get_posterior()
        assert torch.allclose(before.mean, after.mean, atol=1e-6)
        assert torch.allclose(before.covariance_matrix, after.covariance_matrix, atol=1e-5)
        assert float(guide.loc.abs().max()) == 0.0 and float(guide.tril.abs().max()) == 0.0


def test_low_rank_starts_at_the_marginals_and_rewhitening_keeps_q() -> None:
    start = a_start()
    with pyro.settings.context(module_local_params=True):
        guide = AutoWhitenedNormal(model, structure="low_rank", rank=3)
        guide.start_at(start, **DATA)
        q = guide.get_posterior()
        cov = start.scale_tril @ start.scale_tril.T
        assert torch.allclose(q.mean, start.loc)
        # at full rank exact, up to the small random part of F that breaks its symmetry
        assert torch.allclose(q.covariance_matrix, cov, rtol=0.03, atol=0.03)
        with torch.no_grad():
            guide.loc.add_(0.2)
            guide.cov_factor.mul_(1.5)
        before = guide.get_posterior()
        guide.rewhiten()
        after = guide.get_posterior()
        assert torch.allclose(before.mean, after.mean, atol=1e-6)
        assert torch.allclose(before.covariance_matrix, after.covariance_matrix, atol=1e-5)


def test_mean_field_starts_at_the_conditional_sds() -> None:
    start = a_start()
    with pyro.settings.context(module_local_params=True):
        guide = MeanFieldNormal(model)
        guide.start_at(start, **DATA)
        precision = torch.linalg.inv(start.scale_tril @ start.scale_tril.T)
        expected = precision.diagonal().rsqrt()
        got = torch.cat([guide.scales.mu.detach(), guide.scales.sigma.detach()[None]])
        assert torch.allclose(got, expected, rtol=1e-5)
        scales = guide.step_scales()
        assert torch.allclose(scales["locs.mu_unconstrained"], expected[:2], rtol=1e-5)


def test_hand_written_guides_are_families_found_by_name() -> None:
    data = beta_bernoulli.load_data()
    fit = pyrovi.fit(beta_bernoulli.model, data, guide="beta", num_steps=200)
    assert fit.guide_name == "beta" and fit.represents_correlations is not None
    mean = float(fit.sample(2000)["p"].mean())
    assert abs(mean - 437 / 980) < 0.01
    assert get_family("mean_field_gmm").represents_correlations is False
    assert "mean_field_gmm" in gmm.SPEC.guides
