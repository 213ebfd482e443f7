"""From a spec to the numbers: the gate selects the population from its own data and computes every value.

``materialise(spec, data, policy)`` returns a ``Materialised``: the internal, fully computed release (one of
``kansrijk.gate.requests``' types, whose data and counts come only from here), the persons it describes (for
differencing), a person's largest number of rows in it (DP's contribution bound) and any verdicts the
computation itself reached (score groups, importance holders, test bins). A spec that names an unknown variable,
a value outside a variable's public domain, a parameter outside the policy's grids, or scores that do not cover
the population exactly raises ``RequestInvalid``: nothing is released, recorded or spent.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from kansrijk.gate.data import PERSON, YEAR, Domain, GateData, domain_of
from kansrijk.gate.requests import (
    CountTable,
    DpModelRequest,
    Extremes,
    FeatureImportances,
    Histogram,
    MeanTable,
    ModelMetrics,
    QuantileRequest,
    RegressionResult,
    ReleaseRequest,
    RequestInvalid,
    SumTable,
    TestResult,
    TreeNode,
    TreeStructure,
)
from kansrijk.gate.sdc import RuleOutcome
from kansrijk.gate.specs import (
    ComparisonSpec,
    Condition,
    CountSpec,
    DpModelSpec,
    ExtremesSpec,
    HistogramSpec,
    ImportanceSpec,
    MeanSpec,
    MetricsSpec,
    QuantileSpec,
    RegressionSpec,
    ReleaseSpec,
    ScoreSet,
    SumSpec,
    TestSpec,
    TreeSpec,
)
from kansrijk.policy.release import ReleasePolicy
from kansrijk.stats.association import AssociationResult, associate
from kansrijk.stats.compare import paired_bootstrap, unpaired_bootstrap
from kansrijk.stats.metrics import score_metrics


@dataclass(frozen=True, eq=False)
class Materialised:
    """A spec computed by the gate: the internal release, its persons, and verdicts of the computation."""

    request: ReleaseRequest
    persons: pl.DataFrame  # the rows it describes: PERSON and YEAR of each (differencing compares person-years)
    contributions: int
    verdicts: tuple[RuleOutcome, ...] = ()
    withheld: tuple[str, ...] = field(default=())  # keys of a model output withheld by a computation verdict
    nodes: tuple[tuple[int, pl.DataFrame], ...] = ()  # a tree: the rows of every node but the root (differencing)
    # the release-history audit: each row's outcome (trees, metrics) and each row's leaf (trees)
    outcome: np.ndarray | None = None
    leaf_of: np.ndarray | None = None


def _labels(spec: ReleaseSpec) -> dict[str, str]:
    """What every computed release carries from its spec: its name, description and population in words."""
    return {"name": spec.name, "description": spec.description, "population": spec.population_label()}


def _invalid(spec: ReleaseSpec, message: str, hint: str = "") -> RequestInvalid:
    return RequestInvalid(f"{spec.kind} spec {spec.name!r}: {message}", hint=hint or None)


def _ids(frame: pl.DataFrame) -> np.ndarray:
    """Each row's person as a 64-bit id (the first 8 bytes of the pseudonym), to count distinct persons."""
    return frame.get_column(PERSON).bin.head(8).bin.reinterpret(dtype=pl.UInt64, endianness="big").to_numpy()


def _rows(frame: pl.DataFrame) -> pl.DataFrame:
    """The person and reference year of every row (what differencing compares)."""
    return frame.select(PERSON, YEAR)


def _persons_of(ids: np.ndarray) -> int:
    return int(np.unique(ids).size)


# --- variables and the population ---------------------------------------------------------------------------
def _domain(spec: ReleaseSpec, var: str) -> Domain:
    d = domain_of(spec.table, var)
    if d is None:
        raise _invalid(
            spec,
            f"{var!r} is not a variable a release may name in the {spec.table} data",
            "name a canonical variable, an outcome, age_years or <variable>_last_year",
        )
    return d


