"""The posterior mode (MAP) and the Laplace approximation there, as a start for a fit.

The search runs SciPy's L-BFGS-B on the model's potential (minus the log joint density
in the unconstrained space, log-Jacobians included: :class:`~pyrovi.infer.compiled.
LogDensity`, traced once where the model allows) as a function of one flat vector, in
float64 whatever the data's dtype. A point where the log density or its gradient is
non-finite (an overflowing recursion, a scale underflowing to zero) is handed to the line
search as ``+inf``: a rejected point, so it backtracks and shortens the step instead of
ending the search. If the first search, from the prior median (or a feasible point where
the prior cannot be sampled), ends where the Hessian is not positive definite (a saddle,
such as the label-symmetric point of a mixture) or not finite, it restarts from up to
``MAP_RESTARTS`` points drawn uniformly in (-2, 2) around it, as Stan initialises, and keeps
the best mode.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.optimize
import torch

from pyrovi.guides import GaussianStart, initial_start
from pyrovi.infer.compiled import LogDensity, batch_agrees, probe_noise

MAP_RESTARTS = 4
NEWTON_STEPS = 10
NEWTON_DECREMENT = 1e-8
"""L-BFGS stops on a small relative change of the potential, which on a badly scaled
posterior (a regression on raw units with a correlation of -0.9999, posteriordb's
earnings) can leave it many posterior sds along a ridge from the mode; Newton steps finish
the search (:func:`newton_polish`) until ``g^T H^-1 g``, twice the decrease a Newton step
predicts, is below this."""
LAPLACE_MAX_DIM = 200
"""Above this many unconstrained dimensions there is no Laplace start. Models that large
are mostly models with a latent value per data point (factor scores, abilities), whose
joint density has no mode (a residual sd shrinks while the latents fit the data exactly):
the search would run to its iteration cap five times over and end without a start."""


def newton_polish(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                  max_steps: int = NEWTON_STEPS) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Newton steps on the potential ``fn`` from ``x`` (the end of the L-BFGS search).

    Each step solves with the Hessian (which the Laplace approximation needs anyway) and
    backtracks until the potential falls by a quarter of the predicted decrease; the
    steps stop when the Newton decrement ``g^T H^-1 g`` is below ``NEWTON_DECREMENT``,
    where the Hessian is not positive definite, or when no step lowers the potential.

    Returns
    -------
    x : torch.Tensor
        The polished point.
    hessian : torch.Tensor
        The Hessian of ``fn`` at ``x``.
    num_evals : int
        Gradient evaluations spent (a Hessian counts ``len(x)``).
    """
    evals = 0
    for step_number in range(max_steps + 1):
        u = x.detach().requires_grad_(True)
        value = fn(u)
        (grad,) = torch.autograd.grad(value, u)
        hessian = torch.autograd.functional.hessian(fn, x.detach())
        evals += 1 + len(x)
        try:
            chol = torch.linalg.cholesky(0.5 * (hessian + hessian.T))
        except RuntimeError:  # not a local minimum's neighbourhood: no Newton step
            break
        step = -torch.cholesky_solve(grad.detach()[:, None], chol)[:, 0]
        decrement = float(-(grad.detach() @ step))
        if step_number == max_steps or not decrement >= NEWTON_DECREMENT:
            break
        size, current = 1.0, float(value.detach())
        while size > 1e-6:
            try:
                with torch.no_grad():
                    trial = float(fn(x + size * step))
            except (ValueError, RuntimeError):  # invalid distribution parameters
                trial = math.inf
            evals += 1
            if trial <= current - 0.25 * size * decrement:
                break
            size *= 0.5
        else:
            break
        x = (x + size * step).detach()
    return x.detach(), hessian, evals


def find_map(model: Callable[..., Any], data: dict[str, Any], seed: int = 0
             ) -> tuple[GaussianStart | None, int, str]:
    """The Laplace approximation at the posterior mode, in the unconstrained space.

    Returns
    -------
    start : GaussianStart or None
        Mean at the mode, covariance the inverse Hessian of the potential there; None
        when no search ended at a finite mode with a positive-definite Hessian, or when
        the model has more than ``LAPLACE_MAX_DIM`` unconstrained dimensions.
    num_evals : int
        Gradient evaluations spent.
    why : str
        Empty on success, else why there is no Laplace start.
    """
    init = initial_start(model, data)
    dim = len(init.loc)
    if dim > LAPLACE_MAX_DIM:
        return None, 0, f"{dim} dimensions: above LAPLACE_MAX_DIM"
    try:
        density = LogDensity(model, data, init.sites)
    except Exception as exc:  # noqa: BLE001 - e.g. discrete latent sites
        return None, 0, f"no potential function ({type(exc).__name__}: {exc})"
    evals = 0
    dtype = init.loc.dtype
    # the search evaluates the traced graph (one draw in a particle plate) where the model
    # broadcasts correctly; the Hessian differentiates twice, through the eager density
    traced = batch_agrees(density, init.loc + 0.1 * probe_noise((2, dim), dtype))

    def fn(u: torch.Tensor) -> torch.Tensor:
        return -density.eager(u)

    def search_fn(u: torch.Tensor) -> torch.Tensor:
        return -density(u[None])[0] if traced else fn(u)

    def value_and_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal evals
        evals += 1
        u = torch.as_tensor(x, dtype=dtype).requires_grad_(True)
        try:
            value = search_fn(u)
            (grad,) = torch.autograd.grad(value, u)
        except (ValueError, RuntimeError):  # invalid distribution parameters
            return np.inf, np.zeros_like(x)
        value_f = float(value.detach())
        grad_np = grad.detach().double().numpy()
        if not (np.isfinite(value_f) and np.isfinite(grad_np).all()):
            return np.inf, np.zeros_like(x)
        return value_f, grad_np

    rng = np.random.default_rng(seed)
    x0 = init.loc.double().numpy()
    best, why = None, "the potential is not finite at the initial point"
    for attempt in range(1 + MAP_RESTARTS):
        start_x = x0 if attempt == 0 else x0 + rng.uniform(-2, 2, size=dim)
        if not np.isfinite(value_and_grad(start_x)[0]):
            continue
        result = scipy.optimize.minimize(value_and_grad, start_x, jac=True, method="L-BFGS-B",
                                         options={"maxiter": 2000, "ftol": 1e-12,
                                                  "gtol": 1e-8})
        if not np.isfinite(result.fun):
            continue
        try:
            mode, hessian, polish_evals = newton_polish(fn, torch.as_tensor(result.x,
                                                                            dtype=dtype))
            evals += polish_evals
            with torch.no_grad():
                value = float(fn(mode))
            scale_tril = torch.linalg.cholesky(torch.linalg.inv(
                0.5 * (hessian + hessian.T).double())).to(dtype)
        except (RuntimeError, ValueError) as exc:
            why = f"the Hessian at the mode is not positive definite ({exc})"
            continue
        if not torch.isfinite(scale_tril).all():
            why = "the Hessian at the mode is not finite"
            continue
        if best is None or value < best[0]:
            best = (value, GaussianStart(mode, scale_tril, init.sites, "laplace"))
        if attempt == 0:
            break  # the usual case: the first search found a mode
    if best is None:
        return None, evals, why
    return best[1], evals, ""
