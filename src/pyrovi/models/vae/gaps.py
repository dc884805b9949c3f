"""The seed maths of the VAE, made executable: two ELBO estimators and the inference gaps.

**The ELBO, two ways.** For one image ``x`` and the encoder's ``q(z | x) = N(mu, diag
sigma^2)`` with the prior ``p(z) = N(0, I)``::

    ELBO = E_q[ log p(x | z) ] - KL( q(z | x) || p(z) )

Pyro's ``Trace_ELBO`` estimates all of it by sampling, ``log p(x | z) + log p(z) -
log q(z | x)`` at ``z = mu + sigma * eps``; ``TraceMeanField_ELBO`` samples only the
first term and uses the closed form of the second (:func:`kl_to_standard_normal`)::

    KL( N(mu, diag sigma^2) || N(0, I) ) = 1/2 sum_j ( sigma_j^2 + mu_j^2 - 1 - log sigma_j^2 )

Both are unbiased for the same number (:func:`elbo_estimators` checks it on a fixed
network). The closed form drops the sampled ``log p(z) - log q(z | x)`` and with it the
score term ``-d log q(z | x) / d weights`` (zero mean, not zero variance) of the gradient,
so its gradient with respect to the encoder varies less from draw to draw
(:func:`gradient_variance`), which is why a VAE trains with it. This is measured, not
guaranteed: the dropped term can be negatively correlated with the likelihood's, and the
ELBO *estimate* itself (not its gradient) is sometimes noisier in closed form.

**The gaps** (Cremer, Li and Duvenaud 2018). With ``q*`` the best diagonal Gaussian for
this image alone (the decoder fixed) and ``q_enc`` the encoder's output::

    log p(x) - ELBO(q_enc) =  [ log p(x) - ELBO(q*) ]      approximation gap = KL(q* || p(z|x))
                            + [ ELBO(q*) - ELBO(q_enc) ]    amortization gap  >= 0

The first is the price of the Gaussian family, the second of sharing one encoder among
all images. :func:`inference_gaps` measures both per image:

=================  ============================================================
term               how it is computed (nats per image)
=================  ============================================================
``log p(x)``       importance weighted bound with ``K`` draws
                   (:func:`pyrovi.infer.importance.pointwise_log_weights`), the
                   larger of the two with the encoder and with ``q*`` as proposal
                   (Cremer et al. take the best of their estimates too)
``ELBO(q*)``       ``pyrovi.fit(fixed_decoder_model(vae), {"x": x},
                   guide="mean_field")``: per-image Gaussians optimised by SVI with
                   the decoder's weights frozen; mean of ``K`` log weights per image
``ELBO(q_enc)``    mean of ``K`` log weights of the encoder per image
=================  ============================================================

:func:`encoder_vs_nuts` compares the encoder's ``q(z | x)`` for one image with NUTS on
``p(z | x)`` (decoder fixed) through :func:`pyrovi.compare`: the usual report.

The functions take any module with the :class:`~pyrovi.models.vae.model.VAE` interface:
``encode(x) -> (loc, scale)``, ``likelihood_dist(z)`` (batch shape ``z.shape[:-1]``,
event shape ``(data_dim,)``), ``model``, ``guide``, ``encoder``, ``latent_dim`` and,
where the likelihood observes a transformed ``x`` (grey levels as integers), ``observed``.
"""

from __future__ import annotations

import copy
import hashlib
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import arviz as az
import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from pyrovi.comparison import Comparison
from pyrovi.infer import ConvergenceWarning, fit, nuts
from pyrovi.infer.importance import CHUNK_POINTS, pointwise_log_weights

__all__ = [
    "FixedDecoderModel",
    "InferenceGaps",
    "elbo_estimators",
    "encoder_vs_nuts",
    "fixed_decoder_model",
    "gradient_variance",
    "gradient_variance_by_parameter",
    "inference_gaps",
    "kl_to_standard_normal",
]

ELBO_ESTIMATORS = {"trace": Trace_ELBO, "mean_field": TraceMeanField_ELBO}
"""The two estimators compared: sampled KL (``Trace_ELBO``) and closed-form KL."""


