"""The analysis outcomes, derived declaratively from the active study: who is at risk, from which variable, how.

The study file (``kansrijk.study``) declares each outcome: its source variable, its derivation (a threshold, an
equality or a category set) and its population at risk (an age range and conditions on variables). This module
turns those declarations into polars expressions. The coordinator derives outcomes from the linked canonical
variables with ``derive_outcomes``; the synthetic city draws its ground truth under the same definitions and its
tests check that outcomes derived from the raw extracts equal the ground truth.

Age is always ``year - birth_year`` (the age reached in the reference year): birth dates are generalised to the
birth year before they leave a partner, so nothing finer can be used after linkage.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import polars as pl

from kansrijk.schema import _Names
from kansrijk.study import active_study
from kansrijk.study.model import AgeBand
from kansrijk.study.model import Outcome as OutcomeModel

OUTCOME_NAMES = _Names("outcomes")


def age_expr() -> pl.Expr:
    """Age reached in the reference year, from the canonical ``year`` and ``birth_year``."""
    return pl.col("year").cast(pl.Int32) - pl.col("birth_year").cast(pl.Int32)


def _age_table(bands: tuple[AgeBand, ...]) -> dict[int, float]:
    return {a: band.value for band in bands for a in range(band.min_age, band.max_age + 1)}


@dataclass(frozen=True, slots=True)
class Outcome:
    """One outcome of the study: its canonical source, the population at risk, and how to derive it.

    ``population`` is true for rows that belong to the population at risk; ``derive`` gives the outcome for those
    rows (``expr`` sets it to null elsewhere). ``probability_column`` names the ground-truth column of the
    synthetic city that holds the true probability.
    """

    name: str
    source_variable: str
    partner: str
    population_description: str
    min_age: int
    max_age: int
    description: str
    model: OutcomeModel

    @property
    def probability_column(self) -> str:
        return f"p_{self.name}"

    @property
    def conditions(self) -> dict[str, tuple[str | int | bool, ...]]:
        return dict(self.model.at_risk.conditions)

    @property
    def needs(self) -> frozenset[str]:
        """The canonical columns the outcome is derived from (source, age, conditions)."""
        return frozenset({self.source_variable, "year", "birth_year", *self.conditions})

    def threshold_for_age(self, age: int) -> float | None:
        """The threshold of a by-age threshold outcome for one age, or None outside its bands."""
        return _age_table(self.model.derivation.by_age).get(age)

    def population(self) -> pl.Expr:
        expr = age_expr().is_between(self.min_age, self.max_age) & pl.col(self.source_variable).is_not_null()
        for name, allowed in self.conditions.items():
            expr = expr & pl.col(name).is_in(list(allowed))
        return expr

    def derive(self) -> pl.Expr:
        d = self.model.derivation
        col = pl.col(self.source_variable)
        if d.rule == "equals":
            return col == d.value
        if d.rule == "in":
            return col.is_in(list(d.values))
        if d.by_age:
            table = {a: int(v) if float(v).is_integer() else v for a, v in _age_table(d.by_age).items()}
            limit = age_expr().replace_strict(table, default=None)
        else:
            limit = pl.lit(d.value)
        value = col.cast(pl.Float64)
        limit = limit.cast(pl.Float64)
        return {"above": value > limit, "at_least": value >= limit, "below": value < limit}[d.compare]

    def expr(self) -> pl.Expr:
        """The outcome as a nullable boolean: null outside the population at risk."""
        return pl.when(self.population()).then(self.derive()).otherwise(None).alias(self.name)


def _outcome(name: str, model: OutcomeModel) -> Outcome:
    study = active_study()
    return Outcome(
        name=name,
        source_variable=model.source,
        partner=study.holder_of(model.source),
        population_description=model.at_risk.description,
        min_age=model.at_risk.min_age,
        max_age=model.at_risk.max_age,
        description=model.description,
        model=model,
    )


class _Outcomes(Mapping[str, Outcome]):
    """The active study's outcomes, in the study file's order."""

    def __getitem__(self, name: str) -> Outcome:
        return _outcome(name, active_study().outcomes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(active_study().outcomes)

    def __len__(self) -> int:
        return len(active_study().outcomes)


OUTCOMES: Mapping[str, Outcome] = _Outcomes()


def outcome(name: str) -> Outcome:
    """The outcome called ``name``; raises ``KeyError`` naming the known outcomes otherwise."""
    try:
        return OUTCOMES[name]
    except KeyError:
        raise KeyError(f"unknown outcome {name!r}; known: {', '.join(OUTCOME_NAMES)}") from None


def derive_outcomes(frame: pl.LazyFrame | pl.DataFrame, names: tuple[str, ...] | None = None) -> pl.LazyFrame:
    """Add one nullable boolean column per outcome (null outside its population) to a canonical frame.

    The frame needs ``year`` and ``birth_year``, each outcome's source variable and the variables of its
    conditions; outcomes whose columns are absent are skipped (a partner not linked gives no outcome rather than
    an error).
    """
    lazy = frame.lazy()
    columns = set(lazy.collect_schema().names())
    wanted = tuple(OUTCOME_NAMES) if names is None else names
    exprs = [o.expr() for o in (outcome(n) for n in wanted) if o.needs <= columns]
    return lazy.with_columns(exprs) if exprs else lazy


__all__ = ["OUTCOMES", "OUTCOME_NAMES", "Outcome", "age_expr", "derive_outcomes", "outcome"]
