"""`kansrijk node ...` end to end through the CLI: keys, prepare, inspect, and their exit codes."""

from __future__ import annotations

import stat
from pathlib import Path

import node_samples as ns
import pytest
from typer.testing import CliRunner

from kansrijk import bundle, crypto
from kansrijk.cli import app

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "sharing"
PASS = "correct horse battery staple"


@pytest.fixture(autouse=True)
def _env(monkeypatch):
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", PASS)
    monkeypatch.delenv("KANSRIJK_LINK_PASSPHRASE", raising=False)


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(app, ["node", *args], input=input, catch_exceptions=False)


@pytest.fixture
def node(tmp_path: Path) -> dict[str, Path]:
    """A partner machine: signing keys, the link key and the coordinator's public key file."""
    keys_dir = tmp_path / "keys"
    assert invoke("keygen", "--partner", "gemeente", "--out", str(keys_dir)).exit_code == 0
    assert invoke("linkkey", "new", "--out", str(tmp_path / "link.key")).exit_code == 0
    recipient_private, recipient_public = crypto.generate_encryption_key()
    crypto.write_public_key(tmp_path / "coordinator.pub", "x25519-hpke", recipient_public, label="coordinator")
    (tmp_path / "coordinator.secret").write_bytes(recipient_private)
    return {
        "dir": tmp_path,
        "signing": keys_dir / "gemeente-signing.key",
        "public": keys_dir / "gemeente-signing.pub",
        "link": tmp_path / "link.key",
        "coordinator": tmp_path / "coordinator.pub",
        "coordinator_secret": tmp_path / "coordinator.secret",
    }


def prepare_args(node: dict[str, Path], extract: Path, *extra: str) -> list[str]:
    return [
        "prepare",
        "--policy", str(POLICIES / "gemeente.toml"),
        "--input", str(extract),
        "--out", str(node["dir"] / "outbox"),
        "--signing-key", str(node["signing"]),
        "--link-key", str(node["link"]),
        "--coordinator-key", str(node["coordinator"]),
        *extra,
    ]  # fmt: skip


