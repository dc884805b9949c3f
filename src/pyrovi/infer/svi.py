"""The SVI fit loop: :func:`fit`, and :class:`SVIRun` for users who drive it step by step.

The loop is built to reach the optimum of the ELBO without hand tuning, on posteriors
that are badly scaled, strongly correlated, skewed or hierarchical:

1. **Starts.** A guide family that can be started from a Gaussian (its record's
   ``start``) is tried from two: the Laplace approximation at the posterior mode
   (:mod:`pyrovi.infer.laplace`) and the model's own initial point with a small spread
   (where Pyro's autoguides start). A Laplace start is decisive on badly scaled
   regressions and misleading on funnels; trying both costs little.
2. **Step-size trial.** From each start, ``WINDOW`` steps at each of the family's
   candidate step sizes (Stan ADVI's eta adaptation); each start's best step size then
   runs under the schedule until its third plateau, and the start with the best ELBO
   (estimated with the same draws for all) goes on. A mode can sit in a worse basin than the one
   SVI finds from the prior (hierarchical and GP posteriors): the longer second stage
   tells them apart, where a short one favours whichever start is already close.
3. **Preconditioned steps.** Guides that can (:mod:`pyrovi.guides.gaussian`) re-centre
   their coordinates on the current q at the start of every window, so a step size of
   0.1 moves about a tenth of a posterior sd in any direction, whatever the units or
   correlations of the posterior.
4. **Schedule.** :mod:`pyrovi.infer.schedule`: the step size halves at each plateau,
   particles grow late, and the fit stops only when the trend of the loss is flat. Each
   stop is checked by a deterministic solve from where it stopped
   (:meth:`SVIRun._check_stop_by_solve`): a stop that a solve can still improve by more
   than ``STOP_CHECK_TOLERANCE`` nats on fresh draws is withdrawn. A Gaussian guide on
   the compiled density solves on fixed whitened draws; any other reparametrised guide
   of a module (a flow, a model off the compiled path) on Pyro's ``Trace_ELBO`` with a
   fixed seed. Mass-covering objectives, minibatches and guides of ``pyro.param`` sites
   stop by the schedule alone.
5. **Averaging.** The returned parameters are the average of the last window's iterates.
6. **Never worse than a start.** The final ELBO is compared with every start's (same
   draws); a start that beats the fit, or ties it with less variable log weights (the
   exact Laplace start of a Gaussian posterior), is returned instead.

The Gaussian families step on the model's log density traced once
(:mod:`pyrovi.infer.compiled`; ``compiled=False`` or a model that cannot take that path
uses Pyro's ELBOs): the same ELBO, with q's entropy in closed form, and the log weights of
the trial, the progress checks and the final estimate on the same density. There
``mean_field`` and ``full_rank`` take no stochastic steps by default: each start is solved
by L-BFGS on fixed whitened draws and the result certified by a second solve
(:mod:`pyrovi.infer.saa`, ``optimizer=``); steps 2-5 run only where that cannot serve or
certify.

For a mass-covering objective (``elbo="renyi"``, ``"iwae"``, ``"rws"``, ``"cubo"``: records
in :mod:`pyrovi.infer.objectives`) the trial (2), the confirmation of a stop (4) and the
comparison with the start (6) judge the objective's own value from the same log weights,
not the ELBO, which such a fit does not maximise; and a stop is withdrawn while the loss
still rises significantly (an estimate from q's own draws, biased low for a narrow q, can
rise while q improves).

An objective that can be estimated from q's own draws only in a region of guides (the
record's ``region_power``: CUBO, where ``E_q[w^2]`` must be finite) is kept there: at the
end of each window the PSIS k-hat of the window's averaged q is checked, and a window that
left the region is undone (the parameters go back to the last averaged state inside it,
the step size halves, Adam's moments are reset). After ``MAX_REGION_RETREATS`` such
retreats the fit ends, not converged, with a :class:`ConvergenceWarning` that says why.
A mass-covering fit that returns its (over-dispersed) start is not converged either.

A non-finite loss or gradient is a rejected step: the parameters go back one step and the
step size halves. Only ``MAX_REJECTIONS`` rejections in a row end the fit, with a
:class:`NonFiniteLossError` naming the site. Small models compute in float64 whatever the
data's dtype, so float32 data cannot overflow a recursion that float64 handles.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import inspect
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import pyro.poutine as poutine
import torch
from pyro.infer import Trace_ELBO
from pyro.poutine.util import site_is_subsample
from pyro.util import get_rng_state, set_rng_state
from tqdm.auto import tqdm

from pyrovi.guides import GaussianStart, GuideFamily, get_family, initial_start
from pyrovi.guides.gaussian import AutoWhitenedNormal, MeanFieldNormal, site_slices
from pyrovi.infer import distributed
from pyrovi.infer.batches import BATCH_SIZE_KEY, EpochBatches
from pyrovi.infer.compiled import (
    LogDensity,
    batched_density,
    compiled_path,
    gaussian_draws,
    log_weights,
    probe_draws,
)
from pyrovi.infer.laplace import find_map
from pyrovi.infer.objectives import (
    OBJECTIVES,
    Objective,
    get_objective,
    mixture_log_weights,
    paired_gain,
    proposal_ratios,
)
from pyrovi.infer.optim import ScaledAdam, finite_grads
from pyrovi.infer.result import (
    ELBO_ESTIMATE_PARTICLES,
    SVIFit,
    atomic_torch_save,
    elbo_from_log_weights,
    estimate_elbo,
    guide_state,
    owner_module,
    rebind,
)
from pyrovi.infer.saa import (
    SAA_DRAWS,
    SAA_MAX_NUMBERS,
    SAA_ROUNDS,
    SAA_TOLERANCE,
    FixedDrawELBO,
    FixedSeedELBO,
    Solve,
    average_gain,
    whitened_draws,
)
from pyrovi.infer.schedule import (
    DEFAULT_MAX_STEPS,
    MIN_GAIN,
    PROGRESS_PARTICLES,
    PROGRESS_WINDOWS,
    TREND_WINDOWS,
    WINDOW,
    ConvergenceWarning,
    Schedule,
    still_falling,
)
from pyrovi.infer.util import (
    SMALL_DATA,
    as_tensor_data,
    batch_safe,
    data_size,
    default_dtype,
    guide_log_weights,
    model_trace,
    plate_nesting,
    subsample_plates,
)

ELBO_FAMILIES: dict[str, Objective] = OBJECTIVES
"""Every ``elbo=`` name and its record (:mod:`pyrovi.infer.objectives`): the ELBO families
(``trace``, ``mean_field``, ``graph``, the JIT variants) and the mass-covering objectives
(``renyi``, ``iwae``, ``rws``, ``cubo``)."""
STEP_SIZES = (0.3, 0.1, 0.03)
"""Candidate step sizes of the trial, in units of q's sds for preconditioned guides."""
RAW_STEP_SIZES = (0.03, 0.01, 0.003)
"""Candidate step sizes for guides without preconditioning (flows, hand-written guides)."""
TRIAL_PARTICLES = 200
STAGE_TWO_PLATEAUS = 3
STAGE_TWO_MAX_WINDOWS = 15
"""Each start's best step size runs until its ``STAGE_TWO_PLATEAUS``-th plateau (at most
``STAGE_TWO_MAX_WINDOWS`` windows) before the starts are compared. posteriordb's
gp_pois_regr (mean field) shows why three: at two, the prior start's fit had not yet
left the Laplace basin's level in 1 of 3 seeds, and the fit ended there, 2.5 nats below
the others; at three, none of the 3 did."""
MAX_REJECTIONS = 20
OPTIMIZERS = ("auto", "saa", "adam")
"""``optimizer=`` of :func:`fit`: ``saa`` maximises the ELBO on fixed draws by L-BFGS
(:mod:`pyrovi.infer.saa`), ``adam`` takes stochastic steps under the schedule of
:mod:`pyrovi.infer.schedule`, ``auto`` the first where it serves."""
CHECKPOINT_VERSION = 1
DATA_PARALLEL_ELBOS = tuple(name for name, o in OBJECTIVES.items() if o.data_parallel)
"""The ELBOs with a differentiable loss, which data-parallel training needs."""
VALIDATION_DRAWS = 1000
"""Draws (particles times held-out points) of each epoch's held-out ELBO."""
EARLY_STOP_MIN_STEPS = 10 * WINDOW
"""Steps without held-out improvement before a fit stops early, however many epochs."""
RANK_SEED_STRIDE = 1_000_003
"""Data-parallel processes draw their Monte Carlo noise from ``seed + rank * stride``."""
REGION_DRAWS = 1000
"""Draws of q whose k-hat decides whether a window stayed in the objective's region."""
SPREAD_CANDIDATES = 5
"""Spreads tried for the start of an objective with a region (CUBO): geometric from 1 to
its ``start_spread``."""
STOP_CHECK_DRAWS = 4 * SAA_DRAWS
"""Fixed draws of the solve that checks a stop of the stochastic engine
(:meth:`SVIRun._check_stop_by_solve`)."""
STOP_CHECK_STALL = (50, 1e-3)
"""A stop-check solve ends once 50 L-BFGS iterations gained less than 1e-3 nats: a
low-rank factor's rotation leaves a flat valley in which L-BFGS would otherwise run to
its cap (diamonds: 2,000 iterations on 5,000 rows, 290 s, for gains of 1e-4 nats)."""
STOP_CHECK_SEEDED_STALL = (20, 1e-2)
"""The stall rule of a stop-check solve on Pyro's ELBO: looser, since its draws are fewer
per parameter and its solutions go on fitting them (a flow on posteriordb's earn_height
under ``STOP_CHECK_STALL``: 270 iterations, 51 s, and a solution 2.2 nats worse on fresh
draws; under this rule 25 iterations, 17 s for the whole fit, the same stop confirmed)."""
STOP_CHECK_DRAWS_PER_PARAMETER = 6
"""A stop-check solve on Pyro's ELBO (:class:`~pyrovi.infer.saa.FixedSeedELBO`) takes at
least this many draws per parameter of the guide: fewer, and the solution fits the draws
rather than the posterior (a two-layer flow of 148 parameters on the regression of
``tests/infer/test_saa.py``: on 256 draws the solution was 24 nats worse on fresh ones; on
1,024 it found the 0.39 nats that a premature stop had left)."""
STOP_CHECK_MAX_DRAWS = 4096
"""A guide with more parameters than this many draws can serve (683 at 6 per parameter:
an amortised guide's network) is not checked by a solve."""
STOP_CHECK_SEQUENTIAL_DRAWS = 64
"""Draws of a stop-check solve on Pyro's ELBO where the model cannot take them in a
particle plate (each evaluation then runs model and guide once per draw); a guide that
needs more (``STOP_CHECK_DRAWS_PER_PARAMETER``) is not checked (a flow of 212 parameters
on :mod:`pyrovi.models.linear_regression`: 89 iterations of 64 draws took 78 s, and the
solution, fitted to too few draws, was 187 nats worse on fresh ones)."""
STOP_CHECK_SEEDS = 100
"""Draw-set numbers of the stop checks start here, apart from the fixed-draw fit's own."""
STOP_CHECK_TOLERANCE = SAA_TOLERANCE
"""Nats a solve from a stop may gain (two paired standard errors beyond) and the stop
stand: the fixed-draw fit's own tolerance, since the solve measures the shortfall
directly."""
MAX_STOP_CHECKS = 3
"""Stops withdrawn by a fixed-draw solve before the fit gives up at the last solution."""
MAX_REGION_RETREATS = 6
"""Windows undone for leaving the objective's region (each halving the step size) before
the fit gives up: 6 halvings take CUBO's 0.03 to 0.0005 sds per step."""


