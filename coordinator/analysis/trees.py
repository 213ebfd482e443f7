"""Decision trees per outcome and feature set: cross-validated, tuned on a small grid, explained, and pruned to
the release policy's leaf rules before their structure is offered to the gate.

Method (docs/analysis.md, "Trees"):

- the plan's ``model.engine`` grows the trees: ``histogram`` (default) bins every column once per dataset
  (``DatasetBins``: one bin per value where a column has at most ``model.max_bins`` values, else quantile bins)
  and grows each tree from per-node histograms of class counts (``kansrijk.stats.histtree``); ``exact`` is
  scikit-learn's exact-split tree, kept to compare. Either tree's thresholds are in the column's own units, so
  everything below, the released structure and the gate's recount are the same for both;

- stratified k-fold cross-validation (grouped by person when years are pooled, so nobody is in a training and a
  test fold at once); every grid point (max_depth, min_samples_leaf) is evaluated on every fold, from one fit per
  fold and ``min_samples_leaf`` grown to the grid's largest depth and cut at each depth (``DepthView``);
- **cross-fitted selection**: the grid point used for fold k is the one with the best mean score on the *other*
  folds, so fold k's out-of-fold predictions never took part in choosing the model that made them. The
  reported out-of-fold metrics are therefore not inflated by the tuning (plain "best CV score" would be);
- hierarchical shrinkage (``shrunk_scores``): every grid point is also scored with each of the plan's shrinkage
  strengths, which damp each node's departure from its parent by the parent's size; the structure is unchanged,
  only node scores move, so this costs no fit, and the strength is selected like depth and leaf size;
- class weighting ("balanced") shapes the splits towards the rare class; the predicted probabilities are then
  mapped back to the unweighted scale (prior correction: odds x w0/w1), which equals the leaf's observed share
  of positives, so the Brier score measures real calibration. Ranking metrics are unaffected (monotone map);
- importances per canonical variable: impurity decrease (scikit-learn's ``feature_importances_``, one-hot
  columns summed) and permutation importance (drop in ROC-AUC on the held-out fold when the variable's columns
  are permuted together), each as mean and standard deviation over the folds;
- the tree offered for release is refitted on the whole population with the most-selected grid point, then
  pruned (``prune_to_rules``: splits removed, deepest offending leaf first) until every leaf satisfies the
  release policy's leaf rules (size, no class count between 0 and the minimum, no class with probability 0).
  Leaf class counts are person counts, not weights.
"""

from __future__ import annotations

import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from joblib import Parallel, delayed
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from coordinator.analysis.plan import Design, Encoding
from kansrijk.gate.requests import TreeNode
from kansrijk.stats.histtree import (
    MAX_BINS,
    BinnedMatrix,
    Binning,
    HistTree,
    column_edges,
    fit_tree,
    make_binning,
)
from kansrijk.stats.metrics import (
    HIGHER_IS_BETTER,
    METRICS,
    Levels,
    level_counts,
    metrics_from_counts,
    score_metrics,
)

Grid = tuple[tuple[int, int], ...]
Progress = Callable[[int], None]
Tree = DecisionTreeClassifier | HistTree  # the engines: "exact" (scikit-learn) and "histogram" (kansrijk.stats)
ENGINES: tuple[str, ...] = ("histogram", "exact")


def stable_seed(base: int, *parts: str) -> np.random.SeedSequence:
    """A seed sequence for ``parts`` (names) under the plan's seed; independent of run order."""
    return np.random.SeedSequence(base, spawn_key=tuple(zlib.crc32(p.encode()) for p in parts))


def seed_int(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1)[0])


@dataclass(frozen=True, slots=True)
class TreeSettings:
    grid: Grid
    folds: int
    criterion: str = "gini"
    class_weight: str = "balanced"
    select_by: str = "roc_auc"
    top_k_percent: float = 10.0
    permutation_repeats: int = 3
    n_jobs: int = 2
    shrinkage: tuple[float, ...] = (0.0,)  # hierarchical shrinkage strengths tried with every grid point
    engine: str = "histogram"  # "histogram": binned trees (kansrijk.stats.histtree); "exact": scikit-learn's
    max_bins: int = MAX_BINS  # value bins per column of the histogram engine

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"unknown tree engine {self.engine!r}; known: {', '.join(ENGINES)}")


