"""`kansrijk demo` end to end at a small size, through the CLI: report, verified ledger, no mixed runs."""

from __future__ import annotations

import json
import re
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from analysis_workspace import seeded_secret_keys
from typer.testing import CliRunner

from coordinator.report import build_report
from kansrijk.cli import app
from kansrijk.cli.demo import DP_EPSILON, PASSPHRASE_ENV, PASSPHRASE_FILE, RELEASE_POLICY, prepare_out
from kansrijk.errors import OutputExists
from kansrijk.gate.budget import budget_key
from kansrijk.gate.ledger import entries, open_existing, verify_ledger

pytestmark = pytest.mark.slow
PERSONS = 5_000
DP_OUTCOME = "psychosocial_risk"  # the shipped plan's first outcome: the demo adds its DP model


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "demo-run"
    mp = pytest.MonkeyPatch()
    mp.delenv(PASSPHRASE_ENV, raising=False)  # the demo must generate one and say so
    try:
        with seeded_secret_keys(7):  # the same pseudonyms in every run
            result = CliRunner().invoke(
                app, ["demo", "--out", str(out), "--persons", str(PERSONS), "--min-positives", "40"]
            )
    finally:
        mp.undo()
    assert result.exit_code == 0, result.output + repr(result.exception)
    return out, result.output


def test_demo_writes_the_report_and_a_verified_ledger(demo_run) -> None:
    out, output = demo_run
    report = out / "report.html"
    assert report.is_file() and report.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    verified = verify_ledger(out / "coordinator")
    assert verified.entries > 0 and verified.files_checked > 0
    assert verified.head_hash[:16] in output
    assert str(report) in output.replace("\n", "")


def test_demo_prints_the_summary_numbers(demo_run) -> None:
    _, output = demo_run
    for label in ("bundles sealed and ingested", "linked persons", "models", "ε spent / left", "refused"):
        assert label in output
    assert re.search(r"bundles sealed and ingested\s*│\s*4\b", output)
    assert re.search(r"models \(outcome × feature set\)\s*│\s*([1-9]\d*)", output)


def test_ledger_holds_the_dp_models_next_to_the_trees_with_their_epsilon(demo_run) -> None:
    out, output = demo_run
    ws = out / "coordinator"
    conn = open_existing(ws)
    try:
        ledger = entries(conn)
    finally:
        conn.close()
    dp = {e.release_name: e for e in ledger if e.kind == "dp_model"}
    names = {f"2023.{DP_OUTCOME}.{fs}.dp_model" for fs in ("all", "factor_model")}
    assert set(dp) == names
    assert all(e.outcome == "released" and e.epsilon == DP_EPSILON for e in dp.values())
    # the non-private tree of the same outcome is still there, and the plan's copy says both were asked for
    released = {e.release_name for e in ledger if e.outcome != "refused"}
    assert {f"2023.{DP_OUTCOME}.all.metrics", f"2023.{DP_OUTCOME}.all.tree", f"2023.{DP_OUTCOME}.compare"} <= released
    assert 'models = ["tree", "dp_tree"]' in (out / "policies" / "analysis" / "rotterdam-groeit.toml").read_text()
    # the summary's epsilon spent is the ledger's, DP models included, and says how much the models took
    spent = sum((e.epsilon for e in ledger), Fraction(0))
    models = 2 * DP_EPSILON
    assert verify_ledger(ws).epsilon_spent == {budget_key(ws): spent}  # one budget: the workspace's persons
    row = re.search(r"ε spent / left\s*│\s*([0-9./]+) / ([0-9./]+)", output)
    assert row is not None and Fraction(row.group(1)) == spent and Fraction(row.group(2)) == 8 - spent
    assert f"DP models {models}," in re.sub(r"[\s│]+", " ", output)


def test_report_shows_the_dp_models_and_what_privacy_cost(demo_run) -> None:
    out, _ = demo_run
    html = (out / "report.html").read_text(encoding="utf-8")
    assert 'id="dp-models"' in html and "Differentially private models" in html
    assert html.count("noisy: differential privacy, ε = 1<") >= 2  # one DP model per feature set
    models = html[html.index('id="models"') : html.index("</section>", html.index('id="models"'))]
    assert "Differentially private vs non-private" in models and "ROC AUC DP" in models


def test_the_demo_walks_the_review_route_end_to_end(demo_run) -> None:
    from kansrijk.gate.review import list_reviews, verify_reviews

    out, output = demo_run
    ws = out / "coordinator"
    (review,) = list_reviews(ws)
    assert review.status == "released" and review.release_name == "2023.psychosocial_risk.sex_tree"
    assert [v["rule"] for v in review.refused] == ["tree_training"]
    assert (out / "officer" / "reviews" / "R000001.json").is_file() and verify_reviews(ws) == 1
    document = json.loads((ws / "released" / "2023.psychosocial_risk.sex_tree.json").read_text())
    assert document["epsilon_spent"] == "0"
    assert any(v["rule"] == "officer_review" and "review R000001 approved" in v["reason"] for v in document["verdicts"])
    assert "officer_review (pass): review R000001 approved by privacy officer" in (out / "report.html").read_text()
    assert "officer review of a refused output" in output and "released as L0000" in re.sub(r"[\s│]+", " ", output)


