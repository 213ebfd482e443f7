"""Regenerate the ledger entry vectors: two entries (a release, then a refusal) with their hashes and signatures.

Run once when the ledger format changes: ``.venv/bin/python tests/vectors/generate_ledger_vectors.py``. The
vectors are pinned in git; ``test_ledger_vectors.py`` checks the code against them, never the other way round.
Every input is fixed here (Ed25519 signatures are deterministic, RFC 8032), so the file is reproducible.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import sqlite3
from fractions import Fraction
from pathlib import Path
from typing import Any

from kansrijk import crypto
from kansrijk.gate import ledger
from kansrijk.gate.keys import GATE_KEY_KIND, GateSigner

HERE = Path(__file__).parent
GATE_KEY_SEED = hashlib.sha256(b"kansrijk test vector: release gate signing key").digest()
TIMES = (dt.datetime(2024, 6, 1, 12, 0, 0, 123456, tzinfo=dt.UTC), dt.datetime(2024, 6, 1, 12, 0, 5, tzinfo=dt.UTC))

# What the gate is asked and what it decided; non-ASCII text on purpose (canonical JSON keeps it as UTF-8).
APPENDS: tuple[dict[str, Any], ...] = (
    {
        "requested_by": "analysis",
        "release_name": "base_rates_2023",
        "kind": "count_table",
        "outcome": "released",
        "request_digest": "sha256:" + "ab" * 32,
        "policy_digest": "sha256:" + "cd" * 32,
        "dataset": "rotterdam-groeit",
        "epsilon": Fraction(1, 10),
        "delta": Fraction(0),
        "verdicts": [
            {"rule": "requested_by", "verdict": "pass", "reason": "'analysis' may request releases"},
            {"rule": "min_persons_per_cell", "verdict": "pass", "reason": "every cell ≥ 10 persons"},
        ],
        "outputs": {
            "base_rates_2023.csv": "sha256:" + "01" * 32,
            "base_rates_2023.json": "sha256:" + "02" * 32,
        },
        "record_digest": "sha256:" + "03" * 32,
    },
    {
        "requested_by": "intruder",
        "release_name": "één_persoon",
        "kind": "count_table",
        "outcome": "refused",
        "request_digest": "sha256:" + "ef" * 32,
        "policy_digest": "sha256:" + "cd" * 32,
        "dataset": "rotterdam-groeit",
        "epsilon": Fraction(0),
        "delta": Fraction(0),
        "verdicts": [{"rule": "requested_by", "verdict": "refuse", "reason": "'intruder' is not allowed"}],
        "outputs": {},
        "record_digest": "",
    },
)


def gate_signer() -> GateSigner:
    public = crypto.signing_public_key(GATE_KEY_SEED)
    return GateSigner(GATE_KEY_SEED, public, crypto.fingerprint(GATE_KEY_KIND, public))


def append_vectors(conn: sqlite3.Connection) -> list[ledger.LedgerEntry]:
    """Append the vector entries to an initialised ledger with the vector key; returns them."""
    signer = gate_signer()
    out = []
    for fields, now in zip(APPENDS, TIMES, strict=True):
        with ledger.immediate(conn):
            out.append(ledger.append_entry(conn, signer=signer, now=now, **fields))
    return out


def main() -> None:
    signer = gate_signer()
    with contextlib.closing(ledger.connect(Path(":memory:"))) as conn:
        ledger.initialise(conn, gate_key=signer.fingerprint)
        made = append_vectors(conn)
        rows = [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY seq")]
    cases = []
    for entry, row in zip(made, rows, strict=True):
        fields = {k: row[k] for k in ledger._HASHED_FIELDS}
        message = ledger.entry_signing_message(entry.seq, entry.entry_hash, signer.fingerprint)
        cases.append(
            {
                "fields": fields,
                "prev_hash": entry.prev_hash,
                "hash_input": entry.prev_hash + "\n" + ledger.canonical(fields).decode(),
                "entry_hash": entry.entry_hash,
                "signed_message": message.decode(),
                "signature_hex": entry.signature,
            }
        )
    document = {
        "description": (
            "kansrijk release ledger v1. entry_hash = SHA-256(utf8(prev_hash) || 0x0a || canonical JSON of the "
            "fields) as hex; canonical JSON = sorted keys, separators ',' ':', UTF-8 (no \\u escapes). The gate "
            "signs 'kansrijk/v1/ledger-entry' || 0x0a || canonical JSON of {entry_hash, gate_key, seq} with "
            "Ed25519; gate_key is the fingerprint of its public key; the signature is stored as lowercase hex."
        ),
        "gate_key_seed_hex": GATE_KEY_SEED.hex(),
        "gate_public_key_hex": signer.public_key.hex(),
        "gate_key_fingerprint": signer.fingerprint,
        "fingerprint_definition": "first 32 hex of SHA-256('kansrijk/v1/fingerprint/gate-signing/' || public key)",
        "times": [t.isoformat() for t in TIMES],
        "entries": cases,
    }
    (HERE / "ledger_entry_v1.json").write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