def kl_to_standard_normal(loc: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``KL(N(loc, diag scale^2) || N(0, I))`` in closed form, one value per row.

    Parameters
    ----------
    loc, scale : torch.Tensor
        Shape ``(..., latent_dim)``; ``scale > 0``.

    Returns
    -------
    torch.Tensor
        Shape ``(...)``: ``1/2 sum_j (scale_j^2 + loc_j^2 - 1 - 2 log scale_j)``, in nats.
    """
    return 0.5 * (scale.square() + loc.square() - 1.0 - 2.0 * scale.log()).sum(-1)


def _observed(vae: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` as the likelihood observes it (``vae.observed`` where the VAE has it)."""
    observed = getattr(vae, "observed", None)
    return observed(x) if callable(observed) else x


def _draws_per_chunk(num_images: int) -> int:
    return max(1, CHUNK_POINTS // max(num_images, 1))


def elbo_estimators(vae: nn.Module, x: torch.Tensor, num_draws: int = 1000,
                    seed: int = 0) -> dict[str, Any]:
    """The ELBO of a fixed network by sampled KL and by closed-form KL, on the same draws.

    Parameters
    ----------
    vae : VAE
        Encoder and decoder, used as they are (no training).
    x : torch.Tensor
        Images, shape ``(N, data_dim)``, in the VAE's dtype.
    num_draws : int, default 1000
        Independent draws ``eps ~ N(0, I)`` per image; one draw is one single-particle
        estimate of each ELBO.
    seed : int, default 0
        Seed of the draws (a private generator; torch's global one is untouched).

    Returns
    -------
    dict
        ``"trace"`` (sampled KL, what ``Trace_ELBO`` computes per particle) and
        ``"mean_field"`` (closed-form KL, ``TraceMeanField_ELBO``): each ``{"elbo": mean
        over draws of the ELBO per image (nats per image), "se": its Monte Carlo standard
        error, "sd": the sd of one single-particle estimate}``; ``"difference"`` (trace
        minus mean_field, paired on the same draws, expectation exactly 0) as
        ``{"elbo", "se"}``; ``"num_draws"`` and ``"num_images"``.
    """
    if num_draws < 2:
        raise ValueError(f"num_draws must be at least 2 for a standard error, got {num_draws}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    trace_parts, mf_parts = [], []
    with torch.no_grad():
        loc, scale = vae.encode(x)
        kl = kl_to_standard_normal(loc, scale)
        obs = _observed(vae, x)
        done, chunk = 0, _draws_per_chunk(x.shape[0])
        while done < num_draws:
            num = min(chunk, num_draws - done)
            eps = torch.randn((num, *loc.shape), generator=gen, dtype=loc.dtype,
                              device=loc.device)
            z = loc + scale * eps
            log_lik = vae.likelihood_dist(z).log_prob(obs)  # (num, N)
            log_prior = dist.Normal(0.0, 1.0).log_prob(z).sum(-1)
            log_q = dist.Normal(loc, scale).log_prob(z).sum(-1)
            trace_parts.append((log_lik + log_prior - log_q).double().mean(-1))
            mf_parts.append((log_lik - kl).double().mean(-1))
            done += num
    trace, mean_field = torch.cat(trace_parts).numpy(), torch.cat(mf_parts).numpy()

    def summary(values: np.ndarray) -> dict[str, float]:
        sd = float(np.std(values, ddof=1))
        return {"elbo": float(np.mean(values)), "se": sd / math.sqrt(values.size), "sd": sd}

    diff = summary(trace - mean_field)
    return {"trace": summary(trace), "mean_field": summary(mean_field),
            "difference": {"elbo": diff["elbo"], "se": diff["se"]},
            "num_draws": int(num_draws), "num_images": int(x.shape[0])}


def _gradient_draws(vae: nn.Module, x: torch.Tensor, elbo: str, num_draws: int,
                    seed: int) -> dict[str, torch.Tensor]:
    """Single-particle gradients of the loss per image w.r.t. the encoder's parameters:
    name -> ``(num_draws, numel)``."""
    if elbo not in ELBO_ESTIMATORS:
        raise ValueError(f"unknown elbo {elbo!r}; choose one of {', '.join(ELBO_ESTIMATORS)}")
    if num_draws < 2:
        raise ValueError(f"num_draws must be at least 2 for a variance, got {num_draws}")
    loss_fn = ELBO_ESTIMATORS[elbo](num_particles=1, max_plate_nesting=1)
    params = {name: p for name, p in vae.encoder.named_parameters() if p.requires_grad}
    rows: dict[str, list[torch.Tensor]] = {name: [] for name in params}
    with pyro.get_param_store().scope():  # pyro.module registrations stay out of the store
        pyro.set_rng_seed(seed)
        for _ in range(num_draws):
            loss = loss_fn.differentiable_loss(vae.model, vae.guide, x) / x.shape[0]
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
            for (name, p), g in zip(params.items(), grads, strict=True):
                rows[name].append((torch.zeros_like(p) if g is None else g).reshape(-1))
    return {name: torch.stack(r).double() for name, r in rows.items()}


def gradient_variance_by_parameter(vae: nn.Module, x: torch.Tensor, elbo: str = "trace",
                                   num_draws: int = 100, seed: int = 0) -> dict[str, float]:
    """Summed elementwise variance of the single-particle gradient, per encoder parameter.

    Parameters and return as :func:`gradient_variance`, split by the names of
    ``vae.encoder.named_parameters()``.
    """
    draws = _gradient_draws(vae, x, elbo, num_draws, seed)
    return {name: float(g.var(dim=0, unbiased=True).sum()) for name, g in draws.items()}


def gradient_variance(vae: nn.Module, x: torch.Tensor, elbo: str = "trace",
                      num_draws: int = 100, seed: int = 0) -> float:
    """Total variance of the single-particle ELBO gradient with respect to the encoder.

    Parameters
    ----------
    vae : VAE
        Its ``model``, ``guide`` and ``encoder``; the networks are not changed.
    x : torch.Tensor
        Images, ``(N, data_dim)``.
    elbo : {"trace", "mean_field"}
        ``Trace_ELBO`` (sampled KL) or ``TraceMeanField_ELBO`` (closed-form KL).
    num_draws : int, default 100
        Independent single-particle gradients.
    seed : int, default 0
        Passed to :func:`pyro.set_rng_seed` first.

    Returns
    -------
    float
        ``sum over encoder weights of Var(d loss / d weight)`` (``ddof=1`` over the
        draws), the loss being Pyro's negative ELBO divided by ``N`` (nats per image): the
        trace of the gradient's covariance matrix.

    Notes
    -----
    Pyro's own ``differentiable_loss`` is differentiated, so the sampled-KL gradient
    includes the score term ``-d log q(z | x) / d weight`` at fixed ``z`` (zero mean,
    not zero variance), exactly what ``SVI`` with ``Trace_ELBO`` steps on. Pyro's param
    store is left as it was.
    """
    return float(sum(gradient_variance_by_parameter(vae, x, elbo, num_draws, seed).values()))


def _fingerprint(module: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


class FixedDecoderModel:
    """``p(z, x)`` of a VAE with its weights frozen: a model of the latent codes only.

    ``model(x)`` samples ``z ~ N(0, I)`` in plate ``"data"`` and observes ``x`` through
    the decoder; :meth:`encoder_guide` is the encoder's ``q(z | x)`` for the same model.
    The VAE is deep-copied with ``requires_grad_(False)`` on every weight, and no
    ``pyro.module`` is called: an optimiser (``pyrovi.fit``) sees only the guide's
    parameters, while gradients still flow through the decoder into ``z`` (NUTS, the
    reparameterised ELBO). The copy follows the dtype and device of ``x`` (one copy per
    kind), so the float64 fits of :func:`pyrovi.fit` work on a float32 VAE.

    Its ``repr`` holds a fingerprint of the weights, which is what :func:`pyrovi.nuts`
    caches by for a callable object: two decoders never share a cached reference.
    """

    def __init__(self, vae: nn.Module) -> None:
        frozen = copy.deepcopy(vae).requires_grad_(False).eval()
        self.latent_dim = int(frozen.latent_dim)
        self._name = f"{type(vae).__name__}(latent_dim={self.latent_dim}, " \
                     f"weights={_fingerprint(frozen)})"
        first = next(frozen.parameters(), None)
        self._copies: dict[tuple[torch.dtype, str], nn.Module] = {}
        if first is not None:
            self._copies[(first.dtype, str(first.device))] = frozen
        self._frozen = frozen

    def __repr__(self) -> str:
        return f"FixedDecoderModel({self._name})"

    def vae_for(self, x: torch.Tensor) -> nn.Module:
        """The frozen VAE in the dtype and on the device of ``x``."""
        key = (x.dtype, str(x.device))
        if key not in self._copies:
            self._copies[key] = copy.deepcopy(self._frozen).to(dtype=x.dtype, device=x.device)
        return self._copies[key]

    def __call__(self, x: torch.Tensor) -> None:
        vae = self.vae_for(x)
        with pyro.plate("data", x.shape[0]):
            zeros = x.new_zeros(x.shape[0], self.latent_dim)
            z = pyro.sample("z", dist.Normal(zeros, torch.ones_like(zeros)).to_event(1))
            pyro.sample("x", vae.likelihood_dist(z), obs=_observed(vae, x))

    def encoder_guide(self, x: torch.Tensor) -> None:
        """The frozen encoder's ``q(z_i | x_i) = N(encode(x_i))`` in plate ``"data"``."""
        vae = self.vae_for(x)
        with pyro.plate("data", x.shape[0]):
            loc, scale = vae.encode(x)
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))


def fixed_decoder_model(vae: nn.Module) -> FixedDecoderModel:
    """A Pyro model of ``z | x`` with the VAE's decoder fixed (:class:`FixedDecoderModel`).

    Examples
    --------
    >>> model = fixed_decoder_model(vae)
    >>> per_image = pyrovi.fit(model, {"x": x[:10]}, guide="mean_field")  # q*, per image
    >>> ref = pyrovi.nuts(model, {"x": x[:1]})                            # p(z | x)
    """
    return FixedDecoderModel(vae)


def _as_array(values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    array.setflags(write=False)
    return array


@dataclass(frozen=True)
class InferenceGaps:
    """Per-image terms of ``log p(x) - ELBO(q_enc) = approximation + amortization gap``.

    Every array has one entry per image, in nats per image.

    Attributes
    ----------
    log_likelihood : numpy.ndarray
        ``log p(x_i)``: the larger of ``iw_encoder`` and ``iw_optimal``.
    elbo_optimal : numpy.ndarray
        ELBO of the per-image Gaussian ``q*`` optimised by SVI, decoder fixed.
    elbo_amortized : numpy.ndarray
        ELBO of the encoder's ``q(z | x_i)``.
    approximation_gap : numpy.ndarray
        ``log_likelihood - elbo_optimal``, an estimate of ``KL(q* || p(z | x_i))``.
    amortization_gap : numpy.ndarray
        ``elbo_optimal - elbo_amortized``.
    iw_encoder, iw_optimal : numpy.ndarray
        Importance weighted bounds with ``k`` draws of the encoder and of ``q*``.
    elbo_optimal_se, elbo_amortized_se : numpy.ndarray
        Monte Carlo standard errors of the two ELBOs (sd of ``k`` log weights over
        ``sqrt(k)``).
    log_likelihood_se : numpy.ndarray
        Delta-method standard error of the chosen bound, ``sd(w) / (sqrt(k) mean(w))``
        (too small where the weights are heavy-tailed: it ignores the bound's bias).
    k : int
        Draws per image of each proposal.
    converged : bool
        Whether the SVI fit of ``q*`` met its stopping rule.
    """

    log_likelihood: np.ndarray
    elbo_optimal: np.ndarray
    elbo_amortized: np.ndarray
    approximation_gap: np.ndarray
    amortization_gap: np.ndarray
    iw_encoder: np.ndarray
    iw_optimal: np.ndarray
    elbo_optimal_se: np.ndarray
    elbo_amortized_se: np.ndarray
    log_likelihood_se: np.ndarray
    k: int
    converged: bool
    notes: tuple[str, ...] = field(default=())

    ARRAYS = ("log_likelihood", "elbo_optimal", "elbo_amortized", "approximation_gap",
              "amortization_gap", "iw_encoder", "iw_optimal")

    @property
    def num_images(self) -> int:
        """How many images the gaps were measured on."""
        return int(self.log_likelihood.size)

    @property
    def means(self) -> dict[str, float]:
        """The mean over images of each per-image term (nats per image)."""
        return {name: float(np.mean(getattr(self, name))) for name in self.ARRAYS}

    @property
    def mc_se(self) -> dict[str, float]:
        """Monte Carlo standard errors of the means over images (for these images; the
        spread of the terms across images is not in them). The terms of a gap are taken
        as independent, which overstates the se of the approximation gap where the bound
        and ``elbo_optimal`` come from the same draws of ``q*`` (positively correlated)."""
        n = self.num_images

        def se(*parts: np.ndarray) -> float:
            return float(np.sqrt(sum(np.sum(p**2) for p in parts)) / n)

        return {"log_likelihood": se(self.log_likelihood_se),
                "elbo_optimal": se(self.elbo_optimal_se),
                "elbo_amortized": se(self.elbo_amortized_se),
                "approximation_gap": se(self.log_likelihood_se, self.elbo_optimal_se),
                "amortization_gap": se(self.elbo_optimal_se, self.elbo_amortized_se)}

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and floats, for JSON: the per-image arrays, ``means``, ``mc_se``,
        ``k``, ``num_images``, ``converged`` and ``notes``."""
        out: dict[str, Any] = {name: getattr(self, name).tolist() for name in self.ARRAYS}
        out["elbo_optimal_se"] = self.elbo_optimal_se.tolist()
        out["elbo_amortized_se"] = self.elbo_amortized_se.tolist()
        out["log_likelihood_se"] = self.log_likelihood_se.tolist()
        out.update(means=self.means, mc_se=self.mc_se, k=self.k, num_images=self.num_images,
                   converged=self.converged, notes=list(self.notes),
                   units="nats per image")
        return out


def _bound_and_elbo(log_w: torch.Tensor
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per image: the IW bound, its delta-method se, the ELBO (mean log weight), its se."""
    k = log_w.shape[0]
    bound = (torch.logsumexp(log_w, 0) - math.log(k)).numpy()
    elbo = log_w.mean(0).numpy()
    if k < 2:
        nan = np.full(elbo.shape, np.nan)
        return bound, nan, elbo, nan
    w = torch.exp(log_w - log_w.max(0).values)
    bound_se = (w.std(0) / (math.sqrt(k) * w.mean(0))).numpy()
    return bound, bound_se, elbo, (log_w.std(0) / math.sqrt(k)).numpy()


def inference_gaps(vae: nn.Module, x: torch.Tensor, k: int = 5000, seed: int = 0,
                   fit_kwargs: Mapping[str, Any] | None = None) -> InferenceGaps:
    """The approximation and amortization gaps of a VAE on images ``x`` (decoder fixed).

    Parameters
    ----------
    vae : VAE
        A (typically trained) VAE; it is not changed.
    x : torch.Tensor
        Held-out images, ``(N, data_dim)``.
    k : int, default 5000
        Draws per image from each proposal (the encoder and ``q*``): the importance
        weighted bounds use all ``k``, and the ELBOs are their means.
    seed : int, default 0
        Seed of the SVI fit and of the draws.
    fit_kwargs : mapping, optional
        More keyword arguments of :func:`pyrovi.fit` (e.g. ``max_steps``); the guide is
        always ``"mean_field"`` and the stopping rule the default one.

    Returns
    -------
    InferenceGaps

    Warns
    -----
    ConvergenceWarning
        If the SVI fit of ``q*`` did not meet its stopping rule (also recorded in
        ``converged`` and ``notes``): ``elbo_optimal`` is then too low, and the
        amortization gap too small.

    Notes
    -----
    ``log_likelihood`` is, per image, the larger of the two importance weighted bounds:
    each is a lower bound in expectation, so the larger is the tighter (its upward bias
    from taking a maximum of two noisy estimates is negligible next to the gaps at
    large ``k``). ``q*`` is the optimum of the summed ELBO over the images, which is the
    per-image optimum for every image since the terms share no variable.
    """
    fixed = fixed_decoder_model(vae)
    data = {"x": x}
    log_w = pointwise_log_weights(fixed, fixed.encoder_guide, data, k, seed=seed)
    iw_enc, iw_enc_se, elbo_enc, elbo_enc_se = _bound_and_elbo(log_w)
    kwargs = dict(fit_kwargs or {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        per_image = fit(fixed, data, guide="mean_field", seed=seed, **kwargs)
    notes: list[str] = []
    if not per_image.converged:
        message = ("the SVI fit of the per-image Gaussians q* did not meet its stopping rule: "
                   "elbo_optimal may be low and the amortization gap underestimated")
        warnings.warn(message, ConvergenceWarning, stacklevel=2)
        notes.append(message)
    with per_image.in_force():
        log_w = pointwise_log_weights(fixed, per_image.guide, per_image.data, k, seed=seed + 1)
    iw_opt, iw_opt_se, elbo_opt, elbo_opt_se = _bound_and_elbo(log_w)
    log_lik = np.maximum(iw_enc, iw_opt)
    log_lik_se = np.where(iw_enc >= iw_opt, iw_enc_se, iw_opt_se)
    return InferenceGaps(
        log_likelihood=_as_array(log_lik), elbo_optimal=_as_array(elbo_opt),
        elbo_amortized=_as_array(elbo_enc), approximation_gap=_as_array(log_lik - elbo_opt),
        amortization_gap=_as_array(elbo_opt - elbo_enc), iw_encoder=_as_array(iw_enc),
        iw_optimal=_as_array(iw_opt), elbo_optimal_se=_as_array(elbo_opt_se),
        elbo_amortized_se=_as_array(elbo_enc_se), log_likelihood_se=_as_array(log_lik_se),
        k=int(k), converged=bool(per_image.converged),
        notes=tuple(notes))


def encoder_vs_nuts(vae: nn.Module, x_one_image: torch.Tensor, num_samples: int = 1000,
                    num_warmup: int = 1000, num_chains: int = 2, seed: int = 0,
                    cache: bool = True) -> Comparison:
    """Compare the encoder's ``q(z | x)`` for one image with NUTS on ``p(z | x)``.

    Parameters
    ----------
    vae : VAE
        Encoder and decoder; the decoder's weights are fixed for NUTS.
    x_one_image : torch.Tensor
        One image, shape ``(data_dim,)`` or ``(1, data_dim)``, in the VAE's dtype.
    num_samples, num_warmup, num_chains : int
        NUTS settings (:func:`pyrovi.nuts`); the encoder gives ``num_samples *
        num_chains`` draws.
    seed : int, default 0
        Seed of NUTS and of the encoder's draws.
    cache : bool, default True
        Reuse a cached NUTS run; the cache key includes a fingerprint of the weights.

    Returns
    -------
    Comparison
        From :func:`pyrovi.compare`: parameters ``z[0]``, ``z[1]``, ...; ``cmp.write(dir)``
        writes the usual report. No k-hat or evidence terms (the encoder's draws come as
        an ``InferenceData``, without the guide).

    Raises
    ------
    ValueError
        If ``x_one_image`` holds more than one image.
    """
    x = x_one_image.reshape(1, -1) if x_one_image.dim() == 1 else x_one_image
    if x.dim() != 2 or x.shape[0] != 1:
        raise ValueError(f"x_one_image must be one image, (data_dim,) or (1, data_dim), got "
                         f"shape {tuple(x_one_image.shape)}")
    fixed = fixed_decoder_model(vae)
    ref = nuts(fixed, {"x": x}, num_samples=num_samples, num_warmup=num_warmup,
               num_chains=num_chains, seed=seed, cache=cache)
    z = np.asarray(ref.posterior["z"].values)  # (chain, draw, 1, latent_dim)
    groups: dict[str, Any] = {"posterior": {"z": z.reshape(*z.shape[:2], z.shape[-1])}}
    if "sample_stats" in ref.groups():
        groups["sample_stats"] = {k: np.asarray(v.values)
                                  for k, v in ref.sample_stats.data_vars.items()}
    ref = az.from_dict(**groups, attrs=dict(ref.attrs))
    gen = torch.Generator(device=x.device).manual_seed(seed)
    with torch.no_grad():
        loc, scale = fixed.vae_for(x).encode(x)
        eps = torch.randn((num_samples * num_chains, loc.shape[-1]), generator=gen,
                          dtype=loc.dtype, device=loc.device)
        draws = (loc[0] + scale[0] * eps).double().cpu().numpy()
    vi = az.from_dict(posterior={"z": draws[None]})
    # compare sits above models in the import order (it reads the registry): imported here
    from pyrovi.compare import compare

    return compare(vi, ref, labels={"model": "vae (decoder fixed), one image",
                                    "guide": "encoder q(z | x)"})
