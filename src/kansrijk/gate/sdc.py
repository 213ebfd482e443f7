"""Output-checking rules (statistical disclosure control) for every kind of release request.

Each rule returns a ``RuleOutcome``: ``pass``, ``suppress`` (some cells withheld) or ``refuse`` (nothing
released). Rules and their sources (see ``sdc-rules.md`` and ``docs/privacy-officer.md``):

- ``threshold``: fewer than ``min_persons_per_cell`` persons in a cell (ACRO, ABS rule of 10, Statistics Netherlands);
- ``p_percent``: (total - top1 - top2) / top1 < p (ACRO ``safe_pratio_p``);
- ``nk_dominance``: the n largest contributions are >= k of the total (Bundesbank RDSC; ``>=`` as ACRO v1);
- ``all_values_same``: every contributor in a cell has the same value (class disclosure, ACRO);
- ``negative_values``: dominance is undefined with negative contributions: refuse;
- ``secondary_suppression``: further cells withheld so that no suppressed cell can be pinned to one value from the
  released cells, the margins (every line sum assumed public) and non-negativity — audited with the attacker's
  own linear program (the tightest bounds of every withheld cell), not only by the "one suppressed cell per
  line" heuristic;
- ``dof``, ``tree_*``, ``extremes``, ``quantile_contributors``: model and order-statistic rules.

Tables are computed here with polars expressions from the person-level data; the suppression search works on a
dense numpy array of the cell grid (cells, not persons).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import polars as pl
import scipy.linalg
from scipy.optimize import linprog

from kansrijk.gate.requests import (
    CountTable,
    Extremes,
    FeatureImportances,
    Histogram,
    MeanTable,
    ModelMetrics,
    QuantileRequest,
    RegressionResult,
    ReleaseRequest,
    RequestInvalid,
    TestResult,
    TreeStructure,
)
from kansrijk.gate.rules import TABLE_RULES, rules_for
from kansrijk.policy.release import SdcRules

Verdict = Literal["pass", "suppress", "refuse"]
_ORDER = {"pass": 0, "suppress": 1, "refuse": 2}
BIN = "bin"
_IDX = "__cell"
# A table pooled over several reference years has one row per person and year; its data then carries the
# person key, and the rules count persons (not rows) and take a person's rows in a cell as one contribution.
PERSON = "pseudonym"
# The attacker's linear program (bounds of every withheld cell) is run for patterns of at most this many
# suppressed cells; larger patterns get the exact linear-algebra check (no cell determined by the margins
# alone) and the per-line rule (documented in docs/privacy-officer.md).
LP_AUDIT_MAX_SUPPRESSED = 400
EXACT_CHECK_MAX_SUPPRESSED = 1500


@dataclass(frozen=True, slots=True)
class RuleOutcome:
    """One rule's verdict on one request, with a reason a privacy officer can read and the affected cells."""

    rule: str
    verdict: Verdict
    reason: str
    cells: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "verdict": self.verdict, "reason": self.reason}
        if self.cells:
            out["cells"] = list(self.cells)
        return out


def worst(outcomes: Sequence[RuleOutcome]) -> Verdict:
    verdict: Verdict = "pass"
    for o in outcomes:
        if _ORDER[o.verdict] > _ORDER[verdict]:
            verdict = o.verdict
    return verdict


@dataclass(frozen=True, eq=False)
class TableCheck:
    """The outcome of checking a table: its cells (keys, statistics, ``suppressed``) and every rule's verdict.

    ``cells`` has one row per cell of the full grid (every combination of categories), in grid order, with
    columns: the ``by`` variables (and ``bin``), ``n`` (persons), the statistic columns, ``suppressed`` (bool)
    and ``suppressed_by`` (rule name or null).
    """

    cells: pl.DataFrame
    dims: tuple[str, ...]
    shape: tuple[int, ...]
    outcomes: tuple[RuleOutcome, ...]
    statistics: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def verdict(self) -> Verdict:
        return worst(self.outcomes)


