"""The partner's keys: its Ed25519 signing key pair and the link key shared by all partners.

Files (all written atomically; secret files mode 0600, passphrase-protected by ``kansrijk.crypto``):

- ``<partner>-signing.key``  secret Ed25519 key (kind ``ed25519-signing``), label ``<partner> epoch <n>``;
- ``<partner>-signing.pub``  its public key, for the coordinator's partner registry;
- the link key (kind ``link-key``), made once in the key ceremony (docs/key-ceremony.md) and copied to every
  partner, never to the coordinator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from kansrijk import crypto
from kansrijk.errors import KeyMaterialError, OutputExists
from kansrijk.schema import PARTNERS


@dataclass(frozen=True, slots=True)
class PartnerKeyFiles:
    secret_key: Path
    public_key: Path
    fingerprint: str
    epoch: int


def signing_key_paths(partner: str, out_dir: Path) -> tuple[Path, Path]:
    return Path(out_dir) / f"{partner}-signing.key", Path(out_dir) / f"{partner}-signing.pub"


def generate_partner_keys(partner: str, out_dir: Path, passphrase: str, *, epoch: int = 1) -> PartnerKeyFiles:
    """Make a new signing key pair for ``partner`` in ``out_dir``. Refuses to overwrite either file."""
    if partner not in PARTNERS:
        raise KeyMaterialError(f"unknown partner {partner!r}; known: {', '.join(PARTNERS)}")
    if epoch < 1:
        raise KeyMaterialError("the key epoch starts at 1")
    secret_path, public_path = signing_key_paths(partner, out_dir)
    for path in (secret_path, public_path):
        if path.exists():
            raise OutputExists(f"{path} exists already; refusing to overwrite a key", hint="choose another --out")
    private, public = crypto.generate_signing_key()
    label = f"{partner} epoch {epoch}"
    fingerprint = crypto.write_secret_key(secret_path, "ed25519-signing", private, passphrase, label=label)
    crypto.write_public_key(public_path, "ed25519-signing", public, label=label)
    return PartnerKeyFiles(secret_key=secret_path, public_key=public_path, fingerprint=fingerprint, epoch=epoch)


def new_link_key(out: Path, passphrase: str) -> str:
    """Make the link key (once, at the key ceremony) and write it to ``out``. Returns its fingerprint."""
    if Path(out).exists():
        raise OutputExists(f"{out} exists already; refusing to overwrite a key", hint="choose another path")
    return crypto.write_secret_key(Path(out), "link-key", crypto.random_key(), passphrase, label="kansrijk link key")


def load_link_key(path: Path, passphrase: str) -> bytes:
    return crypto.read_secret_key(Path(path), "link-key", passphrase)


def link_key_fingerprint(path: Path, passphrase: str) -> str:
    """The fingerprint of the link key in ``path`` (decrypted and checked, so a wrong file cannot pass)."""
    return crypto.fingerprint("link-key", load_link_key(path, passphrase))


def load_signing_key(path: Path, passphrase: str) -> bytes:
    return crypto.read_secret_key(Path(path), "ed25519-signing", passphrase)


_LABEL = re.compile(r"^(?P<partner>[a-z][a-z0-9_]*) epoch (?P<epoch>[1-9][0-9]*)$")


@dataclass(frozen=True, slots=True)
class PartnerSigningKey:
    """A partner's secret signing key with the partner and epoch its key file records (``keygen`` writes them in
    the label, which is authenticated together with the key)."""

    path: Path
    key: bytes
    partner: str
    epoch: int


def load_partner_signing_key(path: Path, passphrase: str) -> PartnerSigningKey:
    """The signing key in ``path`` and whose it is. ``KeyMaterialError`` when the file does not say which partner
    and epoch it belongs to (a key not made by ``kansrijk node keygen``)."""
    found = crypto.read_secret_key_file(Path(path), "ed25519-signing", passphrase)
    match = _LABEL.match(found.label)
    if match is None:
        raise KeyMaterialError(
            f"{path}: the key file does not say which partner and key epoch it belongs to (label {found.label!r})",
            hint="use the signing key made by `kansrijk node keygen --partner NAME --epoch N`",
        )
    return PartnerSigningKey(Path(path), found.key, match["partner"], int(match["epoch"]))


def load_coordinator_key(path: Path) -> bytes:
    """The coordinator's X25519 public key (raw 32 bytes) from its public key file."""
    return crypto.read_public_key(Path(path), "x25519-hpke").key


def load_partner_public_key(path: Path) -> bytes:
    return crypto.read_public_key(Path(path), "ed25519-signing").key
