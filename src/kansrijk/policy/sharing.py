"""Sharing policies: what one partner shares, in what form, and why (``policies/sharing/<partner>.toml``).

A privacy officer reads one of these files and can answer: which of our columns leave the building (only those
mapped under ``[columns]``, plus the SDQ scores if ``[sdq]`` is present); in which generalised form (birth date to
year, WOZ rounded, SDQ items to scale scores); which columns must never leave (``never_share``, asserted absent
from every bundle); which rows count as faulty (the schema's types, ranges and categories, the BSN 11-check,
duplicates, required fields, and the cross-field ``[[rules]]``); and how many faulty rows abort the run
(``max_fault_rate``). The node agent follows the file; the file's SHA-256 goes into every bundle manifest.

Columns of the extract that the policy does not mention are dropped (minimisation by default).
"""

from __future__ import annotations

import math
import re
from datetime import date
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, field_validator, model_validator

from kansrijk.policy.common import PolicyModel, StudyPolicy, parse_policy, policy_digest, read_policy_bytes, study_field
from kansrijk.schema import PARTNERS, VARIABLES, Kind

Parse = Literal["string", "int", "decimal", "date", "bool"]
Generalise = Literal["none", "year", "year_month", "round", "bands"]

_DEFAULT_PARSE: dict[Kind, Parse] = {
    Kind.INT: "int",
    Kind.FLOAT: "decimal",
    Kind.BOOL: "bool",
    Kind.CATEGORY: "string",
    Kind.CODE: "string",
}


