"""The release gate end to end on real SQLite, real OpenDP and real signed policies: every disclosive number
path is stopped, and what is released is recorded."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import add_workspace_identity, signed_policy

from kansrijk import crypto
from kansrijk.errors import PolicyNotSigned
from kansrijk.gate.ledger import verify_ledger
from kansrijk.gate.release import Gate, Refused, Released, Suppressed
from kansrijk.gate.requests import (
    CountTable,
    Extremes,
    FeatureImportances,
    Histogram,
    MeanTable,
    ModelMetrics,
    QuantileRequest,
    RegressionResult,
    SumTable,
    TestResult,
    TreeNode,
    TreeStructure,
)
from kansrijk.policy.signing import sign_policy

REPO = Path(__file__).resolve().parents[2]
BUURTEN = tuple("abcdefgh")


def make_gate(tmp_path: Path, policy: str = "sdc-only") -> Gate:
    target, pub, _ = signed_policy(tmp_path, policy)
    ws = tmp_path / "ws"
    add_workspace_identity(ws)
    return Gate.open(ws, target, [pub])


def city(n: int = 3000, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "sex": rng.choice(["M", "F"], n),
            "buurt": rng.choice(list(BUURTEN), n),
            "woz_eur": rng.lognormal(12, 0.4, n),
            "sdq_total": rng.integers(0, 41, n),
        }
    )


def released_ns(result: Released) -> list[int]:
    cols = result.document["values"]["columns"]
    i = cols.index("n")
    return [row[i] for row in result.document["values"]["rows"] if row[i] is not None]


def test_table_with_a_cell_of_3_is_suppressed_with_its_complement(tmp_path):
    df = pl.concat(
        [city(), pl.DataFrame({"sex": ["M"] * 3, "buurt": ["z"] * 3, "woz_eur": [1e5] * 3, "sdq_total": [1, 2, 3]})]
    )
    df = df.with_columns(pl.col("sdq_total").cast(pl.Int64))
    with make_gate(tmp_path) as gate:
        result = gate.release(CountTable(name="by_sex_buurt", data=df, by=("sex", "buurt")), requested_by="analysis")
    assert isinstance(result, Suppressed)
    rows = {(r[0], r[1]): r for r in result.document["values"]["rows"]}
    assert rows[("M", "z")][2] is None  # the 3
    assert rows[("F", "z")][2] is None  # the zero
    assert all(n >= 10 for n in released_ns(result))
    assert any(v.rule == "secondary_suppression" for v in result.verdicts) or rows[("F", "z")][3].endswith("threshold")
    # the withheld cells cannot be recomputed: every line holding one holds at least two
    suppressed = [k for k, r in rows.items() if r[2] is None]
    for sex in ("M", "F"):
        assert sum(1 for k in suppressed if k[0] == sex) != 1


def test_dominated_sum_is_suppressed(tmp_path):
    df = city().with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(1e9).otherwise(pl.col("woz_eur")).alias("woz_eur")
    )
    with make_gate(tmp_path) as gate:
        result = gate.release(
            SumTable(name="woz_by_buurt", data=df, value="woz_eur", by=("buurt",)), requested_by="analysis"
        )
    assert isinstance(result, Suppressed)
    rules = {v.rule: v.verdict for v in result.verdicts}
    assert rules["nk_dominance"] == "suppress"
    assert rules["p_percent"] == "suppress"


def test_negative_values_in_a_sum_are_refused(tmp_path):
    df = city().with_columns((pl.col("woz_eur") - 200_000).alias("woz_eur"))
    with make_gate(tmp_path) as gate:
        result = gate.release(MeanTable(name="m", data=df, value="woz_eur", by=("sex",)), requested_by="analysis")
    assert isinstance(result, Refused)
    assert any(r.startswith("negative_values") for r in result.reasons)


def test_tree_with_a_leaf_of_4_is_refused(tmp_path):
    nodes = (
        TreeNode(node_id=0, depth=0, class_counts=(60, 44), feature="woz_eur", threshold=2e5, left=1, right=2),
        TreeNode(node_id=1, depth=1, class_counts=(58, 42)),
        TreeNode(node_id=2, depth=1, class_counts=(2, 2)),
    )
    tree = TreeStructure(name="tree", nodes=nodes, classes=("0", "1"), min_samples_leaf=5, max_depth=3)
    with make_gate(tmp_path) as gate:
        result = gate.release(tree, requested_by="analysis")
    assert isinstance(result, Refused)
    assert any(r.startswith("tree_leaf_size") for r in result.reasons)


def test_tree_with_a_pure_leaf_is_refused_and_a_safe_tree_is_released(tmp_path):
    pure = (
        TreeNode(node_id=0, depth=0, class_counts=(80, 40), feature="woz_eur", threshold=2e5, left=1, right=2),
        TreeNode(node_id=1, depth=1, class_counts=(50, 0)),
        TreeNode(node_id=2, depth=1, class_counts=(30, 40)),
    )
    safe = (
        TreeNode(node_id=0, depth=0, class_counts=(80, 40), feature="woz_eur", threshold=2e5, left=1, right=2),
        TreeNode(node_id=1, depth=1, class_counts=(50, 12)),
        TreeNode(node_id=2, depth=1, class_counts=(30, 28)),
    )
    with make_gate(tmp_path) as gate:
        bad = gate.release(
            TreeStructure(name="t1", nodes=pure, classes=("0", "1"), min_samples_leaf=5, max_depth=3),
            requested_by="analysis",
        )
        good = gate.release(
            TreeStructure(name="t2", nodes=safe, classes=("0", "1"), min_samples_leaf=5, max_depth=3),
            requested_by="analysis",
        )
        deep = gate.release(
            TreeStructure(name="t3", nodes=safe, classes=("0", "1"), min_samples_leaf=5, max_depth=None),
            requested_by="analysis",
        )
    assert isinstance(bad, Refused) and any("zero_class" in r for r in bad.reasons)
    assert isinstance(good, Released) and not isinstance(good, Suppressed)
    assert isinstance(deep, Refused) and any("tree_hyperparameters" in r for r in deep.reasons)


@pytest.mark.parametrize(
    "request_",
    [
        ModelMetrics(name="m", metrics={"auc": 0.7}, n=200, n_positive=100, dof=5),
        TestResult(name="t", test="pearson", statistic=1.2, dof=5, p_value=0.3, n=7),
        RegressionResult(name="r", coefficients={"x": 1.0}, n=8, dof=6),
        ModelMetrics(name="m2", metrics={"auc": 0.7}, n=200, n_positive=4, dof=150),
        FeatureImportances(name="f", importances={"woz_eur": 0.5}, n=6),
    ],
    ids=["model-dof-5", "test-dof-5", "regression-dof-6", "model-4-positives", "importances-n-6"],
)
def test_model_outputs_with_too_little_support_are_refused(tmp_path, request_):
    with make_gate(tmp_path) as gate:
        result = gate.release(request_, requested_by="analysis")
    assert isinstance(result, Refused)


def test_min_max_and_extreme_quantiles_are_refused(tmp_path):
    df = city()
    with make_gate(tmp_path) as gate:
        mm = gate.release(Extremes(name="mm", data=df, value="woz_eur"), requested_by="analysis")
        q1 = gate.release(
            QuantileRequest(name="q", data=df, value="woz_eur", quantiles=(0.5, 1.0)), requested_by="analysis"
        )
        med = gate.release(
            QuantileRequest(name="q2", data=df, value="woz_eur", quantiles=(0.5,), by=("sex",)), requested_by="analysis"
        )
    assert isinstance(mm, Refused) and isinstance(q1, Refused)
    assert isinstance(med, Released)


def test_quantile_of_a_small_group_is_suppressed(tmp_path):
    df = pl.concat(
        [
            city(),
            pl.DataFrame(
                {"sex": ["X"] * 4, "buurt": ["a"] * 4, "woz_eur": [1e5, 2e5, 3e5, 4e5], "sdq_total": [1, 2, 3, 4]}
            ),
        ],
        how="vertical_relaxed",
    )
    with make_gate(tmp_path) as gate:
        result = gate.release(QuantileRequest(name="q", data=df, value="woz_eur", by=("sex",)), requested_by="analysis")
    assert isinstance(result, Suppressed)
    rows = {r[0]: r for r in result.document["values"]["rows"]}
    assert rows["X"][1] is None and rows["M"][1] is not None


def test_differencing_pair_is_refused(tmp_path):
    df = city()
    with make_gate(tmp_path) as gate:
        first = gate.release(CountTable(name="all", data=df, by=("sex",), population="all"), requested_by="analysis")
        second = gate.release(
            CountTable(name="almost_all", data=df.slice(4), by=("sex", "buurt"), population="all but 4"),
            requested_by="analysis",
        )
        tracker = gate.release(CountTable(name="buurt_only", data=df.slice(4), by=("buurt",)), requested_by="analysis")
        same_people = gate.release(CountTable(name="buurt_all", data=df, by=("buurt",)), requested_by="analysis")
    assert isinstance(first, Released)
    assert isinstance(second, Refused) and any(r.startswith("differencing") for r in second.reasons)
    # No variable in common with the first table, but its total isolates the same 4 persons (a tracker).
    assert isinstance(tracker, Refused) and any("the total" in r for r in tracker.reasons)
    # Another grouping of the same persons isolates nobody.
    assert isinstance(same_people, Released)


def test_requester_outside_allow_list_is_refused_and_recorded(tmp_path):
    with make_gate(tmp_path) as gate:
        result = gate.release(CountTable(name="t", data=city(), by=("sex",)), requested_by="intruder")
    assert isinstance(result, Refused)
    assert verify_ledger(tmp_path / "ws").entries == 1


def test_release_name_is_unique(tmp_path):
    df = city()
    with make_gate(tmp_path) as gate:
        assert isinstance(gate.release(CountTable(name="t", data=df, by=("sex",)), requested_by="analysis"), Released)
        again = gate.release(CountTable(name="t", data=df, by=("sex",)), requested_by="analysis")
    assert isinstance(again, Refused) and any("unique_name" in r for r in again.reasons)


def test_dp_release_is_noisy_spends_exact_budget_and_refuses_when_exhausted(tmp_path):
    df = city()
    keys = {"buurt": BUURTEN}
    with make_gate(tmp_path, "dp-sdc") as gate:
        first = gate.release(CountTable(name="c0", data=df, by=("sex", "buurt"), keys=keys), requested_by="analysis")
        assert isinstance(first, Released)
        assert first.document["noisy"] is True and first.epsilon == Fraction(1, 10)
        assert first.document["noise"]["n"]["Frame Length"]["scale"] > 0
        results = [
            gate.release(CountTable(name=f"c{i}", data=df, by=("sex", "buurt"), keys=keys), requested_by="analysis")
            for i in range(1, 41)
        ]
        state = gate.budget()
        key = gate.budget_key
    assert state is not None and state.epsilon_spent == Fraction(4)
    assert isinstance(results[-1], Refused) and any("dp_budget" in r for r in results[-1].reasons)
    assert sum(isinstance(r, Released) for r in results) == 39
    assert key.startswith("persons:") and verify_ledger(tmp_path / "ws").epsilon_spent == {key: Fraction(4)}


def test_dp_needs_public_keys_and_bounds(tmp_path):
    df = city()
    with make_gate(tmp_path, "dp-sdc") as gate:
        no_keys = gate.release(CountTable(name="k", data=df, by=("buurt",)), requested_by="analysis")
        unbounded = df.with_columns(pl.col("woz_eur").alias("income_proxy"))  # not a schema variable: no bounds
        no_bounds = gate.release(
            MeanTable(name="b", data=unbounded, value="income_proxy", by=("sex",)), requested_by="analysis"
        )
        ok = gate.release(
            MeanTable(name="ok", data=df, value="woz_eur", by=("sex",), bounds=(0, 2e6)), requested_by="analysis"
        )
        hist = gate.release(
            Histogram(name="h", data=df, value="sdq_total", edges=(0, 10, 20, 30, 40)), requested_by="analysis"
        )
        state = gate.budget()
    assert isinstance(no_keys, Refused) and isinstance(no_bounds, Refused)
    assert isinstance(ok, Released) and isinstance(hist, Released)
    assert state is not None and state.epsilon_spent == Fraction(1, 5) + Fraction(1, 10)


def test_gate_refuses_an_unsigned_or_altered_policy(tmp_path):
    sk, pk = crypto.generate_signing_key()
    pub = tmp_path / "officer.pub"
    crypto.write_public_key(pub, "ed25519-signing", pk, label="officer")
    policy = tmp_path / "p.toml"
    shutil.copy(REPO / "policies/release/sdc-only.toml", policy)
    add_workspace_identity(tmp_path / "ws")
    with pytest.raises(PolicyNotSigned):
        Gate.open(tmp_path / "ws", policy, [pub])
    sign_policy(policy, sk)
    policy.write_text(policy.read_text().replace("min_persons_per_cell = 10", "min_persons_per_cell = 11"))
    with pytest.raises(PolicyNotSigned):
        Gate.open(tmp_path / "ws", policy, [pub])


def test_released_file_carries_entry_policy_digest_and_verdicts(tmp_path):
    with make_gate(tmp_path) as gate:
        result = gate.release(CountTable(name="t", data=city(), by=("sex",)), requested_by="analysis")
        digest = gate.policy_digest
    doc = json.loads((tmp_path / "ws" / "released" / "t.json").read_text())
    assert doc["ledger_entry"] == result.entry_id and doc["policy_digest"] == digest
    assert doc["verdicts"] and (tmp_path / "ws" / "released" / "t.csv").exists()
