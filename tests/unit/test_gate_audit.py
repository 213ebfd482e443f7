"""The release-history audit's core (``kansrijk.gate.audit``): records, atoms, the attacker's programs, and the
incremental audit against a full re-audit and an independent brute-force attacker written here."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import scipy.optimize
import scipy.sparse as sp
from gate_kit import gate_workspace, signed_policy
from hypothesis import given, settings
from hypothesis import strategies as st

from kansrijk.gate.audit import COUNT, PERSON_YEARS, AuditCell, AuditRecord, _null_moves, audit, build_system
from kansrijk.gate.ledger import LedgerCorrupted, verify_ledger
from kansrijk.gate.release import Gate, Refused, Released, Suppressed
from kansrijk.gate.specs import CountSpec, where

T = 10


def count(ids, codes=None, cells=None, seq: int = 0) -> AuditRecord:
    """A count record: ``ids`` with ``codes`` (all 0 by default) and ``cells`` (default: the whole set)."""
    ids = np.asarray(ids, dtype=np.uint64)
    codes = np.zeros(ids.size, dtype=np.int64) if codes is None else np.asarray(codes, dtype=np.int64)
    if cells is None:
        cells = [((0,), ids.size)]
    made = tuple(
        AuditCell(tuple(c), float(v if v is not None else np.isin(codes, c).sum()), f"cell {i}")
        for i, (c, v) in enumerate(cells)
    )
    return AuditRecord(COUNT, PERSON_YEARS, ids, codes, made, seq=seq)


def run(history, new, interval: int = 2, incremental: bool = True):
    return audit(history, new, threshold=T, interval=interval, p=0.10, incremental=incremental)


def test_records_survive_storage_exactly() -> None:
    rec = count(range(50), np.arange(50) % 3, [((0, 1), None), ((2,), None)])
    back = AuditRecord.from_blob(rec.blob(), seq=7)
    assert back.seq == 7 and back.quantity == COUNT and back.unit == PERSON_YEARS
    assert np.array_equal(back.ids, rec.ids) and np.array_equal(back.codes, rec.codes)
    assert [(c.codes, c.value, c.label) for c in back.cells] == [(c.codes, c.value, c.label) for c in rec.cells]
    ids = np.arange(20, dtype=np.uint64)
    values = np.linspace(1e5, 9e5, 20)
    s = AuditRecord("sum:woz_eur", PERSON_YEARS, ids, np.zeros(20, dtype=np.int64), (AuditCell((0,), 1.0, "a"),),
                    values, (0.0, 1.5e6))  # fmt: skip
    back = AuditRecord.from_blob(s.blob(), seq=1)
    assert back.bounds == (0.0, 1.5e6) and np.array_equal(back.values, values)


def test_a_sum_record_needs_values_and_bounds() -> None:
    with pytest.raises(ValueError, match="value"):
        AuditRecord("sum:x", PERSON_YEARS, np.arange(3, dtype=np.uint64), np.zeros(3, dtype=np.int64), ())


def test_atoms_are_the_persons_sharing_every_cell() -> None:
    a = count(range(100), seq=1)  # everyone
    b = count(range(50, 150), seq=2)  # half of them and 50 more
    system = build_system([a, b])
    assert sorted(system.sizes.tolist()) == [50, 50, 50]
    assert system.matrix.shape == (2, 3) and system.rhs.tolist() == [100.0, 100.0]


def test_a_chain_of_three_pins_the_two_persons_left_out() -> None:
    g = count(range(1000), seq=1)
    g2 = count([*range(2, 1000), *range(5000, 5020)], seq=2)
    r = count(range(5000, 5020))
    assert run([g], [count([*range(2, 1000), *range(5000, 5020)])]).ok  # the pair alone isolates nobody
    result = run([g, g2], [r])
    assert not result.ok
    (d,) = result.disclosures
    assert d.size == 2 and d.low == d.high == 2 and d.entries == (1, 2, 0)
    assert "pinned exactly" in d.describe() and "L000001" in d.describe()


def test_the_interval_is_in_whole_persons() -> None:
    """x + z = 4 and z + e = 2 (x: 3 persons, z and e: 1 each): x in [2, 4], z and e in [0, 2]. Three whole
    values each: disclosed under an interval of 3, not under 2; an exact pin is disclosed under any interval."""
    x, z, e = [1, 2, 3], [4], [5]
    # each release's parts are its atoms (a part released whole would be a small group pinned by itself)
    first = count([*x, *z], [0, 0, 0, 1], [((0, 1), None)], seq=1)
    second = count([*z, *e], [0, 1], [((0, 1), None)])
    narrow = run([first], [second], interval=3)
    assert {(d.size, d.low, d.high) for d in narrow.disclosures} == {(3, 2.0, 4.0), (1, 0.0, 2.0)}
    assert run([first], [second], interval=2).ok
    exact = count(z)
    assert not run([first, AuditRecord(second.quantity, second.unit, second.ids, second.codes, second.cells, seq=2)],
                   [exact], interval=1).ok  # fmt: skip


def test_sums_are_held_to_p_percent() -> None:
    ids = np.arange(40, dtype=np.uint64)
    values = np.full(40, 200_000.0)
    values[:2] = [350_000.0, 410_000.0]

    def rec(members: np.ndarray, seq: int = 0) -> AuditRecord:
        m = np.isin(ids, members)
        return AuditRecord("sum:woz_eur", PERSON_YEARS, ids[m], np.zeros(int(m.sum()), dtype=np.int64),
                           (AuditCell((0,), float(values[m].sum()), "sum"),), values[m], (0.0, 1.5e6), seq)  # fmt: skip

    everyone = rec(ids, seq=1)
    result = run([everyone], [rec(ids[2:])])
    assert not result.ok and result.disclosures[0].size == 2
    assert "sum of woz_eur" in result.disclosures[0].describe()
    assert run([everyone], [rec(ids[12:])]).ok  # ten persons left out: a group at the threshold


def test_a_small_difference_of_nested_cells_is_a_group_even_when_split() -> None:
    """A total over 40 persons, then over 35 of them: 5 persons between them. A third release splits those 5 (by
    two codes, each with other persons) so no atom of them is pinned; their count, 40 - 35, still is."""
    everyone = np.arange(40)
    first = count(everyone, seq=1)
    second = count(everyone[:35], seq=2)
    split = count(everyone, everyone % 2, [((0,), None), ((1,), None)])
    result = run([first, second], [split])
    assert not result.ok
    assert {(d.size, d.low, d.high) for d in result.disclosures} == {(5, 5.0, 5.0)}
    assert run([first], [split]).ok  # without the nested pair nothing small is derivable


def test_components_the_new_release_does_not_touch_are_not_audited() -> None:
    a = count(range(100), seq=1)
    b = count(range(1000, 1100))
    result = run([a], [b])
    assert result.ok and result.components == 0  # no small atom where b is; a's persons are another component


def test_a_release_that_repeats_earlier_cells_is_not_audited_again() -> None:
    """A model's n over the population a table already counted: same persons, same number; nothing to audit."""
    table = count(range(200), np.arange(200) % 4, [((0,), None), ((1,), None), ((2, 3), None)], seq=1)
    again = count(range(200), np.arange(200) % 4, [((0, 1, 2, 3), None), ((0,), None)])
    assert run([table], [again]).repeats == 0  # the total is new (no earlier cell holds all 200)
    total = count(range(200), seq=2)
    result = run([table, total], [again])
    assert result.repeats == 1 and result.atoms == 0 and result.ok
    # one person more is new, and so is a part of fewer than T persons the release withholds
    assert run([table, total], [count(range(201))]).repeats == 0
    withheld = count(range(200), np.where(np.arange(200) < 195, 0, 1), [((0, 1), None)])
    assert run([table, total], [withheld]).repeats == 0


