"""Histogram (binned) decision trees: every feature binned once, trees grown from per-node histograms of class counts.

The method of LightGBM and Spark MLlib, for binary classification with the Gini criterion and class weights:

- **binning** (``make_binning``) is separate from fitting and happens once per dataset. A column with at most
  ``max_bins`` distinct values keeps its values (one bin per value: booleans, one-hot columns, ranks, ages); any
  other column gets at most ``max_bins`` bins cut at the quantiles of its values, or the edges of a declared public
  grid. A bin edge between two values is their midpoint, as scikit-learn's thresholds are. Value bin ``b`` holds
  ``edges[b-1] < x <= edges[b]``; a missing value (NaN) has its own code, ``n_bins`` of that column. The binned
  matrix is reused over folds, grid points, shrinkage strengths and the final tree;
- **histograms** (``count_histograms``): for a set of nodes, the persons per (feature, bin code, class) reaching
  each node, integer counts from ``np.bincount``. It is the only place that reads the persons: a caller that must
  not see exact counts (a differentially private tree) passes its own ``NodeHistograms`` that adds noise;
- **growth** (``fit_tree``) is level by level. Only the smaller child of every split is counted; its sibling's
  histogram is the parent's minus the smaller child's (the subtraction trick), so each level reads at most half
  of the persons. A node is split on the (feature, bin, side for missing values) with the largest decrease of
  weighted Gini impurity among those leaving at least ``min_samples_leaf`` persons on each side; with missing
  values, both sides are tried for them, plus the split that sends only them right (threshold +inf), as
  scikit-learn does. Leaves are what scikit-learn makes leaves: depth ``max_depth``, fewer than
  ``2 * min_samples_leaf`` persons, a pure node, or no allowed split. Ties go to the first column, then the
  lowest bin (deterministic, where scikit-learn picks at random among tied columns).

Routing a person down a fitted tree by bin codes is one table lookup per level (``next_node``: per node and code,
the child), with no branching per person.

When every column has at most ``max_bins`` values, the candidate splits are scikit-learn's and the tree is its
exact tree (up to ties); the threshold of a split is a bin edge in the column's own units, so a reader of the
structure applies it to the original values (``x <= threshold``, missing values to ``missing_go_to_left``).

The fitted ``HistTree`` exposes the arrays of scikit-learn's ``tree_`` under the same names (``children_left``,
``threshold``, ``value``, ``impurity``, ...), numbered so that a parent precedes its children, so code written
for scikit-learn's trees reads it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

MAX_BINS = 255  # value bins per column; code 255 is then the missing value, so codes fit in uint8
_CANDIDATES = 1 << 16  # candidate (node, column, bin) triples scored in one pass
_EPSILON = float(np.finfo(np.float64).eps)  # scikit-learn's bound below which a node is pure


# --- binning ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Binning:
    """Bin edges per column, declared before any tree is fitted.

    ``edges[j]`` are the increasing inner edges of column ``j`` (float64, in the column's units): value bin ``b``
    holds ``edges[j][b-1] < x <= edges[j][b]``, so column ``j`` has ``len(edges[j]) + 1`` value bins and its
    missing code is that number. ``source[j]`` says where the edges came from: ``values`` (one bin per distinct
    value), ``quantiles`` (cut at the data's quantiles) or ``grid`` (a declared public grid).
    """

    edges: tuple[np.ndarray, ...]
    source: tuple[str, ...]

    @property
    def n_bins(self) -> np.ndarray:
        """Value bins per column (the missing code of column ``j`` is ``n_bins[j]``)."""
        return np.array([e.size + 1 for e in self.edges], dtype=np.int64)

    def threshold(self, column: int, bin_: int) -> float:
        """The threshold of the split "bin code <= ``bin_``" in the column's units (+inf after the last bin)."""
        e = self.edges[column]
        return float(e[bin_]) if bin_ < e.size else float("inf")

    def transform(self, X: np.ndarray) -> BinnedMatrix:
        """Bin the rows of ``X`` (persons x columns, float, NaN = missing) with these edges."""
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != len(self.edges):
            raise ValueError(f"X has shape {X.shape}; the binning has {len(self.edges)} columns")
        codes = np.empty(X.shape, dtype=np.uint8, order="F")
        for j, e in enumerate(self.edges):
            x = X[:, j].astype(np.float64, copy=False)  # compared as the reader compares: float64 <= threshold
            c = np.searchsorted(e, x, side="left")
            c[np.isnan(x)] = e.size + 1
            codes[:, j] = c
        return BinnedMatrix(codes=codes, binning=self)


@dataclass(frozen=True, eq=False)
class BinnedMatrix:
    """Bin codes of a dataset: uint8 (persons x columns), column-major so a column is read in one sweep."""

    codes: np.ndarray
    binning: Binning

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.codes.shape[0]), int(self.codes.shape[1]))


