"""Loading TOML policy files into pydantic models with errors that name the file, key path and problem."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kansrijk.errors import PolicyError

M = TypeVar("M", bound=BaseModel)


class PolicyModel(BaseModel):
    """Base for every policy model: immutable, and unknown keys are errors (a typo must not pass silently)."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    @classmethod
    def bound_message(cls, key: str, value: object) -> str | None:
        """For a number past a bound at ``key``: a message naming the rule, the bound and its source, or None to
        keep the validator's own. A policy kind with documented floors and ceilings overrides this."""
        return None


def study_field() -> Any:
    """The ``study`` key of a policy file (checked by ``StudyPolicy``)."""
    return Field(
        None, description="The study this file belongs to; refused when another study is active (kansrijk.study)."
    )


class StudyPolicy(PolicyModel):
    """A policy file that names the study it belongs to (``study = study_field()``): refused, naming both studies,
    when another study is active."""

    @field_validator("study", check_fields=False)
    @classmethod
    def _active_study(cls, value: str | None) -> str | None:
        from kansrijk.study import active_study

        current = active_study()
        if value is not None and value != current.name:
            raise ValueError(
                f"this file belongs to study {value!r}, but the active study is {current.name!r} ({current.path}); "
                f"use the files of study {current.name!r} or run with --study naming study {value!r}"
            )
        return value


def policy_digest(raw: bytes) -> str:
    """The digest that identifies a policy file's exact bytes (recorded in manifests and ledger entries)."""
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def read_policy_bytes(path: Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{path}: policy file not found") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read policy file ({exc.strerror})") from None


def parse_policy(path: Path, model: type[M], raw: bytes | None = None) -> M:
    """Parse ``path`` (or ``raw``, its bytes) as TOML into ``model``.

    Raises ``PolicyError`` listing every problem as ``file: key.path: message``.
    """
    path = Path(path)
    raw = read_policy_bytes(path) if raw is None else raw
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"{path}: policy files must be UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{path}: not valid TOML: {exc}") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(format_validation_error(path, exc, model)) from None


# Bound errors of numbers: the message gives the bound, and the value is a policy number (never personal data).
_BOUND_ERRORS = frozenset({"greater_than", "greater_than_equal", "less_than", "less_than_equal"})


def format_validation_error(path: Path, exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    lines = [f"{path}: {exc.error_count()} problem(s)"]
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = str(error["msg"]).removeprefix("Value error, ")  # pydantic's label, not the officer's words
        if error["type"] in _BOUND_ERRORS:
            explain = getattr(model, "bound_message", None)
            named = explain(where, error["input"]) if explain is not None else None
            message = named or f"{message} (got {error['input']!r})"
        lines.append(f"  {path}: {where}: {message}")
    return "\n".join(lines)
