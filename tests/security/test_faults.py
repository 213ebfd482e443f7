"""kill -9 at every step of ingest, link and release, then recovery.

Each case runs the real library code in a child process and SIGKILLs it at a chosen point. The code has no
fault hooks except the gate's ``_fault_point``, so the child wraps the function that marks the point (the temp
file written, inside the SQLite transaction, after the rename but before the commit, ...) with one that sends
SIGKILL to its own process: deterministic, no timing. The parent then checks:

- the child really died of SIGKILL;
- the step can be retried and succeeds (ingest: every bundle ingested once; link: every year linked);
- ``kansrijk ledger verify`` passes (hash chain, budget = sum of recorded releases, released files = entries);
- no orphan files: every table and dataset file is recorded in the state database with its digest, and no temp or
  pending file is left anywhere in the workspace.

Eight concurrent processes never overspending is proven by ``tests/unit/test_gate_ledger.py``.
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from attack_kit import PASS, Coordinator, coordinator
from typer.testing import CliRunner

from coordinator.ingest import IngestSession
from coordinator.link import gate_release_hook, link_workspace
from kansrijk import bundle, crypto
from kansrijk.cli import app
from kansrijk.crypto import sha256_hex
from kansrijk.errors import ReplayedBundle
from kansrijk.policy.signing import sign_policy

REPO = Path(__file__).resolve().parents[2]

_CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    step, point, ws, passphrase, policy, pub, *bundles = sys.argv[1:]

    def kill(*_a, **_k):
        os.kill(os.getpid(), signal.SIGKILL)

    def before(module, name):
        setattr(module, name, kill)

    def after(module, name):
        original = getattr(module, name)
        def wrapped(*a, **k):
            result = original(*a, **k)
            kill()
            return result
        setattr(module, name, wrapped)

    import polars as pl
    import coordinator.ingest as ingest
    import coordinator.link as link
    import kansrijk.gate.release as release

    if point.startswith("gate:"):
        wanted = point[5:]
        release._fault_point = lambda name: kill() if name == wanted else None
    elif point == "ingest:read":
        before(ingest, "_read_bundle")
    elif point == "ingest:tmp_written":
        real_chmod = os.chmod
        def chmod(path, mode, *a, **k):
            if str(path).endswith(".tmp"):
                kill()
            return real_chmod(path, mode, *a, **k)
        ingest.os.chmod = chmod
    elif point == "ingest:in_transaction":
        before(ingest, "now_utc")
    elif point == "ingest:renamed_not_committed":
        after(ingest, "_fsync_dir")
    elif point == "link:writing_dataset":
        pl.DataFrame.write_parquet = kill
    elif point == "link:dataset_written":
        before(link, "atomic_write_bytes")
    elif point == "link:before_state":
        before(link, "write_state")

    if step == "ingest":
        from coordinator.ingest import IngestSession
        session = IngestSession.open(Path(ws), passphrase)
        for b in bundles:
            outcome = session.ingest(Path(b))
            if point == "ingest:between_bundles":
                kill()
    elif step == "link":
        link.link_workspace(Path(ws), release=link.gate_release_hook(Path(policy), [Path(pub)]))
    elif step == "release":  # DP counts over the workspace's linked dataset
        from kansrijk.gate.specs import CountSpec
        with release.Gate.open(Path(ws), Path(policy), [Path(pub)]) as gate:
            gate.release(CountSpec(name="first", years=(2023,), by=("sex",)), requested_by="analysis")
            gate.release(CountSpec(name="second", years=(2023,), by=("sex",)), requested_by="analysis")
    sys.exit(3)  # the kill point was never reached
    """
)

INGEST_POINTS = [
    "ingest:read",
    "ingest:tmp_written",
    "ingest:in_transaction",
    "ingest:renamed_not_committed",
    "ingest:between_bundles",
]
LINK_POINTS = ["link:writing_dataset", "link:dataset_written", "link:before_state"]
RELEASE_POINTS = ["gate:after_pending_write", "gate:before_commit", "gate:after_commit"]


