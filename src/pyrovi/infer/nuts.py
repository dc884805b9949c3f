"""NUTS reference runs: :func:`nuts`.

Chains run in parallel worker processes (``fork``) where the platform allows, one after
another otherwise. Every chain records the per-draw sampler statistics ArviZ expects
(``diverging``, ``tree_depth``, ``step_size``, ``energy``, ``lp``), and a finished run is
checked: R-hat above ``RHAT_MAX``, bulk ESS below ``ESS_MIN`` or any divergence gives a
:class:`ReferenceQualityWarning`.

With ``cache=True`` a run is stored on disk under a key made of the model's source, the
data and the settings, with a SHA-256 checksum beside it; an entry that fails its
checksum or cannot be read is discarded and recomputed.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import multiprocessing as mp
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pyro
import torch
from pyro.infer.mcmc import MCMC, NUTS
from pyro.poutine.util import site_is_subsample

from pyrovi.infer.util import as_tensor_data

RHAT_MAX = 1.01
ESS_MIN = 400
DENSE_MASS_MAX_DIM = 50  # adapt a dense mass matrix up to this many latent dimensions
CACHE_ENV = "PYROVI_CACHE_DIR"


class ReferenceQualityWarning(UserWarning):
    """The NUTS reference shows signs of not having converged."""


class _RecordingNUTS(NUTS):
    """NUTS that records tree depth and the Hamiltonian of every transition.

    Relies on ``NUTS._build_tree`` and ``HMC._sample_r`` of pyro-ppl 1.9.
    """

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self.stats: dict[str, list[float]] = {"tree_depth": [], "energy": [], "step_size": [],
                                              "lp": []}
        self._depth = 0
        self._energy = float("nan")
        super().setup(warmup_steps, *args, **kwargs)

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


def _run_chain(model: Callable[..., Any], data: dict[str, Any], num_samples: int,
               num_warmup: int, seed: int, progress: bool, chain: int
               ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One chain: its draws (constrained) and its per-draw sampler statistics."""
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    full_mass = _latent_size(model, data) <= DENSE_MASS_MAX_DIM
    for jit in (True, False):  # the JIT potential is ~2x faster; not every model traces
        pyro.set_rng_seed(seed)
        kernel = _RecordingNUTS(model, jit_compile=jit, ignore_jit_warnings=True,
                                full_mass=full_mass)
        mcmc = MCMC(kernel, num_samples=num_samples, warmup_steps=num_warmup,
                    disable_progbar=not progress)
        try:
            mcmc.run(**data)
            break
        except Exception:  # noqa: BLE001 - retry without JIT, then let errors through
            if not jit:
                raise
    del chain  # chains differ by seed only
    draws = {k: v.detach().numpy() for k, v in mcmc.get_samples().items()}
    diverging = np.zeros(num_samples, dtype=bool)
    divergent_at = np.asarray(mcmc.diagnostics()["divergences"]["chain 0"], dtype=int)
    diverging[divergent_at[(divergent_at >= 0) & (divergent_at < num_samples)]] = True
    stats = {
        "diverging": diverging,
        "tree_depth": np.asarray(kernel.stats["tree_depth"], dtype=np.int64),
        "energy": np.asarray(kernel.stats["energy"]),
        "step_size": np.asarray(kernel.stats["step_size"]),
        "lp": np.asarray(kernel.stats["lp"]),
    }
    return draws, stats


def _latent_size(model: Callable[..., Any], data: dict[str, Any]) -> int:
    with pyro.poutine.block(), torch.no_grad():
        trace = pyro.poutine.trace(model).get_trace(**data)
    return sum(site["value"].numel() for site in trace.nodes.values()
               if site["type"] == "sample" and not site["is_observed"]
               and not site_is_subsample(site))


