"""Differentially private tree models for binary outcomes, trained *inside* a gate release (privacy unit: one
person). The gate debits the request's epsilon before any function here runs; this module spends exactly that
epsilon through OpenDP measurements and returns what the release file shows.

Two models:

- ``dp_tree``: one histogram-based tree of fixed depth. At every level each node picks its split by report-noisy-
  max over all candidate splits (OpenDP ``make_noisy_max``; score: minus the children's Gini impurity in person
  counts, sensitivity 2, all scores move the same way when one person is added — Friedman & Schuster, KDD 2010).
  The nodes of one level hold disjoint persons, so a level costs its epsilon once (parallel composition). The
  leaves release noisy class counts (OpenDP ``make_count_by_categories`` + discrete Laplace).
- ``dp_boosted``: a small ensemble of such trees fitted by gradient boosting on the logistic loss. A noisy base
  rate starts the model; every tree picks splits by report-noisy-max on the squared-gradient gain
  ``G_L²/(n_L+λ) + G_R²/(n_R+λ)`` (residuals in [-1, 1]: sensitivity 3, Li et al., AAAI 2020) and releases per
  leaf a noisy count and a noisy residual sum (OpenDP polars ``Context``; residuals quantised to 1/100 so the sum
  is an exact integer sum). The trees see the same persons, so their epsilons add up (sequential composition).

Features are binned with **public** edges (the policy's ``dp_model.bin_edges``, the request's, or the schema's
categories); a missing value is a bin of its own. Evaluation: persons are split into ``folds`` by a keyed hash of
their own record (so adding one person never moves another), fold 0 is held out, the model is trained on the
rest, and ROC-AUC and PR-AUC are computed from a noisy histogram of (score, outcome) on the held-out persons.
Importances are computed from the released noisy counts only (post-processing).

Budget: ``epsilon = eval + train``; the split is in exact fractions and every step's OpenDP measurement is
checked with its own privacy map against the largest float not above that step's exact share, so the sum of the
losses never exceeds the ledger's amount. Randomness other than DP noise (fold assignment) comes from the seed.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np
import opendp.prelude as dp
import polars as pl

from kansrijk import schema
from kansrijk.gate.budget import float_at_most

dp.enable_features("contrib")

ModelKind = Literal["dp_tree", "dp_boosted"]
RESIDUAL_QUANTUM = 100  # boosted residuals are rounded to 1/100 so their sums are exact integer sums
GINI_SENSITIVITY = 2.0  # Friedman & Schuster 2010, Gini utility; monotone in the added person
BOOST_GAIN_SENSITIVITY = 3.0  # |Δ (G²/(n+λ))| <= 3 for residuals in [-1, 1], λ >= 0; not monotone
LAMBDA = 1.0


class DpModelNotPossible(Exception):
    """The request lacks public information the DP model needs; the gate turns this into a refusal."""


# --- public binning ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FeatureBins:
    """How one feature is binned. Codes ``0..len(labels)-1`` are the bins, ``len(labels)`` is "missing"."""

    name: str
    kind: Literal["ordinal", "nominal"]
    labels: tuple[str, ...]
    source: str  # "policy", "request", "schema"
    edges: tuple[float, ...] = ()  # inner edges of an ordinal numeric feature
    categories: tuple[Any, ...] = ()  # values of a nominal (or boolean) feature

    @property
    def n_codes(self) -> int:
        return len(self.labels) + 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "labels": list(self.labels), "source": self.source}
        if self.edges:
            out["edges"] = list(self.edges)
        if self.categories:
            out["categories"] = [str(c) for c in self.categories]
        return out


def _edge_labels(edges: Sequence[float]) -> tuple[str, ...]:
    e = [f"{x:g}" for x in edges]
    return (f"< {e[0]}", *[f"[{a}, {b})" for a, b in itertools.pairwise(e)], f">= {e[-1]}")


def plan_bins(
    data: pl.DataFrame,
    features: Sequence[str],
    *,
    policy_edges: Mapping[str, Sequence[float]],
    request_edges: Mapping[str, Sequence[float]],
    keys: Mapping[str, Sequence[Any]],
) -> tuple[FeatureBins, ...]:
    """The public bins of every feature; ``DpModelNotPossible`` names a feature without public bins.

    Numeric: inner edges from the policy (they win), else the request. Boolean: False/True. String: the
    request's ``keys`` or the schema's categories. Nothing is ever taken from the data.
    """
    out: list[FeatureBins] = []
    for name in features:
        dtype = data.schema[name]
        if dtype == pl.Boolean:
            out.append(FeatureBins(name, "nominal", ("false", "true"), "schema", categories=(False, True)))
        elif dtype.is_numeric():
            if name in policy_edges:
                edges, source = tuple(float(x) for x in policy_edges[name]), "policy"
            elif name in request_edges:
                edges, source = tuple(float(x) for x in request_edges[name]), "request"
            else:
                raise DpModelNotPossible(
                    f"numeric feature {name!r} has no public bin edges; add dp_model.bin_edges.{name} to the release "
                    f"policy or bin_edges={{'{name}': (...)}} to the request (edges must not come from the data)"
                )
            if not edges or any(b <= a for a, b in itertools.pairwise(edges)):
                raise DpModelNotPossible(f"bin edges of {name!r} must be one or more strictly increasing values")
            out.append(FeatureBins(name, "ordinal", _edge_labels(edges), source, edges=edges))
        else:
            cats: tuple[Any, ...] | None = tuple(keys[name]) if name in keys else None
            source = "request"
            if cats is None:
                try:
                    var = schema.variable(name)
                except KeyError:
                    var = None
                if var is not None and var.categories:
                    cats, source = tuple(var.categories), "schema"
            if not cats:
                raise DpModelNotPossible(
                    f"feature {name!r} has no public list of categories; declare keys={{'{name}': (...)}} in the "
                    f"request (DP must not take categories from the data)"
                )
            out.append(FeatureBins(name, "nominal", tuple(str(c) for c in cats), source, categories=cats))
    return tuple(out)


def bin_codes(data: pl.DataFrame, bins: Sequence[FeatureBins]) -> np.ndarray:
    """Bin code per person and feature: an int16 matrix (persons, features); missing → ``len(labels)``."""
    exprs = []
    for i, b in enumerate(bins):
        col = pl.col(b.name)
        missing = pl.lit(len(b.labels), dtype=pl.Int16)
        if b.kind == "ordinal":
            x = col.cast(pl.Float64)
            code = pl.sum_horizontal([(x >= e).cast(pl.Int16) for e in b.edges]).cast(pl.Int16)
            expr = pl.when(x.is_null() | x.is_nan()).then(missing).otherwise(code)
        else:
            mapping = {c: j for j, c in enumerate(b.categories)}
            expr = col.replace_strict(mapping, default=None, return_dtype=pl.Int16).fill_null(missing)
        exprs.append(expr.alias(f"c{i}"))
    return np.ascontiguousarray(data.select(exprs).to_numpy().astype(np.int16, copy=False))


# --- split candidates --------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Candidates:
    """Every candidate split of every feature: ``left[c, code]`` says whether bin ``code`` goes left."""

    left: np.ndarray  # bool (candidates, max codes)
    feature: np.ndarray  # int (candidates,)
    describe: tuple[dict[str, Any], ...]


def candidates(bins: Sequence[FeatureBins]) -> Candidates:
    width = max(b.n_codes for b in bins)
    rows: list[np.ndarray] = []
    feat: list[int] = []
    desc: list[dict[str, Any]] = []
    for f, b in enumerate(bins):
        k = len(b.labels)
        if b.kind == "ordinal":
            for t in range(k):  # bins 0..t left; missing right (t = k-1: missing vs known)
                row = np.zeros(width, dtype=bool)
                row[: t + 1] = True
                rows.append(row)
                feat.append(f)
                desc.append(_threshold(b, t, "right"))
            for t in range(k - 1):  # bins 0..t and missing left
                row = np.zeros(width, dtype=bool)
                row[: t + 1] = True
                row[k] = True
                rows.append(row)
                feat.append(f)
                desc.append(_threshold(b, t, "left"))
        else:
            for j in range(k + 1):  # one category (or missing) left, the rest right
                if k == 2 and j == 1:
                    continue  # for two categories "second vs rest" is "first vs rest" with missing moved
                row = np.zeros(width, dtype=bool)
                row[j] = True
                rows.append(row)
                feat.append(f)
                label = b.labels[j] if j < k else None
                desc.append({"feature": b.name, "rule": "equals", "category": label, "missing": "left" if j == k
                             else "right"})  # fmt: skip
    return Candidates(left=np.stack(rows), feature=np.asarray(feat, dtype=np.int64), describe=tuple(desc))


def _threshold(b: FeatureBins, t: int, missing: str) -> dict[str, Any]:
    if t == len(b.labels) - 1:
        return {"feature": b.name, "rule": "known", "missing": missing}
    return {"feature": b.name, "rule": "below", "threshold": b.edges[t], "missing": missing}


# --- scores (exact functions of the data; their sensitivities are what noisy-max is calibrated to) ---------
def _gini_mass(neg: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """n · Gini(node) = 2·neg·pos/(neg+pos) (0 for an empty node): the impurity in person counts."""
    n = neg + pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, 2.0 * neg * pos / np.maximum(n, 1), 0.0)


def gini_scores(hist: np.ndarray, cand: Candidates) -> np.ndarray:
    """Scores (nodes, candidates): minus the children's Gini mass. ``hist`` is (nodes, features, codes, 2).

    Adding one person raises exactly one child's mass by less than 2 (Friedman & Schuster 2010), so every score
    falls by at most 2 and none rises: LInf sensitivity 2, monotone.
    """
    per_cand = hist[:, cand.feature, :, :]  # (nodes, cands, codes, 2)
    left = np.einsum("ncky,ck->ncy", per_cand, cand.left.astype(np.float64))
    total = per_cand.sum(axis=2)
    right = total - left
    return -(_gini_mass(left[..., 0], left[..., 1]) + _gini_mass(right[..., 0], right[..., 1]))


def boost_scores(g_hist: np.ndarray, n_hist: np.ndarray, cand: Candidates) -> np.ndarray:
    """Scores (nodes, candidates): ``G_L²/(n_L+λ) + G_R²/(n_R+λ)`` with residual sums G and counts n per bin.

    With residuals in [-1, 1] and λ >= 0 one added person changes each term by at most 3 (and only one child's
    term): LInf sensitivity 3, not monotone.
    """
    g = g_hist[:, cand.feature, :]
    n = n_hist[:, cand.feature, :]
    lw = cand.left.astype(np.float64)
    gl, nl = np.einsum("nck,ck->nc", g, lw), np.einsum("nck,ck->nc", n, lw)
    gr, nr = g.sum(axis=2) - gl, n.sum(axis=2) - nl
    return gl**2 / (nl + LAMBDA) + gr**2 / (nr + LAMBDA)


# --- OpenDP measurements at exactly a step's epsilon -------------------------------------------------------
def _calibrated(make: Callable[[float], dp.Measurement], d_in: Any, epsilon: Fraction) -> dp.Measurement:
    """The measurement with the smallest scale whose own privacy map at ``d_in`` is within ``epsilon``.

    Pure-DP losses scale as 1/scale, so one probe gives the scale; the result is re-checked by OpenDP's map and
    nudged up if float rounding needs it. Raises if OpenDP's map cannot be met (never release then).
    """
    target = float_at_most(epsilon)
    probe = float(make(1.0).map(d_in))
    scale = probe / target
    for _ in range(64):
        m = make(scale)
        if float(m.map(d_in)) <= target:
            return m
        scale = math.nextafter(scale, math.inf) * (1 + 1e-12)
    raise RuntimeError("OpenDP measurement cannot be calibrated to the debited epsilon")


def noisy_max_measurement(epsilon: Fraction, sensitivity: float, *, monotonic: bool) -> dp.Measurement:
    """Report-noisy-max over a float score vector whose LInf sensitivity is ``sensitivity``."""
    space = dp.vector_domain(dp.atom_domain(T=float, nan=False)), dp.linf_distance(T=float, monotonic=monotonic)
    return _calibrated(lambda s: dp.m.make_noisy_max(*space, dp.max_divergence(), scale=s), float(sensitivity), epsilon)


def count_measurement(n_categories: int, epsilon: Fraction) -> dp.Measurement:
    """Per-person category codes → noisy count per code (OpenDP count_by_categories + discrete Laplace)."""
    counter = (dp.vector_domain(dp.atom_domain(T=int)), dp.symmetric_distance()) >> dp.t.then_count_by_categories(
        categories=list(range(n_categories)), null_category=False
    )
    return _calibrated(lambda s: counter >> dp.m.then_laplace(scale=s), 1, epsilon)


def noisy_counts(codes: np.ndarray, n_categories: int, epsilon: Fraction) -> np.ndarray:
    m = count_measurement(n_categories, epsilon)
    out = np.asarray(m(codes.astype(np.int64).tolist()), dtype=np.float64)
    return np.clip(out[:n_categories], 0.0, None)


def noisy_leaf_sums(
    leaf: np.ndarray, residual_q: np.ndarray, n_leaves: int, epsilon: Fraction, max_persons: int
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy (count, quantised residual sum) per leaf through OpenDP's polars Context (one compositor, one
    query, ``epsilon`` in total; leaves are disjoint so the grouped query is one parallel release)."""
    frame = pl.DataFrame({"leaf": leaf.astype(np.int64), "r": residual_q.astype(np.int64)})
    ctx = dp.Context.compositor(
        data=frame.lazy(),
        privacy_unit=dp.unit_of(contributions=1),
        privacy_loss=dp.loss_of(epsilon=float_at_most(epsilon)),
        split_evenly_over=1,
        margins=[dp.polars.Margin(by=[], max_length=max_persons)],
    )
    keys = pl.DataFrame({"leaf": np.arange(n_leaves, dtype=np.int64)})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        query = (
            ctx.query()
            .group_by(["leaf"])
            .agg(dp.len().alias("n"), pl.col("r").dp.sum((-RESIDUAL_QUANTUM, RESIDUAL_QUANTUM)).alias("g"))
            .with_keys(keys)
        )
        result = query.release().collect()
    table = keys.join(result, on="leaf", how="left").sort("leaf")
    n = np.clip(table.get_column("n").cast(pl.Float64).fill_null(0.0).to_numpy(), 0.0, None)
    g = table.get_column("g").cast(pl.Float64).fill_null(0.0).to_numpy() / RESIDUAL_QUANTUM
    return n, g


