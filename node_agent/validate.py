"""Validate every row of an extract in one columnar pass and split it into clean rows and a quarantine report.

A row is quarantined when any check fails: the BSN (present, nine digits, 11-check, not duplicated within the
extract: a later exact copy of a row is a ``duplicate_row``, different rows sharing a BSN are all
``duplicate_bsn``), each mapped column (required, parses, schema range/category/code pattern, reference year), the
SDQ items, and the policy's cross-field ``[[rules]]``. The quarantine report lists one line per (record, field,
rule): where the record is (``line`` in a CSV file, header = line 1, as every message says; ``row`` in a Parquet
file), the source column, the canonical variable, the rule name and what the rule expects (a date format with an
example, the allowed codes, a range: from the policy and the schema, never from the data). It never holds the BSN
or any raw value, so it can be read by the operator who fixes the extract; it stays at the partner and is not in
the bundle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from kansrijk.policy.sharing import SharingPolicy
from kansrijk.pseudonym import bsn_format_ok_expr, bsn_valid_expr
from node_agent.extract import ROW, RawExtract
from node_agent.transform import Check, _text, build_plan

BSN = "__bsn"
QUARANTINE_COLUMNS = ("field", "variable", "rule", "expected")


def quarantine_schema(position: str) -> dict[str, pl.DataType]:
    """The report's columns: the record's position (``line`` or ``row``, see ``RawExtract.position``) first."""
    return {position: pl.Int64(), **{c: pl.String() for c in QUARANTINE_COLUMNS}}


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """Clean canonical rows (``__row``, ``__bsn``, shared variables) and the quarantine report of the rest."""

    clean: pl.DataFrame
    quarantine: pl.DataFrame
    rows_in: int
    rows_quarantined: int
    year: int
    position: str = "row"

    @property
    def fault_rate(self) -> float:
        return self.rows_quarantined / self.rows_in if self.rows_in else 0.0

    def counts_by_rule(self) -> dict[str, int]:
        """Rows failing each rule (a row failing two rules counts once under each)."""
        if self.quarantine.is_empty():
            return {}
        counts = (
            self.quarantine.group_by("rule")
            .agg(pl.col(self.position).n_unique().alias("rows"))
            .sort(["rows", "rule"])
        )
        return dict(zip(counts["rule"].to_list()[::-1], counts["rows"].to_list()[::-1], strict=True))

    def expected_by_rule(self) -> dict[str, list[str]]:
        """Per rule, what it expects of each field it failed on (``field: expected``), for the summary."""
        if self.quarantine.is_empty():
            return {}
        pairs = self.quarantine.select("rule", "field", "expected").unique().sort(["rule", "field"])
        out: dict[str, list[str]] = {}
        for rule, fld, expected in pairs.iter_rows():
            if expected:
                out.setdefault(rule, []).append(f"{fld}: {expected}" if fld else expected)
        return out


def bsn_checks(column: str, dtype: pl.DataType) -> tuple[dict[str, pl.Expr], list[Check]]:
    """BSN present, nine digits, passes the 11-check (staged: the format is tested once). Duplicates are
    classified after the main pass (``_duplicates``)."""
    bsn = _text(column, dtype)
    staged = {"__bsn_format": bsn_format_ok_expr(bsn), "__bsn_valid": bsn_valid_expr(bsn)}
    fmt, valid = pl.col("__bsn_format"), pl.col("__bsn_valid")
    return staged, [
        Check(column, "pseudonym", "bsn_missing", bsn.is_null(), "a BSN"),
        Check(column, "pseudonym", "bsn_not_9_digits", (~fmt).fill_null(False), "a BSN of nine digits"),
        Check(column, "pseudonym", "bsn_fails_11_check", (fmt & ~valid).fill_null(False), "a BSN passing the 11-check"),
    ]


def _duplicates(frame: pl.DataFrame, work: pl.DataFrame) -> pl.DataFrame:
    """``__row``, ``__dup_row``, ``__dup_bsn`` for rows whose BSN occurs more than once.

    A later exact copy of a row is a ``duplicate_row`` (the first copy is kept); different rows that share a BSN
    are all ``duplicate_bsn`` (which one is right is not ours to guess). Only the (few) rows with a repeated BSN
    are compared column by column.
    """
    rows = work.filter(pl.col(BSN).is_not_null() & pl.col(BSN).is_duplicated()).select(ROW, BSN)
    if rows.is_empty():
        return pl.DataFrame(schema={ROW: pl.Int64, "__dup_row": pl.Boolean, "__dup_bsn": pl.Boolean})
    sources = [c for c in frame.columns if c != ROW]
    subset = (
        frame.with_columns(pl.col(ROW).cast(pl.Int64))
        .join(rows, on=ROW, how="semi")
        .sort(ROW)
        .with_columns(pl.struct(sources).is_first_distinct().alias("__first"))
        .join(rows, on=ROW)
    )
    return subset.select(
        ROW,
        (~pl.col("__first")).alias("__dup_row"),
        (pl.col("__first") & (pl.col("__first").sum().over(BSN) > 1)).alias("__dup_bsn"),
    )


def validate_extract(extract: RawExtract, policy: SharingPolicy, year: int) -> ValidationResult:
    """Run every check of ``policy`` on ``extract`` (reference year ``year``); see the module docstring."""
    frame = extract.frame
    plan = build_plan(policy, frame.schema, year)
    bsn_column = policy.input.bsn_column
    bsn_staged, bsn_value_checks = bsn_checks(bsn_column, frame.schema[bsn_column])
    value_checks = [*bsn_value_checks, *plan.checks]
    flags = {f"__v{i}": c for i, c in enumerate(value_checks)}
    rule_flags = {f"__r{i}": c for i, c in enumerate(plan.rule_checks)}
    all_flags: Mapping[str, Check] = {**flags, **rule_flags}

    # Staged (see transform.Plan) so each column is trimmed and parsed once for its output and all its checks.
    work = (
        frame.lazy()
        .with_columns(*plan.normalise)
        .with_columns(*[expr.alias(name) for name, expr in {**plan.parsed, **bsn_staged}.items()])
        .select(
            pl.col(ROW).cast(pl.Int64),
            _text(bsn_column, frame.schema[bsn_column]).alias(BSN),
            *[expr.alias(name) for name, expr in plan.outputs.items()],
            *[check.fault.alias(name) for name, check in flags.items()],
        )
        .with_columns(*[check.fault.alias(name) for name, check in rule_flags.items()])
        .collect()
    )
    duplicates = _duplicates(frame, work)
    all_flags = {
        **all_flags,
        "__dup_row": Check(bsn_column, "pseudonym", "duplicate_row", pl.lit(False), "no exact copy of a row"),
        "__dup_bsn": Check(bsn_column, "pseudonym", "duplicate_bsn", pl.lit(False), "one row per BSN"),
    }
    work = (
        work.join(duplicates, on=ROW, how="left", maintain_order="left")
        .with_columns(pl.col("__dup_row", "__dup_bsn").fill_null(False))
        .with_columns(pl.any_horizontal(list(all_flags)).alias("__faulty"))
    )
    faulty = work.filter(pl.col("__faulty"))
    clean = work.filter(~pl.col("__faulty")).select(ROW, BSN, *plan.outputs)
    return ValidationResult(
        clean=clean,
        quarantine=_report(faulty, all_flags, extract.position),
        rows_in=frame.height,
        rows_quarantined=faulty.height,
        year=year,
        position=extract.position,
    )


def _report(faulty: pl.DataFrame, flags: Mapping[str, Check], position: str) -> pl.DataFrame:
    schema = quarantine_schema(position)
    if faulty.is_empty() or not flags:
        return pl.DataFrame(schema=schema)
    meta = pl.DataFrame(
        {
            "flag": list(flags),
            "field": [c.field for c in flags.values()],
            "variable": [c.variable for c in flags.values()],
            "rule": [c.rule for c in flags.values()],
            "expected": [c.expected for c in flags.values()],
        }
    )
    return (
        faulty.select(ROW, *flags)
        .unpivot(index=ROW, variable_name="flag", value_name="hit")
        .filter(pl.col("hit"))
        .join(meta, on="flag", how="left")
        .select(pl.col(ROW).alias(position), *QUARANTINE_COLUMNS)
        .unique()
        .sort([position, "field", "rule"])
        .cast(schema)  # type: ignore[arg-type]
    )