@dataclasses.dataclass
class _Solved:
    """A start's first fixed-draw solve: its score on fresh draws, the solution, the start,
    the guide's state and ELBO at the start, the solve itself and its dimension."""

    score: float
    state: dict[str, torch.Tensor]
    start: GaussianStart | None
    initial: dict[str, torch.Tensor]
    initial_elbo: float
    solve: Solve
    dim: int


def _start_label(start: GaussianStart | None) -> str:
    """A start's name in the fit's history (``"none"`` for a guide built without one)."""
    return start.source if start is not None else "none"


class NonFiniteLossError(FloatingPointError):
    """The ELBO or its gradient stayed non-finite however small the step."""


def _make_elbo(name: str, num_particles: int, vectorize: bool, max_plate_nesting: int,
               alpha: float) -> Any:
    """The loss object of ``elbo=name`` (its record's ``make``)."""
    return get_objective(name).make(num_particles, vectorize, max_plate_nesting, alpha)


def _positional(fn: Callable[..., Any], keys: list[str], static: dict[str, Any]
                ) -> Callable[..., Any]:
    """Adapt ``fn(**data)`` to ``fn(*tensors)`` for the JIT ELBOs (tensors must be args)."""
    def call(*tensors: torch.Tensor) -> Any:
        return fn(**dict(zip(keys, tensors, strict=True)), **static)
    return call


def _with_batch_size(model: Callable[..., Any], data: dict[str, Any],
                     batch_size: int | None) -> dict[str, Any]:
    """``data`` with ``batch_size`` added under :data:`BATCH_SIZE_KEY` when the model takes
    that keyword and the data do not set it (``fit(model, data, batch_size=256)``)."""
    if batch_size is None or BATCH_SIZE_KEY in data:
        return data
    try:
        takes = BATCH_SIZE_KEY in inspect.signature(model).parameters
    except (TypeError, ValueError):
        takes = False
    return {**data, BATCH_SIZE_KEY: batch_size} if takes else data


def _param_tensors(guide: Callable[..., Any], model: Callable[..., Any],
                   data: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Unconstrained leaf tensors of every parameter the loss touches, by name: those of the
    module owning the guide (:func:`~pyrovi.infer.result.owner_module`) and of a model
    that is a module of its own, else those the param store hands out."""
    owner = owner_module(guide)
    if owner is not None:
        with poutine.block(), torch.no_grad():
            guide(**data)
        found = dict(owner.named_parameters())
        model_owner = owner_module(model)
        if model_owner is not None and model_owner is not owner:
            found.update({f"model.{k}": v for k, v in model_owner.named_parameters()})
        return found
    with poutine.trace(param_only=True) as capture, pyro.validation_enabled(False):
        Trace_ELBO().loss(model, guide, **data)  # a NaN loss still finds the parameters
    found = {}
    for name, site in capture.trace.nodes.items():
        value = site["value"]
        leaf = value.unconstrained() if hasattr(value, "unconstrained") else value
        if leaf.requires_grad and leaf.is_leaf:
            found[name] = leaf
    return found


def _guide_params(guide: Callable[..., Any], data: dict[str, Any]) -> list[str]:
    """Names of the parameters the guide alone touches (module or param store)."""
    owner = owner_module(guide)
    if owner is not None:
        return [name for name, _ in owner.named_parameters()]
    with poutine.block(), poutine.trace(param_only=True) as capture, torch.no_grad():
        guide(**data)
    return list(capture.trace.nodes)


def _validation_particles(data: dict[str, Any] | None) -> int:
    """Particles of each held-out ELBO: ``VALIDATION_DRAWS`` draws over the held-out points
    (the longest leading dimension of the data), 1 to 100 per point. The same draws every
    epoch (common random numbers), so epochs are compared more precisely than each
    estimate is made."""
    if data is None:
        return 1
    sizes = [np.shape(v)[0] for v in data.values() if np.ndim(v) > 0]
    return int(np.clip(VALIDATION_DRAWS // max(sizes, default=1), 1, 100))


def _widened(start: GaussianStart, spread: float) -> GaussianStart:
    """``start`` with its sds (or Cholesky factor) times ``spread``."""
    return dataclasses.replace(
        start, scale_tril=None if start.scale_tril is None else spread * start.scale_tril,
        std=None if start.std is None else spread * start.std)


def _load_state(guide: Any, state: dict[str, torch.Tensor]) -> None:
    """Put ``state`` (from :func:`guide_state`) into ``guide``'s module or the param store."""
    owner = owner_module(guide)
    if owner is not None:
        owner.load_state_dict(state)
        return
    store = pyro.get_param_store()
    for name, value in state.items():
        store[name] = value


def _nonfinite_site(model: Callable[..., Any], guide: Callable[..., Any],
                    data: dict[str, Any], params: list[torch.Tensor]) -> str:
    """Describe where the loss went non-finite: the sample site whose log-density (or its
    gradient) is non-finite on a fresh draw, or the parameters."""
    for _ in range(20):
        with poutine.block():
            try:
                guide_trace = poutine.trace(guide).get_trace(**data)
                model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                    **data)
            except Exception as exc:  # noqa: BLE001 - reported to the user as the cause
                return f"the model or guide raised {type(exc).__name__}: {exc}"
        for where, trace in (("guide", guide_trace), ("model", model_trace)):
            for name, site in trace.nodes.items():
                if site["type"] != "sample" or site_is_subsample(site):
                    continue
                if not torch.isfinite(site["value"]).all():
                    return f"value of {where} site '{name}' is non-finite"
                log_density = site["fn"].log_prob(site["value"]).sum()
                if not torch.isfinite(log_density):
                    return f"log-density of {where} site '{name}' is non-finite"
                if log_density.requires_grad:
                    grads = torch.autograd.grad(log_density, params, allow_unused=True,
                                                retain_graph=True)
                    if any(g is not None and not torch.isfinite(g).all() for g in grads):
                        return f"gradient of the log-density of {where} site '{name}' is " \
                               "non-finite"
    return "no single site is non-finite on resampling (an unlucky draw)"


