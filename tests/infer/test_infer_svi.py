"""pyrovi.fit: guide families, ELBO variants, robustness, determinism, persistence."""

from __future__ import annotations

import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

import pyrovi
from pyrovi.infer.util import batch_safe
from pyrovi.models import beta_bernoulli, linear_regression, normal_normal

# Each objective fitted to convergence on normal_normal, where mean-field is the exact
# family: every objective's optimum is q = posterior, so log p(x) - ELBO = KL(q || p) -> 0.
# The ELBO families start at the Laplace approximation (exact) and stay: 0.1 nats. RWS
# (forward KL) and CUBO (chi^2) are minimised at q = p too: 0.1. IWAE_K and Rényi bounds
# are flat in q's width near the optimum (IWAE_K's gap to log p(x) is about
# chi^2(p || q) / 2K, so a q off by 10% in every sd of 8 dimensions costs the IWAE_16 less
# than its Monte Carlo error while its ELBO is 0.2 nats below): 0.5 nats for them (seen:
# iwae 0.18, renyi 0.1).
ELBO_GAP_TOLERANCE = {"iwae": 0.5, "renyi": 0.5}


@pytest.mark.parametrize("elbo", sorted(pyrovi.infer.ELBO_FAMILIES))
def test_every_elbo_family_fits(elbo: str) -> None:
    data = normal_normal.load_data()
    objective = pyrovi.infer.ELBO_FAMILIES[elbo]
    if objective.compiled:
        # the JIT variants are the same ELBOs compiled (judged as ``trace`` etc. above);
        # run to convergence, jit_mean_field alone takes 45 s: 150 steps from the exact
        # Laplace start show the compiled loss steps and stays at the optimum
        fit = pyrovi.fit(normal_normal.model, data, guide="mean_field", elbo=elbo,
                         num_steps=150, lr=0.03, init="laplace")
        assert np.isfinite(fit.losses).all()
        assert normal_normal.log_evidence(data) - fit.elbo < 0.1
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error", pyrovi.ConvergenceWarning)
        fit = pyrovi.fit(normal_normal.model, data, guide="mean_field", elbo=elbo,
                         init="laplace")  # one start: no second stage
    assert fit.converged and np.isfinite(fit.losses).all()
    assert normal_normal.log_evidence(data) - fit.elbo < ELBO_GAP_TOLERANCE.get(elbo, 0.1)
    if not objective.judged_by_elbo:
        # not the over-dispersed start returned. CUBO tries spreads 1 .. 3 of the Laplace
        # start and keeps the best by its own value: here spread 1, the posterior itself,
        # and returning that start is returning the optimum
        assert not fit.history["returned_start"] or fit.history["start_spread"] == 1.0
        own = fit.history["objective"]
        if objective.bound == "upper":  # CUBO_2 >= log p(x), within a few se at q = p
            assert own["value"] >= normal_normal.log_evidence(data) - 3 * own["se"] - 1e-6


@pytest.mark.parametrize("guide", ["mean_field", "low_rank", "full_rank", "flow", "map",
                                   "laplace"])
def test_every_guide_family_gives_constrained_draws(guide: str) -> None:
    data = beta_bernoulli.load_data()
    fit = pyrovi.fit(beta_bernoulli.model, data, guide=guide, num_steps=100)
    idata = fit.posterior(num_samples=200)
    p = idata.posterior["p"].values
    assert p.shape == (1, 200) and np.all((p > 0) & (p < 1))
    assert abs(p.mean() - 437 / 980) < 0.02


def test_same_seed_same_losses() -> None:
    data = normal_normal.load_data()
    a = pyrovi.fit(normal_normal.model, data, guide="full_rank", num_steps=120, seed=3)
    b = pyrovi.fit(normal_normal.model, data, guide="full_rank", num_steps=120, seed=3)
    c = pyrovi.fit(normal_normal.model, data, guide="full_rank", num_steps=120, seed=4)
    assert np.array_equal(a.losses, b.losses)
    assert not np.array_equal(a.losses, c.losses)