# --- the budget plan ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Step:
    name: str
    epsilon: Fraction
    mechanism: str
    composition: str

    def to_json(self) -> dict[str, str]:
        return {"step": self.name, "epsilon": str(self.epsilon), "mechanism": self.mechanism,
                "composition": self.composition}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Settings:
    model: ModelKind
    epsilon: Fraction
    max_depth: int
    trees: int = 1
    folds: int = 5
    learning_rate: float = 0.5
    eval_share: Fraction = Fraction(1, 10)
    leaf_share: Fraction = Fraction(1, 2)
    base_share: Fraction = Fraction(1, 20)
    max_persons: int = 10_000_000


def budget_steps(s: Settings) -> tuple[Step, ...]:
    """Every OpenDP measurement the training and evaluation make, with its exact epsilon. Sums to ``s.epsilon``."""
    eval_eps = s.epsilon * s.eval_share
    train = s.epsilon - eval_eps
    steps: list[Step] = []
    nm = "report noisy max (OpenDP make_noisy_max)"
    if s.model == "dp_tree":
        leaves = train * s.leaf_share
        per_level = (train - leaves) / s.max_depth
        for d in range(s.max_depth):
            steps.append(Step(f"splits.level{d}", per_level, nm, "parallel over the nodes of the level"))
        steps.append(Step("leaves.class_counts", leaves, "discrete Laplace (OpenDP count_by_categories + laplace)",
                          "parallel over leaves and classes"))  # fmt: skip
    else:
        base = train * s.base_share
        per_tree = (train - base) / s.trees
        leaves = per_tree * s.leaf_share
        per_level = (per_tree - leaves) / s.max_depth
        steps.append(Step("base_rate", base, "discrete Laplace (OpenDP count_by_categories + laplace)",
                          "parallel over the two classes"))  # fmt: skip
        for t in range(s.trees):
            for d in range(s.max_depth):
                steps.append(Step(f"tree{t}.splits.level{d}", per_level, nm, "parallel over the nodes of the level"))
            steps.append(Step(f"tree{t}.leaves", leaves, "Laplace count and integer sum (OpenDP polars Context)",
                              "parallel over leaves"))  # fmt: skip
    steps.append(Step("evaluation.score_histogram", eval_eps,
                      "discrete Laplace (OpenDP count_by_categories + laplace)",
                      "parallel over score bins and classes, held-out persons only"))  # fmt: skip
    assert sum((st.epsilon for st in steps), Fraction(0)) == s.epsilon
    return tuple(steps)