@dataclass(frozen=True, slots=True)
class LeafRules:
    """The release policy's rules for every leaf of a released tree."""

    min_leaf_persons: int = 10
    min_class_count: int = 10


@dataclass(frozen=True, slots=True)
class Importance:
    mean: float
    sd: float


@dataclass(frozen=True, eq=False)
class CvResult:
    """Out-of-fold predictions, metrics and explanations of one outcome x feature set."""

    oof: np.ndarray  # calibrated out-of-fold probability per person
    fold_of: np.ndarray  # fold index per person
    selected: tuple[tuple[int, int], ...]  # grid point used for each fold
    final_params: tuple[int, int]
    metrics: dict[str, float]  # pooled out-of-fold
    fold_metrics: dict[str, tuple[float, ...]]
    grid_scores: dict[tuple[int, int], float]  # mean selection score per grid point over folds (best shrinkage)
    impurity: dict[str, Importance]
    permutation: dict[str, Importance]
    n: int
    n_positive: int
    variables: tuple[str, ...] = field(default=())
    selected_shrinkage: tuple[float, ...] = field(default=())  # shrinkage used for each fold
    final_shrinkage: float = 0.0


def make_folds(y: np.ndarray, k: int, seed: int, groups: np.ndarray | None = None) -> np.ndarray:
    """Fold index per person: stratified by outcome, grouped by ``groups`` (persons) when given."""
    fold_of = np.empty(y.size, dtype=np.int64)
    if groups is None:
        splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(y.size), y)
    else:
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        splits = splitter.split(np.zeros(y.size), y, groups)
    for i, (_, test) in enumerate(splits):
        fold_of[test] = i
    return fold_of


def class_weights(y: np.ndarray, mode: str) -> dict[int, float]:
    """``balanced``: w_c = n / (2 n_c) (scikit-learn's rule); ``none``: 1 for both classes."""
    if mode == "none":
        return {0: 1.0, 1: 1.0}
    n, n1 = y.size, int(y.sum())
    return {0: n / (2.0 * (n - n1)), 1: n / (2.0 * n1)}


def unweighted_probability(p_weighted: np.ndarray, weights: dict[int, float]) -> np.ndarray:
    """Undo class weighting: p = p_w w0 / (p_w w0 + (1 - p_w) w1) — the leaf's unweighted share of positives."""
    w0, w1 = weights[0], weights[1]
    num = p_weighted * w0
    return num / (num + (1.0 - p_weighted) * w1)


class DatasetBins:
    """Bin edges per encoded column, declared once per dataset and reused by every design made from it.

    The histogram engine bins each column once: ``declare`` fixes the edges of every column of a design made from
    the whole dataset (a reference year, or the pooled years), keyed by the column's name and encoding (a rank over
    another set of codes is another column) — one bin per distinct value when it has at most ``max_bins`` of them
    (booleans, one-hot columns, ranks, ages), else cuts at the quantiles of its values
    (``kansrijk.stats.histtree.column_edges``). Every design of an outcome population and feature set then reads
    those edges (a column not declared gets its edges from the first design that holds it); folds, grid points,
    shrinkage strengths and the released tree all read the same bin codes.
    """

    def __init__(self, max_bins: int = MAX_BINS) -> None:
        self.max_bins = max_bins
        self._edges: dict[tuple[str, Encoding | None], tuple[np.ndarray, str]] = {}

    @staticmethod
    def _key(design: Design, j: int) -> tuple[str, Encoding | None]:
        return (design.columns[j], design.encodings[j] if design.encodings else None)

    def declare(self, design: Design) -> None:
        """Fix the edges of every column of ``design`` that has none yet."""
        for j in range(len(design.columns)):
            self._edges.setdefault(self._key(design, j), column_edges(design.X[:, j], self.max_bins))

    def bin(self, design: Design) -> BinnedMatrix:
        """The design's bin codes under the declared edges."""
        edges, source = [], []
        for j in range(len(design.columns)):
            key = self._key(design, j)
            if key not in self._edges:
                self._edges[key] = column_edges(design.X[:, j], self.max_bins)
            e, how = self._edges[key]
            edges.append(e)
            source.append(how)
        return Binning(edges=tuple(edges), source=tuple(source)).transform(design.X)


