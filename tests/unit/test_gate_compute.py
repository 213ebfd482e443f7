"""How the gate turns a spec into numbers (``kansrijk.gate.compute``, ``kansrijk.gate.data``): population
conditions over public domains, the policy's grids (bands, quantile levels), window-mean quantiles, tree counts,
the one-row-per-person-and-year privacy unit, and DP's contribution bound over pooled years. Real files, real
SQLite, real OpenDP; every expected number is computed independently of the gate."""

from __future__ import annotations

import json
import math
import operator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from gate_kit import REPO, gate_workspace, person_keys, signed_policy, write_dataset
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from kansrijk.gate.compute import band_labels, materialise, population
from kansrijk.gate.data import DatasetInvalid, GateData, UnknownVariable
from kansrijk.gate.ledger import verify_ledger
from kansrijk.gate.release import Gate, Refused, Released, Suppressed
from kansrijk.gate.requests import RequestInvalid, TreeStructure
from kansrijk.gate.specs import (
    CountSpec,
    QuantileSpec,
    SplitNode,
    TreeSpec,
    parse_spec,
    where,
)
from kansrijk.policy.signing import load_signed_policy

YEAR = 2023
T = 10  # min_persons_per_cell of the shipped policies
LEVELS = (0.1, 0.25, 0.5, 0.75, 0.9)  # their quantile grid


@pytest.fixture(scope="module")
def officer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The shipped output-checking policy, signed once for the module: (policy, officer public key)."""
    policy, pub, _ = signed_policy(tmp_path_factory.mktemp("officer"), "sdc-only")
    return policy, pub


def open_gate(tmp: Path, frames, officer: tuple[Path, Path]) -> Gate:
    return Gate.open(gate_workspace(tmp, frames), officer[0], [officer[1]])


def people(n: int = 600, seed: int = 3) -> pl.DataFrame:
    """Persons with missing values in every variable a condition may name."""
    rng = np.random.default_rng(seed)

    def holes(values: list[Any], share: float = 0.1) -> list[Any]:
        return [None if rng.random() < share else v for v in values]

    return pl.DataFrame(
        {
            "sex": pl.Series(holes(list(rng.choice(["M", "F"], n))), dtype=pl.String),
            "low_income": pl.Series(holes(list(rng.random(n) < 0.3)), dtype=pl.Boolean),
            "sdq_total": pl.Series(holes([int(v) for v in rng.integers(0, 41, n)]), dtype=pl.Int64),
            "bmi": pl.Series(holes([round(float(v), 1) for v in rng.uniform(12, 35, n)]), dtype=pl.Float64),
            "woz_eur": pl.Series(holes([int(v) for v in rng.lognormal(12.2, 0.5, n)]), dtype=pl.Int64),
            "birth_year": pl.Series([int(v) for v in rng.integers(2000, 2019, n)], dtype=pl.Int64),
            "psychosocial_risk": pl.Series(holes(list(rng.random(n) < 0.3), 0.05), dtype=pl.Boolean),
        }
    )


class Held(tuple):
    """(the gate's data, its policy, the dataset as written), shown briefly in a failing example."""

    def __repr__(self) -> str:
        return "Held(people())"


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory, officer) -> Held:
    """The gate's data and policy over ``people()``, for the computations that need no ledger."""
    ws = gate_workspace(tmp_path_factory.mktemp("held"), people())
    policy, _ = load_signed_policy(officer[0], [officer[1]])
    return Held((GateData(ws), policy, pl.read_parquet(ws / "dataset" / f"{YEAR}.parquet")))


# --- population conditions ----------------------------------------------------------------------------------
def test_a_condition_value_outside_the_public_categories_is_refused_naming_it(tmp_path, officer):
    with open_gate(tmp_path, people(), officer) as gate:
        with pytest.raises(RequestInvalid, match=r"'X' is not a public category of 'sex'"):
            gate.release(CountSpec(name="c", years=(YEAR,), by=("low_income",), population=(where("sex", "==", "X"),)),
                         requested_by="analysis")  # fmt: skip
        with pytest.raises(RequestInvalid, match=r"'unknown' is not a public category of 'sex'"):
            gate.release(
                parse_spec({"spec": "count", "name": "c", "years": [YEAR], "by": ["low_income"],
                            "population": [{"var": "sex", "op": "in", "values": ["M", "unknown"]}]}),
                requested_by="analysis",
            )  # fmt: skip
        with pytest.raises(RequestInvalid, match=r"'<' needs a numeric variable"):
            gate.release(CountSpec(name="c", years=(YEAR,), by=("low_income",), population=(where("sex", "<", "M"),)),
                         requested_by="analysis")  # fmt: skip
    assert verify_ledger(gate.workspace).entries == 0


