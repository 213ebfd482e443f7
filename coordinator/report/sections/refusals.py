"""Refusals and suppressions: every release the gate refused (a ledger entry without a document), every release
with withheld values (cells, tree counts, importances), and every outcome the analysis plan did not model, each
with its rule and ledger entry, so the ledger numbering has no unexplained gap."""

from __future__ import annotations

from collections.abc import Sequence

from ..catalogue import Catalogue
from ..entries import LedgerEntries, LedgerRow
from ..fmt import label
from ..released import Release
from ..view import Cell, Item, Section, TableView, group_badges, is_suppressed, rules_text, table_rows, value_cell
from .base_rates import not_modelled_reason, positives_of
from .importances import withheld_of

LEDGER_HINT = (
    "kansrijk coordinator report WS --gate-socket SOCKET (or --ledger FILE, saved with kansrijk gate ledger --json)"
)


def _entry_cell(entry_id: str) -> Cell:
    return Cell(entry_id, href=f"#ledger-{entry_id}")


def withheld_parts(r: Release) -> str:
    """What a released document withheld, in words ("" when nothing)."""
    parts = []
    if r.is_table:
        rows = table_rows(r)
        n = sum(1 for row in rows if is_suppressed(row))
        if n:
            parts.append(f"{n} of {len(rows)} cells suppressed")
    if r.kind == "tree_structure":
        nodes = r.values.get("nodes") or ()
        n = sum(1 for node in nodes if node.get("class_counts") is None)
        if n or r.values.get("class_counts_withheld"):
            parts.append(f"counts of {n} of {len(nodes)} nodes withheld")
    withheld = withheld_of(r)
    if withheld:
        parts.append(f"{len(withheld)} value{'s' if len(withheld) != 1 else ''} withheld ({', '.join(withheld[:6])})")
    return "; ".join(parts)


def refusals_section(
    catalogue: Catalogue, rows: Sequence[LedgerRow], given: LedgerEntries, shown_at: dict[str, str]
) -> Section:
    intro = (
        "Everything the gate did not release in full, so that no number in the ledger is left unexplained: "
        "releases it refused (they have a ledger entry but no file in released/), releases it passed with some "
        "values withheld, and outcomes the analysis plan did not model. Each names its rule and its ledger entry; "
        "the privacy section lists every entry. For a refusal the report gives each rule and its general reason; "
        "the nodes, cells and counts it names stay in the ledger for the privacy officer, since they describe what "
        "the gate would not release."
    )
    items: list[Item] = []
    refused = [r for r in rows if r.decision == "refused"]
    missing = [r for r in rows if r.decision == "missing"]
    unknown = [r for r in rows if r.decision == "unknown"]
    if refused:
        table = TableView(
            "Releases the gate refused: nothing was released; the rules that decided, and why",
            ("entry", "release", "kind", "requested by", "rules that decided"),
            tuple(
                (
                    _entry_cell(r.entry_id),
                    Cell(r.name or "", title=r.name or "", breaks=True),
                    Cell((r.kind or "").replace("_", " ")),
                    Cell(r.entry.requested_by if r.entry else ""),
                    Cell(rules_text(r.deciding, details=False)),
                )
                for r in refused
            ),
            css="refusals",
        )
        items.append(
            Item(
                title=f"Refused by the release gate ({len(refused)})",
                anchor="refused",
                text=f"The gate refused {len(refused)} release{'s' if len(refused) != 1 else ''}; its ledger entries "
                f"come from {given.source}.",
                tables=(table,),
                badges=(("badge-refused", f"{len(refused)} refused"),),
            )
        )
    elif given.available:
        items.append(
            Item(
                title="Refused by the release gate (0)",
                anchor="refused",
                text=f"The gate refused no release (its ledger entries come from {given.source}).",
            )
        )
    if unknown:
        ids = [r.entry_id for r in unknown]
        items.append(
            Item(
                title=f"Ledger entries without a document ({len(unknown)})",
                anchor="unexplained",
                text=f"released/ holds no file for ledger entries {', '.join(ids)}: each is a refused release (or a "
                "file that went missing). This report was built without the ledger entries, so their rules are not "
                f"shown here; build it with them: {LEDGER_HINT}.",
                tables=(
                    TableView(
                        "Ledger entries without a document in released/",
                        ("entry", "what the report knows"),
                        tuple((_entry_cell(i), Cell("no file in released/; the reason is in the ledger")) for i in ids),
                    ),
                ),
                badges=(("badge-refused", f"{len(unknown)} not explained here"),),
            )
        )
    if missing:
        items.append(
            Item(
                title=f"Released, but the file is missing ({len(missing)})",
                anchor="missing",
                text="The ledger records these releases, but released/ does not hold their files; run "
                "`kansrijk ledger verify WS` as the gate's user.",
                tables=(
                    TableView(
                        "Ledger entries whose released file is missing",
                        ("entry", "release", "kind"),
                        tuple(
                            (_entry_cell(r.entry_id), Cell(r.name or "", breaks=True), Cell(r.kind or ""))
                            for r in missing
                        ),
                    ),
                ),
            )
        )
    partial = [(r.release, withheld_parts(r.release)) for r in rows if r.release is not None]
    partial = [(r, what) for r, what in partial if what or r.status == "suppressed"]
    if partial:
        table = TableView(
            "Releases with values withheld: what was withheld, by which rule",
            ("entry", "release", "withheld", "rules that decided"),
            tuple(
                (
                    _entry_cell(r.ledger_entry),
                    Cell(r.name, title=r.name, breaks=True, href=shown_at.get(r.name, "")),
                    Cell(what or "some values"),
                    Cell(rules_text([v for v in r.verdicts if v.verdict != "pass"])),
                )
                for r, what in partial
            ),
            css="refusals",
        )
        items.append(
            Item(
                title=f"Released with values withheld ({len(partial)})",
                anchor="suppressed",
                text="Withheld values are shown as suppressed or withheld where the release appears; they are never "
                "estimated.",
                tables=(table,),
                badges=group_badges([r for r, _ in partial]),
                sources=tuple(r.name for r, _ in partial),
            )
        )
    not_modelled = [r for r in catalogue.base_rates if not catalogue.modelled(r.scope, r.by[0])]
    if not_modelled:
        table = TableView(
            "Outcomes the analysis plan did not model, with its reason; only their positive counts are released",
            ("outcome", "scope", "positives", "reason", "entry"),
            tuple(
                (
                    Cell(label(r.by[0])),
                    Cell(r.scope.label),
                    _positives_cell(r),
                    Cell(not_modelled_reason(r)),
                    _entry_cell(r.ledger_entry),
                )
                for r in not_modelled
            ),
        )
        items.append(
            Item(
                title=f"Outcomes not modelled ({len(not_modelled)})",
                anchor="not-modelled",
                tables=(table,),
                badges=group_badges(not_modelled),
                sources=tuple(r.name for r in not_modelled),
            )
        )
    return Section(
        "refusals",
        "Refusals and suppressions",
        intro,
        tuple(items),
        empty="Nothing was refused or suppressed, and every outcome was modelled.",
    )


def _positives_cell(r: Release) -> Cell:
    p = positives_of(r)
    if p.positives is None:
        return Cell("suppressed", "suppressed", p.why)
    return value_cell(p.positives, noisy=r.noisy)


__all__ = ["refusals_section", "withheld_parts"]
