"""(n,k) dominance: a sum or mean is withheld when its n largest contributions make up k or more of the total
(Bundesbank RDSC k = 0.85; ``>=`` as ACRO v1)."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kansrijk.gate.rules.base import VALUE_KINDS
from kansrijk.policy.release import SdcRules


@dataclass(frozen=True)
class NkDominance:
    name: str = "nk_dominance"
    kinds: frozenset[str] = VALUE_KINDS
    needs: tuple[str, ...] = ("n", "sum", "topn_sum")

    def mask(self, rules: SdcRules) -> pl.Expr:
        total = pl.col("sum")
        return (pl.col("n") > 0) & (total > 0) & (pl.col("topn_sum") >= rules.nk_k * total)

    def reason(self, count: int, rules: SdcRules) -> str:
        return f"{count} cell(s) where the {rules.nk_n} largest contributions are >= {rules.nk_k:.0%} of the total"
