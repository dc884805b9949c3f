"""Plain Pyro ports of posteriordb's time-series, hidden Markov and GP regression posteriors.

Loaded by ``ports.py``, which calls :func:`ports` with its own namespace (``base``) and
adds the returned :class:`Port` objects to its table. The conventions are those of
``ports.py`` (its module docstring): Stan's parameter names, flat priors as ``FlatPrior``,
the dtype taken from the data, and models that run under an outer particle plate.

What is particular to these models
----------------------------------
- None of them has a plate of its own: the recursions (ARMA errors, GARCH volatilities,
  the HMM forward algorithm) tie all observations together, so each likelihood is one
  site (``to_event(1)`` or a ``pyro.factor``). A scalar parameter then has shape ``(P,)``
  under a particle plate of ``P`` and a vector one ``(P, K)``; the code indexes with
  ``...`` and adds a trailing axis (``mu[..., None]``) to meet the time axis.
- The linear recursions are solved as unit lower-bidiagonal triangular systems
  (``torch.linalg.solve_triangular``): forward substitution, the same arithmetic as
  Stan's loop, in a handful of tensor operations instead of ``T`` of them.
- The HMMs marginalise the states with Stan's forward algorithm,
  ``gamma[1, k] = emit(y[1] | k)`` (no initial distribution: every state weighs 1) and
  ``gamma[t, k] = log_sum_exp_j(gamma[t-1, j] + log theta[j, k] + emit(y[t] | k))``; the
  ``N - 1`` log-space matrix products are multiplied pairwise in ``log2(N)`` rounds.
- ``positive_ordered[K] mu`` and ``ordered[K] phi`` with a different normal prior on
  each element (``target += normal_lpdf(mu[1] | 3, 1)`` ...) are :class:`OrderedNormals`:
  the product of those normal densities restricted to the (positive) ordered vectors and,
  as in Stan, not renormalised there.
- GARCH(1,1)'s ``beta1`` has the upper bound ``1 - alpha1``. Pyro's transforms are fixed
  per site, so a bound that moves with another parameter cannot be a support. The flat
  prior on ``{alpha1 > 0, beta1 > 0, alpha1 + beta1 < 1}`` is instead a flat prior on the
  simplex ``alpha1_beta1 = (alpha1, beta1, 1 - alpha1 - beta1)`` (its density is with
  respect to the first two coordinates, so it is flat in ``(alpha1, beta1)`` as Stan's);
  ``alpha1`` and ``beta1`` are deterministic sites.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch.distributions.utils import broadcast_all

__all__ = ["MAX_REJECTIONS", "OrderedNormals", "ports"]

MAX_REJECTIONS = 1000
"""Rounds of rejection sampling :meth:`OrderedNormals.sample` tries before giving up."""


class OrderedNormals(dist.TorchDistribution):
    """Independent ``Normal(loc[k], scale[k])`` restricted to ordered vectors, unnormalised.

    Stan's ``ordered[K] phi; target += normal_lpdf(phi[1] | 0, 1); target +=
    normal_lpdf(phi[2] | 3, 1);`` (or ``positive_ordered[K]``): the log density is the
    sum of the normal log densities on ``support``, without the constant that would make
    it integrate to one there (Stan's target leaves it out too). Samples are exact, by
    rejection of unordered (or non-positive) normal draws.

    Parameters
    ----------
    loc, scale : torch.Tensor
        Shape ``batch + (K,)`` (broadcast together).
    positive : bool
        ``positive_ordered`` (support ``constraints.positive_ordered_vector``) rather than
        ``ordered`` (``constraints.ordered_vector``).
    """

    arg_constraints = {"loc": constraints.real_vector,
                       "scale": constraints.independent(constraints.positive, 1)}

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor | float, positive: bool = False,
                 validate_args: bool | None = None) -> None:
        self.loc, self.scale = broadcast_all(loc, scale)
        self.positive = bool(positive)
        super().__init__(self.loc.shape[:-1], self.loc.shape[-1:], validate_args=validate_args)

    @constraints.dependent_property(is_discrete=False, event_dim=1)
    def support(self) -> constraints.Constraint:
        return constraints.positive_ordered_vector if self.positive \
            else constraints.ordered_vector

    def expand(self, batch_shape: Any, _instance: Any = None) -> OrderedNormals:
        new = self._get_checked_instance(OrderedNormals, _instance)
        shape = torch.Size(batch_shape) + self.event_shape
        new.loc = self.loc.expand(shape)
        new.scale = self.scale.expand(shape)
        new.positive = self.positive
        super(OrderedNormals, new).__init__(torch.Size(batch_shape), self.event_shape,
                                            validate_args=False)
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: tuple[int, ...] = ()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            loc, scale = self.loc.expand(shape), self.scale.expand(shape)
            out = loc.clone()
            done = torch.zeros(shape[:-1], dtype=torch.bool, device=loc.device)
            for _ in range(MAX_REJECTIONS):
                draw = loc + scale * torch.randn_like(loc)
                ok = self.support.check(draw) & ~done
                out[ok] = draw[ok]
                done = done | ok
                if bool(done.all()):
                    return out
        raise RuntimeError("OrderedNormals.sample: the support has too little mass")

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return dist.Normal(self.loc, self.scale).log_prob(value).sum(-1)


def _lower_bidiagonal_solve(sub: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """``x`` with ``x[0] = rhs[0]`` and ``x[t] = rhs[t] + sub * x[t-1]``, along the last axis.

    ``sub`` has the batch shape of the parameters (``()`` or ``(P,)``), ``rhs`` that batch
    shape plus ``(T,)``. The recursion is the triangular system ``(I - sub S) x = rhs``
    (``S`` the shift below the diagonal), solved by forward substitution.
    """
    T = rhs.shape[-1]
    shift = torch.diag(rhs.new_ones(T - 1), -1)
    eye = torch.eye(T, dtype=rhs.dtype, device=rhs.device)
    system = eye - sub[..., None, None] * shift
    x = torch.linalg.solve_triangular(system, rhs.unsqueeze(-1), upper=False,
                                      unitriangular=True)
    return x.squeeze(-1)


def _log_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The matrix product in log space: ``out[i, k] = log_sum_exp_j(a[i, j] + b[j, k])``."""
    return (a.unsqueeze(-1) + b.unsqueeze(-3)).logsumexp(-2)


def _hmm_forward(log_theta: torch.Tensor, log_emit: torch.Tensor) -> torch.Tensor:
    """``log_sum_exp(gamma[N])`` of Stan's forward algorithm.

    Parameters
    ----------
    log_theta : torch.Tensor
        ``batch + (K, K)``: ``log theta[j, k]``, from state ``j`` to state ``k``.
    log_emit : torch.Tensor
        ``batch + (N, K)``: the log density of observation ``t`` in state ``k``.

    Returns
    -------
    torch.Tensor
        ``batch``: the log density of the observations with the states summed out, the
        first state weighing 1 each (Stan's ``gamma[1, k] = emit(y[1] | k)``).
    """
    gamma = log_emit[..., 0, :]
    # step t (t >= 1) multiplies gamma by M_t[j, k] = log theta[j, k] + emit(y[t] | k);
    # the product M_1 ... M_{N-1} is formed pairwise (associative), log2(N) rounds
    mats = log_theta.unsqueeze(-3) + log_emit[..., 1:, None, :]
    while mats.shape[-3] > 1:
        n = mats.shape[-3]
        paired = _log_matmul(mats[..., 0:n - 1:2, :, :], mats[..., 1:n:2, :, :])
        mats = torch.cat([paired, mats[..., n - 1:, :, :]], dim=-3) if n % 2 else paired
    if mats.shape[-3] == 1:
        gamma = (gamma.unsqueeze(-1) + mats[..., 0, :, :]).logsumexp(-2)
    return gamma.logsumexp(-1)


def ports(base: Any) -> list:
    """The ports of this file, built on ``ports.py``'s namespace ``base``."""
    Port, FlatPrior, _c, _float, _dtype = base.Port, base.FlatPrior, base._c, base._float, \
        base._dtype

    # ------------------------------------------------------------------------- ARMA(1, 1)

    def arma11(T: int, y: torch.Tensor) -> None:
        """posteriordb ``arma11``: ``err[t] = y[t] - nu[t] ~ normal(0, sigma)``.

        ``nu[1] = mu + phi mu`` and ``nu[t] = mu + phi y[t-1] + theta err[t-1]``. The
        errors solve ``err[t] + theta err[t-1] = y[t] - mu - phi y[t-1]`` (a bidiagonal
        system); ``normal_lpdf(err | 0, sigma)`` is the density of ``y`` given
        ``nu = y - err``, so the likelihood is ``y ~ normal(nu, sigma)``, one event of
        ``T`` (``nu[t]`` depends on ``y[t-1]``).
        """
        mu = pyro.sample("mu", dist.Normal(_c(y, 0.0), 10.0))
        phi = pyro.sample("phi", dist.Normal(_c(y, 0.0), 2.0))
        theta = pyro.sample("theta", dist.Normal(_c(y, 0.0), 2.0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(_c(y, 2.5)))  # cauchy(0, 2.5), <lower=0>
        m = mu.unsqueeze(-1)
        previous = torch.cat([m, y[:-1].expand(mu.shape + (T - 1,))], dim=-1)  # err[0] = 0
        err = _lower_bidiagonal_solve(-theta, y - m - phi.unsqueeze(-1) * previous)
        pyro.sample("y", dist.Normal(y - err, sigma.unsqueeze(-1)).to_event(1), obs=y)

    def _arma_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        return {"T": int(d["T"]), "y": _float(d["y"], _dtype(dtype))}

    # ------------------------------------------------------------------------- GARCH(1, 1)

    def garch11(T: int, y: torch.Tensor, sigma1: float) -> None:
        """posteriordb ``garch11``: ``y[t] ~ normal(mu, sigma[t])`` with
        ``sigma[t]^2 = alpha0 + alpha1 (y[t-1] - mu)^2 + beta1 sigma[t-1]^2``.

        All four parameters have flat priors; ``(alpha1, beta1)`` lies in the triangle
        ``alpha1 + beta1 < 1`` and is sampled as the simplex ``alpha1_beta1`` (see the
        module docstring).
        """
        mu = pyro.sample("mu", FlatPrior(constraints.real, like=y))
        alpha0 = pyro.sample("alpha0", FlatPrior(constraints.positive, like=y))
        weights = pyro.sample("alpha1_beta1", FlatPrior(constraints.simplex, (3,), like=y))
        alpha1 = pyro.deterministic("alpha1", weights[..., 0])
        beta1 = pyro.deterministic("beta1", weights[..., 1])
        m = mu.unsqueeze(-1)
        first = _c(y, sigma1**2).expand(mu.shape + (1,))
        shocks = alpha0.unsqueeze(-1) + alpha1.unsqueeze(-1) * (y[:-1] - m) ** 2
        variance = _lower_bidiagonal_solve(beta1, torch.cat([first, shocks], dim=-1))
        pyro.sample("y", dist.Normal(m, variance.sqrt()).to_event(1), obs=y)

    def _garch_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        return {"T": int(d["T"]), "y": _float(d["y"], _dtype(dtype)),
                "sigma1": float(d["sigma1"])}

    def _garch_latents(draws: Mapping[str, np.ndarray], data: Mapping[str, Any]
                       ) -> dict[str, np.ndarray]:
        alpha1, beta1 = draws["alpha1"], draws["beta1"]
        weights = np.stack([alpha1, beta1, 1.0 - alpha1 - beta1], axis=-1)
        return {"mu": draws["mu"], "alpha0": draws["alpha0"], "alpha1_beta1": weights}

    # ------------------------------------------------------------------------- GP regression

    def _gp_regr_cholesky(x: torch.Tensor, alpha: torch.Tensor, rho: torch.Tensor,
                          sigma: torch.Tensor) -> torch.Tensor:
        """Cholesky factor of ``gp_exp_quad_cov(x, alpha, rho) + diag(sigma)``, in float64
        (cast back to ``x``'s dtype)."""
        x64 = x.to(torch.float64)
        a = alpha.to(torch.float64)[..., None, None]
        r = rho.to(torch.float64)[..., None, None]
        s = sigma.to(torch.float64)[..., None, None]
        eye = torch.eye(len(x64), dtype=torch.float64, device=x.device)
        cov = a**2 * torch.exp(-0.5 * (x64[:, None] - x64[None, :]) ** 2 / r**2) + s * eye
        return torch.linalg.cholesky(cov).to(x.dtype)

    def gp_regr(N: int, x: torch.Tensor, y: torch.Tensor) -> None:
        """posteriordb ``gp_regr``: ``y ~ multi_normal(0, K(alpha, rho) + sigma I)``.

        Stan adds ``sigma`` (not ``sigma^2``) to the diagonal; so does the port.
        """
        rho = pyro.sample("rho", dist.Gamma(_c(y, 25.0), 4.0))  # shape 25, rate 4
        alpha = pyro.sample("alpha", dist.HalfNormal(_c(y, 2.0)))  # normal(0, 2), <lower=0>
        sigma = pyro.sample("sigma", dist.HalfNormal(_c(y, 1.0)))  # normal(0, 1), <lower=0>
        L = _gp_regr_cholesky(x, alpha, rho, sigma)
        pyro.sample("y", dist.MultivariateNormal(torch.zeros_like(y), scale_tril=L), obs=y)

    def _gp_regr_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        dtype = _dtype(dtype)  # the counts k of the data set are unused by this model
        return {"N": int(d["N"]), "x": _float(d["x"], dtype), "y": _float(d["y"], dtype)}

    # ------------------------------------------------------------------------- HMMs

    def _transitions(theta1: torch.Tensor, theta2: torch.Tensor) -> torch.Tensor:
        """``log theta[j, k]``, the rows ``theta[1] = theta1`` and ``theta[2] = theta2``."""
        return torch.stack([theta1, theta2], dim=-2).log()

    def hmm_example(N: int, K: int, y: torch.Tensor) -> None:
        """posteriordb ``hmm_example``: two states, ``y[t] ~ normal(mu[z[t]], 1)``.

        Flat simplex rows ``theta1``, ``theta2`` of the transition matrix;
        ``positive_ordered[2] mu`` with ``normal(3, 1)`` and ``normal(10, 1)`` terms.
        """
        theta1 = pyro.sample("theta1", FlatPrior(constraints.simplex, (K,), like=y))
        theta2 = pyro.sample("theta2", FlatPrior(constraints.simplex, (K,), like=y))
        loc = torch.stack([_c(y, 3.0), _c(y, 10.0)])  # normal_lpdf(mu[1] | 3, 1), (mu[2] | 10, 1)
        mu = pyro.sample("mu", OrderedNormals(loc, _c(y, 1.0), positive=True))
        log_emit = dist.Normal(mu.unsqueeze(-2), 1.0).log_prob(y.unsqueeze(-1))
        pyro.factor("y", _hmm_forward(_transitions(theta1, theta2), log_emit))

    def _hmm_example_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        if int(d["K"]) != 2:
            raise ValueError("hmm_example is written for K = 2 states")
        return {"N": int(d["N"]), "K": 2, "y": _float(d["y"], _dtype(dtype))}

    def _drive_model(emission: str) -> Any:
        def model(K: int, N: int, u: torch.Tensor, v: torch.Tensor, alpha: torch.Tensor,
                  tau: float | None = None, rho: float | None = None) -> None:
            theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
            theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
            loc = torch.stack([_c(u, 0.0), _c(u, 3.0)])  # normal(0, 1) and normal(3, 1) terms
            positive = emission == "exponential"
            phi = pyro.sample("phi", OrderedNormals(loc, _c(u, 1.0), positive=positive))
            lam = pyro.sample("lambda", OrderedNormals(loc, _c(u, 1.0), positive=positive))
            if positive:  # exponential_lpdf(u | phi) = log phi - phi u
                log_emit = dist.Exponential(phi.unsqueeze(-2)).log_prob(u.unsqueeze(-1)) \
                    + dist.Exponential(lam.unsqueeze(-2)).log_prob(v.unsqueeze(-1))
            else:
                log_emit = dist.Normal(phi.unsqueeze(-2), tau).log_prob(u.unsqueeze(-1)) \
                    + dist.Normal(lam.unsqueeze(-2), rho).log_prob(v.unsqueeze(-1))
            pyro.factor("uv", _hmm_forward(_transitions(theta1, theta2), log_emit))
        return model

    hmm_drive_0 = _drive_model("exponential")
    hmm_drive_0.__doc__ = (
        "posteriordb ``hmm_drive_0``: two states, exponential emissions of 1/speed ``u`` "
        "(rate ``phi[z]``) and hoop distance ``v`` (rate ``lambda[z]``); Dirichlet rows "
        "``theta1``, ``theta2``; ``positive_ordered`` rates with normal(0, 1) and "
        "normal(3, 1) terms.")
    hmm_drive_1 = _drive_model("normal")
    hmm_drive_1.__doc__ = (
        "posteriordb ``hmm_drive_1``: two states, ``u ~ normal(phi[z], tau)`` and "
        "``v ~ normal(lambda[z], rho)``; Dirichlet rows ``theta1``, ``theta2``; ordered "
        "``phi`` and ``lambda`` with normal(0, 1) and normal(3, 1) terms.")

    def _drive_data(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        dtype = _dtype(dtype)
        if int(d["K"]) != 2:
            raise ValueError("hmm_drive is written for K = 2 states")
        out = {"K": 2, "N": int(d["N"]), "u": _float(d["u"], dtype),
               "v": _float(d["v"], dtype), "alpha": _float(d["alpha"], dtype)}
        for name in ("tau", "rho"):  # hmm_drive_1's emission sds
            if name in d:
                out[name] = float(d[name])
        return out

    return [
        Port("arma-arma11", arma11, _arma_data,
             notes="The error recursion is a bidiagonal triangular solve; the likelihood "
                   "is y ~ normal(y - err, sigma), one event of T."),
        Port("garch-garch11", garch11, _garch_data, _garch_latents,
             "beta1 < 1 - alpha1: (alpha1, beta1, 1 - alpha1 - beta1) is a flat simplex "
             "site alpha1_beta1, alpha1 and beta1 deterministic; the check maps the "
             "reference's alpha1, beta1 onto it. The variance recursion is a bidiagonal "
             "triangular solve."),
        Port("gp_pois_regr-gp_regr", gp_regr, _gp_regr_data,
             notes="sigma (not sigma^2) is added to the diagonal, as in Stan; the "
                   "Cholesky factor is computed in float64."),
        Port("hmm_example-hmm_example", hmm_example, _hmm_example_data,
             notes="Forward algorithm in log space (pairwise products); flat simplex "
                   "rows; positive_ordered mu with a different normal term per element "
                   "(OrderedNormals, unnormalised as in Stan)."),
        Port("bball_drive_event_0-hmm_drive_0", hmm_drive_0, _drive_data,
             notes="Forward algorithm in log space; exponential emissions; "
                   "positive_ordered phi and lambda (OrderedNormals). Multimodal."),
        Port("bball_drive_event_1-hmm_drive_1", hmm_drive_1, _drive_data,
             notes="Forward algorithm in log space; normal emissions with known sds; "
                   "ordered phi and lambda (OrderedNormals). Multimodal."),
    ]