# --- training ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Tree:
    """A full binary tree in heap order: internal nodes ``0..2^D-2`` carry a chosen candidate, leaves follow."""

    depth: int
    split: np.ndarray  # candidate index per internal node
    leaf_value: np.ndarray  # dp_tree: P(positive); dp_boosted: logit increment
    leaf_counts: np.ndarray  # (leaves, 2) noisy (negative, positive) for dp_tree; (leaves, 2) (n, G) boosted


def route(codes: np.ndarray, tree: Tree, cand: Candidates) -> np.ndarray:
    """The leaf index (0 .. 2^D - 1) of every person."""
    node = np.zeros(codes.shape[0], dtype=np.int64)
    rows = np.arange(codes.shape[0])
    for _ in range(tree.depth):
        c = tree.split[node]
        go_left = cand.left[c, codes[rows, cand.feature[c]]]
        node = 2 * node + np.where(go_left, 1, 2)
    return node - (2**tree.depth - 1)


def _node_hist(codes: np.ndarray, node: np.ndarray, n_nodes: int, width: int, weights: np.ndarray) -> np.ndarray:
    """Sum of ``weights`` per (node, feature, code): (nodes, features, width)."""
    n_feat = codes.shape[1]
    idx = (node[:, None] * n_feat + np.arange(n_feat)[None, :]) * width + codes
    w = np.broadcast_to(weights[:, None], idx.shape)
    flat = np.bincount(idx.ravel(), weights=w.ravel(), minlength=n_nodes * n_feat * width)
    return flat.reshape(n_nodes, n_feat, width)


