"""The public posteriordb gauntlet: ``pyrovi.fit`` against plain Pyro SVI, per guide family.

For every posterior (a plain Pyro port in ``bench/posteriordb/ports.py``) and guide family
it runs

(a) ``pyrovi.fit(model, data, guide=g)`` with its defaults, and
(b) the plain-Pyro baseline: the same Pyro autoguide (mean_field -> ``AutoNormal``,
    low_rank -> ``AutoLowRankMultivariateNormal``, full_rank -> ``AutoMultivariateNormal``,
    flow -> ``AutoNormalizingFlow`` with two ``affine_autoregressive`` layers, a spline in
    1-D) trained by ``pyro.infer.SVI`` with ``ClippedAdam({"lr": 0.01})`` and
    ``Trace_ELBO()`` for ``--baseline-steps`` steps (10,000), in float32,

estimates both ELBOs the same way (``pyrovi.infer.estimate_elbo``, 4000 particles) and
measures both posteriors against posteriordb's reference draws with ``pyrovi.compare``.
It prints one table and a line with the pass criteria, and writes the table as CSV.

    python bench/posteriordb.py --posteriordb PATH [--posteriors a,b] [--guides ...]

PATH is a local posteriordb tree (a directory holding ``posterior_database/``, or that
directory itself; the env variable ``POSTERIORDB`` works too). Only the posteriors' JSON,
data, and reference draws of the ported posteriors are read.

``--stein`` prints the Stein check of the ports (``ports.stein_check``) at the full
reference draws. ``--write-fixtures`` copies the data and thinned reference draws of
``--posteriors`` into ``tests/fixtures/posteriordb/<posterior>/``; ``--write-baselines``
runs only the baseline on those fixtures' data and writes their ``baseline.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import math
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pandas as pd
import pyro
import pyro.distributions.transforms as T
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    AutoNormalizingFlow,
)
from pyro.poutine.util import site_is_subsample
from tqdm import tqdm

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "tests" / "fixtures" / "posteriordb"
GUIDES = ("mean_field", "low_rank", "full_rank", "flow")
LADDER = "auto"
"""``--guides auto``: the guide ladder (``pyrovi.fit(guide="auto")``), given no reference
(it would use a cached default ``pyrovi.nuts`` run of the port, if one existed); its row
names the rung it chose (``chosen``) and has no plain Pyro columns."""
BASELINE_STEPS = 10_000
BASELINE_LR = 0.01
ELBO_PARTICLES = 4000
COMPARE_DRAWS = 2000
TRUST_MAX_Z = 0.2
TRUST_SD_RATIO = (0.8, 1.25)
ELBO_TOLERANCE = 0.05  # a row passes with ELBO_pyrovi >= ELBO_baseline - max(0.05, 2 se)


def load_ports() -> Any:
    """``bench/posteriordb/ports.py`` as a module (loaded by path: bench is no package)."""
    name = "pyrovi_bench_posteriordb_ports"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "posteriordb" / "ports.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- baseline


def _flow(input_dim: int) -> Any:
    if input_dim == 1:
        return T.spline(1)
    return T.iterated(2, T.affine_autoregressive, input_dim)


BASELINE_GUIDES: dict[str, Callable[[Callable[..., Any]], Any]] = {
    "mean_field": AutoNormal,
    "low_rank": AutoLowRankMultivariateNormal,
    "full_rank": AutoMultivariateNormal,
    "flow": lambda model: AutoNormalizingFlow(model, _flow),
}
"""Guide family -> the plain Pyro autoguide built with its defaults."""


def run_baseline(model: Callable[..., Any], data: dict[str, Any], guide_name: str,
                 steps: int = BASELINE_STEPS, seed: int = 0, lr: float = BASELINE_LR
                 ) -> dict[str, Any]:
    """Plain Pyro SVI: the family's autoguide, ClippedAdam(lr), Trace_ELBO, ``steps`` steps.

    Returns a dict with ``guide`` (fitted; its parameters are in Pyro's param store, so
    use it before the next call clears the store), ``losses``, ``seconds``,
    ``grad_evals`` (steps times one particle).
    """
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = BASELINE_GUIDES[guide_name](model)
    svi = SVI(model, guide, pyro.optim.ClippedAdam({"lr": lr}), Trace_ELBO())
    losses = np.empty(steps)
    start = time.perf_counter()
    for step in range(steps):
        losses[step] = svi.step(**data)
    seconds = time.perf_counter() - start
    return {"guide": guide, "losses": losses, "seconds": seconds, "grad_evals": steps}


def elbo_estimate(model: Callable[..., Any], guide: Callable[..., Any], data: dict[str, Any],
                  seed: int = 0) -> tuple[float, float]:
    """``pyrovi.infer.estimate_elbo`` with ``ELBO_PARTICLES`` particles: (elbo, se)."""
    from pyrovi.infer import estimate_elbo

    return estimate_elbo(model, guide, data, num_particles=ELBO_PARTICLES, seed=seed)


def baseline_elbo(model: Callable[..., Any], data: dict[str, Any], guide_name: str,
                  steps: int = BASELINE_STEPS, seed: int = 0) -> dict[str, Any]:
    """The baseline fit and its ELBO estimate: ``elbo``, ``se``, ``seconds``, ``grad_evals``."""
    run = run_baseline(model, data, guide_name, steps=steps, seed=seed)
    elbo, se = elbo_estimate(model, run["guide"], data, seed=seed)
    return {"elbo": elbo, "se": se, "seconds": run["seconds"],
            "grad_evals": run["grad_evals"], "guide": run["guide"]}


def guide_draws(model: Callable[..., Any], guide: Callable[..., Any], data: dict[str, Any],
                num_samples: int = COMPARE_DRAWS, seed: int = 0) -> az.InferenceData:
    """Draws of every latent and deterministic site of ``model`` under ``guide``."""
    with torch.no_grad():
        trace = pyro.poutine.trace(guide).get_trace(**data)
        model_trace = pyro.poutine.trace(pyro.poutine.replay(model, trace=trace)).get_trace(**data)
        shapes = {name: site["value"].shape for name, site in model_trace.nodes.items()
                  if site["type"] == "sample" and not site_is_subsample(site)
                  and (not site["is_observed"] or site["infer"].get("_deterministic"))}
        pyro.set_rng_seed(seed)
        try:
            predictive = Predictive(model, guide=guide, num_samples=num_samples,
                                    return_sites=list(shapes), parallel=True)
            samples = predictive(**data)
        except Exception:  # a model that cannot take a particle plate: one draw at a time
            pyro.set_rng_seed(seed)
            predictive = Predictive(model, guide=guide, num_samples=num_samples,
                                    return_sites=list(shapes))
            samples = predictive(**data)
    posterior = {name: samples[name].detach().to(torch.float64).reshape(
        (1, num_samples, *shapes[name])).numpy() for name in shapes}
    return az.from_dict(posterior=posterior)


# ----------------------------------------------------------------------------- one row


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def _table_stats(cmp: Any) -> tuple[float, float, bool]:
    """(max |mean_error_z|, worst sd ratio, right_by_rule) of a comparison's table."""
    table = cmp.table
    z = float(np.nanmax(np.abs(table["mean_error_z"].to_numpy(dtype=float))))
    ratios = table["sd_ratio"].to_numpy(dtype=float)
    ratios = ratios[np.isfinite(ratios) & (ratios > 0)]
    worst = float(ratios[np.argmax(np.abs(np.log(ratios)))]) if len(ratios) else math.nan
    good = (z <= TRUST_MAX_Z and bool(len(ratios))
            and bool(np.all((ratios >= TRUST_SD_RATIO[0]) & (ratios <= TRUST_SD_RATIO[1]))))
    return z, worst, good


