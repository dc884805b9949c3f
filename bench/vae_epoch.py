"""Benchmark: seconds per epoch of the digits VAE, pyrovi against a hand-written PyTorch loop.

The model is :class:`pyrovi.models.vae.VAE` as the case study trains it: 64 pixels of 17
grey levels (categorical likelihood), one hidden layer of 256 (softplus), a 2-D latent
code, on the 1,197 training digits in minibatches of ``--batch-size`` (100: 11 steps per
epoch, the incomplete last batch dropped, as pyrovi's epochs do), Adam at a fixed step
size ``--lr``, one particle. Rows, interleaved over ``--repeats`` rounds (medians):

============================  ==============================================================
row                           what runs
============================  ==============================================================
``torch (hand-written)``      the same networks as plain ``torch.nn`` (the VAE's own encoder
                              and decoder shapes), the ELBO written by hand on one
                              reparameterised draw ``z = loc + scale * eps``: ``log p(x | z)
                              + log p(z) - log q(z | x)`` (sampled KL, what ``Trace_ELBO``
                              computes) or, with ``--elbo mean_field``, ``log p(x | z) -
                              KL`` in closed form; scaled by ``N / B``; ``torch.optim.Adam``
``pyro SVI``                  ``pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam,
                              Trace_ELBO())`` (or ``TraceMeanField_ELBO``), ``svi.step(x,
                              batch_size=B)``: Pyro's tracing without pyrovi's engine
``pyrovi SVIRun.step``        ``pyrovi.SVIRun(vae.model, data, guide=vae.guide, lr=...,
                              batch_size=B)`` then ``run.step()`` in a loop: the engine's
                              per-step cost alone (the epoch's batches, the step, the
                              non-finite checks, the window sums)
``pyrovi fit``                ``pyrovi.fit(..., lr=..., num_epochs=E)``, timed at ``E`` and
                              ``E / 2`` epochs; the difference cancels the fixed costs (set-up,
                              the final 1,000-particle ELBO), which are printed apart
``pyrovi fit + validation``   the same with ``validation_data`` (the 300 validation digits):
                              the held-out ELBO after every epoch, what early stopping costs
============================  ==============================================================

With ``lr`` given, ``pyrovi.fit`` runs no step-size trial: one start, one step size, the
schedule's plateaus may halve it (the per-step cost does not change; the particles per
step would double from the second plateau, and the table says if that happened).

**1 vs 2 processes.** ``pyrovi.fit`` under ``python -m torch.distributed.run --standalone
--nproc_per_node P`` with ``batch_size = B / P`` per process (the same total batch of B,
the same 11 steps per epoch), gloo on the CPU, one torch thread per process, the same
difference method inside the workers (torchrun's start-up is not timed).

The last column of the table is each row's training ELBO over its last epoch (nats per
image): a fast row that did not train shows up there. Nothing is asserted.

Run ``python bench/vae_epoch.py [--epochs 40] [--batch-size 100] [--repeats 3]``;
``--quick`` for a smoke test, ``--profile N`` to print a cProfile of ``N`` SVIRun steps.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import platform
import pstats
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyro
import torch
from pyro.infer import SVI, Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.nn import functional as F

import pyrovi
from pyrovi.infer import distributed
from pyrovi.models.vae import VAE, load_digits
from pyrovi.models.vae.model import MIN_SCALE

RESULT_TAG = "VAE_EPOCH_RESULT "
"""Prefix of the JSON line a torchrun worker (rank 0) prints."""
GOAL = 1.2
"""The issue's goal: pyrovi's seconds per epoch at most this times the hand-written loop's."""
LOG_2PI = math.log(2 * math.pi)


# ----------------------------------------------------------------------------- data, nets


def training_data() -> dict[str, torch.Tensor]:
    return load_digits("train")


def new_vae(seed: int) -> VAE:
    """The benchmark's VAE, weights from torch seed ``seed``."""
    torch.manual_seed(seed)
    return VAE(64, latent_dim=2, hidden=(256,), likelihood="categorical", num_levels=17)


