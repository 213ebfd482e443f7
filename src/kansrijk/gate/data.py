"""The data the gate holds: the workspace's linked datasets and linkage flags, read by the gate itself.

Layout (written by ``coordinator link``)::

    WS/dataset/<year>.parquet           one row per linked person (``pseudonym`` = P2) and reference year
    WS/dataset/linkage/<year>.parquet   one row per person held by any partner: linkage flags (no attributes)

The gate never takes rows from a requester: a spec names reference years and a population, and ``GateData``
returns the rows. On first read of a year it checks the privacy unit the gate's rules rest on: **one row per
person per reference year** (``DatasetInvalid`` otherwise), so a person's contributions to a pooled release are
bounded by the number of years, which DP's contribution bound uses.

Every variable a spec may name has a public *domain* (``domain_of``): its kind, its public categories (never
taken from the data) and its public bounds. Canonical variables take theirs from ``kansrijk.schema``; outcomes
are booleans; ``age_years`` is the derived age; ``<variable>_last_year`` is the variable in the person's record
of the year before (missing without one) with the variable's domain.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from kansrijk.errors import GateError
from kansrijk.gate.requests import RequestInvalid
from kansrijk.outcomes import OUTCOME_NAMES
from kansrijk.schema import PARTNERS, SHARED_ATTRIBUTES, VARIABLES, Kind

PERSON = "pseudonym"
YEAR = "year"
LAST_YEAR = "_last_year"  # suffix of a previous-year variable: track_last_year is last year's track
DATASET_DIR = "dataset"
LINKAGE_DIR = "dataset/linkage"
AGE_RANGE = (0, 30)  # the derived age's public range (youth studies: 0 to 30 years)
MAX_INT_KEYS = 101  # an integer variable with at most this many public values groups a table directly

Table = Literal["linked", "linkage"]
DomainKind = Literal["bool", "category", "code", "int", "float"]


class DatasetInvalid(GateError):
    """The gate's own data breaks an assumption its rules rest on (e.g. a person twice in one year)."""

    exit_code = 25


class UnknownVariable(RequestInvalid):
    """A spec names a reference year or a variable the gate's data does not hold: an invalid request (nothing is
    released, recorded or spent)."""


@dataclass(frozen=True, slots=True)
class Domain:
    """What is public about a variable: kind, categories (keys) and bounds."""

    name: str
    kind: DomainKind
    categories: tuple[Any, ...] | None = None
    bounds: tuple[float, float] | None = None

    @property
    def numeric(self) -> bool:
        return self.kind in ("int", "float")


def conflict_kinds() -> tuple[str, ...]:
    """The public categories of the linkage flag ``conflict_kind``: none, or which shared attributes differ."""
    combos = (
        "+".join(c) for r in range(1, len(SHARED_ATTRIBUTES) + 1) for c in itertools.combinations(SHARED_ATTRIBUTES, r)
    )
    return ("none", *combos)


def _linkage_domains() -> dict[str, Domain]:
    out = {
        "partners": Domain("partners", "int", tuple(range(1, len(PARTNERS) + 1)), (1.0, float(len(PARTNERS)))),
        "conflict_kind": Domain("conflict_kind", "category", conflict_kinds()),
        "resolution": Domain("resolution", "category", ("no_conflict", "resolved", "excluded")),
    }
    for p in PARTNERS:
        out[f"in_{p}"] = Domain(f"in_{p}", "bool", (False, True))
    return out


def domain_of(table: Table, name: str) -> Domain | None:
    """The public domain of ``name`` in ``table``, or None when the gate knows no such variable."""
    if table == "linkage":
        return _linkage_domains().get(name)
    if name.endswith(LAST_YEAR):
        base = domain_of(table, name[: -len(LAST_YEAR)])
        return None if base is None else Domain(name, base.kind, base.categories, base.bounds)
    if name in OUTCOME_NAMES:
        return Domain(name, "bool", (False, True))
    if name == "age_years":
        return Domain(
            name, "int", tuple(range(AGE_RANGE[0], AGE_RANGE[1] + 1)), (float(AGE_RANGE[0]), float(AGE_RANGE[1]))
        )
    var = VARIABLES.get(name)
    if var is None or var.kind is Kind.BINARY:
        return None  # unknown, or the person key itself: never a variable of a release
    bounds = (float(var.minimum), float(var.maximum)) if var.minimum is not None and var.maximum is not None else None
    if var.kind is Kind.BOOL:
        return Domain(name, "bool", (False, True))
    if var.kind is Kind.CATEGORY:
        return Domain(name, "category", tuple(var.categories))
    if var.kind is Kind.CODE:
        return Domain(name, "code")
    if var.kind is Kind.INT:
        small = bounds is not None and bounds[1] - bounds[0] + 1 <= MAX_INT_KEYS
        keys = tuple(range(int(bounds[0]), int(bounds[1]) + 1)) if small and bounds is not None else None
        return Domain(name, "int", keys, bounds)
    return Domain(name, "float", None, bounds)


