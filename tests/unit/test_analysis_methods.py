"""The analysis's statistical building blocks on data with a known answer: metrics equal scikit-learn's, the
paired bootstrap finds a real difference and not a null one, the association tests tell a U from a line, and the
tree offered for release obeys the leaf rules."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import expit
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from coordinator.analysis.plan import Design
from coordinator.analysis.trees import (
    ENGINES,
    LeafRules,
    TreeSettings,
    class_weights,
    cross_validate,
    depth_view,
    fit_final_tree,
    node_class_counts,
    node_depths,
    prune_to_rules,
    stable_seed,
    unweighted_probability,
)
from kansrijk.stats.association import associate, bin_labels, mutual_information
from kansrijk.stats.compare import paired_bootstrap
from kansrijk.stats.metrics import score_metrics


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(0, 6)), min_size=4, max_size=80).filter(
        lambda rows: 0 < sum(r[0] for r in rows) < len(rows)
    )
)
def test_metrics_equal_scikit_learn_with_ties(rows: list[tuple[bool, int]]) -> None:
    y = np.array([r[0] for r in rows], dtype=np.int64)
    s = np.array([r[1] for r in rows], dtype=np.float64) / 6.0
    m = score_metrics(y, s, 10.0)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, s))
    assert m["brier"] == pytest.approx(brier_score_loss(y, s))


def test_recall_at_k_counts_ties_at_the_boundary_fractionally() -> None:
    y = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1])
    # top 20% = 2 persons: the 0.9 (a positive) and half of the two tied at 0.5 (one positive) -> 1.5 of 2
    assert score_metrics(y, s, 20.0)["recall_at_k"] == pytest.approx(0.75)
    # order of rows does not matter
    perm = np.random.default_rng(1).permutation(10)
    assert score_metrics(y[perm], s[perm], 20.0)["recall_at_k"] == pytest.approx(0.75)


def _scores(rng: np.random.Generator, n: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    x = rng.normal(size=n)
    y = (rng.random(n) < expit(-2 + signal * x)).astype(np.int64)
    return y, x


def test_paired_bootstrap_finds_a_real_difference_with_an_interval_around_it() -> None:
    rng = np.random.default_rng(3)
    n = 6000
    x = rng.normal(size=n)
    y = (rng.random(n) < expit(-2 + 1.5 * x)).astype(np.int64)
    good = np.round(x, 1)  # informative score
    weak = np.round(x + rng.normal(scale=2.0, size=n), 1)  # same signal, much noise
    comp = paired_bootstrap(y, good, weak, top_k_percent=10, replicates=400, confidence=0.95, rng=rng)
    auc = comp.differences["roc_auc"]
    assert auc.delta == pytest.approx(roc_auc_score(y, good) - roc_auc_score(y, weak))
    assert 0 < auc.ci_low < auc.delta < auc.ci_high
    assert auc.p_two_sided < 0.01
    assert comp.differences["recall_at_k"].ci_low > 0


def test_paired_bootstrap_of_two_equally_good_scores_includes_zero() -> None:
    rng = np.random.default_rng(4)
    n = 6000
    x = rng.normal(size=n)
    y = (rng.random(n) < expit(-2 + 1.0 * x)).astype(np.int64)
    a = np.round(x + rng.normal(scale=0.5, size=n), 1)
    b = np.round(x + rng.normal(scale=0.5, size=n), 1)
    comp = paired_bootstrap(y, a, b, top_k_percent=10, replicates=400, confidence=0.95, rng=rng)
    for m in ("roc_auc", "pr_auc", "recall_at_k", "brier"):
        d = comp.differences[m]
        assert d.ci_low <= 0 <= d.ci_high, m
    assert not comp.disagree


def test_paired_bootstrap_is_deterministic_given_the_generator() -> None:
    y, x = _scores(np.random.default_rng(5), 2000, 1.0)
    s1, s2 = np.round(x, 1), np.round(-x * 0.1 + x, 2)
    a = paired_bootstrap(y, s1, s2, top_k_percent=10, replicates=100, confidence=0.9, rng=np.random.default_rng(9))
    b = paired_bootstrap(y, s1, s2, top_k_percent=10, replicates=100, confidence=0.9, rng=np.random.default_rng(9))
    assert a == b


def test_association_tests_tell_a_u_from_a_line() -> None:
    rng = np.random.default_rng(6)
    n = 20_000
    woz = np.exp(rng.normal(np.log(250_000), 0.45, size=n))
    z = (np.log(woz) - np.log(woz).mean()) / np.log(woz).std()
    edges = (100_000, 150_000, 200_000, 250_000, 300_000, 400_000, 500_000)
    # a U with no linear component in WOZ: centre chosen so cov(WOZ, p) is (about) zero
    centre = 0.25
    y_u = (rng.random(n) < expit(-2.4 + 0.6 * (z - centre) ** 2)).astype(np.int64)
    u = associate(woz, y_u, scale=1e5, spline_df=5, edges=edges, permutations=499, rng=rng)
    assert u.tests["nonlinearity_lr"].p_value < 1e-6
    assert u.tests["spline_lr"].p_value < 1e-6
    assert u.tests["mutual_information"].p_value < 0.01
    assert u.tests["nonlinearity_lr"].df == 4 and u.tests["linear_lr"].df == 1
    # a straight line: linear significant, no non-linearity
    y_l = (rng.random(n) < expit(-2.2 + 0.4 * (woz - woz.mean()) / 1e5)).astype(np.int64)
    lin = associate(woz, y_l, scale=1e5, spline_df=5, edges=edges, permutations=499, rng=rng)
    assert lin.tests["linear_lr"].p_value < 1e-6
    assert lin.tests["nonlinearity_lr"].p_value > 0.01
    assert lin.verdict(0.05).startswith("linear association")
    # no relation at all
    y_0 = (rng.random(n) < 0.1).astype(np.int64)
    none = associate(woz, y_0, scale=1e5, spline_df=5, edges=edges, permutations=499, rng=rng)
    assert none.tests["spline_lr"].p_value > 0.01 and none.tests["linear_lr"].p_value > 0.01
    assert none.tests["mutual_information"].p_value > 0.01


def test_wald_and_lr_agree_with_a_hand_computed_logistic_fit() -> None:
    rng = np.random.default_rng(8)
    x = rng.normal(3.0, 1.0, size=5000) * 1e5
    y = (rng.random(5000) < expit(-1 + 0.5 * (x / 1e5 - 3))).astype(np.int64)
    res = associate(x, y, scale=1e5, spline_df=4, edges=(200_000, 300_000, 400_000), permutations=99, rng=rng)
    assert res.linear_coefficients["per_100k"] == pytest.approx(0.5, abs=0.1)
    wald, lr = res.tests["linear_wald"], res.tests["linear_lr"]
    assert wald.statistic**2 == pytest.approx(lr.statistic, rel=0.1)  # asymptotically equivalent
    assert wald.residual_dof == 4998


def test_mutual_information_is_zero_for_independence_and_bins_are_open_ended() -> None:
    assert mutual_information(np.array([[90, 10], [180, 20]])) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(np.array([[100, 0], [0, 100]])) == pytest.approx(np.log(2))
    assert bin_labels((100_000, 200_000)) == ("<100000", "[100000,200000)", ">=200000")


def test_unweighted_probability_recovers_the_leaf_share_of_positives() -> None:
    # a leaf with 30 negatives and 10 positives, weights w0 = 0.6, w1 = 3.0
    w = {0: 0.6, 1: 3.0}
    p_weighted = np.array([10 * 3.0 / (10 * 3.0 + 30 * 0.6)])
    assert unweighted_probability(p_weighted, w)[0] == pytest.approx(10 / 40)


def _design(rng: np.random.Generator, n: int) -> tuple[Design, np.ndarray]:
    x = rng.normal(size=(n, 3)).astype(np.float32)
    y = (rng.random(n) < expit(-2.5 + 1.5 * x[:, 0] - 0.8 * (x[:, 1] > 0.5))).astype(np.int64)
    design = Design(X=x, columns=("a", "b", "c"), variable_of=("a", "b", "c"), dropped=())
    return design, y


@pytest.mark.parametrize("engine", ENGINES)
def test_released_tree_is_pruned_until_every_leaf_obeys_the_rules(engine: str) -> None:
    rng = np.random.default_rng(10)
    design, y = _design(rng, 4000)
    settings_ = TreeSettings(grid=((6, 20),), folds=3, engine=engine)
    model = fit_final_tree(design, y, (6, 20), settings_, stable_seed(1, "t"))
    counts = node_class_counts(model, design.X, y)
    leaves = model.tree_.children_left == -1
    assert ((counts[leaves] < 10).any(axis=1)).any(), "the raw tree has leaves the rules forbid"
    tree = prune_to_rules(model, design, y, LeafRules(min_leaf_persons=10, min_class_count=10))
    assert 1 < tree.leaves_after < tree.leaves_before
    total = np.array(tree.nodes[0].class_counts)
    assert total.tolist() == [int((y == 0).sum()), int(y.sum())]
    leaf_sum = np.zeros(2, dtype=np.int64)
    for node in tree.nodes:
        if node.is_leaf:
            assert sum(node.class_counts) >= 10 and min(node.class_counts) >= 10
            leaf_sum += node.class_counts
        else:
            kids = [tree.nodes[node.left], tree.nodes[node.right]]
            assert np.add(kids[0].class_counts, kids[1].class_counts).tolist() == list(node.class_counts)
    assert leaf_sum.tolist() == total.tolist()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_branch_without_positives_is_dropped_instead_of_collapsing_the_tree(engine: str) -> None:
    """Like pupils in the top track, who cannot move up: the first split isolates a group with no positives at
    all. Merging leaves would collapse the tree to its root; dropping that split keeps the informative branch."""
    rng = np.random.default_rng(12)
    n = 6000
    x = rng.normal(size=(n, 3)).astype(np.float32)
    top = x[:, 0] > 0.3
    y = (~top & (rng.random(n) < expit(-1.5 + 1.5 * x[:, 1]))).astype(np.int64)
    design = Design(X=x, columns=("a", "b", "c"), variable_of=("a", "b", "c"), dropped=())
    settings_ = TreeSettings(grid=((4, 50),), folds=3, engine=engine)
    model = fit_final_tree(design, y, (4, 50), settings_, stable_seed(1, "top"))
    assert model.tree_.feature[0] == 0, "the raw tree first splits off the group without positives"
    tree = prune_to_rules(model, design, y, LeafRules(min_leaf_persons=10, min_class_count=10))
    assert tree.leaves_after >= 4
    assert tree.nodes[0].class_counts == (int((y == 0).sum()), int(y.sum()))
    for node in tree.nodes:
        if node.is_leaf:
            assert min(node.class_counts) >= 10
        else:
            kids = tree.nodes[node.left], tree.nodes[node.right]
            assert np.add(kids[0].class_counts, kids[1].class_counts).tolist() == list(node.class_counts)
            assert kids[0].depth == kids[1].depth == node.depth + 1
    # the released counts are the persons routed through the released splits
    leaf = tree.nodes[0]
    rows = np.ones(n, dtype=bool)
    while not leaf.is_leaf:
        col = design.columns.index(leaf.feature)
        go_left = x[:, col] <= leaf.threshold
        rows &= go_left
        leaf = tree.nodes[leaf.left]
    assert (int((y[rows] == 0).sum()), int(y[rows].sum())) == leaf.class_counts


@pytest.mark.parametrize("engine", ENGINES)
def test_cross_validation_is_deterministic_and_selects_without_its_own_fold(engine: str) -> None:
    rng = np.random.default_rng(11)
    design, y = _design(rng, 3000)
    settings_ = TreeSettings(
        grid=((2, 20), (4, 20), (8, 20)), folds=4, n_jobs=2, permutation_repeats=2, shrinkage=(0.0, 100.0),
        engine=engine,
    )
    a = cross_validate(design, y, settings_, stable_seed(7, "x"))
    b = cross_validate(design, y, settings_, stable_seed(7, "x"))
    assert np.array_equal(a.oof, b.oof) and a.selected == b.selected and a.permutation == b.permutation
    assert a.selected_shrinkage == b.selected_shrinkage and set(a.selected_shrinkage) <= {0.0, 100.0}
    assert a.final_shrinkage in settings_.shrinkage
    assert a.metrics["roc_auc"] == pytest.approx(roc_auc_score(y, a.oof))
    assert set(np.unique(a.fold_of)) == {0, 1, 2, 3}
    # the informative variable dominates both importances; the noise variable is near zero
    assert max(a.permutation, key=lambda v: a.permutation[v].mean) == "a"
    assert abs(a.permutation["c"].mean) < 0.02
    assert a.final_params in settings_.grid


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("class_weight", ["balanced", "none"])
def test_a_deep_tree_cut_at_depth_d_is_the_tree_fitted_with_max_depth_d(class_weight: str, engine: str) -> None:
    """One fit per min_samples_leaf serves every depth of the grid: the cut tree predicts, and explains, exactly
    like a separate fit with that max_depth (missing values included). Exactly tied splits (the one-hot pair) are
    chosen at random by scikit-learn either way; the analysis sums a variable's one-hot columns, and so does this."""
    rng = np.random.default_rng(3)
    n = 5000
    x = rng.normal(size=(n, 5)).astype(np.float32)
    x[rng.random(n) < 0.1, 2] = np.nan
    x[:, 3] = (x[:, 3] > 0).astype(np.float32)
    x[:, 4] = 1.0 - x[:, 3]  # a one-hot pair: every split on one has a mirror split on the other
    y = (rng.random(n) < expit(-2 + x[:, 0] + 0.5 * x[:, 1] ** 2 - np.nan_to_num(x[:, 2]) + x[:, 3])).astype(np.int64)
    design = Design(X=x, columns=tuple("abcde"), variable_of=("a", "b", "c", "d", "d"), dropped=())
    settings_ = TreeSettings(grid=((8, 20),), folds=3, class_weight=class_weight, engine=engine)
    weights = class_weights(y, class_weight)
    deep = fit_final_tree(design, y, (8, 20), settings_, stable_seed(1, "deep"))
    for depth in (1, 2, 3, 5, 8):
        shallow = fit_final_tree(design, y, (depth, 20), settings_, stable_seed(1, "deep"))
        view = depth_view(deep, depth, weights)
        expected = unweighted_probability(shallow.predict_proba(x)[:, 1], weights)
        np.testing.assert_allclose(view.predict(x), expected, rtol=0, atol=1e-12)
        per_variable = np.add.reduceat(view.impurity_importances(), [0, 1, 2, 3])
        expected_imp = np.add.reduceat(shallow.feature_importances_, [0, 1, 2, 3])
        np.testing.assert_allclose(per_variable, expected_imp, rtol=0, atol=1e-12)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("class_weight", ["balanced", "none"])
