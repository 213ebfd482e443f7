"""A second study runs end to end from the CLI without a code change: `kansrijk demo --study` on the shipped
Utrecht example (another municipality, five partners with a youth-health monitor, a new outcome), and
`kansrijk demo --city` on extracts the partners already have."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kansrijk.cli import app
from kansrijk.cli.demo import PASSPHRASE_ENV
from kansrijk.gate.ledger import verify_ledger
from kansrijk.study import active_study, load_study

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STUDY = ROOT / "policies" / "studies" / "utrecht-jeugdmonitor"
PERSONS = 4_000
ARGS = ["--persons", str(PERSONS), "--min-positives", "40", "--seed", "5"]


def _demo(out: Path, *extra: str) -> str:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(PASSPHRASE_ENV, "second-study-test-passphrase")
        result = CliRunner().invoke(app, ["demo", "--study", str(STUDY), "--out", str(out), *ARGS, *extra])
    assert result.exit_code == 0, result.output + repr(result.exception)
    return result.output


@pytest.fixture(scope="module")
def second_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("second") / "run"
    _demo(out)
    return out


def _released(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "coordinator" / "released").glob("*.json")}


def test_the_second_study_runs_end_to_end_with_its_own_partners_and_outcome(second_run: Path) -> None:
    study = load_study(STUDY)
    released = _released(second_run)
    assert verify_ledger(second_run / "coordinator").entries >= len(released)  # every document has its entry
    assert (second_run / "report.html").is_file()
    for partner in study.partners:  # its own five partners, each sealed, ingested and covered by the linkage report
        assert len(list((second_run / "partners" / partner / "outbox").glob("*.kbundle"))) == 1
        assert f"linkage_2023_coverage_{partner}" in released
    # the new outcome is modelled from the youth-health monitor's variables, better than chance
    metrics = released["2023.loneliness.all.metrics"]["values"]["metrics"]
    assert metrics["roc_auc"] > 0.55
    importances = released["2023.loneliness.all.importance.permutation"]["values"]["importances"]
    assert {"bullied", "parent_mental_health_concern"} & {k for k, v in importances.items() if v > 0}
    # the factor Rotterdam had no indicator for has one here, and the coverage release says so
    factors = released["2023.loneliness.factors"]["values"]["importances"]
    assert "parental_mental_health" in factors
    # the run's study was the signed copy; the process is back on the shipped study afterwards
    assert (second_run / "policies" / "studies" / "utrecht-jeugdmonitor" / "study.toml.sig").is_file()
    assert active_study().name == "rotterdam-groeit"


def test_the_demo_runs_on_extracts_a_user_already_has(second_run: Path, tmp_path: Path) -> None:
    output = _demo(tmp_path / "own", "--city", str(second_run / "city" / "extracts"))
    assert "own extracts" in output
    assert not (tmp_path / "own" / "city").exists()  # no city was generated
    theirs, ours = _released(second_run), _released(tmp_path / "own")
    # the same extracts give the same exact releases (the tree and its metrics are computed from the same rows)
    assert (
        theirs["2023.loneliness.all.tree"]["values"]["nodes"][0]["class_counts"]
        == (ours["2023.loneliness.all.tree"]["values"]["nodes"][0]["class_counts"])
    )


def test_the_demo_refuses_a_city_without_a_partner_folder(tmp_path: Path) -> None:
    (tmp_path / "extracts" / "brp").mkdir(parents=True)
    (tmp_path / "extracts" / "brp" / "brp_2023.csv").write_text("bsn\n")
    result = CliRunner().invoke(
        app, ["demo", "--study", str(STUDY), "--out", str(tmp_path / "out"), "--city", str(tmp_path), *ARGS]
    )
    assert result.exit_code == 2, result.output
    assert "no folder" in result.output and "'ggd'" in result.output.replace("\n", "")
    assert not (tmp_path / "out").exists()  # nothing written