def _setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Coordinator, list[Path], Path, Path]:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", PASS)  # the workspace's: its gate key too (children inherit it)
    c = coordinator(tmp_path)
    first = c.seal(extract_id="cbs-2023", rows=300)
    second = c.seal(extract_id="cbs-2024", year=2024, previous=bundle.bundle_digest(first), rows=300, seed=2)
    paths = [c.write(first, "cbs-2023.kbundle"), c.write(second, "cbs-2024.kbundle")]
    sk, pk = crypto.generate_signing_key()
    pub = tmp_path / "officer.pub"
    crypto.write_public_key(pub, "ed25519-signing", pk, label="officer")
    policy = tmp_path / "dp-sdc.toml"
    policy.write_text((REPO / "policies/release/dp-sdc.toml").read_text())
    sign_policy(policy, sk)
    return c, paths, policy, pub


def _kill(step: str, point: str, c: Coordinator, bundles: list[Path], policy: Path, pub: Path) -> int:
    script = c.tmp / "child.py"
    script.write_text(_CHILD)
    args = [sys.executable, str(script), step, point, str(c.ws), PASS, str(policy), str(pub), *map(str, bundles)]
    proc = subprocess.run(args, check=False, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, f"{point}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.returncode


def _ingest_all(c: Coordinator, bundles: list[Path]) -> None:
    session = IngestSession.open(c.ws, PASS)
    for path in bundles:
        outcome = session.ingest(path)
        assert outcome.ok or isinstance(outcome.error, ReplayedBundle), outcome.error


def _orphans(ws: Path) -> list[str]:
    """Files no record accounts for: tables and datasets without a state row (or with another digest), and any
    temp or pending file."""
    db = sqlite3.connect(f"file:{ws / 'state.sqlite'}?mode=ro", uri=True)
    tables = {r[0]: r[1] for r in db.execute("SELECT table_path, table_sha256 FROM bundles")}
    datasets = {r[0] for r in db.execute("SELECT dataset_path FROM link_runs")}
    db.close()
    problems = []
    for p in ws.rglob("*"):
        rel = str(p.relative_to(ws))
        if p.is_file() and (p.name.endswith(".tmp") or p.name.startswith((".pending.", "."))):
            problems.append(f"temp file {rel}")
        elif p.is_file() and rel.startswith("tables/") and tables.get(rel) != "sha256:" + sha256_hex(p.read_bytes()):
            problems.append(f"unrecorded table {rel}")
        elif p.is_file() and rel.startswith("dataset/linkage/"):  # a year's linkage flags go with its dataset
            if f"dataset/{p.name}" not in datasets:
                problems.append(f"unrecorded linkage flags {rel}")
        elif p.is_file() and rel.startswith("dataset/") and p.name[:4].isdigit() and rel not in datasets:
            problems.append(f"unrecorded dataset {rel}")
    return problems


def _verify_cli(ws: Path) -> str:
    result = CliRunner().invoke(app, ["ledger", "verify", str(ws)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    "point",
    [*INGEST_POINTS],
)
def test_kill_9_during_ingest_then_retry_ingests_everything_once_with_no_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally, point: str
) -> None:
    c, bundles, policy, pub = _setup(tmp_path, monkeypatch)
    _kill("ingest", point, c, bundles, policy, pub)
    tally.fault(f"SIGKILL at {point}", False)  # replaced once recovery is proven
    _ingest_all(c, bundles)
    db = sqlite3.connect(c.ws / "state.sqlite")
    rows = db.execute("SELECT extract_id FROM bundles ORDER BY seq").fetchall()
    integrity = db.execute("PRAGMA integrity_check").fetchone()[0]
    db.close()
    orphans = _orphans(c.ws)
    ok = [r[0] for r in rows] == ["cbs-2023", "cbs-2024"] and integrity == "ok" and not orphans
    tally.cases.clear()
    tally.node.user_properties.clear()
    tally.fault(f"SIGKILL at {point}", ok)
    assert ok, (rows, integrity, orphans)


def _ingested(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Coordinator, list[Path], Path, Path]:
    c, bundles, policy, pub = _setup(tmp_path, monkeypatch)
    _ingest_all(c, bundles)
    return c, bundles, policy, pub


def _linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Coordinator, list[Path], Path, Path]:
    """Ingested and linked (without releasing the linkage report): the gate reads WS/dataset/<year>.parquet."""
    c, bundles, policy, pub = _ingested(tmp_path, monkeypatch)
    link_workspace(c.ws)
    return c, bundles, policy, pub


