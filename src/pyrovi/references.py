"""Load reference posterior draws (NUTS, posteriordb, CmdStan) as ``arviz.InferenceData``.

Three on-disk formats are understood, chosen by file extension:

``.nc``
    An ArviZ ``InferenceData`` written with ``idata.to_netcdf``; it must hold a
    ``posterior`` group.
``.json`` / ``.json.zip``
    posteriordb reference draws: a list of chains, each a mapping from a
    one-based scalar name (``"mu[1]"``, ``"a[2,3]"``, ``"sigma"``) to a list of
    draws. A ``.json.zip`` archive holds exactly one such JSON file.
``.csv``
    CmdStan output, one file per chain (pass a list of paths for several chains).

Names in posteriordb and CmdStan are one-based; pyrovi is zero-based everywhere,
so ``mu[1]`` becomes element ``0`` of site ``mu`` and ``a[2,3]`` (or CmdStan's
``a.2.3``) becomes element ``[1, 2]`` of the two-dimensional site ``a``.

Every malformed, truncated or missing input raises :class:`ReferenceFormatError`
with one line naming the file and the problem.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np

__all__ = ["ReferenceFormatError", "load_reference"]

PathLike = str | os.PathLike[str]

# CmdStan sampler diagnostics -> ArviZ sample_stats names.
_SAMPLER_NAMES = {
    "lp__": "lp",
    "accept_stat__": "acceptance_rate",
    "stepsize__": "step_size",
    "treedepth__": "tree_depth",
    "n_leapfrog__": "n_steps",
    "divergent__": "diverging",
    "energy__": "energy",
}
_INTEGER_STATS = {"tree_depth", "n_steps"}
_BOOLEAN_STATS = {"diverging"}

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_PLAIN_RE = re.compile(rf"^({_IDENT})$")
_BRACKET_RE = re.compile(rf"^({_IDENT})\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]$")
_DOTTED_RE = re.compile(rf"^({_IDENT})((?:\.\d+)+)$")
_CONFIG_RE = re.compile(r"^#\s*([A-Za-z_]+)\s*=\s*(\S+)")


class ReferenceFormatError(ValueError):
    """A reference file is missing, truncated or not in a format pyrovi can read."""


def load_reference(path: PathLike | Sequence[PathLike]) -> az.InferenceData:
    """Load reference posterior draws from disk.

    Parameters
    ----------
    path : str, os.PathLike or sequence of them
        One of

        - an ArviZ netCDF file (``.nc``) with a ``posterior`` group;
        - posteriordb reference draws (``.json``, or ``.json.zip`` holding one
          JSON file): a list of chains, each mapping one-based scalar names such
          as ``"mu[1]"`` or ``"a[2,3]"`` to a list of draws;
        - CmdStan output CSV (``.csv``), one file per chain; pass a list or
          tuple of paths to load several chains.

    Returns
    -------
    arviz.InferenceData
        ``posterior`` holds one variable per site with dims
        ``(chain, draw, *shape)``; indices are zero-based, so posteriordb's
        ``mu[1]`` is ``posterior["mu"][..., 0]``. For CmdStan files the sampler
        columns go to ``sample_stats`` under ArviZ names (``lp``,
        ``acceptance_rate``, ``step_size``, ``tree_depth``, ``n_steps``,
        ``diverging``, ``energy``), and saved warmup draws are dropped. Names
        ending in ``__`` in posteriordb files are treated as sampler columns too.

    Raises
    ------
    ReferenceFormatError
        If a file is missing, has an unknown extension, or is malformed or
        truncated (bad JSON, ragged or non-numeric rows, chains of different
        lengths or names, inconsistent or zero indices, no draws, ...). The
        message is one line and names the file.

    Examples
    --------
    >>> ref = load_reference("eight_schools_noncentered.json.zip")  # doctest: +SKIP
    >>> ref.posterior["theta"].shape  # doctest: +SKIP
    (10, 1000, 8)
    """
    if isinstance(path, (list, tuple)):
        paths = [Path(p) for p in path]
        if not paths:
            raise ReferenceFormatError("load_reference: empty list of reference files")
        for p in paths:
            if _extension_kind(p) != "csv":
                raise ReferenceFormatError(
                    f"{p}: a list of paths is only supported for CmdStan CSV files (one per chain)"
                )
            _check_file(p)
        return _load_cmdstan(paths)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load_reference: expected a path or a list of paths, got {type(path)!r}")
    p = Path(path)
    kind = _kind(p)
    if kind == "nc":
        return _load_netcdf(p)
    if kind == "json":
        return _load_posteriordb(p)
    return _load_cmdstan([p])


# ----------------------------------------------------------------------------------------
# helpers shared by the formats


def _kind(path: Path) -> str:
    kind = _extension_kind(path)
    _check_file(path)
    return kind


def _extension_kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".json.zip") or name.endswith(".json"):
        kind = "json"
    elif name.endswith(".nc"):
        kind = "nc"
    elif name.endswith(".csv"):
        kind = "csv"
    else:
        raise ReferenceFormatError(
            f"{path}: unknown reference file extension "
            "(expected .nc, .json, .json.zip or CmdStan .csv)"
        )
    return kind


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ReferenceFormatError(f"reference file not found: {path}")
    if not path.is_file():
        raise ReferenceFormatError(f"{path}: not a regular file")


def _parse_name(name: str, where: str) -> tuple[str, tuple[int, ...]]:
    """Split a one-based scalar name into (site, zero-based index)."""
    stripped = name.strip()
    m = _PLAIN_RE.match(stripped)
    if m:
        return m.group(1), ()
    m = _BRACKET_RE.match(stripped)
    if m:
        parts = [s.strip() for s in m.group(2).split(",")]
    else:
        m = _DOTTED_RE.match(stripped)
        if not m:
            raise ReferenceFormatError(f"{where}: cannot parse parameter name {name!r}")
        parts = m.group(2).split(".")[1:]
    index = tuple(int(s) for s in parts)
    if any(i < 1 for i in index):
        raise ReferenceFormatError(
            f"{where}: parameter name {name!r} has index 0 but names are one-based"
        )
    return m.group(1), tuple(i - 1 for i in index)


def _one_based(site: str, index: tuple[int, ...]) -> str:
    if not index:
        return site
    return f"{site}[{','.join(str(i + 1) for i in index)}]"


def _assemble(
    columns: dict[str, np.ndarray], where: str
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Turn one-based scalar columns of shape (chain, draw) into site arrays.

    Returns ``(posterior, sample_stats)``, each mapping names to arrays of shape
    ``(chain, draw, *shape)``.
    """
    sites: dict[str, dict[tuple[int, ...], str]] = {}
    stats: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        site, index = _parse_name(name, where)
        if not index and site.endswith("__"):
            stat = _SAMPLER_NAMES.get(site, site.strip("_"))
            if stat in stats:
                raise ReferenceFormatError(f"{where}: sampler column {name!r} appears twice")
            stats[stat] = _cast_stat(stat, values)
            continue
        entries = sites.setdefault(site, {})
        if entries:
            ndim = len(next(iter(entries)))
            if ndim != len(index):
                other = _one_based(site, next(iter(entries)))
                raise ReferenceFormatError(
                    f"{where}: inconsistent indices for {site!r}: {other!r} has {ndim} "
                    f"and {name!r} has {len(index)}"
                )
        if index in entries:
            raise ReferenceFormatError(
                f"{where}: {name!r} and {entries[index]!r} name the same element of {site!r}"
            )
        entries[index] = name

    posterior: dict[str, np.ndarray] = {}
    for site, entries in sites.items():
        some = next(iter(entries))
        shape = tuple(max(ix[d] for ix in entries) + 1 for d in range(len(some)))
        if len(entries) != math.prod(shape):
            missing = next(ix for ix in np.ndindex(*shape) if tuple(ix) not in entries)
            raise ReferenceFormatError(
                f"{where}: site {site!r} has shape {shape} (one-based maxima) but element "
                f"{_one_based(site, tuple(missing))!r} is missing"
            )
        first = columns[entries[some]]
        array = np.empty(first.shape + shape, dtype=np.float64)
        for index, name in entries.items():
            array[(Ellipsis, *index)] = columns[name]
        posterior[site] = array
    if not posterior:
        raise ReferenceFormatError(f"{where}: no parameter columns found")
    return posterior, stats


