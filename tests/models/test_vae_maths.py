"""The VAE's seed maths against truth: closed-form KL, the two ELBO estimators, gradient
variance, and the inference gaps on a linear-Gaussian VAE where every term is exact.

Linear-Gaussian stand-in: ``z ~ N(0, I_d)``, ``x | z ~ N(W z + b, SIGMA^2 I_D)``, so

    x ~ N(b, W W^T + SIGMA^2 I),   p(z | x) = N(m(x), Lambda^-1),   Lambda = I + W^T W / SIGMA^2,

the best diagonal Gaussian q* has the posterior mean and variances ``1 / Lambda_jj``, and

    KL(q* || p(z | x)) = 1/2 (sum_j log Lambda_jj - log det Lambda)      (the approximation gap)
    KL(N(mu, S) || p(z | x)) = 1/2 (tr(Lambda S) - d + (m - mu)^T Lambda (m - mu)
                                    - log det Lambda - log det S)
"""

from __future__ import annotations

import math

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.nn import functional as F

from pyrovi.infer import ReferenceQualityWarning
from pyrovi.models.vae.gaps import (
    InferenceGaps,
    elbo_estimators,
    encoder_vs_nuts,
    fixed_decoder_model,
    gradient_variance,
    gradient_variance_by_parameter,
    inference_gaps,
    kl_to_standard_normal,
)

SIGMA = 0.5
D, LATENT = 5, 2


class LinearEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, LATENT)
        self.raw_scale = nn.Parameter(torch.zeros(LATENT))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scale = F.softplus(self.raw_scale).expand(*x.shape[:-1], LATENT)
        return self.linear(x), scale


