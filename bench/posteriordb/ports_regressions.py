"""posteriordb linear regressions (earnings, kidiq, mesquite, nes, blr) ported to Pyro.

Loaded by ``ports.py``, which calls :func:`ports` with its own namespace. Every Stan model
here is ``vector[K] beta; real<lower=0> sigma; y ~ normal(X * beta, sigma)`` for some
design matrix ``X`` of Stan's transformed data (logs, centring, z-scores, interactions,
dummies), so one builder serves them all:

- ``make_data`` computes ``X`` (its intercept column included) and the outcome in float64
  numpy, exactly as Stan's transformed data block does (``sd`` with ``N - 1``), then casts
  them to the requested dtype. The model takes ``N``, ``X`` and the outcome under its Stan
  name (``log_earn``, ``kid_score``...), which is also the observed site's name.
- ``beta`` is one vector site of shape ``(K,)``, multiplied with ``base._matvec`` so that
  it runs under an outer particle plate (batch shape ``(P, 1)``).
- Priors follow the Stan code: no statement -> :class:`FlatPrior` (``beta`` on the reals,
  ``sigma`` on the positive reals); ``sigma ~ cauchy(0, 2.5)`` -> ``HalfCauchy(2.5)``;
  blr's ``target += normal_lpdf(beta | 0, 10)`` -> ``Normal(0, 10)`` and
  ``target += normal_lpdf(sigma | 0, 10)`` on ``<lower=0>`` sigma -> ``HalfNormal(10)``
  (the same density up to the constant log 2).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

Build = Callable[[Mapping[str, Any]], tuple[np.ndarray, np.ndarray]]


def _linear(base: Any, stan_name: str, y_name: str, sigma_prior: str | None = None,
            beta_scale: float | None = None) -> Callable[..., None]:
    """A Pyro model for Stan's ``y_name ~ normal(X * beta, sigma)``.

    Parameters
    ----------
    base : namespace
        ``ports.py``'s globals (its ``FlatPrior``, ``_c``, ``_matvec``).
    stan_name : str
        The posteriordb model name (the model's ``__name__``).
    y_name : str
        The outcome's Stan name: keyword argument and observed site.
    sigma_prior : {None, "half_cauchy_2.5", "half_normal_10"}
        None: no statement in Stan, a flat prior on ``sigma > 0``.
    beta_scale : float, optional
        ``beta ~ normal(0, beta_scale)`` elementwise; None: flat ``beta``.
    """

    def model(N: int, X: torch.Tensor, **data: torch.Tensor) -> None:
        y = data[y_name]
        K = X.shape[-1]
        if beta_scale is None:  # no statement in Stan: flat on the reals
            beta = pyro.sample("beta", base.FlatPrior(constraints.real, (K,), like=y))
        else:
            beta = pyro.sample("beta", dist.Normal(base._c(y, 0.0), beta_scale)
                               .expand([K]).to_event(1))
        if sigma_prior is None:  # no statement in Stan: flat on sigma > 0
            sigma = pyro.sample("sigma", base.FlatPrior(constraints.positive, like=y))
        elif sigma_prior == "half_cauchy_2.5":  # sigma ~ cauchy(0, 2.5), <lower=0>
            sigma = pyro.sample("sigma", dist.HalfCauchy(base._c(y, 2.5)))
        elif sigma_prior == "half_normal_10":  # target += normal_lpdf(sigma | 0, 10)
            sigma = pyro.sample("sigma", dist.HalfNormal(base._c(y, 10.0)))
        else:
            raise ValueError(f"unknown sigma prior {sigma_prior!r}")
        with pyro.plate("data", N, dim=-1):
            pyro.sample(y_name, dist.Normal(base._matvec(X, beta), sigma), obs=y)

    prior = "flat beta" if beta_scale is None else f"beta ~ normal(0, {beta_scale:g})"
    model.__name__ = model.__qualname__ = stan_name
    model.__doc__ = (f"posteriordb ``{stan_name}``: {y_name} ~ normal(X beta, sigma), "
                     f"{prior}, sigma {sigma_prior or 'flat'}.")
    return model


def _design(base: Any, y_name: str, build: Build) -> Callable[..., dict]:
    """``make_data`` from ``build(d) -> (y, X)`` (float64 numpy, Stan's transformed data)."""

    def make(d: Mapping[str, Any], dtype: torch.dtype | None = None) -> dict:
        dtype = base._dtype(dtype)
        y, X = build(d)
        N = int(d["N"])
        assert X.shape[0] == N and y.shape == (N,)
        return {"N": N, "X": base._float(X, dtype), y_name: base._float(y, dtype)}

    return make


def _v(d: Mapping[str, Any], name: str) -> np.ndarray:
    return np.asarray(d[name], dtype=np.float64)


def _with_intercept(*columns: np.ndarray) -> np.ndarray:
    """``[1, columns...]`` as an ``(N, 1 + len(columns))`` matrix: ``beta[1]`` is the intercept."""
    return np.column_stack([np.ones_like(columns[0]), *columns])


def _z(x: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Stan's ``(x - mean(x)) / (scale * sd(x))``, ``sd`` with ``N - 1``."""
    return (x - x.mean()) / (scale * x.std(ddof=1))


def _dummies(d: Mapping[str, Any], name: str, levels: tuple[int, ...]) -> list[np.ndarray]:
    codes = np.asarray(d[name])
    return [(codes == level).astype(np.float64) for level in levels]


# ----------------------------------------------------------------------------- transformed data


def _earnings(d: Mapping[str, Any], kind: str) -> tuple[np.ndarray, np.ndarray]:
    earn, height = _v(d, "earn"), _v(d, "height")
    if kind == "log10earn_height":
        return np.log10(earn), _with_intercept(height)
    male = _v(d, "male")
    if kind == "logearn_height_male":
        X = _with_intercept(height, male)
    elif kind == "logearn_interaction":
        X = _with_intercept(height, male, height * male)
    elif kind == "logearn_interaction_z":
        z_height = _z(height)
        X = _with_intercept(z_height, male, z_height * male)
    elif kind == "logearn_logheight_male":
        X = _with_intercept(np.log(height), male)
    else:
        raise ValueError(kind)
    return np.log(earn), X


def _kidiq(d: Mapping[str, Any], kind: str) -> tuple[np.ndarray, np.ndarray]:
    y = _v(d, "kid_score")
    if kind == "kidscore_mom_work":
        return y, _with_intercept(*_dummies(d, "mom_work", (2, 3, 4)))
    hs, iq = _v(d, "mom_hs"), _v(d, "mom_iq")
    if kind == "kidscore_momhsiq":
        return y, _with_intercept(hs, iq)
    if kind == "kidscore_interaction_c":
        hs, iq = hs - hs.mean(), iq - iq.mean()
    elif kind == "kidscore_interaction_c2":
        hs, iq = hs - 0.5, iq - 100.0
    elif kind == "kidscore_interaction_z":
        hs, iq = _z(hs, 2.0), _z(iq, 2.0)
    elif kind != "kidscore_interaction":
        raise ValueError(kind)
    return y, _with_intercept(hs, iq, hs * iq)


def _mesquite(d: Mapping[str, Any], kind: str) -> tuple[np.ndarray, np.ndarray]:
    if kind == "mesquite":
        names = ("diam1", "diam2", "canopy_height", "total_height", "density", "group")
        return _v(d, "weight"), _with_intercept(*(_v(d, n) for n in names))
    d1, d2, ch = _v(d, "diam1"), _v(d, "diam2"), _v(d, "canopy_height")
    log_canopy_volume = np.log(d1 * d2 * ch)
    log_canopy_area = np.log(d1 * d2)
    log_canopy_shape = np.log(d1 / d2)
    if kind == "logmesquite_logvolume":
        columns = [log_canopy_volume]
    elif kind == "logmesquite_logva":
        columns = [log_canopy_volume, log_canopy_area, _v(d, "group")]
    elif kind == "logmesquite_logvash":
        columns = [log_canopy_volume, log_canopy_area, log_canopy_shape,
                   np.log(_v(d, "total_height")), _v(d, "group")]
    elif kind == "logmesquite_logvas":
        columns = [log_canopy_volume, log_canopy_area, log_canopy_shape,
                   np.log(_v(d, "total_height")), np.log(_v(d, "density")), _v(d, "group")]
    else:
        raise ValueError(kind)
    return np.log(_v(d, "weight")), _with_intercept(*columns)


def _nes(d: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    age30_44, age45_64, age65up = _dummies(d, "age_discrete", (2, 3, 4))
    X = _with_intercept(_v(d, "real_ideo"), _v(d, "race_adj"), age30_44, age45_64, age65up,
                        _v(d, "educ1"), _v(d, "gender"), _v(d, "income"))
    return _v(d, "partyid7"), X


def _blr(d: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    X = np.asarray(d["X"], dtype=np.float64).reshape(int(d["N"]), int(d["D"]))
    return _v(d, "y"), X


# ----------------------------------------------------------------------------- table


def ports(base: Any) -> list:
    """The regression ports, as ``base.Port`` objects (``base``: ``ports.py``'s namespace)."""
    Port = base.Port
    out = []

    def add(name: str, model: Callable[..., None], y_name: str, build: Build,
            notes: str) -> None:
        out.append(Port(name, model, _design(base, y_name, build), notes=notes))

    for kind in ("log10earn_height", "logearn_height_male", "logearn_interaction",
                 "logearn_interaction_z", "logearn_logheight_male"):
        y_name = "log10_earn" if kind.startswith("log10") else "log_earn"
        add(f"earnings-{kind}", _linear(base, kind, y_name), y_name,
            lambda d, kind=kind: _earnings(d, kind),
            "Flat priors; the log outcome, interactions and z-score (sd with N - 1) are "
            "transformed data in X.")

    for kind in ("kidscore_interaction", "kidscore_momhsiq"):
        add(f"kidiq-{kind}", _linear(base, kind, "kid_score", "half_cauchy_2.5"), "kid_score",
            lambda d, kind=kind: _kidiq(d, kind),
            "Flat beta, sigma ~ cauchy(0, 2.5) on sigma > 0.")
    for kind in ("kidscore_interaction_c", "kidscore_interaction_c2", "kidscore_interaction_z",
                 "kidscore_mom_work"):
        add(f"kidiq_with_mom_work-{kind}", _linear(base, kind, "kid_score"), "kid_score",
            lambda d, kind=kind: _kidiq(d, kind),
            "Flat priors; centred / z-scored (2 sd, N - 1) predictors or mom_work dummies "
            "are transformed data in X.")

    for kind in ("mesquite", "logmesquite_logva", "logmesquite_logvas", "logmesquite_logvash",
                 "logmesquite_logvolume"):
        y_name = "weight" if kind == "mesquite" else "log_weight"
        add(f"mesquite-{kind}", _linear(base, kind, y_name), y_name,
            lambda d, kind=kind: _mesquite(d, kind),
            "Flat priors; 46 trees; log weight and log canopy volume, area and shape are "
            "transformed data (mesquite itself regresses the raw weight).")

    nes = _linear(base, "nes", "partyid7")
    for year in range(1972, 2001, 4):
        add(f"nes{year}-nes", nes, "partyid7", _nes,
            "Flat priors; the age_discrete dummies (levels 2, 3, 4) are transformed data.")

    blr = _linear(base, "blr", "y", "half_normal_10", beta_scale=10.0)
    for data_name in ("sblrc", "sblri"):
        add(f"{data_name}-blr", blr, "y", _blr,
            "No intercept; beta ~ normal(0, 10) and normal_lpdf(sigma | 0, 10) on sigma > 0 "
            "(a HalfNormal(10)).")
    return out
