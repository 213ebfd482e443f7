"""The study definition file (``policies/studies/<study>/study.toml``, ``kind = "study"``) as typed models.

A study declares everything the code must not hard-wire: the partners and what they hold, the canonical
variables (type, range, categories or code pattern, unit, description, holders), the attributes checked after
linkage, code hierarchies, the outcomes (source variable, a declarative derivation and the population at risk),
the geography, the factor model the study uses, and optionally a ``[synthetic]`` section for the synthetic city.
The privacy officer reviews and signs the file like every other policy; its digest is the schema version every
bundle manifest carries, so a partner and a coordinator that read different studies refuse each other.

Rules a file must satisfy (each failure names the key path): names are snake_case; every holder is a partner;
every partner holds at least one variable; the identity variables (``pseudonym``, ``year``, ``birth_year``) are
declared with their fixed kinds; a code variable has a pattern that names the municipality code; a hierarchy
joins two code variables; an outcome's source is a variable, its derivation fits the source's kind and its
conditions name variables and values the study allows.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from typing import Any, Literal, Self

import polars as pl
from pydantic import Field, field_validator, model_validator

from kansrijk.policy.common import PolicyModel

STUDY_KIND = "study"
# The identity of a row: the code itself links on the pseudonym, per reference year, and computes age from the
# birth year. Every study declares them (with these kinds); they are the only variable names the code knows.
IDENTITY: dict[str, str] = {"pseudonym": "binary", "year": "int", "birth_year": "int"}
_NAME = r"^[a-z][a-z0-9_]{0,63}$"


class Kind(StrEnum):
    INT = "int"
    FLOAT = "float"
    BOOL = "bool"
    CATEGORY = "category"
    CODE = "code"  # a string code from an open but patterned set (neighbourhood codes)
    BINARY = "binary"  # only the pseudonym


_POLARS: dict[Kind, type[pl.DataType]] = {
    Kind.INT: pl.Int32,
    Kind.FLOAT: pl.Float64,
    Kind.BOOL: pl.Boolean,
    Kind.CATEGORY: pl.String,
    Kind.CODE: pl.String,
    Kind.BINARY: pl.Binary,
}


class Partner(PolicyModel):
    """One data partner of the study."""

    description: str = Field(min_length=3, description="Who the partner is, in the words of the study's documents.")
    holds: str = Field("", description="What the partner holds, in one line (shown to the officer).")


class Variable(PolicyModel):
    """One canonical variable: its type, its valid values, what it means and who holds it."""

    name: str = Field("", description="Filled in from the table key.")
    kind: Kind
    description: str = Field(min_length=3)
    minimum: float | None = None
    maximum: float | None = None
    categories: tuple[str, ...] = ()
    pattern: str | None = Field(None, description="Regex every value of a code variable matches.")
    unit: str | None = Field(None, description="Unit of a number: EUR reads as money in the report.")
    label: str | None = Field(None, description="How a reader says the variable's name (the report's label).")
    holders: tuple[str, ...] = Field(min_length=1, description="Partners that hold the variable.")

    @property
    def dtype(self) -> type[pl.DataType]:
        return _POLARS[self.kind]

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value

    @model_validator(mode="after")
    def _fits_kind(self) -> Self:
        if self.kind == Kind.CATEGORY and len(self.categories) < 2:
            raise ValueError("a category variable needs at least two categories")
        if self.kind != Kind.CATEGORY and self.categories:
            raise ValueError(f"categories are for category variables, not {self.kind}")
        if self.kind == Kind.CODE and self.pattern is None:
            raise ValueError("a code variable needs a pattern")
        if self.kind != Kind.CODE and self.pattern is not None:
            raise ValueError(f"a pattern is for code variables, not {self.kind}")
        if (self.minimum is not None or self.maximum is not None) and self.kind not in (Kind.INT, Kind.FLOAT):
            raise ValueError(f"minimum/maximum are for numbers, not {self.kind}")
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(f"minimum {self.minimum:g} is above maximum {self.maximum:g}")
        return self


class Hierarchy(PolicyModel):
    """A code variable nested in another (buurt within wijk): the parent's code is the child's first
    ``prefix_length`` characters after swapping ``child_prefix`` for ``parent_prefix``."""

    child: str
    parent: str
    child_prefix: str = ""
    parent_prefix: str = ""
    prefix_length: int = Field(ge=1, description="Characters of the child's code (after its prefix) the parent keeps.")


class Geography(PolicyModel):
    municipality: str = Field(min_length=2)
    municipality_code: str = Field(
        pattern=r"^\d{4}$", description="Statistics Netherlands municipality code (gemeentecode)."
    )
    hierarchies: tuple[Hierarchy, ...] = ()


class AgeBand(PolicyModel):
    min_age: int = Field(ge=0, le=120)
    max_age: int = Field(ge=0, le=120)
    value: float

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.min_age > self.max_age:
            raise ValueError(f"min_age {self.min_age} is above max_age {self.max_age}")
        return self


class Derivation(PolicyModel):
    """How the outcome follows from its source, declaratively (one of three rules).

    - ``threshold``: the source compared with a number (``above``: strictly greater, ``at_least``, ``below``),
      one number for everyone (``value``) or one per age band (``by_age``; outside every band: null);
    - ``equals``: the source equals ``value`` (a category, a number or a boolean);
    - ``in``: the source is one of ``values`` (a set of categories).
    """

    rule: Literal["threshold", "equals", "in"]
    compare: Literal["above", "at_least", "below"] = "above"
    value: str | int | float | bool | None = None
    values: tuple[str | int, ...] = ()
    by_age: tuple[AgeBand, ...] = ()

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.rule == "threshold":
            if (self.value is None) == (not self.by_age):
                raise ValueError("a threshold needs exactly one of value or by_age")
            if self.value is not None and (isinstance(self.value, bool) or not isinstance(self.value, int | float)):
                raise ValueError("a threshold's value is a number")
        elif self.rule == "equals":
            if self.value is None or self.values or self.by_age:
                raise ValueError("equals needs value (and no values or by_age)")
        elif not self.values or self.value is not None or self.by_age:
            raise ValueError("in needs values (and no value or by_age)")
        ages = sorted(a for band in self.by_age for a in range(band.min_age, band.max_age + 1))
        if len(ages) != len(set(ages)):
            raise ValueError("by_age bands overlap")
        return self


class AtRisk(PolicyModel):
    """The population at risk: an age range (age = reference year - birth year) and conditions on variables."""

    min_age: int = Field(ge=0, le=120)
    max_age: int = Field(ge=0, le=120)
    conditions: dict[str, tuple[str | int | bool, ...]] = Field(
        {}, description="Variable -> allowed values; a row is at risk only if each variable has one of them."
    )
    description: str = Field(min_length=3)


class Outcome(PolicyModel):
    name: str = ""
    source: str = Field(description="The canonical variable the outcome is derived from.")
    description: str = Field(min_length=3)
    derivation: Derivation
    at_risk: AtRisk


class Planted(PolicyModel):
    """One planted effect of the synthetic section: ``outcome``'s log-odds move by ``log_odds`` per unit of
    ``variable`` (true, or the named category, or one unit of a number) — the ground truth a test checks."""

    outcome: str
    variable: str
    category: str | None = None
    log_odds: float


class Distribution(PolicyModel):
    """How the synthetic city draws one variable: a share true (bool), category weights, a normal or uniform
    number, codes (from the geography), or ``share_missing`` of it left empty."""

    share_true: float | None = Field(None, ge=0, le=1)
    weights: dict[str, float] | None = None
    mean: float | None = None
    sd: float | None = Field(None, gt=0)
    low: float | None = None
    high: float | None = None
    codes: int | None = Field(None, ge=1, description="How many distinct codes to draw from (code variables).")
    code_format: str | None = Field(None, description="Python format of code number i, e.g. 'BU1234{:04d}'.")
    share_missing: float = Field(0.0, ge=0, lt=1)


class PartnerExtract(PolicyModel):
    """How the synthetic city writes one partner's raw extract: its file format and, per canonical variable, the
    native column name (the partner's sharing policy maps them back)."""

    format: Literal["csv", "parquet"] = "csv"
    file: str = Field(pattern=r"^[a-z0-9_]+_\{year\}\.(csv|parquet)$", description="File name; {year} is filled in.")
    bsn_column: str = "bsn"
    columns: dict[str, str] = Field(description="Canonical variable -> native column name.")
    coverage: float = Field(1.0, gt=0, le=1, description="Share of the city's persons in this partner's extract.")


class Synthetic(PolicyModel):
    """The synthetic city of a study: how each variable is drawn, the planted effects, and the extracts.

    ``generator = "declared"`` draws everything from this section. ``"calibrated"`` uses the calibrated city
    model of ``kansrijk.synth.city`` (realistic base rates, native formats and faults, calibrated to the shipped
    study's published figures) and needs nothing else here; it refuses a study whose partners it does not model.
    """

    generator: Literal["declared", "calibrated"] = "declared"
    ages: tuple[int, int] = Field((0, 23), description="Ages of the city's persons in the last reference year.")
    base_rates: dict[str, float] = Field({}, description="Outcome -> share positive where no planted effect applies.")
    distributions: dict[str, Distribution] = Field({})
    planted: tuple[Planted, ...] = ()
    extracts: dict[str, PartnerExtract] = Field({})
    planted_parameters: dict[str, float] = Field(
        {}, description="For the calibrated city: its targets (base rates) and log-odds effects, by name."
    )

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.generator == "declared" and not (self.base_rates and self.distributions and self.extracts):
            raise ValueError("a declared synthetic city needs base_rates, distributions and extracts")
        if not 0 <= self.ages[0] <= self.ages[1] <= 120:
            raise ValueError(f"ages {list(self.ages)}: need 0 <= first <= last <= 120")
        for name, rate in self.base_rates.items():
            if not 0 < rate < 1:
                raise ValueError(f"base_rates.{name}: {rate} must lie strictly between 0 and 1")
        return self


class StudyFiles(PolicyModel):
    """The study's other policy files, relative to the study file (the demo signs and runs them)."""

    sharing: str = Field(description="Directory holding one sharing policy per partner, <partner>.toml.")
    analysis_plan: str = Field(description="The analysis plan (kind = 'analysis').")
    release_policy: str = Field(description="The release policy the demo runs under (kind = 'release').")


class StudyFile(PolicyModel):
    """A study definition file (``kind = "study"``)."""

    kind: Literal["study"]
    version: Literal[1] = 1
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{1,63}$", description="The study's name; policies name it.")
    title: str = Field(min_length=3)
    reviewed_by: str = Field(min_length=2)
    reviewed_on: date
    factor_model: str = Field(description="The study's factor model file, relative to this file.")
    files: StudyFiles | None = Field(None, description="The study's sharing policies, plan and release policy.")
    tiebreak_partner: str | None = Field(
        None, description="Partner whose value settles a tie on a shared attribute (e.g. the population register)."
    )
    shared_attributes: tuple[str, ...] = Field(
        description="Attributes more than one partner holds, checked after linkage."
    )
    geography: Geography
    partners: dict[str, Partner] = Field(min_length=1)
    variables: dict[str, Variable] = Field(min_length=1)
    outcomes: dict[str, Outcome] = Field(min_length=1)
    synthetic: Synthetic | None = None

    @model_validator(mode="before")
    @classmethod
    def _names_from_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for table in ("variables", "outcomes"):
                entries = data.get(table)
                if isinstance(entries, dict):
                    data = {
                        **data,
                        table: {k: {**v, "name": k} if isinstance(v, dict) else v for k, v in entries.items()},
                    }
        return data

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        for table in ("partners", "variables", "outcomes"):
            for key in getattr(self, table):
                if not re.match(_NAME, key):
                    raise ValueError(f"{table}.{key}: names are snake_case (a-z, 0-9, _), starting with a letter")
        overlap = sorted(set(self.variables) & set(self.outcomes))
        if overlap:
            raise ValueError(f"outcomes {overlap} have the name of a variable")
        for name, kind in IDENTITY.items():
            var = self.variables.get(name)
            if var is None or var.kind != kind:
                raise ValueError(f"variables.{name}: every study declares {name} as kind {kind!r}")
        held: set[str] = set()
        for name, var in self.variables.items():
            unknown = sorted(set(var.holders) - set(self.partners))
            if unknown:
                raise ValueError(f"variables.{name}.holders: {unknown} are not partners of the study")
            held |= set(var.holders)
            if var.kind == Kind.CODE and self.geography.municipality_code not in (var.pattern or ""):
                raise ValueError(
                    f"variables.{name}.pattern: a code pattern names the municipality code "
                    f"{self.geography.municipality_code}"
                )
        idle = sorted(set(self.partners) - held)
        if idle:
            raise ValueError(f"partners {idle} hold no variable")
        if self.tiebreak_partner is not None and self.tiebreak_partner not in self.partners:
            raise ValueError(f"tiebreak_partner: {self.tiebreak_partner!r} is not a partner of the study")
        for attr in self.shared_attributes:
            if attr not in self.variables or attr in ("pseudonym", "year"):
                raise ValueError(f"shared_attributes: {attr!r} is not a canonical variable that can be shared")
        for i, h in enumerate(self.geography.hierarchies):
            for end in (h.child, h.parent):
                if end not in self.variables or self.variables[end].kind != Kind.CODE:
                    raise ValueError(f"geography.hierarchies.{i}: {end!r} is not a code variable")
        for name, o in self.outcomes.items():
            self._check_outcome(name, o)
        if self.synthetic is not None:
            self._check_synthetic(self.synthetic)
        return self

    def _check_outcome(self, name: str, o: Outcome) -> None:
        where = f"outcomes.{name}"
        source = self.variables.get(o.source)
        if source is None or o.source in IDENTITY:
            raise ValueError(f"{where}.source: {o.source!r} is not a canonical variable of the study")
        d = o.derivation
        if d.rule == "threshold" and source.kind not in (Kind.INT, Kind.FLOAT):
            raise ValueError(f"{where}.derivation: a threshold needs a numeric source; {o.source} is {source.kind}")
        if d.rule == "in" and source.kind != Kind.CATEGORY:
            raise ValueError(f"{where}.derivation: 'in' needs a category source; {o.source} is {source.kind}")
        if d.rule == "equals":
            self._check_value(f"{where}.derivation.value", source, d.value)
        for v in d.values:
            self._check_value(f"{where}.derivation.values", source, v)
        if o.at_risk.min_age > o.at_risk.max_age:
            raise ValueError(f"{where}.at_risk: min_age {o.at_risk.min_age} is above max_age {o.at_risk.max_age}")
        for var_name, allowed in o.at_risk.conditions.items():
            var = self.variables.get(var_name)
            if var is None:
                raise ValueError(f"{where}.at_risk.conditions: {var_name!r} is not a canonical variable")
            for v in allowed:
                self._check_value(f"{where}.at_risk.conditions.{var_name}", var, v)

    @staticmethod
    def _check_value(where: str, var: Variable, value: object) -> None:
        if var.kind == Kind.BOOL and not isinstance(value, bool):
            raise ValueError(f"{where}: {var.name} is boolean; use true or false")
        if var.kind == Kind.CATEGORY and value not in var.categories:
            raise ValueError(f"{where}: {value!r} is not a category of {var.name} ({', '.join(var.categories)})")
        if var.kind in (Kind.INT, Kind.FLOAT) and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where}: {var.name} is a number")

    def _check_synthetic(self, s: Synthetic) -> None:
        if s.generator != "declared":
            return
        for name in s.base_rates:
            if name not in self.outcomes:
                raise ValueError(f"synthetic.base_rates: {name!r} is not an outcome of the study")
        for name, dist in s.distributions.items():
            var = self.variables.get(name)
            if var is None or name in IDENTITY:
                raise ValueError(f"synthetic.distributions.{name}: not a canonical variable the city draws")
            ok = {
                Kind.BOOL: dist.share_true is not None,
                Kind.CATEGORY: dist.weights is not None and set(dist.weights) <= set(var.categories),
                Kind.INT: (dist.mean is not None and dist.sd is not None)
                or (dist.low is not None and dist.high is not None),
                Kind.FLOAT: (dist.mean is not None and dist.sd is not None)
                or (dist.low is not None and dist.high is not None),
                Kind.CODE: dist.codes is not None and dist.code_format is not None,
            }.get(var.kind, False)
            if not ok:
                raise ValueError(f"synthetic.distributions.{name}: does not fit a {var.kind} variable")
        for i, p in enumerate(s.planted):
            if p.outcome not in s.base_rates:
                raise ValueError(f"synthetic.planted.{i}.outcome: {p.outcome!r} has no base rate")
            var = self.variables.get(p.variable)
            if var is None or p.variable not in s.distributions:
                raise ValueError(f"synthetic.planted.{i}.variable: {p.variable!r} is not drawn by the city")
            if (var.kind == Kind.CATEGORY) != (p.category is not None):
                raise ValueError(f"synthetic.planted.{i}.category: name a category exactly for category variables")
            if p.category is not None and p.category not in var.categories:
                raise ValueError(f"synthetic.planted.{i}.category: {p.category!r} is not a category of {p.variable}")
        for partner, ex in s.extracts.items():
            if partner not in self.partners:
                raise ValueError(f"synthetic.extracts.{partner}: not a partner of the study")
            for var_name in ex.columns:
                var = self.variables.get(var_name)
                if var is None or partner not in var.holders or var_name == "pseudonym":
                    raise ValueError(f"synthetic.extracts.{partner}.columns: {var_name!r} is not a variable it holds")
        missing = sorted(set(self.partners) - set(s.extracts))
        if missing:
            raise ValueError(f"synthetic.extracts: no extract for partners {missing}")


__all__ = ["IDENTITY", "STUDY_KIND", "Kind", "Outcome", "StudyFile", "Variable"]
