"""Several reference years end to end from the CLI: a two-year city, every partner sealing each year (bundles
chained), ingest, link, and one ``coordinator analyse`` that analyses each year, the years pooled, and the change
between the years — every output going through the release gate, whose differencing rule compares the
populations (yearly cohorts, their union) before comparing counts."""

from __future__ import annotations

import json
import sqlite3

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
    """Every output names its population (the persons' pseudonyms) to the gate, which compares populations
    before counts: yearly outputs over different cohorts each hold far more than 10 persons the other lacks, and
    the pooled years hold every person of a year plus a whole other year, so no output of this run is refused
    for differencing, though yearly counts close by chance were refused before — except a tree whose node nearly
    repeats a node of an earlier tree. Model outputs are compared too: their person counts are recorded with
    their population (stored once per distinct population)."""
    ws, lines = analysed.ws, _lines(analysed)
    refused = {n: line["reasons"] for n, line in lines.items() if line["verdict"] == "refused"}
    differenced = {n: [x for x in r if x.startswith("differencing")] for n, r in refused.items()}
    differenced = {n: r for n, r in differenced.items() if r}
    # the only outputs refused for differencing are trees one of whose nodes nearly repeats a node of an earlier
    # tree (each node is a population whose class counts are released): no table, metric or comparison
    assert all(n.endswith(".tree") and all("node" in x for x in r) for n, r in differenced.items()), differenced
    with sqlite3.connect(ws / "ledger.sqlite") as conn:
        records = {
            name: (dims, digest)
            for name, dims, digest in conn.execute(
                "SELECT l.release_name, r.dims, r.population_digest FROM table_records r JOIN ledger l USING (seq)"
            )
        }
        populations = conn.execute("SELECT COUNT(*) FROM populations").fetchone()[0]
    for outcome in MODELLED:
        digests = {}
        for scope in (*map(str, YEARS), "pooled"):
            for part in ("all.metrics", "factor_model.metrics", "compare", "all.tree"):
                if f"{scope}.{outcome}.{part}" not in refused:  # a tree may be refused by the tree rules
                    dims, digest = records[f"{scope}.{outcome}.{part}"]
                    # the (negative, positive) split over the outcome's column, as in the positives table
                    assert dims == f'["{outcome}"]' and digest is not None, (scope, outcome, part)
            assert records[f"{scope}.{outcome}.factors"][0] == "[]"
            # the models, the tree and the positives table of one scope describe one population
            parts = [p for p in ("positives", "all.metrics", "all.tree") if f"{scope}.{outcome}.{p}" not in refused]
            scope_digests = {records[f"{scope}.{outcome}.{p}"][1] for p in parts}
            assert len(scope_digests) == 1, (scope, outcome)
            digests[scope] = scope_digests.pop()
        assert len(set(digests.values())) == 3, outcome  # each year and the pooled years differ
        # the change between the years describes the persons of both years: the pooled population
        assert records[f"years.2022-2023.{outcome}.all"][1] == digests["pooled"]
    assert populations < len(records)