# --- incremental = full = an independent attacker ----------------------------------------------------------------
def brute_force(records: list[AuditRecord], interval: int) -> set[tuple[int, ...]]:
    """The small groups pinned by all ``records``: atoms by membership of every cell, the small parts of a record
    made of whole atoms (a withheld cell other releases split) and the persons between two nested released cells,
    one LP per bound (scipy)."""
    people = np.unique(np.concatenate([r.ids for r in records]))
    rows, rhs = [], []
    for r in records:
        for c in r.cells:
            inside = r.ids[np.isin(r.codes, c.codes)]
            rows.append(np.isin(people, inside))
            rhs.append(c.value)
    if not rows:
        return set()
    member = np.array(rows)
    keys, atom = np.unique(member.T, axis=0, return_inverse=True)
    atom = atom.ravel()
    sizes = np.bincount(atom)
    # the groups: every small atom, and every small part of a record (one code) made of whole atoms
    groups = [[i] for i in np.flatnonzero((sizes < T) & keys.any(axis=1))]
    for r in records:
        for code in np.unique(r.codes):
            inside = np.isin(people, r.ids[r.codes == code])
            atoms_in = np.unique(atom[inside])
            whole = all((atom[~inside] != a).all() for a in atoms_in)
            if whole and len(atoms_in) >= 2 and inside.sum() < T and keys[atoms_in].any():
                groups.append(atoms_in.tolist())
    for outer in member:  # and the persons between two nested released cells
        for inner in member:
            between = outer & ~inner
            if not (inner & ~outer).any() and 0 < between.sum() < T:
                groups.append(np.unique(atom[between]).tolist())
    pinned = set()
    for group in groups:
        bounds = []
        for sign in (1.0, -1.0):
            c = np.zeros(len(keys))
            c[group] = sign
            res = scipy.optimize.linprog(c, A_eq=keys.T.astype(float), b_eq=rhs, bounds=(0, None), method="highs")
            bounds.append(sign * res.fun if res.status == 0 else -sign * np.inf)  # unbounded: no bound that way
        if np.floor(bounds[1] + 1e-6) - np.ceil(bounds[0] - 1e-6) < interval:
            pinned.add(tuple(people[np.isin(atom, group)].tolist()))
    return pinned