# --- building the cell grid ------------------------------------------------------------------------------
def _categories(data: pl.DataFrame, col: str, keys: Mapping[str, Sequence[Any]] | None) -> pl.Series:
    if keys is not None and col in keys:
        declared = pl.Series(col, list(keys[col]), dtype=data.schema[col])
        outside = data.select(pl.col(col).is_in(declared.implode()).not_().sum()).item()
        if outside:
            raise RequestInvalid(
                f"column {col!r}: {outside} row(s) have a value outside the declared keys",
                hint="declare every category in keys, or filter the population before the request",
            )
        return declared
    return data.get_column(col).unique().sort(nulls_last=True)


def build_grid(
    data: pl.DataFrame, dims: Sequence[str], keys: Mapping[str, Sequence[Any]] | None
) -> tuple[pl.DataFrame, tuple[int, ...]]:
    """Every combination of the categories of ``dims`` (row-major), with a ``__cell`` flat index column."""
    grid: pl.DataFrame | None = None
    shape: list[int] = []
    for i, col in enumerate(dims):
        cats = _categories(data, col, keys)
        shape.append(cats.len())
        part = pl.DataFrame({col: cats, f"__i{i}": np.arange(cats.len(), dtype=np.int64)})
        grid = part if grid is None else grid.join(part, how="cross")
    if grid is None:  # no dims: a single cell
        return pl.DataFrame({_IDX: [0]}), ()
    strides = np.cumprod([1, *shape[::-1]])[:-1][::-1]
    flat = pl.sum_horizontal([pl.col(f"__i{i}") * int(s) for i, s in enumerate(strides)])
    grid = grid.with_columns(flat.alias(_IDX)).drop([f"__i{i}" for i in range(len(dims))]).sort(_IDX)
    return grid, tuple(shape)


def _aggregate(
    data: pl.DataFrame, dims: Sequence[str], aggs: Sequence[pl.Expr], keys: Mapping[str, Sequence[Any]] | None
) -> tuple[pl.DataFrame, tuple[int, ...]]:
    grid, shape = build_grid(data, dims, keys)
    if dims:
        agg = data.group_by(list(dims)).agg(pl.len().alias("n"), *aggs)
        cells = grid.join(agg, on=list(dims), how="left", nulls_equal=True)
    else:
        agg = data.select(pl.len().alias("n"), *aggs)
        cells = grid.with_columns(agg)
    return cells.sort(_IDX).with_columns(pl.col("n").fill_null(0).cast(pl.Int64)), shape


def histogram_frame(request: Histogram) -> pl.DataFrame:
    """The request's data with a ``bin`` column (labels ``[a, b)``); values outside the edges go to the outer
    bins, so the released edges are the public ones and never the data's minimum or maximum."""
    labels = list(histogram_keys(request)[BIN])
    value = pl.col(request.value).cast(pl.Float64)
    inner = request.edges[1:-1]
    index = pl.sum_horizontal([(value >= e).cast(pl.Int64) for e in inner]) if inner else pl.lit(0, pl.Int64)
    return request.data.with_columns(
        pl.when(value.is_null())
        .then(None)
        .otherwise(index)
        .replace_strict(list(range(len(labels))), labels, default=None, return_dtype=pl.String)
        .alias(BIN)
    )


def histogram_keys(request: Histogram) -> dict[str, tuple[Any, ...]]:
    edges = request.edges
    labels = [f"[{edges[i]:g}, {edges[i + 1]:g})" for i in range(len(edges) - 2)]
    labels.append(f"[{edges[-2]:g}, {edges[-1]:g}]")
    return {BIN: tuple(labels)}


def _pooled(request: ReleaseRequest) -> bool:
    """Whether the request's data has one row per person and year (it carries the person key)."""
    return PERSON in request.data.columns and PERSON not in getattr(request, "by", ())  # type: ignore[attr-defined]


