"""The audit ledger and budget: tampering is detected, crashes leave everything consistent, and concurrent
processes never overspend."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
import subprocess
import sys
import textwrap
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import gate_workspace, signed_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kansrijk.errors import LedgerCorrupted
from kansrijk.gate.budget import budget_key
from kansrijk.gate.ledger import verify_ledger
from kansrijk.gate.release import Gate, Released
from kansrijk.gate.specs import CountSpec

REPO = Path(__file__).resolve().parents[2]


YEAR = 2023


def data(seed: int = 1, n: int = 2000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "sex": rng.choice(["M", "F"], n),
            "buurt_code": rng.choice([f"BU0599{i:04d}" for i in range(4)], n),
            "household_type": rng.choice(["two_parent", "single_parent", "other"], n),
        }
    )


def setup(tmp_path: Path, policy: str = "sdc-only", text: str | None = None) -> tuple[Path, Path, Path]:
    """A signed policy and a workspace whose linked dataset of 2023 is ``data()``."""
    target, pub, _ = signed_policy(tmp_path, policy, text)
    return gate_workspace(tmp_path, data()), target, pub


def populate(tmp_path: Path, releases: int = 4) -> Path:
    ws, policy, pub = setup(tmp_path)
    with Gate.open(ws, policy, [pub]) as gate:
        for i in range(releases):
            dims = ("sex",) if i % 2 else ("sex", "buurt_code")
            result = gate.release(CountSpec(name=f"t{i}", years=(YEAR,), by=dims), requested_by="analysis")
            assert isinstance(result, Released), result.reasons
        gate.release(CountSpec(name="x", years=(YEAR,), by=("sex",)), requested_by="intruder")  # a refusal
    return ws


def test_untouched_ledger_verifies(tmp_path):
    ws = populate(tmp_path)
    report = verify_ledger(ws)
    assert report.entries == 5 and report.files_checked == 8


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE ledger SET outcome = 'released' WHERE seq = 5",
        "UPDATE ledger SET requested_by = 'coordinator' WHERE seq = 2",
        "UPDATE ledger SET epsilon = '1/10' WHERE seq = 1",
        "DELETE FROM ledger WHERE seq = 2",
        "DELETE FROM ledger WHERE seq = 5",
        "UPDATE ledger SET seq = seq + 100 WHERE seq = 1",
        "UPDATE table_records SET cells = '[]' WHERE seq = 1",
        "INSERT INTO budget VALUES ('rotterdam-groeit', '1', '0')",
    ],
    ids=[
        "edit-outcome",
        "edit-requester",
        "edit-epsilon",
        "delete-middle",
        "delete-last",
        "renumber",
        "edit-differencing-record",
        "forge-budget",
    ],
)
def test_tampering_with_the_ledger_database_is_detected(tmp_path, sql):
    ws = populate(tmp_path)
    with sqlite3.connect(ws / "ledger.sqlite") as conn:
        conn.execute(sql)
    with pytest.raises(LedgerCorrupted):
        verify_ledger(ws)


def test_reordering_entries_is_detected(tmp_path):
    ws = populate(tmp_path)
    with sqlite3.connect(ws / "ledger.sqlite") as conn:
        rows = conn.execute("SELECT * FROM ledger ORDER BY seq").fetchall()
        conn.execute("DELETE FROM table_records")
        conn.execute("DELETE FROM ledger")
        a, b = rows[1], rows[2]
        swapped = [rows[0], (b[0] - 1, *b[1:]), (a[0] + 1, *a[1:]), *rows[3:]]
        conn.executemany(f"INSERT INTO ledger VALUES ({', '.join('?' * len(rows[0]))})", swapped)
    with pytest.raises(LedgerCorrupted):
        verify_ledger(ws)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    row=st.integers(1, 5),
    column=st.sampled_from(
        ["time", "release_name", "kind", "verdicts", "outputs", "policy_digest", "request_digest", "prev_hash"]
    ),
)
def test_any_single_field_edit_is_detected(tmp_path_factory, row, column):
    ws = populate(tmp_path_factory.mktemp("l"), releases=4)
    with sqlite3.connect(ws / "ledger.sqlite") as conn:
        conn.execute(f"UPDATE ledger SET {column} = {column} || 'x' WHERE seq = ?", (row,))
    with pytest.raises(LedgerCorrupted):
        verify_ledger(ws)


@pytest.mark.parametrize("action", ["edit", "delete", "extra"])
def test_released_files_must_match_their_entries(tmp_path, action):
    ws = populate(tmp_path)
    released = ws / "released"
    if action == "edit":
        (released / "t0.csv").write_text("sex,buurt_code,n\nF,BU05990000,3\n")
    elif action == "delete":
        (released / "t1.json").unlink()
    else:
        (released / "smuggled.csv").write_text("n\n3\n")
    with pytest.raises(LedgerCorrupted):
        verify_ledger(ws)


_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    import kansrijk.gate.release as release
    from kansrijk.gate.specs import CountSpec
    ws, policy, pub, point = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    def crash(name):
        if name == point:
            os._exit(70)
    release._fault_point = crash
    gate = release.Gate.open(ws, policy, [pub])
    gate.release(CountSpec(name="crashy", years=(2023,), by=("sex", "household_type")), requested_by="analysis")
    """
)


