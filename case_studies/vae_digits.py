"""Case study: a variational autoencoder on the bundled 8x8 digits, and what its ELBO hides.

Trains :class:`pyrovi.models.vae.VAE` (64 pixels of 17 grey levels, a categorical
likelihood, one hidden layer of 256, a latent code of ``--latent-dim`` numbers) on the
training split through :func:`pyrovi.fit`: minibatches of 100, the held-out ELBO of the
validation split after every epoch, early stopping. On the test split it then reports:

- the held-out ELBO and the importance weighted log-likelihood ``L_K`` for K = 1, 10,
  100, 1,000 and 5,000 draws of the encoder per image (nats per image);
- the two gaps between ``log p(x)`` and the encoder's ELBO on some test images
  (:func:`pyrovi.models.vae.inference_gaps`): the *approximation gap* (the best diagonal
  Gaussian per image falls short of the posterior) and the *amortization gap* (the
  encoder falls short of that best Gaussian);
- for a few test images, the encoder's ``q(z | x)`` against NUTS on ``p(z | x)`` with the
  decoder fixed (:func:`pyrovi.models.vae.encoder_vs_nuts`), one report each in
  ``nuts_image_<i>/`` (``i`` is the image's row in the test split);
- pictures: ``elbo_trace.png`` (training ELBO per step, held-out ELBO per epoch),
  ``iw_bounds.png`` (``L_K`` against K), ``reconstructions.png``, ``prior_samples.png``,
  ``latent_map.png`` (the test images' encoder means coloured by digit);
- ``summary.json`` (written atomically) and ``summary.md``; the Markdown is printed too.

Run ``python case_studies/vae_digits.py --help`` for the flags; ``--quick`` makes every
run tiny (a smoke test, not a result). A bad flag ends in one line on stderr and exit
code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, NoReturn

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

import pyrovi  # noqa: E402
from pyrovi.cli import positive_int  # noqa: E402
from pyrovi.infer.importance import iw_log_likelihood  # noqa: E402
from pyrovi.models.vae import (  # noqa: E402
    VAE,
    digit_labels,
    elbo_estimators,
    encoder_vs_nuts,
    inference_gaps,
    load_digits,
)
from pyrovi.report.markdown import frame_table  # noqa: E402

PROG = "vae_digits"
EXIT_USAGE = 2
BATCH_SIZE = 100
HIDDEN = (256,)
FULL_KS = (1, 10, 100, 1000, 5000)
QUICK_KS = (1, 10, 100)
SUMMARY_KEYS = ("test_elbo", "test_log_likelihood", "approximation_gap", "amortization_gap",
                "steps", "converged", "seconds")
"""The keys ``summary.json`` always holds (more are added)."""


class UsageError(Exception):
    """A bad flag or output folder: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line flags of the case study.

    Raises
    ------
    UsageError
        For a bad flag (the message is one line).
    """
    parser = _Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="vae-digits", help="output folder (vae-digits)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the fit")
    parser.add_argument("--latent-dim", type=positive_int, default=2,
                        help="size of each image's latent code z (2)")
    parser.add_argument("--num-steps", type=positive_int, default=None,
                        help="fixed SVI steps (default: until the held-out ELBO stops rising)")
    parser.add_argument("--lr", type=_positive_float, default=None,
                        help="step size (default: chosen by the engine's trial)")
    parser.add_argument("--test-images", type=positive_int, default=300,
                        help="test images of the held-out ELBO and log-likelihood (all 300)")
    parser.add_argument("--gap-images", type=positive_int, default=50,
                        help="test images of the gap report (50)")
    parser.add_argument("--gap-draws", type=positive_int, default=5000,
                        help="draws per image of each proposal in the gap report (5000)")
    parser.add_argument("--nuts-images", type=positive_int, default=3,
                        help="test images compared with NUTS (3)")
    parser.add_argument("--num-samples", type=positive_int, default=1000,
                        help="NUTS draws per chain")
    parser.add_argument("--num-warmup", type=positive_int, default=1000,
                        help="NUTS warm-up per chain")
    parser.add_argument("--num-chains", type=positive_int, default=2, help="NUTS chains")
    parser.add_argument("--quick", action="store_true", help="tiny runs, for smoke tests")
    args = parser.parse_args(argv)
    args.ks = FULL_KS
    if args.quick:
        args.num_steps = args.num_steps or 200
        args.lr = args.lr or 0.01
        args.test_images, args.gap_images, args.gap_draws = 100, 3, 100
        args.nuts_images, args.num_samples, args.num_warmup, args.num_chains = 1, 100, 100, 1
        args.ks = QUICK_KS
    args.test_images = min(args.test_images, 300)
    args.gap_images = min(args.gap_images, args.test_images)
    args.nuts_images = min(args.nuts_images, args.gap_images)
    return args


# ----------------------------------------------------------------------------- output


def _check_writable(out: Path) -> None:
    """Fail before any work if the output folder cannot be created and written."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} exists and is not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".vae-digits-write-test-"):
            pass
    except OSError as exc:
        raise UsageError(f"cannot write to output folder {out}: {exc.strerror or exc}") from exc


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, then move it into place."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _save(fig: plt.Figure, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------- pictures


