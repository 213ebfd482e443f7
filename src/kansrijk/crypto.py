"""The only module that calls cryptographic primitives. Everything else calls the recipes here.

Recipes (all from ``cryptography``'s maintained constructions, nothing hand-rolled):

- signatures: Ed25519;
- public-key encryption: HPKE (RFC 9180) base mode, DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM,
  used only to wrap a fresh 32-byte data key for the recipient;
- payload encryption: AES-256-GCM with a random 96-bit nonce under that fresh data key (one message per key);
- keyed pseudonyms: HMAC-SHA256 (RFC 2104) with a domain-separation prefix, vectorised over a polars column
  by computing the standard HMAC construction from two SHA-256 passes (checked against ``hmac`` by tests);
- secret keys at rest: scrypt (N=2^17, r=8, p=1 by default; OWASP's recommendation) derives an AES-256-GCM key
  that encrypts the raw key bytes; the file's header is authenticated as associated data.

Nothing here logs or puts key material or plaintext into exception messages.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl
import polars_hash  # noqa: F401  (registers the .chash namespace)
import pyarrow as pa
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from kansrijk.errors import KeyMaterialError
from kansrijk.fsutil import atomic_write_bytes

KEY_BYTES = 32
NONCE_BYTES = 12

# "gate-signing" is an Ed25519 key like "ed25519-signing", typed apart so the release gate's ledger key and a
# person's signing key (a privacy officer's, a partner's) can never be taken for one another.
SecretKind = Literal["ed25519-signing", "gate-signing", "x25519-hpke", "link-key", "coordinator-pseudonym-key"]
PublicKind = Literal["ed25519-signing", "gate-signing", "x25519-hpke"]

_SECRET_KINDS = ("ed25519-signing", "gate-signing", "x25519-hpke", "link-key", "coordinator-pseudonym-key")
_SCRYPT_R = 8
_SCRYPT_P = 1
_SCRYPT_LOG2N_DEFAULT = 17
_SCRYPT_LOG2N_MIN = 14  # refuse to read key files weaker than this
_HPKE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class DecryptionFailed(Exception):
    """Authenticated decryption failed: wrong key, or the ciphertext or its associated data was altered."""


# --- hashing and comparison -------------------------------------------------------------------------------
def sha256(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def constant_time_equal(a: bytes, b: bytes) -> bool:
    """Compare two byte strings in time independent of where they differ."""
    return hmac.compare_digest(a, b)


def random_key() -> bytes:
    """A fresh 32-byte key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def fingerprint(kind: str, key_bytes: bytes) -> str:
    """A short, stable, public identifier of a key: 128 bits of SHA-256 over a typed encoding.

    For public keys this is safe to print and store. For symmetric secret keys (the link key) it is a
    commitment: it reveals nothing usable about the key, and lets partners check they hold the same one.
    """
    return sha256_hex(b"kansrijk/v1/fingerprint/" + kind.encode() + b"/" + key_bytes)[:32]


# --- keyed pseudonyms ----------------------------------------------------------------------------------
def hmac_sha256(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def hmac_sha256_expr(key: bytes, message: pl.Expr) -> pl.Expr:
    """HMAC-SHA256(key, message) for every row of a Binary polars expression, as a Binary(32) expression.

    Vectorised: the two SHA-256 passes of RFC 2104 run in polars' native hashing (polars-hash), no Python
    loop per row. ``key`` must be at most 64 bytes (our keys are 32).
    """
    if len(key) > 64:
        raise ValueError("HMAC keys longer than the SHA-256 block size are not used in kansrijk")
    block = key.ljust(64, b"\0")
    ipad = bytes(b ^ 0x36 for b in block)
    opad = bytes(b ^ 0x5C for b in block)
    inner = _sha256_binary(pl.lit(ipad, dtype=pl.Binary) + message)
    return _sha256_binary(pl.lit(opad, dtype=pl.Binary) + inner)


def _sha256_binary(message: pl.Expr) -> pl.Expr:
    """SHA-256 of every row as Binary(32): polars-hash's digest (lowercase hex) decoded by ``_hex_digests``."""
    return message.chash.sha2_256().map_batches(_hex_digests, return_dtype=pl.Binary, is_elementwise=True)


# Byte pair (as a little-endian uint16 of two lowercase hex characters) -> the byte it spells; validity beside it.
_HEX = b"0123456789abcdef"
_PAIR_VALUE = np.zeros(1 << 16, dtype=np.uint8)
_PAIR_VALID = np.zeros(1 << 16, dtype=bool)
for _hi, _h in enumerate(_HEX):
    for _lo, _l in enumerate(_HEX):
        _PAIR_VALUE[_h | (_l << 8)] = (_hi << 4) | _lo
        _PAIR_VALID[_h | (_l << 8)] = True


def _hex_digests(hexes: pl.Series) -> pl.Series:
    """64-character lowercase hex digests -> 32 raw bytes each, as one numpy gather over character pairs.

    ``str.decode("hex")`` does the same per row and took 2.4 of the HMAC's 3.75 s on 3M rows; this takes ~0.3 s.
    Anything but 64 lowercase hex characters per row (never produced by SHA-256) raises ``ValueError``.
    """
    if hexes.len() == 0:
        return pl.Series(hexes.name, [], dtype=pl.Binary)
    if hexes.null_count():
        raise ValueError("a SHA-256 digest is missing")
    chars = hexes.cast(pl.Binary).bin.reinterpret(dtype=pl.Array(pl.UInt8, 64)).to_numpy()
    pairs = np.ascontiguousarray(chars, dtype=np.uint8).view("<u2")  # (rows, 32) character pairs
    if not _PAIR_VALID[pairs].all():
        raise ValueError("a SHA-256 digest is not 64 lowercase hex characters")
    raw = np.ascontiguousarray(_PAIR_VALUE[pairs])
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(32), raw.shape[0], [None, pa.py_buffer(raw)])
    return pl.Series(hexes.name, pl.from_arrow(fixed)).cast(pl.Binary)


