"""The Bayesian Gaussian mixture model family (:mod:`pyrovi.models.gmm`)."""

from __future__ import annotations

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoNormal
from scipy.special import logsumexp
from scipy.stats import dirichlet, lognorm, norm

from pyrovi.models import gmm


def _fixed_params(K: int = 3, D: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    weights = 0.5 + torch.rand(K, generator=g)
    return {
        "weights": weights / weights.sum(),
        "locs": torch.randn(K, D, generator=g),
        "scales": 0.3 + torch.rand(K, D, generator=g),
    }


def _numpy_log_lik(x: np.ndarray, p: dict[str, torch.Tensor]) -> float:
    w, mu, sd = (p[k].double().numpy() for k in ("weights", "locs", "scales"))
    mu = mu.reshape(len(w), -1)
    log_comp = norm.logpdf(x[:, None, :], mu[None], sd[None]).sum(-1) + np.log(w)
    return float(logsumexp(log_comp, axis=1).sum())


def _delta_guide(params: dict[str, torch.Tensor]):
    def guide(x, K=2, alpha0=1.0, prior_scale=2.0, ordered=False):
        for name, value in params.items():
            event_dim = 1 if name == "weights" or (name == "locs" and ordered) else 2
            pyro.sample(name, dist.Delta(value, event_dim=event_dim))

    return guide


# ------------------------------------------------------------------ likelihood and prior


def test_marginal_log_prob_matches_numpy():
    data, _ = gmm.simulate(seed=0, N=100, K=3, D=2)
    params = _fixed_params()
    trace = poutine.trace(poutine.condition(gmm.model, data=params)).get_trace(**data)
    trace.compute_log_prob()
    x = data["x"].double().numpy()
    log_lik = float(trace.nodes["x"]["log_prob_sum"])
    assert log_lik == pytest.approx(_numpy_log_lik(x, params), rel=1e-5)
    w, mu, sd = (params[k].double().numpy() for k in ("weights", "locs", "scales"))
    log_prior = (
        dirichlet.logpdf(w / w.sum(), np.ones(3))
        + norm.logpdf(mu, 0.0, 2.0).sum()
        + lognorm.logpdf(sd, s=1.0).sum()
    )
    total = float(trace.log_prob_sum())
    assert total == pytest.approx(log_lik + log_prior, rel=1e-5)


@pytest.mark.parametrize("ordered", [False, True])
def test_enumerated_and_marginalised_models_agree(ordered):
    """TraceEnum_ELBO on model_enum and Trace_ELBO on model give the same log joint."""
    D = 1 if ordered else 2
    data, truth = gmm.simulate(seed=1, N=80, K=3, D=D)
    data = {**data, "ordered": ordered}
    params = _fixed_params(K=3, D=D, seed=1)
    if ordered:
        params["locs"] = params["locs"][:, 0].sort().values
    guide = _delta_guide(params)
    marginal = Trace_ELBO().loss(gmm.model, guide, **data)
    enumerated = TraceEnum_ELBO(max_plate_nesting=1).loss(gmm.model_enum, guide, **data)
    assert enumerated == pytest.approx(marginal, rel=1e-5)
    trace = poutine.trace(poutine.condition(gmm.model, data=params)).get_trace(**data)
    trace.compute_log_prob()
    expected = _numpy_log_lik(data["x"].double().numpy(), params)
    assert float(trace.nodes["x"]["log_prob_sum"]) == pytest.approx(expected, rel=1e-5)


def test_sorted_normal_prior():
    d = gmm.SortedNormal(0.0, 2.0, 4)
    draws = d.sample((500,))
    assert draws.shape == (500, 4)
    assert torch.all(draws[:, 1:] > draws[:, :-1])
    value = torch.tensor([-1.0, 0.0, 0.5, 3.0])
    expected = norm.logpdf(value.numpy(), 0.0, 2.0).sum() + math.log(24)
    assert float(d.log_prob(value)) == pytest.approx(expected, rel=1e-6)
    assert d.expand((3,)).sample().shape == (3, 4)
    # K=2: P(locs[0] < 0) = P(min of two N(0, 2) < 0) = 3/4; 4000 draws, SE about 0.007
    two = gmm.SortedNormal(0.0, 2.0, 2).sample((4000,))
    assert float((two[:, 0] < 0).float().mean()) == pytest.approx(0.75, abs=0.03)


def test_ordered_needs_one_dimension():
    data, _ = gmm.simulate(seed=0, N=20, K=2, D=2)
    with pytest.raises(ValueError, match="D == 1"):
        poutine.trace(gmm.model).get_trace(**data, ordered=True)


# ------------------------------------------------------------------------- data sets


def test_simulate_shapes_and_scale():
    data, truth = gmm.simulate(seed=3, N=300, K=3, D=2)
    assert data["x"].shape == (300, 2) and data["K"] == 3
    assert truth["weights"].shape == (3,)
    assert truth["locs"].shape == (3, 2)
    assert truth["scales"].shape == (3, 2)
    assert set(truth) == {"weights", "locs", "scales"}
    assert float(truth["weights"].sum()) == pytest.approx(1.0, abs=1e-6)
    assert torch.all(truth["locs"][1:, 0] > truth["locs"][:-1, 0])
    # the population mixture is standardised exactly
    w, mu, sd = truth["weights"][:, None], truth["locs"], truth["scales"]
    torch.testing.assert_close((w * mu).sum(0), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close((w * (sd**2 + mu**2)).sum(0), torch.ones(2), atol=1e-5, rtol=0)
    # and well separated: every pair of means is at least 3 component sds apart
    gap = (mu[:, None] - mu[None]).norm(dim=-1) + 1e9 * torch.eye(3)
    assert float(gap.min()) > 3 * float(sd.max())
    again, _ = gmm.simulate(seed=3, N=300, K=3, D=2)
    assert torch.equal(again["x"], data["x"])


@pytest.mark.parametrize(
    ("name", "shape", "K", "raw_mean", "first_row"),
    [
        (None, (272, 2), 2, [3.4878, 70.897], [3.6, 79.0]),
        ("old_faithful", (272, 2), 2, [3.4878, 70.897], [3.6, 79.0]),
        ("iris", (150, 4), 3, [5.8433, 3.0573, 3.758, 1.1993], [5.1, 3.5, 1.4, 0.2]),
    ],
)
def test_load_data(name, shape, K, raw_mean, first_row):
    data = gmm.load_data(name)
    assert set(data) == {"x", "K"}
    x = data["x"]
    assert x.shape == shape and data["K"] == K
    torch.testing.assert_close(x.mean(0), torch.zeros(shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(0), torch.ones(shape[1]), atol=1e-5, rtol=0)
    mean, sd = gmm.standardization(name)
    np.testing.assert_allclose(mean, raw_mean, atol=1e-3)
    np.testing.assert_allclose(gmm.unstandardize(x[0], name), first_row, atol=1e-4)
    np.testing.assert_allclose(gmm.unstandardize(np.ones(shape[1]), name, scale=True), sd)


def test_faithful_known_statistics():
    mean, sd = gmm.standardization("old_faithful")
    np.testing.assert_allclose(mean, [3.487783, 70.897059], atol=1e-6)
    np.testing.assert_allclose(sd, [1.141371, 13.594974], atol=1e-6)


def test_unknown_data_set():
    with pytest.raises(ValueError, match="old_faithful"):
        gmm.load_data("nope")


def test_spec():
    spec = gmm.SPEC
    assert spec.name == "gmm" and spec.datasets == ("old_faithful", "iris")
    assert spec.model is gmm.model and spec.load_data is gmm.load_data
    assert spec.guides["mean_field_gmm"](gmm.model) is gmm.mean_field_guide
    assert {"mean_field", "full_rank", "map"} <= set(spec.guides)


# ---------------------------------------------------------------------------- inference


def test_model_runs_under_trace_elbo_with_guides():
    data = gmm.load_data()
    for guide in (AutoNormal(gmm.model), gmm.mean_field_guide):
        svi = SVI(gmm.model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        losses = [svi.step(**data) for _ in range(5)]
        assert np.all(np.isfinite(losses))
    names = [n for n in pyro.get_param_store().keys() if n.startswith("gmm_guide.")]
    assert len(names) == 5  # weights_concentration, locs_loc/scale, scales_loc/scale
    # vectorised particles: the model is batch safe
    elbo = Trace_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    assert np.isfinite(elbo.loss(gmm.model, gmm.mean_field_guide, **data))
    enum = TraceEnum_ELBO(num_particles=4, vectorize_particles=True, max_plate_nesting=1)
    assert np.isfinite(enum.loss(gmm.model_enum, gmm.mean_field_guide, **data))


def test_ordered_mean_field_guide_respects_order():
    data, _ = gmm.simulate(seed=0, N=50, K=3, D=1)
    data = {**data, "ordered": True}
    for _ in range(20):
        locs = poutine.trace(gmm.mean_field_guide).get_trace(**data).nodes["locs"]["value"]
        assert locs.shape == (3,) and torch.all(locs[1:] > locs[:-1])


def test_nuts_runs():
    data, _ = gmm.simulate(seed=0, N=40, K=2, D=1)
    data = {**data, "ordered": True}
    kernel = pyro.infer.NUTS(gmm.model, max_tree_depth=4)
    mcmc = pyro.infer.MCMC(kernel, num_samples=10, warmup_steps=10, disable_progbar=True)
    mcmc.run(**data)
    locs = mcmc.get_samples()["locs"]
    assert locs.shape == (10, 2) and torch.all(locs[:, 1] > locs[:, 0])


@pytest.fixture(scope="module")
def fitted_1d():
    """AutoNormal fitted by plain Pyro SVI to well-separated 1-D data, ordered means."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    data, truth = gmm.simulate(seed=0, N=300, K=2, D=1)
    data = {**data, "ordered": True}
    guide = AutoNormal(gmm.model)
    svi = SVI(gmm.model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    losses = [svi.step(**data) for _ in range(400)]
    torch.set_num_threads(threads)
    store = pyro.get_param_store().get_state()
    return data, truth, guide, losses, store


def test_svi_recovers_ordered_means(fitted_1d):
    data, truth, guide, losses, _ = fitted_1d
    median = guide.median(**data)
    # 300 points, component sds below 0.3: posterior sd of a mean is about 0.03
    torch.testing.assert_close(median["locs"], truth["locs"][:, 0], atol=0.3, rtol=0)
    assert np.mean(losses[-50:]) < np.mean(losses[:50])


def test_cluster_assignments(fitted_1d):
    data, truth, guide, _, store = fitted_1d
    pyro.get_param_store().set_state(store)
    assign = gmm.cluster_assignments(gmm.model_enum, guide, data, seed=0)
    assert assign.shape == (300,) and assign.dtype == torch.long
    # reference: argmax responsibilities at the true parameters
    x = data["x"].double().numpy()
    w, mu, sd = (truth[k].double().numpy() for k in ("weights", "locs", "scales"))
    log_comp = norm.logpdf(x[:, None, :], mu[None], sd[None]).sum(-1) + np.log(w)
    agreement = np.mean(assign.numpy() == log_comp.argmax(1))
    assert agreement > 0.98
