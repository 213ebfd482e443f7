"""Tree engines benchmark: the analysis plan's tree work with histogram trees against exact trees, in the same run.

The shipped plan (``policies/analysis/rotterdam-groeit.toml``) runs twice on the same synthetic city, once with
``model.engine = "histogram"`` (the default: every column binned once per dataset, trees grown from per-node
class-count histograms) and once with ``"exact"`` (scikit-learn's exact-split trees), everything else equal: every
outcome with enough positives, both feature sets, 5 folds, the (max_depth, min_samples_leaf) grid, every shrinkage
strength, permutation importances and the released tree pruned to the leaf rules — all of
``coordinator.analysis.run.analysis_requests``, which is the plan's work before the gate (the gate's own work is
the same for both engines and is measured in ``bench_analysis``).

Figures: wall time of each engine and the speed-up (target at national scale, 4.5M persons: at least 6x), and per
outcome and feature set the pooled out-of-fold ROC-AUC of the histogram trees minus the exact trees' (target:
within 0.003). Scale "small" is 20,000 persons; "full" is national scale, 4,500,000 persons (long: the exact
engine alone takes about 20 minutes on 2 cores). ``BENCH_TREES_PERSONS=300000`` sets another size; the targets
are judged at national scale only.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.metrics import roc_auc_score

from benchmarks.run import figure as _figure
from coordinator.analysis.plan import LoadedPolicies, load_policies
from coordinator.analysis.run import analysis_requests
from coordinator.analysis.trees import LeafRules

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
from analysis_frames import city_dataset  # noqa: E402

NATIONAL = 4_500_000
PERSONS = {"small": 20_000, "full": NATIONAL}
YEAR = 2023
FEATURE_SETS = ("all", "factor_model")
TARGET_SPEEDUP = 6.0
TARGET_AUC = 0.003


def with_engine(policies: LoadedPolicies, engine: str) -> LoadedPolicies:
    """The plan with ``model.engine`` set (nothing else changes)."""
    plan = policies.plan
    model = plan.model.model_copy(update={"engine": engine})
    return dataclasses.replace(policies, plan=plan.model_copy(update={"model": model}))


def timed(policies: LoadedPolicies, frame: pl.DataFrame) -> tuple[float, float, dict[tuple[str, str, str], np.ndarray]]:
    """Wall and CPU seconds of the plan's work before the gate, and the out-of-fold predictions."""
    oof: dict[tuple[str, str, str], np.ndarray] = {}
    start, cpu = time.perf_counter(), time.process_time()
    for _ in analysis_requests(policies, {YEAR: frame}, leaf_rules=LeafRules(), oof_sink=oof):
        pass
    return time.perf_counter() - start, time.process_time() - cpu, oof


def compare(persons: int) -> list[dict]:
    policies = load_policies(
        ROOT / "policies" / "analysis" / "rotterdam-groeit.toml", ROOT / "policies" / "factors" / "factor-model.toml",
        None,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        frame = city_dataset(Path(tmp) / "city", persons=persons, seed=7)
    national = persons >= NATIONAL
    hist_s, hist_cpu, hist_oof = timed(with_engine(policies, "histogram"), frame)
    exact_s, exact_cpu, exact_oof = timed(with_engine(policies, "exact"), frame)
    speedup = exact_s / hist_s
    figures = [
        _figure(
            f"analysis plan's tree work (before the gate), histogram engine, {persons:,} persons, wall",
            hist_s, "s", "exact engine, same run", exact_s, "<= 1/6 of the exact engine at 4.5M",
            speedup >= TARGET_SPEEDUP if national else None,
        ),
        _figure(
            "histogram engine speed-up over the exact engine (wall)", speedup, "x faster",
            "the target at 4.5M", TARGET_SPEEDUP, ">= 6x at 4.5M", speedup >= TARGET_SPEEDUP if national else None,
        ),
        _figure(
            "histogram engine, CPU time (all threads)", hist_cpu, "s", "exact engine, CPU time, same run", exact_cpu,
        ),
    ]  # fmt: skip
    for scope, outcome, fs in sorted(exact_oof):
        if (scope, outcome, fs) not in hist_oof:
            continue
        y = frame.filter(pl.col(outcome).is_not_null())[outcome].cast(pl.Int8).to_numpy()
        exact_auc = float(roc_auc_score(y, exact_oof[(scope, outcome, fs)]))
        diff = float(roc_auc_score(y, hist_oof[(scope, outcome, fs)])) - exact_auc
        figures.append(
            _figure(
                f"{outcome} ({fs} features): out-of-fold AUC, histogram minus exact trees",
                diff, "AUC", "the exact trees' AUC, same run", exact_auc, "within 0.003 at 4.5M",
                abs(diff) <= TARGET_AUC if national else None,
            )
        )  # fmt: skip
    return figures


def run(scale: str) -> list[dict]:
    return compare(int(os.environ.get("BENCH_TREES_PERSONS", PERSONS[scale])))


if __name__ == "__main__":
    for fig in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(fig)
