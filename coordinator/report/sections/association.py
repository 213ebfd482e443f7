"""The association the plan tests: one outcome against one variable (binned curve, linear and non-linear tests).

The section is named after the variable and outcome the released tests name; every sentence comes from the
released p-values and curve.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kansrijk.stats.association import reading as association_reading

from ..catalogue import Catalogue
from ..figures import line_figure
from ..fmt import as_float, band_label, capitalise, category, fmt_number, fmt_p, fmt_percent, join_and, label
from ..released import Release, Scope
from ..view import (
    Cell,
    Figure,
    Item,
    Section,
    TableView,
    by_scope,
    group_badges,
    is_suppressed,
    stat_columns,
    table_rows,
    table_view,
)
from .factors import proxy_factors

_READ_TESTS = ("linear_lr", "nonlinearity_lr", "spline_lr")


def pairs_of(association: Sequence[Release]) -> list[tuple[str, str]]:
    """The (outcome, variable) pairs the released tests relate, in release order."""
    seen: dict[tuple[str, str], None] = {}
    for r in association:
        if r.variable and r.outcome:
            seen.setdefault((r.outcome, r.variable), None)
    return list(seen)


def association_section(catalogue: Catalogue) -> Section:
    pairs = pairs_of(catalogue.association)
    proxies = proxy_factors(catalogue.factors)
    if len(pairs) == 1:
        outcome, variable = pairs[0]
        title = f"{capitalise(label(variable))} and {label(outcome)}"
        intro = (
            f"The analysis plan tests how {label(outcome)} relates to {label(variable)}. A straight-line test can "
            f"miss a relation that bends: the binned curve shows the share with {label(outcome)} per public "
            f"{label(variable)} band, and the tests check the linear trend and the non-linearity separately on the "
            "same persons."
        )
        if variable in proxies:
            intro += f" In the factor model {label(variable)} is a proxy for {label(proxies[variable])}."
    else:
        title = "Associations"
        named = join_and([f"{label(o)} and {label(v)}" for o, v in pairs]) or "none"
        intro = f"The association tests the analysis plan asks for ({named}): binned curves and tests."
    items = []
    for scope, group in by_scope(catalogue.association):
        for outcome, variable in pairs_of(group):
            members = [r for r in group if r.outcome == outcome and (r.variable or (r.by or ("",))[0]) == variable]
            items.append(_item(scope, outcome, variable, members))
    return Section(
        "association",
        title,
        intro,
        tuple(items),
        empty="The analysis plan asks for no association test, or none was released.",
    )


def _item(scope: Scope, outcome: str, variable: str, group: Sequence[Release]) -> Item:
    figures: list[Figure] = []
    tables: list[TableView] = []
    paragraphs: list[str] = []
    for r in group:
        if r.is_table:
            figure, sentence = _curve(r, outcome, variable)
            if figure is not None:
                figures.append(figure)
            if sentence:
                paragraphs.append(sentence)
            labels = {"mean": f"share with {label(outcome)}", variable: f"{label(variable)} band"}
            tables.append(
                table_view(r, caption=f"Share with {label(outcome)} per {label(variable)} band", labels=labels)
            )
    tests = [r for r in group if r.kind == "test_result"]
    if tests:
        rows = tuple(
            (
                Cell((r.test or "").replace("_", " ")),
                Cell(_test_model(str(r.values.get("test", "")))),
                Cell(fmt_number(r.values.get("statistic")), "num"),
                Cell(fmt_p(r.values.get("p_value")), "num"),
                Cell(fmt_number(r.values.get("n")), "num"),
            )
            for r in tests
        )
        tables.append(TableView("Association tests", ("test", "distribution", "statistic", "p-value", "persons"), rows))
        alpha = re.search(r"Read at alpha ([0-9.]*[0-9])", tests[0].description)
        p_values = {r.test: as_float(r.values.get("p_value")) for r in tests}
        if alpha and all(p_values.get(t) is not None for t in _READ_TESTS):
            reading = association_reading({t: float(p_values[t] or 0.0) for t in _READ_TESTS}, float(alpha.group(1)))
            lin, nonlin = p_values["linear_lr"], p_values["nonlinearity_lr"]
            paragraphs.insert(
                0,
                f"Reading at significance level {alpha.group(1)}: {reading} (linear trend {_p(lin)}, "
                f"non-linearity {_p(nonlin)}).",
            )
    tables.extend(_regression_table(r) for r in group if r.kind == "regression")
    return Item(
        title=f"{capitalise(label(variable))} and {label(outcome)}, {scope.label}",
        anchor=f"association-{scope.key}-{outcome}-{variable}",
        paragraphs=tuple(paragraphs),
        tables=tuple(tables),
        figures=tuple(figures),
        badges=group_badges(group),
        sources=tuple(r.name for r in group),
    )


def _p(value: float | None) -> str:
    text = fmt_p(value)
    return f"p {text}" if text.startswith("<") else f"p = {text}"


def _regression_table(r: Release) -> TableView:
    v = r.values
    se = v.get("std_errors") or {}
    rows = tuple(
        (Cell(label(str(k))), Cell(fmt_number(c), "num"), Cell(fmt_number(se.get(k)), "num"))
        for k, c in (v.get("coefficients") or {}).items()
    )
    return TableView(
        f"{v.get('model') or 'regression'}: coefficients (n = {fmt_number(v.get('n'))}, residual dof "
        f"= {fmt_number(v.get('dof'))})",
        ("term", "coefficient", "standard error"),
        rows,
    )


def _test_model(text: str) -> str:
    """'linear_lr (chi2, df=1)' → 'chi2, df=1': the test's name is in the row already."""
    found = re.fullmatch(r"[^(]*\((.*)\)\s*", text)
    return found.group(1) if found else text


def _curve(r: Release, outcome: str, variable: str) -> tuple[Figure | None, str]:
    columns = [str(c) for c in r.values["columns"]]
    stat = next((c for c in ("mean", "q0.5", "n") if c in columns), None)
    dims = [c for c in columns if c not in stat_columns(r) and c != "status"]
    if stat is None or not dims:
        return None, ""
    x = dims[-1]
    points = [
        {x: band_label(variable, category(row[x])), stat: as_float(row.get(stat))}
        for row in table_rows(r)
        if not is_suppressed(row) and as_float(row.get(stat)) is not None
    ]
    if len(points) < 2:
        return None, ""
    what = f"share with {label(outcome)}" if stat == "mean" else label(stat)
    figure = line_figure(
        points,
        x=x,
        y=stat,
        title=f"{capitalise(what)} per {label(variable)} band" + (" (noisy)" if r.noisy else ""),
        x_title=f"{label(variable)} band",
        y_title=what,
        alt=f"Line chart of the {what} across {label(variable)} bands, lowest to highest; suppressed bands are "
        "left out. The table below gives every band.",
    )
    sentence = ""
    if stat == "mean":
        high = max(points, key=lambda p: p[stat] or 0.0)
        low = min(points, key=lambda p: p[stat] or 0.0)
        about = "about " if r.noisy else ""
        sentence = (
            f"The share with {label(outcome)} is highest in the {label(variable)} band {high[x]} ({about}"
            f"{fmt_percent(high[stat])}) and lowest in the band {low[x]} ({about}{fmt_percent(low[stat])})."
        )
    return figure, sentence


__all__ = ["association_section", "pairs_of"]
