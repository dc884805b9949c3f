"""The pyrovi command line: every bad input is one line on stderr and exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pyrovi.models import linear_regression

HERE = Path(__file__).parent
TINY = ["--num-samples", "100", "--num-warmup", "100", "--num-chains", "1"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "pyrovi.cli", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=600)


def assert_usage_error(result: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("pyrovi: error:") and fragment in lines[0], lines[0]
    assert "Traceback" not in result.stderr


def test_list_prints_every_registered_model() -> None:
    result = run("list")
    assert result.returncode == 0
    for name in ("normal_normal", "beta_bernoulli", "linear_regression"):
        assert name in result.stdout


@pytest.fixture
def regression_json(tmp_path: Path) -> Path:
    data = linear_regression.load_data()
    path = tmp_path / "data.json"
    path.write_text(json.dumps({k: v.tolist() for k, v in data.items()}))
    return path


@pytest.mark.parametrize("args, fragment", [
    (["nope"], "invalid choice"),
    (["compare", "no_such_model"], "unknown model 'no_such_model'"),
    (["compare", "normal_normal", "--guide", "nope"], "unknown guide 'nope'"),
    (["compare", "normal_normal", "--data", "nope"], "no bundled data set 'nope'"),
    (["compare", "normal_normal", "--data", "missing.json"], "data file not found"),
    (["compare", "normal_normal", "--num-samples", "-3"], "positive integer"),
    (["compare", "missing.py:model", "--data", "d.json"], "model file not found"),
    (["compare", "normal_normal", "--reference", "missing.nc"], "reference file not found"),
])
def test_bad_arguments(args: list[str], fragment: str, tmp_path: Path) -> None:
    assert_usage_error(run(*args, "--out", str(tmp_path / "o"), cwd=tmp_path)
                       if args[0] == "compare" else run(*args), fragment)


def test_malformed_and_non_finite_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert_usage_error(run("compare", "normal_normal", "--data", str(bad)), "not valid JSON")
    nan = tmp_path / "nan.json"
    nan.write_text('{"x": [[1.0, NaN]], "sigma": [1.0, 1.0]}')
    assert_usage_error(run("compare", "normal_normal", "--data", str(nan)), "NaN or infinite")
    ragged = tmp_path / "ragged.json"
    ragged.write_text('{"x": [[1.0, 2.0], [3.0]]}')
    assert_usage_error(run("compare", "normal_normal", "--data", str(ragged)), "rectangular")


def test_user_model_errors(tmp_path: Path, regression_json: Path) -> None:
    target = f"{HERE / 'user_model.py'}:nothing"
    assert_usage_error(run("compare", target, "--data", str(regression_json)),
                       "defines no function 'nothing'")
    assert_usage_error(run("compare", f"{HERE / 'user_model.py'}:model"), "needs --data")
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_module\n")
    assert_usage_error(run("compare", f"{broken}:model", "--data", str(regression_json)),
                       "importing")


def test_reference_without_common_parameters(tmp_path: Path) -> None:
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"alpha": [0.1, 0.2, 0.3]}]))
    assert_usage_error(run("compare", "normal_normal", "--reference", str(ref), "--out",
                           str(tmp_path / "o")), "no parameters in common")
    broken = tmp_path / "broken.json"
    broken.write_text('[{"mu[1]": [0.1, 0.2]}, {"mu[1]": [0.3]}]')
    assert_usage_error(run("compare", "normal_normal", "--reference", str(broken), "--out",
                           str(tmp_path / "o")), "broken.json")


def test_unwritable_output_folder(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    assert_usage_error(run("compare", "normal_normal", "--out", str(blocker / "report")),
                       "cannot write to output folder")


def test_user_model_end_to_end_through_the_cli(tmp_path: Path, regression_json: Path) -> None:
    result = run("compare", f"{HERE / 'user_model.py'}:model", "--data", str(regression_json),
                 "--guide", "full_rank", "--out", str(tmp_path / "report"), *TINY)
    assert result.returncode == 0, result.stderr
    assert "verdict" in result.stdout and "b[1]" in result.stdout
    for name in ("report.html", "report.md", "comparison.json", "table.csv"):
        assert (tmp_path / "report" / name).is_file()


def test_demo_writes_a_report(tmp_path: Path) -> None:
    result = run("demo", "--out", str(tmp_path / "demo"), *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "log p(x)" in result.stdout and "(exact)" in result.stdout
    assert f"report written to {tmp_path / 'demo' / 'report.html'}" in result.stdout
    assert "guide ladder" in result.stdout and "stopped: mean_field is trusted" in result.stdout
    summary = json.loads((tmp_path / "demo" / "comparison.json").read_text())
    assert summary["verdict"] in ("trust", "caution")


def test_registered_models_offer_their_hand_written_guides(tmp_path: Path) -> None:
    result = run("compare", "beta_bernoulli", "--guide", "beta", "--out", str(tmp_path / "r"),
                 *TINY)
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "r" / "comparison.json").read_text())
    assert summary["labels"]["guide"] == "beta"
    assert summary["summary"]["log_evidence_method"] == "exact"


def test_compare_against_a_given_reference_file(tmp_path: Path) -> None:
    """Exact posterior draws written as posteriordb JSON stand in for NUTS."""
    from pyrovi.models import beta_bernoulli

    exact = beta_bernoulli.exact_posterior(beta_bernoulli.load_data())["p"]
    torch_draws = exact.sample((2, 1000))
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([{"p": chain.tolist()} for chain in torch_draws]))
    result = run("compare", "beta_bernoulli", "--reference", str(ref), "--out",
                 str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert "running NUTS" not in result.stderr
    summary = json.loads((tmp_path / "r" / "comparison.json").read_text())
    assert summary["verdict"] == "trust"


def test_pyrovi_list_prints_nothing_but_pyrovi_output(tmp_path: Path) -> None:
    """ArviZ's once-a-day "undergoing a major refactor" FutureWarning never reaches the
    terminal: a fresh cache folder makes ArviZ want to print it, and warnings are on."""
    script = Path(sys.executable).parent / "pyrovi"
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "pyrovi.cli"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    result = subprocess.run([*command, "list"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0
    assert result.stderr == ""
    assert "gmm" in result.stdout
    # the filter is narrow: arviz alone, with the same fresh cache, still warns
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache2")
    alone = subprocess.run([sys.executable, "-c", "import arviz"], capture_output=True,
                           text=True, env=env, timeout=300)
    assert "ArviZ is undergoing a major refactor" in alone.stderr


def test_compare_gmm_reports_in_minutes(tmp_path: Path) -> None:
    """Old Faithful is bundled standardised; the report (table, JSON, CSV) is in minutes."""
    import pyrovi
    from pyrovi.models import gmm

    data = gmm.load_data("old_faithful")
    fit = pyrovi.fit(gmm.model, data, guide="full_rank", num_steps=200, seed=1)
    reference = tmp_path / "ref.nc"
    fit.posterior(1000, seed=3).to_netcdf(reference)
    result = run("compare", "gmm", "--guide", "full_rank", "--num-steps", "200",
                 "--reference", str(reference), "--out", str(tmp_path / "r"))
    assert result.returncode == 0, result.stderr
    assert "data units of old_faithful" in result.stdout
    report = json.loads((tmp_path / "r" / "comparison.json").read_text())
    rows = {row["parameter"]: row for row in report["table"]}
    raw = gmm.unstandardize(data["x"].numpy(), "old_faithful")
    for k in range(2):
        for d in range(2):
            row = rows[f"locs[{k},{d}]"]
            assert row["unit"] == "min"
            assert raw[:, d].min() < row["mean_vi"] < raw[:, d].max()
            assert raw[:, d].min() < row["mean_ref"] < raw[:, d].max()
    assert rows["weights[0]"]["unit"] == "probability"
    waits = sorted(rows[f"locs[{k},1]"]["mean_ref"] for k in range(2))
    assert 50 < waits[0] < 60 and 75 < waits[1] < 85  # minutes, not sds
    csv = (tmp_path / "r" / "table.csv").read_text().splitlines()
    assert csv[0].startswith("parameter,unit,") and any(",min," in line for line in csv)
    html = (tmp_path / "r" / "report.html").read_text()
    assert "data units of old_faithful: eruptions (min), waiting (min)" in html


@pytest.mark.parametrize(("args", "fragment"), [
    (["train", "nosuch", "--batch-size", "10"], "unknown model 'nosuch'"),
    (["train", "vae", "--batch-size", "10", "--nnodes", "2"], "needs --rdzv-endpoint"),
    (["train", "normal_normal", "--batch-size", "4"], "data plate is subsampled"),
    (["train", "vae", "--batch-size", "10", "--data", "nope"], "no bundled data set 'nope'"),
    (["train", "vae", "--batch-size", "10", "--guide", "mean_field"], "unknown guide"),
    (["train", "vae", "--batch-size", "0"], "expected a positive integer"),
])
def test_train_bad_arguments(args: list[str], fragment: str, tmp_path: Path) -> None:
    assert_usage_error(run(*args, "--out", str(tmp_path / "out")), fragment)


def test_train_writes_the_fit_its_summary_and_trace(tmp_path: Path) -> None:
    out = tmp_path / "train"
    result = run("train", "vae", "--batch-size", "200", "--epochs", "3", "--lr", "0.003",
                 "--validation", "digits_validation", "--out", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "train.json").read_text())
    assert summary["world_size"] == 1 and summary["num_steps"] == 3 * (1197 // 200)
    assert len(summary["validation_elbo"]) == 3 and not summary["converged"]
    assert (out / "elbo.png").stat().st_size > 0 and not (out / "checkpoint.pt").exists()
    import pyrovi

    spec = pyrovi.get_model("vae")
    fit = pyrovi.load_fit(out / "fit.pt", spec.model)
    assert abs(fit.elbo - summary["elbo"]) < 1e-6 * abs(summary["elbo"])
