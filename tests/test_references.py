"""Tests for pyrovi.references.load_reference (netCDF, posteriordb JSON, CmdStan CSV)."""

from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import arviz as az
import numpy as np
import pytest

from pyrovi.references import ReferenceFormatError, load_reference

N_CHAINS = 2
N_DRAWS = 12


def _draws(seed: int = 0) -> dict[str, np.ndarray]:
    """Zero-based site arrays with dims (chain, draw, *shape)."""
    rng = np.random.default_rng(seed)
    return {
        "mu": rng.normal(size=(N_CHAINS, N_DRAWS, 3)),
        "a": rng.normal(size=(N_CHAINS, N_DRAWS, 2, 3)),
        "sigma": rng.gamma(2.0, size=(N_CHAINS, N_DRAWS)),
    }


def _one_based_columns(sites: dict[str, np.ndarray], style: str) -> dict[str, np.ndarray]:
    """Flatten sites into one-based scalar columns of shape (chain, draw)."""
    columns = {}
    for site, array in sites.items():
        shape = array.shape[2:]
        for index in np.ndindex(*shape):
            one = [str(i + 1) for i in index]
            if not index:
                name = site
            elif style == "bracket":
                name = f"{site}[{','.join(one)}]"
            else:
                name = ".".join([site, *one])
            columns[name] = array[(slice(None), slice(None), *index)]
    return columns


def _posteriordb_content(sites: dict[str, np.ndarray]) -> list[dict[str, list[float]]]:
    columns = _one_based_columns(sites, "bracket")
    return [{name: values[c].tolist() for name, values in columns.items()} for c in range(N_CHAINS)]


def _write_json(path: Path, content: object) -> Path:
    path.write_text(json.dumps(content))
    return path


def _assert_sites_equal(idata: az.InferenceData, sites: dict[str, np.ndarray]) -> None:
    assert set(idata.posterior.data_vars) == set(sites)
    for site, expected in sites.items():
        np.testing.assert_allclose(idata.posterior[site].values, expected, rtol=0, atol=1e-12)


def _raises(path, *fragments: str) -> ReferenceFormatError:
    with pytest.raises(ReferenceFormatError) as info:
        load_reference(path)
    message = str(info.value)
    first = path[0] if isinstance(path, (list, tuple)) else path
    assert Path(first).name in message
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message
    return info.value


# --------------------------------------------------------------------------------------
# CmdStan CSV writer

SAMPLER_COLUMNS = [
    "lp__",
    "accept_stat__",
    "stepsize__",
    "treedepth__",
    "n_leapfrog__",
    "divergent__",
    "energy__",
]


def _sampler_values(rng: np.random.Generator, n: int) -> np.ndarray:
    return np.column_stack(
        [
            rng.normal(-10, 1, n),
            rng.uniform(0, 1, n),
            np.full(n, 0.75),
            rng.integers(1, 5, n),
            rng.integers(1, 16, n),
            rng.integers(0, 2, n),
            rng.normal(12, 1, n),
        ]
    )


def _write_cmdstan(
    path: Path,
    sites: dict[str, np.ndarray],
    chain: int,
    *,
    style: str = "dotted",
    n_warmup: int = 0,
    adaptation_line: bool = True,
    config: bool = True,
    seed: int = 0,
) -> tuple[Path, np.ndarray]:
    """Write one chain in CmdStan layout; return (path, post-warmup sampler values)."""
    rng = np.random.default_rng(seed + chain)
    columns = _one_based_columns(sites, style)
    params = np.column_stack([values[chain] for values in columns.values()])
    sampler = _sampler_values(rng, params.shape[0])
    lines = ["# stan_version_major = 2", "# model = test_model", "# method = sample (Default)"]
    if config:
        lines += [
            "#   sample",
            f"#     num_samples = {N_DRAWS}",
            f"#     num_warmup = {max(n_warmup, 1)}",
            f"#     save_warmup = {1 if n_warmup else 0}",
            "#     thin = 1 (Default)",
        ]
    # bracketed names hold commas, so they are quoted like any CSV field with a comma
    names = [f'"{name}"' if "," in name else name for name in SAMPLER_COLUMNS + list(columns)]
    lines.append(",".join(names))
    for _ in range(n_warmup):  # warmup rows: garbage values that must be dropped
        row = np.concatenate([_sampler_values(rng, 1)[0], np.full(params.shape[1], 999.0)])
        lines.append(",".join(repr(float(v)) for v in row))
    if adaptation_line:
        lines += [
            "# Adaptation terminated",
            "# Step size = 0.75",
            "# Diagonal elements of inverse mass matrix:",
            "# " + ", ".join(["1"] * params.shape[1]),
        ]
    for s_row, p_row in zip(sampler, params, strict=True):
        lines.append(",".join(repr(float(v)) for v in np.concatenate([s_row, p_row])))
    lines += [
        "",
        "#  Elapsed Time: 0.01 seconds (Warm-up)",
        "#                0.02 seconds (Sampling)",
        "#                0.03 seconds (Total)",
        "",
    ]
    path.write_text("\n".join(lines))
    return path, sampler


