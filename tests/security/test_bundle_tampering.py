"""Ingest refuses every altered, misaddressed, unregistered, replayed or out-of-order bundle with its own error
class, and a refused bundle leaves the workspace byte-identical."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from coordinator.ingest import IngestSession, ingest_bundle
from coordinator.workspace import hpke_public_key, init_workspace, open_workspace
from kansrijk import bundle
from kansrijk.crypto import fingerprint, generate_encryption_key, generate_signing_key, random_key
from kansrijk.errors import (
    BundleError,
    BundleMalformed,
    BundleTampered,
    OutOfOrderBundle,
    ReplayedBundle,
    SchemaMismatch,
    UnknownPartner,
    WrongRecipient,
)
from kansrijk.policy.registry import partner_key_from_bytes, render_registry, with_partner
from kansrijk.schema import schema_version

PASS = "tamper-test passphrase"
POLICY = "sha256:" + "1" * 64
OTHER_POLICY = "sha256:" + "2" * 64


@dataclass
class Setup:
    ws: Path
    session: IngestSession
    signing_key: bytes
    recipient: bytes
    link_fp: str


def _payload(rows: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "pseudonym": [rng.bytes(32) for _ in range(rows)],
            "year": np.full(rows, 2023, dtype=np.int32),
            "birth_year": rng.integers(2005, 2020, rows).astype(np.int32),
            "sex": rng.choice(["M", "F"], rows).tolist(),
            "low_income": rng.random(rows) < 0.2,
        },
        schema={
            "pseudonym": pl.Binary,
            "year": pl.Int32,
            "birth_year": pl.Int32,
            "sex": pl.String,
            "low_income": pl.Boolean,
        },
    )


def _seal(
    s: Setup,
    *,
    extract_id: str,
    year: int = 2023,
    previous: str | None = None,
    policy: str = POLICY,
    recipient: bytes | None = None,
    signing_key: bytes | None = None,
    seed: int = 1,
) -> bytes:
    payload = _payload(50, seed).with_columns(pl.lit(year, dtype=pl.Int32).alias("year"))
    return bundle.seal_bundle(
        payload,
        partner="cbs",
        extract_id=extract_id,
        extract_year=year,
        policy_digest=policy,
        quarantine_count=0,
        signing_key=signing_key or s.signing_key,
        link_key_fingerprint=s.link_fp,
        recipient_public_key=recipient or s.recipient,
        previous_bundle_hash=previous,
    )


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    sk, pk = generate_signing_key()
    registry = with_partner(
        None,
        "cbs",
        key=partner_key_from_bytes(pk, epoch=1),
        schema_versions=[schema_version()],
        policy_digests=[POLICY],
    )
    reg_path = tmp_path / "partners.toml"
    reg_path.write_text(render_registry(registry))
    ws = tmp_path / "ws"
    init_workspace(ws, PASS, registry=reg_path)
    session = IngestSession.open(ws, PASS)
    return Setup(ws, session, sk, hpke_public_key(open_workspace(ws)), fingerprint("link-key", random_key()))


def _refused(s: Setup, data: bytes, error: type[BundleError], tmp_path: Path, name: str = "b.kbundle") -> BundleError:
    path = tmp_path / name
    path.write_bytes(data)
    before = _snapshot(s.ws)
    with pytest.raises(BundleError) as info:
        ingest_bundle(s.session, path)
    assert type(info.value) is error, f"{type(info.value).__name__}: {info.value}"
    assert _snapshot(s.ws) == before
    assert str(info.value).startswith(f"{path}: ")
    return info.value


def _regions(data: bytes) -> dict[str, int]:
    """Offsets of one byte in every region of the version-1 layout (see docs/bundle-format.md)."""
    _, _, manifest_len = struct.unpack_from(">8sHI", data, 0)
    manifest_start = 14
    manifest = data[manifest_start : manifest_start + manifest_len]
    digit = manifest.index(b'"sha256":"') + len(b'"sha256":"')
    while chr(manifest[digit]) not in "0123456789":
        digit += 1
    signature = manifest_start + manifest_len
    wrapped_len_at = signature + 64
    wrapped = wrapped_len_at + 2
    (wrapped_len,) = struct.unpack_from(">H", data, wrapped_len_at)
    payload_len_at = wrapped + wrapped_len
    payload = payload_len_at + 8
    return {
        "magic": 0,
        "format_version": 9,
        "manifest_length": 12,
        "manifest_payload_digest": manifest_start + digit,
        "signature": signature + 10,
        "wrapped_key_length": wrapped_len_at + 1,
        "wrapped_key_enc": wrapped + 3,
        "wrapped_key_ciphertext": wrapped + 40,
        "wrapped_key_tag": wrapped + wrapped_len - 1,
        "payload_length": payload_len_at + 7,
        "payload_nonce": payload + 2,
        "payload_ciphertext": payload + 12 + (len(data) - payload - 28) // 2,
        "payload_tag": len(data) - 1,
    }


EXPECTED = {
    "magic": BundleMalformed,
    "format_version": BundleMalformed,
    "manifest_length": BundleMalformed,
    "manifest_payload_digest": BundleTampered,
    "signature": BundleTampered,
    "wrapped_key_length": BundleMalformed,
    "wrapped_key_enc": BundleTampered,
    "wrapped_key_ciphertext": BundleTampered,
    "wrapped_key_tag": BundleTampered,
    "payload_length": BundleMalformed,
    "payload_nonce": BundleTampered,
    "payload_ciphertext": BundleTampered,
    "payload_tag": BundleTampered,
}


def test_one_flipped_byte_in_every_region_is_refused_and_the_workspace_unchanged(setup: Setup, tmp_path: Path) -> None:
    data = _seal(setup, extract_id="cbs-2023")
    regions = _regions(data)
    assert set(regions) == set(EXPECTED)
    for region, offset in regions.items():
        flipped = bytearray(data)
        flipped[offset] ^= 0x01
        _refused(setup, bytes(flipped), EXPECTED[region], tmp_path, name=f"{region}.kbundle")
    # and the untouched bundle still ingests: the refusals left no trace that would block it
    path = tmp_path / "good.kbundle"
    path.write_bytes(data)
    assert ingest_bundle(setup.session, path).rows == 50


def test_truncated_and_extended_bundles_are_malformed(setup: Setup, tmp_path: Path) -> None:
    data = _seal(setup, extract_id="cbs-2023")
    _refused(setup, data[:-1], BundleMalformed, tmp_path)
    _refused(setup, data + b"\0", BundleMalformed, tmp_path)
    _refused(setup, b"", BundleMalformed, tmp_path)


def test_bundle_for_another_coordinator_is_wrong_recipient(setup: Setup, tmp_path: Path) -> None:
    _, other = generate_encryption_key()
    err = _refused(setup, _seal(setup, extract_id="x", recipient=other), WrongRecipient, tmp_path)
    assert "coordinator-hpke.pub" in str(err)


def test_unregistered_signer_is_unknown_partner(setup: Setup, tmp_path: Path) -> None:
    stranger, _ = generate_signing_key()
    _refused(setup, _seal(setup, extract_id="x", signing_key=stranger), UnknownPartner, tmp_path)


def test_revoked_key_is_refused_as_unknown_partner(setup: Setup, tmp_path: Path) -> None:
    reg = setup.session.registry
    key = reg.partners["cbs"].keys[0]
    revoked = with_partner(
        reg,
        "cbs",
        key=partner_key_from_bytes(key.key_bytes, epoch=1, status="revoked"),
        schema_versions=[],
        policy_digests=[],
    )
    setup.session = IngestSession(setup.session.paths, setup.session.keys, revoked, "sha256:" + "0" * 64)
    err = _refused(setup, _seal(setup, extract_id="x"), UnknownPartner, tmp_path)
    assert "revoked" in str(err)


def test_unapproved_sharing_policy_is_schema_mismatch(setup: Setup, tmp_path: Path) -> None:
    err = _refused(setup, _seal(setup, extract_id="x", policy=OTHER_POLICY), SchemaMismatch, tmp_path)
    assert "sharing policy" in str(err)


def test_reingesting_a_bundle_or_its_extract_id_is_replay(setup: Setup, tmp_path: Path) -> None:
    first = _seal(setup, extract_id="cbs-2023")
    path = tmp_path / "first.kbundle"
    path.write_bytes(first)
    ingest_bundle(setup.session, path)
    _refused(setup, first, ReplayedBundle, tmp_path)
    resealed = _seal(setup, extract_id="cbs-2023", year=2024, previous=bundle.bundle_digest(first), seed=2)
    assert "extract 'cbs-2023'" in str(_refused(setup, resealed, ReplayedBundle, tmp_path))
    same_period = _seal(setup, extract_id="cbs-2023-fix", previous=bundle.bundle_digest(first), seed=3)
    assert "already delivered 2023" in str(_refused(setup, same_period, ReplayedBundle, tmp_path))


def test_bundle_that_skips_or_forks_the_chain_is_out_of_order(setup: Setup, tmp_path: Path) -> None:
    first = _seal(setup, extract_id="cbs-2023")
    second = _seal(setup, extract_id="cbs-2024", year=2024, previous=bundle.bundle_digest(first), seed=2)
    _refused(setup, second, OutOfOrderBundle, tmp_path)  # its predecessor was never ingested
    path = tmp_path / "first.kbundle"
    path.write_bytes(first)
    ingest_bundle(setup.session, path)
    fork = _seal(setup, extract_id="cbs-2025", year=2025, previous=None, seed=4)
    _refused(setup, fork, OutOfOrderBundle, tmp_path)  # a second "first" bundle
    path = tmp_path / "second.kbundle"
    path.write_bytes(second)
    assert ingest_bundle(setup.session, path).period == "2024"


def test_stored_pseudonyms_are_neither_the_partners_nor_recomputable_without_the_coordinator_key(
    setup: Setup, tmp_path: Path
) -> None:
    data = _seal(setup, extract_id="cbs-2023")
    path = tmp_path / "b.kbundle"
    path.write_bytes(data)
    outcome = ingest_bundle(setup.session, path)
    sent = set(_payload(50, 1)["pseudonym"].to_list())
    stored = pl.read_parquet(outcome.table)
    assert stored.height == 50 and stored["pseudonym"].bin.size().unique().to_list() == [32]
    assert sent.isdisjoint(stored["pseudonym"].to_list())
    raw = b"".join(p.read_bytes() for p in setup.ws.rglob("*") if p.is_file())
    assert not any(p1 in raw for p1 in list(sent)[:10])  # P1 appears nowhere in the workspace
