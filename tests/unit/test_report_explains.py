"""The report's explanations as pure functions of released numbers: findings in words, trees as rules and
diagrams, years side by side. Each test changes a number and checks that the words follow."""

from __future__ import annotations

import re

import pytest

from coordinator.report.findings import (
    Change,
    Difference,
    Importance,
    OutcomeNumbers,
    Proxy,
    Quality,
    change_sentences,
    findings,
)
from coordinator.report.fmt import fmt_pm
from coordinator.report.tree_svg import MAX_SLOTS, cut_depth, tree_svg
from coordinator.report.trees import Tree, leaf_rules


def _numbers(**kw) -> OutcomeNumbers:  # type: ignore[no-untyped-def]
    base = {
        "outcome": "psychosocial_risk",
        "persons": 13_000,
        "positives": 1_300,
        "models": (
            Quality("all", 0.72, 0.01, recall=0.35, recall_sd=0.01, k_percent=10.0),
            Quality("factor_model", 0.61, 0.02),
        ),
        "importances": (
            Importance("woz_eur", 0.18, 0.02),
            Importance("low_income", 0.005, 0.004),
            Importance("sex", 0.0002, 0.0003),
        ),
        "differences": (Difference("roc_auc", 0.72, 0.61, 0.11, 0.09, 0.13),),
        "confidence": 0.95,
    }
    base.update(kw)
    return OutcomeNumbers(**base)


# --- what matters ---------------------------------------------------------------------------------------------
def test_the_variable_that_stands_out_is_named_with_its_uncertainty() -> None:
    f = findings(_numbers())
    assert f.matters.startswith("WOZ value matters most for psychosocial risk: shuffling it lowers the ROC AUC by")
    assert fmt_pm(0.18, 0.02) in f.matters and "No other variable stands out" in f.matters
    assert "The importance of low income is inside its noise" in f.cannot
    assert "1 other variable shows no measurable importance" in f.cannot


def test_an_importance_inside_its_noise_is_never_called_important() -> None:
    noisy = findings(_numbers(importances=(Importance("woz_eur", 0.18, 0.10), Importance("sex", 0.0001, 0.0))))
    assert "matters most" not in noisy.matters
    assert noisy.matters.startswith("No variable's importance for psychosocial risk stands out from its noise")
    assert "The importance of WOZ value is inside its noise" in noisy.cannot


def test_several_variables_that_stand_out_are_listed_in_order() -> None:
    imps = (Importance("age_years", 0.05, 0.01), Importance("woz_eur", 0.2, 0.02), Importance("sex", 0.01, 0.002))
    f = findings(_numbers(importances=imps))
    assert f.matters.startswith("WOZ value matters most")
    assert re.search(r"Next come age \(.*\) and sex \(.*\)\.", f.matters)


# --- model quality: chance and the k of recall ----------------------------------------------------------------
def test_quality_is_read_against_chance_and_names_k() -> None:
    f = findings(_numbers())
    assert "ROC AUC 0.720 ± 0.010" in f.quality and "clearly better than chance" in f.quality
    assert "Among the 10% of persons it ranks at highest risk it finds 35%" in f.quality
    assert "3.5 times as well as chance" in f.quality
    assert "Of the 13,000 persons in its population, 10% have psychosocial risk." in f.quality
    other = findings(
        _numbers(
            models=(Quality("all", 0.53, 0.02, recall=0.3, recall_sd=0.01, k_percent=20.0),),
            noisy_counts=True,
        )
    )
    assert "not clearly better than chance" in other.quality and "weak" in other.quality
    assert "Among the 20% of persons" in other.quality and "picking 20% at random finds 20%" in other.quality
    assert other.quality.startswith("Of about 13,000 persons in its population, about 10%")


# --- against the factor model ---------------------------------------------------------------------------------
def test_the_comparison_follows_the_interval() -> None:
    better = findings(_numbers()).comparison
    assert better.startswith("The all-variables tree ranks better than the factor-model tree: ROC AUC 0.720")
    assert "95% interval 0.090 to 0.130" in better
    same = findings(_numbers(differences=(Difference("roc_auc", 0.72, 0.70, 0.02, -0.01, 0.05),))).comparison
    assert same.startswith("The all-variables and factor-model trees rank equally well within the uncertainty")
    assert "holds 0" in same
    worse = findings(_numbers(differences=(Difference("roc_auc", 0.60, 0.70, -0.10, -0.13, -0.07),))).comparison
    assert worse.startswith("The factor-model tree ranks better than the all-variables tree: ROC AUC 0.700")


