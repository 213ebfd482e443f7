"""The bundle format: round trip, fail-closed verification with one error per failure, limits, canonical form."""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kansrijk import bundle, crypto
from kansrijk.errors import (
    BundleMalformed,
    BundleTampered,
    KansrijkError,
    SchemaMismatch,
    UnknownPartner,
    WrongRecipient,
)

POLICY = "sha256:" + "ab" * 32


def _payload(rows: int = 40, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "pseudonym": [rng.bytes(32) for _ in range(rows)],
            "year": np.full(rows, 2023, dtype=np.int32),
            "birth_year": rng.integers(2006, 2020, rows).astype(np.int32),
            "sex": rng.choice(["M", "F"], rows).tolist(),
            "woz_eur": (rng.integers(100, 900, rows) * 1000).astype(np.int32),
            "bmi": rng.uniform(12, 30, rows).round(1),
        },
        schema={
            "pseudonym": pl.Binary,
            "year": pl.Int32,
            "birth_year": pl.Int32,
            "sex": pl.String,
            "woz_eur": pl.Int32,
            "bmi": pl.Float64,
        },
    )


class Keys:
    def __init__(self) -> None:
        self.signing, self.signing_public = crypto.generate_signing_key()
        self.recipient, self.recipient_public = crypto.generate_encryption_key()
        self.link = crypto.random_key()
        self.trusted = {"gemeente": self.signing_public}


@pytest.fixture
def keys() -> Keys:
    return Keys()


def _seal(keys: Keys, payload: pl.DataFrame | None = None, **overrides) -> bytes:
    options = dict(
        partner="gemeente",
        extract_id="gemeente-2023-0001",
        extract_year=2023,
        policy_digest=POLICY,
        quarantine_count=3,
        signing_key=keys.signing,
        link_key_fingerprint=crypto.fingerprint("link-key", keys.link),
        recipient_public_key=keys.recipient_public,
        key_epoch=1,
        previous_bundle_hash=None,
        created_at=datetime(2024, 6, 1, 12, 0, tzinfo=UTC),
    )
    options.update(overrides)
    return bundle.seal_bundle(_payload() if payload is None else payload, **options)


