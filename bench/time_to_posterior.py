"""Time to posterior: pyrovi.fit, plain Pyro SVI, pyrovi.nuts and NumPyro NUTS, with accuracy.

For every public gauntlet posterior (the Pyro ports in ``bench/posteriordb/ports.py``) it
times, wall clock, the road to a posterior by four methods and scores each posterior
against posteriordb's reference draws:

* ``pyrovi.fit(model, data, guide=g)`` with its defaults, for each ``--guides`` family
  (default ``mean_field``, the gauntlet's fits): the whole call (MAP/Laplace start, the
  loop to convergence, the final ELBO estimate).
* plain Pyro SVI: the gauntlet's baseline (``run_baseline`` in ``bench/posteriordb.py``:
  the family's Pyro autoguide, ``AutoNormal`` for mean_field, ``ClippedAdam(0.01)``,
  ``Trace_ELBO``, 10,000 steps, float32); the loop's seconds.
* ``pyrovi.nuts(model, data)`` with its defaults: 2 chains of 1000 warm-up + 1000 draws,
  one forked process per chain, a dense mass matrix. It is called with ``cache=True`` on
  an empty cache (``PYROVI_CACHE_DIR`` points at a temporary directory, so the user's
  cache is untouched): a fresh run, plus the write of its cache entry (tens of ms), which
  saves a second full run with ``cache=False``. The same call again is the ``repeat``
  column: what a user waits for the second time (goal: 0 s).
* NumPyro NUTS on the NumPyro port of the same posterior
  (``bench/posteriordb/numpyro_ports.py``; ``--check-ports`` checks that its log joint is
  Pyro's): 2 chains of 1000 warm-up + 1000 draws with the adaptation ``pyrovi.nuts`` uses
  (a dense mass matrix up to ``DENSE_MASS_MAX_DIM`` latent dimensions, every posterior
  here; target acceptance 0.8, tree depth 10, as both libraries default), in float64. The
  two chains run in parallel like ``pyrovi.nuts``' two processes:
  ``XLA_FLAGS=--xla_force_host_platform_device_count=2`` gives XLA two CPU devices and
  ``chain_method="parallel"`` puts one chain on each. A fresh ``MCMC.run`` is timed end
  to end, compilation included.

Threads: torch gets one thread (each ``pyrovi.nuts`` process too) and XLA one thread per
device (``pin_threads`` of ``bench/svi_throughput.py``:
``--xla_cpu_multi_thread_eigen=false``). So ``pyrovi.fit`` and Pyro SVI use one core, both
NUTS runs two. Before any timing every method runs once on a toy model, so that one-off
process costs (lazy imports, JAX start-up, the first fork) land on no posterior. The
``load`` column is the machine's 1-minute load average, the mean of one sample after
each method: well above the number of cores, other processes shared the CPU and the
seconds are inflated.

Accuracy: each method's draws (2000 from a fit's guide, every NUTS draw, deterministic
sites included) go through ``pyrovi.compare`` against the reference, and the gauntlet's
``_table_stats`` gives ``maxz`` (max over scalar parameters of |mean - ref mean| / ref
sd) and ``sdratio`` (the sd / ref sd farthest from 1; its max(r, 1/r) is the worst sd
ratio). A fit's ``verdict`` is pyrovi's.

Ratios, per row: ``numpyro/fit`` (goal > 1 everywhere), ``nuts/fit`` (goal >= 20 in the
median) and ``nuts/numpyro`` (goal <= 2). The last line says which goals pass; with
``--before CSV`` (an earlier run of this script) it also says whether each fit's accuracy
is unchanged (max |z| at most ``MAXZ_SLACK`` higher, worst sd ratio at most a factor
``SDRATIO_SLACK`` further from 1) and how much faster the fits got.

    python bench/time_to_posterior.py --posteriordb PATH [--posteriors a,b] [--quick]

``--quick`` is a smoke run with tiny settings (``pyrovi.fit(max_steps=300)``, 200 SVI
steps, 50 + 50 NUTS draws per chain); ``--check-ports`` only runs the port check.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
GOAL_NUMPYRO_OVER_FIT = 1.0  # pyrovi.fit faster than NumPyro NUTS on every posterior
GOAL_NUTS_OVER_FIT = 20.0  # pyrovi.fit >= 20x faster than pyrovi.nuts in the median
GOAL_NUTS_OVER_NUMPYRO = 2.0  # pyrovi.nuts at most 2x NumPyro NUTS
GOAL_REPEAT_SECONDS = 1.0  # a cached pyrovi.nuts repeat: "0 s"
MAXZ_SLACK = 0.05  # --before: a fit's max |z| may rise this much (Monte Carlo noise)
SDRATIO_SLACK = 1.1  # --before: and its worst sd ratio move this factor further from 1
XLA_DEVICES = "--xla_force_host_platform_device_count=2"


@dataclass(frozen=True)
class Settings:
    """What each method runs: pyrovi.fit's extra keywords, SVI steps, NUTS draws."""

    fit_kwargs: dict[str, Any] = field(default_factory=dict)
    svi_steps: int = 10_000
    num_warmup: int = 1000
    num_samples: int = 1000
    num_chains: int = 2


