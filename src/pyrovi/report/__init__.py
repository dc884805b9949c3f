"""Reports: turn a :class:`~pyrovi.compare.Comparison` into HTML, Markdown, JSON and CSV.

======================  ===============================================================
module                  does
======================  ===============================================================
``writer``              :func:`write_report`: the four files, written atomically
``atomic``              replace a directory's files so that a crash changes nothing
``figures``             which pictures a comparison gets, their alt texts and captions
``plots``               the pictures themselves (matplotlib, Agg), arrays -> PNG bytes
``html``                ``report.html``: self-contained, pictures as data URIs
``markdown``            ``report.md``: the same content as text
``jsonout``             ``comparison.json`` (strict JSON) and ``table.csv``
``text``                words and number formatting shared by HTML and Markdown
``units``               the unit of every summary field and table column
======================  ===============================================================
"""

from pyrovi.report.writer import REPORT_FILES, write_report

__all__ = ["REPORT_FILES", "write_report"]
