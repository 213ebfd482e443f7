"""Pinned vectors for the partner side: P1 pseudonyms, manifest canonical bytes, and a bundle byte for byte.

Another implementation of docs/bundle-format.md reproduces these from the same inputs. A failure here means the
format changed: bump FORMAT_VERSION and regenerate with tests/vectors/generate_node_vectors.py.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import struct
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from kansrijk import bundle, crypto
from kansrijk.pseudonym import bsn_is_valid, pseudonymise

HERE = Path(__file__).parent
PSEUDONYMS = json.loads((HERE / "pseudonyms_v1.json").read_text())
BUNDLE = json.loads((HERE / "bundle_v1.json").read_text())


@pytest.fixture(autouse=True)
def _pinned_schema_version(monkeypatch):
    """The vectors pin the manifest's schema version as the opaque string "1"; in a run it is the active study's
    digest, which changes with every edit of the study file, while the format these vectors pin does not."""
    monkeypatch.setattr(bundle, "schema_version", lambda: BUNDLE_SCHEMA_VERSION)


BUNDLE_SCHEMA_VERSION = "1"


def _hex(name: str) -> bytes:
    return bytes.fromhex(BUNDLE[name])


@pytest.mark.parametrize("case", PSEUDONYMS["cases"], ids=[c["bsn"] for c in PSEUDONYMS["cases"]])
def test_pseudonym_vectors(case):
    key = bytes.fromhex(PSEUDONYMS["link_key_hex"])
    assert bsn_is_valid(case["bsn"])
    assert pseudonymise(key, pl.Series([case["bsn"]]))[0].hex() == case["pseudonym_hex"]
    # independent of kansrijk: the definition in docs/bundle-format.md, with the standard library
    assert hmac.new(key, b"kansrijk/v1/bsn" + case["bsn"].encode(), hashlib.sha256).hexdigest() == case["pseudonym_hex"]


def test_link_key_fingerprint_vector():
    key = bytes.fromhex(PSEUDONYMS["link_key_hex"])
    assert crypto.fingerprint("link-key", key) == PSEUDONYMS["link_key_fingerprint"]
    expected = hashlib.sha256(b"kansrijk/v1/fingerprint/link-key/" + key).hexdigest()[:32]
    assert PSEUDONYMS["link_key_fingerprint"] == expected


def _manifest() -> bundle.Manifest:
    parquet = _hex("payload_parquet_hex")
    frame = pl.read_parquet(io.BytesIO(parquet))
    return bundle.build_manifest(
        partner="gemeente",
        extract_id="gemeente-2023-vector",
        extract_year=2023,
        policy_digest="sha256:" + "0" * 64,
        row_count=frame.height,
        quarantine_count=1,
        columns=bundle.payload_columns(frame),
        signing_public_key=_hex("signing_public_key_hex"),
        link_key_fingerprint=crypto.fingerprint("link-key", _hex("link_key_hex")),
        recipient_public_key=_hex("recipient_public_key_hex"),
        key_epoch=1,
        previous_bundle_hash="sha256:" + "1" * 64,
        payload_sha256=crypto.sha256_hex(parquet),
        payload_size=len(parquet),
        created_at=datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC),
    )


def test_manifest_canonical_bytes_vector():
    canonical = _manifest().canonical_bytes()
    assert canonical == BUNDLE["manifest_canonical"].encode("utf-8")
    assert hashlib.sha256(canonical).hexdigest() == BUNDLE["manifest_sha256_hex"]


def test_key_vectors_derive_their_public_halves():
    assert crypto.signing_public_key(_hex("signing_private_key_hex")) == _hex("signing_public_key_hex")
    assert crypto.encryption_public_key(_hex("recipient_private_key_hex")) == _hex("recipient_public_key_hex")


def test_deterministic_seal_reproduces_the_bundle_byte_for_byte():
    data = bundle.seal_parquet(
        _manifest(),
        _hex("payload_parquet_hex"),
        signing_key=_hex("signing_private_key_hex"),
        recipient_public_key=_hex("recipient_public_key_hex"),
        _data_key=_hex("data_key_hex"),
        _nonce=_hex("nonce_hex"),
        _wrapped_key=_hex("wrapped_key_hex"),
    )
    assert data == _hex("bundle_hex")
    assert bundle.bundle_digest(data) == BUNDLE["bundle_digest"]


def test_vector_bundle_layout_matches_the_spec():
    data = _hex("bundle_hex")
    manifest = BUNDLE["manifest_canonical"].encode()
    assert data[:8] == b"KRJBUNDL"
    assert struct.unpack(">HI", data[8:14]) == (1, len(manifest))
    assert data[14 : 14 + len(manifest)] == manifest
    sig = data[14 + len(manifest) : 78 + len(manifest)]
    assert crypto.verify_signature(_hex("signing_public_key_hex"), b"kansrijk/v1/bundle-manifest\x00" + manifest, sig)
    rest = data[78 + len(manifest) :]
    assert struct.unpack(">H", rest[:2]) == (80,) and rest[2:82] == _hex("wrapped_key_hex")
    (plen,) = struct.unpack(">Q", rest[82:90])
    payload = rest[90:]
    assert len(payload) == plen and payload[:12] == _hex("nonce_hex")
    digest = hashlib.sha256(manifest).digest()
    key = crypto.hpke_open(
        _hex("recipient_private_key_hex"), _hex("wrapped_key_hex"), info=b"kansrijk/v1/bundle-data-key\x00" + digest
    )
    assert key == _hex("data_key_hex")
    assert crypto.aead_decrypt(key, payload, aad=b"kansrijk/v1/bundle-payload\x00" + digest) == _hex(
        "payload_parquet_hex"
    )


def test_vector_bundle_opens_to_the_recorded_rows():
    opened = bundle.open_bundle(
        _hex("bundle_hex"),
        trusted_keys={"gemeente": _hex("signing_public_key_hex")},
        recipient_private_key=_hex("recipient_private_key_hex"),
    )
    rows = [{**r, "pseudonym": r["pseudonym"].hex()} for r in opened.payload.to_dicts()]
    assert rows == BUNDLE["payload_rows"]
    assert opened.bundle_digest == BUNDLE["bundle_digest"]