def column_edges(x: np.ndarray, max_bins: int = MAX_BINS) -> tuple[np.ndarray, str]:
    """Inner bin edges of one column from its values: one bin per distinct value when there are at most
    ``max_bins`` of them, else cuts at the quantiles of the values (a value is never split across bins, so a
    frequent value may take several quantiles' room). Edges are midpoints between neighbouring values."""
    if not 2 <= max_bins <= MAX_BINS:
        raise ValueError(f"max_bins must lie in 2..{MAX_BINS}, got {max_bins}")
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    values, counts = np.unique(x, return_counts=True)  # faster here than hashing (polars value_counts)
    if values.size <= max_bins:
        return values[:-1] / 2.0 + values[1:] / 2.0, "values"
    cum = np.cumsum(counts)
    targets = cum[-1] * np.arange(1, max_bins, dtype=np.float64) / max_bins
    cut = np.unique(np.searchsorted(cum, targets, side="left"))  # last value of each bin
    cut = cut[cut < values.size - 1]
    return values[cut] / 2.0 + values[cut + 1] / 2.0, "quantiles"


def make_binning(
    X: np.ndarray, *, max_bins: int = MAX_BINS, grids: Mapping[int, Sequence[float]] | None = None
) -> Binning:
    """Declare the bins of every column of ``X``: a public grid where ``grids`` names one for the column (its
    values are the inner edges; at most ``max_bins - 1`` of them, strictly increasing), else ``column_edges``."""
    X = np.asarray(X)
    grids = dict(grids or {})
    edges: list[np.ndarray] = []
    source: list[str] = []
    for j in range(X.shape[1]):
        if j in grids:
            grid = np.asarray(grids[j], dtype=np.float64)
            if grid.ndim != 1 or grid.size >= max_bins or not np.isfinite(grid).all() or np.any(np.diff(grid) <= 0):
                raise ValueError(
                    f"grid of column {j}: give at most {max_bins - 1} finite, strictly increasing inner edges"
                )
            edges.append(grid)
            source.append("grid")
        else:
            e, how = column_edges(X[:, j], max_bins)
            edges.append(e)
            source.append(how)
    return Binning(edges=tuple(edges), source=tuple(source))


# --- histograms ---------------------------------------------------------------------------------------------
class NodeHistograms(Protocol):
    """Counts the persons of a set of nodes: ``(n_slots, columns, codes, 2)`` per (bin code, class).

    ``rows`` are the persons (row indices of ``binned``) and ``slot`` the node (0..n_slots-1) each belongs to.
    The exact counter is ``count_histograms``; a differentially private caller wraps it with noise.
    """

    def __call__(self, binned: BinnedMatrix, y: np.ndarray, rows: np.ndarray, slot: np.ndarray,
                 n_slots: int) -> np.ndarray: ...  # fmt: skip


