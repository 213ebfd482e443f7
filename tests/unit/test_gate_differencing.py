"""The gate's differencing rule with populations: every release under output checking records the persons the
gate itself selected, and is compared with earlier releases by the persons each population has that the other
lacks; model outputs take part with the person counts they carry. Real SQLite, real signed policies; the
populations are the gate's own linked datasets (reference years) and population conditions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import gate_workspace, person_keys, signed_policy

from kansrijk.errors import LedgerCorrupted
from kansrijk.gate.keys import load_gate_signer
from kansrijk.gate.ledger import entry_hash, entry_signing_message, record_digest, verify_ledger, write_head_file
from kansrijk.gate.release import Gate, Population, Refused, Released
from kansrijk.gate.requests import RequestInvalid
from kansrijk.gate.specs import CountSpec, MetricsSpec, ScoreSet, where

KEYS = person_keys(6000, seed=11)
BUURTEN = tuple(f"BU0599{i:04d}" for i in range(4))
SCORES = (0.2, 0.4, 0.6, 0.8)


def make_gate(tmp_path: Path, frames: pl.DataFrame | dict[int, pl.DataFrame]) -> Gate:
    target, pub, _ = signed_policy(tmp_path, "sdc-only")
    return Gate.open(gate_workspace(tmp_path, frames), target, [pub])


def people(start: int = 0, stop: int = 3000, seed: int = 11) -> pl.DataFrame:
    """Persons ``KEYS[start:stop]``, one row each, as a reference year of the linked dataset."""
    n = stop - start
    rng = np.random.default_rng(seed + start)
    return pl.DataFrame(
        {
            "pseudonym": pl.Series(KEYS[start:stop], dtype=pl.Binary),
            "sex": rng.choice(["M", "F"], n),
            "buurt_code": rng.choice(BUURTEN, n),
            "youth_care": np.zeros(n, dtype=bool),
            "psychosocial_risk": rng.random(n) < 0.3,
            "delinquency": rng.random(n) < 0.1,
        }
    )


def flag_first(frame: pl.DataFrame, column: str, k: int) -> pl.DataFrame:
    """``column`` true for the first ``k`` persons and false for the others."""
    return frame.with_columns((pl.int_range(pl.len()) < k).alias(column))


def scores(ws: Path, year: int, *conditions: pl.Expr) -> ScoreSet:
    """Coarse scores (four values, each held by hundreds) for the persons of ``year`` meeting ``conditions``."""
    frame = pl.read_parquet(ws / "dataset" / f"{year}.parquet")
    if conditions:
        frame = frame.filter(*conditions)
    score = pl.Series("score", [SCORES[i % 4] for i in range(frame.height)])
    return ScoreSet(frame.select("pseudonym", "year").with_columns(score))


def count(name: str, by: tuple[str, ...], years: tuple[int, ...] = (2023,), *population) -> CountSpec:
    return CountSpec(name=name, years=years, by=by, population=tuple(population))


def metrics(name: str, ws: Path, year: int = 2023, outcome: str = "psychosocial_risk", *population) -> MetricsSpec:
    exprs = [pl.col(c.var) == c.value for c in population]
    return MetricsSpec(name=name, years=(year,), outcome=outcome, population=tuple(population),
                       scores=scores(ws, year, *exprs))  # fmt: skip


def differencing(result: Refused) -> str:
    return next(r for r in result.reasons if r.startswith("differencing"))


def test_all_but_four_is_refused_naming_the_four(tmp_path):
    with make_gate(tmp_path, flag_first(people(), "youth_care", 4)) as gate:
        first = gate.release(count("all", ("sex",)), requested_by="analysis")
        second = gate.release(count("all_but_4", ("buurt_code",), (2023,), where("youth_care", "==", False)),
                              requested_by="analysis")  # fmt: skip
    assert isinstance(first, Released)
    assert isinstance(second, Refused)
    assert "entry L000001" in differencing(second) and "population differs by 4 persons" in differencing(second)


def test_the_recorded_population_is_the_one_the_gate_selected(tmp_path):
    """Replaces 'a request without persons is compared by the conservative rule': a spec cannot name (or omit)
    its persons any more. The gate records exactly the persons it selected: here those without youth care, and
    for pooled years every person once (persons view) and every person-year (person-year view)."""
    frames = {2022: flag_first(people(0, 40), "youth_care", 0), 2023: flag_first(people(), "youth_care", 25)}
    with make_gate(tmp_path, frames) as gate:
        some = gate.release(count("some", ("sex",), (2023,), where("youth_care", "==", False)), requested_by="analysis")
        pooled = gate.release(count("pooled", ("sex",), (2022, 2023)), requested_by="analysis")
    assert isinstance(some, Released) and isinstance(pooled, Released), (some.reasons, pooled.reasons)
    with sqlite3.connect(tmp_path / "ws" / "ledger.sqlite") as conn:
        stored = [
            Population.from_blob(digest, bytes(blob))
            for digest, blob in conn.execute(
                "SELECT p.digest, p.ids FROM table_records r JOIN populations p ON p.digest = r.population_digest "
                "ORDER BY r.seq"
            )
        ]

    def ids(keys: list[bytes]) -> np.ndarray:
        return np.unique(np.array([int.from_bytes(k[:8], "big") for k in keys], dtype=np.uint64))

    assert np.array_equal(stored[0].persons, ids(KEYS[25:3000]))  # KEYS[:25] are in youth care
    assert stored[0].ids.size == 3000 - 25
    assert np.array_equal(stored[1].persons, ids(KEYS[:3000]))  # 2022's 40 persons are 2023's first 40: once
    assert stored[1].ids.size == 3000 + 40  # and as person-years, twice


def test_overlapping_populations_each_with_ten_others_are_released_though_totals_are_close(tmp_path):
    # 2022 lacks 15 of 2023's persons and 2023 lacks 20 of 2022's (totals 3000/2995); 2024 lacks 5 of 2022's only
    frames = {2022: people(0, 3000), 2023: people(20, 3015), 2024: people(5, 3000)}
    with make_gate(tmp_path, frames) as gate:
        gate.release(count("a", ("sex",), (2022,)), requested_by="analysis")
        overlapping = gate.release(count("b", ("buurt_code",), (2023,)), requested_by="analysis")
        nested = gate.release(count("c", ("buurt_code",), (2024,)), requested_by="analysis")
    assert isinstance(overlapping, Released), overlapping.reasons
    # a population nearly inside another is compared by its counts: the totals isolate 5 persons
    assert isinstance(nested, Refused)
    assert "entry L000001 (the total" in differencing(nested) and "differs by 5 persons" in differencing(nested)


def test_a_pooled_table_next_to_one_of_its_years_is_refused_for_the_other_year(tmp_path):
    """The same persons, counted differently: the first pools two years and counts four persons twice. Its
    difference with the second (one of its years) is the other year's table of four persons: refused, because
    the populations differ by four person-years though not by a single person."""
    frames = {2022: people(0, 4), 2023: people(0, 3000)}
    with make_gate(tmp_path, frames) as gate:
        first = gate.release(count("person_years", ("sex",), (2022, 2023)), requested_by="analysis")
        second = gate.release(count("persons", ("buurt_code",), (2023,)), requested_by="analysis")
    assert isinstance(first, Released), first.reasons
    assert isinstance(second, Refused) and "population differs by 4 person-years" in differencing(second)


def test_model_metrics_over_all_but_three_after_a_table_of_all_are_refused(tmp_path):
    with make_gate(tmp_path, flag_first(people(), "youth_care", 3)) as gate:
        ws = gate.workspace
        gate.release(count("all", ("psychosocial_risk",)), requested_by="analysis")
        same = gate.release(metrics("all.metrics", ws), requested_by="analysis")
        fewer = gate.release(metrics("all_but_3.metrics", ws, 2023, "psychosocial_risk",
                                     where("youth_care", "==", False)), requested_by="analysis")  # fmt: skip
    assert isinstance(same, Released), same.reasons
    assert isinstance(fewer, Refused) and "population differs by 3 persons" in differencing(fewer)
    with sqlite3.connect(tmp_path / "ws" / "ledger.sqlite") as conn:
        rows = conn.execute("SELECT dims, population_digest FROM table_records ORDER BY seq").fetchall()
    # the split meets the table over its outcome
    assert [r[0] for r in rows] == ['["psychosocial_risk"]', '["psychosocial_risk"]']
    assert rows[0][1] == rows[1][1] is not None  # one population, stored once
    verify_ledger(tmp_path / "ws")


def test_model_metrics_of_two_disjoint_years_with_close_positives_are_released(tmp_path):
    y1 = people(0, 3000)
    target = int(y1["psychosocial_risk"].sum()) + 2  # the second year's positives: exactly 2 more
    y2 = flag_first(flag_first(people(3000, 6000), "psychosocial_risk", target), "youth_care", 2)
    with make_gate(tmp_path, {2022: y1, 2023: y2}) as gate:
        ws = gate.workspace
        first = gate.release(metrics("y1.metrics", ws, 2022), requested_by="analysis")
        second = gate.release(metrics("y2.metrics", ws, 2023), requested_by="analysis")
        # the same year without two of its positives: the split of the metrics isolates them
        fewer = gate.release(count("y2.almost", ("psychosocial_risk",), (2023,), where("youth_care", "==", False)),
                             requested_by="analysis")  # fmt: skip
    assert isinstance(first, Released) and isinstance(second, Released), second.reasons
    assert isinstance(fewer, Refused) and "psychosocial_risk=True" in differencing(fewer)
    assert "entry L000002" in differencing(fewer) and "L000001" not in differencing(fewer)


def test_splits_of_different_outcomes_are_compared_by_their_totals_only(tmp_path):
    """Two outcomes' populations where one nearly contains the other (2 persons one way, hundreds the other):
    their positives are counts of different variables, so only the totals (hundreds apart) are compared. The same
    outcome's positives 3 apart over those populations are refused."""
    a = people(0, 2000)
    positives = int(a["psychosocial_risk"].sum()) + 3
    b = people(2, 3000).with_columns(
        (pl.int_range(pl.len()) < positives).alias("psychosocial_risk"),
        (pl.int_range(pl.len()) >= pl.len() - positives).alias("delinquency"),
    )
    with make_gate(tmp_path, {2022: a, 2023: b}) as gate:
        ws = gate.workspace
        risk = gate.release(metrics("risk.metrics", ws, 2022), requested_by="analysis")
        other = gate.release(metrics("delinquency.metrics", ws, 2023, "delinquency"), requested_by="analysis")
        same_outcome = gate.release(metrics("risk.2023.metrics", ws, 2023), requested_by="analysis")
    assert isinstance(risk, Released) and isinstance(other, Released), other.reasons
    assert int(a["psychosocial_risk"].sum()) != int(b["delinquency"].sum())
    assert abs(int(a["psychosocial_risk"].sum()) - int(b["delinquency"].sum())) < 10
    assert isinstance(same_outcome, Refused) and "psychosocial_risk=True" in differencing(same_outcome)


