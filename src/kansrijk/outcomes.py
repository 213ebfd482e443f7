"""The single definition of the analysis outcomes: who is at risk, from which canonical variable, and how.

The coordinator derives outcomes from the linked canonical variables with ``derive_outcomes``; the synthetic city
draws its ground truth under the same definitions (``kansrijk.synth`` imports this module and its tests check that
outcomes derived from the raw extracts equal the ground truth). Change an outcome here and both follow.

Age is always ``year - birth_year`` (the age reached in the reference year): birth dates are generalised to the
birth year before they leave a partner, so nothing finer can be used after linkage.

SDQ clinical cut-off. Theunissen et al. (BMC Pediatrics 22:202, 2022) give Dutch parent-form cut-offs for total
difficulties between > 10 and > 14 depending on age band, with "clinical" defined as the top 10% of the norm
group. Parent-reported difficulties fall with age, so kansrijk uses a cut-off that steps down one point per band
from > 14 (ages 4-5) to > 10 (ages 15-18). The exact band edges are kansrijk's choice inside the published range
(the per-band table was not available offline) and are documented in docs/synthetic-city.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

PSYCHOSOCIAL_RISK = "psychosocial_risk"
GRADE_REPETITION = "grade_repetition"
TRACK_UP = "track_up"
TRACK_DOWN = "track_down"
EARLY_SCHOOL_LEAVING = "early_school_leaving"
DELINQUENCY = "delinquency"

OUTCOME_NAMES: tuple[str, ...] = (
    PSYCHOSOCIAL_RISK,
    GRADE_REPETITION,
    TRACK_UP,
    TRACK_DOWN,
    EARLY_SCHOOL_LEAVING,
    DELINQUENCY,
)


@dataclass(frozen=True, slots=True)
class SdqCutoff:
    """Total difficulties strictly above ``above`` is clinical for ages ``min_age``..``max_age`` (inclusive)."""

    min_age: int
    max_age: int
    above: int


SDQ_CLINICAL_CUTOFFS: tuple[SdqCutoff, ...] = (
    SdqCutoff(4, 5, 14),
    SdqCutoff(6, 8, 13),
    SdqCutoff(9, 11, 12),
    SdqCutoff(12, 14, 11),
    SdqCutoff(15, 18, 10),
)
SDQ_MIN_AGE = SDQ_CLINICAL_CUTOFFS[0].min_age
SDQ_MAX_AGE = SDQ_CLINICAL_CUTOFFS[-1].max_age


def sdq_cutoff(age: int) -> int | None:
    """The clinical cut-off (total must be strictly above it) for one age, or None outside 4-18."""
    for band in SDQ_CLINICAL_CUTOFFS:
        if band.min_age <= age <= band.max_age:
            return band.above
    return None


def age_expr() -> pl.Expr:
    """Age reached in the reference year, from the canonical ``year`` and ``birth_year``."""
    return pl.col("year").cast(pl.Int32) - pl.col("birth_year").cast(pl.Int32)


def sdq_cutoff_expr(age: pl.Expr | None = None) -> pl.Expr:
    """The clinical cut-off for each row's age; null outside the SDQ age range."""
    age = age_expr() if age is None else age
    table = {a: band.above for band in SDQ_CLINICAL_CUTOFFS for a in range(band.min_age, band.max_age + 1)}
    return age.cast(pl.Int32).replace_strict(table, default=None, return_dtype=pl.Int32)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One outcome: its canonical source, the population at risk, and how to derive it.

    ``population`` is true for rows that belong to the population at risk; ``derive`` gives the outcome for those
    rows (``derive_outcomes`` sets it to null elsewhere). ``probability_column`` names the ground-truth column of
    the synthetic city that holds the true probability.
    """

    name: str
    source_variable: str
    partner: str
    population_description: str
    min_age: int
    max_age: int
    description: str

    @property
    def probability_column(self) -> str:
        return f"p_{self.name}"

    def population(self) -> pl.Expr:
        age = age_expr()
        in_ages = age.is_between(self.min_age, self.max_age)
        source = pl.col(self.source_variable).is_not_null()
        if self.name in (GRADE_REPETITION,):
            return in_ages & source & pl.col("school_type").is_in(["primary", "secondary"])
        if self.name in (TRACK_UP, TRACK_DOWN):
            return in_ages & source & (pl.col("school_type") == "secondary")
        if self.name == EARLY_SCHOOL_LEAVING:
            return in_ages & source & pl.col("school_type").is_in(["secondary", "mbo"])
        return in_ages & source

    def derive(self) -> pl.Expr:
        col = pl.col(self.source_variable)
        if self.name == PSYCHOSOCIAL_RISK:
            return col.cast(pl.Int32) > sdq_cutoff_expr()
        if self.name == TRACK_UP:
            return col == "up"
        if self.name == TRACK_DOWN:
            return col == "down"
        return col.cast(pl.Boolean)

    def expr(self) -> pl.Expr:
        """The outcome as a nullable boolean: null outside the population at risk."""
        return pl.when(self.population()).then(self.derive()).otherwise(None).alias(self.name)


OUTCOMES: dict[str, Outcome] = {
    o.name: o
    for o in (
        Outcome(
            PSYCHOSOCIAL_RISK,
            "sdq_total",
            "cjg",
            "children aged 4-18 seen by the CJG with an SDQ total",
            SDQ_MIN_AGE,
            SDQ_MAX_AGE,
            "SDQ total difficulties strictly above the Dutch clinical cut-off for the age band",
        ),
        Outcome(
            GRADE_REPETITION,
            "repeated_grade",
            "duo",
            "pupils in primary or secondary school (DUO)",
            4,
            23,
            "repeated a grade since last year (zittenblijven)",
        ),
        Outcome(
            TRACK_UP,
            "track_change",
            "duo",
            "pupils in secondary school (DUO)",
            4,
            23,
            "moved up a track since last year (opstroom)",
        ),
        Outcome(
            TRACK_DOWN,
            "track_change",
            "duo",
            "pupils in secondary school (DUO)",
            4,
            23,
            "moved down a track since last year (afstroom)",
        ),
        Outcome(
            EARLY_SCHOOL_LEAVING,
            "early_school_leaver",
            "duo",
            "pupils aged 12-23 in secondary school or MBO (DUO)",
            12,
            23,
            "left school without a basic qualification this year (vsv)",
        ),
        Outcome(
            DELINQUENCY,
            "crime_suspect",
            "cbs",
            "persons aged 12-23 (CBS)",
            12,
            23,
            "registered as a crime suspect in the reference year",
        ),
    )
}


def outcome(name: str) -> Outcome:
    """The outcome called ``name``; raises ``KeyError`` naming the known outcomes otherwise."""
    try:
        return OUTCOMES[name]
    except KeyError:
        raise KeyError(f"unknown outcome {name!r}; known: {', '.join(OUTCOME_NAMES)}") from None


def derive_outcomes(frame: pl.LazyFrame | pl.DataFrame, names: tuple[str, ...] | None = None) -> pl.LazyFrame:
    """Add one nullable boolean column per outcome (null outside its population) to a canonical frame.

    The frame needs ``year`` and ``birth_year`` and each outcome's source variable; outcomes whose source
    variable is absent are skipped (a partner not linked gives no outcome rather than an error).
    """
    lazy = frame.lazy()
    columns = set(lazy.collect_schema().names())
    wanted = OUTCOME_NAMES if names is None else names
    exprs = []
    for name in wanted:
        o = outcome(name)
        needed = {o.source_variable, "year", "birth_year"}
        if o.name in (GRADE_REPETITION, TRACK_UP, TRACK_DOWN, EARLY_SCHOOL_LEAVING):
            needed.add("school_type")
        if needed <= columns:
            exprs.append(o.expr())
    return lazy.with_columns(exprs) if exprs else lazy
