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


# --- the DPIA annex -----------------------------------------------------------------------------------------------
def _signed_copy(tmp_path: Path) -> tuple[Path, Path, Path]:
    """policies/ copied and signed by a fresh officer key: (policies dir, release policy, officer.pub)."""
    import os
    import shutil

    os.environ.setdefault("KANSRIJK_SCRYPT_LOG2N", "14")
    copy = tmp_path / "policies"
    shutil.copytree(POLICIES, copy, ignore=shutil.ignore_patterns("*.sig"))
    assert run("policy", "keygen", "--out", str(tmp_path / "officer")).exit_code == 0
    key = tmp_path / "officer" / "officer.key"
    # The shipped study's policies only: another study's files are refused while this one is active (they name
    # their own study), so the officer signs them with that study active.
    other_studies = [d for d in (copy / "studies").iterdir() if d.name != "rotterdam-groeit"]
    for path in sorted(copy.rglob("*.toml")):
        if any(path.is_relative_to(d) for d in other_studies):
            continue
        assert run("policy", "sign", str(path), "--key", str(key)).exit_code == 0, path
    return copy, copy / "release" / "dp-sdc.toml", tmp_path / "officer" / "officer.pub"


def test_dpia_writes_the_annex_from_the_signed_policies(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    policies, release, officer = _signed_copy(tmp_path)
    out = tmp_path / "annex.md"
    args = ["policy", "dpia", "--policies", str(policies), "--release-policy", str(release), "--threat-model",
            str(REPO / "docs" / "threat-model.md"), "--officer-key", str(officer), "--out", str(out)]  # fmt: skip
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["partners"] == ["cbs", "cjg", "duo", "gemeente"] and all(s["signer"] for s in doc["sources"])
    text = out.read_text(encoding="utf-8")
    for needed in (
        "### gemeente", "**Purpose:** Link neighbourhood", "**Legal basis:** Art. 6(1)(e) GDPR",
        "WOZ_waarde → woz_eur", "rounded to 1000", "**Never shared** (asserted absent from every bundle): Straat",
        "**Retention:** until 2026-12-31", "**DP budget:** ε at most 4 in total", "What ε means for one person",
        "| frequency_table | output checking, then differential privacy (ε 0.1 per release) |",
        "## 5. Mitigations (threat model)", "replay an old bundle",
    ):  # fmt: skip
        assert needed in text, needed
    again = run(*args)
    assert again.exit_code == 8 and "exists already" in again.stderr
    assert run(*args, "--force").exit_code == 0 and out.read_text(encoding="utf-8") == text  # same inputs, same annex


def test_dpia_refuses_a_policy_that_is_not_signed_and_writes_nothing(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    policies, release, officer = _signed_copy(tmp_path)
    sharing = policies / "sharing" / "cjg.toml"
    sharing.write_text(sharing.read_text(encoding="utf-8").replace("round_to = 0.1", "round_to = 0.01"))
    out = tmp_path / "annex.md"
    result = run("policy", "dpia", "--policies", str(policies), "--release-policy", str(release), "--threat-model",
                 str(REPO / "docs" / "threat-model.md"), "--officer-key", str(officer), "--out", str(out))  # fmt: skip
    assert result.exit_code == 4 and "cjg.toml" in result.stderr and not out.exists()


# --- the ledger as the officer reads it -------------------------------------------------------------------------
def _released_ledger(tmp_path: Path) -> Path:
    """A workspace whose gate released three noisy count tables (ε 1/10 each) under dp-sdc, one with a long name."""
    import numpy as np
    import polars as pl
    from gate_kit import gate_workspace, signed_policy

    from kansrijk.gate.release import Gate
    from kansrijk.gate.specs import CountSpec

    rng = np.random.default_rng(3)
    frame = pl.DataFrame({"sex": rng.choice(["M", "F"], 4000).tolist(), "age_years": rng.integers(0, 24, 4000)})
    ws = gate_workspace(tmp_path, frame)
    policy, officer, _ = signed_policy(tmp_path, "dp-sdc")
    with Gate.open(ws, policy, [officer]) as gate:
        for name in ("a_rather_long_release_name_that_a_narrow_table_used_to_cut.by_sex", "by_sex_2", "by_sex_3"):
            gate.release(CountSpec(name=name, years=(2023,), by=("sex",)), requested_by="coordinator")
    return ws


def test_ledger_show_json_is_json_lines_and_the_table_keeps_names_whole(tmp_path) -> None:
    ws = _released_ledger(tmp_path)
    result = run("ledger", "show", str(ws), "--json")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    entries = [json.loads(line) for line in lines]  # every line is one whole JSON object
    assert len(lines) == len(entries) == 3 and entries[0]["epsilon"] == "1/10"
    table = run("ledger", "show", str(ws))
    assert "a_rather_long_release_name_that_a_narrow_table_used_to_cut.by_sex" in table.stdout
    assert "0.1" in table.stdout and "1/10" not in table.stdout and "…" not in table.stdout


def test_ledger_verify_writes_epsilon_as_every_other_command_does_and_has_json(tmp_path) -> None:
    ws = _released_ledger(tmp_path)
    result = run("ledger", "verify", str(ws))
    assert result.exit_code == 0, result.output
    assert "ε 0.3" in result.stdout and "3/10" not in result.stdout
    doc = json.loads(run("ledger", "verify", str(ws), "--json").stdout)
    assert doc["verified"] and doc["entries"] == 3 and list(doc["epsilon_spent"].values()) == ["3/10"]
    assert len(doc["head_hash"]) == 64 and doc["head_hash"] in result.stdout  # never cut
