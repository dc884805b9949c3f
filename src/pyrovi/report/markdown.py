"""``report.md``: the report as plain Markdown text, without pictures.

The pictures live in ``report.html`` beside it; the Markdown says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pyrovi import diagnostics as dg
from pyrovi.comparison import TABLE_UNITS
from pyrovi.report.text import (
    LADDER_HEADER,
    LOCAL_SITE_HEADER,
    VERDICTS,
    context_rows,
    fmt,
    health_rows,
    ladder_rows,
    local_site_note,
    local_site_rows,
    pyrovi_version,
    summary_rows,
    verdict_of,
)

if TYPE_CHECKING:
    import pandas as pd

    from pyrovi.comparison import Comparison

__all__ = ["frame_table", "local_site_lines", "markdown_table", "render_markdown"]


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else fmt(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "") -> str:
    """A GitHub-flavoured Markdown table.

    Parameters
    ----------
    header : sequence of str
        Column titles.
    rows : sequence of sequences
        Cells; numbers are formatted with :func:`pyrovi.report.text.fmt`, pipes escaped.
    align : str, optional
        One letter per column, ``l`` or ``r`` (default: first left, the rest right).

    Returns
    -------
    str
    """
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---:" if a == "r" else ":---" for a in align]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def frame_table(frame: pd.DataFrame) -> str:
    """A data frame as a Markdown table, as :func:`markdown_table` writes one (the index is
    not shown: make it a column first if it matters)."""
    return markdown_table([str(c) for c in frame.columns], list(frame.itertuples(index=False)))


def local_site_lines(cmp: Comparison) -> list[str]:
    """The "Local sites" section: one row per per-person site (none without one)."""
    sites = cmp.local_sites
    if sites is None or sites.empty:
        return []
    return [
        "## Local sites",
        "",
        local_site_note(dg.INTERVAL_PROB),
        "",
        markdown_table(LOCAL_SITE_HEADER, local_site_rows(sites), "lrrrrrr"),
        "",
    ]


def ladder_lines(cmp: Comparison) -> list[str]:
    """The "Guide ladder" section: every rung of a ``guide="auto"`` fit (none without)."""
    if cmp.ladder is None or cmp.ladder.empty:
        return []
    return [
        "## Guide ladder",
        "",
        f"Stopped: {cmp.ladder_stop}",
        "",
        markdown_table(LADDER_HEADER, ladder_rows(cmp.ladder), "lrrrrrll"),
        "",
    ]


def render_markdown(cmp: Comparison) -> str:
    """The Markdown report of a comparison.

    Parameters
    ----------
    cmp : pyrovi.comparison.Comparison

    Returns
    -------
    str
        Verdict and reasons (after a warning when the reference is unhealthy), summary
        figures with units, missed correlations, the table, the health of the
        reference, the context and a pointer to ``report.html`` for the pictures.
    """
    word = verdict_of(cmp.summary)
    lines = ["# pyrovi: variational posterior against the reference", ""]
    problems = list(cmp.health.get("problems", []) or [])
    if problems:
        lines += [
            "> **Warning: the reference is unhealthy.** Its draws failed convergence checks,",
            "> so a disagreement may be the reference's fault rather than the guide's.",
            ">",
            *[f"> - {p}" for p in problems],
            "",
        ]
    lines += [f"## Verdict: **{word.upper()}**", "", VERDICTS[word], ""]
    lines += [f"- {reason}" for reason in cmp.reasons] + [""]
    lines += ladder_lines(cmp)
    lines += ["## Summary", ""]
    lines.append(
        markdown_table(
            ["figure", "value", "unit", "how to read it"],
            [(r.label, r.value, r.unit, r.note) for r in summary_rows(cmp.summary)],
            "lrll",
        )
    )
    lines += [
        "",
        "Pictures (ELBO trace, densities, pair plot, mean errors, k-hat): see "
        "`report.html` in this folder.",
        "",
    ]
    if cmp.missed:
        lines += ["## Correlations the guide misses", ""]
        rows = [
            (m.get("a"), m.get("b"), fmt(m.get("rho_ref"), 2), fmt(m.get("rho_vi"), 2))
            for m in cmp.missed
        ]
        lines += [markdown_table(["a", "b", "ρ reference", "ρ VI"], rows, "llrr"), ""]
    lines += local_site_lines(cmp)
    lines += ["## Parameters", ""]
    listed = cmp.listed_table()
    header = ["parameter", "unit", *(str(c) for c in listed.columns)]
    units: dict[str, list[str]] = {}
    for column in header[2:]:
        units.setdefault(TABLE_UNITS.get(column, "as given"), []).append(column)
    lines += [
        "Units: "
        + "; ".join(f"{', '.join(c)} in {u}" for u, c in units.items())
        + f". The unit column gives each parameter's unit "
        f"({cmp.summary.get('parameter_units')}).",
        "",
    ]
    rows = [
        [str(name), cmp.unit_of(str(name)), *row]
        for name, row in zip(listed.index, listed.to_numpy(), strict=True)
    ]
    lines += [markdown_table(header, rows, "ll" + "r" * (len(header) - 2)), ""]
    lines += [
        "## Reference health",
        "",
        markdown_table(["check", "value"], health_rows(cmp.health), "ll"),
        "",
    ]
    lines += [
        "## Context",
        "",
        markdown_table(["item", "value"], context_rows(cmp.labels), "ll"),
        "",
    ]
    lines += [f"Written by pyrovi {pyrovi_version()}.", ""]
    return "\n".join(lines)