def count_histograms(
    binned: BinnedMatrix, y: np.ndarray, rows: np.ndarray, slot: np.ndarray, n_slots: int
) -> np.ndarray:
    """Persons per (node slot, column, bin code, class): int64 ``(n_slots, columns, max code + 1, 2)``."""
    n_codes = int(binned.binning.n_bins.max()) + 1
    p = binned.shape[1]
    size = n_slots * n_codes * 2
    base = slot.astype(np.int64) * (n_codes * 2) + y[rows]
    out = np.empty((p, size), dtype=np.int64)
    for j in range(p):
        code = binned.codes[:, j][rows].astype(np.int64)
        code *= 2
        code += base
        out[j] = np.bincount(code, minlength=size)
    return out.reshape(p, n_slots, n_codes, 2).transpose(1, 0, 2, 3)


# --- the tree -----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class TreeArrays:
    """The fitted structure, in scikit-learn's ``tree_`` names; node 0 is the root, parents precede children."""

    children_left: np.ndarray  # int64, -1 at a leaf
    children_right: np.ndarray
    feature: np.ndarray  # int64 column of the split, -2 at a leaf (as scikit-learn)
    threshold: np.ndarray  # float64 split threshold in the column's units (+inf: only missing values go right)
    split_bin: np.ndarray  # int64 bin code of the split: code <= split_bin goes left
    missing_go_to_left: np.ndarray  # uint8
    class_counts: np.ndarray  # int64 (nodes, 2): persons per class (negative, positive)
    value: np.ndarray  # float64 (nodes, 1, 2): class-weighted counts
    impurity: np.ndarray  # float64 weighted Gini impurity
    n_features: int
    missing_code: np.ndarray  # int64 per column: the code of a missing value
    next_node: np.ndarray  # int64 (nodes, codes): the child a bin code leads to (a leaf leads to itself)
    depth: int  # the deepest leaf's depth
    _next_position: np.ndarray = field(init=False, repr=False)
    _column_at: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        # routing by position = node x table width: one lookup gives the next position, one the column to read
        width = self.next_node.shape[1]
        object.__setattr__(self, "_next_position", (self.next_node * width).ravel())
        object.__setattr__(self, "_column_at", np.repeat(np.where(self.feature >= 0, self.feature, 0), width))

    @property
    def node_count(self) -> int:
        return int(self.children_left.size)

    @property
    def n_node_samples(self) -> np.ndarray:
        return self.class_counts.sum(axis=1)

    @property
    def weighted_n_node_samples(self) -> np.ndarray:
        return self.value[:, 0, :].sum(axis=1)

    def apply(self, X: np.ndarray) -> np.ndarray:
        """The leaf of every row of ``X`` in the column's units (NaN = missing), by the thresholds."""
        X = np.asarray(X)
        return self._route(X.shape[0], self._by_values(X))

    def apply_binned(self, codes: np.ndarray) -> np.ndarray:
        """The leaf of every row of a bin-code matrix made with the tree's binning (same result as ``apply`` on the
        original values): one lookup per level in ``next_node``, no branching per row."""
        codes = np.ascontiguousarray(codes)
        n, p = codes.shape
        flat = codes.ravel()
        base = np.arange(n, dtype=np.int64) * p
        step, column = self._next_position, self._column_at
        at = np.zeros(n, dtype=np.int64)
        for _ in range(self.depth):
            at = step[at + flat[base + column[at]]]
        return at // self.next_node.shape[1]

    def paths(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, node) pairs of every node every row of ``X`` passes through, root included."""
        X = np.asarray(X)
        seen: list[tuple[np.ndarray, np.ndarray]] = []
        self._route(X.shape[0], self._by_values(X), seen)
        return np.concatenate([r for r, _ in seen]), np.concatenate([n for _, n in seen])

    def _by_values(self, X: np.ndarray) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """Whether rows go left at their nodes, comparing the original values in float64 as a reader does."""

        def left_of(rows: np.ndarray, node: np.ndarray) -> np.ndarray:
            x = X[rows, self.feature[node]].astype(np.float64)
            return np.where(np.isnan(x), self.missing_go_to_left[node].astype(bool), x <= self.threshold[node])

        return left_of

    def _route(self, n_rows: int, left_of: Callable[[np.ndarray, np.ndarray], np.ndarray],
               seen: list | None = None) -> np.ndarray:  # fmt: skip
        node = np.zeros(n_rows, dtype=np.int64)
        rows = np.arange(n_rows)
        if seen is not None:
            seen.append((rows, node.copy()))
        while rows.size:
            n = node[rows]
            inner = self.children_left[n] != -1
            rows, n = rows[inner], n[inner]
            if rows.size == 0:
                break
            go = left_of(rows, n)
            node[rows] = np.where(go, self.children_left[n], self.children_right[n])
            if seen is not None:
                seen.append((rows, node[rows]))
        return node


@dataclass(frozen=True, eq=False)
class HistTree:
    """A fitted histogram tree; reads like a scikit-learn ``DecisionTreeClassifier`` where the analysis needs it."""

    tree_: TreeArrays
    binning: Binning
    max_depth: int
    min_samples_leaf: int
    class_weight: tuple[float, float]
    classes_: np.ndarray

    def get_params(self) -> dict[str, object]:
        return {"max_depth": self.max_depth, "min_samples_leaf": self.min_samples_leaf}

    def apply(self, X: np.ndarray) -> np.ndarray:
        return self.tree_.apply(X)

    def apply_binned(self, codes: np.ndarray) -> np.ndarray:
        return self.tree_.apply_binned(codes)

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class-weighted shares of the leaf of every row (what scikit-learn's ``predict_proba`` returns)."""
        v = self.tree_.value[:, 0, :]
        return (v / v.sum(axis=1, keepdims=True))[self.apply(X)]

    def decision_path(self, X: np.ndarray) -> sp.csr_matrix:
        """Sparse (rows x nodes) indicator of the nodes every row passes through."""
        rows, nodes = self.tree_.paths(X)
        data = np.ones(rows.size, dtype=np.int64)
        return sp.csr_matrix((data, (rows, nodes)), shape=(np.asarray(X).shape[0], self.tree_.node_count))

    @property
    def feature_importances_(self) -> np.ndarray:
        """Normalised weighted impurity decrease per column (scikit-learn's definition)."""
        t = self.tree_
        inner = np.flatnonzero(t.children_left != -1)
        w, imp = t.weighted_n_node_samples, t.impurity
        left, right = t.children_left[inner], t.children_right[inner]
        gain = w[inner] * imp[inner] - w[left] * imp[left] - w[right] * imp[right]
        out = np.bincount(t.feature[inner], weights=gain, minlength=t.n_features).astype(np.float64)
        total = out.sum()
        return out / total if total > 0 else out


