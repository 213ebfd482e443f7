"""The cell rules behind one protocol: every table kind has rules, every rule's statistics are computed for the
kinds it applies to, and a kind without rules is refused rather than released unchecked."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from kansrijk.gate.requests import CountTable, Histogram, MeanTable, QuantileRequest, SumTable
from kansrijk.gate.rules import TABLE_RULES, NoRules, rules_for
from kansrijk.gate.sdc import compute_cells, primary_masks
from kansrijk.policy.release import SdcRules

RULES = SdcRules()


def _requests() -> list:
    rng = np.random.default_rng(2)
    data = pl.DataFrame({"sex": rng.choice(["M", "F"], 300), "woz_eur": rng.integers(1, 10**6, 300).astype(float)})
    return [
        CountTable(name="c", data=data, by=("sex",)),
        Histogram(name="h", data=data, value="woz_eur", edges=(0, 5e5, 1e6)),
        MeanTable(name="m", data=data, value="woz_eur", by=("sex",)),
        SumTable(name="s", data=data, value="woz_eur", by=("sex",)),
        QuantileRequest(name="q", data=data, value="woz_eur", quantiles=(0.5,), by=("sex",)),
    ]


@pytest.mark.parametrize("request_", _requests(), ids=lambda r: r.kind)
def test_every_table_kind_has_rules_whose_statistics_are_computed(request_) -> None:
    cells, _, _ = compute_cells(request_, RULES)
    masks = primary_masks(cells, request_, RULES)
    assert list(masks) == [r.name for r in rules_for(request_.kind)] and masks
    for rule in rules_for(request_.kind):
        assert set(rule.needs) <= set(cells.columns), rule.name
        assert cells.select(rule.mask(RULES)).to_series().dtype == pl.Boolean


def test_a_kind_without_rules_fails_closed() -> None:
    with pytest.raises(NoRules, match="refuses what it cannot check"):
        rules_for("new_kind_nobody_wrote_rules_for")


def test_every_rule_has_a_unique_name_and_a_reason_that_names_the_count() -> None:
    names = [r.name for r in TABLE_RULES]
    assert len(names) == len(set(names))
    for rule in TABLE_RULES:
        assert rule.kinds and rule.needs
        assert "7" in rule.reason(7, RULES)


def test_the_threshold_rule_withholds_exactly_the_cells_below_the_floor() -> None:
    cells = pl.DataFrame({"n": [0, 1, 9, 10, 11], "persons": [0, 1, 9, 10, 11]})
    rule = next(r for r in TABLE_RULES if r.name == "threshold")
    assert cells.select(rule.mask(RULES)).to_series().to_list() == [True, True, True, False, False]
