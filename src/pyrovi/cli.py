"""The ``pyrovi`` command line: ``list``, ``demo``, ``compare`` and ``train``.

Every bad input ends in one line on stderr, ``pyrovi: error: ...``, and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

EXIT_USAGE = 2


class CLIError(Exception):
    """A user error: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CLIError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pyrovi", description="Variational inference you can check.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    sub.add_parser("list", help="list the registered models, their guides and data sets")

    demo = sub.add_parser("demo", help="fit, run NUTS and compare on bundled data (exact model)")
    _add_run_options(demo, default_out="pyrovi-report")

    cmp = sub.add_parser("compare", help="compare a VI fit with a NUTS (or given) reference")
    cmp.add_argument("model", help="registered model name, or path/to/file.py:function")
    cmp.add_argument("--guide", default="mean_field",
                     help="guide family, or auto: the guide ladder (default mean_field)")
    cmp.add_argument("--data", help="bundled data set name, or a JSON file of model arguments")
    cmp.add_argument("--reference", help="reference draws (.nc, posteriordb .json/.json.zip, "
                                         "CmdStan .csv) instead of running NUTS")
    _add_run_options(cmp, default_out="pyrovi-report")

    train = sub.add_parser("train", help="fit a model in minibatches, on one process or "
                                         "several (torchrun), resumable")
    train.add_argument("model", help="registered model name (see pyrovi list)")
    train.add_argument("--data", help="bundled data set (default: the model's first)")
    train.add_argument("--validation", help="bundled held-out data set: its ELBO each "
                                            "epoch, early stopping")
    train.add_argument("--guide", help="guide family (default: the model's amortized "
                                       "guide if it has one, else mean_field)")
    train.add_argument("--batch-size", type=positive_int, required=True,
                       help="minibatch size per process")
    train.add_argument("--epochs", type=positive_int, default=None,
                       help="passes over the data (default: until converged)")
    train.add_argument("--patience", type=positive_int, default=3,
                       help="epochs without held-out gain before stopping early")
    train.add_argument("--elbo", default="trace", choices=("trace", "mean_field"),
                       help="trace (sampled KL) or mean_field (closed-form KL)")
    train.add_argument("--lr", type=float, default=None, help="step size (default: trial)")
    train.add_argument("--seed", type=int, default=0, help="seed of every random step")
    train.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    train.add_argument("--out", default="pyrovi-train",
                       help="folder for fit.pt, train.json, elbo.png and the checkpoint")
    train.add_argument("--nproc", type=positive_int, default=1,
                       help="processes on this machine (data-parallel, via torchrun)")
    train.add_argument("--nnodes", type=positive_int, default=1,
                       help="machines; run the same command on each")
    train.add_argument("--rdzv-endpoint", help="HOST:PORT where the machines meet "
                                               "(with --nnodes > 1)")
    return parser


def _add_run_options(parser: argparse.ArgumentParser, default_out: str) -> None:
    parser.add_argument("--out", default=default_out, help=f"report folder ({default_out})")
    parser.add_argument("--seed", type=int, default=0, help="seed of every random step")
    parser.add_argument("--num-samples", type=positive_int, default=1000,
                        help="NUTS draws per chain")
    parser.add_argument("--num-warmup", type=positive_int, default=1000,
                        help="NUTS warm-up steps per chain")
    parser.add_argument("--num-chains", type=positive_int, default=2, help="NUTS chains")
    parser.add_argument("--num-steps", type=positive_int, default=None,
                        help="fixed SVI steps (default: until converged)")


