"""Shared setup for the gate's unit and security tests: a release policy signed by a fresh privacy-officer key."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

from kansrijk import crypto
from kansrijk.policy.signing import sign_policy

REPO = Path(__file__).resolve().parents[1]


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


def add_workspace_identity(ws: Path, fingerprint: str | None = None) -> str:
    """Make ``ws`` (created if needed) a workspace with a person-key identity: a minimal ``workspace.toml`` with
    ``pseudonym_key_fingerprint`` (a fresh random one unless given), which the gate keys the budget by.

    Returns the fingerprint. Tests that need a real workspace use ``kansrijk coordinator init`` instead."""
    fingerprint = fingerprint or secrets.token_hex(16)
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "workspace.toml").write_text(f'pseudonym_key_fingerprint = "{fingerprint}"\n')
    return fingerprint