def _chain_in_child(conn: Any, args: tuple[Any, ...]) -> None:
    torch.set_num_threads(1)
    try:
        conn.send(("ok", _run_chain(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported in the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def _run_parallel(model: Callable[..., Any], data: dict[str, Any], num_samples: int,
                  num_warmup: int, seeds: list[int], progress: bool) -> list[Any]:
    ctx = mp.get_context("fork")
    pipes, procs = [], []
    for chain, seed in enumerate(seeds):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_chain_in_child, args=(
            child, (model, data, num_samples, num_warmup, seed, progress, chain)))
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    results = []
    for parent, proc in zip(pipes, procs, strict=True):
        try:
            status, payload = parent.recv()
        except EOFError:
            status, payload = "error", "worker process died"
        proc.join()
        if status != "ok":
            raise RuntimeError(payload)
        results.append(payload)
    return results


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


def check_reference(idata: az.InferenceData) -> list[str]:
    """Problems of a reference run in words (R-hat, bulk ESS, divergences); warns on each."""
    problems = []
    posterior = idata.posterior
    if posterior.sizes.get("chain", 1) > 1:
        with np.errstate(invalid="ignore", divide="ignore"):  # constant draws: 0 / 0
            rhat = az.rhat(posterior)
        worst = max(float(rhat[v].max()) for v in rhat.data_vars)
        if worst > RHAT_MAX:
            problems.append(f"R-hat is {worst:.3f} (> {RHAT_MAX})")
    ess = az.ess(posterior, method="bulk")
    lowest = min(float(ess[v].min()) for v in ess.data_vars)
    if lowest < ESS_MIN:
        problems.append(f"bulk ESS is {lowest:.0f} (< {ESS_MIN})")
    if "sample_stats" in idata.groups() and "diverging" in idata.sample_stats:
        count = int(idata.sample_stats["diverging"].sum())
        if count:
            problems.append(f"{count} divergent transitions")
    for problem in problems:
        warnings.warn(f"NUTS reference: {problem}", ReferenceQualityWarning, stacklevel=3)
    return problems


def cached_reference(model: Callable[..., Any], data: dict[str, Any], num_samples: int = 1000,
                     num_warmup: int = 1000, num_chains: int = 2, seed: int = 0
                     ) -> az.InferenceData | None:
    """The run :func:`nuts` with these arguments has cached, or None; never runs NUTS."""
    data = as_tensor_data(data)
    settings = {"num_samples": num_samples, "num_warmup": num_warmup,
                "num_chains": num_chains, "seed": seed}
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
        Draws kept and warm-up (adaptation) steps per chain.
    num_chains : int
        Number of chains; run in parallel processes where ``fork`` is available.
    seed : int
        Chain ``c`` is seeded with ``seed + c``.
    cache : bool
        Reuse (and store) the run in :func:`cache_dir` under :func:`cache_key`.
    progress : bool
        Show Pyro's progress bars (sequential chains).

    Returns
    -------
    arviz.InferenceData
        ``posterior`` (latent sites, constrained space) and ``sample_stats``
        (``diverging``, ``tree_depth``, ``step_size``, ``energy``, ``lp``).
    """
    data = as_tensor_data(data)
    settings = {"num_samples": num_samples, "num_warmup": num_warmup,
                "num_chains": num_chains, "seed": seed}
    path = cache_dir() / f"{cache_key(model, data, settings)}.nc"
    if cache:
        cached = _read_cache(path)
        if cached is not None:
            check_reference(cached)
            return cached
    seeds = [seed + c for c in range(num_chains)]
    results = None
    if num_chains > 1 and _can_fork() and not progress:
        try:
            results = _run_parallel(model, data, num_samples, num_warmup, seeds, progress)
        except Exception as exc:  # noqa: BLE001 - fall back to sequential chains
            warnings.warn(f"parallel chains failed ({exc}); running them one by one",
                          stacklevel=2)
            results = None
    if results is None:
        results = [_run_chain(model, data, num_samples, num_warmup, s, progress, c)
                   for c, s in enumerate(seeds)]
    posterior = {k: np.stack([r[0][k] for r in results]) for k in results[0][0]}
    stats = {k: np.stack([r[1][k] for r in results]) for k in results[0][1]}
    idata = az.from_dict(posterior=posterior, sample_stats=stats,
                         attrs={"inference_library": "pyro", "sampler": "NUTS"})
    if cache:
        _write_cache(path, idata)
    check_reference(idata)
    return idata
