"""What every operator relies on to script kansrijk: --json where a script needs it (JSON Lines where results
stream), flags that do not look like they take a value, digests that survive a pipe, and `make help` that says
how to install and run the command."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from operator_kit import REPO, make_partner, make_workspace, operator_env, register, run
from unit.node_samples import gemeente_rows, write_gemeente

from kansrijk.cli import app


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in operator_env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def sealed(tmp_path: Path) -> dict:
    ws = make_workspace(tmp_path)
    gemeente = make_partner(tmp_path, "gemeente", ws / "keys" / "coordinator-hpke.pub")
    register(ws, gemeente)
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(25))
    text = run(*gemeente.prepare_args(extract))
    assert text.exit_code == 0, text.output
    (bundle,) = gemeente.outbox.glob("*.kbundle")
    return {"ws": ws, "partner": gemeente, "bundle": bundle, "prepare_text": text.stdout, "tmp": tmp_path}


def test_digests_are_printed_whole_on_one_line_when_piped(sealed) -> None:
    line = next(x for x in sealed["prepare_text"].splitlines() if x.startswith("digest:"))
    assert re.fullmatch(r"digest:\s+sha256:[0-9a-f]{64}", line), line


def test_ingest_json_is_one_line_per_bundle_with_refusals_too(sealed) -> None:
    ws, bundle = sealed["ws"], sealed["bundle"]
    missing = sealed["tmp"] / "missing.kbundle"
    result = run("coordinator", "ingest", str(ws), str(bundle), str(bundle), str(missing), "--json")
    lines = [json.loads(x) for x in result.stdout.splitlines()]
    assert [x["ingested"] for x in lines] == [True, False, False]
    assert lines[0]["partner"] == "gemeente" and lines[0]["rows"] == 25 and lines[0]["year"] == 2023
    assert (lines[1]["error"], lines[1]["exit_code"]) == ("ReplayedBundle", 15)
    assert (lines[2]["error"], lines[2]["exit_code"]) == ("InputError", 2)
    assert result.exit_code == 15  # the first refusal's code, as without --json


def test_link_status_and_policy_commands_speak_json(sealed, tmp_path) -> None:
    ws = sealed["ws"]
    assert run("coordinator", "ingest", str(ws), str(sealed["bundle"])).exit_code == 0
    linked = json.loads(run("coordinator", "link", str(ws), "--json").stdout)
    assert linked["years"][0]["persons_in_dataset"] == 25
    checked = run("policy", "check", str(REPO / "policies/release/sdc-only.toml"),
                  str(REPO / "policies/sharing/gemeente.toml"), "--json")  # fmt: skip
    assert [json.loads(x)["valid"] for x in checked.stdout.splitlines()] == [True, True]
    assert run("policy", "keygen", "--out", str(tmp_path / "officer")).exit_code == 0
    policy = tmp_path / "sdc-only.toml"
    policy.write_bytes((REPO / "policies/release/sdc-only.toml").read_bytes())
    assert run("policy", "sign", str(policy), "--key", str(tmp_path / "officer/officer.key")).exit_code == 0
    verified = json.loads(
        run("policy", "verify", str(policy), "--officer-key", str(tmp_path / "officer/officer.pub"), "--json").stdout
    )
    assert verified["verified"] and verified["digest"].startswith("sha256:")


@pytest.mark.parametrize(
    "command", [["node", "inspect"], ["coordinator", "status"], ["ledger", "show"], ["node", "prepare"]]
)
def test_flags_are_not_shown_as_taking_a_value(command) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "<bool>" not in result.output and "--json" in result.output
    assert "<path>" in result.output or "PATH" in result.output.upper()  # options that take a value keep their type


def test_make_help_says_how_to_install_and_run_kansrijk() -> None:
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    install = next(line for line in out.splitlines() if line.startswith("make install"))
    assert ".venv/bin/kansrijk" in install and "activate" in install
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "`make install`" in readme and ".venv/bin/kansrijk" in readme