BASELINE_COLUMNS = ("elbo_baseline", "se_baseline", "sec_baseline", "grad_baseline",
                    "maxz_baseline", "sdratio_baseline")


def _baseline_columns(port: Any, data: dict[str, Any], ref: az.InferenceData,
                      guide_name: str, steps: int, seed: int) -> dict[str, Any]:
    """The plain Pyro baseline's columns (:data:`BASELINE_COLUMNS`) of one row."""
    import pyrovi

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        base = baseline_elbo(port.model, data, guide_name, steps=steps, seed=seed)
        draws = guide_draws(port.model, base["guide"], data, seed=seed)
        base_cmp = pyrovi.compare(draws, ref, seed=seed)
    maxz, sdratio, _ = _table_stats(base_cmp)
    return {"elbo_baseline": base["elbo"], "se_baseline": base["se"],
            "sec_baseline": base["seconds"], "grad_baseline": base["grad_evals"],
            "maxz_baseline": maxz, "sdratio_baseline": sdratio}


def run_row(port: Any, data: dict[str, Any], ref: az.InferenceData, guide_name: str,
            baseline_steps: int = BASELINE_STEPS, seed: int = 0,
            baseline: dict[str, Any] | None = None) -> dict[str, Any]:
    """pyrovi's fit and the baseline on one posterior and guide family: one table row.

    ``baseline``: the baseline's columns from an earlier run with the same seed and steps
    (plain Pyro does not change with pyrovi), reused instead of fitting it again."""
    import pyrovi
    from pyrovi.compare import reference_free

    row: dict[str, Any] = {"posterior": port.name, "guide": guide_name}
    errors = []
    # (a) pyrovi.fit with defaults
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            start = time.perf_counter()
            fit = pyrovi.fit(port.model, data, guide=guide_name, seed=seed)
            row["sec_pyrovi"] = time.perf_counter() - start
        kinds = sorted({w.category.__name__ for w in caught
                        if w.category.__module__.startswith("pyrovi")})
        row["grad_pyrovi"] = int(getattr(fit, "num_grad_evals", len(fit.losses)))
        dtype = getattr(fit, "dtype", None)
        fit_data = load_ports().as_dtype(data, dtype) if dtype is not None else data
        with load_ports().fit_context(fit):
            row["elbo_pyrovi"], row["se_pyrovi"] = elbo_estimate(port.model, fit.guide,
                                                                 fit_data, seed=seed)
            cmp = pyrovi.compare(fit, ref, seed=seed)
        row["maxz_pyrovi"], row["sdratio_pyrovi"], good = _table_stats(cmp)
        row["verdict"] = str(cmp.summary["verdict"])
        row["verdict_right"] = (row["verdict"] == "trust") == good
        try:  # the verdict a user without a reference gets: k-hat and validated bounds
            with load_ports().fit_context(fit):
                free = reference_free(fit, seed=seed)
            row["verdict_free"] = str(free["verdict"])
            row["mean_bound_free"] = free.get("mean_error_bound_high", math.nan)
        except Exception as exc:  # noqa: BLE001 - the reference-free check is extra
            errors.append("reference_free: " + _one_line(exc))
        if kinds:
            row["warnings"] = ",".join(kinds)
    except Exception as exc:  # noqa: BLE001 - one failing row must not stop the run
        errors.append("pyrovi: " + _one_line(exc))
    if guide_name == LADDER:  # the ladder has no plain Pyro counterpart
        if "error" not in row and not errors:
            row["chosen"] = fit.guide_name
        if errors:
            row["error"] = " | ".join(errors)
        return row
    # (b) the plain Pyro baseline, or its columns from an earlier run
    if baseline is not None:
        row.update({k: baseline[k] for k in BASELINE_COLUMNS if pd.notna(baseline.get(k))})
    elif baseline_steps > 0:  # 0: no baseline, pyrovi against the reference only
        try:
            row.update(_baseline_columns(port, data, ref, guide_name, baseline_steps, seed))
        except Exception as exc:  # noqa: BLE001
            errors.append("baseline: " + _one_line(exc))
    if "elbo_pyrovi" in row and "elbo_baseline" in row:
        row["elbo_diff"] = row["elbo_pyrovi"] - row["elbo_baseline"]
        row["diff_se"] = math.hypot(row["se_pyrovi"], row["se_baseline"])
        row["elbo_pass"] = bool(row["elbo_diff"] >= -max(ELBO_TOLERANCE, 2 * row["diff_se"]))
    if errors:
        row["error"] = " | ".join(errors)
    return row


