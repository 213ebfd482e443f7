"""Parse, check, minimise and generalise: the sharing policy turned into polars expressions.

For every mapped source column this module builds the canonical value(s) it becomes (birth date -> year, WOZ ->
rounded euros, raw category -> canonical category, SDQ items -> scale scores) and the checks a raw value must pass
(parses, schema range, category, code pattern, required). A check is an expression that is true where the row
breaks the rule; ``node_agent.validate`` evaluates them all in one pass. Only canonical values leave this module:
columns the policy does not map are never selected, which is the minimisation.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from kansrijk.policy.sharing import ColumnMap, Rule, SdqScoring, SharingPolicy
from kansrijk.schema import VARIABLES, Kind

# SDQ scoring key (Goodman 1997; sdqinfo.org), items numbered 1..25 in the official order.
SDQ_SCALES: dict[str, tuple[int, ...]] = {
    "emotional": (3, 8, 13, 16, 24),
    "conduct": (5, 7, 12, 18, 22),
    "hyperactivity": (2, 10, 15, 21, 25),
    "peer": (6, 11, 14, 19, 23),
    "prosocial": (1, 4, 9, 17, 20),
}
SDQ_REVERSED: frozenset[int] = frozenset({7, 11, 14, 21, 25})
SDQ_DIFFICULTY_SCALES = ("emotional", "conduct", "hyperactivity", "peer")


@dataclass(frozen=True, slots=True)
class Check:
    """One rule on one field: ``fault`` is true where the row breaks it (never null); ``expected`` says what the
    rule wants in the operator's terms (a date format with an example, the allowed codes, a range), from the
    policy and the schema only, never from the data."""

    field: str
    variable: str
    rule: str
    fault: pl.Expr
    expected: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything the policy asks of an extract, in evaluation stages so that nothing is computed twice.

    1. ``normalise``: text source columns trimmed, empty text as null (replacing the columns in place);
    2. ``parsed``: each mapped column parsed once (``__p:<source>``);
    3. ``outputs`` (canonical values) and ``checks`` (value checks), reading stages 1 and 2;
    4. ``rule_checks``: cross-field rules on the canonical columns of stage 3.
    """

    normalise: tuple[pl.Expr, ...]
    parsed: dict[str, pl.Expr]
    outputs: dict[str, pl.Expr]
    checks: tuple[Check, ...]
    rule_checks: tuple[Check, ...]


def normalised_text(column: str, dtype: pl.DataType) -> pl.Expr:
    """Stage 1: the raw text trimmed, empty text as null (non-text columns are left as they are)."""
    if dtype != pl.String:
        return pl.col(column)
    expr = pl.col(column).str.strip_chars()
    return pl.when(expr.str.len_bytes() == 0).then(None).otherwise(expr).alias(column)


def _text(column: str, dtype: pl.DataType) -> pl.Expr:
    """The (stage-1 normalised) raw value as text."""
    return pl.col(column) if dtype == pl.String else pl.col(column).cast(pl.String)


def _present(column: str, dtype: pl.DataType) -> pl.Expr:
    return pl.col(column).is_not_null()


def parsed_name(source: str) -> str:
    return f"__p:{source}"


def _parse_int(column: str, dtype: pl.DataType) -> pl.Expr:
    if dtype.is_integer():
        return pl.col(column).cast(pl.Int64)
    return _text(column, dtype).cast(pl.Int64, strict=False)


def _parse_decimal(column: str, dtype: pl.DataType, decimal: str) -> pl.Expr:
    if dtype.is_numeric():
        return pl.col(column).cast(pl.Float64)
    text = _text(column, dtype)
    if decimal == ",":
        text = text.str.replace(",", ".", literal=True)
    return text.cast(pl.Float64, strict=False)


def _parse_date(column: str, dtype: pl.DataType, formats: list[str]) -> pl.Expr:
    if dtype == pl.Date:
        return pl.col(column)
    if isinstance(dtype, pl.Datetime):
        return pl.col(column).dt.date()
    text = _text(column, dtype)
    attempts = [text.str.strptime(pl.Date, fmt, strict=False, exact=True) for fmt in formats]
    return pl.coalesce(attempts) if len(attempts) > 1 else attempts[0]


