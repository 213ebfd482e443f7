"""The factor model: the literature ranking of protective and risk factors, and the canonical variables that
indicate each factor (``policies/factors/*.toml``, ``kind = "factor_model"``).

The factor model fixes the analysis's second feature set ("factor_model": only the literature-selected
variables) and the factor-coverage report: which factors have indicators in the linked data, how important
those indicators turn out to be, and which factors no indicator covers (a factor without an indicator can never
show up as important, as the Rotterdam Groeit factsheet notes).

Rules a file must satisfy (each failure names the key path):

- factor names are unique snake_case words; ranks are unique positive integers (1 = most important);
- every indicator is a canonical variable of ``kansrijk.schema`` other than the identifiers (``pseudonym``,
  ``year``), or a derived feature of the analysis dataset (``age_years``);
- an indicator belongs to at most one factor (its importance is attributed to exactly one factor);
- a proxy (``proxies``: a variable that stands in for a factor without measuring it, as the WOZ value of the home
  stands in for household income) follows the same rules, belongs to one factor and is never also an indicator:
  it is not part of the factor-model feature set, but the coverage report shows its importance under its factor;
- every factor names its source (the literature or document it comes from).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kansrijk.policy.common import PolicyModel, StudyPolicy, parse_policy, study_field
from kansrijk.schema import VARIABLES

FACTOR_MODEL_KIND = "factor_model"
# In the factor-coverage release, the key "<factor>.proxies" carries the summed importance of the factor's proxies
# (its ``variables_of`` names them), next to "<factor>" for its indicators.
PROXIES_SUFFIX = ".proxies"
IDENTIFIERS: tuple[str, ...] = ("pseudonym", "year")
DERIVED_INDICATORS: tuple[str, ...] = ("age_years",)


def indicator_names() -> tuple[str, ...]:
    """Every name an indicator may take: canonical variables (not identifiers) and derived features."""
    return tuple(sorted(n for n in VARIABLES if n not in IDENTIFIERS)) + DERIVED_INDICATORS


class Factor(PolicyModel):
    """One factor of the model and the variables that indicate it (possibly none)."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="Identifier, snake_case.")
    label: str = Field(min_length=1, description="The factor's name as the policy documents use it.")
    rank: int = Field(ge=1, description="Position in the literature ranking (1 = most important).")
    indicators: tuple[str, ...] = Field(default=(), description="Canonical variables that indicate this factor.")
    proxies: tuple[str, ...] = Field(
        default=(),
        description="Variables that stand in for this factor without measuring it (not in the factor-model feature "
        "set; shown under the factor in the coverage report).",
    )
    source: str = Field(min_length=1, description="Where the factor and its place in the ranking come from.")
    note: str = ""

    @field_validator("indicators", "proxies")
    @classmethod
    def _known_indicators(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = set(indicator_names())
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise ValueError(
                f"unknown variable(s) {unknown}: an indicator or proxy must be a canonical variable of kansrijk.schema "
                f"(not an identifier) or a derived feature; known: {', '.join(indicator_names())}"
            )
        if len(set(value)) != len(value):
            raise ValueError("a variable is listed twice for this factor")
        return value


class FactorModel(StudyPolicy):
    """A factor-model file (``kind = "factor_model"``)."""

    kind: Literal["factor_model"]
    study: str | None = study_field()
    version: Literal[1] = 1
    title: str = Field(min_length=1)
    source: str = Field(min_length=1, description="The document the ranking as a whole comes from.")
    factors: tuple[Factor, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> FactorModel:
        seen_names: dict[str, int] = {}
        seen_ranks: dict[int, int] = {}
        owner: dict[str, int] = {}
        for i, f in enumerate(self.factors):
            if f.name in seen_names:
                raise ValueError(f"factors.{i}.name: {f.name!r} is already the name of factors.{seen_names[f.name]}")
            seen_names[f.name] = i
            if f.rank in seen_ranks:
                raise ValueError(f"factors.{i}.rank: rank {f.rank} is already taken by factors.{seen_ranks[f.rank]}")
            seen_ranks[f.rank] = i
            for ind in f.indicators:
                if ind in owner:
                    raise ValueError(
                        f"factors.{i}.indicators: {ind!r} already indicates factors.{owner[ind]} "
                        f"({self.factors[owner[ind]].name}); an indicator belongs to one factor"
                    )
                owner[ind] = i
        proxy_owner: dict[str, int] = {}
        for i, f in enumerate(self.factors):
            for proxy in f.proxies:
                if proxy in owner:
                    raise ValueError(
                        f"factors.{i}.proxies: {proxy!r} is an indicator of factors.{owner[proxy]} "
                        f"({self.factors[owner[proxy]].name}); a variable is either an indicator or a proxy"
                    )
                if proxy in proxy_owner:
                    raise ValueError(
                        f"factors.{i}.proxies: {proxy!r} is already a proxy of factors.{proxy_owner[proxy]} "
                        f"({self.factors[proxy_owner[proxy]].name}); a proxy belongs to one factor"
                    )
                proxy_owner[proxy] = i
        return self

    @property
    def ranked(self) -> tuple[Factor, ...]:
        return tuple(sorted(self.factors, key=lambda f: f.rank))

    @property
    def indicators(self) -> tuple[str, ...]:
        """Every indicator, in rank order of its factor."""
        return tuple(ind for f in self.ranked for ind in f.indicators)

    @property
    def uncovered(self) -> tuple[Factor, ...]:
        """Factors that no indicator covers."""
        return tuple(f for f in self.ranked if not f.indicators)

    @property
    def proxies(self) -> tuple[str, ...]:
        """Every proxy, in rank order of its factor."""
        return tuple(p for f in self.ranked for p in f.proxies)

    def factor_of(self, indicator: str) -> Factor | None:
        return next((f for f in self.factors if indicator in f.indicators), None)

    def factor_proxied_by(self, variable: str) -> Factor | None:
        return next((f for f in self.factors if variable in f.proxies), None)


def load_factor_model(path: Path, raw: bytes | None = None) -> FactorModel:
    """Parse and validate a factor-model file; ``PolicyError`` names file, key path and problem."""
    return parse_policy(Path(path), FactorModel, raw)


__all__ = ["FACTOR_MODEL_KIND", "PROXIES_SUFFIX", "Factor", "FactorModel", "indicator_names", "load_factor_model"]