def _gini(weighted: np.ndarray) -> np.ndarray:
    """Gini impurity of class-weighted counts (..., 2)."""
    total = weighted.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        sq = (weighted**2).sum(axis=-1) / np.where(total > 0, total, 1.0) ** 2
    return np.where(total > 0, 1.0 - sq, 0.0)


@dataclass(frozen=True, slots=True)
class _Split:
    feature: int
    bin_: int
    missing_left: bool
    left_counts: np.ndarray  # (2,) persons per class going left
    right_counts: np.ndarray


def best_splits(
    hist: np.ndarray, n_bins: np.ndarray, weights: np.ndarray, min_samples_leaf: int
) -> list[_Split | None]:
    """The best split of every node from its histogram ``hist`` (nodes, columns, codes, 2), or None where no split
    leaves ``min_samples_leaf`` persons on both sides.

    Candidates per column, in scikit-learn's order: thresholds after bins 0..n_bins-2 with missing values right,
    then the split sending only the missing values right (after the last bin), then the thresholds with missing
    values left. The score is scikit-learn's proxy of the impurity decrease, ``sum_k WL_k^2 / WL + sum_k
    WR_k^2 / WR`` (W: class-weighted counts); ties go to the first column, side and bin. Columns are scored in
    groups of similar width, so a few columns of 255 bins do not make every column's candidates 255 wide.
    """
    s = hist.shape[0]
    best_score = np.full(s, -np.inf)
    best: list[_Split | None] = [None] * s
    width_class = np.searchsorted(np.array([4, 16, 64]), n_bins + 1)
    for group in np.unique(width_class):
        cols = np.flatnonzero(width_class == group)  # ascending: within a group the first column wins ties
        width = int(n_bins[cols].max()) + 1
        step = max(1, _CANDIDATES // (cols.size * width))  # nodes per pass: bounds the candidate arrays' memory
        for start in range(0, s, step):
            part = hist[start : start + step, cols, :width, :]
            score, splits = _best_in(part, n_bins[cols], weights, min_samples_leaf)
            for i, found in enumerate(splits, start=start):
                if found is None:
                    continue
                column = int(cols[found.feature])
                current = best[i]
                if score[i - start] > best_score[i] or (
                    score[i - start] == best_score[i] and current is not None and column < current.feature
                ):
                    best_score[i] = score[i - start]
                    best[i] = _Split(column, found.bin_, found.missing_left, found.left_counts, found.right_counts)
    return best


def _best_in(
    hist: np.ndarray, n_bins: np.ndarray, weights: np.ndarray, min_samples_leaf: int
) -> tuple[np.ndarray, list[_Split | None]]:
    """``best_splits`` over the columns of ``hist`` (indices local to it): the best score per node and its split."""
    s, p, c, _ = hist.shape
    cols = np.arange(p)
    miss = hist[:, cols, n_bins, :]  # (s, p, 2)
    values = hist.copy()
    values[:, cols, n_bins, :] = 0
    cum = np.cumsum(values, axis=2)[:, :, : c - 1, :]  # left counts after bins 0..c-2: (s, p, c-1, 2)
    tot = values.sum(axis=2)[:, :, None, :]
    miss_ = miss[:, :, None, :]
    b = np.arange(c - 1)
    valid_r = b[None, :] <= (n_bins - 1)[:, None]  # missing right: after bins 0..n_bins-1 (last: only missing)
    valid_l = b[None, :] <= (n_bins - 2)[:, None]  # missing left: after bins 0..n_bins-2
    valid = np.stack([valid_r, valid_l], axis=1)[None]  # (1, p, 2 sides, c-1)
    # per class (0, 1) and side (missing right, missing left): (s, p, 2, c-1)
    left = [np.stack([cum[..., k], cum[..., k] + miss_[..., k]], axis=2) for k in (0, 1)]
    right = [np.stack([tot[..., k] - cum[..., k] + miss_[..., k], tot[..., k] - cum[..., k]], axis=2) for k in (0, 1)]
    ok = valid & (left[0] + left[1] >= min_samples_leaf) & (right[0] + right[1] >= min_samples_leaf)
    w0, w1 = float(weights[0]), float(weights[1])
    with np.errstate(invalid="ignore", divide="ignore"):
        a0, a1 = left[0] * w0, left[1] * w1
        score = (a0 * a0 + a1 * a1) / (a0 + a1)
        a0, a1 = right[0] * w0, right[1] * w1
        score += (a0 * a0 + a1 * a1) / (a0 + a1)
    score = np.where(ok & np.isfinite(score), score, -np.inf).reshape(s, -1)
    best = np.argmax(score, axis=1) if score.shape[1] else np.zeros(s, dtype=np.int64)
    top = score[np.arange(s), best] if score.shape[1] else np.full(s, -np.inf)
    out: list[_Split | None] = []
    for i in range(s):
        if not np.isfinite(top[i]):
            out.append(None)
            continue
        j, side, bin_ = np.unravel_index(best[i], (p, 2, c - 1))
        lc = np.array([left[0][i, j, side, bin_], left[1][i, j, side, bin_]], dtype=np.int64)
        rc = np.array([right[0][i, j, side, bin_], right[1][i, j, side, bin_]], dtype=np.int64)
        # no missing value seen here: a later one follows the larger side (as scikit-learn)
        missing_left = bool(lc.sum() > rc.sum()) if miss[i, j].sum() == 0 else bool(side == 1)
        out.append(_Split(int(j), int(bin_), missing_left, lc, rc))
    return top, out


def _next_node_table(
    left: list[int], right: list[int], feature: list[int], split_bin: list[int], missing_left: list[int],
    n_bins: np.ndarray,
) -> np.ndarray:
    """Per node and bin code, the node a person with that code in the node's column moves to."""
    width = int(n_bins.max()) + 1 if n_bins.size else 1
    nodes = len(left)
    table = np.repeat(np.arange(nodes, dtype=np.int64)[:, None], width, axis=1)  # a leaf stays where it is
    codes = np.arange(width)
    for i in range(nodes):  # over nodes, not persons
        if left[i] == -1:
            continue
        go_left = codes <= split_bin[i]
        go_left[int(n_bins[feature[i]])] = bool(missing_left[i])
        table[i] = np.where(go_left, left[i], right[i])
    return table


def fit_tree(
    binned: BinnedMatrix,
    y: np.ndarray,
    rows: np.ndarray | None = None,
    *,
    max_depth: int,
    min_samples_leaf: int,
    class_weight: Mapping[int, float] | None = None,
    histograms: NodeHistograms = count_histograms,
) -> HistTree:
    """Grow a tree on ``rows`` of ``binned`` (all rows when None) for the 0/1 outcome ``y`` (one per row of
    ``binned``); see the module docstring. ``class_weight`` maps class to weight (default 1 and 1)."""
    if max_depth < 1 or min_samples_leaf < 1:
        raise ValueError("max_depth and min_samples_leaf must be at least 1")
    y = np.asarray(y, dtype=np.int64)
    if y.shape[0] != binned.shape[0] or (y.size and (y.min() < 0 or y.max() > 1)):
        raise ValueError("y must hold one 0/1 outcome per row of the binned matrix")
    rows = np.arange(binned.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.size == 0:
        raise ValueError("no rows to grow a tree on")
    cw = class_weight or {0: 1.0, 1: 1.0}
    weights = np.array([float(cw[0]), float(cw[1])])
    n_bins = binned.binning.n_bins
    n_rows, p = binned.shape
    width = int(n_bins.max()) + 1 if p else 1
    all_codes = np.arange(width)
    column_major = binned.codes.ravel(order="F")  # a view: the codes are stored column by column

    left_, right_, feat, thr, sbin, mleft, counts = [], [], [], [], [], [], []

    def new_node(cc: np.ndarray) -> int:
        for arr, v in ((left_, -1), (right_, -1), (feat, -2), (thr, -2.0), (sbin, -1), (mleft, 0)):
            arr.append(v)
        counts.append(np.asarray(cc, dtype=np.int64))
        return len(counts) - 1

    root_hist = histograms(binned, y, rows, np.zeros(rows.size, dtype=np.int64), 1)
    frontier = [new_node(root_hist[0, 0].sum(axis=0))]
    hists = {frontier[0]: root_hist[0]}
    node_of = np.zeros(rows.size, dtype=np.int64)  # current node of every training row
    active = np.arange(rows.size)  # the rows in the frontier's nodes
    depth = 0
    while frontier and depth < max_depth:
        splittable = []
        for node in frontier:
            cc = counts[node]
            n = int(cc.sum())
            pure = _gini(cc * weights) <= _EPSILON
            if n >= 2 and n >= 2 * min_samples_leaf and not pure:
                splittable.append(node)
        if not splittable:
            break
        splits = best_splits(np.stack([hists[n] for n in splittable]), n_bins, weights, min_samples_leaf)
        chosen = [(node, s) for node, s in zip(splittable, splits, strict=True) if s is not None]
        if not chosen:
            break
        slot_of_split = np.full(len(counts), -1, dtype=np.int64)
        split_column = np.empty(len(chosen), dtype=np.int64)
        child_of_code = np.empty((len(chosen), width), dtype=np.int64)  # per split: the child each code goes to
        next_frontier, small_of = [], []
        for k, (node, s) in enumerate(chosen):
            lc, rc = new_node(s.left_counts), new_node(s.right_counts)
            left_[node], right_[node], feat[node], sbin[node] = lc, rc, s.feature, s.bin_
            thr[node] = binned.binning.threshold(s.feature, s.bin_)
            mleft[node] = int(s.missing_left)
            slot_of_split[node], split_column[k] = k, s.feature
            go_left = all_codes <= s.bin_
            go_left[n_bins[s.feature]] = s.missing_left
            child_of_code[k] = np.where(go_left, lc, rc)
            next_frontier += [lc, rc]
            small_of.append((node, lc, rc) if s.left_counts.sum() <= s.right_counts.sum() else (node, rc, lc))
        # route the training rows of the split nodes to their children: one lookup per row (rows of nodes that
        # became leaves are done and are not looked at again)
        moving = active[slot_of_split[node_of[active]] >= 0]
        active = moving
        k = slot_of_split[node_of[moving]]
        code = column_major[split_column[k] * n_rows + rows[moving]]
        node_of[moving] = child_of_code.ravel()[k * width + code]
        if depth + 1 < max_depth:  # the children's histograms: count the smaller, subtract for the larger
            slot_of = np.full(len(counts), -1, dtype=np.int64)
            for i, (_, small, _) in enumerate(small_of):
                slot_of[small] = i
            sel = moving[slot_of[node_of[moving]] >= 0]
            small_hist = histograms(binned, y, rows[sel], slot_of[node_of[sel]], len(small_of))
            for i, (parent, small, large) in enumerate(small_of):
                hists[small] = small_hist[i]
                hists[large] = hists[parent] - small_hist[i]
        hists = {k: hists[k] for k in next_frontier if k in hists}
        frontier = next_frontier
        depth += 1

    cc = np.array(counts, dtype=np.int64).reshape(-1, 2)
    value = (cc * weights)[:, None, :]
    next_node = _next_node_table(left_, right_, feat, sbin, mleft, n_bins)
    tree = TreeArrays(
        children_left=np.asarray(left_, dtype=np.int64),
        children_right=np.asarray(right_, dtype=np.int64),
        feature=np.asarray(feat, dtype=np.int64),
        threshold=np.asarray(thr, dtype=np.float64),
        split_bin=np.asarray(sbin, dtype=np.int64),
        missing_go_to_left=np.asarray(mleft, dtype=np.uint8),
        class_counts=cc,
        value=value,
        impurity=_gini(value[:, 0, :]),
        n_features=p,
        missing_code=n_bins.copy(),
        next_node=next_node,
        depth=depth,
    )
    present = np.flatnonzero(cc[0] > 0)
    return HistTree(
        tree_=tree,
        binning=binned.binning,
        max_depth=max_depth,
        min_samples_leaf=min_samples_leaf,
        class_weight=(float(weights[0]), float(weights[1])),
        classes_=present,
    )


__all__ = [
    "MAX_BINS",
    "BinnedMatrix",
    "Binning",
    "HistTree",
    "NodeHistograms",
    "TreeArrays",
    "best_splits",
    "column_edges",
    "count_histograms",
    "fit_tree",
    "make_binning",
]
