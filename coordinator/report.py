"""The report: one self-contained HTML file built only from what the release gate released.

``build_report(WS, out)`` reads every release document in ``WS/released/`` (the gate's ``kansrijk-release``
JSON files) and the published ledger head (``WS/released/LEDGER-HEAD.json``); it never opens the dataset, the
partner tables or the ledger's contents, so every number in the report is one the gate passed. Suppressed
cells stay suppressed (shown as such); numbers the gate answered with differential privacy are marked noisy.

The file needs no network to open: CSS is inline and every plot is Vega-Lite rendered to inline SVG with
vl-convert at build time (no script at all). Jinja2 renders it with autoescaping on; the only unescaped
fragments are the SVGs vl-convert produced from the released numbers.

Sections: linkage overview, outcome base rates, model comparison (all variables vs the factor model, with
intervals; a differentially private model's AUC next to the non-private tree's), feature importances, released
trees, differentially private models (``dp_model`` releases: noisy metrics, importances, size, epsilon per step),
the WOZ relation, factor coverage, refused outcomes, other released outputs (only when there are any), and the
privacy section (every release's rules, epsilon spent and left, the ledger head hash).
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from kansrijk.errors import InputError, OutputExists, PolicyError, WorkspaceError
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.gate.document import read_document
from kansrijk.gate.ledger import HEAD_FILE, RELEASED_DIR
from kansrijk.policy.common import policy_digest, read_policy_bytes
from kansrijk.policy.release import ReleasePolicy, load_release_policy
from kansrijk.stats.association import reading as association_reading

TEMPLATE = "report.html.j2"
FEATURE_SETS = {"all": "all variables", "factor": "factor model", "factor_model": "factor model"}
_MISSING = "–"


# --- what the gate released ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ReleasedOutput:
    """One release document from ``WS/released/NAME.json``, exactly as the gate wrote it."""

    name: str
    kind: str
    description: str
    population: str
    outcome: str  # released | suppressed
    method: str  # sdc | dp | dp+sdc
    requested_by: str
    ledger_entry: str
    policy_digest: str
    epsilon_spent: Fraction
    noisy: bool
    noise: Mapping[str, Any] | None
    values: Mapping[str, Any]
    verdicts: tuple[Mapping[str, Any], ...]

    @property
    def is_table(self) -> bool:
        return isinstance(self.values, Mapping) and "columns" in self.values and "rows" in self.values

    @property
    def rule_summary(self) -> str:
        """One line for the privacy section: the rules that did not simply pass, or how many passed."""
        # an officer's approval of a refused output is always shown, with who approved it and what it lifted
        special = [v for v in self.verdicts if v.get("verdict") != "pass" or v.get("rule") == "officer_review"]
        if special:
            return "; ".join(f"{v.get('rule')}: {v.get('reason')}" for v in special)
        rules = [str(v.get("rule")) for v in self.verdicts]
        return f"all {len(rules)} rules passed ({', '.join(rules)})" if rules else "no rule recorded"


@dataclass(frozen=True, slots=True)
class LedgerHead:
    seq: int
    entry_hash: str


@dataclass(frozen=True, slots=True)
class Budget:
    """Epsilon spent (sum over the released documents) and, when the release policy is given, the total."""

    spent: Fraction
    total: Fraction | None
    dataset: str | None
    per_release_max: Fraction | None

    @property
    def left(self) -> Fraction | None:
        return None if self.total is None else self.total - self.spent


def load_released(workspace: Path) -> tuple[list[ReleasedOutput], LedgerHead]:
    """Every release document of ``WS/released/`` (sorted by ledger entry) and the published ledger head.

    Refuses (``WorkspaceError``) a workspace with nothing released, and (``InputError``) a release file that
    is not a gate document: the report must not show a number the gate did not pass.
    """
    released_dir = Path(workspace) / RELEASED_DIR
    head_path = released_dir / HEAD_FILE
    if not released_dir.is_dir() or not head_path.is_file():
        raise WorkspaceError(
            f"{released_dir}: no released outputs (no {HEAD_FILE})",
            hint="run the analysis first: kansrijk coordinator analyse WS --plan PLAN ...",
        )
    try:
        head_doc = json.loads(head_path.read_text(encoding="utf-8"))
        head = LedgerHead(seq=int(head_doc["seq"]), entry_hash=str(head_doc["entry_hash"]))
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{head_path}: not a ledger head file", hint="run: kansrijk ledger verify WS") from None
    outputs = [_read_release(path) for path in sorted(released_dir.glob("*.json")) if path.name != HEAD_FILE]
    outputs.sort(key=lambda r: (r.ledger_entry, r.name))
    return outputs, head


def _read_release(path: Path) -> ReleasedOutput:
    """One release file, read through the gate's own document schema (``InputError`` for anything else)."""
    doc = read_document(path)
    return ReleasedOutput(
        name=doc.name,
        kind=doc.kind,
        description=doc.description,
        population=doc.population,
        outcome=doc.outcome,
        method=doc.method,
        requested_by=doc.requested_by,
        ledger_entry=doc.ledger_entry,
        policy_digest=doc.policy_digest,
        epsilon_spent=doc.epsilon,
        noisy=doc.noisy,
        noise=doc.noise,
        values=doc.values,
        verdicts=tuple(v.model_dump() for v in doc.verdicts),
    )


# --- view model ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    css: str = ""  # "num", "suppressed", "noisy num"
    title: str = ""
    breaks: bool = False  # a long identifier: may break after "." and "_" (never inside a word)


@dataclass(frozen=True, slots=True)
class TableView:
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    row_header: bool = True  # first column names the row
    css: str = ""


@dataclass(frozen=True, slots=True)
class Figure:
    svg: Markup
    caption: str
    alt: str


@dataclass(frozen=True, slots=True)
class Item:
    """One released output (or a comparison over several), as shown in a section."""

    title: str
    anchor: str
    text: str = ""
    badges: tuple[tuple[str, str], ...] = ()  # (css class, label)
    tables: tuple[TableView, ...] = ()
    figures: tuple[Figure, ...] = ()
    sources: tuple[str, ...] = ()  # release names the item shows
    note: str = ""  # a second paragraph, after the tables (e.g. what a DP guarantee covers)
    layout: str = ""  # "side-by-side": small tables flow next to each other


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    title: str
    intro: str
    items: tuple[Item, ...] = ()
    empty: str = "Nothing of this kind was released."


@dataclass(frozen=True, slots=True)
class ReportResult:
    path: Path
    releases: int
    sections: tuple[str, ...]
    figures: int
    suppressed: int
    noisy: int
    ledger_head: LedgerHead
    budget: Budget


# --- formatting ------------------------------------------------------------------------------------------
def fmt_number(value: Any, *, digits: int = 3) -> str:
    if value is None:
        return _MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}".replace(",", " ")
    if isinstance(value, float):
        if not math.isfinite(value):
            return _MISSING
        if value == int(value) and abs(value) >= 1000:
            return f"{int(value):,}".replace(",", " ")
        if abs(value) >= 1000:
            return f"{value:,.0f}".replace(",", " ")
        if abs(value) < 1e-3 and value != 0:  # two significant digits, in fixed point (no "5.67e-05")
            places = min(12, 1 - math.floor(math.log10(abs(value))))
            return f"{value:.{places}f}".rstrip("0")
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def fmt_p(value: Any) -> str:
    """A p-value: three decimals, and "< 0.001" for one that would round to 0 (a p-value is never exactly 0)."""
    v = _float(value)
    if v is None:
        return _MISSING
    if v < 0.0005:
        return "< 0.001"
    return f"{v:.3f}"


def fmt_importance(value: Any) -> str:
    """An importance (or its spread) with three decimals; anything below 0.0005 in size is "< 0.001": the
    fourth decimal of an importance is noise of the folds, and a small negative permutation importance means
    "no importance" just as 0 does."""
    v = _float(value)
    if v is None:
        return _MISSING
    if abs(v) < 0.0005:
        return "< 0.001" if v != 0 else "0"
    return f"{v:.3f}"


def fmt_metric(value: Any) -> str:
    """A model metric or its spread: three decimals, "< 0.001" for a positive one that would round to 0."""
    v = _float(value)
    if v is None:
        return _MISSING
    if 0 < abs(v) < 0.0005:
        return "< 0.001" if v > 0 else "> −0.001"
    return f"{v:.3f}"