def test_step_cap_warns() -> None:
    data = beta_bernoulli.load_data()
    with pytest.warns(pyrovi.ConvergenceWarning, match="did not converge"):
        fit = pyrovi.fit(beta_bernoulli.model, data, guide=beta_bernoulli.beta_guide,
                         max_steps=50)
    assert not fit.converged and len(fit.losses) == fit.history["start_steps"] + 50


def test_bad_names_raise() -> None:
    data = normal_normal.load_data()
    with pytest.raises(ValueError, match="unknown guide 'nope'"):
        pyrovi.fit(normal_normal.model, data, guide="nope")
    with pytest.raises(ValueError, match="unknown elbo 'nope'"):
        pyrovi.fit(normal_normal.model, data, elbo="nope", num_steps=5)
    bad = dict(data, x=data["x"].clone())
    bad["x"][0, 1] = float("nan")
    with pytest.raises(ValueError, match="'x' contains NaN"):
        pyrovi.fit(normal_normal.model, bad, num_steps=5)


def boundary_model(y: torch.Tensor) -> None:
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(z, 1.0).expand(y.shape).to_event(1), obs=y)
    pyro.factor("below_one", torch.log(1.0 - z))  # NaN once z crosses 1


def boundary_guide(y: torch.Tensor) -> None:
    loc = pyro.param("loc", torch.tensor(0.0))
    pyro.sample("z", dist.Normal(loc, 0.01))


def test_non_finite_steps_are_rejected_not_fatal() -> None:
    """Steps of 0.5 overshoot the boundary at 1 and give NaN losses: those steps are taken
    back with a smaller step size, and the fit ends at the optimum below the boundary."""
    y = torch.full((20,), 0.75)
    fit = pyrovi.fit(boundary_model, {"y": y}, guide=boundary_guide, num_steps=600, lr=0.5)
    # the mode: -z + 20 (0.75 - z) = 1 / (1 - z), i.e. 21 z^2 - 36 z + 14 = 0, z = 0.5963
    assert abs(float(fit.params["loc"]) - 0.5963) < 0.01
    assert np.isfinite(fit.losses).all() and fit.history["lr"][-1] < 0.5


def always_nan_model(y: torch.Tensor) -> None:
    z = pyro.sample("z", dist.Normal(0.0, 1.0))
    pyro.sample("y", dist.Normal(z, 1.0).expand(y.shape).to_event(1), obs=y)
    pyro.factor("always_nan", z * float("nan"))


def test_persistent_non_finite_loss_names_the_site_and_restores_parameters() -> None:
    with pytest.raises(pyrovi.NonFiniteLossError, match="site 'always_nan'") as info:
        pyrovi.fit(always_nan_model, {"y": torch.zeros(3)}, guide=boundary_guide,
                   num_steps=100, lr=0.05)
    assert "restored" in str(info.value)
    assert float(pyro.get_param_store()["loc"].detach()) == 0.0  # never moved


def test_plain_models_fall_back_from_vectorized_particles() -> None:
    data = linear_regression.load_data()
    with pyro.settings.context(module_local_params=True):
        guide = pyrovi.make_guide("mean_field", linear_regression.model)
        guide(**data)
        assert not batch_safe(linear_regression.model, guide, data, 4)
        nn_guide = pyrovi.make_guide("mean_field", normal_normal.model)
        nn_data = normal_normal.load_data()
        nn_guide(**nn_data)
        assert batch_safe(normal_normal.model, nn_guide, nn_data, 4)
    fit = pyrovi.fit(linear_regression.model, data, guide="mean_field", num_particles=4,
                     num_steps=100)
    assert np.isfinite(fit.losses).all()


