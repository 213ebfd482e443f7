"""The released document: one typed schema the gate writes to ``released/NAME.json`` and the report reads back.

The gate validates every document against ``ReleaseDocument`` before it writes it; the report reads each file
with ``read_document``, which refuses anything that is not exactly such a document (``InputError``), so no kind
is guessed from a file name and no number the gate did not write can reach the report.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kansrijk.errors import InputError
from kansrijk.gate.requests import OutputKind

RELEASE_FORMAT = "kansrijk-release"
RELEASE_VERSION = 2  # version 2: the document records the spec the gate computed it from


class Verdict(BaseModel):
    """One rule's verdict on a release, with its reason and the cells it concerns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rule: str
    verdict: Literal["pass", "suppress", "refuse"]
    reason: str
    cells: list[str] = Field(default_factory=list)


class ReleaseDocument(BaseModel):
    """Everything a release file holds. ``values`` are the released numbers (a table's ``columns``/``rows``
    with withheld cells as null, or a model output's fields); ``spec`` is what was asked."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["kansrijk-release"] = RELEASE_FORMAT
    version: Literal[2] = RELEASE_VERSION
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,119}$")
    kind: OutputKind
    description: str
    population: str
    outcome: Literal["released", "suppressed"]
    method: Literal["sdc", "dp", "dp+sdc"]
    requested_by: str
    ledger_entry: str = Field(pattern=r"^L[0-9]{6,}$")
    policy_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    request_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    spec: dict[str, Any]
    epsilon_spent: str
    noisy: bool
    noise: dict[str, Any] | None = None
    values: dict[str, Any]
    verdicts: list[Verdict]

    @field_validator("epsilon_spent")
    @classmethod
    def _exact(cls, value: str) -> str:
        if Fraction(value) < 0:
            raise ValueError("epsilon_spent must be a non-negative exact number")
        return value

    @property
    def epsilon(self) -> Fraction:
        return Fraction(self.epsilon_spent)

    @property
    def is_table(self) -> bool:
        return "columns" in self.values and "rows" in self.values


def read_document(path: Path) -> ReleaseDocument:
    """The release document at ``path``; ``InputError`` when the file is not one the gate wrote."""
    try:
        return ReleaseDocument.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValidationError, ValueError, ZeroDivisionError):
        raise InputError(
            f"{path}: not a release document written by the gate (format {RELEASE_FORMAT} v{RELEASE_VERSION})",
            hint="only the release gate writes to WS/released/; run: kansrijk ledger verify WS",
        ) from None


__all__ = ["RELEASE_FORMAT", "RELEASE_VERSION", "ReleaseDocument", "Verdict", "read_document"]
