"""What every exact release adds to the release-history audit (``kansrijk.gate.audit``), and the audit's
suppression of a new table's cells against the whole history.

A release's audit records come from the gate's own computation: the person-years it selected (``Materialised``),
the finest part each falls in (a table cell, a tree leaf and class, a model's outcome class) and the numbers it
releases exactly (withheld cells and noisy numbers are not there: an attacker does not have them).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import polars as pl

from kansrijk.gate.audit import COUNT, PERSON_YEARS, AuditCell, AuditRecord, AuditResult, audit
from kansrijk.gate.compute import Materialised
from kansrijk.gate.data import PERSON, YEAR
from kansrijk.gate.requests import (
    CountTable,
    Histogram,
    MeanTable,
    ModelMetrics,
    QuantileRequest,
    RegressionResult,
    ReleaseRequest,
    TestResult,
    TreeStructure,
)
from kansrijk.gate.sdc import RuleOutcome, TableCheck, _pooled, histogram_frame, quantile_spans
from kansrijk.policy.release import SdcRules

HISTORY_AUDIT = "history_audit"
_CODE = "__code"


def year_constant(year: int) -> np.uint64:
    """A reference year's 64-bit constant, XORed into its rows' person ids (a person-year's id)."""
    return np.uint64(int.from_bytes(hashlib.sha256(b"kansrijk population year %d" % year).digest()[:8], "big"))


def person_year_ids(rows: pl.DataFrame) -> np.ndarray:
    """One 64-bit id per row: the first 8 bytes of the person key XOR the year's constant."""
    ids = rows.get_column(PERSON).bin.head(8).bin.reinterpret(dtype=pl.UInt64, endianness="big").to_numpy()
    ids = ids.astype(np.uint64)
    years = rows.get_column(YEAR).to_numpy()
    for year in np.unique(years):
        ids[years == year] ^= year_constant(int(year))
    return ids


def _table_codes(request: ReleaseRequest, check: TableCheck) -> np.ndarray:
    """The grid index of every row of a table's data (-1: in no cell, e.g. outside the histogram's bins)."""
    frame = histogram_frame(request) if isinstance(request, Histogram) else request.data
    grid = check.cells.with_row_index(_CODE).select(*check.dims, pl.col(_CODE).cast(pl.Int64))
    if not check.dims:
        return np.zeros(frame.height, dtype=np.int64)
    joined = frame.select(*check.dims).with_row_index("__row").join(grid, on=list(check.dims), how="left")
    return joined.sort("__row").get_column(_CODE).fill_null(-1).to_numpy()


def records_for(
    request: ReleaseRequest, computed: Materialised, check: TableCheck | None, verdicts: Sequence[RuleOutcome] = (),
    rules: SdcRules | None = None,
) -> list[AuditRecord]:  # fmt: skip
    """The audit records of an exact (SDC) release: its released counts, and its released sums of a value. A
    tree whose class counts the tree rules withhold, and a model output's withheld keys, release nothing here.
    A quantile's released window means (``rules``: the window size) are sums over the window's persons."""
    rows = computed.persons
    if rows.height == 0:
        return []
    ids = person_year_ids(rows)
    records: list[AuditRecord] = []
    if check is not None and isinstance(request, QuantileRequest):
        if rules is None:
            raise ValueError("a quantile's audit records need the policy's rules (the window size)")
        return _quantile_records(request, ids, check, max(rules.min_persons_per_cell, rules.min_quantile_contributors))
    if check is not None and isinstance(request, CountTable | Histogram | MeanTable):
        codes = _table_codes(request, check)
        keep = codes >= 0
        released = np.flatnonzero(~check.cells.get_column("suppressed").to_numpy())
        n = check.cells.get_column("n").to_numpy()
        labels = _labels(check)
        cells = [AuditCell((int(i),), float(n[i]), labels[i]) for i in released]
        records.append(AuditRecord(COUNT, PERSON_YEARS, ids[keep], codes[keep], tuple(cells)))
        if isinstance(request, MeanTable):  # and sums: n x mean is the cell's exact sum
            value = request.data.get_column(request.value).cast(pl.Float64).to_numpy()
            sums = np.bincount(codes[keep], weights=value[keep], minlength=check.cells.height)
            assert request.bounds is not None
            cells = [AuditCell((int(i),), float(sums[i]), labels[i]) for i in released]
            records.append(
                AuditRecord(
                    f"sum:{request.value}", PERSON_YEARS, ids[keep], codes[keep], tuple(cells), value[keep],
                    (float(request.bounds[0]), float(request.bounds[1])),
                )
            )  # fmt: skip
        return records
    if isinstance(request, TreeStructure) and computed.leaf_of is not None and computed.outcome is not None:
        if any(v.rule.startswith("tree_") and v.verdict == "suppress" for v in verdicts):
            return []  # the class counts are withheld (kansrijk.gate.release._sdc_values)
        codes = computed.leaf_of * 2 + computed.outcome
        children = {n.node_id: (n.left, n.right) for n in request.nodes if n.left is not None}
        cells = []
        for node in request.nodes:
            leaves = _leaves_under(node.node_id, children)
            for c in (0, 1):
                part = tuple(int(leaf) * 2 + c for leaf in leaves)
                cells.append(AuditCell(part, float(node.class_counts[c]), f"node {node.node_id} class {c}"))
        return [AuditRecord(COUNT, PERSON_YEARS, ids, codes.astype(np.int64), tuple(cells))]
    if isinstance(request, ModelMetrics) and computed.outcome is not None:
        cells = [AuditCell((0, 1), float(request.n), "n")] if "n" not in computed.withheld else []
        if request.n_positive is not None and "n_positive" not in computed.withheld:
            cells.append(AuditCell((1,), float(request.n_positive), "n_positive"))
        return [AuditRecord(COUNT, PERSON_YEARS, ids, computed.outcome.astype(np.int64), tuple(cells))]
    n = getattr(request, "n", None)
    if isinstance(request, TestResult | RegressionResult) and isinstance(n, int) and n == rows.height:
        return [AuditRecord(COUNT, PERSON_YEARS, ids, np.zeros(ids.size, dtype=np.int64), (AuditCell((0,), n, "n"),))]
    return []


def _quantile_records(request: QuantileRequest, ids: np.ndarray, check: TableCheck, t: int) -> list[AuditRecord]:
    """One sum record per quantile level: each released group's window (the persons whose values the released
    mean averages, found as ``kansrijk.gate.sdc.quantile_spans`` finds them) is a cell whose value is the
    window's sum. An attacker who knows who is in a window (as the audit assumes, to be safe) has its sum, and
    sums of other releases over the same persons may difference it down to a few of them."""
    value = request.data.get_column(request.value).cast(pl.Float64).to_numpy()
    group = _table_codes(request, check)
    known = (group >= 0) & ~np.isnan(value)
    persons = request.data.get_column(PERSON).to_list() if _pooled(request) else None
    released = ~check.cells.get_column("suppressed").to_numpy()
    labels = _labels(check)
    window = np.full((len(request.quantiles), value.size), -1, dtype=np.int64)
    shown: list[int] = []
    for g in np.flatnonzero(released):
        at = np.flatnonzero(known & (group == g))
        order = at[np.argsort(value[at], kind="stable")]  # the order of the gate's stable sort of the group
        spans = quantile_spans(value[order], request.quantiles, t, [persons[i] for i in order] if persons else None)
        if spans is None:
            continue  # withheld (the quantile window rule)
        shown.append(int(g))
        for level, (start, end) in enumerate(spans):
            window[level, order[start:end]] = g
    if not shown:
        return []
    # the value's public bounds; without them, the values' own range (an attacker who knew that much)
    bounds = request.bounds or (float(value[known].min()), float(value[known].max()))
    records = []
    for level, q in enumerate(request.quantiles):
        sums = np.bincount(np.maximum(window[level], 0), weights=np.where(window[level] >= 0, value, 0.0),
                           minlength=check.cells.height)  # fmt: skip
        cells = tuple(AuditCell((g,), float(sums[g]), f"{labels[g]}: window of quantile {q:g}") for g in shown)
        records.append(
            AuditRecord(
                f"sum:{request.value}", PERSON_YEARS, ids[known], window[level][known], cells, value[known],
                (float(bounds[0]), float(bounds[1])),
            )
        )  # fmt: skip
    return records


def _leaves_under(node: int, children: dict[int, tuple[int, int]]) -> list[int]:
    out, stack = [], [node]
    while stack:
        n = stack.pop()
        if n in children:
            stack.extend(children[n])
        else:
            out.append(n)
    return out


def _labels(check: TableCheck) -> list[str]:
    if not check.dims:
        return ["the total"]
    keys = check.cells.select(*check.dims).rows()
    return [", ".join(f"{d}={v}" for d, v in zip(check.dims, key, strict=True)) for key in keys]


def run(history: Sequence[AuditRecord], new: Sequence[AuditRecord], rules: SdcRules) -> AuditResult:
    return audit(history, new, threshold=rules.min_persons_per_cell, interval=rules.audit_interval, p=rules.p_percent)


def outcome(result: AuditResult, withheld: int = 0) -> RuleOutcome:
    """The audit's verdict as a rule outcome."""
    stats = f"{result.atoms} atoms, {result.candidates} small, {result.programs} linear programs"
    if not result.ok:
        found = "; ".join(d.describe() for d in result.disclosures[:5])
        more = f" (and {len(result.disclosures) - 5} more)" if len(result.disclosures) > 5 else ""
        return RuleOutcome(
            HISTORY_AUDIT,
            "refuse",
            f"together with the earlier releases this would pin a group below the threshold: {found}{more} [{stats}]",
        )
    if withheld:
        return RuleOutcome(
            HISTORY_AUDIT,
            "suppress",
            f"{withheld} further cell(s) withheld so that no group below the threshold can be derived from all "
            f"releases together [{stats}]",
        )
    return RuleOutcome(HISTORY_AUDIT, "pass", f"no group below the threshold is derivable from all releases [{stats}]")


def suppress_against_history(
    history: Sequence[AuditRecord], new: list[AuditRecord], check: TableCheck, rules: SdcRules
) -> tuple[AuditResult, TableCheck, int]:
    """Audit a table; while it pins a small group, withhold its smallest released cell and audit again.

    Returns the last audit, the table's check with the cells withheld (``suppressed_by`` = history_audit) and
    how many were withheld. The result still fails when the table's released cells run out or more than the
    policy's suppressed share would be withheld: the caller refuses then."""
    result = run(history, new, rules)
    suppressed = check.cells.get_column("suppressed").to_numpy().copy()
    withheld: list[int] = []
    while not result.ok:
        released = {c.codes[0] for r in new for c in r.cells}
        if not released:
            break
        n = check.cells.get_column("n").to_numpy()
        smallest = min(released, key=lambda i: (n[i], i))
        withheld.append(smallest)
        suppressed[smallest] = True
        if suppressed.mean() > rules.max_suppressed_share:
            break
        new = [r.with_cells(c for c in r.cells if c.codes[0] != smallest) for r in new]
        result = run(history, new, rules)
    if not withheld:
        return result, check, 0
    by = check.cells.get_column("suppressed_by").scatter(sorted(withheld), HISTORY_AUDIT)
    cells = check.cells.with_columns(pl.Series("suppressed", suppressed), by)
    return (
        result,
        TableCheck(cells, check.dims, check.shape, check.outcomes, check.statistics, check.extra),
        len(withheld),
    )


__all__ = ["HISTORY_AUDIT", "outcome", "person_year_ids", "records_for", "run", "suppress_against_history"]
