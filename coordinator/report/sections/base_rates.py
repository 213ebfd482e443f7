"""Outcome base rates: persons, positives and share per outcome, and whether the outcome was modelled."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..catalogue import Catalogue
from ..figures import bar_figure
from ..fmt import as_float, label
from ..released import Release
from ..view import Cell, Item, Section, TableView, by_scope, group_badges, is_suppressed, table_rows, value_cell


@dataclass(frozen=True, slots=True)
class Positives:
    """What one positives table says: persons and positives (``None`` when suppressed), and whether noisy."""

    outcome: str
    persons: float | None
    positives: float | None
    suppressed: bool
    noisy: bool
    why: str = ""

    @property
    def share(self) -> float | None:
        if self.persons is None or self.positives is None or self.persons <= 0:
            return None
        return self.positives / self.persons


def positives_of(r: Release) -> Positives:
    outcome = r.by[0]
    by_value = {row.get(outcome): row for row in table_rows(r)}
    pos, neg = by_value.get(True, {}), by_value.get(False, {})
    n_pos, n_neg = as_float(pos.get("n")), as_float(neg.get("n"))
    suppressed = is_suppressed(pos) or is_suppressed(neg)
    return Positives(
        outcome=outcome,
        persons=n_pos + n_neg if n_pos is not None and n_neg is not None and not suppressed else None,
        positives=n_pos if n_pos is not None and not is_suppressed(pos) else None,
        suppressed=suppressed,
        noisy=r.noisy,
        why=str(pos.get("status", "")) if is_suppressed(pos) else str(neg.get("status", "")),
    )


def not_modelled_reason(r: Release) -> str:
    """The analysis' reason for not modelling the outcome, as its positives release states it."""
    text = r.description
    reason = text.split("; ", 1)[1] if "; " in text else "no model was released for it"
    return reason.removeprefix("outcome not modelled: ").rstrip(".")


def base_rate_section(catalogue: Catalogue) -> Section:
    intro = (
        "How common each outcome is in the population it is defined on (persons with a known value). Rare "
        "outcomes are hard to predict; an outcome with fewer positives than the analysis plan's minimum is not "
        "modelled (see Refusals and suppressions). The share is computed from the released counts."
    )
    items = []
    for scope, group in by_scope(catalogue.base_rates):
        rows, points = [], []
        for r in group:
            p = positives_of(r)
            modelled = catalogue.modelled(scope, p.outcome)
            rows.append(
                (
                    Cell(label(p.outcome)),
                    value_cell(p.persons, noisy=r.noisy, suppressed=p.suppressed, why=p.why),
                    value_cell(p.positives, noisy=r.noisy, suppressed=p.positives is None and p.suppressed, why=p.why),
                    value_cell(
                        None if p.share is None else round(100 * p.share, 2),
                        noisy=r.noisy,
                        suppressed=p.share is None and p.suppressed,
                        why=p.why,
                    ),
                    Cell("yes" if modelled else "no", title="" if modelled else not_modelled_reason(r)),
                )
            )
            if p.share is not None:
                points.append({"outcome": label(p.outcome), "percent": round(100 * p.share, 3)})
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
                    alt="Bar chart of the share of persons with each outcome; the table gives the same numbers.",
                ),
            )
            if points
            else ()
        )
        items.append(
            Item(
                title=f"Base rates, {scope.label}",
                anchor=f"base-rates-{scope.key}",
                badges=group_badges(group),
                tables=(table,),
                figures=figures,
                sources=tuple(r.name for r in group),
            )
        )
    return Section("base-rates", "Outcome base rates", intro, tuple(items))


def positives_by_outcome(group: Sequence[Release]) -> dict[str, Positives]:
    return {r.by[0]: positives_of(r) for r in group}
