"""NUTS reference runs: :func:`nuts`.

Every chain is Pyro's NUTS kernel (a dense mass matrix up to ``DENSE_MASS_MAX_DIM``
latent dimensions, a diagonal one above), driven step by step: set up and warmed up once,
then asked for draws. Chains run in parallel worker processes (``fork``) where the
platform allows, one after another otherwise; each has its own random stream (seed
``seed + c``), so both ways give the same draws. Every chain records the per-draw sampler
statistics ArviZ expects (``diverging``, ``tree_depth``, ``step_size``, ``energy``,
``lp``), and a finished run is checked: R-hat above ``RHAT_MAX``, bulk ESS below
``ESS_MIN`` or any divergence gives a :class:`ReferenceQualityWarning`.

Where the time goes, and the Laplace start
------------------------------------------
Pyro's NUTS builds its trees in Python: a leapfrog step costs about 0.45 ms on a small
model (the JIT-compiled potential and its gradient are 0.2 ms of it, the rest is the tree
building), so a run costs what its gradient evaluations number. Started as Pyro starts
(a point uniform in (-2, 2) in the unconstrained space, an identity mass matrix), a
badly scaled posterior needs trees of hundreds of steps until the first adaptation
window ends at step 100: on posteriordb's kidiq regression (intercept sd 6, slope sd
0.06, correlation -0.99) 21,000 of a chain's 29,600 gradient evaluations, 71% of the run.
So the chains start from the Laplace approximation instead. Before they start, the
posterior mode and the inverse Hessian there, ``L L^T``, are found once
(:func:`pyrovi.infer.laplace.find_map`: 0.1 s on kidiq or eight schools, 0.6 s more the
first time in a process; under a second on diamonds). Each chain starts at
``mode + L u`` with ``u`` uniform in (-2, 2)^d, Pyro's random start in the posterior's
own scale (the chains still start apart, for R-hat), and ``L L^T`` (its diagonal for a
diagonal mass matrix) is its initial inverse mass matrix; Pyro's windowed adaptation then
goes on as before. Gradient evaluations of one chain of 1,000 + 1,000 (seed 0), Pyro's
start -> the Laplace start: kidiq 29,600 -> 9,800, the linear regression of
:mod:`pyrovi.models.linear_regression` 26,100 -> 9,200, diamonds 53,600 -> 35,200,
mesquite 15,800 -> 13,700, a two-component mixture 11,900 -> 10,700, the GMM 14,000 ->
13,600; the non-centred eight schools 17,500 -> 18,300 (about 10% more over four seeds:
its joint mode, tau = 29, is far from the posterior's bulk, tau around 3.6, so the chains
start in its tail with a metric too narrow for theta). The metric alone is not enough:
started far from the mode, a chain with a metric of the posterior's scale crawls (on
diamonds, 63,500). Where there is no Laplace approximation (no mode with a
positive-definite Hessian, such as the centred eight schools; more than
``LAPLACE_MAX_DIM`` dimensions; sites that are not the kernel's, such as enumerated
discrete ones) a chain starts as Pyro starts it.

The adaptation keeps that scale. At the end of each window Pyro sets the inverse mass
matrix to Stan's regularised estimate, ``n / (n + 5) S + 1e-3 * 5 / (n + 5) I``; here the
identity is replaced by the Laplace covariance (:class:`_ShrunkToLaplace`), which is
Stan's form in the coordinates the Laplace approximation whitens. Towards the identity,
the ``1e-3`` swamps every direction of smaller variance: on posteriordb's kilpisjarvi (a
slope with an sd of about 0.01, correlated -0.9999 with its intercept) the step size fell
to 0.005 and most trees reached the maximal depth of 10, 172 s for one chain of 300 +
300; shrunk towards the Laplace covariance, a step size of 0.73, depths 2 to 3, 5 s.
A window with no more draws than dimensions keeps the metric it had (its estimate is
singular: on diamonds, 26 dimensions and Pyro's first slow window of 25 draws, it left
warm-up trees of over 100 steps).

Draws sized to the effective sample size
----------------------------------------
With ``target_ess`` the chains, once warmed up, draw in blocks of ``ESS_BLOCK`` and stop
as soon as the run passes the quality check (bulk ESS at least ``target_ess`` for every
scalar parameter and, with several chains, R-hat at most ``RHAT_MAX``), after at most
``num_samples`` draws per chain. A well-mixing posterior then stops after a few hundred
draws per chain (kidiq: 300 of 1,000, bulk ESS 550, the run 40% shorter); a hard one runs
to ``num_samples`` as before. It is not the default. A reference of ESS 400 carries a Monte
Carlo error of 0.05 sd in each mean, a quarter of the 0.2 sd within which
:mod:`pyrovi.diagnostics.verdict` trusts a fit, against 0.025 sd at the ESS of 1,600 to
1,900 that kidiq's default run has; the ESS estimate of a short run is itself noisy, and
stopping at the first block where it passes favours an estimate that is too high (in 12
seeded runs on the conjugate normal model, 10 of 96 mean errors exceeded 2 estimated
Monte Carlo standard errors, twice the normal rate; 3 of 48 at 1,000 draws). And a default
run keeps the draw count it is asked for, which the cached references of the tests are
stored under.

Cache
-----
With ``cache=True`` a run is stored on disk under a key made of the model's source, the
data and the settings (``target_ess`` among them when it is given), with a SHA-256
checksum beside it; an entry that fails its checksum or cannot be read is discarded and
recomputed. A repeat run reads the entry (tens of milliseconds).
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import multiprocessing as mp
import os
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pyro
import torch
import xarray as xr
from pyro.infer.mcmc import NUTS
from pyro.infer.mcmc.adaptation import BlockMassMatrix
from pyro.poutine.runtime import am_i_wrapped
from pyro.poutine.util import site_is_subsample
from tqdm.auto import tqdm

from pyrovi.guides import GaussianStart
from pyrovi.infer.laplace import find_map
from pyrovi.infer.util import as_tensor_data

RHAT_MAX = 1.01
ESS_MIN = 400
DENSE_MASS_MAX_DIM = 50  # adapt a dense mass matrix up to this many latent dimensions
CACHE_ENV = "PYROVI_CACHE_DIR"
ESS_BLOCK = 100  # draws per chain between two quality checks of a ``target_ess`` run

Draws = dict[str, np.ndarray]  # site -> draws of one chain, shape (draws, *site shape)


class ReferenceQualityWarning(UserWarning):
    """The NUTS reference shows signs of not having converged."""


class _RecordingNUTS(NUTS):
    """NUTS that records tree depth and the Hamiltonian of every transition, and starts
    from a Laplace approximation when given one: its initial point is drawn around the
    mode and its adaptation starts from the covariance as inverse mass matrix.

    Relies on ``NUTS._build_tree``, ``HMC._sample_r``, ``HMC._initialize_model_properties``,
    ``HMC._initialize_adapter`` and ``HMC._adapter`` of pyro-ppl 1.9, and on
    ``BlockMassMatrix._adapt_scheme`` and ``._inverse_mass_matrix`` (:class:`_ShrunkToLaplace`).
    """

    def __init__(self, model: Callable[..., Any], start: GaussianStart | None,
                 **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self._start = start

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self.stats: dict[str, list[float]] = {"tree_depth": [], "energy": [], "step_size": [],
                                              "lp": []}
        self._depth = 0
        self._energy = float("nan")
        super().setup(warmup_steps, *args, **kwargs)

    def _initialize_model_properties(self, model_args: Any, model_kwargs: Any) -> None:
        super()._initialize_model_properties(model_args, model_kwargs)
        if self._start is not None and not _same_sites(self._start, self.initial_params):
            self._start = None  # e.g. enumerated discrete sites: Pyro's start as it is
        if self._start is not None:
            point = _initial_point(self._start, self.initial_params, self.potential_fn)
            if point is not None:
                self.initial_params = point

    def _initialize_adapter(self) -> None:
        if self._start is not None:
            self._adapter.mass_matrix_adapter = _ShrunkToLaplace(self._start)
        super()._initialize_adapter()
        if self._start is not None:
            self.mass_matrix_adapter.inverse_mass_matrix = _inverse_mass(
                self._start, self.inverse_mass_matrix)
            if self._adapter.adapt_step_size:  # a step size that suits the new metric
                self._adapter.reset_step_size_adaptation(self.initial_params)

    def _sample_r(self, name: str) -> Any:
        r, r_unscaled = super()._sample_r(name)
        if self._potential_energy_last is not None:
            kinetic = self._kinetic_energy(r_unscaled)
            self._energy = float(kinetic + self._potential_energy_last)
        return r, r_unscaled

    def _build_tree(self, z: Any, r: Any, z_grads: Any, log_slice: Any, direction: Any,
                    tree_depth: int, energy_current: Any) -> Any:
        self._depth = max(self._depth, tree_depth + 1)
        return super()._build_tree(z, r, z_grads, log_slice, direction, tree_depth,
                                   energy_current)

    def sample(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        self._depth = 0
        step_size = float(self.step_size)
        out = super().sample(params)
        if self._t > self._warmup_steps:
            self.stats["lp"].append(-float(self._potential_energy_last))
            self.stats["tree_depth"].append(self._depth)
            self.stats["energy"].append(self._energy)
            self.stats["step_size"].append(step_size)
        return out


class _ShrunkToLaplace(BlockMassMatrix):
    """Pyro's block mass matrix with Stan's regularisation of each adapted covariance,
    ``n / (n + 5) S + 1e-3 * 5 / (n + 5) C``, shrunk towards the Laplace covariance ``C``
    rather than towards the identity: Stan's form in the coordinates the Laplace
    approximation whitens. Towards the identity, ``1e-3`` swamps every direction whose
    posterior variance is far below it (posteriordb's kilpisjarvi: a slope with an sd of
    about 0.01, correlated -0.9999 with the intercept), the step size collapses and trees
    reach the maximal depth. A dense block adapted from no more draws than its dimension
    (Pyro's first slow window has 25) keeps its metric: that estimate is singular, and
    shrunk only by ``1e-3`` towards ``C`` it leaves directions with almost no inverse
    mass (posteriordb's diamonds, 26 dimensions: warm-up trees of 100 and more steps)."""

    def __init__(self, start: GaussianStart) -> None:
        super().__init__()
        self._start = start

    def end_adaptation(self) -> None:
        adapted = {}
        for names, scheme in self._adapt_scheme.items():
            covariance = scheme.get_covariance(regularize=False)
            n = scheme.n_samples
            if covariance.dim() == 2 and n <= covariance.shape[0]:
                # fewer draws than dimensions: a singular estimate, the metric is kept
                adapted[names] = self._inverse_mass_matrix[names]
                continue
            laplace = _inverse_mass(self._start, {names: covariance})[names]
            adapted[names] = covariance * (n / (n + 5.0)) + laplace * (1e-3 * 5.0 / (n + 5.0))
        self.inverse_mass_matrix = adapted


def _same_sites(start: GaussianStart, params: dict[str, torch.Tensor]) -> bool:
    """Whether ``start`` lays out exactly the kernel's unconstrained sites."""
    return set(start.sites) == set(params) and all(
        hi - lo == params[name].numel() for name, (lo, hi, _) in start.sites.items())


def _initial_point(start: GaussianStart, params: dict[str, torch.Tensor],
                   potential_fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
                   tries: int = 10) -> dict[str, torch.Tensor] | None:
    """A point ``mode + L u`` with ``u`` uniform in (-2, 2)^d: Stan's and Pyro's random
    start, in the posterior's own scale (``L L^T`` the Laplace covariance) around its mode,
    so chains start apart and in the bulk; None if no try has a finite potential."""
    for _ in range(tries):
        u = torch.empty_like(start.loc).uniform_(-2.0, 2.0)
        flat = start.loc + start.dense_tril @ u
        point = {name: flat[lo:hi].reshape(params[name].shape).to(params[name])
                 for name, (lo, hi, _) in start.sites.items()}
        try:
            if torch.isfinite(potential_fn(point)).all():
                return point
        except (ValueError, RuntimeError):  # invalid distribution parameters there
            continue
    return None


def _inverse_mass(start: GaussianStart, blocks: dict[tuple[str, ...], torch.Tensor]
                  ) -> dict[tuple[str, ...], torch.Tensor]:
    """Pyro's inverse mass matrix blocks filled from the covariance of ``start``."""
    covariance = start.dense_tril @ start.dense_tril.T
    out = {}
    for names, current in blocks.items():
        index = torch.cat([torch.arange(*start.sites[name][:2]) for name in names])
        block = covariance[index][:, index].to(current)
        out[names] = block if current.dim() == 2 else block.diagonal()
    return out


def _laplace_start(model: Callable[..., Any], data: dict[str, Any], seed: int
                   ) -> GaussianStart | None:
    """The Laplace approximation the chains start their adaptation from, or None."""
    try:
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")
            torch.manual_seed(seed)  # the search starts from prior draws: the same each run
            start, _, _ = find_map(model, data, seed=seed)
    except Exception:  # noqa: BLE001 - no Laplace start: the identity, as Pyro starts
        return None
    if start is None or start.source != "laplace":
        return None
    return start


@contextlib.contextmanager
def _as_mcmc() -> Iterator[None]:
    """What ``pyro.infer.mcmc.MCMC.run`` puts around a kernel: no distribution validation
    (NaNs are expected while the step size adapts) and the kernel's own sample statements
    hidden from outer handlers. ``MCMC.run`` always blocks; here a block is pushed only
    when there are outer handlers, since without any a sample statement skips the handler
    stack altogether (the NUTS kernel makes 3 to 4 of them per leapfrog step)."""
    hide = pyro.poutine.block() if am_i_wrapped() else contextlib.nullcontext()
    with hide, pyro.validation_enabled(False):
        yield


class _Chain:
    """One chain of Pyro's NUTS: set up and warmed up on creation, then :meth:`draw`.

    The chain keeps its own torch random state between calls, so chains interleaved in
    one process give the draws each gives alone (and in its own process).
    """

    def __init__(self, model: Callable[..., Any], data: dict[str, Any], num_warmup: int,
                 seed: int, full_mass: bool, start: GaussianStart | None, progress: bool,
                 chain: int) -> None:
        self._bar = tqdm(total=num_warmup, desc=f"warmup [{chain}]", disable=not progress)
        for jit in (True, False):  # the JIT potential is ~2x faster; not every model traces
            pyro.set_rng_seed(seed)
            pyro.clear_param_store()
            self._bar.reset()
            self.kernel = _RecordingNUTS(model, start, jit_compile=jit,
                                         ignore_jit_warnings=True, full_mass=full_mass)
            try:
                with _as_mcmc():
                    self.kernel.setup(num_warmup, **data)
                    params = self.kernel.initial_params
                    for _ in range(num_warmup):
                        params = self.kernel.sample(params)
                        self._bar.update()
                break
            except Exception:  # noqa: BLE001 - retry without JIT, then let errors through
                if not jit:
                    raise
        self._params = params
        self._drawn = 0
        self._rng = torch.get_rng_state()
        self._bar.set_description(f"sample [{chain}]")

    def draw(self, num: int) -> tuple[Draws, dict[str, np.ndarray]]:
        """``num`` more draws (constrained) and their sampler statistics."""
        torch.set_rng_state(self._rng)
        self._bar.reset(total=self._drawn + num)
        self._bar.update(self._drawn)
        kept = []
        with _as_mcmc():
            for _ in range(num):
                self._params = self.kernel.sample(self._params)
                kept.append({k: v.detach().clone() for k, v in self._params.items()})
                self._bar.update()
        self._rng = torch.get_rng_state()
        draws = {}
        for name in sorted(self._params):
            value = torch.stack([row[name] for row in kept])
            transform = self.kernel.transforms.get(name)
            draws[name] = (transform.inv(value) if transform is not None else value).numpy()
        first, self._drawn = self._drawn, self._drawn + num
        divergent = np.asarray(self.kernel.diagnostics()["divergences"], dtype=int) - first
        diverging = np.zeros(num, dtype=bool)
        diverging[divergent[(divergent >= 0) & (divergent < num)]] = True
        recorded = {k: v[first:] for k, v in self.kernel.stats.items()}
        stats = {
            "diverging": diverging,
            "tree_depth": np.asarray(recorded["tree_depth"], dtype=np.int64),
            "energy": np.asarray(recorded["energy"]),
            "step_size": np.asarray(recorded["step_size"]),
            "lp": np.asarray(recorded["lp"]),
        }
        return draws, stats

    def close(self) -> None:
        self._bar.close()


ChainRun = tuple[Draws, dict[str, np.ndarray]]  # one chain's draws and sampler statistics


def _join(blocks: list[list[ChainRun]]) -> list[ChainRun]:
    """Blocks of draws (each a list over chains) joined per chain."""
    out = []
    for runs in zip(*blocks, strict=True):
        out.append(tuple({k: np.concatenate([run[i][k] for run in runs]) for k in runs[0][i]}
                         for i in (0, 1)))
    return out


def _draw(draw: Callable[[int], list[ChainRun]], num_samples: int,
          target_ess: float | None) -> list[ChainRun]:
    """Every chain's draws: ``num_samples`` at once, or with ``target_ess`` blocks of
    ``ESS_BLOCK`` until the run passes the quality check (at most ``num_samples``)."""
    blocks, drawn = [], 0
    while drawn < num_samples:
        size = num_samples - drawn if target_ess is None else min(ESS_BLOCK,
                                                                   num_samples - drawn)
        blocks.append(draw(size))
        drawn += size
        if target_ess is not None and drawn < num_samples:
            posterior = _posterior(_join(blocks))
            rhat, ess = _worst_rhat_and_ess(posterior)
            if ess >= target_ess and rhat <= RHAT_MAX:
                break
    return _join(blocks)


def _posterior(runs: list[ChainRun]) -> xr.Dataset:
    return az.convert_to_dataset({k: np.stack([run[0][k] for run in runs])
                                  for k in runs[0][0]})


def _latent_size(model: Callable[..., Any], data: dict[str, Any]) -> int:
    with pyro.poutine.block(), torch.no_grad():
        trace = pyro.poutine.trace(model).get_trace(**data)
    return sum(site["value"].numel() for site in trace.nodes.values()
               if site["type"] == "sample" and not site["is_observed"]
               and not site_is_subsample(site))


def _run_sequential(chain_args: list[tuple[Any, ...]], num_samples: int,
                    target_ess: float | None) -> list[ChainRun]:
    chains = [_Chain(*args) for args in chain_args]
    try:
        return _draw(lambda size: [chain.draw(size) for chain in chains], num_samples,
                     target_ess)
    finally:
        for chain in chains:
            chain.close()


def _chain_in_child(conn: Any, args: tuple[Any, ...]) -> None:
    """Worker: warm a chain up, then answer each block size with that many draws; 0 ends."""
    torch.set_num_threads(1)
    try:
        chain = _Chain(*args)
        while (size := conn.recv()) > 0:
            conn.send(("ok", chain.draw(size)))
    except BaseException as exc:  # noqa: BLE001 - reported in the parent
        with contextlib.suppress(OSError):
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _run_parallel(chain_args: list[tuple[Any, ...]], num_samples: int,
                  target_ess: float | None) -> list[ChainRun]:
    ctx = mp.get_context("fork")
    conns, procs = [], []

    def draw(size: int) -> list[ChainRun]:
        for conn in conns:
            conn.send(size)
        runs = []
        for conn in conns:
            try:
                status, payload = conn.recv()
            except EOFError:
                status, payload = "error", "worker process died"
            if status != "ok":
                raise RuntimeError(payload)
            runs.append(payload)
        return runs

    finished = False
    try:
        for args in chain_args:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_chain_in_child, args=(child, args))
            proc.start()
            child.close()
            conns.append(parent)
            procs.append(proc)
        runs = _draw(draw, num_samples, target_ess)
        finished = True
        return runs
    finally:
        for conn in conns:
            if finished:
                with contextlib.suppress(OSError):
                    conn.send(0)
            conn.close()
        for proc in procs:
            if not finished:
                proc.terminate()
            proc.join()


def _can_fork() -> bool:
    return "fork" in mp.get_all_start_methods() and not mp.current_process().daemon


def _model_source(model: Callable[..., Any]) -> str:
    try:
        return inspect.getsource(model)
    except (OSError, TypeError):
        return f"{getattr(model, '__module__', '')}.{getattr(model, '__qualname__', repr(model))}"


def cache_key(model: Callable[..., Any], data: dict[str, Any], settings: dict[str, Any]) -> str:
    """SHA-256 key of the model's source, the data and the sampler settings."""
    digest = hashlib.sha256()
    digest.update(_model_source(model).encode())
    for key in sorted(data):
        value = data[key]
        digest.update(key.encode())
        if isinstance(value, torch.Tensor):
            digest.update(str((value.dtype, tuple(value.shape))).encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        else:
            digest.update(repr(value).encode())
    digest.update(repr(sorted(settings.items())).encode())
    digest.update(f"pyro={pyro.__version__} torch={torch.__version__}".encode())
    return digest.hexdigest()[:32]


def cache_dir() -> Path:
    """Where reference runs are cached: ``$PYROVI_CACHE_DIR`` or ``~/.cache/pyrovi/nuts``."""
    root = os.environ.get(CACHE_ENV)
    return Path(root) if root else Path.home() / ".cache" / "pyrovi" / "nuts"


def _read_cache(path: Path) -> az.InferenceData | None:
    checksum = path.with_suffix(".sha256")
    if not (path.exists() and checksum.exists()):
        return None
    blob = path.read_bytes()
    if hashlib.sha256(blob).hexdigest() != checksum.read_text().strip():
        warnings.warn(f"discarding corrupted NUTS cache entry {path.name}", stacklevel=3)
        path.unlink(missing_ok=True)
        checksum.unlink(missing_ok=True)
        return None
    try:
        return az.from_netcdf(io.BytesIO(blob), engine="h5netcdf").load()
    except Exception:  # noqa: BLE001 - unreadable entry: recompute
        warnings.warn(f"discarding unreadable NUTS cache entry {path.name}", stacklevel=3)
        path.unlink(missing_ok=True)
        checksum.unlink(missing_ok=True)
        return None


def _write_cache(path: Path, idata: az.InferenceData) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        idata.to_netcdf(tmp, engine="h5netcdf")
        blob = Path(tmp).read_bytes()
        os.replace(tmp, path)
        checksum_tmp = path.with_suffix(".sha256.tmp")
        checksum_tmp.write_text(hashlib.sha256(blob).hexdigest())
        os.replace(checksum_tmp, path.with_suffix(".sha256"))
    finally:
        Path(tmp).unlink(missing_ok=True)


def _worst_rhat_and_ess(posterior: xr.Dataset) -> tuple[float, float]:
    """The largest R-hat (1.0 for one chain) and the smallest bulk ESS over scalar
    parameters."""
    worst = 1.0
    if posterior.sizes.get("chain", 1) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):  # constant draws: 0 / 0
            rhat = az.rhat(posterior)
        worst = max(float(rhat[v].max()) for v in rhat.data_vars)
    ess = az.ess(posterior, method="bulk")
    return worst, min(float(ess[v].min()) for v in ess.data_vars)


def check_reference(idata: az.InferenceData) -> list[str]:
    """Problems of a reference run in words (R-hat, bulk ESS, divergences); warns on each."""
    problems = []
    worst, lowest = _worst_rhat_and_ess(idata.posterior)
    if worst > RHAT_MAX:
        problems.append(f"R-hat is {worst:.3f} (> {RHAT_MAX})")
    if lowest < ESS_MIN:
        problems.append(f"bulk ESS is {lowest:.0f} (< {ESS_MIN})")
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        count = int(idata.sample_stats["diverging"].sum())
        if count:
            problems.append(f"{count} divergent transitions")
    for problem in problems:
        warnings.warn(f"NUTS reference: {problem}", ReferenceQualityWarning, stacklevel=3)
    return problems


def _settings(num_samples: int, num_warmup: int, num_chains: int, seed: int,
              target_ess: float | None) -> dict[str, Any]:
    """The settings of the cache key; ``target_ess`` only when given, so that the keys of
    runs without it are the keys they had before it existed."""
    settings: dict[str, Any] = {"num_samples": num_samples, "num_warmup": num_warmup,
                                "num_chains": num_chains, "seed": seed}
    if target_ess is not None:
        settings["target_ess"] = float(target_ess)
    return settings


def cached_reference(model: Callable[..., Any], data: dict[str, Any], num_samples: int = 1000,
                     num_warmup: int = 1000, num_chains: int = 2, seed: int = 0,
                     target_ess: float | None = None) -> az.InferenceData | None:
    """The run :func:`nuts` with these arguments has cached, or None; never runs NUTS."""
    data = as_tensor_data(data)
    settings = _settings(num_samples, num_warmup, num_chains, seed, target_ess)
    return _read_cache(cache_dir() / f"{cache_key(model, data, settings)}.nc")


def nuts(
    model: Callable[..., Any],
    data: dict[str, Any],
    num_samples: int = 1000,
    num_warmup: int = 1000,
    num_chains: int = 2,
    seed: int = 0,
    cache: bool = True,
    progress: bool = False,
    target_ess: float | None = None,
) -> az.InferenceData:
    """Run NUTS on ``model(**data)`` and return the draws as ``arviz.InferenceData``.

    Parameters
    ----------
    model : callable
        Pyro model called as ``model(**data)``; discrete latents must be enumerated or
        marginalised.
    data : dict
        The model's keyword arguments.
    num_samples, num_warmup : int
        Draws kept and warm-up (adaptation) steps per chain; with ``target_ess``,
        ``num_samples`` is the most draws per chain.
    num_chains : int
        Number of chains; run in parallel processes where ``fork`` is available.
    seed : int
        Chain ``c`` is seeded with ``seed + c``.
    cache : bool
        Reuse (and store) the run in :func:`cache_dir` under :func:`cache_key`.
    progress : bool
        Show a progress bar per chain (sequential chains).
    target_ess : float, optional
        Draw in blocks of ``ESS_BLOCK`` per chain and stop once the bulk ESS of every
        scalar parameter is at least this (``ESS_MIN`` is what :func:`check_reference`
        asks for) and, with several chains, R-hat is at most ``RHAT_MAX``. None (the
        default): exactly ``num_samples`` draws per chain.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` (latent sites, constrained space) and ``sample_stats``
        (``diverging``, ``tree_depth``, ``step_size``, ``energy``, ``lp``).
    """
    data = as_tensor_data(data)
    settings = _settings(num_samples, num_warmup, num_chains, seed, target_ess)
    path = cache_dir() / f"{cache_key(model, data, settings)}.nc"
    if cache:
        cached = _read_cache(path)
        if cached is not None:
            check_reference(cached)
            return cached
    full_mass = _latent_size(model, data) <= DENSE_MASS_MAX_DIM
    start = _laplace_start(model, data, seed)  # once, shared by the chains
    chain_args = [(model, data, num_warmup, seed + c, full_mass, start, progress, c)
                  for c in range(num_chains)]
    results = None
    if num_chains > 1 and _can_fork() and not progress:
        try:
            results = _run_parallel(chain_args, num_samples, target_ess)
        except Exception as exc:  # noqa: BLE001 - fall back to sequential chains
            warnings.warn(f"parallel chains failed ({exc}); running them one by one",
                          stacklevel=2)
            results = None
    if results is None:
        results = _run_sequential(chain_args, num_samples, target_ess)
    posterior = {k: np.stack([r[0][k] for r in results]) for k in results[0][0]}
    stats = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    idata = az.from_dict(posterior=posterior, sample_stats=stats,
                         attrs={"inference_library": "pyro", "sampler": "NUTS"})
    if cache:
        _write_cache(path, idata)
    check_reference(idata)
    return idata
