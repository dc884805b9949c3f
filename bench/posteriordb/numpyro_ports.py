"""NumPyro ports of the posteriordb posteriors in ``ports.py``, and the check that they agree.

Every model in ``ports.POSTERIORS`` is written again in NumPyro with the same
parameterisation, the same site names and shapes and the same priors, so that NumPyro's
NUTS samples the same posterior as ``pyrovi.nuts`` (``bench/time_to_posterior.py`` times
both). The Pyro port is the specification; the translation is mechanical:

- Stan's implicit flat prior (the Pyro port's ``FlatPrior``) is
  ``numpyro.distributions.ImproperUniform(support, (), event_shape)``: log density 0.
- ``HalfCauchy``, ``HalfNormal``, ``FoldedDistribution(StudentT(...))``, ``Gamma``,
  ``Beta``, ``Poisson`` and ``MixtureSameFamily`` have NumPyro twins with the same
  arguments; :class:`OrderedNormal` is written again here (support
  ``constraints.ordered_vector``, the ``n!`` included as in the Pyro port).
- The data are the Pyro port's (``Port.make_data``, transformed data included) with every
  tensor turned into a float64 JAX array (:func:`as_jax`); sizes stay Python ints.

The check (:func:`check_port`): at a few points (draws of posteriordb's reference
posterior, mapped to the sample sites by ``Port.latents`` where the reference stores
transformed parameters) the NumPyro log joint (``numpyro.infer.util.log_density``) equals
the Pyro port's (``poutine.trace(...).log_prob_sum()``, float64) to a relative
:data:`CHECK_RTOL`. Both are log joints in the constrained space, without Jacobians, so a
wrong prior, likelihood, constant or shape shows up as a difference.

JAX runs in float64 here: :func:`enable_x64` is called by the functions that run NumPyro,
never at import time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pyro
import torch
from numpyro.distributions import constraints
from numpyro.infer.util import log_density
from pyro.poutine.util import site_is_subsample

__all__ = [
    "CHECK_RTOL",
    "MODELS",
    "OrderedNormal",
    "as_jax",
    "check_port",
    "enable_x64",
    "flat",
]

CHECK_RTOL = 1e-8
"""A NumPyro port passes when its log joint is within this relative distance of Pyro's."""


def enable_x64() -> None:
    """Make JAX compute in float64 (NumPyro's default is float32)."""
    jax.config.update("jax_enable_x64", True)


def flat(support: constraints.Constraint, event_shape: tuple[int, ...] = ()
         ) -> dist.ImproperUniform:
    """Stan's implicit flat prior on ``support``: log density 0, as ``ports.FlatPrior``."""
    return dist.ImproperUniform(support, (), event_shape)


class OrderedNormal(dist.Distribution):
    """``n`` iid ``Normal(loc, scale)`` values in increasing order (``ports.OrderedNormal``).

    Stan's ``ordered[n] mu; mu ~ normal(loc, scale);``. The log density is the iid normal
    one plus ``log n!`` (the density on the ordered set), as in the Pyro port.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.ordered_vector
    reparametrized_params = ["loc", "scale"]
    pytree_data_fields = ("loc", "scale")
    pytree_aux_fields = ("n",)

    def __init__(self, loc: Any, scale: Any, n: int, *, validate_args: bool | None = None
                 ) -> None:
        self.loc, self.scale = jnp.broadcast_arrays(jnp.asarray(loc), jnp.asarray(scale))
        self.n = int(n)
        super().__init__(batch_shape=jnp.shape(self.loc), event_shape=(self.n,),
                         validate_args=validate_args)

    def sample(self, key: jax.Array, sample_shape: tuple[int, ...] = ()) -> jax.Array:
        eps = jax.random.normal(key, sample_shape + self.batch_shape + self.event_shape)
        return jnp.sort(self.loc[..., None] + self.scale[..., None] * eps, axis=-1)

    def log_prob(self, value: jax.Array) -> jax.Array:
        iid = dist.Normal(self.loc[..., None], self.scale[..., None])
        return iid.log_prob(value).sum(-1) + math.lgamma(self.n + 1)


# ----------------------------------------------------------------------------- models


def eight_schools_noncentered(J: int, y: jax.Array, sigma: jax.Array) -> None:
    """posteriordb ``eight_schools_noncentered``: theta = mu + tau * theta_trans."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("data", J):
        theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", theta_trans * tau + mu)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _regression(name_x: str, name_y: str, sigma_prior: str) -> Callable[..., None]:
    """``y ~ normal(beta[1] + beta[2] * x, sigma)`` with flat ``beta`` (``ports._regression``)."""

    def model(N: int, **data: jax.Array) -> None:
        x, y = data[name_x], data[name_y]
        beta = numpyro.sample("beta", flat(constraints.real, (2,)))
        if sigma_prior == "flat":
            sigma = numpyro.sample("sigma", flat(constraints.positive))
        else:
            sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
        with numpyro.plate("data", N):
            numpyro.sample(name_y, dist.Normal(beta[0] + beta[1] * x, sigma), obs=y)

    return model


