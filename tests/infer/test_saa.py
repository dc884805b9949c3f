"""The fixed-draw fit (pyrovi.infer.saa): exact on a Gaussian posterior, certified, and
handed to the stochastic engine when it cannot be certified."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovi
from pyrovi.infer import schedule, svi
from pyrovi.infer.compiled import flat_posterior
from pyrovi.infer.saa import whitened_draws

NOISE, PRIOR = 2.0, 10.0


def regression(x: torch.Tensor, y: torch.Tensor) -> None:
    """Linear regression with known noise and a Normal prior: a Gaussian posterior whose
    coefficients are strongly correlated (x is far from 0)."""
    zero = torch.zeros((), dtype=x.dtype)
    intercept = pyro.sample("intercept", dist.Normal(zero, PRIOR))
    slope = pyro.sample("slope", dist.Normal(zero, PRIOR))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", dist.Normal(intercept + slope * x, NOISE), obs=y)


def _data() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = 5.0 + torch.randn(40, generator=gen, dtype=torch.float64)
    return {"x": x, "y": 1.0 + 0.5 * x + NOISE * torch.randn(40, generator=gen,
                                                             dtype=torch.float64)}


def _exact(data: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Posterior mean and precision of (intercept, slope), and the log evidence."""
    design = torch.stack([torch.ones_like(data["x"]), data["x"]], 1)
    precision = design.T @ design / NOISE**2 + torch.eye(2, dtype=torch.float64) / PRIOR**2
    mean = torch.linalg.solve(precision, design.T @ data["y"] / NOISE**2)
    cov_y = NOISE**2 * torch.eye(40, dtype=torch.float64) + PRIOR**2 * design @ design.T
    evidence = dist.MultivariateNormal(torch.zeros(40, dtype=torch.float64), cov_y) \
        .log_prob(data["y"])
    return mean, precision, float(evidence)