def fmt_share(value: float) -> str:
    """A share in [0, 1] with three decimals; a positive one below 0.0005 is "< 0.001", not "0" or "2e-05"."""
    if 0 < value < 0.0005:
        return "< 0.001"
    return f"{value:.3f}"


def fmt_fraction(value: Fraction | None) -> str:
    if value is None:
        return "unknown"
    if value.denominator == 1:
        return str(value.numerator)
    as_float = float(value)
    exact = f"{as_float:.6f}".rstrip("0").rstrip(".")
    return exact if Fraction(exact) == value else f"{value} (≈ {exact})"


def _anchor(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"


# Canonical variable names as a reader says them (everything else: underscores become spaces).
_VARIABLE_LABEL = {
    "woz_eur": "WOZ value",
    "bmi": "BMI",
    "sdq_total": "SDQ total",
    "sdq_prosocial": "SDQ prosocial",
    "age_years": "age",
    "buurt_code": "buurt",
    "wijk_code": "wijk",
    "woz_bin": "WOZ band (euro)",
}


def _label(name: str) -> str:
    return _VARIABLE_LABEL.get(name, name.replace("_", " "))


def _badges(r: ReleasedOutput) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    if r.noisy:
        out.append(("badge-dp", f"noisy: differential privacy, ε = {fmt_fraction(r.epsilon_spent)}"))
    else:
        out.append(("badge-exact", "exact, output-checked"))
    if r.outcome == "suppressed":
        out.append(("badge-suppressed", "some values suppressed"))
    out.append(("badge-entry", f"ledger {r.ledger_entry}"))
    return tuple(out)


def _status_cell(status: str) -> Cell:
    if status.startswith("suppressed"):
        return Cell("suppressed", "suppressed", status)
    return Cell(status)


def table_view(
    r: ReleasedOutput,
    *,
    caption: str | None = None,
    noise_note: bool = True,
    labels: Mapping[str, str] | None = None,
) -> TableView:
    """A released table as rows of cells; suppressed cells say so, noisy cells are marked with ≈.

    The status column is shown only when a row is suppressed (otherwise it only repeats "released").
    """
    columns = [str(c) for c in r.values["columns"]]
    status_at = columns.index("status") if "status" in columns else None
    show_status = status_at is not None and any(
        str(raw[status_at]).startswith("suppressed") for raw in r.values["rows"] if len(raw) > status_at
    )
    stats = _stat_columns(r)
    rows = []
    for raw in r.values["rows"]:
        status = str(raw[status_at]) if status_at is not None else "released"
        suppressed = status.startswith("suppressed")
        cells = []
        for column, value in zip(columns, raw, strict=False):
            if column == "status":
                if show_status:
                    cells.append(_status_cell(status))
            elif column in stats:
                if suppressed or value is None:
                    cells.append(
                        Cell(
                            "suppressed" if suppressed else _MISSING,
                            "suppressed" if suppressed else "num",
                            status if suppressed else "",
                        )
                    )
                elif r.noisy:
                    cells.append(Cell("≈ " + fmt_number(value), "noisy num", "differentially private (noisy) value"))
                else:
                    cells.append(Cell(fmt_number(value), "num"))
            else:
                cells.append(Cell(_category(value)))
        rows.append(tuple(cells))
    header = tuple((labels or {}).get(c, _column_label(c)) for c in columns if c != "status" or show_status)
    text = caption or (r.description or _label(r.name))
    if r.noisy and noise_note:
        text = text.rstrip(". ") + "; values marked ≈ carry differential-privacy noise"
    return TableView(caption=text, header=header, rows=tuple(rows))


def _stat_columns(r: ReleasedOutput) -> set[str]:
    stats = {"n", "mean", "sum"} | {c for c in r.values.get("columns", []) if re.fullmatch(r"q[0-9.]+", str(c))}
    return {str(c) for c in r.values.get("columns", []) if str(c) in stats}


def _category(value: Any) -> str:
    if value is None:
        return "(missing)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return fmt_number(int(value))
    return str(value)


def _column_label(column: str) -> str:
    return {"n": "persons", "bin": "bin", "status": "status"}.get(column, _label(column))


def kv_table(caption: str, pairs: Iterable[tuple[str, Any]]) -> TableView:
    rows = tuple((Cell(str(k)), Cell(fmt_number(v), "num")) for k, v in pairs)
    return TableView(caption=caption, header=("measure", "value"), rows=rows)


# --- plots: Vega-Lite, rendered to SVG at build time -------------------------------------------------------
# The browser draws the SVG's text with the font vl-convert measured it with (DejaVu Sans, a Debian default) or
# with Verdana, whose metrics are nearly the same, so labels neither overlap nor run out of the plot.
_FONT = "DejaVu Sans, Verdana, sans-serif"


def _svg(spec: dict[str, Any]) -> Markup:
    import vl_convert

    spec = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "config": {
            "font": _FONT,
            "view": {"stroke": None},
            "axis": {
                "labelFontSize": 11,
                "titleFontSize": 12,
                "grid": True,
                "gridColor": "#e6e6e6",
                "labelLimit": 220,
                "labelOverlap": True,
            },
            "axisX": {"tickCount": 5},
            "legend": {"labelFontSize": 11, "titleFontSize": 12},
            "header": {"labelFontSize": 11, "labelLimit": 240},
        },
        "background": "white",
        "padding": {"left": 16, "right": 16, "top": 8, "bottom": 8},
        **spec,
    }
    # No base URL is allowed: the spec carries its data inline and rendering must not touch the network.
    svg = vl_convert.vegalite_to_svg(spec, allowed_base_urls=[])
    # The SVG is generated here from released numbers; vl-convert escapes the text it contains.
    return Markup(svg.replace("<svg ", '<svg role="img" focusable="false" ', 1))  # noqa: S704


def bar_figure(rows: Sequence[Mapping[str, Any]], *, x: str, y: str, title: str, x_title: str, alt: str) -> Figure:
    """Horizontal bars, largest first."""
    spec = {
        "width": 520,
        "data": {"values": list(rows)},
        "mark": {"type": "bar", "color": "#2b6cb0"},
        "encoding": {
            "y": {"field": y, "type": "nominal", "sort": "-x", "title": None},
            "x": {"field": x, "type": "quantitative", "title": x_title},
        },
    }
    return Figure(svg=_svg(spec), caption=title, alt=alt)


def forest_figure(rows: Sequence[Mapping[str, Any]], *, title: str, alt: str) -> Figure:
    """Per outcome (rows) and metric (columns): the difference as a dot, its interval as a line, and 0."""
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "rule", "color": "#a0aec0", "strokeDash": [4, 3]},
            "encoding": {"x": {"datum": 0, "type": "quantitative"}},
        },
        {
            "mark": {"type": "rule", "strokeWidth": 2, "color": "#2b6cb0"},
            "encoding": {
                "y": {"field": "outcome", "type": "nominal", "title": None},
                "x": {
                    "field": "low",
                    "type": "quantitative",
                    "title": "difference (all − factor model)",
                    "axis": {"tickCount": 4},
                },
                "x2": {"field": "high"},
            },
        },
        {
            "mark": {"type": "point", "filled": True, "size": 60, "color": "#1a365d"},
            "encoding": {
                "y": {"field": "outcome", "type": "nominal"},
                "x": {"field": "value", "type": "quantitative"},
                "tooltip": [
                    {"field": "outcome"},
                    {"field": "metric"},
                    {"field": "value", "format": ".4f"},
                    {"field": "low", "format": ".4f"},
                    {"field": "high", "format": ".4f"},
                ],
            },
        },
    ]
    spec = {
        "data": {"values": list(rows)},
        "facet": {
            "column": {
                "field": "metric",
                "type": "nominal",
                "title": None,
                "sort": [_METRIC_LABEL[m] for m in _METRIC_ORDER],
                "header": {"labelFontSize": 11, "labelLimit": 200},
            }
        },
        "spec": {"width": 190, "layer": layers},
        "resolve": {"scale": {"x": "independent"}},
    }
    return Figure(svg=_svg(spec), caption=title, alt=alt)