def bin_design(design: Design, settings: TreeSettings) -> BinnedMatrix:
    """The design's bin codes with edges from its own values (callers analysing one design only)."""
    return DatasetBins(settings.max_bins).bin(design)


def _fit(
    X: np.ndarray,
    y: np.ndarray,
    rows: np.ndarray,
    params: tuple[int, int],
    settings: TreeSettings,
    seed: int,
    binned: BinnedMatrix | None = None,
) -> tuple[Tree, dict[int, float]]:
    """One tree on ``rows`` with (max_depth, min_samples_leaf) ``params`` by the settings' engine; the histogram
    engine reads ``binned`` (the codes of ``X``; binned here when not given)."""
    weights = class_weights(y[rows], settings.class_weight)
    if settings.engine == "histogram":
        if binned is None:
            binned = make_binning(X, max_bins=settings.max_bins).transform(X)
        tree = fit_tree(binned, y, rows, max_depth=params[0], min_samples_leaf=params[1], class_weight=weights)
        return tree, weights
    model = DecisionTreeClassifier(
        criterion=settings.criterion,
        max_depth=params[0],
        min_samples_leaf=params[1],
        class_weight=weights,
        random_state=seed,
    )
    model.fit(X[rows], y[rows])
    return model, weights


def _leaves(model: Tree, M: np.ndarray) -> np.ndarray:
    """The leaf of every row of ``M``: float32 values, or for a histogram tree also its bin codes (uint8), which
    route every row as the values do."""
    if isinstance(model, HistTree):
        return model.apply_binned(M) if M.dtype == np.uint8 else model.apply(M)
    return model.tree_.apply(M)


@dataclass(frozen=True, eq=False)
class DepthView:
    """A fitted tree read as if it had been grown only to ``depth``.

    scikit-learn grows a tree depth-first, and a node's split depends only on the persons reaching it (and on
    the random order in which features are tried, which only matters for exact ties), never on ``max_depth``.
    So the tree fitted with ``max_depth = d`` is the deeper tree cut at depth ``d`` — up to the choice between
    exactly tied splits, which scikit-learn makes at random either way: every node at depth ``d`` becomes a leaf
    whose class shares are that node's. One fit per ``min_samples_leaf`` therefore serves every depth of the grid
    (tested prediction for prediction against separate fits). The histogram engine grows level by level under
    the same rule, and breaks ties deterministically.
    """

    model: Tree
    depth: int
    node_at: np.ndarray  # node id -> the node that answers for it (its ancestor at ``depth``, or itself)
    score: np.ndarray  # node id -> unweighted probability of the positive class

    def nodes(self, X: np.ndarray) -> np.ndarray:
        """The answering node of every row of ``X`` (float32 values; a histogram tree also reads its bin codes)."""
        return self.node_at[_leaves(self.model, X)]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.score[self.nodes(X)]

    def impurity_importances(self) -> np.ndarray:
        """scikit-learn's ``feature_importances_`` of the cut tree (normalised impurity decrease per column)."""
        tree = self.model.tree_
        left, right = tree.children_left, tree.children_right
        internal = np.flatnonzero((left != -1) & (node_depths(self.model) < self.depth))
        w, imp = tree.weighted_n_node_samples, tree.impurity
        gain = (
            w[internal] * imp[internal]
            - w[left[internal]] * imp[left[internal]]
            - w[right[internal]] * imp[right[internal]]
        )
        out = np.bincount(tree.feature[internal], weights=gain, minlength=tree.n_features).astype(np.float64)
        total = out.sum()
        return out / total if total > 0 else out


