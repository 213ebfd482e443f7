"""Pinned vectors for the release ledger: entry hashes and the gate's Ed25519 signatures over them.

Another implementation of the ledger (an auditor's own verifier) reproduces these from the same inputs. A failure
here means the ledger format changed: regenerate with tests/vectors/generate_ledger_vectors.py and say so.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from fractions import Fraction
from pathlib import Path

import pytest

from kansrijk import crypto
from kansrijk.gate import ledger
from kansrijk.gate.keys import GateSigner

HERE = Path(__file__).parent
VECTORS = json.loads((HERE / "ledger_entry_v1.json").read_text(encoding="utf-8"))
SEED = bytes.fromhex(VECTORS["gate_key_seed_hex"])
PUBLIC = bytes.fromhex(VECTORS["gate_public_key_hex"])
CASES = VECTORS["entries"]


def test_the_gate_key_and_its_fingerprint() -> None:
    assert crypto.signing_public_key(SEED) == PUBLIC
    assert crypto.fingerprint("gate-signing", PUBLIC) == VECTORS["gate_key_fingerprint"]
    # the definition, with the standard library only
    digest = hashlib.sha256(b"kansrijk/v1/fingerprint/gate-signing/" + PUBLIC).hexdigest()
    assert digest[:32] == VECTORS["gate_key_fingerprint"]


@pytest.mark.parametrize("case", CASES, ids=[f"entry-{c['fields']['seq']}" for c in CASES])
def test_entry_hash_vectors(case) -> None:
    assert ledger.entry_hash(case["prev_hash"], case["fields"]) == case["entry_hash"]
    canonical = json.dumps(case["fields"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert case["prev_hash"] + "\n" + canonical == case["hash_input"]
    assert hashlib.sha256(case["hash_input"].encode("utf-8")).hexdigest() == case["entry_hash"]


@pytest.mark.parametrize("case", CASES, ids=[f"entry-{c['fields']['seq']}" for c in CASES])
def test_signature_vectors(case) -> None:
    seq, fp = case["fields"]["seq"], VECTORS["gate_key_fingerprint"]
    message = ledger.entry_signing_message(seq, case["entry_hash"], fp)
    assert message == case["signed_message"].encode("utf-8")
    expected = json.dumps({"entry_hash": case["entry_hash"], "gate_key": fp, "seq": seq}, separators=(",", ":"))
    assert message == b"kansrijk/v1/ledger-entry\n" + expected.encode()
    assert crypto.sign(SEED, message).hex() == case["signature_hex"]  # Ed25519 is deterministic (RFC 8032)
    assert crypto.verify_signature(PUBLIC, message, bytes.fromhex(case["signature_hex"]))


def test_the_chain_links_the_vectors() -> None:
    assert CASES[0]["prev_hash"] == ledger.GENESIS
    assert [c["prev_hash"] for c in CASES[1:]] == [c["entry_hash"] for c in CASES[:-1]]


def test_append_entry_reproduces_the_vectors(tmp_path: Path) -> None:
    signer = GateSigner(SEED, PUBLIC, VECTORS["gate_key_fingerprint"])
    with contextlib.closing(ledger.connect(tmp_path / "ledger.sqlite")) as conn:
        ledger.initialise(conn, gate_key=signer.fingerprint)
        for case, when in zip(CASES, VECTORS["times"], strict=True):
            f = case["fields"]
            with ledger.immediate(conn):
                entry = ledger.append_entry(
                    conn,
                    signer=signer,
                    requested_by=f["requested_by"],
                    release_name=f["release_name"],
                    kind=f["kind"],
                    outcome=f["outcome"],
                    request_digest=f["request_digest"],
                    policy_digest=f["policy_digest"],
                    dataset=f["dataset"],
                    epsilon=Fraction(f["epsilon"]),
                    delta=Fraction(f["delta"]),
                    verdicts=json.loads(f["verdicts"]),
                    outputs=json.loads(f["outputs"]),
                    record_digest=f["record_digest"],
                    now=dt.datetime.fromisoformat(when),
                )
            assert (entry.seq, entry.time) == (f["seq"], f["time"])
            assert (entry.entry_hash, entry.signature) == (case["entry_hash"], case["signature_hex"])