@pytest.mark.parametrize("point", ["after_pending_write", "before_commit", "after_commit"])
def test_a_crash_at_any_point_leaves_budget_ledger_and_files_consistent(tmp_path, point):
    ws, policy, pub = setup(tmp_path, "dp-sdc")
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = subprocess.run([sys.executable, str(script), str(ws), str(policy), str(pub), point], check=False)
    assert proc.returncode == 70
    with Gate.open(ws, policy, [pub]) as gate:  # recovery runs here
        state = gate.budget()
    report = verify_ledger(ws)
    assert state is not None
    if point == "after_commit":
        assert report.entries == 1 and state.epsilon_spent == Fraction(1, 10)
        assert (ws / "released" / "crashy.json").exists()
    else:
        assert report.entries == 0 and state.epsilon_spent == 0
        assert not any((ws / "released").glob("*crashy*"))


def _spend(args: tuple[str, str, str, int]) -> list[str]:
    ws, policy, pub, worker = args
    out = []
    with Gate.open(Path(ws), Path(policy), [Path(pub)]) as gate:
        for i in range(4):
            r = gate.release(CountSpec(name=f"w{worker}_{i}", years=(YEAR,), by=("sex",)), requested_by="analysis")
            out.append(type(r).__name__)
    return out


_TIGHT = (REPO / "policies/release/dp-sdc.toml").read_text().replace('epsilon_total = "4"', 'epsilon_total = "1"')


def test_eight_processes_spending_at_once_never_exceed_the_total(tmp_path):
    ws, policy, pub = setup(tmp_path, "dp-sdc", text=_TIGHT)
    ctx = mp.get_context("spawn")
    with ctx.Pool(8) as pool:
        results = pool.map(_spend, [(str(ws), str(policy), str(pub), w) for w in range(8)])
    released = sum(r.count("Released") + r.count("Suppressed") for r in results)
    report = verify_ledger(ws)
    assert released == 10  # 1 / (1/10): exactly the budget, never more
    assert report.epsilon_spent == {budget_key(ws): Fraction(1)}
    assert report.entries == 32


def test_budget_is_checked_before_opendp_is_called(tmp_path):
    text = _TIGHT.replace('epsilon_total = "1"', 'epsilon_total = "1/5"').replace(
        'epsilon_per_release_max = "0.5"', 'epsilon_per_release_max = "1/5"'
    )
    ws, policy, pub = setup(tmp_path, "dp-sdc", text=text)
    import kansrijk.gate.dp as dp_mod

    calls = []
    original = dp_mod.measure

    def counting(*a, **k):
        calls.append(1)
        return original(*a, **k)

    dp_mod.measure = counting
    try:
        with Gate.open(ws, policy, [pub]) as gate:
            first = gate.release(CountSpec(name="a", years=(YEAR,), by=("sex",)), requested_by="analysis")
            second = gate.release(CountSpec(name="b", years=(YEAR,), by=("sex",)), requested_by="analysis")
            third = gate.release(CountSpec(name="c", years=(YEAR,), by=("sex",)), requested_by="analysis")
    finally:
        dp_mod.measure = original
    assert isinstance(first, Released) and isinstance(second, Released) and not isinstance(third, Released)
    assert len(calls) == 2  # the refused request never reached OpenDP


def test_a_head_temp_file_left_by_a_killed_process_fails_verify_until_the_gate_recovers(tmp_path):
    ws = populate(tmp_path)
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = ws / "released" / f".LEDGER-HEAD.json.pid{dead.pid}.x1y2.tmp"
    stale.write_text("{}")
    with pytest.raises(LedgerCorrupted, match="unfinished release or head file"):
        verify_ledger(ws)
    _, policy, pub = setup(tmp_path)
    with Gate.open(ws, policy, [pub]):
        pass
    assert not stale.exists()
    assert verify_ledger(ws).entries == 5