def node_depths(model: Tree) -> np.ndarray:
    """Depth of every node (the root is 0); nodes are numbered so that a parent precedes its children."""
    tree = model.tree_
    depth = np.zeros(tree.node_count, dtype=np.int64)
    for node in range(tree.node_count):  # over nodes (at most a few thousand), not persons
        if tree.children_left[node] != -1:
            depth[tree.children_left[node]] = depth[tree.children_right[node]] = depth[node] + 1
    return depth


def shrunk_scores(model: Tree, weights: dict[int, float], shrinkage: float) -> np.ndarray:
    """Unweighted probability of the positive class per node, with hierarchical shrinkage ``shrinkage`` (lambda).

    Hierarchical shrinkage (Agarwal et al., ICML 2022) keeps the tree's structure and replaces each node's
    estimate by the root's share plus the changes along its path, each damped by the size of the node split:
    ``s(child) = s(parent) + (p(child) - p(parent)) / (1 + lambda / n(parent))``, with ``p`` a node's unweighted
    share of positives and ``n`` its persons. Small nodes, whose shares are noisy, move less away from their
    ancestors; ``lambda = 0`` is the plain tree. Every score is a function of the node counts, so a reader of the
    released structure (class counts per node) can recompute it.
    """
    tree = model.tree_
    value = tree.value[:, 0, :]
    if value.shape[1] == 2:
        p = unweighted_probability(value[:, 1] / value.sum(axis=1), weights)
    else:  # a training fold with one class only (cannot happen when stratified)
        p = np.full(tree.node_count, float(model.classes_[0]))
    if shrinkage == 0.0:
        return p
    left, right = tree.children_left, tree.children_right
    damp = 1.0 / (1.0 + shrinkage / tree.n_node_samples.astype(np.float64))
    score = p.copy()
    for node in range(tree.node_count):  # parents precede children: score[node] is final here
        if left[node] != -1:
            for child in (left[node], right[node]):
                score[child] = score[node] + (p[child] - p[node]) * damp[node]
    return score


def depth_view(model: Tree, depth: int, weights: dict[int, float], shrinkage: float = 0.0) -> DepthView:
    tree = model.tree_
    depths = node_depths(model)
    node_at = np.arange(tree.node_count, dtype=np.int64)
    parent = np.full(tree.node_count, -1, dtype=np.int64)
    internal = np.flatnonzero(tree.children_left != -1)
    parent[tree.children_left[internal]] = internal
    parent[tree.children_right[internal]] = internal
    for node in range(tree.node_count):  # parents precede children, so node_at[parent] is final
        if depths[node] > depth:
            node_at[node] = node_at[parent[node]]
    return DepthView(model=model, depth=depth, node_at=node_at, score=shrunk_scores(model, weights, shrinkage))


def _node_metrics(y: np.ndarray, nodes: np.ndarray, score: np.ndarray, top_k_percent: float) -> dict[str, float]:
    """``score_metrics(y, score[nodes])`` without sorting persons: the score levels are the tree's few nodes."""
    values, level_of_node = np.unique(score, return_inverse=True)
    levels = Levels(values=values, index=level_of_node.ravel()[nodes])
    pos, neg = level_counts(levels, y)
    return metrics_from_counts(levels.values, pos, neg, top_k_percent)


