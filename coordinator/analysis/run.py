"""The analysis pipeline: plan + datasets in, release specs out, each one sent through the release gate.

A spec carries no data: tables and tests name their population (the plan's cohort, a reference year or pooled
years, the outcome known) and the gate computes them; a tree is submitted as its structure and the gate counts its
nodes itself; metrics and comparisons hand the gate the out-of-fold scores of the persons, and the gate computes
every metric and class count from them and the outcome it reads itself.

``analysis_requests`` is a generator of ``Planned`` specs (pure: it computes, never writes); ``run_analysis``
opens the gate, checks the plan against the release policy, sends every request to ``Gate.release`` and returns
a summary built **only from what the gate released** (suppressed cells and refused outputs show no numbers).

Release names (files under ``WS/released/``): ``<scope>.<outcome>.<part>`` where scope is a reference year or
``pooled``; year-to-year differences are ``years.<a>-<b>.<outcome>.<feature set>``. Every description ends with
the digests of the plan and factor model that produced it, so the ledger ties each number to the signed plan.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from coordinator.analysis.dp_models import describe_dp_model, dp_model_requests
from coordinator.analysis.factors import factor_coverage
from coordinator.analysis.plan import (
    PERSON,
    Design,
    LoadedPolicies,
    attach_previous_years,
    encode,
    feature_variables,
    load_datasets,
    load_policies,
)
from coordinator.analysis.trees import (
    CvResult,
    DatasetBins,
    LeafRules,
    ReleasableTree,
    TreeSettings,
    cross_validate,
    fit_final_tree,
    prune_to_rules,
    seed_int,
    stable_seed,
)
from kansrijk.gate.specs import (
    ComparisonSpec,
    Condition,
    CountSpec,
    ImportanceSpec,
    MeanSpec,
    MetricsSpec,
    RegressionSpec,
    ReleaseSpec,
    ScoreSet,
    SplitNode,
    TestSpec,
    TreeSpec,
    where,
)
from kansrijk.outcomes import outcome as outcome_def
from kansrijk.policy.analysis import check_plan_against_release
from kansrijk.policy.factors import PROXIES_SUFFIX
from kansrijk.policy.signing import OfficerKey
from kansrijk.schema import PARTNERS
from kansrijk.stats.histtree import BinnedMatrix

REQUESTED_BY = "analysis"
Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Planned:
    """One release spec with what it is about (for the summary)."""

    request: ReleaseSpec
    scope: str
    outcome: str = ""
    feature_set: str = ""
    part: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class SummaryLine:
    """What was requested and the gate's verdict; ``released`` holds only numbers the gate released."""

    name: str
    kind: str
    scope: str
    outcome: str
    feature_set: str
    part: str
    verdict: str
    summary: str
    reasons: tuple[str, ...] = ()
    note: str = ""
    released: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "scope": self.scope,
            "outcome": self.outcome,
            "feature_set": self.feature_set,
            "part": self.part,
            "verdict": self.verdict,
            "summary": self.summary,
            "reasons": list(self.reasons),
            "note": self.note,
        }


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    lines: tuple[SummaryLine, ...]
    seconds: float
    model_fits: int
    plan_digest: str
    factors_digest: str

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for line in self.lines:
            out[line.verdict] = out.get(line.verdict, 0) + 1
        return out


# --- the work list ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Scope:
    name: str  # "2023" or "pooled"
    label: str  # "reference year 2023"
    frame: pl.DataFrame
    grouped: bool  # persons may appear more than once (pooled years)
    years: tuple[int, ...] = ()


def scopes_of(
    datasets: dict[int, pl.DataFrame], pooled: bool, pool_years: Sequence[int] | None = None
) -> list[Scope]:
    """Each year on its own and, when ``pooled``, the years of ``pool_years`` (default: all) pooled."""
    out = [Scope(str(y), f"reference year {y}", f, False, (y,)) for y, f in sorted(datasets.items())]
    pool = sorted(datasets if pool_years is None else [y for y in pool_years if y in datasets])
    if pooled and len(pool) > 1:
        frame = pl.concat([datasets[y] for y in pool], how="diagonal_relaxed")
        years = "+".join(str(y) for y in pool)
        out.append(Scope("pooled", f"reference years {years} pooled", frame, True, tuple(pool)))
    return out