class HandVAE(nn.Module):
    """The VAE's networks as plain ``torch.nn``: the shapes are read off ``vae`` and its
    weights copied, so both loops start from the same point."""

    def __init__(self, vae: VAE) -> None:
        super().__init__()
        enc, dec = vae.encoder, vae.decoder
        self.input_scale = enc.input_scale
        self.data_dim, self.levels = vae.data_dim, vae.num_levels
        self.enc_body = nn.Sequential(
            *(nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear)
              else nn.Softplus() for m in enc.body))
        self.enc_loc = nn.Linear(enc.loc.in_features, enc.loc.out_features)
        self.enc_scale = nn.Linear(enc.raw_scale.in_features, enc.raw_scale.out_features)
        self.dec_body = nn.Sequential(
            *(nn.Linear(m.in_features, m.out_features) if isinstance(m, nn.Linear)
              else nn.Softplus() for m in dec.body))
        self.dec_out = nn.Linear(dec.out.in_features, dec.out.out_features)
        with torch.no_grad():
            pairs = [(self.enc_body, enc.body), (self.enc_loc, enc.loc),
                     (self.enc_scale, enc.raw_scale), (self.dec_body, dec.body),
                     (self.dec_out, dec.out)]
            for mine, theirs in pairs:
                for p, q in zip(mine.parameters(), theirs.parameters(), strict=True):
                    p.copy_(q)

    def loss(self, x: torch.Tensor, scale: float, closed_form_kl: bool) -> torch.Tensor:
        """Negative ELBO of the minibatch ``x``, times ``scale`` (``N / B``), one draw."""
        h = self.enc_body(x / self.input_scale)
        loc = self.enc_loc(h)
        sd = F.softplus(self.enc_scale(h)) + MIN_SCALE
        eps = torch.randn_like(loc)
        z = loc + sd * eps
        logits = self.dec_out(self.dec_body(z)).view(x.shape[0], self.data_dim, self.levels)
        log_lik = F.log_softmax(logits, dim=-1).gather(-1, x.long().unsqueeze(-1)).sum((1, 2))
        if closed_form_kl:
            kl = 0.5 * (sd.square() + loc.square() - 1.0 - 2.0 * sd.log()).sum(-1)
            elbo = log_lik - kl
        else:
            log_p = -0.5 * (z.square() + LOG_2PI).sum(-1)
            log_q = (-0.5 * eps.square() - sd.log() - 0.5 * LOG_2PI).sum(-1)
            elbo = log_lik + log_p - log_q
        return -scale * elbo.sum()


# ----------------------------------------------------------------------------- one row each


class Timing:
    """Seconds per epoch of one run, its fixed cost where measured, and its training ELBO
    over the last epoch (nats per image)."""

    def __init__(self, per_epoch: float, tail_elbo: float, fixed: float = float("nan"),
                 extra: dict[str, Any] | None = None) -> None:
        self.per_epoch, self.tail_elbo, self.fixed = per_epoch, tail_elbo, fixed
        self.extra = extra or {}


def _tail(losses: Any, steps_per_epoch: int, n: int) -> float:
    tail = [float(v) for v in list(losses)[-steps_per_epoch:]]
    return -statistics.fmean(tail) / n


def run_torch(x: torch.Tensor, epochs: int, batch: int, lr: float, elbo: str,
              seed: int) -> Timing:
    n = x.shape[0]
    steps = n // batch
    net = HandVAE(new_vae(seed))
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    losses: list[float] = []

    def epoch() -> None:
        order = torch.randperm(n, generator=gen)
        for i in range(steps):
            xb = x[order[i * batch:(i + 1) * batch]]
            optimizer.zero_grad()
            loss = net.loss(xb, n / batch, closed_form_kl=elbo == "mean_field")
            loss.backward()
            optimizer.step()
            losses.append(loss.item())

    epoch()  # warm-up, untimed
    start = time.perf_counter()
    for _ in range(epochs):
        epoch()
    return Timing((time.perf_counter() - start) / epochs, _tail(losses, steps, n))


def run_pyro(x: torch.Tensor, epochs: int, batch: int, lr: float, elbo: str,
             seed: int) -> Timing:
    n = x.shape[0]
    steps = n // batch
    vae = new_vae(seed)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    loss_fn = TraceMeanField_ELBO() if elbo == "mean_field" else Trace_ELBO()
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": lr}), loss_fn)
    losses = [svi.step(x, batch_size=batch) for _ in range(steps)]  # warm-up
    start = time.perf_counter()
    for _ in range(epochs * steps):
        losses.append(svi.step(x, batch_size=batch))
    elapsed = time.perf_counter() - start
    pyro.clear_param_store()
    return Timing(elapsed / epochs, _tail(losses, steps, n))