FULL = Settings()
QUICK = Settings(fit_kwargs={"max_steps": 300}, svi_steps=200, num_warmup=50, num_samples=50)


def load_script(name: str, path: Path) -> Any:
    """A bench script as a module (bench is no package), loaded once by path."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def gauntlet() -> Any:
    """``bench/posteriordb.py``: the ports, ``run_baseline``, ``_table_stats``."""
    return load_script("pyrovi_bench_posteriordb", HERE / "posteriordb.py")


def numpyro_ports() -> Any:
    """``bench/posteriordb/numpyro_ports.py`` (imports JAX: call after :func:`pin_threads`)."""
    return load_script("pyrovi_bench_numpyro_ports", HERE / "posteriordb" / "numpyro_ports.py")


def pin_threads() -> str:
    """One torch thread, one XLA thread per device and two XLA CPU devices; before JAX loads."""
    line = load_script("pyrovi_bench_svi_throughput", HERE / "svi_throughput.py").pin_threads()
    if "xla_force_host_platform_device_count" not in os.environ["XLA_FLAGS"]:
        # first: XLA stops reading XLA_FLAGS at the first word without "--"
        os.environ["XLA_FLAGS"] = f"{XLA_DEVICES} {os.environ['XLA_FLAGS']}"
    return line.split("XLA_FLAGS=")[0] + f"XLA_FLAGS='{os.environ['XLA_FLAGS']}'"


# ----------------------------------------------------------------------------- the methods


def _stats(draws: Any, ref: Any, seed: int) -> tuple[float, float]:
    """(max |z|, worst sd ratio) of draws (InferenceData or SVIFit) against the reference."""
    import pyrovi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z, ratio, _ = gauntlet()._table_stats(pyrovi.compare(draws, ref, seed=seed))
    return z, ratio


def _warning_names(caught: list[warnings.WarningMessage]) -> str:
    return ",".join(sorted({w.category.__name__ for w in caught
                            if w.category.__module__.startswith("pyrovi")}))


def time_fit(port: Any, data: dict[str, Any], ref: Any, guide: str, settings: Settings,
             seed: int) -> dict[str, Any]:
    """``pyrovi.fit`` with defaults: its seconds, accuracy, verdict and pyrovi warnings."""
    import pyrovi

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        fit = pyrovi.fit(port.model, data, guide=guide, seed=seed, **settings.fit_kwargs)
        seconds = time.perf_counter() - start
    with gauntlet().load_ports().fit_context(fit), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cmp = pyrovi.compare(fit, ref, seed=seed)
    z, ratio, _ = gauntlet()._table_stats(cmp)
    return {"sec_fit": seconds, "maxz_fit": z, "sdratio_fit": ratio,
            "verdict_fit": str(cmp.summary["verdict"]), "warnings": _warning_names(caught)}


def time_svi(port: Any, data: dict[str, Any], ref: Any, guide: str, settings: Settings,
             seed: int) -> dict[str, Any]:
    """Plain Pyro SVI (the gauntlet's ``run_baseline``): the loop's seconds and accuracy."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = gauntlet().run_baseline(port.model, data, guide, steps=settings.svi_steps,
                                      seed=seed)
        draws = gauntlet().guide_draws(port.model, run["guide"], data, seed=seed)
    z, ratio = _stats(draws, ref, seed)
    return {"sec_svi": run["seconds"], "maxz_svi": z, "sdratio_svi": ratio}


