"""Quantiles: an order statistic is one person's value. A group needs ``min_quantile_contributors`` persons, and
every level is released as the mean of the threshold-many values nearest it with at least the threshold on each
side, the windows of different levels disjoint (``kansrijk.gate.sdc.quantile_windows``); a group where that is
impossible is withheld."""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from kansrijk.gate.rules.base import QUANTILE_KINDS
from kansrijk.policy.release import SdcRules


@dataclass(frozen=True)
class QuantileContributors:
    name: str = "quantile_contributors"
    kinds: frozenset[str] = QUANTILE_KINDS
    needs: tuple[str, ...] = ("persons",)

    def mask(self, rules: SdcRules) -> pl.Expr:
        return pl.col("persons").fill_null(0) < max(rules.min_persons_per_cell, rules.min_quantile_contributors)

    def reason(self, count: int, rules: SdcRules) -> str:
        return f"{count} group(s) with fewer than {rules.min_quantile_contributors} contributors"


@dataclass(frozen=True)
class QuantileWindow:
    name: str = "quantile_window"
    kinds: frozenset[str] = QUANTILE_KINDS
    needs: tuple[str, ...] = ("window_ok",)

    def mask(self, rules: SdcRules) -> pl.Expr:
        return ~pl.col("window_ok").fill_null(False)

    def reason(self, count: int, rules: SdcRules) -> str:
        return (
            f"{count} group(s) too small for a mean of {rules.min_quantile_contributors} values per level with as "
            f"many persons on each side (or with levels whose windows overlap)"
        )
