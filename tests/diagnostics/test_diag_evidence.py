"""Tests of the IWAE bound and the KL gap on a conjugate Gaussian with known evidence.

Target: posterior N(0, 1) of a model whose log evidence is log Z. Proposal
q = N(0.3, 1.5^2) (decent: wider than the posterior, slightly off). Then
log w = log Z + log N(z; 0, 1) - log q(z) exactly, ELBO = log Z - KL(q || p) with
KL = log(1/1.5) + (1.5^2 + 0.3^2) / 2 - 1/2 = 0.2645..., and the bias of the
K-sample bound is about Var(w / Z) / (2K) with E_q[(w/Z)^2] = 1.5^2 / sqrt(2 * 1.5^2 - 1)
* exp(0.3^2 / (2 * 1.5^2 - 1)).
"""

import math

import numpy as np
import pytest
from scipy.stats import norm

from pyrovi.diagnostics import iwae_bound, kl_gap

LOG_Z = -12.345
LOC, SCALE = 0.3, 1.5
KL = math.log(1 / SCALE) + (SCALE**2 + LOC**2) / 2 - 0.5
REL_VAR = SCALE**2 / math.sqrt(2 * SCALE**2 - 1) * math.exp(LOC**2 / (2 * SCALE**2 - 1)) - 1


@pytest.fixture
def log_weights():
    z = np.random.default_rng(0).normal(LOC, SCALE, size=2**16)
    return LOG_Z + norm.logpdf(z) - norm.logpdf(z, LOC, SCALE)


def test_k1_is_the_elbo(log_weights):
    mean, se = iwae_bound(log_weights, 1)
    assert mean == pytest.approx(np.mean(log_weights))
    assert abs(mean - (LOG_Z - KL)) < 4 * se


def test_large_k_approaches_log_evidence(log_weights):
    mean, se = iwae_bound(log_weights, 256)
    bias = REL_VAR / (2 * 256)  # 5e-4, below the standard error
    assert mean <= LOG_Z + 4 * se
    assert abs(mean - (LOG_Z - bias)) < 4 * se


def test_bound_increases_with_k(log_weights):
    bounds = [iwae_bound(log_weights, K)[0] for K in (1, 4, 16, 64)]
    assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False))
    assert all(b <= LOG_Z + 1e-3 for b in bounds)


def test_constant_weights_and_remainder():
    mean, se = iwae_bound(np.full(11, -2.0), 5)  # two batches, one weight dropped
    assert mean == pytest.approx(-2.0) and se == 0.0
    with pytest.raises(ValueError, match="two batches"):
        iwae_bound(np.zeros(9), 5)
    with pytest.raises(ValueError):
        iwae_bound(np.zeros(9), 0)


def test_kl_gap():
    gap = kl_gap(-10.0, -10.5, log_evidence_se=0.03, elbo_se=0.04)
    assert gap == pytest.approx({"kl_gap": 0.5, "kl_gap_low": 0.4, "kl_gap_high": 0.6})
    assert kl_gap(1.0, 0.25) == {"kl_gap": 0.75, "kl_gap_low": 0.75, "kl_gap_high": 0.75}