def grow_splits(
    codes: np.ndarray,
    cand: Candidates,
    depth: int,
    level_eps: Fraction,
    score: Callable[[np.ndarray, int], np.ndarray],
    *,
    sensitivity: float,
    monotonic: bool,
) -> np.ndarray:
    """Choose every internal node's split level by level with report-noisy-max; ``score(node, n_nodes)`` gives
    the (nodes, candidates) exact scores of the persons at each node of the level."""
    split = np.zeros(2**depth - 1, dtype=np.int64)
    node = np.zeros(codes.shape[0], dtype=np.int64)
    rows = np.arange(codes.shape[0])
    selector = noisy_max_measurement(level_eps, sensitivity, monotonic=monotonic)
    for d in range(depth):
        n_nodes = 2**d
        scores = score(node, n_nodes)
        first = n_nodes - 1
        for j in range(n_nodes):
            split[first + j] = int(selector([float(v) for v in scores[j]]))
        c = split[first + node]
        go_left = cand.left[c, codes[rows, cand.feature[c]]]
        node = 2 * node + np.where(go_left, 0, 1)
    return split


def train_dp_tree(codes: np.ndarray, y: np.ndarray, cand: Candidates, s: Settings, steps: Sequence[Step]) -> list[Tree]:
    width = cand.left.shape[1]
    level_eps = steps[0].epsilon
    onehot = [(y == 0).astype(np.float64), (y == 1).astype(np.float64)]

    def score(node: np.ndarray, n_nodes: int) -> np.ndarray:
        hist = np.stack([_node_hist(codes, node, n_nodes, width, w) for w in onehot], axis=-1)
        return gini_scores(hist, cand)

    split = grow_splits(codes, cand, s.max_depth, level_eps, score, sensitivity=GINI_SENSITIVITY, monotonic=True)
    tree = Tree(s.max_depth, split, np.zeros(0), np.zeros((0, 2)))
    leaf = route(codes, tree, cand)
    n_leaves = 2**s.max_depth
    leaf_eps = next(st.epsilon for st in steps if st.name == "leaves.class_counts")
    counts = np.rint(noisy_counts(leaf * 2 + y, 2 * n_leaves, leaf_eps)).reshape(n_leaves, 2)
    value = (counts[:, 1] + 1.0) / (counts.sum(axis=1) + 2.0)
    return [Tree(s.max_depth, split, value, counts)]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def train_dp_boosted(
    codes: np.ndarray, y: np.ndarray, cand: Candidates, s: Settings, steps: Sequence[Step]
) -> tuple[float, list[Tree]]:
    width = cand.left.shape[1]
    by_name = {st.name: st.epsilon for st in steps}
    base_counts = noisy_counts(y, 2, by_name["base_rate"])
    prior = (base_counts[1] + 1.0) / (base_counts.sum() + 2.0)
    base = float(np.log(prior / (1.0 - prior)))
    hess = max(prior * (1.0 - prior), 1e-3)
    logit = np.full(y.size, base)
    trees: list[Tree] = []
    n_leaves = 2**s.max_depth
    ones = np.ones(y.size)
    for t in range(s.trees):
        residual = np.rint((y - _sigmoid(logit)) * RESIDUAL_QUANTUM) / RESIDUAL_QUANTUM

        def score(node: np.ndarray, n_nodes: int, r: np.ndarray = residual) -> np.ndarray:
            g = _node_hist(codes, node, n_nodes, width, r)
            n = _node_hist(codes, node, n_nodes, width, ones)
            return boost_scores(g, n, cand)

        split = grow_splits(
            codes,
            cand,
            s.max_depth,
            by_name[f"tree{t}.splits.level0"],
            score,
            sensitivity=BOOST_GAIN_SENSITIVITY,
            monotonic=False,
        )
        shell = Tree(s.max_depth, split, np.zeros(0), np.zeros((0, 2)))
        leaf = route(codes, shell, cand)
        n, g = noisy_leaf_sums(
            leaf, np.rint(residual * RESIDUAL_QUANTUM), n_leaves, by_name[f"tree{t}.leaves"], s.max_persons
        )
        value = s.learning_rate * g / (hess * n + LAMBDA * 10.0)
        tree = Tree(s.max_depth, split, value, np.stack([n, g], axis=1))
        trees.append(tree)
        logit = logit + value[leaf]
    return base, trees


