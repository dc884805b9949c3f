"""Tests of pyrovi.report on a hand-made Comparison (no SVI, no NUTS: seconds)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from html.parser import HTMLParser
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import pytest

from pyrovi import diagnostics as dg
from pyrovi.comparison import Comparison, Summary
from pyrovi.report import REPORT_FILES, plots, write_report, writer
from pyrovi.report.jsonout import to_jsonable
from pyrovi.report.text import fmt

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

SUMMARY_KEYS = (
    "max_abs_mean_error_z",
    "worst_sd_ratio",
    "w1_joint",
    "w1_joint_baseline",
    "khat",
    "khat_low",
    "khat_high",
    "khat_level",
    "khat_label",
    "khat_samples",
    "elbo",
    "elbo_se",
    "log_evidence",
    "log_evidence_se",
    "log_evidence_method",
    "kl_gap",
    "kl_gap_low",
    "kl_gap_high",
    "num_parameters",
    "reference_problems",
    "verdict",
    "verdict_basis",
    "reasons",
    "parameter_units",
    "cubo",
    "cubo_se",
    "kl_upper",
    "kl_upper_high",
    "mean_error_bound",
    "mean_error_bound_high",
    "sd_error_bound",
    "sd_error_bound_high",
    "w2_bound",
    "bounds_reliable",
    "bounds_reason",
)
"""Every field of :class:`pyrovi.comparison.Summary`, in order."""


def make_comparison(
    *,
    verdict: str = "caution",
    healthy: bool = False,
    sites: tuple[str, ...] = ("mu", "sigma", "c"),
    with_fit: bool = True,
    seed: int = 0,
) -> Comparison:
    """A small, fully populated Comparison built from fake draws.

    The reference has a strongly correlated pair ``mu[0], mu[1]`` and a constant site
    ``c`` (so the table holds NaN); the summary holds a NaN and a -inf.
    """
    rng = np.random.default_rng(seed)
    chains, draws = 2, 400
    cov = np.array([[1.0, 0.9, 0.0], [0.9, 1.0, 0.0], [0.0, 0.0, 0.25]])
    ref_mu = rng.multivariate_normal([0.0, 1.0, -1.0], cov, size=(chains, draws))
    vi_mu = rng.normal([0.3, 1.0, -1.0], [0.6, 0.6, 0.5], size=(chains, draws, 3))
    ref_post = {
        "mu": ref_mu,
        "sigma": np.exp(rng.normal(0.0, 0.2, size=(chains, draws))),
        "c": np.full((chains, draws), 2.0),
    }
    vi_post = {
        "mu": vi_mu,
        "sigma": np.exp(rng.normal(0.05, 0.15, size=(chains, draws))),
        "c": np.full((chains, draws), 2.0),
    }
    ref = az.from_dict(posterior={k: v for k, v in ref_post.items() if k in sites})
    vi = az.from_dict(posterior={k: v for k, v in vi_post.items() if k in sites})
    vi_draws, ref_draws = dg.scalar_draws(vi), dg.scalar_draws(ref)
    table = dg.marginal_table(vi_draws, ref_draws)
    missed = dg.missed_correlations(vi_draws, ref_draws)
    health = {
        "max_rhat": 1.002,
        "min_ess_bulk": 812.0,
        "min_ess_tail": 640.0,
        "divergences": 0 if healthy else 3,
        "num_chains": chains,
        "num_draws": draws,
        "problems": [] if healthy else ["3 divergent transitions"],
    }
    log_weights = losses = khat = interval = None
    if with_fit:
        log_weights = rng.standard_t(4, size=2000) * 0.5 - 10.0
        khat = dg.psis_khat(log_weights)
        interval = dg.psis_khat_interval(log_weights, num_bootstrap=50)
        steps = np.arange(300)
        losses = 100.0 + 400.0 * np.exp(-steps / 40.0) + rng.normal(0, 3, size=300)
        losses[5] = np.inf  # a diverged step must not break the trace
    reasons = [
        "mean of mu[0] is off by 0.3 reference sd (> 0.2) <& 'quoted'>",
        "sd of mu[0] is 0.6 of the reference's (< 0.8)",
    ]
    summary = {
        "max_abs_mean_error_z": float(table["mean_error_z"].abs().max()),
        "worst_sd_ratio": float(table["sd_ratio"].min()),
        "w1_joint": np.float64(0.41),
        "w1_joint_baseline": np.float64(0.3),
        "khat": None if khat is None else float(khat),
        "khat_low": None if interval is None else interval[0],
        "khat_high": None if interval is None else interval[1],
        "khat_level": None if interval is None else 0.9,
        "khat_label": None if khat is None else dg.khat_label(khat),
        "khat_samples": 2000 if khat is not None else 0,
        "elbo": -101.5 if with_fit else float("nan"),
        "elbo_se": float("nan"),
        "log_evidence": -100.25,
        "log_evidence_se": 0.0,
        "log_evidence_method": "exact",
        "kl_gap": 1.25,
        "kl_gap_low": float("-inf"),
        "kl_gap_high": 1.9,
        "num_parameters": np.int64(len(table)),
        "reference_problems": list(health["problems"]),
        "verdict": verdict,
        "verdict_basis": "reference" if healthy else "reference and k-hat",
        "reasons": reasons,
        "parameter_units": "data units of simulated: mu (min)",
        "cubo": -99.8 if with_fit else float("nan"),
        "cubo_se": 0.05,
        "kl_upper": 1.7,
        "kl_upper_high": 1.8,
        "mean_error_bound": 0.9,
        "mean_error_bound_high": 1.0,
        "sd_error_bound": 0.5,
        "sd_error_bound_high": 0.6,
        "w2_bound": 1.4,
        "bounds_reliable": True,
        "bounds_reason": "",
    }
    assert tuple(summary) == SUMMARY_KEYS
    labels = {
        "model": "normal_normal",
        "guide": "mean_field",
        "data": "simulated",
        "relabelling": "hungarian matching on component means",
    }
    units = {name: "min" for name in table.index if name.startswith("mu")}
    return Comparison(
        table=table,
        summary=Summary.from_mapping(summary),
        vi=vi,
        ref=ref,
        vi_draws=vi_draws,
        ref_draws=ref_draws,
        health=health,
        missed=missed,
        losses=losses,
        log_weights=log_weights,
        labels=labels,
        units=units,
    )


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.captions = 0
        self.verdict: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "img":
            self.images.append(attributes)
        elif tag == "figcaption":
            self.captions += 1
        elif attributes.get("id") == "verdict":
            self.verdict = attributes


def _strict_loads(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def _leftovers(*folders: Path) -> list[str]:
    return [p.name for folder in folders for p in folder.iterdir() if p.name.startswith(".")]


@pytest.fixture(scope="module")
def comparison() -> Comparison:
    return make_comparison()


@pytest.fixture(scope="module")
def report(comparison: Comparison, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_report(comparison, tmp_path_factory.mktemp("report") / "out")


def test_writes_the_four_files(report: dict[str, Path]) -> None:
    assert set(report) == set(REPORT_FILES)
    for kind, path in report.items():
        assert path.name == REPORT_FILES[kind]
        assert path.is_file() and path.stat().st_size > 0
    assert sorted(p.name for p in report["html"].parent.iterdir()) == sorted(REPORT_FILES.values())


def test_html_is_self_contained_with_every_picture(
    report: dict[str, Path], comparison: Comparison
) -> None:
    text = report["html"].read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    parser = _Images()
    parser.feed(text)
    # ELBO trace, densities, pair plot, mean errors, k-hat
    assert len(parser.images) == 5
    assert text.count("data:image/png;base64,") == 5
    assert parser.captions == 5
    for image in parser.images:
        src = image["src"] or ""
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)
        assert image.get("alt")
    assert parser.verdict is not None
    assert parser.verdict["data-verdict"] == "caution"
    assert ">CAUTION<" in text
    for reason in comparison.reasons:
        assert (
            reason.replace("&", "&amp;")
            .replace("<", "&lt;")
            .replace(">", "&gt;")
            .replace("'", "&#x27;")
            in text
        )
    assert "The reference is unhealthy" in text
    assert text.index('id="reference-warning"') < text.index('id="verdict"')
    assert "3 divergent transitions" in text
    # units, evidence method, k-hat caveat and thresholds, labels
    for words in (
        "reference sd",
        "reference sd (standardized)",
        "nats",
        "method: exact",
        "from 2000 importance samples",
        "can be noisy",
        "Yao et al. 2018",
        "≤ 0.5 good",
        "&gt; 0.7 bad",
        "hungarian matching on component means",
        "normal_normal",
        "mean_field",
    ):
        assert words in text, words
    assert '<table id="table">' in text
    assert text.count("<tr>") >= len(comparison.table)


def test_json_is_strict_and_complete(report: dict[str, Path], comparison: Comparison) -> None:
    data = _strict_loads(report["json"].read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    assert data["verdict"] == "caution"
    assert data["reasons"] == comparison.reasons
    assert set(data["summary"]) == set(SUMMARY_KEYS)
    assert data["summary"]["elbo_se"] is None  # NaN
    assert data["summary"]["kl_gap_low"] is None  # -inf
    assert data["summary"]["num_parameters"] == len(comparison.table)
    assert data["units"]["kl_gap"] == "nats"
    assert data["units"]["mean_error_z"] == "reference sd"
    assert data["units"]["w1_joint"] == "reference sd (standardized)"
    assert [row["parameter"] for row in data["table"]] == list(comparison.table.index)
    first = data["table"][0]
    assert set(first) == {"parameter", "unit", *dg.TABLE_COLUMNS}
    assert first["unit"] == "min"
    assert data["summary"]["parameter_units"] == "data units of simulated: mu (min)"
    assert data["summary"]["khat_low"] <= data["summary"]["khat"] <= data["summary"]["khat_high"]
    assert first["mean_vi"] == pytest.approx(comparison.table["mean_vi"].iloc[0])
    constant = next(row for row in data["table"] if row["parameter"] == "c")
    assert constant["mean_error_z"] is None  # 0 / 0
    assert constant["unit"] == "model units"
    assert data["reference_health"]["problems"] == ["3 divergent transitions"]
    assert data["missed_correlations"] and data["missed_correlations"][0]["a"] == "mu[0]"
    assert data["labels"]["guide"] == "mean_field"
    assert isinstance(data["pyrovi_version"], str)


def test_csv_round_trips(report: dict[str, Path], comparison: Comparison) -> None:
    assert report["csv"].read_text().splitlines()[0].startswith("parameter,unit,mean_vi,")
    back = pd.read_csv(report["csv"], index_col="parameter")
    assert list(back["unit"]) == [comparison.unit_of(n) for n in comparison.table.index]
    pd.testing.assert_frame_equal(back.drop(columns="unit"), comparison.table)


def test_markdown_has_the_verdict_reasons_and_table(
    report: dict[str, Path], comparison: Comparison
) -> None:
    text = report["markdown"].read_text(encoding="utf-8")
    assert "CAUTION" in text
    assert "the reference is unhealthy" in text
    for reason in comparison.reasons:
        assert reason in text
    assert "report.html" in text
    assert "| parameter |" in text
    for name in comparison.table.index:
        assert f"| {name} |" in text
    assert "data:image" not in text
    assert "nats" in text and "method: exact" in text
    assert "| parameter | unit |" in text and "| mu[0] | min |" in text
    assert "data units of simulated: mu (min)" in text


@pytest.mark.parametrize("word", ["trust", "reject"])
def test_verdict_words_and_a_sparse_comparison(word: str, tmp_path: Path) -> None:
    """No loss trace, no k-hat, one parameter: the optional pictures are skipped."""
    cmp = make_comparison(verdict=word, healthy=True, sites=("sigma",), with_fit=False)
    paths = write_report(cmp, tmp_path / "r")
    text = paths["html"].read_text(encoding="utf-8")
    assert f'data-verdict="{word}"' in text and f">{word.upper()}<" in text
    assert "reference-warning" not in text
    assert text.count("data:image/png;base64,") == 2  # densities and mean errors
    assert "not computed" in text  # k-hat
    _strict_loads(paths["json"].read_text())
    assert f"**{word.upper()}**" in paths["markdown"].read_text()


def test_crash_midway_keeps_the_previous_report(
    comparison: Comparison, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    write_report(comparison, out)
    before = _snapshot(out)

    def boom(cmp: Comparison) -> str:
        raise RuntimeError("renderer crashed")

    # report.html is written first, so this fails halfway through the files
    monkeypatch.setattr(writer, "render_markdown", boom)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        changed = dataclasses.replace(comparison.summary, reasons=("changed",))
        write_report(dataclasses.replace(comparison, summary=changed), out)
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert _leftovers(out) == []


def test_crash_with_user_files_keeps_everything(
    comparison: Comparison, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "report_figures", lambda cmp: [])
    out = tmp_path / "out"
    write_report(comparison, out)
    (out / "notes.txt").write_text("mine")
    before = _snapshot(out)
    monkeypatch.setattr(writer, "render_csv", lambda cmp: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_report(comparison, out)
    assert _snapshot(out) == before
    assert _leftovers(tmp_path, out) == []


def test_rewrite_replaces_the_report_and_keeps_user_files(
    comparison: Comparison, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the pictures are not under test here: keep the rewrites fast
    monkeypatch.setattr(writer, "report_figures", lambda cmp: [])
    out = tmp_path / "out"
    write_report(comparison, out)
    assert _strict_loads((out / "comparison.json").read_text())["verdict"] == "caution"

    # only report files: the directory is swapped as a whole, the old one removed
    rejected = dataclasses.replace(comparison, summary={**comparison.summary, "verdict": "reject"})
    write_report(rejected, out)
    assert _strict_loads((out / "comparison.json").read_text())["verdict"] == "reject"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    # a file of the user's: updated in place, the user's file untouched
    (out / "notes.txt").write_text("mine")
    (out / "sub").mkdir()
    (out / "sub" / "data.bin").write_bytes(b"\x00\x01")
    paths = write_report(comparison, out)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "sub" / "data.bin").read_bytes() == b"\x00\x01"
    assert _strict_loads(paths["json"].read_text())["verdict"] == "caution"
    assert _leftovers(tmp_path, out) == []
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [*REPORT_FILES.values(), "notes.txt", "sub"]
    )


def test_missing_parents_are_created(
    comparison: Comparison, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer, "report_figures", lambda cmp: [])
    paths = write_report(comparison, tmp_path / "a" / "b" / "out")
    assert paths["csv"].is_file()


def test_unwritable_destination_raises_naming_the_directory(
    comparison: Comparison, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OSError) as info:
        write_report(comparison, blocker / "out")
    message = str(info.value)
    assert str(blocker) in message and "\n" not in message
    with pytest.raises(OSError, match="not a directory"):
        write_report(comparison, blocker)


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores directory permissions"
)
def test_read_only_parent_raises_permission_error(comparison: Comparison, tmp_path: Path) -> None:
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(PermissionError, match="locked"):
            write_report(comparison, parent / "out")
    finally:
        parent.chmod(0o700)


def test_plots_return_png_for_edge_cases() -> None:
    rng = np.random.default_rng(1)
    losses = np.r_[np.nan, 50.0 + rng.normal(size=30)]
    assert plots.elbo_trace_png(losses, elbo=-50.0, log_evidence=float("nan")).startswith(PNG_MAGIC)
    with pytest.raises(ValueError):
        plots.elbo_trace_png([np.inf, np.nan])
    draws = {"a": rng.normal(size=200), "k": rng.integers(0, 5, 200), "z": np.zeros(200)}
    assert plots.density_png(draws, draws, ["a", "k", "z"]).startswith(PNG_MAGIC)
    xy = rng.normal(size=(3000, 2))
    assert plots.pair_png(xy, xy, ("a", "b"), max_points=100).startswith(PNG_MAGIC)
    assert plots.mean_error_png(
        ["a"], np.array([0.1]), np.array([-1.0]), np.array([1.2])
    ).startswith(PNG_MAGIC)
    for khat, weights in ((1.3, rng.normal(size=500)), (None, None), (float("inf"), None)):
        assert plots.khat_png(khat, weights).startswith(PNG_MAGIC)


def test_to_jsonable_and_fmt() -> None:
    value = {
        1: np.float32(0.5),
        "n": np.int64(3),
        "b": np.bool_(True),
        "arr": np.array([1.0, np.nan, np.inf]),
        "t": (float("-inf"), None, Path("x")),
    }
    out = to_jsonable(value)
    assert out == {"1": 0.5, "n": 3, "b": True, "arr": [1.0, None, None], "t": [None, None, "x"]}
    json.dumps(out, allow_nan=False)
    assert fmt(float("nan")) == "n/a" and fmt(None) == "n/a"
    assert fmt(float("-inf")) == "−∞" and fmt(np.int64(7)) == "7"
    assert fmt(-1.23456) == "−1.235" and fmt(1e-7) == "1e−07"


def test_summary_is_a_typed_record_that_reads_as_a_dict(comparison: Comparison) -> None:
    summary = comparison.summary
    assert isinstance(summary, Summary)
    assert summary["verdict"] == summary.verdict == comparison.verdict == "caution"
    assert summary["khat"] == summary.khat and summary.get("nope", 7) == 7
    assert tuple(summary.keys()) == SUMMARY_KEYS and len(summary) == len(SUMMARY_KEYS)
    assert dict(summary) == summary.as_dict() == {**summary}
    assert "kl_gap" in summary and "verdict" in summary.keys()
    with pytest.raises(KeyError):
        summary["no_such_field"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        summary.verdict = "trust"  # type: ignore[misc]
    assert Summary.from_mapping(dict(summary)) == summary
    units = Summary.units()
    assert units["kl_gap"] == "nats" and units["max_abs_mean_error_z"] == "reference sd"
    assert "verdict" not in units
    # a plain dict given to Comparison becomes the record
    again = dataclasses.replace(comparison, summary=dict(summary))
    assert isinstance(again.summary, Summary) and again.reasons == comparison.reasons


def test_html_shows_units_and_the_khat_interval(report: dict[str, Path]) -> None:
    text = report["html"].read_text(encoding="utf-8")
    assert '<th class="name">unit</th>' in text
    assert '<td class="name">mu[0]</td><td class="label">min</td>' in text
    assert "bootstrap interval" in text


def test_comparison_module_imports_no_other_pyrovi_module() -> None:
    import ast

    import pyrovi.comparison

    tree = ast.parse(Path(pyrovi.comparison.__file__).read_text(encoding="utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.startswith("pyrovi")], imported


def test_a_ladder_fit_reports_every_rung(comparison: Comparison, tmp_path: Path) -> None:
    """A ``guide="auto"`` fit: the ladder's table, stop reason and picture in every file."""
    ladder = pd.DataFrame({
        "guide": ["mean_field", "low_rank", "full_rank"], "seconds": [1.5, 2.0, 1.0],
        "grad_evals": [7000, 8000, 2600], "elbo": [-1742.2, -1740.3, -1740.3],
        "elbo_se": [0.03, 0.02, 0.004], "gain": [np.nan, 1.9, 0.01],
        "gain_se": [np.nan, 0.04, 0.02], "khat": [0.74, 0.3, 0.2],
        "verdict": ["reject", "trust", "trust"], "basis": ["reference"] * 3,
        "verdict_without_reference": ["caution"] * 3, "mean_error_bound": [np.inf, 0.3, 0.2],
        "chosen": [False, True, False],
        "why": ["reject: climb", "trust, and full_rank gained only 0.01: stop", "the check"]})
    stop = "low_rank is trusted (reference) and the richer full_rank gains only 0.01 nats"
    cmp = dataclasses.replace(comparison, ladder=ladder, ladder_stop=stop)
    paths = write_report(cmp, tmp_path / "r")
    html = paths["html"].read_text(encoding="utf-8")
    assert 'id="ladder"' in html and "low_rank (chosen)" in html and stop in html
    assert 'id="fig-ladder"' in html
    markdown = paths["markdown"].read_text()
    assert "## Guide ladder" in markdown and f"Stopped: {stop}" in markdown
    saved = _strict_loads(paths["json"].read_text())
    assert [row["guide"] for row in saved["ladder"]] == list(ladder["guide"])
    assert saved["ladder_stop"] == stop
