"""The report: one self-contained HTML file built only from what the release gate released.

``build_report(WS, out)`` reads every release document in ``WS/released/`` through the gate's own schema
(``kansrijk.gate.document.ReleaseDocument``), the published ledger head (``WS/released/LEDGER-HEAD.json``) and the
ledger entries the gate exposes (for refusals, which have no document); it never opens the dataset or the partner
tables, so every number in the report is one the gate passed. Suppressed cells stay suppressed; numbers the gate
answered with differential privacy are marked noisy.

The file needs no network to open: CSS is inline, every plot is Vega-Lite rendered to inline SVG with vl-convert at
build time, and trees are small hand-written SVG (no script at all). Jinja2 renders it with autoescaping on; the
only unescaped fragments are those SVGs, made from released numbers with their text escaped.

The package, one job per module:

- ``released``: reading ``released/`` (``Release``: a gate document with typed views of its spec);
- ``entries``: the ledger entries (workspace ledger read-only, the gate service, or an export), checked against
  ``released/``;
- ``catalogue``: which section shows which document, by kind and spec;
- ``fmt``: numbers and names; ``view``: the view model; ``figures``: Vega-Lite plots; ``trees``: a released tree
  and its rules; ``tree_svg``: its diagram; ``findings``: sentences generated from numbers;
- ``sections/``: one module per section; ``build``: the sections, the template, the file.
"""

from __future__ import annotations

from .build import ReportResult, build_report, render_report
from .entries import LedgerEntries, read_entries
from .fmt import fmt_fraction, fmt_number, fmt_p
from .released import LedgerHead, Release, load_released
from .sections.privacy import Budget

__all__ = [
    "Budget",
    "LedgerEntries",
    "LedgerHead",
    "Release",
    "ReportResult",
    "build_report",
    "fmt_fraction",
    "fmt_number",
    "fmt_p",
    "load_released",
    "read_entries",
    "render_report",
]
