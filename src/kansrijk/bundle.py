"""Sealed bundles: the one file a partner node hands to the coordinator (format version 1).

A bundle is a signed canonical-JSON manifest plus a Parquet payload encrypted for one coordinator key. The byte
layout is specified in ``docs/bundle-format.md`` and pinned by ``tests/vectors/``. This module is the only code
that writes or reads that layout; the coordinator uses the API below and nothing else.

Public API (stable; keyword-only options, frozen values):

``seal_bundle(payload, *, partner, extract_id, extract_year, policy_digest, quarantine_count, signing_key,
link_key_fingerprint, recipient_public_key, key_epoch=1, previous_bundle_hash=None, created_at=None,
declared_empty=False) -> bytes``
    Build the manifest for ``payload`` (a polars DataFrame: ``pseudonym`` Binary(32) first, then canonical
    variables of ``kansrijk.schema`` with their schema dtypes), encrypt and sign. Raises ``SchemaMismatch`` if the
    payload is not of that shape. ``declared_empty`` records, signed, that the partner holds nobody for the year
    (the payload must then have no rows); the coordinator refuses a 0-row bundle without it.
``seal_parquet(manifest, payload_parquet, *, signing_key, recipient_public_key) -> bytes``
    The lower layer: seal already-serialised Parquet bytes under a manifest built by ``build_manifest``.
``read_manifest(data) -> Manifest``
    Parse the framing and the manifest only. **Not verified**: for display and routing, never for trust.
``read_manifest_file(path) -> Manifest | None``
    The same from a file, reading only its header and manifest (not the payload); None when the file is not a
    bundle of this format. Not verified either.
``verify_bundle(data, trusted_keys) -> Manifest``
    Framing, then the manifest signature against the partner's registered key(s), then the manifest's schema.
    ``trusted_keys`` maps partner name to its raw Ed25519 public key (32 bytes) or a collection of them (key
    rotation). Nothing but the framing and the bounded manifest JSON is parsed before the signature verifies.
``open_bundle(data, *, trusted_keys, recipient_private_key) -> OpenedBundle``
    ``verify_bundle``, then the recipient check (before any decryption), then unwrap, decrypt, check the payload
    digest, size and row limits, and read the Parquet payload against the manifest's columns.
``bundle_digest(data) -> str``
    ``"sha256:<hex>"`` of the whole bundle file: the identity the coordinator records, and what the next bundle of
    the same partner names as ``previous_bundle_hash``.
``canonical_json(obj) -> bytes``
    The manifest canonicalisation (sorted keys, no whitespace, UTF-8, no floats).

Errors (all from ``kansrijk.errors``; none carries key material, a BSN or payload values):
``BundleMalformed`` (magic, version, framing, truncation, trailing bytes, size/row limits, non-canonical or invalid
manifest, unreadable payload), ``BundleTampered`` (signature, AEAD, payload digest), ``WrongRecipient`` (recipient
fingerprint differs from the private key's; checked before decrypting), ``UnknownPartner`` (partner or its signing
key fingerprint not in ``trusted_keys``), ``SchemaMismatch`` (schema version, columns or dtypes).

Replay and ordering are the coordinator's state checks: it gets ``bundle_digest`` and
``Manifest.previous_bundle_hash`` for them.
"""

from __future__ import annotations

import io
import json
import re
import struct
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from kansrijk import crypto
from kansrijk.errors import BundleMalformed, BundleTampered, SchemaMismatch, UnknownPartner, WrongRecipient
from kansrijk.schema import VARIABLES, schema_version

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "MAGIC",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_PAYLOAD_BYTES",
    "MAX_ROWS",
    "ColumnSpec",
    "KeyFingerprints",
    "Manifest",
    "OpenedBundle",
    "PayloadInfo",
    "build_manifest",
    "bundle_digest",
    "canonical_json",
    "open_bundle",
    "read_manifest",
    "read_manifest_file",
    "seal_bundle",
    "seal_parquet",
    "verify_bundle",
]

FORMAT_NAME = "kansrijk-bundle"
FORMAT_VERSION = 1
MAGIC = b"KRJBUNDL"

