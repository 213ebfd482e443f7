"""The gate's differencing rule with populations: a request that names its persons (the pseudonym column) is
compared with earlier releases that did too by the persons each population has that the other lacks; model
outputs take part with the person counts they carry. Real SQLite, real signed policies."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import add_workspace_identity, signed_policy

from kansrijk.errors import LedgerCorrupted
from kansrijk.gate.ledger import verify_ledger
from kansrijk.gate.release import Gate, Refused, Released
from kansrijk.gate.requests import CountTable, ModelMetrics, RequestInvalid


def make_gate(tmp_path: Path) -> Gate:
    target, pub, _ = signed_policy(tmp_path, "sdc-only")
    ws = tmp_path / "ws"
    add_workspace_identity(ws)
    return Gate.open(ws, target, [pub])


def people(n: int = 3000, seed: int = 11) -> pl.DataFrame:
    """One row per person, with a 32-byte pseudonym like the linked dataset's."""
    rng = np.random.default_rng(seed)
    keys = rng.integers(0, 256, (n, 32), dtype=np.uint8)
    return pl.DataFrame(
        {
            "pseudonym": pl.Series([bytes(row) for row in keys], dtype=pl.Binary),
            "sex": rng.choice(["M", "F"], n),
            "buurt": rng.choice(list("abcd"), n),
            "flag": rng.random(n) < 0.3,
        }
    )


def table(name: str, df: pl.DataFrame, by: tuple[str, ...], *, persons: bool = True) -> CountTable:
    return CountTable(name=name, data=df.select(by), by=by, persons=df["pseudonym"] if persons else None)


def metrics(name: str, df: pl.DataFrame, *, persons: bool = True, outcome: str = "flag") -> ModelMetrics:
    return ModelMetrics(
        name=name,
        metrics={"roc_auc": 0.7},
        n=df.height,
        n_positive=int(df[outcome].sum()),
        persons=df["pseudonym"] if persons else None,
        outcome=outcome,
    )


def differencing(result: Refused) -> str:
    return next(r for r in result.reasons if r.startswith("differencing"))


def test_all_but_four_with_persons_is_refused_naming_the_four(tmp_path):
    df = people()
    with make_gate(tmp_path) as gate:
        first = gate.release(table("all", df, ("sex",)), requested_by="analysis")
        second = gate.release(table("all_but_4", df.slice(4), ("buurt",)), requested_by="analysis")
    assert isinstance(first, Released)
    assert isinstance(second, Refused)
    assert "entry L000001" in differencing(second) and "population differs by 4 persons" in differencing(second)


def test_all_but_four_without_persons_is_refused_by_the_conservative_rule(tmp_path):
    df = people()
    with make_gate(tmp_path) as gate:
        gate.release(table("all", df, ("sex",)), requested_by="analysis")  # with persons
        second = gate.release(table("all_but_4", df.slice(4), ("buurt",), persons=False), requested_by="analysis")
    assert isinstance(second, Refused) and "population differs" not in differencing(second)


def test_overlapping_populations_each_with_ten_others_are_released_though_totals_are_close(tmp_path):
    df = people(3020)
    a, b = df.slice(0, 3000), df.slice(20, 2995)  # a lacks 15 of b's persons, b lacks 20 of a's; totals 3000/2995
    with make_gate(tmp_path) as gate:
        gate.release(table("a", a, ("sex",)), requested_by="analysis")
        with_persons = gate.release(table("b", b, ("buurt",)), requested_by="analysis")
        without = gate.release(table("b_unnamed", b, ("buurt",), persons=False), requested_by="analysis")
    assert isinstance(with_persons, Released), with_persons.reasons
    assert isinstance(without, Refused)  # the same counts, without populations: refused as before


def test_identical_populations_counted_differently_are_released(tmp_path):
    """Two releases over exactly the same persons isolate nobody, whatever their counts: here the first counts
    four persons twice (as a pooled-years table does), so its total differs from the second's by 4."""
    df = people()
    twice = pl.concat([df, df.slice(0, 4)])
    with make_gate(tmp_path) as gate:
        first = gate.release(table("person_years", twice, ("sex",)), requested_by="analysis")
        second = gate.release(table("persons", df, ("buurt",)), requested_by="analysis")
        unnamed = gate.release(table("persons_unnamed", df, ("sex",), persons=False), requested_by="analysis")
    assert isinstance(first, Released) and isinstance(second, Released), second.reasons
    assert isinstance(unnamed, Refused)


def test_model_metrics_over_all_but_three_after_a_table_of_all_are_refused(tmp_path):
    df = people()
    with make_gate(tmp_path) as gate:
        gate.release(table("all", df, ("flag",)), requested_by="analysis")
        same = gate.release(metrics("all.metrics", df), requested_by="analysis")
        fewer = gate.release(metrics("all_but_3.metrics", df.slice(3)), requested_by="analysis")
    assert isinstance(same, Released)
    assert isinstance(fewer, Refused) and "population differs by 3 persons" in differencing(fewer)
    with sqlite3.connect(tmp_path / "ws" / "ledger.sqlite") as conn:
        rows = conn.execute("SELECT dims, population_digest FROM table_records ORDER BY seq").fetchall()
    assert [r[0] for r in rows] == ['["flag"]', '["flag"]']  # the split meets the table over its outcome
    assert rows[0][1] == rows[1][1] is not None  # one population, stored once
    verify_ledger(tmp_path / "ws")


