"""End to end from the CLI on a 40,000-person synthetic city: four partners seal their extracts, the coordinator
ingests, links and analyses, and every released number is checked against the city's ground truth.

The test knows the link key and finds the coordinator's pseudonym key in the workspace, so it can map
BSN -> P1 -> P2 and join the true probabilities to the persons the coordinator analysed: the Bayes-optimal AUC
of each outcome (the AUC of the true probability itself) is the ceiling the released AUC is measured against.
"""

from __future__ import annotations

import json
import shutil

import polars as pl
import pytest
from analysis_workspace import PASS, Analysed, build_and_analyse, released
from sklearn.metrics import roc_auc_score

from coordinator.workspace import load_keys, open_workspace
from kansrijk.cli import app
from kansrijk.crypto import hmac_sha256_expr, read_secret_key
from kansrijk.pseudonym import pseudonym_expr

PERSONS = 40_000
# 1000 positives at 150,000 persons, scaled to this city: early school leaving (~1% of pupils 12-23) falls
# below it, every other outcome stays above it, as in the factsheet.
MIN_POSITIVES = 400

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Analysed:
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", PASS)
    try:
        yield build_and_analyse(
            tmp_path_factory.mktemp("analysis"),
            persons=PERSONS,
            years=(2023,),
            plan_edits={"min_positives": str(MIN_POSITIVES)},
        )
    finally:
        mp.undo()


_released = released


def _truth(analysed: Analysed) -> pl.DataFrame:
    """The analysis dataset joined with the true probabilities through BSN -> P1 -> P2."""
    ws, city = analysed.ws, analysed.city
    link_key = read_secret_key(analysed.keys / "link.key", "link-key", PASS)
    coordinator_key = load_keys(open_workspace(ws), PASS).pseudonym_key
    truth = pl.read_parquet(city.persons).filter(pl.col("year") == 2023)
    truth = truth.select(
        hmac_sha256_expr(coordinator_key, pseudonym_expr(link_key, pl.col("bsn"))).alias("pseudonym"),
        pl.col("^p_.*$"),
    )
    dataset = pl.read_parquet(ws / "dataset" / "2023.parquet")
    return dataset.join(truth, on="pseudonym", how="inner")


def test_every_output_went_through_the_gate_and_the_ledger_verifies(analysed: Analysed) -> None:
    ws, summary = analysed.ws, analysed.summary
    lines = summary["releases"]
    assert lines and summary["plan_digest"].startswith("sha256:")
    released_files = {p.stem for p in (ws / "released").glob("*.json")}
    for line in lines:
        if line["verdict"] == "refused":
            assert line["name"] not in released_files
        else:
            assert line["name"] in released_files
            doc = json.loads((ws / "released" / f"{line['name']}.json").read_text())
            assert summary["plan_digest"] in doc["description"]
    result = analysed.runner.invoke(app, ["ledger", "verify", str(ws)])
    assert result.exit_code == 0, result.output
    # every tree that went out obeys the leaf rules
    trees = [line for line in lines if line["part"] == "tree" and line["verdict"] == "released"]
    assert trees
    for line in trees:
        for node in _released(ws, line["name"])["nodes"]:
            if node["feature"] is None:
                assert sum(node["class_counts"]) >= 10 and min(node["class_counts"]) >= 10


FAMILIES = {
    "social-emotional health": ("psychosocial_risk",),
    "school success": ("grade_repetition", "track_up", "track_down"),
    "delinquency": ("delinquency",),
}


def test_woz_is_the_top_predictor_of_all_three_outcome_families(analysed: Analysed) -> None:
    """Per family, the mean permutation importance over its outcomes (all-variables models) is highest for WOZ."""
    ws = analysed.ws
    for family, outcomes in FAMILIES.items():
        totals: dict[str, float] = {}
        for outcome in outcomes:
            imp = _released(ws, f"2023.{outcome}.all.importance.permutation")["importances"]
            for k, v in imp.items():
                if not k.endswith(".sd"):
                    totals[k] = totals.get(k, 0.0) + v / len(outcomes)
        assert max(totals, key=totals.get) == "woz_eur", (family, totals)
    for outcome in ("psychosocial_risk", "delinquency"):
        impurity = _released(ws, f"2023.{outcome}.all.importance.impurity")["importances"]
        means = {k: v for k, v in impurity.items() if not k.endswith(".sd")}
        assert max(means, key=means.get) == "woz_eur", (outcome, means)


