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

**The question.** For every group of fewer than ``t`` persons (``sdc.min_persons_per_cell``) an attacker can
single out, the attacker's best bounds on its size are the minimum and maximum of its value over that system: a
linear program, as the attacker would solve it (tau-Argus's audit of protection levels). The groups are every small
atom, and every small part of a release (a withheld cell: the persons of one code) made of two or more whole atoms:
other releases may split a withheld cell so that no atom of it is pinned while the cell as a whole is (its buurt's
total minus the buurt's released cells). A group is *disclosed* when its integer interval is narrower than
``sdc.audit_interval`` persons (exact: width 0); a group's sum when its interval is narrower than ``2 p`` of its
value (the p% rule on what differences of sums reveal). Hierarchies (buurt within wijk, ages within bands) need no
declaration here: the atoms come from the persons themselves, so a wijk cell is exactly the union of its buurten's
persons whatever the codes say.

**Speed.** Each record is folded once into its system's history (an append-only person index and every person's
64-bit XOR signature); a new release costs one pass over its own persons, one sort of the signatures and a sparse
product per record (``O(N log N + sum of record sizes)`` for ``N`` persons, no re-sorting of the history's records).
Only the connected components of the system that the new release touches are audited (a release over other years
or other persons leaves their bounds unchanged). The algebra uses, per record, only the cells that span all of
its cells (a tree's leaves, not its nodes: each node is the sum of its leaves), so an atom lies in about one row
per release instead of one per tree level (a city's two-year plan: 36 rows per atom instead of 103, and the cost
goes with their square). In a component, the true sizes are one feasible point; each group's own direction in the
null space of the released numbers moves it without a linear program. For a single atom the step is bounded from
the atoms' leverages alone (``O(sum over atoms of rows^2)``, from one pivoted Cholesky factorisation of the rows'
Gram matrix, ``O(rank^3)``), which clears almost every atom; the rest get their exact direction (two sparse
products per block of groups, never the dense basis), then a few linear programs with random weights push every
open group up and down at once; only the groups left get their own two programs. ``audit`` reports how many
programs it solved.

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
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from threadpoolctl import threadpool_limits

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
    repeats: int = 0  # systems where the release only repeated earlier cells (nothing to audit)

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


def _cell_prints(record: AuditRecord) -> list[int]:
    """A 64-bit fingerprint of each released cell's persons: the XOR of a hash of every person's id (equal sets of
    persons, equal fingerprints; different sets collide with probability 2^-64)."""
    if not record.cells or record.ids.size == 0:
        return [0] * len(record.cells)
    with np.errstate(over="ignore"):  # splitmix64: no id hashes to 0 for certain (0 would drop out of the XOR)
        x = record.ids.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    order = np.argsort(record.codes, kind="stable")
    codes, starts = np.unique(record.codes[order], return_index=True)
    per_code = dict(zip(codes.tolist(), np.bitwise_xor.reduceat(x[order], starts).tolist(), strict=True))
    prints = []
    for cell in record.cells:
        h = 0
        for code in cell.codes:
            h ^= per_code.get(int(code), 0)
        prints.append(h)
    return prints


def _membership(record: AuditRecord) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """Each person's class of released-cell membership in ``record`` (the cells containing their code), or -1 in
    none, and the cells of every class: two persons whose codes differ but lie in the same released cells (a
    withheld cell's codes, two leaves under one released node) are one to an attacker, and must be one atom (finer
    atoms would each look loose)."""
    if not record.cells:
        return np.full(record.codes.size, -1, dtype=np.int64), []
    codes, inverse = np.unique(record.codes, return_inverse=True)
    cells_of: dict[int, list[int]] = {}
    for i, cell in enumerate(record.cells):
        for code in cell.codes:
            cells_of.setdefault(int(code), []).append(i)
    classes: dict[tuple[int, ...], int] = {}
    mapped = np.array([classes.setdefault(tuple(cells_of[int(c)]), len(classes)) if int(c) in cells_of else -1
                       for c in codes], dtype=np.int64)  # fmt: skip
    return mapped[inverse.ravel()], list(classes)


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
    # rows that span every cell (a tree's leaves, not its nodes, which are their sums): the algebra and the
    # attacker's programs use these; the groups and the entries use every cell
    basis: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    # groups of fewer than the threshold that are unions of two or more atoms (a withheld cell whose persons
    # other releases split): groups x atoms, 0/1. An attacker may pin the union when no atom of it is pinned
    unions: sp.csr_matrix | None = None


@dataclass(eq=False)
class _Folded:
    """One record as folded into a ``_History``: where its persons sit in the history's person index, their
    membership class, and the released cells x classes incidence."""

    record: AuditRecord
    positions: np.ndarray
    classes: np.ndarray
    incidence: sp.csr_matrix  # cells x classes
    independent: np.ndarray  # cells that span all of the record's cells, the finest first (_independent_cells)
    small: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # per threshold

    def small_parts(self, threshold: int) -> tuple[np.ndarray, np.ndarray]:
        """The positions and codes of the persons in parts (codes) of fewer than ``threshold`` persons."""
        if threshold not in self.small:
            _, inverse, counts = np.unique(self.record.codes, return_inverse=True, return_counts=True)
            mask = counts[inverse.ravel()] < threshold
            self.small[threshold] = (self.positions[mask], self.record.codes[mask])
        return self.small[threshold]


class _History:
    """The persons of one system's records, folded once each: an append-only person index, every person's 64-bit
    XOR signature over the records' membership classes (persons with the same signature are one atom) and their
    values (sums). A new release is folded into a copy of the signatures only, so checking it costs one pass over
    its own persons plus one sort of the signatures, whatever the length of the history."""

    def __init__(self) -> None:
        self.folded: list[_Folded] = []
        self.cells: set[int] = set()  # the 64-bit fingerprint of every released cell's persons (_cell_prints)
        self.ids = np.zeros(0, dtype=np.uint64)  # person index -> id, append-only
        self.order = np.zeros(0, dtype=np.int64)  # the index sorted by id, for lookups
        self.signature = np.zeros(0, dtype=np.uint64)
        self.present = np.zeros(0, dtype=bool)
        self.values = np.zeros(0, dtype=np.float64)

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """The person index of every id, appending the ids not seen yet (their signature 0, not yet present)."""
        ids = ids.astype(np.uint64)
        sorted_ids = self.ids[self.order]
        at = np.searchsorted(sorted_ids, ids)
        found = np.zeros(ids.size, dtype=bool)
        if sorted_ids.size:
            found = (at < sorted_ids.size) & (sorted_ids[np.minimum(at, sorted_ids.size - 1)] == ids)
        if not found.all():
            fresh = np.unique(ids[~found])
            self.ids = np.concatenate([self.ids, fresh])
            self.order = np.argsort(self.ids, kind="stable")
            self.signature = np.concatenate([self.signature, np.zeros(fresh.size, dtype=np.uint64)])
            self.present = np.concatenate([self.present, np.zeros(fresh.size, dtype=bool)])
            self.values = np.concatenate([self.values, np.full(fresh.size, np.nan)])
            sorted_ids = self.ids[self.order]
            at = np.searchsorted(sorted_ids, ids)
        return self.order[at]

    def repeats(self, new: Sequence[AuditRecord], threshold: int) -> bool:
        """Whether ``new`` only repeats numbers already in the history: every released cell counts (or sums over)
        exactly the persons of a cell released before, so it adds no equation and splits no atom (its parts are
        Boolean combinations of earlier cells), and no part of it has fewer than ``threshold`` persons (a new
        withheld cell would be a new group to audit). The audit then has nothing to check."""
        for r in new:
            _, counts = np.unique(r.codes, return_counts=True)
            if (counts < threshold).any() or not self.cells.issuperset(_cell_prints(r)):
                return False
        return True

    def fold(self, record: AuditRecord) -> _Folded:
        positions = self.positions(record.ids)
        classes, cells_of = _membership(record)
        rows = [i for cells in cells_of for i in cells]
        cols = np.repeat(np.arange(len(cells_of)), [len(c) for c in cells_of])
        incidence = sp.csr_matrix(
            (np.ones(len(rows)), (np.asarray(rows, dtype=np.int64), cols)), shape=(len(record.cells), len(cells_of))
        )
        persons = np.bincount(classes[classes >= 0], minlength=len(cells_of)).astype(np.float64)
        return _Folded(record, positions, classes, incidence, _independent_cells(incidence, persons))

    def keep(self, folded: _Folded) -> None:
        """Add a folded record to the history for good."""
        self.cells.update(_cell_prints(folded.record))
        self._apply(folded, len(self.folded), self.signature, self.values)
        self.present[folded.positions] = True
        self.folded.append(folded)

    @staticmethod
    def _apply(folded: _Folded, k: int, signature: np.ndarray, values: np.ndarray) -> None:
        with np.errstate(over="ignore"):
            np.bitwise_xor.at(signature, folded.positions, _part_keys(folded.classes, k))
        record = folded.record
        if record.values is not None:
            unknown = np.isnan(values[folded.positions])
            values[folded.positions[unknown]] = record.values[unknown]

    def system(self, new: Sequence[_Folded], threshold: int | None = None) -> System:
        """The atoms and released cells of the history plus ``new`` (not kept), and (with ``threshold``) the
        parts of fewer persons that are unions of several atoms."""
        signature, values, present = self.signature.copy(), self.values.copy(), self.present.copy()
        for k, f in enumerate(new, start=len(self.folded)):
            self._apply(f, k, signature, values)
            present[f.positions] = True
        index = np.flatnonzero(present)
        _, atom_of, sizes = np.unique(signature[index], return_inverse=True, return_counts=True)
        n_atoms = sizes.size
        atom_at = np.full(signature.size, -1, dtype=np.int64)
        atom_at[index] = atom_of.ravel()

        blocks: list[sp.csr_matrix] = []
        rhs: list[float] = []
        entry: list[int] = []
        basis: list[np.ndarray] = []
        for f in (*self.folded, *new):
            if not f.record.cells:
                continue
            # every atom lies in one class of every record (the class is part of its signature)
            class_of_atom = np.full(n_atoms, -1, dtype=np.int64)
            class_of_atom[atom_at[f.positions]] = f.classes
            atoms = np.flatnonzero(class_of_atom >= 0)
            members = sp.csr_matrix(
                (np.ones(atoms.size), (class_of_atom[atoms], atoms)), shape=(f.incidence.shape[1], n_atoms)
            )  # classes x atoms
            basis.append(f.independent + len(rhs))
            blocks.append((f.incidence @ members).tocsr())
            rhs.extend(c.value for c in f.record.cells)
            entry.extend([f.record.seq] * len(f.record.cells))
        matrix = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, n_atoms))
        records = [f.record for f in (*self.folded, *new)]
        if records and records[0].quantity != COUNT:
            truth = np.bincount(atom_of.ravel(), weights=np.nan_to_num(values[index]), minlength=n_atoms)
            lo = min(r.bounds[0] for r in records if r.bounds)  # type: ignore[index]
            hi = max(r.bounds[1] for r in records if r.bounds)  # type: ignore[index]
            lower, upper = sizes * lo, sizes * hi
        else:
            truth = sizes.astype(np.float64)
            lower, upper = np.zeros(n_atoms), np.full(n_atoms, np.inf)
        unions = None
        if threshold is not None:
            unions = _unions([f.small_parts(threshold) for f in (*self.folded, *new)], atom_at, sizes)
        return System(
            sizes, truth, lower, upper, matrix, np.asarray(rhs, dtype=np.float64), np.asarray(entry),
            basis=np.concatenate(basis) if basis else np.zeros(0, dtype=np.int64), unions=unions,
        )


