"""The crypto recipes: round trips, refusals, and that secret-key files fail closed."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kansrijk import crypto
from kansrijk.errors import KeyMaterialError


@pytest.fixture(autouse=True)
def _fast_kdf(monkeypatch):
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=1, max_size=64), messages=st.lists(st.binary(max_size=200), min_size=1, max_size=20))
def test_vectorised_hmac_equals_the_standard_library(key, messages):
    out = pl.DataFrame({"m": messages}, schema={"m": pl.Binary}).select(h=crypto.hmac_sha256_expr(key, pl.col("m")))
    assert out["h"].to_list() == [hmac.new(key, m, hashlib.sha256).digest() for m in messages]


def test_vectorised_hmac_matches_rfc4231_test_case_2():
    # RFC 4231, test case 2: key "Jefe", data "what do ya want for nothing?".
    out = pl.DataFrame({"m": [b"what do ya want for nothing?"]}).select(h=crypto.hmac_sha256_expr(b"Jefe", pl.col("m")))
    assert out["h"][0].hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


@settings(max_examples=60)
@given(digests=st.lists(st.binary(min_size=32, max_size=32), max_size=50))
def test_hex_digest_decoding_equals_bytes_fromhex(digests):
    hexes = pl.Series("d", [d.hex() for d in digests], dtype=pl.String)
    assert crypto._hex_digests(hexes).to_list() == digests


@pytest.mark.parametrize("bad", ["A" * 64, "g" * 64, "0" * 63 + " "])
def test_hex_digest_decoding_refuses_anything_but_lowercase_hex(bad):
    with pytest.raises(ValueError, match="64 lowercase hex"):
        crypto._hex_digests(pl.Series("d", ["ab" * 32, bad]))


def test_vectorised_hmac_is_the_same_in_the_streaming_engine():
    key, messages = os.urandom(32), [os.urandom(n) for n in range(300)]
    frame = pl.DataFrame({"m": messages}, schema={"m": pl.Binary}).lazy()
    out = frame.select(h=crypto.hmac_sha256_expr(key, pl.col("m"))).collect(engine="streaming")
    assert out["h"].to_list() == [hmac.new(key, m, hashlib.sha256).digest() for m in messages]


def test_signature_verifies_and_any_changed_byte_fails():
    sk, pk = crypto.generate_signing_key()
    sig = crypto.sign(sk, b"manifest")
    assert crypto.verify_signature(pk, b"manifest", sig)
    assert not crypto.verify_signature(pk, b"manifesT", sig)
    assert not crypto.verify_signature(pk, b"manifest", bytes([sig[0] ^ 1]) + sig[1:])
    assert not crypto.verify_signature(crypto.generate_signing_key()[1], b"manifest", sig)


def test_hpke_round_trip_and_wrong_recipient_fails():
    sk, pk = crypto.generate_encryption_key()
    sealed = crypto.hpke_seal(pk, b"data key", info=b"ctx")
    assert crypto.hpke_open(sk, sealed, info=b"ctx") == b"data key"
    with pytest.raises(crypto.DecryptionFailed):
        crypto.hpke_open(crypto.generate_encryption_key()[0], sealed, info=b"ctx")
    with pytest.raises(crypto.DecryptionFailed):
        crypto.hpke_open(sk, sealed, info=b"other context")


def test_aead_detects_changed_ciphertext_and_changed_aad():
    key = crypto.random_key()
    blob = crypto.aead_encrypt(key, b"payload", aad=b"manifest")
    assert crypto.aead_decrypt(key, blob, aad=b"manifest") == b"payload"
    with pytest.raises(crypto.DecryptionFailed):
        crypto.aead_decrypt(key, blob[:-1] + bytes([blob[-1] ^ 1]), aad=b"manifest")
    with pytest.raises(crypto.DecryptionFailed):
        crypto.aead_decrypt(key, blob, aad=b"manifesT")


@pytest.mark.parametrize("kind", ["ed25519-signing", "x25519-hpke", "link-key", "coordinator-pseudonym-key"])
def test_secret_key_file_round_trips_and_is_private(tmp_path, kind):
    key = crypto.generate_signing_key()[0] if kind == "ed25519-signing" else crypto.random_key()
    path = tmp_path / "k.key"
    crypto.write_secret_key(path, kind, key, "correct horse")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert crypto.read_secret_key(path, kind, "correct horse") == key
    assert key.hex() not in path.read_text() and crypto._b64(key) not in path.read_text()


def test_wrong_passphrase_is_refused_without_revealing_anything(tmp_path):
    key = crypto.random_key()
    path = tmp_path / "link.key"
    crypto.write_secret_key(path, "link-key", key, "right")
    with pytest.raises(KeyMaterialError, match="wrong passphrase") as info:
        crypto.read_secret_key(path, "link-key", "wrong")
    assert key.hex() not in str(info.value)


def test_key_file_readable_by_others_is_refused(tmp_path):
    path = tmp_path / "link.key"
    crypto.write_secret_key(path, "link-key", crypto.random_key(), "pw")
    os.chmod(path, 0o644)
    with pytest.raises(KeyMaterialError, match="readable by others"):
        crypto.read_secret_key(path, "link-key", "pw")


def test_key_file_with_altered_header_or_weak_kdf_is_refused(tmp_path):
    path = tmp_path / "link.key"
    crypto.write_secret_key(path, "link-key", crypto.random_key(), "pw")
    doc = json.loads(path.read_text())
    doc["label"] = "someone else"
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyMaterialError, match="wrong passphrase, or the key file was altered"):
        crypto.read_secret_key(path, "link-key", "pw")
    doc["kdf"]["log2n"] = 10
    path.write_text(json.dumps(doc))
    with pytest.raises(KeyMaterialError, match="weaker"):
        crypto.read_secret_key(path, "link-key", "pw")


def test_a_key_of_another_kind_is_refused(tmp_path):
    path = tmp_path / "k.key"
    crypto.write_secret_key(path, "link-key", crypto.random_key(), "pw")
    with pytest.raises(KeyMaterialError, match="expected a coordinator-pseudonym-key"):
        crypto.read_secret_key(path, "coordinator-pseudonym-key", "pw")


def test_existing_key_is_never_overwritten(tmp_path):
    path = tmp_path / "k.key"
    crypto.write_secret_key(path, "link-key", crypto.random_key(), "pw")
    before = path.read_bytes()
    with pytest.raises(KeyMaterialError, match="refusing to overwrite"):
        crypto.write_secret_key(path, "link-key", crypto.random_key(), "pw")
    assert path.read_bytes() == before


def test_public_key_file_round_trip_and_kind_check(tmp_path):
    _, pk = crypto.generate_encryption_key()
    fp = crypto.write_public_key(tmp_path / "c.pub", "x25519-hpke", pk, label="coordinator")
    loaded = crypto.read_public_key(tmp_path / "c.pub", "x25519-hpke")
    assert loaded.key == pk and loaded.fingerprint == fp
    with pytest.raises(KeyMaterialError, match="expected a ed25519-signing key"):
        crypto.read_public_key(tmp_path / "c.pub", "ed25519-signing")