def with_previous_year(
    frame: pl.DataFrame, previous: pl.DataFrame, variables: Sequence[str], source: str = "previous year"
) -> pl.DataFrame:
    """``frame`` with ``<variable>_last_year`` columns: each person's ``variables`` in ``previous`` (the linked
    dataset of the year before), missing for persons without a record there. Frames that already hold them are
    returned as they are."""
    wanted = [v for v in variables if v in previous.columns and f"{v}{LAST_YEAR}" not in frame.columns]
    if not wanted or PERSON not in frame.columns or PERSON not in previous.columns:
        return frame
    if previous.get_column(PERSON).is_duplicated().any():
        raise DatasetInvalid(
            f"{source}: a pseudonym occurs more than once, so last year's record is ambiguous",
            hint="re-run coordinator link for that year (one row per person)",
        )
    last = previous.select(PERSON, *[pl.col(v).alias(f"{v}{LAST_YEAR}") for v in wanted])
    return frame.join(last, on=PERSON, how="left", maintain_order="left")


class GateData:
    """Read-only access to the workspace's linked datasets and linkage flags, cached per year."""

    def __init__(self, workspace: Path):
        self.workspace = Path(workspace)
        self._frames: dict[tuple[Table, int], pl.DataFrame] = {}

    def path(self, table: Table, year: int) -> Path:
        return self.workspace / (DATASET_DIR if table == "linked" else LINKAGE_DIR) / f"{year}.parquet"

    def years(self, table: Table = "linked") -> list[int]:
        folder = self.workspace / (DATASET_DIR if table == "linked" else LINKAGE_DIR)
        return sorted(int(p.stem) for p in folder.glob("[0-9][0-9][0-9][0-9].parquet"))

    def _year(self, table: Table, year: int) -> pl.DataFrame:
        key = (table, year)
        if key not in self._frames:
            path = self.path(table, year)
            if not path.is_file():
                raise UnknownVariable(
                    f"reference year {year}: no {'linked dataset' if table == 'linked' else 'linkage flags'} "
                    f"({path.relative_to(self.workspace)}); linked years: {self.years(table)}",
                    hint="name a linked reference year, or run: kansrijk coordinator link WS",
                )
            frame = pl.read_parquet(path)
            if PERSON not in frame.columns:
                raise DatasetInvalid(f"{path}: no {PERSON} column; re-run coordinator link")
            if frame.get_column(PERSON).null_count() or frame.get_column(PERSON).is_duplicated().any():
                raise DatasetInvalid(
                    f"{path}: a person has more than one row (or none as key) in reference year {year}; the gate's "
                    f"privacy unit is one person with one row per reference year",
                    hint="re-run coordinator link for that year",
                )
            if YEAR not in frame.columns:
                frame = frame.with_columns(pl.lit(year, dtype=pl.Int32).alias(YEAR))
            self._frames[key] = frame
        return self._frames[key]

    def frame(self, table: Table, years: Sequence[int], variables: Sequence[str]) -> pl.DataFrame:
        """The rows of ``years`` (one per person and year) with ``PERSON``, ``YEAR`` and ``variables``;
        ``<v>_last_year`` variables are joined from the year before (missing where it is not linked)."""
        parts = []
        for year in years:
            frame = self._year(table, year)
            last = [v[: -len(LAST_YEAR)] for v in variables if v.endswith(LAST_YEAR) and v not in frame.columns]
            if last:
                if year - 1 in self.years(table):
                    frame = with_previous_year(frame, self._year(table, year - 1), last, f"reference year {year - 1}")
                frame = frame.with_columns(
                    pl.lit(None).alias(f"{v}{LAST_YEAR}") for v in last if f"{v}{LAST_YEAR}" not in frame.columns
                )
            missing = [v for v in variables if v not in frame.columns]
            if missing:
                raise UnknownVariable(
                    f"reference year {year}: the {'linked dataset' if table == 'linked' else 'linkage flags'} "
                    f"hold(s) no variable {', '.join(repr(m) for m in missing)}",
                    hint="name canonical variables the partners share (docs/queries.md)",
                )
            parts.append(frame.select(PERSON, YEAR, *dict.fromkeys(v for v in variables if v not in (PERSON, YEAR))))
        return pl.concat(parts, how="vertical_relaxed") if len(parts) > 1 else parts[0]


__all__ = [
    "LAST_YEAR",
    "PERSON",
    "YEAR",
    "DatasetInvalid",
    "Domain",
    "GateData",
    "UnknownVariable",
    "conflict_kinds",
    "domain_of",
    "with_previous_year",
]