# --- signatures ------------------------------------------------------------------------------------------
def generate_signing_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private 32 bytes, public 32 bytes)."""
    sk = Ed25519PrivateKey.generate()
    return sk.private_bytes_raw(), sk.public_key().public_bytes_raw()


def signing_public_key(private_key: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def sign(private_key: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private_key).sign(message)


def verify_signature(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True only if ``signature`` is a valid Ed25519 signature of ``message`` under ``public_key``."""
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


# --- public-key encryption (key wrapping) --------------------------------------------------------------
def generate_encryption_key() -> tuple[bytes, bytes]:
    """A new X25519 key pair for HPKE as (private 32 bytes, public 32 bytes)."""
    sk = X25519PrivateKey.generate()
    return sk.private_bytes_raw(), sk.public_key().public_bytes_raw()


def encryption_public_key(private_key: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(private_key).public_key().public_bytes_raw()


def hpke_seal(recipient_public_key: bytes, plaintext: bytes, *, info: bytes) -> bytes:
    """HPKE single-shot encryption to the recipient; output is enc || ciphertext."""
    return _HPKE.encrypt(plaintext, X25519PublicKey.from_public_bytes(recipient_public_key), info=info)


def hpke_open(recipient_private_key: bytes, sealed: bytes, *, info: bytes) -> bytes:
    """Inverse of ``hpke_seal``; raises ``DecryptionFailed`` on a wrong key or any altered byte."""
    try:
        return _HPKE.decrypt(sealed, X25519PrivateKey.from_private_bytes(recipient_private_key), info=info)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("HPKE decryption failed") from exc


# --- symmetric authenticated encryption ------------------------------------------------------------------
def aead_encrypt(key: bytes, plaintext: bytes, *, aad: bytes, nonce: bytes | None = None) -> bytes:
    """AES-256-GCM; output is nonce (12 bytes) || ciphertext || tag. ``nonce`` only for test vectors."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def aead_decrypt(key: bytes, blob: bytes, *, aad: bytes) -> bytes:
    """Inverse of ``aead_encrypt``; raises ``DecryptionFailed`` if anything was altered."""
    if len(blob) < NONCE_BYTES + 16:
        raise DecryptionFailed("ciphertext too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
    except (InvalidTag, ValueError) as exc:
        raise DecryptionFailed("AES-GCM decryption failed") from exc


# --- key files -------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class PublicKeyFile:
    kind: str
    key: bytes
    label: str
    fingerprint: str


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"{where}: not valid base64") from exc


def _scrypt(passphrase: str, salt: bytes, log2n: int) -> bytes:
    return Scrypt(salt=salt, length=KEY_BYTES, n=2**log2n, r=_SCRYPT_R, p=_SCRYPT_P).derive(passphrase.encode("utf-8"))


def default_scrypt_log2n() -> int:
    """Scrypt cost for new key files: 17 unless KANSRIJK_SCRYPT_LOG2N asks for another value in [14, 20]."""
    raw = os.environ.get("KANSRIJK_SCRYPT_LOG2N")
    if raw is None:
        return _SCRYPT_LOG2N_DEFAULT
    value = int(raw)
    if not _SCRYPT_LOG2N_MIN <= value <= 20:
        raise KeyMaterialError(f"KANSRIJK_SCRYPT_LOG2N={raw} is outside 14..20")
    return value


def write_secret_key(
    path: Path, kind: SecretKind, key: bytes, passphrase: str, *, label: str = "", overwrite: bool = False
) -> str:
    """Encrypt ``key`` under ``passphrase`` and write it to ``path`` (mode 0600). Returns its fingerprint.

    The fingerprint stored is that of the public key for key pairs, of the key itself for symmetric keys.
    """
    path = Path(path)
    if kind not in _SECRET_KINDS:
        raise ValueError(f"unknown secret key kind {kind!r}")
    if not passphrase:
        raise KeyMaterialError(f"{path}: an empty passphrase is not allowed", hint="choose a passphrase")
    if path.exists() and not overwrite:
        raise KeyMaterialError(f"{path} exists already; refusing to overwrite a key", hint="choose another path")
    fp = fingerprint(kind, _public_of(kind, key))
    log2n = default_scrypt_log2n()
    salt = os.urandom(16)
    header = {
        "format": "kansrijk-secret-key",
        "version": 1,
        "kind": kind,
        "label": label,
        "fingerprint": fp,
        "kdf": {"name": "scrypt", "log2n": log2n, "r": _SCRYPT_R, "p": _SCRYPT_P, "salt": _b64(salt)},
        "cipher": "AES-256-GCM",
    }
    aad = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    sealed = aead_encrypt(_scrypt(passphrase, salt, log2n), key, aad=aad)
    document = {**header, "ciphertext": _b64(sealed)}
    atomic_write_bytes(path, (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)
    return fp


@dataclass(frozen=True, slots=True)
class SecretKeyFile:
    """A decrypted secret key and its label. The label is authenticated with the key (it is in the associated
    data of the encryption), so it can be trusted as much as the key itself."""

    kind: str
    key: bytes
    label: str
    fingerprint: str


def read_secret_key(path: Path, kind: SecretKind, passphrase: str) -> bytes:
    """Read and decrypt a secret key file (see ``read_secret_key_file``); only the key."""
    return read_secret_key_file(path, kind, passphrase).key


def read_secret_key_file(path: Path, kind: SecretKind, passphrase: str) -> SecretKeyFile:
    """Read and decrypt a secret key file. Refuses files readable by group or others, wrong kinds, weak
    KDF settings and wrong passphrases, each with its own message (none of which contains key material)."""
    path = Path(path)
    if not path.is_file():
        raise KeyMaterialError(f"{path}: key file not found")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise KeyMaterialError(
            f"{path}: key file is readable by others (mode {mode:04o})", hint=f"run: chmod 600 {path}"
        )
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != "kansrijk-secret-key" or document.get("version") != 1:
            raise KeyError("format")
        header = {k: document[k] for k in ("format", "version", "kind", "label", "fingerprint", "kdf", "cipher")}
        kdf = header["kdf"]
        salt, log2n = _unb64(kdf["salt"], str(path)), int(kdf["log2n"])
        sealed = _unb64(document["ciphertext"], str(path))
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyMaterialError(f"{path}: not a kansrijk secret key file") from exc
    if header["kind"] != kind:
        raise KeyMaterialError(f"{path}: holds a {header['kind']} key, expected a {kind} key")
    if kdf.get("name") != "scrypt" or log2n < _SCRYPT_LOG2N_MIN or kdf.get("r") != _SCRYPT_R:
        raise KeyMaterialError(f"{path}: key file uses KDF settings weaker than kansrijk accepts")
    aad = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    try:
        key = aead_decrypt(_scrypt(passphrase, salt, log2n), sealed, aad=aad)
    except DecryptionFailed:
        raise KeyMaterialError(
            f"{path}: wrong passphrase, or the key file was altered", hint="check the passphrase"
        ) from None
    if not constant_time_equal(fingerprint(kind, _public_of(kind, key)).encode(), header["fingerprint"].encode()):
        raise KeyMaterialError(f"{path}: key does not match its recorded fingerprint")
    return SecretKeyFile(kind=kind, key=key, label=str(header["label"]), fingerprint=str(header["fingerprint"]))


def write_public_key(path: Path, kind: PublicKind, key: bytes, *, label: str) -> str:
    """Write a public key file (JSON, world-readable). Returns its fingerprint."""
    fp = fingerprint(kind, key)
    document = {
        "format": "kansrijk-public-key",
        "version": 1,
        "kind": kind,
        "label": label,
        "fingerprint": fp,
        "key": _b64(key),
    }
    atomic_write_bytes(Path(path), (json.dumps(document, indent=2) + "\n").encode())
    return fp


def read_public_key(path: Path, kind: PublicKind) -> PublicKeyFile:
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        if document.get("format") != "kansrijk-public-key":
            raise KeyError("format")
        key = _unb64(document["key"], str(path))
        found_kind, label = document["kind"], document.get("label", "")
    except FileNotFoundError:
        raise KeyMaterialError(f"{path}: public key file not found") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise KeyMaterialError(f"{path}: not a kansrijk public key file") from exc
    if found_kind != kind:
        raise KeyMaterialError(f"{path}: holds a {found_kind} key, expected a {kind} key")
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(f"{path}: public key has {len(key)} bytes, expected {KEY_BYTES}")
    return PublicKeyFile(kind=kind, key=key, label=label, fingerprint=fingerprint(kind, key))


def _public_of(kind: str, key: bytes) -> bytes:
    if len(key) != KEY_BYTES:
        raise KeyMaterialError(f"a {kind} key must be {KEY_BYTES} bytes")
    if kind in ("ed25519-signing", "gate-signing"):
        return signing_public_key(key)
    if kind == "x25519-hpke":
        return encryption_public_key(key)
    return key  # symmetric keys: the fingerprint commits to the key itself
