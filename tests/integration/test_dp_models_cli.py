"""End to end from the CLI: a plan with one ``dp_tree`` outcome runs through ``kansrijk coordinator analyse``
under ``policies/release/dp-models.toml``; the model is trained inside the gate, its file says DP with its
epsilon, and the ledger's budget holds exactly what the models spent."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from analysis_workspace import PASS, build_and_analyse

from kansrijk.cli import app
from kansrijk.gate.ledger import open_existing

PLAN = """kind = "analysis"
version = 1
title = "DP tree test plan"
dataset = "rotterdam-groeit"
seed = 5

[outcomes.psychosocial_risk]
model = "dp_tree"
epsilon = "3/4"
min_positives = 20

[features]
exclude = ["repeated_grade", "track_change", "early_school_leaver", "crime_suspect", "visit_year", "birth_month",
           "birth_year"]
always = ["age_years", "sex"]

[model]
max_depth = [3]
min_samples_leaf = [50]
folds = 3

[dp_model]
max_depth = 3
"""


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", PASS)
    try:
        a = build_and_analyse(
            tmp_path_factory.mktemp("dp_models"),
            persons=4_000,
            years=(2023,),
            plan_text=PLAN,
            release_policy="dp-models",
        )
    finally:
        mp.undo()
    return {"runner": a.runner, "ws": a.ws, "summary": a.summary}


def test_dp_tree_outcome_is_released_as_a_dp_model_per_feature_set(analysed: dict) -> None:
    lines = {line["name"]: line for line in analysed["summary"]["releases"]}
    for fs in ("all", "factor_model"):
        line = lines[f"2023.psychosocial_risk.{fs}.dp_model"]
        assert line["verdict"] == "released", line
        assert "DP, noisy" in line["summary"] and "ε=3/4" in line["summary"]
        doc = json.loads((analysed["ws"] / "released" / f"2023.psychosocial_risk.{fs}.dp_model.json").read_text())
        assert doc["noisy"] is True and doc["method"] == "dp" and doc["epsilon_spent"] == "3/4"
        assert set(doc["values"]["metrics"]) >= {"roc_auc", "pr_auc"}
        assert "buurt_code" not in doc["values"]["features"]
    # no non-private tree, metrics or importances were computed for the DP outcome
    assert not any(name.endswith((".tree", ".metrics", ".compare")) for name in lines)


def test_ledger_verifies_and_holds_exactly_the_models_epsilon(analysed: dict) -> None:
    ws = analysed["ws"]
    result = analysed["runner"].invoke(app, ["ledger", "verify", str(ws)])
    assert result.exit_code == 0, result.output
    conn = open_existing(ws)
    try:
        rows = conn.execute("SELECT kind, epsilon FROM ledger").fetchall()
        (spent,) = conn.execute("SELECT epsilon_spent FROM budget").fetchone()
    finally:
        conn.close()
    models = [Fraction(r["epsilon"]) for r in rows if r["kind"] == "dp_model"]
    assert models == [Fraction(3, 4), Fraction(3, 4)]
    assert Fraction(spent) == sum((Fraction(r["epsilon"]) for r in rows), Fraction(0))