def _persons() -> list[pl.Expr]:
    return [pl.col(PERSON).n_unique().alias("persons")]


def compute_cells(request: ReleaseRequest, rules: SdcRules) -> tuple[pl.DataFrame, tuple[str, ...], tuple[int, ...]]:
    """The true table of a tabular request: (cells, dims, shape). Cells carry what the rules need, ``persons``
    (distinct persons, which the threshold rules count) among them: for one reference year the rows, for a pooled
    request the distinct person keys."""
    cells, dims, shape = _compute_cells(request, rules)
    if "persons" not in cells.columns:
        cells = cells.with_columns(pl.col("n").alias("persons"))
    return cells, dims, shape


def _compute_cells(
    request: ReleaseRequest, rules: SdcRules
) -> tuple[pl.DataFrame, tuple[str, ...], tuple[int, ...]]:
    pooled = _pooled(request)
    if isinstance(request, CountTable):
        cells, shape = _aggregate(request.data, request.by, _persons() if pooled else [], request.keys)
        return cells, request.by, shape
    if isinstance(request, Histogram):
        frame = histogram_frame(request).filter(pl.col(BIN).is_not_null())
        keys = {**(request.keys or {}), **histogram_keys(request)}
        dims = (*request.by, BIN)
        cells, shape = _aggregate(frame, dims, _persons() if pooled else [], keys)
        return cells, dims, shape
    if isinstance(request, MeanTable):  # and SumTable
        v = pl.col(request.value).cast(pl.Float64)
        frame = request.data.filter(pl.col(request.value).is_not_null())
        aggs = [v.sum().alias("sum"), v.mean().alias("mean"), (v < 0).sum().alias("negatives"),
                (v.n_unique() == 1).alias("all_same")]  # fmt: skip
        top = [v.max().alias("top1"), v.top_k(2).sum().alias("top2_sum"), v.top_k(rules.nk_n).sum().alias("topn_sum")]
        if not pooled:
            cells, shape = _aggregate(frame, request.by, [*aggs, *top], request.keys)
            return cells, request.by, shape
        # pooled: a contribution (p% and (n,k) dominance) is a person's total in the cell, over their rows
        cells, shape = _aggregate(frame, request.by, aggs, request.keys)
        per_person = frame.group_by([*request.by, PERSON]).agg(v.sum().alias(request.value))
        tops, _ = _aggregate(per_person, request.by, [*top, *_persons()], request.keys)
        return cells.with_columns(tops.drop(_IDX, "n", *request.by)), request.by, shape
    if isinstance(request, QuantileRequest):
        v = pl.col(request.value).cast(pl.Float64)
        frame = request.data.filter(pl.col(request.value).is_not_null())
        aggs = [v.sort().alias("__values"), (v.n_unique() == 1).alias("all_same")]
        if pooled:
            # stable: the release-history audit finds the same windows (kansrijk.gate.history)
            aggs += [pl.col(PERSON).sort_by(v, maintain_order=True).alias("__persons"), *_persons()]
        if not request.by:  # one group: lists, as a grouped aggregation gives them
            aggs = [a.implode() if a.meta.output_name().startswith("__") else a for a in aggs]
        cells, shape = _aggregate(frame, request.by, aggs, request.keys)
        t = max(rules.min_persons_per_cell, rules.min_quantile_contributors)
        who = cells.get_column("__persons").to_list() if pooled else [None] * cells.height
        windows = [quantile_windows(np.asarray(vals or [], dtype=np.float64), request.quantiles, t, persons)
                   for vals, persons in zip(cells.get_column("__values").to_list(), who, strict=True)]  # fmt: skip
        cells = cells.drop("__values", *(["__persons"] if pooled else [])).with_columns(
            *[
                pl.Series(f"q{q:g}", [w[i] if w is not None else None for w in windows], dtype=pl.Float64)
                for i, q in enumerate(request.quantiles)
            ],
            pl.Series("window_ok", [w is not None for w in windows], dtype=pl.Boolean),
        )
        return cells, request.by, shape
    raise TypeError(f"not a tabular request: {type(request).__name__}")


