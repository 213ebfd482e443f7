"""The privacy budget belongs to the persons, not to a policy's name: the gate keys it by the workspace's
person-key space (the coordinator pseudonym key's fingerprint in workspace.toml), fails closed without one, and
refuses a ledger whose budget was spent under another identity."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import REPO, add_gate_key, signed_policy, write_dataset
from gate_kit import add_workspace_identity as _identity
from typer.testing import CliRunner

from kansrijk.cli import app
from kansrijk.errors import WorkspaceError
from kansrijk.gate.budget import budget_key
from kansrijk.gate.ledger import verify_ledger
from kansrijk.gate.release import Gate, Refused, Released
from kansrijk.gate.specs import CountSpec


def tight_policy(dataset: str) -> str:
    """dp-sdc.toml with another dataset label and a budget of two frequency tables (1/10 each)."""
    text = (REPO / "policies/release/dp-sdc.toml").read_text()
    text = text.replace('dataset = "rotterdam-groeit"', f'dataset = "{dataset}"')
    return text.replace('epsilon_total = "4"', 'epsilon_total = "1/5"').replace(
        'epsilon_per_release_max = "0.5"', 'epsilon_per_release_max = "1/5"'
    )


def policy_in(tmp: Path, name: str, dataset: str) -> tuple[Path, Path]:
    """A policy signed by its own officer in its own folder: (policy, officer.pub)."""
    folder = tmp / name
    folder.mkdir()
    policy, pub, _ = signed_policy(folder, "dp-sdc", tight_policy(dataset))
    return policy, pub


def people(n: int = 2000) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    return pl.DataFrame({"sex": rng.choice(["F", "M"], n)})


def add_workspace_identity(ws: Path, fingerprint: str | None = None) -> str:
    """A workspace with its person-key identity, a gate key (made once) and the persons' dataset."""
    fp = _identity(ws, fingerprint)
    if not (ws / "keys" / "gate-signing.key").exists():
        add_gate_key(ws)
        write_dataset(ws, people())
    return fp


def ask(gate: Gate, name: str) -> Released | Refused:
    result = gate.release(CountSpec(name=name, years=(2023,), by=("sex",)), requested_by="analysis")
    assert not isinstance(result, Released) or result.document["noisy"] is True
    return result  # type: ignore[return-value]


def test_two_differently_named_policies_over_one_workspace_spend_one_budget(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    fp = add_workspace_identity(ws)
    first, first_pub = policy_in(tmp_path, "a", "rotterdam-groeit")
    second, second_pub = policy_in(tmp_path, "b", "another-name-same-persons")
    with Gate.open(ws, first, [first_pub]) as gate:
        assert gate.budget_key == f"persons:{fp}"
        assert [type(ask(gate, f"a{i}")) for i in range(2)] == [Released, Released]
    with Gate.open(ws, second, [second_pub]) as gate:
        refused = ask(gate, "b0")
        state = gate.budget()
    assert isinstance(refused, Refused)
    assert any("dp_budget" in r and f"persons:{fp}" in r for r in refused.reasons), refused.reasons
    assert state is not None and state.epsilon_spent == Fraction(1, 5) and state.dataset == f"persons:{fp}"
    report = verify_ledger(ws)
    assert report.epsilon_spent == {f"persons:{fp}": Fraction(1, 5)} and report.entries == 3


def test_a_workspace_with_another_pseudonym_key_has_its_own_budget(tmp_path: Path) -> None:
    policy, pub = policy_in(tmp_path, "a", "rotterdam-groeit")
    spent_ws, fresh_ws = tmp_path / "ws1", tmp_path / "ws2"
    add_workspace_identity(spent_ws, "1" * 32)
    add_workspace_identity(fresh_ws, "2" * 32)
    with Gate.open(spent_ws, policy, [pub]) as gate:
        assert [type(ask(gate, f"t{i}")) for i in range(3)] == [Released, Released, Refused]
    with Gate.open(fresh_ws, policy, [pub]) as gate:
        assert isinstance(ask(gate, "t0"), Released)
    assert verify_ledger(fresh_ws).epsilon_spent == {"persons:" + "2" * 32: Fraction(1, 10)}


@pytest.mark.parametrize(
    "manifest",
    [None, 'format = "kansrijk-coordinator-workspace"\nversion = 1\n', 'pseudonym_key_fingerprint = "P2"\n', "= x"],
    ids=["no-workspace-toml", "no-fingerprint", "not-a-fingerprint", "not-toml"],
)
def test_a_workspace_without_identity_is_refused_and_nothing_is_written(tmp_path: Path, manifest: str | None) -> None:
    policy, pub = policy_in(tmp_path, "a", "rotterdam-groeit")
    ws = tmp_path / "ws"
    add_gate_key(ws)  # the gate key is there: the missing identity alone stops the gate
    if manifest is not None:
        (ws / "workspace.toml").write_text(manifest)
    before = sorted(p.name for p in ws.iterdir())
    with pytest.raises(WorkspaceError, match=r"workspace\.toml") as exc:
        Gate.open(ws, policy, [pub])
    assert "coordinator init" in (exc.value.hint or "") and "pseudonym_key_fingerprint" in (exc.value.hint or "")
    assert sorted(p.name for p in ws.iterdir()) == before  # no ledger, no released/


def test_an_edited_workspace_identity_cannot_start_a_fresh_budget(tmp_path: Path) -> None:
    policy, pub = policy_in(tmp_path, "a", "rotterdam-groeit")
    ws = tmp_path / "ws"
    add_workspace_identity(ws, "1" * 32)
    with Gate.open(ws, policy, [pub]) as gate:
        ask(gate, "t0")
    ledger = (ws / "ledger.sqlite").read_bytes()
    add_workspace_identity(ws, "3" * 32)  # someone rewrites workspace.toml to get a new budget
    with pytest.raises(WorkspaceError, match="will not start a second budget"):
        Gate.open(ws, policy, [pub])
    assert (ws / "ledger.sqlite").read_bytes() == ledger


def test_budget_key_is_the_pseudonym_key_of_a_real_workspace(tmp_path: Path, monkeypatch) -> None:
    from coordinator.workspace import init_workspace

    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    made = init_workspace(tmp_path / "ws", "correct horse battery staple")
    assert budget_key(tmp_path / "ws") == f"persons:{made.pseudonym_key_fingerprint}"


def test_ledger_show_and_verify_work_with_the_persons_key(tmp_path: Path) -> None:
    policy, pub = policy_in(tmp_path, "a", "rotterdam-groeit")
    ws = tmp_path / "ws"
    fp = add_workspace_identity(ws)
    with Gate.open(ws, policy, [pub]) as gate:
        ask(gate, "t0")
    runner = CliRunner()
    shown = runner.invoke(app, ["ledger", "show", str(ws)])
    assert shown.exit_code == 0 and "t0" in shown.output
    verified = runner.invoke(app, ["ledger", "verify", str(ws)])
    assert verified.exit_code == 0, verified.output
    assert f"persons:{fp}: ε 0.1" in verified.output
