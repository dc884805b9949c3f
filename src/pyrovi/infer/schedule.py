"""When to shrink the step size, when to add particles, and when a fit has converged.

The fit runs in windows of ``WINDOW`` steps; the guide's coordinates are re-centred on
the current q at the start of every window, so the step size is in units of q's own sds.
At the end of each window the schedule looks at the window means of the loss:

1. **Plateau.** A least-squares line through the losses run at the current step size
   (the last ``TREND_WINDOWS`` windows at most) no longer falls significantly: the step
   size is halved. A trend over hundreds of steps sees a slow, steady climb of the ELBO
   that the noise of any one window hides (a GP's length scale drifting under a noisy
   Poisson likelihood). A plateau is only judged once ``MIN_WINDOWS_AT_LR`` windows have
   run at the current step size, on evidence gathered at that step size.
2. **More particles late.** From the ``PARTICLES_FROM_PLATEAU``-th plateau on, each
   halving also doubles the particles per step (up to ``MAX_PARTICLES``): a smaller step
   needs a less noisy gradient to keep making progress.
3. **Stop.** After ``PLATEAUS_TO_STOP`` plateaus, and only if the least-squares trend of
   the loss over the last ``TREND_WINDOWS`` windows does not still fall significantly
   (a fit whose smoothed ELBO still climbs never stops), the fit has converged.
   ``max_steps`` caps the run, with a :class:`ConvergenceWarning`.
4. **Confirm.** The loss of single steps is too noisy to see what a model with a
   thousand per-person latents still gains: the iterates' scatter, which shrinks with
   each halving of the step size, and a slow drift along a valley of coupled parameters
   (a discrimination and every ability) add up to nats (LSAT's 2PL with mean-field:
   3 nats) while every window's trend looks flat. So a stop is confirmed on a quieter
   statistic: the ELBO of the last window's averaged parameters against those
   ``PROGRESS_WINDOWS`` windows earlier, both on the same ``PROGRESS_PARTICLES`` draws
   (common random numbers make the difference precise). A gain above ``MIN_GAIN`` nats,
   beyond two paired standard errors, withdraws the plateau (:meth:`Schedule.reopen`):
   the fit goes on at the smaller step size until its next plateau.

The trial that picks the start and the step size (Stan ADVI's eta adaptation) runs
``WINDOW`` steps per (start, step size) candidate and keeps the pair with the best ELBO.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

WINDOW = 100
PLATEAUS_TO_STOP = 4
PARTICLES_FROM_PLATEAU = 2
MAX_PARTICLES = 8
TREND_WINDOWS = 5
MIN_WINDOWS_AT_LR = 3
DEFAULT_MAX_STEPS = 20_000
PROGRESS_WINDOWS = 10
MIN_GAIN = 0.1
"""A stop is withdrawn while the ELBO gained more than ``MIN_GAIN`` nats over the last
``PROGRESS_WINDOWS`` windows."""
PROGRESS_PARTICLES = 1000
"""Draws of each of the two paired ELBO estimates that confirm a stop."""


class ConvergenceWarning(UserWarning):
    """The fit hit its step cap before the smoothed ELBO stopped improving."""


def still_falling(losses: np.ndarray) -> bool:
    """Does a least-squares line through ``losses`` fall significantly (slope below zero by
    more than twice its standard error)?"""
    n = len(losses)
    if n < 3:
        return True
    t = np.arange(n, dtype=float) - (n - 1) / 2
    with np.errstate(over="ignore", invalid="ignore"):  # losses of 1e300 early in a fit
        centred = np.asarray(losses, dtype=float) - np.mean(losses)
        slope = float(t @ centred / (t @ t))
        resid = centred - slope * t
        se = math.sqrt(float(resid @ resid) / (n - 2) / float(t @ t))
    if not (math.isfinite(slope) and math.isfinite(se)):
        return True  # no trend can be read from overflowing losses: not a plateau
    return slope < -2.0 * se


@dataclass
class Schedule:
    """The step-size and stopping state of one fit (plain values: it is checkpointed).

    Attributes
    ----------
    lr : float
        The current step size.
    num_particles : int
        Particles per step now.
    max_particles : int
        The cap on ``num_particles``.
    plateaus : int
        Plateaus declared so far.
    windows_at_lr : int
        Complete windows run at the current step size.
    converged : bool
        The stopping rule has fired.
    plateau_steps : list of int
        The step at which each plateau was declared.
    """

    lr: float
    num_particles: int = 1
    max_particles: int = MAX_PARTICLES
    plateaus: int = 0
    windows_at_lr: int = 0
    converged: bool = False
    plateau_steps: list[int] = field(default_factory=list)

    def end_of_window(self, losses: list[float], adapt_particles: bool = True) -> bool:
        """Update after a complete window; returns True when the step size changed."""
        self.windows_at_lr += 1
        if self.windows_at_lr < MIN_WINDOWS_AT_LR:
            return False
        recent = np.asarray(losses[-min(self.windows_at_lr, TREND_WINDOWS) * WINDOW:])
        if still_falling(recent):
            return False
        self.plateaus += 1
        self.plateau_steps.append(len(losses))
        self.windows_at_lr = 0
        self.lr *= 0.5
        if adapt_particles and self.plateaus >= PARTICLES_FROM_PLATEAU:
            self.num_particles = min(2 * self.num_particles,
                                     max(self.max_particles, self.num_particles))
        if self.plateaus >= PLATEAUS_TO_STOP:
            recent = np.asarray(losses[-TREND_WINDOWS * WINDOW:])
            self.converged = not still_falling(recent)
        return True

    def reopen(self) -> None:
        """Withdraw a stop: the last halving still paid, so the fit goes on at the new
        step size until its next plateau (which is judged again)."""
        self.converged = False
        self.plateaus -= 1

    def state_dict(self) -> dict[str, object]:
        return asdict(self)