class SVIRun:
    """A fit driven one step at a time (the shape of NumPyro's ``SVI.init`` / ``update``).

    Creating the run converts the data, chooses the start and the step size (the trial of
    :func:`fit`); :meth:`step` takes one SVI step under the schedule; :attr:`converged`
    says when the stopping rule has fired; :meth:`result` returns an :class:`SVIFit` at
    any time without disturbing the run; :meth:`save` / ``SVIRun(..., resume=path)``
    write and read the whole state (guide, optimiser, schedule, RNG, batches).

    Parameters
    ----------
    model, data, guide, elbo, lr, num_particles, seed, init, alpha, batch_size, device,
    dtype
        As for :func:`fit`.
    resume : str or path, optional
        A checkpoint written by :meth:`save` for the same arguments: the run continues
        from it exactly (no trial is rerun).
    compiled : bool
        As for :func:`fit`.
    second_stage : bool
        Run each start to its third plateau before choosing between the starts (the
        default); False chooses after the one-window first stage.
    optimizer : str
        As for :func:`fit`.
    progress : bool
        Show a tqdm bar of the fixed-draw solves (the stochastic steps' bar is
        :func:`fit`'s).

    Examples
    --------
    >>> run = SVIRun(model, data, guide="full_rank")          # doctest: +SKIP
    >>> while not run.converged and run.num_steps < 5000:     # doctest: +SKIP
    ...     loss = run.step()
    >>> fit = run.result()                                    # doctest: +SKIP
    """

    def __init__(
        self,
        model: Callable[..., Any],
        data: dict[str, Any],
        guide: str | Callable[..., Any] = "mean_field",
        elbo: str = "trace",
        lr: float | None = None,
        num_particles: int | None = None,
        seed: int = 0,
        *,
        init: str | GaussianStart = "auto",
        alpha: float = 0.5,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        resume: str | Path | None = None,
        second_stage: bool = True,
        compiled: bool = True,
        optimizer: str = "auto",
        progress: bool = False,
    ) -> None:
        self.objective = get_objective(elbo)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
        if not isinstance(init, GaussianStart) and init not in ("auto", "laplace", "prior"):
            raise ValueError("init must be 'auto', 'laplace', 'prior' or a GaussianStart, "
                             f"got {init!r}")
        if num_particles is not None and num_particles < 1:
            raise ValueError(f"num_particles must be at least 1, got {num_particles}")
        if self.objective.uses_alpha and not 0.0 <= alpha < 1.0:
            raise ValueError(f"elbo={elbo!r} needs 0 <= alpha < 1 (a lower bound on log p(x); "
                             f"alpha < 0 gives an upper bound, alpha = 1 the ELBO), got {alpha}")
        num_particles = self.objective.particles(num_particles)
        self.base_particles = num_particles
        data = _with_batch_size(model, data, batch_size)
        self.model = model
        self.family: GuideFamily | None = get_family(guide) if isinstance(guide, str) else None
        self.guide_name = guide if isinstance(guide, str) else "custom"
        self.elbo_name = elbo
        self.alpha = alpha
        self.seed = seed
        self.device = torch.device(device) if device is not None else None
        if self.device is not None and self.device.type == "cuda" \
                and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but torch sees no CUDA device")
        self.device = distributed.local_device(self.device)
        self.rank, self.world_size = distributed.join(self.device)
        if self.world_size > 1 and elbo not in DATA_PARALLEL_ELBOS:
            raise ValueError(f"data-parallel training needs elbo in {DATA_PARALLEL_ELBOS}, "
                             f"got {elbo!r}")
        small = data_size(data) <= SMALL_DATA
        on_cpu = self.device is None or self.device.type == "cpu"
        owner = (None if isinstance(guide, str) else owner_module(guide)) \
            or owner_module(model)
        own_dtype = next((p.dtype for p in owner.parameters() if p.is_floating_point()),
                         None) if owner is not None else None
        self.dtype = dtype or own_dtype or (
            torch.float64 if small and on_cpu else torch.float32)
        if owner is not None:  # a user's network computes in its own dtype, on the device
            owner.to(dtype=self.dtype, device=self.device)
        self.local_params = not self.objective.compiled
        self.signature = self._signature(data, guide, elbo, lr, num_particles, seed, init,
                                         batch_size)
        self.num_grad_evals = 0
        self.losses: list[float] = []
        self.history: dict[str, Any] = {"lr": [], "num_particles": [], "trial": []}
        self.step_in_window = 0
        self.rejections = 0
        self.region_retreats = 0
        self.failure: str | None = None
        self.start_spreads: dict[str, float] = {}
        self.other_starts: list[tuple[str, dict[str, torch.Tensor]]] = []
        self.second_stage = second_stage
        self.compiled = compiled
        self.optimizer_name = optimizer
        self.progress = progress
        self.fixed_draws = False  # the fit is a fixed-draw solve (pyrovi.infer.saa)
        self.in_trial = False  # the trial of starts and step sizes runs: no stop checks
        self.density: LogDensity | None = None
        self._densities: dict[str, LogDensity] = {}
        with self._context():
            self.data = as_tensor_data(data, self.dtype, self.device)
            self.batches = self._batches(batch_size)
            if self.batches is not None and self.objective.compiled:
                raise ValueError(f"elbo={elbo!r} compiles the first minibatch's indices into "
                                 "the loss and would train on that batch forever; use "
                                 "elbo='trace' or 'mean_field' with minibatches")
            if self.batches is not None and not self.objective.minibatches:
                raise ValueError(f"elbo={elbo!r} is not unbiased on minibatches; fit it on "
                                 "the whole data, or use elbo='trace' or 'mean_field'")
            pyro.clear_param_store()
            pyro.set_rng_seed(seed)
            if resume is not None:
                self._resume(Path(resume), guide)
            else:
                self._start(guide, init, lr, num_particles)
            if self.world_size > 1:  # each process its own Monte Carlo noise from here on
                pyro.set_rng_seed(self.seed + RANK_SEED_STRIDE * self.rank + self.num_steps)

    # -- set-up ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _context(self) -> Iterator[None]:
        with contextlib.ExitStack() as stack:
            stack.enter_context(default_dtype(self.dtype))
            stack.enter_context(pyro.settings.context(module_local_params=self.local_params))
            if self.device is not None:
                stack.enter_context(self.device)
            yield

    def _signature(self, data: dict[str, Any], *args: Any) -> str:
        digest = hashlib.sha256(repr(args).encode())
        for key in sorted(data):
            value = data[key]
            digest.update(key.encode())
            digest.update(np.asarray(value.cpu() if isinstance(value, torch.Tensor)
                                     else value).tobytes())
        digest.update(str(self.dtype).encode())
        return digest.hexdigest()

    def _batches(self, batch_size: int | None) -> EpochBatches | None:
        plates = subsample_plates(self.model, self.data)
        if self.world_size > 1 and not plates:
            raise ValueError(f"{self.world_size} processes need a model fitted in minibatches "
                             "(pass batch_size; the data plate must be subsampled)")
        if batch_size is not None:
            if not plates:
                raise ValueError("batch_size needs a model whose data plate is subsampled: "
                                 "pyro.plate('data', N, subsample_size=batch_size)")
            wrong = {k: b for k, (_, b) in plates.items() if b != batch_size}
            if wrong:
                raise ValueError(f"the model subsamples {wrong} but batch_size={batch_size}")
        return EpochBatches(plates, seed=self.seed, rank=self.rank,
                            world_size=self.world_size) if plates else None

    def _loss_parts(self, guide: Any) -> tuple[Callable[..., Any], Callable[..., Any],
                                                tuple[Any, ...], dict[str, Any]]:
        if not self.objective.compiled:
            return self.model, guide, (), self.data
        keys = [k for k, v in self.data.items() if isinstance(v, torch.Tensor)]
        static = {k: v for k, v in self.data.items() if k not in keys}
        return (_positional(self.model, keys, static), _positional(guide, keys, static),
                tuple(self.data[k] for k in keys), {})

    def _setup_guide(self, guide: Any) -> None:
        """Make ``guide`` the run's guide: its parameters, loss and optimiser."""
        self.guide = guide
        self.params = _param_tensors(guide, self.model, self.data)
        self.nesting = plate_nesting(self.model, guide, self.data)
        self.vectorize = batch_safe(self.model, guide, self.data, 2)
        self._elbos: dict[int, Any] = {}
        self.loss_parts = self._loss_parts(guide)
        self.density = self._compiled_density(guide)
        self.data_parallel = None
        if self.world_size > 1:
            owners = [m for m in {id(m): m for m in (owner_module(guide),
                                                     owner_module(self.model))}.values()
                      if m is not None]
            self.data_parallel = distributed.data_parallel(owners, self.device)
        self.optimizer = ScaledAdam(self.params, lr=self.schedule.lr)
        self.window_sum = {k: torch.zeros_like(p) for k, p in self.params.items()}
        self.previous = {k: p.detach().clone() for k, p in self.params.items()}
        self.window_states: list[dict[str, torch.Tensor]] = []
        self.region_state = guide_state(guide) \
            if self.objective.region_power is not None and owner_module(guide) is not None \
            else None
        self.region_khat: float | None = None
        self.region_retreats = 0  # each candidate of the trial starts with a clean record
        self.failure = None
        self.history.pop("region_retreats", None)
        if self.objective.region_power is not None and owner_module(guide) is None:
            raise ValueError(f"elbo={self.elbo_name!r} keeps q where it can be estimated, "
                             "which needs a guide that is a module (a pyrovi family or a "
                             "Pyro autoguide), not a function of pyro.param sites")
        if not self.objective.trains_model:
            model_owner = owner_module(self.model)
            model_params = sorted(set(self.params) - set(_guide_params(guide, self.data)))
            if model_owner is not None or model_params:
                named = ", ".join(model_params[:3]) or type(model_owner).__name__
                raise ValueError(
                    f"elbo={self.elbo_name!r} cannot fit the model's own parameters "
                    f"({named}): its gradient would not raise the evidence; fit them with "
                    "an ELBO (trace), then fix them")

    def _compiled_density(self, guide: Any) -> LogDensity | None:
        """The model's log density laid out as ``guide``'s flat vector, for the compiled
        path (:mod:`pyrovi.infer.compiled`), or None where the fit uses Pyro's ELBO;
        ``history["compiled"]`` says which, and why not. One density serves every guide
        of the trial with the same layout."""
        if not self.compiled:
            why = "compiled=False"
        elif not self.objective.judged_by_elbo:
            why = f"elbo={self.elbo_name!r} is not an ELBO"
        elif self.batches is not None:
            why = "minibatches"
        elif self.world_size > 1:
            why = "data-parallel training"
        else:
            why = compiled_path(self.model, guide, self.data)
        density = None
        if not why:
            sites = site_slices(guide)
            density = self._densities.get(repr(sites))
            if density is None:
                density = batched_density(self.model, self.data, sites, probe_draws(guide),
                                          self.nesting, plate=self.vectorize)
                if density is not None:
                    self._densities[repr(sites)] = density
                else:
                    why = ("the model's batched density differs from its own, in a "
                           "particle plate and mapped over the draws")
        self.history["compiled"] = {"used": density is not None, "why": why,
                                    "batching": "" if density is None
                                    else "vmap" if density.vmap else "plate"}
        return density

    def _on_density(self, model: Callable[..., Any], guide: Any) -> bool:
        """Whether ``model`` and ``guide`` can be evaluated on the run's compiled density."""
        return self.density is not None and model is self.model \
            and type(guide) is type(self.guide) and site_slices(guide) == self.density.sites

    def _log_weights(self, model: Callable[..., Any], guide: Any, num_samples: int
                     ) -> np.ndarray:
        """Log weights of ``num_samples`` draws of ``guide`` with the run's seed: on the
        compiled density where it serves, else by Pyro's traces."""
        if self._on_density(model, guide):
            return log_weights(self.density, guide, num_samples, self.seed)
        return guide_log_weights(model, guide, self.data, num_samples=num_samples,
                                 seed=self.seed)

    def _elbo_of(self, model: Callable[..., Any], guide: Any, num_particles: int
                 ) -> tuple[float, float]:
        """ELBO estimate and standard error of ``guide`` on the run's data and seed."""
        if self._on_density(model, guide):
            return elbo_from_log_weights(log_weights(self.density, guide, num_particles,
                                                     self.seed))
        return estimate_elbo(model, guide, self.data, num_particles=num_particles,
                             seed=self.seed)

    def _compiled_loss_and_grads(self, num_particles: int) -> float:
        """The negative ELBO of ``num_particles`` draws on the compiled density (q's
        entropy in closed form), its gradients accumulated in the guide's parameters."""
        draws, entropy = gaussian_draws(self.guide, num_particles)
        loss = -(self.density(draws).mean() + entropy)
        loss.backward()
        return float(loss.detach())

    def _elbo(self, num_particles: int) -> Any:
        if num_particles not in self._elbos:
            self._elbos[num_particles] = _make_elbo(
                self.elbo_name, num_particles, self.vectorize and num_particles > 1,
                self.nesting, self.alpha)
        return self._elbos[num_particles]

    def _candidate_starts(self, init: str | GaussianStart) -> list[GaussianStart | None]:
        if self.family is None or self.family.start is None:
            return [None]
        if isinstance(init, GaussianStart):
            return [init]
        starts: list[GaussianStart | None] = []
        if init in ("auto", "laplace") and self.batches is None:
            laplace, evals, why = find_map(self.model, self.data, seed=self.seed)
            self.num_grad_evals += evals
            self.history["laplace"] = why or "ok"
            if laplace is not None:
                starts.append(laplace)
        if init == "prior" or not starts or (init == "auto" and self.family.prior_start):
            pyro.set_rng_seed(self.seed)  # the prior median is taken from prior draws
            starts.append(initial_start(self.model, self.data))
        return starts

    def _build(self, start: GaussianStart | None, guide: str | Callable[..., Any]) -> Any:
        if self.family is None:
            return guide
        if start is None or self.family.start is None:
            return self.family.build(self.model)
        spread = self.objective.start_spread
        if spread == 1.0:
            return self.family.start(self.model, self.data, start)
        if self.objective.region_power is None:  # mass-covering objectives start over-dispersed
            self.start_spreads[start.source] = spread
            return self.family.start(self.model, self.data, _widened(start, spread))
        # an objective with a region (CUBO): the best of the spreads 1 .. start_spread by the
        # objective itself, on common draws from both guides of each comparison. Too wide a
        # start is no safe side: in 8 dimensions at 3x its weights are so uneven that one
        # draw makes each step's gradient and the fit wanders (normal_normal); too narrow
        # a one misses mass (a second mode), which the common draws of a wider one see
        spreads = np.geomspace(1.0, spread, SPREAD_CANDIDATES)
        best = self.family.start(self.model, self.data, start)
        best_spread = 1.0
        for candidate in spreads[1:]:
            built = self.family.start(self.model, self.data, _widened(start, candidate))
            if owner_module(built) is None or owner_module(best) is None:
                return built
            found = self._gain_of(self.model, best, self.model, built, PROGRESS_PARTICLES,
                                  plate_nesting(self.model, built, self.data))
            if found is None or found[0] > 0:
                best, best_spread = built, float(candidate)
        self.start_spreads[start.source] = best_spread
        return best

    def _start(self, guide: str | Callable[..., Any], init: str | GaussianStart,
               lr: float | None,
               num_particles: int) -> None:
        if self._fixed_draw_fit(guide, init, lr, num_particles):
            return
        starts = self._candidate_starts(init)
        if self.family is not None and not self.family.takes_steps:
            self.schedule = Schedule(lr=0.0, converged=True)
            self._setup_guide(self._build(starts[0], guide))
            self.start_name = _start_label(starts[0])
            self.start_state = guide_state(self.guide)
            self.start_elbo = None
            return
        preconditioned = self.family is not None and self.family.preconditioned
        self.in_trial = True
        step_sizes = (lr,) if lr is not None else tuple(
            size for size in (STEP_SIZES if preconditioned else RAW_STEP_SIZES)
            if size <= self.objective.max_step_size) or (self.objective.max_step_size,)
        trials: list[dict[str, Any]] = []
        finalists: dict[int, tuple[float, dict[str, Any], Any, dict[str, Any], float]] = {}
        failure = None
        several = len(starts) * len(step_sizes) > 1
        state0: dict[str, torch.Tensor] = {}
        for i, start in enumerate(starts):  # stage 1: every (start, step size), one window
            for step_size in step_sizes:
                pyro.clear_param_store()
                pyro.set_rng_seed(self.seed)
                self.start_name = _start_label(start)
                self.schedule = Schedule(
                    lr=step_size, num_particles=num_particles,
                    max_particles=num_particles if self.objective.fixed_particles
                    else max(8, num_particles))
                built = self._build(start, guide)
                if step_size != step_sizes[0] and self.family is None \
                        and owner_module(built) is not None:
                    _load_state(built, state0)  # a user's module is not rebuilt: reset it
                self._setup_guide(built)
                if step_size == step_sizes[0]:  # the start is the same for every step size
                    state0 = guide_state(self.guide)
                    elbo0 = self._trial_score() if several else -math.inf
                self.losses, self.history["lr"], self.history["num_particles"] = [], [], []
                elbo = 0.0
                if several:
                    try:
                        for _ in range(WINDOW):
                            self.step()
                        elbo = self._trial_score()
                    except NonFiniteLossError as exc:
                        elbo, failure = -math.inf, exc
                    trials.append({"stage": 1, "start": self.start_name, "lr": step_size,
                                   "elbo": elbo, "start_elbo": elbo0})
                snapshot = self._snapshot()
                if i not in finalists or self._better(finalists[i][1]["guide_state"],
                                                      finalists[i][0], snapshot["guide_state"],
                                                      elbo):
                    finalists[i] = (elbo, snapshot, start, state0, elbo0)
        if failure is not None and max(f[0] for f in finalists.values()) == -math.inf:
            raise failure  # no candidate made a single finite step
        evals = self.num_grad_evals
        if len(finalists) > 1 and self.second_stage:  # stage 2: each start goes on a while
            for i, (elbo, snapshot, start, state0, elbo0) in list(finalists.items()):
                if elbo == -math.inf:
                    continue
                self._restore_snapshot(snapshot, guide)
                self.num_grad_evals = evals
                try:
                    while self.schedule.plateaus < STAGE_TWO_PLATEAUS \
                            and self.num_steps < STAGE_TWO_MAX_WINDOWS * WINDOW \
                            and self.failure is None:
                        self.step()
                    elbo = self._trial_score()
                except NonFiniteLossError:
                    elbo = -math.inf
                evals = self.num_grad_evals
                trials.append({"stage": 2, "start": self.start_name,
                               "lr": snapshot["schedule"]["lr"], "elbo": elbo,
                               "start_elbo": elbo0})
                finalists[i] = (elbo, self._snapshot(), start, state0, elbo0)
        chosen = None
        for finalist in finalists.values():
            if chosen is None or self._better(chosen[1]["guide_state"], chosen[0],
                                              finalist[1]["guide_state"], finalist[0]):
                chosen = finalist
        assert chosen is not None
        _, snapshot, _, start_state, start_elbo = chosen
        self._restore_snapshot(snapshot, guide)
        self.start_state, self.start_elbo = start_state, start_elbo
        self.other_starts = [(_start_label(f[2]), f[3])
                             for f in finalists.values() if f is not chosen and f[3]]
        self.history["trial"] = trials
        self.in_trial = False
        self.num_grad_evals = evals  # every trial's steps count
        if self.schedule.converged:  # stopped in the trial's second stage: unchecked there
            self._check_stop_by_solve()

    def _fixed_draw_why_not(self, lr: float | None) -> str:
        """Why the fit cannot be a fixed-draw solve, before any guide is built ('' if it
        may be)."""
        if self.optimizer_name == "adam":
            return "optimizer='adam'"
        if not self.objective.judged_by_elbo:
            return f"elbo={self.elbo_name!r} is not an ELBO"
        if self.family is None or not self.family.takes_steps:
            return "not a Gaussian family of pyrovi.guides"
        if lr is not None:
            return "lr is a step size of the stochastic engine"
        if not self.second_stage:
            return "a fixed number of steps or epochs"
        return ""

    def _fixed_draw_fit(self, guide: str | Callable[..., Any], init: str | GaussianStart,
                        lr: float | None, num_particles: int) -> bool:
        """:meth:`_fixed_draw_solves` under a progress bar (``progress=True``, and only
        where a solve may run)."""
        shown = self.progress and self.rank == 0 and not self._fixed_draw_why_not(lr)
        with tqdm(desc="SVI (fixed draws)", unit="it", dynamic_ncols=True,
                  disable=not shown) as bar:
            def tick(value: float) -> None:
                bar.update(1)
                bar.set_postfix({"elbo": f"{value:.4g}"}, refresh=False)

            self._on_iteration = tick
            return self._fixed_draw_solves(guide, init, lr, num_particles)

    def _fixed_draw_solves(self, guide: str | Callable[..., Any],
                           init: str | GaussianStart, lr: float | None,
                           num_particles: int) -> bool:
        """Fit by L-BFGS on fixed draws (:mod:`pyrovi.infer.saa`) where it serves: returns
        True when the run is set up (a certified solve, or the stochastic engine started
        from an uncertified one), False when the stochastic engine's own trial is to run.

        Each start is solved on ``SAA_DRAWS`` whitened draws and the best (on common fresh
        draws) is kept. Its Monte Carlo error is then measured: a second solve on
        independent draws, and the gain of the two solutions' average over them
        (:func:`~pyrovi.infer.saa.average_gain`). The average is accepted when that gain,
        which near the optimum is what the average still falls short by, is within
        ``SAA_TOLERANCE`` nats (two paired standard errors included) and both solves
        reached a stationary point; otherwise again on four times the draws,
        ``SAA_ROUNDS`` times at most, and then the stochastic engine runs from the
        average."""
        why = self._fixed_draw_why_not(lr)
        solved: list[_Solved] = []
        if not why:
            starts = self._candidate_starts(init)
            shape = next((s for s in starts if s is not None and s.scale_tril is not None),
                         None)
            if shape is not None:  # every start in the Laplace shape: L-BFGS's conditioning
                starts = [s if s is None or s.scale_tril is not None or len(s.loc)
                          != len(shape.loc) else GaussianStart(s.loc, shape.scale_tril,
                                                               s.sites, s.source)
                          for s in starts]
            self.schedule = Schedule(lr=0.0, num_particles=num_particles)
            for start in starts:
                pyro.clear_param_store()
                pyro.set_rng_seed(self.seed)
                self.start_name = _start_label(start)
                self._setup_guide(self._build(start, guide))
                why = self._fixed_draw_why_not_built()
                if why:
                    break
                initial, initial_elbo = guide_state(self.guide), \
                    self._estimate(TRIAL_PARTICLES)[0]
                problem = self._fixed_draw_problem(start)
                num = self._first_draws(problem.dim)
                solve = problem.solve(self._fixed_draws(problem.dim, 0, num),
                                      self._on_iteration)
                self.num_grad_evals += solve.evaluations * num
                score = float(np.mean(self._paired_log_weights(self.guide)))
                solved.append(_Solved(score, guide_state(self.guide), start, initial,
                                      initial_elbo, solve, problem.dim))
        if why:
            if self.optimizer_name == "saa":
                raise ValueError(f"optimizer='saa' cannot fit this: {why}")
            self.history["saa"] = {"used": False, "why": why}
            return False
        best = max(solved, key=lambda item: item.score)
        start, dim = best.start, best.dim
        self.start_name = _start_label(start)
        self.history["trial"] = [{"stage": "saa", "start": _start_label(item.start),
                                  "lr": 0.0, "elbo": item.score,
                                  "start_elbo": item.initial_elbo} for item in solved]
        self.start_state, self.start_elbo = best.initial, best.initial_elbo
        self.other_starts = [(_start_label(item.start), item.initial) for item in solved
                             if item is not best]
        _load_state(self.guide, best.state)
        values = list(best.solve.values)
        rounds, certified = [], False
        num = self._first_draws(dim)
        for number in range(SAA_ROUNDS):
            stationary = best.solve.converged
            if number > 0:  # a fresh first solve on more draws, from the last average
                solve_a = self._fixed_draw_problem(start).solve(
                    self._fixed_draws(dim, 2 * number, num), self._on_iteration)
                self.num_grad_evals += solve_a.evaluations * num
                values += solve_a.values
                stationary = solve_a.converged
            state_a = guide_state(self.guide)
            solve_b = self._fixed_draw_problem(start).solve(
                self._fixed_draws(dim, 2 * number + 1, num), self._on_iteration)
            self.num_grad_evals += solve_b.evaluations * num
            values += solve_b.values
            stationary = stationary and solve_b.converged
            state_b = guide_state(self.guide)
            candidates = {"a": state_a, "b": state_b,
                          "mean": {k: 0.5 * (state_a[k] + state_b[k]) for k in state_a}}
            weights = {}
            for name, candidate in candidates.items():
                _load_state(self.guide, candidate)
                weights[name] = self._paired_log_weights(self.guide)
            gain, se = average_gain(weights["mean"], weights["a"], weights["b"])
            certified = stationary and math.isfinite(gain) \
                and -SAA_TOLERANCE <= gain - 2.0 * se and gain + 2.0 * se <= SAA_TOLERANCE
            rounds.append({"draws": num, "gain": gain, "se": se, "certified": certified,
                           "stationary": stationary, "message": solve_b.message})
            _load_state(self.guide, candidates[max(weights,
                                                   key=lambda k: float(np.mean(weights[k])))])
            if certified:
                break
            num *= 4
        self.history["saa"] = {"used": True, "why": "", "certified": certified,
                               "rounds": rounds}
        if not certified:  # the stochastic engine goes on from the last average
            if self.optimizer_name == "saa":
                warnings.warn("optimizer='saa': the fixed-draw solves were not certified "
                              f"({rounds[-1] if rounds else 'no round'}); the "
                              "stochastic engine goes on from them", ConvergenceWarning,
                              stacklevel=4)
            saa_start, record = self.guide.as_start("saa"), self.history["saa"]
            self.optimizer_name = "adam"
            self._start(guide, saa_start, None, num_particles)
            self.other_starts += [(_start_label(item.start), item.initial) for item in solved]
            self.history["saa"] = record
            return True
        self.fixed_draws = True
        self.schedule = Schedule(lr=0.0, num_particles=num, converged=True)
        self.losses = [-v for v in values]
        self.history["lr"] = [0.0] * len(values)
        self.history["num_particles"] = [num] * len(values)
        return True

    def _fixed_draw_why_not_built(self) -> str:
        """Why the run's built guide cannot be a fixed-draw solve ('' if it can)."""
        if isinstance(self.guide, AutoWhitenedNormal) and self.guide.low_rank:
            return ("a low-rank factor is unique only up to rotation: two solutions "
                    "cannot be averaged")
        return self._solve_why_not()

    def _solve_why_not(self) -> str:
        """Why the run's guide cannot be solved on fixed draws at all ('' if it can): a
        Gaussian guide of :mod:`pyrovi.guides` on the compiled density."""
        if not isinstance(self.guide, MeanFieldNormal | AutoWhitenedNormal):
            return "not a Gaussian guide"
        if self.density is None:
            return f"no compiled density ({self.history['compiled']['why']})"
        return ""

    def _fixed_draw_problem(self, start: GaussianStart | None) -> FixedDrawELBO:
        """The fixed-draw ELBO of the run's guide, its draws evaluated
        ``SAA_MAX_NUMBERS`` numbers of draws times data at a time."""
        return FixedDrawELBO(self.guide, self.density, start,
                             max(1, SAA_MAX_NUMBERS // max(1, data_size(self.data))))

    def _first_draws(self, dim: int, base: int = SAA_DRAWS) -> int:
        """Draws of a first solve: ``base``, and for a dense q at least twice its
        dimension plus two."""
        dense = isinstance(self.guide, AutoWhitenedNormal) and not self.guide.low_rank
        return max(base, 2 * dim + 2) if dense else base

    def _fixed_draws(self, dim: int, number: int, num: int) -> torch.Tensor:
        """The ``number``-th set of ``num`` whitened draws of the run's solves."""
        return whitened_draws(num, dim, self.seed + RANK_SEED_STRIDE * (number + 1),
                              self.dtype, self.device)

    def _paired_log_weights(self, guide: Any) -> np.ndarray:
        """Log weights of ``TRIAL_PARTICLES`` draws of ``guide`` with the run's seed
        (common draws for guides of one layout: their differences are precise); -inf
        where they cannot be computed."""
        try:
            lw = self._log_weights(self.model, guide, TRIAL_PARTICLES)
        except (ValueError, RuntimeError):
            return np.full(TRIAL_PARTICLES, -np.inf)
        return np.where(np.isfinite(lw), lw, -np.inf)

    def _trial_score(self) -> float:
        """The trial's measure of the current guide, larger better: its ELBO for the ELBO
        families, else its objective's :meth:`~pyrovi.infer.objectives.Objective.score`
        from the same ``TRIAL_PARTICLES`` draws (a fixed seed)."""
        if self.objective.judged_by_elbo:
            try:
                value = self._estimate(TRIAL_PARTICLES)[0]
            except (ValueError, RuntimeError):  # draws the model cannot score (NaN)
                return -math.inf
            return value if math.isfinite(value) else -math.inf
        rng = get_rng_state()
        try:
            lw = guide_log_weights(self.model, self.guide, self.data,
                                   num_samples=TRIAL_PARTICLES, seed=self.seed)
        except ValueError:
            return -math.inf
        finally:
            set_rng_state(rng)
        score = self.objective.score(lw, self.base_particles, self.alpha)
        return score if math.isfinite(score) else -math.inf

    def _better(self, state_a: dict[str, torch.Tensor], score_a: float,
                state_b: dict[str, torch.Tensor], score_b: float) -> bool:
        """Is the guide in ``state_b`` better than the one in ``state_a``? By their scores
        (:meth:`_trial_score`), except for objectives whose estimate from a guide's own
        draws is blind to the mass it misses (the record's ``proposal``): those compare
        the two guides on common draws from both (:meth:`_gain`)."""
        if not self.objective.proposal or owner_module(self.guide) is None \
                or not math.isfinite(score_a) or not math.isfinite(score_b):
            return score_b > score_a
        gain = self._gain(state_a, state_b, TRIAL_PARTICLES)
        return gain[0] > 0 if gain is not None else score_b > score_a

    def _gain(self, before: dict[str, torch.Tensor], now: dict[str, torch.Tensor],
              num_samples: int) -> tuple[float, float] | None:
        """The objective's gain (in score: larger is better) from the guide in ``before``
        to the guide in ``now``, and its standard error; None if it cannot be computed (a
        point-mass guide, non-finite weights). ELBO families: the mean paired difference
        of log weights on the same draws. Objectives with a ``proposal``: both guides on
        common draws, half from each (:func:`~pyrovi.infer.objectives.mixture_log_weights`).
        Others: the score of each guide's own draws, with the same seed."""
        try:
            model_a, guide_a = self._pair_from_state(before)
            model_b, guide_b = self._pair_from_state(now)
        except (ValueError, RuntimeError):
            return None
        return self._gain_of(model_a, guide_a, model_b, guide_b, num_samples, self.nesting)

    def _gain_of(self, model_a: Callable[..., Any], guide_a: Callable[..., Any],
                 model_b: Callable[..., Any], guide_b: Callable[..., Any],
                 num_samples: int, nesting: int) -> tuple[float, float] | None:
        """:meth:`_gain` of guide b over guide a, given the two pairs."""
        rng = get_rng_state()
        try:
            if self.objective.proposal:
                with self._context():
                    log_p, log_qa, log_qb = mixture_log_weights(
                        model_b, guide_a, guide_b, self.data, num_samples=num_samples,
                        seed=self.seed, max_plate_nesting=nesting)
                ratio_a, ratio_b = proposal_ratios(log_qa, log_qb)
                lw_a, lw_b = log_p - log_qa, log_p - log_qb
            else:
                ratio_a = ratio_b = None
                lw_a = guide_log_weights(model_a, guide_a, self.data,
                                         num_samples=num_samples, seed=self.seed)
                lw_b = guide_log_weights(model_b, guide_b, self.data,
                                         num_samples=num_samples, seed=self.seed)
        except (ValueError, RuntimeError):  # a point mass, or draws that cannot be batched
            return None
        finally:
            set_rng_state(rng)
        if not (np.isfinite(lw_a).all() and np.isfinite(lw_b).all()):
            return None
        if self.objective.judged_by_elbo:
            diff = lw_b - lw_a
            return float(np.mean(diff)), float(np.std(diff, ddof=1) / math.sqrt(len(diff)))
        return paired_gain(self.objective, lw_a, lw_b, self.base_particles, self.alpha,
                           ratio_a, ratio_b)

    # -- snapshots: the run's whole state as tensors and plain values -------------------

    def _snapshot(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "signature": self.signature,
            "guide_state": guide_state(self.guide),
            "guide_family": self.guide_name,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "history_lr": torch.tensor(self.history["lr"], dtype=torch.float64),
            "history_particles": torch.tensor(self.history["num_particles"]),
            "trial": [dict(t) for t in self.history["trial"]],
            "laplace": self.history.get("laplace", ""),
            "start_steps": self.history.get("start_steps", 0),
            "validation_elbo": list(self.history.get("validation_elbo", [])),
            "step_in_window": self.step_in_window,
            "window_sum": {k: v.clone() for k, v in self.window_sum.items()},
            "window_states": list(self.window_states),
            "num_grad_evals": self.num_grad_evals,
            "rng": get_rng_state(),
            "batches": self.batches.state_dict() if self.batches else None,
            "start_name": getattr(self, "start_name", "none"),
            "start_state": getattr(self, "start_state", {}),
            "start_elbo": getattr(self, "start_elbo", None),
            "other_starts": list(self.other_starts),
            "region_state": self.region_state,
            "region_retreats": self.region_retreats,
            "region_khat": self.region_khat,
            "region_history": list(self.history.get("region_retreats", [])),
            "failure": self.failure,
            "start_spreads": dict(self.start_spreads),
        }

    def _restore_snapshot(self, snap: dict[str, Any], guide: str | Callable[..., Any]) -> None:
        self.schedule = Schedule(**snap["schedule"])
        built = self.family.empty(self.model, snap["guide_state"]) if self.family else guide
        with poutine.block(), torch.no_grad():
            built(**self.data)
        _load_state(built, snap["guide_state"])
        self._setup_guide(built)
        self.optimizer.load_state_dict(snap["optimizer"])
        self.losses = [float(x) for x in snap["losses"]]
        self.history["lr"] = [float(x) for x in snap["history_lr"]]
        self.history["num_particles"] = [int(x) for x in snap["history_particles"]]
        self.history["trial"] = list(snap["trial"])
        self.history["laplace"] = snap["laplace"]
        self.history["start_steps"] = snap["start_steps"]
        self.history["validation_elbo"] = list(snap["validation_elbo"])
        self.step_in_window = int(snap["step_in_window"])
        self.window_sum = {k: v.clone() for k, v in snap["window_sum"].items()}
        self.window_states = list(snap.get("window_states", []))
        self.num_grad_evals = int(snap["num_grad_evals"])
        self.start_name = snap["start_name"]
        self.start_state = snap["start_state"]
        self.start_elbo = snap["start_elbo"]
        self.other_starts = list(snap.get("other_starts", []))
        if snap.get("region_state") is not None:
            self.region_state = snap["region_state"]
        self.region_retreats = int(snap.get("region_retreats", 0))
        self.region_khat = snap.get("region_khat")
        if snap.get("region_history"):
            self.history["region_retreats"] = list(snap["region_history"])
        self.failure = snap.get("failure")
        self.start_spreads = dict(snap.get("start_spreads", {}))
        if self.batches is not None and snap["batches"] is not None:
            self.batches.load_state_dict(snap["batches"])
        set_rng_state(snap["rng"])

    def _resume(self, path: Path, guide: str | Callable[..., Any]) -> None:
        snap = torch.load(path, weights_only=False)
        if snap.get("version") != CHECKPOINT_VERSION or snap.get("signature") != self.signature:
            raise ValueError(f"{path}: the checkpoint was written by a fit with other "
                             "arguments or data")
        self._restore_snapshot(snap, guide)

    def save(self, path: str | Path) -> None:
        """Write the run's whole state to ``path`` atomically (resume with ``resume=``)."""
        atomic_torch_save(self._snapshot(), Path(path))

    # -- stepping ------------------------------------------------------------------------

    @property
    def num_steps(self) -> int:
        """SVI steps taken so far (the chosen trial's included)."""
        return len(self.losses)

    @property
    def converged(self) -> bool:
        """Whether the stopping rule has fired (never after the fit gave up: :attr:`failure`)."""
        return self.schedule.converged and self.failure is None

    def _begin_window(self) -> None:
        with torch.no_grad():
            rewhiten = getattr(self.guide, "rewhiten", None)
            scales = getattr(self.guide, "step_scales", None)
            if rewhiten is not None or scales is not None or not self.losses:
                # new coordinates or step scales: Adam's moments of the old ones are void.
                # Raw coordinates (a flow, a network) keep them: a reset makes Adam's first
                # steps sign steps of the full step size, which throws a trained network
                # back by tens of nats at every window.
                if rewhiten is not None:
                    rewhiten()
                self.optimizer.reset()
            self.optimizer.scales = scales() if scales is not None else {}
            for total in self.window_sum.values():
                total.zero_()

    def step(self) -> float:
        """One SVI step under the schedule; returns the loss (negative ELBO estimate).

        Raises
        ------
        NonFiniteLossError
            After ``MAX_REJECTIONS`` non-finite steps in a row (parameters restored).
        """
        with self._context():
            if self.step_in_window == 0:
                self._begin_window()
            model, guide, args, kwargs = self.loss_parts
            if self.batches is not None:
                indices = self.batches.next_indices()
                model, guide = self.batches.wrap(model, indices), self.batches.wrap(guide,
                                                                                    indices)
            particles = self.schedule.num_particles
            self.optimizer.zero_grad()
            self.optimizer.lr = self.schedule.lr
            try:
                if self.density is not None:
                    loss = self._compiled_loss_and_grads(particles)
                elif self.data_parallel is None:
                    loss = self._elbo(particles).loss_and_grads(model, guide, *args, **kwargs)
                else:  # gradients averaged over the processes; the loss too, by hand
                    self.data_parallel.module.call = (self._elbo(particles), model, guide)
                    loss_tensor = self.data_parallel(*args, **kwargs)
                    loss_tensor.backward()
                    loss = distributed.mean(float(loss_tensor.detach()))
            except ValueError as exc:  # distribution validation of a NaN parameter
                if "invalid values" not in str(exc) and "nan" not in str(exc).lower():
                    raise
                loss = float("nan")
            self.num_grad_evals += particles
            if not (math.isfinite(loss) and finite_grads(self.params)):
                return self._reject()
            self.rejections = 0
            with torch.no_grad():
                for name, p in self.params.items():
                    self.previous[name].copy_(p)
            self.optimizer.step()
            with torch.no_grad():
                for name, p in self.params.items():
                    self.window_sum[name] += p
            self.losses.append(float(loss))
            self.history["lr"].append(self.schedule.lr)
            self.history["num_particles"].append(particles)
            self.step_in_window += 1
            if self.step_in_window == WINDOW:
                self.step_in_window = 0
                self._end_window()
            return float(loss)

    def _end_window(self) -> None:
        if self._left_region():
            return
        state = self._window_state()
        if state is not None:
            self.window_states = [*self.window_states, state][-(PROGRESS_WINDOWS + 1):]
        was_converged = self.schedule.converged
        self.schedule.end_of_window(self.losses)
        if self.schedule.converged and not self.objective.judged_by_elbo \
                and still_falling(-np.asarray(self.losses[-TREND_WINDOWS * WINDOW:])):
            # a loss estimated from q's own draws can rise while q improves (CUBO's is
            # biased low, the more so the narrower q): a significant rise is movement, and
            # movement is no convergence
            self.history.setdefault("progress_checks", []).append(
                {"step": self.num_steps, "rising_loss": True})
            self.schedule.reopen()
        # a stop is judged once, when the schedule first calls it: a run held to a fixed
        # step count goes on past it, and judging every later window again re-solved the
        # same optimum (on the throughput bench's mixture 11 s of a 15 s fit)
        if was_converged:
            return
        if self.schedule.converged and len(self.window_states) > 1:
            self._confirm_convergence(self.window_states[0], self.window_states[-1])
        if self.schedule.converged and not self.in_trial:
            self._check_stop_by_solve()

    def _left_region(self) -> bool:
        """Undo the window just completed if its averaged q left the objective's region
        (the record's ``region_power``; CUBO: k-hat of ``2 log w`` above 0.5, where the
        variance of ``w^2`` is infinite and the estimates from q's draws favour a narrower
        q). The parameters go back to the last averaged state inside the region, the step
        size halves, Adam's moments are reset; after ``MAX_REGION_RETREATS`` retreats the
        fit gives up (:attr:`failure`). Returns True when the window was undone."""
        if self.region_state is None:
            return False
        if self.region_khat is None:  # the start's, once
            self.region_khat = self._region_khat_of(self.region_state)
        with self._averaged():
            state = guide_state(self.guide)
        khat = self._region_khat_of(state)
        limit = self.objective.region_max_khat
        if khat <= limit:
            self.region_state, self.region_khat = state, khat
            return False
        if self.region_khat > limit:
            # not yet in the region: an over-dispersed start reads a large k-hat too (its
            # weights are bounded, but so uneven that the tail cannot be told apart), so
            # while q comes down from it, a window is undone only if it made the objective
            # significantly worse, judged on common draws from both guides (which see the
            # mass a narrower q misses)
            found = self._gain(self.region_state, state, PROGRESS_PARTICLES)
            if found is not None and found[0] >= -2.0 * found[1]:
                self.region_state, self.region_khat = state, khat
                return False
        _load_state(self.guide, self.region_state)
        with torch.no_grad():
            for name, p in self.params.items():
                self.previous[name].copy_(p)
                self.window_sum[name].copy_(p * WINDOW)  # the window's average: the state
        self.optimizer.reset()
        self.schedule.lr *= 0.5
        self.schedule.windows_at_lr = 0
        self.window_states = []  # progress is judged again from windows inside the region
        self.region_retreats += 1
        self.history.setdefault("region_retreats", []).append(
            {"step": self.num_steps, "khat": khat, "lr": self.schedule.lr})
        if self.region_retreats >= MAX_REGION_RETREATS:
            self.failure = (
                f"elbo={self.elbo_name!r}: q left the region where the objective can be "
                f"estimated {self.region_retreats} times (PSIS k-hat of "
                f"{self.objective.region_power:g} log w above "
                f"{self.objective.region_max_khat:g}; last {khat:.2f} at step "
                f"{self.num_steps}) and the step size fell to {self.schedule.lr:.2g}; the "
                "fit stopped at the last q inside it (history['region_retreats'])")
        return True

    def _region_khat_of(self, state: dict[str, torch.Tensor]) -> float:
        """The objective's region k-hat (:meth:`~pyrovi.infer.objectives.Objective.
        region_khat`) of the guide in ``state``, from ``REGION_DRAWS`` draws with the
        run's seed (the same draws every window); the RNG is restored."""
        rng = get_rng_state()
        try:
            model, guide = self._pair_from_state(state)
            lw = guide_log_weights(model, guide, self.data, num_samples=REGION_DRAWS,
                                   seed=self.seed)
            return self.objective.region_khat(lw)
        except (ValueError, RuntimeError):  # draws the model cannot score: outside
            return math.inf
        finally:
            set_rng_state(rng)

    def _window_state(self) -> dict[str, torch.Tensor] | None:
        """The averaged state of the window just completed (module guides only: their
        state holds their coordinates too)."""
        if owner_module(self.guide) is None:
            return None
        with self._averaged():
            return guide_state(self.guide)

    def _confirm_convergence(self, before: dict[str, torch.Tensor],
                             now: dict[str, torch.Tensor]) -> None:
        """Withdraw a stop while the ELBO still rises (schedule step 4): the last window's
        averaged parameters against those ``PROGRESS_WINDOWS`` windows before, same draws.
        For an objective other than the ELBO, its own gain (:meth:`_gain`)."""
        found = self._elbo_gain(before, now) if self.objective.judged_by_elbo \
            else self._gain(before, now, PROGRESS_PARTICLES)
        if found is None:
            return
        gain, se = found
        self.history.setdefault("progress_checks", []).append(
            {"step": self.num_steps, "gain": gain, "se": se})
        if gain > MIN_GAIN and gain > 2.0 * se:
            self.schedule.reopen()

    def _elbo_gain(self, before: dict[str, torch.Tensor], now: dict[str, torch.Tensor]
                   ) -> tuple[float, float] | None:
        """The ELBO's gain from the guide in ``before`` to the guide in ``now`` and its
        standard error, from paired log weights (:meth:`_log_weights_at`: the same draws);
        None where they cannot be computed (a point mass) or are not finite."""
        rng = get_rng_state()
        try:
            diff = self._log_weights_at(now) - self._log_weights_at(before)
        except ValueError:  # a guide without a density (a point mass)
            return None
        finally:
            set_rng_state(rng)
        if not np.isfinite(diff).all():
            return None
        return float(np.mean(diff)), float(np.std(diff, ddof=1) / math.sqrt(len(diff)))

    def _stop_check_why_not(self) -> str:
        """Why a stop of the stochastic engine cannot be checked by a fixed-draw solve
        ('' if it can): on the compiled density (:class:`FixedDrawELBO`), else on Pyro's
        ELBO with a fixed seed (:class:`FixedSeedELBO`)."""
        if not self.objective.judged_by_elbo:
            return f"elbo={self.elbo_name!r} is not an ELBO"
        if self.batches is not None or self.data_parallel is not None:
            return "minibatches or data-parallel training"
        if not self._solve_why_not():
            return ""
        owner = owner_module(self.guide)
        if owner is None:
            return "a guide of pyro.param sites (no state to compare solutions by)"
        outside = sorted(set(self.params) - {name for name, _ in owner.named_parameters()})
        if outside:
            return f"the model's own parameters ({', '.join(outside[:3])})"
        with poutine.block(), torch.no_grad():
            guide_sites = poutine.trace(self.guide).get_trace(**self.data).nodes
        latent = [name for name, site in guide_sites.items() if site["type"] == "sample"
                  and not site["is_observed"] and not site_is_subsample(site)]
        fixed = [name for name in latent if not guide_sites[name]["fn"].has_rsample]
        if fixed:
            return f"guide sites without reparametrised draws ({', '.join(fixed[:3])})"
        size = self._num_params()
        needed = STOP_CHECK_DRAWS_PER_PARAMETER * size
        if needed > STOP_CHECK_MAX_DRAWS:
            return f"{size} guide parameters (a fixed-draw solve would need {needed:,} draws)"
        if not self.vectorize and needed > STOP_CHECK_SEQUENTIAL_DRAWS:
            return (f"{size} guide parameters and a model that takes its draws one at a "
                    f"time (a fixed-draw solve would run it {needed:,} times an iteration)")
        missing = sorted(name for name, site in model_trace(self.model, self.data).nodes.items()
                         if site["type"] == "sample" and not site["is_observed"]
                         and not site_is_subsample(site) and name not in latent)
        if missing:
            return f"model sites the guide does not draw ({', '.join(missing[:3])})"
        return ""

    def _num_params(self) -> int:
        """Scalars in the parameters the loss moves."""
        return sum(p.numel() for p in self.params.values())

    def _stop_check_solve(self, number: int) -> tuple[Solve, str]:
        """The stop check's solve from the guide's current parameters, on draw set
        ``number``, and which ELBO it solved (``"density"``: the compiled density,
        ``"pyro"``: Pyro's ELBO with a fixed seed)."""
        if not self._solve_why_not():
            problem = self._fixed_draw_problem(None)
            num = self._first_draws(problem.dim, STOP_CHECK_DRAWS)
            solve = problem.solve(self._fixed_draws(problem.dim, number, num),
                                  stall=STOP_CHECK_STALL)
            self.num_grad_evals += solve.evaluations * num
            return solve, "density"
        model, guide, args, kwargs = self.loss_parts
        num = max(STOP_CHECK_DRAWS, STOP_CHECK_DRAWS_PER_PARAMETER * self._num_params())
        num = min(num, max(STOP_CHECK_DRAWS, SAA_MAX_NUMBERS // max(1, data_size(self.data)))) \
            if self.vectorize else STOP_CHECK_SEQUENTIAL_DRAWS
        seeded = FixedSeedELBO(model, guide, args, kwargs, list(self.params.values()), num,
                               self.vectorize, self.nesting,
                               self.seed + RANK_SEED_STRIDE * (number + 1))
        solve = seeded.solve(stall=STOP_CHECK_SEEDED_STALL)
        self.num_grad_evals += solve.evaluations * num
        return solve, "pyro"

    def _check_stop_by_solve(self) -> None:
        """Confirm a stop of the stochastic engine by a deterministic solve from where it
        stopped (step 4 of the module docstring): L-BFGS on ``STOP_CHECK_DRAWS`` fixed draws
        (:class:`~pyrovi.infer.saa.FixedDrawELBO`) from the last window's average, and the
        gain of the solution over that average on ``PROGRESS_PARTICLES`` fresh paired
        draws. The halving step size can freeze a fit in a long valley before the
        optimum while every window's trend, and the gain over ten windows, look flat
        (posteriordb's gp_pois_regr, mean field: half a nat short, and 3.3 nats from its
        Laplace start alone). A gain above ``STOP_CHECK_TOLERANCE`` beyond two paired
        standard errors withdraws the stop: the fit goes on from the solution (it is
        better on fresh draws) until its next stop, checked again. A smaller gain beyond
        two standard errors keeps the stop and returns the solution. After
        ``MAX_STOP_CHECKS`` withdrawals the fit gives up (:attr:`failure`) at the last
        solution. Where the compiled density cannot serve, the solve is of Pyro's ELBO
        with a fixed seed (:class:`~pyrovi.infer.saa.FixedSeedELBO`, at least
        ``STOP_CHECK_DRAWS_PER_PARAMETER`` draws per parameter). Runs the check cannot
        serve (another objective, minibatches, a guide of ``pyro.param`` sites or with
        draws that are not reparametrised) stop as before, and ``history['stop_checks']``
        says why. The solve ends early once it stalls (``STOP_CHECK_STALL``); each check
        records which ELBO it solved (``solver``: ``"density"`` or ``"pyro"``)."""
        checks = self.history.setdefault("stop_checks", [])
        why = self._stop_check_why_not()
        if why:
            if not checks:
                checks.append({"step": self.num_steps, "why": why})
            return
        last = {name: p.detach().clone() for name, p in self.params.items()}
        with self._averaged():
            before = guide_state(self.guide)
        _load_state(self.guide, before)
        solve, solver = self._stop_check_solve(STOP_CHECK_SEEDS + len(checks))
        solution = guide_state(self.guide)
        gain, se = self._elbo_gain(before, solution) or (-math.inf, math.inf)
        better = gain > 2.0 * se
        withdrawn = better and gain > STOP_CHECK_TOLERANCE
        checks.append({"step": self.num_steps, "gain": gain, "se": se,
                       "iterations": len(solve.values) - 1, "adopted": better,
                       "withdrawn": withdrawn, "solver": solver, "why": ""})
        if not better:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(last[name])
            return
        with torch.no_grad():  # the solution is the window's average, and the next step's
            for name, p in self.params.items():
                self.previous[name].copy_(p)
                self.window_sum[name].copy_(p * WINDOW)
        self.optimizer.reset()
        if not withdrawn:
            return
        self.window_states = [solution]
        if sum(1 for check in checks if check.get("withdrawn")) >= MAX_STOP_CHECKS:
            self.failure = (
                f"a fixed-draw solve from the stochastic engine's stop gained {gain:.3g} "
                f"+- {se:.2g} nats {MAX_STOP_CHECKS} times (history['stop_checks']); the "
                "fit stopped at the last solution")
            return
        self.schedule.reopen()

    def _log_weights_at(self, state: dict[str, torch.Tensor]) -> np.ndarray:
        """Log weights of ``PROGRESS_PARTICLES`` draws of the guide in ``state``, with the
        run's seed. Minibatches: one fixed pass, its share of the draws per batch, the
        batches' weights averaged (an estimate of the full data's as precise)."""
        model, guide = self._pair_from_state(state)
        if self.batches is None:
            return self._log_weights(model, guide, PROGRESS_PARTICLES)
        per_batch = max(10, math.ceil(PROGRESS_PARTICLES / self.batches.batches_per_pass))
        total = np.zeros(per_batch)
        for i, indices in enumerate(self.batches.one_pass()):
            total += guide_log_weights(self.batches.wrap(model, indices),
                                       self.batches.wrap(guide, indices), self.data,
                                       num_samples=per_batch, seed=self.seed + i)
        return total / self.batches.batches_per_pass

    def _reject(self) -> float:
        """A non-finite step: back one step, halve the step size, try again next call."""
        self.rejections += 1
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.previous[name])
        self.optimizer.reset()
        self.schedule.lr *= 0.5
        if self.rejections >= MAX_REJECTIONS:
            with pyro.validation_enabled(False):
                where = _nonfinite_site(self.model, self.guide, self.data,
                                        list(self.params.values()))
            raise NonFiniteLossError(
                f"ELBO stayed non-finite for {MAX_REJECTIONS} steps in a row at step "
                f"{self.num_steps}: {where}; parameters restored to the last finite values")
        return float("nan")

    # -- estimates and the result ------------------------------------------------------

    @contextlib.contextmanager
    def _averaged(self) -> Iterator[None]:
        """Parameters set to the average of the last complete window, then put back."""
        complete = self.step_in_window == 0 and len(self.losses) >= WINDOW
        if not complete or self.fixed_draws:
            yield
            return
        current = {k: p.detach().clone() for k, p in self.params.items()}
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(self.window_sum[name] / WINDOW)
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self.params.items():
                    p.copy_(current[name])

    def _estimate(self, num_particles: int, averaged: bool = False) -> tuple[float, float]:
        """ELBO estimate (and its standard error) with a fixed seed; the RNG is restored."""
        rng = get_rng_state()
        try:
            with contextlib.ExitStack() as stack:
                if averaged:
                    stack.enter_context(self._averaged())
                if self.batches is None:
                    return self._elbo_of(self.model, self.guide, num_particles)
                # each batch's ELBO, scaled by N / B, estimates the whole data's; one pass
                # covers every point once, so the mean over batches is the whole data's
                # ELBO up to Monte Carlo error (the spread between batches is not error)
                values, errors = [], []
                for i, indices in enumerate(self.batches.one_pass()):
                    per_batch = max(2, num_particles // self.batches.batches_per_pass)
                    value, error = estimate_elbo(self.batches.wrap(self.model, indices),
                                                 self.batches.wrap(self.guide, indices),
                                                 self.data, num_particles=per_batch,
                                                 seed=self.seed + i)
                    values.append(value)
                    errors.append(error)
                n = len(values)
                return float(np.mean(values)), float(np.sqrt(np.sum(np.square(errors))) / n)
        finally:
            set_rng_state(rng)

    def estimate_elbo(self, num_particles: int = ELBO_ESTIMATE_PARTICLES,
                      data: dict[str, Any] | None = None) -> tuple[float, float]:
        """ELBO estimate and standard error of the current guide, on ``data`` (held-out
        data) or the run's own data."""
        with self._context():
            if data is None:
                return self._estimate(num_particles)
            rng = get_rng_state()
            try:
                return estimate_elbo(self.model, self.guide,
                                     as_tensor_data(data, self.dtype, self.device),
                                     num_particles=num_particles, seed=self.seed)
            finally:
                set_rng_state(rng)

    def result(self, converged: bool | None = None) -> SVIFit:
        """The fit as it stands: the last complete window's average, or the start if that
        is better (same draws). The run itself is not changed.

        Parameters
        ----------
        converged : bool, optional
            Overrides the schedule's own flag (a fixed step count is complete).
        """
        rng = get_rng_state()
        try:
            return self._result(converged)
        finally:
            set_rng_state(rng)

    def _result(self, converged: bool | None) -> SVIFit:
        with self._context():
            with self._averaged():
                state = guide_state(self.guide)
            model, guide = self._pair_from_state(state)
            fit_lw = None
            if self.batches is not None:
                elbo, se = self._estimate(ELBO_ESTIMATE_PARTICLES)
            elif self._on_density(model, guide):  # its log weights serve _best_start too
                fit_lw = self._log_weights(model, guide, ELBO_ESTIMATE_PARTICLES)
                elbo, se = elbo_from_log_weights(fit_lw)
            else:
                elbo, se = self._elbo_of(model, guide, ELBO_ESTIMATE_PARTICLES)
            start_used, returned_name = False, self.start_name
            if self.start_elbo is not None and self.start_state and self.batches is None \
                    and self.objective.judged_by_elbo:
                found = self._best_start(model, guide, fit_lw)
                if found is not None:
                    state, returned_name, elbo, se = found
                    start_used = True
                # rebuilt after the candidates: with global parameters (the JIT ELBOs) a
                # guide built from a state shares the param store with every other one
                model, guide = self._pair_from_state(state)
            elif self.start_elbo is not None and self.start_state and self.batches is None:
                # judged by the objective's own value, the ELBO reported either way
                gain = self._gain(self.start_state, state, ELBO_ESTIMATE_PARTICLES)
                if gain is not None and gain[0] < 0:
                    model, guide = self._pair_from_state(self.start_state)
                    elbo, se = estimate_elbo(model, guide, self.data, seed=self.seed)
                    state, start_used = self.start_state, True
            objective = self._objective_estimate(model, guide, elbo, se)
        converged = self.converged if converged is None else converged
        history = {**self.history, "plateau_steps": list(self.schedule.plateau_steps),
                   "returned_start": start_used, "objective": objective,
                   "failure": self.failure}
        if self.density is not None:
            history["compiled"] = {**history["compiled"], "graphs": self.density.compiled,
                                   "traces": self.density.num_traces,
                                   "calls": self.density.num_calls}
        spread = self.start_spreads.get(self.start_name, 1.0)  # 1: built unwidened
        history["start_spread"] = spread
        if start_used and not self.objective.judged_by_elbo and spread != 1.0 \
                and self.num_steps > 0:
            # the start was widened on purpose (start_spread), so it is not the objective's
            # optimum: a fit that lost ground against it did not converge, whatever the
            # stopping rule said
            why = (f"elbo={self.elbo_name!r}: the fit ended worse than its over-dispersed "
                   f"start ({spread:g}x the start's sds) by the "
                   "objective's own value, so the start is returned and the fit is not "
                   "converged (history['returned_start'])")
            history["failure"] = self.failure or why
            if converged:
                warnings.warn(f"SVI did not converge: {why}", ConvergenceWarning,
                              stacklevel=3)
            converged = False
        return SVIFit(
            model=model, guide=guide, data=self.data, losses=np.asarray(self.losses),
            elbo=elbo, elbo_se=se, guide_name=self.guide_name, elbo_name=self.elbo_name,
            converged=converged, seed=self.seed,
            params=state, module_local_params=self.local_params,
            num_grad_evals=self.num_grad_evals, dtype=self.dtype, start=returned_name,
            history=history)

    def _best_start(self, model: Callable[..., Any], guide: Any,
                    fit_lw: np.ndarray | None = None) -> tuple[Any, ...] | None:
        """The start to return instead of the fitted ``guide``, or None (ELBO families).

        Every start of the trial is a candidate (the chosen one and the others: the
        Laplace start is exact on a Gaussian posterior, where the fit can only wander
        about it). A candidate replaces the current best when its ELBO is higher on the
        same draws, or ties it (paired difference within 2 se) with log weights of smaller
        variance: ``Var_q[log w]`` is zero only at ``q = p``, so of two guides the ELBO
        cannot tell apart it prefers the one nearer the posterior.

        ``fit_lw`` are the fitted guide's log weights if already computed (the same draws).

        Returns
        -------
        tuple or None
            ``(state, start name, elbo, se)`` of the start to return.
        """
        try:
            best_lw = fit_lw if fit_lw is not None \
                else self._log_weights(model, guide, ELBO_ESTIMATE_PARTICLES)
        except (ValueError, RuntimeError):
            return None
        if not np.isfinite(best_lw).all():
            best_lw = np.full_like(best_lw, -np.inf)
        best = None
        for name, state in [(self.start_name, self.start_state), *self.other_starts]:
            start_model, start_guide = self._pair_from_state(state)
            try:
                lw = self._log_weights(start_model, start_guide, ELBO_ESTIMATE_PARTICLES)
            except (ValueError, RuntimeError):
                continue
            if not np.isfinite(lw).all():
                continue
            if np.isfinite(best_lw).all():
                diff = lw - best_lw
                gain = float(np.mean(diff))
                tie = gain >= -2.0 * float(np.std(diff, ddof=1)) / math.sqrt(len(diff))
                if not (gain > 0 or (tie and np.var(lw) < np.var(best_lw))):
                    continue
            best, best_lw = (state, name), lw
        if best is None:
            return None
        return (*best, *elbo_from_log_weights(best_lw))

    def _objective_estimate(self, model: Callable[..., Any], guide: Callable[..., Any],
                            elbo: float, elbo_se: float) -> dict[str, Any]:
        """The objective's own value for ``history["objective"]``: name, value, standard
        error, bound and divergence (the ELBO itself for the ELBO families)."""
        record = {"name": self.objective.name, "bound": self.objective.bound,
                  "divergence": self.objective.divergence,
                  "num_particles": self.base_particles}
        if self.objective.judged_by_elbo:
            return {**record, "value": elbo, "se": elbo_se}
        try:
            lw = guide_log_weights(model, guide, self.data,
                                   num_samples=ELBO_ESTIMATE_PARTICLES, seed=self.seed)
            value, se = self.objective.estimate(lw, self.base_particles, self.alpha)
        except ValueError:
            value, se = math.nan, math.nan
        if self.objective.uses_alpha:
            record["alpha"] = self.alpha
        return {**record, "value": value, "se": se}

    def _pair_from_state(self, state: dict[str, torch.Tensor]) -> tuple[Any, Any]:
        """``(model, guide)`` holding ``state``, the run's own left as they are: a new guide
        of the family, or a copy of the module that owns the guide (and the model, when it
        owns that too: a VAE's decoder is part of the state)."""
        owner = owner_module(self.guide)
        if owner is None:
            return self.model, self.guide
        if owner is self.guide and self.family is not None:
            guide = self.family.empty(self.model, state)
            with poutine.block(), torch.no_grad():
                guide(**self.data)
            guide.load_state_dict(state)
            return self.model, guide
        twin = copy.deepcopy(owner)
        twin.load_state_dict(state)
        return rebind(self.model, owner, twin), rebind(self.guide, owner, twin)


def fit(
    model: Callable[..., Any],
    data: dict[str, Any],
    guide: str | Callable[..., Any] = "mean_field",
    elbo: str = "trace",
    num_steps: int | None = None,
    lr: float | None = None,
    num_particles: int | None = None,
    seed: int = 0,
    progress: bool = False,
    *,
    max_steps: int = DEFAULT_MAX_STEPS,
    alpha: float = 0.5,
    init: str | GaussianStart = "auto",
    batch_size: int | None = None,
    num_epochs: int | None = None,
    validation_data: dict[str, Any] | None = None,
    patience: int = 3,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 5 * WINDOW,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    compiled: bool = True,
    optimizer: str = "auto",
) -> SVIFit:
    """Fit a variational guide to ``model(**data)`` with Pyro SVI.

    Parameters
    ----------
    model : callable
        Pyro model called as ``model(**data)``.
    data : dict
        Keyword arguments of the model; arrays and lists become tensors.
    guide : str or callable
        A family of :data:`pyrovi.guides.FAMILIES` (``mean_field``, ``low_rank``,
        ``full_rank``, ``flow``, ``map``, ``laplace``, or a model's hand-written guide such
        as ``mean_field_gmm``) or a guide callable. ``laplace`` is the Laplace
        approximation at the mode itself: no SVI steps are taken.
    elbo : str
        The objective (:data:`ELBO_FAMILIES`, records of :mod:`pyrovi.infer.objectives`).
        The ELBO, whose maximum minimises the reverse ``KL(q || p)`` (mode seeking):
        ``trace`` (Trace_ELBO), ``mean_field`` (analytic KL where available), ``graph``,
        or the JIT variants ``jit``, ``jit_mean_field``, ``jit_graph``. Mass covering:
        ``renyi`` (the K-draw Rényi bound of order ``alpha``; ``alpha < 1`` leans
        toward covering, ``alpha = 0`` is IWAE), ``iwae`` (the importance-weighted bound
        IWAE_K, K = ``num_particles``), ``rws`` (reweighted wake-sleep's wake-phi update:
        the forward ``KL(p || q)``), ``cubo`` (the chi^2 upper bound CUBO_2). For these
        the fit's step-size trial, the confirmation of a stop and the "never worse than
        the start" check judge the objective's own value, reported with its standard
        error in ``fit.history["objective"]``; ``fit.elbo`` is the ELBO of q either way.
        They fit on the whole data (no minibatches).
    num_steps : int or None
        Fixed number of SVI steps after the start trial (whose second, longer stage is
        then skipped); ``None`` runs until the stopping rule of
        :mod:`pyrovi.infer.schedule` fires (at most ``max_steps``, with a
        :class:`ConvergenceWarning` at the cap). A fixed count does not make the fit
        converged: ``fit.converged`` says whether the stopping rule had fired.
    lr : float or None
        Initial step size; by default chosen by a short trial among the family's
        candidates (:data:`STEP_SIZES`, in units of q's sds for preconditioned guides).
    num_particles : int or None
        Particles per ELBO estimate at the start (more are added late in the fit, up to 8,
        for the ELBO families; for ``renyi`` and ``iwae`` K is part of the objective, and
        ``rws`` and ``cubo`` start at 16 already); vectorised when the
        model is batch safe. None: 1 for the ELBO families, 16 for ``renyi``, ``iwae``,
        ``rws`` and ``cubo`` (which need K > 1: an explicit ``num_particles=1`` with
        ``iwae``, ``rws`` or ``cubo`` is a ValueError).
    seed : int
        Seed for Pyro, torch and numpy; the same seed gives identical losses.
    progress : bool
        Show a tqdm bar with the smoothed ELBO, the step size and, with minibatches, the
        epoch and the last held-out ELBO; a fixed-draw fit (``optimizer``) shows its
        L-BFGS iterations with the fixed-draw ELBO.
    max_steps : int
        Step cap when ``num_steps`` is None.
    alpha : float
        The order of the Rényi divergence for ``elbo="renyi"``.
    init : str or GaussianStart
        ``"auto"`` tries the Laplace start and the model's initial point, ``"laplace"``
        and ``"prior"`` only one of them; a :class:`~pyrovi.guides.GaussianStart` (a
        fitted Gaussian guide's ``as_start()``, as the guide ladder passes up its rungs)
        is the only start tried.
    batch_size : int, optional
        Minibatch size; the model must subsample its data plate with this size
        (``pyro.plate("data", N, subsample_size=batch_size)``). A model with a
        ``batch_size`` keyword that ``data`` does not set receives it. Batches are
        shuffled passes over the data (epochs).
    num_epochs : int, optional
        With minibatches: the number of passes (else the stopping rule decides).
    validation_data : dict, optional
        Held-out data for the same model: its ELBO is computed after every epoch
        (``fit.history["validation_elbo"]``), and the fit stops early when it has not
        improved for ``patience`` epochs and at least ``EARLY_STOP_MIN_STEPS`` steps,
        returning the best epoch's guide.
    patience : int
        Epochs without held-out improvement before stopping early. The steps' own noise
        moves a held-out ELBO up and down from epoch to epoch; when epochs are short (a
        few steps each), a lucky epoch would otherwise stop the fit long before its
        optimum, so ``EARLY_STOP_MIN_STEPS`` steps must have passed since the best too.
    checkpoint : str or path, optional
        The whole state is written there atomically every ``checkpoint_every`` steps; a
        fit started again with the same arguments and data resumes from it and ends with
        exactly the losses of an uninterrupted run. The file is removed at the end.
    checkpoint_every : int
        Steps between checkpoints (rounded up to whole windows of ``WINDOW`` steps).
    device : str or torch.device, optional
        ``"cpu"`` (default) or ``"cuda"``: where the data, guide and steps live.
    dtype : torch.dtype, optional
        Floating-point type of the computation; by default the dtype of the network that
        owns a module guide (a VAE's), else float64 for models whose data hold at most
        ``SMALL_DATA`` numbers on the CPU, else float32. A guide that is a module, or a
        method of one (``guide=vae.guide``: the module owns the model's network too, and
        both are trained), is moved to this dtype and to ``device``.
    compiled : bool
        Fit a Gaussian family (``mean_field``, ``low_rank``, ``full_rank``) with an ELBO
        on the model's log density compiled once (:mod:`pyrovi.infer.compiled`): the same
        objective as Trace_ELBO, with q's entropy in closed form, at a fraction of the cost
        per step. Models that cannot take that path (discrete latents, parameters of
        their own, minibatches, a model that does not broadcast under a particle plate)
        use Pyro's ELBO silently; ``fit.history["compiled"]`` says which path ran and
        why. False always uses Pyro's ELBO.
    optimizer : {"auto", "saa", "adam"}
        ``saa``: maximise the ELBO on fixed whitened draws by L-BFGS, then measure what
        the draws cost (:mod:`pyrovi.infer.saa`); the fit is converged when a second
        solve on independent draws shows the average of the two within
        ``SAA_TOLERANCE`` (0.05) nats of its optimum, and otherwise goes on with more
        draws and then with the stochastic engine. It needs the compiled path, a Gaussian
        family other than ``low_rank``, an ELBO and neither ``lr`` nor
        ``num_steps``/``num_epochs``; ``fit.history["saa"]`` records the solves.
        ``adam``: stochastic steps under the schedule of :mod:`pyrovi.infer.schedule`.
        ``auto`` (default): ``saa`` where it serves, else ``adam``. An explicit ``saa``
        where it cannot serve is a ValueError.

    Returns
    -------
    SVIFit

    Raises
    ------
    NonFiniteLossError
        If the loss stays non-finite however small the step; the parameters are restored
        to the last finite values and the message names the offending site.

    Notes
    -----
    Started by ``torchrun --nproc_per_node N`` (or ``pyrovi train ... --nproc N``), a fit
    in minibatches is data-parallel: each process fits its shard of every pass, the
    gradients are averaged by ``DistributedDataParallel``, rank 0 writes the checkpoints,
    and every process returns the same fit (:mod:`pyrovi.infer.distributed`).
    """
    if guide == "auto":
        raise ValueError("guide='auto' is the guide ladder of pyrovi.fit (pyrovi.ladder); "
                         "pyrovi.infer.fit fits one family")
    path = Path(checkpoint) if checkpoint is not None else None
    resume = path if path is not None and path.exists() else None
    run = SVIRun(model, data, guide, elbo, lr, num_particles, seed, init=init, alpha=alpha,
                 batch_size=batch_size, device=device, dtype=dtype, resume=resume,
                 second_stage=num_steps is None and num_epochs is None, compiled=compiled,
                 optimizer=optimizer, progress=progress)
    if run.family is not None and not run.family.takes_steps:
        return run.result(converged=True)
    start_steps = len(run.losses) if resume is None else run.history.get("start_steps", 0)
    run.history["start_steps"] = start_steps
    if num_epochs is not None:
        if run.batches is None:
            raise ValueError("num_epochs needs minibatches: pass batch_size")
        num_steps = num_epochs * run.batches.steps_per_epoch
    total = start_steps + (num_steps if num_steps is not None else max_steps)
    every = max(1, math.ceil(checkpoint_every / WINDOW)) * WINDOW
    best: tuple[float, dict[str, Any]] | None = None
    stale = best_step = 0
    validation_particles = _validation_particles(validation_data)
    validation: list[float] = list(run.history.get("validation_elbo", []))
    lead = run.rank == 0  # in data-parallel training, the process that writes and shows
    bar = tqdm(total=total, initial=run.num_steps, disable=not (progress and lead),
               desc="SVI", dynamic_ncols=True)
    ema = None
    try:
        while run.num_steps < total and (num_steps is not None or not run.converged) \
                and run.failure is None:
            loss = run.step()
            if not math.isfinite(loss):
                continue
            ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            bar.update(1)
            if progress and run.num_steps % 10 == 0:
                shown = {"elbo": f"{-ema:.4g}"} if run.objective.judged_by_elbo \
                    else {"loss": f"{ema:.4g}"}
                shown["lr"] = f"{run.schedule.lr:.2g}"
                if run.batches is not None:
                    shown["epoch"] = str(run.batches.epoch + 1)
                if validation:
                    shown["held_out"] = f"{validation[-1]:.4g}"
                bar.set_postfix(shown)
            if path is not None and run.step_in_window == 0 and run.num_steps % every == 0:
                run.history["validation_elbo"] = validation
                if lead:
                    run.save(path)
            if validation_data is not None and run.batches is not None \
                    and run.batches.position == run.batches.steps_per_epoch:
                held_out = run.estimate_elbo(num_particles=validation_particles,
                                             data=validation_data)[0]
                validation.append(held_out)
                if best is None or held_out > best[0]:
                    best, stale, best_step = (held_out, guide_state(run.guide)), 0, run.num_steps
                else:
                    stale += 1
                    if stale >= patience and run.num_steps - best_step >= EARLY_STOP_MIN_STEPS:
                        break
    finally:
        bar.close()
    run.history["validation_elbo"] = validation
    stopped_early = stale >= patience and run.num_steps - best_step >= EARLY_STOP_MIN_STEPS
    converged = run.converged or stopped_early  # a fixed step count is not a stop rule
    if best is not None and stopped_early and owner_module(run.guide) is not None:
        owner_module(run.guide).load_state_dict(best[1])  # the best epoch's guide ...
        run.step_in_window = 1  # ... as it was, not averaged with the window after it
    if run.failure is not None:
        converged = False
        warnings.warn(f"SVI gave up: {run.failure}", ConvergenceWarning, stacklevel=2)
    elif not converged and num_steps is None:
        warnings.warn(
            f"SVI did not converge in {max_steps} steps (the smoothed ELBO was still "
            "improving); pass a larger max_steps or a fixed num_steps",
            ConvergenceWarning, stacklevel=2)
    result = run.result(converged=converged)
    distributed.barrier()
    if path is not None and lead:
        path.unlink(missing_ok=True)
    return result


__all__ = [
    "ConvergenceWarning",
    "ELBO_FAMILIES",
    "NonFiniteLossError",
    "SVIFit",
    "SVIRun",
    "estimate_elbo",
    "fit",
]
