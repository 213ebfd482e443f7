"""DP models released through the gate: the ledger debits exactly the request's epsilon before training, the
policy's [dp_model] section caps it, and refusals spend nothing."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import add_workspace_identity

from kansrijk import crypto
from kansrijk.gate.ledger import entries, verify_ledger
from kansrijk.gate.release import Gate, Refused, Released
from kansrijk.gate.requests import DpModelRequest, RequestInvalid
from kansrijk.policy.signing import sign_policy

REPO = Path(__file__).resolve().parents[2]
FEATURES = ("woz_eur", "sex", "low_income", "age_years")


def make_gate(tmp_path: Path, policy: str = "dp-models", edit=None) -> Gate:
    sk, pk = crypto.generate_signing_key()
    pub = tmp_path / "officer.pub"
    crypto.write_public_key(pub, "ed25519-signing", pk, label="officer")
    target = tmp_path / f"{policy}.toml"
    text = (REPO / "policies" / "release" / f"{policy}.toml").read_text()
    target.write_text(edit(text) if edit else text)
    sign_policy(target, sk)
    ws = tmp_path / "ws"
    add_workspace_identity(ws)
    return Gate.open(ws, target, [pub])


def persons(n: int = 3000, seed: int = 2) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    woz = rng.lognormal(12.2, 0.5, n).astype(np.int64)
    return pl.DataFrame(
        {
            "pseudonym": [rng.bytes(16) for _ in range(n)],
            "woz_eur": woz,
            "sex": rng.choice(["M", "F"], n),
            "low_income": rng.random(n) < 0.2,
            "age_years": rng.integers(4, 19, n).astype(np.int32),
            "risk": rng.random(n) < np.where(woz < 150_000, 0.3, 0.06),
        }
    )


def request(name: str = "m", **kw) -> DpModelRequest:
    args = {"name": name, "data": persons(), "outcome": "risk", "features": FEATURES, "epsilon": Fraction(3, 4),
            "person": "pseudonym", "max_depth": 3}  # fmt: skip
    args.update(kw)
    return DpModelRequest(**args)


def test_dp_tree_release_debits_exactly_its_epsilon_and_marks_the_file_noisy(tmp_path):
    # The AUC is nan when every noisy positive cell of the held-out score histogram comes out <= 0. With P true
    # held-out positives and discrete Laplace scale b = 1 / (3/4 * 1/10) = 13.3 that has probability at most
    # exp(-P / b): P = 76 (3,000 persons) allowed 3e-3 (in 3,000 runs the noisy total fell as low as 2); 10,000
    # persons hold out P = 273, so at most 1e-9.
    with make_gate(tmp_path) as gate:
        result = gate.release(request(data=persons(10_000)), requested_by="analysis")
        assert isinstance(result, Released), result.reasons
        budget = gate.budget()
        key = gate.budget_key
    assert budget is not None and budget.epsilon_spent == Fraction(3, 4)
    doc = json.loads(result.path.read_text())
    assert doc["kind"] == "dp_model" and doc["method"] == "dp" and doc["noisy"] is True
    assert doc["epsilon_spent"] == "3/4"
    steps = doc["values"]["epsilon"]["steps"]
    assert sum((Fraction(s["epsilon"]) for s in steps), Fraction(0)) == Fraction(3, 4)
    assert [s["step"] for s in steps][:3] == ["splits.level0", "splits.level1", "splits.level2"]
    report = verify_ledger(tmp_path / "ws")
    assert report.epsilon_spent == {key: Fraction(3, 4)}
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


def test_epsilon_above_the_policy_cap_is_refused_and_spends_nothing(tmp_path):
    with make_gate(tmp_path) as gate:
        result = gate.release(request(epsilon=Fraction(5, 2)), requested_by="analysis")
        assert isinstance(result, Refused)
        assert any("dp_model.max_epsilon" in r for r in result.reasons)
        assert gate.budget().epsilon_spent == 0


def test_a_policy_without_dp_model_section_refuses_dp_models(tmp_path):
    with make_gate(tmp_path, "dp-sdc") as gate:
        result = gate.release(request(), requested_by="analysis")
    assert isinstance(result, Refused)
    assert any(r.startswith("dp_model_policy") for r in result.reasons)


def test_numeric_feature_without_public_edges_is_refused_before_the_budget(tmp_path):
    df = persons().with_columns(pl.col("age_years").alias("bmi").cast(pl.Float64))
    with make_gate(tmp_path, edit=lambda t: t.replace("bmi = [14, 16, 18, 20, 22, 25, 30]\n", "")) as gate:
        result = gate.release(request(data=df, features=("woz_eur", "bmi")), requested_by="analysis")
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


def test_float_epsilon_is_rejected_by_the_request():
    with pytest.raises(RequestInvalid, match="exact positive number"):
        request(epsilon=0.5)
