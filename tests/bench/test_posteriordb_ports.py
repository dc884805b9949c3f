"""The posteriordb ports (``bench/posteriordb/ports.py``) against bundled posteriordb fixtures.

Fast tier: each fixture's port satisfies Stein's identities at the fixture's reference
draws, a deliberately broken port does not (so the check can fail), the ports give the
same log density one particle at a time and under a particle plate, in float32 and
float64, and pyrovi reads the fixture draws as the ports' reader does.

Slow tier: ``pyrovi.fit`` with its defaults reaches, for every guide family, the ELBO of
the plain-Pyro baseline stored in the fixture's ``baseline.json`` (ClippedAdam lr 0.01,
Trace_ELBO, 10,000 steps), up to ``max(0.05, 2 se)``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.poutine.util import site_is_subsample

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "posteriordb"
FAMILIES = ("mean_field", "low_rank", "full_rank", "flow")
ELBO_PARTICLES = 4000
ELBO_TOLERANCE = 0.05


def _load_ports():
    name = "pyrovi_bench_posteriordb_ports"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "bench" / "posteriordb" / "ports.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


ports = _load_ports()
NAMES = sorted(p.name for p in FIXTURES.iterdir() if (p / "data.json").is_file())


def _data(name: str, dtype: torch.dtype = torch.float32) -> dict:
    raw = json.loads((FIXTURES / name / "data.json").read_text())
    return ports.POSTERIORS[name].make_data(raw, dtype=dtype)


def _draws(name: str) -> dict[str, np.ndarray]:
    return ports.read_draws(FIXTURES / name / "draws.json")


def test_fixtures_are_there_and_small():
    assert len(NAMES) >= 3
    for name in NAMES:
        assert name in ports.POSTERIORS
        size = sum(f.stat().st_size for f in (FIXTURES / name).iterdir())
        assert size < 200_000, f"{name}: {size} bytes"


@pytest.mark.parametrize("name", NAMES)
def test_port_passes_stein_check(name):
    draws = _draws(name)
    table = ports.stein_check(ports.POSTERIORS[name], _data(name), draws)
    dims = {"eight_schools-eight_schools_noncentered": 10, "kidiq-kidscore_momiq": 3,
            "kilpisjarvi_mod-kilpisjarvi": 3, "arK-arK": 7}
    assert (table["identity"] == "grad").sum() == dims.get(name, (table.identity == "grad").sum())
    assert set(table["n"]) == {1000}
    worst = table.loc[table["z"].abs().idxmax()]
    assert ports.stein_passes(table), worst.to_dict()


def _eight_schools_wide_mu(J, y, sigma):
    """mu ~ normal(0, 50) where Stan has normal(0, 5): a prior scale changed."""
    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 50.0))
    tau = pyro.sample("tau", dist.HalfCauchy(torch.tensor(5.0, dtype=y.dtype)))
    with pyro.plate("data", J, dim=-1):
        theta_trans = pyro.sample("theta_trans", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
        theta = pyro.deterministic("theta", theta_trans * tau + mu)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _kidiq_light_sigma_prior(N, mom_iq, kid_score):
    """sigma ~ half-normal(0, 1) where Stan has cauchy(0, 2.5): a prior changed."""
    beta = pyro.sample("beta", ports.FlatPrior(dist.constraints.real, (2,), like=kid_score))
    sigma = pyro.sample("sigma", dist.HalfNormal(torch.tensor(1.0, dtype=kid_score.dtype)))
    with pyro.plate("data", N, dim=-1):
        pyro.sample("kid_score", dist.Normal(beta[..., 0] + beta[..., 1] * mom_iq, sigma),
                    obs=kid_score)


def _kilpisjarvi_variance_as_scale(N, x, y, pmualpha, psalpha, pmubeta, psbeta):
    """beta ~ normal(pmubeta, psbeta^2): the prior's variance passed as its scale."""
    return ports.kilpisjarvi(N, x, y, pmualpha, psalpha, pmubeta, psbeta**2)


def _arK_lags_reversed(K, T, y, y_lags):
    """beta[k] multiplies y[t - K - 1 + k] instead of y[t - k]: lags in the wrong order."""
    return ports.arK(K, T, y, y_lags.flip(-1))


BROKEN = {
    "eight_schools-eight_schools_noncentered": _eight_schools_wide_mu,
    "kidiq-kidscore_momiq": _kidiq_light_sigma_prior,
    "kilpisjarvi_mod-kilpisjarvi": _kilpisjarvi_variance_as_scale,
    "arK-arK": _arK_lags_reversed,
}