def _missing(policies: LoadedPolicies, frame: pl.DataFrame) -> list[str]:
    """What the plan asks for that a year's linked dataset does not hold: outcomes, the association variable."""
    plan = policies.plan
    missing = [o for o in plan.outcomes if o not in frame.columns]
    if plan.association is not None and plan.association.variable not in frame.columns:
        missing.append(f"association ({plan.association.variable})")
    return missing


def complete_years(policies: LoadedPolicies, datasets: dict[int, pl.DataFrame]) -> list[int]:
    """The years that hold everything the plan asks for that any year holds: only they are pooled (the gate
    refuses a pooled request naming a variable one of its years lacks, and pooling them would mix populations)."""
    wanted = set().union(*(set(_missing(policies, pl.DataFrame())) - set(_missing(policies, f))
                           for f in datasets.values())) if datasets else set()  # fmt: skip
    return sorted(y for y, f in datasets.items() if not wanted & set(_missing(policies, f)))


def cohort_conditions(policies: LoadedPolicies) -> tuple[Condition, ...]:
    """The plan's cohort as the gate's population conditions (the same persons ``load_datasets`` keeps)."""
    c = policies.plan.cohort
    return (where("age_years", ">=", c.min_age), where("age_years", "<=", c.max_age))


def scores_of(pop: pl.DataFrame, scores: np.ndarray, folds: np.ndarray | None = None) -> ScoreSet:
    """Out-of-fold scores keyed by person and reference year, for the gate to compute metrics from."""
    frame = pop.select(PERSON, pl.col("year").cast(pl.Int32)).with_columns(
        pl.Series("score", np.clip(np.asarray(scores, dtype=np.float64), 0.0, 1.0))
    )
    if folds is not None:
        frame = frame.with_columns(pl.Series("fold", np.asarray(folds, dtype=np.int32)))
    return ScoreSet(frame)


def tree_nodes(tree: ReleasableTree, design: Design) -> tuple[SplitNode, ...]:
    """A pruned tree as the structure the gate re-applies: every split on a canonical variable (one-hot and rank
    columns become category sets), no counts."""
    index = {c: i for i, c in enumerate(design.columns)}
    out = []
    for node in tree.nodes:
        if node.is_leaf:
            out.append(SplitNode(node_id=node.node_id))
            continue
        rule = design.encodings[index[str(node.feature)]].split(float(node.threshold or 0.0))
        out.append(
            SplitNode(
                node_id=node.node_id, left=node.left, right=node.right, missing_left=bool(node.missing_left), **rule
            )
        )
    return tuple(out)


def count_model_fits(policies: LoadedPolicies, scopes: Sequence[Scope]) -> int:
    """How many tree fits the plan will run (for the progress bar): per fold one tree per ``min_samples_leaf``
    value (it serves every depth of the grid), plus the released tree."""
    plan = policies.plan
    per = plan.model.folds * len(set(plan.model.min_samples_leaf)) + (1 if plan.release_trees else 0)
    modelled = 0
    for scope in scopes:
        for o in plan.outcomes:
            if o in scope.frame.columns:
                pos = int(scope.frame.select(pl.col(o).fill_null(False).sum()).item())
                modelled += pos >= plan.min_positives(o) and plan.outcomes[o].has_tree
    return modelled * len(plan.feature_sets) * per


def _settings(policies: LoadedPolicies) -> TreeSettings:
    plan = policies.plan
    return TreeSettings(
        grid=plan.grid,
        folds=plan.model.folds,
        criterion=plan.model.criterion,
        class_weight=plan.model.class_weight,
        select_by=plan.model.select_by,
        top_k_percent=plan.metrics.top_k_percent,
        permutation_repeats=plan.metrics.permutation_repeats,
        n_jobs=plan.model.n_jobs,
        shrinkage=plan.model.shrinkage,
        engine=plan.model.engine,
        max_bins=plan.model.max_bins,
    )


