r"""Variational objectives beyond the reverse KL, as records the fit loop asks.

Maximising the ELBO minimises the reverse divergence ``KL(q || p)``, which is *mode
seeking*: a Gaussian q on a posterior with two modes sits on one of them, with the width
of that mode. Other objectives weigh the mass q misses more heavily and are *mass
covering*: their q spreads over both modes. With log weights ``lw = log p(x, z) - log
q(z)`` for draws ``z ~ q``:

=============  ====================================  ============  ==================
``elbo=``      value (from a vector of log weights)  bound on       divergence
                                                     ``log p(x)``
=============  ====================================  ============  ==================
``trace``      ``mean(lw)``                          lower          ``KL(q || p)``
``renyi``      ``1/(1-a) log mean exp((1-a) lw)``    lower (a>=0)   Rényi ``D_a(q||p)``
               over groups of K draws
``iwae``       ``log mean exp(lw)`` over groups of   lower          (Rényi, a = 0)
               K draws (IWAE_K)
``rws``        ``sum softmax(lw) lw -                none           ``KL(p || q)``
               log mean exp(lw)``
``cubo``       ``1/2 log mean exp(2 lw)`` (CUBO_2)   upper          ``chi^2(p || q)``
=============  ====================================  ============  ==================

The Rényi bound of order ``alpha`` (Li & Turner 2016) interpolates: ``alpha -> 1`` is the
ELBO, ``alpha = 0`` the importance-weighted bound of Burda et al. (2016), which Pyro's
:class:`~pyro.infer.RenyiELBO` computes; ``iwae`` is that objective under its own name.
``rws`` is the wake-phi update of reweighted wake-sleep (Bornschein & Bengio 2015; Le et
al. 2019): the guide follows ``sum_k wbar_k grad log q(z_k)`` with self-normalised
weights ``wbar = softmax(lw)`` of K draws, a self-normalised importance-sampling estimate
of ``-grad KL(p || q)`` (biased for finite K, consistent as K grows). ``cubo`` is the
chi upper bound ``CUBO_n = (1/n) log E_q[(p(x, z) / q(z))^n]`` with ``n = 2`` of Dieng,
Tran, Ranganath, Paisley & Blei (2017), minimised with reparameterised gradients
(:class:`CUBO`).

The optimum of ``KL(p || q)`` over Gaussians matches the posterior's mean and covariance
(moment matching); over mean-field Gaussians, its marginal means and variances. The
optimum of ``KL(q || p)`` over mean-field Gaussians on a Gaussian posterior has the
posterior mean and sds ``1 / sqrt(diag(precision))``, narrower than the marginals.

**Particles.** IWAE, RWS and CUBO need ``K > 1`` draws per step: a single draw makes IWAE
the ELBO, gives RWS no weights to normalise, and makes CUBO's log-mean-exp the log weight
itself. Each record's ``default_particles`` (16) is used when the user leaves
``num_particles`` unset; an explicit value below ``min_particles`` is an error.

**Judging a fit by its own objective.** The fit loop compares guides three times (the
step-size trial, the confirmation of a stop, "never worse than the start"). For the ELBO
families it compares ELBOs; for the others it compares the objective's own value
(:meth:`Objective.score`, larger is better whatever the bound), from the same log
weights. An estimate from q's own draws cannot see posterior mass that q misses: from a
narrow q, the plain estimates of CUBO and of ``KL(p || q)`` are biased low, so a narrow
start would look better than the broad optimum. Their records therefore carry a
``proposal_value``: two guides are compared on the same draws, half from each, each
weighted to its own q (:func:`mixture_log_weights`), which sees the mass either of them
covers. IWAE and Rényi bounds are expectations over groups of K draws from q itself,
estimated without bias from q's own draws.

Notes
-----
Pyro's ``RenyiELBO`` (and so ``iwae``) forms its log-mean-exp per element of the model's
plates for local latents; :meth:`Objective.value` uses the total log weight of each draw,
which is the same objective for models whose latents are all global (the models these
objectives are meant for: low-dimensional posteriors with several modes).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import (
    JitTrace_ELBO,
    JitTraceGraph_ELBO,
    JitTraceMeanField_ELBO,
    RenyiELBO,
    ReweightedWakeSleep,
    Trace_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.poutine.util import site_is_subsample

from pyrovi.diagnostics.bounds import CUBO_KHAT_MAX
from pyrovi.diagnostics.psis import psis_khat
from pyrovi.infer.util import in_particle_plate

__all__ = [
    "CUBO",
    "COVERING_START_SPREAD",
    "MANY_PARTICLES",
    "OBJECTIVES",
    "Objective",
    "WakePhi",
    "get_objective",
    "mixture_log_weights",
    "paired_gain",
]

MANY_PARTICLES = 16
"""Default particles per step of the objectives that need more than one (IWAE, RWS, CUBO,
Rényi), used when ``num_particles`` is left unset."""
COVERING_START_SPREAD = 3.0
"""Mass-covering objectives start from the Laplace approximation (or the initial point)
with sds this many times wider. Their estimates and gradients weight q's draws by ``p /
q``, which has finite variance only where q's tails are heavier than p's (``E_q[w^2]`` is
infinite for a Gaussian q narrower than ``1/sqrt(2)`` of a Gaussian p's sd, in any
direction): from a start narrower than that, CUBO's gradient shrinks q to a point, and
importance weights never see the mass q misses. The Laplace sds of a mean-field start
are the conditional ones, narrower than the marginals when the posterior is correlated."""
BOOTSTRAP_DRAWS = 200
"""Resamples of the paired bootstrap that gives a comparison's standard error."""