def logmesquite(N: int, log_weight: jax.Array, log_diam1: jax.Array, log_diam2: jax.Array,
                log_canopy_height: jax.Array, log_total_height: jax.Array,
                log_density: jax.Array, group: jax.Array) -> None:
    """posteriordb ``logmesquite``: log weight on six log predictors, flat priors."""
    beta = numpyro.sample("beta", flat(constraints.real, (7,)))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    xs = (log_diam1, log_diam2, log_canopy_height, log_total_height, log_density, group)
    mean = beta[0]
    for k, x in enumerate(xs, start=1):
        mean = mean + beta[k] * x
    with numpyro.plate("data", N):
        numpyro.sample("log_weight", dist.Normal(mean, sigma), obs=log_weight)


def kilpisjarvi(N: int, x: jax.Array, y: jax.Array, pmualpha: float, psalpha: float,
                pmubeta: float, psbeta: float) -> None:
    """posteriordb ``kilpisjarvi``: linear trend with x around 4000, flat sigma."""
    alpha = numpyro.sample("alpha", dist.Normal(pmualpha, psalpha))
    beta = numpyro.sample("beta", dist.Normal(pmubeta, psbeta))
    sigma = numpyro.sample("sigma", flat(constraints.positive))
    with numpyro.plate("data", N):
        numpyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def arK(K: int, T: int, y: jax.Array, y_lags: jax.Array) -> None:
    """posteriordb ``arK``: y[t] ~ normal(alpha + sum_k beta[k] y[t-k], sigma), t > K."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    with numpyro.plate("data", T - K):
        numpyro.sample("y", dist.Normal(alpha + y_lags @ beta, sigma), obs=y[K:])


GP_JITTER = 1e-10  # ports.GP_JITTER


def gp_pois_regr(N: int, x: jax.Array, k: jax.Array) -> None:
    """posteriordb ``gp_pois_regr``: latent GP f = L(alpha, rho) f_tilde, k ~ poisson_log(f)."""
    rho = numpyro.sample("rho", dist.Gamma(25.0, 4.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(2.0))
    f_tilde = numpyro.sample("f_tilde", dist.Normal(0.0, 1.0).expand([N]).to_event(1))
    sq = (x[:, None] - x[None, :]) ** 2
    cov = alpha**2 * jnp.exp(-0.5 * sq / rho**2) + GP_JITTER * jnp.eye(N)
    f = numpyro.deterministic("f", jnp.linalg.cholesky(cov) @ f_tilde)
    numpyro.sample("k", dist.Poisson(jnp.exp(f)).to_event(1), obs=k)


def diamonds(N: int, K: int, Xc: jax.Array, Y: jax.Array) -> None:
    """posteriordb ``diamonds`` (brms): Y ~ normal(Intercept + Xc b, sigma), Xc centred."""
    b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([K - 1]).to_event(1))
    intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
    sigma = numpyro.sample("sigma", dist.FoldedDistribution(dist.StudentT(3.0, 0.0, 10.0)))
    with numpyro.plate("data", N):
        numpyro.sample("Y", dist.Normal(intercept + Xc @ b, sigma), obs=Y)


def low_dim_gauss_mix(N: int, y: jax.Array) -> None:
    """posteriordb ``low_dim_gauss_mix``: two normal components, ordered means."""
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    mu = numpyro.sample("mu", OrderedNormal(0.0, 2.0, 2))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    weights = jnp.stack([theta, 1.0 - theta], axis=-1)
    with numpyro.plate("data", N):
        numpyro.sample("y", dist.MixtureSameFamily(dist.Categorical(probs=weights),
                                                   dist.Normal(mu, sigma)), obs=y)


MODELS: dict[str, Callable[..., None]] = {
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "kidiq-kidscore_momiq": _regression("mom_iq", "kid_score", "half_cauchy_2.5"),
    "kidiq-kidscore_momhs": _regression("mom_hs", "kid_score", "half_cauchy_2.5"),
    "earnings-earn_height": _regression("height", "earn", "flat"),
    "earnings-logearn_height": _regression("height", "log_earn", "flat"),
    "mesquite-logmesquite": logmesquite,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    "arK-arK": arK,
    "gp_pois_regr-gp_pois_regr": gp_pois_regr,
    "diamonds-diamonds": diamonds,
    "low_dim_gauss_mix-low_dim_gauss_mix": low_dim_gauss_mix,
}
"""posteriordb name -> NumPyro model, called as ``model(**as_jax(port_data))``."""


# ----------------------------------------------------------------------------- data, check


def as_jax(data: Mapping[str, Any]) -> dict[str, Any]:
    """A Pyro port's keyword data with every tensor as a float64 JAX array (x64 enabled)."""
    enable_x64()
    return {k: jnp.asarray(v.detach().cpu().numpy().astype(np.float64))
            if isinstance(v, torch.Tensor) else v for k, v in data.items()}


