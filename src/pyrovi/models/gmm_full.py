"""Conjugate Bayesian Gaussian mixture with full covariances: the model CAVI solves, in Pyro.

For ``K`` components in ``D`` dimensions, with the hyperparameters of
:func:`pyrovi.infer.em.bayes_gmm_prior` (scikit-learn's ``BayesianGaussianMixture``
defaults: ``alpha0 = 1 / K``, ``beta0 = 1``, ``mean0 = mean(x)``, ``W0 = inv(cov(x))``,
``nu0 = D``)::

    weights ~ Dirichlet(alpha0 * ones(K))
    precisions[k] ~ Wishart(df=nu0, scale=W0)                      (E = nu0 * W0)
    locs[k] | precisions[k] ~ MultivariateNormal(mean0, precision=beta0 * precisions[k])
    x[n] ~ sum_k weights[k] * MultivariateNormal(locs[k], precision=precisions[k])

This is exactly the joint of Bishop (2006, section 10.2) that :func:`pyrovi.infer.em.cavi_gmm`
approximates, with the assignments summed out (a ``MixtureSameFamily`` likelihood), so the
model has continuous latents only and works with ``Trace_ELBO``, the autoguides and NUTS.

**The Wishart site.** ``precisions`` is a genuine ``Wishart`` sample site, so its density
is the textbook one (Lebesgue measure on the ``D(D+1)/2`` free entries of a symmetric
matrix) and the posterior over ``(weights, locs, precisions)`` is CAVI's target. Torch
registers no bijection for ``constraints.positive_definite`` (only a non-bijective
``transform_to``), so NUTS and the autoguides cannot use ``torch.distributions.Wishart``
as is. :class:`BijectiveWishart` is the same distribution with its support set to
:data:`positive_definite_matrix`, an instance of a module-private subclass of torch's
positive-definite constraint for which :class:`PositiveDefiniteVecTransform` is registered
with ``biject_to`` and ``transform_to``: an unconstrained vector of length ``D(D+1)/2``
fills a lower-triangular Cholesky factor ``L`` (log-diagonal) and maps to ``L L^T``.
Nothing global changes: ``constraints.positive_definite`` keeps torch's behaviour.
:meth:`BijectiveWishart.rsample` draws by the Bartlett decomposition directly, which
also avoids torch's ``Wishart.rsample`` (it draws twice and warns ``"Singular sample
detected."`` on every call, because its singularity test is inverted).

The module also holds the hand-written guide of CAVI's family (:func:`cavi_guide`), that
guide frozen at a :class:`~pyrovi.infer.em.CAVIResult` (:func:`guide_from_cavi`, for the
ELBO of CAVI's ``q(theta)`` in the marginalised model), and draws from CAVI's
``q(theta)`` as ``arviz.InferenceData`` (:func:`cavi_draws`).

**Label symmetry.** The posterior has ``K!`` symmetric modes. :func:`cavi_guide` starts
at k-means centres, which picks one. The autoguides' default starts (prior median, or
zero in the unconstrained space) put every component at ``mean0``, a symmetric saddle
that plain SVI does not leave. :func:`pyrovi.fit` detects it (the Hessian there is not
positive definite) and restarts its MAP search from prior draws, so its autoguides
start in one of the modes; in plain Pyro, start them off the saddle yourself, e.g. with
``init_loc_fn=init_to_value(values=...)`` at CAVI's means.

**Two ELBOs.** CAVI's bound :attr:`~pyrovi.infer.em.CAVIResult.elbo` carries a factor
``q(z)`` over the assignments; the ELBO of ``q(theta)`` alone in this marginalised model is

    ELBO_marg(q) = E_q(theta)[log p(x, theta) - log q(theta)]
                 = CAVI ELBO + E_q(theta)[KL(q(z) || p(z | x, theta))] >= CAVI ELBO,

so summing ``z`` out exactly can only tighten the bound; the gap is small when the
clusters are well separated.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from scipy.stats import wishart
from torch.distributions import biject_to, transform_to
from torch.distributions import constraints as torch_constraints
from torch.distributions.transforms import Transform

from pyrovi.guides import GUIDE_FAMILIES, GuideFamily, register_family
from pyrovi.infer import em
from pyrovi.models import gmm
from pyrovi.models.spec import ModelSpec

__all__ = [
    "DATASETS",
    "GUIDE_PREFIX",
    "SPEC",
    "BijectiveWishart",
    "PositiveDefiniteVecTransform",
    "cavi_draws",
    "cavi_guide",
    "guide_from_cavi",
    "load_data",
    "model",
    "positive_definite_matrix",
    "prior",
    "simulate",
]

DATASETS = gmm.DATASETS

GUIDE_PREFIX = "gmm_full_guide"


# ------------------------------------------------------ a Wishart that NUTS can sample


class _PositiveDefiniteMatrix(torch_constraints._PositiveDefinite):
    """Symmetric positive-definite matrices, with a registered bijection to ``R^{D(D+1)/2}``.

    Checks exactly as ``constraints.positive_definite``; only its (type-keyed) entries in
    ``biject_to`` and ``transform_to`` differ.
    """


positive_definite_matrix = _PositiveDefiniteMatrix()
"""Support of :class:`BijectiveWishart`; ``biject_to`` maps it to the vector transform."""


def _side(size: int) -> int:
    """``D`` such that ``D (D + 1) / 2 == size``."""
    side = int(round((math.sqrt(8 * size + 1) - 1) / 2))
    if side * (side + 1) // 2 != size:
        raise ValueError(f"{size} is not a triangular number D(D+1)/2")
    return side


class PositiveDefiniteVecTransform(Transform):
    """Bijection from ``R^{D(D+1)/2}`` onto ``D x D`` symmetric positive-definite matrices.

    The vector fills the lower triangle of ``L`` row by row (``torch.tril_indices``
    order); the diagonal entries are ``log L_ii``. The output is ``L L^T`` and ``L`` is its
    Cholesky factor, so the inverse is ``cholesky`` followed by reading the triangle off.

    The log-Jacobian is taken with respect to the ``D(D+1)/2`` free entries of the
    symmetric output (the measure of the Wishart density)::

        log |J| = sum_i log L_ii                            (exp of the diagonal)
                + D log 2 + sum_i (D - i + 1) log L_ii      (L -> L L^T, i = 1..D)
    """

    domain = constraints.real_vector
    codomain = positive_definite_matrix
    bijective = True
    sign = +1

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PositiveDefiniteVecTransform)

    def __hash__(self) -> int:
        return hash(type(self))

    def forward_shape(self, shape: torch.Size) -> torch.Size:
        side = _side(shape[-1])
        return torch.Size(shape[:-1]) + (side, side)

    def inverse_shape(self, shape: torch.Size) -> torch.Size:
        side = shape[-1]
        return torch.Size(shape[:-2]) + (side * (side + 1) // 2,)

    @staticmethod
    def _diagonal_positions(side: int) -> torch.Tensor:
        i = torch.arange(side)
        return i * (i + 1) // 2 + i

    def _call(self, v: torch.Tensor) -> torch.Tensor:
        side = _side(v.shape[-1])
        rows, cols = torch.tril_indices(side, side, device=v.device)
        tril = v.new_zeros(v.shape[:-1] + (side, side))
        tril[..., rows, cols] = v
        diag = tril.diagonal(dim1=-2, dim2=-1)
        chol = tril.tril(-1) + torch.diag_embed(diag.exp())
        return chol @ chol.transpose(-2, -1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        side = y.shape[-1]
        chol = torch.linalg.cholesky(y)
        chol = chol.tril(-1) + torch.diag_embed(chol.diagonal(dim1=-2, dim2=-1).log())
        rows, cols = torch.tril_indices(side, side, device=y.device)
        return chol[..., rows, cols]

    def log_abs_det_jacobian(self, v: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        side = _side(v.shape[-1])
        log_diag = v[..., self._diagonal_positions(side).to(v.device)]
        power = torch.arange(side + 1, 1, -1, dtype=v.dtype, device=v.device)  # D+1, ..., 2
        return (power * log_diag).sum(-1) + side * math.log(2.0)


@biject_to.register(_PositiveDefiniteMatrix)
@transform_to.register(_PositiveDefiniteMatrix)
def _pd_transform(constraint: _PositiveDefiniteMatrix) -> PositiveDefiniteVecTransform:
    return PositiveDefiniteVecTransform()


class BijectiveWishart(dist.Wishart):
    """``pyro.distributions.Wishart`` usable by NUTS and the autoguides.

    Same parameters and density as :class:`torch.distributions.Wishart`
    (``Wishart(df, scale_tril=chol(W))`` has mean ``df * W``); its support
    :data:`positive_definite_matrix` has a registered bijection
    (:class:`PositiveDefiniteVecTransform`). :meth:`rsample` uses the Bartlett
    decomposition once, without torch's retry loop and its spurious warning.
    """

    support = positive_definite_matrix

    def rsample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        """Reparametrised draw ``L A A^T L^T`` (Bartlett: ``A_ii^2 ~ chi2(df - i)``, i = 0..D-1,
        ``A_ij ~ Normal(0, 1)`` below the diagonal)."""
        shape = torch.Size(sample_shape) + self.batch_shape
        side = self.event_shape[-1]
        scale_tril = self.scale_tril
        offset = torch.arange(side, dtype=scale_tril.dtype, device=scale_tril.device)
        chi2 = torch.distributions.Chi2(self.df.unsqueeze(-1) - offset).rsample(sample_shape)
        tiny = torch.finfo(scale_tril.dtype).tiny
        rows, cols = torch.tril_indices(side, side, offset=-1, device=scale_tril.device)
        below = scale_tril.new_zeros(shape + (side, side))
        below[..., rows, cols] = torch.randn(
            shape + (rows.numel(),), dtype=scale_tril.dtype, device=scale_tril.device
        )
        chol = scale_tril @ (torch.diag_embed(chi2.clamp(min=tiny).sqrt()) + below)
        return chol @ chol.transpose(-2, -1)


# ------------------------------------------------------------------------------ model


def prior(
    x: torch.Tensor,
    K: int = 2,
    alpha0: float | None = None,
    beta0: float = 1.0,
    mean0: Any = None,
    W0: Any = None,
    nu0: float | None = None,
) -> em.BayesGMMPrior:
    """The prior of :func:`model` with its defaults filled in (:func:`em.bayes_gmm_prior`).

    Parameters
    ----------
    x : Tensor, shape (N, D)
        Observations (the defaults ``mean0 = mean(x)`` and ``W0 = inv(cov(x))`` use them).
    K, alpha0, beta0, mean0, W0, nu0
        As in :func:`model`.

    Returns
    -------
    BayesGMMPrior
    """
    return em.bayes_gmm_prior(
        _numpy(x), K, alpha0=alpha0, beta0=beta0, mean0=_numpy(mean0), W0=_numpy(W0), nu0=nu0
    )


def _numpy(value: Any) -> Any:
    """A tensor as a float64 array; anything else unchanged."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().double().numpy()
    return value


