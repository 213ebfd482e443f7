"""Differential-privacy measurements through OpenDP's polars ``Context`` (privacy unit: one person).

Every gate release that uses DP is one OpenDP compositor with exactly the epsilon the ledger debits, and one
batched query: a grouped table of any size (1,000 cells or more) is a single ``group_by(...).agg(...)`` over
public keys, so each person affects one cell (parallel composition) and the whole table costs one epsilon.

What this module guarantees:

- the epsilon handed to OpenDP is the largest float not above the exact ledger amount;
- group keys are always public (declared in the request, or the schema's categories): OpenDP never releases
  keys derived from the data;
- the noisy values are post-processed (rounded, clamped at 0 or into the public bounds, quantiles put in order),
  which cannot weaken the guarantee; each value is returned with its noise scale and the 95% accuracy OpenDP reports.

Nothing here reads or writes the budget: the gate has debited it before any function here is called.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import opendp.prelude as dp
import polars as pl

from kansrijk import schema
from kansrijk.gate.budget import float_at_most
from kansrijk.gate.requests import CountTable, Histogram, MeanTable, QuantileRequest, ReleaseRequest, SumTable
from kansrijk.gate.sdc import BIN, histogram_frame, histogram_keys

dp.enable_features("contrib")

ALPHA = 0.05  # accuracy reported at 95%


class DpNotPossible(Exception):
    """The request lacks public information DP needs (keys, bounds); the gate turns this into a refusal."""


@dataclass(frozen=True, eq=False)
class DpResult:
    """Noisy values per cell (``by`` columns + statistic columns) and, per statistic, the noise description."""

    table: pl.DataFrame
    noise: Mapping[str, Mapping[str, Any]]
    epsilon: Fraction


def public_keys(request: ReleaseRequest, dims: Sequence[str]) -> pl.DataFrame:
    """The cross product of the public categories of ``dims`` (from the request, else the schema)."""
    declared = dict(getattr(request, "keys", None) or {})
    if isinstance(request, Histogram):
        declared.update(histogram_keys(request))
    data: pl.DataFrame = request.data  # type: ignore[attr-defined]
    frame: pl.DataFrame | None = None
    for col in dims:
        values = declared.get(col)
        if values is None:
            try:
                var = schema.variable(col)
            except (KeyError, ValueError, LookupError):
                var = None
            if var is not None and var.categories:
                values = var.categories
            elif var is not None and var.kind == schema.Kind.BOOL:
                values = (False, True)
        if values is None:
            raise DpNotPossible(
                f"grouping variable {col!r} has no public list of categories, and DP must not take categories "
                f"from the data: group by a variable with public categories (or bands), or ask under a policy "
                f"that checks this kind by output checking"
            )
        dtype = data.schema[col] if col in data.columns else pl.String
        part = pl.DataFrame({col: pl.Series(col, list(values), dtype=dtype)})
        frame = part if frame is None else frame.join(part, how="cross")
    return frame if frame is not None else pl.DataFrame()


def public_bounds(request: MeanTable | QuantileRequest) -> tuple[float, float]:
    if request.bounds is not None:
        return float(request.bounds[0]), float(request.bounds[1])
    try:
        var = schema.variable(request.value)
    except (KeyError, ValueError, LookupError):
        var = None
    if var is not None and var.minimum is not None and var.maximum is not None:
        return float(var.minimum), float(var.maximum)
    raise DpNotPossible(
        f"value {request.value!r} has no public bounds; pass bounds=(lower, upper) in the request (DP clamps "
        f"every value into them; they must not come from the data)"
    )


def _context(data: pl.DataFrame, epsilon: Fraction, max_persons: int, contributions: int = 1) -> dp.Context:
    """One compositor for one release. ``contributions`` is the most rows one person has in ``data`` (one per
    reference year, checked by the gate's data layer): the privacy unit stays one person."""
    return dp.Context.compositor(
        data=data.lazy(),
        privacy_unit=dp.unit_of(contributions=contributions),
        privacy_loss=dp.loss_of(epsilon=float_at_most(epsilon)),
        split_evenly_over=1,
        margins=[dp.polars.Margin(by=[], max_length=max_persons * contributions)],
    )


def _resolve(query: Any, epsilon: Fraction) -> dp.Measurement:
    """The query's measurement at exactly the smallest noise whose privacy map is within ``epsilon``.

    For pure DP (Laplace and exponential mechanisms) the loss scales as 1/scale, so one probe at scale 1 gives
    the scale directly; the result is checked with OpenDP's own privacy map, nudged up if float rounding needs
    it, and OpenDP's binary search is the fallback. Much faster than searching for every release.
    """
    target = float_at_most(epsilon)
    try:
        plan = object.__getattribute__(query, "polars_plan")
        inner = object.__getattribute__(query, "_query")
        domain, metric = inner._chain

        def make(scale: float) -> dp.Measurement:
            return dp.m.make_private_lazyframe(
                input_domain=domain,
                input_metric=metric,
                output_measure=inner._output_measure,
                lazyframe=plan,
                global_scale=scale,
            )

        probe = float(make(1.0).map(inner._d_in))
        if probe > 0:
            scale = probe / target
            for _ in range(64):
                m = make(scale)
                if float(m.map(inner._d_in)) <= target:
                    return m
                scale = math.nextafter(scale, math.inf) * (1 + 1e-12)
    except (AttributeError, dp.OpenDPException, TypeError, ValueError):
        pass
    return query.resolve()


def _run(query: Any, data: pl.DataFrame, epsilon: Fraction) -> tuple[pl.DataFrame, dict[str, dict[str, Any]]]:
    m = _resolve(query, epsilon)
    if float(m.map(object.__getattribute__(query, "_query")._d_in)) > float_at_most(epsilon):
        raise RuntimeError("OpenDP measurement exceeds the debited epsilon")  # never release then
    noise = _noise(dp.summarize_polars_measurement(m, ALPHA))
    return m(data.lazy()).collect(), noise


def _noise(summary: pl.DataFrame) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for row in summary.iter_rows(named=True):
        entry = {
            "aggregate": row.get("aggregate"),
            "mechanism": row.get("distribution"),
            "scale": row.get("scale"),
            "accuracy_95": row.get("accuracy"),
        }
        out.setdefault(str(row["column"]), {})[str(row.get("aggregate"))] = entry
    return out


def measure(
    request: ReleaseRequest, epsilon: Fraction, *, max_persons: int, rounding: int = 1, contributions: int = 1
) -> DpResult:
    """Answer ``request`` with OpenDP spending exactly ``epsilon`` (already debited by the caller); one person
    contributes at most ``contributions`` rows (the gate passes the number of pooled reference years)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        if isinstance(request, CountTable):
            keys = public_keys(request, request.by)
            return _count(request.data, request.by, keys, epsilon, max_persons, rounding, contributions)
        if isinstance(request, Histogram):
            dims = (*request.by, BIN)
            frame = histogram_frame(request).filter(pl.col(BIN).is_not_null())
            keys = public_keys(request, dims)
            return _count(frame.select(dims), dims, keys, epsilon, max_persons, rounding, contributions)
        if isinstance(request, MeanTable):  # and SumTable
            return _sum_or_mean(request, epsilon, max_persons, contributions)
        if isinstance(request, QuantileRequest):
            return _quantile(request, epsilon, max_persons, contributions)
    raise DpNotPossible(f"{request.kind} cannot be answered with DP by the gate")


def _count(
    data: pl.DataFrame,
    by: Sequence[str],
    keys: pl.DataFrame,
    epsilon: Fraction,
    max_persons: int,
    rounding: int,
    contributions: int = 1,
) -> DpResult:
    ctx = _context(data.select(list(by)), epsilon, max_persons, contributions)
    query = ctx.query().group_by(list(by)).agg(dp.len().alias("n")).with_keys(keys)
    table, noise = _run(query, data.select(list(by)), epsilon)
    table = keys.join(table, on=list(by), how="left", nulls_equal=True).with_columns(
        _round_clamp(pl.col("n"), rounding).alias("n")
    )
    return DpResult(table=table, noise=noise, epsilon=epsilon)


def _round_clamp(expr: pl.Expr, rounding: int) -> pl.Expr:
    x = expr.cast(pl.Float64).fill_null(0.0)
    if rounding > 1:
        x = (x / rounding).round(0) * rounding
    return x.round(0).clip(lower_bound=0).cast(pl.Int64)


def _sum_or_mean(request: MeanTable, epsilon: Fraction, max_persons: int, contributions: int = 1) -> DpResult:
    lo, hi = public_bounds(request)
    by = list(request.by)
    value = pl.col(request.value).cast(pl.Float64).fill_null(lo).clip(lo, hi)
    data = request.data.select([*by, value.alias(request.value)])
    ctx = _context(data, epsilon, max_persons, contributions)
    agg = (
        pl.col(request.value).dp.sum((lo, hi)).alias("sum")
        if isinstance(request, SumTable)
        else pl.col(request.value).dp.mean((lo, hi)).alias("mean")
    )
    query = ctx.query()
    if by:
        keys = public_keys(request, by)
        q = query.group_by(by).agg(agg).with_keys(keys)
    else:
        keys = pl.DataFrame()
        q = query.select(agg)
    table, noise = _run(q, data, epsilon)
    if by:
        table = keys.join(table, on=by, how="left", nulls_equal=True)
    if isinstance(request, SumTable):
        lower = 0.0 if lo >= 0 else None
        table = table.with_columns(pl.col("sum").clip(lower_bound=lower) if lower is not None else pl.col("sum"))
    else:
        table = table.with_columns(pl.col("mean").clip(lo, hi))
    return DpResult(table=table, noise=noise, epsilon=epsilon)


def _quantile(request: QuantileRequest, epsilon: Fraction, max_persons: int, contributions: int = 1) -> DpResult:
    lo, hi = public_bounds(request)
    candidates = list(request.candidates) if request.candidates else list(np.linspace(lo, hi, 201))
    by = list(request.by)
    value = pl.col(request.value).cast(pl.Float64).fill_null(lo).clip(lo, hi)
    data = request.data.select([*by, value.alias(request.value)])
    ctx = _context(data, epsilon, max_persons, contributions)
    aggs = [pl.col(request.value).dp.quantile(q, candidates).alias(f"q{q:g}") for q in request.quantiles]
    query = ctx.query()
    if by:
        keys = public_keys(request, by)
        q = query.group_by(by).agg(*aggs).with_keys(keys)
    else:
        keys = pl.DataFrame()
        q = query.select(*aggs)
    table, noise = _run(q, data, epsilon)
    if by:
        table = keys.join(table, on=by, how="left", nulls_equal=True)
    return DpResult(table=monotone_quantiles(table, request.quantiles), noise=noise, epsilon=epsilon)


def monotone_quantiles(table: pl.DataFrame, levels: Sequence[float]) -> pl.DataFrame:
    """Each row's noisy quantiles in increasing order of their levels (post-processing: no privacy cost).

    OpenDP answers every level on its own, so noise can put a row's 0.25-quantile above its median. Sorting the
    row's estimates (the *rearrangement* of Chernozhukov, Fernandez-Val and Galichon, Econometrica 2010) makes
    them monotone and never moves them further from a monotone truth; every estimate stays a public candidate."""
    names = [f"q{q:g}" for q in sorted(set(levels))]
    if len(names) < 2 or table.height == 0:
        return table
    values = table.select(names).to_numpy().astype(np.float64)
    missing = np.isnan(values).any(axis=1)  # a group without an answer keeps its nulls
    values[~missing] = np.sort(values[~missing], axis=1)
    return table.with_columns(
        pl.Series(name, values[:, i]).fill_nan(None).cast(table.schema[name]) for i, name in enumerate(names)
    )
