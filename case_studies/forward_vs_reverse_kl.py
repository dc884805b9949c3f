"""Case study: a Gaussian q on a posterior with two modes, under five objectives.

The target is ``p(z | x) = N(z; -m, 1) / 2 + N(z; m, 1) / 2`` (a Pyro model with a
``pyro.factor``; ``log p(x) = 0`` exactly). A Gaussian q (the ``mean_field`` family) is
fitted with ``pyrovi.fit`` under each objective of :mod:`pyrovi.infer.objectives`:

- ``trace``: the ELBO, reverse ``KL(q || p)``, mode seeking: q sits on one mode, with the
  mode's width (sd 1);
- ``renyi`` with ``alpha = 0.5`` and ``iwae`` (Rényi ``alpha = 0``, K = 16): between;
- ``rws``: the forward ``KL(p || q)``, whose Gaussian optimum matches the target's mean and
  variance: mean 0, sd ``sqrt(m^2 + 1)``;
- ``cubo``: the chi^2 upper bound, mass covering.

It writes ``densities.png`` (the target and each fitted q) and ``summary.json`` (each fit's
location and spread, ELBO, its own objective, and the exact reverse and forward KL against
the target by quadrature on a 1-D grid), and prints a table.

Run ``python case_studies/forward_vs_reverse_kl.py --help`` for the flags; ``--quick``
runs fixed short fits (a smoke test; the figures are close to the full run's).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyro  # noqa: E402
import pyro.distributions as dist  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402

import pyrovi  # noqa: E402

PRIOR_SD = 10.0
FITS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("reverse KL (trace)", "trace", {}),
    ("renyi alpha=0.5", "renyi", {"alpha": 0.5}),
    ("iwae (renyi alpha=0)", "iwae", {}),
    ("forward KL (rws)", "rws", {}),
    ("cubo (chi^2)", "cubo", {}),
)


def model(m: float = 3.0) -> None:
    """``z`` with density ``N(-m, 1) / 2 + N(m, 1) / 2``: a broad Normal prior and a factor
    that turns it into the mixture (so the log evidence is exactly 0)."""
    z = pyro.sample("z", dist.Normal(0.0, PRIOR_SD))
    locs = torch.tensor([-m, m], dtype=z.dtype)
    log_mix = torch.logsumexp(dist.Normal(locs, 1.0).log_prob(z.unsqueeze(-1)), -1) \
        - math.log(2.0)
    pyro.factor("target", log_mix - dist.Normal(0.0, PRIOR_SD).log_prob(z))


def target_density(z: np.ndarray, m: float) -> np.ndarray:
    """The posterior density on a grid."""
    return 0.5 * stats.norm.pdf(z, -m, 1.0) + 0.5 * stats.norm.pdf(z, m, 1.0)


def exact_kls(loc: float, scale: float, m: float) -> tuple[float, float]:
    """``KL(q || p)`` and ``KL(p || q)`` for ``q = N(loc, scale)`` by quadrature on a grid
    wide enough for both (the trapezoid rule on 20001 points)."""
    half = max(m + 12.0, abs(loc) + 12.0 * scale)
    z = np.linspace(-half, half, 20001)
    log_p = np.logaddexp(stats.norm.logpdf(z, -m, 1.0), stats.norm.logpdf(z, m, 1.0)) \
        - math.log(2.0)
    log_q = stats.norm.logpdf(z, loc, scale)
    reverse = float(np.trapezoid(np.exp(log_q) * (log_q - log_p), z))
    forward = float(np.trapezoid(np.exp(log_p) * (log_p - log_q), z))
    return reverse, forward


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags of the case study."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--m", type=float, default=3.0, help="the modes sit at -m and +m")
    parser.add_argument("--out", default="forward-vs-reverse-kl", help="output folder")
    parser.add_argument("--num-steps", type=int, default=None,
                        help="fixed SVI steps per fit (default: until converged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="fixed short fits from the Laplace start, for smoke tests")
    return parser.parse_args(argv)


def fit_one(elbo: str, extra: dict[str, Any], args: argparse.Namespace) -> pyrovi.SVIFit:
    """One fit; ``--quick`` or ``--num-steps``: a fixed count from the Laplace start."""
    kwargs: dict[str, Any] = dict(extra)
    if args.num_steps is not None:
        kwargs.update(num_steps=args.num_steps, init="laplace",
                      lr=0.03 if elbo in ("cubo", "iwae") else 0.1)
    return pyrovi.fit(model, {"m": args.m}, guide="mean_field", elbo=elbo, seed=args.seed,
                      **kwargs)


def main(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run the study; returns one row per fit (also in ``summary.json``)."""
    if args.quick:
        args.num_steps = args.num_steps or 300
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    for label, elbo, extra in FITS:
        fit = fit_one(elbo, extra, args)
        draws = fit.sample(num_samples=4000, seed=args.seed)["z"].double().numpy()
        loc, scale = float(draws.mean()), float(draws.std())
        reverse, forward = exact_kls(loc, scale, args.m)
        objective = fit.history["objective"]
        rows.append({
            "label": label, "elbo_name": elbo, **extra, "loc": loc, "scale": scale,
            "elbo": fit.elbo, "elbo_se": fit.elbo_se, "objective": objective["name"],
            "objective_value": objective["value"], "objective_se": objective["se"],
            "bound": objective["bound"], "divergence": objective["divergence"],
            "kl_reverse": reverse, "kl_forward": forward, "steps": len(fit.losses),
            "converged": fit.converged})
    summary = {"m": args.m, "log_evidence": 0.0,
               "forward_kl_optimum": {"loc": 0.0, "scale": math.sqrt(args.m**2 + 1.0)},
               "mode_width": 1.0, "fits": rows}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    _plot(rows, args.m, out / "densities.png")
    print(f"target: modes at ±{args.m:g} (sd 1); forward-KL optimum N(0, "
          f"{math.sqrt(args.m**2 + 1):.3f}); log p(x) = 0")
    print(f"{'fit':24s} {'loc':>7s} {'sd':>6s} {'ELBO':>8s} {'objective':>16s} "
          f"{'KL(q||p)':>9s} {'KL(p||q)':>9s}")
    for r in rows:
        own = f"{r['objective']} {r['objective_value']:+.3f}"
        print(f"{r['label']:24s} {r['loc']:+7.3f} {r['scale']:6.3f} {r['elbo']:8.3f} "
              f"{own:>16s} {r['kl_reverse']:9.3f} {r['kl_forward']:9.3f}")
    return rows


def _plot(rows: list[dict[str, Any]], m: float, path: Path) -> None:
    z = np.linspace(-m - 8.0, m + 8.0, 1000)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.fill_between(z, target_density(z, m), color="0.85", label="target p(z | x)")
    for r in rows:
        ax.plot(z, stats.norm.pdf(z, r["loc"], r["scale"]), lw=1.8,
                label=f"{r['label']}: N({r['loc']:+.2f}, {r['scale']:.2f})")
    ax.set_xlabel("z")
    ax.set_ylabel("density")
    ax.set_title("Gaussian q under mode-seeking and mass-covering objectives")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main(parse_args())
