"""Case study: the 2PL item response model on the LSAT, VI against NUTS.

Fits ``irt_2pl`` to LSAT section 6 (or 7) with the per-person mean-field guide (two numbers
per examinee) and the amortized guide ``amortized_irt`` (an encoder of each examinee's
answers), compares each with a NUTS reference of the same model through
:func:`pyrovi.compare`, and fits the marginal model (abilities integrated out by
quadrature) with a full-rank Gaussian for the item parameters. Writes one report per
guide, ``summary.md`` / ``summary.csv`` (ELBOs, sd ratios, the item table, the ``G²``
posterior predictive p-value) and ``abilities.png``: each examinee's ability with its 90%
interval, VI against NUTS, one examinee per response pattern, sorted.

Run ``python case_studies/irt_lsat.py --help`` for the flags; ``--quick`` makes every run
tiny (a smoke test, not a result). ``--reference tests/fixtures/latent/irt_lsat6_nuts.nc``
reuses the stored NUTS run of the tests instead of sampling (section 6 only).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import arviz as az  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import pyrovi  # noqa: E402
from pyrovi.diagnostics import interval_summary  # noqa: E402
from pyrovi.models import irt  # noqa: E402
from pyrovi.report.markdown import frame_table  # noqa: E402

GUIDES = ("mean_field", "amortized_irt")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags of the case study."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="lsat6", choices=irt.DATASETS)
    parser.add_argument("--out", default="irt-lsat", help="output folder")
    parser.add_argument("--people", type=int, default=None,
                        help="fit a random subset of this many examinees (default: all)")
    parser.add_argument("--reference", default=None,
                        help="stored NUTS draws (.nc) of irt_2pl on the same data")
    parser.add_argument("--num-samples", type=int, default=1000, help="NUTS draws per chain")
    parser.add_argument("--num-warmup", type=int, default=1000, help="NUTS warm-up per chain")
    parser.add_argument("--num-chains", type=int, default=2)
    parser.add_argument("--num-steps", type=int, default=None,
                        help="fixed SVI steps (default: until converged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny runs, for smoke tests")
    return parser.parse_args(argv)


def _subset(data: dict[str, torch.Tensor], people: int | None, seed: int
            ) -> dict[str, torch.Tensor]:
    if people is None or people >= data["y"].shape[0]:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(data["y"].shape[0], people,
                                                      replace=False))
    return {k: v[keep] for k, v in data.items()}


def _pattern_people(data: dict[str, torch.Tensor]) -> np.ndarray:
    """One examinee per distinct response pattern (the first in the data)."""
    y = data["y"].numpy().astype(int)
    _, first = np.unique(y @ (1 << np.arange(y.shape[1] - 1, -1, -1)), return_index=True)
    return np.sort(first)


def _theta_intervals(idata: az.InferenceData, people: np.ndarray) -> dict[str, np.ndarray]:
    theta = idata.posterior["theta"].values
    theta = theta.reshape(-1, theta.shape[-1])
    if theta.shape[-1] != len(people):  # all examinees: keep the ones shown
        theta = theta[:, people]
    return interval_summary(theta)


def plot_abilities(shown: dict[str, dict[str, np.ndarray]], path: Path, title: str) -> None:
    """Each shown examinee's posterior mean and 90% interval of theta, one row of
    markers per method, examinees sorted by the NUTS mean."""
    ref = shown["NUTS"]
    order = np.argsort(ref["mean"], kind="stable")
    x = np.arange(len(order))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.28 * len(order) + 2), 4.8))
    offsets = np.linspace(-0.25, 0.25, len(shown))
    for (label, s), dx in zip(shown.items(), offsets, strict=True):
        mean = s["mean"][order]
        yerr = [mean - s["lower"][order], s["upper"][order] - mean]
        ax.errorbar(x + dx, mean, yerr=yerr, fmt="o", ms=3.5, capsize=2, lw=1, label=label)
    ax.set_xlabel("examinee (one per response pattern), sorted by NUTS mean")
    ax.set_ylabel("ability theta (posterior mean, 90% interval)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _row(guide: str, fit: pyrovi.SVIFit, cmp: pyrovi.Comparison) -> dict[str, object]:
    table, s = cmp.table, cmp.summary
    a_rows = table.loc[[n for n in table.index if n.startswith("a[")]]
    theta_rows = table.loc[[n for n in table.index if n.startswith("theta[")]]
    return {
        "guide": guide,
        "ELBO": round(fit.elbo, 2),
        "ELBO se": round(fit.elbo_se, 2),
        "steps": len(fit.losses),
        "converged": fit.converged,
        "verdict": s["verdict"],
        "sd ratio a (min)": round(float(a_rows["sd_ratio"].min()), 3),
        "sd ratio a (max)": round(float(a_rows["sd_ratio"].max()), 3),
        "sd ratio theta (median)": round(float(theta_rows["sd_ratio"].median()), 3),
        "max |mean error| (ref sd)": round(s["max_abs_mean_error_z"], 3),
        "k-hat": None if s["khat"] is None else round(s["khat"], 2),
    }


def main(args: argparse.Namespace) -> pd.DataFrame:
    """Run the study; returns the side-by-side table (also written to ``args.out``)."""
    if args.quick:
        args.num_samples, args.num_warmup, args.num_chains = 40, 40, 1
        args.num_steps = args.num_steps or 30
        args.people = args.people or 100
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = _subset(irt.load_data(args.data), args.people, args.seed)
    people = _pattern_people(data)
    if args.reference:
        ref = pyrovi.load_reference(args.reference)
    else:
        ref = pyrovi.nuts(irt.model, data, num_samples=args.num_samples,
                          num_warmup=args.num_warmup, num_chains=args.num_chains,
                          seed=args.seed)
    if "theta_person" in getattr(ref, "constant_data", {}):
        people = np.asarray(ref.constant_data["theta_person"].values, dtype=int)

    rows, fits = [], {}
    shown = {"NUTS": _theta_intervals(ref, people)}
    for guide in GUIDES:
        fit = pyrovi.fit(irt.model, data, guide=guide, num_steps=args.num_steps, seed=args.seed)
        cmp = pyrovi.compare(fit, ref, labels={"model": "irt_2pl", "data": args.data})
        cmp.write(out / guide)
        rows.append(_row(guide, fit, cmp))
        fits[guide] = fit
        shown[guide] = _theta_intervals(fit.posterior(num_samples=1000, seed=args.seed), people)
    table = pd.DataFrame(rows)
    table.to_csv(out / "summary.csv", index=False)

    marginal = pyrovi.fit(irt.marginal_model, data, guide="full_rank",
                          num_steps=args.num_steps, seed=args.seed)
    items = irt.parameter_table(marginal, items=irt.item_names(args.data))
    items_nuts = irt.parameter_table(ref, items=irt.item_names(args.data))
    items["est (NUTS)"], items["sd (NUTS)"] = items_nuts["est"], items_nuts["sd"]
    checks = irt.fit_indices(ref, data)
    quadrature = irt.score(ref, {k: v[people] for k, v in data.items()})
    encoder = irt.score(fits["amortized_irt"], {k: v[people] for k, v in data.items()},
                        method="encoder")
    shown["quadrature (NUTS items)"] = {k: quadrature[k].to_numpy() for k in quadrature}
    plot_abilities(shown, out / "abilities.png",
                   f"{args.data}: abilities, VI against NUTS ({len(people)} examinees)")

    gap = table.set_index("guide")["ELBO"]
    source = (f"from {args.reference}" if args.reference
              else f"{args.num_chains} x {args.num_samples} draws")
    lines = [
        f"# 2PL on {args.data}: VI against NUTS",
        "",
        f"{data['y'].shape[0]} examinees x {data['y'].shape[1]} items; NUTS {source}.",
        "",
        frame_table(table),
        "",
        f"Amortized minus per-person ELBO: {gap['amortized_irt'] - gap['mean_field']:+.2f} nats "
        "(the amortization gap is the negative of this when both fits reach their optimum).",
        f"Marginal model (abilities integrated out), full-rank guide: ELBO "
        f"{marginal.elbo:.2f} ± {marginal.elbo_se:.2f} nats (a lower bound of the same log "
        "evidence as the models above).",
        "",
        "## Item parameters (a (theta - b)): marginal model, full rank; NUTS alongside",
        "",
        frame_table(items.round(3)),
        "",
        "## Fit: G² of the response-pattern table, posterior predictive p-value",
        "",
        f"G² (posterior mean) = {checks['g2']:.2f}, replicated {checks['g2_replicated']:.2f}, "
        f"PPP = {checks['ppp']:.3f} over {checks['num_draws']} NUTS draws "
        f"({checks['num_observed_patterns']} of {checks['num_patterns']} patterns seen).",
        "",
        "## Scores of the examinees shown in abilities.png",
        "",
        "Median |quadrature mean - encoder mean| = "
        f"{float(np.median(np.abs(quadrature['mean'] - encoder['mean']))):.3f}; median sd "
        f"quadrature {float(quadrature['sd'].median()):.3f}, encoder "
        f"{float(encoder['sd'].median()):.3f}.",
        "",
    ]
    (out / "summary.md").write_text("\n".join(lines), encoding="utf-8")
    return table


if __name__ == "__main__":
    main(parse_args())