MAX_MANIFEST_BYTES = 64 * 1024
MAX_PAYLOAD_BYTES = 2 * 1024**3  # encrypted payload, as framed
MAX_DECOMPRESSED_BYTES = 8 * 1024**3  # Parquet's own uncompressed size, checked before decoding
MAX_ROWS = 50_000_000

SIGNATURE_CONTEXT = b"kansrijk/v1/bundle-manifest\x00"
DATA_KEY_INFO = b"kansrijk/v1/bundle-data-key\x00"
PAYLOAD_AAD = b"kansrijk/v1/bundle-payload\x00"

_SIGNATURE_BYTES = 64
_WRAPPED_KEY_BYTES = 32 + crypto.KEY_BYTES + 16  # HPKE enc (X25519) || AES-256-GCM(data key) || tag
_HEADER = struct.Struct(">8sHI")  # magic, version, manifest length
_U16 = struct.Struct(">H")
_U64 = struct.Struct(">Q")
_PARALLEL_HASH_BYTES = 1 << 20

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_EXTRACT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# --- values --------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ColumnSpec:
    """One payload column: its canonical variable name and its schema kind (``kansrijk.schema.Kind`` value)."""

    name: str
    kind: str


@dataclass(frozen=True, slots=True)
class KeyFingerprints:
    """Fingerprints (``kansrijk.crypto.fingerprint``) of the keys that made the bundle, and the key epoch."""

    signing: str
    link: str
    recipient: str
    epoch: int


@dataclass(frozen=True, slots=True)
class PayloadInfo:
    """The plaintext Parquet payload: its format, SHA-256 (hex) and size in bytes."""

    format: str
    sha256: str
    size: int


@dataclass(frozen=True, slots=True)
class Manifest:
    """The signed description of a bundle. Everything in it is public to anyone holding the bundle file."""

    format: str
    format_version: int
    partner: str
    schema_version: str
    policy_digest: str
    extract_id: str
    extract_year: int
    row_count: int
    quarantine_count: int
    columns: tuple[ColumnSpec, ...]
    keys: KeyFingerprints
    previous_bundle_hash: str | None
    payload: PayloadInfo
    created_at: str
    # The partner said explicitly that it holds nobody for the year (``prepare --declare-empty``). Present in the
    # JSON only when true, so every other manifest keeps its exact bytes; a 0-row manifest without it is refused
    # at ingest, and it never goes with rows.
    declared_empty: bool = False

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def to_json_object(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "format_version": self.format_version,
            "partner": self.partner,
            "schema_version": self.schema_version,
            "policy_digest": self.policy_digest,
            "extract_id": self.extract_id,
            "extract_year": self.extract_year,
            "row_count": self.row_count,
            "quarantine_count": self.quarantine_count,
            "columns": [{"name": c.name, "kind": c.kind} for c in self.columns],
            "keys": {
                "signing": self.keys.signing,
                "link": self.keys.link,
                "recipient": self.keys.recipient,
                "epoch": self.keys.epoch,
            },
            "previous_bundle_hash": self.previous_bundle_hash,
            "payload": {"format": self.payload.format, "sha256": self.payload.sha256, "size": self.payload.size},
            "created_at": self.created_at,
        } | ({"declared_empty": True} if self.declared_empty else {})

    def canonical_bytes(self) -> bytes:
        """The exact bytes that are signed and framed (see ``canonical_json``)."""
        return canonical_json(self.to_json_object())


@dataclass(frozen=True, slots=True)
class OpenedBundle:
    """A verified, decrypted bundle. ``payload`` has exactly the manifest's columns, typed as in the schema."""

    manifest: Manifest
    payload: pl.DataFrame
    bundle_digest: str


@dataclass(frozen=True, slots=True)
class _Frame:
    manifest_bytes: bytes
    signature: bytes
    wrapped_key: bytes
    payload: memoryview


# --- canonical JSON ------------------------------------------------------------------------------------------
def canonical_json(obj: Any) -> bytes:
    """Canonical JSON: object keys sorted by code point, no insignificant whitespace, UTF-8, strings escaped as
    Python's ``json`` does with ``ensure_ascii=False`` (only ``"``, ``\\``, and U+0000..U+001F). Floats are refused
    (manifests hold integers, strings, booleans, null, arrays and objects), which makes this coincide with
    RFC 8785 for every manifest."""
    _refuse_floats(obj)
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _refuse_floats(obj: Any) -> None:
    if isinstance(obj, float):
        raise TypeError("canonical JSON for manifests holds no floating-point numbers")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError("canonical JSON object keys must be strings")
            _refuse_floats(value)
    elif isinstance(obj, list | tuple):
        for value in obj:
            _refuse_floats(value)