VARS: dict[str, Any] = {
    "sex": st.sampled_from(["M", "F", "X", 1, True]),
    "low_income": st.sampled_from([True, False, 0, "yes"]),
    "sdq_total": st.one_of(st.integers(-5, 45), st.sampled_from([12.5, 0.0, 40.0, True, "7"])),
    "bmi": st.one_of(st.floats(10, 40, allow_nan=False).map(lambda x: round(x, 1)), st.integers(10, 40)),
}
OPS = ("==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null")
COMPARE = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
           ">=": operator.ge}  # fmt: skip


@st.composite
def conditions(draw: st.DrawFn) -> dict[str, Any]:
    var = draw(st.sampled_from(sorted(VARS)))
    op = draw(st.sampled_from(OPS))
    cond: dict[str, Any] = {"var": var, "op": op}
    shape = draw(st.sampled_from(["right", "right", "right", "value", "values", "none"]))
    if shape == "right":
        shape = "values" if op in ("in", "not_in") else "none" if op in ("is_null", "not_null") else "value"
    if shape == "value":
        cond["value"] = draw(VARS[var])
    elif shape == "values":
        cond["values"] = draw(st.lists(VARS[var], min_size=0, max_size=4))
    return cond


def _valid_value(var: str, value: Any) -> bool:
    if var == "sex":
        return isinstance(value, str) and value in ("M", "F")
    if var == "low_income":
        return isinstance(value, bool)
    return isinstance(value, int | float) and not isinstance(value, bool)


def _expected(rows: list[dict[str, Any]], conds: list[dict[str, Any]]) -> list[int] | None:
    """Indices of the rows every condition selects, or None when the conditions are not a valid spec."""
    for c in conds:
        op = c["op"]
        if op in ("in", "not_in"):
            if "value" in c or not 1 <= len(c.get("values", [])) <= 500:
                return None
            checked = c["values"]
        elif op in ("is_null", "not_null"):
            if "value" in c or c.get("values"):  # an empty list of values is no values
                return None
            checked = []
        else:
            if "value" not in c or c.get("values"):
                return None
            checked = [c["value"]]
            if op in ("<", "<=", ">", ">=") and c["var"] in ("sex", "low_income"):
                return None
        if not all(_valid_value(c["var"], v) for v in checked):
            return None

    def keep(row: dict[str, Any], c: dict[str, Any]) -> bool:
        v = row[c["var"]]
        if c["op"] == "is_null":
            return v is None
        if c["op"] == "not_null":
            return v is not None
        if v is None:  # a missing value satisfies no comparison and no membership
            return False
        if c["op"] == "in":
            return v in c["values"]
        if c["op"] == "not_in":
            return v not in c["values"]
        return COMPARE[c["op"]](v, c["value"])

    return [i for i, row in enumerate(rows) if all(keep(row, c) for c in conds)]


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(conds=st.lists(conditions(), min_size=1, max_size=3))
def test_parsed_conditions_select_exactly_the_rows_they_describe_or_are_refused(held, conds):
    data, _, written = held
    rows = written.to_dicts()
    expected = _expected(rows, conds)
    body = {"spec": "count", "name": "c", "years": [YEAR], "by": ["sex"], "population": conds}
    if expected is None:
        with pytest.raises(RequestInvalid):
            population(parse_spec(body), data)
        return
    selected = population(parse_spec(body), data).get_column("pseudonym").to_list()
    assert selected == [rows[i]["pseudonym"] for i in expected]


def test_last_years_value_is_the_persons_record_of_the_year_before(tmp_path):
    keys = person_keys(40, seed=8)
    ws = tmp_path / "ws"
    last = pl.DataFrame({"pseudonym": keys[:30], "low_income": [i % 2 == 0 for i in range(30)]})
    this = pl.DataFrame({"pseudonym": keys[10:40], "low_income": [False] * 30})
    write_dataset(ws, last, 2022)
    write_dataset(ws, this, 2023)
    spec = CountSpec(
        name="c", years=(2023,), by=("low_income",), population=(where("low_income_last_year", "==", True),)
    )
    got = set(population(spec, GateData(ws)).get_column("pseudonym").to_list())
    assert got == {k for i, k in enumerate(keys[:30]) if i % 2 == 0 and i >= 10}
    missing = CountSpec(
        name="m", years=(2023,), by=("low_income",), population=(where("low_income_last_year", "is_null"),)
    )
    assert set(population(missing, GateData(ws)).get_column("pseudonym").to_list()) == set(keys[30:40])
    with pytest.raises(UnknownVariable, match="no linked dataset"):
        population(CountSpec(name="x", years=(2021,), by=("low_income",)), GateData(ws))