@pytest.mark.parametrize("point", LINK_POINTS)
def test_kill_9_during_link_then_relink_leaves_a_verified_ledger_and_no_orphans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally, point: str
) -> None:
    c, bundles, policy, pub = _ingested(tmp_path, monkeypatch)
    _kill("link", point, c, bundles, policy, pub)
    tally.fault(f"SIGKILL at {point} (link)", False)
    result = link_workspace(c.ws, release=gate_release_hook(policy, [pub]))
    verified = _verify_cli(c.ws)
    orphans = _orphans(c.ws)
    ok = [y.year for y in result.years] == [2023, 2024] and "ledger verified" in verified and not orphans
    tally.cases.clear()
    tally.node.user_properties.clear()
    tally.fault(f"SIGKILL at {point} (link)", ok)
    assert ok, orphans


@pytest.mark.parametrize("point", RELEASE_POINTS)
def test_kill_9_during_a_release_leaves_budget_equal_to_the_recorded_releases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally, point: str
) -> None:
    from fractions import Fraction

    from kansrijk.gate.ledger import verify_ledger
    from kansrijk.gate.release import Gate

    c, bundles, policy, pub = _linked(tmp_path, monkeypatch)
    _kill("release", point, c, bundles, policy, pub)
    with Gate.open(c.ws, policy, [pub]) as gate:  # the next open recovers
        state = gate.budget()
    report = verify_ledger(c.ws)
    _verify_cli(c.ws)
    released = sorted(p.name for p in (c.ws / "released").iterdir() if not p.name.startswith("LEDGER"))
    expected_entries = 1 if point == "gate:after_commit" else 0
    ok = (
        state is not None
        and report.entries == expected_entries
        and state.epsilon_spent == Fraction(expected_entries, 10)
        and report.epsilon_spent.get(state.dataset, Fraction(0)) == state.epsilon_spent
        and released == (["first.csv", "first.json"] if expected_entries else [])
        and not _orphans(c.ws)
    )
    tally.fault(f"SIGKILL at {point} (release)", ok)
    assert ok, (report, state, released)


_RELEASER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import polars as pl
    from kansrijk.gate.release import Gate
    from kansrijk.gate.specs import CountSpec, where
    ws, policy, pub, tag = sys.argv[1:]
    with Gate.open(Path(ws), Path(policy), [Path(pub)]) as gate:
        print("open", flush=True)
        for i in range(10_000):
            by = ("sex",) if i % 2 else ("sex", "low_income")
            years = (2023,) if i % 3 else (2023, 2024)
            population = (where("birth_year", ">=", 2005 + i % 5),)
            gate.release(CountSpec(name=f"{tag}_{i}", years=years, population=population, by=by),
                         requested_by="analysis")
    """
)


@pytest.mark.parametrize("seed", [1, 2])
def test_kill_9_of_concurrent_releasers_at_random_moments_keeps_ledger_and_budget_consistent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tally, seed: int
) -> None:
    """Three processes release DP tables (count specs over the workspace's linked datasets of 2023 and 2024,
    single and pooled years, varying populations) into one workspace at once; each is SIGKILLed at a random
    moment (a seeded delay after its gate opened, so somewhere inside a release, its commit or its file renames).
    Whenever the kills land, the next open must recover a ledger whose chain, budget and files agree."""
    import random
    import time
    from fractions import Fraction

    from kansrijk.gate.ledger import verify_ledger
    from kansrijk.gate.release import Gate

    c, _, policy, pub = _linked(tmp_path, monkeypatch)
    script = c.tmp / "releaser.py"
    script.write_text(_RELEASER)
    rng = random.Random(seed)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(c.ws), str(policy), str(pub), f"p{k}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(3)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "open", proc.stderr
        for proc in procs:
            time.sleep(rng.uniform(0.05, 0.8))
            proc.send_signal(signal.SIGKILL)
        codes = [proc.wait(timeout=120) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    with Gate.open(c.ws, policy, [pub]) as gate:  # the next open recovers
        state = gate.budget()
    report = verify_ledger(c.ws)
    _verify_cli(c.ws)
    released = {p.name for p in (c.ws / "released").iterdir() if not p.name.startswith("LEDGER")}
    ok = (
        codes == [-signal.SIGKILL] * 3
        and report.entries > 0
        and state is not None
        and report.epsilon_spent.get(state.dataset, Fraction(0)) == state.epsilon_spent
        and len(released) == 2 * sum(1 for name in released if name.endswith(".json"))
        and not _orphans(c.ws)
    )
    tally.fault(f"SIGKILL of 3 concurrent releasers at random moments (seed {seed}, {report.entries} entries)", ok)
    assert ok, (codes, report, state, sorted(released)[:10], _orphans(c.ws))