def _two_populations(tmp_path: Path) -> Path:
    with make_gate(tmp_path, people()) as gate:
        a = gate.release(count("a", ("buurt_code",), (2023,), where("sex", "==", "M")), requested_by="analysis")
        b = gate.release(count("b", ("buurt_code",), (2023,), where("sex", "==", "F")), requested_by="analysis")
    assert isinstance(a, Released) and isinstance(b, Released)
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
    with make_gate(tmp_path, flag_first(people(), "youth_care", 4)) as gate:
        gate.release(count("old", ("sex",)), requested_by="analysis")
    ws = tmp_path / "ws"
    db = ws / "ledger.sqlite"
    with sqlite3.connect(db) as conn:
        # the entry as a gate from before populations wrote it: its record's digest has three parts
        conn.row_factory = sqlite3.Row
        rec = conn.execute("SELECT dims, population, cells FROM table_records WHERE seq = 1").fetchone()
        conn.execute("UPDATE ledger SET record_digest = ? WHERE seq = 1", (record_digest(*rec, None),))
        row = dict(conn.execute("SELECT * FROM ledger WHERE seq = 1").fetchone())
        rehashed = entry_hash(row["prev_hash"], row)
        signer = load_gate_signer(ws)  # what that gate signed: the entry as it was then
        signature = signer.sign(entry_signing_message(1, rehashed, signer.fingerprint)).hex()
        conn.execute("UPDATE ledger SET entry_hash = ?, signature = ? WHERE seq = 1", (rehashed, signature))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (rehashed,))
        # and the old schema: no population_digest column, no populations
        conn.executescript(
            "CREATE TABLE old_records AS SELECT seq, dims, population, cells FROM table_records;"
            "DROP TABLE table_records; DROP TABLE populations;"
            "CREATE TABLE table_records (seq INTEGER PRIMARY KEY REFERENCES ledger(seq), dims TEXT NOT NULL,"
            " population TEXT NOT NULL, cells TEXT NOT NULL);"
            "INSERT INTO table_records SELECT * FROM old_records; DROP TABLE old_records;"
            "DROP TABLE audit_records;"  # nor the release-history audit's records
        )
    write_head_file(ws / "released", 1, rehashed)
    verify_ledger(ws)
    target, pub = tmp_path / "sdc-only.toml", tmp_path / "officer.pub"
    with Gate.open(ws, target, [pub]) as gate:
        fewer = gate.release(count("fewer", ("buurt_code",), (2023,), where("youth_care", "==", False)),
                             requested_by="analysis")  # fmt: skip
    assert isinstance(fewer, Refused)  # compared with the old record by the conservative rule
    assert "population differs" not in differencing(fewer)
    with sqlite3.connect(db) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(table_records)")}
    assert "population_digest" in columns
    verify_ledger(ws)


