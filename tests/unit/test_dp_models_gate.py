"""DP models released through the gate: the ledger debits exactly the spec's epsilon before training, the
policy's [dp_model] section caps it, and refusals spend nothing. The gate trains on its own linked dataset."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import REPO, gate_workspace, signed_policy

from kansrijk.gate.ledger import entries, verify_ledger
from kansrijk.gate.release import Gate, Refused, Released
from kansrijk.gate.requests import RequestInvalid
from kansrijk.gate.specs import DpModelSpec, where

YEAR = 2023
FEATURES = ("woz_eur", "sex", "low_income", "age_years")


def make_gate(tmp_path: Path, frames=None, policy: str = "dp-models", edit=None) -> Gate:
    text = None
    if edit is not None:
        text = edit((REPO / "policies" / "release" / f"{policy}.toml").read_text())
    target, pub, _ = signed_policy(tmp_path, policy, text)
    return Gate.open(gate_workspace(tmp_path, persons() if frames is None else frames), target, [pub])


def persons(n: int = 3000, seed: int = 2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    woz = rng.lognormal(12.2, 0.5, n).astype(np.int64)
    return pl.DataFrame(
        {
            "woz_eur": woz,
            "sex": rng.choice(["M", "F"], n),
            "low_income": rng.random(n) < 0.2,
            "age_years": rng.integers(4, 19, n).astype(np.int32),
            "psychosocial_risk": rng.random(n) < np.where(woz < 150_000, 0.3, 0.06),
        }
    )


def request(name: str = "m", **kw) -> DpModelSpec:
    args = {"name": name, "years": (YEAR,), "outcome": "psychosocial_risk", "features": FEATURES, "epsilon": "3/4",
            "max_depth": 3}  # fmt: skip
    args.update(kw)
    return DpModelSpec(**args)


def test_dp_tree_release_debits_exactly_its_epsilon_and_marks_the_file_noisy(tmp_path):
    # The AUC is nan when every noisy positive cell of the held-out score histogram comes out <= 0. With P true
    # held-out positives and discrete Laplace scale b = 1 / (3/4 * 1/10) = 13.3 that has probability at most
    # exp(-P / b): P = 76 (3,000 persons) allowed 3e-3 (in 3,000 runs the noisy total fell as low as 2); 10,000
    # persons hold out P = 273, so at most 1e-9.
    with make_gate(tmp_path, persons(10_000)) as gate:
        result = gate.release(request(), requested_by="analysis")
        assert isinstance(result, Released), result.reasons
        budget = gate.budget()
    assert budget is not None and budget.epsilon_spent == Fraction(3, 4)
    doc = json.loads(result.path.read_text())
    assert doc["kind"] == "dp_model" and doc["method"] == "dp" and doc["noisy"] is True
    assert doc["epsilon_spent"] == "3/4"
    steps = doc["values"]["epsilon"]["steps"]
    assert sum((Fraction(s["epsilon"]) for s in steps), Fraction(0)) == Fraction(3, 4)
    assert [s["step"] for s in steps][:3] == ["splits.level0", "splits.level1", "splits.level2"]
    report = verify_ledger(tmp_path / "ws")
    assert list(report.epsilon_spent.values()) == [Fraction(3, 4)]  # one budget: the workspace's persons'
    assert next(iter(report.epsilon_spent)).startswith("persons:")
    assert 0.0 <= doc["values"]["metrics"]["roc_auc"] <= 1.0
    assert abs(sum(doc["values"]["importances"].values()) - 1.0) < 1e-9
    leaves = [n for n in doc["values"]["trees"][0]["nodes"] if n["feature"] is None]
    assert len(leaves) == 8 and all(min(n["class_counts"]) >= 0 for n in leaves)


def test_boosted_release_ledger_entry_carries_the_exact_epsilon(tmp_path):
    with make_gate(tmp_path) as gate:
        result = gate.release(request(model="dp_boosted", trees=3, max_depth=2, epsilon="2/3"), requested_by="analysis")
        assert isinstance(result, Released), result.reasons
        last = entries(gate._conn)[-1]
    assert last.epsilon == Fraction(2, 3) and last.kind == "dp_model"
    names = [s["step"] for s in result.document["values"]["epsilon"]["steps"]]
    assert names[0] == "base_rate" and "tree2.leaves" in names


def test_the_model_is_trained_on_the_population_the_spec_names(tmp_path):
    with make_gate(tmp_path) as gate:
        result = gate.release(request(population=(where("sex", "==", "F"),)), requested_by="analysis")
    assert isinstance(result, Released), result.reasons
    assert result.document["population"].endswith("where sex == 'F'")
    assert result.document["spec"]["population"] == [{"var": "sex", "op": "==", "value": "F", "values": []}]


def test_epsilon_above_the_policy_cap_is_refused_and_spends_nothing(tmp_path):
    with make_gate(tmp_path) as gate:
        result = gate.release(request(epsilon="5/2"), requested_by="analysis")
        assert isinstance(result, Refused)
        assert any("dp_model.max_epsilon" in r for r in result.reasons)
        assert gate.budget().epsilon_spent == 0


def test_a_policy_without_dp_model_section_refuses_dp_models(tmp_path):
    with make_gate(tmp_path, policy="dp-sdc") as gate:
        result = gate.release(request(), requested_by="analysis")
    assert isinstance(result, Refused)
    assert any(r.startswith("dp_model_policy") for r in result.reasons)


def test_numeric_feature_without_public_edges_is_refused_before_the_budget(tmp_path):
    df = persons().with_columns(pl.col("age_years").cast(pl.Float64).alias("bmi"))
    with make_gate(tmp_path, df, edit=lambda t: t.replace("bmi = [14, 16, 18, 20, 22, 25, 30]\n", "")) as gate:
        result = gate.release(request(features=("woz_eur", "bmi")), requested_by="analysis")
        assert isinstance(result, Refused)
        assert any("'bmi' has no public bin edges" in r for r in result.reasons)
        assert gate.budget().epsilon_spent == 0


def test_a_model_that_does_not_fit_the_remaining_budget_is_refused(tmp_path):
    edit = lambda t: t.replace('epsilon_total = "8"', 'epsilon_total = "1"').replace(  # noqa: E731
        'max_epsilon = "2"', 'max_epsilon = "1"'
    )
    with make_gate(tmp_path, edit=edit) as gate:
        assert isinstance(gate.release(request("a"), requested_by="analysis"), Released)
        second = gate.release(request("b"), requested_by="analysis")
        assert isinstance(second, Refused) and any("epsilon 1/4 left" in r for r in second.reasons)
        assert gate.budget().epsilon_spent == Fraction(3, 4)


def test_deeper_than_the_policy_allows_is_refused(tmp_path):
    with make_gate(tmp_path) as gate:
        result = gate.release(request(max_depth=7), requested_by="analysis")
    assert isinstance(result, Refused) and any("dp_model.max_depth" in r for r in result.reasons)


def test_a_dp_model_over_pooled_years_is_refused_before_the_budget(tmp_path):
    """The model's guarantee is per person, and its noise is calibrated to one row per person: over pooled
    years a person has a row per year, so the guarantee would not hold for the epsilon debited."""
    with make_gate(tmp_path, {2022: persons(seed=3), 2023: persons()}) as gate:
        with pytest.raises(RequestInvalid, match="one reference year"):
            gate.release(request(years=(2022, 2023)), requested_by="analysis")
        assert gate.budget().epsilon_spent == 0
    assert verify_ledger(tmp_path / "ws").entries == 0


def test_float_or_non_positive_epsilon_is_rejected_by_the_spec():
    with pytest.raises(RequestInvalid, match="epsilon"):
        request(epsilon=0.5)
    with pytest.raises(RequestInvalid, match="epsilon must be positive"):
        request(epsilon="0")
