"""Canonical variables: the one vocabulary every partner's extract is mapped into, read from the active study.

A partner's sharing policy maps its own column names onto these variables (and says which it shares at all);
the node agent validates against the types, ranges and categories the study declares; the coordinator links and
analyses on them. The identifier never appears past the node agent: only ``pseudonym`` (32 bytes, HMAC) does.

The variables live in the study file (``kansrijk.study``), not here. ``VARIABLES``, ``PARTNERS`` and
``SHARED_ATTRIBUTES`` are live views of the active study: every lookup reads it, so a process that switches
studies sees the new one. Changing a variable's meaning is a change of the study file, whose digest is the schema
version (``schema_version()``) the partner registry allows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import overload

import polars as pl

from kansrijk.study import active_study
from kansrijk.study.model import Kind, Variable


def schema_version() -> str:
    """The schema version every bundle carries: the active study's digest."""
    return active_study().schema_version


class _Variables(Mapping[str, Variable]):
    """The active study's canonical variables, in the study file's order."""

    def __getitem__(self, name: str) -> Variable:
        return active_study().variables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(active_study().variables)

    def __len__(self) -> int:
        return len(active_study().variables)

    def __repr__(self) -> str:
        return f"VARIABLES({', '.join(self)})"


class _Names(Sequence[str]):
    """A tuple of names read from the active study on every use."""

    def __init__(self, attribute: str) -> None:
        self._attribute = attribute

    def _names(self) -> tuple[str, ...]:
        return tuple(getattr(active_study(), self._attribute))

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[str, ...]: ...
    def __getitem__(self, index: int | slice) -> str | tuple[str, ...]:
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, Sequence) else other)

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


VARIABLES: Mapping[str, Variable] = _Variables()
PARTNERS: Sequence[str] = _Names("partners")
# Attributes more than one partner holds; the coordinator checks they agree after linkage.
SHARED_ATTRIBUTES: Sequence[str] = _Names("shared_attributes")


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


__all__ = [
    "PARTNERS",
    "SHARED_ATTRIBUTES",
    "VARIABLES",
    "Kind",
    "Variable",
    "polars_schema",
    "schema_version",
    "variable",
]
