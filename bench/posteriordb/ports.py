"""Plain Pyro ports of posteriordb posteriors, and the Stein check that they are right.

posteriordb (https://github.com/stan-dev/posteriordb, BSD-3-Clause) pairs Stan models with
data sets and 10,000 reference draws from long NUTS runs. The ports below are written by
hand from the Stan code: the same priors, likelihood and parameter names, so that a
reference draw ``beta[1]`` is element ``beta[0]`` of the Pyro site ``beta``
(:func:`pyrovi.load_reference` does that renaming).

How Stan maps to Pyro here
--------------------------
- A parameter with no sampling statement has Stan's implicit flat prior. It becomes
  :class:`FlatPrior`, an :class:`pyro.distributions.ImproperUniform` on the parameter's
  support (``<lower=0>`` -> positive reals) whose log density is 0, as in Stan.
- ``real<lower=0> s; s ~ cauchy(0, 5)`` is the Cauchy truncated to ``s > 0``: a
  ``HalfCauchy(5)`` (Stan drops the normalising factor 2; a constant, so the posterior
  is the same). Likewise ``normal(0, 2)`` -> ``HalfNormal(2)`` and brms'
  ``student_t(3, 0, 10)`` with its ``- student_t_lccdf(0 | ...)`` term -> the folded
  Student-t.
- ``ordered[2] mu; mu ~ normal(0, 2)`` is two iid normals restricted to ``mu[1] < mu[2]``:
  :class:`OrderedNormal`, whose support is ``constraints.ordered_vector``.
- Transformed parameters that posteriordb stores in its reference draws (eight schools'
  ``theta``, the GP's ``f``) are ``pyro.deterministic`` sites. The Stein check needs the
  sample sites themselves (``theta_trans``, ``f_tilde``); each such port has a
  ``latents`` function that recovers them from the stored draws.
- The models take the data as keyword tensors and take their dtype from the data: they
  run in float32 or float64, and under an outer particle plate (vectorised ELBOs). The
  likelihood sits in ``pyro.plate("data", N, dim=-1)``. A regression coefficient vector
  has batch shape ``(..., 1)`` under a particle plate (the 1 is the data plate's
  dimension); :func:`_matvec` multiplies it by a design matrix accordingly.

The check: Stein's identity
---------------------------
For a density ``p`` on the unconstrained space (Jacobian included) that decays at the
boundary, ``E_p[grad log p(u)] = 0`` and ``E_p[(u_i - c) d_i log p(u)] = -1`` for any
constant ``c``. :func:`stein_check` maps the reference draws into Pyro's unconstrained
space, evaluates the gradient of Pyro's potential energy at each draw (float64) and
reports both averages as z-scores against their Monte Carlo standard errors. A wrong
prior, a missing Jacobian or a transposed matrix gives a huge z on some coordinate; a
right port gives z-scores like standard normals. The second identity (``scale``) also
catches errors in the posterior's width that leave the mean gradient at zero (a
tempered density). A port passes when every |z| of both is below :data:`STEIN_Z_MAX`
(:func:`stein_passes`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.util import broadcast_shape
from pyro.infer.mcmc.util import initialize_model
from torch.distributions import transform_to
from torch.distributions.utils import broadcast_all

__all__ = [
    "POSTERIORS",
    "STEIN_Z_MAX",
    "FlatPrior",
    "OrderedNormal",
    "Port",
    "as_dtype",
    "find_posteriordb",
    "fit_context",
    "load_posterior",
    "read_draws",
    "read_pdb_json",
    "reference_arrays",
    "stein_check",
    "stein_passes",
    "stein_summary",
]

STEIN_Z_MAX = 4.5
"""A port passes the Stein check when every |z| (both identities) is below this.