def _pyro_log_joint(model: Callable[..., None], data: Mapping[str, Any],
                    values: Mapping[str, torch.Tensor]) -> tuple[float, dict[str, tuple]]:
    """Pyro's log joint at ``values`` and the shapes of the latent and deterministic sites."""
    with torch.no_grad():
        conditioned = pyro.poutine.condition(model, data=dict(values))
        trace = pyro.poutine.trace(conditioned).get_trace(**data)
        shapes = {name: tuple(site["value"].shape) for name, site in trace.nodes.items()
                  if site["type"] == "sample" and not site_is_subsample(site)
                  and (name in values or site["infer"].get("_deterministic"))}
        return float(trace.log_prob_sum()), shapes


def _numpyro_shapes(trace: Mapping[str, Any]) -> dict[str, tuple]:
    return {name: tuple(jnp.shape(site["value"])) for name, site in trace.items()
            if site["type"] == "deterministic"
            or (site["type"] == "sample" and not site["is_observed"])}


def check_port(port: Any, data: Mapping[str, Any], draws: Mapping[str, np.ndarray],
               num_points: int = 5) -> dict[str, Any]:
    """Compare the NumPyro port's log joint with the Pyro port's at ``num_points`` draws.

    Parameters
    ----------
    port : ports.Port
        The Pyro port (its ``model``, ``latents`` and ``name``, a key of :data:`MODELS`).
    data : mapping
        The Pyro port's keyword data (cast to float64 here).
    draws : mapping
        Reference draws, site -> array of shape ``(n, *site_shape)`` (constrained), as
        ``ports.read_draws`` gives them.
    num_points : int
        Draws used, evenly spaced over the ``n``.

    Returns
    -------
    dict
        ``posterior``, ``points``, ``max_abs_diff`` and ``max_rel_diff`` (over the points,
        relative to ``max(1, |Pyro log joint|)``), ``log_joint_pyro`` (at the first
        point), ``same_sites`` (the latent and deterministic sites have the same names
        and shapes in both) and ``pass`` (``same_sites`` and
        ``max_rel_diff <= CHECK_RTOL``).
    """
    data64 = {k: v.to(torch.float64) if isinstance(v, torch.Tensor) and v.is_floating_point()
              else v for k, v in data.items()}
    latents = port.latents(draws, data64) if port.latents is not None else draws
    trace = pyro.poutine.trace(port.model).get_trace(**data64)
    sites = [name for name, site in trace.nodes.items()
             if site["type"] == "sample" and not site["is_observed"]
             and not site_is_subsample(site)]
    n = len(np.asarray(latents[sites[0]]))
    picks = np.unique(np.linspace(0, n - 1, num_points).round().astype(int))
    model = MODELS[port.name]
    jax_data = as_jax(data64)
    abs_diffs, rel_diffs, first, same_shapes = [], [], math.nan, True
    for i in picks:
        point = {s: np.asarray(latents[s], dtype=np.float64)[i] for s in sites}
        lp_pyro, shapes = _pyro_log_joint(port.model, data64,
                                          {s: torch.as_tensor(v) for s, v in point.items()})
        lp_numpyro, trace = log_density(
            model, (), jax_data, {s: jnp.asarray(v) for s, v in point.items()})
        same_shapes = same_shapes and shapes == _numpyro_shapes(trace)
        diff = abs(float(lp_numpyro) - lp_pyro)
        abs_diffs.append(diff)
        rel_diffs.append(diff / max(1.0, abs(lp_pyro)))
        if math.isnan(first):
            first = lp_pyro
    worst = max(rel_diffs)
    return {"posterior": port.name, "points": len(picks), "log_joint_pyro": first,
            "max_abs_diff": max(abs_diffs), "max_rel_diff": worst,
            "same_sites": same_shapes, "pass": bool(same_shapes and worst <= CHECK_RTOL)}