def quantile_windows(
    values: np.ndarray, levels: Sequence[float], t: int, persons: Sequence[Any] | None = None
) -> list[float] | None:
    """Each level's released value: the mean of the ``t`` sorted values nearest the quantile, or None for the
    whole group when any level's window has fewer than ``t`` persons below or above it, or two windows share a
    person. An exact quantile is one person's value; the mean of ``t`` neighbours with ``t`` more on each side
    is not, and disjoint windows keep two levels from being differenced into one person's value.

    ``persons`` (the person of each sorted value, for data pooled over years, where a person has several
    values): each window is widened until it holds ``t`` distinct persons, each side must hold ``t`` persons
    who are not in the window, and no person is in two windows."""
    spans = quantile_spans(values, levels, t, persons)
    return None if spans is None else [float(values[start:end].mean()) for start, end in spans]


def quantile_spans(
    values: np.ndarray, levels: Sequence[float], t: int, persons: Sequence[Any] | None = None
) -> list[tuple[int, int]] | None:
    """The windows of ``quantile_windows`` as ``[start, end)`` positions in the sorted values (the release-history
    audit records each window's sum), or None for a withheld group."""
    n = values.size
    taken: list[tuple[int, int]] = []
    seen: set[Any] = set()
    for q in levels:
        start = round(q * (n - 1) - (t - 1) / 2)
        end = start + t  # exclusive
        if persons is not None:
            while end < n and len(set(persons[start:end])) < t:
                end += 1
        if start < t or n - end < t or any(start < b and a < end for a, b in taken):
            return None
        if persons is not None:
            window = set(persons[start:end])
            below, above = set(persons[:start]) - window, set(persons[end:]) - window
            if len(window) < t or len(below) < t or len(above) < t or window & seen:
                return None
            seen |= window
        taken.append((start, end))
    return taken


def _cell_label(cells: pl.DataFrame, dims: Sequence[str]) -> pl.Series:
    if not dims:
        return pl.Series(["(total)"] * cells.height)
    return cells.select(
        pl.concat_str([pl.lit(f"{d}=") + pl.col(d).cast(pl.String).fill_null("null") for d in dims], separator=", ")
    ).to_series()


# --- primary rules ---------------------------------------------------------------------------------------
def primary_masks(cells: pl.DataFrame, request: ReleaseRequest, rules: SdcRules) -> dict[str, pl.Expr]:
    """Per rule (``kansrijk.gate.rules``, one rule per file), an expression that is true for cells the rule
    withholds. A table kind no rule applies to is refused (``NoRules``)."""
    missing = {r.name: [c for c in r.needs if c not in cells.columns] for r in rules_for(request.kind)}
    if any(missing.values()):  # a rule must never be skipped because its statistic was not computed
        raise TypeError(f"cell statistics missing for {request.kind}: {missing}")
    return {r.name: r.mask(rules) for r in rules_for(request.kind)}


# --- secondary suppression -------------------------------------------------------------------------------
def _line_pass(values: np.ndarray, supp: np.ndarray) -> bool:
    """One pass of the per-line rule: every line (along every axis longer than 1) with exactly one suppressed
    cell gets its smallest non-suppressed cell suppressed too (non-zero cells preferred). Returns changed?"""
    changed = False
    cost = np.where(supp, np.inf, np.where(values > 0, values.astype(np.float64), 1e18))
    for axis in range(values.ndim):
        if values.shape[axis] < 2:
            continue
        lone = supp.sum(axis=axis) == 1
        if not lone.any():
            continue
        pick = np.expand_dims(cost.argmin(axis=axis), axis)
        best = np.take_along_axis(cost, pick, axis=axis)
        ok = np.expand_dims(lone, axis) & np.isfinite(best)
        if not ok.any():
            continue
        add = np.zeros_like(supp)
        np.put_along_axis(add, pick, ok, axis=axis)
        add &= ~supp
        if add.any():
            supp |= add
            cost[add] = np.inf
            changed = True
    return changed