class InputFormat(PolicyModel):
    """How the partner's native extract is written."""

    format: Literal["csv", "parquet"] = Field(description="File format of the extract.")
    separator: str = Field(",", min_length=1, max_length=1, description="CSV field separator.")
    quote: str = Field('"', min_length=1, max_length=1, description="CSV quote character.")
    decimal: Literal[".", ","] = Field(".", description="Decimal mark of numbers in CSV text.")
    encoding: Literal["utf-8", "latin-1", "cp1252"] = Field("utf-8", description="Text encoding of the CSV.")
    date_formats: list[str] = Field(["%Y-%m-%d"], min_length=1, description="strftime formats tried in order.")
    true_values: list[str] = Field(["J"], min_length=1, description="Raw text meaning true.")
    false_values: list[str] = Field(["N"], min_length=1, description="Raw text meaning false.")
    bsn_column: str = Field(min_length=1, description="Column holding the BSN (pseudonymised, never shared).")
    year_from_filename: str | None = Field(
        None, description="Regex with one group taking the reference year from the file name, if no column has it."
    )

    @field_validator("year_from_filename")
    @classmethod
    def _one_group(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        if compiled.groups != 1:
            raise ValueError("must have exactly one group (the year)")
        return value

    @model_validator(mode="after")
    def _true_false_disjoint(self) -> Self:
        if set(self.true_values) & set(self.false_values):
            raise ValueError("true_values and false_values overlap")
        return self


class ColumnMap(PolicyModel):
    """One source column shared as one canonical variable (two for ``year_month``)."""

    variable: str = Field(description="Canonical variable of kansrijk.schema this column becomes.")
    parse: Parse | None = Field(None, description="How to read the raw value; default follows the variable's kind.")
    required: bool = Field(True, description="An empty value is a fault (else it is shared as missing).")
    values: dict[str, str] | None = Field(None, description="Raw value -> canonical category.")
    empty_value: str | None = Field(None, description="Canonical category for an empty raw value.")
    date_formats: list[str] | None = Field(None, description="Overrides input.date_formats for this column.")
    generalise: Generalise = Field("none", description="Generalisation applied before sharing.")
    round_to: float | None = Field(None, gt=0, description="For generalise = 'round': the rounding unit.")
    bands: list[int] | None = Field(None, description="For generalise = 'bands': ascending lower bounds.")

    @field_validator("variable")
    @classmethod
    def _known_variable(cls, value: str) -> str:
        if value not in VARIABLES or value == "pseudonym":
            raise ValueError(f"{value!r} is not a canonical variable of kansrijk.schema that can be shared")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        var = VARIABLES[self.variable]
        parse = self.effective_parse
        if self.generalise in ("year", "year_month"):
            if parse != "date" or var.kind != Kind.INT:
                raise ValueError(f"generalise = {self.generalise!r} needs parse = 'date' and an integer variable")
            if self.generalise == "year_month" and self.month_variable not in VARIABLES:
                raise ValueError(f"generalise = 'year_month' needs a variable {self.month_variable!r} in the schema")
        elif parse == "date":
            raise ValueError("a date column must be generalised (generalise = 'year' or 'year_month')")
        if self.generalise == "round" and (self.round_to is None or var.kind not in (Kind.INT, Kind.FLOAT)):
            raise ValueError("generalise = 'round' needs round_to and a numeric variable")
        if self.generalise == "bands" and (
            not self.bands or var.kind != Kind.INT or self.bands != sorted(set(self.bands))
        ):
            raise ValueError("generalise = 'bands' needs strictly ascending integer bands and an int variable")
        if self.values is not None:
            if var.kind != Kind.CATEGORY:
                raise ValueError("values maps raw text to categories; the variable is not a category")
            bad = sorted(set(self.values.values()) - set(var.categories))
            if bad:
                raise ValueError(f"values map to {bad}, not categories of {self.variable} ({list(var.categories)})")
        if self.empty_value is not None and self.empty_value not in var.categories:
            raise ValueError(f"empty_value {self.empty_value!r} is not a category of {self.variable}")
        if var.kind == Kind.BOOL and parse != "bool":
            raise ValueError("a boolean variable needs parse = 'bool'")
        return self

    @property
    def effective_parse(self) -> Parse:
        if self.parse is not None:
            return self.parse
        if self.generalise in ("year", "year_month"):
            return "date"
        return _DEFAULT_PARSE[VARIABLES[self.variable].kind]

    @property
    def month_variable(self) -> str:
        return self.variable.removesuffix("_year") + "_month"

    @property
    def outputs(self) -> tuple[str, ...]:
        return (self.variable, self.month_variable) if self.generalise == "year_month" else (self.variable,)

    @property
    def round_decimals(self) -> int | None:
        """Decimals for rounding units below 1 that are powers of ten (0.1 -> 1), else None."""
        if self.round_to is None or self.round_to >= 1:
            return None
        decimals = -math.log10(self.round_to)
        return round(decimals) if math.isclose(decimals, round(decimals)) else None


class SdqScoring(PolicyModel):
    """SDQ parent-form items generalised to scale scores (Goodman 1997); items themselves are never shared."""

    items: list[str] = Field(min_length=25, max_length=25, description="The 25 item columns, in official order.")
    total: str | None = Field(None, description="Column with the total when only the total was recorded.")
    share: dict[Literal["total_difficulties", "prosocial"], str] = Field(
        min_length=1, description="Score shared -> the canonical variable (of the study) it is shared as."
    )

    @field_validator("share")
    @classmethod
    def _integer_variables(cls, value: dict[str, str]) -> dict[str, str]:
        for score, name in value.items():
            var = VARIABLES.get(name)
            if var is None or var.kind != Kind.INT:
                raise ValueError(f"{score}: {name!r} is not an integer canonical variable of the study")
        if len(set(value.values())) != len(value):
            raise ValueError("two scores are shared as the same variable")
        return value

    @property
    def total_variable(self) -> str:
        """The variable the item checks are reported under (the total's, else the first shared score's)."""
        return self.share.get("total_difficulties") or next(iter(self.share.values()))


class Rule(PolicyModel):
    """A cross-field validity rule on canonical values. A row that breaks it is quarantined."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Rule name shown in the quarantine report.")
    variable: str = Field(description="The variable the rule checks (reported as the field).")
    when: dict[str, list[str | int | bool]] = Field({}, description="Only rows whose variables have these values.")
    minimum: float | None = Field(None, description="Smallest allowed value.")
    maximum: float | None = Field(None, description="Largest allowed value.")
    allowed: list[str] | None = Field(None, description="Allowed categories.")
    must_be_empty: bool | None = Field(None, description="True: must be empty; false: must be present.")
    age_minimum: int | None = Field(None, description="Smallest allowed reference year minus birth year.")
    age_maximum: int | None = Field(None, description="Largest allowed reference year minus birth year.")

    @field_validator("variable")
    @classmethod
    def _known_variable(cls, value: str) -> str:
        if value not in VARIABLES:
            raise ValueError(f"{value!r} is not a canonical variable of kansrijk.schema")
        return value

    @field_validator("when")
    @classmethod
    def _known_when(cls, value: dict[str, list[str | int | bool]]) -> dict[str, list[str | int | bool]]:
        unknown = sorted(set(value) - set(VARIABLES))
        if unknown:
            raise ValueError(f"conditions on unknown variables {unknown}")
        return value

    @model_validator(mode="after")
    def _one_check(self) -> Self:
        checks = [
            self.minimum is not None or self.maximum is not None,
            self.allowed is not None,
            self.must_be_empty is not None,
            self.age_minimum is not None or self.age_maximum is not None,
        ]
        if sum(checks) != 1:
            raise ValueError("a rule needs exactly one check: minimum/maximum, allowed, must_be_empty or age_*")
        if (self.age_minimum is not None or self.age_maximum is not None) and self.variable != "birth_year":
            raise ValueError("age rules check birth_year")
        return self


class SharingPolicy(StudyPolicy):
    """One partner's sharing policy (see the module docstring)."""

    kind: Literal["sharing"] = Field("sharing", description='Policy kind; always "sharing".')
    study: str | None = study_field()
    partner: str = Field(description="Partner name as in the partner registry.")
    purpose: str = Field(min_length=10, description="Why these data are shared.")
    legal_basis: str = Field(min_length=10, description="The legal basis (article, agreement).")
    reviewed_by: str = Field(min_length=2, description="Privacy officer who reviewed this file.")
    reviewed_on: date = Field(description="Date of that review.")
    max_fault_rate: float = Field(ge=0, le=1, description="Share of faulty rows above which nothing is sealed.")
    input: InputFormat
    never_share: list[str] = Field(description="Source columns that must never appear in a bundle.")
    dropped: list[str] = Field([], description="Source columns read past on purpose (documentation only).")
    columns: dict[str, ColumnMap] = Field(description="Source column -> canonical variable: all that is shared.")
    sdq: SdqScoring | None = None
    rules: list[Rule] = Field([], description="Cross-field validity rules.")

    @field_validator("partner")
    @classmethod
    def _known_partner(cls, value: str) -> str:
        if value not in PARTNERS:
            raise ValueError(f"unknown partner {value!r}; known: {', '.join(PARTNERS)}")
        return value

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        mapped = set(self.columns)
        forbidden = sorted(mapped & set(self.never_share))
        if forbidden:
            raise ValueError(f"never_share columns {forbidden} are also mapped under [columns]")
        if self.input.bsn_column in mapped or self.input.bsn_column in self.never_share:
            raise ValueError("input.bsn_column is pseudonymised; do not map it or list it in never_share")
        if self.sdq is not None:
            overlap = sorted((set(self.sdq.items) | {self.sdq.total}) & (mapped | set(self.never_share)))
            if overlap:
                raise ValueError(f"SDQ columns {overlap} are also mapped or never_share")
        outputs = [o for c in self.columns.values() for o in c.outputs] + self.sdq_outputs
        repeated = sorted({o for o in outputs if outputs.count(o) > 1})
        if repeated:
            raise ValueError(f"variables {repeated} are produced by more than one column")
        has_year_column = "year" in outputs
        if has_year_column == (self.input.year_from_filename is not None):
            raise ValueError(
                "the reference year comes from exactly one of: a column mapped to 'year', or input.year_from_filename"
            )
        for rule in self.rules:
            missing = sorted(({rule.variable} | set(rule.when)) - set(outputs) - {"year"})
            if missing:
                raise ValueError(f"rule {rule.name!r} uses variables {missing} this policy does not produce")
        return self

    @property
    def sdq_outputs(self) -> list[str]:
        return list(self.sdq.share.values()) if self.sdq is not None else []

    @property
    def shared_variables(self) -> tuple[str, ...]:
        """Canonical variables in the payload (besides ``pseudonym``), in schema order."""
        produced = {o for c in self.columns.values() for o in c.outputs} | set(self.sdq_outputs)
        if self.input.year_from_filename is not None:
            produced.add("year")
        return tuple(name for name in VARIABLES if name in produced)

    @property
    def source_columns(self) -> tuple[str, ...]:
        """Source columns the extract must have: the BSN, mapped columns and SDQ columns."""
        cols = [self.input.bsn_column, *self.columns]
        if self.sdq is not None:
            cols += self.sdq.items + ([self.sdq.total] if self.sdq.total else [])
        return tuple(cols)


def load_sharing_policy(path: Path) -> tuple[SharingPolicy, str]:
    """Parse a sharing policy file; returns the policy and its digest (``sha256:<hex>`` of the file's bytes).

    Raises ``PolicyError`` naming the file, the key path and the problem.
    """
    raw = read_policy_bytes(path)
    return parse_policy(Path(path), SharingPolicy, raw), policy_digest(raw)


# --- plain-language explanation ---------------------------------------------------------------------------
def describe_column(source: str, spec: ColumnMap) -> str:
    """How one source column leaves, in words: the variable and the form (generalisation)."""
    var = VARIABLES[spec.variable]
    form = {
        "none": "as it is" if var.kind != Kind.CATEGORY else "as its category",
        "year": "as the year only (the full date never leaves)",
        "year_month": "as year and month only (the day never leaves)",
        "round": f"rounded to {spec.round_to:g}" if spec.round_to is not None else "rounded",
        "bands": f"only as its band ({len(spec.bands or [])} bands from {(spec.bands or [0])[0]})",
    }.get(spec.generalise, spec.generalise)
    return f"{source} → {spec.variable} ({var.description.rstrip('.')}), {form}"


def explain_sharing_policy(policy: SharingPolicy) -> list[str]:
    """What a partner shares, in what form, why and under which basis, in sentences an officer can check."""
    lines = [
        f"Sharing policy of partner '{policy.partner}' (reviewed by {policy.reviewed_by} on {policy.reviewed_on}).",
        f"Purpose: {' '.join(policy.purpose.split())}",
        f"Legal basis: {' '.join(policy.legal_basis.split())}",
        "",
        f"Identity: the BSN (column {policy.input.bsn_column}) never leaves. It must pass the 11-check; it is "
        "replaced by a keyed pseudonym (HMAC-SHA256 with the link key all partners share and the coordinator never "
        "holds), which the coordinator re-keys with its own key at once, so no one holding a bundle or the "
        "coordinator's tables can recompute it from a BSN.",
        "",
        "Shared, one column per line (nothing else leaves):",
        *(f"- {describe_column(source, spec)}" for source, spec in policy.columns.items()),
    ]
    if policy.sdq is not None:
        lines.append(
            f"- the {len(policy.sdq.items)} SDQ items → only the scores {', '.join(policy.sdq.share.values())} "
            "(the answers themselves never leave)"
        )
    lines += [
        "",
        f"Never shared (asserted absent from every bundle): {', '.join(policy.never_share) or 'none listed'}.",
        f"Dropped on purpose: {', '.join(policy.dropped) or 'none'}; every other column of the extract is dropped "
        "as well and named once in a note when the node prepares it.",
        f"Faulty rows (BSN, types, ranges, the {len(policy.rules)} cross-field rules) stay at the partner in a local "
        f"quarantine report without values; above {policy.max_fault_rate:.0%} faulty rows nothing is sealed.",
        "Each bundle is signed with the partner's key, encrypted for the coordinator only, and names this file's "
        "digest; the coordinator refuses a digest the registry does not list.",
    ]
    return lines
