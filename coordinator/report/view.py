"""The view model the template renders: sections of items, each with paragraphs, figures and tables of cells.

Everything here is plain text or ``Markup`` made by the figure and tree modules; the template escapes all text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from markupsafe import Markup

from kansrijk.gate.document import Verdict

from .fmt import MISSING, category, fmt_fraction, fmt_number, label
from .released import Release


@dataclass(frozen=True, slots=True)
class Cell:
    text: str
    css: str = ""  # "num", "suppressed", "noisy num"
    title: str = ""
    breaks: bool = False  # a long identifier: may break after "." and "_" (never inside a word)
    href: str = ""  # a link to where the output is shown


@dataclass(frozen=True, slots=True)
class TableView:
    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[Cell, ...], ...]
    row_header: bool = True  # first column names the row
    css: str = ""
    row_ids: tuple[str, ...] = ()  # an id per row (the ledger table: one per entry), or none


@dataclass(frozen=True, slots=True)
class Figure:
    svg: Markup
    caption: str
    alt: str
    css: str = "plot"  # "plot" (Vega-Lite) or "tree" (a drawn decision tree, scrolls sideways when wide)


@dataclass(frozen=True, slots=True)
class Item:
    """One released output (or a group of them), as shown in a section."""

    title: str
    anchor: str
    text: str = ""
    paragraphs: tuple[str, ...] = ()  # generated sentences (findings), after ``text``
    badges: tuple[tuple[str, str], ...] = ()  # (css class, label)
    tables: tuple[TableView, ...] = ()
    figures: tuple[Figure, ...] = ()
    sources: tuple[str, ...] = ()  # release names the item shows
    note: str = ""  # a second paragraph, after the tables (e.g. what a DP guarantee covers)
    layout: str = ""  # "side-by-side": small tables flow next to each other
    level: int = 3  # heading level (4: a sub-item, e.g. one tree of a group)


@dataclass(frozen=True, slots=True)
class Section:
    id: str
    title: str
    intro: str
    items: tuple[Item, ...] = ()
    empty: str = "Nothing of this kind was released."


@dataclass(frozen=True, slots=True)
class Tile:
    """One number of the summary strip at the top."""

    label: str
    value: str
    href: str = ""
    css: str = ""


def rules_text(verdicts: Sequence[Verdict], *, details: bool = True) -> str:
    """The rules that decided, with their reasons ("rule (verdict): reason; …").

    ``details=False`` (for refusals: nothing of them was released) keeps each reason's general statement, up to
    its first ": ", and leaves out the nodes, cells and counts that follow; those stay in the ledger for the
    privacy officer (a refusal's details describe exactly what the gate would not release)."""
    parts = []
    for v in verdicts:
        reason = v.reason if details else v.reason.split(": ", 1)[0]
        parts.append(f"{v.rule} ({v.verdict}): {reason}")
    return "; ".join(parts) or "no rule recorded"


def anchor(text: str) -> str:
    out = "".join(c if c.isalnum() else "-" for c in text.lower())
    while "--" in out:
        out = out.replace("--", "-")
    return out.strip("-") or "item"


def badges(r: Release) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    if r.noisy:
        out.append(("badge-dp", f"noisy: differential privacy, ε = {fmt_fraction(r.epsilon)}"))
    else:
        out.append(("badge-exact", "exact, output-checked"))
    if r.status == "suppressed":
        out.append(("badge-suppressed", "some values suppressed"))
    out.append(("badge-entry", f"ledger {r.ledger_entry}"))
    return tuple(out)


def group_badges(group: Sequence[Release]) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    noisy = [r for r in group if r.noisy]
    if noisy:
        eps = sum((r.epsilon for r in noisy), Fraction(0))
        out.append(("badge-dp", f"noisy: differential privacy, ε = {fmt_fraction(eps)}"))
    if len(noisy) < len(group):
        out.append(("badge-exact", "exact, output-checked"))
    if any(r.status == "suppressed" for r in group):
        out.append(("badge-suppressed", "some values suppressed"))
    entries = sorted(r.ledger_entry for r in group)
    if entries:
        text = entries[0] if len(entries) == 1 else f"{entries[0]}–{entries[-1]}"
        out.append(("badge-entry", f"ledger {text}"))
    return tuple(out)


def value_cell(value: Any, *, noisy: bool, suppressed: bool = False, why: str = "", text: str | None = None) -> Cell:
    if suppressed:
        return Cell("suppressed", "suppressed", why)
    if value is None:
        return Cell(MISSING, "num")
    shown = text if text is not None else fmt_number(value)
    if noisy:
        return Cell("≈ " + shown, "noisy num", "differentially private (noisy) value")
    return Cell(shown, "num")


def stat_columns(r: Release) -> set[str]:
    columns = [str(c) for c in r.values.get("columns", [])]
    return {c for c in columns if c in ("n", "mean", "sum") or (c.startswith("q") and c[1:].replace(".", "").isdigit())}


def table_rows(r: Release) -> list[dict[str, Any]]:
    columns = [str(c) for c in r.values["columns"]]
    return [dict(zip(columns, row, strict=False)) for row in r.values["rows"]]


def is_suppressed(row: Mapping[str, Any]) -> bool:
    return str(row.get("status", "")).startswith("suppressed")


def column_label(column: str) -> str:
    return {"n": "persons", "bin": "bin", "status": "status"}.get(column, label(column))


def table_view(
    r: Release,
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
    stats = stat_columns(r)
    rows = []
    for raw in r.values["rows"]:
        status = str(raw[status_at]) if status_at is not None else "released"
        suppressed = status.startswith("suppressed")
        cells = []
        for column, value in zip(columns, raw, strict=False):
            if column == "status":
                if show_status:
                    cells.append(Cell("suppressed", "suppressed", status) if suppressed else Cell(status))
            elif column in stats:
                cells.append(value_cell(value, noisy=r.noisy, suppressed=suppressed, why=status))
            else:
                cells.append(Cell(category(value)))
        rows.append(tuple(cells))
    header = tuple((labels or {}).get(c, column_label(c)) for c in columns if c != "status" or show_status)
    text = caption or (r.description or label(r.name))
    if r.noisy and noise_note:
        text = text.rstrip(". ") + "; values marked ≈ carry differential-privacy noise"
    return TableView(caption=text, header=header, rows=tuple(rows))


def kv_table(caption: str, pairs: Iterable[tuple[str, Any]]) -> TableView:
    rows = tuple((Cell(str(k)), Cell(fmt_number(v), "num")) for k, v in pairs)
    return TableView(caption=caption, header=("measure", "value"), rows=rows)


def by_scope(releases: Iterable[Release]) -> list[tuple[Any, list[Release]]]:
    """Releases grouped by scope: single years first (oldest first), then pooled, then changes."""
    groups: dict[Any, list[Release]] = {}
    for r in releases:
        groups.setdefault(r.scope, []).append(r)
    return sorted(groups.items(), key=lambda kv: kv[0].sort_key)


__all__ = [
    "Cell",
    "Figure",
    "Item",
    "Section",
    "TableView",
    "Tile",
    "anchor",
    "badges",
    "by_scope",
    "column_label",
    "group_badges",
    "is_suppressed",
    "kv_table",
    "rules_text",
    "stat_columns",
    "table_rows",
    "table_view",
    "value_cell",
]