def _sections(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges (start, end) of each framed section."""
    (mlen,) = struct.unpack(">I", data[10:14])
    m0 = 14
    s0 = m0 + mlen
    w_len0 = s0 + 64
    (wlen,) = struct.unpack(">H", data[w_len0 : w_len0 + 2])
    w0 = w_len0 + 2
    p_len0 = w0 + wlen
    p0 = p_len0 + 8
    return {
        "magic": (0, 8),
        "manifest": (m0, s0),
        "signature": (s0, w_len0),
        "wrapped_key": (w0, p_len0),
        "nonce": (p0, p0 + 12),
        "ciphertext": (p0 + 12, len(data) - 16),
        "tag": (len(data) - 16, len(data)),
    }


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


def test_sealed_bundle_opens_to_the_same_payload_and_manifest(keys):
    payload = _payload()
    data = _seal(keys, payload, previous_bundle_hash="sha256:" + "cd" * 32)
    opened = bundle.open_bundle(data, trusted_keys=keys.trusted, recipient_private_key=keys.recipient)
    assert opened.payload.equals(payload)
    assert opened.payload.schema == payload.schema
    m = opened.manifest
    assert (m.partner, m.extract_year, m.row_count, m.quarantine_count) == ("gemeente", 2023, 40, 3)
    assert m.column_names == tuple(payload.columns)
    assert m.previous_bundle_hash == "sha256:" + "cd" * 32
    assert m.keys.link == crypto.fingerprint("link-key", keys.link)
    assert m.keys.recipient == crypto.fingerprint("x25519-hpke", keys.recipient_public)
    assert opened.bundle_digest == bundle.bundle_digest(data) == "sha256:" + crypto.sha256_hex(data)


def test_manifest_is_canonical_json_in_the_frame(keys):
    data = _seal(keys)
    start, end = _sections(data)["manifest"]
    raw = data[start:end]
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert data[:8] == bundle.MAGIC and struct.unpack(">H", data[8:10])[0] == bundle.FORMAT_VERSION


def test_read_manifest_parses_without_any_key(keys):
    data = _seal(keys)
    assert bundle.read_manifest(data) == bundle.verify_bundle(data, keys.trusted)


@pytest.mark.parametrize("section", ["manifest", "signature"])
def test_altered_manifest_or_signature_is_tampered(keys, section):
    data = _seal(keys)
    start, end = _sections(data)[section]
    if section == "manifest":
        # change a value without breaking canonical form: the row count digit
        raw = data[start:end].replace(b'"row_count":40', b'"row_count":41')
        altered = data[:start] + raw + data[end:]
    else:
        altered = _flip(data, start + 5)
    with pytest.raises(BundleTampered):
        bundle.verify_bundle(altered, keys.trusted)


@pytest.mark.parametrize("section", ["wrapped_key", "nonce", "ciphertext", "tag"])
def test_altered_encrypted_parts_are_tampered_on_open(keys, section):
    data = _seal(keys)
    start, end = _sections(data)[section]
    altered = _flip(data, (start + end) // 2)
    bundle.verify_bundle(altered, keys.trusted)  # the manifest itself still verifies
    with pytest.raises(BundleTampered):
        bundle.open_bundle(altered, trusted_keys=keys.trusted, recipient_private_key=keys.recipient)


def test_payload_swapped_from_another_bundle_is_tampered(keys):
    first, second = _seal(keys), _seal(keys, _payload(seed=9))
    a, b = _sections(first), _sections(second)
    spliced = first[: a["wrapped_key"][0] - 2] + second[b["wrapped_key"][0] - 2 :]
    with pytest.raises(BundleTampered):
        bundle.open_bundle(spliced, trusted_keys=keys.trusted, recipient_private_key=keys.recipient)


def test_payload_rewrapped_by_an_attacker_for_the_coordinator_is_tampered(keys):
    # The coordinator's public key is public: an attacker can wrap a data key of their own. The signed
    # payload digest is what stops that.
    data = _seal(keys)
    sec = _sections(data)
    manifest_bytes = data[sec["manifest"][0] : sec["manifest"][1]]
    digest = crypto.sha256(manifest_bytes)
    own_key = crypto.random_key()
    wrapped = crypto.hpke_seal(keys.recipient_public, own_key, info=bundle.DATA_KEY_INFO + digest)
    buf = io.BytesIO()
    _payload(seed=5).write_parquet(buf)
    ciphertext = crypto.aead_encrypt(own_key, buf.getvalue(), aad=bundle.PAYLOAD_AAD + digest)
    forged = data[: sec["wrapped_key"][0]] + wrapped + struct.pack(">Q", len(ciphertext)) + ciphertext
    with pytest.raises(BundleTampered, match="payload digest"):
        bundle.open_bundle(forged, trusted_keys=keys.trusted, recipient_private_key=keys.recipient)


def test_wrong_recipient_is_refused_before_decryption(keys):
    data = _seal(keys)
    other_private, _ = crypto.generate_encryption_key()
    with pytest.raises(WrongRecipient):
        bundle.open_bundle(data, trusted_keys=keys.trusted, recipient_private_key=other_private)


def test_unknown_partner_and_unregistered_key_are_refused(keys):
    data = _seal(keys)
    with pytest.raises(UnknownPartner, match="not in the partner registry"):
        bundle.verify_bundle(data, {"cbs": keys.signing_public})
    with pytest.raises(UnknownPartner, match="not registered"):
        bundle.verify_bundle(data, {"gemeente": crypto.generate_signing_key()[1]})


def test_key_rotation_accepts_any_registered_key_of_the_partner(keys):
    data = _seal(keys)
    old = crypto.generate_signing_key()[1]
    assert bundle.verify_bundle(data, {"gemeente": [old, keys.signing_public]}).partner == "gemeente"


def test_bundle_signed_by_another_key_claiming_a_registered_fingerprint_is_tampered(keys):
    data = _seal(keys)
    sec = _sections(data)
    forged_sig = crypto.sign(crypto.generate_signing_key()[0], b"x")
    forged = data[: sec["signature"][0]] + forged_sig + data[sec["signature"][1] :]
    with pytest.raises(BundleTampered):
        bundle.verify_bundle(forged, keys.trusted)


@pytest.mark.parametrize("cut", [0, 5, 12, 40, -100, -17, -1])
def test_truncated_bundle_is_malformed(keys, cut):
    data = _seal(keys)
    with pytest.raises(BundleMalformed):
        bundle.verify_bundle(data[:cut], keys.trusted)


def test_trailing_bytes_wrong_magic_and_unknown_version_are_malformed(keys):
    data = _seal(keys)
    with pytest.raises(BundleMalformed, match="after the payload"):
        bundle.read_manifest(data + b"\x00")
    with pytest.raises(BundleMalformed, match="magic"):
        bundle.read_manifest(b"NOTABNDL" + data[8:])
    with pytest.raises(BundleMalformed, match="version 2"):
        bundle.read_manifest(data[:8] + struct.pack(">H", 2) + data[10:])


def test_non_canonical_manifest_is_malformed_even_if_equivalent(keys):
    data = _seal(keys)
    sec = _sections(data)
    raw = data[sec["manifest"][0] : sec["manifest"][1]]
    pretty = json.dumps(json.loads(raw), indent=1, sort_keys=True).encode()
    rebuilt = data[:10] + struct.pack(">I", len(pretty)) + pretty + data[sec["manifest"][1] :]
    with pytest.raises(BundleMalformed, match="canonical"):
        bundle.read_manifest(rebuilt)


def test_payload_size_limit_is_enforced_from_the_framing(keys):
    data = _seal(keys)
    with pytest.raises(BundleMalformed, match="exceeds the limit"):
        bundle.verify_bundle(data, keys.trusted, max_payload_bytes=64)


def test_row_limit_is_enforced_before_reading_the_payload(keys):
    data = _seal(keys)
    with pytest.raises(BundleMalformed, match="rows exceed"):
        bundle.open_bundle(data, trusted_keys=keys.trusted, recipient_private_key=keys.recipient, max_rows=10)


def test_decompressed_size_limit_is_enforced(keys):
    data = _seal(keys)
    with pytest.raises(BundleMalformed):
        bundle.open_bundle(
            data, trusted_keys=keys.trusted, recipient_private_key=keys.recipient, max_decompressed_bytes=100
        )


def test_schema_version_mismatch_is_refused_after_the_signature(keys, monkeypatch):
    # The schema version is the active study's digest: a partner that read another study file seals another one.
    monkeypatch.setattr(bundle, "schema_version", lambda: "sha256:" + "9" * 64)
    data = _seal(keys)
    monkeypatch.undo()
    with pytest.raises(SchemaMismatch, match="schema version"):
        bundle.verify_bundle(data, keys.trusted)


def test_sealing_refuses_a_payload_that_is_not_canonical(keys):
    with pytest.raises(SchemaMismatch, match="first column"):
        _seal(keys, _payload().select("year", "pseudonym"))
    with pytest.raises(SchemaMismatch, match="not a canonical variable"):
        _seal(keys, _payload().with_columns(pl.lit("x").alias("Straat")))
    with pytest.raises(SchemaMismatch, match="dtype"):
        _seal(keys, _payload().with_columns(pl.col("birth_year").cast(pl.Int64)))
    with pytest.raises(SchemaMismatch, match="32 bytes"):
        _seal(keys, _payload().with_columns(pl.lit(b"short", dtype=pl.Binary).alias("pseudonym")))


def test_errors_never_contain_key_material(keys):
    data = _seal(keys)
    secrets = [keys.signing, keys.recipient, keys.link]
    failures: list[KansrijkError] = []
    for attempt in (
        lambda: bundle.open_bundle(_flip(data, len(data) - 3), trusted_keys=keys.trusted,
                                   recipient_private_key=keys.recipient),
        lambda: bundle.open_bundle(data, trusted_keys=keys.trusted,
                                   recipient_private_key=crypto.generate_encryption_key()[0]),
        lambda: bundle.verify_bundle(data, {"gemeente": crypto.generate_signing_key()[1]}),
        lambda: bundle.verify_bundle(data[:-1], keys.trusted),
    ):  # fmt: skip
        with pytest.raises(KansrijkError) as info:
            attempt()
        failures.append(info.value)
    for exc in failures:
        text = str(exc) + repr(exc.__cause__) + repr(exc.__context__)
        for secret in secrets:
            assert secret.hex() not in text and secret.hex()[:16] not in text
            assert repr(secret)[2:30] not in text


@settings(max_examples=100, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=20,
    )
)
def test_canonical_json_is_stable_under_reparsing(obj):
    once = bundle.canonical_json(obj)
    assert bundle.canonical_json(json.loads(once)) == once
    assert b"\n" not in once.replace(b"\\n", b"")


def test_canonical_json_refuses_floats():
    with pytest.raises(TypeError):
        bundle.canonical_json({"a": 1.5})


def test_declared_empty_is_signed_only_as_true_and_only_without_rows(keys):
    empty = _payload(0)
    sealed = _seal(keys, empty, declared_empty=True)
    manifest = bundle.verify_bundle(sealed, {"gemeente": keys.signing_public})
    assert manifest.declared_empty and manifest.row_count == 0
    assert b'"declared_empty":true' in manifest.canonical_bytes()
    plain = bundle.read_manifest(_seal(keys, empty))
    assert not plain.declared_empty and b"declared_empty" not in plain.canonical_bytes()
    with pytest.raises(ValueError, match="declared_empty goes only with row_count 0"):
        _seal(keys, _payload(3), declared_empty=True)
    obj = json.loads(plain.canonical_bytes())
    for value in (False, 1, "true"):
        with pytest.raises(ValueError, match="declared_empty"):
            bundle._manifest_from_object({**obj, "declared_empty": value})


def test_a_bundle_of_another_study_is_refused_naming_both_schema_versions(keys):
    """A partner whose node read another study seals that study's digest; the coordinator refuses it."""
    from pathlib import Path

    from kansrijk.schema import schema_version
    from kansrijk.study import load_study, use_study

    other = load_study(Path(__file__).resolve().parents[2] / "policies" / "studies" / "utrecht-jeugdmonitor")
    payload = _payload().drop("woz_eur", "bmi")  # variables both studies declare
    with use_study(other):
        data = _seal(keys, payload, partner="gemeente")
    with pytest.raises(SchemaMismatch) as refused:
        bundle.verify_bundle(data, keys.trusted)
    assert other.digest in str(refused.value) and schema_version() in str(refused.value)