def with_deterministic(model: Any, data: dict[str, Any], idata: Any) -> Any:
    """NUTS draws of ``model``'s latent sites plus its ``pyro.deterministic`` sites."""
    import arviz as az
    from pyro.infer import Predictive

    from pyrovi.infer.util import deterministic_sites

    names = deterministic_sites(model, data)
    posterior = {k: np.asarray(v.values) for k, v in idata.posterior.data_vars.items()}
    if not names:
        return idata
    chains, draws = next(iter(posterior.values())).shape[:2]
    flat = {k: torch.as_tensor(v.reshape(chains * draws, *v.shape[2:]))
            for k, v in posterior.items()}
    with torch.no_grad():
        out = Predictive(model, posterior_samples=flat, return_sites=names)(**data)
    for name in names:
        values = out[name].detach().to(torch.float64).numpy()
        posterior[name] = values.reshape(chains, draws, *values.shape[1:])
    return az.from_dict(posterior=posterior)


def time_pyrovi_nuts(port: Any, data: dict[str, Any], ref: Any, settings: Settings,
                     seed: int) -> dict[str, Any]:
    """``pyrovi.nuts`` on an empty cache (fresh) and again (cached): seconds, accuracy."""
    import pyrovi

    kwargs = {"num_samples": settings.num_samples, "num_warmup": settings.num_warmup,
              "num_chains": settings.num_chains, "seed": seed, "cache": True}
    with tempfile.TemporaryDirectory() as cache:
        before = os.environ.get("PYROVI_CACHE_DIR")
        os.environ["PYROVI_CACHE_DIR"] = cache
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                start = time.perf_counter()
                idata = pyrovi.nuts(port.model, data, **kwargs)
                seconds = time.perf_counter() - start
                start = time.perf_counter()
                pyrovi.nuts(port.model, data, **kwargs)
                repeat = time.perf_counter() - start
        finally:
            if before is None:
                os.environ.pop("PYROVI_CACHE_DIR", None)
            else:
                os.environ["PYROVI_CACHE_DIR"] = before
    z, ratio = _stats(with_deterministic(port.model, data, idata), ref, seed)
    row = {"sec_nuts": seconds, "sec_nuts_repeat": repeat, "maxz_nuts": z,
           "sdratio_nuts": ratio}
    if _warning_names(caught):
        row["nuts_warnings"] = _warning_names(caught)
    return row


def time_numpyro_nuts(port: Any, data: dict[str, Any], ref: Any, settings: Settings,
                      seed: int) -> dict[str, Any]:
    """NumPyro NUTS on the NumPyro port, chains in parallel: seconds, accuracy, divergences."""
    import arviz as az
    import jax
    from numpyro.infer import MCMC, NUTS

    from pyrovi.infer.nuts import DENSE_MASS_MAX_DIM
    from pyrovi.infer.util import deterministic_sites, posterior_sites

    nports = numpyro_ports()
    jax_data = nports.as_jax(data)  # float64 (enables x64)
    deterministic = set(deterministic_sites(port.model, data))
    size = sum(math.prod(shape) for name, shape in posterior_sites(port.model, data).items()
               if name not in deterministic)
    parallel = jax.local_device_count() >= settings.num_chains
    start = time.perf_counter()
    kernel = NUTS(nports.MODELS[port.name], dense_mass=size <= DENSE_MASS_MAX_DIM)
    mcmc = MCMC(kernel, num_warmup=settings.num_warmup, num_samples=settings.num_samples,
                num_chains=settings.num_chains, progress_bar=False,
                chain_method="parallel" if parallel else "sequential")
    mcmc.run(jax.random.PRNGKey(seed), extra_fields=("diverging",), **jax_data)
    samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
    seconds = time.perf_counter() - start
    idata = az.from_dict(posterior={k: np.asarray(v, dtype=np.float64)
                                    for k, v in samples.items()})
    z, ratio = _stats(idata, ref, seed)
    return {"sec_numpyro": seconds, "maxz_numpyro": z, "sdratio_numpyro": ratio,
            "div_numpyro": int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum()),
            "numpyro_chains": "parallel" if parallel else "sequential"}


# ----------------------------------------------------------------------------- warm-up


