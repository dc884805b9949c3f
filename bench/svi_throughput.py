"""SVI throughput: steps per second of pyrovi.fit against plain Pyro and NumPyro.

``pyrovi fit (compiled)`` is the default: the ELBO on the model's log density traced
once (:mod:`pyrovi.infer.compiled`). ``pyrovi fit (Pyro ELBO)`` and ``pyrovi fit (Pyro
JIT)`` are the same engine with ``compiled=False`` (Pyro's ``Trace_ELBO`` and
``JitTrace_ELBO`` at every step), so the three rows show what the compiled path buys
inside one engine, and the ``pyro`` rows what plain Pyro costs.

All methods fit the same model and guide to the same simulated data:

    weights ~ Dirichlet(1, 1)
    locs    ~ Normal(0, 10)      (shape 2)
    scales  ~ LogNormal(0, 1)    (shape 2)
    x[n]    ~ sum_k weights[k] Normal(locs[k], scales[k])    (assignments summed out)

with a mean-field Gaussian guide (``AutoNormal``) and Adam(lr=0.01), one particle.

Timing
------
* ``pyrovi.fit`` does fixed work besides the loop (guide setup, the MAP/Laplace start by
  L-BFGS with ``init="auto"``, plate and parameter discovery, JIT compilation for
  ``elbo="jit"``, the final 1000-particle ELBO estimate).
  It is timed at ``num_steps=S`` and ``num_steps=S/2``; the loop rate is
  ``(S/2) / (t(S) - t(S/2))`` so the fixed costs cancel, and the fixed cost is
  ``2 t(S/2) - t(S)``. The rate of the whole call, ``S / t(S)``, is printed too.
* Plain Pyro loops are timed directly after warm-up steps (the first step builds the
  guide, and for ``JitTrace_ELBO`` traces and compiles); the warm-up time is the fixed cost.
* NumPyro ``svi.run(..., progress_bar=False)`` runs one ``lax.scan`` but retraces and
  recompiles it on every call (a fresh closure each time), so a warm-up call does not
  remove the compilation. It is therefore wrapped in ``jax.jit`` (after an eager
  ``svi.init``), called once to compile (the fixed cost) and timed on the second call.
  The whole-call rate is that of a plain ``svi.run`` call, compilation included.
* The Python loop of ``jax.jit(svi.update)`` is timed after one warm-up call, whose time
  (the compilation) is the fixed cost.

Before any timing every method runs once at a tiny size, so that one-off process costs
(lazy imports, JAX backend start-up) land on no method.

Quality check: every method's final ELBO (a 1000-particle estimate) is printed, with a
warning naming any method that ends well below the best. The autoguides' own start puts
``locs[0] == locs[1]``, a saddle of the mixture likelihood that SVI leaves only through
gradient noise; ``pyrovi.fit`` therefore runs with its default ``init="auto"`` (pass
``--init prior`` for the autoguide start; the per-step cost is the same either way).

Each measurement is repeated ``--repeats`` times, interleaving methods, and the median
is reported. Torch and XLA are pinned to one thread for a like-for-like comparison.

Run ``python bench/svi_throughput.py`` (a few minutes) or ``--quick`` for a smoke test.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal

import pyrovi
from pyrovi.infer.svi import ELBO_ESTIMATE_PARTICLES, estimate_elbo

LR = 0.01
TRUE_WEIGHTS = (0.3, 0.7)
TRUE_LOCS = (-2.0, 2.0)
TRUE_SCALES = (0.5, 1.0)


def simulate(n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws from the true two-component mixture (float32)."""
    rng = np.random.default_rng(seed)
    z = rng.choice(2, size=n, p=TRUE_WEIGHTS)
    x = rng.normal(np.take(TRUE_LOCS, z), np.take(TRUE_SCALES, z))
    return x.astype(np.float32)