def cross_validate(
    design: Design,
    y: np.ndarray,
    settings: TreeSettings,
    seed: np.random.SeedSequence,
    *,
    groups: np.ndarray | None = None,
    progress: Progress | None = None,
    binned: BinnedMatrix | None = None,
) -> CvResult:
    """Fit the grid on every fold, select per fold by cross-fitting, and explain the selected models.

    One tree per fold and ``min_samples_leaf`` value, grown to the grid's largest depth for that value, answers
    for every depth of the grid (``DepthView``); the fits run in ``settings.n_jobs`` threads (scikit-learn's
    tree builder releases the GIL, and so do most of numpy's array passes). The histogram engine reads
    ``binned``, the design's bin codes (``DatasetBins``; binned from the design itself when not given), for
    fitting, predicting and permuting alike.
    """
    y = np.asarray(y, dtype=np.int64)
    X = np.ascontiguousarray(design.X, dtype=np.float32)
    if settings.engine == "histogram" and binned is None:
        binned = bin_design(design, settings)
    M = binned.codes if settings.engine == "histogram" and binned is not None else X  # what the trees read
    fold_seed, tree_seed, perm_seed = seed.spawn(3)
    fold_of = make_folds(y, settings.folds, seed_int(fold_seed), groups)
    k = settings.folds
    grid = settings.grid
    leaf_sizes = tuple(dict.fromkeys(m for _, m in grid))
    deepest = {m: max(d for d, mm in grid if mm == m) for m in leaf_sizes}
    base_tree_seed = seed_int(tree_seed)
    test_rows = [np.flatnonzero(fold_of == f) for f in range(k)]
    X_test = [np.ascontiguousarray(M[rows]) for rows in test_rows]  # row-major: routed row by row

    def run(f: int, m: int) -> tuple[int, int, Tree, dict[int, float]]:
        rows = np.flatnonzero(fold_of != f)
        model, weights = _fit(X, y, rows, (deepest[m], m), settings, base_tree_seed, binned)
        return f, m, model, weights

    fitted: dict[tuple[int, int], tuple[Tree, dict[int, float]]] = {}
    tasks = [(f, m) for f in range(k) for m in leaf_sizes]
    for f, m, model, weights in Parallel(n_jobs=settings.n_jobs, prefer="threads", return_as="generator")(
        delayed(run)(f, m) for f, m in tasks
    ):
        fitted[(f, m)] = (model, weights)
        if progress is not None:
            progress(1)

    # every grid point is tried with every shrinkage strength: point i = (grid[gi], shrinkage[si])
    points = [(gi, si) for gi in range(len(grid)) for si in range(len(settings.shrinkage))]
    views: dict[tuple[int, int], DepthView] = {}
    nodes: dict[tuple[int, int], np.ndarray] = {}
    for f in range(k):
        leaf_of = {m: _leaves(fitted[(f, m)][0], X_test[f]) for m in leaf_sizes}
        for g, (gi, si) in enumerate(points):
            d, m = grid[gi]
            model, weights = fitted[(f, m)]
            view = depth_view(model, d, weights, settings.shrinkage[si])
            views[(f, g)] = view
            nodes[(f, g)] = view.node_at[leaf_of[m]]

    sign = 1.0 if HIGHER_IS_BETTER[settings.select_by] else -1.0
    fold_scores = {
        (f, g): _node_metrics(y[test_rows[f]], nodes[(f, g)], views[(f, g)].score, settings.top_k_percent)
        for f in range(k)
        for g in range(len(points))
    }
    score = np.array([[sign * fold_scores[(f, g)][settings.select_by] for g in range(len(points))] for f in range(k)])
    chosen: list[int] = []
    for f in range(k):
        others = np.delete(score, f, axis=0).mean(axis=0)
        chosen.append(int(np.nanargmax(others)))
    oof = np.empty(y.size, dtype=np.float64)
    for f in range(k):
        oof[test_rows[f]] = views[(f, chosen[f])].score[nodes[(f, chosen[f])]]
    metrics = score_metrics(y, oof, settings.top_k_percent)
    fold_metrics = {m: tuple(fold_scores[(f, chosen[f])][m] for f in range(k)) for m in METRICS}
    counts = Counter(chosen)
    final_g = max(counts, key=lambda g: (counts[g], score[:, g].mean(), -g))

    groups_of = design.column_groups()
    impurity_rows = []
    for f in range(k):
        imp = views[(f, chosen[f])].impurity_importances()
        impurity_rows.append({v: float(imp[ix].sum()) for v, ix in groups_of.items()})
    rng = np.random.default_rng(perm_seed)
    permutation_rows = []
    for f in range(k):
        view = views[(f, chosen[f])]
        Xt, yt = X_test[f], y[test_rows[f]]
        base = fold_scores[(f, chosen[f])]["roc_auc"]
        work = Xt.copy()
        row: dict[str, float] = {}
        for v, ix in groups_of.items():
            drops = []
            for _ in range(settings.permutation_repeats):
                perm = rng.permutation(Xt.shape[0])
                work[:, ix] = Xt[perm[:, None], ix]
                permuted = _node_metrics(yt, view.nodes(work), view.score, settings.top_k_percent)["roc_auc"]
                drops.append(base - permuted)
            work[:, ix] = Xt[:, ix]
            row[v] = float(np.mean(drops))
        permutation_rows.append(row)

    return CvResult(
        oof=oof,
        fold_of=fold_of,
        selected=tuple(grid[points[g][0]] for g in chosen),
        final_params=grid[points[final_g][0]],
        metrics=metrics,
        fold_metrics=fold_metrics,
        grid_scores={
            grid[gi]: float(sign * score[:, [g for g, (gj, _) in enumerate(points) if gj == gi]].mean(axis=0).max())
            for gi in range(len(grid))
        },
        impurity=_summarise(impurity_rows),
        permutation=_summarise(permutation_rows),
        n=int(y.size),
        n_positive=int(y.sum()),
        variables=design.variables,
        selected_shrinkage=tuple(settings.shrinkage[points[g][1]] for g in chosen),
        final_shrinkage=settings.shrinkage[points[final_g][1]],
    )


