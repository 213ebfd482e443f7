"""The study file: loaded, validated with errors that name the key path, derived declaratively, and a policy of
another study refused with an error that names both studies."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kansrijk.errors import PolicyError
from kansrijk.outcomes import derive_outcomes, outcome
from kansrijk.policy.analysis import load_analysis_plan
from kansrijk.policy.sharing import load_sharing_policy
from kansrijk.policy.signing import load_policy
from kansrijk.schema import PARTNERS, VARIABLES, schema_version
from kansrijk.study import active_study, load_study, use_study

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "policies" / "studies" / "rotterdam-groeit" / "study.toml"
SECOND = ROOT / "policies" / "studies" / "utrecht-jeugdmonitor" / "study.toml"


def _edited(tmp_path: Path, source: Path, old: str, new: str) -> Path:
    text = source.read_text(encoding="utf-8")
    assert old in text, old
    copy = tmp_path / source.parent.name / "study.toml"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_text(text.replace(old, new, 1), encoding="utf-8")
    # the factor model (and the other files) are named relative to the study file: keep them reachable
    for other in source.parent.iterdir():
        if other.name != "study.toml" and not (copy.parent / other.name).exists():
            (copy.parent / other.name).symlink_to(other)
    return copy


def test_the_schema_follows_the_active_study_and_its_digest_is_the_schema_version() -> None:
    second = load_study(SECOND)
    before = (tuple(PARTNERS), schema_version())
    with use_study(second):
        assert tuple(PARTNERS) == second.partners and "loneliness_score" in VARIABLES
        assert schema_version() == second.digest != before[1]
        assert outcome("loneliness").partner == "ggd"
    assert (tuple(PARTNERS), schema_version()) == before  # the previous study is active again


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'holders = ["cbs"]\n\n[variables.household_type]',
            'holders = ["cbz"]\n\n[variables.household_type]',
            r"variables\.migration_background\.holders: \['cbz'\] are not partners",
        ),
        (
            "pattern = '^BU0599\\d{4}$'",
            "pattern = '^BU9999\\d{4}$'",
            r"variables\.buurt_code\.pattern: a code pattern names the municipality code 0599",
        ),
        (
            'derivation = { rule = "equals", value = "up" }',
            'derivation = { rule = "in", values = ["upp"] }',
            r"outcomes\.track_up\.derivation\.values: 'upp' is not a category of track_change",
        ),
        (
            'conditions = { school_type = ["secondary"] }',
            'conditions = { school_kind = ["secondary"] }',
            r"outcomes\.track_up\.at_risk\.conditions: 'school_kind' is not a canonical variable",
        ),
        ('tiebreak_partner = "cbs"', 'tiebreak_partner = "police"', r"tiebreak_partner: 'police' is not a partner"),
    ],
)
def test_a_broken_study_is_refused_naming_the_key_path(tmp_path: Path, old: str, new: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        load_study(_edited(tmp_path, SHIPPED, old, new))


def test_a_missing_study_file_is_a_policy_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=re.escape(f"{tmp_path / 'nowhere' / 'study.toml'}: study file not found")):
        load_study(tmp_path / "nowhere" / "study.toml")


def test_policies_of_another_study_are_refused_naming_both_studies() -> None:
    plan = ROOT / "policies" / "analysis" / "rotterdam-groeit.toml"
    with use_study(load_study(SECOND)):
        with pytest.raises(PolicyError, match=r"study: this file belongs to study 'rotterdam-groeit', but the active "
                           r"study is 'utrecht-jeugdmonitor'"):  # fmt: skip
            load_analysis_plan(plan)
        with pytest.raises(PolicyError, match="belongs to study 'rotterdam-groeit'"):
            load_sharing_policy(ROOT / "policies" / "sharing" / "cbs.toml")
        load_analysis_plan(SECOND.parent / "analysis.toml")  # its own plan loads
    with pytest.raises(PolicyError, match="belongs to study 'utrecht-jeugdmonitor'"):
        load_analysis_plan(SECOND.parent / "analysis.toml")


def test_policy_check_knows_the_study_kind() -> None:
    kind, model = load_policy(SHIPPED)
    assert kind == "study" and model.name == active_study().name == "rotterdam-groeit"


@settings(deadline=None, max_examples=60)
@given(
    compare=st.sampled_from(["above", "at_least", "below"]),
    limit=st.integers(min_value=0, max_value=10),
    score=st.one_of(st.none(), st.integers(min_value=0, max_value=10)),
    age=st.integers(min_value=0, max_value=25),
)
def test_a_threshold_outcome_is_derived_as_declared(
    tmp_path_factory, compare: str, limit: int, score, age: int
) -> None:
    path = _edited(
        tmp_path_factory.mktemp("s"),
        SECOND,
        'derivation = { rule = "threshold", compare = "at_least", value = 7 }',
        f'derivation = {{ rule = "threshold", compare = "{compare}", value = {limit} }}',
    )
    with use_study(load_study(path)):
        frame = pl.DataFrame({"year": [2023], "birth_year": [2023 - age], "loneliness_score": [score]},
                             schema_overrides={"loneliness_score": pl.Int32})  # fmt: skip
        got = derive_outcomes(frame, ("loneliness",)).collect()["loneliness"].item()
    at_risk = 10 <= age <= 18 and score is not None
    expected = (
        {"above": score > limit, "at_least": score >= limit, "below": score < limit}[compare] if at_risk else None
    )
    assert got == expected


def test_policy_explain_says_the_study_in_words() -> None:
    from typer.testing import CliRunner

    from kansrijk.cli import app

    result = CliRunner().invoke(app, ["policy", "explain", str(SHIPPED)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "psychosocial_risk: true when sdq_total is above the cut-off for the person's age (ages 4-5: 14;" in text
    assert (
        "track_up: true when track_change is up; among pupils in secondary school (DUO) (ages 4-23, school_type" in text
    )
    assert "a tie is settled by cbs" in text