def _prior_tensors(
    x: torch.Tensor, K: int, **hyper: Any
) -> tuple[float, float, torch.Tensor, torch.Tensor, float]:
    """``alpha0, beta0, mean0, chol(W0), nu0`` in the dtype and device of ``x``."""
    p = prior(x, K, **hyper)
    like = {"dtype": x.dtype, "device": x.device}
    mean0 = torch.as_tensor(p.mean0, **like)
    chol_w0 = torch.as_tensor(np.linalg.cholesky(p.W0), **like)
    return p.alpha0, p.beta0, mean0, chol_w0, p.nu0


def model(
    x: torch.Tensor,
    K: int = 2,
    alpha0: float | None = None,
    beta0: float = 1.0,
    mean0: Any = None,
    W0: Any = None,
    nu0: float | None = None,
) -> None:
    """Conjugate Bayesian GMM with full covariances, assignments summed out.

    Parameters
    ----------
    x : Tensor, shape (N, D)
        Observations.
    K : int, default 2
        Number of components.
    alpha0 : float, optional
        Dirichlet concentration of each weight (default ``1 / K``).
    beta0 : float, default 1.0
        Precision scaling of the prior of the component means.
    mean0 : array_like of shape (D,), optional
        Prior mean of the component means (default ``mean(x)``).
    W0 : array_like of shape (D, D), optional
        Wishart scale matrix (default ``inv(cov(x))``, so ``E[precision] = nu0 inv(cov(x))``).
    nu0 : float, optional
        Wishart degrees of freedom, ``> D - 1`` (default ``D``).

    Notes
    -----
    Latent sites: ``weights`` (K,), and in the plate ``components`` (dim -1)
    ``precisions`` (K, D, D) and ``locs`` (K, D); the observed site ``x`` sits in the
    plate ``obs`` (dim -1). Batch safe for vectorised particles with
    ``max_plate_nesting=1``. The defaults are resolved by :func:`prior` exactly as
    :func:`pyrovi.infer.em.cavi_gmm` resolves them.
    """
    alpha, beta, mean, chol_w0, nu = _prior_tensors(
        x, K, alpha0=alpha0, beta0=beta0, mean0=mean0, W0=W0, nu0=nu0
    )
    weights = pyro.sample("weights", dist.Dirichlet(x.new_full((K,), alpha)))
    with pyro.plate("components", K, dim=-1):
        precisions = pyro.sample("precisions", BijectiveWishart(df=nu, scale_tril=chol_w0))
        locs = pyro.sample(
            "locs", dist.MultivariateNormal(mean, precision_matrix=beta * precisions)
        )
    # Particle dims sit left of the component dim: locs (*batch, K, D); weights, drawn
    # outside the plate, are (*batch, 1, K) under a particle plate and (K,) without one.
    batch = locs.shape[:-2]
    mixture = dist.MixtureSameFamily(
        dist.Categorical(probs=weights.reshape(batch + (1, K))),
        dist.MultivariateNormal(locs.unsqueeze(-3), precision_matrix=precisions.unsqueeze(-4)),
    )
    with pyro.plate("obs", x.shape[0], dim=-1):
        pyro.sample("x", mixture, obs=x)