def positive_int(text: str) -> int:
    """argparse type: a positive integer, or a one-line error naming the text."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _load_user_model(target: str) -> Callable[..., Any]:
    path_text, _, name = target.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise CLIError(f"model file not found: {path}")
    spec = importlib.util.spec_from_file_location(f"pyrovi_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise CLIError(f"cannot import {path} as Python")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - the user's file: report, don't trace
        raise CLIError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    model = getattr(module, name, None)
    if not callable(model):
        raise CLIError(f"{path} defines no function {name!r}")
    return model


def _json_value(key: str, value: Any, path: Path) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        raise CLIError(f"{path}: entry {key!r} must be a number or an array of numbers")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise CLIError(f"{path}: entry {key!r} is NaN or infinite")
        return value
    try:
        tensor = torch.tensor(value, dtype=torch.get_default_dtype())
    except (TypeError, ValueError) as exc:
        raise CLIError(f"{path}: entry {key!r} is not a rectangular array of numbers") from exc
    if not torch.isfinite(tensor).all():
        raise CLIError(f"{path}: entry {key!r} contains NaN or infinite values")
    return tensor


def load_data_file(path: Path) -> dict[str, Any]:
    """Read a JSON object of model arguments: numbers and (nested) arrays of numbers."""
    if not path.is_file():
        raise CLIError(f"data file not found: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CLIError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(raw, dict) or not raw:
        raise CLIError(f"{path}: expected a JSON object mapping argument names to arrays")
    return {key: _json_value(key, value, path) for key, value in raw.items()}


def _check_writable(out: Path) -> None:
    """Fail before any work if the report folder cannot be created and written."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".pyrovi-write-test-"):
            pass
    except OSError as exc:
        raise CLIError(f"cannot write to output folder {out}: {exc.strerror or exc}") from exc


def _resolve(args: argparse.Namespace) -> tuple[Callable[..., Any], dict[str, Any], str, str]:
    """The model, its data, and labels for the report, from ``compare``'s arguments."""
    from pyrovi.models import REGISTRY, list_models

    if ":" in args.model and args.model.split(":")[0].endswith(".py"):
        model = _load_user_model(args.model)
        if not args.data:
            raise CLIError("a model from a file needs --data path/to/data.json")
        data_path = Path(args.data)
        return model, load_data_file(data_path), args.model, str(data_path)
    if args.model not in REGISTRY:
        raise CLIError(f"unknown model {args.model!r}; registered models: "
                       f"{', '.join(list_models())} (or give path/to/file.py:function)")
    spec = REGISTRY[args.model]
    if args.data and (args.data.endswith(".json") or os.sep in args.data):
        return spec.model, load_data_file(Path(args.data)), spec.name, args.data
    try:
        data = spec.load_data(args.data)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    return spec.model, data, spec.name, args.data or spec.datasets[0]


def _run_compare(model: Callable[..., Any], data: dict[str, Any], guide: str,
                 args: argparse.Namespace, labels: dict[str, Any],
                 reference: str | None = None) -> Any:
    import pyrovi
    from pyrovi.guides import FAMILIES, GUIDE_FAMILIES
    from pyrovi.models import REGISTRY

    # a registered model also offers its hand-written guides (e.g. beta_bernoulli's "beta")
    families = next((spec.guides for spec in REGISTRY.values() if spec.model is model),
                    GUIDE_FAMILIES)
    ladder = guide == "auto"
    if guide not in families and not ladder:
        raise CLIError(f"unknown guide {guide!r}; choose auto (the guide ladder) or one of "
                       f"{', '.join(families)}")
    labels = {**labels, "guide": guide}
    # by name where a family record exists, so the fit knows the family (correlations, ...)
    chosen = guide if guide in FAMILIES or ladder else families[guide](model)
    out = Path(args.out)
    _check_writable(out)
    progress = sys.stderr.isatty()
    if reference:
        try:
            ref = pyrovi.load_reference(reference)
        except pyrovi.ReferenceFormatError as exc:
            raise CLIError(str(exc)) from exc
        from pyrovi.infer.util import posterior_sites

        try:
            sites = posterior_sites(model, data)
        except Exception as exc:  # noqa: BLE001 - the user's model or data: report it
            raise CLIError(f"the model fails on the data: {type(exc).__name__}: {exc}") from exc
        if not set(sites) & set(ref.posterior.data_vars):
            raise CLIError(f"the reference {reference} has no parameters in common with the "
                           f"model (reference: {', '.join(list(ref.posterior.data_vars)[:5])};"
                           f" model: {', '.join(sites)})")
    if not reference and ladder:  # the ladder judges every rung against the reference
        ref = _run_nuts(model, data, args, progress)
    try:
        fit = pyrovi.fit(model, data, guide=chosen, num_steps=args.num_steps, seed=args.seed,
                         progress=progress, **({"reference": ref} if ladder else {}))
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    if ladder:
        labels["guide"] = f"auto: {fit.guide_name}"
        _print_ladder(fit)
    if not reference and not ladder:
        ref = _run_nuts(model, data, args, progress)
    try:
        comparison = pyrovi.compare(fit, ref, seed=args.seed, labels=labels)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    try:
        written = comparison.write(out)
    except OSError as exc:
        raise CLIError(f"cannot write the report to {out}: {exc}") from exc
    _print_comparison(comparison, written)
    return comparison