class LinearDecoder(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(weight), nn.Parameter(bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z @ self.weight.T + self.bias


class LinearGaussianVAE(nn.Module):
    """The VAE interface with a linear-Gaussian decoder: log p(x) is exact."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        super().__init__()
        self.data_dim, self.latent_dim = D, LATENT
        self.encoder = LinearEncoder()
        self.decoder = LinearDecoder(weight, bias)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x)

    def likelihood_dist(self, z: torch.Tensor) -> dist.Distribution:
        return dist.Normal(self.decoder(z), SIGMA).to_event(1)

    def model(self, x: torch.Tensor, batch_size: int | None = None) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
            zeros = x.new_zeros(len(idx), LATENT)
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", self.likelihood_dist(z), obs=x[idx])

    def guide(self, x: torch.Tensor, batch_size: int | None = None) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
            loc, scale = self.encode(x[idx])
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def make_vae() -> LinearGaussianVAE:
    """Strongly correlated posterior (the columns of W point alike: correlation -0.86), and
    an encoder with its means off but sds of 1, wider than the posterior's (0.64): as a
    proposal it gives light-tailed importance weights. (A narrow proposal such as q*
    itself has heavy-tailed weights here, and 5,000 draws fall 0.1-0.2 nats short.)"""
    weight = torch.tensor([[1.0, 0.8], [0.9, 1.0], [0.5, 0.6], [0.2, 0.1], [0.0, 0.3]],
                          dtype=torch.float64)
    bias = torch.tensor([0.5, -0.5, 0.0, 1.0, 0.2], dtype=torch.float64)
    vae = LinearGaussianVAE(weight, bias).double()
    with torch.no_grad():
        vae.encoder.linear.weight.copy_(0.3 * weight.T)
        vae.encoder.linear.bias.fill_(0.1)
        vae.encoder.raw_scale.fill_(math.log(math.expm1(1.0)))  # softplus -> sd 1
    return vae


def exact(vae: LinearGaussianVAE, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Exact log p(x_i), posterior moments, KL(q* || p) and KL(q_enc || p) per image."""
    with torch.no_grad():
        w, b = vae.decoder.weight, vae.decoder.bias
        cov_x = w @ w.T + SIGMA**2 * torch.eye(D, dtype=w.dtype)
        log_p = dist.MultivariateNormal(b, cov_x).log_prob(x)
        precision = torch.eye(LATENT, dtype=w.dtype) + w.T @ w / SIGMA**2
        cov = torch.linalg.inv(precision)
        mean = (x - b) @ w @ cov / SIGMA**2  # (N, d); cov symmetric
        logdet = torch.logdet(precision)
        kl_star = 0.5 * (precision.diagonal().log().sum() - logdet)
        loc, scale = vae.encode(x)
        delta = mean - loc
        kl_enc = 0.5 * ((precision.diagonal() * scale**2).sum(-1) - LATENT
                        + torch.einsum("ni,ij,nj->n", delta, precision, delta)
                        - logdet - (scale**2).log().sum(-1))
    return {"log_p": log_p, "mean": mean, "cov": cov, "kl_star": kl_star, "kl_enc": kl_enc}


@pytest.fixture(scope="module")
def vae() -> LinearGaussianVAE:
    return make_vae()


@pytest.fixture(scope="module")
def x(vae: LinearGaussianVAE) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(4, LATENT, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        return vae.decoder(z) + SIGMA * torch.randn(4, D, generator=gen, dtype=torch.float64)


# ----------------------------------------------------------------------------- KL


def test_kl_closed_form_against_torch_and_monte_carlo() -> None:
    gen = torch.Generator().manual_seed(0)
    loc = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    scale = 0.3 + torch.rand(6, 3, generator=gen, dtype=torch.float64)
    kl = kl_to_standard_normal(loc, scale)
    q, p = dist.Normal(loc, scale), dist.Normal(torch.zeros_like(loc), 1.0)
    assert kl.shape == (6,)
    assert torch.allclose(kl, torch.distributions.kl_divergence(q, p).sum(-1))
    z = q.sample((20_000,))
    terms = (q.log_prob(z) - p.log_prob(z)).sum(-1)  # (draws, 6)
    mean, se = terms.mean(0), terms.std(0) / math.sqrt(20_000)
    assert torch.all((mean - kl).abs() < 4 * se), (mean, kl, se)
    assert torch.allclose(kl_to_standard_normal(torch.zeros(2, 4), torch.ones(2, 4)),
                          torch.zeros(2))


# ----------------------------------------------------------------------------- estimators


def test_two_elbo_estimators_agree_with_each_other_pyro_and_truth(vae, x) -> None:
    est = elbo_estimators(vae, x, num_draws=4000, seed=0)
    diff = est["difference"]
    assert abs(diff["elbo"]) < 4 * diff["se"], diff
    truth = float((exact(vae, x)["log_p"] - exact(vae, x)["kl_enc"]).mean())
    for name in ("trace", "mean_field"):
        assert abs(est[name]["elbo"] - truth) < 4 * est[name]["se"], (name, est[name], truth)
    # Pyro's own estimators (per image) give the same number, within the same noise
    n = 4000
    for name, cls in (("trace", Trace_ELBO), ("mean_field", TraceMeanField_ELBO)):
        pyro.set_rng_seed(1)
        elbo = cls(num_particles=n, vectorize_particles=True, max_plate_nesting=1)
        with pyro.get_param_store().scope():
            value = -elbo.loss(vae.model, vae.guide, x) / x.shape[0]
        se = est[name]["sd"] / math.sqrt(n)
        assert abs(value - truth) < 4 * se, (name, value, truth, se)
    # the closed form removes the noise of log p(z) - log q(z | x)
    assert est["mean_field"]["sd"] < est["trace"]["sd"]


def test_closed_form_kl_has_lower_gradient_variance(vae, x) -> None:
    ratios = []
    for seed in range(3):  # same seed: the two estimators see the same draws (paired)
        trace = gradient_variance(vae, x, elbo="trace", num_draws=100, seed=seed)
        mean_field = gradient_variance(vae, x, elbo="mean_field", num_draws=100, seed=seed)
        ratios.append(mean_field / trace)
    # measured 0.88 here (the likelihood's noise dominates this 5-pixel model), and the
    # replicates agree to ~0.001: the margin below is many times the noise
    assert max(ratios) < 0.95, ratios
    assert max(ratios) - min(ratios) < 0.02, ratios
    groups = gradient_variance_by_parameter(vae, x, elbo="trace", num_draws=100, seed=2)
    assert set(groups) == {"linear.weight", "linear.bias", "raw_scale"}
    assert sum(groups.values()) == pytest.approx(trace)
    assert len(pyro.get_param_store()) == 0  # the param store is left as it was
    with pytest.raises(ValueError, match="unknown elbo"):
        gradient_variance(vae, x, elbo="renyi")


# ----------------------------------------------------------------------------- gaps


def test_fixed_decoder_model_has_no_parameters(vae, x) -> None:
    model = fixed_decoder_model(vae)
    tr = pyro.poutine.trace(model).get_trace(x.float())  # a float32 copy is made
    assert not [n for n, s in tr.nodes.items() if s["type"] == "param"]
    assert tr.nodes["z"]["value"].dtype == torch.float32
    z = torch.zeros(4, LATENT, dtype=torch.float64, requires_grad=True)
    log_p = pyro.poutine.trace(pyro.poutine.condition(model, {"z": z})).get_trace(x)
    log_p.log_prob_sum().backward()  # gradients reach z through the frozen decoder
    assert z.grad is not None and torch.isfinite(z.grad).all()
    assert all(not p.requires_grad for p in model.vae_for(x).parameters())
    assert all(p.requires_grad for p in vae.parameters())  # the original is untouched
    other = make_vae()
    with torch.no_grad():
        other.decoder.bias.add_(1.0)
    assert repr(fixed_decoder_model(other)) != repr(model)  # NUTS cache keys differ


def test_inference_gaps_against_exact_linear_gaussian(vae, x) -> None:
    gaps = inference_gaps(vae, x, k=5000, seed=0)
    truth = exact(vae, x)
    kl_star = float(truth["kl_star"])
    assert kl_star > 0.3  # a strongly correlated posterior: the diagonal family pays
    assert isinstance(gaps, InferenceGaps) and gaps.converged
    log_p, kl_enc = truth["log_p"].numpy(), truth["kl_enc"].numpy()
    # the encoder's ELBO per image is exact up to Monte Carlo error
    z = (gaps.elbo_amortized - (log_p - kl_enc)) / gaps.elbo_amortized_se
    assert (abs(z) < 4).all(), z
    # log p(x) by importance sampling, per image
    z = (gaps.log_likelihood - log_p) / gaps.log_likelihood_se
    assert (abs(z) < 4).all(), z
    # SVI's q* reaches KL(q* || p) up to its optimisation error (second order at the optimum)
    slack = 0.01
    se = gaps.mc_se
    assert abs(gaps.means["approximation_gap"] - kl_star) < 4 * se["approximation_gap"] + slack
    assert abs(gaps.means["amortization_gap"] - (kl_enc.mean() - kl_star)) \
        < 4 * se["amortization_gap"] + slack
    assert (gaps.amortization_gap > -4 * (gaps.elbo_optimal_se + gaps.elbo_amortized_se)
            - slack).all()
    assert (gaps.approximation_gap == gaps.log_likelihood - gaps.elbo_optimal).all()
    out = gaps.to_dict()
    assert out["k"] == 5000 and len(out["log_likelihood"]) == 4
    assert out["means"]["approximation_gap"] == pytest.approx(gaps.means["approximation_gap"])


def test_encoder_vs_nuts_on_one_image(vae, x) -> None:
    truth = exact(vae, x[:1])
    cmp = encoder_vs_nuts(vae, x[0], num_samples=1000, num_warmup=300, num_chains=1,
                          seed=0, cache=False)
    table = cmp.table
    assert list(table.index) == ["z[0]", "z[1]"]
    sd = truth["cov"].diagonal().sqrt().numpy()
    mean = truth["mean"][0].numpy()
    with torch.no_grad():
        loc, scale = (v[0].numpy() for v in vae.encode(x[:1]))
    # NUTS against the exact posterior, within its Monte Carlo standard errors
    mcse_mean = az.mcse(cmp.ref, method="mean")["z"].values
    mcse_sd = az.mcse(cmp.ref, method="sd")["z"].values
    assert (abs(table["mean_ref"].to_numpy() - mean) < 4 * mcse_mean).all(), table
    assert (abs(table["sd_ref"].to_numpy() - sd) < 4 * mcse_sd).all(), table
    # the table's errors against their exact values: the encoder's mean is 1 posterior sd
    # off in z[1], its sd 1.57 x the posterior's
    n_vi = 1000
    se_z = np.sqrt(mcse_mean**2 + scale**2 / n_vi) / sd
    assert (abs(table["mean_error_z"].to_numpy() - (loc - mean) / sd) < 4 * se_z).all(), table
    se_ratio = (scale / sd) * np.sqrt((mcse_sd / sd) ** 2 + 1 / (2 * n_vi))
    assert (abs(table["sd_ratio"].to_numpy() - scale / sd) < 4 * se_ratio).all(), table
    assert cmp.verdict == "reject"  # a mean error of 1 sd is beyond "caution" (0.5)
    with pytest.raises(ValueError, match="one image"):
        encoder_vs_nuts(vae, x[:2])


# ----------------------------------------------------------------------------- the real VAE


@pytest.fixture(scope="module")
def digits_vae():
    from pyrovi.models.vae.data import load_digits
    from pyrovi.models.vae.model import VAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = VAE(64, latent_dim=2, hidden=(16,))  # untrained: a smoke test of the maths
    return model, load_digits("test")["x"][:3]


def test_real_vae_estimators_and_gradient_variance(digits_vae) -> None:
    from pyrovi.infer.importance import iw_log_likelihood

    vae, x = digits_vae
    est = elbo_estimators(vae, x, num_draws=1000, seed=0)
    assert abs(est["difference"]["elbo"]) < 4 * est["difference"]["se"], est
    # K = 1 of the generic importance weighting is one draw of the same (trace) ELBO
    one = iw_log_likelihood(vae.model, vae.guide, {"x": x}, ks=(1,), seed=3)[1][0]
    assert abs(one - est["trace"]["elbo"]) < 4 * math.hypot(est["trace"]["sd"],
                                                            est["trace"]["se"])
    ratios = [gradient_variance(vae, x, "mean_field", 50, seed)
              / gradient_variance(vae, x, "trace", 50, seed) for seed in range(2)]
    assert max(ratios) < 0.7, ratios  # measured 0.45-0.47 over four seeds


def test_real_vae_gaps_and_nuts(digits_vae) -> None:
    vae, x = digits_vae
    gaps = inference_gaps(vae, x, k=100, seed=0)
    assert gaps.converged and gaps.num_images == 3
    se = gaps.mc_se
    assert gaps.means["approximation_gap"] > -4 * se["approximation_gap"]
    assert gaps.means["amortization_gap"] > -4 * se["amortization_gap"]
    assert np.isfinite(gaps.log_likelihood).all()
    with pytest.warns(ReferenceQualityWarning):  # 100 draws: too few for a reference
        cmp = encoder_vs_nuts(vae, x[0], num_samples=100, num_warmup=100, num_chains=1,
                              seed=0, cache=False)
    assert list(cmp.table.index) == ["z[0]", "z[1]"]
    assert cmp.verdict in ("trust", "caution", "reject")
