"""Analysis plan and factor model files: the shipped ones validate, and every error names the file, the key path
and the rule."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from kansrijk.errors import PolicyError
from kansrijk.policy.analysis import check_plan_against_release, load_analysis_plan
from kansrijk.policy.factors import load_factor_model

ROOT = Path(__file__).parents[2] / "policies"
PLAN = ROOT / "analysis" / "rotterdam-groeit.toml"
FACTORS = ROOT / "factors" / "factor-model.toml"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_plan_and_factor_model_validate() -> None:
    plan = load_analysis_plan(PLAN)
    factors = load_factor_model(FACTORS)
    assert set(plan.outcomes) >= {"psychosocial_risk", "early_school_leaving", "delinquency"}
    assert plan.feature_sets == ("all", "factor_model")
    assert factors.ranked[0].name == "social_emotional_health"
    assert factors.uncovered, "the model keeps at least one factor without an indicator"
    assert "woz_eur" not in factors.indicators  # WOZ is the 'all variables' finding, not a literature indicator
    proxied = factors.factor_proxied_by("woz_eur")  # ... but the factsheet reads it as a proxy for household income
    assert proxied is not None and proxied.name == "household_income" and factors.proxies == ("woz_eur",)


@pytest.mark.parametrize(
    ("replace", "key_path", "rule"),
    [
        ("[outcomes.delinquency]", "outcomes", "unknown outcome(s) ['delinquent']"),
        ("folds = 5", "model.folds", "greater than or equal to 3"),
        ("max_depth = [4, 6, 8]", "model.max_depth", "depths must be distinct"),
        ("shrinkage = [0, 300", "model.shrinkage", "distinct numbers in 0..1000000"),
        ('ordinal = ["track"', "features.ordinal", "must be distinct category variables; not one: ['grade']"),
        ('previous_year = ["school_type"', "features.previous_year", "unknown: ['brin']"),
        ('select_by = "roc_auc"', "model.select_by", "Input should be"),
        ("spline_df = 5", "association.spline_df", "less than or equal to 10"),
        ('engine = "histogram"', "model.engine", "Input should be 'histogram' or 'exact'"),
        ("max_bins = 255", "model.max_bins", "less than or equal to 255"),
        ('criterion = "gini"', "model", "the histogram engine splits by Gini impurity only"),
        ("bin_edges = [100000", "association.bin_edges", "strictly increasing"),
        ('always = ["age_years", "sex"]', "features.always", "unknown variable(s) ['postcode']"),
        (
            'exclude = ["grade", "track", "school_type"]',
            "outcomes.grade_repetition.exclude",
            "unknown variable(s) ['brin']",
        ),
    ],
)
def test_plan_errors_name_file_key_path_and_rule(tmp_path: Path, replace: str, key_path: str, rule: str) -> None:
    text = PLAN.read_text()
    bad = {
        "[outcomes.delinquency]": "[outcomes.delinquent]",
        "folds = 5": "folds = 1",
        "max_depth = [4, 6, 8]": "max_depth = [4, 4]",
        "shrinkage = [0, 300": "shrinkage = [-1, 300",
        'ordinal = ["track"': 'ordinal = ["grade"',
        'previous_year = ["school_type"': 'previous_year = ["brin"',
        'select_by = "roc_auc"': 'select_by = "accuracy"',
        "spline_df = 5": "spline_df = 40",
        'engine = "histogram"': 'engine = "binned"',
        "max_bins = 255": "max_bins = 256",
        'criterion = "gini"': 'criterion = "entropy"',
        "bin_edges = [100000": "bin_edges = [900000",
        'always = ["age_years", "sex"]': 'always = ["postcode"]',
        'exclude = ["grade", "track", "school_type"]': 'exclude = ["brin"]',
    }[replace]
    assert replace in text
    path = _write(tmp_path, "plan.toml", text.replace(replace, bad, 1))
    with pytest.raises(PolicyError) as err:
        load_analysis_plan(path)
    message = str(err.value)
    assert f"{path}: {key_path}" in message
    assert rule in message


def test_plan_with_an_unknown_key_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "plan.toml", PLAN.read_text().replace("[model]", "[model]\nmax_dept = 3"))
    with pytest.raises(PolicyError, match=r"model\.max_dept: Extra inputs are not permitted"):
        load_analysis_plan(path)


def test_plan_that_is_not_toml_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "plan.toml", "kind = analysis")
    with pytest.raises(PolicyError, match=r"plan\.toml: not valid TOML"):
        load_analysis_plan(path)


def test_tree_grid_below_the_release_policy_leaf_rule_is_refused() -> None:
    plan = load_analysis_plan(PLAN)
    with pytest.raises(PolicyError, match=r"model\.min_samples_leaf: value\(s\) \[200\] are below .* 300"):
        check_plan_against_release(plan, PLAN, min_leaf_persons=300, min_samples_leaf_training=5)
    check_plan_against_release(plan, PLAN, min_leaf_persons=10, min_samples_leaf_training=5)


@pytest.mark.parametrize(
    ("old", "new", "key_path", "rule"),
    [
        ('indicators = ["bmi"]', 'indicators = ["bmi", "shoe_size"]', "factors.7.indicators", "unknown variable"),
        ('indicators = ["bmi"]', 'indicators = ["woz_eur", "woz_eur"]', "factors.7.indicators", "listed twice"),
        ('indicators = ["bmi"]', 'indicators = ["low_income"]', "(top level)", "already indicates factors.1"),
        ("rank = 10", "rank = 9", "(top level)", "factors.9.rank: rank 9 is already taken by factors.8"),
        ('name = "youth_care"', 'name = "Youth Care"', "factors.6.name", "String should match pattern"),
        ('indicators = ["bmi"]', 'indicators = ["pseudonym"]', "factors.7.indicators", "unknown variable"),
        ('proxies = ["woz_eur"]', 'proxies = ["low_income"]', "(top level)", "is an indicator of factors.1"),
        ('proxies = ["woz_eur"]', 'proxies = ["shoe_size"]', "factors.1.proxies", "unknown variable"),
        ('indicators = ["bmi"]', 'indicators = ["bmi"]\nproxies = ["woz_eur"]', "(top level)", "already a proxy of"),
    ],
)
def test_factor_model_errors_name_file_key_path_and_rule(
    tmp_path: Path, old: str, new: str, key_path: str, rule: str
) -> None:
    text = FACTORS.read_text()
    assert old in text
    path = _write(tmp_path, "factors.toml", text.replace(old, new, 1))
    with pytest.raises(PolicyError) as err:
        load_factor_model(path)
    assert f"{path}: {key_path}" in str(err.value)
    assert rule in str(err.value)


def test_factor_without_source_is_refused(tmp_path: Path) -> None:
    text = FACTORS.read_text().replace(
        'source = "Factorenmodel Rotterdam Groeit (ranking as read by kansrijk): physical health and weight"',
        'source = ""',
    )
    with pytest.raises(PolicyError, match=r"factors\.7\.source: String should have at least 1 character"):
        load_factor_model(_write(tmp_path, "factors.toml", text))


def _with_psychosocial(tmp_path: Path, lines: str) -> Path:
    text = PLAN.read_text()
    assert "[outcomes.psychosocial_risk]\n" in text
    return _write(
        tmp_path,
        "plan.toml",
        text.replace("[outcomes.psychosocial_risk]\n", f"[outcomes.psychosocial_risk]\n{lines}\n", 1),
    )


def test_models_adds_a_dp_model_next_to_the_tree(tmp_path: Path) -> None:
    plan = load_analysis_plan(_with_psychosocial(tmp_path, 'models = ["dp_tree", "tree"]\nepsilon = "1/2"'))
    spec = plan.outcomes["psychosocial_risk"]
    assert spec.kinds == ("tree", "dp_tree") and spec.has_tree and spec.dp_kind == "dp_tree"
    assert spec.epsilon == Fraction(1, 2)
    # the single-model forms keep their meaning
    assert plan.outcomes["delinquency"].kinds == ("tree",) and plan.outcomes["delinquency"].dp_kind is None
    only_dp = load_analysis_plan(_with_psychosocial(tmp_path, 'model = "dp_boosted"')).outcomes["psychosocial_risk"]
    assert only_dp.kinds == ("dp_boosted",) and not only_dp.has_tree


@pytest.mark.parametrize(
    ("lines", "key_path", "rule"),
    [
        (
            'models = ["tree", "dp_tree", "dp_boosted"]',
            "outcomes.psychosocial_risk.models",
            "at most one differentially",
        ),
        ('models = ["tree", "tree"]', "outcomes.psychosocial_risk.models", "a model is listed twice"),
        ("models = []", "outcomes.psychosocial_risk.models", "name at least one model"),
        ('models = ["tree", "forest"]', "outcomes.psychosocial_risk.models.1", "Input should be"),
        ('model = "tree"\nmodels = ["tree", "dp_tree"]', "outcomes.psychosocial_risk", "either 'model' or 'models'"),
        ('epsilon = "1"', "outcomes.psychosocial_risk", "has no differentially private model"),
        ('models = ["tree", "dp_tree"]\nepsilon = "0"', "outcomes.psychosocial_risk", "epsilon must be > 0"),
    ],
    ids=["two-dp-models", "twice", "empty", "unknown", "model-and-models", "epsilon-without-dp", "zero-epsilon"],
)
def test_bad_models_option_names_key_path_and_rule(tmp_path: Path, lines: str, key_path: str, rule: str) -> None:
    path = _with_psychosocial(tmp_path, lines)
    with pytest.raises(PolicyError) as err:
        load_analysis_plan(path)
    assert f"{path}: {key_path}: " in str(err.value)
    assert rule in str(err.value)