def _engine_words(settings: TreeSettings) -> str:
    """How the trees were grown, as the model description says it."""
    if settings.engine == "histogram":
        return f"engine=histogram (at most {settings.max_bins} bins per column, declared once per dataset)"
    return "engine=exact"


def _stamp(policies: LoadedPolicies) -> str:
    return f" [plan {policies.plan_digest}; factor model {policies.factors_digest}]"


def analysis_requests(
    policies: LoadedPolicies,
    datasets: dict[int, pl.DataFrame],
    *,
    leaf_rules: LeafRules,
    progress: Progress | None = None,
    oof_sink: dict[tuple[str, str, str], np.ndarray] | None = None,
) -> Iterator[Planned]:
    """Every release request of the plan, in a fixed order (deterministic given the plan's seed).

    ``oof_sink``, when given, receives the out-of-fold predictions per (scope, outcome, feature set) for
    callers inside the secure environment (tests, benchmarks); they are never released.
    """
    plan = policies.plan
    settings = _settings(policies)
    stamp = _stamp(policies)
    cohort = cohort_conditions(policies)
    scopes = scopes_of(
        attach_previous_years(datasets, plan.features.previous_year),
        plan.cohort.pooled,
        complete_years(policies, datasets),
    )
    cv_by_scope: dict[tuple[str, str, str], tuple[np.ndarray, CvResult]] = {}
    for scope in scopes:
        bins = DatasetBins(settings.max_bins)  # the histogram engine bins each column once per scope
        if settings.engine == "histogram":
            _declare_bins(bins, scope, policies)
        for o in plan.outcomes:
            if o not in scope.frame.columns:
                continue
            pop = scope.frame.filter(pl.col(o).is_not_null())
            y = pop.get_column(o).cast(pl.Int8).to_numpy().astype(np.int64)
            n_pos, minimum = int(y.sum()), plan.min_positives(o)
            modelled = n_pos >= minimum
            reason = (
                f"outcome not modelled: fewer positives than the plan's minimum of {minimum} (outcomes.{o}."
                f"min_positives / model.min_positives)"
                if not modelled
                else f"positives at least the plan's minimum of {minimum}: modelled"
            )
            yield Planned(
                CountSpec(
                    name=f"{scope.name}.{o}.positives",
                    description=f"Persons with and without {o} in its population; {reason}.{stamp}",
                    years=scope.years,
                    population=cohort,
                    by=(o,),
                ),
                scope.name,
                o,
                part="positives",
                note="" if modelled else f"refused by the plan: {reason}",
            )
            if not modelled:
                continue
            spec = plan.outcomes[o]
            if spec.has_tree:
                yield from _tree_requests(
                    scope, o, pop, y, policies, settings, leaf_rules, progress, oof_sink, cv_by_scope, bins
                )
            if spec.dp_kind is not None:  # trained inside the gate with DP (coordinator/analysis/dp_models.py)
                for fs, dp_request in dp_model_requests(scope_name=scope.name, years=scope.years,
                                                        grouped=scope.grouped, outcome=o, columns=pop.columns,
                                                        cohort=cohort, policies=policies, stamp=stamp):  # fmt: skip
                    yield Planned(dp_request, scope.name, o, fs, part="dp_model", note="differentially private")
        if plan.association is not None:
            yield from _association_requests(scope, policies)
    yield from _year_differences(scopes, cv_by_scope, policies)


def _declare_bins(bins: DatasetBins, scope: Scope, policies: LoadedPolicies) -> None:
    """Declare the bin edges of every column any tree of the scope may use, from the scope's whole dataset (one
    variable at a time, so only one variable's encoded columns are in memory at once)."""
    plan = policies.plan
    variables: dict[str, None] = {}
    for o in plan.outcomes:
        if o in scope.frame.columns and plan.outcomes[o].has_tree:
            for fs in plan.feature_sets:
                variables.update(dict.fromkeys(feature_variables(scope.frame.columns, plan, policies.factors, o, fs)))
    for v in variables:
        design = encode(
            scope.frame.select(v), (v,), one_hot_max_levels=plan.features.one_hot_max_levels,
            ordinal=plan.features.ordinal,
        )  # fmt: skip
        bins.declare(design)


