"""A privacy officer following docs/privacy-officer.md: a policy past a floor is refused naming the rule, the floor
and where it comes from; diff shows an invalid proposal and judges every change; explain speaks of epsilon in
terms of one person and explains sharing policies; the DPIA annex; the ledger as JSON Lines."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from kansrijk.cli import app

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies"


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def proposal(tmp_path: Path, base: str, *edits: tuple[str, str]) -> Path:
    text = (POLICIES / base).read_text(encoding="utf-8")
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    path = tmp_path / Path(base).name
    path.write_text(text, encoding="utf-8")
    return path


# --- floors ---------------------------------------------------------------------------------------------------
def test_a_policy_below_a_floor_names_the_rule_the_floor_and_its_source(tmp_path) -> None:
    low = proposal(tmp_path, "release/sdc-only.toml", ("min_persons_per_cell = 10", "min_persons_per_cell = 5"))
    for command in (["policy", "check", str(low)], ["policy", "explain", str(low)]):
        result = run(*command)
        assert result.exit_code == 3, result.output
        assert "sdc.min_persons_per_cell: 5 is below the floor 10" in result.output
        assert "rule: persons per cell" in result.output and "the floor comes from ACRO" in result.output
        assert "set 10 or more" in result.output and "Input should be" not in result.output


# --- diff -----------------------------------------------------------------------------------------------------
def test_diff_shows_an_invalid_proposal_and_calls_every_loosening_looser(tmp_path) -> None:
    proposed = proposal(
        tmp_path,
        "release/sdc-only.toml",
        ("min_persons_per_cell = 10", "min_persons_per_cell = 5"),
        ('allowed = ["coordinator", "analysis", "linkage-report"]',
         'allowed = ["coordinator", "analysis", "linkage-report", "intern"]'),
    )  # fmt: skip
    result = run("policy", "diff", str(POLICIES / "release/sdc-only.toml"), str(proposed), "--json")
    assert result.exit_code == 0, result.output
    diff = json.loads(result.stdout)
    assert diff["after"]["valid"] is False and "below the floor 10" in diff["after"]["problems"][0]
    effects = {c["key"]: (c["effect"], c["why"]) for c in diff["changes"]}
    assert effects["sdc.min_persons_per_cell"][0] == "looser"
    assert effects["requesters.allowed"] == ("looser", "requester(s) added: intern")
    text = run("policy", "diff", str(POLICIES / "release/sdc-only.toml"), str(proposed))
    assert "does not validate (it cannot be signed)" in text.stdout and "2 looser" in text.stdout


def test_diff_calls_dp_removed_looser_and_prints_text_as_written() -> None:
    result = run("policy", "diff", str(POLICIES / "release/dp-sdc.toml"), str(POLICIES / "release/sdc-only.toml"))
    assert result.exit_code == 0
    assert "\\u2014" not in result.stdout and "Rotterdam Groeit — output checking only" in result.stdout
    diff = json.loads(run("policy", "diff", str(POLICIES / "release/dp-sdc.toml"),
                          str(POLICIES / "release/sdc-only.toml"), "--json").stdout)  # fmt: skip
    by_key = {c["key"]: c for c in diff["changes"]}
    assert by_key["dp.epsilon_total"]["effect"] == "looser" and "DP removed" in by_key["dp.epsilon_total"]["why"]
    assert by_key["title"]["effect"] == "no privacy effect"
    assert {c["effect"] for c in diff["changes"]} <= {"stricter", "looser", "no privacy effect"}
    back = json.loads(run("policy", "diff", str(POLICIES / "release/sdc-only.toml"),
                          str(POLICIES / "release/dp-sdc.toml"), "--json").stdout)  # fmt: skip
    assert {c["key"]: c["effect"] for c in back["changes"]}["dp.epsilon_total"] == "stricter"


def test_diff_of_a_sharing_policy_judges_a_new_column_and_a_lifted_never_share(tmp_path) -> None:
    proposed = proposal(
        tmp_path,
        "sharing/gemeente.toml",
        ('never_share = ["Straat", "Huisnummer", "Postcode"]', 'never_share = ["Straat", "Huisnummer"]'),
        ("round_to = 1000", "round_to = 100"),
    )
    diff = json.loads(run("policy", "diff", str(POLICIES / "sharing/gemeente.toml"), str(proposed), "--json").stdout)
    effects = {c["key"]: c["effect"] for c in diff["changes"]}
    assert effects == {"never_share": "looser", "columns.WOZ_waarde.round_to": "looser"}


# --- explain --------------------------------------------------------------------------------------------------
def test_explain_says_what_epsilon_means_for_a_person() -> None:
    result = run("policy", "explain", str(POLICIES / "release/dp-sdc.toml"))
    assert result.exit_code == 0
    assert "What epsilon means for one person" in result.stdout
    assert "by at most a factor e^0.1 = 1.105" in result.stdout and "1 in 100" in result.stdout


def test_explain_explains_a_sharing_policy() -> None:
    result = run("policy", "explain", str(POLICIES / "sharing/gemeente.toml"))
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Sharing policy of partner 'gemeente'" in out and "Purpose:" in out and "Legal basis:" in out
    assert "Geboortedatum → birth_year" in out and "as the year only" in out
    assert "WOZ_waarde → woz_eur" in out and "rounded to 1000" in out
    assert "Never shared (asserted absent from every bundle): Straat, Huisnummer, Postcode." in out
