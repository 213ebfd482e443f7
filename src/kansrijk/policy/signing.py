"""Signing and verifying policy files: a privacy officer's Ed25519 signature over the file's exact bytes.

A signature is a detached JSON file beside the policy (``FILE.sig``)::

    {"format": "kansrijk-policy-signature", "version": 1, "file": "dp-sdc.toml",
     "digest": "sha256:...", "signer_fingerprint": "...", "signed_at": "2025-...Z", "signature": "base64"}

The signature covers the canonical JSON of every field except ``signature``, so the digest, the signer and the
time are all bound. Verification reads the signature first, checks it against the trusted officer keys, then
checks the file's digest, and only then parses the policy (verify before parse). Any failure is
``PolicyNotSigned`` with a message that says which check failed and what to do.

``load_policy`` dispatches on the top-level ``kind`` key so every kind of policy file can be checked by
``kansrijk policy check``; kinds are registered in ``POLICY_KINDS``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import importlib
import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from kansrijk import crypto
from kansrijk.errors import PolicyError, PolicyNotSigned
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.policy.common import parse_policy, policy_digest, read_policy_bytes

SIGNATURE_FORMAT = "kansrijk-policy-signature"
SIGNING_KIND = "ed25519-signing"

# kind -> "module:Model" (a PolicyModel subclass). Other policy kinds are added here, one line each.
POLICY_KINDS: dict[str, str] = {
    "release": "kansrijk.policy.release:ReleasePolicy",
    "analysis": "kansrijk.policy.analysis:AnalysisPlan",
    "factor_model": "kansrijk.policy.factors:FactorModel",
    "sharing": "kansrijk.policy.sharing:SharingPolicy",
    "study": "kansrijk.study.model:StudyFile",
}
# Files that say what they are with ``format`` instead of ``kind``.
POLICY_FORMATS: dict[str, str] = {
    "kansrijk-partner-registry": "kansrijk.policy.registry:PartnerRegistry",
}

OfficerKey = Path | str | crypto.PublicKeyFile


@dataclass(frozen=True, slots=True)
class PolicySignature:
    file: str
    digest: str
    signer_fingerprint: str
    signed_at: str
    signature: bytes

    def signed_message(self) -> bytes:
        body = {
            "format": SIGNATURE_FORMAT,
            "version": 1,
            "file": self.file,
            "digest": self.digest,
            "signer_fingerprint": self.signer_fingerprint,
            "signed_at": self.signed_at,
        }
        return b"kansrijk/v1/policy-signature\n" + json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature_path(policy_path: Path) -> Path:
    policy_path = Path(policy_path)
    return policy_path.with_name(policy_path.name + ".sig")


def policy_kind(path: Path, raw: bytes | None = None) -> str:
    """The ``kind`` (or legacy ``format``) a policy file declares; ``PolicyError`` if it declares none known."""
    path = Path(path)
    raw = read_policy_bytes(path) if raw is None else raw
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: not valid UTF-8 TOML: {exc}") from None
    kind = data.get("kind")
    if isinstance(kind, str) and kind in POLICY_KINDS:
        return kind
    fmt = data.get("format")
    if isinstance(fmt, str) and fmt in POLICY_FORMATS:
        return fmt
    known = ", ".join(sorted(POLICY_KINDS))
    if kind is None:
        raise PolicyError(
            f"{path}: kind: missing top-level 'kind' key", hint=f'add e.g. kind = "release" (known kinds: {known})'
        )
    raise PolicyError(f"{path}: kind: unknown policy kind {kind!r}", hint=f"known kinds: {known}")


def _model(kind: str) -> type[BaseModel]:
    target = POLICY_KINDS.get(kind) or POLICY_FORMATS[kind]
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def load_policy(path: Path, raw: bytes | None = None) -> tuple[str, BaseModel]:
    """Parse any known policy file (unsigned check only). Returns (kind, model)."""
    path = Path(path)
    raw = read_policy_bytes(path) if raw is None else raw
    kind = policy_kind(path, raw)
    return kind, parse_policy(path, _model(kind), raw)


# --- signing --------------------------------------------------------------------------------------------
def sign_policy(policy_path: Path, private_key: bytes, *, now: dt.datetime | None = None) -> Path:
    """Validate ``policy_path``, sign its exact bytes and write ``FILE.sig`` atomically. Returns the sig path.

    Refuses to sign a file that does not validate (an officer must not sign a broken policy).
    """
    policy_path = Path(policy_path)
    raw = read_policy_bytes(policy_path)
    load_policy(policy_path, raw)
    public = crypto.signing_public_key(private_key)
    signed_at = (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    unsigned = PolicySignature(
        file=policy_path.name,
        digest=policy_digest(raw),
        signer_fingerprint=crypto.fingerprint(SIGNING_KIND, public),
        signed_at=signed_at,
        signature=b"",
    )
    sig = crypto.sign(private_key, unsigned.signed_message())
    document = {
        "format": SIGNATURE_FORMAT,
        "version": 1,
        "file": unsigned.file,
        "digest": unsigned.digest,
        "signer_fingerprint": unsigned.signer_fingerprint,
        "signed_at": unsigned.signed_at,
        "signature": base64.b64encode(sig).decode("ascii"),
    }
    out = signature_path(policy_path)
    atomic_write_bytes(out, (json.dumps(document, indent=2) + "\n").encode())
    return out


def read_signature(sig_path: Path) -> PolicySignature:
    sig_path = Path(sig_path)
    if not sig_path.is_file():
        raise PolicyNotSigned(
            f"{sig_path}: no signature file; the policy is unsigned",
            hint="ask the privacy officer to run: kansrijk policy sign FILE --key OFFICER.key",
        )
    try:
        doc: dict[str, Any] = json.loads(sig_path.read_text(encoding="utf-8"))
        if doc.get("format") != SIGNATURE_FORMAT or doc.get("version") != 1:
            raise KeyError("format")
        return PolicySignature(
            file=str(doc["file"]),
            digest=str(doc["digest"]),
            signer_fingerprint=str(doc["signer_fingerprint"]),
            signed_at=str(doc["signed_at"]),
            signature=base64.b64decode(doc["signature"], validate=True),
        )
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise PolicyNotSigned(f"{sig_path}: not a kansrijk policy signature file") from None


def officer_keys(keys: Sequence[OfficerKey]) -> list[crypto.PublicKeyFile]:
    out = []
    for key in keys:
        if isinstance(key, crypto.PublicKeyFile):
            out.append(key)
        else:
            out.append(crypto.read_public_key(Path(key), SIGNING_KIND))
    return out


def verify_policy(policy_path: Path, trusted_officer_keys: Sequence[OfficerKey]) -> tuple[bytes, str, str]:
    """Check ``FILE.sig`` against the trusted officer keys and the file's bytes, before parsing anything.

    Returns (raw bytes, digest, signer fingerprint). Raises ``PolicyNotSigned`` for a missing or malformed
    signature, an unknown signer, a bad signature, or a file altered after signing.
    """
    policy_path = Path(policy_path)
    keys = officer_keys(trusted_officer_keys)
    if not keys:
        raise PolicyNotSigned(
            f"{policy_path}: no trusted privacy-officer key was given", hint="pass --officer-key OFFICER.pub"
        )
    sig = read_signature(signature_path(policy_path))
    signer = next((k for k in keys if k.fingerprint == sig.signer_fingerprint), None)
    if signer is None:
        raise PolicyNotSigned(
            f"{signature_path(policy_path)}: signed by key {sig.signer_fingerprint}, which is not a trusted "
            f"privacy-officer key",
            hint="pass the officer's public key with --officer-key, or have a trusted officer re-sign",
        )
    if not crypto.verify_signature(signer.key, sig.signed_message(), sig.signature):
        raise PolicyNotSigned(f"{signature_path(policy_path)}: the signature does not verify (signature file altered)")
    raw = read_policy_bytes(policy_path)
    digest = policy_digest(raw)
    if not crypto.constant_time_equal(digest.encode(), sig.digest.encode()):
        raise PolicyNotSigned(
            f"{policy_path}: the file was changed after it was signed (digest {digest} != signed {sig.digest})",
            hint="review the change (kansrijk policy diff) and have the privacy officer sign it again",
        )
    return raw, digest, sig.signer_fingerprint


def load_signed_policy(policy_path: Path, trusted_officer_keys: Sequence[OfficerKey]) -> tuple[BaseModel, str]:
    """Verify, then parse. Returns (policy model, digest). ``PolicyNotSigned`` if unsigned or altered."""
    raw, digest, _ = verify_policy(policy_path, trusted_officer_keys)
    _, model = load_policy(Path(policy_path), raw)
    return model, digest


__all__ = [
    "POLICY_KINDS",
    "PolicySignature",
    "load_policy",
    "load_signed_policy",
    "policy_kind",
    "read_signature",
    "sign_policy",
    "signature_path",
    "verify_policy",
]
