"""Reports: turn a :class:`~pyrovi.comparison.Comparison` into HTML, Markdown, JSON and CSV.

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
``text``                words, units and number formatting shared by HTML and Markdown
======================  ===============================================================

The unit of every summary field and table column is read from
:mod:`pyrovi.comparison` (:meth:`~pyrovi.comparison.Summary.units`,
:data:`~pyrovi.comparison.TABLE_UNITS`), and each parameter's own unit from
:attr:`~pyrovi.comparison.Comparison.units`.
"""

from pyrovi.report.writer import REPORT_FILES, write_report

__all__ = ["REPORT_FILES", "write_report"]