def importance_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    alt: str,
    x_title: str = "importance",
    color: str = "#2b6cb0",
) -> Figure:
    """Horizontal bars (mean importance), with whiskers (± one standard deviation over folds) for rows that give
    ``low`` and ``high``."""
    y = {"field": "variable", "type": "nominal", "sort": None, "title": None}
    layers: list[dict[str, Any]] = [
        {
            "mark": {"type": "bar", "color": color},
            "encoding": {
                "y": y,
                "x": {"field": "importance", "type": "quantitative", "title": x_title},
                "tooltip": [{"field": "variable"}, {"field": "importance", "format": ".4f"}],
            },
        }
    ]
    if any("low" in row for row in rows):
        layers.append(
            {
                "mark": {"type": "rule", "color": "#1a202c"},
                "encoding": {"y": y, "x": {"field": "low", "type": "quantitative"}, "x2": {"field": "high"}},
            }
        )
    spec = {"width": 460, "data": {"values": list(rows)}, "layer": layers}
    return Figure(svg=_svg(spec), caption=title, alt=alt)


def privacy_cost_figure(rows: Sequence[Mapping[str, Any]], *, title: str, alt: str) -> Figure:
    """Per model pair (rows): the non-private tree's ROC AUC and the DP model's, as two dots joined by a line."""
    y = {"field": "model", "type": "nominal", "title": None, "sort": None}
    spec = {
        "width": 420,
        "data": {"values": list(rows)},
        "layer": [
            {
                "mark": {"type": "rule", "color": "#a0aec0", "strokeWidth": 2},
                "encoding": {
                    "y": y,
                    "x": {
                        "field": "tree",
                        "type": "quantitative",
                        "title": "ROC AUC",
                        "scale": {"zero": False, "nice": True, "padding": 12},
                    },
                    "x2": {"field": "dp"},
                },
            },
            {
                "transform": [{"fold": ["tree", "dp"], "as": ["which", "auc"]}],
                "mark": {"type": "point", "filled": True, "size": 80},
                "encoding": {
                    "y": y,
                    "x": {"field": "auc", "type": "quantitative"},
                    "color": {
                        "field": "which",
                        "type": "nominal",
                        "title": None,
                        "scale": {"domain": ["tree", "dp"], "range": ["#2b6cb0", "#805ad5"]},
                        "legend": {
                            "orient": "bottom",
                            "labelExpr": "datum.label == 'tree' ? 'non-private tree (exact)' : 'DP model (noisy)'",
                        },
                    },
                    "tooltip": [{"field": "model"}, {"field": "which"}, {"field": "auc", "format": ".3f"}],
                },
            },
        ],
    }
    return Figure(svg=_svg(spec), caption=title, alt=alt)


def line_figure(
    rows: Sequence[Mapping[str, Any]],
    *,
    x: str,
    y: str,
    title: str,
    x_title: str,
    y_title: str,
    alt: str,
    x_type: str = "ordinal",
) -> Figure:
    spec = {
        "width": 520,
        "height": 260,
        "data": {"values": list(rows)},
        "mark": {"type": "line", "point": {"filled": True, "size": 60}, "color": "#2b6cb0"},
        "encoding": {
            "x": {
                "field": x,
                "type": x_type,
                "title": x_title,
                "sort": None,
                "axis": {"labelAngle": -35, "labelOverlap": False},
            },
            "y": {"field": y, "type": "quantitative", "title": y_title, "scale": {"zero": False}},
            "tooltip": [{"field": x}, {"field": y, "format": ".3f"}],
        },
    }
    return Figure(svg=_svg(spec), caption=title, alt=alt)


# --- sections --------------------------------------------------------------------------------------------
# Release names follow the analysis' convention (coordinator/analysis/run.py): ``<scope>.<outcome>.<part>``
# with scope a reference year or ``pooled``; ``<scope>.<outcome>.<feature set>.metrics | .importance.<method> |
# .tree``; ``<scope>.association.<test> | .linear_fit | .rate_by_bin``; ``years.<a>-<b>.<outcome>.<fs>``.
# The linkage report's releases are requested by ``linkage-report`` or named ``linkage...``. Anything the
# report does not recognise is still shown, under "Other released outputs".
_STAMP = re.compile(r"\s*\[plan sha256:[0-9a-f]+; factor model sha256:[0-9a-f]+\]\s*$")
_METRIC_ORDER = ("roc_auc", "pr_auc", "recall_at_k", "brier")
_METRIC_LABEL = {
    "roc_auc": "ROC AUC (ranking)",
    "pr_auc": "PR AUC (precision)",
    "recall_at_k": "recall in top k% (finding)",
    "brier": "Brier (lower is better)",
}


def _float(value: Any) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def plain_description(text: str) -> str:
    """The description without the trailing plan/factor-model digest stamp (shown in the privacy section)."""
    return _STAMP.sub("", text)


@dataclass(frozen=True, slots=True)
class Name:
    scope: str
    parts: tuple[str, ...]

    @classmethod
    def of(cls, name: str) -> Name:
        head, *rest = name.split(".")
        return cls(head, tuple(rest))

    @property
    def scope_label(self) -> str:
        if self.scope.isdigit():
            return f"reference year {self.scope}"
        return {"pooled": "all reference years pooled"}.get(self.scope, self.scope)


def _part(r: ReleasedOutput, index: int) -> str:
    parts = Name.of(r.name).parts
    return parts[index] if len(parts) > index else ""


def _is_linkage(r: ReleasedOutput) -> bool:
    return r.requested_by == "linkage-report" or r.name.startswith("linkage")


def _is_positives(r: ReleasedOutput) -> bool:
    return len(Name.of(r.name).parts) == 2 and _part(r, 1) == "positives" and r.is_table


def _is_refused_outcome(r: ReleasedOutput) -> bool:
    return _is_positives(r) and "not modelled" in r.description


def _is_association(r: ReleasedOutput) -> bool:
    return _part(r, 0) == "association"


def _is_model_metrics(r: ReleasedOutput) -> bool:
    return r.kind == "model_metrics" and _part(r, 2) == "metrics"


def _is_compare(r: ReleasedOutput) -> bool:
    return r.kind == "model_metrics" and _part(r, 1) == "compare"


def _is_importance(r: ReleasedOutput) -> bool:
    return r.kind == "feature_importances" and _part(r, 2) == "importance"


def _is_dp_model(r: ReleasedOutput) -> bool:
    return r.kind == "dp_model"


def _is_factors(r: ReleasedOutput) -> bool:
    return r.kind == "feature_importances" and _part(r, 1) == "factors"


def _table_rows(r: ReleasedOutput) -> list[dict[str, Any]]:
    columns = [str(c) for c in r.values["columns"]]
    return [dict(zip(columns, row, strict=False)) for row in r.values["rows"]]


def _is_suppressed(row: Mapping[str, Any]) -> bool:
    return str(row.get("status", "")).startswith("suppressed")


def _value_cell(value: Any, *, noisy: bool, suppressed: bool = False, why: str = "") -> Cell:
    if suppressed:
        return Cell("suppressed", "suppressed", why)
    if value is None:
        return Cell(_MISSING, "num")
    if noisy:
        return Cell("≈ " + fmt_number(value), "noisy num", "differentially private (noisy) value")
    return Cell(fmt_number(value), "num")


