"""Linkage on hand-made partner frames: the full outer join, presence flags and the conflict resolution rule."""

from __future__ import annotations

from collections import Counter

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordinator.link import link_frames, report_from_frame

PARTNERS = ("cbs", "gemeente", "cjg", "duo")


def _p(i: int) -> bytes:
    return i.to_bytes(32, "big")


def _frame(rows: list[tuple[int, int | None, str | None]], **extra: list) -> pl.LazyFrame:
    data = {
        "pseudonym": [_p(i) for i, _, _ in rows],
        "year": [2023] * len(rows),
        "birth_year": [b for _, b, _ in rows],
        "sex": [s for _, _, s in rows],
        **extra,
    }
    return pl.DataFrame(data, schema_overrides={"year": pl.Int32, "birth_year": pl.Int32}).lazy()


def test_full_outer_join_keeps_every_person_once_with_presence_flags() -> None:
    tables = {
        "cbs": _frame([(1, 2010, "M"), (2, 2011, "F")], low_income=[True, False]),
        "gemeente": _frame([(2, 2011, "F"), (3, 2012, "M")], woz_eur=[100, 200]),
        "duo": _frame([(3, 2012, "M"), (4, 2009, "F")]),
    }
    linked = link_frames(tables, 2023).collect().sort("pseudonym")
    assert linked["pseudonym"].to_list() == [_p(1), _p(2), _p(3), _p(4)]
    assert linked["in_cbs"].to_list() == [True, True, False, False]
    assert linked["in_gemeente"].to_list() == [False, True, True, False]
    assert linked["in_cjg"].to_list() == [False, False, False, False]  # no table: all False
    assert linked["in_duo"].to_list() == [False, False, True, True]
    assert linked["woz_eur"].to_list() == [None, 100, 200, None]
    assert linked["age_years"].to_list() == [13, 12, 11, 14]
    assert linked["year"].unique().to_list() == [2023]
    assert not any("__" in c for c in linked.columns)  # per-partner copies are dropped


def test_majority_wins_then_cbs_breaks_ties_else_the_person_is_excluded() -> None:
    tables = {
        "cbs": _frame([(1, 2010, "M"), (2, 2010, "F"), (3, 2010, "F")]),
        "gemeente": _frame([(1, 2010, "F"), (2, 2010, "M"), (4, 2010, "F")]),
        "cjg": _frame([(1, 2010, "F"), (4, 2010, "M")]),
        "duo": _frame([(1, 2010, "F"), (3, 2010, "F")]),
    }
    linked = link_frames(tables, 2023).collect().sort("pseudonym")
    assert linked["sex"].to_list() == ["F", "F", "F", None]
    assert linked["resolution_sex"].cast(pl.String).to_list() == ["majority", "tiebreak", "agree", "unresolved"]
    assert linked["conflict_sex"].to_list() == [True, True, False, True]
    report = report_from_frame(linked, 2023, PARTNERS)
    assert report.excluded_unresolved == 1
    assert report.persons_in_dataset == 3
    assert report.conflicts["sex"].conflicts == 3
    assert report.conflicts["birth_year"].conflicts == 0
    assert report.only_at_partner == {"cbs": 0, "gemeente": 0, "cjg": 0, "duo": 0}
    assert sum(p["persons"] for p in report.overlap_patterns) == 4


def test_a_missing_attribute_is_not_a_conflict() -> None:
    tables = {"cbs": _frame([(1, None, "M")]), "duo": _frame([(1, 2012, None)])}
    linked = link_frames(tables, 2023).collect()
    assert linked["birth_year"].to_list() == [2012]
    assert linked["sex"].to_list() == ["M"]
    assert linked["conflict_birth_year"].to_list() == [False]


def test_table_without_pseudonym_is_refused() -> None:
    from kansrijk.errors import WorkspaceError

    with pytest.raises(WorkspaceError, match="no 'pseudonym' column"):
        link_frames({"cbs": pl.DataFrame({"year": [2023]}).lazy()}, 2023)


def _reference_rule(values: dict[str, str | None]) -> tuple[str | None, str]:
    """The documented rule, written plainly, to check the vectorised one against."""
    reported = {p: v for p, v in values.items() if v is not None}
    if not reported:
        return None, "missing"
    tally = Counter(reported.values())
    if len(tally) == 1:
        return next(iter(tally)), "agree"
    top = max(tally.values())
    leaders = [v for v, n in tally.items() if n == top]
    if len(leaders) == 1:
        return leaders[0], "majority"
    if "cbs" in reported and reported["cbs"] in leaders:
        return reported["cbs"], "tiebreak"
    return None, "unresolved"


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(*[st.sampled_from(["M", "F", None])] * 4), min_size=1, max_size=30))
def test_vectorised_resolution_matches_the_documented_rule(rows: list[tuple[str | None, ...]]) -> None:
    tables = {}
    for k, partner in enumerate(PARTNERS):
        present = [(i, 2010, row[k]) for i, row in enumerate(rows) if row[k] is not None]
        if present:
            tables[partner] = _frame(present)
    if not tables:
        return
    linked = link_frames(tables, 2023).collect()
    got = {
        int.from_bytes(p, "big"): (s, str(r))
        for p, s, r in linked.select("pseudonym", "sex", "resolution_sex").iter_rows()
    }
    for i, row in enumerate(rows):
        if all(v is None for v in row):
            assert i not in got
            continue
        assert got[i] == _reference_rule(dict(zip(PARTNERS, row, strict=True)))