def test_the_nonlinear_test_detects_the_planted_relation_that_the_linear_test_misses(analysed: Analysed) -> None:
    ws = analysed.ws
    assert _released(ws, "2023.association.linear_lr")["p_value"] > 0.05
    assert _released(ws, "2023.association.linear_wald")["p_value"] > 0.05
    assert _released(ws, "2023.association.nonlinearity_lr")["p_value"] < 1e-6
    assert _released(ws, "2023.association.spline_lr")["p_value"] < 1e-6
    assert _released(ws, "2023.association.mutual_information")["p_value"] < 0.01
    curve = _released(ws, "2023.association.rate_by_bin")
    rates = [row[curve["columns"].index("mean")] for row in curve["rows"]]
    # a U: both ends above the middle
    middle = min(r for r in rates if r is not None)
    assert rates[0] > middle and rates[-1] > middle


def test_released_auc_is_close_to_the_bayes_optimal_auc_of_the_ground_truth(analysed: Analysed) -> None:
    ws = analysed.ws
    joined = _truth(analysed)
    gaps = {}
    for outcome in ("psychosocial_risk", "grade_repetition", "track_up", "track_down", "delinquency"):
        pop = joined.filter(pl.col(outcome).is_not_null())
        bayes = roc_auc_score(pop[outcome].to_numpy(), pop[f"p_{outcome}"].to_numpy())
        auc = _released(ws, f"2023.{outcome}.all.metrics")["metrics"]["roc_auc"]
        gaps[outcome] = bayes - auc
        # never meaningfully above the ceiling (that would be leakage), and not far below it
        assert -0.01 <= bayes - auc <= 0.06, (outcome, auc, bayes)
    print("Bayes-optimal AUC minus released AUC at 40k persons:", {k: round(v, 4) for k, v in gaps.items()})


def test_early_school_leaving_is_refused_with_its_gated_positive_count(analysed: Analysed) -> None:
    ws, lines = analysed.ws, analysed.summary["releases"]
    (count,) = [line for line in lines if line["name"] == "2023.early_school_leaving.positives"]
    assert count["verdict"] in ("released", "suppressed")
    assert "fewer positives than the plan's minimum" in count["note"]
    values = _released(ws, "2023.early_school_leaving.positives")
    positives = [row for row in values["rows"] if row[0] is True]
    assert positives and positives[0][1] < MIN_POSITIVES
    assert not any(line["outcome"] == "early_school_leaving" and line["part"] == "metrics" for line in lines)
    modelled = {line["outcome"] for line in lines if line["part"] == "metrics"}
    assert modelled == {"psychosocial_risk", "grade_repetition", "track_up", "track_down", "delinquency"}


def test_comparison_reports_both_views_and_factor_coverage_names_the_factors_without_indicator(
    analysed: Analysed,
) -> None:
    ws = analysed.ws
    comp = _released(ws, "2023.psychosocial_risk.compare")["metrics"]
    for metric in ("roc_auc", "recall_at_k", "pr_auc", "brier"):
        assert comp[f"{metric}.ci_low"] <= comp[f"{metric}.delta"] <= comp[f"{metric}.ci_high"]
    # WOZ is outside the factor model, so all variables rank better here
    assert comp["roc_auc.ci_low"] > 0
    doc = json.loads((ws / "released" / "2023.psychosocial_risk.factors.json").read_text())
    assert "peers_and_leisure" in doc["description"] and "parental_mental_health" in doc["description"]
    assert "peers_and_leisure" not in doc["values"]["importances"]
    # the factor model's proxy for household income is released under its factor, apart from the indicators
    assert doc["spec"]["variables_of"]["household_income.proxies"] == ["woz_eur"]
    assert "woz_eur" not in doc["spec"]["variables_of"]["household_income"]
    assert doc["values"]["importances"]["household_income.proxies"] > doc["values"]["importances"]["household_income"]


def test_an_altered_plan_is_refused_before_anything_is_released(analysed: Analysed) -> None:
    ws, signed = analysed.ws, analysed.signed
    before = sorted(p.name for p in (ws / "released").iterdir())
    tampered = signed / "plan-tampered.toml"
    tampered.write_text((signed / "plan.toml").read_text().replace("seed = ", "seed = 1"))
    shutil.copy(signed / "plan.toml.sig", signed / "plan-tampered.toml.sig")
    result = analysed.runner.invoke(
        app,
        ["coordinator", "analyse", str(ws), "--plan", str(tampered), "--factors", str(signed / "factors.toml"),
         "--release-policy", str(signed / "release.toml"), "--officer-key", str(analysed.officer / "officer.pub")],
    )  # fmt: skip
    assert result.exit_code == 4, result.output
    assert sorted(p.name for p in (ws / "released").iterdir()) == before