def generic_item(r: ReleasedOutput, *, title: str | None = None) -> Item:
    """Any released output shown as it is: a table for tables, measures for model outputs."""
    tables: list[TableView] = []
    v = r.values
    text = plain_description(r.description)
    if r.is_table:
        tables.append(table_view(r, caption=_label(r.name)))
    elif r.kind in ("model_metrics", "feature_importances"):
        key = "metrics" if r.kind == "model_metrics" else "importances"
        tables.append(kv_table(f"{_label(key)} ({fmt_number(v.get('n'))} persons)", list((v.get(key) or {}).items())))
    elif r.kind == "test_result":
        tables.append(
            kv_table(
                str(v.get("test", "test")),
                [
                    ("statistic", v.get("statistic")),
                    ("residual degrees of freedom", v.get("dof")),
                    ("p-value", fmt_p(v.get("p_value"))),
                    ("persons", v.get("n")),
                ],
            )
        )
    elif r.kind == "regression":
        tables.append(regression_table(r))
    elif r.kind == "tree_structure":
        nodes = v.get("nodes") or []
        leaves = [n for n in nodes if n.get("feature") is None]
        depth = max((int(n.get("depth") or 0) for n in nodes), default=0)
        used = sorted({str(n["feature"]) for n in nodes if n.get("feature")})
        tables.append(
            kv_table(
                "Tree size",
                [
                    ("nodes", len(nodes)),
                    ("leaves", len(leaves)),
                    ("depth", depth),
                    ("min_samples_leaf (training rule)", v.get("min_samples_leaf")),
                ],
            )
        )
        text = (text + " " if text else "") + f"Split variables: {', '.join(used) or 'none'}."
        if v.get("class_counts_withheld"):
            text += " The gate withheld the leaves' class counts (tree rule)."
    else:
        tables.append(kv_table(_label(r.name), [(k, json.dumps(x)) for k, x in v.items()]))
    return Item(
        title=title or _label(r.name),
        anchor=_anchor(r.name),
        text=text,
        badges=_badges(r),
        tables=tuple(tables),
        sources=(r.name,),
    )


def regression_table(r: ReleasedOutput) -> TableView:
    v = r.values
    se = v.get("std_errors") or {}
    rows = tuple(
        (Cell(_label(str(k))), Cell(fmt_number(c), "num"), Cell(fmt_number(se.get(k)), "num"))
        for k, c in (v.get("coefficients") or {}).items()
    )
    return TableView(
        f"{v.get('model') or 'regression'}: coefficients (n = {fmt_number(v.get('n'))}, residual dof "
        f"= {fmt_number(v.get('dof'))})",
        ("term", "coefficient", "standard error"),
        rows,
    )


def linkage_section(linkage: Sequence[ReleasedOutput]) -> Section:
    """The linkage report's small tables, one item per reference year, side by side."""
    by_year: dict[str, list[ReleasedOutput]] = {}
    for r in linkage:
        found = re.search(r"(?:^|_)(\d{4})(?:_|$)", r.name)
        by_year.setdefault(found.group(1) if found else "", []).append(r)
    items = []
    for year, group in sorted(by_year.items()):
        tables = tuple(
            table_view(
                r,
                caption=plain_description(r.description).rstrip(".") or _label(r.name),
                noise_note=False,
                labels={"partners": "partners holding the person"},
            )
            for r in group
            if r.is_table
        )
        others = [generic_item(r) for r in group if not r.is_table]
        noisy = any(r.noisy for r in group)
        items.append(
            Item(
                title=f"Linkage, reference year {year}" if year else "Linkage",
                anchor=f"linkage-{year or 'all'}",
                text="Values marked ≈ carry differential-privacy noise." if noisy else "",
                badges=_group_badges(group),
                tables=(*tables, *(t for item in others for t in item.tables)),
                sources=tuple(r.name for r in group),
                layout="side-by-side",
            )
        )
    return Section(
        "linkage",
        "Linkage overview",
        "How the four partners' records came together on the coordinator pseudonym: persons per partner, "
        "overlap, and conflicts in the attributes they share (birth year, sex). Counts only.",
        tuple(items),
        empty="The linkage report was not released through the gate in this workspace.",
    )


def tree_section(trees: Sequence[ReleasedOutput]) -> Section:
    """The released (non-private) tree structures: size, pruning and split variables, one row per tree."""
    intro = (
        "The decision trees refitted on the whole population and released as structures, after pruning every "
        "leaf that breaks the release policy's leaf rules (minimum persons and class counts per leaf). Split "
        "variables are canonical variables (one-hot categories together). The released files hold every node."
    )
    items = []
    for scope, group in _by_scope(trees):
        rows = []
        withheld = False
        for r in group:
            v = r.values
            nodes = v.get("nodes") or []
            leaves = sum(1 for n in nodes if n.get("feature") is None)
            depth = max((int(n.get("depth") or 0) for n in nodes), default=0)
            used = sorted({str(n["feature"]).split("=", 1)[0] for n in nodes if n.get("feature")})
            pruned = re.search(r"pruned from (\d+) to (\d+) leaves", r.description)
            withheld = withheld or bool(v.get("class_counts_withheld"))
            rows.append(
                (
                    Cell(_label(_part(r, 0))),
                    Cell(FEATURE_SETS.get(_part(r, 1), _label(_part(r, 1)))),
                    Cell(fmt_number(leaves), "num"),
                    Cell(fmt_number(depth), "num"),
                    Cell(f"{pruned.group(1)} → {pruned.group(2)}" if pruned else _MISSING, "num"),
                    Cell(fmt_number(v.get("min_samples_leaf")), "num"),
                    Cell(", ".join(_label(x) for x in used) or "none"),
                )
            )
        table = TableView(
            "Released trees: leaves, depth, leaves before → after pruning, minimum persons per leaf at training, "
            "split variables",
            ("outcome", "feature set", "leaves", "depth", "pruned", "min leaf", "split variables"),
            tuple(rows),
        )
        items.append(
            Item(
                title=f"Released trees, {Name(scope, ()).scope_label}",
                anchor=f"trees-{scope}",
                text="The gate withheld some trees' leaf class counts (tree rule)." if withheld else "",
                tables=(table,),
                badges=_group_badges(group),
                sources=tuple(r.name for r in group),
            )
        )
    return Section("trees", "Released decision trees", intro, tuple(items), empty="No tree structure was released.")


def base_rate_section(positives: Sequence[ReleasedOutput]) -> Section:
    intro = (
        "How common each outcome is in the population it is defined on (persons with a known value). Rare "
        "outcomes are hard to predict; an outcome with fewer positives than the analysis plan's minimum is "
        "not modelled (see Refused outcomes). The share is computed from the released counts."
    )
    items = []
    for scope, group in _by_scope(positives):
        rows, points = [], []
        for r in group:
            outcome = _part(r, 0)
            by_value = {str(row.get(outcome)).lower(): row for row in _table_rows(r)}
            pos, neg = by_value.get("true", {}), by_value.get("false", {})
            n_pos, n_neg = pos.get("n"), neg.get("n")
            sup_pos, sup_neg = _is_suppressed(pos), _is_suppressed(neg)
            share = None
            if not (sup_pos or sup_neg) and isinstance(n_pos, int | float) and isinstance(n_neg, int | float):
                share = n_pos / (n_pos + n_neg) if n_pos + n_neg > 0 else None
            modelled = "no (too few positives)" if _is_refused_outcome(r) else "yes"
            rows.append(
                (
                    Cell(_label(outcome)),
                    _value_cell(
                        None if n_pos is None or n_neg is None else n_pos + n_neg,
                        noisy=r.noisy,
                        suppressed=sup_pos or sup_neg,
                        why="a count in this row was suppressed",
                    ),
                    _value_cell(n_pos, noisy=r.noisy, suppressed=sup_pos, why=str(pos.get("status", ""))),
                    _value_cell(
                        None if share is None else round(100 * share, 2),
                        noisy=r.noisy,
                        suppressed=share is None and (sup_pos or sup_neg),
                    ),
                    Cell(modelled),
                )
            )
            if share is not None:
                points.append({"outcome": _label(outcome), "percent": round(100 * share, 3)})
        noisy = any(r.noisy for r in group)
        caption = "Persons, positives and share (%) per outcome" + (
            "; values marked ≈ carry differential-privacy noise" if noisy else ""
        )
        table = TableView(caption, ("outcome", "persons", "positives", "share (%)", "modelled"), tuple(rows))
        figures = (
            (
                bar_figure(
                    points,
                    x="percent",
                    y="outcome",
                    x_title="share with the outcome (%)",
                    title="Share of persons with each outcome",
                    alt="Bar chart of the share of persons with each outcome; the table above gives the same numbers.",
                ),
            )
            if points
            else ()
        )
        items.append(
            Item(
                title=f"Base rates, {Name(scope, ()).scope_label}",
                anchor=f"base-rates-{scope}",
                badges=_group_badges(group),
                tables=(table,),
                figures=figures,
                sources=tuple(r.name for r in group),
            )
        )
    return Section("base-rates", "Outcome base rates", intro, tuple(items))


