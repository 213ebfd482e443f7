"""Several reference years end to end from the CLI: a two-year city, every partner sealing each year (bundles
chained), ingest, link, and one ``coordinator analyse`` that analyses each year, the years pooled, and the change
between the years — every output going through the release gate, and the gate's differencing rule visible where
it bites (tables for the same outcome in consecutive years that differ by fewer than 10 persons in a cell)."""

from __future__ import annotations

import json

import polars as pl
import pytest
from analysis_workspace import PASS, Analysed, build_and_analyse, released

from kansrijk.cli import app

YEARS = (2022, 2023)
MODELLED = ("psychosocial_risk", "grade_repetition", "track_up", "track_down", "delinquency")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Analysed:
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", PASS)
    try:
        yield build_and_analyse(
            tmp_path_factory.mktemp("years"),
            persons=5000,
            years=YEARS,
            plan_edits={
                # a 5,000-person city: the shipped thresholds scaled down; a lighter plan keeps the test fast
                "min_positives": "40",
                "folds": "3",
                "max_depth": "[3, 5]",
                "min_samples_leaf": "[30]",
                "bootstrap_replicates": "100",
                "permutation_repeats": "1",
                "permutations": "199",
            },
        )
    finally:
        mp.undo()


def _lines(a: Analysed) -> dict[str, dict]:
    return {line["name"]: line for line in a.summary["releases"]}


def test_each_year_the_pooled_years_and_the_change_are_all_sent_to_the_gate(analysed: Analysed) -> None:
    lines = _lines(analysed)
    for scope in (*map(str, YEARS), "pooled"):
        for outcome in MODELLED:
            for part in ("positives", "all.metrics", "factor_model.metrics", "all.tree", "compare", "factors"):
                assert f"{scope}.{outcome}.{part}" in lines, (scope, outcome, part)
        assert f"{scope}.association.nonlinearity_lr" in lines
        assert f"{scope}.early_school_leaving.positives" in lines
    for outcome in MODELLED:
        for fs in ("all", "factor_model"):
            assert f"years.2022-2023.{outcome}.{fs}" in lines
    # every line has the gate's verdict; a file exists exactly for what was not refused; the ledger verifies
    files = {p.stem for p in (analysed.ws / "released").glob("*.json")}
    for name, line in lines.items():
        assert line["verdict"] in ("released", "suppressed", "refused")
        assert (name in files) == (line["verdict"] != "refused"), name
    result = analysed.runner.invoke(app, ["ledger", "verify", str(analysed.ws)])
    assert result.exit_code == 0, result.output


def test_pooled_models_rest_on_both_years_and_the_change_matches_the_yearly_metrics(analysed: Analysed) -> None:
    ws = analysed.ws
    sizes = {y: pl.scan_parquet(ws / "dataset" / f"{y}.parquet").select(pl.len()).collect().item() for y in YEARS}
    assert all(n > 0 for n in sizes.values())
    for outcome in MODELLED:
        per_year = {y: released(ws, f"{y}.{outcome}.all.metrics") for y in YEARS}
        pooled = released(ws, f"pooled.{outcome}.all.metrics")
        assert pooled["n"] == sum(m["n"] for m in per_year.values())
        assert pooled["n_positive"] == sum(m["n_positive"] for m in per_year.values())
        change = released(ws, f"years.2022-2023.{outcome}.all")["metrics"]
        for metric in ("roc_auc", "recall_at_k"):
            assert change[f"{metric}.2022"] == pytest.approx(per_year[2022]["metrics"][metric])
            assert change[f"{metric}.2023"] == pytest.approx(per_year[2023]["metrics"][metric])
            assert change[f"{metric}.delta"] == pytest.approx(change[f"{metric}.2023"] - change[f"{metric}.2022"])
            assert change[f"{metric}.ci_low"] <= change[f"{metric}.delta"] <= change[f"{metric}.ci_high"]
        # the pooled folds are grouped by person: the pooled tree saw persons of both years
        assert (
            "2022+2023"
            in json.loads((ws / "released" / f"pooled.{outcome}.all.metrics.json").read_text())["population"]
        )


def test_differencing_refusals_are_exactly_tables_close_to_an_earlier_years_table(analysed: Analysed) -> None:
    """The gate compares every table with every earlier table over a shared column, whatever its population
    label: a yearly count that differs from the other year's by fewer than 10 in a cell is refused (and says
    which earlier entry it was compared with). Model outputs are not tables and are never refused for this."""
    ws, lines = analysed.ws, _lines(analysed)
    refused = {name: line for name, line in lines.items() if line["verdict"] == "refused"}
    for name, line in refused.items():
        assert name.endswith((".positives", ".rate_by_bin")), (name, line["reasons"])
        assert any(r.startswith("differencing:") for r in line["reasons"]), (name, line["reasons"])
    # and conversely: every yearly count released next to another year's differs from it by 10 or more per cell
    for outcome in (*MODELLED, "early_school_leaving"):
        names = [f"{y}.{outcome}.positives" for y in YEARS]
        if all(lines[n]["verdict"] != "refused" for n in names):
            a, b = (dict((r[0], r[1]) for r in released(ws, n)["rows"]) for n in names)
            assert all(abs(a[k] - b[k]) >= 10 for k in a if a[k] is not None and b[k] is not None), (outcome, a, b)