@st.composite
def sequences(draw: st.DrawFn) -> list[AuditRecord]:
    out = []
    for _ in range(draw(st.integers(2, 6))):
        lo = draw(st.integers(0, 60))
        hi = draw(st.integers(lo + 1, 80))
        ids = np.arange(lo, hi)
        k = draw(st.integers(1, 3))  # a table of k cells over the range, cut at random points
        cuts = sorted(draw(st.lists(st.integers(lo, hi), min_size=k - 1, max_size=k - 1)))
        codes = np.searchsorted(np.asarray(cuts), ids, side="right")
        cells = [((c,), None) for c in range(k) if (codes == c).sum() >= T or draw(st.booleans())]
        out.append(count(ids, codes, cells))
    return out


@settings(max_examples=60, deadline=None)
@given(seq=sequences(), interval=st.integers(1, 3))
def test_the_incremental_audit_agrees_with_an_independent_attacker(seq: list[AuditRecord], interval: int) -> None:
    """Releasing what passes, one after another: the history never pins a small group by the brute-force LP, and
    a refused record is one the brute force would have pinned with it."""
    accepted: list[AuditRecord] = []
    for i, rec in enumerate(seq):
        result = run(accepted, [rec], interval=interval)
        full = run(accepted, [rec], interval=interval, incremental=False)
        assert result.ok == full.ok
        if result.ok:
            accepted.append(AuditRecord(rec.quantity, rec.unit, rec.ids, rec.codes, rec.cells, seq=i + 1))
            assert not brute_force(accepted, interval)
        else:
            assert brute_force([*accepted, rec], interval)


@settings(max_examples=40, deadline=None)
@given(seq=sequences())
def test_a_history_folded_release_by_release_is_the_history_built_at_once(seq: list[AuditRecord]) -> None:
    """The gate's folded history (each record folded once, reused while its list grows) gives exactly the system
    a fresh build of all records gives: the same atoms, the same released cells over them."""
    for k in range(1, len(seq) + 1):
        folded = build_system(seq[: k - 1], seq[k - 1 : k], reuse=True)
        fresh = build_system(seq[:k], reuse=False)
        assert np.array_equal(folded.sizes, fresh.sizes)
        assert np.array_equal(folded.truth, fresh.truth)
        assert (folded.matrix != fresh.matrix).nnz == 0
        assert np.array_equal(folded.rhs, fresh.rhs)


@st.composite
def systems(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, sp.csr_matrix]:
    """A 0/1 matrix of released cells over atoms (every atom in some cell), positive atom sizes, and the groups to
    audit: every atom, and a few random unions of atoms."""
    n_atoms = draw(st.integers(2, 9))
    n_cells = draw(st.integers(1, 6))
    bits = draw(st.lists(st.booleans(), min_size=n_atoms * n_cells, max_size=n_atoms * n_cells))
    a = np.array(bits, dtype=float).reshape(n_cells, n_atoms)
    a[draw(st.integers(0, n_cells - 1)), a.sum(axis=0) == 0] = 1.0
    sizes = np.array(draw(st.lists(st.integers(1, 12), min_size=n_atoms, max_size=n_atoms)), dtype=float)
    unions = draw(st.lists(st.sets(st.integers(0, n_atoms - 1), min_size=2, max_size=n_atoms), max_size=3))
    groups = np.vstack([np.eye(n_atoms), *[np.isin(np.arange(n_atoms), list(u)).astype(float) for u in unions]])
    return a, sizes, sp.csr_matrix(groups)