# --- the policy's grids -------------------------------------------------------------------------------------
def test_numeric_grouping_without_policy_bands_is_refused(held):
    data, policy, _ = held
    assert "birth_year" not in policy.grids.bands
    with pytest.raises(RequestInvalid, match=r"'birth_year' is numeric with no public bands"):
        materialise(CountSpec(name="c", years=(YEAR,), by=("birth_year",)), data, policy)


def test_banded_grouping_uses_the_policys_bands(tmp_path):
    text = (REPO / "policies/release/sdc-only.toml").read_text()
    bands = "woz_eur = [100000, 150000, 200000, 250000, 300000, 400000, 500000]"
    assert bands in text
    policy, pub, _ = signed_policy(tmp_path, "sdc-only", text.replace(bands, "woz_eur = [150000, 250000]"))
    frame = people(3000)
    with Gate.open(gate_workspace(tmp_path, frame), policy, [pub]) as gate:
        result = gate.release(CountSpec(name="by_woz", years=(YEAR,), by=("woz_eur",)), requested_by="analysis")
    assert isinstance(result, Released), result.reasons
    rows = {r[0]: r[1] for r in result.document["values"]["rows"]}
    assert tuple(rows) == band_labels((150000, 250000)) == ("<150000", "[150000,250000)", ">=250000")
    woz = frame.get_column("woz_eur").drop_nulls().to_numpy()
    expected = np.bincount(np.searchsorted([150000, 250000], woz, side="right"), minlength=3)
    assert list(rows.values()) == expected.tolist()


def test_a_quantile_level_outside_the_grid_is_refused(held):
    data, policy, _ = held
    assert 0.3 not in policy.grids.quantile_levels
    with pytest.raises(RequestInvalid, match=r"levels \[0\.3\] are not in the release policy's grids"):
        materialise(QuantileSpec(name="q", years=(YEAR,), value="bmi", levels=(0.5, 0.3)), data, policy)
    assert materialise(QuantileSpec(name="q", years=(YEAR,), value="bmi", levels=(0.5,)), data, policy).request


# --- window-mean quantiles -----------------------------------------------------------------------------------
def _windows(n: int, q: float) -> list[int]:
    """The starts of the windows of T sorted values centred on the quantile's rank q (n - 1): one, or two when
    the centre falls between them."""
    centre = q * (n - 1) - (T - 1) / 2
    return sorted({math.floor(centre), math.ceil(centre)})


def _fits(n: int, start: int) -> bool:
    return start >= T and n - start - T >= T  # at least T persons below and above the window


def _two_groups(small: np.ndarray) -> pl.DataFrame:
    """``small`` as the values of the girls, next to 200 boys (a group that always fits its windows)."""
    boys = np.linspace(12.0, 40.0, 200) + 0.00005
    return pl.DataFrame({"sex": ["F"] * small.size + ["M"] * boys.size, "bmi": np.concatenate([small, boys])})


@settings(max_examples=25, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(5, 90), level=st.sampled_from(LEVELS), seed=st.integers(0, 2**32 - 1))
def test_an_exact_quantile_is_the_mean_of_its_window_with_enough_persons_on_each_side(
    tmp_path_factory, officer, n, level, seed
):
    values = np.round(np.random.default_rng(seed).uniform(12, 40, n), 4)
    assume(np.unique(values).size == n)
    with open_gate(tmp_path_factory.mktemp("q"), _two_groups(values), officer) as gate:
        result = gate.release(QuantileSpec(name="q", years=(YEAR,), value="bmi", levels=(level,), by=("sex",)),
                              requested_by="analysis")  # fmt: skip
    assert isinstance(result, Released), result.reasons
    released = {row[0]: row[1] for row in result.document["values"]["rows"]}["F"]
    ordered = np.sort(values)
    starts = [s for s in _windows(n, level) if _fits(n, s)]
    if n < 3 * T or not starts:
        assert isinstance(result, Suppressed) and released is None
    elif len(starts) == len(_windows(n, level)):  # every candidate window fits: released
        assert released is not None
    if released is not None:
        assert any(released == pytest.approx(float(ordered[s : s + T].mean()), abs=1e-9) for s in starts)
        assert ordered[T - 1] < released < ordered[n - T]  # never a value of the T smallest or largest


