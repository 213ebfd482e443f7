"""The release-history audit: no exact number about a small group is derivable from all releases together.

Every exact (not noise-protected) number the gate releases counts, or sums a value over, a set of persons the gate
itself selected: a table cell, a tree node's class count, a model's ``n`` and positives, a sum or mean per cell.
The gate keeps, per release, an ``AuditRecord``: the persons it describes, each with the code of the finest part of
the release they fall in (a table cell; a tree leaf and class), and the released cells as sets of codes with their
exact values. Checking each release on its own, or against one earlier release at a time, misses what an attacker
gets by combining many (linked tables, chains of three releases, two trees over nearly the same persons).

**Atoms.** Persons are grouped by their membership of every released cell (their *signature*); a group of persons
with the same signature is an atom. Every released number is the sum of the atoms it covers, so all releases
together are one linear system ``A x = b`` over the atoms' sizes (or sums), with ``x >= 0`` (sums: between the
value's public bounds times the atom's size). Withheld cells are not in the system; noisy (DP) numbers are not
either: their protection is the budget.

**The question.** For every atom of fewer than ``t`` persons (``sdc.min_persons_per_cell``), the attacker's best
bounds on its size are the minimum and maximum of ``x_atom`` over that system: a linear program, as the attacker
would solve it (tau-Argus's audit of protection levels). The atom is *disclosed* when its integer interval is
narrower than ``sdc.audit_interval`` persons (exact: width 0); an atom's sum when its interval is narrower than
``2 p`` of its value (the p% rule on what differences of sums reveal). Hierarchies (buurt within wijk, ages within
bands) need no declaration here: the atoms come from the persons themselves, so a wijk cell is exactly the union of
its buurten's persons whatever the codes say.

**Speed.** The atoms are built with one pass over every record's persons (a 64-bit XOR signature per person).
Only the connected components of the system that the new release touches are audited (a release over other years
or other persons leaves their bounds unchanged). In a component, the true sizes are one feasible point; a few
linear programs with random weights push every small atom up and down at once and clear every atom they move by
the interval; only the atoms left get their own two programs. ``audit`` reports how many programs it solved.

Persons are counted in one unit per system: person-years (one row per person per reference year), or distinct
persons (pooled tables count persons). A single-year release is in both systems.
"""

from __future__ import annotations

import functools
import io
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import highspy
import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

COUNT = "count"
PERSON_YEARS = "person-years"
PERSONS = "persons"


@dataclass(frozen=True, eq=False)
class AuditCell:
    """One released exact number: the codes of the parts it covers, and its value (a count or a sum)."""

    codes: tuple[int, ...]
    value: float
    label: str


@dataclass(frozen=True, eq=False)
class AuditRecord:
    """What one release tells about one quantity in one unit.

    ``ids``: the persons (or person-years) the release describes, unique; ``codes``: the finest part each is in;
    ``values``: each one's value (sums only); ``cells``: the released exact numbers. ``quantity`` is ``count`` or
    ``sum:<variable>``; ``bounds`` the value's public bounds per person (sums)."""

    quantity: str
    unit: str
    ids: np.ndarray
    codes: np.ndarray
    cells: tuple[AuditCell, ...]
    values: np.ndarray | None = None
    bounds: tuple[float, float] | None = None
    seq: int = 0  # the ledger entry; 0 while it is being checked

    def __post_init__(self) -> None:
        if self.ids.shape != self.codes.shape:
            raise ValueError("an audit record needs one code per person")
        if self.quantity != COUNT and (self.values is None or self.bounds is None):
            raise ValueError("a sum's audit record needs every person's value and the value's bounds")

    @property
    def system(self) -> tuple[str, str]:
        return self.quantity, self.unit

    def with_cells(self, cells: Iterable[AuditCell]) -> AuditRecord:
        return AuditRecord(self.quantity, self.unit, self.ids, self.codes, tuple(cells), self.values, self.bounds)

    # -- storage: an npz of the arrays and a JSON header -----------------------------------------------------
    def blob(self) -> bytes:
        header = {
            "quantity": self.quantity,
            "unit": self.unit,
            "bounds": list(self.bounds) if self.bounds is not None else None,
            "cells": [[list(c.codes), c.value, c.label] for c in self.cells],
        }
        arrays = {"ids": self.ids.astype(np.uint64), "codes": self.codes.astype(np.int32)}
        if self.values is not None:
            arrays["values"] = self.values.astype(np.float64)
        out = io.BytesIO()
        np.savez_compressed(out, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
        return out.getvalue()

    @classmethod
    def from_blob(cls, blob: bytes, seq: int) -> AuditRecord:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes())
            values = z["values"] if "values" in z.files else None
            bounds = tuple(header["bounds"]) if header["bounds"] is not None else None
            return cls(
                header["quantity"],
                header["unit"],
                z["ids"],
                z["codes"],
                tuple(AuditCell(tuple(c[0]), float(c[1]), str(c[2])) for c in header["cells"]),
                values,
                bounds,  # type: ignore[arg-type]
                seq,
            )