def _run_nuts(model: Callable[..., Any], data: dict[str, Any], args: argparse.Namespace,
              progress: bool) -> Any:
    import pyrovi

    print(f"running NUTS ({args.num_chains} chains x {args.num_samples} draws) ...",
          file=sys.stderr)
    return pyrovi.nuts(model, data, num_samples=args.num_samples, num_warmup=args.num_warmup,
                       num_chains=args.num_chains, seed=args.seed, progress=progress)


def _print_ladder(fit: Any) -> None:
    table = fit.ladder[["guide", "seconds", "grad_evals", "elbo", "gain", "khat", "verdict",
                        "chosen"]]
    print("guide ladder")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for guide, why in zip(fit.ladder["guide"], fit.ladder["why"], strict=True):
        print(f"  {guide}: {why}")
    print(f"stopped: {fit.ladder_stop}")
    print()


def _print_comparison(comparison: Any, written: dict[str, Path]) -> None:
    s = comparison.summary
    table = comparison.table.round(4)
    if comparison.units:
        table.insert(0, "unit", [comparison.unit_of(str(name)) for name in table.index])
    print(table.to_string())
    print(f"means and sds in {s['parameter_units']}")
    print()
    print(f"ELBO            {s['elbo']:.4f} ± {s['elbo_se']:.4f} nats")
    print(f"log p(x)        {s['log_evidence']:.4f} ± {s['log_evidence_se']:.4f} nats "
          f"({s['log_evidence_method']})")
    print(f"KL(q || p)      {s['kl_gap']:.4f} nats  "
          f"[{s['kl_gap_low']:.4f}, {s['kl_gap_high']:.4f}]")
    if s["bounds_reliable"]:
        print(f"CUBO            {s['cubo']:.4f} ± {s['cubo_se']:.4f} nats "
              "(ELBO <= log p(x) <= CUBO)")
        print(f"error bounds    |mean error| <= {s['mean_error_bound_high']:.3g}, "
              f"|sd error| <= {s['sd_error_bound_high']:.3g} q sd (validated VI)")
    elif s["bounds_reliable"] is not None:
        print(f"error bounds    none: {s['bounds_reason']}")
    if s["khat"] is not None:
        interval = ""
        if s["khat_low"] is not None and s["khat_high"] is not None:
            interval = (f" [{s['khat_low']:.2f}, {s['khat_high']:.2f}], "
                        f"{s['khat_samples']} draws")
        print(f"PSIS k-hat      {s['khat']:.2f} ({s['khat_label']}){interval}")
    print(f"verdict         {s['verdict'].upper()}")
    for reason in comparison.reasons:
        print(f"  - {reason}")
    print(f"report written to {written['html']}")


LAUNCH_OPTIONS = ("--nproc", "--nnodes", "--rdzv-endpoint")