# ------------------------------------------------------------------------------ guides


def _cavi_family(
    alpha: torch.Tensor,
    beta: torch.Tensor,
    m: torch.Tensor,
    w_tril: torch.Tensor,
    nu: torch.Tensor,
) -> None:
    """Sample sites of CAVI's family ``q(pi) prod_k q(Lambda_k) q(mu_k | Lambda_k)``."""
    pyro.sample("weights", dist.Dirichlet(alpha))
    with pyro.plate("components", alpha.shape[-1], dim=-1):
        precisions = pyro.sample("precisions", BijectiveWishart(df=nu, scale_tril=w_tril))
        pyro.sample(
            "locs",
            dist.MultivariateNormal(m, precision_matrix=beta[..., None, None] * precisions),
        )


def _kmeans_start(x: torch.Tensor, K: int, p: em.BayesGMMPrior) -> dict[str, torch.Tensor]:
    """CAVI's first update from k-means responsibilities (``cavi_gmm``'s own start, seed 0)."""
    arr = x.detach().cpu().double().numpy()
    post = em.cavi_m_step(arr, em._kmeans_resp(arr, K, seed=0), p)
    like = {"dtype": x.dtype, "device": x.device}
    return {
        "alpha": torch.as_tensor(post.alpha, **like),
        "beta": torch.as_tensor(post.beta, **like),
        "m": torch.as_tensor(post.m, **like),
        "W_tril": torch.as_tensor(np.linalg.cholesky(post.W), **like),
        "nu": torch.as_tensor(post.nu, **like),
    }