def _check_value(spec: ReleaseSpec, d: Domain, value: Any, where: str) -> Any:
    if d.kind == "bool":
        if not isinstance(value, bool):
            raise _invalid(spec, f"{where}: {d.name!r} is true/false, got {value!r}")
    elif d.kind in ("category", "code"):
        if not isinstance(value, str):
            raise _invalid(spec, f"{where}: {d.name!r} takes text values, got {value!r}")
        if d.categories is not None and value not in d.categories:
            raise _invalid(spec, f"{where}: {value!r} is not a public category of {d.name!r} {list(d.categories)}")
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(spec, f"{where}: {d.name!r} is numeric, got {value!r}")
    return value


def _is_in(d: Domain, col: pl.Expr, values: Sequence[Any]) -> pl.Expr:
    """Membership in validated values (numbers compared as floats: a list may mix 3 and 4.5)."""
    if d.numeric:
        return col.cast(pl.Float64).is_in(pl.Series(values, dtype=pl.Float64).implode())
    return col.is_in(pl.Series(values, dtype=pl.Boolean if d.kind == "bool" else pl.String).implode())


def condition_expr(spec: ReleaseSpec, cond: Condition) -> pl.Expr:
    """The polars filter of one validated condition (a missing value satisfies only ``is_null``)."""
    d = _domain(spec, cond.var)
    col = pl.col(cond.var)
    where = f"population condition {cond.describe()!r}"
    if cond.op == "is_null":
        return col.is_null()
    if cond.op == "not_null":
        return col.is_not_null()
    if cond.op in ("in", "not_in"):
        values = [_check_value(spec, d, v, where) for v in cond.values]
        inside = _is_in(d, col, values)
        return (inside if cond.op == "in" else ~inside) & col.is_not_null()
    value = _check_value(spec, d, cond.value, where)
    if cond.op in ("<", "<=", ">", ">=") and not d.numeric:
        raise _invalid(spec, f"{where}: {cond.op!r} needs a numeric variable; {d.name!r} is {d.kind}")
    ops = {
        "==": col == value,
        "!=": col != value,
        "<": col < value,
        "<=": col <= value,
        ">": col > value,
        ">=": col >= value,
    }
    return ops[cond.op].fill_null(False)


def population(spec: ReleaseSpec, data: GateData, extra: Sequence[str] = ()) -> pl.DataFrame:
    """The spec's population: rows of its years that satisfy every condition, with the variables it reads."""
    for var in (*spec.variables(), *extra):
        _domain(spec, var)
    frame = data.frame(spec.table, spec.years, [*dict.fromkeys((*spec.variables(), *extra))])
    if spec.population:
        frame = frame.filter(pl.all_horizontal([condition_expr(spec, c) for c in spec.population]))
    return frame


# --- grouping -----------------------------------------------------------------------------------------------
def band_labels(edges: Sequence[float]) -> tuple[str, ...]:
    """Public labels of the open-ended bands of inner ``edges`` (no band edge is the data's minimum or maximum)."""
    e = [int(x) if float(x).is_integer() else x for x in edges]
    return (f"<{e[0]}", *(f"[{a},{b})" for a, b in itertools.pairwise(e)), f">={e[-1]}")


def band_expr(var: str, edges: Sequence[float]) -> pl.Expr:
    labels = band_labels(edges)
    return pl.col(var).cast(pl.Float64).cut(list(edges), labels=list(labels), left_closed=True).cast(pl.String)


def _grouping(
    spec: ReleaseSpec, frame: pl.DataFrame, by: Sequence[str], policy: ReleasePolicy
) -> tuple[pl.DataFrame, dict[str, tuple[Any, ...]]]:
    """Rows with a known value of every ``by`` variable, numeric ones in the policy's bands; and the public keys
    of each (none for codes, whose categories are not public: output checking still sees every group present)."""
    keys: dict[str, tuple[Any, ...]] = {}
    exprs = []
    for var in by:
        d = _domain(spec, var)
        if d.categories is not None:
            keys[var] = d.categories
        elif d.numeric:
            edges = policy.grids.bands.get(var)
            if edges is None:
                raise _invalid(
                    spec,
                    f"{var!r} is numeric with no public bands: it can group a table only in the bands of the "
                    f"release policy's grids.bands.{var}",
                    "ask the privacy officer to declare bands for it, or group by a categorical variable",
                )
            exprs.append(band_expr(var, edges).alias(var))
            keys[var] = band_labels(edges)
    frame = frame.filter(pl.all_horizontal([pl.col(v).is_not_null() for v in by])) if by else frame
    return (frame.with_columns(exprs) if exprs else frame), keys


