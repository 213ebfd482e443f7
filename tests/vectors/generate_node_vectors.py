"""Regenerate the node-agent vectors (pseudonyms, manifest canonical bytes, a deterministic bundle).

Run once when the format version changes: ``.venv/bin/python tests/vectors/generate_node_vectors.py``. The
vectors are pinned in git; ``test_node_vectors.py`` checks the code against them, never the other way round.
Every input is fixed here except the HPKE ephemeral key (random by RFC 9180's design), so the wrapped data key
is recorded as an output and fed back in when the test reproduces the bundle byte for byte.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from kansrijk import bundle, crypto
from kansrijk.pseudonym import pseudonymise

HERE = Path(__file__).parent

LINK_KEY = bytes(range(32))
BSNS = ["111222333", "123456782", "100000009", "999999990", "012345672"]
SIGNING_KEY = hashlib.sha256(b"kansrijk test vector: partner signing key").digest()
RECIPIENT_KEY = hashlib.sha256(b"kansrijk test vector: coordinator hpke key").digest()
DATA_KEY = bytes([0x42]) * 32
NONCE = bytes([0x24]) * 12
CREATED_AT = datetime(2024, 6, 1, 12, 0, 0, tzinfo=UTC)


def payload_frame() -> pl.DataFrame:
    pseudonyms = pseudonymise(LINK_KEY, pl.Series(BSNS[:3]))
    return pl.DataFrame(
        {
            "pseudonym": pseudonyms,
            "year": [2023, 2023, 2023],
            "birth_year": [2011, 2009, 2015],
            "sex": ["F", "M", "F"],
            "woz_eur": [187000, 243000, 0],
        },
        schema={
            "pseudonym": pl.Binary,
            "year": pl.Int32,
            "birth_year": pl.Int32,
            "sex": pl.String,
            "woz_eur": pl.Int32,
        },
    ).sort("pseudonym")


def main() -> None:
    # The vectors pin the schema version as the opaque "1" (in a run it is the active study's digest).
    bundle.schema_version = lambda: "1"  # type: ignore[assignment]
    pseudonyms = pseudonymise(LINK_KEY, pl.Series(BSNS))
    (HERE / "pseudonyms_v1.json").write_text(
        json.dumps(
            {
                "description": "P1 = HMAC-SHA256(link_key, b'kansrijk/v1/bsn' || bsn_ascii)",
                "link_key_hex": LINK_KEY.hex(),
                "link_key_fingerprint": crypto.fingerprint("link-key", LINK_KEY),
                "cases": [{"bsn": b, "pseudonym_hex": p.hex()} for b, p in zip(BSNS, pseudonyms, strict=True)],
            },
            indent=2,
        )
        + "\n"
    )

    frame = payload_frame()
    buf = io.BytesIO()
    frame.write_parquet(buf, compression="zstd", statistics=False)
    parquet = buf.getvalue()
    recipient_public = crypto.encryption_public_key(RECIPIENT_KEY)
    manifest = bundle.build_manifest(
        partner="gemeente",
        extract_id="gemeente-2023-vector",
        extract_year=2023,
        policy_digest="sha256:" + "0" * 64,
        row_count=frame.height,
        quarantine_count=1,
        columns=bundle.payload_columns(frame),
        signing_public_key=crypto.signing_public_key(SIGNING_KEY),
        link_key_fingerprint=crypto.fingerprint("link-key", LINK_KEY),
        recipient_public_key=recipient_public,
        key_epoch=1,
        previous_bundle_hash="sha256:" + "1" * 64,
        payload_sha256=crypto.sha256_hex(parquet),
        payload_size=len(parquet),
        created_at=CREATED_AT,
    )
    manifest_digest = crypto.sha256(manifest.canonical_bytes())
    wrapped = crypto.hpke_seal(recipient_public, DATA_KEY, info=bundle.DATA_KEY_INFO + manifest_digest)
    data = bundle.seal_parquet(
        manifest, parquet, signing_key=SIGNING_KEY, recipient_public_key=recipient_public,
        _data_key=DATA_KEY, _nonce=NONCE, _wrapped_key=wrapped,
    )  # fmt: skip
    (HERE / "bundle_v1.json").write_text(
        json.dumps(
            {
                "description": "A format-version-1 bundle with every input fixed (see docs/bundle-format.md).",
                "signing_private_key_hex": SIGNING_KEY.hex(),
                "signing_public_key_hex": crypto.signing_public_key(SIGNING_KEY).hex(),
                "recipient_private_key_hex": RECIPIENT_KEY.hex(),
                "recipient_public_key_hex": recipient_public.hex(),
                "link_key_hex": LINK_KEY.hex(),
                "data_key_hex": DATA_KEY.hex(),
                "nonce_hex": NONCE.hex(),
                "manifest_canonical": manifest.canonical_bytes().decode("utf-8"),
                "manifest_sha256_hex": manifest_digest.hex(),
                "payload_parquet_hex": parquet.hex(),
                "payload_rows": [{**row, "pseudonym": row["pseudonym"].hex()} for row in frame.to_dicts()],
                "wrapped_key_hex": wrapped.hex(),
                "bundle_hex": data.hex(),
                "bundle_digest": bundle.bundle_digest(data),
            },
            indent=2,
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
