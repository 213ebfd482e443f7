"""Feature importances: per model, every variable's importance per method, with its spread over folds."""

from __future__ import annotations

from collections.abc import Sequence

from ..catalogue import Catalogue
from ..figures import importance_figure
from ..findings import MIN_IMPORTANCE, NOISE_FACTOR, Importance
from ..fmt import MISSING, as_float, capitalise, feature_set_label, fmt_importance, fmt_pm, label
from ..released import Release, Scope
from ..view import Cell, Figure, Item, Section, TableView, group_badges


def importances_of(r: Release) -> list[Importance]:
    """The importances of a release (``<variable>`` and ``<variable>.sd`` keys), largest first."""
    imp = r.values.get("importances") or {}
    out = []
    for key, value in imp.items():
        if key.endswith(".sd"):
            continue
        v = as_float(value)
        if v is not None:
            out.append(Importance(key, v, as_float(imp.get(f"{key}.sd")) or 0.0))
    return sorted(out, key=lambda i: -i.value)


def withheld_of(r: Release) -> list[str]:
    """Keys the gate withheld from the release (e.g. importances of variables too few persons hold)."""
    return [str(k) for k in r.values.get("withheld") or () if not str(k).endswith(".sd")]


def _pm(i: Importance) -> str:
    if abs(i.value) < 0.0005 or not i.sd:
        return fmt_importance(i.value)
    return fmt_pm(i.value, i.sd)


def importance_section(catalogue: Catalogue) -> Section:
    intro = (
        "How much each variable contributed to a model, per canonical variable (one-hot columns together). "
        "Permutation importance is the drop in ROC AUC on the held-out fold when the variable is shuffled; impurity "
        "importance is the tree's own split gain. Bars show the mean over folds, whiskers one standard deviation. "
        f"An importance below {fmt_importance(MIN_IMPORTANCE)} or within {NOISE_FACTOR:g} standard deviations of 0 "
        "is inside its noise. A factor without an indicator in the data can never appear here."
    )
    by_model: dict[tuple, dict[str, Release]] = {}
    for r in catalogue.importances:
        by_model.setdefault((r.scope, r.outcome, r.feature_set), {})[r.importance_method] = r
    items = []
    for (scope, outcome, fs), methods in sorted(by_model.items(), key=lambda kv: min(r.seq for r in kv[1].values())):
        items.append(_item(scope, outcome or "", fs, methods))
    return Section("importances", "Feature importances", intro, tuple(items))


def _item(scope: Scope, outcome: str, fs: str, methods: dict[str, Release]) -> Item:
    main = methods.get("permutation") or next(iter(methods.values()))
    values = importances_of(main)
    top = [i for i in values if i.value >= 0.0005][:10]
    figures: tuple[Figure, ...] = ()
    if top:
        figures = (
            importance_figure(
                [
                    {
                        "variable": label(i.variable),
                        "importance": i.value,
                        "low": i.value - i.sd,
                        "high": i.value + i.sd,
                    }
                    for i in top
                ],
                title=f"Top {len(top)} variables ({main.importance_method})",
                alt=f"Bar chart of the {len(top)} most important variables for {label(outcome)} with the "
                f"{feature_set_label(fs)} feature set; the table lists every variable.",
            ),
        )
    columns = sorted(methods)
    table_values = {m: {i.variable: i for i in importances_of(methods[m])} for m in columns}
    withheld = {m: set(withheld_of(methods[m])) for m in columns}
    variables = [i.variable for i in values] + sorted(
        {k for m in columns for k in table_values[m]} - {i.variable for i in values}
    )
    small = [
        v for v in variables if all(abs(table_values[m].get(v, Importance(v, 0.0)).value) < 0.0005 for m in columns)
    ]
    rows: list[tuple[Cell, ...]] = [
        (
            Cell(label(var)),
            *(Cell(_pm(table_values[m][var]) if var in table_values[m] else MISSING, "num") for m in columns),
        )
        for var in variables
        if var not in small
    ]
    if small:
        rows.append(
            (
                Cell(", ".join(label(v) for v in small)),
                *(Cell("< 0.001", "num", "every one of these variables is below 0.001") for _ in columns),
            )
        )
    for var in sorted(set().union(*withheld.values())):
        rows.append(
            (
                Cell(label(var)),
                *(
                    Cell("withheld", "suppressed", "the gate withheld this importance (too few persons hold it)")
                    if var in withheld[m]
                    else Cell(MISSING, "num")
                    for m in columns
                ),
            )
        )
    table = TableView(
        f"Importance per variable, {label(outcome)} ({feature_set_label(fs)})",
        ("variable", *(f"{m} importance (± sd)" for m in columns)),
        tuple(rows),
        css="narrow",
    )
    group: Sequence[Release] = list(methods.values())
    return Item(
        title=f"{capitalise(label(outcome))} — {feature_set_label(fs)}, {scope.label}",
        anchor=f"importance-{scope.key}-{outcome}-{fs}",
        tables=(table,),
        figures=figures,
        badges=group_badges(group),
        sources=tuple(r.name for r in group),
    )