def test_every_party_left_its_files_where_the_docs_say(demo_run) -> None:
    out, _ = demo_run
    for partner in ("cbs", "gemeente", "cjg", "duo"):
        assert len(list((out / "partners" / partner / "outbox").glob("*.kbundle"))) == 1
        assert (out / "partners" / partner / "keys" / f"{partner}-signing.key").stat().st_mode & 0o077 == 0
    for policy in ("partners.toml", str(RELEASE_POLICY), "analysis/rotterdam-groeit.toml", "sharing/cbs.toml",
                   "studies/rotterdam-groeit/study.toml"):
        assert (out / "policies" / f"{policy}.sig").is_file()
    assert (out / "README.txt").is_file()


def test_generated_passphrase_is_saved_privately_and_announced(demo_run) -> None:
    out, output = demo_run
    saved = out / PASSPHRASE_FILE
    assert saved.stat().st_mode & 0o077 == 0
    assert "generated for this demo" in output
    assert saved.read_text().strip() not in output  # said where it is, never printed


def test_report_holds_only_released_numbers_and_every_ledger_entry(demo_run, tmp_path: Path) -> None:
    """Rebuilt from a copy of released/ and the ledger entries as an operator exports them (no ledger database,
    no dataset, no keys), the report is the demo's, and it accounts for every ledger entry, refusals included."""
    out, _ = demo_run
    ws = out / "coordinator"
    released = ws / "released"
    only = tmp_path / "coordinator"
    shutil.copytree(released, only / "released")
    exported = CliRunner().invoke(app, ["ledger", "show", str(ws), "--json"])
    assert exported.exit_code == 0, exported.output
    (tmp_path / "entries.json").write_text(exported.output, encoding="utf-8")
    policy = out / "policies" / RELEASE_POLICY
    a = build_report(ws, tmp_path / "a.html", release_policy=policy, generated_at="t")
    export = tmp_path / "entries.json"
    b = build_report(only, tmp_path / "b.html", release_policy=policy, ledger=export, generated_at="t")
    html_a = a.path.read_text(encoding="utf-8").replace("workspace <code>coordinator</code>", "")
    html_b = b.path.read_text(encoding="utf-8").replace("workspace <code>coordinator</code>", "")
    assert html_a == html_b.replace("ledger export entries.json", "the workspace ledger (read-only)")
    # every gate document in the workspace is in the report, by name, and every ledger entry has its row
    for path in released.glob("*.json"):
        if path.name != "LEDGER-HEAD.json":
            assert json.loads(path.read_text())["name"] in html_b.replace("<wbr>", "")
    conn = open_existing(ws)
    try:
        ledger = entries(conn)
    finally:
        conn.close()
    for e in ledger:
        row = re.search(rf'<tr id="ledger-{e.entry_id}">(.*?)</tr>', html_b, re.S)
        assert row is not None, e.entry_id
        assert e.release_name in row.group(1).replace("<wbr>", "")
    refused = [e for e in ledger if e.outcome == "refused"]
    assert refused and b.refused == len(refused)  # the demo's refused linkage table
    refusals = html_b[html_b.index('id="refusals"') : html_b.index('id="privacy"')]
    for e in refused:
        assert f'href="#ledger-{e.entry_id}"' in refusals


def test_a_second_run_into_the_same_directory_is_refused_and_changes_nothing(demo_run) -> None:
    out, _ = demo_run
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    result = CliRunner().invoke(app, ["demo", "--out", str(out), "--persons", "200"])
    assert result.exit_code == OutputExists.exit_code
    assert "not empty" in result.output and "--force" in result.output
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_force_clears_an_old_run_before_starting(tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "coordinator" / "released").mkdir(parents=True)
    (out / "coordinator" / "released" / "old.json").write_text("{}")
    with pytest.raises(OutputExists):
        prepare_out(out, force=False)
    prepare_out(out, force=True)
    assert out.is_dir() and not any(out.iterdir())


def test_force_never_clears_a_source_checkout(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\n")
    with pytest.raises(OutputExists, match="source checkout"):
        prepare_out(tmp_path, force=True)
    assert (tmp_path / "pyproject.toml").is_file()


@pytest.mark.parametrize(
    "args",
    [["--persons", "50"], ["--years", "2023,2023"], ["--years", "abc"], ["--min-positives", "0"]],
    ids=["too-few-persons", "duplicate-years", "bad-years", "zero-min-positives"],
)
def test_bad_options_are_refused_before_anything_is_written(tmp_path: Path, args: list[str]) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["demo", "--out", str(out), *args])
    assert result.exit_code == 2, result.output
    assert not out.exists()