def test_a_metric_that_disagrees_with_the_ranking_is_named() -> None:
    """The factsheet's psychosocial finding: one feature set ranks better, the other finds the positives better."""
    diffs = (
        Difference("roc_auc", 0.62, 0.65, -0.03, -0.05, -0.01),
        Difference("recall_at_k", 0.30, 0.25, 0.05, 0.02, 0.08),
        Difference("brier", 0.08, 0.09, -0.01, -0.02, -0.005),  # lower is better: all variables
    )
    text = findings(_numbers(differences=diffs)).comparison
    assert text.startswith("The factor-model tree ranks better")
    assert "However, on recall in top 10% the all-variables tree does better" in text
    assert "However, on Brier score (lower is better) the all-variables tree does better" in text


# --- what cannot be concluded ---------------------------------------------------------------------------------
def test_factors_without_indicator_proxies_and_unmapped_variables_are_named() -> None:
    plain = findings(_numbers()).cannot
    assert "proxy" not in plain and "no indicator" not in plain
    f = findings(
        _numbers(
            uncovered_factors=("parental_mental_health", "peers_and_leisure"),
            proxies=(Proxy("woz_eur", "household_income", 0.18),),
            factor_importance={"household_income": 0.004},
            unmapped=("sex", "age_years"),
            importances=(Importance("woz_eur", 0.18, 0.02), Importance("age_years", 0.03, 0.005)),
        )
    ).cannot
    assert "Parental mental health and peers and leisure have no indicator in the data" in f
    assert "WOZ value is a proxy for household income in the factor model, not an indicator" in f
    assert "its importance of 0.180" in f and "own indicators together reach 0.004" in f
    assert "Age stands out but belongs to no factor of the factor model." in f


def test_an_outcome_that_was_not_modelled_says_why_and_nothing_more() -> None:
    f = findings(_numbers(not_modelled="fewer positives than the plan's minimum of 1000", positives=90))
    assert f.paragraphs == (
        "Of the 13,000 persons in its population, 0.7% have psychosocial risk. It was not modelled: fewer positives "
        "than the plan's minimum of 1000.",
        "Nothing can be concluded here about what predicts psychosocial risk: no model was released.",
    )


# --- years ----------------------------------------------------------------------------------------------------
def test_a_change_between_years_is_judged_by_its_interval_or_spread() -> None:
    inside = Change("ROC AUC of the all-variables tree", 2022, 2023, 0.715, 0.728, low=-0.011, high=0.035)
    beyond = Change("ROC AUC of the all-variables tree", 2022, 2023, 0.70, 0.75, low=0.02, high=0.08)
    assert inside.beyond is False and beyond.beyond is True
    text = change_sentences("psychosocial_risk", [inside, beyond], [])
    assert "within its uncertainty (interval -0.011 to 0.035)" in text[0]
    assert "more than its uncertainty" in text[1] and "+0.050" in text[1]
    moved = Change("woz_eur", 2022, 2023, 0.10, 0.20, first_sd=0.02, last_sd=0.02)
    steady = Change("low_income", 2022, 2023, 0.010, 0.012, first_sd=0.01, last_sd=0.01)
    assert moved.beyond is True and steady.beyond is False
    words = " ".join(change_sentences("psychosocial_risk", [], [moved, steady]))
    assert "changed by more than twice their combined spread over the folds: WOZ value (0.100 → 0.200)" in words
    assert "The importances of low income did not change beyond their uncertainty." in words
    assert Change("x", 2022, 2023, 0.1, 0.2).beyond is None


# --- trees ----------------------------------------------------------------------------------------------------
def _node(node_id, depth, counts, feature=None, threshold=None, categories=(), missing_left=False, left=None, right=None):  # type: ignore[no-untyped-def]  # noqa: E501
    return {
        "node_id": node_id,
        "depth": depth,
        "class_counts": counts,
        "feature": feature,
        "threshold": threshold,
        "categories": list(categories),
        "missing_left": missing_left,
        "left": left,
        "right": right,
    }