def test_scores_for_persons_outside_the_population_or_missing_one_are_refused_before_anything_is_recorded(tmp_path):
    """Replaces 'persons that are not person keys are refused': a spec names no persons; the only persons a
    requester hands the gate are those of a score set, which must cover the population exactly."""
    with make_gate(tmp_path, flag_first(people(), "youth_care", 4)) as gate:
        ws = gate.workspace
        full = scores(ws, 2023).frame
        foreign = pl.DataFrame(
            {"pseudonym": pl.Series([KEYS[5999]], dtype=pl.Binary), "year": [2023], "score": [0.2]},
            schema=full.schema,
        )
        outsiders = scores(ws, 2023).frame  # every person, for a population without the 4 in youth care
        cases = {
            "a person outside the dataset": (ScoreSet(pl.concat([full, foreign])), ()),
            "a person missing": (ScoreSet(full.slice(1)), ()),
            "persons outside the population": (ScoreSet(outsiders), (where("youth_care", "==", False),)),
            "another year": (ScoreSet(full.with_columns(pl.lit(2022, dtype=full.schema["year"]).alias("year"))), ()),
        }
        for score_set, population in cases.values():
            spec = MetricsSpec(
                name="m", years=(2023,), outcome="psychosocial_risk", scores=score_set, population=population
            )
            with pytest.raises(RequestInvalid, match="must cover the population exactly"):
                gate.release(spec, requested_by="analysis")
        twice = ScoreSet(pl.concat([full, full.head(1)]))
        with pytest.raises(RequestInvalid, match="more than one score"):
            gate.release(MetricsSpec(name="m", years=(2023,), outcome="psychosocial_risk", scores=twice),
                         requested_by="analysis")  # fmt: skip
        with pytest.raises(RequestInvalid, match="pseudonym must be binary"):
            ScoreSet(full.with_columns(pl.col("pseudonym").bin.encode("hex")))
    assert verify_ledger(tmp_path / "ws").entries == 0
    assert not any((tmp_path / "ws" / "released").glob("m.*"))


def test_persons_that_are_not_person_keys_make_no_population():
    """The gate's own population record still refuses identifiers that are not person keys."""
    short = pl.Series([b"abc"] * 20, dtype=pl.Binary)  # keys shorter than 8 bytes
    for persons in (short, pl.Series(["x"] * 20), pl.Series([-1] * 20)):
        with pytest.raises(RequestInvalid, match="persons must be the pseudonym column"):
            Population.of(persons, "t")
    assert Population.of(pl.Series(KEYS[:20], dtype=pl.Binary), "t").ids.size == 20