def refused_section(refused: Sequence[ReleasedOutput]) -> Section:
    intro = (
        "Outcomes the analysis did not model, with the reason. As in the original analysis, an outcome "
        "with too few positives (early school leaving there) cannot be modelled reliably; only its gated "
        "positive count is released."
    )
    rows = []
    for r in refused:
        outcome = _part(r, 0)
        pos = next((row for row in _table_rows(r) if str(row.get(outcome)).lower() == "true"), {})
        reason = plain_description(r.description)
        reason = reason.split("; ", 1)[1] if "; " in reason else reason
        rows.append(
            (
                Cell(_label(outcome)),
                Cell(Name.of(r.name).scope_label),
                _value_cell(
                    pos.get("n"), noisy=r.noisy, suppressed=_is_suppressed(pos), why=str(pos.get("status", ""))
                ),
                Cell(reason.rstrip(".")),
            )
        )
    items = ()
    if rows:
        table = TableView("Outcomes not modelled", ("outcome", "scope", "positives", "reason"), tuple(rows))
        items = (
            Item(
                title="Not modelled",
                anchor="refused-outcomes",
                tables=(table,),
                badges=_group_badges(refused),
                sources=tuple(r.name for r in refused),
            ),
        )
    return Section("refused", "Refused outcomes", intro, items, empty="Every outcome of the plan was modelled.")


def model_section(
    metrics: Sequence[ReleasedOutput],
    compares: Sequence[ReleasedOutput],
    dp_models: Sequence[ReleasedOutput] = (),
) -> Section:
    intro = (
        "Each outcome was modelled with decision trees twice: with all available variables and with only "
        "the indicators of the literature factor model. Metrics are out-of-fold (cross-validated). The "
        "difference is all variables minus factor model, with its paired-bootstrap interval; an interval "
        "that excludes 0 means the feature sets really differ. Higher is better, except for the Brier score."
    )
    items = []
    for scope, group in _by_scope(compares):
        rows, points = [], []
        for r in group:
            outcome = _part(r, 0)
            m = r.values.get("metrics") or {}
            for metric in _METRIC_ORDER:
                if f"{metric}.delta" not in m:
                    continue
                low, high = _float(m.get(f"{metric}.ci_low")), _float(m.get(f"{metric}.ci_high"))
                rows.append(
                    (
                        Cell(_label(outcome)),
                        Cell(_METRIC_LABEL[metric]),
                        Cell(fmt_number(m.get(f"{metric}.all")), "num"),
                        Cell(fmt_number(m.get(f"{metric}.factor_model")), "num"),
                        Cell(fmt_number(m.get(f"{metric}.delta")), "num"),
                        Cell(f"{fmt_number(low)} to {fmt_number(high)}", "num"),
                        Cell(fmt_p(m.get(f"{metric}.p")), "num"),
                    )
                )
                delta = _float(m.get(f"{metric}.delta"))
                if delta is not None and low is not None and high is not None:
                    points.append(
                        {
                            "outcome": _label(outcome),
                            "metric": _METRIC_LABEL[metric],
                            "value": delta,
                            "low": low,
                            "high": high,
                        }
                    )
        table = TableView(
            "All variables vs factor model per outcome and metric",
            ("outcome", "metric", "all variables", "factor model", "difference", "interval", "p-value"),
            tuple(rows),
        )
        figures = (
            (
                forest_figure(
                    points,
                    title="Difference all variables − factor model, with its interval",
                    alt="For each outcome and metric, a dot at the difference between the all-"
                    "variables and factor-model trees with a line for its interval; a vertical "
                    "line marks no difference. The table gives the numbers.",
                ),
            )
            if points
            else ()
        )
        items.append(
            Item(
                title=f"All variables vs factor model, {Name(scope, ()).scope_label}",
                anchor=f"compare-{scope}",
                tables=(table,),
                figures=figures,
                badges=_group_badges(group),
                sources=tuple(r.name for r in group),
            )
        )
    for scope, group in _by_scope(metrics):
        rows = []
        for r in group:
            outcome, fs = _part(r, 0), _part(r, 1)
            m = r.values.get("metrics") or {}
            cells = [
                Cell(_label(outcome)),
                Cell(FEATURE_SETS.get(fs, _label(fs))),
                Cell(fmt_number(r.values.get("n")), "num"),
                Cell(fmt_number(r.values.get("n_positive")), "num"),
            ]
            for metric in _METRIC_ORDER:
                value, sd = m.get(metric), m.get(f"{metric}.fold_sd")
                text = fmt_metric(value) + (f" ± {fmt_metric(sd)}" if _float(sd) is not None else "")
                cells.append(Cell(text, "num"))
            rows.append(tuple(cells))
        table = TableView(
            "Out-of-fold metrics per model (± standard deviation over folds)",
            ("outcome", "feature set", "persons", "positives", *(_METRIC_LABEL[x] for x in _METRIC_ORDER)),
            tuple(rows),
            css="compact",
        )
        items.append(
            Item(
                title=f"Every model, {Name(scope, ()).scope_label}",
                anchor=f"metrics-{scope}",
                tables=(table,),
                badges=_group_badges(group),
                sources=tuple(r.name for r in group),
            )
        )
    trees = {r.name: r for r in metrics}
    for scope, group in _by_scope(dp_models):
        items.append(dp_comparison_item(scope, group, trees))
    return Section("models", "Model comparison", intro, tuple(items))


# --- differentially private models ----------------------------------------------------------------------
DP_GUARANTEE = (
    "The guarantee: whether any one person is in the data or not changes the probability of anything in this "
    "release — the splits, the leaf counts, the importances and the metrics — by at most a factor e^ε; the "
    "feature list, bin edges and settings are public, and what was released about the same persons under output "
    "checking is not covered."
)
_DP_MODEL_LABEL = {"dp_tree": "DP tree", "dp_boosted": "DP boosted trees"}


def _dp_metric(r: ReleasedOutput, key: str) -> float | None:
    return _float((r.values.get("metrics") or {}).get(key))


def _dp_eval_epsilon(r: ReleasedOutput) -> Fraction | None:
    for step in (r.values.get("epsilon") or {}).get("steps") or ():
        if str(step.get("step", "")).startswith("evaluation"):
            try:
                return Fraction(str(step.get("epsilon")))
            except (ValueError, ZeroDivisionError):
                return None
    return None


def _dp_title(r: ReleasedOutput) -> str:
    outcome, fs = _part(r, 0), _part(r, 1)
    model = _DP_MODEL_LABEL.get(str(r.values.get("model")), _label(str(r.values.get("model") or "DP model")))
    return f"{_label(outcome)} — {FEATURE_SETS.get(fs, _label(fs))}, {model}, {Name.of(r.name).scope_label}"


