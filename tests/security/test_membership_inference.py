"""Membership inference on released trees: SACRO-ML's shadow-free worst-case attack.

A tree is trained with the analysis plan's settings (gini, balanced class weights, its deepest ``max_depth`` and
smallest ``min_samples_leaf``: the riskiest grid point) on a random half of the small city; the other half are
non-members. The attacker knows the model's predicted probabilities for every member and non-member; each of 10
repetitions trains an attack model (a random forest, SACRO-ML's defaults) on 80% of those rows and scores the other
20% (stratified). We report the mean attack AUC and the share of repetitions whose AUC is significant at
p < 0.05 (one-sided, normal approximation of the AUC under the null, as SACRO-ML's ``metrics.auc_p_val``), and call
the model risky if the mean AUC exceeds 0.65 or more than 10% of AUCs are significant (reference/sdc-rules.md).

The attack is run twice: as SACRO-ML's default (sorted probabilities only) and with its
``include_model_correct_feature`` (the attacker also knows who was classified correctly). The control: a tree grown
without the plan's leaf rule (``min_samples_leaf=1``) must be found risky by the second, so the test would fail if
the plan's minimum leaf size were removed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pytest
from attack_kit import REPO_POLICIES
from scipy.stats import norm
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.tree import DecisionTreeClassifier

from kansrijk.policy.analysis import load_analysis_plan
from kansrijk.synth.city import CityPaths

FEATURES = [
    "woz_eur",
    "low_income",
    "social_assistance",
    "debt_assistance",
    "youth_care",
    "parenting_concerns",
    "language_delay",
    "truancy_reports",
    "sdq_total",
    "bmi",
    "age",
]
REPS, TEST_SHARE, P_THRESHOLD = 10, 0.2, 0.05


@dataclass(frozen=True)
class AttackResult:
    mean_auc: float
    share_significant: float
    aucs: tuple[float, ...]

    @property
    def risky(self) -> bool:
        return self.mean_auc > 0.65 or self.share_significant > 0.10


def auc_p_value(auc: float, n_pos: int, n_neg: int) -> float:
    """P(AUC >= auc) under the null of no membership signal (Hanley & McNeil variance at AUC = 0.5)."""
    var = (0.25 + (n_pos - 1) * (1 / 3 - 0.25) + (n_neg - 1) * (1 / 3 - 0.25)) / (n_pos * n_neg)
    return float(1 - norm.cdf(auc, loc=0.5, scale=np.sqrt(var)))


def worst_case_attack(
    proba_members: np.ndarray,
    proba_non_members: np.ndarray,
    correct: tuple[np.ndarray, np.ndarray] | None = None,
    seed: int = 5,
) -> AttackResult:
    """The attack on sorted predicted probabilities; with ``correct`` (whether the model classified each row
    correctly: SACRO-ML's ``include_model_correct_feature``) the attacker also knows the true labels."""
    x = np.vstack([-np.sort(-proba_members, axis=1), -np.sort(-proba_non_members, axis=1)])
    if correct is not None:
        x = np.column_stack([x, np.concatenate(correct)])
    y = np.concatenate([np.ones(len(proba_members)), np.zeros(len(proba_non_members))])
    aucs, significant = [], 0
    for rep in range(REPS):
        x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=TEST_SHARE, stratify=y, random_state=seed + rep**2)
        attack = RandomForestClassifier(min_samples_split=20, min_samples_leaf=10, max_depth=5, random_state=rep)
        auc = roc_auc_score(y_te, attack.fit(x_tr, y_tr).predict_proba(x_te)[:, 1])
        aucs.append(float(auc))
        significant += auc_p_value(auc, int(y_te.sum()), int((1 - y_te).sum())) <= P_THRESHOLD
    return AttackResult(float(np.mean(aucs)), significant / REPS, tuple(aucs))


@pytest.fixture(scope="module")
def data(small_city: CityPaths) -> tuple[np.ndarray, np.ndarray]:
    persons = pl.read_parquet(small_city.persons).filter(
        (pl.col("year") == 2023) & pl.col("psychosocial_risk").is_not_null()
    )
    x = persons.select(pl.col(FEATURES).cast(pl.Float64)).to_numpy()
    return x, persons["psychosocial_risk"].cast(pl.Int64).to_numpy()


def _attack(data, *, labels_known: bool = False, **tree: object) -> AttackResult:
    x, y = data
    members = np.random.default_rng(11).random(len(y)) < 0.5
    model = DecisionTreeClassifier(random_state=0, **tree).fit(x[members], y[members])  # type: ignore[arg-type]
    correct = None
    if labels_known:
        correct = (model.predict(x[members]) == y[members], model.predict(x[~members]) == y[~members])
    return worst_case_attack(model.predict_proba(x[members]), model.predict_proba(x[~members]), correct)


def test_trees_with_the_plans_settings_resist_the_worst_case_membership_attack(data, tally) -> None:
    plan = load_analysis_plan(REPO_POLICIES / "analysis" / "rotterdam-groeit.toml")
    settings = {
        "criterion": plan.model.criterion,
        "class_weight": None if plan.model.class_weight == "none" else plan.model.class_weight,
        "max_depth": max(plan.model.max_depth),
        "min_samples_leaf": min(plan.model.min_samples_leaf),
    }
    for labels_known in (False, True):
        result = _attack(data, labels_known=labels_known, **settings)
        tally.measure(
            f"membership inference, plan settings {settings}{' + true labels' if labels_known else ''}: mean attack "
            f"AUC {result.mean_auc:.3f}, {result.share_significant:.0%} of {REPS} repetitions significant at "
            f"p<{P_THRESHOLD} -> {'RISKY' if result.risky else 'not risky'}"
        )
        tally.attack(f"worst-case membership inference (labels known: {labels_known})", not result.risky)
        assert not result.risky, result


def test_the_attack_has_power_on_a_tree_that_memorises_its_members(tally) -> None:
    # Control on data without signal (random labels): a tree without a leaf rule memorises its members, so an
    # attacker who knows the labels sees that members are always classified correctly and non-members at chance.
    # On the city's data a fully grown tree predicts probability 1 for everyone, so sorted probabilities alone
    # carry no signal there: for such trees the gate's structural leaf rules are the defence
    # (test_gate_attacks.py::test_a_tree_whose_leaves_isolate_a_few_persons_is_refused).
    rng = np.random.default_rng(3)
    noise = (rng.normal(size=(1500, 6)), rng.integers(0, 2, 1500))
    result = _attack(noise, labels_known=True, criterion="gini", max_depth=None, min_samples_leaf=1)
    plan_like = _attack(noise, labels_known=True, criterion="gini", max_depth=8, min_samples_leaf=50)
    tally.measure(
        f"membership inference control (random labels, min_samples_leaf=1, labels known): mean attack AUC "
        f"{result.mean_auc:.3f}, {result.share_significant:.0%} significant -> {'RISKY' if result.risky else 'not'}; "
        f"same data with the plan's leaf rule: AUC {plan_like.mean_auc:.3f} -> {'RISKY' if plan_like.risky else 'not'}"
    )
    assert result.risky, result
