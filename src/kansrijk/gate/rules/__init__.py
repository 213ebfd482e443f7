"""Output-checking rules for the cells of a table, one rule per file behind one small protocol (``CellRule``).

A rule says which kinds of table it applies to, which cell statistics it reads, which cells it withholds (a
polars expression over the cell table that is true for a cell to withhold) and why, in words a privacy officer
reads in the ledger. ``rules_for(kind)`` composes the rules of one kind; a kind without rules is refused (fails
closed), so a new table kind cannot slip through unchecked. Secondary suppression, differencing and the model
rules work on whole tables and releases and stay in ``kansrijk.gate.sdc`` and ``kansrijk.gate.release``.
"""

from __future__ import annotations

from kansrijk.gate.rules.all_values_same import AllValuesSame
from kansrijk.gate.rules.base import CellRule, NoRules
from kansrijk.gate.rules.nk_dominance import NkDominance
from kansrijk.gate.rules.p_percent import PPercent
from kansrijk.gate.rules.quantile import QuantileContributors, QuantileWindow
from kansrijk.gate.rules.threshold import Threshold

# The order is the order of the verdicts and of ``suppressed_by``: a cell is attributed to the first rule that hits.
TABLE_RULES: tuple[CellRule, ...] = (
    Threshold(),
    PPercent(),
    NkDominance(),
    QuantileContributors(),
    QuantileWindow(),
    AllValuesSame(),
)


def rules_for(kind: str) -> tuple[CellRule, ...]:
    """The cell rules of a table kind, in the order they are reported; ``NoRules`` when none applies."""
    chosen = tuple(rule for rule in TABLE_RULES if kind in rule.kinds)
    if not chosen:
        raise NoRules(f"no output-checking rule applies to {kind!r}: the gate refuses what it cannot check")
    return chosen


__all__ = ["TABLE_RULES", "CellRule", "NoRules", "rules_for"]
