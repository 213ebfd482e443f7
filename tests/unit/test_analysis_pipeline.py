"""The pipeline on a link-shaped frame assembled from the synthetic city's ground truth (no bundles, no gate):
feature sets, refusals, per-year and pooled scopes with year differences, and determinism given the seed."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from analysis_frames import city_dataset
from annotated_types import Ge, Gt, Le, Lt
from gate_kit import gate_workspace, signed_policy
from sklearn.metrics import roc_auc_score

from coordinator.analysis.plan import (
    LAST_YEAR,
    LoadedPolicies,
    attach_previous_years,
    encode,
    feature_variables,
    load_policies,
    with_previous_year,
)
from coordinator.analysis.run import analysis_requests, count_model_fits, scopes_of
from coordinator.analysis.trees import DatasetBins, LeafRules
from kansrijk.gate.compute import materialise
from kansrijk.gate.data import DatasetInvalid
from kansrijk.gate.release import Gate
from kansrijk.gate.requests import ModelMetrics, TreeStructure
from kansrijk.gate.specs import ComparisonSpec, CountSpec, DpModelSpec, MetricsSpec, ScoreSet, TestSpec, TreeSpec
from kansrijk.policy.analysis import Association, DpModelPlan, Metrics

ROOT = Path(__file__).parents[2] / "policies"


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> dict[int, pl.DataFrame]:
    frame = city_dataset(tmp_path_factory.mktemp("acity") / "city", persons=4000, seed=5, years=(2022, 2023))
    return {int(y): frame.filter(pl.col("year") == y) for y in (2022, 2023)}


@pytest.fixture(scope="module")
def gate(frames: dict[int, pl.DataFrame], tmp_path_factory: pytest.TempPathFactory):
    """A gate whose linked datasets are the frames the analysis saw: it computes what the specs ask."""
    tmp = tmp_path_factory.mktemp("agate")
    policy, pub, _ = signed_policy(tmp, "sdc-only")
    with Gate.open(gate_workspace(tmp, frames), policy, [pub]) as opened:
        yield opened


def _policies(**model: object) -> LoadedPolicies:
    pol = load_policies(ROOT / "analysis" / "rotterdam-groeit.toml", ROOT / "factors" / "factor-model.toml", None)
    plan = pol.plan.model_copy(
        update={
            "model": pol.plan.model.model_copy(
                update={"max_depth": (3, 5), "min_samples_leaf": (20,), "folds": 3, **model}
            ),
            "metrics": pol.plan.metrics.model_copy(update={"bootstrap_replicates": 50, "permutation_repeats": 1}),
            "association": pol.plan.association.model_copy(update={"permutations": 99}),
            "outcomes": {
                "psychosocial_risk": pol.plan.outcomes["psychosocial_risk"],
                "early_school_leaving": pol.plan.outcomes["early_school_leaving"].model_copy(
                    update={"min_positives": 100_000}
                ),
                "delinquency": pol.plan.outcomes["delinquency"],
            },
        }
    )
    return dataclasses.replace(pol, plan=plan)


def test_feature_sets_never_hold_the_outcome_source_or_excluded_variables(frames: dict[int, pl.DataFrame]) -> None:
    pol = _policies()
    frame = frames[2023]
    all_vars = feature_variables(frame.columns, pol.plan, pol.factors, "psychosocial_risk", "all")
    fm_vars = feature_variables(frame.columns, pol.plan, pol.factors, "psychosocial_risk", "factor_model")
    assert "sdq_total" not in all_vars and "sdq_total" not in fm_vars
    assert "woz_eur" in all_vars and "woz_eur" not in fm_vars
    assert {"pseudonym", "year", "in_cbs", "p_psychosocial_risk", "psychosocial_risk"}.isdisjoint(all_vars)
    assert set(fm_vars) <= set(pol.factors.indicators) | set(pol.plan.features.always)
    full = load_policies(ROOT / "analysis" / "rotterdam-groeit.toml", ROOT / "factors" / "factor-model.toml", None)
    track_vars = feature_variables(frame.columns, full.plan, full.factors, "track_up", "all")
    assert "track" not in track_vars and "grade" not in track_vars and "school_advice" in track_vars
    repetition_vars = feature_variables(frame.columns, full.plan, full.factors, "grade_repetition", "all")
    assert {"grade", "track", "school_type"}.isdisjoint(repetition_vars) and "school_advice" in repetition_vars
    design = encode(frame, all_vars, one_hot_max_levels=12)
    assert design.X.dtype == np.float32 and design.X.shape == (frame.height, len(design.columns))
    assert "sex=M" in design.columns and "age_years" in design.variables


def test_ordered_levels_are_encoded_as_their_rank_in_the_public_order() -> None:
    """``features.ordinal``: one column per variable, the rank of the category in the schema's order (never the
    data's), missing stays missing; the same variable without ``ordinal`` is one-hot."""
    frame = pl.DataFrame(
        {
            "school_advice": ["VWO", None, "VMBO-B", "HAVO", "VMBO-GT"],
            "track": ["HAVO", "VMBO-T", None, "MBO-2", "PO"],
        }
    )
    design = encode(frame, ["school_advice", "track"], one_hot_max_levels=12, ordinal=("school_advice", "track"))
    assert design.columns == ("school_advice", "track")
    np.testing.assert_array_equal(design.X[:, 0], [4, np.nan, 0, 3, 2])
    np.testing.assert_array_equal(design.X[:, 1], [5, 4, np.nan, 8, 0])
    one_hot = encode(frame, ["school_advice"], one_hot_max_levels=12)
    assert one_hot.columns[0] == "school_advice=VMBO-B" and len(one_hot.columns) == 5
    shipped = load_policies(ROOT / "analysis" / "rotterdam-groeit.toml", ROOT / "factors" / "factor-model.toml", None)
    assert shipped.plan.features.ordinal == ("track",)


