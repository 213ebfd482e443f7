"""p% rule: a sum or mean is withheld when the others' total is within p of the largest contribution, because
the second-largest contributor could then estimate the largest to within p (ACRO ``safe_pratio_p``)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kansrijk.gate.rules.base import VALUE_KINDS
from kansrijk.policy.release import SdcRules


@dataclass(frozen=True)
class PPercent:
    name: str = "p_percent"
    kinds: frozenset[str] = VALUE_KINDS
    needs: tuple[str, ...] = ("n", "sum", "top1", "top2_sum")

    def mask(self, rules: SdcRules) -> pl.Expr:
        top1 = pl.col("top1")
        rest = pl.col("sum") - pl.col("top2_sum")
        return (pl.col("n") > 0) & (top1 > 0) & (rest < rules.p_percent * top1)

    def reason(self, count: int, rules: SdcRules) -> str:
        return f"{count} cell(s) where the others' total is within {rules.p_percent:.0%} of the largest value"