def run_pyro_loss(x: torch.Tensor, epochs: int, batch: int, lr: float, elbo: str,
                  seed: int, validate: bool = True) -> Timing:
    """Pyro's ELBO without Pyro's SVI: ``differentiable_loss`` of the minibatch (Pyro's
    tracing and distributions), ``backward``, ``torch.optim.Adam`` on the VAE's weights."""
    n = x.shape[0]
    steps = n // batch
    vae = new_vae(seed)
    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    loss_fn = TraceMeanField_ELBO() if elbo == "mean_field" else Trace_ELBO()
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    losses: list[float] = []

    def step() -> None:
        optimizer.zero_grad()
        loss = loss_fn.differentiable_loss(vae.model, vae.guide, x, batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())

    with pyro.validation_enabled(validate):
        for _ in range(steps):  # warm-up
            step()
        start = time.perf_counter()
        for _ in range(epochs * steps):
            step()
        elapsed = time.perf_counter() - start
    pyro.clear_param_store()
    return Timing(elapsed / epochs, _tail(losses, steps, n))


def run_svirun(x: torch.Tensor, epochs: int, batch: int, lr: float, elbo: str,
               seed: int, validate: bool = True) -> Timing:
    n = x.shape[0]
    vae = new_vae(seed)
    run = pyrovi.SVIRun(vae.model, {"x": x}, guide=vae.guide, elbo=elbo, lr=lr,
                        batch_size=batch, seed=seed)
    steps = run.batches.steps_per_epoch
    with pyro.validation_enabled(validate):
        for _ in range(steps):  # warm-up
            run.step()
        start = time.perf_counter()
        for _ in range(epochs * steps):
            run.step()
        elapsed = time.perf_counter() - start
    return Timing(elapsed / epochs, _tail(run.losses, steps, n),
                  extra={"max_particles": max(run.history["num_particles"])})


def _timed_fit(x: torch.Tensor, epochs: int, batch: int, lr: float, elbo: str, seed: int,
               validation: dict[str, torch.Tensor] | None) -> tuple[float, Any]:
    vae = new_vae(seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyrovi.ConvergenceWarning)
        fit = pyrovi.fit(vae.model, {"x": x}, guide=vae.guide, elbo=elbo, lr=lr,
                         batch_size=batch, num_epochs=epochs, seed=seed,
                         validation_data=validation)
    return time.perf_counter() - start, fit


def run_fit(x: torch.Tensor, epochs: int, batch: int, lr: float, elbo: str, seed: int,
            validation: dict[str, torch.Tensor] | None = None) -> Timing:
    """The difference method: ``(t(E) - t(E/2)) / (E - E/2)`` seconds per epoch."""
    half = max(1, epochs // 2)
    t_half, _ = _timed_fit(x, half, batch, lr, elbo, seed, validation)
    t_full, fit = _timed_fit(x, epochs, batch, lr, elbo, seed, validation)
    loop = t_full - t_half
    per_epoch = loop / (epochs - half) if loop > 0 else float("nan")
    fixed = t_half - per_epoch * half if loop > 0 else float("nan")
    steps = len(fit.losses) // epochs
    return Timing(per_epoch, _tail(fit.losses, steps, x.shape[0]), fixed,
                  extra={"max_particles": max(fit.history["num_particles"]),
                         "plateaus": len(fit.history.get("plateau_steps", []))})


# ----------------------------------------------------------------------------- processes


def worker(args: argparse.Namespace) -> None:
    """Run under torchrun: the ``pyrovi fit`` row with this process's share of the batch;
    rank 0 prints one JSON line."""
    torch.set_num_threads(1)
    x = training_data()["x"]
    rates, tails, fixed = [], [], []
    for _ in range(args.repeats):
        t = run_fit(x, args.epochs, args.worker_batch, args.lr, args.elbo, args.seed)
        rates.append(t.per_epoch)
        tails.append(t.tail_elbo)
        fixed.append(t.fixed)
    rank, size = distributed.rank_and_size()
    if rank == 0:
        print(RESULT_TAG + json.dumps({"world_size": size, "per_epoch": rates,
                                       "tail_elbo": tails, "fixed": fixed}), flush=True)


def run_processes(nproc: int, args: argparse.Namespace) -> dict[str, Any]:
    """Start ``nproc`` workers with torchrun; the seconds per epoch they measured."""
    if args.batch_size % nproc:
        raise SystemExit(f"vae_epoch: error: --batch-size {args.batch_size} does not split "
                         f"over {nproc} processes")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", str(Path(__file__).resolve()), "--worker",
           "--worker-batch", str(args.batch_size // nproc), "--epochs", str(args.epochs),
           "--repeats", str(args.repeats), "--lr", str(args.lr), "--elbo", args.elbo,
           "--seed", str(args.seed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"torchrun with {nproc} processes failed: {tail[0]}", "wall": wall}
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith(RESULT_TAG)), None)
    if line is None:
        return {"error": f"torchrun with {nproc} processes printed no result", "wall": wall}
    result = json.loads(line[len(RESULT_TAG):])
    result["wall"] = wall
    return result


