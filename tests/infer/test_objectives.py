"""Objectives beyond the reverse KL (pyrovi.infer.objectives) through pyrovi.fit.

(a) On a posterior with two modes a Gaussian q sits on one mode under the ELBO (reverse
KL) and between the modes, spread over both, under the mass-covering objectives. (b) On a
correlated Gaussian posterior with a mean-field q the divergences disagree, and each fit
is best under its own divergence (closed-form Gaussian KLs). (c) ELBO <= IWAE_K <= log p(x)
<= CUBO_2 on a model with exact evidence. (d) Bad input.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovi
from pyrovi.infer.objectives import (
    OBJECTIVES,
    cubo_value,
    forward_kl_value,
    get_objective,
    iwae_value,
)

M = 3.0
"""The modes of the bimodal target sit at -M and +M, each of sd 1."""
FORWARD_SD = math.sqrt(M**2 + 1)
"""Sd of the target (and of the forward-KL optimum over Gaussians: moment matching)."""


def bimodal(m: float = M) -> None:
    z = pyro.sample("z", dist.Normal(0.0, 10.0))
    locs = torch.tensor([-m, m], dtype=z.dtype)
    log_mix = torch.logsumexp(dist.Normal(locs, 1.0).log_prob(z.unsqueeze(-1)), -1) \
        - math.log(2.0)
    pyro.factor("target", log_mix - dist.Normal(0.0, 10.0).log_prob(z))


def _bimodal_fit(elbo: str, lr: float, num_steps: int = 1000, **kwargs: float
                 ) -> tuple[float, float, pyrovi.SVIFit]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pyrovi.fit(bimodal, {"m": M}, guide="mean_field", elbo=elbo, lr=lr,
                         init="laplace", num_steps=num_steps, **kwargs)
    z = fit.sample(num_samples=4000)["z"].double().numpy()
    return float(z.mean()), float(z.std()), fit


def test_reverse_kl_sits_on_one_mode() -> None:
    loc, sd, fit = _bimodal_fit("trace", lr=0.1, num_steps=300)
    assert abs(abs(loc) - M) < 0.3, loc
    assert abs(sd - 1.0) < 0.2, sd  # the mode's width, within 20%
    assert fit.history["objective"]["name"] == "trace"
    assert fit.history["objective"]["value"] == fit.elbo


@pytest.mark.parametrize(("elbo", "lr", "extra", "max_loc"), [
    ("rws", 0.1, {}, 0.5),
    ("cubo", 0.03, {}, 0.5),
    # IWAE_16 is nearly flat in q's location once q covers both modes (its gap to log p(x)
    # is about chi^2(p || q) / 2K): it changes by less than its Monte Carlo error over
    # |loc| < 1, so the location is held to 1, the spread as for the others
    ("renyi", 0.03, {"alpha": 0.0}, 1.0),
])
def test_mass_covering_fits_sit_between_the_modes(elbo: str, lr: float,
                                                  extra: dict[str, float],
                                                  max_loc: float) -> None:
    loc, sd, fit = _bimodal_fit(elbo, lr=lr, **extra)
    assert abs(loc) < max_loc, loc
    assert sd > 0.8 * FORWARD_SD, sd
    own = fit.history["objective"]
    assert own["name"] == elbo and math.isfinite(own["value"]) and own["se"] > 0
    assert fit.elbo < -math.log(2) + 0.05  # worse ELBO than one mode's: it is not the aim


# -- (b) a correlated Gaussian posterior, mean-field q -----------------------------------

PRIOR_COV = torch.tensor([[4.0, 3.8], [3.8, 4.0]], dtype=torch.float64)
X_OBS = torch.tensor([1.0, -0.5], dtype=torch.float64)
NOISE_SD = 3.0


def gaussian(x: torch.Tensor) -> None:
    z = pyro.sample("z", dist.MultivariateNormal(torch.zeros(2, dtype=x.dtype),
                                                 PRIOR_COV.to(x.dtype)))
    pyro.sample("x", dist.Normal(z, NOISE_SD).to_event(1), obs=x)


def _posterior() -> tuple[torch.Tensor, torch.Tensor]:
    precision = torch.linalg.inv(PRIOR_COV) + torch.eye(2, dtype=torch.float64) / NOISE_SD**2
    cov = torch.linalg.inv(precision)
    return cov @ X_OBS / NOISE_SD**2, cov


def _kl(m1: torch.Tensor, c1: torch.Tensor, m2: torch.Tensor, c2: torch.Tensor) -> float:
    """KL(N(m1, c1) || N(m2, c2)) in closed form."""
    inv = torch.linalg.inv(c2)
    d = m2 - m1
    return float(0.5 * (torch.trace(inv @ c1) + d @ inv @ d - len(m1)
                        + torch.logdet(c2) - torch.logdet(c1)))


def _mean_field_q(fit: pyrovi.SVIFit) -> tuple[torch.Tensor, torch.Tensor]:
    z = fit.sample(num_samples=20000)["z"].double()
    return z.mean(0), torch.diag(z.var(0))


def test_each_divergence_is_smallest_for_its_own_fit() -> None:
    mean, cov = _posterior()
    conditional_sd = 1 / torch.linalg.inv(cov).diag().sqrt()
    marginal_sd = cov.diag().sqrt()
    assert float((conditional_sd / marginal_sd).max()) < 0.45  # correlation 0.91
    fits = {}
    # RWS's self-normalised gradient is biased toward a narrower q for small K (the
    # weights of a correlation-0.91 posterior under a mean-field q are uneven): K = 64
    for elbo, particles in (("trace", 1), ("rws", 64)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits[elbo] = pyrovi.fit(gaussian, {"x": X_OBS}, guide="mean_field", elbo=elbo,
                                    lr=0.1, init="laplace", num_steps=600,
                                    num_particles=particles)
    q = {name: _mean_field_q(f) for name, f in fits.items()}
    reverse = {name: _kl(m, c, mean, cov) for name, (m, c) in q.items()}
    forward = {name: _kl(mean, cov, m, c) for name, (m, c) in q.items()}
    assert reverse["trace"] < reverse["rws"], reverse
    assert forward["rws"] < forward["trace"], forward
    # the optima: reverse KL, sds 1/sqrt(diag(precision)); forward KL, the marginal sds.
    # 10% covers the Monte Carlo error of 20000 draws (0.5%) and of the fits' last window
    trace_sd, rws_sd = q["trace"][1].diag().sqrt(), q["rws"][1].diag().sqrt()
    assert torch.allclose(trace_sd, conditional_sd, rtol=0.1), (trace_sd, conditional_sd)
    assert torch.allclose(rws_sd, marginal_sd, rtol=0.1), (rws_sd, marginal_sd)
    # both means are the posterior mean (within 0.1 posterior marginal sd)
    for name, (m, _) in q.items():
        assert float(((m - mean).abs() / marginal_sd).max()) < 0.1, (name, m, mean)


# -- (c) the sandwich on an exact model --------------------------------------------------

def test_elbo_iwae_log_evidence_cubo_sandwich() -> None:
    spec = pyrovi.get_model("normal_normal")
    data = spec.load_data()
    log_z = spec.log_evidence(data)
    # num_steps=0 returns the start: the Laplace approximation (exact here), widened 3x
    # for a mass-covering objective, so that q differs from the posterior. (elbo="iwae":
    # a CUBO fit now starts at the best of the spreads 1 .. 3 by the CUBO, here 1, q = p)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pyrovi.fit(spec.model, data, guide="mean_field", elbo="iwae", lr=0.03,
                         init="laplace", num_steps=0)
    lw = fit.log_weights(num_samples=32000, seed=1)
    elbo = float(np.mean(lw))
    elbo_se = float(np.std(lw) / math.sqrt(len(lw)))
    rows = lw.reshape(-1, 16)
    per_group = np.log(np.mean(np.exp(rows - rows.max(1, keepdims=True)), 1)) + rows.max(1)
    iwae, iwae_se = iwae_value(lw, 16, 0.0), float(np.std(per_group) / math.sqrt(len(rows)))
    cubo = cubo_value(lw, 16, 0.0)
    assert elbo + 3 * elbo_se < iwae  # IWAE_K is tighter than the ELBO ...
    assert iwae < log_z + 3 * iwae_se  # ... and still a lower bound
    # CUBO_2 >= log p(x); its estimate is biased low (log of a mean), by far less than
    # the gap here (q is wider than p, so the weights' second moment is finite)
    assert cubo > log_z, (cubo, log_z)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pyrovi.fit(spec.model, data, guide="mean_field", elbo="cubo", lr=0.03,
                         init="laplace", num_steps=0)
    assert fit.history["objective"]["bound"] == "upper"
    # the CUBO start here is q = p (the Laplace fit, exact to the optimiser's 1e-8), where
    # CUBO_2 = log p(x): equal up to that rounding
    assert fit.history["objective"]["value"] > log_z - 1e-6


def test_value_functions_on_known_weights() -> None:
    # equal weights: every objective equals log w; the forward KL estimate is 0
    lw = np.full(64, -2.0)
    for name in ("trace", "renyi", "iwae", "cubo"):
        assert OBJECTIVES[name].value(lw, 16, 0.5) == pytest.approx(-2.0)
    assert forward_kl_value(lw, 16, 0.0) == pytest.approx(0.0, abs=1e-12)
    # records: bounds and senses
    assert get_objective("cubo").bound == "upper" and get_objective("cubo").sense == -1
    assert get_objective("iwae").bound == "lower" and get_objective("rws").bound == "none"
    assert get_objective("rws").divergence == "KL(p || q)"


# -- (d) bad input -----------------------------------------------------------------------

def test_bad_objective_input_raises() -> None:
    spec = pyrovi.get_model("normal_normal")
    data = spec.load_data()
    with pytest.raises(ValueError, match="unknown elbo 'nope'"):
        pyrovi.fit(spec.model, data, elbo="nope")
    for elbo in ("cubo", "iwae", "rws"):
        with pytest.raises(ValueError, match=f"elbo='{elbo}' needs num_particles >= 2"):
            pyrovi.fit(spec.model, data, elbo=elbo, num_particles=1)
    for alpha in (-0.5, 1.0):  # alpha < 0 makes the Rényi bound an upper bound
        with pytest.raises(ValueError, match="needs 0 <= alpha < 1"):
            pyrovi.fit(spec.model, data, elbo="renyi", alpha=alpha)

    class Shifted(torch.nn.Module):  # a model with a parameter of its own, as a VAE's
        def __init__(self) -> None:
            super().__init__()
            self.shift = torch.nn.Parameter(torch.tensor(0.0))
            self.loc = torch.nn.Parameter(torch.tensor(0.0))

        def model(self, x: torch.Tensor) -> None:
            pyro.module("shifted", self)
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z + self.shift, 1.0), obs=x)

        def guide(self, x: torch.Tensor) -> None:
            pyro.module("shifted", self)
            pyro.sample("z", dist.Normal(self.loc, 1.0))

    for elbo in ("cubo", "rws"):  # their gradients would not raise the evidence in theta
        shifted = Shifted()
        with pytest.raises(ValueError, match="cannot fit the model's own parameters"):
            pyrovi.fit(shifted.model, {"x": torch.tensor(0.5)}, guide=shifted.guide,
                       elbo=elbo, num_steps=5)


def test_default_particles_for_covering_objectives() -> None:
    spec = pyrovi.get_model("normal_normal")
    data = spec.load_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = pyrovi.fit(spec.model, data, elbo="cubo", lr=0.03, init="laplace",
                         num_steps=20)
    assert set(fit.history["num_particles"]) == {16}
    assert fit.history["objective"]["num_particles"] == 16


@pytest.mark.slow
def test_automatic_fits_do_not_stop_early() -> None:
    """Without a fixed step count the engine picks the start and step size and stops by
    itself: judged by the objective's own value, the covering fits end between the modes,
    converged, and not at the (narrow, one-mode) start."""
    for elbo in ("rws", "cubo"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = pyrovi.fit(bimodal, {"m": M}, guide="mean_field", elbo=elbo)
        z = fit.sample(num_samples=4000)["z"].double().numpy()
        assert fit.converged and not fit.history["returned_start"], elbo
        assert abs(z.mean()) < 0.75 and z.std() > 0.8 * FORWARD_SD, (elbo, z.mean(), z.std())