def _tree_requests(
    scope: Scope,
    o: str,
    pop: pl.DataFrame,
    y: np.ndarray,
    policies: LoadedPolicies,
    settings: TreeSettings,
    leaf_rules: LeafRules,
    progress: Progress | None,
    oof_sink: dict[tuple[str, str, str], np.ndarray] | None,
    cv_by_scope: dict[tuple[str, str, str], tuple[np.ndarray, CvResult]],
    bins: DatasetBins,
) -> Iterator[Planned]:
    """The non-private trees of one outcome: per feature set metrics, importances and tree, then the
    comparison of the feature sets and the factor coverage (all released under output checking)."""
    plan = policies.plan
    stamp = _stamp(policies)
    k = plan.metrics.top_k_percent
    cohort = cohort_conditions(policies)
    results: dict[str, CvResult] = {}
    groups = pop.get_column(PERSON).to_numpy() if scope.grouped and PERSON in pop.columns else None
    for fs in plan.feature_sets:
        variables = feature_variables(pop.columns, plan, policies.factors, o, fs)
        design = encode(
            pop, variables, one_hot_max_levels=plan.features.one_hot_max_levels, ordinal=plan.features.ordinal
        )
        seed = stable_seed(plan.seed, scope.name, o)
        binned = bins.bin(design) if settings.engine == "histogram" else None
        cv = cross_validate(design, y, settings, seed, groups=groups, progress=progress, binned=binned)
        results[fs] = cv
        cv_by_scope[(scope.name, o, fs)] = (y, cv)
        if oof_sink is not None:
            oof_sink[(scope.name, o, fs)] = cv.oof
        yield from _model_requests(
            scope, o, fs, pop, design, y, cv, settings, seed, leaf_rules, policies, progress, binned
        )
    if len(results) == 2:
        yield Planned(
            ComparisonSpec(
                name=f"{scope.name}.{o}.compare",
                description=(
                    f"All variables minus factor model, out-of-fold, paired bootstrap over persons "
                    f"({plan.metrics.bootstrap_replicates} replicates, {plan.metrics.confidence:.0%} percentile "
                    f"intervals); keys <metric>.all, <metric>.factor_model, <metric>.delta, .ci_low, .ci_high, "
                    f".p.{stamp}"
                ),
                years=scope.years,
                population=cohort,
                outcome=o,
                a=scores_of(pop, results["all"].oof),
                b=scores_of(pop, results["factor_model"].oof),
                labels=("all", "factor_model"),
                replicates=plan.metrics.bootstrap_replicates,
                confidence=plan.metrics.confidence,
                top_k_percent=k,
                seed=seed_int(stable_seed(plan.seed, scope.name, o, "compare")),
                model="decision_tree: all vs factor_model",
            ),
            scope.name,
            o,
            "all-vs-factor_model",
            part="compare",
        )
    if "all" in results:
        cov = factor_coverage(o, policies.factors, results["all"].permutation)
        importances = {f.factor: float(f.importance) for f in cov.factors if f.importance is not None}
        indicators = {f.factor: f.present for f in cov.factors if f.importance is not None}
        for f in cov.factors:  # a factor's proxies, apart from its indicators: "<factor>.proxies"
            if f.proxy_importance is not None:
                importances[f"{f.factor}{PROXIES_SUFFIX}"] = float(f.proxy_importance)
                indicators[f"{f.factor}{PROXIES_SUFFIX}"] = f.proxies
        yield Planned(
            ImportanceSpec(
                name=f"{scope.name}.{o}.factors",
                description=(
                    f"Factor importance: sum of the factor's indicators' permutation importances (ROC-AUC "
                    f"drop) in the all-variables model; <factor>{PROXIES_SUFFIX}: the sum over the factor's declared "
                    f"proxies (not indicators). No indicator in the model: "
                    f"{', '.join(cov.uncovered) or 'none'}; indicators absent from the data: "
                    f"{', '.join(cov.absent) or 'none'}.{stamp}"
                ),
                years=scope.years,
                population=cohort,
                outcome=o,
                importances=importances,
                variables_of=indicators,
                model="decision_tree: all variables",
            ),
            scope.name,
            o,
            "all",
            part="factors",
            note=f"factors without indicator: {', '.join(cov.uncovered) or 'none'}",
        )