def test_years_are_analysed_one_by_one_pooled_and_compared(frames: dict[int, pl.DataFrame], gate: Gate) -> None:
    pol = _policies(min_positives=60)
    scopes = scopes_of(frames, pooled=True)
    assert [s.name for s in scopes] == ["2022", "2023", "pooled"]
    fits = count_model_fits(pol, scopes)
    done: list[int] = []
    planned = list(analysis_requests(pol, frames, leaf_rules=LeafRules(), progress=done.append))
    assert sum(done) == fits > 0
    names = [p.request.name for p in planned]
    assert len(names) == len(set(names))
    for scope in ("2022", "2023", "pooled"):
        assert f"{scope}.psychosocial_risk.all.metrics" in names
        assert f"{scope}.psychosocial_risk.compare" in names
        assert f"{scope}.association.nonlinearity_lr" in names
    assert "years.2022-2023.psychosocial_risk.all" in names
    # early school leaving is too rare here: its count goes to the gate, with the reason, and nothing else
    esl = [p for p in planned if p.outcome == "early_school_leaving"]
    assert {type(p.request) for p in esl} == {CountSpec}
    assert all("fewer positives than the plan's minimum of 100000" in p.note for p in esl)
    diff = next(p.request for p in planned if p.request.name == "years.2022-2023.psychosocial_risk.all")
    assert isinstance(diff, ComparisonSpec) and diff.mode == "years" and diff.years == (2022, 2023)
    assert diff.labels == ("2023", "2022")  # a: the later year
    # the gate computes the difference from the scores and its own outcome data
    computed = materialise(diff, gate.data, gate.policy).request
    assert isinstance(computed, ModelMetrics)
    m = computed.metrics
    assert m["roc_auc.delta"] == pytest.approx(m["roc_auc.2023"] - m["roc_auc.2022"])
    trees = [p.request for p in planned if isinstance(p.request, TreeSpec)]
    assert {t.years for t in trees} == {(2022,), (2023,), (2022, 2023)}
    for p in planned:
        assert pol.plan_digest in p.request.description
    for tree in trees:
        # the tree was pruned to the leaf rules on the analysis's frame; the gate, counting on its own data,
        # finds the leaf rules' minimum in every leaf too
        counted = materialise(tree, gate.data, gate.policy).request
        assert isinstance(counted, TreeStructure)
        assert all(min(n.class_counts) >= 10 for n in counted.leaves), tree.name


