"""Case studies are scripts with main(args): smoke-tested in a subprocess with tiny flags."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).parents[1]


def run_quick(script: str, out: Path, *extra: str) -> None:
    """Run ``case_studies/<script>`` with ``--quick`` in a subprocess, writing to ``out``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", MPLBACKEND="Agg")
    result = subprocess.run(
        [sys.executable, str(ROOT / "case_studies" / script), "--quick", *extra,
         "--out", str(out)],
        capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.slow
def test_gmm_old_faithful_quick(tmp_path: Path) -> None:
    run_quick("gmm_old_faithful.py", tmp_path / "out")
    out = tmp_path / "out"
    for name in ("summary.md", "summary.csv", "ellipses.png", "gmm_mean_field/report.html",
                 "gmm_full_rank/report.html", "gmm_full_cavi/report.html"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "CAVI" in summary and "full_rank" in summary and "mean_field" in summary
    # component means in minutes (waiting times 43 - 96), not standardised units
    table = pd.read_csv(out / "summary.csv")
    for locs in table["locs (data units)"]:
        waiting = [row[1] for row in json.loads(locs)]
        assert all(40 < w < 100 for w in waiting), locs
    assert "in the data's units" in summary


@pytest.mark.slow
def test_irt_lsat_quick(tmp_path: Path) -> None:
    run_quick("irt_lsat.py", tmp_path / "out")
    out = tmp_path / "out"
    for name in ("summary.md", "summary.csv", "abilities.png", "mean_field/report.html",
                 "amortized_irt/report.html"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "PPP" in summary and "amortized_irt" in summary
    table = pd.read_csv(out / "summary.csv")
    assert set(table["guide"]) == {"mean_field", "amortized_irt"}
    assert (table["ELBO"] < 0).all()
    # the median sd ratio of the abilities, VI over NUTS, is a ratio of two spreads
    assert table["sd ratio theta (median)"].between(0.2, 5).all()


@pytest.mark.slow
def test_latent_health_quick(tmp_path: Path) -> None:
    run_quick("latent_health.py", tmp_path / "out")
    out = tmp_path / "out"
    for name in ("summary.md", "parameter_table.csv", "health_intervals.png",
                 "mean_field_vs_nuts/report.html", "amortized_vs_nuts/report.html"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "deviance PPP" in summary and "Amortization gap" in summary
    table = pd.read_csv(out / "parameter_table.csv")
    loadings = table[table["op"] == "=~"].set_index("rhs")["est"]
    # self-rated health anchors the factor; physical limitation loads the other way
    assert loadings["hlth"] > 0 and loadings["physlm"] < 0


@pytest.mark.slow
def test_intelligence_holzinger_quick(tmp_path: Path) -> None:
    reference = ROOT / "tests" / "fixtures" / "latent" / "intelligence_marginal_nuts.nc"
    run_quick("intelligence_holzinger.py", tmp_path / "out", "--reference", str(reference))
    out = tmp_path / "out"
    for name in ("summary.md", "summary.csv", "scores.png", "full_rank/report.html",
                 "mean_field/report.html", "amortized/report.html"):
        assert (out / name).is_file(), name
    summary = (out / "summary.md").read_text()
    assert "Amortization gap" in summary and "visual | =~ | x1" in summary
    # BRMSEA of the stored NUTS run; lavaan's ML RMSEA on these data is 0.092
    brmsea = float(summary.split("BRMSEA = ")[1].split()[0])
    assert 0.08 < brmsea < 0.105
    table = pd.read_csv(out / "summary.csv").set_index("fit")
    assert table.loc["full_rank (marginal)", "loadings sd ratio (median)"] == pytest.approx(
        1.0, abs=0.3)


@pytest.mark.slow
def test_vae_digits_quick(tmp_path: Path) -> None:
    import math

    run_quick("vae_digits.py", tmp_path / "out")
    out = tmp_path / "out"
    for name in ("summary.json", "summary.md", "elbo_trace.png", "iw_bounds.png",
                 "reconstructions.png", "prior_samples.png", "latent_map.png"):
        assert (out / name).is_file(), name
    assert list(out.glob("nuts_image_*/report.html"))
    s = json.loads((out / "summary.json").read_text())
    for key in ("test_elbo", "test_log_likelihood", "approximation_gap", "amortization_gap",
                "steps", "converged", "seconds"):
        assert key in s, key
    bounds, bound_se = s["test_log_likelihood"], s["test_log_likelihood_se"]
    ks = sorted(bounds, key=int)
    assert ks[0] == "1" and len(ks) >= 3
    numbers = [s["test_elbo"], s["approximation_gap"], s["amortization_gap"], s["seconds"],
               *bounds.values()]
    assert all(math.isfinite(v) for v in numbers), numbers
    # a categorical likelihood over 17 levels: between the uniform guess and 0 nats
    assert -64 * math.log(17) < s["test_elbo"] < 0
    # L_1 is one draw of the ELBO; L_K rises with K in expectation (the se is mostly the
    # spread over images, so it is a generous noise level for a difference)
    assert abs(bounds["1"] - s["test_elbo"]) < 4 * bound_se["1"] + 4 * s["test_elbo_se"]
    largest = ks[-1]
    assert bounds[largest] > bounds["1"] - 2 * bound_se["1"]
    assert bounds[largest] > s["test_elbo"] - 2 * bound_se[largest]
    for gap in ("approximation_gap", "amortization_gap"):
        assert s[gap] > -4 * s["gap_se"][gap] - 1e-6, (gap, s[gap], s["gap_se"][gap])
    assert s["steps"] > 0 and isinstance(s["converged"], bool)


def test_forward_vs_reverse_kl_quick(tmp_path: Path) -> None:
    run_quick("forward_vs_reverse_kl.py", tmp_path / "out")
    out = tmp_path / "out"
    assert (out / "densities.png").is_file()
    fits = {f["elbo_name"]: f for f in json.loads((out / "summary.json").read_text())["fits"]}
    assert set(fits) == {"trace", "renyi", "iwae", "rws", "cubo"}
    assert abs(abs(fits["trace"]["loc"]) - 3.0) < 0.3  # reverse KL: one mode
    assert fits["rws"]["scale"] > 2.5  # forward KL: both modes (sd sqrt(10) = 3.16)
    assert fits["rws"]["kl_forward"] < fits["trace"]["kl_forward"]
    assert fits["trace"]["kl_reverse"] < fits["rws"]["kl_reverse"]
