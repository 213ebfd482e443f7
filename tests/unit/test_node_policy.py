"""Sharing policies: the shipped four parse, and every mistake is reported with file, key path and problem."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kansrijk.errors import PolicyError
from kansrijk.policy.sharing import load_sharing_policy
from kansrijk.schema import VARIABLES

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "sharing"

NEVER = {
    "cbs": set(),
    "gemeente": {"Straat", "Huisnummer", "Postcode"},
    "cjg": {"opmerking"},
    "duo": {"BRIN"},
}


@pytest.mark.parametrize("partner", ["cbs", "gemeente", "cjg", "duo"])
def test_shipped_policies_parse_and_share_only_canonical_variables(partner):
    policy, digest = load_sharing_policy(POLICIES / f"{partner}.toml")
    assert policy.partner == partner
    assert digest.startswith("sha256:") and len(digest) == 71
    assert set(policy.never_share) == NEVER[partner]
    assert set(policy.shared_variables) <= set(VARIABLES) - {"pseudonym"}
    assert {"year", "birth_year", "sex"} <= set(policy.shared_variables)
    # the birth date is only ever shared as a year (or year and month)
    assert all(
        spec.generalise in ("year", "year_month") for spec in policy.columns.values() if spec.effective_parse == "date"
    )


def test_cjg_shares_sdq_scores_not_items():
    policy, _ = load_sharing_policy(POLICIES / "cjg.toml")
    assert {"sdq_total", "sdq_prosocial"} <= set(policy.shared_variables)
    assert not any(v.startswith("sdq_0") for v in policy.shared_variables)


def _variant(tmp_path: Path, partner: str, old: str, new: str) -> Path:
    text = (POLICIES / f"{partner}.toml").read_text(encoding="utf-8")
    assert old in text, old
    path = tmp_path / f"{partner}.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "partner,old,new,where,what",
    [
        ("gemeente", 'variable = "sex"', 'variable = "gender"', "columns.Geslacht.variable", "not a canonical"),
        ("gemeente", "max_fault_rate = 0.02", "max_fault_rate = 2", "max_fault_rate", "less than or equal"),
        ("gemeente", 'separator = ";"', 'separator = ";;"', "input.separator", "at most 1 character"),
        ("gemeente", 'encoding = "utf-8"', 'encoding = "ebcdic"', "input.encoding", "'utf-8'"),
        ("gemeente", "round_to = 1000", "round_to = -5", "columns.WOZ_waarde.round_to", "greater than 0"),
        (
            "gemeente",
            'values = { M = "M", V = "F" }',
            'values = { M = "M", V = "W" }',
            "columns.Geslacht",
            "not categories of sex",
        ),
        (
            "cjg",
            'variable = "birth_year"\ngeneralise = "year"',
            'variable = "birth_year"\nparse = "date"',
            "columns.geboortedatum",
            "must be generalised",
        ),
        ("duo", "reviewed_on = 2024-05-24", 'reviewed_on = "last week"', "reviewed_on", "date"),
        ("duo", 'name = "track_not_primary"', 'name = "Track Not Primary"', "rules.3.name", "pattern"),
        ("cbs", 'partner = "cbs"', 'partner = "belastingdienst"', "partner", "unknown partner"),
        ("cbs", "[columns.jaar]", "[columns.jaar]\nshare = true", "columns.jaar.share", "Extra inputs"),
    ],
)
def test_policy_errors_name_file_key_path_and_problem(tmp_path, partner, old, new, where, what):
    path = _variant(tmp_path, partner, old, new)
    with pytest.raises(PolicyError) as info:
        load_sharing_policy(path)
    message = str(info.value)
    assert str(path) in message
    assert where in message
    assert what in message


def test_mapping_a_never_share_column_is_refused(tmp_path):
    path = _variant(
        tmp_path,
        "gemeente",
        "[columns.Buurtcode]",
        '[columns.Postcode]\nvariable = "buurt_code"\n\n[columns.Buurtcode_x]',
    )
    with pytest.raises(PolicyError, match=r"never_share columns \['Postcode'\] are also mapped"):
        load_sharing_policy(path)


def test_two_columns_producing_one_variable_is_refused(tmp_path):
    path = _variant(
        tmp_path,
        "gemeente",
        '[columns.Wijkcode]\nvariable = "wijk_code"',
        '[columns.Wijkcode]\nvariable = "buurt_code"',
    )
    with pytest.raises(PolicyError, match="produced by more than one column"):
        load_sharing_policy(path)


def test_missing_file_and_broken_toml_name_the_file(tmp_path):
    with pytest.raises(PolicyError, match="not found"):
        load_sharing_policy(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("partner = \n", encoding="utf-8")
    with pytest.raises(PolicyError, match=f"{bad}: not valid TOML"):
        load_sharing_policy(bad)


@settings(max_examples=40, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_max_fault_rate_outside_zero_one_is_always_refused(rate):
    text = (
        (POLICIES / "duo.toml")
        .read_text(encoding="utf-8")
        .replace("max_fault_rate = 0.02", f"max_fault_rate = {rate!r}")
    )
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "duo.toml"
        path.write_text(text, encoding="utf-8")
        if 0 <= rate <= 1:
            assert load_sharing_policy(path)[0].max_fault_rate == rate
        else:
            with pytest.raises(PolicyError, match="max_fault_rate"):
                load_sharing_policy(path)


def test_digest_changes_with_any_byte(tmp_path):
    _, original = load_sharing_policy(POLICIES / "cbs.toml")
    path = _variant(tmp_path, "cbs", "max_fault_rate = 0.01", "max_fault_rate = 0.01 ")
    assert load_sharing_policy(path)[1] != original