def cavi_guide(
    x: torch.Tensor,
    K: int = 2,
    alpha0: float | None = None,
    beta0: float = 1.0,
    mean0: Any = None,
    W0: Any = None,
    nu0: float | None = None,
) -> None:
    """Hand-written guide of CAVI's family, with learnable parameters.

    ``q(weights) = Dirichlet(alpha)``; per component ``q(precisions[k]) =
    Wishart(nu_k, W_k)`` and ``q(locs[k] | precisions[k]) = MultivariateNormal(m_k,
    precision=beta_k precisions[k])``. Parameters ``gmm_full_guide.alpha`` (K,),
    ``.beta`` (K,), ``.m`` (K, D), ``.W_tril`` (K, D, D; the Cholesky factor of ``W_k``)
    and ``.nu`` (K,; ``> D - 1``).

    They start where :func:`pyrovi.infer.em.cavi_gmm` starts (with ``seed=0``): one
    update of ``q(pi, mu, Lambda)`` from hard k-means responsibilities (``m`` at the
    k-means centres), which breaks the label symmetry. Arguments as in :func:`model`.
    """
    D = x.shape[-1]
    start: dict[str, torch.Tensor] = {}

    def init(name: str) -> Callable[[], torch.Tensor]:
        def value() -> torch.Tensor:
            if not start:
                hyper = {"alpha0": alpha0, "beta0": beta0, "mean0": mean0, "W0": W0, "nu0": nu0}
                start.update(_kmeans_start(x, K, prior(x, K, **hyper)))
            return start[name]

        return value

    p = f"{GUIDE_PREFIX}."
    alpha = pyro.param(p + "alpha", init("alpha"), constraint=constraints.positive)
    beta = pyro.param(p + "beta", init("beta"), constraint=constraints.positive)
    m = pyro.param(p + "m", init("m"))
    w_tril = pyro.param(p + "W_tril", init("W_tril"), constraint=constraints.lower_cholesky)
    nu = pyro.param(p + "nu", init("nu"), constraint=constraints.greater_than(D - 1.0))
    _cavi_family(alpha, beta, m, w_tril, nu)


