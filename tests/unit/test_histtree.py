"""Histogram trees (kansrijk.stats.histtree): equal to scikit-learn's exact tree where bins are values, valid and
optimal on any small data, counting each level's persons at most once per smaller child."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.tree import DecisionTreeClassifier

from kansrijk.stats.histtree import (
    BinnedMatrix,
    HistTree,
    column_edges,
    count_histograms,
    fit_tree,
    make_binning,
)


def _balanced(y: np.ndarray) -> dict[int, float]:
    n, n1 = y.size, int(y.sum())
    return {0: n / (2.0 * (n - n1)), 1: n / (2.0 * n1)}


def _few_values(seed: int, n: int, missing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Columns with 2..9 values each (so bins are values), an outcome depending on several of them."""
    rng = np.random.default_rng(seed)
    levels = [2, 3, 5, 9, 4, 7]
    X = np.column_stack([rng.integers(0, k, size=n) * (1.5 if j % 2 else 1.0) for j, k in enumerate(levels)])
    X = X.astype(np.float32)
    if missing:
        X[rng.random(n) < 0.15, 2] = np.nan
        X[rng.random(n) < 0.05, 3] = np.nan
    logit = -1.2 + 0.8 * X[:, 0] + 0.3 * np.nan_to_num(X[:, 2], nan=8.0) - 0.25 * np.nan_to_num(X[:, 3], nan=1.0)
    logit += 0.4 * (X[:, 4] > 1) * X[:, 5] / 4
    y = (rng.random(n) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int64)
    return X, y


def _walk_equal(
    hist: HistTree, exact: DecisionTreeClassifier, X: np.ndarray, y: np.ndarray, weights: np.ndarray
) -> tuple[int, np.ndarray]:
    """Walk both trees from the root together: the same column, the same persons per class on each side, the same
    side for missing values. Where the two split differently the two splits must be exactly tied (equal impurity
    decrease: scikit-learn picks among tied columns at random, the histogram tree the first); the walk stops there.
    Returns the nodes compared and the persons below ties."""
    h, e = hist.tree_, exact.tree_
    stack = [(0, 0, np.arange(y.size))]
    compared, below_ties = 0, [np.array([], dtype=np.int64)]
    while stack:
        a, b, rows = stack.pop()
        compared += 1
        assert h.class_counts[a].tolist() == [int((y[rows] == 0).sum()), int(y[rows].sum())]
        assert int(e.n_node_samples[b]) == rows.size
        if h.class_counts[a].min() == 0:  # pure: scikit-learn's rounding may split it (its impurity ~1e-16, a split
            continue  # gains nothing and predicts the same), the histogram tree's impurity is 0 exactly: a leaf
        assert (h.children_left[a] == -1) == (e.children_left[b] == -1), f"leaf mismatch at {a}/{b}"
        if h.children_left[a] == -1:
            continue
        sides = []
        for t, node in ((h, a), (e, b)):
            x = X[rows, t.feature[node]].astype(np.float64)
            sides.append(np.where(np.isnan(x), bool(t.missing_go_to_left[node]), x <= t.threshold[node]))
        if h.feature[a] != e.feature[b] or not np.array_equal(sides[0], sides[1]):
            score = [_proxy(np.bincount(y[rows[g]], minlength=2), weights)
                     + _proxy(np.bincount(y[rows[~g]], minlength=2), weights) for g in sides]  # fmt: skip
            assert score[0] == pytest.approx(score[1], rel=1e-12), f"splits at {a}/{b} not tied"
            below_ties.append(rows)
            continue
        go = sides[0]
        stack += [(h.children_left[a], e.children_left[b], rows[go]), (h.children_right[a], e.children_right[b],
                                                                       rows[~go])]  # fmt: skip
    return compared, np.concatenate(below_ties)