# ----------------------------------------------------------------------------- driver


def _median(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return statistics.median(finite) if finite else float("nan")


def profile_steps(x: torch.Tensor, args: argparse.Namespace) -> None:
    """cProfile of ``args.profile`` SVIRun steps (after one warm-up epoch): the top
    functions by cumulative and by own time."""
    vae = new_vae(args.seed)
    run = pyrovi.SVIRun(vae.model, {"x": x}, guide=vae.guide, elbo=args.elbo, lr=args.lr,
                        batch_size=args.batch_size, seed=args.seed)
    for _ in range(run.batches.steps_per_epoch):
        run.step()
    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.enable()
    for _ in range(args.profile):
        run.step()
    profiler.disable()
    print(f"\ncProfile of {args.profile} SVIRun steps ({time.perf_counter() - start:.2f} s "
          "with the profiler's own overhead):")
    stats = pstats.Stats(profiler).strip_dirs()
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60, help="epochs E per timed run (60)")
    parser.add_argument("--batch-size", type=int, default=100, help="total minibatch size")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per row (median)")
    parser.add_argument("--lr", type=float, default=0.003, help="Adam step size (0.003)")
    parser.add_argument("--elbo", choices=("trace", "mean_field"), default="trace",
                        help="sampled KL (Trace_ELBO) or closed-form KL (TraceMeanField_ELBO)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--nproc", type=int, nargs="*", default=[1, 2],
                        help="process counts of the torchrun rows (1 2; none to skip)")
    parser.add_argument("--breakdown", action="store_true",
                        help="also time Pyro's loss with torch's Adam, and the step rows "
                             "with Pyro's distribution validation off")
    parser.add_argument("--profile", type=int, default=0,
                        help="also print a cProfile of this many SVIRun steps")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 4 epochs, 1 repeat")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-batch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeats = 4, 1
    if args.epochs < 2 or args.repeats < 1 or args.batch_size < 1 or args.lr <= 0:
        parser.error("need --epochs >= 2, --repeats >= 1, --batch-size >= 1, --lr > 0")
    if args.batch_size > 1197:
        parser.error("--batch-size must not exceed the 1197 training images")
    return args