def _model_requests(
    scope: Scope,
    o: str,
    fs: str,
    pop: pl.DataFrame,
    design: Design,
    y: np.ndarray,
    cv: CvResult,
    settings: TreeSettings,
    seed: np.random.SeedSequence,
    leaf_rules: LeafRules,
    policies: LoadedPolicies,
    progress: Progress | None,
    binned: BinnedMatrix | None = None,
) -> Iterator[Planned]:
    stamp = _stamp(policies)
    cohort = cohort_conditions(policies)
    model = (
        f"decision_tree(criterion={settings.criterion}, class_weight={settings.class_weight}, "
        f"{_engine_words(settings)}, selected per fold "
        f"(max_depth, min_samples_leaf)={list(cv.selected)}, hierarchical shrinkage lambda="
        f"{[float(v) for v in cv.selected_shrinkage]})"
    )
    base = f"{scope.name}.{o}.{fs}"
    yield Planned(
        MetricsSpec(
            name=f"{base}.metrics",
            description=(
                f"Out-of-fold metrics of decision trees ({settings.folds}-fold stratified CV, cross-fitted grid "
                f"selection) for {o} with the {fs} feature set: roc_auc, pr_auc (average precision), brier "
                f"(unweighted probabilities), recall_at_k (top {settings.top_k_percent:g}% risk); .fold_sd = "
                f"spread over folds. Computed by the gate from the persons' out-of-fold scores.{stamp}"
            ),
            years=scope.years,
            population=cohort,
            outcome=o,
            scores=scores_of(pop, cv.oof, cv.fold_of),
            top_k_percent=settings.top_k_percent,
            model=model,
        ),
        scope.name,
        o,
        fs,
        part="metrics",
    )
    for method, imps in (("impurity", cv.impurity), ("permutation", cv.permutation)):
        values: dict[str, float] = {}
        for v, imp in sorted(imps.items(), key=lambda kv: -kv[1].mean):
            values[v] = imp.mean
            values[f"{v}.sd"] = imp.sd
        yield Planned(
            ImportanceSpec(
                name=f"{base}.importance.{method}",
                description=(
                    f"{method.capitalize()} importance per canonical variable (mean over folds; <variable>.sd = "
                    f"standard deviation over folds)"
                    + (" as a drop in ROC-AUC on the held-out fold" if method == "permutation" else "")
                    + f".{stamp}"
                ),
                years=scope.years,
                population=cohort,
                outcome=o,
                importances=values,
                model=model,
            ),
            scope.name,
            o,
            fs,
            part=f"importance.{method}",
        )
    if policies.plan.release_trees:
        final_seed = stable_seed(policies.plan.seed, scope.name, o, fs, "final")
        final = fit_final_tree(design, y, cv.final_params, settings, final_seed, binned)
        if progress is not None:
            progress(1)
        tree = prune_to_rules(final, design, y, leaf_rules)
        yield Planned(
            TreeSpec(
                name=f"{base}.tree",
                description=(
                    f"Decision tree for {o} ({fs} features, {_engine_words(settings)}) fitted on the whole "
                    f"population with (max_depth, "
                    f"min_samples_leaf)={cv.final_params}, pruned from {tree.leaves_before} to {tree.leaves_after} "
                    f"leaves so every leaf meets the release policy's leaf rules; class counts are persons "
                    f"(negative, positive), counted by the gate by applying the splits to its own data; a missing "
                    f"value follows the branch chosen at fitting. Scores use hierarchical shrinkage "
                    f"lambda={cv.final_shrinkage:g}: s(child) = s(parent) + (p(child) - p(parent)) / (1 + lambda / "
                    f"n(parent)), from these counts.{stamp}"
                ),
                years=scope.years,
                population=cohort,
                outcome=o,
                features=tuple(design.variables),
                nodes=tree_nodes(tree, design),
                min_samples_leaf=tree.min_samples_leaf,
                max_depth=tree.max_depth,
                model="decision_tree",
            ),
            scope.name,
            o,
            fs,
            part="tree",
        )