COLUMNS = ["posterior", "guide", "elbo_pyrovi", "elbo_baseline", "elbo_diff", "diff_se",
           "elbo_pass", "grad_pyrovi", "grad_baseline", "sec_pyrovi", "sec_baseline",
           "maxz_pyrovi", "maxz_baseline", "sdratio_pyrovi", "sdratio_baseline", "verdict",
           "verdict_right", "verdict_free", "mean_bound_free", "chosen", "se_pyrovi",
           "se_baseline", "warnings", "error"]


def criteria_line(table: pd.DataFrame) -> str:
    """The pass criteria over a results table, as one line."""
    judged_elbo = table["elbo_pass"].dropna()  # rows with a baseline (not the ladder's)
    n = len(judged_elbo)
    passed = int(judged_elbo.astype(bool).sum())
    ratio = (table["grad_pyrovi"] / table["grad_baseline"]).dropna()
    median = float(ratio.median()) if len(ratio) else math.nan
    judged = table["verdict_right"].dropna()
    right = int(judged.astype(bool).sum())
    return (f"pass criteria: ELBO_pyrovi >= ELBO_baseline - max({ELBO_TOLERANCE}, 2 se) in "
            f"{passed}/{n} rows; median gradient evaluations pyrovi/baseline {median:.3g}; "
            f"right verdicts {right}/{len(judged)} (trust exactly when max |z| <= "
            f"{TRUST_MAX_Z} and every sd ratio in [{TRUST_SD_RATIO[0]}, {TRUST_SD_RATIO[1]}])")


