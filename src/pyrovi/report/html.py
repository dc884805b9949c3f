"""``report.html``: one self-contained page that opens offline.

Styles are inline, every picture is a ``data:image/png;base64`` URI, and a
Content-Security-Policy forbids the page to load anything from elsewhere. A small
inline script records, once the page has loaded, how many of its images decoded
(``data-images-loaded`` and ``data-images-total`` on ``<body>``), which the browser
test reads.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from html import escape
from typing import TYPE_CHECKING

from pyrovi.comparison import TABLE_UNITS
from pyrovi.diagnostics import (
    CAUTION_MEAN_ERROR_Z,
    CAUTION_SD_RATIO,
    INTERVAL_PROB,
    TRUST_MEAN_ERROR_Z,
    TRUST_SD_RATIO,
)
from pyrovi.report.figures import ReportFigure
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
    from pyrovi.comparison import Comparison

__all__ = ["render_html"]

_CSS = """
:root { --trust: #1a7f37; --caution: #b26a00; --reject: #cf222e; --muted: #57606a; }
* { box-sizing: border-box; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, Helvetica, Arial,
       sans-serif; color: #1f2328; margin: 0 auto; max-width: 1100px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 32px 0 8px; border-bottom: 1px solid #d0d7de; }
.context-line { color: var(--muted); margin: 0 0 16px; }
#verdict { font-size: 44px; font-weight: 800; letter-spacing: .04em; padding: 12px 20px;
           border-radius: 8px; border-left: 12px solid currentColor; margin: 16px 0 8px; }
#verdict .meaning { display: block; font-size: 16px; font-weight: 500;
                    letter-spacing: 0; color: #1f2328; }
#verdict.trust { color: var(--trust); background: #dafbe1; }
#verdict.caution { color: var(--caution); background: #fff1d6; }
#verdict.reject { color: var(--reject); background: #ffebe9; }
.reasons li { margin: 2px 0; }
.warning { border: 2px solid var(--reject); background: #fff8c5; border-radius: 8px;
           padding: 10px 16px; margin: 16px 0; }
.warning strong { color: var(--reject); }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: right;
         vertical-align: top; }