def _association_requests(scope: Scope, policies: LoadedPolicies) -> Iterator[Planned]:
    """The association tests, the linear fit and the rate curve: specs the gate fits and computes itself."""
    spec = policies.plan.association
    assert spec is not None
    stamp = _stamp(policies)
    o, var = spec.outcome, spec.variable
    if o not in scope.frame.columns or var not in scope.frame.columns:
        return
    population = (*cohort_conditions(policies), where(var, "not_null"))
    base = f"{scope.name}.association"
    seed = seed_int(stable_seed(policies.plan.seed, scope.name, "association"))
    for name in ("linear_wald", "linear_lr", "spline_lr", "nonlinearity_lr", "binned_lr", "mutual_information"):
        yield Planned(
            TestSpec(
                name=f"{base}.{name}",
                description=(
                    f"{name}: association of {o} with {var}, fitted by the gate on the persons with a known {var} "
                    f"(statistic, reference distribution and df in the values; the request's dof is the residual "
                    f"degrees of freedom). Read at alpha {spec.alpha}.{stamp}"
                ),
                years=scope.years,
                population=population,
                test=name,
                outcome=o,
                variable=var,
                scale=spec.scale,
                spline_df=spec.spline_df,
                permutations=spec.permutations,
                seed=seed,
            ),
            scope.name,
            o,
            part=f"association.{name}",
        )
    yield Planned(
        RegressionSpec(
            name=f"{base}.linear_fit",
            description=f"Logistic regression of {o} on {var} / {spec.scale:g} alone (maximum likelihood).{stamp}",
            years=scope.years,
            population=population,
            outcome=o,
            variable=var,
            scale=spec.scale,
        ),
        scope.name,
        o,
        part="association.linear_fit",
    )
    yield Planned(
        MeanSpec(
            name=f"{base}.rate_by_bin",
            description=f"Share of {o} per public {var} band (the curve that shows the shape of the relation).{stamp}",
            years=scope.years,
            population=population,
            value=o,
            by=(var,),
        ),
        scope.name,
        o,
        part="association.rate_by_bin",
    )


def _year_differences(
    scopes: Sequence[Scope],
    cv_by_scope: dict[tuple[str, str, str], tuple[np.ndarray, CvResult]],
    policies: LoadedPolicies,
) -> Iterator[Planned]:
    plan = policies.plan
    years = [s for s in scopes if s.name != "pooled"]
    stamp = _stamp(policies)
    cohort = cohort_conditions(policies)
    for sa, sb in itertools.pairwise(years):
        a, b = sa.name, sb.name
        for o in plan.outcomes:
            for fs in plan.feature_sets:
                if (a, o, fs) not in cv_by_scope or (b, o, fs) not in cv_by_scope:
                    continue
                _, ca = cv_by_scope[(a, o, fs)]
                _, cb = cv_by_scope[(b, o, fs)]
                pa = sa.frame.filter(pl.col(o).is_not_null())
                pb = sb.frame.filter(pl.col(o).is_not_null())
                yield Planned(
                    ComparisonSpec(
                        name=f"years.{a}-{b}.{o}.{fs}",
                        description=(
                            f"Change of the out-of-fold metrics of {o} ({fs}) from {a} to {b} ({b} minus {a}); "
                            f"independent bootstrap per year ({plan.metrics.bootstrap_replicates} replicates).{stamp}"
                        ),
                        years=(*sa.years, *sb.years),
                        population=cohort,
                        outcome=o,
                        a=scores_of(pb, cb.oof),
                        b=scores_of(pa, ca.oof),
                        labels=(b, a),
                        mode="years",
                        replicates=plan.metrics.bootstrap_replicates,
                        confidence=plan.metrics.confidence,
                        top_k_percent=plan.metrics.top_k_percent,
                        seed=seed_int(stable_seed(plan.seed, a, b, o, fs, "years")),
                        model="decision_tree",
                    ),
                    f"{a}-{b}",
                    o,
                    fs,
                    part="years",
                )


