"""Write the four files of a report, atomically: :func:`write_report`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pyrovi.report.atomic import write_atomically
from pyrovi.report.figures import report_figures
from pyrovi.report.html import render_html
from pyrovi.report.jsonout import render_csv, render_json
from pyrovi.report.markdown import render_markdown

if TYPE_CHECKING:
    from pyrovi.comparison import Comparison

__all__ = ["REPORT_FILES", "write_report"]

REPORT_FILES: dict[str, str] = {
    "html": "report.html",
    "markdown": "report.md",
    "json": "comparison.json",
    "csv": "table.csv",
}
"""File kind -> file name of the files a report consists of."""

_OWNED_EXTRA = ("images",)
"""Other names in a report directory that belong to the report (older layouts)."""


def write_report(cmp: Comparison, out_dir: str | os.PathLike[str]) -> dict[str, Path]:
    """Write the report of a comparison into ``out_dir``.

    Writes ``report.html`` (self-contained: styles inline, pictures embedded as PNG
    data URIs, opens offline), ``report.md`` (the same content as text),
    ``comparison.json`` (strict JSON, NaN and infinities as ``null``) and ``table.csv``.
    A previous report in ``out_dir`` is replaced atomically: if anything fails, the
    old files stay as they were. Other files the user keeps in ``out_dir`` are never
    deleted.

    Parameters
    ----------
    cmp : pyrovi.comparison.Comparison
        The comparison to report.
    out_dir : str or os.PathLike
        Directory of the report; it and its parent are created when missing.

    Returns
    -------
    dict of str to pathlib.Path
        ``"html"``, ``"markdown"``, ``"json"``, ``"csv"`` -> the file written.

    Raises
    ------
    PermissionError
        If ``out_dir`` or its parent cannot be written; the message names the directory.
    OSError
        If ``out_dir`` is an existing file, or another file-system error occurs.

    Examples
    --------
    >>> paths = cmp.write("report/")  # doctest: +SKIP
    >>> sorted(paths)  # doctest: +SKIP
    ['csv', 'html', 'json', 'markdown']
    """

    def html() -> bytes:
        return render_html(cmp, report_figures(cmp)).encode("utf-8")

    renderers = {
        REPORT_FILES["html"]: html,
        REPORT_FILES["markdown"]: lambda: render_markdown(cmp).encode("utf-8"),
        REPORT_FILES["json"]: lambda: render_json(cmp),
        REPORT_FILES["csv"]: lambda: render_csv(cmp),
    }
    written = write_atomically(out_dir, renderers, owned=_OWNED_EXTRA)
    return {kind: written[name] for kind, name in REPORT_FILES.items()}