def test_a_quantile_of_fewer_than_three_times_the_threshold_is_suppressed(tmp_path, officer):
    frame = _two_groups(np.linspace(15, 30, 3 * T - 1))
    with open_gate(tmp_path, frame, officer) as gate:
        grouped = gate.release(QuantileSpec(name="q", years=(YEAR,), value="bmi", levels=(0.5,), by=("sex",)),
                               requested_by="analysis")  # fmt: skip
        alone = gate.release(QuantileSpec(name="q_girls", years=(YEAR,), value="bmi", levels=(0.5,),
                                          population=(where("sex", "==", "F"),)), requested_by="analysis")  # fmt: skip
    assert isinstance(grouped, Suppressed)
    rows = {row[0]: row for row in grouped.document["values"]["rows"]}
    assert rows["F"][1] is None and rows["F"][2] == "suppressed: quantile_window" and rows["M"][1] is not None
    # alone, the group is the whole table: nothing is left to release
    assert isinstance(alone, Refused) and any(r.startswith("max_suppressed_share") for r in alone.reasons)


def test_an_ungrouped_quantile_is_released_as_its_window_mean(tmp_path, officer):
    values = np.linspace(10.0, 40.0, 101)
    with open_gate(tmp_path, pl.DataFrame({"bmi": values}), officer) as gate:
        result = gate.release(QuantileSpec(name="q", years=(YEAR,), value="bmi", levels=(0.25, 0.75)),
                              requested_by="analysis")  # fmt: skip
    assert isinstance(result, Released) and not isinstance(result, Suppressed), result.reasons
    # ranks 25 and 75 are the centres: windows [20, 30) and [70, 80) of the sorted values
    assert result.document["values"]["rows"][0][:2] == pytest.approx([values[20:30].mean(), values[70:80].mean()])


# --- trees ---------------------------------------------------------------------------------------------------
def test_a_split_without_children_is_refused_at_construction():
    with pytest.raises(RequestInvalid, match="needs both children"):
        SplitNode(node_id=0, var="woz_eur", threshold=2e5)
    with pytest.raises(RequestInvalid, match="needs both children"):
        SplitNode(node_id=0, var="woz_eur", threshold=2e5, left=1)
    with pytest.raises(RequestInvalid, match="a leaf has no variable, rule or children"):
        SplitNode(node_id=1, left=2, right=3)
    with pytest.raises(RequestInvalid, match="either a threshold or categories"):
        SplitNode(node_id=0, var="sex", threshold=1.0, categories=("M",), left=1, right=2)
    leaves = (SplitNode(node_id=1), SplitNode(node_id=2))
    with pytest.raises(RequestInvalid, match="not among the features"):
        TreeSpec(name="t", years=(YEAR,), outcome="psychosocial_risk", features=("sex",), min_samples_leaf=5,
                 nodes=(SplitNode(node_id=0, var="woz_eur", threshold=2e5, left=1, right=2), *leaves))  # fmt: skip
    with pytest.raises(RequestInvalid, match="not reachable from the root"):
        TreeSpec(name="t", years=(YEAR,), outcome="psychosocial_risk", features=("woz_eur",), min_samples_leaf=5,
                 nodes=(SplitNode(node_id=0), *leaves))  # fmt: skip


def _tree(threshold: float, missing_left: bool, categories: tuple[str, ...], sex_missing_left: bool) -> TreeSpec:
    """Root: woz_eur <= threshold; left child: sex in categories; right child: sdq_total <= 20."""
    nodes = (
        SplitNode(node_id=0, var="woz_eur", threshold=threshold, missing_left=missing_left, left=1, right=2),
        SplitNode(node_id=1, var="sex", categories=categories, missing_left=sex_missing_left, left=3, right=4),
        SplitNode(node_id=2, var="sdq_total", threshold=20, left=5, right=6),
        *(SplitNode(node_id=i) for i in range(3, 7)),
    )
    return TreeSpec(name="tree", years=(YEAR,), outcome="psychosocial_risk", features=("woz_eur", "sex", "sdq_total"),
                    nodes=nodes, min_samples_leaf=5, max_depth=2)  # fmt: skip