def test_hierarchical_shrinkage_is_computed_from_the_persons_per_node(class_weight: str, engine: str) -> None:
    """The shrunk score of a leaf is the root's share of positives plus each step's change along its path, damped
    by 1 / (1 + lambda / persons in the parent) — computed here from person counts only (what the released
    structure carries), independently of the class weights the tree was grown with. lambda = 0 is the plain
    tree, and a cut tree's shrunk score is the full tree's shrunk score at the cut node."""
    rng = np.random.default_rng(21)
    design, y = _design(rng, 6000)
    settings_ = TreeSettings(grid=((6, 30),), folds=3, class_weight=class_weight, engine=engine)
    weights = class_weights(y, class_weight)
    model = fit_final_tree(design, y, (6, 30), settings_, stable_seed(1, "hs"))
    counts = node_class_counts(model, design.X, y).astype(np.float64)
    persons, share = counts.sum(axis=1), counts[:, 1] / counts.sum(axis=1)
    tree = model.tree_
    np.testing.assert_allclose(depth_view(model, 6, weights).score, share, rtol=0, atol=1e-12)
    lam = 250.0
    path = model.decision_path(design.X[:200]).toarray().astype(bool)
    expected = []
    for row in path:
        nodes = np.flatnonzero(row)  # root first: parents precede children
        s = share[nodes[0]]
        for parent, child in itertools.pairwise(nodes):
            s += (share[child] - share[parent]) / (1.0 + lam / persons[parent])
        expected.append(s)
    shrunk = depth_view(model, 6, weights, lam)
    np.testing.assert_allclose(shrunk.predict(design.X[:200]), expected, rtol=0, atol=1e-12)
    assert not np.allclose(shrunk.score, share), "shrinkage changes the scores"
    cut = depth_view(model, 2, weights, lam)
    at_depth_2 = np.flatnonzero(node_depths(model) == 2)
    np.testing.assert_allclose(cut.score[at_depth_2], shrunk.score[at_depth_2], rtol=0, atol=1e-12)
    assert tree.node_count > 7
