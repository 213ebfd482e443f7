"""A coordinator operator following docs/coordinator-operator.md: a year only one partner delivered is reported as
such by `link` and by `analyse`, `link` and `status` count the same persons, noisy numbers carry ≈, `analyse`
runs the same from any working directory, and the example registry matches the example sharing policies."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from analysis_workspace import LIGHT_PLAN, PARTNERS, POLICIES, edit_plan, key_ceremony_and_workspace, ok
from typer.testing import CliRunner

from kansrijk.cli import app
from kansrijk.policy.registry import load_registry
from kansrijk.synth.city import generate_city

PASS = "coordinator operator passphrase"


@pytest.fixture(scope="module")
def lopsided(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """2023 from all four partners, 2024 from CBS alone; linked with --json; three signed policies."""
    tmp = tmp_path_factory.mktemp("lopsided")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KANSRIJK_PASSPHRASE", PASS)
        mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
        runner = CliRunner()
        city = generate_city(tmp / "city", persons=3_000, seed=11, years=(2023, 2024))
        keys, ws = key_ceremony_and_workspace(runner, tmp)
        bundles: list[str] = []
        for year, partners in ((2023, PARTNERS), (2024, ("cbs",))):
            for p in partners:
                outbox = tmp / "outbox" / p / str(year)
                previous = ["--previous", bundles[PARTNERS.index(p)]] if year == 2024 else []
                ok(runner, "node", "prepare", *previous, "--policy", str(POLICIES / "sharing" / f"{p}.toml"),
                   "--input", str(city.extracts[(p, year)]), "--out", str(outbox), "--signing-key",
                   str(keys / f"{p}-signing.key"), "--link-key", str(keys / "link.key"), "--coordinator-key",
                   str(ws / "keys" / "coordinator-hpke.pub"))  # fmt: skip
                (sealed,) = outbox.glob("*.kbundle")
                bundles.append(str(sealed))
        ok(runner, "coordinator", "ingest", str(ws), *bundles)
        linked = runner.invoke(app, ["coordinator", "link", str(ws)])
        linked_json = runner.invoke(app, ["coordinator", "link", str(ws), "--json"])
        status = runner.invoke(app, ["coordinator", "status", str(ws), "--json"])
        officer, signed = tmp / "officer", tmp / "signed"
        ok(runner, "policy", "keygen", "--out", str(officer))
        signed.mkdir()
        plan = edit_plan((POLICIES / "analysis" / "rotterdam-groeit.toml").read_text(), LIGHT_PLAN)
        (signed / "plan.toml").write_text(plan)
        shutil.copy(POLICIES / "factors" / "factor-model.toml", signed / "factors.toml")
        shutil.copy(POLICIES / "release" / "dp-sdc.toml", signed / "release.toml")
        for name in ("plan.toml", "factors.toml", "release.toml"):
            ok(runner, "policy", "sign", str(signed / name), "--key", str(officer / "officer.key"))
        elsewhere = tmp / "elsewhere"
        elsewhere.mkdir()
        mp.chdir(elsewhere)  # outside the repository: no policies/ under the working directory
        no_release = runner.invoke(app, ["coordinator", "analyse", str(ws), "--plan", str(signed / "plan.toml"),
                                         "--factors", str(signed / "factors.toml")])  # fmt: skip
        # the first run releases; a second one (as text) is refused name by name, and still says what it skipped
        analysed_json = runner.invoke(app, ["coordinator", "analyse", str(ws), "--plan", str(signed / "plan.toml"),
                                            "--factors", str(signed / "factors.toml"), "--release-policy",
                                            str(signed / "release.toml"), "--officer-key",
                                            str(officer / "officer.pub"), "--json"])  # fmt: skip
        analysed = runner.invoke(app, ["coordinator", "analyse", str(ws), "--plan", str(signed / "plan.toml"),
                                       "--factors", str(signed / "factors.toml"), "--release-policy",
                                       str(signed / "release.toml"), "--officer-key",
                                       str(officer / "officer.pub")])  # fmt: skip
    return {"ws": ws, "linked": linked, "linked_json": linked_json, "status": status, "no_release": no_release,
            "analysed": analysed, "analysed_json": analysed_json}  # fmt: skip


def test_link_says_when_only_one_partner_delivered_a_year(lopsided) -> None:
    linked = lopsided["linked"]
    assert linked.exit_code == 0, linked.output
    assert "only cbs delivered 2024 (none from gemeente, cjg, duo): nobody was linked across partners" in linked.stdout
    assert "warning:" in linked.stderr and "2024: only cbs delivered this year" in linked.stderr
    years = {y["year"]: y for y in json.loads(lopsided["linked_json"].stdout)["years"]}
    assert years[2024]["persons_across_partners"] == 0 and years[2024]["partners_missing"] == ["gemeente", "cjg", "duo"]
    assert years[2023]["persons_across_partners"] > 0 and years[2023]["partners_missing"] == []


def test_link_and_status_count_the_same_persons(lopsided) -> None:
    status = json.loads(lopsided["status"].stdout)
    runs = {r["year"]: r["persons"] for r in status["link_runs"]}  # the last run of each year wins
    for year in json.loads(lopsided["linked_json"].stdout)["years"]:
        assert runs[year["year"]] == year["persons_in_dataset"]
        shown = re.search(rf"linkage {year['year']}: (\d+) persons in the dataset", lopsided["linked"].stdout)
        assert shown is not None and int(shown.group(1)) == year["persons_in_dataset"]


def test_analyse_needs_its_policies_named_and_runs_from_any_directory(lopsided) -> None:
    refused = lopsided["no_release"]
    assert refused.exit_code == 2 and "--release-policy is required" in refused.stderr
    assert lopsided["analysed"].exit_code == 0, lopsided["analysed"].output


def test_analyse_says_which_year_it_skipped_and_why(lopsided) -> None:
    summary = json.loads(lopsided["analysed_json"].stdout)
    skipped = [r for r in summary["releases"] if r["verdict"] == "skipped"]
    assert [r["scope"] for r in skipped] == ["2024", "pooled"] and summary["verdicts"]["skipped"] == 2
    (reason,) = skipped[0]["reasons"]
    assert reason.startswith("not analysed for 2024: psychosocial_risk") and "delivered: cbs" in reason
    assert "cjg" in reason
    assert skipped[1]["reasons"] == ["2024 left out of the pooled analysis (it lacks what the other years hold); "
                                     "pooled: none (fewer than two complete years)"]  # fmt: skip
    assert "not analysed for 2024" in lopsided["analysed"].stdout
    assert not any(r["scope"] == "pooled" and r["verdict"] != "skipped" for r in summary["releases"])


def test_noisy_counts_in_the_summary_carry_the_approximate_mark(lopsided) -> None:
    summary = json.loads(lopsided["analysed_json"].stdout)
    positives = [r for r in summary["releases"] if r["part"] == "positives" and r["verdict"] != "refused"]
    assert positives and all(" n≈" in r["summary"] and " n=" not in r["summary"] for r in positives)
    exact = [r for r in summary["releases"] if r["kind"] == "model_metrics" and r["verdict"] == "released"]
    assert exact and all("≈" not in r["summary"] for r in exact)


def test_the_example_registry_lists_the_digests_policy_check_prints() -> None:
    registry, _ = load_registry(POLICIES / "partners.toml")
    for partner in PARTNERS:
        checked = CliRunner().invoke(app, ["policy", "check", str(POLICIES / "sharing" / f"{partner}.toml")])
        assert checked.exit_code == 0, checked.output
        (digest,) = re.findall(r"sha256:[0-9a-f]{64}", checked.stdout)
        assert digest in registry.partners[partner].allowed_policy_digests, (
            f"policies/partners.toml lists another digest for {partner}: put {digest} there"
        )
