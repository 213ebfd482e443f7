"""Class disclosure: a cell where every contributor has the same value tells each of them everyone's value
(ACRO). For quantiles the same holds: every level is that one value."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kansrijk.gate.rules.base import QUANTILE_KINDS, VALUE_KINDS
from kansrijk.policy.release import SdcRules


@dataclass(frozen=True)
class AllValuesSame:
    name: str = "all_values_same"
    kinds: frozenset[str] = VALUE_KINDS | QUANTILE_KINDS
    needs: tuple[str, ...] = ("n", "all_same")

    def mask(self, rules: SdcRules) -> pl.Expr:
        return (pl.col("n") > 0) & pl.col("all_same").fill_null(False)

    def reason(self, count: int, rules: SdcRules) -> str:
        return f"{count} cell(s) where every contributor has the same value (class disclosure)"