@dataclass(frozen=True)
class Disclosure:
    """A group of ``size`` persons (one atom) whose count or sum all releases together pin to [low, high]."""

    quantity: str
    unit: str
    size: int
    true: float
    low: float
    high: float
    entries: tuple[int, ...]  # the ledger entries whose numbers cover the atom (0: the release being checked)

    def describe(self) -> str:
        where = ", ".join("this release" if s == 0 else f"L{s:06d}" for s in self.entries)
        what = "count" if self.quantity == COUNT else f"sum of {self.quantity.split(':', 1)[1]}"
        unit = "person" if self.unit == PERSONS else "person-year"
        if self.quantity == COUNT:
            span = "exactly" if self.high - self.low < 0.5 else f"to {self.low:g}..{self.high:g}"
        else:
            span = f"to within {self.high - self.low:,.0f}"
        return f"a group of {self.size} {unit}(s) whose {what} is pinned {span} by {where}"


@dataclass
class AuditResult:
    disclosures: list[Disclosure] = field(default_factory=list)
    atoms: int = 0
    candidates: int = 0
    components: int = 0
    programs: int = 0

    @property
    def ok(self) -> bool:
        return not self.disclosures


# --- atoms --------------------------------------------------------------------------------------------------
def _part_keys(codes: np.ndarray, record: int) -> np.ndarray:
    """A pseudo-random 64-bit key per (record, code), 0 for code -1 (in no released cell): the XOR of a person's
    keys is their signature."""
    x = (codes.astype(np.uint64) + np.uint64(1)) * np.uint64(0x9E3779B97F4A7C15)
    x ^= np.uint64((record + 1) * 0xBF58476D1CE4E5B9 % (1 << 64))
    # splitmix64 finaliser: distinct inputs give (practically) independent outputs
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return np.where(codes < 0, np.uint64(0), x)


def _membership(record: AuditRecord) -> np.ndarray:
    """Each person's class of released-cell membership in ``record`` (the cells containing their code), or -1 in
    none: two persons whose codes differ but lie in the same released cells (a withheld cell's codes, two leaves
    under one released node) are one to an attacker, and must be one atom (finer atoms would each look loose)."""
    if not record.cells:
        return np.full(record.codes.size, -1, dtype=np.int64)
    codes, inverse = np.unique(record.codes, return_inverse=True)
    cells_of: dict[int, list[int]] = {}
    for i, cell in enumerate(record.cells):
        for code in cell.codes:
            cells_of.setdefault(int(code), []).append(i)
    classes: dict[tuple[int, ...], int] = {}
    mapped = np.array([classes.setdefault(tuple(cells_of[int(c)]), len(classes)) if int(c) in cells_of else -1
                       for c in codes], dtype=np.int64)  # fmt: skip
    return mapped[inverse.ravel()]


@dataclass(frozen=True, eq=False)
class System:
    """The linear system of one quantity in one unit: atoms (sizes, true values) and released cells over them."""

    sizes: np.ndarray  # persons per atom
    truth: np.ndarray  # the true value per atom (its size, or its sum)
    lower: np.ndarray  # public bounds of each atom's value
    upper: np.ndarray
    matrix: sp.csr_matrix  # cells x atoms, 0/1
    rhs: np.ndarray
    cell_entry: np.ndarray  # the ledger entry of every cell (0: the release being checked)