def _without_launch(argv: Sequence[str]) -> list[str]:
    """``argv`` without the options that say how to launch (torchrun's workers get the
    rest; torchrun's own parser would take ``--nproc`` for its ``--nproc-per-node``)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg in LAUNCH_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(f"{o}=" for o in LAUNCH_OPTIONS)):
            kept.append(arg)
    return kept


def _cmd_train(args: argparse.Namespace, argv: Sequence[str]) -> None:
    """``pyrovi train``: started again under torchrun when more than one process is asked
    for; each process then fits its shard (:mod:`pyrovi.infer.distributed`)."""
    from pyrovi.infer import distributed

    if (args.nproc > 1 or args.nnodes > 1) and not distributed.launched():
        try:
            cmd = distributed.torchrun_command(["pyrovi.cli", *_without_launch(argv)],
                                               args.nproc, args.nnodes, args.rdzv_endpoint)
        except ValueError as exc:
            raise CLIError(str(exc)) from exc
        _check_writable(Path(args.out))
        import subprocess

        code = subprocess.call(cmd)
        if code:
            raise CLIError(f"torchrun exited with code {code} (see the messages above); "
                           "run the same command again to resume from the checkpoint")
        return
    import time

    import pyrovi
    from pyrovi.models import REGISTRY, list_models
    from pyrovi.report.atomic import write_atomically
    from pyrovi.report.plots import elbo_trace_png

    if args.model not in REGISTRY:
        raise CLIError(f"unknown model {args.model!r}; registered models: "
                       f"{', '.join(list_models())}")
    spec = REGISTRY[args.model]
    try:
        data = spec.load_data(args.data)
        validation = spec.load_data(args.validation) if args.validation else None
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    from pyrovi.guides import FAMILIES

    amortized = [g for g in spec.guides if g in FAMILIES and FAMILIES[g].amortized]
    guide = args.guide or (amortized[0] if amortized else "mean_field")
    if guide not in spec.guides:
        raise CLIError(f"unknown guide {guide!r} for {spec.name}; choose one of "
                       f"{', '.join(spec.guides)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda was asked for but torch sees no CUDA device")
    out = Path(args.out)
    _check_writable(out)
    started = time.perf_counter()
    try:
        fit = pyrovi.fit(spec.model, data, guide=guide, elbo=args.elbo, lr=args.lr,
                         seed=args.seed, batch_size=args.batch_size, num_epochs=args.epochs,
                         validation_data=validation, patience=args.patience,
                         checkpoint=out / "checkpoint.pt", device=args.device,
                         progress=sys.stderr.isatty())
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    seconds = time.perf_counter() - started
    rank, world_size = distributed.rank_and_size()
    if rank != 0:
        return
    fit.save(out / "fit.pt")
    held_out = fit.history.get("validation_elbo", [])
    summary = {
        "model": spec.name, "data": args.data or spec.datasets[0], "guide": guide,
        "elbo_name": args.elbo, "batch_size": args.batch_size, "world_size": world_size,
        "num_steps": len(fit.losses),
        "converged": fit.converged, "elbo": fit.elbo, "elbo_se": fit.elbo_se,
        "validation_elbo": held_out, "seconds": seconds,
    }
    write_atomically(out, {
        "train.json": lambda: json.dumps(summary, indent=2).encode(),
        "elbo.png": lambda: elbo_trace_png(fit.losses, elbo=fit.elbo)})
    print(f"{spec.name}: {guide}, {world_size} process(es), {len(fit.losses)} steps, "
          f"converged={fit.converged}, ELBO {fit.elbo:.2f} ± {fit.elbo_se:.2f}"
          + (f", held-out ELBO {held_out[-1]:.2f}" if held_out else "")
          + f"; {seconds:.0f} s; written to {out}")


def _cmd_list() -> None:
    from pyrovi.models import REGISTRY

    for name in sorted(REGISTRY):
        spec = REGISTRY[name]
        print(f"{name:20s} {spec.description}")
        print(f"{'':20s} guides: {', '.join(spec.guides)}; data: {', '.join(spec.datasets)}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``pyrovi`` command line; returns the exit code."""
    try:
        args = _build_parser().parse_args(argv)
        if args.command == "list":
            _cmd_list()
        elif args.command == "train":
            _cmd_train(args, list(sys.argv[1:] if argv is None else argv))
        elif args.command == "demo":
            from pyrovi.models import normal_normal

            print("demo: normal_normal on the eight-schools data (exact posterior and "
                  "evidence), the guide ladder vs NUTS", file=sys.stderr)
            _run_compare(normal_normal.model, normal_normal.load_data(), "auto", args,
                         {"model": "normal_normal", "data": "eight_schools"})
        else:
            model, data, model_label, data_label = _resolve(args)
            _run_compare(model, data, args.guide, args,
                         {"model": model_label, "data": data_label}, reference=args.reference)
    except CLIError as exc:
        print(f"pyrovi: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("pyrovi: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
