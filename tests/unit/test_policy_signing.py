"""Signing policy files: verify before parse, and every failure is PolicyNotSigned with its reason."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kansrijk import crypto
from kansrijk.cli import app
from kansrijk.errors import PolicyNotSigned
from kansrijk.policy.signing import load_signed_policy, sign_policy, signature_path

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def signed(tmp_path):
    sk, pk = crypto.generate_signing_key()
    pub = tmp_path / "officer.pub"
    crypto.write_public_key(pub, "ed25519-signing", pk, label="officer")
    policy = tmp_path / "dp-sdc.toml"
    shutil.copy(REPO / "policies/release/dp-sdc.toml", policy)
    sign_policy(policy, sk)
    return policy, pub


def test_signed_policy_loads_with_its_digest(signed):
    policy, pub = signed
    model, digest = load_signed_policy(policy, [pub])
    assert digest.startswith("sha256:") and model.dataset == "rotterdam-groeit"
    sig = json.loads(signature_path(policy).read_text())
    assert sig["digest"] == digest and len(sig["signer_fingerprint"]) == 32


def test_altered_policy_is_refused(signed):
    policy, pub = signed
    policy.write_text(policy.read_text().replace('epsilon_total = "4"', 'epsilon_total = "40"'))
    with pytest.raises(PolicyNotSigned, match="changed after it was signed"):
        load_signed_policy(policy, [pub])


def test_unsigned_policy_is_refused(signed):
    policy, pub = signed
    signature_path(policy).unlink()
    with pytest.raises(PolicyNotSigned, match="unsigned"):
        load_signed_policy(policy, [pub])


def test_untrusted_signer_is_refused(signed, tmp_path):
    policy, _ = signed
    _, other = crypto.generate_signing_key()
    other_pub = tmp_path / "other.pub"
    crypto.write_public_key(other_pub, "ed25519-signing", other, label="someone")
    with pytest.raises(PolicyNotSigned, match="not a trusted"):
        load_signed_policy(policy, [other_pub])


def test_altered_signature_file_is_refused(signed):
    policy, pub = signed
    sig = json.loads(signature_path(policy).read_text())
    sig["signed_at"] = "2000-01-01T00:00:00Z"
    signature_path(policy).write_text(json.dumps(sig))
    with pytest.raises(PolicyNotSigned, match="does not verify"):
        load_signed_policy(policy, [pub])


def test_cli_keygen_sign_verify_check(tmp_path, monkeypatch):
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", "correct horse")
    runner = CliRunner()
    assert runner.invoke(app, ["policy", "keygen", "--out", str(tmp_path / "k")]).exit_code == 0
    policy = tmp_path / "p.toml"
    shutil.copy(REPO / "policies/release/sdc-only.toml", policy)
    assert runner.invoke(app, ["policy", "sign", str(policy), "--key", str(tmp_path / "k/officer.key")]).exit_code == 0
    ok = runner.invoke(app, ["policy", "verify", str(policy), "--officer-key", str(tmp_path / "k/officer.pub")])
    assert ok.exit_code == 0, ok.output
    policy.write_text(policy.read_text() + "\n# edited\n")
    bad = runner.invoke(app, ["policy", "verify", str(policy), "--officer-key", str(tmp_path / "k/officer.pub")])
    assert bad.exit_code == PolicyNotSigned.exit_code
    broken = tmp_path / "broken.toml"
    broken.write_text('kind = "release"\ntitle = "t"\ndataset = "d"\n[sdc]\nnk_k = 0.95\n')
    res = runner.invoke(app, ["policy", "check", str(policy), str(broken)])
    assert res.exit_code == 3
    assert runner.invoke(app, ["policy", "explain", str(policy)]).exit_code == 0
    assert (
        runner.invoke(app, ["policy", "diff", str(policy), str(REPO / "policies/release/dp-sdc.toml")]).exit_code == 0
    )
