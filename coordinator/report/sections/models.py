"""Model comparison: every model's out-of-fold metrics against chance, all variables against the factor model
(with paired-bootstrap intervals), and each DP model's AUC next to its non-private tree's."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..catalogue import Catalogue
from ..figures import auc_figure, forest_figure, privacy_cost_figure
from ..fmt import METRIC_ORDER, as_float, feature_set_label, fmt_fraction, fmt_metric, fmt_number, fmt_p, fmt_pm, label
from ..fmt import metric_label as _metric_label
from ..released import Release, Scope
from ..view import Cell, Figure, Item, Section, TableView, by_scope, group_badges, value_cell
from .dp_models import DP_MODEL_LABEL, dp_metric


def metric_label(metric: str, releases: Sequence[Release]) -> str:
    """The metric's label, with the k of "recall in top k%" from the releases (when they agree on one)."""
    ks = {r.top_k_percent for r in releases if r.top_k_percent is not None}
    return _metric_label(metric, ks.pop() if len(ks) == 1 else None)


def models_section(catalogue: Catalogue) -> Section:
    intro = (
        "Each outcome was modelled with decision trees twice: with all available variables and with only the "
        "indicators of the literature factor model. Metrics are out-of-fold (cross-validated), ± one standard "
        "deviation over the folds. A ROC AUC of 0.5 is ranking at random (chance); recall in the top k% is the "
        "share of everyone with the outcome among the k% of persons ranked at highest risk (k% by chance). The "
        "difference is all variables minus factor model, with its paired-bootstrap interval; an interval that "
        "excludes 0 means the feature sets really differ. Higher is better, except for the Brier score."
    )
    items: list[Item] = []
    for scope, group in by_scope(catalogue.metrics):
        items.append(_metrics_item(scope, group))
    for scope, group in by_scope(catalogue.compares):
        items.append(_compare_item(scope, group))
    trees = {(r.scope, r.outcome, r.feature_set): r for r in catalogue.metrics}
    for scope, group in by_scope(catalogue.dp_models):
        items.append(_dp_comparison_item(scope, group, trees))
    return Section("models", "Model comparison", intro, tuple(items))


def _metrics_item(scope: Scope, group: Sequence[Release]) -> Item:
    rows, points = [], []
    for r in group:
        m = r.values.get("metrics") or {}
        cells = [
            Cell(label(r.outcome or "")),
            Cell(feature_set_label(r.feature_set)),
            Cell(fmt_number(r.values.get("n")), "num"),
            Cell(fmt_number(r.values.get("n_positive")), "num"),
        ]
        for metric in METRIC_ORDER:
            cells.append(Cell(fmt_pm(m.get(metric), m.get(f"{metric}.fold_sd")), "num"))
        rows.append(tuple(cells))
        auc, sd = as_float(m.get("roc_auc")), as_float(m.get("roc_auc.fold_sd")) or 0.0
        if auc is not None:
            points.append(
                {
                    "model": f"{label(r.outcome or '')}, {feature_set_label(r.feature_set)}",
                    "feature set": feature_set_label(r.feature_set),
                    "auc": auc,
                    "sd": sd,
                    "low": auc - sd,
                    "high": auc + sd,
                }
            )
    table = TableView(
        "Out-of-fold metrics per model (± standard deviation over folds)",
        ("outcome", "feature set", "persons", "positives", *(metric_label(x, group) for x in METRIC_ORDER)),
        tuple(rows),
        css="metrics",
    )
    figures: tuple[Figure, ...] = ()
    if points:
        figures = (
            auc_figure(
                points,
                title="ROC AUC per model (± one standard deviation over folds); the dashed line is chance (0.5)",
                alt="For each outcome and feature set, a dot at the model's ROC AUC with a line of one standard "
                "deviation over folds either side, and a dashed vertical line at 0.5 (ranking at random). The table "
                "gives the numbers.",
            ),
        )
    return Item(
        title=f"Every model, {scope.label}",
        anchor=f"metrics-{scope.key}",
        tables=(table,),
        figures=figures,
        badges=group_badges(group),
        sources=tuple(r.name for r in group),
    )


