"""Shared setup for the gate's unit and security tests: a release policy signed by a fresh privacy-officer key,
and the gate's own signing key in a bare workspace directory."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from unittest import mock

from kansrijk import crypto
from kansrijk.gate.keys import create_gate_key
from kansrijk.policy.signing import sign_policy

REPO = Path(__file__).resolve().parents[1]
# The passphrase of every gate key these helpers make; tests/conftest.py puts it in $KANSRIJK_PASSPHRASE.
GATE_PASSPHRASE = "gate test passphrase"


def signed_policy(tmp: Path, policy: str = "sdc-only", text: str | None = None) -> tuple[Path, Path, bytes]:
    """Copy ``policies/release/<policy>.toml`` (or write ``text``) into ``tmp`` and sign it with a new officer key.

    Returns (policy path, officer public key path, officer secret key)."""
    sk, pk = crypto.generate_signing_key()
    pub = tmp / "officer.pub"
    crypto.write_public_key(pub, "ed25519-signing", pk, label="officer")
    target = tmp / f"{policy}.toml"
    if text is None:
        shutil.copy(REPO / "policies" / "release" / f"{policy}.toml", target)
    else:
        target.write_text(text)
    sign_policy(target, sk)
    return target, pub, sk


def add_gate_key(ws: Path, passphrase: str = GATE_PASSPHRASE) -> str:
    """Give the (bare) workspace directory ``ws`` a gate signing key, as ``coordinator init`` does; returns its
    fingerprint. The key file uses the cheapest scrypt cost kansrijk reads (2^14), so tests stay fast."""
    ws.mkdir(parents=True, exist_ok=True)
    with mock.patch.dict(os.environ, {"KANSRIJK_SCRYPT_LOG2N": "14"}):
        return create_gate_key(ws, passphrase)


def gate_workspace(tmp: Path, name: str = "ws") -> Path:
    """``tmp/name`` as a bare workspace for the gate: the directory and its gate key (made once)."""
    ws = tmp / name
    if not (ws / "keys" / "gate-signing.key").exists():
        add_gate_key(ws)
    return ws