def build_system(records: Sequence[AuditRecord]) -> System:
    """The atoms of ``records`` (one quantity, one unit) and the released cells as rows over them."""
    with np.errstate(over="ignore"):
        ids = np.concatenate([r.ids.astype(np.uint64) for r in records])
        keys = np.concatenate([_part_keys(_membership(r), i) for i, r in enumerate(records)])
    order = np.argsort(ids, kind="stable")
    ids, keys = ids[order], keys[order]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    signature = np.bitwise_xor.reduceat(keys, starts)
    person_ids = ids[starts]
    _, atom_of_person, sizes = np.unique(signature, return_inverse=True, return_counts=True)
    atom_of_person = atom_of_person.ravel()
    n_atoms = sizes.size

    values = None
    bounds: tuple[float, float] | None = None
    if records[0].quantity != COUNT:
        # every record of a sum system sums the same (clipped) value of the same persons: take it from any
        known = pl.concat(
            [pl.DataFrame({"id": r.ids.astype(np.uint64), "v": r.values}) for r in records if r.values is not None]
        ).unique("id", keep="first")
        per_person = pl.DataFrame({"id": person_ids}).join(known, on="id", how="left").get_column("v").to_numpy()
        values = np.bincount(atom_of_person, weights=np.nan_to_num(per_person), minlength=n_atoms)
        lo = min(r.bounds[0] for r in records if r.bounds)  # type: ignore[index]
        hi = max(r.bounds[1] for r in records if r.bounds)  # type: ignore[index]
        bounds = (lo, hi)

    blocks: list[sp.csr_matrix] = []
    rhs: list[float] = []
    entry: list[int] = []
    for r in records:
        if not r.cells:
            continue
        atoms_here = atom_of_person[np.searchsorted(person_ids, r.ids.astype(np.uint64))]
        codes, code_of = np.unique(r.codes, return_inverse=True)
        parts = sp.csr_matrix(
            (np.ones(code_of.size), (code_of.ravel(), atoms_here)), shape=(codes.size, n_atoms)
        )  # codes x atoms
        cell_of = np.repeat(np.arange(len(r.cells)), [len(c.codes) for c in r.cells])
        wanted = np.concatenate([np.asarray(c.codes, dtype=np.int64) for c in r.cells])
        pos = np.searchsorted(codes, wanted)
        present = (pos < codes.size) & (codes[np.minimum(pos, codes.size - 1)] == wanted)
        cells = sp.csr_matrix(
            (np.ones(int(present.sum())), (cell_of[present], pos[present])), shape=(len(r.cells), codes.size)
        )  # cells x codes
        block = (cells @ parts).tocsr()
        block.data[:] = 1.0
        blocks.append(block)
        rhs.extend(c.value for c in r.cells)
        entry.extend([r.seq] * len(r.cells))
    matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_atoms))
    if values is None:
        truth = sizes.astype(np.float64)
        lower, upper = np.zeros(n_atoms), np.full(n_atoms, np.inf)
    else:
        assert bounds is not None
        truth = values
        lower, upper = sizes * bounds[0], sizes * bounds[1]
    return System(sizes, truth, lower, upper, matrix, np.asarray(rhs, dtype=np.float64), np.asarray(entry))


# --- the attacker's programs ----------------------------------------------------------------------------------
def _needed(system: System, atoms: np.ndarray, quantity: str, interval: int, p: float) -> np.ndarray:
    """The interval width each small atom's value must keep."""
    if quantity == COUNT:
        return np.full(atoms.size, float(interval))
    return np.maximum(2 * p * np.abs(system.truth[atoms]), 1e-6)


def _width(low: np.ndarray, high: np.ndarray, quantity: str) -> np.ndarray:
    if quantity == COUNT:  # integers: the attacker knows a count is whole
        return np.floor(high + 1e-6) - np.ceil(low - 1e-6)
    return high - low


