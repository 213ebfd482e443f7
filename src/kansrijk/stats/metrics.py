"""Performance metrics of risk scores, computed on *score levels* so that bootstrap replicates are cheap.

A decision tree gives few distinct scores (one per leaf and fold), so every metric here works on the distinct
score levels and the (weighted) number of positives and negatives at each level. A bootstrap replicate is then a
re-weighting of those counts, never a copy of the persons. Definitions (ties handled exactly):

- ``roc_auc``: probability that a random positive scores above a random negative, ties counted one half
  (Mann-Whitney); equals scikit-learn's ``roc_auc_score``.
- ``pr_auc``: average precision, the step-wise area under the precision-recall curve with one step per distinct
  score (scikit-learn's ``average_precision_score``).
- ``brier``: mean squared difference between the score and the outcome (scores must be probabilities).
- ``recall_at_k``: share of all positives found among the ``k``% of persons with the highest scores; persons
  tied at the boundary are included fractionally (the expectation under random tie-breaking), so the value
  does not depend on row order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "brier", "recall_at_k")
HIGHER_IS_BETTER = {"roc_auc": True, "pr_auc": True, "brier": False, "recall_at_k": True}


@dataclass(frozen=True, slots=True)
class Levels:
    """Distinct scores (ascending) and, per person, the index of their score level."""

    values: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, scores: np.ndarray) -> Levels:
        values, index = np.unique(np.asarray(scores, dtype=np.float64), return_inverse=True)
        return cls(values=values, index=index.astype(np.int64))


def level_counts(levels: Levels, y: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(positives, negatives) per score level, weighted by ``weights`` (persons count once by default)."""
    yf = np.asarray(y, dtype=np.float64)
    w = np.ones_like(yf) if weights is None else np.asarray(weights, dtype=np.float64)
    size = levels.values.size
    pos = np.bincount(levels.index, weights=w * yf, minlength=size)
    neg = np.bincount(levels.index, weights=w * (1.0 - yf), minlength=size)
    return pos, neg


def metrics_from_counts(values: np.ndarray, pos: np.ndarray, neg: np.ndarray, top_k_percent: float) -> dict[str, float]:
    """Every metric of ``METRICS`` from per-level positive and negative counts (levels ascending)."""
    p_total, n_total = float(pos.sum()), float(neg.sum())
    out: dict[str, float] = {}
    if p_total <= 0 or n_total <= 0:
        return dict.fromkeys(METRICS, float("nan"))
    neg_below = np.cumsum(neg) - neg
    out["roc_auc"] = float(np.sum(pos * (neg_below + 0.5 * neg)) / (p_total * n_total))
    # descending order for precision/recall
    pos_d, neg_d = pos[::-1], neg[::-1]
    tp, fp = np.cumsum(pos_d), np.cumsum(neg_d)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
    recall = tp / p_total
    out["pr_auc"] = float(np.sum(np.diff(np.concatenate(([0.0], recall))) * precision))
    out["brier"] = float(np.sum(pos * (1.0 - values) ** 2 + neg * values**2) / (p_total + n_total))
    size_d = pos_d + neg_d
    capacity = top_k_percent / 100.0 * (p_total + n_total)
    before = np.cumsum(size_d) - size_d
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.clip(np.where(size_d > 0, (capacity - before) / size_d, 0.0), 0.0, 1.0)
    out["recall_at_k"] = float(np.sum(share * pos_d) / p_total)
    return out


def score_metrics(y: np.ndarray, scores: np.ndarray, top_k_percent: float) -> dict[str, float]:
    """Every metric for one vector of outcomes and scores (persons weighted equally)."""
    levels = Levels.of(scores)
    pos, neg = level_counts(levels, y)
    return metrics_from_counts(levels.values, pos, neg, top_k_percent)


def select_metric(scores_by_fold: dict[str, float], name: str) -> float:
    """A metric oriented so that larger is better (Brier is negated) — for model selection."""
    value = scores_by_fold[name]
    return value if HIGHER_IS_BETTER[name] else -value


__all__ = ["HIGHER_IS_BETTER", "METRICS", "Levels", "level_counts", "metrics_from_counts", "score_metrics"]