def predict(codes: np.ndarray, model: ModelKind, base: float, trees: Sequence[Tree], cand: Candidates) -> np.ndarray:
    if model == "dp_tree":
        return trees[0].leaf_value[route(codes, trees[0], cand)]
    logit = np.full(codes.shape[0], base)
    for tree in trees:
        logit = logit + tree.leaf_value[route(codes, tree, cand)]
    return _sigmoid(logit)


# --- evaluation from a noisy score histogram ---------------------------------------------------------------
SCORE_BINS = 16


def score_bin(
    scores: np.ndarray, model: ModelKind, base: float, trees: Sequence[Tree], cand: Candidates, codes: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(bin per person, representative score per bin) for the evaluation histogram, from public values only.

    A single tree: its leaves grouped, in order of their released probability, into ``SCORE_BINS`` groups of
    about equal released (noisy) training size. An ensemble: ``SCORE_BINS`` bins of the logit, 0.4 wide,
    centred on the released base logit (open at both ends). Few bins keep the total noise small.
    """
    if model == "dp_tree":
        tree = trees[0]
        order = np.argsort(tree.leaf_value, kind="stable")
        size = tree.leaf_counts.sum(axis=1)[order]
        cum = (np.cumsum(size) - size / 2) / max(float(size.sum()), 1.0)
        group_sorted = np.minimum((cum * SCORE_BINS).astype(np.int64), SCORE_BINS - 1)
        group = np.empty_like(group_sorted)
        group[order] = group_sorted
        used = np.unique(group)
        remap = np.full(SCORE_BINS, -1, dtype=np.int64)
        remap[used] = np.arange(used.size)
        leaf_group = remap[group]
        rep = np.array([np.average(tree.leaf_value[leaf_group == g], weights=size_w + 1e-9)
                        for g in range(used.size)
                        for size_w in [tree.leaf_counts.sum(axis=1)[leaf_group == g]]])  # fmt: skip
        return leaf_group[route(codes, tree, cand)], rep
    edges = base + 0.4 * (np.arange(SCORE_BINS - 1) - (SCORE_BINS - 2) / 2)
    logit = np.log(np.clip(scores, 1e-12, 1 - 1e-12) / np.clip(1 - scores, 1e-12, None))
    b = np.searchsorted(edges, logit, side="right")
    centres = _sigmoid(np.concatenate(([edges[0] - 0.2], (edges[:-1] + edges[1:]) / 2, [edges[-1] + 0.2])))
    return b.astype(np.int64), centres


def metrics_from_histogram(level: np.ndarray, neg: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    """ROC-AUC (ties ½) and average precision from (negative, positive) counts per score level."""
    order = np.argsort(level, kind="stable")
    neg, pos = neg[order], pos[order]
    p_total, n_total = float(pos.sum()), float(neg.sum())
    if p_total <= 0 or n_total <= 0:
        return {"roc_auc": float("nan"), "pr_auc": float("nan")}
    neg_below = np.cumsum(neg) - neg
    auc = float(np.sum(pos * (neg_below + 0.5 * neg)) / (p_total * n_total))
    tp, fp = np.cumsum(pos[::-1]), np.cumsum(neg[::-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-12), 0.0)
    recall = tp / p_total
    ap = float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))
    return {"roc_auc": auc, "pr_auc": ap}


# --- importances (post-processing of released noisy counts) ------------------------------------------------
def importances(
    model: ModelKind, trees: Sequence[Tree], cand: Candidates, bins: Sequence[FeatureBins]
) -> dict[str, float]:
    """Share of the total (noisy) impurity decrease per feature; computed from the released counts only."""
    total = np.zeros(len(bins))
    for tree in trees:
        n_int = 2**tree.depth - 1
        a = np.zeros(2 * n_int + 1)
        b = np.zeros(2 * n_int + 1)
        a[n_int:] = tree.leaf_counts[:, 0]
        b[n_int:] = tree.leaf_counts[:, 1]
        for j in range(n_int - 1, -1, -1):
            a[j], b[j] = a[2 * j + 1] + a[2 * j + 2], b[2 * j + 1] + b[2 * j + 2]
        for j in range(n_int):
            lo, hi = 2 * j + 1, 2 * j + 2
            if model == "dp_tree":
                gain = _gini_mass(a[j], b[j]) - _gini_mass(a[lo], b[lo]) - _gini_mass(a[hi], b[hi])
            else:  # a = n, b = G
                gain = b[lo] ** 2 / (a[lo] + LAMBDA) + b[hi] ** 2 / (a[hi] + LAMBDA) - b[j] ** 2 / (a[j] + LAMBDA)
            total[cand.feature[tree.split[j]]] += max(float(gain), 0.0)
    s = total.sum()
    shares = total / s if s > 0 else total
    return {b.name: float(v) for b, v in zip(bins, shares, strict=True)}


# --- the whole release -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class DpModelResult:
    values: dict[str, Any]
    steps: tuple[Step, ...]
    predict: Callable[[pl.DataFrame], np.ndarray] = field(repr=False)


def fold_of(data: pl.DataFrame, columns: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """Fold per person from a seeded hash of the person's own record (their id column if given): adding or
    removing one person never moves another, which parallel and sequential composition both need."""
    h = data.select(pl.struct(list(columns)).hash(seed % 2**63).alias("h")).get_column("h").to_numpy()
    return (h % np.uint64(folds)).astype(np.int64)


def train_and_evaluate(
    data: pl.DataFrame,
    *,
    outcome: str,
    bins: Sequence[FeatureBins],
    settings: Settings,
    seed: int,
    person: str | None = None,
) -> DpModelResult:
    """Train ``settings.model`` on folds 1..k-1 and evaluate it on fold 0, spending exactly ``settings.epsilon``.

    The caller (the gate) has debited the epsilon. Returns the release values (structure, importances, noisy
    metrics, the budget split) and a predictor for callers inside the secure environment (benchmarks).
    """
    steps = budget_steps(settings)
    y_all = data.get_column(outcome).cast(pl.Int64).to_numpy()
    codes_all = bin_codes(data, bins)
    key_cols = [person] if person else [*(b.name for b in bins), outcome]
    fold = fold_of(data, key_cols, settings.folds, seed)
    train, hold = fold != 0, fold == 0
    codes, y = codes_all[train], y_all[train]
    cand = candidates(bins)
    base = 0.0
    if settings.model == "dp_tree":
        trees = train_dp_tree(codes, y, cand, settings, steps)
    else:
        base, trees = train_dp_boosted(codes, y, cand, settings, steps)
    # evaluation on the held-out persons
    hold_codes, y_hold = codes_all[hold], y_all[hold]
    scores = predict(hold_codes, settings.model, base, trees, cand)
    level, rep = score_bin(scores, settings.model, base, trees, cand, hold_codes)
    n_levels = rep.size
    hist = noisy_counts(level * 2 + y_hold, 2 * n_levels, steps[-1].epsilon).reshape(n_levels, 2)
    hist = np.rint(hist)
    metrics = metrics_from_histogram(rep, hist[:, 0], hist[:, 1])
    metrics["n_holdout"] = float(hist.sum())
    metrics["n_positive_holdout"] = float(hist[:, 1].sum())
    values: dict[str, Any] = {
        "model": settings.model,
        "outcome": outcome,
        "features": {b.name: b.to_json() for b in bins},
        "max_depth": settings.max_depth,
        "trees": [_tree_json(t, cand, settings.model) for t in trees],
        "importances": importances(settings.model, trees, cand, bins),
        "metrics": metrics,
        "score_histogram": {
            "score": [float(x) for x in rep],
            "negative": [int(x) for x in hist[:, 0]],
            "positive": [int(x) for x in hist[:, 1]],
        },
        "evaluation": {
            "folds": settings.folds,
            "held_out_fold": 0,
            "assignment": f"seeded hash of {'the person column' if person else 'the whole record'} mod folds",
        },
        "epsilon": {"total": str(settings.epsilon), "steps": [st.to_json() for st in steps]},
        "exact": False,
    }
    if settings.model == "dp_boosted":
        values["base_logit"] = base
        values["learning_rate"] = settings.learning_rate

    def predictor(frame: pl.DataFrame) -> np.ndarray:
        return predict(bin_codes(frame, bins), settings.model, base, trees, cand)

    return DpModelResult(values=values, steps=steps, predict=predictor)


def _tree_json(tree: Tree, cand: Candidates, model: ModelKind) -> dict[str, Any]:
    n_int = 2**tree.depth - 1
    nodes: list[dict[str, Any]] = []
    for j in range(n_int):
        nodes.append({"node_id": j, "depth": math.floor(math.log2(j + 1)), **cand.describe[tree.split[j]],
                      "left": 2 * j + 1, "right": 2 * j + 2})  # fmt: skip
    for i in range(2**tree.depth):
        leaf: dict[str, Any] = {"node_id": n_int + i, "depth": tree.depth, "feature": None}
        if model == "dp_tree":
            leaf["class_counts"] = [int(tree.leaf_counts[i, 0]), int(tree.leaf_counts[i, 1])]
            leaf["probability"] = float(tree.leaf_value[i])
        else:
            leaf["n"] = float(tree.leaf_counts[i, 0])
            leaf["gradient_sum"] = float(tree.leaf_counts[i, 1])
            leaf["value"] = float(tree.leaf_value[i])
        nodes.append(leaf)
    return {"nodes": nodes}


GUARANTEE = (
    "epsilon-differential privacy for one person (add or remove), over the whole release: structure, leaf values, "
    "importances and metrics. Public and not protected: the feature list, the bin edges and categories, the "
    "settings and the seed. Not covered: anything released about the same persons under sdc only."
)

__all__ = [
    "GUARANTEE",
    "Candidates",
    "DpModelNotPossible",
    "DpModelResult",
    "FeatureBins",
    "Settings",
    "Step",
    "bin_codes",
    "boost_scores",
    "budget_steps",
    "candidates",
    "gini_scores",
    "metrics_from_histogram",
    "plan_bins",
    "train_and_evaluate",
]