def agreement_line(table: pd.DataFrame) -> str:
    """How often the reference-free verdict (k-hat and validated bounds) agrees with the
    reference-based one, as a confusion count ``reference -> reference-free: rows``."""
    pairs = table[["verdict", "verdict_free"]].dropna()
    if pairs.empty:
        return "reference-free verdict: no row has both verdicts"
    counts = pairs.value_counts().sort_index()
    cells = ", ".join(f"{ref} -> {free}: {n}" for (ref, free), n in counts.items())
    same = int((pairs["verdict"] == pairs["verdict_free"]).sum())
    unsafe = int(((pairs["verdict_free"] == "trust") & (pairs["verdict"] != "trust")).sum())
    return (f"reference-free verdict agrees with the reference in {same}/{len(pairs)} rows "
            f"(trusted without a reference but not with one: {unsafe}); {cells}")


def format_table(table: pd.DataFrame) -> str:
    shown = table.copy()
    for col in ("elbo_pyrovi", "elbo_baseline", "elbo_diff", "diff_se"):
        shown[col] = shown[col].map(lambda v: f"{v:.3f}" if pd.notna(v) else "")
    for col in ("sec_pyrovi", "sec_baseline"):
        shown[col] = shown[col].map(lambda v: f"{v:.1f}" if pd.notna(v) else "")
    for col in ("maxz_pyrovi", "maxz_baseline", "sdratio_pyrovi", "sdratio_baseline",
                "mean_bound_free"):
        shown[col] = shown[col].map(lambda v: f"{v:.3f}" if pd.notna(v) else "")
    shown["error"] = shown["error"].map(lambda v: v[:120] if isinstance(v, str) else v)
    shown = shown.drop(columns=["se_pyrovi", "se_baseline"]).astype(object).fillna("")
    return shown.to_string(index=False)


# ----------------------------------------------------------------------------- fixtures

FIXTURE_THIN = 10
FIXTURE_DIGITS = 10


def write_fixture(pdb_root: str | Path, name: str, fixtures: Path = FIXTURES) -> Path:
    """Copy a posterior's files from a posteriordb tree into ``fixtures/<name>/``.

    ``data.json`` is posteriordb's data file unchanged (unzipped); ``draws.json`` is the
    reference draws thinned to every ``FIXTURE_THIN``-th draw of each chain and rounded
    to ``FIXTURE_DIGITS`` significant digits, in posteriordb's format (a list of chains,
    each a dict of ``name[i]`` -> draws); ``posterior.json``, ``model.stan`` and the info
    files are posteriordb's, for the record.
    """
    ports = load_ports()
    pdb = ports.find_posteriordb(pdb_root)
    info = ports.read_pdb_json(pdb / "posteriors" / f"{name}.json")
    folder = fixtures / name
    folder.mkdir(parents=True, exist_ok=True)

    def dump(filename: str, content: Any) -> None:
        (folder / filename).write_text(json.dumps(content, separators=(",", ":")) + "\n")

    data_name, model_name = info["data_name"], info["model_name"]
    dump("data.json", ports.read_pdb_json(pdb / "data" / "data" / f"{data_name}.json.zip"))
    ref_name = info.get("reference_posterior_name") or name
    chains = ports.read_pdb_json(
        pdb / "reference_posteriors" / "draws" / "draws" / f"{ref_name}.json.zip")
    dump("draws.json", [{key: [float(f"{v:.{FIXTURE_DIGITS}g}") for v in values[::FIXTURE_THIN]]
                         for key, values in chain.items()} for chain in chains])
    (folder / "posterior.json").write_text(json.dumps(info, indent=2) + "\n")
    (folder / "model.stan").write_bytes((pdb / "models" / "stan" / f"{model_name}.stan")
                                        .read_bytes())
    sources = {
        "data_info": pdb / "data" / "info" / f"{data_name}.info.json",
        "model_info": pdb / "models" / "info" / f"{model_name}.info.json",
        "reference_info": pdb / "reference_posteriors" / "draws" / "info"
                          / f"{ref_name}.info.json",
    }
    record = {}
    for key, path in sources.items():
        content = ports.read_pdb_json(path)
        if key == "reference_info":  # keep the sampler settings and checks, not the R session
            content = {k: content[k] for k in ("name", "inference", "checks_made",
                                               "added_by", "added_date") if k in content}
        record[key] = content
    (folder / "sources.json").write_text(json.dumps(record, indent=2) + "\n")
    return folder



