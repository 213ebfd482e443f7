"""Linkage overview: the linkage report's small count tables, one item per reference year, side by side."""

from __future__ import annotations

from collections.abc import Sequence

from ..released import Release
from ..view import Item, Section, by_scope, group_badges, kv_table, table_view


def linkage_section(linkage: Sequence[Release]) -> Section:
    items = []
    for scope, group in by_scope(linkage):
        tables = tuple(
            table_view(
                r,
                caption=r.description.rstrip(".") or r.name,
                noise_note=False,
                labels={"partners": "partners holding the person"},
            )
            if r.is_table
            else kv_table(r.description or r.name, sorted(r.values.items()))
            for r in group
        )
        noisy = any(r.noisy for r in group)
        items.append(
            Item(
                title=f"Linkage, {scope.label}",
                anchor=f"linkage-{scope.key}",
                text="Values marked ≈ carry differential-privacy noise." if noisy else "",
                badges=group_badges(group),
                tables=tables,
                sources=tuple(r.name for r in group),
                layout="side-by-side",
            )
        )
    return Section(
        "linkage",
        "Linkage overview",
        "How the partners' records came together on the coordinator pseudonym: persons per partner, overlap, and "
        "conflicts in the attributes they share. Counts only. A linkage table the gate refused is listed under "
        "Refusals and suppressions.",
        tuple(items),
        empty="The linkage report was not released through the gate in this workspace.",
    )
