"""Injected faults: every one is applied to a typed extract and recorded (partner, year, row, field, kind, person).

Kinds:
- ``bsn_checksum``: the BSN's last digit is changed, so the 11-check fails (row invalid);
- ``duplicate_row``: an exact copy of a row is inserted right after it (the copy's row is recorded);
- ``missing_value``: a required field is emptied (row invalid);
- ``impossible_value``: age 250 via the birth date, a negative WOZ, an SDQ item answered 3, or BMI 0 (row
  invalid);
- ``conflict_sex`` / ``conflict_birth_year``: the person's sex, or birth year (+/- 1), differs in this partner's
  file from the others (the row is valid on its own; the conflict shows only after linkage).

Rows are 1-based data rows of the file as written (the header is not a row). Each fault hits a different
original row, and a person gets at most one cross-partner conflict per year.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from kansrijk.synth.extracts import ID_COLUMN, PARTNER_COLUMNS, SDQ_COLUMNS

FAULT_KINDS: tuple[str, ...] = (
    "bsn_checksum",
    "duplicate_row",
    "missing_value",
    "impossible_value",
    "conflict_sex",
    "conflict_birth_year",
)
INVALIDATING_KINDS: frozenset[str] = frozenset({"bsn_checksum", "missing_value", "impossible_value"})
FAULTS_SCHEMA = {
    "partner": pl.String,
    "year": pl.Int32,
    "row": pl.Int64,
    "field": pl.String,
    "kind": pl.String,
    "person_id": pl.Int64,
}


@dataclass(frozen=True, slots=True)
class FaultedExtract:
    """A typed extract with its faults applied and duplicates inserted, and the record of those faults."""

    frame: pl.DataFrame
    faults: pl.DataFrame
    invalid_person_ids: np.ndarray


def _assign_kinds(rng: np.random.Generator, n_faults: int) -> np.ndarray:
    """Spread ``n_faults`` over the kinds round-robin from a random start, so every kind occurs once n >= 6."""
    order = rng.permutation(len(FAULT_KINDS))
    return np.array(FAULT_KINDS, dtype=object)[order[np.arange(n_faults) % len(FAULT_KINDS)]]


def _scatter(frame: pl.DataFrame, column: str, rows: np.ndarray, values: pl.Series | object) -> pl.DataFrame:
    if rows.size == 0:
        return frame
    order = np.argsort(rows, kind="stable")  # polars wants the indices sorted
    if isinstance(values, pl.Series):
        values = values.gather(order)
    series = frame[column].clone().scatter(rows[order], values)
    return frame.with_columns(series.alias(column))


def inject_faults(
    rng: np.random.Generator,
    partner: str,
    year: int,
    typed: pl.DataFrame,
    rate: float,
    conflicted: set[int],
) -> FaultedExtract:
    """Apply ``round(rate * rows)`` faults to a typed extract; ``conflicted`` is updated with conflict persons."""
    cols = PARTNER_COLUMNS[partner]
    height = typed.height
    n_faults = min(round(rate * height), height)
    kinds = _assign_kinds(rng, n_faults)
    pids = typed[ID_COLUMN].to_numpy()
    # Conflicts must not land on a person who already has one this year (at another partner).
    is_conflict = np.isin(kinds, ["conflict_sex", "conflict_birth_year"])
    eligible_conflict = ~np.isin(pids, np.fromiter(conflicted, dtype=np.int64, count=len(conflicted)))
    rows = np.full(n_faults, -1, dtype=np.int64)
    perm = rng.permutation(height)
    conflict_pool = perm[eligible_conflict[perm]]
    n_conf = int(is_conflict.sum())
    rows[is_conflict] = conflict_pool[:n_conf]
    rest_pool = perm[~np.isin(perm, rows[is_conflict])]
    rows[~is_conflict] = rest_pool[: n_faults - n_conf]
    conflicted.update(pids[rows[is_conflict]].tolist())

    fields = np.empty(n_faults, dtype=object)
    frame = typed
    # --- bsn_checksum: change the last digit by 1..9 (the weighted sum then moves by 1..9, never by 11) ---
    sel = rows[kinds == "bsn_checksum"]
    if sel.size:
        old = frame[cols.bsn].gather(sel)
        last = old.str.slice(8, 1).cast(pl.Int64)
        bump = pl.Series(rng.integers(1, 10, sel.size))
        new = old.str.slice(0, 8) + ((last + bump) % 10).cast(pl.String)
        frame = _scatter(frame, cols.bsn, sel, new)
    fields[kinds == "bsn_checksum"] = cols.bsn
    # --- missing_value ---
    mask = kinds == "missing_value"
    choice = np.array(cols.missing, dtype=object)[rng.integers(0, len(cols.missing), int(mask.sum()))]
    fields[mask] = choice
    for field in cols.missing:
        frame = _scatter(frame, field, rows[mask][choice == field], None)
    # --- impossible_value ---
    mask = kinds == "impossible_value"
    choice = np.array(cols.impossible, dtype=object)[rng.integers(0, len(cols.impossible), int(mask.sum()))]
    imp_rows = rows[mask]
    if partner == "cjg" and imp_rows.size:
        has_items = frame["sdq_01"].gather(imp_rows).is_not_null().to_numpy()
        choice = np.where((choice == "sdq_item") & ~has_items, "bmi", choice)
        item = np.array(SDQ_COLUMNS, dtype=object)[rng.integers(0, 25, imp_rows.size)]
        choice = np.where(choice == "sdq_item", item, choice)
    fields[mask] = choice
    for field in np.unique(choice) if choice.size else []:
        sel = imp_rows[choice == field]
        if field == cols.birth_date:
            frame = _scatter(frame, field, sel, frame[field].gather(sel).dt.offset_by("-250y"))
        elif field == "WOZ_waarde":
            frame = _scatter(frame, field, sel, -frame[field].gather(sel).abs())
        elif field == "bmi":
            frame = _scatter(frame, field, sel, 0.0)
        else:  # an SDQ item answered 3
            frame = _scatter(frame, field, sel, 3)
    # --- conflicts ---
    sel = rows[kinds == "conflict_sex"]
    fields[kinds == "conflict_sex"] = cols.sex
    if sel.size:
        male, female = cols.sex_codes
        old = frame[cols.sex].gather(sel)
        flipped = pl.select(
            pl.when(old == male).then(pl.lit(female)).otherwise(pl.lit(male)).cast(old.dtype)
        ).to_series()
        frame = _scatter(frame, cols.sex, sel, flipped)
    sel = rows[kinds == "conflict_birth_year"]
    fields[kinds == "conflict_birth_year"] = cols.birth_date
    if sel.size:
        old = frame[cols.birth_date].gather(sel)
        later = pl.Series(rng.random(sel.size) < 0.5)
        shifted = pl.select(pl.when(later).then(old.dt.offset_by("1y")).otherwise(old.dt.offset_by("-1y"))).to_series()
        frame = _scatter(frame, cols.birth_date, sel, shifted)
    # --- duplicates: a copy right after the original ---
    dup_rows = rows[kinds == "duplicate_row"]
    fields[kinds == "duplicate_row"] = None
    order = np.arange(height, dtype=np.int64) * 2
    frame = frame.with_columns(pl.Series("_order", order))
    copies = frame[dup_rows].with_columns(pl.col("_order") + 1)
    frame = pl.concat([frame, copies]).sort("_order")
    final_row = pl.Series(
        np.searchsorted(frame["_order"].to_numpy(), np.where(kinds == "duplicate_row", rows * 2 + 1, rows * 2)) + 1
    )
    frame = frame.drop("_order")

    faults = pl.DataFrame(
        {
            "partner": [partner] * n_faults,
            "year": np.full(n_faults, year, dtype=np.int32),
            "row": final_row.cast(pl.Int64),
            "field": pl.Series(fields.tolist(), dtype=pl.String),
            "kind": pl.Series(kinds.tolist(), dtype=pl.String),
            "person_id": pids[rows].astype(np.int64),
        },
        schema=FAULTS_SCHEMA,
    ).sort("row")
    invalid = pids[rows[np.isin(kinds, list(INVALIDATING_KINDS))]]
    return FaultedExtract(frame=frame, faults=faults, invalid_person_ids=invalid)