# --------------------------------------------------------------------------------------
# round trips


def test_netcdf_round_trip(tmp_path):
    sites = _draws(1)
    idata = az.from_dict(posterior=sites, sample_stats={"lp": sites["sigma"] * -1})
    path = tmp_path / "ref.nc"
    idata.to_netcdf(str(path))
    loaded = load_reference(path)
    _assert_sites_equal(loaded, sites)
    np.testing.assert_allclose(loaded.sample_stats["lp"].values, -sites["sigma"])
    assert load_reference(str(path)).posterior["a"].shape == (N_CHAINS, N_DRAWS, 2, 3)


@pytest.mark.parametrize("zipped", [False, True])
def test_posteriordb_round_trip(tmp_path, zipped):
    sites = _draws(2)
    content = _posteriordb_content(sites)
    if zipped:
        path = tmp_path / "model-posterior.json.zip"
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("model-posterior.json", json.dumps(content))
    else:
        path = _write_json(tmp_path / "model-posterior.json", content)

    idata = load_reference(path)
    _assert_sites_equal(idata, sites)
    post = idata.posterior
    assert post["a"].dims == ("chain", "draw", "a_dim_0", "a_dim_1")
    assert post["mu"].shape == (N_CHAINS, N_DRAWS, 3)
    assert post["sigma"].dims == ("chain", "draw")
    # one-based names in the file, zero-based elements in pyrovi
    for chain in range(N_CHAINS):
        for draw in (0, N_DRAWS - 1):
            assert content[chain]["a[2,3]"][draw] == post["a"].values[chain, draw, 1, 2]
            assert content[chain]["mu[1]"][draw] == post["mu"].values[chain, draw, 0]
    assert list(post["a"].coords["a_dim_1"].values) == [0, 1, 2]
    assert "sample_stats" not in idata.groups()


def test_posteriordb_single_scalar_and_sampler_keys(tmp_path):
    content = [{"tau": [1.0, 2.0, 3], "lp__": [-1.0, -2.0, -3.0]}]
    idata = load_reference(_write_json(tmp_path / "one.json", content))
    assert idata.posterior["tau"].shape == (1, 3)
    np.testing.assert_array_equal(idata.sample_stats["lp"].values, [[-1.0, -2.0, -3.0]])


@pytest.mark.parametrize("style", ["dotted", "bracket"])
def test_cmdstan_round_trip_two_chains_with_warmup(tmp_path, style):
    sites = _draws(3)
    paths, samplers = [], []
    for chain in range(N_CHAINS):
        path, sampler = _write_cmdstan(
            tmp_path / f"output_{chain + 1}.csv", sites, chain, style=style, n_warmup=5
        )
        paths.append(path)
        samplers.append(sampler)
    idata = load_reference(paths)
    _assert_sites_equal(idata, sites)
    # the file's one-based column a.2.3 / a[2,3] is element [1, 2] of site "a"
    column = "a.2.3" if style == "dotted" else "a[2,3]"
    for chain, path in enumerate(paths):
        rows = [line for line in path.read_text().splitlines() if line and line[0] != "#"]
        j = next(csv.reader([rows[0]])).index(column)
        in_file = [float(row.split(",")[j]) for row in rows[1:]][-N_DRAWS:]
        assert in_file == idata.posterior["a"].values[chain, :, 1, 2].tolist()

    stats = idata.sample_stats
    assert set(stats.data_vars) == {
        "lp",
        "acceptance_rate",
        "step_size",
        "tree_depth",
        "n_steps",
        "diverging",
        "energy",
    }
    sampler = np.stack(samplers)
    for j, name in enumerate(
        ["lp", "acceptance_rate", "step_size", "tree_depth", "n_steps", "diverging", "energy"]
    ):
        assert stats[name].shape == (N_CHAINS, N_DRAWS)
        np.testing.assert_allclose(stats[name].values.astype(float), sampler[:, :, j])
    assert stats["diverging"].dtype == bool
    assert np.issubdtype(stats["tree_depth"].dtype, np.integer)
    assert np.issubdtype(stats["n_steps"].dtype, np.integer)
    # a tuple of paths works too, and the result survives a netCDF round trip
    _assert_sites_equal(load_reference(tuple(paths)), sites)
    idata.to_netcdf(str(tmp_path / "copy.nc"))
    _assert_sites_equal(load_reference(tmp_path / "copy.nc"), sites)