# --- what the plan asks for but the data cannot give --------------------------------------------------------
def skipped_lines(policies: LoadedPolicies, datasets: dict[int, pl.DataFrame]) -> list[SummaryLine]:
    """One line (verdict ``skipped``) per reference year whose linked dataset lacks outcomes or the association
    variable the plan names, because the partner that holds them delivered nothing for that year, and one for
    the pooled scope when such years are left out of it. Nothing is requested from the gate for them; the line
    says what is missing and who delivered, so no year or outcome drops out of the analysis without a word."""
    plan = policies.plan
    out: list[SummaryLine] = []
    for year, frame in sorted(datasets.items()):
        missing = _missing(policies, frame)
        if not missing:
            continue
        delivered = [p for p in PARTNERS if f"in_{p}" in frame.columns and bool(frame.get_column(f"in_{p}").any())]
        holders = {outcome_def(o).partner for o in plan.outcomes if o not in frame.columns}
        absent = sorted(holders - set(delivered))
        why = (
            f"{', '.join(absent)} delivered no extract for {year} (delivered: {', '.join(delivered) or 'none'})"
            if absent
            else "the linked dataset does not hold their variables"
        )
        out.append(_skipped(str(year), missing, f"not analysed for {year}: {', '.join(missing)}; {why}"))
    pooled = complete_years(policies, datasets)
    left_out = sorted(set(datasets) - set(pooled))
    if plan.cohort.pooled and len(datasets) > 1 and left_out:
        kept = "+".join(str(y) for y in pooled) if len(pooled) > 1 else "none (fewer than two complete years)"
        out.append(
            _skipped(
                "pooled",
                [],
                f"{', '.join(str(y) for y in left_out)} left out of the pooled analysis (it lacks what the other "
                f"years hold); pooled: {kept}",
            )
        )
    return out


def _skipped(scope: str, missing: list[str], reason: str) -> SummaryLine:
    return SummaryLine(
        name=f"{scope}.skipped",
        kind="none",
        scope=scope,
        outcome=",".join(missing),
        feature_set="",
        part="skipped",
        verdict="skipped",
        summary="",
        reasons=(reason,),
        note="nothing was requested from the gate",
    )


# --- releasing ---------------------------------------------------------------------------------------------
def summarise_release(planned: Planned, result: Any) -> SummaryLine:
    """A summary line from the gate's result; numbers only from ``result.document['values']``."""
    verdict = str(getattr(result, "outcome", "refused"))
    values = getattr(result, "document", {}).get("values", {}) if verdict != "refused" else {}
    return SummaryLine(
        name=planned.request.name,
        kind=planned.request.kind,
        scope=planned.scope,
        outcome=planned.outcome,
        feature_set=planned.feature_set,
        part=planned.part,
        verdict=verdict,
        summary=_describe(planned, values, noisy=bool(getattr(result, "document", {}).get("noisy"))) if values else "",
        reasons=tuple(getattr(result, "reasons", ())),
        note=planned.note,
        released=dict(values) if isinstance(values, dict) else {},
    )