def _parse_bool(column: str, dtype: pl.DataType, true_values: list[str], false_values: list[str]) -> pl.Expr:
    if dtype == pl.Boolean:
        return pl.col(column)
    text = _text(column, dtype)
    return pl.when(text.is_in(true_values)).then(True).when(text.is_in(false_values)).then(False).otherwise(None)


def _round(value: pl.Expr, spec: ColumnMap) -> pl.Expr:
    assert spec.round_to is not None
    # Half away from zero, as people round money (polars' default is half to even).
    if spec.round_decimals is not None:
        return value.round(spec.round_decimals, mode="half_away_from_zero")
    return (value / spec.round_to).round(0, mode="half_away_from_zero") * spec.round_to


def _bands(value: pl.Expr, bands: list[int]) -> pl.Expr:
    expr = pl.when(value >= bands[-1]).then(pl.lit(bands[-1]))
    for lower in reversed(bands[:-1]):
        expr = expr.when(value >= lower).then(pl.lit(lower))
    return expr.otherwise(None)


def column_plan(
    source: str, spec: ColumnMap, dtype: pl.DataType, policy: SharingPolicy, year: int
) -> tuple[dict[str, pl.Expr], dict[str, pl.Expr], list[Check]]:
    """Stage-2 parse, canonical outputs and checks for one mapped source column."""
    var = VARIABLES[spec.variable]
    fmt = policy.input
    present = _present(source, dtype)
    checks: list[Check] = []
    outputs: dict[str, pl.Expr] = {}
    staged: dict[str, pl.Expr] = {}

    def stage(expr: pl.Expr) -> pl.Expr:
        staged[parsed_name(source)] = expr
        return pl.col(parsed_name(source))

    def fault(rule: str, expr: pl.Expr, expected: str = "", variable: str = spec.variable) -> None:
        checks.append(Check(field=source, variable=variable, rule=rule, fault=expr.fill_null(False), expected=expected))

    if spec.required and spec.empty_value is None:
        fault("required", ~present, "a value (the field is required)")

    parse = spec.effective_parse
    if parse == "date":
        formats = spec.date_formats or fmt.date_formats
        parsed = stage(_parse_date(source, dtype, formats))
        fault("not_a_date", present & parsed.is_null(), expected_date(formats))
        fault("date_after_reference_year", parsed.dt.year() > year, f"a date in {year} or before")
        year_value = parsed.dt.year().cast(pl.Int64)
        fault("out_of_range", _outside(year_value, spec.variable), expected_range(spec.variable, "a year"))
        outputs[spec.variable] = year_value
        if spec.generalise == "year_month":
            outputs[spec.month_variable] = parsed.dt.month().cast(pl.Int64)
        return staged, outputs, checks

    if parse == "bool":
        value = stage(_parse_bool(source, dtype, fmt.true_values, fmt.false_values))
        fault("not_a_boolean", present & value.is_null(), f"one of {', '.join([*fmt.true_values, *fmt.false_values])}")
        outputs[spec.variable] = value
        return staged, outputs, checks

    if parse in ("int", "decimal"):
        value = stage(
            _parse_int(source, dtype)
            if parse == "int"
            else _parse_decimal(source, dtype, fmt.decimal if dtype == pl.String else ".")
        )
        number = "a whole number" if parse == "int" else f"a number with decimal mark {fmt.decimal!r}"
        if dtype != pl.String:
            number = "a number"
        fault("not_an_integer" if parse == "int" else "not_a_number", present & value.is_null(), number)
        fault("out_of_range", _outside(value, spec.variable), expected_range(spec.variable, "a number"))
        if spec.generalise == "round":
            value = _round(value, spec)
        elif spec.generalise == "bands":
            assert spec.bands is not None
            value = _bands(value, spec.bands)
        if var.kind == Kind.CATEGORY:
            value = value.cast(pl.String)
        outputs[spec.variable] = value
        if spec.variable == "year":
            fault("other_reference_year", value != year, f"{year} (the reference year)")
        return staged, outputs, checks

    # text: categories and codes
    text = _text(source, dtype)
    if spec.values is not None:
        value = stage(text.replace_strict(spec.values, default=None, return_dtype=pl.String))
    else:
        value = text
    if var.kind == Kind.CATEGORY:
        allowed = list(spec.values) if spec.values is not None else list(var.categories)
        fault("unknown_category", present & ~value.is_in(list(var.categories)).fill_null(False),
              "one of " + ", ".join(str(a) for a in allowed))  # fmt: skip
    elif var.kind == Kind.CODE and var.pattern is not None:
        fault("malformed_code", present & ~value.str.contains(var.pattern).fill_null(False),
              f"a code matching {var.pattern}")  # fmt: skip
    elif var.kind in (Kind.INT, Kind.FLOAT):
        value = value.cast(var.dtype, strict=False)
        fault("not_a_number", present & value.is_null(), "a number")
        fault("out_of_range", _outside(value, spec.variable), expected_range(spec.variable, "a number"))
    if spec.empty_value is not None:
        value = pl.when(present).then(value).otherwise(pl.lit(spec.empty_value))
    outputs[spec.variable] = value
    return staged, outputs, checks


