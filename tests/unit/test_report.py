"""The HTML report: built only from the gate's released outputs, suppressed cells shown as such, DP marked."""

from __future__ import annotations

import json
import re
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import gate_workspace, signed_policy
from typer.testing import CliRunner

from coordinator.report import build_report, fmt_number, fmt_p, load_released
from kansrijk.cli import app
from kansrijk.errors import InputError, OutputExists, PolicyError, WorkspaceError
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import (
    ComparisonSpec,
    CountSpec,
    DpModelSpec,
    ImportanceSpec,
    MeanSpec,
    MetricsSpec,
    RegressionSpec,
    ScoreSet,
    TestSpec,
)
from kansrijk.schema import TRACKS

POLICIES = Path(__file__).resolve().parents[2] / "policies"
STAMP = " [plan sha256:" + "a" * 64 + "; factor model sha256:" + "b" * 64 + "]"
FIXED_TIME = "2025-01-01 00:00 UTC"
YEAR = 2023


def _frame(rng: np.random.Generator, n: int = 4000) -> pl.DataFrame:
    """The linked dataset the gate computes the report's releases from (no one in the MBO-4 track)."""
    frame = pl.DataFrame(
        {
            "psychosocial_risk": rng.random(n) < 0.12,
            "early_school_leaving": rng.random(n) < 0.004,
            "buurt_code": rng.choice([f"BU0599{i:04d}" for i in range(20)], n),
            "woz_eur": rng.lognormal(12.2, 0.5, n).astype(np.int64),
            "sex": rng.choice(["M", "F"], n),
            "track": rng.choice([t for t in TRACKS if t != "MBO-4"], n),
        }
    )
    return frame.with_columns(  # a real signal, so the models and tests have something to find
        psychosocial_risk=pl.col("psychosocial_risk") | ((pl.col("woz_eur") < 130_000) & (rng.random(n) < 0.3))
    )


def _scores(ws: Path, model: str) -> ScoreSet:
    """Coarse out-of-fold scores (each value held by many persons) of two stand-in models, with folds."""
    frame = pl.read_parquet(ws / "dataset" / f"{YEAR}.parquet")
    if model == "all":
        score = pl.when(pl.col("woz_eur") < 130_000).then(0.3).when(pl.col("woz_eur") < 250_000).then(0.12)
        score = score.otherwise(0.08)
    else:
        score = pl.when(pl.col("sex") == "M").then(0.14).otherwise(0.12)
    return ScoreSet(
        frame.select(
            "pseudonym", "year", score.alias("score"), (pl.int_range(pl.len()) % 5).cast(pl.Int64).alias("fold")
        )
    )


def _specs(ws: Path) -> list:
    common = {"years": (YEAR,)}
    risk = {**common, "outcome": "psychosocial_risk"}
    association = {**risk, "variable": "woz_eur", "scale": 100_000.0}
    return [
        CountSpec(
            name="2023.psychosocial_risk.positives",
            description="Persons with and without psychosocial_risk; positives at least the plan's minimum." + STAMP,
            by=("psychosocial_risk",),
            **common,
        ),
        CountSpec(
            name="2023.early_school_leaving.positives",
            description=(
                "Persons with and without early_school_leaving in its population; outcome not modelled: fewer "
                "positives than the plan's minimum of 1000 (outcomes.early_school_leaving.min_positives)." + STAMP
            ),
            by=("early_school_leaving",),
            **common,
        ),
        MetricsSpec(name="2023.psychosocial_risk.all.metrics", scores=_scores(ws, "all"), **risk),
        MetricsSpec(name="2023.psychosocial_risk.factor_model.metrics", scores=_scores(ws, "factor_model"), **risk),
        ComparisonSpec(
            name="2023.psychosocial_risk.compare",
            a=_scores(ws, "all"),
            b=_scores(ws, "factor_model"),
            labels=("all", "factor_model"),
            replicates=200,
            **risk,
        ),
        ImportanceSpec(
            name="2023.psychosocial_risk.all.importance.permutation",
            importances={"woz_eur": 0.061, "woz_eur.sd": 0.01, "buurt_code": 0.004, "buurt_code.sd": 0.002},
            **risk,
        ),
        ImportanceSpec(
            name="2023.psychosocial_risk.factors",
            description=(
                "Factor importance. No indicator in the model: parental_mental_health; indicators absent from "
                "the data: none." + STAMP
            ),
            importances={"household_income": 0.01, "neighbourhood": 0.004},
            variables_of={"household_income": ("woz_eur",), "neighbourhood": ("buurt_code",)},
            **risk,
        ),
        DpModelSpec(
            name="2023.psychosocial_risk.all.dp_model",
            description="Differentially private model (dp_tree) for psychosocial_risk." + STAMP,
            features=("woz_eur", "sex"),
            epsilon="3/4",
            max_depth=3,
            # Half the persons held out: the AUC is nan (and the report shows no DP AUC) only if every positive
            # cell of the noisy held-out histogram comes out <= 0, probability <= exp(-P / 13.3) for P held-out
            # positives (discrete Laplace scale 1 / (3/4 * 1/10)). 5 folds hold out P = 147 (<= 2e-5); 2 hold out
            # P = 368 (<= 1e-12).
            folds=2,
            **risk,
        ),
        TestSpec(
            name="2023.association.spline_lr",
            description="spline_lr: association of psychosocial_risk with woz_eur." + STAMP,
            test="spline_lr",
            **association,
        ),
        TestSpec(
            name="2023.association.linear_lr",
            description="linear_lr: association of psychosocial_risk with woz_eur." + STAMP,
            test="linear_lr",
            **association,
        ),
        RegressionSpec(name="2023.association.linear_fit", **association),
        MeanSpec(
            name="2023.association.rate_by_bin",
            description="Share of psychosocial_risk per public woz_eur band." + STAMP,
            value="psychosocial_risk",
            by=("woz_eur",),
            **common,
        ),
        CountSpec(
            name="persons_by_track",
            description="Persons per school track <script>alert('x')</script>",
            by=("track",),  # nobody is in MBO-4: suppressed
            **common,
        ),
    ]