def _independent_cells(incidence: sp.csr_matrix, persons: np.ndarray) -> np.ndarray:
    """The cells of one record that span all of its cells (rows of ``incidence``, cells x membership classes),
    chosen from the fewest persons up: a tree's leaves span its nodes (each node is the sum of its leaves), a
    table's inner cells span its margins. Every other cell is an exact sum of these, so the linear system keeps
    its solutions with these rows alone, and each atom lies in a few rows instead of one per level of every tree
    (the Gram matrix and the leverages cost the sum over atoms of their rows squared). Gram-Schmidt, twice per
    cell, in the record's own small space (classes: at most a few hundred)."""
    rows = incidence.toarray()
    order = np.argsort(rows @ persons, kind="stable")
    basis = np.zeros((rows.shape[1], min(rows.shape)))
    keep: list[int] = []
    for i in order:
        v = rows[i].copy()
        norm = float(np.linalg.norm(v))
        done = basis[:, : len(keep)]
        for _ in range(2):
            v -= done @ (done.T @ v)
        rest = float(np.linalg.norm(v))
        if rest > 1e-8 * max(norm, 1.0):
            basis[:, len(keep)] = v / rest
            keep.append(int(i))
    return np.sort(np.asarray(keep, dtype=np.int64))


def _unions(parts: Sequence[tuple[np.ndarray, np.ndarray]], atom_at: np.ndarray, sizes: np.ndarray) -> sp.csr_matrix:
    """Every small part (the persons of one code of one record) made of whole atoms, two or more: groups x atoms.
    A part that shares an atom with persons outside it is not a group an attacker can single out."""
    found: set[tuple[int, ...]] = set()
    for positions, codes in parts:
        if codes.size == 0:
            continue
        atoms = atom_at[positions]
        pairs, counts = np.unique(np.stack([codes.astype(np.int64), atoms]), axis=1, return_counts=True)
        whole = counts == sizes[pairs[1]]
        for code in np.unique(pairs[0]):
            here = pairs[0] == code
            if here.sum() >= 2 and whole[here].all():
                found.add(tuple(int(a) for a in pairs[1][here]))
    groups = sorted(found)
    rows = np.repeat(np.arange(len(groups)), [len(g) for g in groups])
    cols = np.asarray([a for g in groups for a in g], dtype=np.int64)
    return sp.csr_matrix((np.ones(cols.size), (rows, cols)), shape=(len(groups), sizes.size))