def test_cmdstan_single_file_without_warmup(tmp_path):
    sites = {k: v[:1] for k, v in _draws(4).items()}
    path, _ = _write_cmdstan(tmp_path / "chain.csv", sites, 0)
    for arg in (path, str(path)):
        idata = load_reference(arg)
        _assert_sites_equal(idata, sites)


def test_cmdstan_saved_warmup_without_adaptation_line(tmp_path):
    # adapt engaged=0: no "Adaptation terminated"; the config says how many rows are warmup
    sites = {k: v[:1] for k, v in _draws(5).items()}
    path, _ = _write_cmdstan(tmp_path / "noadapt.csv", sites, 0, n_warmup=3, adaptation_line=False)
    _assert_sites_equal(load_reference(path), sites)


# --------------------------------------------------------------------------------------
# malformed inputs


def test_missing_file_and_unknown_extension(tmp_path):
    _raises(tmp_path / "nope.json", "not found")
    _raises(tmp_path / "nope.csv", "not found")
    other = tmp_path / "draws.txt"
    other.write_text("1,2,3\n")
    _raises(other, "unknown reference file extension")
    (tmp_path / "folder.csv").mkdir()
    _raises(tmp_path / "folder.csv", "not a regular file")
    _raises([tmp_path / "a.nc"], "only supported for CmdStan CSV")
    _raises([tmp_path / "missing_chain.csv"], "not found")
    with pytest.raises(ReferenceFormatError, match="empty list"):
        load_reference([])


def test_netcdf_malformed(tmp_path):
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"\x00not a netcdf file at all" * 10)
    err = _raises(garbage, "cannot read netCDF")
    assert err.__cause__ is not None

    no_post = tmp_path / "nopost.nc"
    az.from_dict(observed_data={"y": np.arange(3.0)}).to_netcdf(str(no_post))
    _raises(no_post, "no 'posterior' group")

    good = tmp_path / "truncated.nc"
    az.from_dict(posterior=_draws(6)).to_netcdf(str(good))
    good.write_bytes(good.read_bytes()[:200])
    _raises(good, "cannot read netCDF")