def test_the_same_plan_gives_the_same_requests(frames: dict[int, pl.DataFrame]) -> None:
    pol = _policies(min_positives=60)
    one = {2023: frames[2023]}
    a = [p.request.digest() for p in analysis_requests(pol, one, leaf_rules=LeafRules())]
    b = [p.request.digest() for p in analysis_requests(pol, one, leaf_rules=LeafRules())]
    assert a == b
    other = dataclasses.replace(pol, plan=pol.plan.model_copy(update={"seed": pol.plan.seed + 1}))
    c = [p.request.digest() for p in analysis_requests(other, one, leaf_rules=LeafRules())]
    assert a != c


def test_last_years_state_joins_by_person_and_feeds_only_the_all_variables_set(
    frames: dict[int, pl.DataFrame],
) -> None:
    """``features.previous_year``: each person's track, grade and school type of the year before, joined by
    pseudonym (missing for persons without a record then), offered to the "all" feature set even where this
    year's value is excluded (track down) — never to the factor model, never for the first year."""
    pol = load_policies(ROOT / "analysis" / "rotterdam-groeit.toml", ROOT / "factors" / "factor-model.toml", None)
    datasets = attach_previous_years(frames, pol.plan.features.previous_year)
    assert not any(c.endswith(LAST_YEAR) for c in datasets[2022].columns)
    this, last = datasets[2023], frames[2022]
    assert this.height == frames[2023].height and this["pseudonym"].to_list() == frames[2023]["pseudonym"].to_list()
    expected = this.select("pseudonym").join(last.select("pseudonym", "track"), on="pseudonym", how="left")
    assert this["track_last_year"].to_list() == expected["track"].to_list()
    newcomers = ~this["pseudonym"].is_in(last["pseudonym"].implode())
    assert newcomers.any() and this.filter(newcomers)["track_last_year"].null_count() == int(newcomers.sum())
    down = feature_variables(this.columns, pol.plan, pol.factors, "track_down", "all")
    assert {"track_last_year", "grade_last_year", "school_type_last_year"} <= set(down)
    assert "track" not in down and "grade" not in down
    assert not any(v.endswith(LAST_YEAR) for v in feature_variables(this.columns, pol.plan, pol.factors,
                                                                     "track_down", "factor_model"))  # fmt: skip
    design = encode(this, down, one_hot_max_levels=12, ordinal=pol.plan.features.ordinal)
    assert "track_last_year" in design.columns and "school_type_last_year=primary" in design.columns
    twice = pl.concat([last, last.head(1)])
    with pytest.raises(DatasetInvalid, match="more than once"):
        with_previous_year(frames[2023], twice, ("track",), "dataset/2022.parquet")


def _plan_bounds(model: type, field: str) -> list[float]:
    """The smallest and largest value a signed plan may give ``model.field`` (open bounds: the nearest inside)."""
    out: list[float] = []
    info = model.model_fields[field]
    integer = info.annotation is int
    for m in info.metadata:
        if isinstance(m, Ge | Le):
            out.append(m.ge if isinstance(m, Ge) else m.le)
        elif isinstance(m, Gt):
            out.append(m.gt + 1 if integer else math.nextafter(m.gt, math.inf))
        elif isinstance(m, Lt):
            out.append(m.lt - 1 if integer else math.nextafter(m.lt, -math.inf))
    assert out, f"{model.__name__}.{field} has no bounds"
    return out


_SCORES = ScoreSet(pl.DataFrame({"pseudonym": [b"12345678"], "year": [2023], "score": [0.5]}))
_BASE = {"name": "s", "years": (2022, 2023), "outcome": "psychosocial_risk"}
_PLAN_TO_SPEC = [
    (Metrics, "bootstrap_replicates", lambda v: ComparisonSpec(**_BASE, a=_SCORES, b=_SCORES, labels=("a", "b"),
                                                                 replicates=v)),
    (Metrics, "confidence", lambda v: ComparisonSpec(**_BASE, a=_SCORES, b=_SCORES, labels=("a", "b"), confidence=v)),
    (Metrics, "top_k_percent", lambda v: ComparisonSpec(**_BASE, a=_SCORES, b=_SCORES, labels=("a", "b"),
                                                          top_k_percent=v)),
    (Metrics, "top_k_percent", lambda v: MetricsSpec(**_BASE, scores=_SCORES, top_k_percent=v)),
    (Association, "permutations", lambda v: TestSpec(**_BASE, test="mutual_information", variable="woz_eur",
                                                       permutations=v)),
    (Association, "spline_df", lambda v: TestSpec(**_BASE, test="spline_lr", variable="woz_eur", spline_df=v)),
    (DpModelPlan, "max_depth", lambda v: DpModelSpec(**_BASE, features=("sex",), max_depth=v)),
    (DpModelPlan, "boosted_depth", lambda v: DpModelSpec(**_BASE, features=("sex",), model="dp_boosted",
                                                           max_depth=v)),
    (DpModelPlan, "boosted_trees", lambda v: DpModelSpec(**_BASE, features=("sex",), model="dp_boosted", trees=v)),
    (DpModelPlan, "learning_rate", lambda v: DpModelSpec(**_BASE, features=("sex",), learning_rate=v)),
    (DpModelPlan, "folds", lambda v: DpModelSpec(**_BASE, features=("sex",), folds=v)),
]  # fmt: skip


