"""Paired comparison of two sets of out-of-fold predictions on the same persons (all variables vs the factor
model), and unpaired comparison of one model between years.

Paired bootstrap over persons: each replicate draws n persons with replacement and recomputes every metric of
both models on the *same* draw, so the difference's spread reflects the persons, with their pairing kept. The
interval is the percentile interval of the replicate differences; ``p_two_sided`` is twice the smaller share of
replicates on either side of zero (a bootstrap test of "no difference"). Models are held fixed: the interval
does not include the variability of refitting, which the per-fold metrics show separately.

A replicate never copies persons: persons are grouped by (score level of A, score level of B, outcome) and a
replicate is a multinomial draw of how often each group is sampled — the same distribution as resampling persons,
at a cost of the number of groups rather than the number of persons.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kansrijk.stats.metrics import METRICS, Levels, metrics_from_counts


@dataclass(frozen=True, slots=True)
class Difference:
    """Metric of A minus metric of B, with its bootstrap interval."""

    metric: str
    a: float
    b: float
    delta: float
    ci_low: float
    ci_high: float
    p_two_sided: float

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0


@dataclass(frozen=True, slots=True)
class Comparison:
    differences: dict[str, Difference]
    replicates: int
    confidence: float
    n: int
    n_positive: int

    @property
    def disagree(self) -> bool:
        """True when the ranking view (ROC-AUC) and the finding-positives view (recall at k) favour different
        models, each significantly — the pattern the factsheet reported for psychosocial risk."""
        auc, rec = self.differences["roc_auc"], self.differences["recall_at_k"]
        return auc.significant and rec.significant and (auc.delta > 0) != (rec.delta > 0)


def _grouped(levels: list[Levels], y: np.ndarray) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Groups of persons with equal (levels..., outcome): group sizes, level index per group, outcome per group."""
    key = np.zeros(y.size, dtype=np.int64)
    for lv in levels:
        key = key * (lv.values.size + 1) + lv.index
    key = key * 2 + y.astype(np.int64)
    uniq, first, counts = np.unique(key, return_index=True, return_counts=True)
    del uniq
    return counts, [lv.index[first] for lv in levels], y[first].astype(np.float64)


def _metrics_for(levels: Levels, idx: np.ndarray, yg: np.ndarray, w: np.ndarray, k: float) -> dict[str, float]:
    size = levels.values.size
    pos = np.bincount(idx, weights=w * yg, minlength=size)
    neg = np.bincount(idx, weights=w * (1.0 - yg), minlength=size)
    return metrics_from_counts(levels.values, pos, neg, k)


def paired_bootstrap(
    y: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    top_k_percent: float,
    replicates: int,
    confidence: float,
    rng: np.random.Generator,
) -> Comparison:
    """Every metric of A and B on all persons, and the bootstrap distribution of A - B."""
    y = np.asarray(y).astype(np.int64)
    la, lb = Levels.of(scores_a), Levels.of(scores_b)
    sizes, (ia, ib), yg = _grouped([la, lb], y)
    ones = sizes.astype(np.float64)
    point_a = _metrics_for(la, ia, yg, ones, top_k_percent)
    point_b = _metrics_for(lb, ib, yg, ones, top_k_percent)
    n = int(y.size)
    probs = sizes / sizes.sum()
    deltas = np.empty((replicates, len(METRICS)))
    for r in range(replicates):
        w = rng.multinomial(n, probs).astype(np.float64)
        ma = _metrics_for(la, ia, yg, w, top_k_percent)
        mb = _metrics_for(lb, ib, yg, w, top_k_percent)
        deltas[r] = [ma[m] - mb[m] for m in METRICS]
    return Comparison(
        differences=_differences(point_a, point_b, deltas, confidence),
        replicates=replicates,
        confidence=confidence,
        n=n,
        n_positive=int(y.sum()),
    )


def unpaired_bootstrap(
    y_a: np.ndarray,
    scores_a: np.ndarray,
    y_b: np.ndarray,
    scores_b: np.ndarray,
    *,
    top_k_percent: float,
    replicates: int,
    confidence: float,
    rng: np.random.Generator,
) -> Comparison:
    """Metric of A (one year) minus metric of B (another year), resampling each year's persons on its own.

    Persons present in both years are treated as independent between the years, which makes the interval
    somewhat conservative when their outcomes are positively correlated over time.
    """
    parts = []
    for y, s in ((y_a, scores_a), (y_b, scores_b)):
        y = np.asarray(y).astype(np.int64)
        lv = Levels.of(s)
        sizes, (ix,), yg = _grouped([lv], y)
        parts.append((lv, ix, yg, sizes, int(y.size)))
    point = [_metrics_for(lv, ix, yg, sizes.astype(np.float64), top_k_percent) for lv, ix, yg, sizes, _ in parts]
    deltas = np.empty((replicates, len(METRICS)))
    for r in range(replicates):
        ms = []
        for lv, ix, yg, sizes, n in parts:
            w = rng.multinomial(n, sizes / sizes.sum()).astype(np.float64)
            ms.append(_metrics_for(lv, ix, yg, w, top_k_percent))
        deltas[r] = [ms[0][m] - ms[1][m] for m in METRICS]
    n_pos = int(np.asarray(y_a).sum() + np.asarray(y_b).sum())
    return Comparison(
        differences=_differences(point[0], point[1], deltas, confidence),
        replicates=replicates,
        confidence=confidence,
        n=int(np.asarray(y_a).size + np.asarray(y_b).size),
        n_positive=n_pos,
    )


def _differences(
    point_a: dict[str, float], point_b: dict[str, float], deltas: np.ndarray, confidence: float
) -> dict[str, Difference]:
    alpha = 1.0 - confidence
    out: dict[str, Difference] = {}
    for j, m in enumerate(METRICS):
        d = deltas[:, j]
        d = d[np.isfinite(d)]
        lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2]) if d.size else (np.nan, np.nan)
        p = min(1.0, 2.0 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0)))) if d.size else float("nan")
        out[m] = Difference(
            metric=m,
            a=point_a[m],
            b=point_b[m],
            delta=point_a[m] - point_b[m],
            ci_low=float(lo),
            ci_high=float(hi),
            p_two_sided=p,
        )
    return out


__all__ = ["Comparison", "Difference", "paired_bootstrap", "unpaired_bootstrap"]
