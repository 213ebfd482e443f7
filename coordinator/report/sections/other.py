"""Other released outputs: anything no other section shows, as it was released (a table, or its measures)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from ..fmt import fmt_number, fmt_p, label
from ..released import Release
from ..view import Item, Section, TableView, anchor, badges, kv_table, table_view
from .association import _regression_table


def generic_item(r: Release) -> Item:
    tables: list[TableView] = []
    v = r.values
    if r.is_table:
        tables.append(table_view(r, caption=label(r.name)))
    elif r.kind in ("model_metrics", "feature_importances"):
        key = "metrics" if r.kind == "model_metrics" else "importances"
        tables.append(kv_table(f"{label(key)} ({fmt_number(v.get('n'))} persons)", list((v.get(key) or {}).items())))
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
        tables.append(_regression_table(r))
    else:
        tables.append(kv_table(label(r.name), [(k, json.dumps(x)) for k, x in v.items()]))
    return Item(
        title=r.name,
        anchor=anchor(r.name),
        text=r.description,
        badges=badges(r),
        tables=tuple(tables),
        sources=(r.name,),
    )


def other_section(other: Sequence[Release]) -> Section | None:
    if not other:
        return None
    return Section(
        "other",
        "Other released outputs",
        "Further outputs the gate released that no section above shows, as released (for example ad-hoc queries).",
        tuple(generic_item(r) for r in other),
    )
