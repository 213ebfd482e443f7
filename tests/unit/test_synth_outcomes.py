"""The outcome definitions: declared in the shipped study file, derived by kansrijk.outcomes."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from kansrijk.outcomes import OUTCOME_NAMES, OUTCOMES, derive_outcomes, outcome
from kansrijk.synth.outcomes_model import sdq_clinical_cutoffs

SDQ_CLINICAL_CUTOFFS = sdq_clinical_cutoffs()


def sdq_cutoff(age: int) -> float | None:
    return outcome("psychosocial_risk").threshold_for_age(age)


def test_sdq_cutoffs_cover_ages_4_to_18_without_gaps_within_the_dutch_range() -> None:
    ages = [a for band in SDQ_CLINICAL_CUTOFFS for a in range(band.min_age, band.max_age + 1)]
    assert ages == list(range(4, 19))
    assert all(10 <= band.above <= 14 for band in SDQ_CLINICAL_CUTOFFS)
    assert [b.above for b in SDQ_CLINICAL_CUTOFFS] == sorted((b.above for b in SDQ_CLINICAL_CUTOFFS), reverse=True)


@settings(deadline=None)  # a wall-clock limit per example fails at random on a loaded CI machine
@given(st.integers(min_value=1990, max_value=2030), st.integers(min_value=0, max_value=40))
def test_psychosocial_risk_expression_matches_the_cutoff_table(birth_year: int, total: int) -> None:
    year = 2023
    frame = pl.DataFrame({"year": [year], "birth_year": [birth_year], "sdq_total": [total]})
    got = derive_outcomes(frame, ("psychosocial_risk",)).collect()["psychosocial_risk"].item()
    cut = sdq_cutoff(year - birth_year)
    assert got == (None if cut is None else total > cut)


def test_outcomes_are_null_outside_their_population() -> None:
    frame = pl.DataFrame(
        {
            "year": [2023, 2023, 2023],
            "birth_year": [2015, 2008, 2001],
            "sdq_total": [20, None, None],
            "school_type": ["primary", "secondary", "mbo"],
            "repeated_grade": [True, False, False],
            "track_change": [None, "down", None],
            "early_school_leaver": [False, False, True],
            "crime_suspect": [False, True, True],
        }
    )
    out = derive_outcomes(frame).collect()
    assert out["psychosocial_risk"].to_list() == [True, None, None]
    assert out["grade_repetition"].to_list() == [True, False, None]
    assert out["track_down"].to_list() == [None, True, None]
    assert out["track_up"].to_list() == [None, False, None]
    assert out["early_school_leaving"].to_list() == [None, False, True]
    assert out["delinquency"].to_list() == [None, True, True]


def test_missing_source_variables_skip_the_outcome() -> None:
    out = derive_outcomes(pl.DataFrame({"year": [2023], "birth_year": [2008], "crime_suspect": [True]})).collect()
    assert "delinquency" in out.columns and "psychosocial_risk" not in out.columns


def test_every_outcome_names_its_partner_and_probability_column() -> None:
    assert tuple(OUTCOMES) == tuple(OUTCOME_NAMES)
    assert {o.partner for o in OUTCOMES.values()} == {"cjg", "duo", "cbs"}
    assert OUTCOMES["delinquency"].probability_column == "p_delinquency"