def guide_from_cavi(result: em.CAVIResult) -> Callable[..., None]:
    """The guide of :func:`cavi_guide`'s family fixed at a CAVI result (no parameters).

    Parameters
    ----------
    result : CAVIResult
        Output of :func:`pyrovi.infer.em.cavi_gmm` on the same data.

    Returns
    -------
    callable
        ``guide(x, K=..., **hyper)`` with the signature of :func:`model`: samples
        ``weights``, ``precisions`` and ``locs`` from CAVI's ``q(theta)`` in the dtype of
        ``x``. Use it to evaluate the ELBO of CAVI's ``q(theta)`` in the marginalised
        model, e.g. with :func:`pyrovi.diagnostics.psis.guide_log_weights`.
    """
    values = {
        "alpha": result.alpha,
        "beta": result.beta,
        "m": result.m,
        "w_tril": np.linalg.cholesky(result.W),
        "nu": result.nu,
    }
    num_components, dim = result.m.shape

    def guide(x: torch.Tensor, K: int = num_components, **hyper: Any) -> None:
        del hyper  # part of the model's signature only
        if K != num_components or x.shape[-1] != dim:
            raise ValueError(
                f"CAVI result has K={num_components}, D={dim}; got K={K}, D={x.shape[-1]}"
            )
        like = {"dtype": x.dtype, "device": x.device}
        _cavi_family(**{k: torch.as_tensor(v, **like) for k, v in values.items()})

    return guide


def cavi_draws(result: em.CAVIResult, num_samples: int = 1000, seed: int = 0) -> az.InferenceData:
    """Independent draws from CAVI's ``q(theta)`` as ``arviz.InferenceData``.

    ``weights ~ Dirichlet(alpha)``; per component ``precisions[k] ~ Wishart(df=nu_k,
    scale=W_k)`` (:data:`scipy.stats.wishart`, whose ``scale`` is the Wishart scale matrix
    ``W``: ``E = nu W``) and ``locs[k] ~ Normal(m_k, inv(beta_k precisions[k]))``.

    Parameters
    ----------
    result : CAVIResult
        Output of :func:`pyrovi.infer.em.cavi_gmm`.
    num_samples : int, default 1000
        Number of draws.
    seed : int, default 0
        Seed of a :func:`numpy.random.default_rng`.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` group with one chain and the sites ``weights`` (K,), ``locs``
        (K, D) and ``precisions`` (K, D, D) of :func:`model`.
    """
    rng = np.random.default_rng(seed)
    num_components, dim = result.m.shape
    weights = rng.dirichlet(result.alpha, size=num_samples)
    precisions = np.empty((num_samples, num_components, dim, dim))
    locs = np.empty((num_samples, num_components, dim))
    for k in range(num_components):
        lam = wishart(df=result.nu[k], scale=result.W[k]).rvs(size=num_samples, random_state=rng)
        lam = np.asarray(lam, dtype=np.float64).reshape(num_samples, dim, dim)
        precisions[:, k] = lam
        # mu = m + L^{-T} z / sqrt(beta) with Lambda = L L^T has covariance inv(beta Lambda)
        chol = np.linalg.cholesky(lam)
        z = rng.standard_normal((num_samples, dim, 1))
        white = np.linalg.solve(np.swapaxes(chol, -1, -2), z)[..., 0]
        locs[:, k] = result.m[k] + white / np.sqrt(result.beta[k])
    posterior = {"weights": weights[None], "locs": locs[None], "precisions": precisions[None]}
    return az.from_dict(posterior=posterior, attrs={"inference": "CAVI q(theta)"})


