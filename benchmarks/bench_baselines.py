"""Accuracy baseline: what the explainable decision tree costs against a flexible black-box model.

Per outcome of the analysis plan that is modelled with trees, on the same persons, the same design matrix
(``coordinator.analysis.plan.encode`` of the "all variables" feature set) and the same out-of-fold protocol:

- the tree side is ``coordinator.analysis.trees.cross_validate`` exactly as ``coordinator analyse`` runs it (the
  plan's grid, folds, class weighting, cross-fitted selection, seeded by the plan's seed for scope "2023" and the
  outcome); its out-of-fold probabilities give the tree's ROC-AUC;
- the reference is scikit-learn's ``HistGradientBoostingClassifier`` (200 iterations at most, early stopping on
  an internal 10% split of each training fold; one thread) fitted on the *same* folds (``CvResult.fold_of``) and scored
  out-of-fold the same way (``kansrijk.stats.metrics.score_metrics``).

The difference (boosting AUC minus tree AUC) is the accuracy the explainable model gives up; next to it the whole
gap to the Bayes-optimal AUC (the synthetic city's true probabilities), so the ratio is the share of that gap the
tree's simplicity accounts for. The rest of the gap is not in the features at all.

Scale "full": Rotterdam's 150,000 persons with the plan's minimum positives (1,000; early school leaving is
refused, as in the factsheet); "small": 30,000 persons with the minimum lowered to 200 (as ``kansrijk demo``
does for small cities). No targets: these figures inform, they do not gate.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from benchmarks.run import figure as _figure
from coordinator.analysis.plan import encode, feature_variables, load_policies
from coordinator.analysis.run import _settings as plan_tree_settings
from coordinator.analysis.trees import cross_validate, stable_seed
from kansrijk.stats.metrics import score_metrics

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
from analysis_frames import city_dataset  # noqa: E402

PERSONS = {"small": 30_000, "full": 150_000}
SMALL_MIN_POSITIVES = 200
SCOPE = "2023"
FEATURE_SET = "all"


def boosted_oof(X: np.ndarray, y: np.ndarray, fold_of: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold probabilities of a histogram gradient-boosting model on the given folds.

    One OpenMP thread: on a shared 2-core machine its spinning threads run 2-3x slower than one thread.
    """
    oof = np.empty(y.size, dtype=np.float64)
    with threadpool_limits(1):
        for f in np.unique(fold_of):
            train, test = fold_of != f, fold_of == f
            model = HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=seed)
            oof[test] = model.fit(X[train], y[train]).predict_proba(X[test])[:, 1]
    return oof


def run(scale: str) -> list[dict]:
    persons = PERSONS[scale]
    policies = load_policies(
        ROOT / "policies" / "analysis" / "rotterdam-groeit.toml", ROOT / "policies" / "factors" / "factor-model.toml",
        None,
    )  # fmt: skip
    plan = policies.plan
    settings = plan_tree_settings(policies)
    with tempfile.TemporaryDirectory(prefix="kansrijk-bench-baselines-") as tmp:
        frame = city_dataset(Path(tmp) / "city", persons=persons, seed=7)
    frame = frame.filter(pl.col("age_years").is_between(plan.cohort.min_age, plan.cohort.max_age))
    figures: list[dict] = []
    costs: list[float] = []
    tree_seconds = boosted_seconds = 0.0
    for outcome, spec in plan.outcomes.items():
        if spec.model != "tree" or outcome not in frame.columns:
            continue
        pop = frame.filter(pl.col(outcome).is_not_null())
        y = pop.get_column(outcome).cast(pl.Int8).to_numpy().astype(np.int64)
        minimum = plan.min_positives(outcome)
        if scale == "small":
            minimum = min(minimum, SMALL_MIN_POSITIVES)
        if int(y.sum()) < minimum:
            figures.append(
                _figure(
                    f"{outcome}: not modelled (positives below the plan's minimum), {persons:,} persons",
                    float(y.sum()), "positives", "minimum positives", float(minimum),
                )
            )  # fmt: skip
            continue
        variables = feature_variables(pop.columns, plan, policies.factors, outcome, FEATURE_SET)
        design = encode(
            pop, variables, one_hot_max_levels=plan.features.one_hot_max_levels, ordinal=plan.features.ordinal
        )
        start = time.perf_counter()
        cv = cross_validate(design, y, settings, stable_seed(plan.seed, SCOPE, outcome))
        tree_seconds += time.perf_counter() - start
        start = time.perf_counter()
        boosted = boosted_oof(design.X, y, cv.fold_of, seed=plan.seed % 2**32)
        boosted_seconds += time.perf_counter() - start
        tree_auc = cv.metrics["roc_auc"]
        boosted_auc = score_metrics(y, boosted, settings.top_k_percent)["roc_auc"]
        bayes_auc = score_metrics(y, pop.get_column(f"p_{outcome}").to_numpy(), settings.top_k_percent)["roc_auc"]
        costs.append(boosted_auc - tree_auc)
        figures += [
            _figure(
                f"{outcome}: decision tree AUC, out-of-fold ({cv.n:,} persons, {cv.n_positive:,} positives, "
                f"all variables)",
                tree_auc, "AUC", "HistGradientBoostingClassifier AUC, same design matrix and folds", boosted_auc,
            ),
            _figure(
                f"{outcome}: AUC the explainable tree gives up (boosting minus tree)",
                boosted_auc - tree_auc, "AUC", "whole gap to the Bayes-optimal AUC (Bayes minus tree)",
                bayes_auc - tree_auc,
            ),
        ]  # fmt: skip
    if costs:
        figures += [
            _figure(
                f"mean AUC the tree gives up over {len(costs)} outcomes ({persons:,} persons)",
                float(np.mean(costs)), "AUC", "largest over the outcomes", float(np.max(costs)),
            ),
            _figure(
                "fit time: tree cross-validation (grid, selection, importances) for all outcomes",
                tree_seconds, "s", "gradient boosting on the same folds (one thread)", boosted_seconds,
            ),
        ]  # fmt: skip
    return figures


if __name__ == "__main__":
    for fig in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(fig)