TREE = {
    "nodes": [
        _node(0, 0, [900, 100], "woz_eur", 180_000.0, left=1, right=2),
        _node(1, 1, [300, 90], "youth_care", categories=[True], missing_left=False, left=3, right=4),
        _node(2, 1, [600, 10]),
        _node(3, 2, [100, 30]),
        _node(4, 2, [200, 60], "woz_eur", 120_000.0, missing_left=True, left=5, right=6),
        _node(5, 3, [50, 40]),
        _node(6, 3, [150, 20]),
    ]
}


def test_every_leaf_becomes_one_rule_with_merged_conditions() -> None:
    tree = Tree.from_values(TREE)
    assert tree is not None
    rules = {r.node_id: r.sentence() for r in leaf_rules(tree)}
    assert rules == {
        3: "WOZ value at most €180,000 and youth care: 23% (130 persons)",
        2: "WOZ value above €180,000 (or unknown): 1.6% (610 persons)",
        # two splits on WOZ value become one range; a missing WOZ value went right at the root, so not here
        5: "WOZ value at most €120,000 and no youth care (or unknown): 44% (90 persons)",
        6: "WOZ value between €120,000 and €180,000 and no youth care (or unknown): 12% (170 persons)",
    }


def test_whole_numbers_and_long_lists_read_naturally() -> None:
    values = {
        "nodes": [
            _node(0, 0, [90, 10], "age_years", 11.5, left=1, right=2),
            _node(1, 1, [40, 5]),
            _node(2, 1, [50, 5], "buurt_code", categories=[f"BU0599{i:04d}" for i in range(8)], left=3, right=4),
            _node(3, 2, [20, 2]),
            _node(4, 2, [30, 3]),
        ]
    }
    tree = Tree.from_values(values)
    assert tree is not None
    rules = {r.node_id: r for r in leaf_rules(tree)}
    assert rules[1].text == "age at most 11"
    assert rules[3].text == (
        "age 12 or more (or unknown) and buurt is one of 8 values (BU05990000, BU05990001, BU05990002, …)"
    )
    assert "BU05990007" in rules[3].full_text
    assert rules[4].text.startswith("age 12 or more (or unknown) and buurt is not one of 8")


@pytest.mark.parametrize("withheld", [None, [None, None], [120, None]])
def test_withheld_counts_are_withheld_in_rules_and_drawing(withheld) -> None:  # type: ignore[no-untyped-def]
    values = {"nodes": [dict(n, class_counts=withheld) if n["node_id"] in (4, 5, 6) else n for n in TREE["nodes"]]}
    tree = Tree.from_values(values)
    assert tree is not None and tree.withheld
    rules = {r.node_id: r for r in leaf_rules(tree)}
    assert rules[5].persons is None and rules[5].sentence().endswith(": counts withheld")
    svg = str(tree_svg(tree, outcome="psychosocial risk"))
    assert svg.count(">withheld</text>") == 2 and "130 persons</text>" in svg


def test_a_deep_tree_is_cut_where_it_would_not_fit() -> None:
    nodes, next_id = [], 1

    def grow(node_id: int, depth: int) -> None:
        nonlocal next_id
        if depth == 6:
            nodes.append(_node(node_id, depth, [80, 20]))
            return
        left, right = next_id, next_id + 1
        next_id += 2
        nodes.append(_node(node_id, depth, [80 * 2 ** (6 - depth), 20 * 2 ** (6 - depth)], "bmi", 20.0 + depth,
                           left=left, right=right))  # fmt: skip
        grow(left, depth + 1)
        grow(right, depth + 1)

    grow(0, 0)
    tree = Tree.from_values({"nodes": nodes})
    assert tree is not None and tree.depth == 6 and len(tree.leaves()) == 64
    depth = cut_depth(tree)
    assert 2 ** depth <= MAX_SLOTS < 2 ** (depth + 1)
    svg = str(tree_svg(tree, outcome="x"))
    assert svg.count('class="node cut"') == 2**depth and "8 leaves below" in svg
    assert len(leaf_rules(tree)) == 64  # the rules keep every leaf


@pytest.mark.parametrize(
    "broken",
    [
        {"nodes": []},
        {"nodes": [_node(0, 0, [1, 1], "bmi", 1.0, left=1, right=2), _node(1, 1, [1, 0])]},  # a missing child
        {"nodes": [_node(1, 0, [1, 1])]},  # no root
    ],
)
def test_nodes_that_do_not_form_a_tree_are_not_drawn(broken) -> None:  # type: ignore[no-untyped-def]
    assert Tree.from_values(broken) is None
