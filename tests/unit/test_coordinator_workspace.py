"""Workspace init: layout, keys at rest, refusal to overwrite, and read-only state access."""

from __future__ import annotations

import hashlib
import stat
import tomllib
from pathlib import Path

import pytest

from coordinator.workspace import init_workspace, load_keys, open_workspace, read_state, workspace_registry
from kansrijk.crypto import fingerprint
from kansrijk.errors import KeyMaterialError, OutputExists, WorkspaceError
from kansrijk.gate.keys import load_gate_signer
from kansrijk.schema import schema_version

PASS = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")


def test_init_creates_the_documented_layout_with_private_keys_mode_0600(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    result = init_workspace(ws, PASS)
    for rel in ("workspace.toml", "state.sqlite", "keys", "tables", "dataset", "internal"):
        assert (ws / rel).exists(), rel
    assert not (ws / "ledger.sqlite").exists() and not (ws / "released").exists()  # the gate's
    for key in ("coordinator-hpke.key", "coordinator-pseudonym.key"):
        assert stat.S_IMODE((ws / "keys" / key).stat().st_mode) == 0o600
    keys = load_keys(open_workspace(ws), PASS)
    assert fingerprint("x25519-hpke", keys.hpke_public) == result.hpke_fingerprint
    assert result.hpke_public_path == ws / "keys" / "coordinator-hpke.pub"
    assert "redacted" in repr(keys)
    for path in (ws / "keys").iterdir():  # no raw key bytes on disk
        assert keys.pseudonym_key not in path.read_bytes()
        assert keys.hpke_private not in path.read_bytes()


def test_init_makes_the_gate_signing_key_under_the_same_passphrase_and_records_its_fingerprint(
    tmp_path: Path,
) -> None:
    ws = tmp_path / "ws"
    result = init_workspace(ws, PASS)
    assert stat.S_IMODE((ws / "keys" / "gate-signing.key").stat().st_mode) == 0o600
    signer = load_gate_signer(ws, PASS)
    assert signer.fingerprint == result.gate_key_fingerprint == fingerprint("gate-signing", signer.public_key)
    manifest = tomllib.loads((ws / "workspace.toml").read_text())
    assert manifest["gate_key_fingerprint"] == signer.fingerprint
    assert manifest["gate_public_key"] == "keys/gate-signing.pub"
    with pytest.raises(KeyMaterialError, match="wrong passphrase"):
        load_gate_signer(ws, "not it")


def test_init_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    init_workspace(ws, PASS)
    before = hashlib.sha256((ws / "keys" / "coordinator-hpke.key").read_bytes()).hexdigest()
    with pytest.raises(OutputExists, match="refusing to initialise"):
        init_workspace(ws, PASS)
    assert hashlib.sha256((ws / "keys" / "coordinator-hpke.key").read_bytes()).hexdigest() == before


def test_wrong_passphrase_is_a_key_material_error(tmp_path: Path) -> None:
    init_workspace(tmp_path / "ws", PASS)
    with pytest.raises(KeyMaterialError, match="wrong passphrase"):
        load_keys(open_workspace(tmp_path / "ws"), "not it")


def test_a_directory_that_is_not_a_workspace_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkspaceError, match="not a coordinator workspace"):
        open_workspace(tmp_path)


def test_missing_registry_says_how_to_install_one(tmp_path: Path) -> None:
    init_workspace(tmp_path / "ws", PASS)
    with pytest.raises(WorkspaceError, match="set-registry"):
        workspace_registry(open_workspace(tmp_path / "ws"))


def test_reading_state_leaves_the_database_byte_identical(tmp_path: Path) -> None:
    init_workspace(tmp_path / "ws", PASS)
    paths = open_workspace(tmp_path / "ws")
    before = paths.state.read_bytes()
    with read_state(paths) as db:
        db.execute("SELECT * FROM bundles").fetchall()
    assert paths.state.read_bytes() == before
    assert sorted(p.name for p in paths.root.iterdir()) == sorted(
        ["workspace.toml", "state.sqlite", "keys", "tables", "dataset", "internal"]
    )


def test_with_trusted_officers_only_a_signed_unaltered_registry_is_used(tmp_path: Path) -> None:
    from kansrijk.crypto import generate_signing_key, write_public_key
    from kansrijk.errors import PolicyNotSigned
    from kansrijk.policy.registry import partner_key_from_bytes, render_registry, with_partner
    from kansrijk.policy.signing import sign_policy

    officer_sk, officer_pk = generate_signing_key()
    write_public_key(tmp_path / "officer.pub", "ed25519-signing", officer_pk, label="officer")
    _, partner_pk = generate_signing_key()
    registry = tmp_path / "partners.toml"
    registry.write_text(
        render_registry(
            with_partner(
                None,
                "cjg",
                key=partner_key_from_bytes(partner_pk, epoch=1),
                schema_versions=[schema_version()],
                policy_digests=["sha256:" + "a" * 64],
            )
        )
    )
    with pytest.raises(PolicyNotSigned):  # unsigned: refused before the workspace is created
        init_workspace(tmp_path / "ws", PASS, registry=registry, officer_keys=[tmp_path / "officer.pub"])
    assert not (tmp_path / "ws").exists()

    sign_policy(registry, officer_sk)
    init_workspace(tmp_path / "ws", PASS, registry=registry, officer_keys=[tmp_path / "officer.pub"])
    paths = open_workspace(tmp_path / "ws")
    reg, _ = workspace_registry(paths)
    assert set(reg.partners) == {"cjg"}

    with paths.registry.open("a") as fh:  # an edit after installation
        fh.write("\n# changed\n")
    with pytest.raises(PolicyNotSigned, match="changed after it was signed"):
        workspace_registry(paths)

    from coordinator.workspace import install_registry

    unsigned = tmp_path / "other.toml"
    unsigned.write_text(registry.read_text())
    with pytest.raises(PolicyNotSigned):
        install_registry(paths, unsigned)
    install_registry(paths, registry)
    assert workspace_registry(paths)[0] == reg
