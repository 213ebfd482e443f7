"""The analysis through the gate service, in one process tree: ``coordinator analyse --gate-socket`` prints the
summary the in-process command prints and releases through the service; two analyses at once are serialised;
a service stopped mid-analysis stops between two releases; files the service writes have the modes the
deployment needs whatever the caller's umask."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from analysis_workspace import LIGHT_PLAN, PASS, Prepared, build_workspace
from service_kit import serving, wait_for
from typer.testing import CliRunner

from coordinator.analysis.run import SummaryLine
from coordinator.service import client
from coordinator.service.protocol import AnalyseResult
from kansrijk.cli import app
from kansrijk.errors import InputError, PolicyNotSigned, ServiceError
from kansrijk.gate.ledger import entries, open_existing, verify_ledger

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prepared]:
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", PASS)
    try:
        yield build_workspace(tmp_path_factory.mktemp("gate_service"), persons=3_000, years=(2023,),
                              plan_edits=LIGHT_PLAN)  # fmt: skip
    finally:
        mp.undo()


@pytest.fixture
def p(prepared: Prepared, tmp_path: Path) -> Prepared:
    """The module's workspace as it was before any analysis, copied for this test alone."""
    ws = tmp_path / "ws"
    shutil.copytree(prepared.ws, ws)
    return dataclasses.replace(prepared, ws=ws)


def _serving(p: Prepared, socket_path: Path):
    return serving(p.ws, p.signed / "release.toml", p.officer / "officer.pub", socket_path)


def _ledger_names(ws: Path) -> list[str]:
    if not (ws / "ledger.sqlite").is_file():
        return []
    conn = open_existing(ws)
    try:
        return [e.release_name for e in entries(conn) if e.requested_by == "analysis"]
    finally:
        conn.close()


def test_analyse_through_the_gate_socket_prints_the_summary_and_the_service_writes_the_files(p, tmp_path):
    runner, sock = CliRunner(), tmp_path / "gate.sock"
    plan, factors = str(p.signed / "plan.toml"), str(p.signed / "factors.toml")
    old = os.umask(0o077)  # a strict caller: the service still makes released files world-readable
    try:
        with _serving(p, sock):
            result = runner.invoke(app, ["coordinator", "analyse", "--plan", plan, "--factors", factors,
                                         "--gate-socket", str(sock), "--json"])  # fmt: skip
            assert result.exit_code == 0, result.output
            doc = json.loads(result.stdout)
            assert set(doc) == {"plan_digest", "factors_digest", "seconds", "model_fits", "verdicts", "releases"}
            empty = SummaryLine("", "", "", "", "", "", "", "").to_json()
            assert all(set(line) == set(empty) for line in doc["releases"])
            assert [line["name"] for line in doc["releases"]] == _ledger_names(p.ws)
            assert sum(doc["verdicts"].values()) == len(doc["releases"]) and doc["verdicts"]["released"] > 0

            for line in doc["releases"]:
                if line["verdict"] != "refused":
                    assert (p.ws / "released" / f"{line['name']}.json").stat().st_mode & 0o777 == 0o644
            assert (p.ws / "ledger.sqlite").stat().st_mode & 0o777 == 0o600

            # the operator's other questions
            status = runner.invoke(app, ["gate", "status", "--socket", str(sock), "--json"])
            assert status.exit_code == 0, status.output
            assert json.loads(status.stdout)["ledger"]["entries"] >= len(doc["releases"])
            shown = runner.invoke(app, ["gate", "ledger", "--socket", str(sock)])
            assert shown.exit_code == 0 and "head: L" in shown.stdout
            pinged = runner.invoke(app, ["gate", "ping", "--socket", str(sock)])
            assert pinged.exit_code == 0 and str(p.ws.resolve()) in pinged.stdout.replace("\n", "")

            # the operator's report: a copy of released/ and the ledger entries the service gives (in deployment
            # the ledger database is the gate user's alone); every entry has its row, every refusal is shown
            only = tmp_path / "operator" / "ws"
            shutil.copytree(p.ws / "released", only / "released")
            out = tmp_path / "report.html"
            report = runner.invoke(app, ["coordinator", "report", str(only), "--out", str(out), "--gate-socket",
                                         str(sock)])  # fmt: skip
            assert report.exit_code == 0, report.output
            assert "ledger entries from: the gate service's ledger" in report.output
            html = out.read_text(encoding="utf-8").replace("<wbr>", "")
            head = json.loads((p.ws / "released" / "LEDGER-HEAD.json").read_text())["seq"]
            assert html.count('<tr id="ledger-L') == head
            refusals = html[html.index('id="refusals"') : html.index('id="privacy"')]
            for line in doc["releases"]:
                if line["verdict"] == "refused":
                    assert line["name"] in refusals

            # the same exit codes as in-process: an altered plan is refused by the signature check (4)
            altered = tmp_path / "plan.toml"
            altered.write_text((p.signed / "plan.toml").read_text() + "\n# altered\n")
            (tmp_path / "plan.toml.sig").write_bytes((p.signed / "plan.toml.sig").read_bytes())
            refused = runner.invoke(app, ["coordinator", "analyse", "--plan", str(altered), "--factors", factors,
                                          "--gate-socket", str(sock)])  # fmt: skip
            assert refused.exit_code == PolicyNotSigned.exit_code, refused.output
            assert "changed after it was signed" in refused.output

            # options the service decides itself are refused, as is another workspace
            for extra in (["--release-policy", str(p.signed / "release.toml")],
                          ["--officer-key", str(p.officer / "officer.pub")], [str(tmp_path)]):  # fmt: skip
                args = ["coordinator", "analyse", *extra, "--plan", plan, "--gate-socket", str(sock)]
                wrong = runner.invoke(app, args)
                assert wrong.exit_code == InputError.exit_code, wrong.output
    finally:
        os.umask(old)
    assert verify_ledger(p.ws).entries > 0


def test_two_analyses_at_once_are_serialised_and_the_ledger_verifies(p, tmp_path) -> None:
    sock = tmp_path / "gate.sock"
    results: dict[int, object] = {}
    notes: list[str] = []

    def run(i: int) -> None:
        try:
            results[i] = client.analyse(sock, p.signed / "plan.toml", p.signed / "factors.toml", note=notes.append)
        except Exception as exc:
            results[i] = exc

    with _serving(p, sock):
        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert client.ping(sock)
    assert all(isinstance(r, AnalyseResult) for r in results.values()), results
    assert notes == ["waiting for the analysis in progress to finish"]
    verify_ledger(p.ws)


def test_a_service_stopped_mid_analysis_stops_between_releases(p, tmp_path) -> None:
    sock = tmp_path / "gate.sock"
    outcome: dict[str, object] = {}
    started = threading.Event()

    def run() -> None:
        try:
            outcome["result"] = client.analyse(sock, p.signed / "plan.toml", p.signed / "factors.toml",
                                               progress=lambda _n: started.set())  # fmt: skip
        except Exception as exc:
            outcome["error"] = exc

    with _serving(p, sock) as server:
        thread = threading.Thread(target=run)
        thread.start()
        wait_for(started.is_set, timeout=120)
        server.stop()
        thread.join(120)
    error = outcome.get("error")
    assert isinstance(error, ServiceError) and error.exit_code == 40 and "stopping" in str(error), outcome
    assert not sock.exists()
    verify_ledger(p.ws)  # whatever was released before the stop is whole and recorded
