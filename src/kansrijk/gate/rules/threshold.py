"""Threshold: a cell of fewer than ``min_persons_per_cell`` persons is withheld
(ACRO, ABS rule of 10, Statistics Netherlands).

Zeros are disclosive too (everyone in the group lacks the attribute), and a zero is below the threshold, so this
rule also enforces ``zeros_are_disclosive``."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kansrijk.gate.rules.base import COUNT_KINDS, VALUE_KINDS
from kansrijk.policy.release import SdcRules


@dataclass(frozen=True)
class Threshold:
    name: str = "threshold"
    kinds: frozenset[str] = COUNT_KINDS | VALUE_KINDS
    needs: tuple[str, ...] = ("persons",)

    def mask(self, rules: SdcRules) -> pl.Expr:
        # distinct persons, not rows: over pooled years a person has a row per year (an empty cell holds none)
        return pl.col("persons").fill_null(0) < rules.min_persons_per_cell

    def reason(self, count: int, rules: SdcRules) -> str:
        return f"{count} cell(s) with fewer than {rules.min_persons_per_cell} persons (zeros included)"