def dp_model_item(r: ReleasedOutput) -> Item:
    """One ``dp_model`` release: noisy metrics (≈, with the evaluation's noise), importances, size, ε per step."""
    v = r.values
    noisy = "noisy num"
    why = "differentially private (noisy) value"
    eval_eps = _dp_eval_epsilon(r)
    histogram = v.get("score_histogram") or {}
    levels = len(histogram.get("score") or ())
    noise_text = ""
    if eval_eps:
        noise_text = (
            f"ε {fmt_fraction(eval_eps)} of {fmt_fraction(r.epsilon_spent)}: discrete Laplace noise (scale 1/ε ≈ "
            f"{fmt_number(float(1 / eval_eps))} persons) on each count of a {levels}-level score histogram"
        )
    model = str(v.get("model") or "")
    n_trees = len(v.get("trees") or [])
    shape = (
        f"one tree of depth {v.get('max_depth')}"
        if model == "dp_tree"
        else f"{n_trees} boosted trees of depth {v.get('max_depth')}"
    )
    folds_n = (v.get("evaluation") or {}).get("folds")
    text = (
        f"{_DP_MODEL_LABEL.get(model, _label(model))} ({shape}) trained inside the release gate at ε = "
        f"{fmt_fraction(r.epsilon_spent)} on the persons of {fmt_number((folds_n or 1) - 1)} of {fmt_number(folds_n)} "
        f"folds; its metrics come from the persons of the remaining fold, through a noisy score histogram"
        + (f" ({noise_text})" if noise_text else "")
        + "."
    )
    metrics = TableView(
        f"Held-out metrics (persons of one of {fmt_number(folds_n)} folds, never used for training); values marked ≈ "
        "carry differential-privacy noise",
        ("ROC AUC (ranking)", "PR AUC (precision)", "held-out persons", "of whom with the outcome", "evaluation ε"),
        (
            (
                _value_cell(_dp_metric(r, "roc_auc"), noisy=True),
                _value_cell(_dp_metric(r, "pr_auc"), noisy=True),
                _value_cell(_int_or_none(_dp_metric(r, "n_holdout")), noisy=True),
                _value_cell(_int_or_none(_dp_metric(r, "n_positive_holdout")), noisy=True),
                Cell(fmt_fraction(eval_eps), "num", noise_text),
            ),
        ),
        row_header=False,
    )
    shares = sorted(
        ((k, x) for k, val in (v.get("importances") or {}).items() if (x := _float(val)) is not None),
        key=lambda kv: -kv[1],
    )
    used = [(k, x) for k, x in shares if x > 0]
    unused = sorted(k for k, x in shares if x <= 0)
    tables = [metrics]
    figures: list[Figure] = []
    if used:
        top = used[:10]
        figures.append(
            importance_figure(
                [{"variable": _label(k), "importance": x} for k, x in top],
                title=f"Top {len(top)} variables of the DP model (noisy share of the impurity decrease)",
                alt=f"Bar chart of the {len(top)} variables with the largest share of the DP model's noisy impurity "
                "decrease; the table below lists every variable.",
                x_title="share of the impurity decrease (noisy)",
                color="#805ad5",
            )
        )
        rows = [(Cell(_label(k)), Cell("≈ " + fmt_share(x), noisy, why)) for k, x in used]
        if unused:
            rows.append((Cell(", ".join(_label(k) for k in unused)), Cell("0", "num", "no share of the decrease")))
        tables.append(
            TableView(
                "Importance per variable: noisy share of the impurity decrease, from the released counts",
                ("variable", "share"),
                tuple(rows),
                css="narrow",
            )
        )
    trees = v.get("trees") or []
    nodes = [n for t in trees for n in (t.get("nodes") or [])]
    leaves = sum(1 for n in nodes if n.get("feature") is None)
    split_vars = sorted({str(n["feature"]) for n in nodes if n.get("feature")})
    tables.append(
        TableView(
            "Model size, fixed in advance (every DP tree is grown to its full depth)",
            ("trees", "depth", "splits", "leaves", "split variables"),
            (
                (
                    Cell(fmt_number(len(trees)), "num"),
                    Cell(fmt_number(v.get("max_depth")), "num"),
                    Cell(fmt_number(len(nodes) - leaves), "num"),
                    Cell(fmt_number(leaves), "num"),
                    Cell(", ".join(_label(x) for x in split_vars) or "none"),
                ),
            ),
            row_header=False,
        )
    )
    steps = (v.get("epsilon") or {}).get("steps") or []
    if steps:
        tables.append(
            TableView(
                f"How ε = {fmt_fraction(r.epsilon_spent)} was spent (OpenDP measurements; the parts add up exactly)",
                ("step", "ε", "mechanism", "composition"),
                tuple(
                    (
                        Cell(str(st.get("step", ""))),
                        Cell(fmt_fraction(Fraction(str(st.get("epsilon", "0")))), "num"),
                        Cell(str(st.get("mechanism", ""))),
                        Cell(str(st.get("composition", ""))),
                    )
                    for st in steps
                ),
            )
        )
    return Item(
        title=_dp_title(r),
        anchor=_anchor(r.name),
        text=text,
        badges=_badges(r),
        tables=tuple(tables),
        figures=tuple(figures),
        sources=(r.name,),
        note=DP_GUARANTEE,
    )


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else round(value)


def dp_model_section(dp_models: Sequence[ReleasedOutput]) -> Section:
    intro = (
        "Models trained inside the release gate with differential privacy (OpenDP; privacy unit: one person), "
        "for comparison with the non-private trees above (see Model comparison for the two side by side). "
        "Every number here is noisy (≈): the split choices, the leaf counts, the importances recomputed from "
        "them, and the ROC and PR AUC, which come from a noisy histogram of scores of persons held out from "
        "training."
    )
    return Section(
        "dp-models",
        "Differentially private models",
        intro,
        tuple(dp_model_item(r) for r in dp_models),
        empty="The analysis plan asked for no differentially private model.",
    )


def dp_comparison_item(scope: str, dp_group: Sequence[ReleasedOutput], trees: Mapping[str, ReleasedOutput]) -> Item:
    """The DP model's AUC next to the non-private tree's, per outcome and feature set of one scope."""
    rows, points = [], []
    matched: list[ReleasedOutput] = []
    for r in dp_group:
        outcome, fs = _part(r, 0), _part(r, 1)
        tree = trees.get(f"{scope}.{outcome}.{fs}.metrics")
        matched += [tree] if tree is not None else []
        tm = (tree.values.get("metrics") or {}) if tree is not None else {}
        t_auc, d_auc = _float(tm.get("roc_auc")), _dp_metric(r, "roc_auc")
        diff = None if t_auc is None or d_auc is None else d_auc - t_auc
        rows.append(
            (
                Cell(_label(outcome)),
                Cell(FEATURE_SETS.get(fs, _label(fs))),
                Cell(fmt_fraction(r.epsilon_spent), "num"),
                Cell(fmt_number(t_auc), "num"),
                _value_cell(d_auc, noisy=True),
                _value_cell(diff, noisy=True),
                Cell(fmt_number(_float(tm.get("pr_auc"))), "num"),
                _value_cell(_dp_metric(r, "pr_auc"), noisy=True),
            )
        )
        if t_auc is not None and d_auc is not None:
            model = _DP_MODEL_LABEL.get(str(r.values.get("model")), "DP model")
            label = f"{_label(outcome)}, {FEATURE_SETS.get(fs, fs)}"
            points.append({"model": label, "tree": t_auc, "dp": d_auc, "dp model": f"{model}, ε {r.epsilon_spent}"})
    table = TableView(
        "ROC AUC and PR AUC of the non-private tree (exact, out-of-fold over all persons) and of the DP model "
        "(≈ noisy, on one held-out fold); the difference is DP minus tree: what privacy cost",
        (
            "outcome",
            "feature set",
            "ε",
            "ROC AUC tree",
            "ROC AUC DP",
            "difference",
            "PR AUC tree",
            "PR AUC DP",
        ),
        tuple(rows),
    )
    figures = ()
    if points:
        figures = (
            privacy_cost_figure(
                points,
                title="ROC AUC of the non-private tree and of the DP model; the line between them is what privacy cost",
                alt="For each outcome and feature set with a DP model, a blue dot at the non-private tree's ROC AUC "
                "and a purple dot at the DP model's noisy ROC AUC, joined by a line; the table gives the numbers.",
            ),
        )
    return Item(
        title=f"Differentially private vs non-private, {Name(scope, ()).scope_label}",
        anchor=f"dp-vs-tree-{scope}",
        text="The DP model's held-out fold is small and its metrics carry noise, so differences of a few "
        "hundredths can be noise alone.",
        tables=(table,),
        figures=figures,
        badges=_group_badges([*dp_group, *matched]),
        sources=tuple(r.name for r in dp_group),
    )