def _constraint_matrix(shape: tuple[int, ...], cols: np.ndarray) -> np.ndarray:
    """Rows: every line sum (along every axis longer than 1), restricted to the suppressed cells ``cols``."""
    rows = []
    coords = np.array(np.unravel_index(cols, shape))  # (ndim, s)
    for axis, size in enumerate(shape):
        if size < 2:
            continue
        others = np.delete(coords, axis, axis=0)
        if others.size == 0:
            line_id = np.zeros(cols.size, dtype=np.int64)
        else:
            line_id = np.ravel_multi_index(tuple(others), tuple(np.delete(np.array(shape), axis)))
        uniq, inv = np.unique(line_id, return_inverse=True)
        block = np.zeros((uniq.size, cols.size))
        block[inv, np.arange(cols.size)] = 1.0
        rows.append(block)
    return np.vstack(rows) if rows else np.zeros((0, cols.size))


def determined_cells(shape: tuple[int, ...], supp: np.ndarray) -> np.ndarray:
    """Flat indices of suppressed cells whose value follows exactly from the public line sums and the
    released cells: e_i lies in the row space of the constraints (its null-space row is zero)."""
    cols = np.flatnonzero(supp)
    if cols.size == 0:
        return cols
    a = _constraint_matrix(shape, cols)
    if a.shape[0] == 0:
        return np.array([], dtype=np.int64)
    null = scipy.linalg.null_space(a)
    if null.size == 0:
        return cols
    determined = np.linalg.norm(null, axis=1) < 1e-9
    return cols[determined]


