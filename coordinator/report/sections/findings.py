"""Findings in words: one paragraph group per outcome and scope, generated from released numbers only
(``coordinator/report/findings.py`` says how each sentence is chosen)."""

from __future__ import annotations

from ..catalogue import Catalogue
from ..findings import MIN_IMPORTANCE, TIMES, Difference, OutcomeNumbers, Proxy, Quality, findings
from ..fmt import METRIC_ORDER, as_float, capitalise, fmt_importance, label
from ..released import Scope
from ..view import Item, Section, group_badges
from .base_rates import not_modelled_reason, positives_of
from .factors import coverage_of, unmapped_variables
from .importances import importances_of


def outcome_numbers(catalogue: Catalogue, scope: Scope, outcome: str) -> tuple[OutcomeNumbers, list[str]]:
    """The released numbers of one outcome in one scope, and the names of the releases they come from."""
    used: list[str] = []
    positives = catalogue.positives(scope, outcome)
    persons = positives_count = None
    noisy = False
    if positives is not None:
        p = positives_of(positives)
        persons, positives_count, noisy = p.persons, p.positives, p.noisy
        used.append(positives.name)
    if positives is not None and not catalogue.modelled(scope, outcome):
        return OutcomeNumbers(
            outcome, persons, positives_count, noisy, not_modelled=not_modelled_reason(positives)
        ), used
    models = []
    for fs in catalogue.feature_sets(scope, outcome):
        r = catalogue.model_metrics(scope, outcome, fs)
        if r is None:
            continue
        used.append(r.name)
        m = r.values.get("metrics") or {}
        models.append(
            Quality(
                feature_set=fs,
                roc_auc=as_float(m.get("roc_auc")),
                roc_sd=as_float(m.get("roc_auc.fold_sd")),
                recall=as_float(m.get("recall_at_k")),
                recall_sd=as_float(m.get("recall_at_k.fold_sd")),
                k_percent=r.top_k_percent,
            )
        )
    importance = catalogue.importance(scope, outcome, "all", "permutation")
    importances = tuple(importances_of(importance)) if importance is not None else ()
    if importance is not None:
        used.append(importance.name)
    compare = catalogue.comparison(scope, outcome)
    differences = []
    labels: tuple[str, str] = ("all", "factor_model")
    confidence = None
    if compare is not None:
        used.append(compare.name)
        a, b = compare.labels
        labels = (a, b)
        confidence = as_float(compare.doc.spec.get("confidence"))
        m = compare.values.get("metrics") or {}
        for metric in METRIC_ORDER:
            delta, low, high = (as_float(m.get(f"{metric}.{k}")) for k in ("delta", "ci_low", "ci_high"))
            if delta is not None and low is not None and high is not None:
                differences.append(
                    Difference(
                        metric, as_float(m.get(f"{metric}.{a}")), as_float(m.get(f"{metric}.{b}")), delta, low, high
                    )
                )
    uncovered: tuple[str, ...] = ()
    factor_importance: dict[str, float] = {}
    proxies: list[Proxy] = []
    unmapped: tuple[str, ...] = ()
    factors = catalogue.factor_coverage(scope, outcome)
    if factors is not None:
        used.append(factors.name)
        c = coverage_of(factors)
        uncovered = c.uncovered
        factor_importance = {f: v for f, v in c.factor_importance.items() if v is not None}
        by_variable = {i.variable: i.value for i in importances}
        for factor, variables in c.proxies.items():
            for v in variables:
                value = by_variable.get(v, c.proxy_importance.get(factor) if len(variables) == 1 else None)
                if value is not None:
                    proxies.append(Proxy(v, factor, value))
        unmapped = tuple(v for v, _, _ in unmapped_variables(catalogue, factors))
    return (
        OutcomeNumbers(
            outcome=outcome,
            persons=persons,
            positives=positives_count,
            noisy_counts=noisy,
            models=tuple(models),
            importances=importances,
            differences=tuple(differences),
            labels=labels,
            confidence=confidence,
            uncovered_factors=uncovered,
            factor_importance=factor_importance,
            proxies=tuple(proxies),
            unmapped=unmapped,
        ),
        used,
    )


def findings_section(catalogue: Catalogue) -> Section:
    intro = (
        "What the released numbers say, per outcome, in words. Every sentence is generated from the numbers in the "
        "sections below (nothing is written in advance): which variables matter and how sure that is, how well the "
        "model predicts against chance and against the factor model, and what cannot be concluded. An importance "
        f"counts as standing out only when it is at least {fmt_importance(MIN_IMPORTANCE)} and more than {TIMES} its "
        "spread over the folds."
    )
    releases = {r.name: r for r in (*catalogue.base_rates, *catalogue.metrics, *catalogue.importances,
                                   *catalogue.compares, *catalogue.factors)}  # fmt: skip
    items = []
    for scope in catalogue.scopes():
        for outcome in catalogue.outcomes(scope):
            numbers, used = outcome_numbers(catalogue, scope, outcome)
            paragraphs = findings(numbers).paragraphs
            if not paragraphs:
                continue
            items.append(
                Item(
                    title=f"{capitalise(label(outcome))}, {scope.label}",
                    anchor=f"findings-{scope.key}-{outcome}",
                    paragraphs=paragraphs,
                    badges=group_badges([releases[n] for n in used if n in releases]),
                    sources=tuple(used),
                )
            )
    return Section("findings", "Findings in words", intro, tuple(items), empty="No outcome was analysed.")