def test_whitened_draws_have_exact_moments() -> None:
    eps = whitened_draws(64, 5, seed=3, dtype=torch.float64)
    assert torch.allclose(eps.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(eps.T @ eps / 64, torch.eye(5, dtype=torch.float64), atol=1e-12)
    few = whitened_draws(4, 10, seed=3, dtype=torch.float64)  # fewer draws than dimensions
    assert torch.allclose(few.pow(2).mean(0), torch.ones(10, dtype=torch.float64))
    assert not torch.equal(eps, whitened_draws(64, 5, seed=4, dtype=torch.float64))


def test_full_rank_solve_is_the_exact_posterior() -> None:
    """With whitened draws the fixed-draw ELBO of a Gaussian posterior has q = p as its
    optimum: every log weight is log p(x), and the fit is certified at once."""
    data = _data()
    mean, precision, evidence = _exact(data)
    fit = pyrovi.fit(regression, data, guide="full_rank", optimizer="saa")
    q = flat_posterior(fit.guide)
    corr = -precision[0, 1] / precision.diagonal().prod().sqrt()
    assert float(corr) < -0.95  # the hard case for a stochastic fit
    assert torch.allclose(q.mean, mean, rtol=1e-6, atol=1e-8)
    assert torch.allclose(q.covariance_matrix, torch.linalg.inv(precision), rtol=1e-5,
                          atol=1e-10)
    assert abs(fit.elbo - evidence) < 1e-6
    record = fit.history["saa"]
    assert record["used"] and record["certified"] and fit.converged
    assert abs(record["rounds"][0]["gain"]) < 1e-6
    assert len(fit.losses) < 100 and fit.history["compiled"]["used"]


def test_fixed_draw_solves_show_a_progress_bar(capsys: pytest.CaptureFixture[str]) -> None:
    pyrovi.fit(regression, _data(), progress=True)
    assert "SVI (fixed draws)" in capsys.readouterr().err
    pyrovi.fit(regression, _data(), progress=True, optimizer="adam", num_steps=100)
    assert "fixed draws" not in capsys.readouterr().err


def test_mean_field_solve_is_the_exact_mean_field_optimum() -> None:
    """The mean-field optimum of KL(q || p) for a Gaussian p: p's mean and the sds
    1 / sqrt(diag(precision)); its ELBO is log p(x) minus that KL, in closed form."""
    data = _data()
    mean, precision, evidence = _exact(data)
    fit = pyrovi.fit(regression, data, guide="mean_field")  # optimizer="auto"
    q = flat_posterior(fit.guide)
    assert fit.history["saa"]["certified"] and fit.converged
    assert torch.allclose(q.mean, mean, rtol=1e-6, atol=1e-8)
    assert torch.allclose(q.stddev, precision.diagonal().rsqrt(), rtol=1e-6)
    kl = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    assert kl > 1.0
    assert abs(fit.elbo - (evidence - kl)) < 3 * fit.elbo_se + 1e-6


def test_an_uncertified_solve_goes_on_with_the_stochastic_engine(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """No round to certify in: the stochastic engine starts from the solve, the original
    starts stay candidates of the result, and the fit converges by its own rule."""
    monkeypatch.setattr(svi, "SAA_ROUNDS", 0)
    data = _data()
    mean, precision, evidence = _exact(data)
    kl = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    with pytest.warns(pyrovi.ConvergenceWarning, match="not certified"):
        fit = pyrovi.fit(regression, data, guide="mean_field", optimizer="saa")
    assert fit.history["saa"] == {"used": True, "why": "", "certified": False,
                                  "rounds": []}
    assert {t["start"] for t in fit.history["trial"]} == {"saa"}
    assert all(t["stage"] == 1 for t in fit.history["trial"])
    assert fit.converged and len(fit.losses) >= 1000
    assert abs(fit.elbo - (evidence - kl)) < 0.05


def test_where_the_fixed_draw_fit_cannot_serve(monkeypatch: pytest.MonkeyPatch) -> None:
    data = _data()
    with pytest.raises(ValueError, match="rotation"):
        pyrovi.fit(regression, data, guide="low_rank", optimizer="saa")
    with pytest.raises(ValueError, match="step size"):
        pyrovi.fit(regression, data, optimizer="saa", lr=0.1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        pyrovi.fit(regression, data, optimizer="lbfgs")
    auto = pyrovi.fit(regression, data, guide="low_rank", num_steps=200)
    assert not auto.history["saa"]["used"] and len(auto.losses) >= 200
    adam = pyrovi.fit(regression, data, optimizer="adam", num_steps=200)
    assert adam.history["saa"] == {"used": False, "why": "optimizer='adam'"}
    assert math.isfinite(adam.elbo)



def test_a_premature_stop_of_the_stochastic_engine_is_withdrawn(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stochastic fit made to stop at its first plateau, far from the optimum in the
    correlated valley, is checked by a fixed-draw solve from where it stopped: the solve
    gains nats on fresh draws, the stop is withdrawn, and the fit goes on to the exact
    mean-field optimum, whose next stop the check confirms."""
    monkeypatch.setattr(schedule, "PLATEAUS_TO_STOP", 1)
    monkeypatch.setattr(svi, "MIN_GAIN", math.inf)  # no stop withdrawn by the ten windows
    data = _data()
    mean, precision, evidence = _exact(data)
    kl = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    fit = pyrovi.fit(regression, data, guide="mean_field", optimizer="adam", init="prior")
    checks = fit.history["stop_checks"]
    assert checks[0]["withdrawn"] and checks[0]["gain"] > 0.05
    assert not checks[-1]["withdrawn"] and abs(checks[-1]["gain"]) < 0.05
    assert fit.converged
    q = flat_posterior(fit.guide)  # the last check's solution: exact (whitened draws)
    assert torch.allclose(q.mean, mean, rtol=1e-4)
    assert torch.allclose(q.stddev, precision.diagonal().rsqrt(), rtol=1e-4)
    assert abs(fit.elbo - (evidence - kl)) < 3 * fit.elbo_se + 1e-6


def test_stops_that_a_solve_keeps_improving_end_the_fit(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that withdraws ``MAX_STOP_CHECKS`` stops gives up: not converged, and a
    warning that names the gain."""
    monkeypatch.setattr(schedule, "PLATEAUS_TO_STOP", 1)
    monkeypatch.setattr(svi, "MIN_GAIN", math.inf)
    monkeypatch.setattr(svi, "MAX_STOP_CHECKS", 1)
    with pytest.warns(pyrovi.ConvergenceWarning, match="fixed-draw solve from the stoch"):
        fit = pyrovi.fit(regression, _data(), guide="mean_field", optimizer="adam",
                         init="prior")
    assert not fit.converged and len(fit.history["stop_checks"]) == 1
    assert fit.history["failure"].startswith("a fixed-draw solve")


@pytest.mark.parametrize("guide, compiled", [("flow", True), ("mean_field", False)])
def test_a_premature_stop_off_the_compiled_density_is_withdrawn(
        monkeypatch: pytest.MonkeyPatch, guide: str, compiled: bool) -> None:
    """Where the compiled density cannot serve (a flow; Pyro's ELBO with compiled=False)
    the stop is checked on Pyro's ELBO with a fixed seed: the premature stop is
    withdrawn, and the fit ends at its family's optimum (the flow: the exact posterior,
    log p(x); the mean field: log p(x) - KL of its exact optimum)."""
    monkeypatch.setattr(schedule, "PLATEAUS_TO_STOP", 1)
    monkeypatch.setattr(svi, "MIN_GAIN", math.inf)
    data = _data()
    _, precision, evidence = _exact(data)
    kl = 0.5 * float(precision.diagonal().log().sum() - torch.logdet(precision))
    fit = pyrovi.fit(regression, data, guide=guide, optimizer="adam", init="prior",
                     compiled=compiled)
    checks = fit.history["stop_checks"]
    assert all(check["solver"] == "pyro" for check in checks)
    assert checks[0]["withdrawn"] and checks[0]["gain"] > 0.1
    assert not checks[-1]["withdrawn"] and fit.converged
    optimum = evidence if guide == "flow" else evidence - kl
    assert fit.elbo <= optimum + 3 * fit.elbo_se
    assert fit.elbo > optimum - 0.03 - 3 * fit.elbo_se


def test_the_stop_check_needs_a_guide_with_a_state(monkeypatch: pytest.MonkeyPatch
                                                   ) -> None:
    """A guide written with pyro.param sites has no state to compare two solutions by:
    the check says so and the fit stops by the schedule alone."""

    def guide(x: torch.Tensor, y: torch.Tensor) -> None:
        for name in ("intercept", "slope"):
            loc = pyro.param(f"{name}_loc", torch.zeros((), dtype=x.dtype))
            scale = pyro.param(f"{name}_scale", torch.ones((), dtype=x.dtype),
                               constraint=dist.constraints.positive)
            pyro.sample(name, dist.Normal(loc, scale))

    monkeypatch.setattr(schedule, "PLATEAUS_TO_STOP", 1)
    pyro.clear_param_store()
    fit = pyrovi.fit(regression, _data(), guide=guide)
    assert fit.history["stop_checks"][0]["why"].startswith("a guide of pyro.param sites")


def test_the_stop_check_skips_guides_too_rich_for_draws_run_one_by_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A model written for one draw (``z[0] + ...``: no particle plate) off the compiled
    path is run once per draw: a guide with more parameters than those few draws can
    pin down is not solved (it would fit the draws), and the check says why."""

    def one_draw(y: torch.Tensor) -> None:
        z = pyro.sample("z", dist.Normal(torch.zeros(6, dtype=y.dtype), 1.0).to_event(1))
        with pyro.plate("data", y.shape[0]):
            pyro.sample("y", dist.Normal(z[0] + z[1] + z[2] + z[3] + z[4] + z[5], 1.0),
                        obs=y)

    monkeypatch.setattr(schedule, "PLATEAUS_TO_STOP", 1)
    fit = pyrovi.fit(one_draw, {"y": torch.ones(10, dtype=torch.float64)},
                     guide="mean_field", compiled=False)
    why = fit.history["stop_checks"][0]["why"]
    assert why.startswith("12 guide parameters and a model that takes its draws one at")


def test_a_fit_held_to_its_step_count_judges_its_stop_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed ``num_steps`` runs on past the schedule's stop; the stop is checked (and
    the ten-window gain measured) when it is first called, not again every window."""
    monkeypatch.setattr(schedule, "PLATEAUS_TO_STOP", 1)
    fit = pyrovi.fit(regression, _data(), guide="mean_field", optimizer="adam",
                     num_steps=1500, seed=1)
    assert len(fit.losses) >= 1500 and fit.converged
    checks = fit.history["stop_checks"]
    assert 1 <= len(checks) <= 1 + sum(check["withdrawn"] for check in checks)
    assert len(fit.history["progress_checks"]) <= 1 + len(checks)


def test_the_stop_check_says_where_it_cannot_serve() -> None:
    fit = pyrovi.fit(regression, _data(), guide="mean_field", elbo="renyi",
                     num_particles=4)
    assert fit.history["stop_checks"] == [{"step": fit.history["stop_checks"][0]["step"],
                                           "why": "elbo='renyi' is not an ELBO"}]


def test_draws_evaluated_in_chunks_give_the_same_fit(monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    """Where draws times data exceed ``SAA_MAX_NUMBERS`` the fixed draws are evaluated in
    chunks and their gradients summed: the same solve, to rounding."""
    data = _data()
    whole = pyrovi.fit(regression, data, guide="full_rank", optimizer="saa")
    monkeypatch.setattr(svi, "SAA_MAX_NUMBERS", 100)  # 80 data values: 1 draw at a time
    chunked = pyrovi.fit(regression, data, guide="full_rank", optimizer="saa")
    assert chunked.history["saa"]["certified"]
    assert abs(chunked.elbo - whole.elbo) < 1e-9
    assert torch.allclose(flat_posterior(chunked.guide).mean, flat_posterior(whole.guide).mean,
                          rtol=1e-9)