_DATE_EXAMPLE = dt.date(2023, 12, 31)


def expected_date(formats: list[str]) -> str:
    """``a date as DD-MM-YYYY (e.g. 31-12-2023)``: the policy's formats in words, with an example of each."""
    shown = [
        f"{fmt.replace('%d', 'DD').replace('%m', 'MM').replace('%Y', 'YYYY').replace('%y', 'YY')} "
        f"(e.g. {_DATE_EXAMPLE.strftime(fmt)})"
        for fmt in formats
    ]
    return "a date as " + " or ".join(shown)


def expected_range(variable: str, what: str) -> str:
    var = VARIABLES[variable]
    if var.minimum is not None and var.maximum is not None:
        return f"{what} from {var.minimum:g} to {var.maximum:g}"
    if var.minimum is not None:
        return f"{what} of at least {var.minimum:g}"
    if var.maximum is not None:
        return f"{what} of at most {var.maximum:g}"
    return what


def _outside(value: pl.Expr, variable: str) -> pl.Expr:
    var = VARIABLES[variable]
    expr = pl.lit(False)
    if var.minimum is not None:
        expr = expr | (value < var.minimum)
    if var.maximum is not None:
        expr = expr | (value > var.maximum)
    return expr


def sdq_plan(sdq: SdqScoring, schema: pl.Schema) -> tuple[dict[str, pl.Expr], dict[str, pl.Expr], list[Check]]:
    """SDQ scale scores from the 25 items (or the recorded total alone), and the item checks."""
    checks: list[Check] = []
    var = sdq.total_variable
    staged = {parsed_name(col): _parse_int(col, schema[col]) for col in sdq.items}
    if sdq.total is not None:
        staged[parsed_name(sdq.total)] = _parse_int(sdq.total, schema[sdq.total])
    items = [pl.col(parsed_name(col)) for col in sdq.items]
    present = [_present(col, schema[col]) for col in sdq.items]
    for col, value, here in zip(sdq.items, items, present, strict=True):
        bad = here & (value.is_null() | ~value.is_in([0, 1, 2]).fill_null(False))
        checks.append(
            Check(col, var, "sdq_item_not_0_1_2", bad.fill_null(False), expected="0, 1 or 2 (or empty)")
        )
    answered = pl.sum_horizontal([h.cast(pl.Int32) for h in present])
    complete = answered == len(sdq.items)
    span = f"{sdq.items[0]}..{sdq.items[-1]}"
    checks.append(
        Check(span, var, "sdq_items_incomplete", (answered > 0) & ~complete, expected="all 25 items or none")
    )

    def item(number: int) -> pl.Expr:
        v = items[number - 1]
        return (2 - v) if number in SDQ_REVERSED else v

    def scale(name: str) -> pl.Expr:
        return pl.sum_horizontal([item(n) for n in SDQ_SCALES[name]])

    difficulties = pl.sum_horizontal([scale(s) for s in SDQ_DIFFICULTY_SCALES])
    total = difficulties
    if sdq.total is not None:
        recorded = pl.col(parsed_name(sdq.total))
        recorded_present = _present(sdq.total, schema[sdq.total])
        checks += [
            Check(sdq.total, var, "not_an_integer", (recorded_present & recorded.is_null()).fill_null(False),
                  expected="a whole number"),
            Check(sdq.total, var, "out_of_range", _outside(recorded, var).fill_null(False),
                  expected=expected_range(var, "a number")),
            Check(
                sdq.total,
                var,
                "sdq_total_disagrees_with_items",
                (complete & recorded.is_not_null() & (recorded != difficulties)).fill_null(False),
                expected="the sum of the four difficulty scales of the items",
            ),
        ]
        total = pl.when(complete).then(difficulties).otherwise(recorded)
    else:
        total = pl.when(complete).then(difficulties).otherwise(None)
    scores = {"total_difficulties": total, "prosocial": pl.when(complete).then(scale("prosocial")).otherwise(None)}
    return staged, {name: scores[score] for score, name in sdq.share.items()}, checks