# ----------------------------------------------------------------------- data and SPEC


def simulate(
    seed: int = 0, N: int = 300, K: int = 3, D: int = 2
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Simulate ``N`` points from a well-separated ``K``-component full-covariance mixture.

    Weights ~ Dirichlet(5, ..., 5); means ~ ``Normal(0, 2)`` redrawn until every pair is
    at least 2.5 apart; covariances ``R diag(s^2) R^T`` with ``s ~ Uniform(0.3, 0.6)`` and
    a random rotation ``R`` (correlated components). The parameters are then mapped
    affinely, per dimension, so that the *population* mixture has mean 0 and sd 1, and the
    sample is drawn after that map, so ``truth`` is exactly what generated ``x``.
    Components are sorted by the first coordinate of their means.

    Returns
    -------
    data : dict
        ``{"x": Tensor (N, D), "K": K}`` (float32), ready for ``model(**data)``.
    truth : dict
        ``weights`` (K,), ``locs`` (K, D) and ``precisions`` (K, D, D), the latent sites
        of :func:`model`.
    """
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(K, 5.0))
    locs = gmm.separated_means(rng, K, D)
    covs = np.empty((K, D, D))
    for k in range(K):
        rot, upper = np.linalg.qr(rng.standard_normal((D, D)))
        rot = rot * np.sign(np.diag(upper))
        covs[k] = rot @ np.diag(rng.uniform(0.3, 0.6, size=D) ** 2) @ rot.T
    centre = weights @ locs
    second = np.einsum("k,kij->ij", weights, covs + np.einsum("ki,kj->kij", locs, locs))
    sd = np.sqrt(np.diag(second) - centre**2)
    locs = (locs - centre) / sd
    covs = covs / np.outer(sd, sd)[None]
    order = np.argsort(locs[:, 0])
    weights, locs, covs = weights[order], locs[order], covs[order]
    assign = rng.choice(K, size=N, p=weights)
    chols = np.linalg.cholesky(covs)
    x = locs[assign] + np.einsum("nij,nj->ni", chols[assign], rng.standard_normal((N, D)))
    f32 = torch.float32
    data = {"x": torch.tensor(x, dtype=f32), "K": K}
    truth = {
        "weights": torch.tensor(weights, dtype=f32),
        "locs": torch.tensor(locs, dtype=f32),
        "precisions": torch.tensor(np.linalg.inv(covs), dtype=f32),
    }
    return data, truth


def load_data(name: str | None = None) -> dict[str, Any]:
    """Bundled data, standardised per feature: ``{"x": Tensor (N, D), "K": K}``.

    The same data sets as :func:`pyrovi.models.gmm.load_data`: ``old_faithful``
    (default, 272 eruptions, ``K = 2``) and ``iris`` (150 flowers, four measurements,
    ``K = 3``).
    """
    return gmm.load_data(name)


CAVI_FAMILY = register_family(GuideFamily(
    "cavi_family", lambda m: cavi_guide, represents_correlations=True, richer="flow",
    description="hand-written guide of CAVI's family: Dirichlet x Normal-Wishart per component",
))
"""The hand-written :func:`cavi_guide` as a guide family record: within a component the
Normal-Wishart couples each mean with its precision (correlations represented); the
weights are independent of the components."""

SPEC = ModelSpec(
    name="gmm_full",
    model=model,
    guides={**GUIDE_FAMILIES, CAVI_FAMILY.name: CAVI_FAMILY.build},
    load_data=load_data,
    simulate=simulate,
    description="Conjugate Bayesian GMM, full covariances (Normal-Wishart; CAVI's model)",
    datasets=DATASETS,
    site_roles={"weights": "component", "locs": "component", "precisions": "component"},
    data_units=gmm.data_units,
)
