"""End to end from the CLI: a plan with one ``dp_tree`` outcome runs through ``kansrijk coordinator analyse``
under ``policies/release/dp-models.toml``; the model is trained inside the gate, its file says DP with its
epsilon, and the ledger's budget holds exactly what the models spent."""

from __future__ import annotations

import json
import shutil
from fractions import Fraction
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kansrijk.cli import app
from kansrijk.gate.ledger import open_existing
from kansrijk.policy import signing
from kansrijk.policy.common import policy_digest
from kansrijk.synth.city import generate_city

PARTNERS = ("cbs", "gemeente", "cjg", "duo")
ROOT = Path(__file__).parents[2]
POLICIES = ROOT / "policies"
PLAN = """kind = "analysis"
version = 1
title = "DP tree test plan"
dataset = "rotterdam-groeit"
seed = 5

[outcomes.psychosocial_risk]
model = "dp_tree"
epsilon = "3/4"
min_positives = 20

[features]
exclude = ["repeated_grade", "track_change", "early_school_leaver", "crime_suspect", "visit_year", "birth_month",
           "birth_year"]
always = ["age_years", "sex"]

[model]
max_depth = [3]
min_samples_leaf = [50]
folds = 3

[dp_model]
max_depth = 3
"""


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{' '.join(args)}\n{result.output}"
    return result.output


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", "dp models passphrase")
    mp.setitem(signing.POLICY_KINDS, "analysis", "kansrijk.policy.analysis:AnalysisPlan")
    mp.setitem(signing.POLICY_KINDS, "factor_model", "kansrijk.policy.factors:FactorModel")
    tmp = tmp_path_factory.mktemp("dp_models")
    city = generate_city(tmp / "city", persons=4_000, seed=7, years=(2023,))
    runner = CliRunner()
    keys, ws, registry = tmp / "keys", tmp / "ws", tmp / "partners.toml"
    _ok(runner, "node", "linkkey", "new", "--out", str(keys / "link.key"))
    for p in PARTNERS:
        _ok(runner, "node", "keygen", "--partner", p, "--out", str(keys))
        digest = policy_digest((POLICIES / "sharing" / f"{p}.toml").read_bytes())
        _ok(runner, "coordinator", "register-partner", str(registry), "--partner", p, "--public-key",
            str(keys / f"{p}-signing.pub"), "--policy-digest", digest)  # fmt: skip
    _ok(runner, "coordinator", "init", str(ws), "--registry", str(registry))
    bundles = []
    for p in PARTNERS:
        outbox = tmp / "outbox" / p
        _ok(runner, "node", "prepare", "--policy", str(POLICIES / "sharing" / f"{p}.toml"), "--input",
            str(city.extracts[(p, 2023)]), "--out", str(outbox), "--signing-key", str(keys / f"{p}-signing.key"),
            "--link-key", str(keys / "link.key"), "--coordinator-key", str(ws / "keys" / "coordinator-hpke.pub"),
            "--quarantine-out", str(tmp / "quarantine" / p))  # fmt: skip
        bundles.extend(str(b) for b in outbox.glob("*.kbundle"))
    _ok(runner, "coordinator", "ingest", str(ws), *bundles)
    _ok(runner, "coordinator", "link", str(ws))
    officer, signed = tmp / "officer", tmp / "signed"
    _ok(runner, "policy", "keygen", "--out", str(officer))
    signed.mkdir()
    (signed / "plan.toml").write_text(PLAN)
    shutil.copy(POLICIES / "factors" / "factor-model.toml", signed / "factors.toml")
    shutil.copy(POLICIES / "release" / "dp-models.toml", signed / "release.toml")
    for name in ("plan.toml", "factors.toml", "release.toml"):
        _ok(runner, "policy", "sign", str(signed / name), "--key", str(officer / "officer.key"))
    output = _ok(runner, "coordinator", "analyse", str(ws), "--plan", str(signed / "plan.toml"), "--factors",
                 str(signed / "factors.toml"), "--release-policy", str(signed / "release.toml"), "--officer-key",
                 str(officer / "officer.pub"), "--json")  # fmt: skip
    yield {"runner": runner, "ws": ws, "summary": json.loads(output)}
    mp.undo()


def test_dp_tree_outcome_is_released_as_a_dp_model_per_feature_set(analysed: dict) -> None:
    lines = {line["name"]: line for line in analysed["summary"]["releases"]}
    for fs in ("all", "factor_model"):
        line = lines[f"2023.psychosocial_risk.{fs}.dp_model"]
        assert line["verdict"] == "released", line
        assert "DP, noisy" in line["summary"] and "ε=3/4" in line["summary"]
        doc = json.loads((analysed["ws"] / "released" / f"2023.psychosocial_risk.{fs}.dp_model.json").read_text())
        assert doc["noisy"] is True and doc["method"] == "dp" and doc["epsilon_spent"] == "3/4"
        assert set(doc["values"]["metrics"]) >= {"roc_auc", "pr_auc"}
        assert "buurt_code" not in doc["values"]["features"]
    # no non-private tree, metrics or importances were computed for the DP outcome
    assert not any(name.endswith((".tree", ".metrics", ".compare")) for name in lines)


def test_ledger_verifies_and_holds_exactly_the_models_epsilon(analysed: dict) -> None:
    ws = analysed["ws"]
    result = analysed["runner"].invoke(app, ["ledger", "verify", str(ws)])
    assert result.exit_code == 0, result.output
    conn = open_existing(ws)
    try:
        rows = conn.execute("SELECT kind, epsilon FROM ledger").fetchall()
        (spent,) = conn.execute("SELECT epsilon_spent FROM budget").fetchone()
    finally:
        conn.close()
    models = [Fraction(r["epsilon"]) for r in rows if r["kind"] == "dp_model"]
    assert models == [Fraction(3, 4), Fraction(3, 4)]
    assert Fraction(spent) == sum((Fraction(r["epsilon"]) for r in rows), Fraction(0))