@pytest.fixture(scope="module")
def released_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace whose released/ was written by the real gate under a signed DP+SDC policy with DP models."""
    root = tmp_path_factory.mktemp("report")
    policy, officer, _ = signed_policy(root, "dp-models")
    ws = gate_workspace(root, _frame(np.random.default_rng(5)))
    with Gate.open(ws, policy, [officer]) as gate:
        results = [gate.release(spec, requested_by="analysis") for spec in _specs(ws)]
    assert all(r.outcome != "refused" for r in results), [r.reasons for r in results if r.outcome == "refused"]
    return ws, policy


def _report(ws: Path, tmp_path: Path, **kw) -> str:
    out = tmp_path / "report.html"
    build_report(ws, out, generated_at=FIXED_TIME, **kw)
    return out.read_text(encoding="utf-8")


def test_report_has_every_section_and_the_ledger_head(released_ws, tmp_path: Path) -> None:
    ws, policy = released_ws
    html = _report(ws, tmp_path, release_policy=policy)
    sections = ("linkage", "base-rates", "models", "importances", "dp-models", "woz", "factors", "refused", "privacy")
    for section in sections:
        assert f'id="{section}"' in html, section
    head = json.loads((ws / "released" / "LEDGER-HEAD.json").read_text())
    assert head["entry_hash"] in html
    assert html.count("<svg") >= 4  # base rates, comparison, importances, WOZ curve


def test_report_is_built_from_released_outputs_alone(released_ws, tmp_path: Path) -> None:
    ws, policy = released_ws
    full = _report(ws, tmp_path, release_policy=policy)
    only_released = tmp_path / "copy" / ws.name
    shutil.copytree(ws / "released", only_released / "released")  # no ledger, no dataset, nothing else
    (tmp_path / "again").mkdir()
    assert _report(only_released, tmp_path / "again", release_policy=policy) == full


def test_suppressed_cells_are_shown_as_suppressed_and_never_as_numbers(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    doc = json.loads((ws / "released" / "persons_by_track.json").read_text())
    suppressed = [row for row in doc["values"]["rows"] if row[-1].startswith("suppressed")]
    assert suppressed and all(row[1] is None for row in suppressed)
    row = re.search(r"<tr><th scope=\"row\">MBO-4</th>(.*?)</tr>", html)
    assert row is not None
    assert 'class="suppressed"' in row.group(1) and re.search(r">\s*≈?\s*\d", row.group(1)) is None


def test_noisy_numbers_are_marked_and_exact_ones_are_not(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    assert 'class="noisy num"' in html and "≈ " in html
    assert "noisy: differential privacy" in html
    metrics_row = re.search(r"<th scope=\"row\">psychosocial risk</th><td>all variables</td>(.*?)</tr>", html)
    assert metrics_row is not None and "≈" not in metrics_row.group(1)


def test_text_from_releases_is_escaped(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    assert "<script" not in html
    assert "&lt;script&gt;" in html


def test_report_needs_no_network(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    assert re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html) is None
    assert "@import" not in html and "url(" not in html


def test_refused_outcome_is_listed_with_its_reason(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    refused = html[html.index('id="refused"') : html.index('id="privacy"')]
    assert "early school leaving" in refused
    assert "outcome not modelled: fewer positives than the plan&#39;s minimum of 1000" in refused


def test_budget_left_comes_from_the_release_policy(released_ws, tmp_path: Path) -> None:
    ws, policy = released_ws
    result = build_report(ws, tmp_path / "r.html", release_policy=policy)
    spent = sum(
        Fraction(json.loads(p.read_text())["epsilon_spent"])
        for p in (ws / "released").glob("*.json")
        if p.name != "LEDGER-HEAD.json"
    )
    assert result.budget.spent == spent > Fraction(3, 4)  # the DP model's epsilon is part of it
    assert result.budget.left == 8 - spent
    no_policy = build_report(ws, tmp_path / "r2.html")
    assert no_policy.budget.left is None


def test_a_policy_the_gate_did_not_run_under_is_refused(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    with pytest.raises(PolicyError, match="not the release policy the gate ran under"):
        build_report(ws, tmp_path / "r.html", release_policy=POLICIES / "release" / "sdc-only.toml")


def test_a_file_the_gate_did_not_write_is_refused(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    copy = tmp_path / "ws"
    shutil.copytree(ws / "released", copy / "released")
    (copy / "released" / "extra.json").write_text('{"rows": [[1, 2]]}')
    with pytest.raises(InputError, match="not a release document written by the gate"):
        build_report(copy, tmp_path / "r.html")


def test_a_workspace_without_releases_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="no released outputs"):
        build_report(tmp_path, tmp_path / "r.html")


def test_the_report_is_never_written_into_released(released_ws) -> None:
    ws, _ = released_ws
    with pytest.raises(InputError, match="only the gate writes there"):
        build_report(ws, ws / "released" / "report.html")
    assert not (ws / "released" / "report.html").exists()


def test_an_existing_report_is_kept_unless_forced(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    out = tmp_path / "r.html"
    out.write_text("keep")
    with pytest.raises(OutputExists):
        build_report(ws, out)
    assert out.read_text() == "keep"
    build_report(ws, out, force=True)
    assert out.read_text().startswith("<!DOCTYPE html>")


def test_load_released_orders_by_ledger_entry(released_ws) -> None:
    ws, _ = released_ws
    outputs, head = load_released(ws)
    entries = [r.ledger_entry for r in outputs]
    assert entries == sorted(entries) and head.seq >= len(outputs)


def test_report_command_writes_the_file(released_ws, tmp_path: Path) -> None:
    ws, policy = released_ws
    out = tmp_path / "cli.html"
    result = CliRunner().invoke(app, ["coordinator", "report", str(ws), "--out", str(out), "--policy", str(policy)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "report written" in result.output
    again = CliRunner().invoke(app, ["coordinator", "report", str(ws), "--out", str(out)])
    assert again.exit_code == OutputExists.exit_code


def _section(html: str, section: str) -> str:
    start = html.index(f'id="{section}"')
    return html[start : html.index("</section>", start)]


def test_dp_model_is_shown_with_noisy_metrics_and_its_epsilon(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    doc = json.loads((ws / "released" / "2023.psychosocial_risk.all.dp_model.json").read_text())
    auc = doc["values"]["metrics"]["roc_auc"]
    dp = _section(html, "dp-models")
    assert "noisy: differential privacy, ε = 0.75" in dp
    assert f'<td class="noisy num" title="differentially private (noisy) value">≈ {fmt_number(auc)}</td>' in dp
    assert "whether any one person is in the data or not" in dp  # the one-sentence guarantee
    assert "WOZ value" in dp and "splits.level0" in dp  # importances from the model, and the epsilon per step
    assert dp.count("<svg") == 1  # the importance plot
    # it is not left to the generic key/value view of "Other released outputs"
    assert 'id="other"' not in html or "dp_model" not in _section(html, "other")


def test_model_comparison_puts_the_dp_auc_next_to_the_trees(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    models = _section(html, "models")
    doc = json.loads((ws / "released" / "2023.psychosocial_risk.all.dp_model.json").read_text())
    auc = doc["values"]["metrics"]["roc_auc"]
    tree = json.loads((ws / "released" / "2023.psychosocial_risk.all.metrics.json").read_text())
    tree_auc = tree["values"]["metrics"]["roc_auc"]
    assert tree["noisy"] is False and 0.5 < tree_auc < 1
    row = re.search(
        r"<tr><th scope=\"row\">psychosocial risk</th><td>all variables</td><td class=\"num\">0.75</td>(.*?)</tr>",
        models,
    )
    assert row is not None, "no DP-vs-tree row"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[0] == fmt_number(tree_auc)  # the non-private tree's ROC AUC, exact
    assert (
        cells[1] == f"≈ {fmt_number(auc)}" and cells[2] == f"≈ {fmt_number(auc - tree_auc)}"
    )  # the DP model's, and what privacy cost


def test_p_values_that_round_to_zero_read_below_a_thousandth(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    woz = _section(_report(ws, tmp_path), "woz")
    for test in ("spline_lr", "linear_lr"):
        values = json.loads((ws / "released" / f"2023.association.{test}.json").read_text())["values"]
        df = re.fullmatch(r".*\((chi2, df=\d+)\)", values["test"])
        assert df is not None and values["p_value"] < 0.0005  # the WOZ signal is strong: p rounds to 0
        cells = f'<td>{df.group(1)}</td><td class="num">{fmt_number(values["statistic"])}</td>'
        assert cells + '<td class="num">&lt; 0.001</td>' in woz, test
    assert [fmt_p(x) for x in (0.0, 0.0004, 0.0006, 0.43, None)] == ["< 0.001", "< 0.001", "0.001", "0.430", "–"]
