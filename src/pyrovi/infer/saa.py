"""The ELBO of a Gaussian guide on fixed draws, maximised by L-BFGS to a stationary point.

For a Gaussian q over the flat unconstrained vector the ELBO is

    ELBO(q) = E_eps[ log p(x, T(mu + L eps)) + log |det J_T| ] + H(q),   eps ~ N(0, I).

Fixing ``M`` draws ``eps`` turns the expectation into an average: a deterministic, smooth
function of q's parameters that a quasi-Newton method maximises to a stationary point in
tens of iterations, where stochastic gradient steps need thousands to find out that they
have stopped making progress (the sample average approximation; for this objective
"deterministic ADVI", Giordano, Ingram & Broderick, JMLR 25, 2024).

The draws are **whitened**: centred and rotated so that their sample mean is exactly 0
and their sample covariance exactly the identity (when ``M`` exceeds the dimension;
otherwise each coordinate is centred and scaled). The fixed-draw ELBO of a Gaussian
posterior depends on the draws only through those two moments, so its optimum is then
q's exact optimum there; elsewhere the error comes from the higher moments of the draws
and shrinks like ``1/M``.

That error is measured, not assumed (:func:`average_gain`): a second solve on independent
draws starts from the first, and the ELBOs of the two solutions and of their average are
compared on common fresh draws. Near the optimum the ELBO is quadratic, and the average of
two solutions with independent errors gains half of one solution's shortfall, which is
also the shortfall left in the average; :class:`~pyrovi.infer.svi.SVIRun` accepts the
average when that gain is below ``SAA_TOLERANCE`` nats (two paired standard errors included),
and otherwise solves again on four times the draws, or runs its stochastic engine.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyro
import scipy.optimize
import torch
from pyro.infer import Trace_ELBO
from pyro.util import get_rng_state, set_rng_state

from pyrovi.guides.gaussian import AutoWhitenedNormal, GaussianStart, MeanFieldNormal
from pyrovi.infer.compiled import LogDensity, whitened_normal_draws

SAA_DRAWS = 64
"""Draws of the first solve (for a dense q at least twice the dimension plus two: M
> d draws keep its fixed-draw entropy bounded)."""
SAA_ROUNDS = 3
"""Solves at ``SAA_DRAWS`` times 1, 4, 16 draws before the stochastic engine takes over."""
SAA_MAX_ITER = 2000
"""L-BFGS iterations of one solve; a solve that needs more has not converged."""
SAA_TOLERANCE = 0.05
"""Nats the average of two solves may fall short of the optimum, by the measure of
:func:`average_gain` with two paired standard errors: half the stochastic engine's
``MIN_GAIN``, since the solves' error is measured directly rather than through the gain
of ten windows."""
SAA_MAX_NUMBERS = 20_000_000
"""Cap on draws times data size of one batched evaluation: more draws are evaluated in
chunks (memory, not arithmetic)."""


def whitened_draws(num: int, dim: int, seed: int, dtype: torch.dtype,
                   device: torch.device | None = None) -> torch.Tensor:
    """``num`` standard normal draws in ``dim`` dimensions with sample mean exactly 0 and
    sample covariance exactly I (or unit variance per coordinate when ``num <= dim + 1``).

    Parameters
    ----------
    num, dim : int
        Shape of the draws.
    seed : int
        Seed of their own generator (the global random stream is left alone).
    dtype, device
        Of the returned tensor.

    Returns
    -------
    torch.Tensor
        Shape ``(num, dim)``.
    """
    generator = torch.Generator().manual_seed(seed)
    eps = torch.randn((num, dim), generator=generator, dtype=torch.float64)
    eps = eps - eps.mean(0)
    if num > dim + 1:
        chol = torch.linalg.cholesky(eps.T @ eps / num)
        eps = torch.linalg.solve_triangular(chol, eps.T, upper=False).T
    else:
        eps = eps / eps.pow(2).mean(0).sqrt()
    return eps.to(dtype=dtype, device=device)


@dataclass
class Solve:
    """One L-BFGS solve of the fixed-draw ELBO.

    Attributes
    ----------
    values : list of float
        The fixed-draw ELBO at each iterate (the first is the start's).
    evaluations : int
        Evaluations of the objective and its gradient.
    converged : bool
        L-BFGS stopped at a stationary point (not at its iteration cap, nor in a failed
        line search).
    message : str
        L-BFGS's own account.
    """

    values: list[float]
    evaluations: int
    converged: bool
    message: str


class FixedDrawELBO:
    """The fixed-draw ELBO of a Gaussian guide as a function of a flat parameter vector.

    A mean-field guide is moved in whitened coordinates, ``mu = mu0 + P a`` and
    ``sd = sd0 exp(b)`` (``P`` the start's Cholesky factor where it has one, else its
    sds), so that the ELBO's curvature is near the identity for L-BFGS; the dense and
    low-rank guides are already learned in coordinates whitened by their start, and their
    own parameters are the vector.

    Parameters
    ----------
    guide : MeanFieldNormal or AutoWhitenedNormal
        A built guide, at its start; :meth:`solve` leaves the solution in it.
    density : LogDensity
        The model's log density laid out as the guide's flat vector.
    start : GaussianStart or None
        The start the guide was built at (its Cholesky factor preconditions a mean field).
    draws_at_once : int, optional
        Draws evaluated in one batch; more are evaluated in chunks of this many and
        their gradients summed (the same value: memory, not arithmetic). Default: all.
    """

    def __init__(self, guide: MeanFieldNormal | AutoWhitenedNormal, density: LogDensity,
                 start: GaussianStart | None, draws_at_once: int | None = None) -> None:
        self.guide = guide
        self.draws_at_once = draws_at_once
        self.density = density
        if isinstance(guide, AutoWhitenedNormal):
            shape = guide.cov_factor if guide.low_rank else guide.tril
            self.params = [guide.loc, guide.log_scale, shape]
            self.dim = guide.latent_dim + (shape.shape[1] if guide.low_rank else 0)
            self.dtype, self.device = guide.loc.dtype, guide.loc.device
        elif isinstance(guide, MeanFieldNormal):
            base = guide.as_start()
            self.loc0, self.sd0, self.sites = base.loc, base.std, base.sites
            dense = start is not None and start.scale_tril is not None \
                and start.loc.shape == base.loc.shape
            self.precond = start.dense_tril if dense else None
            self.dim = len(base.loc)
            self.dtype, self.device = base.loc.dtype, base.loc.device
        else:
            raise TypeError(f"{type(guide).__name__} is not a Gaussian guide of pyrovi.guides")

    def vector(self) -> np.ndarray:
        """The guide's current parameters as the flat vector :meth:`solve` moves."""
        if isinstance(self.guide, AutoWhitenedNormal):
            return torch.cat([p.detach().reshape(-1) for p in self.params]).double().cpu() \
                .numpy()
        base = self.guide.as_start()
        delta = base.loc - self.loc0
        a = torch.linalg.solve_triangular(self.precond, delta[:, None], upper=False)[:, 0] \
            if self.precond is not None else delta / self.sd0
        b = (base.std / self.sd0).log()
        return torch.cat([a, b]).double().cpu().numpy()

    def _pieces(self, x: torch.Tensor) -> list[torch.Tensor]:
        pieces, offset = [], 0
        for p in self.params:
            pieces.append(x[offset: offset + p.numel()].reshape(p.shape))
            offset += p.numel()
        return pieces

    def _mean_field(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = x[: self.dim], x[self.dim:]
        loc = self.loc0 + (self.precond @ a if self.precond is not None else self.sd0 * a)
        return loc, self.sd0 * b.exp()

    def value(self, x: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The fixed-draw ELBO at parameters ``x`` on the draws ``eps`` (differentiable in
        ``x``)."""
        if isinstance(self.guide, AutoWhitenedNormal):
            draws, entropy = whitened_normal_draws(self.guide, *self._pieces(x), len(eps),
                                                   eps=eps)
        else:
            loc, sd = self._mean_field(x)
            draws = loc + eps * sd
            entropy = sd.log().sum() + 0.5 * self.dim * (1.0 + math.log(2.0 * math.pi))
        return self.density(draws).mean() + entropy

    def load(self, x: np.ndarray) -> None:
        """Put the parameters ``x`` into the guide."""
        t = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            if isinstance(self.guide, AutoWhitenedNormal):
                for p, piece in zip(self.params, self._pieces(t), strict=True):
                    p.copy_(piece)
                return
            loc, sd = self._mean_field(t)
            self.guide.start_at(GaussianStart(loc, None, self.sites, "saa", std=sd))

    def solve(self, eps: torch.Tensor,
              on_iteration: Callable[[float], None] | None = None,
              stall: tuple[int, float] | None = None) -> Solve:
        """Maximise the ELBO on the draws ``eps`` (shape ``(M, dim)``) by L-BFGS from the
        guide's current parameters; the solution is left in the guide.
        ``on_iteration(value)`` is called with the fixed-draw ELBO after each iteration
        (a progress bar). ``stall = (n, nats)`` ends the solve early, not converged, once
        ``n`` iterations have gained less than ``nats`` (a check that only needs to know
        how much is left to gain, not the stationary point itself)."""

        def negative(t: torch.Tensor) -> torch.Tensor:
            value = torch.zeros((), dtype=t.dtype, device=t.device)
            for chunk in eps.split(self.draws_at_once or len(eps)):
                # each chunk's share of the mean, its gradient taken before the next
                loss = -self.value(t, chunk) * (len(chunk) / len(eps))
                (part,) = torch.autograd.grad(loss, t)
                t.grad = part if t.grad is None else t.grad + part
                value = value + loss.detach()
            return value

        return maximise(negative, self.vector(), self.load, self.dtype, self.device,
                        on_iteration, stall)


class FixedSeedELBO:
    """The ELBO of any reparametrised guide on fixed draws: Pyro's ``Trace_ELBO`` with
    the random stream seeded alike at every evaluation, a function of the parameters.

    It serves where :class:`FixedDrawELBO` cannot: flows and other guides that are not
    Gaussian, models off the compiled density (value-dependent control flow). Every draw
    of a reparametrised guide is a smooth function of its parameters and of noise whose
    shape does not depend on them, so a fixed seed fixes the noise, as ``eps`` does there.

    Parameters
    ----------
    model, guide : callable
        The pair, called as ``fn(*args, **kwargs)``.
    args, kwargs
        The data.
    params : list of torch.Tensor
        The leaf tensors the ELBO depends on (the guide's module parameters); :meth:`solve`
        moves them and leaves the solution in them.
    num_particles : int
        Draws per evaluation.
    vectorize : bool
        Draw them in a particle plate (the model broadcasts there).
    nesting : int
        The pair's plate nesting.
    seed : int
        The seed of every evaluation.
    """

    def __init__(self, model: Callable[..., Any], guide: Callable[..., Any],
                 args: tuple[Any, ...], kwargs: dict[str, Any], params: list[torch.Tensor],
                 num_particles: int, vectorize: bool, nesting: int, seed: int) -> None:
        self.model, self.guide, self.args, self.kwargs = model, guide, args, kwargs
        self.params = params
        self.seed = seed
        self.elbo = Trace_ELBO(num_particles=num_particles, max_plate_nesting=nesting,
                               vectorize_particles=vectorize and num_particles > 1)
        self.dtype, self.device = params[0].dtype, params[0].device

    def vector(self) -> np.ndarray:
        """The parameters as the flat vector :meth:`solve` moves."""
        return torch.cat([p.detach().reshape(-1) for p in self.params]).double().cpu() \
            .numpy()

    def load(self, x: np.ndarray | torch.Tensor) -> None:
        """Put the flat parameters ``x`` into the leaf tensors."""
        t = torch.as_tensor(x, dtype=self.dtype, device=self.device)
        offset = 0
        with torch.no_grad():
            for p in self.params:
                p.copy_(t[offset: offset + p.numel()].reshape(p.shape))
                offset += p.numel()

    def solve(self, on_iteration: Callable[[float], None] | None = None,
              stall: tuple[int, float] | None = None) -> Solve:
        """Maximise the fixed-seed ELBO by L-BFGS from the current parameters (as
        :meth:`FixedDrawELBO.solve`); the solution is left in the parameters."""

        def negative(t: torch.Tensor) -> torch.Tensor:
            self.load(t.detach())
            rng = get_rng_state()
            pyro.set_rng_seed(self.seed)
            try:
                loss = self.elbo.differentiable_loss(self.model, self.guide, *self.args,
                                                     **self.kwargs)
                grads = torch.autograd.grad(loss, self.params, allow_unused=True)
            finally:
                set_rng_state(rng)
            t.grad = torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                                for p, g in zip(self.params, grads, strict=True)])
            return loss.detach()

        return maximise(negative, self.vector(), self.load, self.dtype, self.device,
                        on_iteration, stall)


def maximise(negative: Callable[[torch.Tensor], torch.Tensor], x0: np.ndarray,
             load: Callable[[np.ndarray], None], dtype: torch.dtype,
             device: torch.device | None,
             on_iteration: Callable[[float], None] | None = None,
             stall: tuple[int, float] | None = None) -> Solve:
    """L-BFGS on a fixed-draw objective from ``x0``; the solution (``x0`` if no finite
    value was found) is put in place by ``load``.

    ``negative(t)`` returns the negative objective at the parameters ``t`` (a leaf
    tensor) and leaves its gradient in ``t.grad``; a ``ValueError`` or ``RuntimeError``
    (invalid distribution parameters) counts as an infinite value. ``on_iteration`` and
    ``stall`` are those of :meth:`FixedDrawELBO.solve`."""
    values: list[float] = []
    evaluations = 0

    def negative_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evaluations
        evaluations += 1
        t = torch.as_tensor(x, dtype=dtype, device=device).requires_grad_(True)
        try:
            with torch.enable_grad():
                value = float(negative(t))
        except (ValueError, RuntimeError):
            return math.inf, np.zeros_like(x)
        grad = t.grad.detach().double().cpu().numpy() if t.grad is not None \
            else np.zeros_like(x)
        if not (math.isfinite(value) and np.isfinite(grad).all()):
            return math.inf, np.zeros_like(x)
        return value, grad

    def record(intermediate_result: scipy.optimize.OptimizeResult) -> None:
        values.append(-float(intermediate_result.fun))
        if on_iteration is not None:
            on_iteration(values[-1])
        if stall is not None and len(values) > stall[0] \
                and values[-1] - values[-1 - stall[0]] < stall[1]:
            raise StopIteration

    values.append(-negative_and_grad(x0)[0])
    result = scipy.optimize.minimize(
        negative_and_grad, x0, jac=True, method="L-BFGS-B", callback=record,
        options={"maxiter": SAA_MAX_ITER, "ftol": 1e-13, "gtol": 1e-9})
    finite = bool(np.isfinite(result.fun))
    load(result.x if finite else x0)
    return Solve(values=values, evaluations=evaluations,
                 converged=bool(result.success) and finite, message=str(result.message))


def average_gain(log_w_mean: np.ndarray, log_w_a: np.ndarray, log_w_b: np.ndarray
                 ) -> tuple[float, float]:
    """What the average of two solutions gains over them, on common draws: the mean of
    ``log w(average) - (log w(a) + log w(b)) / 2`` and its standard error.

    Near the optimum, with the two solutions' errors independent, this is half the
    shortfall of one solution, and the shortfall of the average itself.
    """
    diff = log_w_mean - 0.5 * (log_w_a + log_w_b)
    return float(np.mean(diff)), float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