def write_fixture_baseline(name: str, guides: list[str], steps: int, seed: int,
                           fixtures: Path = FIXTURES) -> Path:
    """Run the baseline on a test fixture's data and merge the ELBOs into baseline.json."""
    ports = load_ports()
    port = ports.POSTERIORS[name]
    folder = fixtures / name
    data = port.make_data(json.loads((folder / "data.json").read_text()), dtype=torch.float32)
    path = folder / "baseline.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record.setdefault("posterior", name)
    record["how"] = (
        "plain Pyro SVI: autoguide (mean_field AutoNormal, low_rank "
        "AutoLowRankMultivariateNormal, full_rank AutoMultivariateNormal, flow "
        "AutoNormalizingFlow with two affine_autoregressive layers) with its defaults, "
        f"ClippedAdam lr {BASELINE_LR}, Trace_ELBO (1 particle), float32 data from "
        "data.json; ELBO of the final guide estimated with "
        f"pyrovi.infer.estimate_elbo, {ELBO_PARTICLES} particles, same seed; made by "
        f"`python bench/posteriordb.py --write-baselines --posteriors {name}`")
    results = record.setdefault("guides", {})
    for guide_name in guides:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = baseline_elbo(port.model, data, guide_name, steps=steps, seed=seed)
        results[guide_name] = {
            "elbo": out["elbo"], "se": out["se"], "steps": steps, "seed": seed,
            "optimizer": "ClippedAdam", "lr": BASELINE_LR, "loss": "Trace_ELBO",
            "elbo_particles": ELBO_PARTICLES, "dtype": "float32",
            "seconds": round(out["seconds"], 1),
            "date": dt.date.today().isoformat(),
            "versions": {"pyro": pyro.__version__, "torch": torch.__version__},
        }
        print(f"{name} {guide_name}: ELBO {out['elbo']:.4f} ± {out['se']:.4f} "
              f"({out['seconds']:.0f} s)", flush=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        tmp.replace(path)
    return path


# ----------------------------------------------------------------------------- Stein


def stein_table(pdb_root: str | Path, names: list[str]) -> pd.DataFrame:
    """The Stein check of every port at its full reference draws: one row per posterior."""
    ports = load_ports()
    rows = []
    for name in tqdm(names, desc="stein", dynamic_ncols=True):
        _, data, ref_path = ports.load_posterior(pdb_root, name)
        table = ports.stein_check(ports.POSTERIORS[name], data, ports.read_draws(ref_path))
        worst = table.attrs["max_abs_z"]
        rows.append({"posterior": name, "dimension": int((table["identity"] == "grad").sum()),
                     "draws": int(table["n"].iloc[0]), "max_abs_z_grad": worst["grad"],
                     "max_abs_z_scale": worst["scale"],
                     "pass": ports.stein_passes(table)})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--posteriordb", default=os.environ.get("POSTERIORDB"),
                        help="local posteriordb tree (default: env POSTERIORDB)")
    parser.add_argument("--posteriors", default=None,
                        help="comma-separated posterior names (default: every port)")
    parser.add_argument("--guides", default=",".join(GUIDES),
                        help="comma-separated guide families (default: %(default)s)")
    parser.add_argument("--baseline-steps", type=int, default=BASELINE_STEPS,
                        help="steps of the plain Pyro baseline; 0: no baseline (pyrovi's "
                             "fits against the reference only)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="posteriordb_results.csv", help="CSV of the table")
    parser.add_argument("--baselines-from", default=None, metavar="CSV",
                        help="reuse the plain Pyro columns of an earlier results CSV (same "
                             "seed and --baseline-steps): only pyrovi's fits run")
    parser.add_argument("--stein", action="store_true",
                        help="only run the Stein check of the ports against the full "
                             "reference draws and print its table")
    parser.add_argument("--write-fixtures", action="store_true",
                        help="copy data and thinned reference draws of --posteriors from "
                             "--posteriordb into tests/fixtures/posteriordb")
    parser.add_argument("--write-baselines", action="store_true",
                        help="only run the baselines on tests/fixtures/posteriordb and write "
                             "their baseline.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> pd.DataFrame | None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    ports = load_ports()
    guides = [g.strip() for g in args.guides.split(",") if g.strip()]
    unknown = [g for g in guides if g not in BASELINE_GUIDES and g != LADDER]
    if unknown:
        raise SystemExit(f"unknown guide families {unknown}; known: {', '.join(GUIDES)}")
    if args.posteriors:
        names = [n.strip() for n in args.posteriors.split(",") if n.strip()]
    elif args.write_baselines:
        names = sorted(p.name for p in FIXTURES.iterdir() if (p / "data.json").exists())
    else:
        names = list(ports.POSTERIORS)
    unknown = [n for n in names if n not in ports.POSTERIORS]
    if unknown:
        raise SystemExit(f"not ported: {unknown}; ported: {', '.join(ports.POSTERIORS)}")
    if args.stein:
        if not args.posteriordb:
            raise SystemExit("--stein needs --posteriordb PATH (or POSTERIORDB)")
        table = stein_table(args.posteriordb, names)
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        return table
    if args.write_fixtures:
        if not args.posteriordb or not args.posteriors:
            raise SystemExit("--write-fixtures needs --posteriordb and --posteriors")
        for name in names:
            print(write_fixture(args.posteriordb, name))
        return None
    if args.write_baselines:
        for name in names:
            write_fixture_baseline(name, guides, args.baseline_steps, args.seed)
        return None
    if not args.posteriordb:
        raise SystemExit("give --posteriordb PATH (or set POSTERIORDB) to a posteriordb tree")

    import pyrovi

    print(f"posteriordb gauntlet: {len(names)} posteriors x {len(guides)} guides; baseline "
          f"{args.baseline_steps} steps of ClippedAdam({BASELINE_LR}); ELBOs from "
          f"{ELBO_PARTICLES} particles; seed {args.seed}; torch threads "
          f"{torch.get_num_threads()}", flush=True)
    rows = []
    jobs = [(n, g) for n in names for g in guides]
    earlier: dict[tuple[str, str], dict[str, Any]] = {}
    if args.baselines_from:
        earlier = {(r["posterior"], r["guide"]): r
                   for r in pd.read_csv(args.baselines_from).to_dict(orient="records")}
    loaded: dict[str, tuple[Any, Any]] = {}
    for name, guide_name in tqdm(jobs, desc="posteriordb", dynamic_ncols=True):
        try:
            if name not in loaded:
                _, data, ref_path = ports.load_posterior(args.posteriordb, name)
                loaded[name] = (data, pyrovi.load_reference(ref_path))
            data, ref = loaded[name]
            row = run_row(ports.POSTERIORS[name], data, ref, guide_name,
                          baseline_steps=args.baseline_steps, seed=args.seed,
                          baseline=earlier.get((name, guide_name)))
        except Exception as exc:  # noqa: BLE001 - loading failed: report it in the row
            row = {"posterior": name, "guide": guide_name, "error": _one_line(exc)}
        rows.append(row)
        table = pd.DataFrame(rows).reindex(columns=COLUMNS)
        table.to_csv(args.out, index=False)  # after every row: a crash keeps what was done
    table = pd.DataFrame(rows).reindex(columns=COLUMNS)
    print(format_table(table))
    print(criteria_line(table))
    print(agreement_line(table))
    print(f"written: {args.out}")
    return table


if __name__ == "__main__":
    main()
