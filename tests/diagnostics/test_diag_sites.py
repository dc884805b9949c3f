"""Local sites summarised per site: errors, sd ratios and interval calibration."""

from __future__ import annotations

import arviz as az
import numpy as np
import pytest
from scipy import stats

import pyrovi
from pyrovi import diagnostics as dg


def _draws(rng: np.random.Generator, n: int, sd_scale: float, shift: float
           ) -> az.InferenceData:
    persons = 50
    truth = np.linspace(-2, 2, persons)
    theta = truth + shift + sd_scale * rng.standard_normal((1, n, persons))
    w = 1.0 + 0.1 * rng.standard_normal((1, n, 2))
    return az.from_dict(posterior={"theta": theta, "w": w})


def test_coverage_of_a_too_narrow_q_matches_the_normal_cdf() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal(200_000)
    vi = 0.5 * rng.standard_normal(200_000)
    expected = 2 * stats.norm.cdf(0.5 * stats.norm.ppf(0.95)) - 1  # 0.589
    assert dg.interval_coverage(vi, ref, 0.9) == pytest.approx(expected, abs=0.005)
    assert dg.interval_coverage(ref, ref[::-1], 0.9) == pytest.approx(0.9, abs=0.005)


def test_local_site_table_and_report_summarise_persons_per_site(tmp_path) -> None:
    rng = np.random.default_rng(1)
    ref = _draws(rng, 4000, 1.0, 0.0)
    vi = _draws(rng, 4000, 0.5, 0.25)  # half the sd, shifted a quarter of a reference sd
    cmp = pyrovi.compare(vi, ref, local_sites=("theta",))
    row = cmp.local_sites.set_index("site").loc["theta"]
    assert row["parameters"] == 50
    assert row["median_sd_ratio"] == pytest.approx(0.5, abs=0.03)
    assert row["median_abs_error_z"] == pytest.approx(0.25, abs=0.05)
    # shifted by 0.25 sd and half as wide: the share of reference mass inside
    z = 0.5 * stats.norm.ppf(0.95)
    expected = stats.norm.cdf(0.25 + z) - stats.norm.cdf(0.25 - z)
    assert row["coverage"] == pytest.approx(expected, abs=0.02)
    assert list(cmp.listed_table().index) == ["w[0]", "w[1]"]
    assert len(cmp.table) == 52  # every element is still in the table
    cmp.write(tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert "## Local sites" in md and "| theta | 50 |" in md
    assert "theta[3]" not in md  # persons are summarised, not listed
    html = (tmp_path / "report.html").read_text()
    assert 'id="local-sites"' in html and 'id="fig-local_intervals"' in html
    assert "theta[3]" in (tmp_path / "table.csv").read_text()