def _cast_stat(stat: str, values: np.ndarray) -> np.ndarray:
    if stat in _BOOLEAN_STATS:
        return values != 0
    if stat in _INTEGER_STATS and np.all(np.isfinite(values)) and np.all(values == np.rint(values)):
        return values.astype(np.int64)
    return values


def _to_inference_data(
    posterior: dict[str, np.ndarray],
    sample_stats: dict[str, np.ndarray],
    attrs: dict[str, Any],
) -> az.InferenceData:
    return az.from_dict(
        posterior=posterior,
        sample_stats=sample_stats or None,
        index_origin=0,
        attrs=attrs,
    )


# ----------------------------------------------------------------------------------------
# netCDF


def _load_netcdf(path: Path) -> az.InferenceData:
    try:
        with az.rc_context({"data.load": "eager"}):
            idata = az.from_netcdf(str(path))
    except Exception as err:  # h5py / xarray raise many types for a bad file
        raise ReferenceFormatError(
            f"{path}: cannot read netCDF file ({type(err).__name__}: {_first_line(err)})"
        ) from err
    if "posterior" not in idata.groups():
        raise ReferenceFormatError(f"{path}: netCDF file has no 'posterior' group")
    return idata


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no details"


# ----------------------------------------------------------------------------------------
# posteriordb JSON