def test_posteriordb_bad_json(tmp_path):
    text = json.dumps(_posteriordb_content(_draws(7)))
    path = tmp_path / "truncated.json"
    path.write_text(text[: len(text) // 2])
    err = _raises(path, "invalid JSON")
    assert isinstance(err.__cause__, json.JSONDecodeError)

    _raises(_write_json(tmp_path / "dict.json", {"mu[1]": [1.0]}), "list of chains")
    _raises(_write_json(tmp_path / "empty.json", []), "list of chains")
    _raises(_write_json(tmp_path / "notdict.json", [[1.0, 2.0]]), "chain 0")


def test_posteriordb_bad_zip(tmp_path):
    no_json = tmp_path / "nojson.json.zip"
    with zipfile.ZipFile(no_json, "w") as archive:
        archive.writestr("readme.txt", "hello")
    _raises(no_json, "exactly one .json", "found 0")

    two = tmp_path / "two.json.zip"
    with zipfile.ZipFile(two, "w") as archive:
        archive.writestr("a.json", "[]")
        archive.writestr("b.json", "[]")
    _raises(two, "found 2")

    not_zip = tmp_path / "notzip.json.zip"
    not_zip.write_text('[{"mu": [1.0]}]')
    _raises(not_zip, "zip")

    bad_inner = tmp_path / "badinner.json.zip"
    with zipfile.ZipFile(bad_inner, "w") as archive:
        archive.writestr("inner.json", '[{"mu": [1.0, ')
    _raises(bad_inner, "inner.json", "invalid JSON")


def test_posteriordb_inconsistent_chains(tmp_path):
    content = _posteriordb_content(_draws(8))
    content[1]["sigma"] = content[1]["sigma"][:-1]
    _raises(_write_json(tmp_path / "lengths.json", content), "draws, expected")

    content = _posteriordb_content(_draws(8))
    content[1]["extra"] = content[1]["sigma"]
    _raises(_write_json(tmp_path / "keys.json", content), "different parameter names", "extra")

    content = [{"mu": []}]
    _raises(_write_json(tmp_path / "nodraws.json", content), "no draws")


@pytest.mark.parametrize("bad", ["abc", None, True, [1.0]])
def test_posteriordb_non_numeric(tmp_path, bad):
    content = [{"mu[1]": [0.5, bad, 0.7]}]
    _raises(_write_json(tmp_path / "nonnum.json", content), "non-numeric", "mu[1]")


@pytest.mark.parametrize(
    ("names", "fragment"),
    [
        (["mu[1]", "mu[1,2]"], "inconsistent indices"),
        (["mu", "mu[1]"], "inconsistent indices"),
        (["mu[0]", "mu[1]"], "index 0"),
        (["a[1,0]"], "index 0"),
        (["mu[1]", "mu[3]"], "'mu[2]' is missing"),
        (["mu[a]"], "cannot parse"),
        (["mu[1]", "mu.1"], "same element"),
    ],
)
def test_posteriordb_bad_names(tmp_path, names, fragment):
    content = [{name: [0.1, 0.2] for name in names}]
    _raises(_write_json(tmp_path / "names.json", content), fragment)


def test_cmdstan_malformed_rows(tmp_path):
    sites = {k: v[:1] for k, v in _draws(9).items()}
    path, _ = _write_cmdstan(tmp_path / "good.csv", sites, 0)
    lines = path.read_text().splitlines()
    first_draw = next(
        i for i, line in enumerate(lines) if line and not line.startswith("#") and "__" not in line
    )

    ragged = list(lines)
    ragged[first_draw + 2] += ",1.0"
    (tmp_path / "ragged.csv").write_text("\n".join(ragged))
    _raises(tmp_path / "ragged.csv", f"line {first_draw + 3}", "fields")

    # cut in the middle of a row: the last row has too few fields
    text = path.read_text()
    cut = text[: text.index("#  Elapsed")].rstrip("\n")
    (tmp_path / "cut.csv").write_text(cut[: cut.rindex(",")])
    _raises(tmp_path / "cut.csv", "ragged or truncated")
    # cut in the middle of the last number: no line end after the last draw
    (tmp_path / "cut_number.csv").write_text(cut[:-3])
    _raises(tmp_path / "cut_number.csv", "no line end", "truncated")

    # cut at a line boundary: fewer draws than num_samples says
    (tmp_path / "short.csv").write_text("\n".join(lines[: first_draw + 5]))
    _raises(tmp_path / "short.csv", "truncated")

    bad = list(lines)
    cells = bad[first_draw + 1].split(",")
    cells[8] = "oops"
    bad[first_draw + 1] = ",".join(cells)
    (tmp_path / "nonnum.csv").write_text("\n".join(bad))
    _raises(tmp_path / "nonnum.csv", "non-numeric", "'oops'", f"line {first_draw + 2}")

    (tmp_path / "header_only.csv").write_text("\n".join(lines[:first_draw]))
    _raises(tmp_path / "header_only.csv", "no (post-warmup) draws")

    (tmp_path / "comments.csv").write_text("# just a comment\n\n")
    _raises(tmp_path / "comments.csv", "no CSV header")

    (tmp_path / "dupcol.csv").write_text("lp__,mu.1,mu.1\n1,2,3\n")
    _raises(tmp_path / "dupcol.csv", "appears twice")

    (tmp_path / "zero.csv").write_text("lp__,mu.0\n1,2\n")
    _raises(tmp_path / "zero.csv", "index 0")

    (tmp_path / "mixed.csv").write_text("lp__,mu.1,mu.1.2\n1,2,3\n")
    _raises(tmp_path / "mixed.csv", "inconsistent indices")


def test_cmdstan_inconsistent_chains(tmp_path):
    sites = _draws(10)
    p1, _ = _write_cmdstan(tmp_path / "c1.csv", sites, 0, config=False)
    short = {k: v[:, :-2] for k, v in sites.items()}
    p2, _ = _write_cmdstan(tmp_path / "c2.csv", short, 1, config=False)
    _raises([p1, p2], "c2.csv", "same length")

    other = {"mu": sites["mu"]}
    p3, _ = _write_cmdstan(tmp_path / "c3.csv", other, 1)
    _raises([p1, p3], "c3.csv", "header differs")