@settings(max_examples=150, deadline=None)
@given(system=systems())
def test_the_moves_without_a_program_never_claim_more_room_than_the_attacker_has(system) -> None:
    """Soundness of the fast path: the values ``_null_moves`` reports for a group (from the step bound or the exact
    direction) lie within the attacker's own bounds (two LPs each, scipy here): it never clears an atom an attacker
    could pin. A wider claim would release a disclosive number."""
    a, x, groups = system
    low, high = _null_moves(sp.csr_matrix(a), x, np.zeros(x.size), np.full(x.size, np.inf), groups,
                            np.full(groups.shape[0], 2.0), COUNT)  # fmt: skip
    b = a @ x
    for g in range(groups.shape[0]):
        c = groups[g].toarray().ravel()
        lo = scipy.optimize.linprog(c, A_eq=a, b_eq=b, bounds=(0, None), method="highs")
        hi = scipy.optimize.linprog(-c, A_eq=a, b_eq=b, bounds=(0, None), method="highs")
        assert low[g] >= lo.fun - 1e-6 * (1 + abs(lo.fun))
        if hi.status == 0:  # bounded above
            assert high[g] <= -hi.fun + 1e-6 * (1 + abs(hi.fun))
        assert low[g] <= c @ x <= high[g]


# --- the gate keeps its audit records, and the ledger covers them ------------------------------------------------
def test_the_audit_record_digest_vector() -> None:
    """The entry's record digest with audit records: SHA-256 over canonical JSON [record digest, [SHA-256 of each
    audit record's bytes]] (a format the gate signs: fixed here)."""
    from kansrijk.gate.ledger import record_digest_with_audit

    got = record_digest_with_audit("sha256:" + "ab" * 32, [b"first", b"second"])
    assert got == "sha256:" + hashlib.sha256(
        b'["sha256:' + b"ab" * 32 + b'",["sha256:'
        + hashlib.sha256(b"first").hexdigest().encode() + b'","sha256:'
        + hashlib.sha256(b"second").hexdigest().encode() + b'"]]'
    ).hexdigest()  # fmt: skip


def _city(n: int = 300) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    ages = rng.integers(4, 23, n)
    ages[:2] = 23
    return pl.DataFrame({"sex": rng.choice(["M", "F"], n).tolist(), "age_years": ages.astype(np.int32)})


def test_the_audit_remembers_across_a_restart_and_the_ledger_covers_its_records(tmp_path: Path) -> None:
    ws = gate_workspace(tmp_path, _city())
    policy, pub, _ = signed_policy(tmp_path, "sdc-only")
    with Gate.open(ws, policy, [pub]) as gate:
        first, second = (
            gate.release(CountSpec(name=n, years=(2023,), population=p, by=("sex",)), requested_by="analysis")
            for n, p in (("g", (where("age_years", "<=", 23),)),
                         ("g_minus", (where("age_years", ">=", 7), where("age_years", "<=", 22))))
        )  # fmt: skip
        assert isinstance(first, Released) and isinstance(second, Released)
    with Gate.open(ws, policy, [pub]) as gate:  # a new process: the history comes from the ledger database
        third = gate.release(
            CountSpec(name="r", years=(2023,), population=(where("age_years", "<=", 6),), by=("sex",)),
            requested_by="analysis",
        )
    assert isinstance(third, Suppressed | Refused)
    assert any(v.rule == "history_audit" and v.verdict != "pass" for v in third.verdicts)
    verify_ledger(ws)
    conn = sqlite3.connect(ws / "ledger.sqlite")
    with conn:
        (blob,) = conn.execute("SELECT record FROM audit_records WHERE seq = 1").fetchone()
        conn.execute("UPDATE audit_records SET record = ? WHERE seq = 1", (bytes(blob) + b"\0",))
    with pytest.raises(LedgerCorrupted, match="entry 1"):
        verify_ledger(ws)
    with conn:
        conn.execute("DELETE FROM audit_records WHERE seq = 1")
    with pytest.raises(LedgerCorrupted, match="entry 1"):
        verify_ledger(ws)
    conn.close()