def _value(
    spec: ReleaseSpec, var: str, policy: ReleasePolicy, *, clip: bool
) -> tuple[pl.Expr, tuple[float, float] | None]:
    """The value in its one declared form (clipped to ``grids.value_clip`` where declared) and its public bounds."""
    d = _domain(spec, var)
    if not (d.numeric or d.kind == "bool"):
        raise _invalid(spec, f"value {var!r} is {d.kind}: only numeric or true/false variables can be aggregated")
    expr = pl.col(var).cast(pl.Float64)
    bounds = d.bounds if d.kind != "bool" else (0.0, 1.0)
    declared = policy.grids.value_clip.get(var)
    if declared is not None:
        bounds = (float(declared[0]), float(declared[1]))
        if clip:
            expr = expr.clip(*bounds)
    return expr.alias(var), bounds


# --- tables -------------------------------------------------------------------------------------------------
def _table(spec: ReleaseSpec, data: GateData, policy: ReleasePolicy) -> Materialised:
    frame = population(spec, data)
    by = tuple(getattr(spec, "by", ()))
    common = _labels(spec)
    # pooled years: a person has a row per year, so the rules need the person key to count persons, not rows
    who = (PERSON,) if len(spec.years) > 1 else ()
    if isinstance(spec, CountSpec):
        frame, keys = _grouping(spec, frame, by, policy)
        request: ReleaseRequest = CountTable(data=frame.select(*by, *who), by=by, keys=keys or None, **common)
        return Materialised(request, _rows(frame), len(spec.years))
    value = spec.value  # type: ignore[attr-defined]
    if value in by:
        raise _invalid(spec, f"{value!r} is both the value and a grouping variable")
    frame = frame.filter(pl.col(value).is_not_null())
    frame, keys = _grouping(spec, frame, by, policy)
    if isinstance(spec, MeanSpec):  # and SumSpec
        expr, bounds = _value(spec, value, policy, clip=True)
        cls = SumTable if isinstance(spec, SumSpec) else MeanTable
        request = cls(
            data=frame.select(*by, expr, *who), value=value, by=by, keys=keys or None, bounds=bounds, **common
        )
    elif isinstance(spec, QuantileSpec):
        grid = policy.grids.quantile_levels
        outside = [q for q in spec.levels if q not in grid]
        if outside:
            raise _invalid(spec, f"levels {outside} are not in the release policy's grids.quantile_levels {list(grid)}")
        expr, bounds = _value(spec, value, policy, clip=False)
        request = QuantileRequest(
            data=frame.select(*by, expr, *who), value=value, quantiles=spec.levels, by=by, keys=keys or None,
            bounds=bounds, **common,
        )  # fmt: skip
    elif isinstance(spec, HistogramSpec):
        edges = policy.grids.histogram_edges.get(value)
        if edges is None:
            raise _invalid(spec, f"no public edges for {value!r}: the release policy's grids.histogram_edges.{value}")
        expr, _ = _value(spec, value, policy, clip=False)
        request = Histogram(
            data=frame.select(*by, expr, *who), value=value, edges=edges, by=by, keys=keys or None, **common
        )
    elif isinstance(spec, ExtremesSpec):
        expr, _ = _value(spec, value, policy, clip=False)
        request = Extremes(data=frame.select(*by, expr), value=value, by=by, **common)
    else:  # pragma: no cover - every table spec is handled above
        raise TypeError(type(spec).__name__)
    return Materialised(request, _rows(frame), len(spec.years))


# --- trees --------------------------------------------------------------------------------------------------
def _split_mask(spec: TreeSpec, node: Any, frame: pl.DataFrame) -> np.ndarray:
    d = _domain(spec, node.var)
    col = pl.col(node.var)
    if node.threshold is not None:
        if not (d.numeric or d.kind == "bool"):
            raise _invalid(
                spec, f"node {node.node_id}: a threshold split needs a numeric variable; {d.name!r} is {d.kind}"
            )
        # float32, as the tree was fitted: the same person goes the same way here as at fitting
        goes_left = col.cast(pl.Float32) <= node.threshold
    else:
        values = [_check_value(spec, d, v, f"node {node.node_id}") for v in node.categories]
        goes_left = _is_in(d, col, values)
    expr = pl.when(col.is_null()).then(pl.lit(node.missing_left)).otherwise(goes_left)
    return frame.select(expr).to_series().to_numpy().astype(bool)


