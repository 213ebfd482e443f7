"""The HTML report: built only from the gate's released outputs and its ledger entries, suppressed cells shown as
such, DP marked, every refusal shown, trees drawn and written out as rules.

The fixture hands the real gate a linked dataset and sends it specs only: the gate computes every released number
itself (and refuses one request), and the tests read the numbers they expect back from the released documents."""

from __future__ import annotations

import json
import re
import shutil
from fractions import Fraction
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from gate_kit import YEAR, gate_workspace, signed_policy
from typer.testing import CliRunner

from coordinator.report import build_report, fmt_number, fmt_p, load_released
from coordinator.report.fmt import fmt_percent
from kansrijk.cli import app
from kansrijk.errors import InputError, OutputExists, PolicyError, WorkspaceError
from kansrijk.gate.ledger import entries, open_existing
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import (
    ComparisonSpec,
    CountSpec,
    DpModelSpec,
    ImportanceSpec,
    MeanSpec,
    MetricsSpec,
    RegressionSpec,
    ReleaseSpec,
    ScoreSet,
    SplitNode,
    TestSpec,
    TreeSpec,
    where,
)
from kansrijk.policy.release import load_release_policy
from kansrijk.stats.metrics import score_metrics

POLICIES = Path(__file__).resolve().parents[2] / "policies"
STAMP = " [plan sha256:" + "a" * 64 + "; factor model sha256:" + "b" * 64 + "]"
FIXED_TIME = "2025-01-01 00:00 UTC"
N = 4000
FOLDS = 5
BUURTEN = tuple(f"BU0599{i:04d}" for i in range(20))
SMALL_BUURT = BUURTEN[-1]  # holds only a handful of persons: its cell is suppressed
COHORT = (where("age_years", ">=", 0), where("age_years", "<=", 23))  # the plan's cohort, as the analysis sends it
MIN_POSITIVES = 1000  # the plan's model.min_positives
REFUSED = f"{YEAR}.small_buurt_by_sex"  # a table of 4 persons: the gate refuses it
MISNAMED = f"{YEAR}.association.by_sex"  # named like an association output, but a plain count table
TREE = f"{YEAR}.psychosocial_risk.all.tree"
WOZ_SPLIT = 130_000.0


def _frame(rng: np.random.Generator) -> pl.DataFrame:
    """4,000 persons in canonical variables, with a strong step in psychosocial_risk below a WOZ value of 130,000
    (so the spline test's p-value rounds below 0.001 and the models have something to find)."""
    woz = np.clip(rng.lognormal(12.2, 0.5, N), 20_000, 5_000_000).astype(np.int64)
    buurt = rng.choice(BUURTEN[:-1], N)
    buurt[rng.choice(N, 4, replace=False)] = SMALL_BUURT
    return pl.DataFrame(
        {
            "psychosocial_risk": (rng.random(N) < 0.12) | ((woz < 130_000) & (rng.random(N) < 0.35)),
            "early_school_leaving": rng.random(N) < 0.004,
            "woz_eur": woz,
            "sex": rng.choice(["M", "F"], N),
            "buurt_code": buurt,
            "age_years": rng.integers(0, 24, N),
        }
    )


def _binned_scores(woz: np.ndarray, y: np.ndarray, folds: np.ndarray, edges: list[float]) -> np.ndarray:
    """Out-of-fold scores of a simple model: the positive rate of the person's WOZ band among the other folds.
    Every score is shared by a whole band of a fold (far more persons than the gate's score_groups minimum)."""
    bands = np.searchsorted(np.asarray(edges, dtype=np.float64), woz, side="right")
    scores = np.empty(y.size)
    for f in np.unique(folds):
        train = folds != f
        for b in np.unique(bands):
            rate = y[train & (bands == b)].mean()
            scores[(folds == f) & (bands == b)] = round(float(rate), 6)
    return scores