@pytest.mark.parametrize("missing", [False, True])
@pytest.mark.parametrize("balanced", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_with_a_bin_per_value_the_histogram_tree_is_scikit_learns_exact_tree(
    seed: int, balanced: bool, missing: bool
) -> None:
    X, y = _few_values(seed, 4000, missing)
    weights = _balanced(y) if balanced else {0: 1.0, 1: 1.0}
    binned = make_binning(X).transform(X)
    assert set(binned.binning.source) == {"values"}
    for depth, leaf in ((3, 1), (6, 25), (10, 5)):
        hist = fit_tree(binned, y, max_depth=depth, min_samples_leaf=leaf, class_weight=weights)
        exact = DecisionTreeClassifier(max_depth=depth, min_samples_leaf=leaf, class_weight=weights, random_state=0)
        exact.fit(X, y)
        compared, tied = _walk_equal(hist, exact, X, y, np.array([weights[0], weights[1]]))
        untied = np.setdiff1d(np.arange(y.size), tied)
        assert untied.size >= 0.9 * y.size, "ties are rare"
        np.testing.assert_allclose(hist.predict_proba(X[untied]), exact.predict_proba(X[untied]), rtol=0, atol=1e-12)
        if tied.size == 0:
            assert compared <= hist.tree_.node_count <= exact.tree_.node_count
            assert compared >= 0.95 * exact.tree_.node_count
            np.testing.assert_allclose(hist.feature_importances_, exact.feature_importances_, rtol=0, atol=1e-9)


def _proxy(counts: np.ndarray, weights: np.ndarray) -> float:
    w = counts * weights
    return float((w**2).sum() / w.sum()) if w.sum() > 0 else -np.inf


def _best_by_brute_force(
    X: np.ndarray, y: np.ndarray, rows: np.ndarray, binned: BinnedMatrix, weights: np.ndarray, leaf: int
) -> float:
    """The best proxy over every threshold of every column with missing values on either side, or -inf."""
    best = -np.inf
    for j, edges in enumerate(binned.binning.edges):
        x = X[rows, j].astype(np.float64)
        nan = np.isnan(x)
        for t in [*edges.tolist(), np.inf]:
            for missing_left in (False, True):
                go = np.where(nan, missing_left, x <= t)
                left, right = y[rows[go]], y[rows[~go]]
                if left.size < leaf or right.size < leaf:
                    continue
                score = _proxy(np.bincount(left, minlength=2), weights) + _proxy(
                    np.bincount(right, minlength=2), weights
                )
                best = max(best, score)
    return best


@st.composite
def _small_data(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    n = draw(st.integers(8, 120))
    p = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    X = np.empty((n, p), dtype=np.float32)
    for j in range(p):
        kind = draw(st.sampled_from(["few", "many", "bool"]))
        X[:, j] = {"few": rng.integers(0, 4, n), "many": rng.normal(size=n).round(2), "bool": rng.random(n) < 0.5}[kind]
        if draw(st.booleans()):
            X[rng.random(n) < 0.2, j] = np.nan
    y = (rng.random(n) < draw(st.floats(0.05, 0.95))).astype(np.int64)
    return X, y, draw(st.integers(1, 5)), draw(st.integers(1, 10)), draw(st.integers(2, 12))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_small_data(), st.booleans())
def test_every_tree_is_valid_counts_its_persons_and_splits_each_node_at_its_best(
    data: tuple[np.ndarray, np.ndarray, int, int, int], balanced: bool
) -> None:
    X, y, depth, leaf, max_bins = data
    weights = _balanced(y) if balanced and 0 < y.sum() < y.size else {0: 1.0, 1: 1.0}
    w = np.array([weights[0], weights[1]])
    binned = make_binning(X, max_bins=max_bins).transform(X)
    assert all(e.size + 1 <= max_bins for e in binned.binning.edges)
    tree = fit_tree(binned, y, max_depth=depth, min_samples_leaf=leaf, class_weight=weights).tree_
    left, right = tree.children_left, tree.children_right
    # structure: two children after their parent, each node reached once, depth within max_depth
    inner = np.flatnonzero(left != -1)
    assert ((left[inner] > inner) & (right[inner] > inner)).all()
    children = np.concatenate([left[inner], right[inner]])
    assert np.array_equal(np.sort(children), np.arange(1, tree.node_count))
    # counts: a direct recount of the persons routed by the thresholds on the original values
    rows, nodes = tree.paths(X)
    recount = np.zeros((tree.node_count, 2), dtype=np.int64)
    np.add.at(recount, (nodes, y[rows]), 1)
    assert np.array_equal(recount, tree.class_counts)
    assert np.array_equal(tree.apply(X), tree.apply_binned(binned.codes))
    depth_of = np.bincount(rows, minlength=y.size) - 1  # nodes passed below the root = the leaf's depth
    assert depth_of.max() <= depth
    for node in inner:
        kids = tree.class_counts[left[node]] + tree.class_counts[right[node]]
        assert np.array_equal(kids, tree.class_counts[node])
        assert tree.class_counts[left[node]].sum() >= leaf and tree.class_counts[right[node]].sum() >= leaf
        # the weighted impurity never rises from a node to its children
        wn = tree.weighted_n_node_samples
        assert wn[left[node]] * tree.impurity[left[node]] + wn[right[node]] * tree.impurity[right[node]] <= (
            wn[node] * tree.impurity[node] + 1e-9
        )
    # every split is the best one; every leaf that could be split has no allowed split
    for node in range(tree.node_count):
        node_rows = rows[nodes == node]
        best = _best_by_brute_force(X, y, node_rows, binned, w, leaf)
        cc = tree.class_counts[node]
        if left[node] != -1:
            chosen = _proxy(tree.class_counts[left[node]], w) + _proxy(tree.class_counts[right[node]], w)
            assert chosen == pytest.approx(best, rel=1e-12, abs=1e-12)
        elif np.isfinite(best) and (depth_of[node_rows] < depth).all() and cc.min() > 0:
            pytest.fail(f"leaf {node} could be split (best proxy {best})")


def test_each_level_counts_only_the_smaller_children_and_subtracts_for_their_siblings() -> None:
    X, y = _few_values(5, 3000, missing=True)
    binned = make_binning(X).transform(X)
    counted: list[int] = []

    def recording(b: BinnedMatrix, yy: np.ndarray, rows: np.ndarray, slot: np.ndarray, n_slots: int) -> np.ndarray:
        counted.append(rows.size)
        return count_histograms(b, yy, rows, slot, n_slots)

    tree = fit_tree(binned, y, max_depth=5, min_samples_leaf=20, histograms=recording).tree_
    assert counted[0] == y.size  # the root
    assert all(c <= y.size // 2 for c in counted[1:])  # below it, at most half of the persons per level
    # the subtraction gives the same histograms as counting both children: their class counts agree
    rows, nodes = tree.paths(X)
    for node in np.flatnonzero(tree.children_left != -1):
        for child in (tree.children_left[node], tree.children_right[node]):
            direct = count_histograms(binned, y, rows[nodes == child], np.zeros((nodes == child).sum(), int), 1)
            assert direct[0, 0].sum(axis=0).tolist() == tree.class_counts[child].tolist()


def test_many_values_are_cut_at_quantiles_without_splitting_a_value() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=20_000)
    x[:4000] = 0.25  # one heavy value
    edges, how = column_edges(x, max_bins=16)
    assert how == "quantiles" and edges.size <= 15
    code = np.searchsorted(edges, x, side="left")
    sizes = np.bincount(code)
    assert np.unique(code[x == 0.25]).size == 1  # the heavy value stays in one bin
    light = np.delete(sizes, code[0])
    assert light.max() <= 2.5 * x.size / 16, "the other bins hold about a 16th each"
    few, how_few = column_edges(np.array([3.0, 1.0, 2.0, np.nan, 3.0]), max_bins=16)
    assert how_few == "values" and few.tolist() == [1.5, 2.5]


def test_a_declared_grid_sets_the_edges_and_a_bad_grid_is_refused() -> None:
    X = np.array([[50.0], [100.0], [150.0], [np.nan], [250.0]], dtype=np.float32)
    binning = make_binning(X, grids={0: [100.0, 200.0]})
    assert binning.source == ("grid",)
    assert binning.transform(X).codes[:, 0].tolist() == [0, 0, 1, 3, 2]  # x <= 100, <= 200, above; NaN = 3
    assert binning.threshold(0, 0) == 100.0 and binning.threshold(0, 2) == np.inf
    with pytest.raises(ValueError, match="strictly increasing"):
        make_binning(X, grids={0: [200.0, 100.0]})


def test_fitting_refuses_an_outcome_that_is_not_one_zero_or_one_per_row_and_no_rows() -> None:
    X, y = _few_values(1, 100, missing=False)
    binned = make_binning(X).transform(X)
    with pytest.raises(ValueError, match="0/1 outcome"):
        fit_tree(binned, y[:50], max_depth=2, min_samples_leaf=1)
    with pytest.raises(ValueError, match="0/1 outcome"):
        fit_tree(binned, y * 2, max_depth=2, min_samples_leaf=1)
    with pytest.raises(ValueError, match="no rows"):
        fit_tree(binned, y, np.array([], dtype=np.int64), max_depth=2, min_samples_leaf=1)