@pytest.mark.parametrize("model,field,build", _PLAN_TO_SPEC, ids=[f"{m.__name__}.{f}" for m, f, _ in _PLAN_TO_SPEC])
def test_every_setting_a_signed_plan_allows_makes_a_valid_spec(model: type, field: str, build) -> None:
    """The analysis builds its specs from the plan's settings: a value the plan's schema accepts must never make
    a spec the gate rejects halfway through a run."""
    for value in _plan_bounds(model, field):
        build(value)


def test_the_plan_chooses_the_tree_engine_and_the_released_descriptions_name_it(
    frames: dict[int, pl.DataFrame],
) -> None:
    """Both engines run the whole plan; their out-of-fold predictions agree closely (the histogram trees bin only
    the columns with many values), and every model description says which engine grew the trees."""
    one = {2023: frames[2023]}
    runs = {}
    for engine in ("histogram", "exact"):
        oof: dict[tuple[str, str, str], np.ndarray] = {}
        pol = _policies(engine=engine, min_positives=60)
        planned = list(analysis_requests(pol, one, leaf_rules=LeafRules(), oof_sink=oof))
        described = [p.request for p in planned if isinstance(p.request, MetricsSpec | TreeSpec)]
        assert described and all(f"engine={engine}" in (r.model + r.description) for r in described)
        runs[engine] = oof
    assert runs["histogram"].keys() == runs["exact"].keys() and runs["histogram"]
    pop = frames[2023]
    for key, scores in runs["histogram"].items():
        outcome = key[1]
        y = pop.filter(pl.col(outcome).is_not_null())[outcome].cast(pl.Int8).to_numpy()
        gap = roc_auc_score(y, scores) - roc_auc_score(y, runs["exact"][key])
        assert abs(gap) < 0.03, f"{outcome}: histogram minus exact AUC {gap:+.4f}"


def test_each_column_is_binned_once_per_dataset_and_every_population_reuses_its_edges(
    frames: dict[int, pl.DataFrame],
) -> None:
    frame = frames[2023]
    variables = ("age_years", "woz_eur", "sex", "buurt_code")
    whole = encode(frame, variables, one_hot_max_levels=12)
    bins = DatasetBins(max_bins=32)
    bins.declare(whole)
    sub = frame.filter(pl.col("psychosocial_risk").is_not_null() & (pl.col("age_years") > 12))
    part = encode(sub, variables, one_hot_max_levels=12)
    binned = bins.bin(part)
    for j, column in enumerate(part.columns):
        edges = binned.binning.edges[j]
        if part.encodings[j].how == "rank" and part.encodings[j] != whole.encodings[whole.columns.index(column)]:
            continue  # ranks over another set of codes: another column, binned from this population
        declared = bins.bin(whole).binning.edges[whole.columns.index(column)]
        np.testing.assert_array_equal(edges, declared, err_msg=column)
        x = part.X[:, j].astype(np.float64)
        known = ~np.isnan(x)
        code = binned.codes[:, j].astype(np.int64)
        assert (code[~known] == edges.size + 1).all()
        # code <= b exactly when the value is at most the edge b: the released thresholds route as the codes do
        for b, edge in enumerate(edges):
            np.testing.assert_array_equal(code[known] <= b, x[known] <= edge, err_msg=f"{column} bin {b}")
    assert binned.binning.source[part.columns.index("woz_eur")] == "quantiles"
    assert binned.binning.source[part.columns.index("age_years")] == "values"