def cell_bounds(values: np.ndarray, supp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What an attacker learns of every withheld cell: ``(flat indices, lowest, highest)`` value consistent with
    the released cells, every public line sum and non-negativity (two linear programs per cell, HiGHS).

    The highest value is computed first; the lowest only when the cell could still be pinned."""
    cols = np.flatnonzero(supp)
    low = np.zeros(cols.size)
    high = np.full(cols.size, np.inf)
    a = _constraint_matrix(values.shape, cols)
    if cols.size == 0 or a.shape[0] == 0:
        return cols, low, high
    x = values.ravel()[cols].astype(np.float64)
    b = a @ x
    for i in range(cols.size):
        c = np.zeros(cols.size)
        c[i] = -1.0
        hi = linprog(c, A_eq=a, b_eq=b, bounds=(0, None), method="highs")
        high[i] = -hi.fun if hi.status == 0 else x[i]
        if high[i] - x[i] >= 1:
            low[i] = 0.0  # not pinned whatever the lower bound: skip the second program
            continue
        c[i] = 1.0
        lo = linprog(c, A_eq=a, b_eq=b, bounds=(0, None), method="highs")
        low[i] = lo.fun if lo.status == 0 else x[i]
    return cols, low, high


def exposed_cells(values: np.ndarray, supp: np.ndarray) -> np.ndarray:
    """Flat indices of withheld cells an attacker can pin to a single whole number (see ``cell_bounds``).

    Patterns with more than ``LP_AUDIT_MAX_SUPPRESSED`` withheld cells get the linear-algebra check only."""
    if int(supp.sum()) > LP_AUDIT_MAX_SUPPRESSED:
        return determined_cells(values.shape, supp)
    det = determined_cells(values.shape, supp)
    if det.size:
        return det
    cols, low, high = cell_bounds(values, supp)
    pinned = np.floor(high + 1e-7) - np.ceil(low - 1e-7) < 1
    return cols[pinned]


def secondary_suppression(values: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Extend ``primary`` so that no withheld cell can be pinned down from the released cells, the line sums
    (all margins public) and non-negativity.

    Returns the full mask (primary | secondary). Greedy: the per-line rule until stable, then the attacker's
    linear program (``exposed_cells``); any exposed cell gets the smallest non-zero free cell in one of its lines
    withheld too (a zero cannot hide anything: it is already at its lower bound), and the audit runs again.
    """
    supp = primary.copy()
    if not supp.any():
        return supp
    for _ in range(supp.size + 1):
        while _line_pass(values, supp):
            pass
        if int(supp.sum()) > EXACT_CHECK_MAX_SUPPRESSED:
            return supp
        exposed = exposed_cells(values, supp)
        if exposed.size == 0:
            return supp
        if _protect_one(values, supp, int(exposed[0])) is False:
            supp[:] = True  # nothing left to protect with: withhold the whole table
            return supp
    return supp


def _protect_one(values: np.ndarray, supp: np.ndarray, flat: int) -> bool:
    coord = np.unravel_index(flat, values.shape)
    best: tuple[float, int] | None = None
    for axis, size in enumerate(values.shape):
        if size < 2:
            continue
        idx = list(coord)
        for j in range(size):
            idx[axis] = j
            f = int(np.ravel_multi_index(tuple(idx), values.shape))
            if supp.flat[f]:
                continue
            v = float(values.flat[f])
            c = v if v > 0 else 1e18
            if best is None or c < best[0]:
                best = (c, f)
    if best is None:
        return False
    supp.flat[best[1]] = True
    return True


# --- the table check ------------------------------------------------------------------------------------
def check_table(request: ReleaseRequest, rules: SdcRules) -> TableCheck:
    """Compute and check a tabular request: primary rules, then secondary suppression over the margins."""
    if isinstance(request, Extremes):
        raise TypeError("extremes are checked by check_model_output")
    cells, dims, shape = compute_cells(request, rules)
    outcomes: list[RuleOutcome] = []
    labels = _cell_label(cells, dims)
    if isinstance(request, MeanTable) and int(cells["negatives"].fill_null(0).sum()) > 0:
        outcomes.append(
            RuleOutcome(
                "negative_values",
                "refuse",
                f"{request.value!r} has negative values; (n,k) and p% dominance are undefined, so the release is "
                f"refused (policy sdc.negative_values = 'refuse')",
            )
        )
    masks = primary_masks(cells, request, rules)
    flags = cells.select([expr.fill_null(False).alias(name) for name, expr in masks.items()])
    primary = np.zeros(cells.height, dtype=bool)
    by_rule = pl.Series("suppressed_by", [None] * cells.height, dtype=pl.String)
    for name in masks:
        hit = flags[name].to_numpy()
        new = hit & ~primary
        if new.any():
            by_rule = by_rule.scatter(np.flatnonzero(new), name)
        primary |= hit
        if hit.any():
            outcomes.append(
                RuleOutcome(
                    name,
                    "suppress",
                    _reason(name, int(hit.sum()), rules),
                    tuple(labels.filter(pl.Series(hit)).to_list()[:50]),
                )
            )
        else:
            outcomes.append(RuleOutcome(name, "pass", f"no cell fails {name}"))
    if not isinstance(request, QuantileRequest) and shape:
        values = cells["n"].to_numpy().reshape(shape)
        full = secondary_suppression(values, primary.reshape(shape)).ravel()
    else:
        full = primary.copy()
    secondary = full & ~primary
    if secondary.any():
        by_rule = by_rule.scatter(np.flatnonzero(secondary), "secondary_suppression")
        outcomes.append(
            RuleOutcome(
                "secondary_suppression",
                "suppress",
                f"{int(secondary.sum())} further cell(s) withheld so suppressed cells cannot be recomputed from "
                f"the margins",
                tuple(labels.filter(pl.Series(secondary)).to_list()[:50]),
            )
        )
    elif primary.any():
        outcomes.append(RuleOutcome("secondary_suppression", "pass", "suppressed cells cannot be recomputed"))
    share = float(full.mean()) if full.size else 0.0
    if full.size and (full.all() or share > rules.max_suppressed_share):
        outcomes.append(
            RuleOutcome(
                "max_suppressed_share",
                "refuse",
                f"{int(full.sum())} of {full.size} cells would be suppressed (more than "
                f"{rules.max_suppressed_share:.0%}); coarsen the categories or widen the population",
            )
        )
    cells = cells.with_columns(pl.Series("suppressed", full), by_rule)
    stats = tuple(c for c in cells.columns if c not in (*dims, _IDX, "suppressed", "suppressed_by"))
    return TableCheck(cells=cells, dims=tuple(dims), shape=shape, outcomes=tuple(outcomes), statistics=stats)


def _reason(rule: str, count: int, rules: SdcRules) -> str:
    by_name = {r.name: r for r in TABLE_RULES}
    return by_name[rule].reason(count, rules) if rule in by_name else f"{count} cell(s) fail {rule}"


# --- model outputs and order statistics -----------------------------------------------------------------
def check_model_output(request: ReleaseRequest, rules: SdcRules) -> tuple[RuleOutcome, ...]:
    """Rules for outputs that are not tables: extremes, metrics, importances, trees, tests, regressions."""
    t = rules.min_persons_per_cell
    out: list[RuleOutcome] = []

    def n_rule(n: int, what: str) -> None:
        if n < t:
            out.append(RuleOutcome("threshold", "refuse", f"{what} rests on {n} persons, fewer than {t}"))
        else:
            out.append(RuleOutcome("threshold", "pass", f"{what} rests on {n} persons"))

    def dof_rule(dof: float | None) -> None:
        if dof is None:
            return
        if dof < rules.min_dof:
            out.append(
                RuleOutcome(
                    "dof",
                    "refuse",
                    f"residual degrees of freedom {dof:g} < {rules.min_dof}: the fit "
                    f"nearly reproduces individual values",
                )
            )
        else:
            out.append(RuleOutcome("dof", "pass", f"residual degrees of freedom {dof:g} >= {rules.min_dof}"))

    if isinstance(request, Extremes):
        out.append(
            RuleOutcome(
                "extremes",
                "refuse",
                "raw minimum and maximum are never released (each is one person's "
                "value); request quantiles such as 0.05 and 0.95 instead",
            )
        )
    elif isinstance(request, QuantileRequest) and any(q in (0.0, 1.0) for q in request.quantiles):
        out.append(RuleOutcome("extremes", "refuse", "quantiles 0 and 1 are the minimum and maximum"))
    elif isinstance(request, ModelMetrics):
        n_rule(request.n, "the metrics")
        if request.n_positive is not None:
            small = min(request.n_positive, request.n - request.n_positive)
            if small < t:
                out.append(
                    RuleOutcome(
                        "class_disclosure",
                        "refuse",
                        f"one outcome class has {small} persons (< {t}); metrics could reveal individual outcomes",
                    )
                )
            else:
                out.append(RuleOutcome("class_disclosure", "pass", f"both outcome classes have >= {t} persons"))
        dof_rule(request.dof)
    elif isinstance(request, FeatureImportances):
        n_rule(request.n, "the importances")
    elif isinstance(request, TestResult | RegressionResult):
        n_rule(request.n, "the result")
        dof_rule(request.dof)
    elif isinstance(request, TreeStructure):
        out.extend(check_tree(request, rules))
    return tuple(out)


def check_tree(request: TreeStructure, rules: SdcRules) -> list[RuleOutcome]:
    """SACRO-ML structural rules on a fitted tree: training rule, leaf size, small class counts, class
    probability zero, and the unnecessary-risk hyperparameter combination."""
    tr = rules.tree
    out: list[RuleOutcome] = []
    if request.min_samples_leaf < tr.min_samples_leaf_training:
        out.append(
            RuleOutcome(
                "tree_training",
                "refuse",
                f"trained with min_samples_leaf={request.min_samples_leaf} < {tr.min_samples_leaf_training}",
            )
        )
    else:
        out.append(RuleOutcome("tree_training", "pass", f"min_samples_leaf={request.min_samples_leaf}"))
    deep = request.max_depth is None or request.max_depth > tr.risky_max_depth
    if deep and request.min_samples_leaf <= 7 and request.min_samples_split <= 15:
        out.append(
            RuleOutcome(
                "tree_hyperparameters",
                "refuse",
                f"max_depth={request.max_depth} > {tr.risky_max_depth} with min_samples_leaf <= 7 and "
                f"min_samples_split <= 15 is an unnecessary risk (SACRO-ML)",
            )
        )
    leaves = request.leaves
    counts = np.array([leaf.class_counts for leaf in leaves], dtype=np.int64).reshape(len(leaves), -1)
    ids = [leaf.node_id for leaf in leaves]
    size = counts.sum(axis=1) if counts.size else np.zeros(0, dtype=np.int64)
    small = size < tr.min_leaf_persons
    if small.any():
        out.append(
            RuleOutcome(
                "tree_leaf_size",
                "refuse",
                f"{int(small.sum())} leaf/leaves with fewer than {tr.min_leaf_persons} persons",
                tuple(f"node {ids[i]}" for i in np.flatnonzero(small)[:50]),
            )
        )
    else:
        out.append(RuleOutcome("tree_leaf_size", "pass", f"every leaf has >= {tr.min_leaf_persons} persons"))
    small_class = ((counts > 0) & (counts < tr.min_class_count)).any(axis=1) if counts.size else np.zeros(0, bool)
    zero_class = (counts == 0).any(axis=1) if counts.size else np.zeros(0, bool)
    for rule, mask, setting, text in (
        ("tree_small_class_count", small_class, tr.small_class_count, f"a class count 0 < n < {tr.min_class_count}"),
        ("tree_zero_class_probability", zero_class, tr.zero_class_probability, "a class with probability 0"),
    ):
        if mask.any():
            verdict: Verdict = "refuse" if setting == "refuse" else "suppress"
            action = "refused" if verdict == "refuse" else "class counts withheld for every node"
            out.append(
                RuleOutcome(
                    rule,
                    verdict,
                    f"{int(mask.sum())} leaf/leaves with {text} (class disclosure); {action}",
                    tuple(f"node {ids[i]}" for i in np.flatnonzero(mask)[:50]),
                )
            )
        else:
            out.append(RuleOutcome(rule, "pass", f"no leaf with {text}"))
    return out


def grid_cells(dims: Sequence[str], cells: pl.DataFrame) -> dict[tuple[Any, ...], int]:
    """Cell key -> person count (used by the differencing check)."""
    if not dims:
        return {(): int(cells["n"][0])}
    keys = cells.select(dims).rows()
    return dict(zip(keys, cells["n"].to_list(), strict=True))


def marginalise(counts: Mapping[tuple[Any, ...], int], dims: Sequence[str], onto: Sequence[str]) -> dict[tuple, int]:
    """Sum a cell mapping over the dims not in ``onto`` (keys ordered as ``onto``)."""
    pos = [list(dims).index(d) for d in onto]
    out: dict[tuple, int] = {}
    for key, n in counts.items():
        k = tuple(key[p] for p in pos)
        out[k] = out.get(k, 0) + n
    return out


__all__ = [
    "RuleOutcome",
    "TableCheck",
    "Verdict",
    "build_grid",
    "check_model_output",
    "check_table",
    "check_tree",
    "compute_cells",
    "determined_cells",
    "secondary_suppression",
    "worst",
]
