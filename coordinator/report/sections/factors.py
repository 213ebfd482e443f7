"""Factor coverage: how much each factor of the literature model weighs in the all-variables model, with the
proxies the factor model declares shown under their factor, and the variables that belong to no factor listed."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from kansrijk.policy.factors import PROXIES_SUFFIX

from ..catalogue import Catalogue
from ..fmt import MISSING, as_float, fmt_importance, join_and, label
from ..released import Release, Scope
from ..view import Cell, Item, Section, TableView, by_scope, group_badges
from .importances import importances_of


@dataclass(frozen=True, slots=True)
class Coverage:
    """What one factor-coverage release says (for one outcome)."""

    factor_importance: dict[str, float | None]  # factor -> sum over its indicators in the model
    indicators: dict[str, tuple[str, ...]]  # factor -> its indicators in the model
    proxy_importance: dict[str, float | None]  # factor -> sum over its proxies in the model
    proxies: dict[str, tuple[str, ...]]  # factor -> its proxies in the model
    uncovered: tuple[str, ...]  # factors without an indicator in the model

    @property
    def mapped(self) -> set[str]:
        """Every variable that is an indicator or a proxy of some factor."""
        return {v for vs in (*self.indicators.values(), *self.proxies.values()) for v in vs}


def coverage_of(r: Release) -> Coverage:
    importances = r.values.get("importances") or {}
    variables_of = r.variables_of
    factor_importance: dict[str, float | None] = {}
    proxy_importance: dict[str, float | None] = {}
    indicators: dict[str, tuple[str, ...]] = {}
    proxies: dict[str, tuple[str, ...]] = {}
    for key, variables in variables_of.items():
        if key.endswith(PROXIES_SUFFIX):
            factor = key[: -len(PROXIES_SUFFIX)]
            proxies[factor] = variables
            proxy_importance[factor] = as_float(importances.get(key))
        else:
            indicators[key] = variables
            factor_importance[key] = as_float(importances.get(key))
    found = re.search(r"No indicator in the model: ([^;]*);", r.description)
    named = [x.strip() for x in found.group(1).split(",")] if found else []
    uncovered = tuple(x for x in named if x and x != "none")
    return Coverage(factor_importance, indicators, proxy_importance, proxies, uncovered)


def proxy_factors(factors: Sequence[Release]) -> dict[str, str]:
    """Variable -> the factor it is a declared proxy of, over every factor-coverage release."""
    out: dict[str, str] = {}
    for r in factors:
        for factor, variables in coverage_of(r).proxies.items():
            for v in variables:
                out.setdefault(v, factor)
    return out


def unmapped_variables(catalogue: Catalogue, r: Release) -> list[tuple[str, float, float]]:
    """The variables of the all-variables model (its permutation importances) that belong to no factor."""
    importance = catalogue.importance(r.scope, r.outcome or "", "all", "permutation")
    if importance is None:
        return []
    mapped = coverage_of(r).mapped
    return [(i.variable, i.value, i.sd) for i in importances_of(importance) if i.variable not in mapped]


def factor_section(catalogue: Catalogue) -> Section:
    intro = (
        "Which factors of the literature factor model carry weight in the all-variables model: a factor's "
        "importance is the sum of its indicators' permutation importances. A variable the factor model declares "
        "as a proxy for a factor (it stands in for the factor without measuring it) is shown under that factor, "
        "apart from the indicators. A factor without an indicator in the data can never show up as important; "
        "variables that belong to no factor are listed below the factors."
    )
    items = []
    for scope, group in by_scope(catalogue.factors):
        items.append(_item(catalogue, scope, group))
    return Section("factors", "Factor coverage", intro, tuple(items))


def _item(catalogue: Catalogue, scope: Scope, group: Sequence[Release]) -> Item:
    outcomes = [r.outcome or "" for r in group]
    coverages = [coverage_of(r) for r in group]
    factors: dict[str, None] = {}
    for c in coverages:
        for f in (*c.factor_importance, *c.proxies, *c.uncovered):
            factors.setdefault(f, None)

    def weight(f: str) -> float:
        return max((c.factor_importance.get(f) or 0.0) + (c.proxy_importance.get(f) or 0.0) for c in coverages)

    def covered(f: str) -> bool:
        return any(f in c.factor_importance or f in c.proxies for c in coverages)

    rows: list[tuple[Cell, ...]] = []
    for factor in sorted(factors, key=lambda f: (not covered(f), -weight(f), f)):
        indicators = sorted({v for c in coverages for v in c.indicators.get(factor, ())})
        cells = [Cell(label(factor)), Cell(", ".join(label(v) for v in indicators) or "none")]
        for c in coverages:
            if factor in c.factor_importance:
                cells.append(Cell(fmt_importance(c.factor_importance[factor]), "num"))
            elif factor in c.uncovered or factor not in c.indicators:
                cells.append(Cell("no indicator", "suppressed", "no indicator of this factor is in the model"))
            else:
                cells.append(Cell(MISSING, "num"))
        rows.append(tuple(cells))
        proxies = sorted({v for c in coverages for v in c.proxies.get(factor, ())})
        if proxies:
            cells = [
                Cell(
                    f"↳ proxy of {label(factor)}", "proxy", "declared as a proxy in the factor model, not an indicator"
                ),
                Cell(", ".join(label(v) for v in proxies)),
            ]
            for c in coverages:
                value = c.proxy_importance.get(factor)
                cells.append(Cell(fmt_importance(value) if factor in c.proxies else MISSING, "num"))
            rows.append(tuple(cells))
    factor_table = TableView(
        "Factor importance per outcome (all-variables model): the factor's indicators, and its proxies under it",
        ("factor", "indicators or proxies in the model", *(label(o) for o in outcomes)),
        tuple(rows),
        css="factors",
    )
    unmapped: dict[str, dict[str, float]] = {}
    for r, outcome in zip(group, outcomes, strict=True):
        for variable, value, _ in unmapped_variables(catalogue, r):
            unmapped.setdefault(variable, {})[outcome] = value
    tables = [factor_table]
    text = ""
    if unmapped:
        ordered = sorted(unmapped, key=lambda v: -max(unmapped[v].values()))
        tables.append(
            TableView(
                "Variables of the all-variables model that belong to no factor (permutation importance)",
                ("variable", *(label(o) for o in outcomes)),
                tuple(
                    (Cell(label(v)), *(Cell(fmt_importance(unmapped[v].get(o)), "num") for o in outcomes))
                    for v in ordered
                ),
                css="narrow",
            )
        )
        text = (
            f"{len(ordered)} variable{'s' if len(ordered) != 1 else ''} of the all-variables model "
            f"{'belong' if len(ordered) != 1 else 'belongs'} to no factor: {join_and([label(v) for v in ordered])}."
        )
    return Item(
        title=f"Factor coverage, {scope.label}",
        anchor=f"factors-{scope.key}",
        text=text,
        tables=tuple(tables),
        badges=group_badges(group),
        sources=tuple(r.name for r in group),
    )