def test_model_metrics_of_two_disjoint_years_with_close_positives_are_released(tmp_path):
    df = people(6000)
    y1 = df.slice(0, 3000)
    y2 = df.slice(3000, 3000)
    # make the second year's positives exactly 2 more than the first's
    target = int(y1["flag"].sum()) + 2
    y2 = y2.with_columns((pl.int_range(pl.len()) < target).alias("flag"))
    with make_gate(tmp_path) as gate:
        first = gate.release(metrics("y1.metrics", y1), requested_by="analysis")
        second = gate.release(metrics("y2.metrics", y2), requested_by="analysis")
        unnamed = gate.release(metrics("y2_unnamed.metrics", y2, persons=False), requested_by="analysis")
    assert isinstance(first, Released) and isinstance(second, Released), second.reasons
    assert isinstance(unnamed, Refused) and "flag=" in differencing(unnamed)


def test_splits_of_different_outcomes_are_compared_by_their_totals_only(tmp_path):
    """Two outcomes' populations where one nearly contains the other (2 persons one way, hundreds the other):
    their positives are counts of different variables, so only the totals (hundreds apart) are compared. Without
    the outcome names every split is one variable, 'positive', and positives 3 apart are refused."""
    df = people()
    a = df.slice(0, 2000)
    b = df.slice(2, 2998).with_columns(other=pl.int_range(pl.len()) < int(a["flag"].sum()) + 3)
    with make_gate(tmp_path) as gate:
        flag = gate.release(metrics("flag.metrics", a), requested_by="analysis")
        other = gate.release(metrics("other.metrics", b, outcome="other"), requested_by="analysis")
        # the same two splits without outcome names: both are 'positive', and 3 apart
        unnamed = [
            gate.release(
                ModelMetrics(
                    name=f"{name}.unnamed",
                    metrics={"roc_auc": 0.7},
                    n=frame.height,
                    n_positive=int(frame[column].sum()),
                    persons=frame["pseudonym"],
                ),
                requested_by="analysis",
            )
            for name, frame, column in (("flag", a, "flag"), ("other", b, "other"))
        ]
    assert isinstance(flag, Released) and isinstance(other, Released), other.reasons
    assert int(a["flag"].sum()) != int(b["other"].sum())
    assert abs(int(a["flag"].sum()) - int(b["other"].sum())) < 10
    assert isinstance(unnamed[0], Released)
    assert isinstance(unnamed[1], Refused) and "positive=True" in differencing(unnamed[1])


def _two_populations(tmp_path: Path) -> Path:
    df = people()
    with make_gate(tmp_path) as gate:
        gate.release(table("a", df.slice(0, 1500), ("sex",)), requested_by="analysis")
        gate.release(table("b", df.slice(1500), ("buurt",)), requested_by="analysis")
    verify_ledger(tmp_path / "ws")
    return tmp_path / "ws"


@pytest.mark.parametrize(
    "sql",
    [
        "UPDATE table_records SET population_digest = (SELECT population_digest FROM table_records WHERE seq = 2)"
        " WHERE seq = 1",
        "UPDATE table_records SET population_digest = NULL WHERE seq = 2",
        "UPDATE populations SET ids = substr(ids, 9) || substr(ids, 1, 8)",
        "UPDATE populations SET size = size - 1",
    ],
    ids=["swap-population", "drop-population", "edit-ids", "edit-size"],
)
def test_tampering_with_a_stored_population_is_detected(tmp_path, sql):
    ws = _two_populations(tmp_path)
    with sqlite3.connect(ws / "ledger.sqlite") as conn:
        conn.execute(sql)
    with pytest.raises(LedgerCorrupted):
        verify_ledger(ws)


def test_a_ledger_from_before_populations_gets_the_column_and_still_verifies(tmp_path):
    df = people()
    with make_gate(tmp_path) as gate:
        gate.release(table("old", df, ("sex",), persons=False), requested_by="analysis")
    ws = tmp_path / "ws"
    db = ws / "ledger.sqlite"
    with sqlite3.connect(db) as conn:  # rebuild the old schema: no population_digest column, no populations
        conn.executescript(
            "CREATE TABLE old_records AS SELECT seq, dims, population, cells FROM table_records;"
            "DROP TABLE table_records; DROP TABLE populations;"
            "CREATE TABLE table_records (seq INTEGER PRIMARY KEY REFERENCES ledger(seq), dims TEXT NOT NULL,"
            " population TEXT NOT NULL, cells TEXT NOT NULL);"
            "INSERT INTO table_records SELECT * FROM old_records; DROP TABLE old_records;"
        )
    verify_ledger(ws)
    with make_gate(tmp_path) as gate:
        fewer = gate.release(table("fewer", df.slice(4), ("buurt",)), requested_by="analysis")
    assert isinstance(fewer, Refused)  # compared with the old record by the conservative rule
    with sqlite3.connect(db) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(table_records)")}
    assert "population_digest" in columns
    verify_ledger(ws)


def test_persons_that_are_not_person_keys_are_refused_before_anything_is_recorded(tmp_path):
    df = people()
    short = pl.Series([b"abc"] * df.height, dtype=pl.Binary)  # keys shorter than 8 bytes
    with make_gate(tmp_path) as gate:
        for persons in (short, pl.Series(["x"] * df.height), pl.Series([-1] * df.height)):
            with pytest.raises(RequestInvalid, match="persons must be the pseudonym column"):
                gate.release(CountTable(name="t", data=df, by=("sex",), persons=persons), requested_by="analysis")
    assert verify_ledger(tmp_path / "ws").entries == 0