def _tree(spec: TreeSpec, data: GateData, policy: ReleasePolicy) -> Materialised:
    outcome = _domain(spec, spec.outcome)
    if outcome.kind != "bool":
        raise _invalid(spec, f"outcome {spec.outcome!r} is not a true/false variable")
    frame = population(spec, data).filter(pl.col(spec.outcome).is_not_null())
    y = frame.get_column(spec.outcome).cast(pl.Int64).to_numpy()
    by_id = {n.node_id: n for n in spec.nodes}
    counts: dict[int, tuple[int, int]] = {}
    depth: dict[int, int] = {}
    leaf_rows: dict[int, np.ndarray] = {}
    node_rows: dict[int, np.ndarray] = {}
    stack: list[tuple[int, np.ndarray, int]] = [(0, np.arange(frame.height), 0)]
    while stack:
        node_id, rows, d = stack.pop()
        node = by_id[node_id]
        depth[node_id] = d
        node_rows[node_id] = rows
        pos = int(y[rows].sum())
        counts[node_id] = (int(rows.size) - pos, pos)
        if node.is_leaf:
            leaf_rows[node_id] = rows
        else:
            left = _split_mask(spec, node, frame)[rows]
            stack += [(node.left, rows[left], d + 1), (node.right, rows[~left], d + 1)]
    verdicts: tuple[RuleOutcome, ...] = ()
    if len(spec.years) > 1:  # pooled: the class counts are person-years; the leaf rules need persons too
        verdicts = (_leaf_persons(_ids(frame), y, leaf_rows, policy),)
    nodes = tuple(
        TreeNode(
            node_id=n.node_id,
            depth=depth[n.node_id],
            class_counts=counts[n.node_id],
            feature=n.var,
            threshold=n.threshold,
            left=n.left,
            right=n.right,
            categories=tuple(n.categories),
            missing_left=None if n.is_leaf else n.missing_left,
        )
        for n in sorted(spec.nodes, key=lambda n: n.node_id)
    )
    deepest = max(depth.values())
    if spec.max_depth is not None and deepest > spec.max_depth:
        raise _invalid(spec, f"the structure is {deepest} deep but the spec says max_depth {spec.max_depth}")
    request = TreeStructure(
        **_labels(spec),
        nodes=nodes,
        classes=("negative", "positive"),
        min_samples_leaf=spec.min_samples_leaf,
        max_depth=spec.max_depth,  # None: trained without a depth limit (the risky-hyperparameter rule sees it)
        min_samples_split=spec.min_samples_split,
        model=spec.model,
        outcome=spec.outcome,
    )
    persons = _rows(frame)
    nodes = tuple((node_id, persons[rows]) for node_id, rows in sorted(node_rows.items()) if node_id != 0)
    leaf_of = np.zeros(frame.height, dtype=np.int64)
    for node_id, rows in leaf_rows.items():
        leaf_of[rows] = node_id
    return Materialised(request, persons, len(spec.years), verdicts, nodes=nodes, outcome=y, leaf_of=leaf_of)


def _leaf_persons(
    ids: np.ndarray, y: np.ndarray, leaves: Mapping[int, np.ndarray], policy: ReleasePolicy
) -> RuleOutcome:
    """The leaf rules in distinct persons (a person pooled over years has a row per year in a leaf)."""
    tr = policy.sdc.tree
    small = []
    for node_id, rows in sorted(leaves.items()):
        classes = [_persons_of(ids[rows][y[rows] == c]) for c in (0, 1)]
        if _persons_of(ids[rows]) < tr.min_leaf_persons or any(0 < n < tr.min_class_count for n in classes):
            small.append(f"node {node_id}")
    if small:
        return RuleOutcome(
            "tree_leaf_persons",
            "refuse",
            f"{len(small)} leaf/leaves with fewer than {tr.min_leaf_persons} distinct persons, or a class held by "
            f"1 to {tr.min_class_count - 1} distinct persons (rows pooled over years)",
            tuple(small[:50]),
        )
    return RuleOutcome("tree_leaf_persons", "pass", "every leaf and class holds enough distinct persons")


