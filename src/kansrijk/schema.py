"""Canonical variables: the one vocabulary every partner's extract is mapped into.

A partner's sharing policy maps its own column names onto these variables (and says which it shares at all);
the node agent validates against the types, ranges and categories declared here; the coordinator links and
analyses on them. The identifier never appears past the node agent: only ``pseudonym`` (32 bytes, HMAC) does.

Changing a variable's meaning is a schema change: bump ``SCHEMA_VERSION`` and list it in the partner registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import polars as pl

SCHEMA_VERSION = "1"

PARTNERS: tuple[str, ...] = ("cbs", "gemeente", "cjg", "duo")


class Kind(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CATEGORY = "category"
    CODE = "code"  # a string code from an open but patterned set (buurt codes)
    BINARY = "binary"  # only the pseudonym


_POLARS = {
    Kind.INT: pl.Int32,
    Kind.FLOAT: pl.Float64,
    Kind.BOOL: pl.Boolean,
    Kind.CATEGORY: pl.String,
    Kind.CODE: pl.String,
    Kind.BINARY: pl.Binary,
}


@dataclass(frozen=True, slots=True)
class Variable:
    """One canonical variable: its type, its valid values, and what it means."""

    name: str
    kind: Kind
    description: str
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    pattern: str | None = None  # regex for CODE variables
    unit: str | None = None

    @property
    def dtype(self) -> type[pl.DataType]:
        return _POLARS[self.kind]


TRACKS = (
    "PO",
    "VMBO-B",
    "VMBO-K",
    "VMBO-G",
    "VMBO-T",
    "HAVO",
    "VWO",
    "MBO-1",
    "MBO-2",
    "MBO-3",
    "MBO-4",
)
SCHOOL_ADVICE = ("VMBO-B", "VMBO-K", "VMBO-GT", "HAVO", "VWO")

_VARIABLES: tuple[Variable, ...] = (
    # --- identity and shared attributes (every partner) ---
    Variable("pseudonym", Kind.BINARY, "Keyed pseudonym of the person (HMAC-SHA256, 32 bytes); never a BSN."),
    Variable("year", Kind.INT, "Reference year the extract describes.", 2000, 2100),
    Variable("birth_year", Kind.INT, "Year of birth (birth date generalised).", 1990, 2100),
    Variable("birth_month", Kind.INT, "Month of birth, only where a policy generalises to year-month.", 1, 12),
    Variable("sex", Kind.CATEGORY, "Registered sex.", categories=("M", "F")),
    # --- CBS ---
    Variable(
        "migration_background",
        Kind.CATEGORY,
        "CBS migration background of the person.",
        categories=("dutch", "western", "non_western"),
    ),
    Variable(
        "household_type",
        Kind.CATEGORY,
        "Household composition.",
        categories=("two_parent", "single_parent", "other"),
    ),
    Variable("low_income", Kind.BOOL, "Household income below the social minimum (CBS flag)."),
    Variable("crime_suspect", Kind.BOOL, "Registered as a crime suspect in the reference year (CBS/police)."),
    # --- Gemeente Rotterdam ---
    Variable("buurt_code", Kind.CODE, "CBS neighbourhood code of the home address.", pattern=r"^BU0599\d{4}$"),
    Variable("wijk_code", Kind.CODE, "CBS district code of the home address.", pattern=r"^WK0599\d{2}$"),
    Variable("woz_eur", Kind.INT, "Assessed value (WOZ) of the home, rounded.", 0, 10_000_000, unit="EUR"),
    Variable("social_assistance", Kind.BOOL, "Household receives social assistance (bijstand)."),
    Variable("debt_assistance", Kind.BOOL, "Household in municipal debt assistance (schuldhulp)."),
    Variable("truancy_reports", Kind.INT, "Truancy reports (verzuimmeldingen) in the reference year.", 0, 100),
    Variable("youth_care", Kind.BOOL, "Received youth care (jeugdhulp) in the reference year."),
    # --- CJG youth health ---
    Variable("sdq_total", Kind.INT, "SDQ total difficulties score (parent form, 4 problem scales).", 0, 40),
    Variable("sdq_prosocial", Kind.INT, "SDQ prosocial scale (not part of the total).", 0, 10),
    Variable("bmi", Kind.FLOAT, "Body-mass index at the last visit, one decimal.", 8.0, 60.0, unit="kg/m2"),
    Variable("language_delay", Kind.BOOL, "Language development delay noted by the youth doctor or nurse."),
    Variable("parenting_concerns", Kind.BOOL, "Parenting concerns noted at the last visit."),
    Variable("visit_year", Kind.INT, "Year of the last CJG visit (visit date generalised).", 2000, 2100),
    # --- DUO education register ---
    Variable("school_type", Kind.CATEGORY, "Sector of education.", categories=("primary", "secondary", "mbo")),
    Variable("track", Kind.CATEGORY, "School track (onderwijstype / niveau).", categories=TRACKS),
    Variable("grade", Kind.INT, "Grade (leerjaar) within the school type.", 1, 8),
    Variable("repeated_grade", Kind.BOOL, "Repeated a grade (zittenblijven) since last year."),
    Variable(
        "track_change",
        Kind.CATEGORY,
        "Moved up or down a track since last year.",
        categories=("none", "up", "down"),
    ),
    Variable("early_school_leaver", Kind.BOOL, "Left school without a basic qualification (vsv) this year."),
    Variable("school_advice", Kind.CATEGORY, "Primary school's advice for secondary school.", categories=SCHOOL_ADVICE),
)

VARIABLES: dict[str, Variable] = {v.name: v for v in _VARIABLES}

# Attributes more than one partner holds; the coordinator checks they agree after linkage.
SHARED_ATTRIBUTES: tuple[str, ...] = ("birth_year", "sex")


def variable(name: str) -> Variable:
    """The canonical variable called ``name``; raises ``KeyError`` naming the known variables otherwise."""
    try:
        return VARIABLES[name]
    except KeyError:
        known = ", ".join(sorted(VARIABLES))
        raise KeyError(f"unknown canonical variable {name!r}; known: {known}") from None


def polars_schema(names: list[str] | tuple[str, ...]) -> dict[str, type[pl.DataType]]:
    """The polars schema of a payload holding exactly the variables ``names``, in that order."""
    return {n: variable(n).dtype for n in names}
