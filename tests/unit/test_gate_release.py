"""The release gate end to end on real SQLite, real OpenDP and real signed policies: every disclosive number
path is stopped, and what is released is recorded. The gate computes every number from its own linked dataset;
a test shapes the data by writing that dataset and asks with specs only."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import gate_workspace, signed_policy

from kansrijk import crypto
from kansrijk.errors import PolicyNotSigned
from kansrijk.gate.budget import budget_key
from kansrijk.gate.ledger import verify_ledger
from kansrijk.gate.release import Gate, Refused, Released, Suppressed
from kansrijk.gate.requests import CountTable, RequestInvalid
from kansrijk.gate.specs import (
    CountSpec,
    ExtremesSpec,
    HistogramSpec,
    ImportanceSpec,
    MeanSpec,
    MetricsSpec,
    QuantileSpec,
    RegressionSpec,
    ScoreSet,
    SplitNode,
    SumSpec,
    TestSpec,
    TreeSpec,
    where,
)
from kansrijk.policy.signing import sign_policy

REPO = Path(__file__).resolve().parents[2]
YEAR = 2023
BUURTEN = tuple(f"BU0599{i:04d}" for i in range(8))
HOUSEHOLDS = ("two_parent", "single_parent", "other")


def make_gate(tmp_path: Path, frames: pl.DataFrame | dict[int, pl.DataFrame], policy: str = "sdc-only") -> Gate:
    """A gate under the signed ``policy`` over a workspace whose linked dataset(s) are ``frames``."""
    target, pub, _ = signed_policy(tmp_path, policy)
    return Gate.open(gate_workspace(tmp_path, frames), target, [pub])


def city(n: int = 3000, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "sex": rng.choice(["M", "F"], n),
            "buurt_code": rng.choice(BUURTEN, n),
            "household_type": rng.choice(HOUSEHOLDS, n),
            "woz_eur": rng.lognormal(12, 0.4, n).astype(np.int64),
            "sdq_total": rng.integers(0, 41, n),
            "truancy_reports": rng.integers(0, 6, n),
            "youth_care": np.zeros(n, dtype=bool),
        }
    )


def released_ns(result: Released) -> list[int]:
    cols = result.document["values"]["columns"]
    i = cols.index("n")
    return [row[i] for row in result.document["values"]["rows"] if row[i] is not None]


def test_table_with_a_cell_of_3_is_suppressed_with_its_complement(tmp_path):
    three = pl.DataFrame({"sex": ["M"] * 3, "buurt_code": ["BU05990099"] * 3})
    df = pl.concat([city().select("sex", "buurt_code"), three])
    with make_gate(tmp_path, df) as gate:
        result = gate.release(CountSpec(name="by_sex_buurt", years=(YEAR,), by=("sex", "buurt_code")),
                              requested_by="analysis")  # fmt: skip
    assert isinstance(result, Suppressed)
    rows = {(r[0], r[1]): r for r in result.document["values"]["rows"]}
    assert rows[("M", "BU05990099")][2] is None  # the 3
    assert rows[("F", "BU05990099")][2] is None  # the zero
    assert all(n >= 10 for n in released_ns(result))
    assert any(v.rule == "secondary_suppression" for v in result.verdicts) or rows[("F", "BU05990099")][3].endswith(
        "threshold"
    )
    # the withheld cells cannot be recomputed: every line holding one holds at least two
    suppressed = [k for k, r in rows.items() if r[2] is None]
    for sex in ("M", "F"):
        assert sum(1 for k in suppressed if k[0] == sex) != 1


def test_dominated_sum_is_suppressed(tmp_path):
    # in the first buurt one child has 100 truancy reports and every other child none: the sum is that child's
    df = city().with_columns(
        pl.when(pl.col("buurt_code") == BUURTEN[0])
        .then(pl.when(pl.int_range(pl.len()).over("buurt_code") == 0).then(100).otherwise(0))
        .otherwise(pl.col("truancy_reports"))
        .alias("truancy_reports")
    )
    with make_gate(tmp_path, df) as gate:
        result = gate.release(
            SumSpec(name="truancy_by_buurt", years=(YEAR,), value="truancy_reports", by=("buurt_code",)),
            requested_by="analysis",
        )
    assert isinstance(result, Suppressed)
    rules = {v.rule: v.verdict for v in result.verdicts}
    assert rules["nk_dominance"] == "suppress"
    assert rules["p_percent"] == "suppress"
    rows = {r[0]: r for r in result.document["values"]["rows"]}
    assert rows[BUURTEN[0]][2] is None and rows[BUURTEN[1]][2] is not None


def test_negative_values_in_a_sum_are_refused(tmp_path):
    # values below the variable's public lower bound in the gate's own data (no value_clip for sdq_total)
    df = city().with_columns((pl.col("sdq_total") - 20).alias("sdq_total"))
    with make_gate(tmp_path, df) as gate:
        result = gate.release(
            MeanSpec(name="m", years=(YEAR,), value="sdq_total", by=("sex",)), requested_by="analysis"
        )
    assert isinstance(result, Refused)
    assert any(r.startswith("negative_values") for r in result.reasons)


def _leaves(shape: list[tuple[int, int, int]]) -> pl.DataFrame:
    """Persons for a one-split tree on woz_eur: (woz_eur, negatives, positives) per leaf."""
    woz, risk = [], []
    for value, neg, pos in shape:
        woz += [value] * (neg + pos)
        risk += [False] * neg + [True] * pos
    return pl.DataFrame({"woz_eur": woz, "psychosocial_risk": risk})


def _split_tree(name: str, year: int, **kw) -> TreeSpec:
    nodes = (
        SplitNode(node_id=0, var="woz_eur", threshold=2e5, left=1, right=2),
        SplitNode(node_id=1),
        SplitNode(node_id=2),
    )
    args = {"min_samples_leaf": 5, "max_depth": 3, **kw}
    return TreeSpec(name=name, years=(year,), outcome="psychosocial_risk", features=("woz_eur",), nodes=nodes, **args)


def test_tree_with_a_leaf_of_4_is_refused(tmp_path):
    df = _leaves([(150_000, 58, 42), (250_000, 2, 2)])
    with make_gate(tmp_path, df) as gate:
        result = gate.release(_split_tree("tree", YEAR), requested_by="analysis")
    assert isinstance(result, Refused)
    assert any(r.startswith("tree_leaf_size") for r in result.reasons)


def _chain(depth: int) -> tuple[SplitNode, ...]:
    """A tree ``depth`` splits deep: every split sends woz_eur <= its threshold to a leaf, the rest on."""
    nodes = []
    for level in range(depth):
        split, leaf = 2 * level, 2 * level + 1
        nodes += [SplitNode(node_id=split, var="woz_eur", threshold=1e5 + 1e4 * level, left=leaf, right=split + 2),
                  SplitNode(node_id=leaf)]  # fmt: skip
    return (*nodes, SplitNode(node_id=2 * depth))


def test_tree_with_a_pure_leaf_is_refused_and_a_safe_tree_is_released(tmp_path):
    frames = {
        2022: _leaves([(150_000, 50, 0), (250_000, 30, 40)]),  # the gate counts a leaf without positives
        2023: _leaves([(150_000, 50, 12), (250_000, 30, 28)]),
    }
    with make_gate(tmp_path, frames) as gate:
        bad = gate.release(_split_tree("t1", 2022), requested_by="analysis")
        good = gate.release(_split_tree("t2", 2023), requested_by="analysis")
        deep = gate.release(_split_tree("t3", 2023, max_depth=8), requested_by="analysis")
        unlimited = gate.release(
            TreeSpec(name="t4", years=(2023,), outcome="psychosocial_risk", features=("woz_eur",), nodes=_chain(8),
                     min_samples_leaf=5, max_depth=None),
            requested_by="analysis",
        )  # fmt: skip
    assert isinstance(bad, Refused) and any("zero_class" in r for r in bad.reasons)
    assert isinstance(good, Released) and not isinstance(good, Suppressed)
    counts = {n["node_id"]: n["class_counts"] for n in good.document["values"]["nodes"]}
    assert counts == {0: [80, 40], 1: [50, 12], 2: [30, 28]}  # counted by the gate
    assert isinstance(deep, Refused) and any("tree_hyperparameters" in r for r in deep.reasons)
    # without a declared depth limit the gate judges the depth of the structure it was given
    assert isinstance(unlimited, Refused) and any("tree_hyperparameters" in r for r in unlimited.reasons)


def _support() -> pl.DataFrame:
    """300 persons: two_parent 268 (a third positive), single_parent 24 (4 positive), other 8 (4 positive)."""
    rng = np.random.default_rng(4)
    households = ["two_parent"] * 268 + ["single_parent"] * 24 + ["other"] * 8
    risk = [i % 3 == 0 for i in range(268)] + [i < 4 for i in range(24)] + [i < 4 for i in range(8)]
    return pl.DataFrame(
        {
            "household_type": households,
            "migration_background": ["western"] * 20 + ["dutch"] * 280,
            "sdq_total": rng.integers(0, 41, 300),
            "psychosocial_risk": risk,
        }
    ).with_columns(  # the 20 'western' persons: 10 with and 10 without the outcome
        pl.when(pl.int_range(pl.len()) < 20)
        .then(pl.int_range(pl.len()) % 2 == 0)
        .otherwise(pl.col("psychosocial_risk"))
        .alias("psychosocial_risk")
    )


def _constant_scores(ws: Path, household: str) -> ScoreSet:
    """One score for every person of the group: a score group as large as the group."""
    frame = pl.read_parquet(ws / "dataset" / f"{YEAR}.parquet").filter(pl.col("household_type") == household)
    return ScoreSet(frame.select("pseudonym", "year", pl.lit(0.5).alias("score")))


_SUPPORT_CASES = {
    # too few persons: every score group is smaller than the threshold
    "metrics-n-8": (lambda ws: MetricsSpec(name="m", years=(YEAR,), outcome="psychosocial_risk",
                                           population=(where("household_type", "==", "other"),),
                                           scores=_constant_scores(ws, "other")), "score_groups"),
    "metrics-4-positives": (lambda ws: MetricsSpec(name="m2", years=(YEAR,), outcome="psychosocial_risk",
                                                   population=(where("household_type", "==", "single_parent"),),
                                                   scores=_constant_scores(ws, "single_parent")), "class_disclosure"),
    # 20 persons, a spline of 13 columns: 7 residual degrees of freedom
    "test-dof-7": (lambda ws: TestSpec(name="t", years=(YEAR,), test="spline_lr", spline_df=12,
                                       outcome="psychosocial_risk", variable="sdq_total",
                                       population=(where("migration_background", "==", "western"),)), "dof"),
    "regression-n-8": (lambda ws: RegressionSpec(name="r", years=(YEAR,), outcome="psychosocial_risk",
                                                 variable="sdq_total",
                                                 population=(where("household_type", "==", "other"),)),
                       "class_counts"),
    "importances-n-8": (lambda ws: ImportanceSpec(name="f", years=(YEAR,), importances={"sdq_total": 0.5},
                                                  population=(where("household_type", "==", "other"),)), "threshold"),
}  # fmt: skip


@pytest.mark.filterwarnings("ignore:overflow encountered in exp", "ignore:Maximum Likelihood optimization")
@pytest.mark.parametrize("case", list(_SUPPORT_CASES))
def test_model_outputs_with_too_little_support_are_refused(tmp_path, case):
    build, rule = _SUPPORT_CASES[case]
    with make_gate(tmp_path, _support()) as gate:
        result = gate.release(build(gate.workspace), requested_by="analysis")
    assert isinstance(result, Refused)
    assert any(r.startswith(f"{rule}:") for r in result.reasons), result.reasons


def test_min_max_and_extreme_quantiles_are_refused(tmp_path):
    with make_gate(tmp_path, city()) as gate:
        mm = gate.release(ExtremesSpec(name="mm", years=(YEAR,), value="woz_eur"), requested_by="analysis")
        with pytest.raises(RequestInvalid, match=r"levels \[1\.0\] are not in the release policy's"):
            gate.release(QuantileSpec(name="q", years=(YEAR,), value="woz_eur", levels=(0.5, 1.0)),
                         requested_by="analysis")  # fmt: skip
        med = gate.release(
            QuantileSpec(name="q2", years=(YEAR,), value="woz_eur", levels=(0.5,), by=("sex",)), requested_by="analysis"
        )
    assert isinstance(mm, Refused) and any(r.startswith("extremes") for r in mm.reasons)
    assert isinstance(med, Released)
    assert verify_ledger(gate.workspace).entries == 2  # the level outside the grid recorded nothing


def test_quantile_of_a_small_group_is_suppressed(tmp_path):
    df = city().with_columns(  # exactly 4 persons in households of type 'other'
        pl.when(pl.col("household_type") == "other").then(pl.lit("two_parent")).otherwise(pl.col("household_type"))
        .alias("household_type")
    ).with_columns(
        pl.when(pl.int_range(pl.len()) < 4).then(pl.lit("other")).otherwise(pl.col("household_type"))
        .alias("household_type")
    )  # fmt: skip
    with make_gate(tmp_path, df) as gate:
        result = gate.release(QuantileSpec(name="q", years=(YEAR,), value="woz_eur", levels=(0.5,),
                                           by=("household_type",)), requested_by="analysis")  # fmt: skip
    assert isinstance(result, Suppressed)
    rows = {r[0]: r for r in result.document["values"]["rows"]}
    assert rows["other"][1] is None and rows["two_parent"][1] is not None


def test_differencing_pair_is_refused(tmp_path):
    df = city().with_columns((pl.int_range(pl.len()) < 4).alias("youth_care"))  # 4 persons in youth care
    all_but_4 = (where("youth_care", "==", False),)
    with make_gate(tmp_path, df) as gate:
        first = gate.release(CountSpec(name="all", years=(YEAR,), by=("sex",)), requested_by="analysis")
        second = gate.release(
            CountSpec(name="almost_all", years=(YEAR,), by=("sex", "buurt_code"), population=all_but_4),
            requested_by="analysis",
        )
        tracker = gate.release(
            CountSpec(name="buurt_only", years=(YEAR,), by=("buurt_code",), population=all_but_4),
            requested_by="analysis",
        )
        same_people = gate.release(CountSpec(name="buurt_all", years=(YEAR,), by=("buurt_code",)),
                                   requested_by="analysis")  # fmt: skip
    assert isinstance(first, Released)
    assert isinstance(second, Refused) and any(r.startswith("differencing") for r in second.reasons)
    # No variable in common with the first table, but its total isolates the same 4 persons (a tracker).
    assert isinstance(tracker, Refused) and any("the total" in r for r in tracker.reasons)
    # Another grouping of the same persons isolates nobody.
    assert isinstance(same_people, Released)


def test_requester_outside_allow_list_is_refused_and_recorded(tmp_path):
    with make_gate(tmp_path, city()) as gate:
        result = gate.release(CountSpec(name="t", years=(YEAR,), by=("sex",)), requested_by="intruder")
    assert isinstance(result, Refused)
    assert verify_ledger(tmp_path / "ws").entries == 1


def test_release_name_is_unique(tmp_path):
    spec = CountSpec(name="t", years=(YEAR,), by=("sex",))
    with make_gate(tmp_path, city()) as gate:
        assert isinstance(gate.release(spec, requested_by="analysis"), Released)
        again = gate.release(spec, requested_by="analysis")
    assert isinstance(again, Refused) and any("unique_name" in r for r in again.reasons)


def test_the_gate_takes_specs_only_and_records_nothing_else(tmp_path):
    """A request carrying rows (the old interface) is not a spec: refused before anything is recorded."""
    df = city()
    with make_gate(tmp_path, df) as gate:
        with pytest.raises(RequestInvalid, match="release specs only"):
            gate.release(CountTable(name="t", data=df, by=("sex",)), requested_by="analysis")  # type: ignore[arg-type]
        with pytest.raises(RequestInvalid, match="release specs only"):
            gate.release({"spec": "count", "name": "t", "years": [YEAR], "by": ["sex"]}, requested_by="analysis")  # type: ignore[arg-type]
    assert verify_ledger(tmp_path / "ws").entries == 0
    assert not any((tmp_path / "ws" / "released").glob("t.*"))


def test_dp_release_is_noisy_spends_exact_budget_and_refuses_when_exhausted(tmp_path):
    def spec(i: int) -> CountSpec:
        return CountSpec(name=f"c{i}", years=(YEAR,), by=("sex", "household_type"))

    with make_gate(tmp_path, city(), "dp-sdc") as gate:
        first = gate.release(spec(0), requested_by="analysis")
        assert isinstance(first, Released)
        assert first.document["noisy"] is True and first.epsilon == Fraction(1, 10)
        assert first.document["noise"]["n"]["Frame Length"]["scale"] > 0
        results = [gate.release(spec(i), requested_by="analysis") for i in range(1, 41)]
        state = gate.budget()
    assert state is not None and state.epsilon_spent == Fraction(4)
    assert isinstance(results[-1], Refused) and any("dp_budget" in r for r in results[-1].reasons)
    assert sum(isinstance(r, Released) for r in results) == 39
    assert verify_ledger(tmp_path / "ws").epsilon_spent == {budget_key(tmp_path / "ws"): Fraction(4)}


def test_dp_needs_public_keys_and_takes_bounds_from_the_policy(tmp_path):
    with make_gate(tmp_path, city(), "dp-sdc") as gate:
        # buurt codes are not public categories: DP must not take keys from the data
        no_keys = gate.release(CountSpec(name="k", years=(YEAR,), by=("buurt_code",)), requested_by="analysis")
        # a value the gate has no public domain (and so no bounds) for is not even a valid spec
        with pytest.raises(RequestInvalid, match="'income_proxy' is not a variable"):
            gate.release(MeanSpec(name="b", years=(YEAR,), value="income_proxy", by=("sex",)), requested_by="analysis")
        ok = gate.release(MeanSpec(name="ok", years=(YEAR,), value="woz_eur", by=("sex",)), requested_by="analysis")
        hist = gate.release(HistogramSpec(name="h", years=(YEAR,), value="sdq_total"), requested_by="analysis")
        state = gate.budget()
    assert isinstance(no_keys, Refused) and any(r.startswith("dp_inputs") for r in no_keys.reasons)
    assert isinstance(ok, Released) and isinstance(hist, Released)
    means = [row[1] for row in ok.document["values"]["rows"]]
    assert all(0 <= m <= 1_500_000 for m in means)  # clamped into the policy's value_clip for woz_eur
    assert state is not None and state.epsilon_spent == Fraction(1, 5) + Fraction(1, 10)
    assert verify_ledger(tmp_path / "ws").entries == 3  # the invalid spec recorded nothing


def test_gate_refuses_an_unsigned_or_altered_policy(tmp_path):
    sk, pk = crypto.generate_signing_key()
    pub = tmp_path / "officer.pub"
    crypto.write_public_key(pub, "ed25519-signing", pk, label="officer")
    policy = tmp_path / "p.toml"
    shutil.copy(REPO / "policies/release/sdc-only.toml", policy)
    (tmp_path / "ws").mkdir()
    with pytest.raises(PolicyNotSigned):
        Gate.open(tmp_path / "ws", policy, [pub])
    sign_policy(policy, sk)
    policy.write_text(policy.read_text().replace("min_persons_per_cell = 10", "min_persons_per_cell = 11"))
    with pytest.raises(PolicyNotSigned):
        Gate.open(tmp_path / "ws", policy, [pub])


def test_released_file_carries_entry_policy_digest_and_verdicts(tmp_path):
    spec = CountSpec(name="t", years=(YEAR,), by=("sex",))
    with make_gate(tmp_path, city()) as gate:
        result = gate.release(spec, requested_by="analysis")
        digest = gate.policy_digest
    doc = json.loads((tmp_path / "ws" / "released" / "t.json").read_text())
    assert doc["ledger_entry"] == result.entry_id and doc["policy_digest"] == digest
    assert doc["verdicts"] and (tmp_path / "ws" / "released" / "t.csv").exists()
    assert doc["request_digest"] == spec.digest() and doc["spec"] == json.loads(json.dumps(spec.parameters()))