# -- values of the objectives from a vector of log weights ------------------------------

def _logmeanexp(x: np.ndarray, axis: int | None = None) -> np.ndarray:
    top = np.max(x, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    out = np.log(np.mean(np.exp(x - top), axis=axis, keepdims=True)) + top
    return np.squeeze(out, axis=axis) if axis is not None else out.reshape(())


def _groups(log_weights: np.ndarray, num_particles: int) -> np.ndarray:
    """Log weights as rows of ``num_particles`` draws (a remainder is dropped)."""
    k = max(1, min(int(num_particles), len(log_weights)))
    rows = len(log_weights) // k
    return log_weights[: rows * k].reshape(rows, k)


def elbo_value(log_weights: np.ndarray, num_particles: int, alpha: float,
               log_ratio: np.ndarray | None = None) -> float:
    """``mean(lw)``: the ELBO (weighted by ``q / r`` for draws from a proposal r)."""
    if log_ratio is None:
        return float(np.mean(log_weights))
    u = np.exp(log_ratio - np.max(log_ratio))
    return float(np.sum(u * log_weights) / np.sum(u))


def renyi_value(log_weights: np.ndarray, num_particles: int, alpha: float,
                log_ratio: np.ndarray | None = None) -> float:
    """The K-draw Rényi bound ``E[1/(1-alpha) log mean_k w_k^(1-alpha)]``, averaged over
    groups of ``num_particles`` draws (``alpha = 0``: IWAE_K)."""
    rows = _groups(np.asarray(log_weights, dtype=float), num_particles)
    return float(np.mean(_logmeanexp((1.0 - alpha) * rows, axis=1)) / (1.0 - alpha))


def iwae_value(log_weights: np.ndarray, num_particles: int, alpha: float,
               log_ratio: np.ndarray | None = None) -> float:
    """IWAE_K: ``log mean exp(lw)`` over groups of ``num_particles`` draws, averaged."""
    return renyi_value(log_weights, num_particles, 0.0)


def forward_kl_value(log_weights: np.ndarray, num_particles: int, alpha: float,
                     log_ratio: np.ndarray | None = None) -> float:
    """Self-normalised estimate of ``KL(p || q) = E_p[lw] - log p(x)``: ``sum wbar lw -
    log mean w`` with ``wbar = softmax(lw)`` (draws from q), or weights ``p / r`` for
    draws from a proposal r (``log_ratio = log q - log r``)."""
    lw = np.asarray(log_weights, dtype=float)
    to_p = lw if log_ratio is None else lw + log_ratio  # log p(x, z) - log (q or r)
    wbar = np.exp(to_p - np.max(to_p))
    wbar /= np.sum(wbar)
    return float(np.sum(wbar * lw) - _logmeanexp(to_p))


def cubo_value(log_weights: np.ndarray, num_particles: int, alpha: float,
               log_ratio: np.ndarray | None = None, n: float = 2.0) -> float:
    """``CUBO_n = 1/n log mean exp(n lw)`` (draws from q), or ``1/n log mean exp(n lw +
    log q - log r)`` for draws from a proposal r."""
    lw = n * np.asarray(log_weights, dtype=float)
    if log_ratio is not None:
        lw = lw + log_ratio
    return float(_logmeanexp(lw) / n)


# -- losses the engine calls -------------------------------------------------------------

def _particle_log_prob(trace: poutine.Trace, num: int) -> torch.Tensor:
    """Each sample site's (scaled, masked) log-density summed over all but the leading
    particle dimension."""
    trace.compute_log_prob()
    total: torch.Tensor | float = 0.0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        log_p = site["log_prob"]
        if log_p.dim() == 0 or log_p.shape[0] != num:
            raise ValueError(f"site {site['name']!r} has log_prob shape {tuple(log_p.shape)}, "
                             "not batched over the particles")
        total = total + log_p.reshape(num, -1).sum(-1)
    return total if isinstance(total, torch.Tensor) else torch.zeros(num)


def _log_weights(model: Callable[..., Any], guide: Callable[..., Any], num: int,
                 vectorize: bool, max_plate_nesting: int, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> torch.Tensor:
    """Differentiable log weights of ``num`` reparameterised guide draws, shape ``(num,)``."""
    if vectorize and num > 1:
        dim = -(int(max_plate_nesting) + 1)
        guide_fn = in_particle_plate(functools.partial(guide, *args), num, dim)
        model_fn = in_particle_plate(functools.partial(model, *args), num, dim)
        guide_tr = poutine.trace(guide_fn).get_trace(**kwargs)
        model_tr = poutine.trace(poutine.replay(model_fn, trace=guide_tr)).get_trace(**kwargs)
        _check_reparameterised(guide_tr)
        return _particle_log_prob(model_tr, num) - _particle_log_prob(guide_tr, num)
    weights = []
    for _ in range(num):
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args,
                                                                                  **kwargs)
        _check_reparameterised(guide_tr)
        weights.append(model_tr.log_prob_sum() - guide_tr.log_prob_sum())
    return torch.stack(weights)


def _check_reparameterised(guide_trace: poutine.Trace) -> None:
    for name, site in guide_trace.nodes.items():
        if site["type"] == "sample" and not site["is_observed"] \
                and not site_is_subsample(site) and not site["fn"].has_rsample:
            raise ValueError(f"elbo='cubo' needs reparameterised guide draws; guide site "
                             f"{name!r} ({type(site['fn']).__name__}) has none")


class CUBO:
    r"""The chi upper bound ``CUBO_n = (1/n) log E_q[(p(x, z) / q(z))^n]`` (n = 2) as a loss.

    The gradient is that of Dieng et al.'s (2017) Algorithm 1: the reparameterised Monte
    Carlo gradient of ``exp(n * CUBO_n) = E_q[w^n]``, ``grad mean_k w_k^n``, which is
    unbiased. Not the gradient of the K-draw estimate ``(1/n) log mean_k w_k^n`` with a
    log-sum-exp: that is ``sum_k softmax(n lw)_k grad lw_k``, self-normalised, and its bias
    is not a detail: for K = 1 it is ``grad lw``, whose descent *maximises* ``KL(q || p)``,
    and at K = 16 it still shrinks q to a point on a bimodal posterior (the K-draw estimate
    falls without bound as q narrows, because q's own draws never see what it misses).

    ``exp(n lw)`` under- or overflows once ``|lw|`` reaches a few hundred nats, so the
    loss differentiated is ``mean_k exp(n (lw_k - c)) / n`` with ``c`` the previous step's
    CUBO estimate (a constant for this step's draws: the gradient stays unbiased up to the
    positive factor ``exp(-n c)``, which Adam's normalisation absorbs; ``c`` moves slowly).
    Only when a draw would overflow is ``c`` raised to this step's largest log weight.

    The float returned is the K-draw estimate ``(1/n) log mean_k exp(n lw_k)`` (log-sum-
    exp), biased low (Jensen) by an amount that shrinks with K, and the more so the
    narrower q is.

    Parameters
    ----------
    num_particles : int
        Draws per step, K > 1.
    n : float
        The order of the bound (> 1); 2 is the chi^2 bound.
    vectorize_particles : bool
        Draw the K particles at once in an outer plate.
    max_plate_nesting : int
        Plate dimensions the model uses (the particle plate goes left of them).
    """

    SMOOTHING = 0.1
    """Weight of each step's estimate in the running mean of ``w^n`` (``c``)."""
    MAX_EXPONENT = 600.0
    """Largest ``n (lw - c)`` exponentiated (float64 overflows past 709)."""

    def __init__(self, num_particles: int = MANY_PARTICLES, n: float = 2.0,
                 vectorize_particles: bool = True, max_plate_nesting: int = 0) -> None:
        if num_particles < 2:
            raise ValueError(f"elbo='cubo' needs num_particles >= 2, got {num_particles}")
        if n <= 1:
            raise ValueError(f"the CUBO's order n must exceed 1, got {n}")
        self.num_particles = int(num_particles)
        self.n = float(n)
        self.vectorize_particles = vectorize_particles
        self.max_plate_nesting = max_plate_nesting
        self.shift: float | None = None

    def _log_weights(self, model: Callable[..., Any], guide: Callable[..., Any],
                     args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
        return _log_weights(model, guide, self.num_particles, self.vectorize_particles,
                            self.max_plate_nesting, args, kwargs)

    def _estimate(self, lw: torch.Tensor) -> torch.Tensor:
        return (torch.logsumexp(self.n * lw, 0) - math.log(self.num_particles)) / self.n

    def differentiable_loss(self, model: Callable[..., Any], guide: Callable[..., Any],
                            *args: Any, **kwargs: Any) -> torch.Tensor:
        """The K-draw CUBO estimate as a tensor (gradients: the self-normalised form)."""
        return self._estimate(self._log_weights(model, guide, args, kwargs))

    def loss(self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any,
             **kwargs: Any) -> float:
        """The K-draw CUBO estimate."""
        with torch.no_grad():
            return float(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Callable[..., Any], guide: Callable[..., Any],
                       *args: Any, **kwargs: Any) -> float:
        """The K-draw CUBO estimate; the gradient of ``E_q[w^n]`` (scaled) is accumulated."""
        lw = self._log_weights(model, guide, args, kwargs)
        estimate = float(self._estimate(lw.detach()))
        top = float(lw.detach().max())
        shift = estimate if self.shift is None or not math.isfinite(self.shift) \
            else self.shift
        if not math.isfinite(top):
            return estimate  # non-finite: the engine rejects the step
        if self.n * (top - shift) > self.MAX_EXPONENT:
            shift = top
        if lw.requires_grad:
            # grad mean_k exp(n (lw_k - c)) / n = mean_k exp(n (lw_k - c)) grad lw_k
            surrogate = (torch.exp(self.n * (lw.detach() - shift)) * lw).mean()
            surrogate.backward()
        if math.isfinite(estimate):
            self.shift = estimate if self.shift is None or not math.isfinite(self.shift) \
                else float(np.logaddexp(self.n * self.shift + math.log(1 - self.SMOOTHING),
                                        self.n * estimate + math.log(self.SMOOTHING))
                           / self.n)
        return estimate


class WakePhi:
    """Reweighted wake-sleep's wake-phi update of the guide, for the engine.

    Pyro's :class:`~pyro.infer.ReweightedWakeSleep` with ``insomnia=1.0`` (wake-phi only)
    and ``model_has_params=False``; its ``loss_and_grads`` returns a pair (the wake-theta
    loss ``-IWAE_K`` and the wake-phi surrogate ``-sum_k wbar_k log q(z_k)``, with the
    draws detached). The gradient is the wake-phi surrogate's: a self-normalised
    importance-sampling estimate of ``grad KL(p || q)``.

    The float handed to the engine is the wake-theta loss, ``-IWAE_K`` of the step's
    draws. The surrogate's value is no estimate of anything comparable across steps: it
    is a cross-entropy under weights of q's own draws, which grows as q widens toward the
    posterior (the entropy of q rises), so a fit that is still improving would read as a
    rising loss and the stopping rule would call it flat. ``-IWAE_K`` falls as q covers
    more of the posterior's mass.
    """

    def __init__(self, num_particles: int = MANY_PARTICLES, vectorize_particles: bool = True,
                 max_plate_nesting: int = 0) -> None:
        if num_particles < 2:
            raise ValueError(f"elbo='rws' needs num_particles >= 2, got {num_particles}")
        self.num_particles = int(num_particles)
        self.rws = ReweightedWakeSleep(num_particles=self.num_particles, insomnia=1.0,
                                       model_has_params=False,
                                       vectorize_particles=vectorize_particles,
                                       max_plate_nesting=max_plate_nesting)

    def loss(self, model: Callable[..., Any], guide: Callable[..., Any], *args: Any,
             **kwargs: Any) -> float:
        """``-IWAE_K`` of K fresh draws."""
        theta_loss, _ = self.rws.loss(model, guide, *args, **kwargs)
        return float(theta_loss)

    def loss_and_grads(self, model: Callable[..., Any], guide: Callable[..., Any],
                       *args: Any, **kwargs: Any) -> float:
        """``-IWAE_K`` of the step's draws; the wake-phi gradient is accumulated."""
        theta_loss, _ = self.rws.loss_and_grads(model, guide, *args, **kwargs)
        return float(theta_loss)


# -- the records -------------------------------------------------------------------------

ValueFn = Callable[..., float]


@dataclass(frozen=True)
class Objective:
    """One variational objective: how its loss is built and how a fit under it is judged.

    Attributes
    ----------
    name : str
        The ``elbo=`` name.
    make : callable
        ``make(num_particles, vectorize, max_plate_nesting, alpha)`` -> an object with
        ``loss`` and ``loss_and_grads(model, guide, *args, **kwargs)`` returning a float.
    bound : str
        ``"lower"`` or ``"upper"`` (a bound on ``log p(x)``) or ``"none"``.
    divergence : str
        The divergence between q and the posterior p that the objective targets.
    sense : int
        +1 when a larger value is better (lower bounds), -1 when smaller is (upper bounds,
        divergences).
    value : callable
        ``value(log_weights, num_particles, alpha, log_ratio=None)`` -> float: the
        objective from log weights of draws from q, or from a proposal r with
        ``log_ratio = log q - log r`` (only where ``proposal`` is True).
    min_particles : int
        Fewest particles per step the objective is defined with.
    default_particles : int
        Particles per step when the user leaves ``num_particles`` unset.
    judged_by_elbo : bool
        The fit loop compares guides by their ELBO (the ELBO families); else by
        :meth:`score`.
    proposal : bool
        Comparisons of two guides draw from both (:func:`mixture_log_weights`): the
        plain estimate from q's own draws is blind to mass q misses.
    fixed_particles : bool
        The particle count is part of the objective (IWAE_K): the schedule does not add
        particles late in the fit.
    uses_alpha : bool
        The objective has an order ``alpha`` (Rényi).
    compiled : bool
        A JIT-compiled loss: tensors are passed positionally, parameters are global.
    data_parallel : bool
        The loss is differentiable as one tensor (data-parallel training needs it).
    minibatches : bool
        The loss is unbiased on minibatches (scaled by N / B).
    start_spread : float
        The fit's starts (Laplace, initial point) are widened by this factor
        (:data:`COVERING_START_SPREAD` for the mass-covering objectives).
    max_step_size : float
        The largest candidate step size of the fit's trial (a user's ``lr`` is kept).
        CUBO: 0.03. Its gradient weighs each draw by ``w^2``, heavy tailed; Adam's
        momentum turns one outlier into a step of several sds at 0.1, after which q can
        shrink into the region where ``E_q[w^2]`` is infinite and its gradient estimates
        shrink q further, to a point (seen on a correlated 2-D Gaussian; stable at 0.03).
    region_power : float or None
        The fit must keep q where the objective can be estimated from q's own draws: the
        PSIS k-hat of ``region_power * log w`` (:meth:`region_khat`) at most
        ``region_max_khat``. None: no such region (the ELBO families, IWAE, Rényi, RWS,
        whose estimates are means of bounded functions of self-normalised or log weights).
        CUBO: 2, the tail shape of ``w^2``. At the end of every window the engine checks
        the window's averaged q and undoes a window that left the region
        (:class:`~pyrovi.infer.svi.SVIRun`). Without the check a CUBO fit runs away:
        once q is narrower than about ``1/sqrt(2)`` of the posterior's sd in some
        direction, ``E_q[w^2]`` is infinite, and its estimates from q's own draws (and
        their gradients) are biased toward narrower q, so q shrinks to a point (seen on
        ``normal_normal``: the window-averaged scales reached ``softplus(-20)`` and the
        K-draw CUBO estimate read 290 nats below ``log p(x)``).
    region_max_khat : float
        The largest k-hat of the region (CUBO: :data:`~pyrovi.diagnostics.bounds.
        CUBO_KHAT_MAX`, 0.5: beyond it the variance of ``w^2``, and so of the gradient
        ``grad mean_k w_k^2``, is infinite).
    trains_model : bool
        Whether the loss's gradient also fits the model's own parameters (a network or
        ``pyro.param`` in the model) the right way, towards a larger evidence. False for
        ``cubo`` (descending the CUBO in the model's parameters lowers ``log p(x)``) and
        ``rws`` (its wake-phi update leaves them alone): a model with parameters is refused.
    """

    name: str
    make: Callable[[int, bool, int, float], Any]
    bound: str
    divergence: str
    sense: int
    value: ValueFn
    min_particles: int = 1
    default_particles: int = 1
    judged_by_elbo: bool = False
    proposal: bool = False
    fixed_particles: bool = False
    uses_alpha: bool = False
    compiled: bool = False
    data_parallel: bool = False
    minibatches: bool = False
    start_spread: float = 1.0
    max_step_size: float = math.inf
    region_power: float | None = None
    region_max_khat: float = math.inf
    trains_model: bool = True

    def particles(self, num_particles: int | None) -> int:
        """The particles per step for a user's ``num_particles`` (None: the default).

        Raises
        ------
        ValueError
            If ``num_particles`` is below ``min_particles``.
        """
        if num_particles is None:
            return self.default_particles
        if num_particles < self.min_particles:
            raise ValueError(f"elbo={self.name!r} needs num_particles >= {self.min_particles} "
                             f"(it is defined by K > 1 draws), got {num_particles}")
        return int(num_particles)

    def score(self, log_weights: np.ndarray, num_particles: int, alpha: float,
              log_ratio: np.ndarray | None = None) -> float:
        """The objective's value with the sign that makes larger better."""
        return self.sense * self.value(np.asarray(log_weights, dtype=float), num_particles,
                                       alpha, log_ratio)

    def region_khat(self, log_weights: np.ndarray) -> float:
        """The PSIS k-hat of ``region_power * log w`` for draws from q (``-inf`` without a
        region; ``inf`` when the weights are non-finite or no tail can be fitted)."""
        if self.region_power is None:
            return -math.inf
        lw = np.asarray(log_weights, dtype=float)
        if not np.isfinite(lw).all():
            return math.inf
        try:
            return float(psis_khat(self.region_power * lw))
        except ValueError:
            return math.inf

    def in_region(self, log_weights: np.ndarray) -> tuple[bool, float]:
        """Is q (whose own draws have these log weights) where the objective is estimable?
        And the k-hat that says so (:meth:`region_khat`)."""
        khat = self.region_khat(log_weights)
        return bool(khat <= self.region_max_khat), khat

    def estimate(self, log_weights: np.ndarray, num_particles: int, alpha: float
                 ) -> tuple[float, float]:
        """The objective's value from q's own draws and its standard error (bootstrap)."""
        lw = np.asarray(log_weights, dtype=float)
        value = self.value(lw, num_particles, alpha)
        return value, _bootstrap_se(lambda idx: self.value(lw[idx], num_particles, alpha),
                                    len(lw), num_particles if self.fixed_particles else 1)


def _bootstrap_se(statistic: Callable[[np.ndarray], float], size: int, block: int) -> float:
    """Standard error of ``statistic(indices)`` over resamples of the draws (whole groups
    of ``block`` draws), with a fixed seed."""
    rng = np.random.default_rng(0)
    block = max(1, min(block, size))
    rows = size // block
    values = []
    for _ in range(BOOTSTRAP_DRAWS):
        picked = rng.integers(0, rows, rows)
        idx = (picked[:, None] * block + np.arange(block)).ravel()
        values.append(statistic(idx))
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.inf


def paired_gain(objective: Objective, before: np.ndarray, now: np.ndarray,
                num_particles: int, alpha: float,
                ratio_before: np.ndarray | None = None,
                ratio_now: np.ndarray | None = None) -> tuple[float, float]:
    """``score(now) - score(before)`` on paired draws, and its standard error (paired
    bootstrap: the same resampled draws for both).

    ``before`` and ``now`` are log weights of the same draws (common random numbers, or
    the same draws from a proposal with ``ratio_*`` = log q - log r of each guide).
    """
    before, now = np.asarray(before, dtype=float), np.asarray(now, dtype=float)

    def gain(idx: np.ndarray | slice) -> float:
        rb = None if ratio_before is None else ratio_before[idx]
        rn = None if ratio_now is None else ratio_now[idx]
        return objective.score(now[idx], num_particles, alpha, rn) \
            - objective.score(before[idx], num_particles, alpha, rb)

    block = num_particles if objective.fixed_particles else 1
    return gain(slice(None)), _bootstrap_se(gain, len(now), block)


def mixture_log_weights(model: Callable[..., Any], guide_a: Callable[..., Any],
                        guide_b: Callable[..., Any], data: Mapping[str, Any],
                        num_samples: int = 1000, seed: int = 0, max_plate_nesting: int = 0
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Log weights of two guides of the same structure on common draws from both.

    Half the draws come from each guide (``r = (q_a + q_b) / 2``); every draw is scored by
    the model and by both guides (replayed at the other's draws).

    Returns
    -------
    (log_p, log_qa, log_qb) : numpy.ndarray
        ``log p(x, z)``, ``log q_a(z)`` and ``log q_b(z)`` per draw; the log weights of a
        guide are ``log_p - log_q`` and its ratio to the proposal ``log_q - log r``
        (:func:`proposal_ratios`).
    """
    half = max(1, num_samples // 2)
    dim = -(int(max_plate_nesting) + 1)
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    with torch.no_grad(), poutine.block():
        pyro.set_rng_seed(seed)
        for source, other in ((guide_a, guide_b), (guide_b, guide_a)):
            src_tr = poutine.trace(in_particle_plate(source, half, dim)).get_trace(**data)
            other_tr = poutine.trace(poutine.replay(in_particle_plate(other, half, dim),
                                                    trace=src_tr)).get_trace(**data)
            model_tr = poutine.trace(poutine.replay(in_particle_plate(model, half, dim),
                                                    trace=src_tr)).get_trace(**data)
            log_p = _particle_log_prob(model_tr, half).double().numpy()
            log_src = _particle_log_prob(src_tr, half).double().numpy()
            log_other = _particle_log_prob(other_tr, half).double().numpy()
            parts.append((log_p, log_src, log_other) if source is guide_a
                         else (log_p, log_other, log_src))
    log_p, log_qa, log_qb = (np.concatenate([a, b]) for a, b in zip(*parts, strict=True))
    return log_p, log_qa, log_qb


def proposal_ratios(log_qa: np.ndarray, log_qb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``log q - log r`` of each guide for the even mixture ``r = (q_a + q_b) / 2``."""
    log_r = np.logaddexp(log_qa, log_qb) - math.log(2.0)
    return log_qa - log_r, log_qb - log_r


# -- the table ---------------------------------------------------------------------------

def _pyro_elbo(cls: Any, **extra: Any) -> Callable[[int, bool, int, float], Any]:
    def make(num_particles: int, vectorize: bool, max_plate_nesting: int, alpha: float) -> Any:
        return cls(num_particles=num_particles, vectorize_particles=vectorize,
                   max_plate_nesting=max_plate_nesting, **extra)
    return make


def _renyi(num_particles: int, vectorize: bool, max_plate_nesting: int, alpha: float) -> Any:
    return RenyiELBO(alpha=alpha, num_particles=num_particles, vectorize_particles=vectorize,
                     max_plate_nesting=max_plate_nesting)


def _iwae(num_particles: int, vectorize: bool, max_plate_nesting: int, alpha: float) -> Any:
    return RenyiELBO(alpha=0.0, num_particles=num_particles, vectorize_particles=vectorize,
                     max_plate_nesting=max_plate_nesting)


def _rws(num_particles: int, vectorize: bool, max_plate_nesting: int, alpha: float) -> Any:
    return WakePhi(num_particles, vectorize_particles=vectorize,
                   max_plate_nesting=max_plate_nesting)


def _cubo(num_particles: int, vectorize: bool, max_plate_nesting: int, alpha: float) -> Any:
    return CUBO(num_particles, n=2.0, vectorize_particles=vectorize,
                max_plate_nesting=max_plate_nesting)


_REVERSE_KL = "KL(q || p)"
_ELBO = {"bound": "lower", "divergence": _REVERSE_KL, "sense": 1, "value": elbo_value,
         "judged_by_elbo": True}
_JIT = {**_ELBO, "compiled": True}

OBJECTIVES: dict[str, Objective] = {
    "trace": Objective("trace", _pyro_elbo(Trace_ELBO), **_ELBO, data_parallel=True,
                       minibatches=True),
    "mean_field": Objective("mean_field", _pyro_elbo(TraceMeanField_ELBO), **_ELBO,
                            data_parallel=True, minibatches=True),
    "graph": Objective("graph", _pyro_elbo(TraceGraph_ELBO), **_ELBO, minibatches=True),
    "renyi": Objective("renyi", _renyi, bound="lower", divergence="D_alpha(q || p)",
                       sense=1, value=renyi_value, default_particles=MANY_PARTICLES,
                       fixed_particles=True, uses_alpha=True,
                       start_spread=COVERING_START_SPREAD),
    "iwae": Objective("iwae", _iwae, bound="lower", divergence="D_0(q || p) (IWAE_K)",
                      sense=1, value=iwae_value,
                      min_particles=2, default_particles=MANY_PARTICLES,
                      fixed_particles=True, start_spread=COVERING_START_SPREAD),
    "rws": Objective("rws", _rws, bound="none", divergence="KL(p || q)", sense=-1,
                     value=forward_kl_value, min_particles=2,
                     default_particles=MANY_PARTICLES, proposal=True,
                     start_spread=COVERING_START_SPREAD, trains_model=False),
    "cubo": Objective("cubo", _cubo, bound="upper", divergence="chi^2(p || q)", sense=-1,
                      value=cubo_value, min_particles=2, default_particles=MANY_PARTICLES,
                      proposal=True, start_spread=COVERING_START_SPREAD,
                      max_step_size=0.03, trains_model=False, region_power=2.0,
                      region_max_khat=CUBO_KHAT_MAX),
    "jit": Objective("jit", _pyro_elbo(JitTrace_ELBO, ignore_jit_warnings=True), **_JIT),
    "jit_mean_field": Objective("jit_mean_field",
                                _pyro_elbo(JitTraceMeanField_ELBO, ignore_jit_warnings=True),
                                **_JIT),
    "jit_graph": Objective("jit_graph", _pyro_elbo(JitTraceGraph_ELBO,
                                                   ignore_jit_warnings=True), **_JIT),
}
"""Every ``elbo=`` name of :func:`pyrovi.fit` and its record."""


def get_objective(name: str) -> Objective:
    """The record of ``elbo=name``.

    Raises
    ------
    ValueError
        If ``name`` is not in :data:`OBJECTIVES`.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"unknown elbo {name!r}; choose one of {', '.join(OBJECTIVES)}")
    return OBJECTIVES[name]