# --- metrics from scores ------------------------------------------------------------------------------------
def _scored(
    spec: ReleaseSpec, outcome: str, scores: ScoreSet, data: GateData, which: str = "scores", year: int | None = None
) -> pl.DataFrame:
    """The population (persons with a known outcome; of ``year`` only, when given) joined with the scores:
    exactly one score per person-year, none outside."""
    if _domain(spec, outcome).kind != "bool":
        raise _invalid(spec, f"outcome {outcome!r} is not a true/false variable")
    frame = population(spec, data).filter(pl.col(outcome).is_not_null())
    if year is not None:
        frame = frame.filter(pl.col(YEAR) == year)
    s = scores.frame.with_columns(pl.col(YEAR).cast(pl.Int64))
    if s.select(pl.struct(PERSON, YEAR).is_duplicated().any()).item():
        raise _invalid(spec, f"{which}: a person has more than one score in a year")
    joined = frame.with_columns(pl.col(YEAR).cast(pl.Int64)).join(s, on=[PERSON, YEAR], how="left")
    unscored = int(joined.get_column("score").null_count())
    foreign = s.height - (joined.height - unscored)
    if unscored or foreign:
        raise _invalid(
            spec,
            f"{which} must cover the population exactly: {unscored} person-year(s) of the population have no score "
            f"and {foreign} score(s) are for persons outside it",
        )
    return joined


def _score_groups(scored: pl.DataFrame, t: int, what: str) -> tuple[pl.DataFrame, RuleOutcome]:
    """Scores pooled so that every distinct score is shared by at least ``t`` persons; the metrics are computed
    from the pooled scores.

    A score that singles out fewer persons makes the metrics depend on their outcomes alone (a one-person score
    shifts ROC-AUC by exactly 1/positives). Distinct scores are walked from low to high and gathered into groups
    of at least ``t`` distinct persons (a short last group joins the one before); each group takes its rows' mean
    score, so the ranking between groups is kept and Brier stays close. Out-of-fold scores of trees with small
    held-out leaves lose a little resolution; a score set built to isolate a person is merged into its
    neighbours. Fewer than ``t`` persons in all: refused."""
    levels = scored.group_by("score").agg(pl.col(PERSON).bin.head(8).alias("ids")).sort("score")
    group_of: list[int] = []
    seen: set[bytes] = set()
    group = 0
    for ids in levels.get_column("ids").to_list():
        seen.update(ids)
        group_of.append(group)
        if len(seen) >= t:
            group, seen = group + 1, set()
    total = group + (1 if seen else 0)
    if seen and group > 0:  # a short last group joins the one before
        group_of = [g if g < group else group - 1 for g in group_of]
        total = group
    if total == 0 or (seen and group == 0):
        return scored, RuleOutcome("score_groups", "refuse", f"{what} is scored for fewer than {t} persons")
    merged = len(group_of) - total
    if merged == 0:
        return scored, RuleOutcome(
            "score_groups", "pass", f"every distinct score of {what} is held by at least {t} persons"
        )
    mapping = levels.select("score", pl.Series("__group", group_of, dtype=pl.Int64))
    pooled = (
        scored.join(mapping, on="score", how="left")
        .with_columns(pl.col("score").mean().over("__group").alias("score"))
        .drop("__group")
    )
    return pooled, RuleOutcome(
        "score_groups",
        "pass",
        f"{len(group_of)} distinct scores of {what} were pooled into {total} groups of at least {t} persons "
        f"(ranking kept); the metrics are of the pooled scores",
    )