# the histories of recent calls, per system: a gate passes its growing list of records, so the next call folds
# only the records added since (matched by identity: records are immutable once stored)
_HISTORIES: list[_History] = []
_KEEP_HISTORIES = 8


def _history_for(records: Sequence[AuditRecord], reuse: bool) -> _History:
    """A history with exactly ``records`` folded: the longest cached one whose records are a prefix of them,
    extended, or a new one."""
    best: _History | None = None
    if reuse:
        for h in _HISTORIES:
            n = len(h.folded)
            prefix = n <= len(records) and all(f.record is r for f, r in zip(h.folded, records, strict=False))
            if prefix and (best is None or n > len(best.folded)):
                best = h
    if best is None:
        best = _History()
        if reuse:
            _HISTORIES.insert(0, best)
            del _HISTORIES[_KEEP_HISTORIES:]
    else:
        _HISTORIES.remove(best)
        _HISTORIES.insert(0, best)
    for r in records[len(best.folded) :]:
        best.keep(best.fold(r))
    return best


def build_system(
    records: Sequence[AuditRecord], new: Sequence[AuditRecord] = (), *, reuse: bool = False,
    threshold: int | None = None,
) -> System:  # fmt: skip
    """The atoms of ``records`` and ``new`` (one quantity, one unit) and the released cells as rows over them;
    with ``threshold``, the small parts that are unions of atoms too."""
    history = _history_for(records, reuse)
    return history.system([history.fold(r) for r in new], threshold)