def _read_json_text(path: Path) -> tuple[str, str]:
    """Return (text, where) for a .json or .json.zip file."""
    if not path.name.lower().endswith(".zip"):
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as err:
            raise ReferenceFormatError(f"{path}: cannot read file ({_first_line(err)})") from err
    try:
        with zipfile.ZipFile(path) as archive:
            members = [
                info
                for info in archive.infolist()
                if not info.is_dir()
                and not info.filename.startswith("__MACOSX/")
                and info.filename.lower().endswith(".json")
            ]
            if len(members) != 1:
                raise ReferenceFormatError(
                    f"{path}: zip archive must hold exactly one .json file, found {len(members)}"
                )
            member = members[0]
            raw = archive.read(member)
    except ReferenceFormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError) as err:
        raise ReferenceFormatError(
            f"{path}: not a readable zip archive ({_first_line(err)})"
        ) from err
    where = f"{path}::{member.filename}"
    try:
        return raw.decode("utf-8"), where
    except UnicodeDecodeError as err:
        raise ReferenceFormatError(f"{where}: not UTF-8 text ({_first_line(err)})") from err


def _load_posteriordb(path: Path) -> az.InferenceData:
    text, where = _read_json_text(path)
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        raise ReferenceFormatError(
            f"{where}: invalid JSON at line {err.lineno} column {err.colno} ({err.msg})"
        ) from err
    if not isinstance(content, list) or not content:
        raise ReferenceFormatError(
            f"{where}: expected a non-empty list of chains (dicts of name -> draws), "
            f"got {type(content).__name__}" + (" (empty)" if content == [] else "")
        )
    names: list[str] | None = None
    n_draws: int | None = None
    chains: list[dict[str, np.ndarray]] = []
    for c, chain in enumerate(content):
        if not isinstance(chain, dict) or not chain:
            raise ReferenceFormatError(
                f"{where}: chain {c} is not a non-empty mapping of name -> draws"
            )
        if names is None:
            names = list(chain)
        elif set(chain) != set(names):
            extra = sorted(set(chain) - set(names))
            lacking = sorted(set(names) - set(chain))
            raise ReferenceFormatError(
                f"{where}: chain {c} has different parameter names than chain 0 "
                f"(extra: {extra}, missing: {lacking})"
            )
        parsed: dict[str, np.ndarray] = {}
        for name in names:
            values = _numeric_draws(chain[name], f"{where}: chain {c}, {name!r}")
            if n_draws is None:
                n_draws = values.shape[0]
                if n_draws == 0:
                    raise ReferenceFormatError(f"{where}: chain {c}, {name!r} has no draws")
            elif values.shape[0] != n_draws:
                raise ReferenceFormatError(
                    f"{where}: chain {c}, {name!r} has {values.shape[0]} draws, expected "
                    f"{n_draws} (all chains and parameters must have the same length)"
                )
            parsed[name] = values
        chains.append(parsed)
    assert names is not None
    columns = {name: np.stack([chain[name] for chain in chains]) for name in names}
    posterior, stats = _assemble(columns, where)
    return _to_inference_data(
        posterior, stats, {"reference_source": str(path), "reference_format": "posteriordb"}
    )


def _numeric_draws(values: Any, where: str) -> np.ndarray:
    if not isinstance(values, list):
        raise ReferenceFormatError(
            f"{where}: expected a list of draws, got {type(values).__name__}"
        )
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ReferenceFormatError(f"{where}: non-numeric draw {v!r}")
    return np.asarray(values, dtype=np.float64)


# ----------------------------------------------------------------------------------------
# CmdStan CSV


def _load_cmdstan(paths: list[Path]) -> az.InferenceData:
    header: list[str] | None = None
    first: Path | None = None
    chains: list[np.ndarray] = []
    for p in paths:
        names, draws = _read_cmdstan_csv(p)
        if header is None:
            header, first = names, p
        elif names != header:
            raise ReferenceFormatError(
                f"{p}: CSV header differs from the first chain's ({first.name})"
            )
        elif draws.shape[0] != chains[0].shape[0]:
            raise ReferenceFormatError(
                f"{p}: chain has {draws.shape[0]} draws but {first.name} has "
                f"{chains[0].shape[0]}; all chains must have the same length"
            )
        chains.append(draws)
    assert header is not None
    data = np.stack(chains)  # (chain, draw, column)
    columns = {name: data[:, :, j] for j, name in enumerate(header)}
    where = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (and {len(paths) - 1} more)"
    posterior, stats = _assemble(columns, where)
    return _to_inference_data(
        posterior,
        stats,
        {
            "reference_source": ", ".join(str(p) for p in paths),
            "reference_format": "cmdstan_csv",
        },
    )