def _independent_counts(frame: pl.DataFrame, spec: TreeSpec) -> dict[int, tuple[int, int]]:
    """Each node's (negatives, positives), following every person down the tree row by row."""
    by_id = {n.node_id: n for n in spec.nodes}
    counts = {n.node_id: [0, 0] for n in spec.nodes}
    for row in frame.filter(pl.col("psychosocial_risk").is_not_null()).to_dicts():
        node = by_id[0]
        while True:
            counts[node.node_id][int(row["psychosocial_risk"])] += 1
            if node.var is None:
                break
            v = row[node.var]
            if v is None:
                left = node.missing_left
            elif node.threshold is not None:
                left = float(np.float32(v)) <= node.threshold
            else:
                left = v in node.categories
            node = by_id[node.left if left else node.right]
    return {k: (a, b) for k, (a, b) in counts.items()}


def test_the_gates_tree_counts_add_up_and_match_an_independent_count(tmp_path, officer):
    frame = people(4000, seed=9)
    spec = _tree(200_000, True, ("M",), False)
    with open_gate(tmp_path, frame, officer) as gate:
        result = gate.release(spec, requested_by="analysis")
    assert isinstance(result, Released) and not isinstance(result, Suppressed), result.reasons
    nodes = {n["node_id"]: n for n in result.document["values"]["nodes"]}
    for node in nodes.values():
        if node["left"] is not None:
            left, right = nodes[node["left"]]["class_counts"], nodes[node["right"]]["class_counts"]
            assert [a + b for a, b in zip(left, right, strict=True)] == node["class_counts"]
    expected = _independent_counts(frame, spec)
    assert {k: tuple(n["class_counts"]) for k, n in nodes.items()} == expected
    assert sum(expected[0]) == frame.get_column("psychosocial_risk").drop_nulls().len()


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    threshold=st.sampled_from([90_000.5, 150_000, 200_000, 300_000, 1e7]),
    missing_left=st.booleans(),
    categories=st.sampled_from([("M",), ("F",), ("M", "F")]),
    sex_missing_left=st.booleans(),
)
def test_tree_counts_for_any_split_follow_every_person(held, threshold, missing_left, categories, sex_missing_left):
    data, policy, written = held
    spec = _tree(threshold, missing_left, categories, sex_missing_left)
    counted = materialise(spec, data, policy).request
    assert isinstance(counted, TreeStructure)
    got = {n.node_id: tuple(n.class_counts) for n in counted.nodes}
    assert got == _independent_counts(written, spec)


# --- the privacy unit ---------------------------------------------------------------------------------------
def test_a_person_twice_in_one_year_is_dataset_invalid_and_nothing_is_recorded(tmp_path, officer):
    keys = person_keys(100, seed=4)
    frame = people(100).with_columns(pl.Series("pseudonym", [*keys[:99], keys[0]], dtype=pl.Binary))
    ws = gate_workspace(tmp_path)
    write_dataset(ws, people(100), 2022, seed=4)
    write_dataset(ws, frame, 2023)
    with Gate.open(ws, officer[0], [officer[1]]) as gate:
        assert isinstance(gate.release(CountSpec(name="ok", years=(2022,), by=("sex",)), requested_by="analysis"),
                          Released)  # fmt: skip
        for years in ((2023,), (2022, 2023)):
            with pytest.raises(DatasetInvalid, match="more than one row"):
                gate.release(CountSpec(name="c", years=years, by=("sex",)), requested_by="analysis")
    assert verify_ledger(ws).entries == 1


def test_pooled_years_bound_a_persons_contributions_by_the_number_of_years(tmp_path):
    """DP over two pooled years: every person has two rows, so OpenDP's noise for the same epsilon doubles."""
    policy, pub, _ = signed_policy(tmp_path, "dp-sdc")
    frame = people(2000)
    with Gate.open(gate_workspace(tmp_path, {2022: frame, 2023: frame}), policy, [pub]) as gate:
        one = gate.release(CountSpec(name="one", years=(2023,), by=("sex",)), requested_by="analysis")
        two = gate.release(CountSpec(name="two", years=(2022, 2023), by=("sex",)), requested_by="analysis")
    assert isinstance(one, Released) and isinstance(two, Released)
    assert one.epsilon == two.epsilon
    scale = [r.document["noise"]["n"]["Frame Length"]["scale"] for r in (one, two)]
    assert scale[0] > 0 and scale[1] == pytest.approx(2 * scale[0])
    doc = json.loads(two.path.read_text())
    assert doc["spec"]["years"] == [2022, 2023] and "pooled" in doc["population"]