@functools.cache
def _highs_banner_silenced() -> None:
    """HiGHS prints a banner to the process's standard output the first time a solver is made (before any option
    can switch it off): make that first solver with file descriptor 1 pointed at /dev/null, so the gate's
    service, the CLI's JSON output and the demo stay clean."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            highspy.Highs()
    finally:
        os.dup2(saved, 1)
        os.close(saved)


class _Program:
    """The attacker's linear program over one component, built once: only the objective changes between solves,
    so HiGHS starts every solve from the last optimal basis (a few pivots instead of a fresh solve)."""

    def __init__(self, a: sp.csr_matrix, b: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> None:
        self.n = a.shape[1]
        csc = sp.csc_matrix(a)
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = self.n, a.shape[0]
        lp.col_cost_ = np.zeros(self.n)
        lp.col_lower_ = lo.astype(np.float64)
        lp.col_upper_ = np.where(np.isinf(hi), highspy.kHighsInf, hi).astype(np.float64)
        lp.row_lower_ = lp.row_upper_ = b.astype(np.float64)
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
        lp.a_matrix_.index_ = csc.indices.astype(np.int32)
        lp.a_matrix_.value_ = csc.data.astype(np.float64)
        _highs_banner_silenced()
        self.h = highspy.Highs()
        self.h.setOptionValue("output_flag", False)
        self.h.setOptionValue("log_to_console", False)
        self.h.passModel(lp)
        self.cost = np.zeros(self.n)

    def solve(self, cost: np.ndarray) -> np.ndarray | None:
        """A minimiser of ``cost @ x``; None when unbounded (or infeasible: never for a true history)."""
        changed = np.flatnonzero(cost != self.cost)
        if changed.size:
            self.h.changeColsCost(changed.size, changed.astype(np.int32), cost[changed].astype(np.float64))
            self.cost = cost.copy()
        self.h.run()
        if self.h.getModelStatus() != highspy.HighsModelStatus.kOptimal:
            return None
        return np.asarray(self.h.getSolution().col_value)


def _null_moves(
    a: sp.csr_matrix, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, cand: np.ndarray, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """For each candidate atom, two feasible values found without a linear program: move the true point along
    the candidate's own direction in the null space of the released numbers (``e_v`` minus its projection on the
    rows of ``a``: every released number stays true) as far as the bounds allow, both ways. Returns the lowest and
    highest value of each candidate along its direction (a certificate: both points are feasible)."""
    gram = (a @ a.T).toarray()
    pinv = np.linalg.pinv(gram, hermitian=True)
    low = x[cand].astype(np.float64).copy()
    high = low.copy()
    at = sp.csr_matrix(a.T)
    for start in range(0, cand.size, chunk):
        part = cand[start : start + chunk]
        d = -(at @ (pinv @ a[:, part].toarray()))  # atoms x k: every column in the null space of a
        d[part, np.arange(part.size)] += 1.0
        d[np.abs(d) < 1e-9] = 0.0
        room_up = (hi - x)[:, None]
        room_down = (lo - x)[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_max = np.where(d > 0, room_up / d, np.where(d < 0, room_down / d, np.inf)).min(axis=0)
            t_min = np.where(d > 0, room_down / d, np.where(d < 0, room_up / d, -np.inf)).max(axis=0)
        dv = d[part, np.arange(part.size)]
        ok = dv > 1e-6  # a direction that moves the candidate (0: its value is fixed by the released numbers)
        t_max, t_min = t_max * (1 - 1e-9), t_min * (1 - 1e-9)  # stay inside the bounds despite rounding
        idx = np.arange(start, start + part.size)
        low[idx] = np.where(ok, x[part] + np.maximum(t_min, -1e12) * dv, low[idx])
        high[idx] = np.where(ok, x[part] + np.minimum(t_max, 1e12) * dv, high[idx])
    return low, high


def _audit_component(
    system: System, atoms: np.ndarray, small: np.ndarray, quantity: str, interval: int, p: float, seed: int
) -> tuple[dict[int, tuple[float, float]], int]:
    """Bounds of the small atoms of one component that stay narrower than needed, and the programs solved."""
    sub = system.matrix[:, atoms]
    used = np.flatnonzero(sub.getnnz(axis=1))
    a = sp.csr_matrix(sub[used])
    b = system.rhs[used]
    lo, hi = system.lower[atoms], system.upper[atoms]
    local = {int(g): i for i, g in enumerate(atoms)}
    cand = np.array([local[int(g)] for g in small])
    need = _needed(system, small, quantity, interval, p)
    seen_lo = system.truth[atoms][cand].copy()
    seen_hi = seen_lo.copy()
    open_ = np.ones(cand.size, dtype=bool)
    rng = np.random.default_rng(seed)
    programs = 0
    program = _Program(a, b, lo, hi)

    def update(x: np.ndarray | None, idx: np.ndarray) -> None:
        if x is None:
            return
        v = x[cand[idx]]
        seen_lo[idx] = np.minimum(seen_lo[idx], v)
        seen_hi[idx] = np.maximum(seen_hi[idx], v)
        open_[idx] &= _width(seen_lo[idx], seen_hi[idx], quantity) < need[idx]

    # first without a program: each small atom's own null-space direction from the true point; most clear here
    moved_lo, moved_hi = _null_moves(a, system.truth[atoms], lo, hi, cand)
    seen_lo, seen_hi = np.minimum(seen_lo, moved_lo), np.maximum(seen_hi, moved_hi)
    open_ &= _width(seen_lo, seen_hi, quantity) < need
    # batches: push every open small atom up, then down, with random weights; most move by the interval at once
    for _ in range(3):
        idx = np.flatnonzero(open_)
        if idx.size == 0:
            break
        for sign in (-1.0, 1.0):
            c = np.zeros(atoms.size)
            c[cand[idx]] = sign * rng.uniform(1.0, 2.0, idx.size)
            programs += 1
            update(program.solve(c), np.flatnonzero(open_))  # None when unbounded: the one-by-one will say
            idx = np.flatnonzero(open_)
            if idx.size == 0:
                break
    # the rest, one by one: its own maximum, then its own minimum
    pinned: dict[int, tuple[float, float]] = {}
    for i in np.flatnonzero(open_):
        if not open_[i]:  # cleared meanwhile by another atom's solution
            continue
        for sign in (-1.0, 1.0):
            c = np.zeros(atoms.size)
            c[cand[i]] = sign
            programs += 1
            x = program.solve(c)
            if x is None:  # unbounded: not pinned
                open_[i] = False
                break
            update(x, np.flatnonzero(open_))  # every solution may clear other atoms too
            if not open_[i]:
                break
        if open_[i]:
            pinned[int(small[i])] = (float(seen_lo[i]), float(seen_hi[i]))
    return pinned, programs


def audit(
    history: Sequence[AuditRecord],
    new: Sequence[AuditRecord],
    *,
    threshold: int,
    interval: int,
    p: float,
    incremental: bool = True,
) -> AuditResult:
    """Whether ``new`` (records with ``seq`` 0), together with ``history``, pins any group of fewer than
    ``threshold`` persons (its count to fewer than ``interval`` whole values, or its sum to within ``2 p`` of it).

    ``incremental``: audit only the components the new records' cells touch (the full re-audit, ``False``, checks
    every component: the benchmark compares the two)."""
    result = AuditResult()
    systems = {r.system for r in new if r.cells}
    for quantity, unit in sorted(systems):
        records = [r for r in (*history, *new) if r.system == (quantity, unit)]
        system = build_system(records)
        result.atoms += system.sizes.size
        n_cells = system.matrix.shape[0]
        graph = sp.bmat([[None, system.matrix], [system.matrix.T, None]], format="csr")
        _, label = connected_components(graph, directed=False)
        atom_label = label[n_cells:]
        new_rows = np.flatnonzero(system.cell_entry == 0)
        touched = np.unique(label[new_rows]) if incremental else np.unique(atom_label)
        covered = np.asarray(system.matrix.sum(axis=0)).ravel() > 0
        for comp in touched:
            atoms = np.flatnonzero(atom_label == comp)
            small = atoms[(system.sizes[atoms] < threshold) & covered[atoms]]
            if small.size == 0:
                continue
            result.components += 1
            result.candidates += small.size
            pinned, programs = _audit_component(system, atoms, small, quantity, interval, p, seed=int(comp))
            rows = np.flatnonzero(label[:n_cells] == comp)
            result.programs += programs
            for atom, (low, high) in pinned.items():
                entries = tuple(sorted({int(e) for e in system.cell_entry[rows]}, key=lambda s: (s == 0, s)))
                result.disclosures.append(
                    Disclosure(quantity, unit, int(system.sizes[atom]), float(system.truth[atom]), low, high, entries)
                )
    return result