def _metrics(spec: MetricsSpec, data: GateData, policy: ReleasePolicy) -> Materialised:
    t = policy.sdc.min_persons_per_cell
    scored, groups = _score_groups(_scored(spec, spec.outcome, spec.scores, data), t, "the model")
    y = scored.get_column(spec.outcome).cast(pl.Int64).to_numpy()
    s = scored.get_column("score").to_numpy()
    metrics = score_metrics(y, s, spec.top_k_percent)
    if "fold" in scored.columns:
        folds = scored.get_column("fold").to_numpy()
        per_fold = [score_metrics(y[folds == f], s[folds == f], spec.top_k_percent) for f in np.unique(folds)]
        if len(per_fold) > 1:
            for m in list(metrics):
                metrics[f"{m}.fold_sd"] = float(np.std([pf[m] for pf in per_fold], ddof=1))
    metrics["top_k_percent"] = spec.top_k_percent
    request = ModelMetrics(
        **_labels(spec),
        metrics=metrics,
        n=int(y.size),
        n_positive=int(y.sum()),
        model=spec.model,
        outcome=spec.outcome,
    )
    verdicts = (groups,)
    if len(spec.years) > 1:
        verdicts += (_class_persons(_ids(scored), y, t, spec.outcome),)
    return Materialised(request, _rows(scored), len(spec.years), verdicts, outcome=y)


def _class_persons(ids: np.ndarray, y: np.ndarray, t: int, outcome: str) -> RuleOutcome:
    """Both outcome classes hold at least ``t`` distinct persons (rows pooled over years count a person once)."""
    small = min(_persons_of(ids[y == 1]), _persons_of(ids[y == 0]))
    if small < t:
        return RuleOutcome(
            "class_persons", "refuse", f"one class of {outcome} is held by {small} distinct persons (< {t})"
        )
    return RuleOutcome("class_persons", "pass", f"both classes of {outcome} are held by >= {t} distinct persons")


def _comparison(spec: ComparisonSpec, data: GateData, policy: ReleasePolicy) -> Materialised:
    t = policy.sdc.min_persons_per_cell
    rng = np.random.default_rng(spec.seed)
    later, earlier = (spec.years[1], spec.years[0]) if spec.mode == "years" else (None, None)
    a, groups_a = _score_groups(
        _scored(spec, spec.outcome, spec.a, data, "scores a", later), t, f"model {spec.labels[0]}"
    )
    b, groups_b = _score_groups(
        _scored(spec, spec.outcome, spec.b, data, "scores b", earlier), t, f"model {spec.labels[1]}"
    )
    verdicts = (groups_a, groups_b)
    if spec.mode == "paired":
        b = a.select(PERSON, YEAR).join(b, on=[PERSON, YEAR], how="left", maintain_order="left")
        y = a.get_column(spec.outcome).cast(pl.Int64).to_numpy()
        comp = paired_bootstrap(
            y, a.get_column("score").to_numpy(), b.get_column("score").to_numpy(), top_k_percent=spec.top_k_percent,
            replicates=spec.replicates, confidence=spec.confidence, rng=rng,
        )  # fmt: skip
        persons = _rows(a)
    else:
        la, lb = a, b
        comp = unpaired_bootstrap(
            la.get_column(spec.outcome).cast(pl.Int64).to_numpy(), la.get_column("score").to_numpy(),
            lb.get_column(spec.outcome).cast(pl.Int64).to_numpy(), lb.get_column("score").to_numpy(),
            top_k_percent=spec.top_k_percent, replicates=spec.replicates, confidence=spec.confidence, rng=rng,
        )  # fmt: skip
        persons = pl.concat([_rows(la), _rows(lb)], how="vertical_relaxed")
    metrics: dict[str, float] = {}
    for m, diff in comp.differences.items():
        metrics[f"{m}.{spec.labels[0]}"] = diff.a
        metrics[f"{m}.{spec.labels[1]}"] = diff.b
        metrics[f"{m}.delta"] = diff.delta
        metrics[f"{m}.ci_low"] = diff.ci_low
        metrics[f"{m}.ci_high"] = diff.ci_high
        metrics[f"{m}.p"] = diff.p_two_sided
    request = ModelMetrics(
        **_labels(spec),
        metrics=metrics,
        n=comp.n,
        n_positive=comp.n_positive,
        model=spec.model,
        outcome=spec.outcome,
    )
    return Materialised(request, persons, len(spec.years), verdicts)