def _permutation_importance(
    woz: np.ndarray, y: np.ndarray, folds: np.ndarray, edges: list[float], rng: np.random.Generator
) -> tuple[float, float]:
    """The drop in held-out ROC AUC when woz_eur is shuffled within the fold: mean and sd over folds."""
    base = _binned_scores(woz, y, folds, edges)
    shuffled = woz.copy()
    for f in np.unique(folds):
        held = np.flatnonzero(folds == f)
        shuffled[held] = rng.permutation(woz[held])
    permuted = _binned_scores(shuffled, y, folds, edges)
    drops = []
    for f in np.unique(folds):
        held = folds == f
        auc = score_metrics(y[held], base[held], 10.0)["roc_auc"]
        drops.append(auc - score_metrics(y[held], permuted[held], 10.0)["roc_auc"])
    return float(np.mean(drops)), float(np.std(drops, ddof=1))


def _scores(frame: pl.DataFrame, scores: np.ndarray, folds: np.ndarray | None = None) -> ScoreSet:
    out = frame.select("pseudonym", pl.col("year").cast(pl.Int32), pl.Series("score", scores))
    if folds is not None:
        out = out.with_columns(pl.Series("fold", folds.astype(np.int32)))
    return ScoreSet(out)


def _specs(data: pl.DataFrame, policy_path: Path, rng: np.random.Generator) -> list[ReleaseSpec]:
    """Every spec the report reads, named and described as the analysis (coordinator/analysis/run.py) does."""
    policy = load_release_policy(policy_path)
    years = (YEAR,)
    o = "psychosocial_risk"
    y = data.get_column(o).cast(pl.Int64).to_numpy()
    woz = data.get_column("woz_eur").to_numpy()
    folds = rng.permutation(N) % FOLDS
    all_edges = list(policy.grids.bands["woz_eur"])  # "all variables": every public WOZ band
    factor_edges = [150_000.0]  # "factor model": low WOZ or not
    oof_all = _binned_scores(woz, y, folds, all_edges)
    oof_factor = _binned_scores(woz, y, folds, factor_edges)
    woz_imp, woz_sd = _permutation_importance(woz, y, folds, all_edges, rng)
    model = "binned WOZ rates (out-of-fold)"
    specs: list[ReleaseSpec] = []
    for outcome in ("psychosocial_risk", "early_school_leaving"):
        positives = int(data.get_column(outcome).sum())
        reason = (
            f"outcome not modelled: fewer positives than the plan's minimum of {MIN_POSITIVES} (outcomes.{outcome}."
            f"min_positives / model.min_positives)"
            if positives < MIN_POSITIVES and outcome == "early_school_leaving"
            else f"positives at least the plan's minimum of {MIN_POSITIVES}: modelled"
        )
        specs.append(
            CountSpec(
                name=f"{YEAR}.{outcome}.positives",
                description=f"Persons with and without {outcome} in its population; {reason}.{STAMP}",
                years=years,
                population=COHORT,
                by=(outcome,),
            )
        )
    for fs, oof in (("all", oof_all), ("factor_model", oof_factor)):
        specs.append(
            MetricsSpec(
                name=f"{YEAR}.{o}.{fs}.metrics",
                description=f"Out-of-fold metrics for {o} with the {fs} feature set.{STAMP}",
                years=years,
                population=COHORT,
                outcome=o,
                scores=_scores(data, oof, folds),
                model=model,
            )
        )
    specs += [
        ComparisonSpec(
            name=f"{YEAR}.{o}.compare",
            description=f"All variables minus factor model, out-of-fold, paired bootstrap over persons.{STAMP}",
            years=years,
            population=COHORT,
            outcome=o,
            a=_scores(data, oof_all),
            b=_scores(data, oof_factor),
            labels=("all", "factor_model"),
            replicates=200,
            seed=11,
            model=model,
        ),
        ImportanceSpec(
            name=f"{YEAR}.{o}.all.importance.permutation",
            description=f"Permutation importance per canonical variable (mean over folds).{STAMP}",
            years=years,
            population=COHORT,
            outcome=o,
            # the model does not use buurt_code: shuffling it changes no score
            importances={"woz_eur": woz_imp, "woz_eur.sd": woz_sd, "buurt_code": 0.0, "buurt_code.sd": 0.0},
            model=model,
        ),
        ImportanceSpec(
            name=f"{YEAR}.{o}.factors",
            description=(
                "Factor importance: sum of the factor's indicators' permutation importances. No indicator in the "
                "model: parental_mental_health; indicators absent from the data: none." + STAMP
            ),
            years=years,
            population=COHORT,
            outcome=o,
            importances={"household_income": woz_imp, "neighbourhood": 0.0},
            variables_of={"household_income": ("woz_eur",), "neighbourhood": ("buurt_code",)},
            model=model,
        ),
        DpModelSpec(
            name=f"{YEAR}.{o}.all.dp_model",
            description=f"Differentially private model (dp_tree) for {o}.{STAMP}",
            years=years,
            population=COHORT,
            outcome=o,
            features=("woz_eur", "sex"),
            epsilon="3/4",
            max_depth=3,
            # Half the persons held out: the AUC is nan (and the report shows no DP AUC) only if every positive
            # cell of the noisy held-out histogram comes out <= 0, probability <= exp(-P / 13.3) for P held-out
            # positives (discrete Laplace scale 1 / (3/4 * 1/10)). 5 folds hold out P ~ 140 (<= 3e-5); 2 hold out
            # P ~ 350 (<= 1e-11).
            folds=2,
            seed=5,
        ),
    ]
    association = (*COHORT, where("woz_eur", "not_null"))
    for test in ("linear_wald", "linear_lr", "spline_lr", "nonlinearity_lr", "binned_lr", "mutual_information"):
        specs.append(
            TestSpec(
                name=f"{YEAR}.association.{test}",
                description=(
                    f"{test}: association of {o} with woz_eur, fitted by the gate on the persons with a known "
                    f"woz_eur. Read at alpha 0.05.{STAMP}"
                ),
                years=years,
                population=association,
                test=test,
                outcome=o,
                variable="woz_eur",
                scale=100_000.0,
                permutations=199,
                seed=3,
            )
        )
    specs += [
        RegressionSpec(
            name=f"{YEAR}.association.linear_fit",
            description=f"Logistic regression of {o} on woz_eur / 100000 alone (maximum likelihood).{STAMP}",
            years=years,
            population=association,
            outcome=o,
            variable="woz_eur",
            scale=100_000.0,
        ),
        MeanSpec(
            name=f"{YEAR}.association.rate_by_bin",
            description=f"Share of {o} per public woz_eur band, the curve that shows the shape of the relation.{STAMP}",
            years=years,
            population=association,
            value=o,
            by=("woz_eur",),
        ),
        CountSpec(
            name="persons_by_buurt",
            description="Persons per buurt <script>alert('x')</script>",
            years=years,
            by=("buurt_code",),
        ),
        TreeSpec(
            name=TREE,
            description=f"Decision tree for {o} (all features), pruned from 3 to 3 leaves.{STAMP}",
            years=years,
            population=COHORT,
            outcome=o,
            features=("woz_eur", "sex"),
            nodes=(
                SplitNode(node_id=0, var="woz_eur", threshold=WOZ_SPLIT, left=1, right=2),
                SplitNode(node_id=1),
                SplitNode(node_id=2, var="sex", categories=("M",), left=3, right=4),
                SplitNode(node_id=3),
                SplitNode(node_id=4),
            ),
            min_samples_leaf=200,
            max_depth=2,
            model="decision_tree",
        ),
        CountSpec(name=MISNAMED, description="Persons by sex.", years=years, by=("sex",)),
        CountSpec(
            name=REFUSED,
            description="Persons of one small buurt by sex.",
            years=years,
            population=(where("buurt_code", "==", SMALL_BUURT),),
            by=("sex",),
        ),
    ]
    return specs