def _decoded(vae: VAE, z: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Decoder mean (expected grey level) and mode (most probable level) at ``z``, each
    ``(N, 64)``."""
    with torch.no_grad():
        logits = vae.decoder(z)  # (N, 64, L)
        probs = torch.softmax(logits, dim=-1)
        levels = torch.arange(probs.shape[-1], dtype=probs.dtype)
        return (probs * levels).sum(-1).numpy(), probs.argmax(-1).numpy()


def _image(ax: plt.Axes, pixels: np.ndarray, levels: int) -> None:
    ax.imshow(pixels.reshape(8, 8), cmap="gray_r", vmin=0, vmax=levels - 1,
              interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_elbo_trace(fit: pyrovi.SVIFit, num_train: int, num_validation: int,
                    test_elbo: float, path: Path) -> None:
    """Training ELBO per step (raw and smoothed, nats per image) and the held-out ELBO
    after every epoch."""
    elbo = -np.asarray(fit.losses, dtype=float) / num_train
    steps = np.arange(1, elbo.size + 1)
    span = max(1, min(50, elbo.size // 10))
    smooth = pd.Series(elbo).rolling(span, min_periods=1).mean().to_numpy()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.plot(steps, elbo, color="0.75", lw=0.6, label="minibatch ELBO")
    left.plot(steps, smooth, color="C0", lw=1.5, label=f"rolling mean of {span} steps")
    trial = int(fit.history.get("start_steps", 0))
    if trial:
        left.axvline(trial, color="k", ls=":", lw=1, label="end of the step-size trial")
    for i, step in enumerate(fit.history.get("plateau_steps", [])):
        left.axvline(step, color="C3", ls="--", lw=0.8,
                     label="step size halved" if i == 0 else None)
    finite = smooth[np.isfinite(smooth)]
    if finite.size:
        left.set_ylim(np.percentile(finite, 2) - 10, finite.max() + 5)
    left.set_xlabel("SVI step")
    left.set_ylabel("ELBO (nats per training image)")
    left.set_title("Training: minibatch ELBO, scaled to the whole set")
    left.legend(fontsize=8, loc="lower right")
    held_out = np.asarray(fit.history.get("validation_elbo", []), dtype=float) / num_validation
    if held_out.size:
        epochs = np.arange(1, held_out.size + 1)
        right.plot(epochs, held_out, "o-", ms=2.5, lw=1, color="C1",
                   label="validation ELBO after each epoch")
        best = int(np.argmax(held_out))
        right.plot(epochs[best], held_out[best], "k*", ms=10,
                   label=f"best epoch ({best + 1}): {held_out[best]:.1f}")
        right.set_ylim(np.percentile(held_out, 5) - 5, held_out.max() + 3)
    right.axhline(test_elbo, color="C2", ls="--", lw=1, label=f"test ELBO {test_elbo:.1f}")
    right.set_xlabel("epoch")
    right.set_ylabel("ELBO (nats per held-out image)")
    right.set_title("Held out: early stopping reads this curve")
    right.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def plot_iw_bounds(bounds: dict[int, tuple[float, float]], test_elbo: float, path: Path,
                   gap_log_likelihood: float | None = None) -> None:
    """``L_K`` against K on a log axis, with the test ELBO for scale."""
    ks = np.array(sorted(bounds))
    values = np.array([bounds[k][0] for k in ks])
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ks, values, "o-", color="C0", label="importance weighted bound $L_K$")
    ax.axhline(test_elbo, color="C2", ls="--", lw=1, label=f"ELBO {test_elbo:.2f}")
    for k, v in zip(ks, values, strict=True):
        ax.annotate(f"{v:.2f}", (k, v), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8)
    ax.set_xscale("log")
    ax.margins(x=0.08, y=0.15)
    ax.set_xlabel("K, draws of the encoder per image")
    ax.set_ylabel("nats per test image")
    ax.set_title("log p(x) from below: the bound rises with K")
    ax.legend(fontsize=8, loc="lower right")
    _save(fig, path)


def plot_reconstructions(vae: VAE, x: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """One test image per digit, the decoder's mean and mode at its encoder mean."""
    picks = [int(np.flatnonzero(labels == d)[0]) for d in range(10) if (labels == d).any()]
    with torch.no_grad():
        loc, _ = vae.encode(torch.as_tensor(x[picks]))
    mean, mode = _decoded(vae, loc)
    rows = (("test image", x[picks]), ("decoder mean", mean), ("decoder mode", mode))
    fig, axes = plt.subplots(3, len(picks), figsize=(1.1 * len(picks) + 1, 3.8),
                             squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(len(picks)):
            _image(axes[r, c], images[c], vae.num_levels)
        axes[r, 0].set_ylabel(name, fontsize=8)
    fig.suptitle("Reconstructions: x, then the decoder at z = encoder mean of x", fontsize=10)
    _save(fig, path)


def plot_prior_samples(vae: VAE, seed: int, path: Path, side: int = 8) -> None:
    """``z ~ N(0, I)``: the decoder's mean image, and one draw ``x ~ p(x | z)``."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(side * side, vae.latent_dim, generator=gen)
    mean, _ = _decoded(vae, z)
    with torch.no_grad():
        probs = torch.softmax(vae.decoder(z), dim=-1).reshape(-1, vae.num_levels)
        draws = torch.multinomial(probs, 1, generator=gen).reshape(side * side, -1).numpy()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    for ax, images, title in ((axes[0], mean, "decoder mean at z ~ N(0, I)"),
                              (axes[1], draws, "x ~ p(x | z), same z")):
        grid = images.reshape(side, side, 8, 8).transpose(0, 2, 1, 3).reshape(8 * side,
                                                                               8 * side)
        ax.imshow(grid, cmap="gray_r", vmin=0, vmax=vae.num_levels - 1,
                  interpolation="nearest")
        for k in range(1, side):
            ax.axhline(8 * k - 0.5, color="0.8", lw=0.8)
            ax.axvline(8 * k - 0.5, color="0.8", lw=0.8)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title)
    fig.suptitle(f"{side * side} samples from the prior", fontsize=11)
    _save(fig, path)


def latent_axes(loc: np.ndarray) -> tuple[int, int]:
    """The two latent dimensions whose encoder means vary most over the images (0 and 1
    for a 2-D code)."""
    if loc.shape[1] <= 2:
        return 0, min(1, loc.shape[1] - 1)
    order = np.argsort(-loc.var(axis=0), kind="stable")
    first, second = sorted(int(i) for i in order[:2])
    return first, second


def plot_latent_map(vae: VAE, x: np.ndarray, labels: np.ndarray, path: Path) -> tuple[int, int]:
    """Encoder means of the test images coloured by digit; returns the dims shown."""
    with torch.no_grad():
        loc = vae.encode(torch.as_tensor(x))[0].numpy()
    a, b = latent_axes(loc)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    cmap = plt.get_cmap("tab10")
    for d in range(10):
        rows = labels == d
        if not rows.any():
            continue
        ax.scatter(loc[rows, a], loc[rows, b] if a != b else np.zeros(rows.sum()), s=12,
                   color=cmap(d), label=str(d), alpha=0.85)
        centre = loc[rows].mean(axis=0)
        ax.annotate(str(d), (centre[a], centre[b] if a != b else 0.0), fontsize=13,
                    weight="bold", color=cmap(d), ha="center", va="center")
    ax.set_xlabel(f"z[{a}] (encoder mean)")
    ax.set_ylabel(f"z[{b}] (encoder mean)" if a != b else "")
    shown = "" if vae.latent_dim <= 2 else \
        f" (dims {a} and {b} of {vae.latent_dim}: the two most spread)"
    ax.set_title(f"Latent map of {len(x)} test images{shown}", fontsize=10)
    ax.legend(title="digit", fontsize=8, ncol=2, loc="best")
    _save(fig, path)
    return a, b


# ----------------------------------------------------------------------------- the study


def _nuts_picks(gap: np.ndarray, count: int) -> list[int]:
    """Gap images to compare with NUTS: the largest amortization gap first, then the
    smallest, then those nearest the median."""
    order = list(np.argsort(-gap, kind="stable"))
    picks = [order[0]]
    if count > 1 and order[-1] not in picks:
        picks.append(order[-1])
    for i in np.argsort(np.abs(gap - np.median(gap)), kind="stable"):
        if len(picks) >= count:
            break
        if i not in picks:
            picks.append(i)
    return [int(i) for i in picks[:count]]


def main(args: argparse.Namespace) -> dict[str, Any]:
    """Run the study; return the numbers written to ``summary.json``.

    Raises
    ------
    UsageError
        If the output folder cannot be written.
    """
    out = Path(args.out)
    _check_writable(out)
    start = time.perf_counter()
    torch.set_num_threads(1)
    train, validation = load_digits("train"), load_digits("validation")
    test_x = load_digits("test")["x"][:args.test_images]
    labels = digit_labels("test")[:args.test_images]
    num_train, num_val = train["x"].shape[0], validation["x"].shape[0]

    # 1. training, through the fit engine
    torch.manual_seed(args.seed)
    vae = VAE(train["x"].shape[1], latent_dim=args.latent_dim, hidden=HIDDEN,
              likelihood="categorical", num_levels=17)
    began = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyrovi.ConvergenceWarning)
        fit = pyrovi.fit(vae.model, train, guide=vae.guide, batch_size=BATCH_SIZE,
                         validation_data=validation, num_steps=args.num_steps, lr=args.lr,
                         seed=args.seed, progress=sys.stderr.isatty())
    fit_seconds = time.perf_counter() - began
    trained = fit.guide.__self__  # the copy holding the averaged (or best epoch's) weights
    trained.eval()

    # 2. held-out ELBO and the importance weighted bounds
    estimates = elbo_estimators(trained, test_x, num_draws=100 if args.quick else 1000,
                                seed=args.seed)
    test_elbo = estimates["mean_field"]["elbo"]
    bounds = iw_log_likelihood(trained.model, trained.guide, {"x": test_x}, ks=args.ks,
                               seed=args.seed)

    # 3. the two gaps, and NUTS on a few images
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", pyrovi.ConvergenceWarning)
        gaps = inference_gaps(trained, test_x[:args.gap_images], k=args.gap_draws,
                              seed=args.seed)
    nuts_rows = []
    for i in _nuts_picks(np.asarray(gaps.amortization_gap), args.nuts_images):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a short quick-run chain warns about itself
            cmp = encoder_vs_nuts(trained, test_x[i], num_samples=args.num_samples,
                                  num_warmup=args.num_warmup, num_chains=args.num_chains,
                                  seed=args.seed, cache=not args.quick)
        cmp.write(out / f"nuts_image_{i}")
        s = cmp.summary
        nuts_rows.append({
            "test image": i, "digit": int(labels[i]),
            "amortization gap": round(float(gaps.amortization_gap[i]), 3),
            "approximation gap": round(float(gaps.approximation_gap[i]), 3),
            "max |mean error| (NUTS sd)": round(float(s["max_abs_mean_error_z"]), 3),
            "worst sd ratio": round(float(s["worst_sd_ratio"]), 3),
            "W1 (joint)": round(float(s["w1_joint"]), 3),
            "verdict": s["verdict"],
        })

    # 4. pictures
    x_np = test_x.numpy()
    plot_elbo_trace(fit, num_train, num_val, test_elbo, out / "elbo_trace.png")
    plot_iw_bounds(bounds, test_elbo, out / "iw_bounds.png")
    plot_reconstructions(trained, x_np, labels, out / "reconstructions.png")
    plot_prior_samples(trained, args.seed, out / "prior_samples.png")
    dims = plot_latent_map(trained, x_np, labels, out / "latent_map.png")

    held_out = [v / num_val for v in fit.history.get("validation_elbo", [])]
    gap_means, gap_se = gaps.means, gaps.mc_se
    summary: dict[str, Any] = {
        "test_elbo": test_elbo,
        "test_log_likelihood": {str(k): v for k, (v, _) in bounds.items()},
        "approximation_gap": gap_means["approximation_gap"],
        "amortization_gap": gap_means["amortization_gap"],
        "steps": len(fit.losses),
        "converged": bool(fit.converged),
        "seconds": fit_seconds,
        "units": "nats per image",
        "test_elbo_se": estimates["mean_field"]["se"],
        "test_elbo_estimator": "closed-form KL (TraceMeanField_ELBO per draw)",
        "test_elbo_sampled_kl": estimates["trace"]["elbo"],
        "test_log_likelihood_se": {str(k): se for k, (_, se) in bounds.items()},
        "num_test_images": int(test_x.shape[0]),
        "train_elbo": fit.elbo / num_train,
        "train_elbo_se": fit.elbo_se / num_train,
        "validation_elbo_best": max(held_out) if held_out else None,
        "epochs": len(held_out),
        "trial_steps": int(fit.history.get("start_steps", 0)),
        "final_lr": float(fit.history["lr"][-1]) if fit.history.get("lr") else None,
        "gap_se": {"approximation_gap": gap_se["approximation_gap"],
                   "amortization_gap": gap_se["amortization_gap"]},
        "gaps": gaps.to_dict(),
        "nuts": nuts_rows,
        "latent_dim": args.latent_dim,
        "latent_map_dims": list(dims),
        "seed": args.seed,
        "quick": bool(args.quick),
        "total_seconds": time.perf_counter() - start,
    }
    write_text_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    markdown = summary_markdown(summary, args)
    write_text_atomically(out / "summary.md", markdown)
    print(markdown)
    return summary


def summary_markdown(s: dict[str, Any], args: argparse.Namespace) -> str:
    """The Markdown summary of ``summary.json``'s numbers."""
    if args.num_steps is not None:
        stop = "a fixed step count"
    elif s["converged"]:
        stop = "stopped by the held-out ELBO or the stopping rule"
    else:
        stop = "stopped at the step cap, not converged"
    bounds = pd.DataFrame({
        "K": [int(k) for k in s["test_log_likelihood"]],
        "L_K (nats per image)": [round(v, 3) for v in s["test_log_likelihood"].values()],
        "se over images": [round(v, 3) for v in s["test_log_likelihood_se"].values()],
    })
    g, gse = s["gaps"]["means"], s["gaps"]["mc_se"]
    gap_table = pd.DataFrame({
        "term": ["log p(x) (best IW bound)", "ELBO of q* (per-image Gaussian)",
                 "ELBO of the encoder", "approximation gap", "amortization gap"],
        "nats per image": [round(g[k], 3) for k in ("log_likelihood", "elbo_optimal",
                                                   "elbo_amortized", "approximation_gap",
                                                   "amortization_gap")],
        "Monte Carlo se": [round(gse[k], 3) for k in ("log_likelihood", "elbo_optimal",
                                                    "elbo_amortized", "approximation_gap",
                                                    "amortization_gap")],
    })
    largest = max(int(k) for k in s["test_log_likelihood"])
    lines = [
        f"# VAE on the 8x8 digits (latent dim {s['latent_dim']}, seed {s['seed']})", "",
        f"Training: {s['steps']} SVI steps ({s['trial_steps']} of them the step-size trial), "
        f"{s['epochs']} epochs of batch {BATCH_SIZE}, {s['seconds']:.1f} s; {stop}. "
        f"Train ELBO {s['train_elbo']:.2f}, best validation ELBO "
        + (f"{s['validation_elbo_best']:.2f}" if s["validation_elbo_best"] is not None
           else "-") + " nats per image.", "",
        f"## Held out: {s['num_test_images']} test images", "",
        f"ELBO {s['test_elbo']:.3f} ± {s['test_elbo_se']:.3f} nats per image (closed-form "
        f"KL; sampled KL gives {s['test_elbo_sampled_kl']:.3f}). Importance weighted "
        "bounds with K draws of the encoder:", "",
        frame_table(bounds), "",
        f"The bound gains {s['test_log_likelihood'][str(largest)] - s['test_elbo']:.3f} nats "
        f"per image over the ELBO at K = {largest:,}: the encoder's KL(q(z|x) || p(z|x)) "
        "is at least that large (the bound approaches log p(x) from below).", "",
        f"## The gaps on {s['gaps']['num_images']} test images "
        f"(K = {s['gaps']['k']:,} draws per proposal)", "",
        frame_table(gap_table), "",
    ]
    if s["nuts"]:
        lines += ["## The encoder against NUTS, decoder fixed", "",
                  frame_table(pd.DataFrame(s["nuts"])), "",
                  "Reports: " + ", ".join(f"`nuts_image_{r['test image']}/report.html`"
                                          for r in s["nuts"]), ""]
    lines += ["![ELBO trace](elbo_trace.png)", "", "![IW bounds](iw_bounds.png)", "",
              "![reconstructions](reconstructions.png)", "",
              "![prior samples](prior_samples.png)", "", "![latent map](latent_map.png)", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    try:
        main(parse_args(sys.argv[1:]))
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