def test_custom_callable_guide_and_deterministic_sites() -> None:
    def model(x: torch.Tensor) -> None:
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        pyro.deterministic("loc_squared", loc**2)
        with pyro.plate("n", x.shape[0]):
            pyro.sample("x", dist.Normal(loc, 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        m = pyro.param("m", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=dist.constraints.positive)
        pyro.sample("loc", dist.Normal(m, s))

    x = torch.randn(50) + 3.0
    fit = pyrovi.fit(model, {"x": x}, guide=guide)
    assert fit.guide_name == "custom"
    post = fit.posterior(num_samples=500).posterior
    assert set(post.data_vars) == {"loc", "loc_squared"}
    exact_mean = float(x.sum() / (50 + 0.01))
    assert abs(float(post["loc"].mean()) - exact_mean) < 0.05
    np.testing.assert_allclose(post["loc_squared"].values, post["loc"].values ** 2, rtol=1e-5)


@pytest.mark.parametrize("guide", ["mean_field", "low_rank", "full_rank", "flow", "map",
                                   "laplace", "custom"])
def test_save_and_load_round_trip(guide: str, tmp_path) -> None:
    data = beta_bernoulli.load_data()
    chosen = beta_bernoulli.beta_guide if guide == "custom" else guide
    fit = pyrovi.fit(beta_bernoulli.model, data, guide=chosen, num_steps=60)
    path = tmp_path / "fit.pt"
    fit.save(path)
    pyro.clear_param_store()
    loaded = pyrovi.load_fit(path, beta_bernoulli.model,
                             guide=chosen if guide == "custom" else None)
    assert np.array_equal(loaded.losses, fit.losses) and loaded.elbo == fit.elbo
    a, b = fit.sample(100, seed=5), loaded.sample(100, seed=5)
    assert torch.allclose(a["p"], b["p"])
    torch.load(path, weights_only=True)  # loads under torch's safe default


def test_load_rejects_other_files(tmp_path) -> None:
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable pyrovi fit"):
        pyrovi.load_fit(path, beta_bernoulli.model)


def test_two_fits_do_not_share_parameters() -> None:
    data = normal_normal.load_data()
    first = pyrovi.fit(normal_normal.model, data, guide="mean_field", num_steps=50)
    before = first.sample(200, seed=1)["mu"]
    shifted = dict(data, x=data["x"] + 100.0)
    pyrovi.fit(normal_normal.model, shifted, guide="mean_field", num_steps=50)
    after = first.sample(200, seed=1)["mu"]
    assert torch.equal(before, after)


@pytest.mark.slow
def test_full_rank_matches_nuts_on_the_badly_scaled_regression(stored_nuts) -> None:
    """Issue acceptance: within 0.2 posterior sd of the NUTS means, sds within 20%."""
    data = linear_regression.load_data()
    stored_nuts.install("linear_regression", linear_regression.model, data,
                          num_samples=1000, num_warmup=500)
    ref = pyrovi.nuts(linear_regression.model, data, num_samples=1000, num_warmup=500)
    fit = pyrovi.fit(linear_regression.model, data, guide="full_rank")
    assert fit.converged
    draws = fit.sample(4000, seed=1)
    for site in ("beta", "sigma"):
        vi = draws[site].reshape(4000, -1).numpy()
        nuts_draws = ref.posterior[site].values.reshape(-1, vi.shape[1])
        ref_mean, ref_sd = nuts_draws.mean(0), nuts_draws.std(0)
        assert np.all(np.abs(vi.mean(0) - ref_mean) < 0.2 * ref_sd), site
        assert np.all(np.abs(vi.std(0) / ref_sd - 1) < 0.2), site
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = np.corrcoef(draws["beta"].reshape(4000, 2).numpy().T)[0, 1]
    assert rho < -0.95


def test_a_fit_never_returns_worse_than_its_start() -> None:
    """The Laplace start is the exact posterior here; steps of 3 sds can only make q worse,
    so the fit hands back its start, at the exact log evidence."""
    data = normal_normal.load_data()
    fit = pyrovi.fit(normal_normal.model, data, guide="full_rank", lr=3.0, init="laplace",
                     num_steps=100)
    assert fit.history["returned_start"] and fit.start == "laplace"
    assert normal_normal.log_evidence(data) - fit.elbo < 0.01