def _policy_text() -> str:
    """The dp-models release policy with frequency tables under output checking alone: DP needs a public list of
    categories for every grouping variable, and a buurt code has none, so only output checking can release the
    table per buurt (with its small buurt suppressed). Means (the WOZ curve) and the DP model stay noisy."""
    text = (POLICIES / "release" / "dp-models.toml").read_text()
    dp_counts = '[outputs.frequency_table]\nmethod = "dp+sdc"\nepsilon = "0.1"\nrounding = 1\n'
    assert dp_counts in text
    return text.replace(dp_counts, '[outputs.frequency_table]\nmethod = "sdc"\n')


@pytest.fixture(scope="module")
def released_ws(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A workspace whose released/ was computed and written by the real gate, from the linked dataset it holds,
    under a signed DP+SDC policy with DP models."""
    root = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(5)
    ws = gate_workspace(root, _frame(rng))
    policy, officer, _ = signed_policy(root, "dp-models", text=_policy_text())
    data = pl.read_parquet(ws / "dataset" / f"{YEAR}.parquet")  # the persons' keys, to key the out-of-fold scores
    with Gate.open(ws, policy, [officer]) as gate:
        results = {spec.name: gate.release(spec, requested_by="analysis") for spec in _specs(data, policy, rng)}
    refused = {name for name, r in results.items() if r.outcome == "refused"}
    assert refused == {REFUSED}, [results[n].reasons for n in refused]
    return ws, policy


def _released(ws: Path, name: str) -> dict[str, Any]:
    return json.loads((ws / "released" / f"{name}.json").read_text())


def _report(ws: Path, tmp_path: Path, **kw) -> str:
    out = tmp_path / "report.html"
    build_report(ws, out, generated_at=FIXED_TIME, **kw)
    return out.read_text(encoding="utf-8")


def test_report_has_every_section_and_the_ledger_head(released_ws, tmp_path: Path) -> None:
    ws, policy = released_ws
    html = _report(ws, tmp_path, release_policy=policy)
    sections = (
        "findings",
        "linkage",
        "base-rates",
        "models",
        "importances",
        "trees",
        "dp-models",
        "association",
        "factors",
        "refusals",
        "privacy",
    )
    for section in sections:
        assert f'id="{section}"' in html, section
    head = json.loads((ws / "released" / "LEDGER-HEAD.json").read_text())
    assert head["entry_hash"] in html
    assert html.count("<svg") >= 4  # base rates, comparison, importances, WOZ curve


def _export_ledger(ws: Path, path: Path) -> Path:
    """The ledger entries as an operator saves them (`kansrijk ledger show WS --json`, as `gate ledger --json`)."""
    result = CliRunner().invoke(app, ["ledger", "show", str(ws), "--json"])
    assert result.exit_code == 0, result.output
    path.write_text(result.output, encoding="utf-8")
    return path


def _ledger_ids(ws: Path) -> list[str]:
    conn = open_existing(ws)
    try:
        return [e.entry_id for e in entries(conn)]
    finally:
        conn.close()


def _released_only(ws: Path, where: Path) -> Path:
    """A directory holding a copy of released/ and nothing else: no ledger, no dataset, no keys."""
    copy = where / ws.name
    shutil.copytree(ws / "released", copy / "released")
    return copy


def test_report_rebuilt_from_released_alone_shows_every_ledger_entry(released_ws, tmp_path: Path) -> None:
    ws, policy = released_ws
    full = _report(ws, tmp_path, release_policy=policy)
    export = _export_ledger(ws, tmp_path / "entries.json")
    only = _released_only(ws, tmp_path / "copy")
    (tmp_path / "again").mkdir()
    again = _report(only, tmp_path / "again", release_policy=policy, ledger=export)
    assert again == full.replace("the workspace ledger (read-only)", "ledger export entries.json")
    ids = _ledger_ids(ws)
    assert len(ids) == json.loads((ws / "released" / "LEDGER-HEAD.json").read_text())["seq"]
    ledger = _section(again, "privacy")
    for entry in ids:  # one row per entry, no gap in the numbering
        assert len(re.findall(rf'<tr id="ledger-{entry}">', ledger)) == 1, entry
    assert len(re.findall(r'<tr id="ledger-L\d+">', ledger)) == len(ids)
    # every released document is shown where the report puts it, and the refused one in the refusals
    for path in (ws / "released").glob("*.json"):
        if path.name != "LEDGER-HEAD.json":
            assert json.loads(path.read_text())["name"] in again
    assert REFUSED in _section(again, "refusals").replace("<wbr>", "")


def test_suppressed_cells_are_shown_as_suppressed_and_never_as_numbers(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    values = _released(ws, "persons_by_buurt")["values"]
    rows = [dict(zip(values["columns"], row, strict=True)) for row in values["rows"]]
    suppressed = [row for row in rows if row["status"].startswith("suppressed")]
    # the small buurt's cell (and any cell the gate withheld to protect it) carries no number
    assert SMALL_BUURT in {row["buurt_code"] for row in suppressed}
    assert all(row["n"] is None for row in suppressed)
    for row in suppressed:
        shown = re.search(rf"<tr><th scope=\"row\">{row['buurt_code']}</th>(.*?)</tr>", html)
        assert shown is not None, row["buurt_code"]
        assert 'class="suppressed"' in shown.group(1) and re.search(r">\s*≈?\s*\d", shown.group(1)) is None


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
    refused = _section(html, "refusals")
    assert "early school leaving" in refused
    assert "fewer positives than the plan&#39;s minimum of 1000" in refused


def test_budget_left_comes_from_the_release_policy(released_ws, tmp_path: Path) -> None:
    ws, policy = released_ws
    result = build_report(ws, tmp_path / "r.html", release_policy=policy)
    spent = sum(
        Fraction(json.loads(p.read_text())["epsilon_spent"])
        for p in (ws / "released").glob("*.json")
        if p.name != "LEDGER-HEAD.json"
    )
    dp_model = Fraction(_released(ws, "2023.psychosocial_risk.all.dp_model")["epsilon_spent"])
    assert dp_model == Fraction(3, 4)
    assert result.budget.spent == spent > dp_model  # the DP model's epsilon is part of it, and the noisy curve's
    dp = load_release_policy(policy).dp
    assert dp is not None and result.budget.total == dp.epsilon_total
    assert result.budget.left == dp.epsilon_total - spent
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
    auc = _released(ws, "2023.psychosocial_risk.all.dp_model")["values"]["metrics"]["roc_auc"]
    tree_auc = _released(ws, "2023.psychosocial_risk.all.metrics")["values"]["metrics"]["roc_auc"]
    row = re.search(
        r"<tr><th scope=\"row\">psychosocial risk</th><td>all variables</td><td class=\"num\">0.75</td>(.*?)</tr>",
        models,
    )
    assert row is not None, "no DP-vs-tree row"
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))
    assert cells[0] == fmt_number(tree_auc)  # the non-private model's ROC AUC, exact, as the gate computed it
    assert (
        cells[1] == f"≈ {fmt_number(auc)}" and cells[2] == f"≈ {fmt_number(auc - tree_auc)}"
    )  # the DP model's, and what privacy cost


def test_p_values_that_round_to_zero_read_below_a_thousandth(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    woz = _section(_report(ws, tmp_path), "association")
    spline = _released(ws, "2023.association.spline_lr")["values"]
    assert spline["p_value"] < 0.0005 and spline["test"] == "spline_lr (chi2, df=5)"  # the planted WOZ step
    statistic = re.escape(fmt_number(spline["statistic"]))
    assert re.search(rf"<td>chi2, df=5</td><td class=\"num\">{statistic}</td><td class=\"num\">&lt; 0.001</td>", woz)
    for test in ("linear_wald", "linear_lr", "nonlinearity_lr", "binned_lr", "mutual_information"):
        released = _released(ws, f"2023.association.{test}")["values"]
        cells = (fmt_number(released["statistic"]), fmt_p(released["p_value"]), fmt_number(released["n"]))
        assert "".join(f'<td class="num">{escape(c)}</td>' for c in cells) in woz, test
    assert [fmt_p(x) for x in (0.0, 0.0004, 0.0006, 0.43, None)] == ["< 0.001", "< 0.001", "0.001", "0.430", "–"]


# --- refusals: every ledger entry is accounted for --------------------------------------------------------------
def _row(html: str, entry: str) -> str:
    found = re.search(rf'<tr id="ledger-{entry}">(.*?)</tr>', html, re.S)
    assert found is not None, entry
    return found.group(1).replace("<wbr>", "")


def _entry_of(ws: Path, name: str) -> str:
    conn = open_existing(ws)
    try:
        return next(e.entry_id for e in entries(conn) if e.release_name == name)
    finally:
        conn.close()


def test_a_refused_release_is_shown_with_its_rule_and_entry(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    entry = _entry_of(ws, REFUSED)
    refusals = _section(html, "refusals").replace("<wbr>", "")
    shown = re.search(rf'<a href="#ledger-{entry}">{entry}</a></th><td title="{REFUSED}">{REFUSED}</td>(.*?)</tr>',
                      refusals)  # fmt: skip
    assert shown is not None, "the refused release is not in the refusals table"
    assert "max_suppressed_share (refuse)" in shown.group(1)
    assert "refused" in _row(html, entry) and "max_suppressed_share (refuse)" in _row(html, entry)
    # the tile counts it and links to it
    assert re.search(r'<dt>refused by the gate</dt><dd><a href="#refusals-refused">1</a></dd>', html)
    assert not (ws / "released" / f"{REFUSED}.json").exists()  # only the ledger knows it


def test_refusal_details_stay_in_the_ledger(released_ws, tmp_path: Path) -> None:
    """A refusal's reason is shown up to its first ": " (the rule's general statement); what follows names the
    nodes, cells or counts the gate would not release."""
    ws, _ = released_ws
    export = _export_ledger(ws, tmp_path / "entries.json")
    docs = [json.loads(x) for x in export.read_text().splitlines() if x.strip()]  # JSON Lines
    refused = next(d for d in docs if d["release"] == REFUSED)
    refused["verdicts"].append(
        {"rule": "differencing", "verdict": "refuse", "reason": "isolates fewer than 10 persons: node 77 (detail-x)"}
    )
    export.write_text("\n".join(json.dumps(d) for d in docs))
    html = _report(_released_only(ws, tmp_path / "copy"), tmp_path, ledger=export)
    row = _row(html, refused["entry"])
    assert "differencing (refuse): isolates fewer than 10 persons" in row
    assert "node 77" not in html and "detail-x" not in html


def test_without_ledger_entries_every_number_is_still_accounted_for(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(_released_only(ws, tmp_path / "copy"), tmp_path)
    entry = _entry_of(ws, REFUSED)
    for e in _ledger_ids(ws):
        assert f'<tr id="ledger-{e}">' in html, e
    assert "no document" in _row(html, entry)
    unexplained = _section(html, "refusals")
    assert "Ledger entries without a document (1)" in unexplained and entry in unexplained
    assert "--gate-socket" in unexplained and "--ledger" in unexplained
    assert re.search(r'<dt>refused by the gate</dt><dd><a href="#refusals-unexplained">1 unexplained</a>', html)


def test_a_stale_or_foreign_ledger_export_is_refused(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    only = _released_only(ws, tmp_path / "copy")
    export = _export_ledger(ws, tmp_path / "entries.json")
    docs = [json.loads(x) for x in export.read_text().splitlines() if x.strip()]  # JSON Lines
    assert len(docs) == len(_ledger_ids(ws))
    stale = tmp_path / "stale.json"
    stale.write_text("\n".join(json.dumps(d) for d in docs[:-1]))  # an export from before the last release
    with pytest.raises(InputError, match="released/ was published up to entry"):
        build_report(only, tmp_path / "a.html", ledger=stale)
    released = next(d for d in docs if d["outputs"])
    released["outputs"] = {name: "sha256:" + "0" * 64 for name in released["outputs"]}
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(docs))  # a JSON list is read as well
    with pytest.raises(InputError, match="is not the file ledger entry"):
        build_report(only, tmp_path / "b.html", ledger=foreign)
    broken = tmp_path / "broken.json"
    broken.write_text('{"entry": "L000001"')
    with pytest.raises(InputError, match="not a ledger export"):
        build_report(only, tmp_path / "c.html", ledger=broken)


# --- trees, findings, sections named from the numbers -----------------------------------------------------------
def _leaf_counts(ws: Path) -> dict[int, tuple[int, int]]:
    return {n["node_id"]: tuple(n["class_counts"]) for n in _released(ws, TREE)["values"]["nodes"]}


def test_every_released_tree_is_drawn_and_written_as_rules(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    trees = _section(_report(ws, tmp_path), "trees")
    counts = _leaf_counts(ws)
    assert trees.count('<svg xmlns="http://www.w3.org/2000/svg" class="tree-diagram"') == 1
    assert trees.count('<g class="node leaf"') == 3 and trees.count('<g class="node split"') == 2
    expected = {
        1: "WOZ value at most €130,000",  # a missing WOZ value goes right (missing_left is false)
        3: "WOZ value above €130,000 (or unknown) and sex is M",
        4: "WOZ value above €130,000 (or unknown) and sex is F (or unknown)",
    }
    for node, rule in expected.items():
        neg, pos = counts[node]
        persons, share = fmt_number(neg + pos), fmt_percent(pos / (neg + pos))
        cells = rf'<tr><th scope="row">{re.escape(rule)}</th><td class="num">{persons}</td><td class="num">{share}</td>'
        assert re.search(cells, trees), rule
        assert f"{share}</text>" in trees and f"{persons} persons</text>" in trees  # the leaf in the diagram
    root = counts[0]
    assert f"It splits {fmt_number(sum(root))} persons, of whom {fmt_percent(root[1] / sum(root))}" in trees


def _edit(path: Path, change) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_withheld_tree_counts_are_drawn_as_withheld(released_ws, tmp_path: Path) -> None:
    """A gate that withholds some leaves' counts (a tree rule) releases them as null: drawn as withheld, never
    guessed, and the report still builds."""
    ws, _ = released_ws
    only = _released_only(ws, tmp_path / "copy")

    def withhold(doc: dict[str, Any]) -> None:
        for node in doc["values"]["nodes"]:
            if node["node_id"] in (2, 3, 4):
                node["class_counts"] = None

    _edit(only / "released" / f"{TREE}.json", withhold)
    trees = _section(_report(only, tmp_path), "trees")
    counts = _leaf_counts(ws)
    assert trees.count('<td class="suppressed" title="counts withheld by a tree rule">withheld</td>') == 4
    assert trees.count(">withheld</text>") == 2 and "counts withheld</text>" in trees
    assert f"{fmt_number(sum(counts[1]))} persons</text>" in trees  # the leaf that kept its counts
    assert "The gate withheld some counts" in trees


def test_findings_change_when_the_released_numbers_change(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    only = _released_only(ws, tmp_path / "copy")
    before = _section(_report(only, tmp_path), "findings")
    compare = f"{YEAR}.psychosocial_risk.compare"

    def widen(doc: dict[str, Any]) -> None:  # the difference in ROC AUC: now clearly positive
        m = doc["values"]["metrics"]
        m["roc_auc.all"], m["roc_auc.factor_model"] = 0.81, 0.70
        m["roc_auc.delta"], m["roc_auc.ci_low"], m["roc_auc.ci_high"] = 0.11, 0.09, 0.13

    def noisy(doc: dict[str, Any]) -> None:  # WOZ value's spread over the folds: now larger than the importance
        doc["values"]["importances"]["woz_eur.sd"] = 1.0

    _edit(only / "released" / f"{compare}.json", widen)
    _edit(only / "released" / f"{YEAR}.psychosocial_risk.all.importance.permutation.json", noisy)
    (tmp_path / "b").mkdir()
    after = _section(_report(only, tmp_path / "b"), "findings")
    assert before != after
    assert "The all-variables tree ranks better than the factor-model tree: ROC AUC 0.810 against 0.700" in after
    assert "95% interval 0.090 to 0.130" in after
    assert "WOZ value matters most" in before and "WOZ value matters most" not in after
    assert "The importance of WOZ value is inside its noise" in after


def test_the_association_section_is_named_after_the_tested_variable(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    assert '<h2 id="association-title">WOZ value and psychosocial risk</h2>' in html
    only = _released_only(ws, tmp_path / "copy")
    for path in (only / "released").glob(f"{YEAR}.association.*.json"):

        def to_bmi(doc: dict[str, Any]) -> None:
            if doc["spec"].get("variable") == "woz_eur":
                doc["spec"]["variable"] = "bmi"
            if doc["spec"].get("by") == ["woz_eur"]:
                doc["spec"]["by"] = ["bmi"]
                doc["values"]["columns"] = ["bmi" if c == "woz_eur" else c for c in doc["values"]["columns"]]

        _edit(path, to_bmi)
    (tmp_path / "b").mkdir()
    other = _report(only, tmp_path / "b")
    assert '<h2 id="association-title">BMI and psychosocial risk</h2>' in other
    intro = re.search(r'<p class="intro">(.*?)</p>', _section(other, "association"), re.S)
    assert intro is not None and "BMI" in intro.group(1) and "WOZ" not in intro.group(1)


def test_an_output_is_placed_by_its_kind_and_spec_not_its_name(released_ws, tmp_path: Path) -> None:
    ws, _ = released_ws
    html = _report(ws, tmp_path)
    assert MISNAMED not in _section(html, "association").replace("<wbr>", "")
    assert MISNAMED in _section(html, "other").replace("<wbr>", "")

