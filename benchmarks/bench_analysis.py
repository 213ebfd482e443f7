"""Analysis benchmark: the full plan's time, and each outcome's out-of-fold AUC against the Bayes-optimal AUC of
the synthetic city's true probabilities (the ceiling no model can beat on average).

The dataset is assembled from the city's ground truth in the shape ``coordinator link`` writes (linkage and the
gate are benchmarked elsewhere), so the figures are the analysis alone. Scale "full" is Rotterdam's 150,000
persons (target: the whole plan in <= 60 s on 2 cores, AUC gap <= 0.02); "small" is 20,000 persons.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from coordinator.analysis.plan import encode, feature_variables, load_policies
from coordinator.analysis.run import analysis_requests
from coordinator.analysis.trees import LeafRules

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
from analysis_frames import city_dataset  # noqa: E402

PERSONS = {"small": 20_000, "full": 150_000}


def run(scale: str) -> list[dict]:
    persons = PERSONS[scale]
    policies = load_policies(
        ROOT / "policies" / "analysis" / "rotterdam-groeit.toml", ROOT / "policies" / "factors" / "factor-model.toml",
        None,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        frame = city_dataset(Path(tmp) / "city", persons=persons, seed=7)
    oof: dict[tuple[str, str, str], object] = {}
    start = time.perf_counter()
    requests = list(analysis_requests(policies, {2023: frame}, leaf_rules=LeafRules(), oof_sink=oof))
    seconds = time.perf_counter() - start
    figures = [
        {
            "name": f"full analysis plan, {persons:,} persons ({len(requests)} release requests)",
            "value": round(seconds, 2),
            "unit": "s",
            "reference_name": "target (2 cores)",
            "reference_value": 60.0,
            "ratio": round(seconds / 60.0, 3),
            "target": "<= 60 s at 150k",
        }
    ]
    for (_, outcome, fs), pred in sorted(oof.items()):
        if fs != "all":
            continue
        pop = frame.filter(pl.col(outcome).is_not_null())
        y = pop[outcome].to_numpy()
        bayes = roc_auc_score(y, pop[f"p_{outcome}"].to_numpy())
        auc = roc_auc_score(y, pred)
        figures.append(
            {
                "name": f"{outcome}: Bayes-optimal AUC minus tree AUC (all variables)",
                "value": round(bayes - auc, 4),
                "unit": "AUC",
                "reference_name": "Bayes-optimal AUC",
                "reference_value": round(bayes, 4),
                "ratio": round(auc / bayes, 4),
                "target": "gap <= 0.02 at 150k",
            }
        )
        # peer: an unpenalised logistic regression on the same encoded features (missing -> 0 plus indicator)
        if outcome == "psychosocial_risk":
            variables = feature_variables(pop.columns, policies.plan, policies.factors, outcome, "all")
            design = encode(pop, variables, one_hot_max_levels=12)
            import numpy as np

            X = np.nan_to_num(design.X)
            logit = LogisticRegression(max_iter=500).fit(X, y)
            in_sample = roc_auc_score(y, logit.predict_proba(X)[:, 1])
            figures.append(
                {
                    "name": f"{outcome}: linear logistic regression AUC (in-sample, same features)",
                    "value": round(in_sample, 4),
                    "unit": "AUC",
                    "reference_name": "tree out-of-fold AUC",
                    "reference_value": round(auc, 4),
                    "ratio": round(in_sample / auc, 4),
                    "target": "trees capture the planted U in WOZ; a linear model cannot",
                }
            )
    return figures


if __name__ == "__main__":
    for fig in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(fig)