def importance_section(importances: Sequence[ReleasedOutput]) -> Section:
    intro = (
        "How much each variable contributed to a model, per canonical variable (one-hot columns together). "
        "Permutation importance is the drop in ROC AUC on the held-out fold when the variable is shuffled; "
        "impurity importance is the tree's own split gain. Bars show the mean over folds, whiskers one "
        "standard deviation. A factor without an indicator in the data can never appear here."
    )
    by_model: dict[tuple[str, str, str], dict[str, ReleasedOutput]] = {}
    for r in importances:
        by_model.setdefault((Name.of(r.name).scope, _part(r, 0), _part(r, 1)), {})[_part(r, 3) or "importance"] = r
    items = []
    for (scope, outcome, fs), methods in sorted(
        by_model.items(), key=lambda kv: min(r.ledger_entry for r in kv[1].values())
    ):
        main = methods.get("permutation") or next(iter(methods.values()))
        values = _importances(main)
        top = [t for t in values if t[1] >= 0.0005][:10]
        figures = ()
        if top:
            figures = (
                importance_figure(
                    [{"variable": _label(k), "importance": v, "low": v - sd, "high": v + sd} for k, v, sd in top],
                    title=f"Top {len(top)} variables ({'permutation' if 'permutation' in methods else 'importance'})",
                    alt=f"Bar chart of the {len(top)} most important variables for "
                    f"{_label(outcome)} with the {FEATURE_SETS.get(fs, fs)} feature set; "
                    "the table lists every variable.",
                ),
            )
        columns = sorted(methods)
        table_values = {m: {k: (v, sd) for k, v, sd in _importances(methods[m])} for m in columns}
        variables = [k for k, _, _ in values] + sorted(
            {k for m in columns for k in table_values[m]} - {k for k, _, _ in values}
        )
        small = [v for v in variables if all(abs(table_values[m].get(v, (0.0, 0.0))[0]) < 0.0005 for m in columns)]
        rows = [
            (
                Cell(_label(var)),
                *(Cell(_pm(*table_values[m][var]) if var in table_values[m] else _MISSING, "num") for m in columns),
            )
            for var in variables
            if var not in small
        ]
        if small:
            rows.append(
                (
                    Cell(", ".join(_label(v) for v in small)),
                    *(Cell("< 0.001", "num", "every one of these variables is below 0.001") for _ in columns),
                )
            )
        table = TableView(
            f"Importance per variable, {_label(outcome)} ({FEATURE_SETS.get(fs, fs)})",
            ("variable", *(f"{m} importance (± sd)" for m in columns)),
            tuple(rows),
            css="narrow",
        )
        items.append(
            Item(
                title=f"{_label(outcome)} — {FEATURE_SETS.get(fs, _label(fs))}, {Name(scope, ()).scope_label}",
                anchor=f"importance-{scope}-{outcome}-{fs}",
                tables=(table,),
                figures=figures,
                badges=_group_badges(list(methods.values())),
                sources=tuple(r.name for r in methods.values()),
            )
        )
    return Section("importances", "Feature importances", intro, tuple(items))


def _importances(r: ReleasedOutput) -> list[tuple[str, float, float]]:
    imp = r.values.get("importances") or {}
    out = []
    for key, value in imp.items():
        if key.endswith(".sd"):
            continue
        v = _float(value)
        if v is None:
            continue
        out.append((key, v, _float(imp.get(f"{key}.sd")) or 0.0))
    return sorted(out, key=lambda t: -t[1])


def _pm(value: float, sd: float) -> str:
    """Importance ± sd over folds; an importance below 0.0005 in size is just "< 0.001" (its spread says no more)."""
    if not sd or abs(value) < 0.0005:
        return fmt_importance(value)
    return f"{fmt_importance(value)} ± {sd:.3f}"


def woz_section(association: Sequence[ReleasedOutput]) -> Section:
    intro = (
        "The WOZ value (assessed value of the home) stands in for household income. A straight-line test "
        "can miss a relation that bends: the binned curve shows the share with the outcome per public WOZ "
        "band, and the tests below check the linear trend and the non-linearity separately on the same "
        "persons."
    )
    items = []
    for scope, group in _by_scope(association):
        figures: list[Figure] = []
        tables: list[TableView] = []
        text = ""
        for r in group:
            if r.is_table:
                figure = _woz_curve(r)
                if figure is not None:
                    figures.append(figure)
                labels = {"mean": "share with the outcome", _woz_bin_column(r): "WOZ band (euro)"}
                tables.append(table_view(r, caption="Share with the outcome per WOZ band", labels=labels))
        tests = [r for r in group if r.kind == "test_result"]
        if tests:
            rows = tuple(
                (
                    Cell(_label(_part(r, 1))),
                    Cell(_test_model(str(r.values.get("test", "")))),
                    Cell(fmt_number(r.values.get("statistic")), "num"),
                    Cell(fmt_p(r.values.get("p_value")), "num"),
                    Cell(fmt_number(r.values.get("n")), "num"),
                )
                for r in tests
            )
            tables.append(
                TableView("Association tests", ("test", "distribution", "statistic", "p-value", "persons"), rows)
            )
            alpha = re.search(r"Read at alpha ([0-9.]*[0-9])", tests[0].description)
            p_values = {_part(r, 1): r.values.get("p_value") for r in tests}
            needed = ("linear_lr", "nonlinearity_lr", "spline_lr")
            if alpha and all(isinstance(p_values.get(t), float) for t in needed):
                reading = association_reading({t: float(p_values[t]) for t in needed}, float(alpha.group(1)))
                text = f"Reading at significance level {alpha.group(1)}: {reading}."
        tables.extend(regression_table(r) for r in group if r.kind == "regression")
        items.append(
            Item(
                title=f"WOZ and {_association_outcome(group)}, {Name(scope, ()).scope_label}",
                anchor=f"woz-{scope}",
                text=text,
                tables=tuple(tables),
                figures=tuple(figures),
                badges=_group_badges(group),
                sources=tuple(r.name for r in group),
            )
        )
    return Section("woz", "The WOZ relation", intro, tuple(items))


def _woz_bin_column(r: ReleasedOutput) -> str:
    dims = [str(c) for c in r.values.get("columns", []) if str(c) not in _stat_columns(r) and str(c) != "status"]
    return dims[-1] if dims else ""


def _test_model(label: str) -> str:
    """'linear_lr (chi2, df=1)' → 'chi2, df=1': the test's name is in the row already."""
    found = re.fullmatch(r"[^(]*\((.*)\)\s*", label)
    return found.group(1) if found else label


def _association_outcome(group: Sequence[ReleasedOutput]) -> str:
    """The outcome the association releases are about, as their descriptions name it."""
    for r in group:
        found = re.search(r"(?:Share of|association of) ([a-z_]+)", r.description)
        if found:
            return _label(found.group(1))
    return "the outcome"


def _woz_curve(r: ReleasedOutput) -> Figure | None:
    columns = [str(c) for c in r.values["columns"]]
    stat = next((c for c in ("mean", "q0.5", "n") if c in columns), None)
    dims = [c for c in columns if c not in _stat_columns(r) and c != "status"]
    if stat is None or not dims:
        return None
    x = dims[-1]
    points = [
        {x: _category(row[x]), stat: _float(row.get(stat))}
        for row in _table_rows(r)
        if not _is_suppressed(row) and _float(row.get(stat)) is not None
    ]
    if len(points) < 2:
        return None
    what = "share with the outcome" if stat == "mean" else _column_label(stat)
    return line_figure(
        points,
        x=x,
        y=stat,
        title=f"{what} per WOZ band" + (" (noisy)" if r.noisy else ""),
        x_title="WOZ value band (euro)",
        y_title=what,
        alt=f"Line chart of the {what} across WOZ value bands, lowest to highest; suppressed bands "
        "are left out. The table below gives every band.",
    )


def factor_section(factors: Sequence[ReleasedOutput]) -> Section:
    intro = (
        "Which factors of the literature factor model carry weight in the all-variables model: a factor's "
        "importance is the sum of its indicators' permutation importances. A factor without an indicator in "
        "the data can never show up as important; those are listed as such."
    )
    items = []
    for scope, group in _by_scope(factors):
        outcomes = [_part(r, 0) for r in group]
        values: dict[str, dict[str, float | None]] = {}
        uncovered: dict[str, set[str]] = {}
        for r, outcome in zip(group, outcomes, strict=True):
            for factor, value in (r.values.get("importances") or {}).items():
                values.setdefault(factor, {})[outcome] = _float(value)
            found = re.search(r"No indicator in the model: ([^;]*);", r.description)
            names = {x.strip() for x in found.group(1).split(",")} if found else set()
            uncovered[outcome] = {x for x in names if x and x != "none"}
            for factor in uncovered[outcome]:
                values.setdefault(factor, {})
        rows = []
        for factor in sorted(values, key=lambda f: -max((v or 0.0) for v in values[f].values()) if values[f] else 1):
            cells = [Cell(_label(factor))]
            for outcome in outcomes:
                if factor in uncovered.get(outcome, set()) and values[factor].get(outcome) is None:
                    cells.append(Cell("no indicator", "suppressed", "no indicator of this factor is in the model"))
                else:
                    cells.append(Cell(fmt_importance(values[factor].get(outcome)), "num"))
            rows.append(tuple(cells))
        table = TableView(
            "Factor importance per outcome (all-variables model)",
            ("factor", *(_label(o) for o in outcomes)),
            tuple(rows),
        )
        items.append(
            Item(
                title=f"Factor coverage, {Name(scope, ()).scope_label}",
                anchor=f"factors-{scope}",
                tables=(table,),
                badges=_group_badges(group),
                sources=tuple(r.name for r in group),
            )
        )
    return Section("factors", "Factor coverage", intro, tuple(items))