# --- importances ----------------------------------------------------------------------------------------------
def _importances(spec: ImportanceSpec, data: GateData, policy: ReleasePolicy) -> Materialised:
    frame = population(spec, data)
    if spec.outcome:
        frame = frame.filter(pl.col(spec.outcome).is_not_null())
    t = policy.sdc.min_persons_per_cell
    holders: dict[str, int] = {}
    for var in dict.fromkeys(v for key in spec.importances for v in spec.variables_for(key)):
        d = _domain(spec, var)
        col = pl.col(var)
        persons = pl.col(PERSON)  # distinct persons: a person pooled over years has a row per year
        if d.kind == "bool":  # a flag is held by those with it, and its absence by the others: both must be many
            n = frame.select(pl.min_horizontal(persons.filter(col).n_unique(), persons.filter(~col).n_unique())).item()
        else:
            n = frame.select(persons.filter(col.is_not_null()).n_unique()).item()
        holders[var] = int(n or 0)
    kept: dict[str, float] = {}
    withheld: list[str] = []
    for key, value in spec.importances.items():
        if all(holders[v] >= t for v in spec.variables_for(key)):
            kept[key] = float(value)
        else:
            withheld.append(key)
    verdict = (
        RuleOutcome(
            "importance_holders",
            "suppress",
            f"withheld {len(withheld)} importance(s) of variables fewer than {t} persons hold: {withheld[:6]}",
        )
        if withheld
        else RuleOutcome("importance_holders", "pass", f"every variable is held by at least {t} persons")
    )
    request = FeatureImportances(
        **_labels(spec),
        importances=kept,
        n=frame.height,
        model=spec.model,
    )
    return Materialised(request, _rows(frame), len(spec.years), (verdict,), tuple(withheld))


# --- tests and regressions, fitted by the gate ------------------------------------------------------------------
@functools.lru_cache(maxsize=32)
def _associate_cached(
    key: tuple[Any, ...], x: bytes, y: bytes, scale: float, spline_df: int, edges: tuple[float, ...], perms: int,
    seed: int,
) -> AssociationResult:  # fmt: skip
    del key
    return associate(
        np.frombuffer(x, dtype=np.float64),
        np.frombuffer(y, dtype=np.int8),
        scale=scale,
        spline_df=spline_df,
        edges=edges,
        permutations=perms,
        rng=np.random.default_rng(seed),
    )


def _association(spec: TestSpec | RegressionSpec, data: GateData, policy: ReleasePolicy) -> Materialised:
    if _domain(spec, spec.outcome).kind != "bool":
        raise _invalid(spec, f"outcome {spec.outcome!r} is not a true/false variable")
    if not _domain(spec, spec.variable).numeric:
        raise _invalid(spec, f"variable {spec.variable!r} is not numeric")
    edges = tuple(policy.grids.bands.get(spec.variable, ()))
    if not edges:
        raise _invalid(spec, f"no public bands for {spec.variable!r}: the release policy's grids.bands.{spec.variable}")
    frame = population(spec, data).filter(pl.col(spec.outcome).is_not_null() & pl.col(spec.variable).is_not_null())
    x = frame.get_column(spec.variable).cast(pl.Float64).to_numpy()
    y = frame.get_column(spec.outcome).cast(pl.Int8).to_numpy()
    t = policy.sdc.min_persons_per_cell
    verdicts: list[RuleOutcome] = []
    ids = _ids(frame)  # counts are of distinct persons (a person pooled over years has a row per year)
    if min(_persons_of(ids[y == 1]), _persons_of(ids[y == 0])) < t:
        verdicts.append(RuleOutcome("class_counts", "refuse", f"fewer than {t} persons with or without {spec.outcome}"))
        n_bins_small = 0
    else:
        bins = np.searchsorted(np.asarray(edges), x, side="right")
        sizes = np.array([_persons_of(ids[bins == b]) for b in range(len(edges) + 1)])
        n_bins_small = int(((sizes > 0) & (sizes < t)).sum())
    if isinstance(spec, TestSpec) and spec.test in ("binned_lr", "mutual_information") and n_bins_small:
        verdicts.append(
            RuleOutcome("bin_threshold", "refuse", f"{n_bins_small} public band(s) hold between 1 and {t - 1} persons")
        )
    if any(v.verdict == "refuse" for v in verdicts):
        # still a well-formed output to record the refusal against; no fit is run on a refused population
        result = None
    else:
        params = (spec.scale, getattr(spec, "spline_df", 5), edges, getattr(spec, "permutations", 999),
                  getattr(spec, "seed", 0))  # fmt: skip
        result = _associate_cached((spec.table, spec.years, spec.population, spec.outcome, spec.variable, *params),
                                   x.tobytes(), y.tobytes(), *params)  # fmt: skip
    common = _labels(spec)
    request: ReleaseRequest
    if isinstance(spec, TestSpec):
        out = result.tests[spec.test] if result is not None else None
        request = TestResult(
            test=f"{spec.test} ({out.distribution}, df={out.df:g})" if out else spec.test,
            statistic=out.statistic if out else math.nan,
            dof=float(out.residual_dof) if out else 0.0,
            p_value=out.p_value if out else math.nan,
            n=int(y.size),
            **common,
        )
    else:
        request = RegressionResult(
            coefficients=result.linear_coefficients if result else {},
            std_errors=result.linear_std_errors if result else {},
            n=int(y.size),
            dof=int(y.size) - 2,
            model=spec.model,
            **common,
        )
    return Materialised(request, _rows(frame), len(spec.years), tuple(verdicts))


