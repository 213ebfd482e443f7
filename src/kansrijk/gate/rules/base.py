"""The protocol every cell rule follows."""

from __future__ import annotations

from typing import Protocol

import polars as pl

from kansrijk.errors import GateError
from kansrijk.policy.release import SdcRules


class NoRules(GateError):
    """No output-checking rule applies to a table kind: refused rather than released unchecked."""


class CellRule(Protocol):
    """One output-checking rule over the cells of a table."""

    name: str  # the rule's name in verdicts and the ledger
    kinds: frozenset[str]  # the table kinds it applies to
    needs: tuple[str, ...]  # the cell statistics it reads (computed by kansrijk.gate.sdc.compute_cells)

    def mask(self, rules: SdcRules) -> pl.Expr:
        """True for every cell the rule withholds."""
        ...

    def reason(self, count: int, rules: SdcRules) -> str:
        """Why ``count`` cells were withheld, for the privacy officer."""
        ...


COUNT_KINDS = frozenset({"frequency_table", "histogram"})
VALUE_KINDS = frozenset({"mean_table", "sum_table"})
QUANTILE_KINDS = frozenset({"quantile"})
