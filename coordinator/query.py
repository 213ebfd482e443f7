"""Ad-hoc queries: a spec built from command-line words, released through the gate.

``parse_condition("age_years <= 12")`` turns one ``--where`` into a ``Condition`` typed by the variable's public
domain (``true``/``false`` for flags, numbers for numeric variables, text otherwise; ``in`` and ``not_in`` take a
comma-separated list; ``is_null``/``not_null`` take nothing). ``query_spec`` builds the spec; the gate decides
everything else (population, persons, numbers, verdict). Nothing here reads data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kansrijk.errors import InputError
from kansrijk.gate.data import domain_of
from kansrijk.gate.specs import (
    Condition,
    CountSpec,
    HistogramSpec,
    MeanSpec,
    QuantileSpec,
    ReleaseSpec,
    SumSpec,
    parse_spec,
)

_CONDITION = re.compile(
    r"^\s*(?P<var>[a-z][a-z0-9_]*)\s*(?P<op>==|!=|<=|>=|<|>|\bnot_in\b|\bin\b|\bis_null\b|\bnot_null\b)\s*(?P<rest>.*?)\s*$"
)
KINDS: dict[str, type[ReleaseSpec]] = {
    "count": CountSpec,
    "mean": MeanSpec,
    "sum": SumSpec,
    "quantile": QuantileSpec,
    "histogram": HistogramSpec,
}


def _typed(var: str, raw: str, table: str, where: str) -> Any:
    raw = raw.strip().strip("'\"")
    d = domain_of(table, var)  # type: ignore[arg-type]
    if d is None:
        raise InputError(f"{where}: {var!r} is not a variable a release may name", hint="see docs/queries.md")
    if d.kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise InputError(f"{where}: {var!r} is true/false, not {raw!r}")
        return raw.lower() == "true"
    if d.numeric:
        try:
            number = float(raw)
        except ValueError:
            raise InputError(f"{where}: {var!r} is numeric, not {raw!r}") from None
        return int(number) if number.is_integer() and d.kind == "int" else number
    return raw


def parse_condition(text: str, table: str = "linked") -> Condition:
    """One ``--where`` condition, e.g. ``"age_years <= 12"``, ``"sex == F"``, ``"level in A,B"``,
    ``"amount not_null"``. Raises ``InputError`` naming the condition and the rule it breaks."""
    where = f"--where {text!r}"
    found = _CONDITION.match(text)
    if not found:
        raise InputError(
            f"{where}: write 'variable operator value' with one of == != < <= > >= in not_in is_null not_null",
            hint="e.g. --where 'age_years <= 12' --where 'level in A,B'",
        )
    var, op, rest = found["var"], found["op"], found["rest"]
    if op in ("is_null", "not_null"):
        if rest:
            raise InputError(f"{where}: {op} takes no value")
        return Condition(var=var, op=op)
    if not rest:
        raise InputError(f"{where}: {op} needs a value")
    if op in ("in", "not_in"):
        values = tuple(_typed(var, v, table, where) for v in rest.split(",") if v.strip())
        return Condition(var=var, op=op, values=values)
    return Condition(var=var, op=op, value=_typed(var, rest, table, where))


def query_spec(
    kind: str,
    *,
    name: str,
    years: Sequence[int],
    where: Sequence[str] = (),
    by: Sequence[str] = (),
    value: str | None = None,
    levels: Sequence[float] = (),
    table: str = "linked",
    description: str = "",
) -> ReleaseSpec:
    """The spec of one ad-hoc query (``RequestInvalid`` or ``InputError`` name what is wrong)."""
    if kind not in KINDS:
        raise InputError(f"unknown query kind {kind!r}; one of {', '.join(KINDS)}")
    fields: dict[str, Any] = {
        "name": name,
        "description": description or f"Ad-hoc {kind} query.",
        "years": tuple(years),
        "population": tuple(parse_condition(w, table) for w in where),
        "table": table,
        "by": tuple(by),
    }
    if kind != "count":
        if not value:
            raise InputError(f"a {kind} query needs --value VARIABLE")
        fields["value"] = value
    elif value:
        raise InputError("a count query takes no --value (it counts persons)")
    if kind == "quantile":
        if not levels:
            raise InputError("a quantile query needs --level (levels from the release policy's grids)")
        fields["levels"] = tuple(levels)
    return KINDS[kind](**fields)


def spec_from_file(path: Path) -> ReleaseSpec:
    """A data-free spec from a JSON file (``{"spec": "count", ...}``; see docs/queries.md)."""
    try:
        obj = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: spec file not found") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a JSON spec ({exc})") from None
    return parse_spec(obj)


__all__ = ["KINDS", "parse_condition", "query_spec", "spec_from_file"]