# --- DP models ----------------------------------------------------------------------------------------------------
def _dp_model(spec: DpModelSpec, data: GateData) -> Materialised:
    if len(spec.years) > 1:
        # the model's noise is calibrated to one row per person (kansrijk.gate.dp_models); pooled years give a
        # person a row per year, so the debited epsilon would not bound what one person contributes
        raise _invalid(
            spec,
            "a DP model is trained on one reference year: over pooled years a person has a row per year, and its "
            "guarantee is for one row per person",
            "name one reference year",
        )
    if _domain(spec, spec.outcome).kind != "bool":
        raise _invalid(spec, f"outcome {spec.outcome!r} is not a true/false variable")
    keys: dict[str, tuple[Any, ...]] = {}
    for var in spec.features:
        d = _domain(spec, var)
        if d.kind in ("category", "code"):
            if d.categories is None:
                raise _invalid(spec, f"feature {var!r} has no public categories; a DP model needs them")
            keys[var] = d.categories
    frame = population(spec, data).filter(pl.col(spec.outcome).is_not_null())
    request = DpModelRequest(
        **_labels(spec),
        data=frame.select(spec.outcome, *spec.features),
        outcome=spec.outcome,
        features=spec.features,
        model=spec.model,
        epsilon=spec.epsilon_exact,
        max_depth=spec.max_depth,
        trees=spec.trees,
        folds=spec.folds,
        seed=spec.seed,
        keys=keys,
        bin_edges=dict(spec.bin_edges),
        person=None,
        learning_rate=spec.learning_rate,
    )
    return Materialised(request, _rows(frame), len(spec.years))


def materialise(spec: ReleaseSpec, data: GateData, policy: ReleasePolicy) -> Materialised:
    """Compute ``spec`` from the gate's data (see the module doc). Raises ``RequestInvalid`` on a bad spec."""
    if isinstance(spec, CountSpec | MeanSpec | QuantileSpec | HistogramSpec | ExtremesSpec):
        return _table(spec, data, policy)
    if isinstance(spec, TreeSpec):
        return _tree(spec, data, policy)
    if isinstance(spec, MetricsSpec):
        return _metrics(spec, data, policy)
    if isinstance(spec, ComparisonSpec):
        return _comparison(spec, data, policy)
    if isinstance(spec, ImportanceSpec):
        return _importances(spec, data, policy)
    if isinstance(spec, TestSpec | RegressionSpec):
        return _association(spec, data, policy)
    if isinstance(spec, DpModelSpec):
        return _dp_model(spec, data)
    raise RequestInvalid(f"the gate takes release specs only (kansrijk.gate.specs), not {type(spec).__name__}")


def public_keys_of(keys: Mapping[str, Sequence[Any]] | None) -> dict[str, tuple[Any, ...]]:
    return {k: tuple(v) for k, v in (keys or {}).items()}


__all__ = ["Materialised", "band_expr", "band_labels", "condition_expr", "materialise", "population"]