def main(args: argparse.Namespace) -> dict[str, float]:
    """Run the benchmark, print the table; returns row -> median seconds per epoch."""
    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    x = training_data()["x"]
    validation = load_digits("validation")
    steps = x.shape[0] // args.batch_size
    b, lr, e, s, kind = args.batch_size, args.lr, args.epochs, args.seed, args.elbo
    rows: dict[str, Callable[[int], Timing]] = {
        "torch (hand-written)": lambda ep: run_torch(x, ep, b, lr, kind, s),
        "pyro SVI": lambda ep: run_pyro(x, ep, b, lr, kind, s),
        "pyrovi SVIRun.step": lambda ep: run_svirun(x, ep, b, lr, kind, s),
        "pyrovi fit": lambda ep: run_fit(x, ep, b, lr, kind, s),
        "pyrovi fit + validation": lambda ep: run_fit(x, ep, b, lr, kind, s, validation),
    }
    if args.breakdown:
        rows.update({
            "pyro loss + torch Adam": lambda ep: run_pyro_loss(x, ep, b, lr, kind, s),
            "  same, validation off": lambda ep: run_pyro_loss(x, ep, b, lr, kind, s, False),
            "pyrovi SVIRun, valid. off": lambda ep: run_svirun(x, ep, b, lr, kind, s, False),
        })
    print(f"VAE epoch benchmark: digits train N={x.shape[0]}, batch {b} ({steps} steps per "
          f"epoch), latent 2, hidden 256, categorical(17), Adam lr={lr}, elbo={kind}, "
          f"E={e} epochs, median of {args.repeats}")
    print(f"python {platform.python_version()}, torch {torch.__version__}, pyro "
          f"{pyro.__version__}, pyrovi {pyrovi.__version__}, {os.cpu_count()} CPUs, torch "
          f"threads {torch.get_num_threads()}, load average "
          f"{', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    for row in rows.values():  # one-off costs (imports, first traces), untimed
        row(2)
    runs: dict[str, list[Timing]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, row in rows.items():
            runs[name].append(row(e))

    base = _median([t.per_epoch for t in runs["torch (hand-written)"]])
    header = (f"{'row':<28} {'s/epoch':>9} {'(min-max)':>17} {'vs torch':>9} {'fixed s':>8} "
              f"{'ELBO last epoch':>16}")
    print()
    print(header)
    print("-" * len(header))
    out: dict[str, float] = {}
    for name, ts in runs.items():
        per = [t.per_epoch for t in ts]
        med = _median(per)
        out[name] = med
        span = f"({min(per):.4f}-{max(per):.4f})"
        fixed = _median([t.fixed for t in ts])
        fixed_text = f"{fixed:.2f}" if math.isfinite(fixed) else "-"
        print(f"{name:<28} {med:>9.4f} {span:>17} {med / base:>9.2f} {fixed_text:>8} "
              f"{_median([t.tail_elbo for t in ts]):>16.2f}")
    particles = max(t.extra.get("max_particles", 1) for ts in runs.values() for t in ts)
    torch_runs = [t.per_epoch for t in runs["torch (hand-written)"]]
    paired = {name: [t.per_epoch / base_r for t, base_r in zip(ts, torch_runs, strict=True)]
              for name, ts in runs.items()}
    print("\nper-round ratios to the torch loop of the same round (pairs close in time):")
    for name, values in paired.items():
        if name != "torch (hand-written)":
            print(f"  {name:<28} " + "  ".join(f"{v:.2f}" for v in values)
                  + f"   median {_median(values):.2f}")
    print(f"\nmost particles per step in any pyrovi run: {particles} (1 = like for like)")

    best = max(_median([t.tail_elbo for t in ts]) for ts in runs.values())
    behind = [name for name, ts in runs.items()
              if not _median([t.tail_elbo for t in ts]) > best - 5.0]
    if behind:
        print(f"WARNING: ELBO over the last epoch more than 5 nats per image below the best "
              f"({best:.2f}) for: {', '.join(behind)}; a row that did not train is not a "
              "speed")

    if args.nproc:
        print("\nprocesses (pyrovi fit under torchrun, total batch "
              f"{b}, the difference method inside the workers):")
        per_proc: dict[int, float] = {}
        for nproc in args.nproc:
            result = run_processes(nproc, args)
            if "error" in result:
                print(f"  {nproc} process(es): {result['error']}")
                continue
            med = _median(result["per_epoch"])
            per_proc[nproc] = med
            out[f"pyrovi fit, {nproc} process(es)"] = med
            print(f"  {nproc} process(es), batch {b // nproc} each: {med:.4f} s/epoch "
                  f"(min-max {min(result['per_epoch']):.4f}-{max(result['per_epoch']):.4f}), "
                  f"ELBO last epoch {_median(result['tail_elbo']):.2f}, fixed "
                  f"{_median(result['fixed']):.2f} s, torchrun wall {result['wall']:.1f} s")
        if 1 in per_proc and 2 in per_proc:
            print(f"  speed-up of 2 processes over 1: {per_proc[1] / per_proc[2]:.2f}x")

    ratio = {name: _median(values) for name, values in paired.items()}
    print(f"\nratios (medians of the per-round ratios): "
          f"pyrovi_fit/torch={ratio['pyrovi fit']:.2f}  "
          f"pyrovi_step/torch={ratio['pyrovi SVIRun.step']:.2f}  "
          f"pyro_svi/torch={ratio['pyro SVI']:.2f}  "
          f"pyrovi_fit/pyro_svi={ratio['pyrovi fit'] / ratio['pyro SVI']:.2f}  "
          f"(goal: pyrovi_fit/torch <= {GOAL})")
    if args.profile:
        profile_steps(x, args)
    return out


if __name__ == "__main__":
    parsed = parse_args()
    if parsed.worker:
        worker(parsed)
    else:
        main(parsed)