def _by_scope(outputs: Iterable[ReleasedOutput]) -> list[tuple[str, list[ReleasedOutput]]]:
    groups: dict[str, list[ReleasedOutput]] = {}
    for r in outputs:
        groups.setdefault(Name.of(r.name).scope, []).append(r)
    return sorted(groups.items(), key=lambda kv: (not kv[0].isdigit(), kv[0]))


def _group_badges(group: Sequence[ReleasedOutput]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    noisy = [r for r in group if r.noisy]
    if noisy:
        eps = sum((r.epsilon_spent for r in noisy), Fraction(0))
        out.append(("badge-dp", f"noisy: differential privacy, ε = {fmt_fraction(eps)}"))
    if len(noisy) < len(group):
        out.append(("badge-exact", "exact, output-checked"))
    if any(r.outcome == "suppressed" for r in group):
        out.append(("badge-suppressed", "some values suppressed"))
    entries = sorted(r.ledger_entry for r in group)
    label = entries[0] if len(entries) == 1 else f"{entries[0]}–{entries[-1]}"
    out.append(("badge-entry", f"ledger {label}"))
    return tuple(out)


def build_sections(outputs: Sequence[ReleasedOutput]) -> list[Section]:
    """Sort every released output into exactly one section (unmatched ones go to 'Other released outputs')."""
    used: set[str] = set()

    def take(match: Callable[[ReleasedOutput], bool]) -> list[ReleasedOutput]:
        picked = [r for r in outputs if r.name not in used and match(r)]
        used.update(r.name for r in picked)
        return picked

    linkage = take(_is_linkage)
    trees = take(lambda r: r.kind == "tree_structure" and _part(r, 2) == "tree")
    positives = take(_is_positives)
    association = take(_is_association)
    compares = take(_is_compare)
    metrics = take(_is_model_metrics)
    importances = take(_is_importance)
    dp_models = take(_is_dp_model)
    factors = take(_is_factors)
    rest = take(lambda r: True)
    sections = [
        linkage_section(linkage),
        base_rate_section(positives),
        model_section(metrics, compares, dp_models),
        importance_section(importances),
        tree_section(trees),
        dp_model_section(dp_models),
        woz_section(association),
        factor_section(factors),
        refused_section([r for r in positives if _is_refused_outcome(r)]),
    ]
    if rest:
        sections.append(
            Section(
                "other",
                "Other released outputs",
                "Further outputs the gate released, shown as released (for example the changes between "
                "reference years).",
                tuple(generic_item(r) for r in rest),
            )
        )
    return sections


# --- privacy ---------------------------------------------------------------------------------------------
def privacy_table(outputs: Sequence[ReleasedOutput]) -> TableView:
    rows = []
    for r in outputs:
        rows.append(
            (
                Cell(r.name, title=r.name, breaks=True),  # the title keeps the name whole (copy, search)
                Cell(r.kind.replace("_", " ")),
                Cell({"sdc": "SDC", "dp": "DP", "dp+sdc": "DP + SDC"}.get(r.method, r.method)),
                Cell(r.outcome, "suppressed" if r.outcome == "suppressed" else ""),
                Cell(fmt_fraction(r.epsilon_spent), "num"),
                Cell(r.ledger_entry),
                Cell(r.rule_summary),
            )
        )
    return TableView(
        "Every released output, the rules that passed it and the budget it spent (SDC: output checking; DP: "
        "differential privacy)",
        ("release", "kind", "method", "outcome", "ε spent", "ledger entry", "rules"),
        tuple(rows),
        css="wide",
    )


def compute_budget(outputs: Sequence[ReleasedOutput], policy: ReleasePolicy | None) -> Budget:
    spent = sum((r.epsilon_spent for r in outputs), Fraction(0))
    if policy is None or policy.dp is None:
        return Budget(spent=spent, total=None, dataset=policy.dataset if policy else None, per_release_max=None)
    return Budget(
        spent=spent,
        total=policy.dp.epsilon_total,
        dataset=policy.dataset,
        per_release_max=policy.dp.epsilon_per_release_max,
    )


# --- build -----------------------------------------------------------------------------------------------
def _environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(_load_template)
    env = jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["fraction"] = fmt_fraction
    env.filters["number"] = fmt_number
    env.filters["breakable"] = _breakable
    return env


def _breakable(text: str) -> Markup:
    """``text`` escaped, with a line-break opportunity (<wbr>) after every "." and "_"."""
    escaped = str(Markup.escape(text))
    return Markup(re.sub(r"([._])", r"\1<wbr>", escaped))  # noqa: S704 (escaped above; only <wbr> is added)


def _load_template(name: str) -> str:
    return resources.files("coordinator").joinpath("templates", name).read_text(encoding="utf-8")


def render_report(
    outputs: Sequence[ReleasedOutput],
    head: LedgerHead,
    *,
    budget: Budget,
    workspace_label: str,
    generated_at: str | None = None,
) -> tuple[str, list[Section]]:
    sections = build_sections(outputs)
    policy_digests = sorted({r.policy_digest for r in outputs})
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title="Rotterdam Groeit — released results",
            workspace=workspace_label,
            generated_at=generated_at or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            sections=sections,
            privacy=privacy_table(outputs),
            budget=budget,
            head=head,
            policy_digests=policy_digests,
            counts={
                "released": sum(r.outcome == "released" for r in outputs),
                "suppressed": sum(r.outcome == "suppressed" for r in outputs),
                "noisy": sum(r.noisy for r in outputs),
                "total": len(outputs),
            },
        )
    )
    return html, sections


def build_report(
    workspace: Path,
    out: Path,
    *,
    release_policy: Path | None = None,
    force: bool = False,
    generated_at: str | None = None,
) -> ReportResult:
    """Write the HTML report of everything ``WS/released/`` holds to ``out``.

    ``release_policy`` (the policy the gate ran under) only adds the budget total, so the report can say how
    much epsilon is left; it is parsed, not trusted for any number. Refuses to overwrite ``out`` unless
    ``force``, and refuses to write into ``WS/released/`` (only the gate writes there).
    """
    workspace, out = Path(workspace), Path(out)
    released_dir = (workspace / RELEASED_DIR).resolve()
    if out.resolve().parent == released_dir:
        raise InputError(
            f"{out}: the report may not be written into {released_dir} (only the gate writes there)",
            hint="choose another path, e.g. --out report.html",
        )
    if out.exists() and not force:
        raise OutputExists(f"{out}: exists already", hint="pass --force to overwrite it, or choose another path")
    outputs, head = load_released(workspace)
    policy: ReleasePolicy | None = None
    if release_policy is not None:
        policy = load_release_policy(release_policy)
        digests = {r.policy_digest for r in outputs}
        given = policy_digest(read_policy_bytes(release_policy))
        if digests and given not in digests:
            raise PolicyError(
                f"{release_policy}: this is not the release policy the gate ran under ({given} is not among "
                f"{sorted(digests)})",
                hint="pass the signed release policy the workspace's releases name, or leave --policy out",
            )
    budget = compute_budget(outputs, policy)
    html, sections = render_report(
        outputs, head, budget=budget, workspace_label=workspace.name, generated_at=generated_at
    )
    atomic_write_bytes(out, html.encode("utf-8"))
    return ReportResult(
        path=out,
        releases=len(outputs),
        sections=(*(s.id for s in sections), "privacy"),
        figures=sum(len(i.figures) for s in sections for i in s.items),
        suppressed=sum(r.outcome == "suppressed" for r in outputs),
        noisy=sum(r.noisy for r in outputs),
        ledger_head=head,
        budget=budget,
    )


__all__ = [
    "Budget",
    "LedgerHead",
    "ReleasedOutput",
    "ReportResult",
    "build_report",
    "build_sections",
    "load_released",
    "render_report",
]