@pytest.mark.parametrize("name", [n for n in NAMES if n in BROKEN])
def test_broken_port_fails_stein_check(name):
    broken = dataclasses.replace(ports.POSTERIORS[name], model=BROKEN[name])
    table = ports.stein_check(broken, _data(name), _draws(name))
    assert not ports.stein_passes(table)
    assert table["z"].abs().max() > 2 * ports.STEIN_Z_MAX  # by a wide margin


def test_stein_check_reports_both_identities():
    name = NAMES[0]
    table = ports.stein_check(ports.POSTERIORS[name], _data(name), _draws(name), max_draws=200)
    assert set(table["identity"]) == {"grad", "scale"}
    assert set(table["expected"]) == {0.0, -1.0}
    assert set(table["n"]) == {200}
    assert set(table.attrs["max_abs_z"]) == {"grad", "scale"}


def _nesting(trace) -> int:
    dims = [-f.dim for site in trace.nodes.values() if site["type"] == "sample"
            for f in site["cond_indep_stack"] if f.vectorized and f.dim is not None]
    return max(dims, default=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", NAMES)
def test_port_is_batch_safe_in_both_dtypes(name, dtype):
    """Particles in an outer plate give the log joint of each particle alone."""
    model = ports.POSTERIORS[name].model
    data = _data(name, dtype)
    guide = AutoNormal(model)
    with torch.no_grad():
        nesting = _nesting(poutine.trace(model).get_trace(**data))
        num = 3
        with pyro.plate("_particles", num, dim=-(nesting + 1)):
            guide_tr = poutine.trace(guide).get_trace(**data)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(**data)
        model_tr.compute_log_prob()
        batched = sum(site["log_prob"].reshape(num, -1).sum(-1)
                      for site in model_tr.nodes.values()
                      if site["type"] == "sample" and not site_is_subsample(site))
        assert batched.dtype == dtype
        for i in range(num):
            values = {name: site["value"][i] for name, site in guide_tr.nodes.items()
                      if site["type"] == "sample" and not site_is_subsample(site)}
            one = poutine.trace(poutine.condition(model, data=values)).get_trace(**data)
            single = one.log_prob_sum()
            tol = 1e-3 * (1 + abs(float(single))) if dtype == torch.float32 else 1e-9
            assert abs(float(batched[i]) - float(single)) < tol


@pytest.mark.parametrize("name", NAMES)
def test_pyrovi_reads_fixture_draws(name):
    pyrovi = pytest.importorskip("pyrovi")
    ref = pyrovi.load_reference(FIXTURES / name / "draws.json")
    mine = _draws(name)
    theirs = ports.reference_arrays(ref)
    assert set(theirs) == set(mine)
    for site, values in mine.items():
        np.testing.assert_array_equal(theirs[site], values)


# ----------------------------------------------------------------------------- slow tier


def _baseline(name: str, family: str) -> dict:
    path = FIXTURES / name / "baseline.json"
    if not path.exists():
        pytest.skip(f"{path} missing: run bench/posteriordb.py --write-baselines")
    guides = json.loads(path.read_text())["guides"]
    if family not in guides:
        pytest.skip(f"{path} has no {family} baseline")
    return guides[family]


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", NAMES)
def test_fit_reaches_plain_pyro_elbo(name, family):
    """pyrovi.fit with defaults is at least as good as 10,000 steps of plain Pyro SVI.

    Both ELBOs are estimated with ``estimate_elbo`` and 4000 particles; the tolerance is
    ``max(0.05, 2 se)`` with ``se`` the standard error of the difference of the two
    estimates.
    """
    import pyrovi
    from pyrovi.infer import estimate_elbo

    base = _baseline(name, family)
    port = ports.POSTERIORS[name]
    data = _data(name)
    fit = pyrovi.fit(port.model, data, guide=family)
    dtype = getattr(fit, "dtype", None)
    fit_data = ports.as_dtype(data, dtype) if dtype is not None else data
    with ports.fit_context(fit):  # the fit's dtype and parameter store
        elbo, se = estimate_elbo(port.model, fit.guide, fit_data, num_particles=ELBO_PARTICLES,
                                 seed=0)
    se_diff = math.hypot(se, base["se"])
    floor = base["elbo"] - max(ELBO_TOLERANCE, 2 * se_diff)
    assert elbo >= floor, (
        f"{name} {family}: pyrovi ELBO {elbo:.4f} ± {se:.4f} < plain Pyro "
        f"{base['elbo']:.4f} ± {base['se']:.4f} - max({ELBO_TOLERANCE}, 2 se)")