def _read_cmdstan_csv(path: Path) -> tuple[list[str], np.ndarray]:
    """Return (header names, post-warmup draws of shape (draw, column))."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ReferenceFormatError(f"{path}: cannot read file ({_first_line(err)})") from err
    lines = text.splitlines()
    # CmdStan ends every line with a newline; a missing one after a draw means truncation
    lines_end_with_newline = text.endswith(("\n", "\r"))

    header: list[str] | None = None
    rows: list[list[str]] = []
    row_lines: list[int] = []
    adaptation_at: int | None = None  # number of data rows seen before "Adaptation terminated"
    config: dict[str, str] = {}
    for lineno, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            if adaptation_at is None and "adaptation terminated" in stripped.lower():
                adaptation_at = len(rows)
            elif header is None:
                m = _CONFIG_RE.match(stripped)
                if m:
                    config.setdefault(m.group(1), m.group(2))
            continue
        if header is None:
            # the header may quote bracketed names holding commas: "a[1,2]"
            cells = [cell.strip() for cell in next(csv.reader([stripped]))]
            if any(not cell for cell in cells):
                raise ReferenceFormatError(f"{path}: line {lineno}: empty column name in header")
            if len(set(cells)) != len(cells):
                dup = next(c for c in cells if cells.count(c) > 1)
                raise ReferenceFormatError(f"{path}: line {lineno}: column {dup!r} appears twice")
            header = cells
            continue
        cells = [cell.strip() for cell in stripped.split(",")]
        if len(cells) != len(header):
            raise ReferenceFormatError(
                f"{path}: line {lineno} has {len(cells)} fields but the header has {len(header)} "
                "(ragged or truncated row)"
            )
        rows.append(cells)
        row_lines.append(lineno)

    if header is None:
        raise ReferenceFormatError(f"{path}: no CSV header row found (empty or comment-only file)")
    if "stan_version_major" in config and rows and not lines_end_with_newline:
        if row_lines[-1] == len(lines):
            raise ReferenceFormatError(
                f"{path}: line {row_lines[-1]} is the last line and has no line end; "
                "the file looks truncated"
            )

    n_warmup_rows = _warmup_rows(path, config, len(rows), adaptation_at)
    rows = rows[n_warmup_rows:]
    row_lines = row_lines[n_warmup_rows:]
    if not rows:
        raise ReferenceFormatError(f"{path}: CSV has a header but no (post-warmup) draws")
    try:
        draws = np.array(rows, dtype=np.float64)
    except ValueError as err:
        for cells, lineno in zip(rows, row_lines, strict=True):
            for name, cell in zip(header, cells, strict=True):
                try:
                    float(cell)
                except ValueError:
                    raise ReferenceFormatError(
                        f"{path}: line {lineno}: non-numeric value {cell!r} in column {name!r}"
                    ) from err
        raise ReferenceFormatError(f"{path}: non-numeric values ({_first_line(err)})") from err
    return header, draws


def _warmup_rows(path: Path, config: dict[str, str], n_rows: int, adaptation_at: int | None) -> int:
    """How many leading data rows are saved warmup draws; checks counts against the config."""
    thin = _config_int(config, "thin", path) or 1
    num_samples = _config_int(config, "num_samples", path)
    num_warmup = _config_int(config, "num_warmup", path)
    save_warmup = config.get("save_warmup", "0").lower() in {"1", "true"}
    expected = None if num_samples is None else -(-num_samples // thin)

    if adaptation_at is not None:
        n_warmup = adaptation_at
    elif save_warmup and num_warmup and expected is not None:
        # No "Adaptation terminated" line (adaptation off): use the run configuration.
        saved_warmup = -(-num_warmup // thin)
        n_warmup = saved_warmup if n_rows == saved_warmup + expected else 0
    else:
        n_warmup = 0

    n_draws = n_rows - n_warmup
    if expected is not None and n_draws not in (0, expected):
        raise ReferenceFormatError(
            f"{path}: found {n_draws} draws but the run configuration (num_samples={num_samples}, "
            f"thin={thin}) implies {expected}; the file looks truncated"
        )
    return n_warmup


def _config_int(config: dict[str, str], key: str, path: Path) -> int | None:
    if key not in config:
        return None
    try:
        return int(config[key])
    except ValueError as err:
        raise ReferenceFormatError(
            f"{path}: comment line '{key} = {config[key]}' is not an integer"
        ) from err