def test_keygen_writes_a_private_and_a_public_key_and_prints_the_fingerprint(tmp_path):
    result = invoke("keygen", "--partner", "cjg", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    secret, public = tmp_path / "cjg-signing.key", tmp_path / "cjg-signing.pub"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pub = crypto.read_public_key(public, "ed25519-signing")
    assert pub.fingerprint in result.output
    assert crypto.signing_public_key(crypto.read_secret_key(secret, "ed25519-signing", PASS)) == pub.key
    again = invoke("keygen", "--partner", "cjg", "--out", str(tmp_path))
    assert again.exit_code == 8 and "refusing to overwrite" in again.output


def test_keygen_prompts_for_a_passphrase_when_the_env_var_is_unset(tmp_path, monkeypatch):
    monkeypatch.delenv("KANSRIJK_PASSPHRASE")
    result = invoke("keygen", "--partner", "duo", "--out", str(tmp_path), input="s3cret-pass\ns3cret-pass\n")
    assert result.exit_code == 0, result.output
    crypto.read_secret_key(tmp_path / "duo-signing.key", "ed25519-signing", "s3cret-pass")


def test_keygen_reads_the_passphrase_from_the_named_env_var(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_PASS", "from-my-env")
    assert invoke("keygen", "--partner", "cbs", "--out", str(tmp_path), "--passphrase-env", "MY_PASS").exit_code == 0
    crypto.read_secret_key(tmp_path / "cbs-signing.key", "ed25519-signing", "from-my-env")


def test_keygen_refuses_an_unknown_partner(tmp_path):
    result = invoke("keygen", "--partner", "politie", "--out", str(tmp_path))
    assert result.exit_code == 6 and "unknown partner" in result.output


def test_linkkey_fingerprint_matches_the_one_printed_at_creation(tmp_path):
    created = invoke("linkkey", "new", "--out", str(tmp_path / "link.key"))
    shown = invoke("linkkey", "fingerprint", str(tmp_path / "link.key"))
    assert shown.exit_code == 0
    assert shown.output.strip() in created.output and len(shown.output.strip()) == 32
    wrong = CliRunner().invoke(
        app, ["node", "linkkey", "fingerprint", str(tmp_path / "link.key")], env={"KANSRIJK_PASSPHRASE": "wrong"}
    )
    assert wrong.exit_code == 6 and "wrong passphrase" in wrong.output


def test_prepare_then_inspect_verifies_with_the_partner_key(node):
    extract = ns.write_gemeente(node["dir"] / "gemeente_2023.csv", ns.gemeente_rows(40))
    result = invoke(*prepare_args(node, extract))
    assert result.exit_code == 0, result.output
    bundles = list((node["dir"] / "outbox").glob("*.kbundle"))
    assert len(bundles) == 1 and "40 shared, 0 quarantined of 40" in result.output
    assert (node["dir"] / "quarantine").is_dir()

    shown = invoke("inspect", str(bundles[0]), "--partner-key", str(node["public"]))
    assert shown.exit_code == 0, shown.output
    assert "signature valid" in shown.output and "gemeente" in shown.output
    unverified = invoke("inspect", str(bundles[0]))
    assert "not verified" in unverified.output
    fingerprint = crypto.read_public_key(node["public"], "ed25519-signing").fingerprint
    assert fingerprint in unverified.output

    opened = bundle.open_bundle(
        bundles[0].read_bytes(),
        trusted_keys={"gemeente": crypto.read_public_key(node["public"], "ed25519-signing").key},
        recipient_private_key=node["coordinator_secret"].read_bytes(),
    )
    assert opened.payload.height == 40


def test_inspect_with_another_partner_key_fails_with_the_unknown_partner_exit_code(node, tmp_path):
    extract = ns.write_gemeente(node["dir"] / "gemeente_2023.csv", ns.gemeente_rows(10))
    assert invoke(*prepare_args(node, extract)).exit_code == 0
    path = next((node["dir"] / "outbox").glob("*.kbundle"))
    _, other = crypto.generate_signing_key()
    crypto.write_public_key(tmp_path / "other.pub", "ed25519-signing", other, label="other")
    result = invoke("inspect", str(path), "--partner-key", str(tmp_path / "other.pub"))
    assert result.exit_code == 14 and "not registered" in result.output
    data = bytearray(path.read_bytes())
    data[20] ^= 1
    path.write_bytes(bytes(data))
    tampered = invoke("inspect", str(path), "--partner-key", str(node["public"]))
    assert tampered.exit_code in (11, 12)


def test_inspect_json_prints_the_manifest(node):
    extract = ns.write_gemeente(node["dir"] / "gemeente_2023.csv", ns.gemeente_rows(10))
    assert invoke(*prepare_args(node, extract)).exit_code == 0
    path = next((node["dir"] / "outbox").glob("*.kbundle"))
    import json

    shown = CliRunner().invoke(app, ["node", "inspect", str(path), "--json"])
    manifest = json.loads(shown.stdout)
    assert manifest["partner"] == "gemeente" and manifest["row_count"] == 10


def test_prepare_aborts_with_exit_5_and_a_summary_when_too_many_rows_are_faulty(node):
    rows = ns.gemeente_rows(20)
    for row in rows[:5]:
        row["Geslacht"] = "X"
    extract = ns.write_gemeente(node["dir"] / "gemeente_2023.csv", rows)
    result = invoke(*prepare_args(node, extract, "--quarantine-out", str(node["dir"] / "q")))
    assert result.exit_code == 5
    assert "unknown_category: 5" in result.output and "nothing was sealed" in result.output
    assert not (node["dir"] / "outbox").exists() or not list((node["dir"] / "outbox").iterdir())
    assert len(list((node["dir"] / "q").iterdir())) == 1
    for row in rows:
        assert row["BSN"] not in result.output


def test_prepare_with_a_wrong_passphrase_fails_before_reading_the_extract(node, monkeypatch):
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", "not it")
    extract = ns.write_gemeente(node["dir"] / "gemeente_2023.csv", ns.gemeente_rows(5))
    result = invoke(*prepare_args(node, extract))
    assert result.exit_code == 6 and "wrong passphrase" in result.output


def test_prepare_takes_the_link_passphrase_from_its_own_env_var(node, tmp_path, monkeypatch):
    monkeypatch.setenv("KANSRIJK_LINK_PASSPHRASE", "link-only")
    invoke("linkkey", "new", "--out", str(tmp_path / "link2.key"))
    node = {**node, "link": tmp_path / "link2.key"}
    extract = ns.write_gemeente(node["dir"] / "gemeente_2023.csv", ns.gemeente_rows(5))
    assert invoke(*prepare_args(node, extract)).exit_code == 0


def test_prepare_chains_to_the_previous_bundle(node):
    first = ns.write_gemeente(node["dir"] / "gemeente_2023.csv", ns.gemeente_rows(5))
    assert invoke(*prepare_args(node, first)).exit_code == 0
    previous = next((node["dir"] / "outbox").glob("*.kbundle"))
    rows = ns.gemeente_rows(6)
    for row in rows:
        row["Peiljaar"] = "2024"
    second = ns.write_gemeente(node["dir"] / "gemeente_2024.csv", rows)
    result = invoke(*prepare_args(node, second, "--previous", str(previous)))
    assert result.exit_code == 0, result.output
    newest = next(p for p in (node["dir"] / "outbox").glob("*.kbundle") if p != previous)
    assert bundle.read_manifest(newest.read_bytes()).previous_bundle_hash == bundle.bundle_digest(previous.read_bytes())


def test_node_commands_have_help_with_an_example():
    for args in (["prepare"], ["inspect"], ["keygen"], ["linkkey", "new"], ["linkkey", "fingerprint"]):
        result = invoke(*args, "--help")
        assert result.exit_code == 0 and "Example" in result.output
