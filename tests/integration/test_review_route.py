"""The review route from the command line, as the three roles use it: the analyst asks (`review request`), the
privacy officer reads (`review show`) and signs (`review approve` / `reject`), the operator applies (`review
apply`); the approved output is released with the approval in the ledger entry and in the report."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import GATE_PASSPHRASE, gate_workspace, signed_policy
from typer.testing import CliRunner

from kansrijk import crypto
from kansrijk.cli import app
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import CountSpec


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def site(tmp_path: Path) -> dict:
    wijk = ["WK059901"] * 300 + [f"WK0599{10 + i:02d}" for i in range(20) for _ in range(5)]
    rng = np.random.default_rng(2)
    ws = gate_workspace(tmp_path, pl.DataFrame({"wijk_code": wijk, "sex": rng.choice(["M", "F"], len(wijk)).tolist()}))
    policy, pub, sk = signed_policy(tmp_path, "sdc-only")
    os.environ.setdefault("KANSRIJK_SCRYPT_LOG2N", "14")
    key = tmp_path / "officer.key"
    crypto.write_secret_key(key, "ed25519-signing", sk, GATE_PASSPHRASE, label="privacy officer")
    with Gate.open(ws, policy, [pub]) as gate:
        refused = gate.release(CountSpec(name="by_wijk", years=(2023,), by=("wijk_code",)), requested_by="analysis")
    assert refused.outcome == "refused"
    trust = ["--release-policy", str(policy), "--officer-key", str(pub)]
    return {"ws": ws, "trust": trust, "key": key, "entry": refused.entry_id, "tmp": tmp_path}


def test_the_review_route_end_to_end(site) -> None:
    ws, trust = str(site["ws"]), site["trust"]
    asked = run("review", "request", ws, "--entry", site["entry"], "--justification",
                "counts per district for the youth plan; small districts stay withheld", *trust, "--json")  # fmt: skip
    assert asked.exit_code == 0, asked.output
    review = json.loads(asked.stdout)
    assert review["status"] == "requested" and review["refused"][0]["rule"] == "max_suppressed_share"
    shown = run("review", "show", ws, review["review"])
    assert "refused by:     max_suppressed_share" in shown.stdout and '"wijk_code"' in shown.stdout
    listed = [json.loads(x) for x in run("review", "list", ws, "--json").stdout.splitlines()]
    assert [x["status"] for x in listed] == ["requested"]
    approval = site["tmp"] / "R000001.json"
    signed = run("review", "approve", ws, review["review"], "--key", str(site["key"]), "--out", str(approval))
    assert signed.exit_code == 0 and approval.is_file(), signed.output
    applied = run("review", "apply", ws, str(approval), *trust, "--json")
    assert applied.exit_code == 0, applied.output
    outcome = json.loads(applied.stdout)
    assert outcome["outcome"] == "suppressed" and outcome["review"]["status"] == "released"
    entries = [json.loads(x) for x in run("ledger", "show", ws, "--json").stdout.splitlines()]
    last = entries[-1]
    assert last["release"] == "by_wijk" and last["epsilon"] == "0"
    assert any(v["rule"] == "officer_review" and "review R000001 approved" in v["reason"] for v in last["verdicts"])
    verified = run("ledger", "verify", ws)
    assert verified.exit_code == 0 and "1 officer review(s)" in verified.stdout
    again = run("review", "apply", ws, str(approval), *trust)
    assert again.exit_code == 28 and "used once" in again.stderr
    report = site["tmp"] / "report.html"
    assert run("coordinator", "report", ws, "--out", str(report)).exit_code == 0
    assert "officer_review (pass): review R000001 approved by privacy officer" in report.read_text(encoding="utf-8")


def test_a_rejection_is_recorded_and_releases_nothing(site) -> None:
    ws, trust = str(site["ws"]), site["trust"]
    why = "counts per district for the youth plan; small districts stay withheld"
    assert run("review", "request", ws, "--entry", site["entry"], "--justification", why, *trust).exit_code == 0
    no_reason = run("review", "reject", ws, "R000001", "--key", str(site["key"]), "--out", str(site["tmp"] / "r.json"))
    assert no_reason.exit_code == 27 and "needs a reason" in no_reason.stderr
    rejection = site["tmp"] / "rejected.json"
    assert run("review", "reject", ws, "R000001", "--key", str(site["key"]), "--out", str(rejection), "--note",
               "twenty districts of five persons say too much").exit_code == 0  # fmt: skip
    applied = run("review", "apply", ws, str(rejection), *trust)
    assert applied.exit_code == 0 and "rejected and recorded; nothing released" in applied.stdout
    assert not (site["ws"] / "released" / "by_wijk.json").exists()
    assert json.loads(run("review", "show", ws, "R000001", "--json").stdout)["status"] == "rejected"


def test_a_request_for_an_entry_that_was_released_is_refused(site) -> None:
    with Gate.open(site["ws"], Path(site["trust"][1]), [Path(site["trust"][3])]) as gate:
        ok = gate.release(CountSpec(name="by_sex", years=(2023,), by=("sex",)), requested_by="analysis")
    result = run("review", "request", str(site["ws"]), "--entry", ok.entry_id, "--justification",
                 "a justification long enough to be recorded", *site["trust"])  # fmt: skip
    assert result.exit_code == 27 and "not refused: nothing to review" in result.stderr
