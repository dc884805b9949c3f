"""Per-data-point importance weighting against the exact log-likelihood of a conjugate model.

z_i ~ N(0, 1), x_i | z_i ~ N(z_i, SIGMA): p(x_i) = N(x_i; 0, sqrt(1 + SIGMA^2)) exactly, and
with a Gaussian guide the ELBO per point has a closed form too. The guide is deliberately
poor (wrong mean, too wide) but wider than the posterior, so the weights have finite
variance and the bound converges.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

from pyrovi.infer.importance import iw_log_likelihood, pointwise_log_weights

SIGMA = 0.5
SLOPE, SHIFT, SCALE = 0.3, 0.2, 1.2  # guide q(z_i | x_i) = N(SLOPE x_i + SHIFT, SCALE)
N = 2000


def model(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
        pyro.sample("x", dist.Normal(z, SIGMA), obs=x)


def guide(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("z", dist.Normal(SLOPE * x + SHIFT, SCALE * torch.ones_like(x)))


def exact_log_likelihood(x: torch.Tensor) -> torch.Tensor:
    return dist.Normal(0.0, math.sqrt(1 + SIGMA**2)).log_prob(x)


def exact_elbo(x: torch.Tensor) -> torch.Tensor:
    """E_q[log N(z; 0, 1) + log N(x; z, SIGMA)] + H(q), per point."""
    m, s2 = SLOPE * x + SHIFT, SCALE**2
    log_prior = -0.5 * math.log(2 * math.pi) - 0.5 * (m**2 + s2)
    log_lik = -0.5 * math.log(2 * math.pi * SIGMA**2) - ((x - m) ** 2 + s2) / (2 * SIGMA**2)
    entropy = 0.5 * math.log(2 * math.pi * math.e * s2)
    return log_prior + log_lik + entropy


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(N, generator=gen, dtype=torch.float64)
    return z + SIGMA * torch.randn(N, generator=gen, dtype=torch.float64)


def _mean_and_se(d: torch.Tensor) -> tuple[float, float]:
    return float(d.mean()), float(d.std() / math.sqrt(d.numel()))


def test_shape_dtype_and_seed(x: torch.Tensor) -> None:
    a = pointwise_log_weights(model, guide, {"x": x[:5]}, 13, chunk_size=4)
    b = pointwise_log_weights(model, guide, {"x": x[:5]}, 13, chunk_size=4)
    assert a.shape == (13, 5) and a.dtype == torch.float64
    assert torch.equal(a, b)  # same seed and chunks: same draws
    c = pointwise_log_weights(model, guide, {"x": x[:5]}, 13, seed=1, chunk_size=4)
    assert not torch.equal(a, c)


def test_exact_posterior_gives_constant_weights(x: torch.Tensor) -> None:
    # with q = p(z | x) every weight is p(x_i, z) / p(z | x_i) = p(x_i), whatever the draw
    def posterior(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(x / (1 + SIGMA**2),
                                         SIGMA / math.sqrt(1 + SIGMA**2) * torch.ones_like(x)))

    log_w = pointwise_log_weights(model, posterior, {"x": x[:7]}, 30, chunk_size=8)
    assert torch.allclose(log_w, exact_log_likelihood(x[:7]).expand(30, 7), atol=1e-10)


def test_k1_is_the_elbo_in_expectation(x: torch.Tensor) -> None:
    log_w = pointwise_log_weights(model, guide, {"x": x}, 200)
    d = log_w - exact_elbo(x)  # (K, N), each entry mean 0
    mean, se = _mean_and_se(d.reshape(-1))
    assert abs(mean) < 4 * se, (mean, se)


def test_bound_rises_with_k_to_the_exact_log_likelihood(x: torch.Tensor) -> None:
    truth = exact_log_likelihood(x)
    bounds = {}
    pyro.set_rng_seed(3)
    for k in (1, 10, 100, 1000, 5000):
        log_w = pointwise_log_weights(model, guide, {"x": x}, k, seed=None)
        bounds[k] = torch.logsumexp(log_w, 0) - math.log(k)  # (N,) fresh draws per K
    gap_1 = float((truth - bounds[1]).mean())
    assert gap_1 > 1.0  # the poor guide: KL(q || p) averages ~3 nats per point
    ks = sorted(bounds)
    for small, large in zip(ks, ks[1:], strict=False):
        mean, se = _mean_and_se(bounds[large] - bounds[small])  # paired over points
        if small <= 10:  # gaps of ~3 and ~0.06 nats: clearly rising
            assert mean > 4 * se, (small, large, mean, se)
        else:
            assert mean > -4 * se, (small, large, mean, se)  # rising within the noise
    mean, se = _mean_and_se(bounds[5000] - truth)
    # the bias at K=5000 is ~3e-4 nats (K=1000 -> 5000 shrinks it ~5x), about one se
    assert abs(mean) < 4 * se + 1e-3, (mean, se)
    assert mean < 4 * se  # a lower bound


def test_iw_log_likelihood_is_fresh_draws_of_one_stream(x: torch.Tensor) -> None:
    xs = x[:50]
    got = iw_log_likelihood(model, guide, {"x": xs}, ks=(1, 10, 100), seed=7)
    pyro.set_rng_seed(7)
    for k in (1, 10, 100):
        log_w = pointwise_log_weights(model, guide, {"x": xs}, k, seed=None)
        bound = torch.logsumexp(log_w, 0) - math.log(k)
        assert got[k][0] == pytest.approx(float(bound.mean()), abs=1e-12)
        assert got[k][1] == pytest.approx(float(bound.std() / math.sqrt(50)), rel=1e-9)


def test_iw_log_likelihood_against_truth(x: torch.Tensor) -> None:
    got = iw_log_likelihood(model, guide, {"x": x}, ks=(1, 5000), seed=2)
    truth = float(exact_log_likelihood(x).mean())
    elbo = float(exact_elbo(x).mean())
    # the se is over data points (dominated by the spread of log p(x_i)), so it is generous
    assert got[5000][0] == pytest.approx(truth, abs=4 * got[5000][1])
    assert got[1][0] == pytest.approx(elbo, abs=4 * got[1][1])
    assert got[5000][0] > got[1][0]


def test_global_latent_is_refused(x: torch.Tensor) -> None:
    def global_model(x: torch.Tensor) -> None:
        mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(mu, 1.0), obs=x)

    def global_guide(x: torch.Tensor) -> None:
        pyro.sample("mu", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="not inside plate 'data'"):
        pointwise_log_weights(global_model, global_guide, {"x": x[:5]}, 3)
    with pytest.raises(ValueError, match="not inside plate 'obs'"):
        pointwise_log_weights(_unplated, _unplated_guide, {"x": x[:5]}, 3, plate="obs")


def _unplated(x: torch.Tensor) -> None:  # no site at all in plate "obs"
    pyro.sample("z", dist.Normal(0.0, 1.0))


def _unplated_guide(x: torch.Tensor) -> None:
    pyro.sample("z", dist.Normal(0.0, 1.0))


def test_batch_size_keyword_gets_the_whole_data(x: torch.Tensor) -> None:
    def sub_model(x: torch.Tensor, batch_size: int | None = None) -> None:
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x[idx]), 1.0))
            pyro.sample("x", dist.Normal(z, SIGMA), obs=x[idx])

    def sub_guide(x: torch.Tensor, batch_size: int | None = None) -> None:
        with pyro.plate("data", x.shape[0], subsample_size=batch_size) as idx:
            pyro.sample("z", dist.Normal(SLOPE * x[idx] + SHIFT, SCALE))

    xs = x[:6]
    got = pointwise_log_weights(sub_model, sub_guide, {"x": xs}, 20)
    want = pointwise_log_weights(model, guide, {"x": xs}, 20)
    assert torch.allclose(got, want)
    with pytest.raises(ValueError, match="subsampled"):
        pointwise_log_weights(sub_model, sub_guide, {"x": xs, "batch_size": 2}, 3)


def test_not_batch_safe_is_refused(x: torch.Tensor) -> None:
    def unsafe(x: torch.Tensor) -> None:
        n = x.shape[0]
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(torch.zeros_like(x), 1.0))
            pyro.sample("x", dist.Normal(z.reshape(-1)[-n:], SIGMA), obs=x)

    with pytest.raises(ValueError, match="not batch safe"):
        pointwise_log_weights(unsafe, guide, {"x": x[:4]}, 8)