def _toy_pyro(N: int, y: torch.Tensor) -> None:
    import pyro
    import pyro.distributions as dist

    mu = pyro.sample("mu", dist.Normal(torch.zeros((), dtype=y.dtype), 1.0))
    with pyro.plate("data", N, dim=-1):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _toy_numpyro(N: int, y: Any) -> None:
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", N):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def warm_up(guides: list[str]) -> None:
    """Every method once on a toy model, untimed: imports, JAX start-up, the first fork."""
    import pyrovi

    data = {"N": 10, "y": torch.linspace(-1.0, 1.0, 10)}
    toy = type("Toy", (), {"name": "toy", "model": staticmethod(_toy_pyro)})
    numpyro_ports().MODELS.setdefault("toy", _toy_numpyro)
    tiny = Settings(svi_steps=5, num_warmup=10, num_samples=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pyrovi.nuts(_toy_pyro, data, num_samples=50, num_warmup=50, cache=False)
        for guide in guides:
            time_fit(toy, data, ref, guide, Settings(fit_kwargs={"num_steps": 20}), 0)
            time_svi(toy, data, ref, guide, tiny, 0)
        time_pyrovi_nuts(toy, data, ref, tiny, 0)
        time_numpyro_nuts(toy, data, ref, tiny, 0)
    del numpyro_ports().MODELS["toy"]


# ----------------------------------------------------------------------------- table


def run_posterior(pdb_root: str, name: str, guides: list[str], settings: Settings,
                  seed: int, bar: Any = None) -> list[dict[str, Any]]:
    """Every method on one posterior: one row per guide family (the NUTS columns shared)."""
    import pyrovi

    ports = gauntlet().load_ports()
    port = ports.POSTERIORS[name]
    _, data, ref_path = ports.load_posterior(pdb_root, name)
    ref = pyrovi.load_reference(ref_path)
    shared: dict[str, Any] = {}
    errors: list[str] = []
    loads: list[float] = []
    for label, method in (("pyrovi.nuts", time_pyrovi_nuts), ("numpyro", time_numpyro_nuts)):
        if bar is not None:
            bar.set_postfix_str(f"{name[:24]} {label}")
        try:
            shared.update(method(port, data, ref, settings, seed))
        except Exception as exc:  # noqa: BLE001 - one failing method must not stop the run
            errors.append(f"{label}: {gauntlet()._one_line(exc)}")
        loads.append(os.getloadavg()[0])
    rows = []
    for guide in guides:
        row: dict[str, Any] = {"posterior": name, "guide": guide}
        row_errors = list(errors)
        for label, method in (("pyrovi.fit", time_fit), ("svi", time_svi)):
            if bar is not None:
                bar.set_postfix_str(f"{name[:24]} {label} {guide}")
            try:
                row.update(method(port, data, ref, guide, settings, seed))
            except Exception as exc:  # noqa: BLE001
                row_errors.append(f"{label}: {gauntlet()._one_line(exc)}")
            loads.append(os.getloadavg()[0])
        row.update(shared)
        row["load"] = float(np.mean(loads))
        if row_errors:
            row["error"] = " | ".join(row_errors)
        rows.append(add_ratios(row))
    return rows


def add_ratios(row: dict[str, Any]) -> dict[str, Any]:
    """The ratio columns of a row (NaN where a method failed)."""
    def ratio(a: str, b: str) -> float:
        return row[a] / row[b] if a in row and b in row else math.nan

    row["numpyro/fit"] = ratio("sec_numpyro", "sec_fit")
    row["nuts/fit"] = ratio("sec_nuts", "sec_fit")
    row["nuts/numpyro"] = ratio("sec_nuts", "sec_numpyro")
    return row


COLUMNS = ["posterior", "guide", "sec_fit", "sec_svi", "sec_nuts", "sec_nuts_repeat",
           "sec_numpyro", "numpyro/fit", "nuts/fit", "nuts/numpyro", "maxz_fit", "maxz_svi",
           "maxz_nuts", "maxz_numpyro", "sdratio_fit", "sdratio_svi", "sdratio_nuts",
           "sdratio_numpyro", "verdict_fit", "div_numpyro", "load", "numpyro_chains", "warnings",
           "nuts_warnings", "error"]


def format_table(table: pd.DataFrame) -> str:
    """The table as text: seconds to 0.1 s (repeat to 0.01 s), the rest to 2-3 digits."""
    shown = table.copy()
    formats = {"sec_nuts_repeat": "{:.2f}", "numpyro/fit": "{:.2f}", "nuts/fit": "{:.1f}",
               "nuts/numpyro": "{:.2f}", "load": "{:.1f}"}
    for col in shown.columns:
        if col.startswith(("sec_", "maxz_", "sdratio_")) or col in formats:
            fmt = formats.get(col, "{:.1f}" if col.startswith("sec_") else "{:.3f}")
            shown[col] = shown[col].map(lambda v, f=fmt: f.format(v) if pd.notna(v) else "")
    shown["posterior"] = shown["posterior"].map(lambda v: v.split("-", 1)[-1])
    shown["error"] = shown["error"].map(lambda v: v[:100] if isinstance(v, str) else v)
    shown = shown.drop(columns=["numpyro_chains"]).astype(object).fillna("")
    return shown.to_string(index=False)


def _accuracy_kept(table: pd.DataFrame, before: pd.DataFrame) -> tuple[int, int, list[str]]:
    """Rows whose fit is no less accurate than in ``before``: (kept, compared, worse)."""
    merged = table.merge(before, on=["posterior", "guide"], suffixes=("", "_before"))
    kept, worse = 0, []
    for _, r in merged.iterrows():
        if pd.isna(r["maxz_fit"]) or pd.isna(r["maxz_fit_before"]):
            continue
        spread = abs(math.log(r["sdratio_fit"]))
        spread_before = abs(math.log(r["sdratio_fit_before"]))
        if (r["maxz_fit"] <= r["maxz_fit_before"] + MAXZ_SLACK
                and spread <= spread_before + math.log(SDRATIO_SLACK)):
            kept += 1
        else:
            worse.append(f"{r['posterior']}/{r['guide']}")
    compared = int(merged[["maxz_fit", "maxz_fit_before"]].notna().all(axis=1).sum())
    return kept, compared, worse


def goals_line(table: pd.DataFrame, before: pd.DataFrame | None = None) -> str:
    """Which goals of the fast-fits issue pass, as text (last lines of the output)."""
    def mark(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    per_posterior = table.drop_duplicates("posterior")
    numpyro_fit = table["numpyro/fit"].dropna()
    nuts_fit = table["nuts/fit"].dropna()
    nuts_numpyro = per_posterior["nuts/numpyro"].dropna()
    repeat = per_posterior["sec_nuts_repeat"].dropna()
    cached = len(repeat) > 0 and repeat.max() <= GOAL_REPEAT_SECONDS
    faster = int((numpyro_fit > GOAL_NUMPYRO_OVER_FIT).sum())
    median = float(nuts_fit.median()) if len(nuts_fit) else math.nan
    close = int((nuts_numpyro <= GOAL_NUTS_OVER_NUMPYRO).sum())
    lines = [
        f"goals: pyrovi.fit faster than NumPyro NUTS in {faster}/{len(numpyro_fit)} rows "
        f"(min NumPyro/fit {numpyro_fit.min():.2f}): "
        f"{mark(len(numpyro_fit) > 0 and faster == len(numpyro_fit))}",
        f"       median pyrovi.nuts/pyrovi.fit {median:.1f} (goal >= {GOAL_NUTS_OVER_FIT:g}): "
        f"{mark(median >= GOAL_NUTS_OVER_FIT)}",
        f"       pyrovi.nuts <= {GOAL_NUTS_OVER_NUMPYRO:g}x NumPyro NUTS in "
        f"{close}/{len(nuts_numpyro)} posteriors (max {nuts_numpyro.max():.2f}): "
        f"{mark(len(nuts_numpyro) > 0 and close == len(nuts_numpyro))}",
        f"       cached pyrovi.nuts repeat max {repeat.max():.2f} s (goal ~0 s, <= "
        f"{GOAL_REPEAT_SECONDS:g} s): {mark(cached)}",
    ]
    if before is None:
        lines.append("       accuracy unchanged: not judged (give --before CSV, an earlier run)")
    else:
        kept, compared, worse = _accuracy_kept(table, before)
        merged = table.merge(before, on=["posterior", "guide"], suffixes=("", "_before"))
        speedup = (merged["sec_fit_before"] / merged["sec_fit"]).dropna()
        lines.append(
            f"       accuracy unchanged (max |z| <= before + {MAXZ_SLACK}, sd ratio within "
            f"x{SDRATIO_SLACK} of before) in {kept}/{compared} rows"
            + (f" (worse: {', '.join(worse)})" if worse else "")
            + f": {mark(compared > 0 and kept == compared)}; pyrovi.fit speed-up over "
            f"before: median {speedup.median():.2f}x (min {speedup.min():.2f}x)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- port check


def check_ports(pdb_root: str, names: list[str]) -> pd.DataFrame:
    """The NumPyro ports' log joints against the Pyro ports' at reference draws."""
    ports = gauntlet().load_ports()
    nports = numpyro_ports()
    rows = []
    for name in tqdm(names, desc="check ports", dynamic_ncols=True):
        _, data, ref_path = ports.load_posterior(pdb_root, name)
        rows.append(nports.check_port(ports.POSTERIORS[name], data, ports.read_draws(ref_path)))
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posteriordb", default=os.environ.get("POSTERIORDB"),
                        help="local posteriordb tree (default: env POSTERIORDB)")
    parser.add_argument("--posteriors", default=None,
                        help="comma-separated posterior names (default: every port that has a "
                             "NumPyro port)")
    parser.add_argument("--guides", default="mean_field",
                        help="comma-separated guide families of pyrovi.fit and Pyro SVI "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: pyrovi.fit(max_steps=300), 200 SVI steps, "
                             "50 + 50 NUTS draws per chain")
    parser.add_argument("--out", default="time_to_posterior.csv", help="CSV of the table")
    parser.add_argument("--before", default=None, metavar="CSV",
                        help="an earlier run's CSV: judge 'accuracy unchanged' and the "
                             "pyrovi.fit speed-up against it")
    parser.add_argument("--check-ports", action="store_true",
                        help="only check the NumPyro ports against the Pyro ports (log "
                             "joints at reference draws) and print the table")
    return parser.parse_args(argv)


def _commit() -> str:
    try:
        out = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv: list[str] | None = None) -> pd.DataFrame:
    args = parse_args(argv)
    threads = pin_threads()
    if not args.posteriordb:
        raise SystemExit("give --posteriordb PATH (or set POSTERIORDB) to a posteriordb tree")
    ports = gauntlet().load_ports()
    names = ([n.strip() for n in args.posteriors.split(",") if n.strip()] if args.posteriors
             else [n for n in ports.POSTERIORS if n in numpyro_ports().MODELS])
    unknown = [n for n in names if n not in ports.POSTERIORS]
    if unknown:
        raise SystemExit(f"not ported: {unknown}; ported: {', '.join(ports.POSTERIORS)}")
    if args.check_ports:
        table = check_ports(args.posteriordb, names)
        print(table.to_string(index=False))
        print(f"ports agree (relative log-joint difference <= "
              f"{numpyro_ports().CHECK_RTOL:g}, same sites): "
              f"{int(table['pass'].sum())}/{len(table)}")
        return table
    guides = [g.strip() for g in args.guides.split(",") if g.strip()]
    unknown = [g for g in guides if g not in gauntlet().BASELINE_GUIDES]
    if unknown:
        raise SystemExit(f"unknown guide families {unknown}; "
                         f"known: {', '.join(gauntlet().BASELINE_GUIDES)}")
    settings = QUICK if args.quick else FULL

    import jax
    import numpyro
    import pyro

    import pyrovi

    extra = "".join(f", {k}={v}" for k, v in settings.fit_kwargs.items())
    print(f"time to posterior: {len(names)} posteriors, guides {','.join(guides)}; "
          f"pyrovi.fit defaults{extra}; Pyro SVI {settings.svi_steps} "
          f"steps; NUTS {settings.num_chains} chains x ({settings.num_warmup} warm-up + "
          f"{settings.num_samples} draws); seed {args.seed}")
    print(f"pyrovi {pyrovi.__version__} from {Path(pyrovi.__file__).parent} (repository at "
          f"commit {_commit()}), pyro {pyro.__version__}, "
          f"torch {torch.__version__}, numpyro {numpyro.__version__}, jax {jax.__version__}; "
          f"{os.cpu_count()} CPUs; {threads}; {dt.date.today().isoformat()}", flush=True)
    warm_up(guides)
    rows: list[dict[str, Any]] = []
    bar = tqdm(names, desc="time to posterior", dynamic_ncols=True)
    for name in bar:
        try:
            rows.extend(run_posterior(args.posteriordb, name, guides, settings, args.seed, bar))
        except Exception as exc:  # noqa: BLE001 - loading failed: report it in the row
            rows.append({"posterior": name, "error": gauntlet()._one_line(exc)})
        pd.DataFrame(rows).reindex(columns=COLUMNS).to_csv(args.out, index=False)
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    before = pd.read_csv(args.before) if args.before else None
    print(format_table(table))
    if (table["numpyro_chains"] == "sequential").any():
        print("note: NumPyro ran its chains one after the other (one XLA device)")
    print(goals_line(table, before))
    print(f"written: {args.out}")
    return table


if __name__ == "__main__":
    main()