th { background: #f6f8fa; }
td.name, th.name, td.label, td.note { text-align: left; }
td.note { color: var(--muted); max-width: 560px; }
td.warn { background: #fff1d6; }
td.bad { background: #ffebe9; font-weight: 600; }
.unit { color: var(--muted); font-weight: normal; font-size: 11px; display: block; }
figure { margin: 16px 0 24px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: var(--muted); font-size: 13px; max-width: 900px; }
footer { color: var(--muted); font-size: 12px; margin-top: 40px; }
"""

_SCRIPT = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var loaded = images.filter(function (img) {
    return img.complete && img.naturalWidth > 0;
  });
  document.body.dataset.imagesTotal = String(images.length);
  document.body.dataset.imagesLoaded = String(loaded.length);
});
"""

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell_class(column: str, value: float) -> str:
    if not math.isfinite(value):
        return ""
    if column == "mean_error_z":
        if not abs(value) <= CAUTION_MEAN_ERROR_Z:
            return "bad"
        if not abs(value) <= TRUST_MEAN_ERROR_Z:
            return "warn"
    if column == "sd_ratio":
        if not CAUTION_SD_RATIO[0] <= value <= CAUTION_SD_RATIO[1]:
            return "bad"
        if not TRUST_SD_RATIO[0] <= value <= TRUST_SD_RATIO[1]:
            return "warn"
    return ""


def _table(cmp: Comparison) -> str:
    table = cmp.listed_table()
    head = "".join(
        f'<th>{escape(str(c))}<span class="unit">{escape(TABLE_UNITS.get(str(c), ""))}</span></th>'
        for c in table.columns
    )
    rows = []
    for name, row in table.iterrows():
        cells = [f'<td class="label">{escape(cmp.unit_of(str(name)))}</td>']
        for column, value in row.items():
            css = _cell_class(str(column), float(value))
            attr = f' class="{css}"' if css else ""
            cells.append(f"<td{attr}>{escape(fmt(value))}</td>")
        rows.append(f'<tr><td class="name">{escape(str(name))}</td>{"".join(cells)}</tr>')
    return (
        '<table id="table"><thead><tr><th class="name">parameter</th>'
        '<th class="name">unit</th>'
        f"{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
    )


def _local_sites(cmp: Comparison) -> list[str]:
    sites = cmp.local_sites
    if sites is None or sites.empty:
        return []
    head = "".join(f"<th>{escape(h)}</th>" for h in LOCAL_SITE_HEADER[1:])
    body = "".join(
        f'<tr><td class="name">{escape(row[0])}</td>'
        + "".join(f"<td>{escape(cell)}</td>" for cell in row[1:])
        + "</tr>"
        for row in local_site_rows(sites)
    )
    return [
        "<h2>Local sites</h2>",
        f'<p class="context-line">{escape(local_site_note(INTERVAL_PROB))}</p>',
        f'<table id="local-sites"><thead><tr><th class="name">site</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>",
    ]


def _ladder(cmp: Comparison) -> list[str]:
    if cmp.ladder is None or cmp.ladder.empty:
        return []
    head = "".join(f"<th>{escape(h)}</th>" for h in LADDER_HEADER[1:])
    body = "".join(
        f'<tr><td class="name">{escape(row[0])}</td>'
        + "".join(f"<td>{escape(cell)}</td>" for cell in row[1:-1])
        + f'<td class="note">{escape(row[-1])}</td></tr>'
        for row in ladder_rows(cmp.ladder)
    )
    return [
        "<h2>Guide ladder</h2>",
        f'<p class="context-line" id="ladder-stop">Stopped: {escape(cmp.ladder_stop)}</p>',
        f'<table id="ladder"><thead><tr><th class="name">guide</th>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>",
    ]


def _pairs_table(rows: Sequence[tuple[str, str]], css_id: str) -> str:
    body = "".join(
        f'<tr><td class="label">{escape(k)}</td><td class="label">{escape(v)}</td></tr>'
        for k, v in rows
    )
    return f'<table id="{css_id}"><tbody>{body}</tbody></table>'


def _figure(figure: ReportFigure) -> str:
    return (
        f'<figure id="fig-{escape(figure.key)}"><h3>{escape(figure.title)}</h3>'
        f'<img src="{_data_uri(figure.png)}" alt="{escape(figure.alt)}">'
        f"<figcaption>{escape(figure.caption)}</figcaption></figure>"
    )


def render_html(cmp: Comparison, figures: Sequence[ReportFigure]) -> str:
    """The HTML page of a comparison.

    Parameters
    ----------
    cmp : pyrovi.comparison.Comparison
        The comparison to render.
    figures : sequence of ReportFigure
        Pictures to embed (from :func:`pyrovi.report.figures.report_figures`).

    Returns
    -------
    str
        A complete HTML document: an unhealthy-reference warning when the reference
        has problems, the verdict (``id="verdict"``, ``data-verdict``) and its reasons,
        the summary figures with units, the pictures, the missed correlations, the
        table, the health of the reference and the context (model, guide, data,
        relabelling).
    """
    word = verdict_of(cmp.summary)
    labels = cmp.labels
    heading = " · ".join(
        escape(str(labels[k])) for k in ("model", "guide", "data") if labels.get(k) is not None
    )
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>pyrovi report: {word}{' · ' + heading if heading else ''}</title>",
        f"<style>{_CSS}</style>",
        f"<script>{_SCRIPT}</script>",
        f'</head><body data-images-expected="{len(figures)}">',
        "<h1>pyrovi: variational posterior against the reference</h1>",
    ]
    if heading:
        parts.append(f'<p class="context-line">{heading}</p>')
    problems = list(cmp.health.get("problems", []) or [])
    if problems:
        items = "".join(f"<li>{escape(str(p))}</li>" for p in problems)
        parts.append(
            '<div class="warning" id="reference-warning" role="alert"><strong>The reference '
            "is unhealthy.</strong> Its draws failed convergence checks, so a disagreement "
            "may be the reference's fault rather than the guide's; the verdict is at best "
            f"caution.<ul>{items}</ul></div>"
        )
    parts += [
        f'<div id="verdict" class="{word}" data-verdict="{word}">{word.upper()}'
        f'<span class="meaning">{escape(VERDICTS[word])}</span></div>',
        '<ul class="reasons" id="reasons">'
        + "".join(f"<li>{escape(str(r))}</li>" for r in cmp.reasons)
        + "</ul>",
        *_ladder(cmp),
        "<h2>Summary</h2>",
        '<table id="summary"><thead><tr><th class="name">figure</th><th>value</th>'
        '<th class="name">unit</th><th class="name">how to read it</th></tr></thead><tbody>',
    ]
    for row in summary_rows(cmp.summary):
        parts.append(
            f'<tr><td class="name">{escape(row.label)}</td><td>{escape(row.value)}</td>'
            f'<td class="label">{escape(row.unit)}</td>'
            f'<td class="note">{escape(row.note)}</td></tr>'
        )
    parts.append("</tbody></table>")
    if figures:
        parts.append("<h2>Pictures</h2>")
        parts += [_figure(f) for f in figures]
    if cmp.missed:
        parts.append("<h2>Correlations the guide misses</h2>")
        rows = "".join(
            f'<tr><td class="name">{escape(str(m.get("a")))}</td>'
            f'<td class="name">{escape(str(m.get("b")))}</td>'
            f"<td>{escape(fmt(m.get('rho_ref'), 2))}</td>"
            f"<td>{escape(fmt(m.get('rho_vi'), 2))}</td></tr>"
            for m in cmp.missed
        )
        parts.append(
            '<table id="missed"><thead><tr><th class="name">a</th><th class="name">b</th>'
            f"<th>ρ reference</th><th>ρ VI</th></tr></thead><tbody>{rows}</tbody></table>"
        )
    parts += _local_sites(cmp)
    parts += [
        "<h2>Parameters</h2>",
        '<p class="context-line">Means and sds in '
        f"{escape(str(cmp.summary.get('parameter_units')))} (the unit column). Highlighted: "
        "amber misses the trust threshold, red the caution threshold.</p>",
        _table(cmp),
        "<h2>Reference health</h2>",
        _pairs_table(health_rows(cmp.health), "health"),
        "<h2>Context</h2>",
        _pairs_table(context_rows(labels), "context"),
        f"<footer>Written by pyrovi {escape(pyrovi_version())}. Thresholds: mean error in "
        "reference sd, sd ratio sd_vi / sd_ref; k-hat thresholds from Yao, Vehtari, Simpson "
        "and Gelman (2018), Yes, but did it work?: Evaluating variational inference.</footer>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
