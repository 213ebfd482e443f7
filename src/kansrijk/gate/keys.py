"""The release gate's own signing key: it signs every ledger entry, so an entry not written by the gate fails
``kansrijk ledger verify`` even when its hash chain was recomputed.

In the workspace::

    WS/keys/gate-signing.key   the Ed25519 private key (kind "gate-signing"), encrypted under the workspace
                               passphrase (scrypt + AES-256-GCM, like the coordinator's keys), mode 0600
    WS/keys/gate-signing.pub   its public key: ``ledger verify`` checks every entry's signature against it

The key is made once, by ``kansrijk coordinator init``, with the passphrase of the workspace's other keys. Its
kind is "gate-signing", not "ed25519-signing": a gate key cannot sign a policy or an anchor, and a privacy
officer's or a partner's key cannot sign ledger entries (``read_secret_key`` and ``read_public_key`` refuse the
other kind).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from kansrijk import crypto
from kansrijk.errors import KeyMaterialError, OutputExists

GATE_KEY = "keys/gate-signing.key"
GATE_PUB = "keys/gate-signing.pub"
GATE_KEY_KIND = "gate-signing"
DEFAULT_PASSPHRASE_ENV = "KANSRIJK_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)

_NO_KEY_HINT = (
    "'kansrijk coordinator init' makes the gate key; a workspace made before the gate signed its ledger has "
    "none and cannot be upgraded in place: initialise a new workspace"
)


@dataclass(frozen=True, slots=True)
class GateSigner:
    """The gate's key pair, loaded for one gate session. Never logged, never written outside ``WS/keys/``."""

    private_key: bytes = field(repr=False)
    public_key: bytes
    fingerprint: str

    def sign(self, message: bytes) -> bytes:
        return crypto.sign(self.private_key, message)

    def __repr__(self) -> str:  # keep the private key out of tracebacks and logs
        return f"GateSigner(fingerprint={self.fingerprint!r})"


def create_gate_key(workspace: Path, passphrase: str) -> str:
    """Make the gate's key pair in ``WS/keys/`` (the private key passphrase-protected, mode 0600). Returns the
    public key's fingerprint. Refuses (``OutputExists``) when either file exists: a gate key is never replaced."""
    workspace = Path(workspace)
    key_path, pub_path = workspace / GATE_KEY, workspace / GATE_PUB
    if key_path.exists() or pub_path.exists():
        raise OutputExists(
            f"{key_path.parent}: {key_path.name} or {pub_path.name} exists already; a gate key is never replaced",
            hint="keep the existing key (the ledger's signatures are checked against it)",
        )
    key_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    private, public = crypto.generate_signing_key()
    fp = crypto.write_secret_key(key_path, GATE_KEY_KIND, private, passphrase, label="release gate")
    crypto.write_public_key(pub_path, GATE_KEY_KIND, public, label="release gate")
    return fp


def read_gate_public_key(workspace: Path) -> crypto.PublicKeyFile:
    """The workspace's gate public key (``WS/keys/gate-signing.pub``); ``KeyMaterialError`` if it is missing
    or is not a gate key."""
    path = Path(workspace) / GATE_PUB
    if not path.is_file():
        raise KeyMaterialError(f"{path}: the workspace has no gate public key", hint=_NO_KEY_HINT)
    return crypto.read_public_key(path, GATE_KEY_KIND)


def load_gate_signer(workspace: Path, passphrase: str | None = None) -> GateSigner:
    """Decrypt the gate's private key (with ``passphrase``, else the one in ``$KANSRIJK_PASSPHRASE``) and check
    it against the workspace's gate public key.

    ``KeyMaterialError`` names the file when a key file is missing, the passphrase is missing or wrong, or the
    two files do not belong together."""
    workspace = Path(workspace)
    key_path = workspace / GATE_KEY
    if not key_path.is_file():
        raise KeyMaterialError(
            f"{key_path}: the workspace has no gate signing key (the gate signs every ledger entry with it)",
            hint=_NO_KEY_HINT,
        )
    private = crypto.read_secret_key(key_path, GATE_KEY_KIND, gate_passphrase() if passphrase is None else passphrase)
    public = read_gate_public_key(workspace)
    if not crypto.constant_time_equal(crypto.signing_public_key(private), public.key):
        raise KeyMaterialError(
            f"{workspace / GATE_PUB}: is not the public key of {key_path}",
            hint="restore both gate key files from the workspace's backup",
        )
    return GateSigner(private_key=private, public_key=public.key, fingerprint=public.fingerprint)


def gate_passphrase(env: str = DEFAULT_PASSPHRASE_ENV) -> str:
    """The passphrase of the gate key from environment variable ``env`` (the workspace passphrase).

    The gate never prompts: a command that prompts (``coordinator link``, ``coordinator analyse``) passes the
    passphrase to ``Gate.open`` itself."""
    value = os.environ.get(env)
    if not value:
        raise KeyMaterialError(
            f"no passphrase for the gate key {GATE_KEY}: environment variable {env} is not set",
            hint=f"export {env}=... (the workspace's key passphrase)",
        )
    return value