With at most ~60 z-scores (30 coordinates, two identities) and draws close to
independent, a right port exceeds 4.5 with probability about 60 * 7e-6 = 4e-4."""


# ----------------------------------------------------------------------------- helpers


class FlatPrior(dist.ImproperUniform):
    """Stan's implicit flat prior on ``support``: log density 0 (an ImproperUniform).

    ``ImproperUniform`` cannot be sampled, and Pyro's initialisation strategies
    (``init_to_feasible``, ``init_to_median``, ``init_to_uniform``) and autoguides start
    by calling ``sample()``. Here ``sample()`` returns a fixed feasible point, the image
    of 0 in the unconstrained space (0 for reals, 1 for positive reals), which is what
    ``init_to_feasible`` would pick. It is not a draw: a flat prior has none.

    ``like`` sets the dtype of that point and of the zero log density.
    """

    def __init__(self, support: constraints.Constraint, event_shape: tuple[int, ...] = (),
                 like: torch.Tensor | None = None) -> None:
        self._like = torch.zeros(()) if like is None else torch.zeros((), dtype=like.dtype)
        extra = len(event_shape) - support.event_dim
        if extra > 0:  # a vector of reals is one event: its transforms act on all of it
            support = constraints.independent(support, extra)
        super().__init__(support, torch.Size(), torch.Size(event_shape))

    def expand(self, batch_shape: Any, _instance: Any = None) -> FlatPrior:
        new = self._get_checked_instance(FlatPrior, _instance)
        new._support = self._support
        new._like = self._like
        super(dist.ImproperUniform, new).__init__(torch.Size(batch_shape), self.event_shape)
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        batch_shape = value.shape[: value.dim() - self.event_dim]
        batch_shape = broadcast_shape(batch_shape, self.batch_shape)
        return self._like.new_zeros(()).expand(batch_shape)

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        t = transform_to(self.support)
        unconstrained = self._like.new_zeros(t.inverse_shape(shape))
        return t(unconstrained).detach()


class OrderedNormal(dist.TorchDistribution):
    """``n`` iid ``Normal(loc, scale)`` values in increasing order.

    Stan's ``ordered[n] mu; mu ~ normal(loc, scale);``: on the ordered set the density is
    ``n!`` times the iid normal density (Stan's target leaves out the constant ``n!``).
    Samples are sorted normal draws.
    """

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.ordered_vector
    has_rsample = True

    def __init__(self, loc: torch.Tensor | float, scale: torch.Tensor | float, n: int,
                 validate_args: bool | None = None) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self.n = int(n)
        super().__init__(self.loc.shape, torch.Size([self.n]), validate_args=validate_args)

    def expand(self, batch_shape: Any, _instance: Any = None) -> OrderedNormal:
        new = self._get_checked_instance(OrderedNormal, _instance)
        batch_shape = torch.Size(batch_shape)
        new.loc = self.loc.expand(batch_shape)
        new.scale = self.scale.expand(batch_shape)
        new.n = self.n
        super(OrderedNormal, new).__init__(batch_shape, self.event_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        draws = self.loc.unsqueeze(-1) + self.scale.unsqueeze(-1) * eps
        return torch.sort(draws, dim=-1).values

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        iid = dist.Normal(self.loc.unsqueeze(-1), self.scale.unsqueeze(-1))
        return iid.log_prob(value).sum(-1) + math.lgamma(self.n + 1)


def _c(like: torch.Tensor, value: float) -> torch.Tensor:
    """A constant with the dtype and device of ``like`` (float64 data stays float64)."""
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _matvec(X: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """``X @ coef`` for ``X`` of shape ``(N, K)`` and ``coef`` of shape ``batch + (K,)``.

    Under a particle plate ``coef``'s batch shape ends with a 1 for the data plate's
    dimension (dim -1): the product ``batch + (N,)`` then has that 1 dropped, so the
    result broadcasts as ``(..., N)`` in the data plate, as the scalar sites do.
    """
    out = coef @ X.transpose(-1, -2)
    if coef.dim() > 1 and coef.shape[-2] == 1:
        out = out.squeeze(-2)
    return out


def _float(values: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values, dtype=np.float64), dtype=dtype)


def _dtype(dtype: torch.dtype | None) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


def as_dtype(data: Mapping[str, Any], dtype: torch.dtype) -> dict[str, Any]:
    """The same keyword data with every floating tensor cast to ``dtype``."""
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v
            for k, v in data.items()}


@contextlib.contextmanager
def fit_context(fit: Any) -> Iterator[None]:
    """Evaluate a ``pyrovi.fit`` result's guide as the fit did.

    Torch's default dtype is set to ``fit.dtype`` (when the fit has one): Pyro's flows
    create default-dtype tensors inside their inverse, which break a float64 guide
    otherwise. Pyro's ``module_local_params`` is set to the fit's, so the guide reads
    its own parameters, not the global param store.
    """
    dtype = getattr(fit, "dtype", None)
    before = torch.get_default_dtype()
    if dtype is not None:
        torch.set_default_dtype(dtype)
    try:
        local = getattr(fit, "module_local_params", None)
        if local is None:
            yield
        else:
            with pyro.settings.context(module_local_params=local):
                yield
    finally:
        torch.set_default_dtype(before)


# ----------------------------------------------------------------------------- models


def eight_schools_noncentered(J: int, y: torch.Tensor, sigma: torch.Tensor) -> None:
    """posteriordb ``eight_schools_noncentered``: theta = mu + tau * theta_trans."""
    mu = pyro.sample("mu", dist.Normal(_c(y, 0.0), 5.0))
    # real<lower=0> tau; tau ~ cauchy(0, 5): the Cauchy truncated at 0
    tau = pyro.sample("tau", dist.HalfCauchy(_c(y, 5.0)))
    with pyro.plate("data", J, dim=-1):
        theta_trans = pyro.sample("theta_trans", dist.Normal(_c(y, 0.0), 1.0))
        theta = pyro.deterministic("theta", theta_trans * tau + mu)
        pyro.sample("y", dist.Normal(theta, sigma), obs=y)


def _eight_schools_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
    dtype = _dtype(dtype)
    return {"J": int(d["J"]), "y": _float(d["y"], dtype), "sigma": _float(d["sigma"], dtype)}


def _eight_schools_latents(draws: Mapping[str, np.ndarray], data: Mapping[str, Any]
                           ) -> dict[str, np.ndarray]:
    mu, tau = draws["mu"], draws["tau"]
    return {"mu": mu, "tau": tau,
            "theta_trans": (draws["theta"] - mu[:, None]) / tau[:, None]}


def _regression(name_x: str, name_y: str, sigma_prior: str) -> Callable[..., None]:
    """``y ~ normal(beta[1] + beta[2] * x, sigma)`` with flat ``beta``.

    ``sigma_prior`` is ``"flat"`` (no statement in Stan) or ``"half_cauchy_2.5"``.
    """

    def model(N: int, **data: torch.Tensor) -> None:
        x, y = data[name_x], data[name_y]
        beta = pyro.sample("beta", FlatPrior(constraints.real, (2,), like=y))  # flat: no prior
        if sigma_prior == "flat":  # no statement in Stan: flat on sigma > 0
            sigma = pyro.sample("sigma", FlatPrior(constraints.positive, like=y))
        else:  # sigma ~ cauchy(0, 2.5) on <lower=0>
            sigma = pyro.sample("sigma", dist.HalfCauchy(_c(y, 2.5)))
        with pyro.plate("data", N, dim=-1):
            pyro.sample(name_y, dist.Normal(beta[..., 0] + beta[..., 1] * x, sigma), obs=y)

    return model


kidscore_momiq = _regression("mom_iq", "kid_score", "half_cauchy_2.5")
kidscore_momiq.__doc__ = "posteriordb ``kidscore_momiq``: kid_score ~ mom_iq, flat beta."
kidscore_momhs = _regression("mom_hs", "kid_score", "half_cauchy_2.5")
kidscore_momhs.__doc__ = "posteriordb ``kidscore_momhs``: kid_score ~ mom_hs, flat beta."
earn_height = _regression("height", "earn", "flat")
earn_height.__doc__ = "posteriordb ``earn_height``: earn ~ height, flat beta and sigma."
logearn_height = _regression("height", "log_earn", "flat")
logearn_height.__doc__ = "posteriordb ``logearn_height``: log(earn) ~ height, flat priors."


def _kidiq_data(x: str) -> Callable[..., dict]:
    def make(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        dtype = _dtype(dtype)
        return {"N": int(d["N"]), x: _float(d[x], dtype),
                "kid_score": _float(d["kid_score"], dtype)}
    return make


def _earnings_data(log: bool) -> Callable[..., dict]:
    def make(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        dtype = _dtype(dtype)
        earn = np.asarray(d["earn"], dtype=np.float64)
        out = {"N": int(d["N"]), "height": _float(d["height"], dtype)}
        if log:  # transformed data: log_earn = log(earn)
            out["log_earn"] = _float(np.log(earn), dtype)
        else:
            out["earn"] = _float(earn, dtype)
        return out
    return make


_MESQUITE_X = ("log_diam1", "log_diam2", "log_canopy_height", "log_total_height",
               "log_density", "group")


def logmesquite(N: int, log_weight: torch.Tensor, log_diam1: torch.Tensor,
                log_diam2: torch.Tensor, log_canopy_height: torch.Tensor,
                log_total_height: torch.Tensor, log_density: torch.Tensor,
                group: torch.Tensor) -> None:
    """posteriordb ``logmesquite``: log weight on six log predictors, flat priors."""
    # no sampling statements in Stan: flat priors on beta and on sigma > 0
    beta = pyro.sample("beta", FlatPrior(constraints.real, (7,), like=log_weight))
    sigma = pyro.sample("sigma", FlatPrior(constraints.positive, like=log_weight))
    xs = (log_diam1, log_diam2, log_canopy_height, log_total_height, log_density, group)
    mean = beta[..., 0]
    for k, x in enumerate(xs, start=1):
        mean = mean + beta[..., k] * x
    with pyro.plate("data", N, dim=-1):
        pyro.sample("log_weight", dist.Normal(mean, sigma), obs=log_weight)


def _mesquite_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
    dtype = _dtype(dtype)
    out: dict[str, Any] = {"N": int(d["N"])}
    for name in ("weight", "diam1", "diam2", "canopy_height", "total_height", "density"):
        out["log_" + name] = _float(np.log(np.asarray(d[name], dtype=np.float64)), dtype)
    out["group"] = _float(d["group"], dtype)
    return out


def kilpisjarvi(N: int, x: torch.Tensor, y: torch.Tensor, pmualpha: float, psalpha: float,
                pmubeta: float, psbeta: float) -> None:
    """posteriordb ``kilpisjarvi``: linear trend with x around 4000 (alpha, beta correlated)."""
    alpha = pyro.sample("alpha", dist.Normal(_c(y, pmualpha), psalpha))
    beta = pyro.sample("beta", dist.Normal(_c(y, pmubeta), psbeta))
    sigma = pyro.sample("sigma", FlatPrior(constraints.positive, like=y))  # flat on sigma > 0
    with pyro.plate("data", N, dim=-1):
        pyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)


def _kilpisjarvi_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
    dtype = _dtype(dtype)
    out = {"N": int(d["N"]), "x": _float(d["x"], dtype), "y": _float(d["y"], dtype)}
    for name in ("pmualpha", "psalpha", "pmubeta", "psbeta"):  # xpred is unused by the model
        out[name] = float(d[name])
    return out


def arK(K: int, T: int, y: torch.Tensor, y_lags: torch.Tensor) -> None:
    """posteriordb ``arK``: y[t] ~ normal(alpha + sum_k beta[k] y[t-k], sigma), t > K."""
    alpha = pyro.sample("alpha", dist.Normal(_c(y, 0.0), 10.0))
    beta = pyro.sample("beta", dist.Normal(_c(y, 0.0), 10.0).expand([K]).to_event(1))
    sigma = pyro.sample("sigma", dist.HalfCauchy(_c(y, 2.5)))  # cauchy(0, 2.5), <lower=0>
    with pyro.plate("data", T - K, dim=-1):
        pyro.sample("y", dist.Normal(alpha + _matvec(y_lags, beta), sigma), obs=y[K:])


def _arK_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
    dtype = _dtype(dtype)
    K, T = int(d["K"]), int(d["T"])
    y = np.asarray(d["y"], dtype=np.float64)
    # transformed data: row t - K holds y[t-1], ..., y[t-K] (zero-based t = K .. T-1)
    lags = np.stack([y[K - 1 - k: T - 1 - k] for k in range(K)], axis=1)
    return {"K": K, "T": T, "y": _float(y, dtype), "y_lags": _float(lags, dtype)}


GP_JITTER = 1e-10


def _gp_cholesky(x: torch.Tensor, alpha: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """Cholesky factor of Stan's ``gp_exp_quad_cov(x, alpha, rho) + 1e-10 I``, in float64.

    The 11 x 11 squared-exponential covariance has condition numbers near 1e9 at the
    posterior's length scales: float32's Cholesky fails there, so the factor is always
    computed in float64 (and the result cast back to the data's dtype by the caller).
    """
    x64 = x.to(torch.float64)
    a = alpha.to(torch.float64)[..., None, None]
    r = rho.to(torch.float64)[..., None, None]
    sq = (x64[:, None] - x64[None, :]) ** 2
    cov = a**2 * torch.exp(-0.5 * sq / r**2)
    cov = cov + GP_JITTER * torch.eye(len(x64), dtype=torch.float64, device=x.device)
    return torch.linalg.cholesky(cov)


def gp_pois_regr(N: int, x: torch.Tensor, k: torch.Tensor) -> None:
    """posteriordb ``gp_pois_regr``: latent GP f = L(alpha, rho) f_tilde, k ~ poisson_log(f).

    ``f_tilde`` is one vector site and the likelihood an event of ``N`` counts (no data
    plate): f mixes all positions of ``f_tilde``, so they are not conditionally
    independent. Under a particle plate the scalars are ``(P,)`` and vectors ``(P, N)``.
    """
    rho = pyro.sample("rho", dist.Gamma(_c(x, 25.0), 4.0))  # Gamma(shape 25, rate 4)
    alpha = pyro.sample("alpha", dist.HalfNormal(_c(x, 2.0)))  # normal(0, 2), <lower=0>
    f_tilde = pyro.sample("f_tilde", dist.Normal(_c(x, 0.0), 1.0).expand([N]).to_event(1))
    L = _gp_cholesky(x, alpha, rho)
    f = (L @ f_tilde.to(torch.float64).unsqueeze(-1)).squeeze(-1).to(x.dtype)
    f = pyro.deterministic("f", f, event_dim=1)
    pyro.sample("k", dist.Poisson(f.exp()).to_event(1), obs=k)


def _gp_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
    dtype = _dtype(dtype)
    # the counts are the observations of a Poisson site: float tensors holding integers
    return {"N": int(d["N"]), "x": _float(d["x"], dtype), "k": _float(d["k"], dtype)}


def _gp_latents(draws: Mapping[str, np.ndarray], data: Mapping[str, Any]
                ) -> dict[str, np.ndarray]:
    alpha = torch.as_tensor(draws["alpha"], dtype=torch.float64)
    rho = torch.as_tensor(draws["rho"], dtype=torch.float64)
    L = _gp_cholesky(data["x"], alpha, rho)
    f = torch.as_tensor(draws["f"], dtype=torch.float64).unsqueeze(-1)
    f_tilde = torch.linalg.solve_triangular(L, f, upper=False).squeeze(-1)
    return {"rho": draws["rho"], "alpha": draws["alpha"], "f_tilde": f_tilde.numpy()}


def diamonds(N: int, K: int, Xc: torch.Tensor, Y: torch.Tensor) -> None:
    """posteriordb ``diamonds`` (brms): Y ~ normal(Intercept + Xc b, sigma), Xc centred."""
    b = pyro.sample("b", dist.Normal(_c(Y, 0.0), 1.0).expand([K - 1]).to_event(1))
    intercept = pyro.sample("Intercept", dist.StudentT(_c(Y, 3.0), 8.0, 10.0))
    # student_t_lpdf(sigma | 3, 0, 10) - student_t_lccdf(0 | 3, 0, 10): half-t on sigma > 0
    sigma = pyro.sample("sigma",
                        dist.FoldedDistribution(dist.StudentT(_c(Y, 3.0), 0.0, 10.0)))
    with pyro.plate("data", N, dim=-1):
        pyro.sample("Y", dist.Normal(intercept + _matvec(Xc, b), sigma), obs=Y)


def _diamonds_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
    dtype = _dtype(dtype)
    if int(d.get("prior_only", 0)):
        raise ValueError("diamonds: prior_only = 1 is not ported (the likelihood is always on)")
    X = np.asarray(d["X"], dtype=np.float64)
    # transformed data: drop the intercept column and centre the others (in float64)
    Xc = X[:, 1:] - X[:, 1:].mean(axis=0)
    return {"N": int(d["N"]), "K": int(d["K"]), "Xc": _float(Xc, dtype),
            "Y": _float(d["Y"], dtype)}


def low_dim_gauss_mix(N: int, y: torch.Tensor) -> None:
    """posteriordb ``low_dim_gauss_mix``: two normal components, ordered means."""
    sigma = pyro.sample("sigma", dist.HalfNormal(_c(y, 2.0)).expand([2]).to_event(1))
    mu = pyro.sample("mu", OrderedNormal(_c(y, 0.0), 2.0, 2))
    theta = pyro.sample("theta", dist.Beta(_c(y, 5.0), 5.0))
    # log_mix(theta, normal(mu[1], sigma[1]), normal(mu[2], sigma[2])): theta weighs mu[1]
    weights = torch.stack([theta, 1.0 - theta], dim=-1)
    with pyro.plate("data", N, dim=-1):
        pyro.sample("y", dist.MixtureSameFamily(dist.Categorical(probs=weights),
                                                dist.Normal(mu, sigma)), obs=y)


def _gauss_mix_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
    return {"N": int(d["N"]), "y": _float(d["y"], _dtype(dtype))}


# ----------------------------------------------------------------------------- table


@dataclass(frozen=True)
class Port:
    """A posteriordb posterior ported to Pyro.

    Attributes
    ----------
    name : str
        The posteriordb posterior name (``data-model``).
    model : callable
        The Pyro model, called as ``model(**make_data(pdb_data))``.
    make_data : callable
        ``make_data(pdb_data, dtype=None) -> dict``: posteriordb's data JSON (a dict) to
        the model's keyword arguments, Stan's transformed data included. Floating data
        are tensors of ``dtype`` (torch's default when None), sizes are ints.
    latents : callable or None
        ``latents(draws, data) -> dict`` mapping reference draws (site -> array of shape
        ``(n, *site_shape)``, constrained) to the values of every latent sample site,
        where the reference stores transformed parameters instead. None: the reference
        holds the sample sites themselves.
    notes : str
        What needed care in the port.
    """

    name: str
    model: Callable[..., None]
    make_data: Callable[..., dict[str, Any]]
    latents: Callable[[Mapping[str, np.ndarray], Mapping[str, Any]],
                      dict[str, np.ndarray]] | None = None
    notes: str = ""


POSTERIORS: dict[str, Port] = {p.name: p for p in [
    Port("eight_schools-eight_schools_noncentered", eight_schools_noncentered,
         _eight_schools_data, _eight_schools_latents,
         "The reference stores theta (a transformed parameter), not theta_trans; the "
         "Stein check recovers theta_trans = (theta - mu) / tau."),
    Port("kidiq-kidscore_momiq", kidscore_momiq, _kidiq_data("mom_iq"),
         notes="beta has a flat prior."),
    Port("kidiq-kidscore_momhs", kidscore_momhs, _kidiq_data("mom_hs"),
         notes="beta has a flat prior."),
    Port("earnings-earn_height", earn_height, _earnings_data(log=False),
         notes="Flat priors on beta and sigma; earn is in dollars (sigma near 19,000)."),
    Port("earnings-logearn_height", logearn_height, _earnings_data(log=True),
         notes="Flat priors; log(earn) is transformed data."),
    Port("mesquite-logmesquite", logmesquite, _mesquite_data,
         notes="Flat priors; the six log predictors are transformed data."),
    Port("kilpisjarvi_mod-kilpisjarvi", kilpisjarvi, _kilpisjarvi_data,
         notes="x is near 4000, so alpha and beta are correlated at about -0.9999."),
    Port("arK-arK", arK, _arK_data,
         notes="The lagged values are built once as a (T-K, K) matrix (transformed data)."),
    Port("gp_pois_regr-gp_pois_regr", gp_pois_regr, _gp_data, _gp_latents,
         "The reference stores f, not f_tilde; the check recovers f_tilde = L^-1 f. The "
         "Cholesky factor is computed in float64 whatever the data's dtype."),
    Port("diamonds-diamonds", diamonds, _diamonds_data,
         notes="brms code: b are the effects of the centred predictors; the truncated "
               "Student-t on sigma is a folded one."),
    Port("low_dim_gauss_mix-low_dim_gauss_mix", low_dim_gauss_mix, _gauss_mix_data,
         notes="ordered[2] mu: OrderedNormal on constraints.ordered_vector."),
]}


def _more_ports() -> list[Port]:
    """The ports of the sibling files ``ports_*.py``: each defines ``ports(base)``,
    ``base`` this module's namespace (its :class:`Port`, :class:`FlatPrior`, helpers),
    returning a list of :class:`Port`."""
    found: list[Port] = []
    base = SimpleNamespace(**globals())
    for path in sorted(Path(__file__).resolve().parent.glob("ports_*.py")):
        spec = importlib.util.spec_from_file_location(f"{__name__}_{path.stem}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        found.extend(module.ports(base))
    return found


POSTERIORS.update({p.name: p for p in _more_ports() if p.name not in POSTERIORS})


# ----------------------------------------------------------------------------- loading


def find_posteriordb(root: str | Path) -> Path:
    """The ``posterior_database`` directory at or under ``root``."""
    root = Path(root)
    for candidate in (root, root / "posterior_database"):
        if (candidate / "posteriors").is_dir():
            return candidate
    raise FileNotFoundError(
        f"{root}: not a posteriordb checkout (no posteriors/ in it or in "
        "posterior_database/ under it)")


def read_pdb_json(path: str | Path) -> Any:
    """A posteriordb JSON file, plain (``.json``) or zipped (``.json.zip``)."""
    path = Path(path)
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            members = [n for n in archive.namelist() if n.endswith(".json")]
            if len(members) != 1:
                raise ValueError(f"{path}: expected one .json member, found {members}")
            return json.loads(archive.read(members[0]))
    return json.loads(path.read_text())


def _existing(base: Path) -> Path:
    for path in (base.with_name(base.name + ".zip"), base):
        if path.exists():
            return path
    raise FileNotFoundError(f"{base}(.zip) does not exist")


def load_posterior(pdb_root: str | Path, name: str, dtype: torch.dtype | None = None
                   ) -> tuple[Callable[..., None], dict[str, Any], Path]:
    """The port of posterior ``name``, its data as keyword tensors, and its reference draws.

    Parameters
    ----------
    pdb_root : path
        A local posteriordb tree: a directory holding ``posterior_database/``, or that
        directory itself.
    name : str
        A key of :data:`POSTERIORS`.
    dtype : torch.dtype, optional
        Floating dtype of the data (torch's default when None).

    Returns
    -------
    (model, data_kwargs, reference_path)
        ``reference_path`` is the ``.json.zip`` of posteriordb's reference draws, readable
        by :func:`pyrovi.load_reference`.
    """
    if name not in POSTERIORS:
        raise KeyError(f"{name!r} is not ported; ported: {', '.join(POSTERIORS)}")
    pdb = find_posteriordb(pdb_root)
    port = POSTERIORS[name]
    info = read_pdb_json(pdb / "posteriors" / f"{name}.json")
    raw = read_pdb_json(_existing(pdb / "data" / "data" / f"{info['data_name']}.json"))
    ref_name = info.get("reference_posterior_name") or name
    ref = _existing(pdb / "reference_posteriors" / "draws" / "draws" / f"{ref_name}.json")
    return port.model, port.make_data(raw, dtype=dtype), ref


# ----------------------------------------------------------------------------- Stein check


def reference_arrays(ref: Any) -> dict[str, np.ndarray]:
    """Reference draws as site -> float64 array of shape ``(n_draws, *site_shape)``.

    ``ref`` is an :class:`arviz.InferenceData` (e.g. from :func:`pyrovi.load_reference`),
    its ``posterior`` group, or a dict of arrays already in that shape.
    """
    posterior = getattr(ref, "posterior", ref)
    if hasattr(posterior, "data_vars"):
        out = {}
        for name, var in posterior.data_vars.items():
            values = np.asarray(var.values, dtype=np.float64)  # (chain, draw, *shape)
            out[str(name)] = values.reshape((-1,) + values.shape[2:])
        return out
    return {k: np.asarray(v, dtype=np.float64) for k, v in posterior.items()}


def read_draws(path: str | Path) -> dict[str, np.ndarray]:
    """posteriordb reference draws (``.json`` or ``.json.zip``) as :func:`reference_arrays`.

    The file is a list of chains, each a dict of scalar name (``theta[1]``, one-based)
    to a list of draws; chains are concatenated and ``theta[i]`` becomes element
    ``i - 1`` of the array ``theta``. The same conversion as
    :func:`pyrovi.load_reference`, without importing pyrovi.
    """
    chains = read_pdb_json(path)
    columns: dict[str, np.ndarray] = {}
    for name in chains[0]:
        columns[name] = np.concatenate([np.asarray(c[name], dtype=np.float64) for c in chains])
    sites: dict[str, dict[tuple[int, ...], np.ndarray]] = {}
    for name, values in columns.items():
        site, _, rest = name.partition("[")
        index = tuple(int(i) - 1 for i in rest.rstrip("]").split(",")) if rest else ()
        sites.setdefault(site, {})[index] = values
    out = {}
    for site, elements in sites.items():
        if list(elements) == [()]:
            out[site] = elements[()]
            continue
        shape = tuple(max(idx[d] for idx in elements) + 1 for d in range(len(next(iter(elements)))))
        n = len(next(iter(elements.values())))
        array = np.full((n, *shape), np.nan)
        for idx, values in elements.items():
            array[(slice(None), *idx)] = values
        out[site] = array
    return out


def _coordinate_names(name: str, shape: torch.Size) -> list[str]:
    if len(shape) == 0:
        return [name]
    return [f"{name}[{','.join(map(str, idx))}]" for idx in np.ndindex(*shape)]


def stein_check(port: Port, data: Mapping[str, Any], ref_draws: Any,
                max_draws: int | None = None) -> pd.DataFrame:
    """Stein identities of the port's unconstrained density at the reference draws.

    Parameters
    ----------
    port : Port
    data : mapping
        The model's keyword data (cast to float64 here).
    ref_draws : arviz.InferenceData or dict
        Reference draws in the constrained space (see :func:`reference_arrays`).
    max_draws : int, optional
        Use every k-th draw so that at most this many are evaluated.

    Returns
    -------
    pandas.DataFrame
        One row per unconstrained coordinate and identity: ``identity`` (``grad``:
        ``E[d_i log p] = 0``; ``scale``: ``E[(u_i - mean u_i) d_i log p] = -1``),
        ``coordinate`` (``site[i]``, zero-based, unconstrained), ``mean``, ``expected``,
        ``se`` (sd / sqrt(n)), ``z`` and ``n``. ``attrs["max_abs_z"]`` holds the largest
        |z| of each identity.
    """
    data64 = as_dtype(data, torch.float64)
    draws = reference_arrays(ref_draws)
    _, potential_fn, transforms, _ = initialize_model(port.model, model_kwargs=data64)
    sites = list(transforms)
    latents = port.latents(draws, data64) if port.latents is not None else draws
    missing = [s for s in sites if s not in latents]
    if missing:
        raise KeyError(f"{port.name}: reference draws lack sample sites {missing}; "
                       "give the port a latents function")
    values = {s: torch.as_tensor(np.asarray(latents[s]), dtype=torch.float64) for s in sites}
    n = len(next(iter(values.values())))
    step = 1 if max_draws is None or n <= max_draws else int(math.ceil(n / max_draws))
    us, grads = [], []
    with torch.no_grad():
        unconstrained = {s: transforms[s](values[s][::step]) for s in sites}
    m = len(next(iter(unconstrained.values())))
    for i in range(m):
        point = {s: unconstrained[s][i].clone().requires_grad_(True) for s in sites}
        energy = potential_fn(point)
        g = torch.autograd.grad(energy, [point[s] for s in sites])
        us.append(torch.cat([point[s].detach().reshape(-1) for s in sites]))
        grads.append(torch.cat([-gi.reshape(-1) for gi in g]))  # grad log p = -grad U
    u = torch.stack(us).numpy()
    grad = torch.stack(grads).numpy()
    names = [c for s in sites for c in _coordinate_names(s, unconstrained[s].shape[1:])]
    rows = []
    for identity, terms, expected in (("grad", grad, 0.0),
                                      ("scale", (u - u.mean(0)) * grad, -1.0)):
        mean = terms.mean(0)
        se = terms.std(0, ddof=1) / math.sqrt(m)
        z = (mean - expected) / se
        for j, coordinate in enumerate(names):
            rows.append({"identity": identity, "coordinate": coordinate,
                         "mean": float(mean[j]), "expected": expected, "se": float(se[j]),
                         "z": float(z[j]), "n": m})
    table = pd.DataFrame(rows)
    table.attrs["max_abs_z"] = stein_summary(table)
    return table


def stein_summary(table: pd.DataFrame) -> dict[str, float]:
    """The largest |z| of each identity in a :func:`stein_check` table."""
    return {str(k): float(v) for k, v in table.groupby("identity")["z"]
            .apply(lambda z: z.abs().max()).items()}


def stein_passes(table: pd.DataFrame, z_max: float = STEIN_Z_MAX) -> bool:
    """Whether every |z| of a :func:`stein_check` table is below ``z_max``."""
    return bool(table["z"].abs().max() < z_max)