# --- the attacker's programs ----------------------------------------------------------------------------------
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


@dataclass(frozen=True, eq=False)
class _Component:
    """One connected component of a system: its atoms, every released cell over them (``rows`` of the system,
    ``cells``) and the cells that span them (``a`` x = ``b``: the system's basis rows)."""

    atoms: np.ndarray
    rows: np.ndarray  # the system's cells over these atoms
    cells: sp.csr_matrix
    a: sp.csr_matrix
    b: np.ndarray

    @classmethod
    def of(cls, system: System, atoms: np.ndarray) -> _Component:
        whole = atoms.size == system.sizes.size  # usually one component holds every atom: no slicing then
        sub = system.matrix if whole else sp.csr_matrix(system.matrix.tocsc()[:, atoms])
        used = np.flatnonzero(sub.getnnz(axis=1))
        spanning = np.intersect1d(used, system.basis)
        a = sp.csr_matrix(sub[spanning])
        cells = sub if used.size == sub.shape[0] else sp.csr_matrix(sub[used])
        return cls(atoms, used, cells, a, system.rhs[spanning])


def _row_space(a: sp.csr_matrix) -> _Basis | None:
    """An orthonormal basis ``Q`` (atoms x rank) of the row space of ``a``, kept implicit.

    The released cells may be dependent (tables repeat margins; two releases count the same population): a
    pivoted Cholesky factorisation of the small Gram matrix ``a a^T`` (how many atoms two cells share; LAPACK's
    ``dpstrf``) picks ``rank`` independent cells ``B`` with ``a_B a_B^T = U^T U``; ``Q = a_B^T U^-1`` is never
    formed: the leverages and the projections need only ``(a_B a_B^T)^-1`` (LAPACK's ``dpotri`` from the
    factor, ``O(rank^3)``; its upper triangle, used through BLAS's symmetric product). Checked, not assumed, to
    working precision: ``Q^T Q = I`` and the inverse on random probes ``Z`` (``U^-T a_B a_B^T U^-1 Z = Z`` and
    ``a_B a_B^T (a_B a_B^T)^-1 Z = Z``, by sparse products: an error of 1e-6 in any entry shows in some probe),
    and every other cell ``N`` lies in the span (``||a_N (I - Q Q^T)||_F^2 = ||a_N||_F^2 -
    trace(G_NB G_BB^-1 G_BN)`` is nought); otherwise None, and the caller proves nothing without a linear
    program. Dense work is two rank x rank matrices (the factor, the inverse), nothing of the atoms' size."""
    if a.shape[0] == 0:
        return None
    gram = (a @ a.T).toarray(order="F")
    top = max(float(gram.diagonal().max()), 1.0)
    with threadpool_limits(1, user_api="blas"):  # the cores are shared (the gate's service, the analysis)
        factor, piv, rank, _ = scipy.linalg.lapack.dpstrf(gram, tol=1e-9 * top, overwrite_a=1)
        if rank == 0:
            return None
        rows, other = sp.csr_matrix(a[piv[:rank] - 1]), sp.csr_matrix(a[piv[rank:] - 1])
        u = factor[:rank, :rank]  # its upper triangle is U; nothing below is read
        probes = np.random.default_rng(rank).standard_normal((rank, 8))
        step = scipy.linalg.solve_triangular(u, probes, check_finite=False)
        orthonormal = scipy.linalg.solve_triangular(u, rows @ (rows.T @ step), trans="T", check_finite=False)
        upper, info = scipy.linalg.lapack.dpotri(u, lower=0)
        if info != 0:
            return None
        inverted = rows @ (rows.T @ _symmetric(upper, probes))
        g_nb = (other @ rows.T).toarray()
        outside = float(other.multiply(other).sum()) - float((_symmetric(upper, g_nb.T).T * g_nb).sum())
    if outside > 1e-8 * max(float(a.multiply(a).sum()), 1.0):
        return None
    if max(float(np.abs(orthonormal - probes).max()), float(np.abs(inverted - probes).max())) > 1e-6:
        return None
    return _Basis(rows, upper)


