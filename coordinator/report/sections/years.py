"""Years side by side: when the plan covers several reference years, each outcome's ROC AUC and importances per
year, and whether each change exceeds its uncertainty (the factsheet's next step: repeat the analysis so that an
"ecosystem of factors" emerges)."""

from __future__ import annotations

from itertools import pairwise

from ..catalogue import Catalogue
from ..findings import NOISE_FACTOR, Change, change_sentences
from ..fmt import MISSING, as_float, capitalise, feature_set_label, fmt_metric, fmt_pm, label
from ..released import Release, Scope
from ..view import Cell, Item, Section, TableView, group_badges
from .importances import importances_of

TOP_PER_YEAR = 5


def _yes_no(beyond: bool | None) -> Cell:
    if beyond is None:
        return Cell(MISSING)
    return Cell("yes" if beyond else "no", "changed" if beyond else "")


def _signed(x: float) -> str:
    if abs(x) < 0.0005:
        return "< 0.001" if x else "0"
    return ("+" if x > 0 else "-") + fmt_metric(abs(x))


def years_section(catalogue: Catalogue) -> Section | None:
    """The section, or ``None`` when fewer than two single reference years were released."""
    years = sorted({s.years[0] for s in catalogue.scopes() if s.single})
    if len(years) < 2:
        return None
    intro = (
        f"The analysis covers {len(years)} reference years ({', '.join(map(str, years))}), each modelled on its own. "
        "Per outcome: the ROC AUC of each model and the permutation importances of the all-variables model, side by "
        "side, and whether a change from one year to the next exceeds its uncertainty: for the ROC AUC, the "
        "released bootstrap interval of the change excludes 0; for an importance (no interval is released), the "
        f"change is more than {NOISE_FACTOR:g} times the combined spread over the folds of the two years."
    )
    scopes = [Scope(change=False, years=(y,)) for y in years]
    outcomes: dict[str, None] = {}
    for s in scopes:
        for o in catalogue.outcomes(s):
            if catalogue.feature_sets(s, o):
                outcomes.setdefault(o, None)
    items = [_item(catalogue, scopes, outcome) for outcome in outcomes]
    return Section("years", "Reference years side by side", intro, tuple(i for i in items if i is not None))


def _change_release(catalogue: Catalogue, a: int, b: int, outcome: str, fs: str) -> Release | None:
    return next(
        (r for r in catalogue.changes if r.scope.years == (a, b) and r.outcome == outcome and r.feature_set == fs),
        None,
    )


def _item(catalogue: Catalogue, scopes: list[Scope], outcome: str) -> Item | None:
    years = [s.years[0] for s in scopes]
    used: list[Release] = []
    auc_rows, auc_changes = [], []
    feature_sets = sorted(
        {fs for s in scopes for fs in catalogue.feature_sets(s, outcome)}, key=lambda f: (f != "all", f)
    )
    for fs in feature_sets:
        cells = [Cell(feature_set_label(fs))]
        values: dict[int, tuple[float | None, float | None]] = {}
        for s in scopes:
            r = catalogue.model_metrics(s, outcome, fs)
            m = (r.values.get("metrics") or {}) if r is not None else {}
            used += [r] if r is not None else []
            values[s.years[0]] = (as_float(m.get("roc_auc")), as_float(m.get("roc_auc.fold_sd")))
            cells.append(Cell(fmt_pm(*values[s.years[0]]), "num"))
        for a, b in pairwise(years):
            (va, sa), (vb, sb) = values[a], values[b]
            change_r = _change_release(catalogue, a, b, outcome, fs)
            low = high = None
            if change_r is not None:
                used.append(change_r)
                m = change_r.values.get("metrics") or {}
                low, high = as_float(m.get("roc_auc.ci_low")), as_float(m.get("roc_auc.ci_high"))
            if va is None or vb is None:
                cells += [Cell(MISSING, "num"), Cell(MISSING)]
                continue
            c = Change(f"ROC AUC of the {feature_set_label(fs)} tree", a, b, va, vb, low, high, sa, sb)
            auc_changes.append(c)
            cells += [Cell(_signed(c.delta), "num", c.rule), _yes_no(c.beyond)]
        auc_rows.append(tuple(cells))
    pair_headers = [h for a, b in pairwise(years) for h in (f"change {a}→{b}", "beyond its uncertainty")]
    tables = [
        TableView(
            f"ROC AUC per reference year (± sd over folds), {label(outcome)}",
            ("feature set", *map(str, years), *pair_headers),
            tuple(auc_rows),
            css="years",
        )
    ]
    # importances of the all-variables model: the union of each year's top variables
    per_year = {}
    for s in scopes:
        r = catalogue.importance(s, outcome, "all", "permutation")
        if r is not None:
            used.append(r)
            per_year[s.years[0]] = {i.variable: i for i in importances_of(r)}
    imp_changes: list[Change] = []
    if len(per_year) >= 2:
        chosen: dict[str, None] = {}
        for y in years:
            for i in sorted(per_year.get(y, {}).values(), key=lambda i: -i.value)[:TOP_PER_YEAR]:
                chosen.setdefault(i.variable, None)
        rows = []
        first, last = years[0], years[-1]
        for var in chosen:
            cells = [Cell(label(var))]
            for y in years:
                i = per_year.get(y, {}).get(var)
                cells.append(Cell(fmt_pm(i.value, i.sd) if i is not None else MISSING, "num"))
            a, b = per_year.get(first, {}).get(var), per_year.get(last, {}).get(var)
            if a is None or b is None:
                cells += [Cell(MISSING, "num"), Cell(MISSING)]
            else:
                c = Change(var, first, last, a.value, b.value, first_sd=a.sd, last_sd=b.sd)
                imp_changes.append(c)
                cells += [Cell(_signed(c.delta), "num", c.rule), _yes_no(c.beyond)]
            rows.append(tuple(cells))
        tables.append(
            TableView(
                f"Permutation importance per reference year (± sd over folds), all-variables model, {label(outcome)}: "
                f"each year's top {TOP_PER_YEAR}",
                ("variable", *map(str, years), f"change {first}→{last}", "beyond its uncertainty"),
                tuple(rows),
                css="years",
            )
        )
    if not auc_rows:
        return None
    return Item(
        title=f"{capitalise(label(outcome))}, {years[0]} to {years[-1]}",
        anchor=f"years-{outcome}",
        paragraphs=tuple(change_sentences(outcome, auc_changes, imp_changes)),
        tables=tuple(tables),
        badges=group_badges(used),
        sources=tuple(dict.fromkeys(r.name for r in used)),
    )


__all__ = ["years_section"]
