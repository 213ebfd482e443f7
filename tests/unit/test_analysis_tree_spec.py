"""A fitted tree submitted as a structure: the gate re-applies it to its own data and must count exactly the persons
the fitted tree routed at fitting, node by node, for either engine (a histogram tree's thresholds are bin edges) —
for every kind of encoded column (numbers with missing values, booleans, one-hot categories, ranks of ordered
categories and of codes, last year's state)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from analysis_frames import city_dataset
from gate_kit import gate_workspace, signed_policy

from coordinator.analysis.plan import attach_previous_years, encode
from coordinator.analysis.run import tree_nodes
from coordinator.analysis.trees import ENGINES, LeafRules, TreeSettings, fit_final_tree, prune_to_rules, stable_seed
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import TreeSpec, where

VARIABLES = (
    "age_years",  # number
    "woz_eur",  # number, missing where the municipality does not hold the person
    "sex",  # one-hot
    "migration_background",  # one-hot with missing values
    "low_income",  # boolean with missing values
    "track",  # rank of an ordered category (ordinal)
    "buurt_code",  # rank of a code among the codes present
    "track_last_year",  # last year's state (missing for persons without a record then)
)


@pytest.fixture(scope="module")
def two_years(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[int, pl.DataFrame]]:
    root = tmp_path_factory.mktemp("tree-spec")
    frame = city_dataset(root / "city", persons=6000, seed=3, years=(2022, 2023))
    frames = {y: frame.filter(pl.col("year") == y).drop([c for c in frame.columns if c.startswith("p_")])
              for y in (2022, 2023)}  # fmt: skip
    # the gate's dataset keys persons by 32-byte pseudonyms; the city's stand-in keys are BSN text
    keys = {y: f.with_columns(pl.col("pseudonym").bin.encode("hex").str.pad_start(64, "0").str.decode("hex"))
            for y, f in frames.items()}  # fmt: skip
    ws = gate_workspace(root, keys)
    return ws, keys


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("outcome", ["psychosocial_risk", "delinquency"])
def test_gate_counts_every_node_as_the_fitted_tree_routed_its_persons(
    two_years: tuple[Path, dict[int, pl.DataFrame]], tmp_path: Path, outcome: str, engine: str
) -> None:
    ws, frames = two_years
    data = attach_previous_years(frames, ("track",))[2023]
    pop = data.filter(pl.col("age_years").is_between(0, 23) & pl.col(outcome).is_not_null())
    design = encode(pop, VARIABLES, one_hot_max_levels=12, ordinal=("track",))
    y = pop.get_column(outcome).cast(pl.Int64).to_numpy()
    settings = TreeSettings(grid=((8, 20),), folds=3, engine=engine, max_bins=32)  # quantile bins for woz_eur
    model = fit_final_tree(design, y, (8, 20), settings, stable_seed(1, outcome))
    tree = prune_to_rules(model, design, y, LeafRules(min_leaf_persons=10, min_class_count=10))
    assert sum(n.is_leaf for n in tree.nodes) >= 3, "the test needs a tree with splits"
    kinds = {design.encodings[design.columns.index(str(n.feature))].how for n in tree.nodes if not n.is_leaf}
    policy, pub, _ = signed_policy(tmp_path)
    spec = TreeSpec(
        name=f"tree.{outcome}.{engine}",
        years=(2023,),
        population=(where("age_years", ">=", 0), where("age_years", "<=", 23)),
        outcome=outcome,
        features=design.variables,
        nodes=tree_nodes(tree, design),
        min_samples_leaf=tree.min_samples_leaf,
        max_depth=tree.max_depth,
    )
    with Gate.open(ws, policy, [pub]) as gate:
        result = gate.release(spec, requested_by="analysis")
    assert result.outcome in ("released", "suppressed"), result.reasons
    gate_counts = {n["node_id"]: tuple(n["class_counts"]) for n in result.document["values"]["nodes"]}
    fitted = {n.node_id: tuple(n.class_counts) for n in tree.nodes}
    assert gate_counts == fitted, f"split kinds {sorted(kinds)}"


def test_every_encoding_turns_into_a_rule_on_the_canonical_variable(two_years: tuple[Path, dict]) -> None:
    _, frames = two_years
    data = attach_previous_years(frames, ("track",))[2023]
    design = encode(data, VARIABLES, one_hot_max_levels=12, ordinal=("track",))
    hows = {e.how for e in design.encodings}
    assert hows == {"numeric", "onehot", "bool", "rank"}
    for column, enc in zip(design.columns, design.encodings, strict=True):
        x = design.X[:, design.columns.index(column)]
        finite = np.isfinite(x)
        threshold = float(np.nanmedian(x)) if finite.any() else 0.0
        rule = enc.split(threshold)
        assert rule["var"] == enc.variable
        values = data.get_column(enc.variable)
        known = values.is_not_null().to_numpy()
        if "threshold" in rule:
            expected = values.cast(pl.Float64).to_numpy()[known] <= rule["threshold"]
        else:
            expected = values.is_in(list(rule["categories"])).to_numpy()[known]
        np.testing.assert_array_equal(x[known] <= threshold, expected, err_msg=column)
