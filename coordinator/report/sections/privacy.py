"""Privacy: the budget, the ledger head, and every ledger entry from 1 to the head, each with its decision, method,
ε, the rules that decided and where the report shows it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from kansrijk.policy.release import ReleasePolicy

from ..entries import LedgerRow
from ..fmt import MISSING, fmt_fraction
from ..released import Release
from ..view import Cell, TableView, rules_text

_METHOD = {"sdc": "SDC", "dp": "DP", "dp+sdc": "DP + SDC"}
_DECISION = {
    "released": "released",
    "suppressed": "suppressed in part",
    "refused": "refused",
    "missing": "file missing",
    "unknown": "no document",
}


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


def compute_budget(releases: Sequence[Release], policy: ReleasePolicy | None) -> Budget:
    spent = sum((r.epsilon for r in releases), Fraction(0))
    if policy is None or policy.dp is None:
        return Budget(spent=spent, total=None, dataset=policy.dataset if policy else None, per_release_max=None)
    return Budget(
        spent=spent,
        total=policy.dp.epsilon_total,
        dataset=policy.dataset,
        per_release_max=policy.dp.epsilon_per_release_max,
    )


def _rule_summary(row: LedgerRow) -> str:
    if row.decision == "unknown":
        return "not in released/: a refusal (or a missing file) whose rules are in the ledger"
    deciding = row.deciding
    if deciding:
        return rules_text(deciding, details=row.release is not None)
    rules = [v.rule for v in row.verdicts]
    return f"all {len(rules)} rules passed" if rules else "no rule recorded"


def ledger_table(rows: Sequence[LedgerRow], shown_at: dict[str, str]) -> TableView:
    """One row per ledger entry, 1 to the head: nothing in the numbering is left out."""
    cells = []
    for row in rows:
        r = row.release
        decision = row.decision
        css = "suppressed" if decision in ("suppressed", "refused", "missing", "unknown") else ""
        name = row.name or "(not in released/)"
        href = shown_at.get(name, "") if r is not None else ("#refusals" if decision != "released" else "")
        cells.append(
            (
                Cell(row.entry_id),
                Cell(name, title=name, breaks=True, href=href),
                Cell((row.kind or MISSING).replace("_", " ")),
                Cell(_DECISION[decision], css),
                Cell(_METHOD.get(r.method, r.method) if r is not None else MISSING),
                Cell(fmt_fraction(row.epsilon) if row.epsilon is not None else MISSING, "num"),
                Cell(_rule_summary(row), title=", ".join(v.rule for v in row.verdicts)),
            )
        )
    return TableView(
        "Every ledger entry, the decision, the rules that decided and the budget it spent (SDC: output checking; "
        "DP: differential privacy); a release's name links to where the report shows it",
        ("entry", "release", "kind", "decision", "method", "ε", "rules"),
        tuple(cells),
        css="ledger",
        row_ids=tuple(f"ledger-{row.entry_id}" for row in rows),
    )


__all__ = ["Budget", "compute_budget", "ledger_table"]
