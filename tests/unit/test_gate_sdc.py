"""Output-checking rules, property-based: nothing below the threshold is ever released, and no withheld cell
can be recomputed from the margins."""

from __future__ import annotations

import numpy as np
import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kansrijk.gate.requests import CountTable, SumTable
from kansrijk.gate.sdc import check_table, exposed_cells, secondary_suppression
from kansrijk.policy.release import SdcRules

RULES = SdcRules()

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)
tables = shapes.flatmap(lambda s: arrays(np.int64, s, elements=st.integers(0, 60)))


@settings(max_examples=200, deadline=None)
@given(values=tables)
def test_no_released_cell_is_below_threshold_and_no_withheld_cell_can_be_pinned(values):
    primary = values < RULES.min_persons_per_cell
    full = secondary_suppression(values, primary)
    assert (full | ~primary).all()  # primary cells stay withheld
    assert (values[~full] >= RULES.min_persons_per_cell).all()
    assert exposed_cells(values, full).size == 0 or full.all()


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(0, 40), min_size=4, max_size=4),
    extra=st.lists(st.integers(0, 40), min_size=3, max_size=3),
)
def test_count_table_from_person_rows_never_releases_a_small_cell(counts, extra):
    rows = []
    for i, c in enumerate(counts):
        rows += [("M", f"b{i}")] * c
    for i, c in enumerate(extra):
        rows += [("F", f"b{i}")] * c
    if not rows:
        return
    df = pl.DataFrame(rows, schema=["sex", "buurt"], orient="row")
    check = check_table(CountTable(name="t", data=df, by=("sex", "buurt")), RULES)
    released = check.cells.filter(~pl.col("suppressed"))
    assert (released["n"] >= RULES.min_persons_per_cell).all()


def _sum_table(values: list[float]) -> pl.DataFrame:
    return check_table(
        SumTable(name="s", data=pl.DataFrame({"g": ["a"] * len(values), "v": values}), value="v", by=()), RULES
    ).cells


def test_nk_rule_uses_greater_or_equal_at_085():
    exactly = [80.0, 5.0] + [1.0] * 15  # the top two are exactly 85% of the total (100)
    below = [80.0, 4.9, 0.1] + [1.0] * 15  # 84.9%
    assert _sum_table(exactly)["suppressed_by"][0] == "nk_dominance"
    assert not _sum_table(below)["suppressed"][0]


def test_p_percent_rule():
    # top1 = 100, top2 = 1, the rest 9 -> rest / top1 = 0.09 < 0.10
    values = [100.0, 1.0] + [1.0] * 9 + [0.0]
    assert _sum_table(values)["suppressed"][0]


@settings(max_examples=50, deadline=None)
@given(values=st.lists(st.floats(0, 1e6, allow_nan=False), min_size=10, max_size=40))
def test_dominance_flags_match_their_definitions(values):
    cells = _sum_table(values)
    total = sum(values)
    top = sorted(values, reverse=True)
    nk = total > 0 and top[0] + top[1] >= 0.85 * total
    p = top[0] > 0 and (total - top[0] - top[1]) < 0.10 * top[0]
    same = len(set(values)) == 1
    if nk or p or same:
        assert cells["suppressed"][0]