def _symmetric(upper: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``S b`` for the symmetric ``S`` whose upper triangle ``upper`` holds (BLAS ``dsymm``; below it: anything)."""
    if b.size == 0:
        return np.zeros((upper.shape[0], b.shape[1]))
    return scipy.linalg.blas.dsymm(1.0, upper, np.asfortranarray(b, dtype=np.float64), side=0, lower=0)


@dataclass(eq=False)
class _Basis:
    """The row space of a component's cells: ``rows`` (independent cells, rank x atoms) and ``upper``, the upper
    triangle of their Gram matrix's inverse: ``Q Q^T = rows^T inverse rows`` projects onto the row space."""

    rows: sp.csr_matrix
    upper: np.ndarray

    @functools.cached_property
    def columns(self) -> sp.csr_matrix:
        """``a_B^T`` row-wise (atoms x rank): products with it are several times faster so."""
        m = sp.csr_matrix(self.rows.T)
        m.sort_indices()
        return m

    def project(self, s: sp.csr_matrix | np.ndarray) -> np.ndarray:
        """``Q Q^T s = a_B^T (a_B a_B^T)^-1 a_B s`` for a block of columns (atoms x k), without forming ``Q``
        (atoms x rank, dense: gigabytes at a city's scale): two sparse products and one small dense one."""
        inner = self.rows @ s
        inner = inner.toarray() if sp.issparse(inner) else np.asarray(inner)
        return np.asarray(self.columns @ _symmetric(self.upper, inner))

    def leverages(self, pairs_per_pass: int = 4_000_000) -> np.ndarray:
        """Every atom's ``|Q_j|^2 = a_j^T (a_B a_B^T)^-1 a_j``: the sum of the inverse Gram matrix over the pairs of
        basis cells the atom is in (a few dozen cells each; each unordered pair once, from the upper triangle),
        without forming ``Q`` (``O(sum of cells^2)``)."""
        m = self.columns  # sorted indices: position i < j in an atom's cells means cell i < cell j
        lengths = np.diff(m.indptr).astype(np.int64)
        pairs = lengths**2
        out = np.zeros(m.shape[0])
        ends = np.cumsum(pairs)
        start = 0
        while start < m.shape[0]:
            stop = max(int(np.searchsorted(ends, ends[start] - pairs[start] + pairs_per_pass, side="right")), start + 1)
            p, n = pairs[start:stop], lengths[start:stop]
            k = np.arange(int(p.sum())) - np.repeat(np.cumsum(p) - p, p)
            per = np.repeat(n, p)
            i, j = k // per, k % per
            keep = i <= j
            base = np.repeat(m.indptr[start:stop].astype(np.int64), p)[keep]
            first, second = m.indices[base + i[keep]], m.indices[base + j[keep]]
            weight = self.upper[first, second] * np.where(first == second, 1.0, 2.0)
            atom = np.repeat(np.arange(stop - start), p)[keep]
            out[start:stop] = np.bincount(atom, weights=weight, minlength=stop - start)
            start = stop
        return np.clip(out, 0.0, 1.0)


def _null_moves(
    a: sp.csr_matrix, x: np.ndarray, lo: np.ndarray, hi: np.ndarray, groups: sp.csr_matrix, need: np.ndarray,
    quantity: str, chunk: int = 128,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """For each candidate group ``s`` (a row of ``groups``: one atom, or a union of atoms), two feasible values of
    ``s . x`` found without a linear program: move the true point along the group's own direction in the null
    space of the released numbers, ``d = s - Q Q^T s`` (every released number stays true), as far as the bounds
    allow, both ways. Returns the lowest and highest value of each group along its direction (a certificate: both
    points are feasible).

    For a single atom ``v`` the step is first bounded without forming ``d``: ``d_v = 1 - |Q_v|^2`` and, for every
    other atom, ``|d_j| = |Q_j . Q_v| <= |Q_j| |Q_v|`` (Cauchy-Schwarz), so a step of
    ``t <= slack_j / (|Q_j| |Q_v|)`` keeps every atom within its bounds; one pass over the atoms' leverages
    (``O(atoms x rank)``) clears most candidates. Only the groups this bound leaves too narrow (and the unions)
    get their exact direction (dense, in chunks)."""
    value = groups @ x
    low, high = value.astype(np.float64).copy(), value.astype(np.float64).copy()
    basis = _row_space(a)
    if basis is None:
        return low, high
    single = np.flatnonzero(groups.getnnz(axis=1) == 1)
    if single.size:
        cand = groups[single].indices  # the atom of each single-atom group
        norms = np.sqrt(basis.leverages())
        slack = np.minimum(x - lo, hi - x)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(norms > 1e-12, slack / norms, np.inf)  # each atom's room per unit of |d_j| / |Q_v|
        order = np.argsort(ratio)
        first, second = order[0], order[min(1, order.size - 1)]
        m = np.where(cand == first, ratio[second] if order.size > 1 else np.inf, ratio[first])  # min over j != v
        qv = norms[cand]
        dv = 1.0 - np.square(qv)
        moves = dv > 1e-6  # 0: the atom's value is fixed by the released numbers
        with np.errstate(divide="ignore", invalid="ignore"):
            t_other = np.where(qv > 1e-12, m / qv, np.inf)
            t_up = np.minimum(t_other, (hi[cand] - x[cand]) / dv)
            t_down = np.minimum(t_other, (x[cand] - lo[cand]) / dv)
        t_up, t_down = np.minimum(t_up * (1 - 1e-9), 1e12), np.minimum(t_down * (1 - 1e-9), 1e12)
        low[single] = np.where(moves, x[cand] - t_down * dv, low[single])
        high[single] = np.where(moves, x[cand] + t_up * dv, high[single])
    left = np.flatnonzero(_width(low, high, quantity) < need)
    room_up = (hi - x)[:, None]
    room_down = (lo - x)[:, None]
    for start in range(0, left.size, chunk):
        idx = left[start : start + chunk]
        columns = sp.csc_matrix(groups[idx].T)  # atoms x k
        s = columns.toarray()
        d = s - basis.project(columns)  # every column in the null space of a
        d[np.abs(d) < 1e-9] = 0.0
        with np.errstate(divide="ignore", invalid="ignore"):
            t_max = np.where(d > 0, room_up / d, np.where(d < 0, room_down / d, np.inf)).min(axis=0)
            t_min = np.where(d > 0, room_down / d, np.where(d < 0, room_up / d, -np.inf)).max(axis=0)
        dv = (s * d).sum(axis=0)  # how much the group's value moves per unit step
        ok = dv > 1e-6  # 0: the group's value is fixed by the released numbers
        t_max, t_min = t_max * (1 - 1e-9), t_min * (1 - 1e-9)  # stay inside the bounds despite rounding
        low[idx] = np.where(ok, value[idx] + np.maximum(t_min, -1e12) * dv, low[idx])
        high[idx] = np.where(ok, value[idx] + np.minimum(t_max, 1e12) * dv, high[idx])
    return low, high


def _audit_component(
    system: System, comp: _Component, groups: sp.csr_matrix, quantity: str, interval: int, p: float, seed: int
) -> tuple[dict[int, tuple[float, float]], int]:
    """Bounds of the candidate groups (rows of ``groups``, over the component's atoms) that stay narrower than
    needed, by row, and the programs solved."""
    atoms, a, b = comp.atoms, comp.a, comp.b
    lo, hi, x = system.lower[atoms], system.upper[atoms], system.truth[atoms]
    truth = groups @ x
    need = np.full(truth.size, float(interval)) if quantity == COUNT else np.maximum(2 * p * np.abs(truth), 1e-6)
    seen_lo = truth.copy()
    seen_hi = seen_lo.copy()
    open_ = np.ones(truth.size, dtype=bool)
    rng = np.random.default_rng(seed)
    programs = 0
    program = functools.cache(lambda: _Program(a, b, lo, hi))  # built only when a linear program is needed

    def update(point: np.ndarray | None, idx: np.ndarray) -> None:
        if point is None:
            return
        v = groups[idx] @ point
        seen_lo[idx] = np.minimum(seen_lo[idx], v)
        seen_hi[idx] = np.maximum(seen_hi[idx], v)
        open_[idx] &= _width(seen_lo[idx], seen_hi[idx], quantity) < need[idx]

    # first without a program: each group's own null-space direction from the true point; most clear here
    moved_lo, moved_hi = _null_moves(a, x, lo, hi, groups, need, quantity)
    seen_lo, seen_hi = np.minimum(seen_lo, moved_lo), np.maximum(seen_hi, moved_hi)
    open_ &= _width(seen_lo, seen_hi, quantity) < need
    # batches: push every open group up, then down, with random weights; most move by the interval at once
    for _ in range(3):
        idx = np.flatnonzero(open_)
        if idx.size == 0:
            break
        for sign in (-1.0, 1.0):
            c = np.asarray(groups[idx].T @ (sign * rng.uniform(1.0, 2.0, idx.size))).ravel()
            programs += 1
            update(program().solve(c), np.flatnonzero(open_))  # None when unbounded: the one-by-one will say
            idx = np.flatnonzero(open_)
            if idx.size == 0:
                break
    # the rest, one by one: its own maximum, then its own minimum
    pinned: dict[int, tuple[float, float]] = {}
    for i in np.flatnonzero(open_):
        if not open_[i]:  # cleared meanwhile by another group's solution
            continue
        for sign in (-1.0, 1.0):
            c = sign * groups[i].toarray().ravel()
            programs += 1
            point = program().solve(c)
            if point is None:  # unbounded: not pinned
                open_[i] = False
                break
            update(point, np.flatnonzero(open_))  # every solution may clear other groups too
            if not open_[i]:
                break
        if open_[i]:
            pinned[int(i)] = (float(seen_lo[i]), float(seen_hi[i]))
    return pinned, programs


def _candidates(
    system: System, unions: sp.csr_matrix, comp: _Component, covered: np.ndarray, threshold: int
) -> sp.csr_matrix:
    """The groups to audit in one component, over its atoms: every small covered atom, and every small union's
    part in the component (the parts of a union in independent components are pinned together only if each is)."""
    atoms = comp.atoms
    small = np.flatnonzero((system.sizes[atoms] < threshold) & covered[atoms])
    singles = sp.csr_matrix((np.ones(small.size), (np.arange(small.size), small)), shape=(small.size, atoms.size))
    part = sp.csr_matrix(unions[:, atoms])
    part = part[np.flatnonzero(part.getnnz(axis=1) >= 2)]
    part = part[np.flatnonzero(np.asarray(part[:, np.flatnonzero(covered[atoms])].sum(axis=1)).ravel() > 0)]
    part = sp.vstack([part, _nested_differences(comp, system.sizes[atoms], threshold)], format="csr")
    if part.shape[0] == 0:
        return singles
    part.sort_indices()
    rows = {tuple(part.indices[part.indptr[i] : part.indptr[i + 1]]) for i in range(part.shape[0])}
    extra = sorted(rows)
    r = np.repeat(np.arange(len(extra)), [len(e) for e in extra])
    c = np.asarray([a for e in extra for a in e], dtype=np.int64)
    unique = sp.csr_matrix((np.ones(c.size), (r, c)), shape=(len(extra), atoms.size))
    return sp.vstack([singles, unique], format="csr")


def _nested_differences(comp: _Component, sizes: np.ndarray, threshold: int) -> sp.csr_matrix:
    """Released cells ``A`` and ``B`` with ``B`` inside ``A`` and fewer than ``threshold`` persons between them:
    ``A - B`` is a small group whatever other releases split it into (groups x the component's atoms).

    Only pairs of cells fewer than ``threshold`` persons apart can qualify: the cells sorted by persons give them
    (a window per cell), and containment is tested on those pairs alone, in batches of bounded size."""
    cells = comp.cells
    if cells.shape[0] < 2:
        return sp.csr_matrix((0, comp.atoms.size))
    width = cells.getnnz(axis=1)
    persons = np.asarray(cells @ sizes).ravel()
    order = np.argsort(persons, kind="stable")
    ranked = persons[order]
    first = np.searchsorted(ranked, ranked, side="right")  # the first cell with more persons than B
    stop = np.searchsorted(ranked, ranked + threshold, side="left")  # ... and the first threshold or more above
    counts = stop - first
    inner = np.repeat(order, counts)  # B
    outer = order[np.repeat(first, counts) + np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)]
    keep = width[outer] > width[inner]  # A has atoms B has not
    outer, inner = outer[keep], inner[keep]
    # a cheap look first: eight of B's atoms (its first, its last and six between) must all be in A
    cells.sort_indices()
    for k in range(8):
        if outer.size == 0:
            return sp.csr_matrix((0, comp.atoms.size))
        at = cells.indptr[inner] + (width[inner] - 1) * k // 7
        inside = np.asarray(cells[outer, cells.indices[at]]).ravel() > 0
        outer, inner = outer[inside], inner[inside]
    found: list[np.ndarray] = []
    ends = np.cumsum(width[outer].astype(np.int64))
    start = 0
    while start < outer.size:
        end = max(int(np.searchsorted(ends, ends[start] - width[outer[start]] + 20_000_000, side="right")), start + 1)
        o, i = outer[start:end], inner[start:end]
        shared = np.asarray(cells[o].multiply(cells[i]).sum(axis=1)).ravel()
        found.append(np.flatnonzero(shared == width[i]) + start)  # every atom of B is in A
        start = end
    pick = np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
    if pick.size == 0:
        return sp.csr_matrix((0, comp.atoms.size))
    diff = (cells[outer[pick]] - cells[inner[pick]]).tocsr()
    diff.eliminate_zeros()
    return diff


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
        earlier = _history_for([r for r in history if r.system == (quantity, unit)], incremental)
        added = [r for r in new if r.system == (quantity, unit)]
        if incremental and earlier.repeats(added, threshold):
            result.repeats += 1
            continue
        system = earlier.system([earlier.fold(r) for r in added], threshold)
        result.atoms += system.sizes.size
        # components over the spanning rows: the same solutions, and a dependent cell never joins two components
        # its spanning cells keep apart (it is their sum: a group across them is pinned only if each part is)
        spanning = sp.csr_matrix(system.matrix[system.basis])
        k, n = spanning.shape
        edges = np.concatenate([spanning.indptr, np.full(n, spanning.indptr[-1])])  # cell -> its atoms, one way
        graph = sp.csr_matrix((np.ones(spanning.nnz, dtype=np.int8), spanning.indices + k, edges), shape=(k + n, k + n))
        _, label = connected_components(graph, directed=True, connection="weak")
        atom_label = label[k:]
        new_atoms = np.unique(system.matrix[np.flatnonzero(system.cell_entry == 0)].indices)
        touched = np.unique(atom_label[new_atoms]) if incremental else np.unique(atom_label)
        covered = np.asarray(system.matrix.sum(axis=0)).ravel() > 0
        unions = system.unions if system.unions is not None else sp.csr_matrix((0, system.sizes.size))
        for label_ in touched:
            atoms = np.flatnonzero(atom_label == label_)
            if not ((system.sizes[atoms] < threshold) & covered[atoms]).any():
                continue  # every small group (a union, a nested difference) is made of small covered atoms
            comp = _Component.of(system, atoms)
            groups = _candidates(system, unions, comp, covered, threshold)
            if groups.shape[0] == 0:
                continue
            result.components += 1
            result.candidates += groups.shape[0]
            pinned, programs = _audit_component(system, comp, groups, quantity, interval, p, seed=int(label_))
            result.programs += programs
            truth = groups @ system.truth[atoms]
            size = groups @ system.sizes[atoms]
            for g, (low, high) in pinned.items():
                entries = tuple(sorted({int(e) for e in system.cell_entry[comp.rows]}, key=lambda s: (s == 0, s)))
                result.disclosures.append(Disclosure(quantity, unit, int(size[g]), float(truth[g]), low, high, entries))
    return result