def bundle_digest(data: bytes) -> str:
    """``"sha256:<hex>"`` of the complete bundle bytes."""
    return "sha256:" + crypto.sha256_hex(data)


# --- sealing -------------------------------------------------------------------------------------------------
def build_manifest(
    *,
    partner: str,
    extract_id: str,
    extract_year: int,
    policy_digest: str,
    row_count: int,
    quarantine_count: int,
    columns: Collection[ColumnSpec],
    signing_public_key: bytes,
    link_key_fingerprint: str,
    recipient_public_key: bytes,
    key_epoch: int,
    previous_bundle_hash: str | None,
    payload_sha256: str,
    payload_size: int,
    created_at: datetime | None = None,
    declared_empty: bool = False,
) -> Manifest:
    """A format-version-1 manifest, checked for well-formedness (``ValueError`` naming the field otherwise)."""
    when = (created_at or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    manifest = Manifest(
        format=FORMAT_NAME,
        format_version=FORMAT_VERSION,
        partner=partner,
        schema_version=schema_version(),
        policy_digest=policy_digest,
        extract_id=extract_id,
        extract_year=extract_year,
        row_count=row_count,
        quarantine_count=quarantine_count,
        columns=tuple(columns),
        keys=KeyFingerprints(
            signing=crypto.fingerprint("ed25519-signing", signing_public_key),
            link=link_key_fingerprint,
            recipient=crypto.fingerprint("x25519-hpke", recipient_public_key),
            epoch=key_epoch,
        ),
        previous_bundle_hash=previous_bundle_hash,
        payload=PayloadInfo(format="parquet", sha256=payload_sha256, size=payload_size),
        created_at=when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        declared_empty=declared_empty,
    )
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise ValueError(f"cannot build a bundle manifest: {problem}")
    return manifest


def seal_bundle(
    payload: pl.DataFrame,
    *,
    partner: str,
    extract_id: str,
    extract_year: int,
    policy_digest: str,
    quarantine_count: int,
    signing_key: bytes,
    link_key_fingerprint: str,
    recipient_public_key: bytes,
    key_epoch: int = 1,
    previous_bundle_hash: str | None = None,
    created_at: datetime | None = None,
    declared_empty: bool = False,
) -> bytes:
    """Serialise ``payload`` to Parquet, build and sign its manifest, encrypt it for ``recipient_public_key``.

    ``signing_key`` is the partner's raw Ed25519 private key; ``recipient_public_key`` the coordinator's raw
    X25519 public key. Refuses (``SchemaMismatch``) a payload whose columns are not ``pseudonym`` followed by
    canonical variables with their schema dtypes, or whose pseudonyms are not all 32 bytes.
    """
    columns = payload_columns(payload)
    buffer = io.BytesIO()
    payload.write_parquet(buffer, compression="zstd", statistics=False)
    parquet = buffer.getvalue()
    manifest = build_manifest(
        partner=partner,
        extract_id=extract_id,
        extract_year=extract_year,
        policy_digest=policy_digest,
        row_count=payload.height,
        quarantine_count=quarantine_count,
        columns=columns,
        signing_public_key=crypto.signing_public_key(signing_key),
        link_key_fingerprint=link_key_fingerprint,
        recipient_public_key=recipient_public_key,
        key_epoch=key_epoch,
        previous_bundle_hash=previous_bundle_hash,
        payload_sha256=crypto.sha256_hex(parquet),
        payload_size=len(parquet),
        created_at=created_at,
        declared_empty=declared_empty,
    )
    return seal_parquet(manifest, parquet, signing_key=signing_key, recipient_public_key=recipient_public_key)


def seal_parquet(
    manifest: Manifest,
    payload_parquet: bytes,
    *,
    signing_key: bytes,
    recipient_public_key: bytes,
    _data_key: bytes | None = None,
    _nonce: bytes | None = None,
    _wrapped_key: bytes | None = None,
) -> bytes:
    """Seal Parquet bytes under ``manifest``. The manifest must describe these bytes and these keys exactly.

    The underscored parameters exist only to reproduce the test vectors (HPKE's ephemeral key is random, so a
    vector pins the wrapped key too); production code never passes them.
    """
    if manifest.payload.size != len(payload_parquet):
        raise ValueError("manifest payload size does not match the payload bytes")
    if manifest.keys.signing != crypto.fingerprint("ed25519-signing", crypto.signing_public_key(signing_key)):
        raise ValueError("manifest signing fingerprint does not match the signing key")
    if manifest.keys.recipient != crypto.fingerprint("x25519-hpke", recipient_public_key):
        raise ValueError("manifest recipient fingerprint does not match the recipient key")
    manifest_bytes = manifest.canonical_bytes()
    if len(manifest_bytes) > MAX_MANIFEST_BYTES:
        raise ValueError("manifest exceeds the format's size limit")
    manifest_digest = crypto.sha256(manifest_bytes)
    data_key = crypto.random_key() if _data_key is None else _data_key

    # The payload digest and the encryption read the same bytes independently: overlap them on large payloads.
    if len(payload_parquet) >= _PARALLEL_HASH_BYTES:
        with ThreadPoolExecutor(max_workers=1) as pool:
            digest_future = pool.submit(crypto.sha256_hex, payload_parquet)
            ciphertext = crypto.aead_encrypt(data_key, payload_parquet, aad=PAYLOAD_AAD + manifest_digest, nonce=_nonce)
            payload_sha256 = digest_future.result()
    else:
        ciphertext = crypto.aead_encrypt(data_key, payload_parquet, aad=PAYLOAD_AAD + manifest_digest, nonce=_nonce)
        payload_sha256 = crypto.sha256_hex(payload_parquet)
    if payload_sha256 != manifest.payload.sha256:
        raise ValueError("manifest payload digest does not match the payload bytes")

    wrapped = (
        crypto.hpke_seal(recipient_public_key, data_key, info=DATA_KEY_INFO + manifest_digest)
        if _wrapped_key is None
        else _wrapped_key
    )
    signature = crypto.sign(signing_key, SIGNATURE_CONTEXT + manifest_bytes)
    return b"".join(
        (
            _HEADER.pack(MAGIC, FORMAT_VERSION, len(manifest_bytes)),
            manifest_bytes,
            signature,
            _U16.pack(len(wrapped)),
            wrapped,
            _U64.pack(len(ciphertext)),
            ciphertext,
        )
    )


def payload_columns(payload: pl.DataFrame) -> tuple[ColumnSpec, ...]:
    """The manifest columns of a payload frame; ``SchemaMismatch`` if it is not a valid payload shape."""
    names = payload.columns
    if not names or names[0] != "pseudonym":
        raise SchemaMismatch("payload: the first column must be 'pseudonym'")
    if len(set(names)) != len(names):
        raise SchemaMismatch("payload: column names repeat")
    specs = []
    for name in names:
        var = VARIABLES.get(name)
        if var is None:
            raise SchemaMismatch(f"payload: column {name!r} is not a canonical variable of schema {schema_version()}")
        if payload.schema[name] != var.dtype:
            raise SchemaMismatch(
                f"payload: column {name!r} has dtype {payload.schema[name]}, schema {schema_version()} says {var.dtype}"
            )
        specs.append(ColumnSpec(name=name, kind=str(var.kind)))
    lengths = payload.select(bad=(pl.col("pseudonym").is_null() | (pl.col("pseudonym").bin.size() != 32)).sum()).item()
    if lengths:
        raise SchemaMismatch(f"payload: {lengths} pseudonym(s) are missing or not 32 bytes")
    return tuple(specs)


# --- reading -------------------------------------------------------------------------------------------------
def _parse_frame(data: bytes | bytearray | memoryview, *, max_payload_bytes: int) -> _Frame:
    view = memoryview(data).cast("B")
    if len(view) < _HEADER.size:
        raise BundleMalformed("bundle: truncated before the end of its header", hint="the file is not a bundle")
    magic, version, manifest_len = _HEADER.unpack_from(view, 0)
    if magic != MAGIC:
        raise BundleMalformed("bundle: not a kansrijk bundle (wrong magic bytes)", hint="check the file")
    if version != FORMAT_VERSION:
        raise BundleMalformed(
            f"bundle: format version {version} is not supported (this kansrijk reads version {FORMAT_VERSION})",
            hint="upgrade kansrijk or ask the partner to seal with a supported version",
        )
    if not 0 < manifest_len <= MAX_MANIFEST_BYTES:
        raise BundleMalformed(f"bundle: manifest length {manifest_len} is outside 1..{MAX_MANIFEST_BYTES}")
    offset = _HEADER.size
    manifest_bytes = _take(view, offset, manifest_len, "manifest")
    offset += manifest_len
    signature = _take(view, offset, _SIGNATURE_BYTES, "signature")
    offset += _SIGNATURE_BYTES
    (wrapped_len,) = _U16.unpack(_take(view, offset, _U16.size, "wrapped-key length"))
    offset += _U16.size
    if wrapped_len != _WRAPPED_KEY_BYTES:
        raise BundleMalformed(f"bundle: wrapped data key has {wrapped_len} bytes, version 1 uses {_WRAPPED_KEY_BYTES}")
    wrapped_key = _take(view, offset, wrapped_len, "wrapped data key")
    offset += wrapped_len
    (payload_len,) = _U64.unpack(_take(view, offset, _U64.size, "payload length"))
    offset += _U64.size
    if payload_len > max_payload_bytes:
        raise BundleMalformed(
            f"bundle: payload of {payload_len} bytes exceeds the limit of {max_payload_bytes} bytes",
            hint="raise the limit only for a partner known to send extracts this large",
        )
    if payload_len < crypto.NONCE_BYTES + 16:
        raise BundleMalformed("bundle: payload is shorter than a nonce and a tag")
    if len(view) - offset < payload_len:
        raise BundleMalformed("bundle: truncated inside the payload", hint="copy the complete file again")
    if len(view) - offset > payload_len:
        raise BundleMalformed("bundle: unexpected bytes after the payload")
    return _Frame(
        manifest_bytes=manifest_bytes,
        signature=signature,
        wrapped_key=wrapped_key,
        payload=view[offset : offset + payload_len],
    )


def _take(view: memoryview, offset: int, length: int, what: str) -> bytes:
    if len(view) - offset < length:
        raise BundleMalformed(f"bundle: truncated inside the {what}", hint="copy the complete file again")
    return bytes(view[offset : offset + length])


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key")
    return dict(pairs)


def _parse_manifest(manifest_bytes: bytes) -> Manifest:
    try:
        obj = json.loads(manifest_bytes.decode("utf-8"), object_pairs_hook=_reject_duplicates)
    except (UnicodeDecodeError, ValueError):
        raise BundleMalformed("bundle: manifest is not valid UTF-8 JSON without duplicate keys") from None
    try:
        canonical = canonical_json(obj)
    except TypeError:
        raise BundleMalformed("bundle: manifest holds a floating-point number or a non-string key") from None
    if canonical != manifest_bytes:
        raise BundleMalformed("bundle: manifest is not in canonical form (see docs/bundle-format.md)")
    try:
        manifest = _manifest_from_object(obj)
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleMalformed(f"bundle: manifest is invalid: {exc}") from None
    problem = _manifest_problem(manifest)
    if problem is not None:
        raise BundleMalformed(f"bundle: manifest is invalid: {problem}")
    return manifest


_TOP_KEYS = {
    "format",
    "format_version",
    "partner",
    "schema_version",
    "policy_digest",
    "extract_id",
    "extract_year",
    "row_count",
    "quarantine_count",
    "columns",
    "keys",
    "previous_bundle_hash",
    "payload",
    "created_at",
}


def _expect(obj: Any, path: str, kind: type | tuple[type, ...]) -> Any:
    # bool is an int subclass in Python; manifests never use a boolean where an integer is meant.
    if isinstance(obj, bool) and kind is int:
        raise TypeError(f"{path}: expected an integer")
    if not isinstance(obj, kind):
        name = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
        raise TypeError(f"{path}: expected {name}")
    return obj


def _exact_keys(obj: dict[str, Any], keys: set[str], path: str) -> None:
    if set(obj) != keys:
        extra, missing = sorted(set(obj) - keys), sorted(keys - set(obj))
        raise ValueError(f"{path}: unexpected keys {extra}, missing keys {missing}")


def _manifest_from_object(obj: Any) -> Manifest:
    _expect(obj, "manifest", dict)
    _exact_keys(obj, _TOP_KEYS | ({"declared_empty"} & set(obj)), "manifest")
    if "declared_empty" in obj and obj["declared_empty"] is not True:
        raise ValueError("declared_empty: present only as true")
    keys = _expect(obj["keys"], "keys", dict)
    _exact_keys(keys, {"signing", "link", "recipient", "epoch"}, "keys")
    payload = _expect(obj["payload"], "payload", dict)
    _exact_keys(payload, {"format", "sha256", "size"}, "payload")
    columns = []
    for i, col in enumerate(_expect(obj["columns"], "columns", list)):
        _expect(col, f"columns[{i}]", dict)
        _exact_keys(col, {"name", "kind"}, f"columns[{i}]")
        columns.append(
            ColumnSpec(name=_expect(col["name"], f"columns[{i}].name", str), kind=_expect(col["kind"], "kind", str))
        )
    previous = obj["previous_bundle_hash"]
    return Manifest(
        format=_expect(obj["format"], "format", str),
        format_version=_expect(obj["format_version"], "format_version", int),
        partner=_expect(obj["partner"], "partner", str),
        schema_version=_expect(obj["schema_version"], "schema_version", str),
        policy_digest=_expect(obj["policy_digest"], "policy_digest", str),
        extract_id=_expect(obj["extract_id"], "extract_id", str),
        extract_year=_expect(obj["extract_year"], "extract_year", int),
        row_count=_expect(obj["row_count"], "row_count", int),
        quarantine_count=_expect(obj["quarantine_count"], "quarantine_count", int),
        columns=tuple(columns),
        keys=KeyFingerprints(
            signing=_expect(keys["signing"], "keys.signing", str),
            link=_expect(keys["link"], "keys.link", str),
            recipient=_expect(keys["recipient"], "keys.recipient", str),
            epoch=_expect(keys["epoch"], "keys.epoch", int),
        ),
        previous_bundle_hash=None if previous is None else _expect(previous, "previous_bundle_hash", str),
        payload=PayloadInfo(
            format=_expect(payload["format"], "payload.format", str),
            sha256=_expect(payload["sha256"], "payload.sha256", str),
            size=_expect(payload["size"], "payload.size", int),
        ),
        created_at=_expect(obj["created_at"], "created_at", str),
        declared_empty="declared_empty" in obj,
    )


def _manifest_problem(m: Manifest) -> str | None:
    """The first structural problem of a manifest (not schema compatibility), or None."""
    checks: list[tuple[bool, str]] = [
        (m.format == FORMAT_NAME, f"format must be {FORMAT_NAME!r}"),
        (m.format_version == FORMAT_VERSION, f"format_version must be {FORMAT_VERSION}"),
        (bool(_NAME.match(m.partner)), "partner must be a lower-case name"),
        (bool(_DIGEST.match(m.policy_digest)), "policy_digest must be 'sha256:' and 64 hex digits"),
        (bool(_EXTRACT_ID.match(m.extract_id)), "extract_id must be 1..128 characters of [A-Za-z0-9._-]"),
        (1900 <= m.extract_year <= 2100, "extract_year must be in 1900..2100"),
        (0 <= m.row_count <= MAX_ROWS, f"row_count must be in 0..{MAX_ROWS}"),
        (not m.declared_empty or m.row_count == 0, "declared_empty goes only with row_count 0"),
        (0 <= m.quarantine_count <= 2**53, "quarantine_count must be a non-negative integer"),
        (all(bool(_NAME.match(c.name)) for c in m.columns), "column names must be lower-case names"),
        (all(bool(_FINGERPRINT.match(f)) for f in (m.keys.signing, m.keys.link, m.keys.recipient)), "fingerprints"),
        (0 <= m.keys.epoch <= 2**31, "keys.epoch must be a non-negative integer"),
        (m.previous_bundle_hash is None or bool(_DIGEST.match(m.previous_bundle_hash)), "previous_bundle_hash"),
        (m.payload.format == "parquet", "payload.format must be 'parquet'"),
        (bool(_SHA256.match(m.payload.sha256)), "payload.sha256 must be 64 hex digits"),
        (0 < m.payload.size <= MAX_DECOMPRESSED_BYTES, "payload.size is outside the format's limits"),
        (bool(_TIMESTAMP.match(m.created_at)), "created_at must be YYYY-MM-DDTHH:MM:SSZ"),
    ]
    for ok, message in checks:
        if not ok:
            return message
    return None


def read_manifest(data: bytes, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES) -> Manifest:
    """The manifest of a bundle, parsed but **not verified**. Use ``verify_bundle`` before trusting anything."""
    return _parse_manifest(_parse_frame(data, max_payload_bytes=max_payload_bytes).manifest_bytes)


def read_manifest_file(path: Any) -> Manifest | None:
    """The manifest of the bundle file at ``path`` from its first bytes only (a payload may be gigabytes), or None
    when the file is not a readable bundle of this format. **Not verified**: for finding files, never for trust."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return None
            magic, version, manifest_len = _HEADER.unpack(head)
            if magic != MAGIC or version != FORMAT_VERSION or not 0 < manifest_len <= MAX_MANIFEST_BYTES:
                return None
            manifest_bytes = fh.read(manifest_len)
    except OSError:
        return None
    try:
        return _parse_manifest(manifest_bytes)
    except BundleMalformed:
        return None


def _candidate_keys(value: bytes | Collection[bytes]) -> list[bytes]:
    if isinstance(value, bytes | bytearray):
        return [bytes(value)]
    return [bytes(k) for k in value]


def _verify(frame: _Frame, trusted_keys: Mapping[str, bytes | Collection[bytes]]) -> Manifest:
    manifest = _parse_manifest(frame.manifest_bytes)
    if manifest.partner not in trusted_keys:
        raise UnknownPartner(
            f"bundle: partner {manifest.partner!r} is not in the partner registry",
            hint="register the partner's public signing key, or refuse the bundle",
        )
    key = next(
        (
            k
            for k in _candidate_keys(trusted_keys[manifest.partner])
            if crypto.constant_time_equal(
                crypto.fingerprint("ed25519-signing", k).encode(), manifest.keys.signing.encode()
            )
        ),
        None,
    )
    if key is None:
        raise UnknownPartner(
            f"bundle: signing key {manifest.keys.signing} is not registered (or was revoked) for partner "
            f"{manifest.partner!r}",
            hint="check the partner registry; after a key rotation register the new public key",
        )
    if not crypto.verify_signature(key, SIGNATURE_CONTEXT + frame.manifest_bytes, frame.signature):
        raise BundleTampered(
            f"bundle: manifest signature of partner {manifest.partner!r} does not verify",
            hint="the bundle was altered or damaged; ask the partner to send it again",
        )
    if manifest.schema_version != schema_version():
        raise SchemaMismatch(
            f"bundle: schema version {manifest.schema_version!r}, this coordinator reads {schema_version()!r}",
            hint="the partner and the coordinator must run the same kansrijk schema version",
        )
    names = manifest.column_names
    if not names or names[0] != "pseudonym" or len(set(names)) != len(names):
        raise SchemaMismatch("bundle: columns must start with 'pseudonym' and not repeat")
    for col in manifest.columns:
        var = VARIABLES.get(col.name)
        if var is None or str(var.kind) != col.kind:
            raise SchemaMismatch(
                f"bundle: column {col.name!r} of kind {col.kind!r} is not in schema {schema_version()}",
                hint="the partner's sharing policy maps to a variable this schema does not have",
            )
    return manifest


def verify_bundle(
    data: bytes,
    trusted_keys: Mapping[str, bytes | Collection[bytes]],
    *,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
) -> Manifest:
    """Verify a bundle's framing and manifest signature; return the manifest only if it verifies.

    Checks, in order (fail closed, first failure raises): framing and version (``BundleMalformed``), manifest
    canonical form and fields (``BundleMalformed``), partner and signing-key fingerprint registered
    (``UnknownPartner``), Ed25519 signature (``BundleTampered``), schema version and columns (``SchemaMismatch``).
    The encrypted payload is authenticated by ``open_bundle`` (AEAD and the signed payload digest).
    """
    return _verify(_parse_frame(data, max_payload_bytes=max_payload_bytes), trusted_keys)


def open_bundle(
    data: bytes,
    *,
    trusted_keys: Mapping[str, bytes | Collection[bytes]],
    recipient_private_key: bytes,
    max_payload_bytes: int = MAX_PAYLOAD_BYTES,
    max_decompressed_bytes: int = MAX_DECOMPRESSED_BYTES,
    max_rows: int = MAX_ROWS,
) -> OpenedBundle:
    """Verify, check the recipient, decrypt and read a bundle (see the module docstring for the order).

    ``recipient_private_key`` is the coordinator's raw X25519 private key. Raises ``WrongRecipient`` before any
    decryption if the bundle names another recipient key; ``BundleTampered`` if unwrapping, decryption or the
    payload digest fails; ``BundleMalformed`` on limits or an unreadable payload; ``SchemaMismatch`` if the
    payload's columns or dtypes differ from the manifest's.
    """
    frame = _parse_frame(data, max_payload_bytes=max_payload_bytes)
    manifest = _verify(frame, trusted_keys)
    own = crypto.fingerprint("x25519-hpke", crypto.encryption_public_key(recipient_private_key))
    if own != manifest.keys.recipient:
        raise WrongRecipient(
            f"bundle: sealed for coordinator key {manifest.keys.recipient}, this key is {own}",
            hint="ask the partner to seal with the coordinator's current public key",
        )
    if manifest.row_count > max_rows:
        raise BundleMalformed(f"bundle: {manifest.row_count} rows exceed the limit of {max_rows}")
    if manifest.payload.size > max_decompressed_bytes or manifest.payload.size > max_payload_bytes:
        raise BundleMalformed(f"bundle: payload of {manifest.payload.size} bytes exceeds the limit")
    manifest_digest = crypto.sha256(frame.manifest_bytes)
    try:
        data_key = crypto.hpke_open(recipient_private_key, frame.wrapped_key, info=DATA_KEY_INFO + manifest_digest)
        plaintext = crypto.aead_decrypt(data_key, bytes(frame.payload), aad=PAYLOAD_AAD + manifest_digest)
    except crypto.DecryptionFailed:
        raise BundleTampered(
            "bundle: the encrypted payload or its wrapped key does not authenticate",
            hint="the bundle was altered or damaged; ask the partner to send it again",
        ) from None
    if len(plaintext) != manifest.payload.size or crypto.sha256_hex(plaintext) != manifest.payload.sha256:
        raise BundleTampered("bundle: decrypted payload does not match the signed payload digest")
    payload = _read_payload(plaintext, manifest, max_rows=max_rows, max_decompressed_bytes=max_decompressed_bytes)
    return OpenedBundle(manifest=manifest, payload=payload, bundle_digest=bundle_digest(data))


def _read_payload(plaintext: bytes, manifest: Manifest, *, max_rows: int, max_decompressed_bytes: int) -> pl.DataFrame:
    try:
        meta = pq.ParquetFile(io.BytesIO(plaintext)).metadata
    except Exception:  # pyarrow raises several types for broken files
        raise BundleMalformed("bundle: payload is not a readable Parquet file") from None
    uncompressed = sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
    if meta.num_rows != manifest.row_count or meta.num_rows > max_rows:
        raise BundleMalformed(
            f"bundle: payload holds {meta.num_rows} rows, the manifest says {manifest.row_count} (limit {max_rows})"
        )
    if uncompressed > max_decompressed_bytes:
        raise BundleMalformed(f"bundle: payload decompresses to {uncompressed} bytes, over the limit")
    try:
        frame = pl.read_parquet(io.BytesIO(plaintext))
    except Exception:
        raise BundleMalformed("bundle: payload is not a readable Parquet file") from None
    if tuple(frame.columns) != manifest.column_names:
        raise SchemaMismatch("bundle: payload columns differ from the manifest's columns")
    try:
        payload_columns(frame)
    except SchemaMismatch as exc:
        raise SchemaMismatch(f"bundle: {exc.message}") from None
    return frame