def _summarise(rows: Sequence[dict[str, float]]) -> dict[str, Importance]:
    names = list(rows[0])
    values = np.array([[r[v] for v in names] for r in rows])
    sd = values.std(axis=0, ddof=1) if len(rows) > 1 else np.zeros(len(names))
    return {v: Importance(float(values[:, i].mean()), float(sd[i])) for i, v in enumerate(names)}


# --- the released tree ------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ReleasableTree:
    nodes: tuple[TreeNode, ...]
    max_depth: int
    min_samples_leaf: int
    leaves_before: int
    leaves_after: int


def fit_final_tree(
    design: Design,
    y: np.ndarray,
    params: tuple[int, int],
    settings: TreeSettings,
    seed: np.random.SeedSequence,
    binned: BinnedMatrix | None = None,
) -> Tree:
    """The tree on the whole population with the selected grid point (what the released structure shows); the
    histogram engine reads ``binned`` (the design's codes) when given."""
    y = np.asarray(y, dtype=np.int64)
    if settings.engine == "histogram" and binned is None:
        binned = bin_design(design, settings)
    model, _ = _fit(design.X, y, np.arange(y.size), params, settings, seed_int(seed), binned)
    return model


def node_class_counts(model: Tree, X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Persons per class (negative, positive) reaching every node: (n_nodes, 2) integer counts."""
    path = model.decision_path(X)  # sparse (persons x nodes)
    onehot = np.stack([1 - np.asarray(y, dtype=np.int64), np.asarray(y, dtype=np.int64)], axis=1)
    return np.asarray(path.T @ onehot, dtype=np.int64)


def _violates(counts: np.ndarray, rules: LeafRules) -> bool:
    total = int(counts.sum())
    return total < rules.min_leaf_persons or bool(((counts >= 0) & (counts < rules.min_class_count)).any())


def prune_to_rules(model: Tree, design: Design, y: np.ndarray, rules: LeafRules) -> ReleasableTree:
    """Remove splits, deepest offending leaf first, until every leaf of the tree obeys the leaf rules.

    A leaf breaks the rules when it holds fewer than ``min_leaf_persons`` persons or any class count below
    ``min_class_count`` (zero included: a class probability of 0 is class disclosure). For such a leaf, the split
    above it is removed: when its sibling is a leaf too, the two merge (the parent becomes a leaf); when the
    sibling is a subtree, the split is dropped and the sibling's subtree takes the parent's place, now applied
    to the persons of both sides (their counts are recomputed by routing those persons through it, missing
    values following the branch chosen at fitting). Dropping rather than merging keeps the structure of a
    branch whose sibling is structurally empty of one class — e.g. pupils who cannot move up a track — instead
    of collapsing the tree to its root. Every step removes one split, so this ends; if the root alone breaks
    the rules the gate refuses the tree.
    """
    tree = model.tree_
    X = np.ascontiguousarray(design.X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    left = {n: int(tree.children_left[n]) for n in range(tree.node_count) if tree.children_left[n] != -1}
    right = {n: int(tree.children_right[n]) for n in left}
    parent: dict[int, int] = {c: p for p, c in (*left.items(), *right.items())}
    root = 0
    counts: dict[int, np.ndarray] = {}
    rows_of: dict[int, np.ndarray] = {}

    def route(node: int, rows: np.ndarray) -> None:  # persons reaching each node of the current structure
        rows_of[node] = rows
        counts[node] = np.bincount(y[rows], minlength=2)[:2]
        if node in left:
            x = X[rows, tree.feature[node]]
            go_left = np.where(np.isnan(x), bool(tree.missing_go_to_left[node]), x <= tree.threshold[node])
            route(left[node], rows[go_left])
            route(right[node], rows[~go_left])

    def violating_leaves() -> list[int]:
        found, stack = [], [(root, 0)]
        while stack:
            node, d = stack.pop()
            if node in left:
                stack += [(left[node], d + 1), (right[node], d + 1)]
            elif node != root and _violates(counts[node], rules):
                found.append((d, node))
        return [n for _, n in sorted(found, reverse=True)]

    route(root, np.arange(y.size))
    leaves_before = int((tree.children_left == -1).sum())
    while bad := violating_leaves():
        leaf = bad[0]
        p = parent[leaf]
        sibling = right[p] if left[p] == leaf else left[p]
        if sibling not in left:  # two leaves: merge them
            del left[p], right[p]
            continue
        # drop the split at p: the sibling's subtree takes p's place for the persons of both sides
        grand = parent.pop(p, None)
        parent.pop(sibling)
        if grand is None:
            root = sibling
        else:
            if left[grand] == p:
                left[grand] = sibling
            else:
                right[grand] = sibling
            parent[sibling] = grand
        del left[p], right[p]
        route(sibling, rows_of[p])

    nodes: list[TreeNode] = []
    new_id: dict[int, int] = {}
    depth_of: dict[int, int] = {}
    order, stack = [], [(root, 0)]
    while stack:  # pre-order
        node, d = stack.pop()
        new_id[node], depth_of[node] = len(order), d
        order.append(node)
        if node in left:
            stack += [(right[node], d + 1), (left[node], d + 1)]
    for old in order:
        cc = (int(counts[old][0]), int(counts[old][1]))
        if old in left:
            nodes.append(
                TreeNode(
                    node_id=new_id[old],
                    depth=depth_of[old],
                    class_counts=cc,
                    feature=design.columns[int(tree.feature[old])],
                    threshold=float(tree.threshold[old]),
                    left=new_id[left[old]],
                    right=new_id[right[old]],
                    missing_left=bool(tree.missing_go_to_left[old]),
                )
            )
        else:
            nodes.append(TreeNode(node_id=new_id[old], depth=depth_of[old], class_counts=cc))
    return ReleasableTree(
        nodes=tuple(nodes),
        max_depth=int(max(n.depth for n in nodes)),
        min_samples_leaf=int(model.get_params()["min_samples_leaf"]),
        leaves_before=leaves_before,
        leaves_after=sum(1 for n in nodes if n.is_leaf),
    )


__all__ = [
    "ENGINES",
    "CvResult",
    "DatasetBins",
    "DepthView",
    "Importance",
    "LeafRules",
    "ReleasableTree",
    "Tree",
    "TreeSettings",
    "bin_design",
    "class_weights",
    "cross_validate",
    "depth_view",
    "fit_final_tree",
    "make_folds",
    "node_class_counts",
    "node_depths",
    "prune_to_rules",
    "shrunk_scores",
    "stable_seed",
    "unweighted_probability",
]