def pyro_model(x: torch.Tensor) -> None:
    """The mixture in Pyro; ``x`` positional so that the JIT ELBOs can trace it."""
    weights = pyro.sample("weights", dist.Dirichlet(torch.ones(2)))
    locs = pyro.sample("locs", dist.Normal(0.0, 10.0).expand([2]).to_event(1))
    scales = pyro.sample("scales", dist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample(
            "x", dist.MixtureSameFamily(dist.Categorical(weights), dist.Normal(locs, scales)), obs=x
        )


# ----------------------------------------------------------------------------- results


class Run:
    """One timed run: loop rate, fixed cost, and the fit's quality."""

    def __init__(
        self,
        rate: float,
        fixed: float,
        elbo: float,
        tail_loss: float,
        whole_rate: float | None = None,
        particles: float = 1.0,
    ) -> None:
        self.rate = rate
        self.fixed = fixed
        self.elbo = elbo
        self.tail_loss = tail_loss
        self.whole_rate = whole_rate
        self.particles = particles


def _tail(losses: Any) -> float:
    """Mean loss over the last 10% of the steps."""
    losses = np.asarray(losses, dtype=float)
    return float(losses[-max(1, len(losses) // 10) :].mean())


def _elbo_torch(guide: Callable[..., Any], x: torch.Tensor) -> float:
    return estimate_elbo(pyro_model, guide, {"x": x}, num_particles=ELBO_ESTIMATE_PARTICLES)[0]


# ----------------------------------------------------------------------------- pyrovi


def _timed_fit(x: torch.Tensor, steps: int, elbo: str, init: str, compiled: bool
               ) -> tuple[float, Any]:
    start = time.perf_counter()
    result = pyrovi.fit(
        pyro_model,
        {"x": x},
        guide="mean_field",
        elbo=elbo,
        num_steps=steps,
        lr=LR,
        init=init,
        seed=0,
        compiled=compiled,
    )
    return time.perf_counter() - start, result


def run_pyrovi(x: torch.Tensor, steps: int, elbo: str, init: str, compiled: bool = True
               ) -> Run:
    half = steps // 2
    t_half, _ = _timed_fit(x, half, elbo, init, compiled)
    t_full, result = _timed_fit(x, steps, elbo, init, compiled)
    if compiled and not result.history["compiled"]["used"]:
        raise RuntimeError(f"the compiled path was not taken: {result.history['compiled']}")
    late = result.history["num_particles"][-(steps - half):]
    loop = t_full - t_half
    rate = (steps - half) / loop if loop > 0 else float("nan")  # noise swamped the loop
    fixed = t_half - loop * half / (steps - half) if loop > 0 else float("nan")
    return Run(
        rate=rate,
        fixed=fixed,
        elbo=result.elbo,
        tail_loss=_tail(result.losses),
        whole_rate=steps / t_full,
        particles=float(np.mean(late)),
    )


# ----------------------------------------------------------------------------- plain Pyro


def run_pyro(x: torch.Tensor, steps: int, jit: bool, warmup: int) -> Run:
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoNormal(pyro_model)
    loss = JitTrace_ELBO(ignore_jit_warnings=True) if jit else Trace_ELBO()
    svi = SVI(pyro_model, guide, pyro.optim.Adam({"lr": LR}), loss)
    start = time.perf_counter()
    for _ in range(warmup):
        svi.step(x)
    fixed = time.perf_counter() - start
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        losses.append(svi.step(x))
    elapsed = time.perf_counter() - start
    return Run(
        rate=steps / elapsed, fixed=fixed, elbo=_elbo_torch(guide, x), tail_loss=_tail(losses)
    )


# ----------------------------------------------------------------------------- NumPyro


def numpyro_available() -> bool:
    try:
        import numpyro  # noqa: F401
    except ImportError:
        return False
    return True


def _numpyro_setup(x_np: np.ndarray) -> tuple[Any, Any, Any, Any]:
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as ndist
    from numpyro.infer import SVI as NSVI
    from numpyro.infer import Trace_ELBO as NTrace_ELBO
    from numpyro.infer.autoguide import AutoNormal as NAutoNormal

    def model(x: Any) -> None:
        weights = numpyro.sample("weights", ndist.Dirichlet(jnp.ones(2)))
        locs = numpyro.sample("locs", ndist.Normal(0.0, 10.0).expand([2]).to_event(1))
        scales = numpyro.sample("scales", ndist.LogNormal(0.0, 1.0).expand([2]).to_event(1))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample(
                "x",
                ndist.MixtureSameFamily(
                    ndist.Categorical(probs=weights), ndist.Normal(locs, scales)
                ),
                obs=x,
            )

    guide = NAutoNormal(model)
    svi = NSVI(model, guide, numpyro.optim.Adam(LR), NTrace_ELBO())
    return svi, model, guide, jnp.asarray(x_np)


def _numpyro_elbo(model: Any, guide: Any, params: Any, x: Any) -> float:
    import jax
    from numpyro.infer import Trace_ELBO as NTrace_ELBO

    loss = NTrace_ELBO(num_particles=ELBO_ESTIMATE_PARTICLES).loss(
        jax.random.PRNGKey(1), params, model, guide, x
    )
    return -float(loss)


def run_numpyro_scan(x_np: np.ndarray, steps: int) -> Run:
    import jax

    svi, model, guide, x = _numpyro_setup(x_np)
    key = jax.random.PRNGKey(0)

    # svi.run as users call it: it retraces and recompiles its lax.scan on every call.
    start = time.perf_counter()
    plain = svi.run(key, steps, x, progress_bar=False)
    jax.block_until_ready(plain.losses)
    whole = time.perf_counter() - start

    # The same svi.run under jax.jit, so that a warm-up call compiles it once. The guide's
    # prototype must be built outside jit (it leaks tracers otherwise): init eagerly.
    state0 = svi.init(key, x)
    run = jax.jit(
        lambda state, data: svi.run(key, steps, data, progress_bar=False, init_state=state)
    )
    start = time.perf_counter()
    jax.block_until_ready(run(state0, x).losses)  # compiles, then runs
    warm = time.perf_counter() - start
    start = time.perf_counter()
    result = run(state0, x)
    jax.block_until_ready(result.losses)
    elapsed = time.perf_counter() - start
    return Run(
        rate=steps / elapsed,
        fixed=warm - elapsed,
        elbo=_numpyro_elbo(model, guide, result.params, x),
        tail_loss=_tail(result.losses),
        whole_rate=steps / whole,
    )


def run_numpyro_loop(x_np: np.ndarray, steps: int) -> Run:
    import jax

    svi, model, guide, x = _numpyro_setup(x_np)
    update = jax.jit(svi.update)
    start = time.perf_counter()
    state = svi.init(jax.random.PRNGKey(0), x)
    state, loss = update(state, x)  # compiles
    jax.block_until_ready(loss)
    fixed = time.perf_counter() - start
    losses = []
    start = time.perf_counter()
    for _ in range(steps):
        state, loss = update(state, x)
        losses.append(loss)
    jax.block_until_ready(state)
    elapsed = time.perf_counter() - start
    return Run(
        rate=steps / elapsed,
        fixed=fixed,
        elbo=_numpyro_elbo(model, guide, svi.get_params(state), x),
        tail_loss=_tail([float(v) for v in losses]),
    )


# ----------------------------------------------------------------------------- driver


def _median(values: Any) -> float:
    """Median of the finite values (NaN if none)."""
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def pin_threads() -> str:
    """One thread for torch and XLA; returns a line describing the settings."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set, or parallel work already started
        pass
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    flags = os.environ.get("XLA_FLAGS", "")
    # XLA reads its flags up to the first word without "--" and drops the rest silently,
    # so only "--" flags belong here (TensorFlow's intra_op_parallelism_threads is none)
    flag = "--xla_cpu_multi_thread_eigen=false"
    if flag.split("=")[0] not in flags:
        flags = f"{flags} {flag}".strip()
    os.environ["XLA_FLAGS"] = flags
    return (
        f"threads: torch {torch.get_num_threads()} (interop "
        f"{torch.get_num_interop_threads()}); JAX_PLATFORMS={os.environ['JAX_PLATFORMS']}, "
        f"XLA_FLAGS='{os.environ['XLA_FLAGS']}'"
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000, help="SVI steps S per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per method (median)")
    parser.add_argument("--n", type=int, default=1000, help="number of data points")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes for a smoke test (steps=40, repeats=1, n=50)",
    )
    parser.add_argument(
        "--init",
        choices=("auto", "prior"),
        default="auto",
        help="pyrovi.fit init: 'auto' (MAP/Laplace start, the library default; "
        "its cost cancels in the difference) or 'prior' (the autoguide's own "
        "start, which for this mixture is the symmetric saddle locs[0] == "
        "locs[1] that the fit may not leave); the loop rate is the same",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.n = 40, 1, 50
    if args.steps < 4 or args.repeats < 1 or args.n < 2:
        parser.error("need --steps >= 4, --repeats >= 1, --n >= 2")
    return args


def main(args: argparse.Namespace) -> dict[str, float]:
    """Run the benchmark, print the table, return method -> median steps/s."""
    threads = pin_threads()
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=".*ArviZ is undergoing.*")
    x_np = simulate(args.n, seed=0)
    x = torch.as_tensor(x_np)
    warmup = max(1, min(10, args.steps // 20))

    methods: dict[str, Callable[[], Run]] = {
        "pyrovi fit (compiled)": lambda: run_pyrovi(x, args.steps, "trace", args.init),
        "pyrovi fit (Pyro ELBO)": lambda: run_pyrovi(x, args.steps, "trace", args.init,
                                                     compiled=False),
        "pyrovi fit (Pyro JIT)": lambda: run_pyrovi(x, args.steps, "jit", args.init,
                                                    compiled=False),
        "pyro Trace_ELBO": lambda: run_pyro(x, args.steps, jit=False, warmup=warmup),
        "pyro JitTrace_ELBO": lambda: run_pyro(x, args.steps, jit=True, warmup=warmup),
    }
    have_numpyro = numpyro_available()
    if have_numpyro:
        methods["numpyro svi.run (scan)"] = lambda: run_numpyro_scan(x_np, args.steps)
        methods["numpyro jit(update) loop"] = lambda: run_numpyro_loop(x_np, args.steps)

    print(
        f"SVI throughput: 2-component 1-D GMM, N={args.n}, AutoNormal, Adam(lr={LR}), "
        f"S={args.steps} steps, median of {args.repeats}; pyrovi.fit init={args.init!r}"
    )
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"pyro {pyro.__version__}, pyrovi {getattr(pyrovi, '__version__', '?')}, "
        f"{os.cpu_count()} CPUs; pyro validation "
        f"{'on' if dist.is_validation_enabled() else 'off'}"
    )
    print(threads)
    if have_numpyro:
        import jax
        import numpyro

        print(
            f"numpyro {numpyro.__version__}, jax {jax.__version__} "
            f"({jax.default_backend()}, {jax.devices()[0]})"
        )
    else:
        print("numpyro not installed: skipping the NumPyro rows (pip install -e '.[bench]')")

    warm_methods = [
        lambda: run_pyrovi(x, 8, "trace", args.init),
        lambda: run_pyrovi(x, 8, "trace", args.init, compiled=False),
        lambda: run_pyrovi(x, 8, "jit", args.init, compiled=False),
        lambda: run_pyro(x, 4, jit=False, warmup=1),
        lambda: run_pyro(x, 4, jit=True, warmup=1),
    ]
    if have_numpyro:
        warm_methods += [lambda: run_numpyro_scan(x_np, 4), lambda: run_numpyro_loop(x_np, 4)]
    for method in warm_methods:  # one-off process costs, untimed
        method()

    runs: dict[str, list[Run]] = {name: [] for name in methods}
    for _ in range(args.repeats):  # interleave so that load drift hits all methods alike
        for name, method in methods.items():
            runs[name].append(method())

    med: dict[str, dict[str, float]] = {}
    for name, rs in runs.items():
        med[name] = {
            "rate": _median(r.rate for r in rs),
            "lo": min((r.rate for r in rs if math.isfinite(r.rate)), default=float("nan")),
            "hi": max((r.rate for r in rs if math.isfinite(r.rate)), default=float("nan")),
            "fixed": _median(r.fixed for r in rs),
            "elbo": _median(r.elbo for r in rs),
            "tail": _median(r.tail_loss for r in rs),
            "particles": _median(r.particles for r in rs),
        }
        if rs[0].whole_rate is not None:
            med[name]["whole"] = _median(r.whole_rate for r in rs)

    base = med["pyro Trace_ELBO"]["rate"]
    print()
    header = (
        f"{'method':<26} {'steps/s':>9} {'(min-max)':>15} {'vs pyro':>8} {'particles':>9} "
        f"{'fixed s':>8} {'whole-call steps/s':>19} {'final ELBO':>11} {'tail loss':>10}"
    )
    print(header)
    print("-" * len(header))
    for name, m in med.items():
        whole = f"{m['whole']:.0f}" if "whole" in m else "-"
        span = f"({m['lo']:.0f}-{m['hi']:.0f})"
        print(
            f"{name:<26} {m['rate']:>9.0f} {span:>15} {m['rate'] / base:>8.2f} "
            f"{m['particles']:>9.1f} {m['fixed']:>8.2f} "
            f"{whole:>19} {m['elbo']:>11.2f} {m['tail']:>10.2f}"
        )
    print()
    print(
        "steps/s: median loop-only rate over the repeats, fixed costs excluded (see the "
        "module docstring);\n(min-max): its range over the repeats; particles: mean "
        "particles per timed step (pyrovi's schedule adds particles late in a fit; the "
        "peers use one);\nfixed s: setup + compile (+ MAP init and final 1000-particle ELBO "
        "for pyrovi)."
    )
    print(
        f"final ELBO: {ELBO_ESTIMATE_PARTICLES}-particle estimate after the fit; "
        "tail loss: mean loss of the last 10% of steps."
    )

    best = max(m["elbo"] for m in med.values() if math.isfinite(m["elbo"]))
    tol = max(5.0, 0.005 * abs(best))
    behind = {
        name: best - m["elbo"] for name, m in med.items() if not best - m["elbo"] <= tol
    }  # also catches NaN
    if behind:
        print(
            "WARNING: final ELBO more than {:.1f} nats below the best ({:.2f}) for: {}; "
            "broken or not converged (a fit still on the symmetric saddle, or --quick)".format(
                tol, best, ", ".join(f"{k} (-{v:.1f})" for k, v in behind.items())
            )
        )
    else:
        spread = best - min(m["elbo"] for m in med.values())
        print(f"final ELBOs agree within {spread:.2f} nats (tolerance {tol:.1f})")

    compiled = med["pyrovi fit (compiled)"]
    ratios = [
        ("pyrovi/pyro", compiled["rate"] / base),
        ("pyrovi_per_particle/pyro", compiled["rate"] * compiled["particles"] / base),
        ("pyrovi/pyrovi_pyro_elbo", compiled["rate"] / med["pyrovi fit (Pyro ELBO)"]["rate"]),
    ]
    if have_numpyro:
        ratios.append(("numpyro/pyro", med["numpyro svi.run (scan)"]["rate"] / base))
        ratios.append(("numpyro_loop/pyro", med["numpyro jit(update) loop"]["rate"] / base))
    print("ratios: " + "  ".join(f"{k}={v:.2f}" for k, v in ratios))
    return {name: m["rate"] for name, m in med.items()}


if __name__ == "__main__":
    main(parse_args())