def rule_check(rule: Rule) -> Check:
    """A policy ``[[rules]]`` entry as a check on canonical columns."""
    applies = pl.lit(True)
    for name, allowed in rule.when.items():
        applies = applies & pl.col(name).is_in(allowed).fill_null(False)
    value = pl.col(rule.variable)
    if rule.must_be_empty is not None:
        broken = value.is_not_null() if rule.must_be_empty else value.is_null()
    elif rule.allowed is not None:
        broken = value.is_not_null() & ~value.is_in(rule.allowed)
    elif rule.age_minimum is not None or rule.age_maximum is not None:
        age = pl.col("year") - value
        broken = pl.lit(False)
        if rule.age_minimum is not None:
            broken = broken | (age < rule.age_minimum)
        if rule.age_maximum is not None:
            broken = broken | (age > rule.age_maximum)
    else:
        broken = pl.lit(False)
        if rule.minimum is not None:
            broken = broken | (value < rule.minimum)
        if rule.maximum is not None:
            broken = broken | (value > rule.maximum)
    return Check(field="", variable=rule.variable, rule=rule.name, fault=(applies & broken).fill_null(False),
                 expected=f"the sharing policy's rule {rule.name!r}")  # fmt: skip


def build_plan(policy: SharingPolicy, schema: pl.Schema, year: int) -> Plan:
    """The plan for an extract with this ``schema`` whose reference year is ``year``."""
    outputs: dict[str, pl.Expr] = {}
    parsed: dict[str, pl.Expr] = {}
    checks: list[Check] = []
    for source, spec in policy.columns.items():
        staged, out, chk = column_plan(source, spec, schema[source], policy, year)
        parsed.update(staged)
        outputs.update(out)
        checks += chk
    if policy.sdq is not None:
        staged, out, chk = sdq_plan(policy.sdq, schema)
        parsed.update(staged)
        outputs.update(out)
        checks += chk
    if "year" not in outputs:
        outputs["year"] = pl.lit(year, dtype=pl.Int64)
    source_of = {o: s for s, spec in policy.columns.items() for o in spec.outputs}
    rules = []
    for rule in policy.rules:
        check = rule_check(rule)
        rules.append(
            Check(source_of.get(rule.variable, rule.variable), check.variable, check.rule, check.fault, check.expected)
        )
    # Non-strict: a value the canonical type cannot hold (a WOZ of 1e308, inf, NaN) is already flagged
    # out_of_range, so its row goes to quarantine; a strict cast would crash before the row got there.
    ordered = {name: outputs[name].cast(VARIABLES[name].dtype, strict=False) for name in policy.shared_variables}
    normalise = tuple(normalised_text(c, schema[c]) for c in policy.source_columns if schema[c] == pl.String)
    return Plan(normalise=normalise, parsed=parsed, outputs=ordered, checks=tuple(checks), rule_checks=tuple(rules))