def _compare_item(scope: Scope, group: Sequence[Release]) -> Item:
    rows, points = [], []
    for r in group:
        m = r.values.get("metrics") or {}
        a, b = r.labels
        for metric in METRIC_ORDER:
            if f"{metric}.delta" not in m:
                continue
            low, high = as_float(m.get(f"{metric}.ci_low")), as_float(m.get(f"{metric}.ci_high"))
            rows.append(
                (
                    Cell(label(r.outcome or "")),
                    Cell(metric_label(metric, group)),
                    Cell(fmt_metric(m.get(f"{metric}.{a}")), "num"),
                    Cell(fmt_metric(m.get(f"{metric}.{b}")), "num"),
                    Cell(fmt_metric(m.get(f"{metric}.delta")), "num"),
                    Cell(f"{fmt_metric(low)} to {fmt_metric(high)}", "num"),
                    Cell(fmt_p(m.get(f"{metric}.p")), "num"),
                )
            )
            delta = as_float(m.get(f"{metric}.delta"))
            if delta is not None and low is not None and high is not None:
                points.append(
                    {
                        "outcome": label(r.outcome or ""),
                        "metric": metric_label(metric, group),
                        "value": delta,
                        "low": low,
                        "high": high,
                    }
                )
    labels = group[0].labels if group else ("all", "factor_model")
    table = TableView(
        "All variables vs factor model per outcome and metric",
        ("outcome", "metric", *(feature_set_label(x) for x in labels), "difference", "interval", "p-value"),
        tuple(rows),
    )
    figures: tuple[Figure, ...] = ()
    if points:
        figures = (
            forest_figure(
                points,
                metrics=[metric_label(x, group) for x in METRIC_ORDER],
                title="Difference all variables − factor model, with its interval",
                alt="For each outcome and metric, a dot at the difference between the all-variables and "
                "factor-model trees with a line for its interval; a vertical line marks no difference. The table "
                "gives the numbers.",
            ),
        )
    return Item(
        title=f"All variables vs factor model, {scope.label}",
        anchor=f"compare-{scope.key}",
        tables=(table,),
        figures=figures,
        badges=group_badges(group),
        sources=tuple(r.name for r in group),
    )


ModelKey = tuple[Scope, str | None, str]  # scope, outcome, feature set


def _dp_comparison_item(scope: Scope, dp_group: Sequence[Release], trees: Mapping[ModelKey, Release]) -> Item:
    """The DP model's AUC next to the non-private tree's, per outcome and feature set of one scope."""
    rows, points = [], []
    matched: list[Release] = []
    for r in dp_group:
        tree = trees.get((scope, r.outcome, r.feature_set))
        matched += [tree] if tree is not None else []
        tm = (tree.values.get("metrics") or {}) if tree is not None else {}
        t_auc, d_auc = as_float(tm.get("roc_auc")), dp_metric(r, "roc_auc")
        diff = None if t_auc is None or d_auc is None else d_auc - t_auc
        rows.append(
            (
                Cell(label(r.outcome or "")),
                Cell(feature_set_label(r.feature_set)),
                Cell(fmt_fraction(r.epsilon), "num"),
                Cell(fmt_number(t_auc), "num"),
                value_cell(d_auc, noisy=True),
                value_cell(diff, noisy=True),
                Cell(fmt_number(as_float(tm.get("pr_auc"))), "num"),
                value_cell(dp_metric(r, "pr_auc"), noisy=True),
            )
        )
        if t_auc is not None and d_auc is not None:
            model = DP_MODEL_LABEL.get(str(r.values.get("model")), "DP model")
            points.append(
                {
                    "model": f"{label(r.outcome or '')}, {feature_set_label(r.feature_set)}",
                    "tree": t_auc,
                    "dp": d_auc,
                    "dp model": f"{model}, ε {r.epsilon}",
                }
            )
    table = TableView(
        "ROC AUC and PR AUC of the non-private tree (exact, out-of-fold over all persons) and of the DP model "
        "(≈ noisy, on one held-out fold); the difference is DP minus tree: what privacy cost",
        ("outcome", "feature set", "ε", "ROC AUC tree", "ROC AUC DP", "difference", "PR AUC tree", "PR AUC DP"),
        tuple(rows),
    )
    figures: tuple[Figure, ...] = ()
    if points:
        figures = (
            privacy_cost_figure(
                points,
                title="ROC AUC of the non-private tree and of the DP model; the line between them is what privacy "
                "cost, the dashed line is chance (0.5)",
                alt="For each outcome and feature set with a DP model, a blue dot at the non-private tree's ROC AUC "
                "and a purple dot at the DP model's noisy ROC AUC, joined by a line, and a dashed line at 0.5; the "
                "table gives the numbers.",
            ),
        )
    return Item(
        title=f"Differentially private vs non-private, {scope.label}",
        anchor=f"dp-vs-tree-{scope.key}",
        text="The DP model's held-out fold is small and its metrics carry noise, so differences of a few hundredths "
        "can be noise alone.",
        tables=(table,),
        figures=figures,
        badges=group_badges([*dp_group, *matched]),
        sources=tuple(r.name for r in dp_group),
    )