def _fmt(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _describe(planned: Planned, values: dict[str, Any], *, noisy: bool = False) -> str:
    """The released numbers in a line; a noisy (DP) number is marked ``≈``, an exact one ``=``."""
    kind = planned.request.kind
    if kind == "dp_model":
        return describe_dp_model(values)
    if kind == "model_metrics":
        m = values.get("metrics", {})
        if planned.part in ("compare", "years"):
            parts = []
            for metric in ("roc_auc", "recall_at_k"):
                if f"{metric}.delta" in m:
                    parts.append(
                        f"Δ{metric} {m[f'{metric}.delta']:+.3f} [{_fmt(m[f'{metric}.ci_low'])}, "
                        f"{_fmt(m[f'{metric}.ci_high'])}]"
                    )
            return "; ".join(parts)
        return ", ".join(f"{k} {_fmt(m[k])}" for k in ("roc_auc", "pr_auc", "brier", "recall_at_k") if k in m)
    if kind == "feature_importances":
        imp = {k: v for k, v in values.get("importances", {}).items() if not k.endswith(".sd")}
        top = sorted(imp.items(), key=lambda kv: -(kv[1] if isinstance(kv[1], float | int) else 0))[:4]
        return ", ".join(f"{k} {_fmt(v)}" for k, v in top)
    if kind == "tree_structure":
        nodes = values.get("nodes", [])
        leaves = sum(1 for n in nodes if n.get("feature") is None)
        return f"{leaves} leaves" + (" (class counts withheld)" if values.get("class_counts_withheld") else "")
    if kind == "test_result":
        return f"statistic {_fmt(values.get('statistic'))}, p {values.get('p_value', float('nan')):.3g}"
    if kind == "regression":
        return ", ".join(f"{k} {_fmt(v)}" for k, v in values.get("coefficients", {}).items())
    if "rows" in values:
        cols = values["columns"]
        rows = values["rows"]
        mark = "≈" if noisy or values.get("exact") is False else "="

        def cell(c: str, v: Any) -> str:  # the statistics (n, sum, mean, quantiles) carry the noise, not the keys
            statistic = c in ("n", "sum", "mean") or re.fullmatch(r"q[0-9.]+", c) is not None
            return f"{c}{mark}{_fmt(v)}" if statistic and v is not None else f"{c}={_fmt(v)}"

        return "; ".join(" ".join(cell(c, v) for c, v in zip(cols, r, strict=False) if c != "status") for r in rows[:8])
    return ""


def run_analysis(
    workspace: Path,
    plan_path: Path,
    factors_path: Path,
    release_policy_path: Path,
    officer_keys: Sequence[OfficerKey],
    *,
    progress_total: Callable[[int], None] | None = None,
    progress: Progress | None = None,
    passphrase: str | None = None,
) -> AnalysisReport:
    """Run the signed plan on the workspace's linked datasets and release every output through the gate
    (which signs its ledger entries with the gate key: ``passphrase``, else ``$KANSRIJK_PASSPHRASE``)."""
    from kansrijk.gate.release import Gate

    start = time.perf_counter()
    policies = load_policies(plan_path, factors_path, officer_keys)
    with Gate.open(Path(workspace), Path(release_policy_path), officer_keys, passphrase=passphrase) as gate:
        tree_rules = gate.policy.sdc.tree
        check_plan_against_release(
            policies.plan,
            policies.plan_path,
            min_leaf_persons=tree_rules.min_leaf_persons,
            min_samples_leaf_training=tree_rules.min_samples_leaf_training,
            bands=gate.policy.grids.bands,
        )
        leaf_rules = LeafRules(min_leaf_persons=tree_rules.min_leaf_persons, min_class_count=tree_rules.min_class_count)
        datasets = load_datasets(workspace, policies.plan, policies.plan_path)
        fits = count_model_fits(
            policies, scopes_of(datasets, policies.plan.cohort.pooled, complete_years(policies, datasets))
        )
        if progress_total is not None:
            progress_total(fits)
        lines = skipped_lines(policies, datasets) + [
            summarise_release(planned, gate.release(planned.request, requested_by=REQUESTED_BY))
            for planned in analysis_requests(policies, datasets, leaf_rules=leaf_rules, progress=progress)
        ]
    return AnalysisReport(
        lines=tuple(lines),
        seconds=time.perf_counter() - start,
        model_fits=fits,
        plan_digest=policies.plan_digest,
        factors_digest=policies.factors_digest,
    )


__all__ = [
    "REQUESTED_BY",
    "AnalysisReport",
    "Planned",
    "SummaryLine",
    "analysis_requests",
    "count_model_fits",
    "run_analysis",
    "scopes_of",
    "skipped_lines",
    "summarise_release",
]
