"""Ledger anchors: the privacy officer's signed head catches a truncated, rewritten or rolled-back ledger that
the hash chain alone cannot, and a forged or altered anchor is refused."""

from __future__ import annotations

import base64
import json
import shutil
import sqlite3
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import GATE_PASSPHRASE, gate_workspace, signed_policy
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kansrijk import crypto
from kansrijk.cli import app
from kansrijk.errors import AnchorInvalid, LedgerCorrupted, OutputExists
from kansrijk.gate.anchor import Anchor, anchor_ledger, check_anchor, read_anchor
from kansrijk.gate.keys import read_gate_public_key
from kansrijk.gate.ledger import LEDGER_FILE, RELEASED_DIR, verify_ledger, write_head_file
from kansrijk.gate.release import Gate, Released
from kansrijk.gate.specs import CountSpec


def _people(seed: int = 1, n: int = 2000) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {"sex": rng.choice(["M", "F"], n), "buurt_code": rng.choice([f"BU0599{i:04d}" for i in range(4)], n)}
    )


def _workspace(tmp: Path, policy: str = "dp-sdc", releases: int = 3) -> tuple[Path, Path, Path, bytes]:
    """A workspace with ``releases`` released tables (DP under dp-sdc) and the officer's key pair."""
    target, pub, sk = signed_policy(tmp, policy)
    ws = gate_workspace(tmp, _people())
    _release(ws, target, pub, range(releases))
    return ws, target, pub, sk


def _release(ws: Path, policy: Path, pub: Path, numbers: range) -> None:
    with Gate.open(ws, policy, [pub], passphrase=GATE_PASSPHRASE) as gate:
        for i in numbers:
            r = gate.release(CountSpec(name=f"t{i}", years=(2023,), by=("sex",)), requested_by="analysis")
            assert isinstance(r, Released)


def test_anchor_of_an_intact_ledger_checks_and_later_releases_keep_it_valid(tmp_path: Path) -> None:
    ws, policy, pub, sk = _workspace(tmp_path)
    made = anchor_ledger(ws, sk, tmp_path / "a.json")
    assert made.entry == 3 and made.entry_id == "L000003" and made.epsilon_spent
    _release(ws, policy, pub, range(3, 5))
    check = check_anchor(ws, tmp_path / "a.json", [pub])
    assert check.entry_id == "L000003" and check.entries_since == 2


def test_a_carefully_truncated_ledger_passes_the_chain_check_but_not_the_anchor(tmp_path: Path) -> None:
    """Delete the newest entry with everything that points at it (files, record, head, budget): the chain is
    consistent again, which is exactly why the officer's anchor exists."""
    ws, _, pub, sk = _workspace(tmp_path)
    anchor_ledger(ws, sk, tmp_path / "a.json")
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        epsilon, name = conn.execute("SELECT epsilon, release_name FROM ledger WHERE seq = 3").fetchone()
        prev = conn.execute("SELECT entry_hash FROM ledger WHERE seq = 2").fetchone()[0]
        conn.execute("DELETE FROM ledger WHERE seq = 3")
        conn.execute("DELETE FROM table_records WHERE seq = 3")
        conn.execute("UPDATE meta SET value = '2' WHERE key = 'head_seq'")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (prev,))
        spent = conn.execute("SELECT epsilon_spent FROM budget").fetchone()[0]
        conn.execute("UPDATE budget SET epsilon_spent = ?", (str(Fraction(spent) - Fraction(epsilon)),))
    for f in (ws / RELEASED_DIR).glob(f"{name}.*"):
        f.unlink()
    write_head_file(ws / RELEASED_DIR, 2, prev)
    assert verify_ledger(ws).entries == 2  # the chain alone cannot tell
    with pytest.raises(LedgerCorrupted, match=r"L000003 .* is gone"):
        check_anchor(ws, tmp_path / "a.json", [pub])


def test_a_rewritten_chain_is_caught_by_the_anchor(tmp_path: Path) -> None:
    ws, policy, pub, sk = _workspace(tmp_path)
    anchor_ledger(ws, sk, tmp_path / "a.json")
    # someone with the workspace (and its gate key) replays other releases into a fresh ledger: a valid, signed
    # chain with other hashes
    (ws / LEDGER_FILE).unlink()
    shutil.rmtree(ws / RELEASED_DIR)
    _release(ws, policy, pub, range(10, 13))
    assert verify_ledger(ws).entries == 3
    with pytest.raises(LedgerCorrupted, match="does not have the hash anchored"):
        check_anchor(ws, tmp_path / "a.json", [pub])


def test_a_rolled_back_budget_is_caught_by_the_anchor(tmp_path: Path) -> None:
    ws, _, pub, sk = _workspace(tmp_path)
    anchor_ledger(ws, sk, tmp_path / "a.json")
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        conn.execute("UPDATE budget SET epsilon_spent = '0'")
    with pytest.raises(LedgerCorrupted, match="budget was rolled back"):
        check_anchor(ws, tmp_path / "a.json", [pub])


def test_an_altered_or_foreign_anchor_is_refused(tmp_path: Path) -> None:
    ws, _, pub, sk = _workspace(tmp_path)
    anchor_ledger(ws, sk, tmp_path / "a.json")
    doc = json.loads((tmp_path / "a.json").read_text())
    doc["entry"], doc["entry_id"] = 2, "L000002"  # point the anchor at an older entry
    (tmp_path / "b.json").write_text(json.dumps(doc))
    with pytest.raises(AnchorInvalid, match="does not verify"):
        check_anchor(ws, tmp_path / "b.json", [pub])
    other_sk, _ = crypto.generate_signing_key()
    anchor_ledger(ws, other_sk, tmp_path / "c.json")
    with pytest.raises(AnchorInvalid, match="not a trusted privacy-officer key"):
        check_anchor(ws, tmp_path / "c.json", [pub])


def test_an_anchor_records_the_gate_key_and_a_version_1_anchor_without_one_is_still_checked(tmp_path: Path) -> None:
    ws, _, pub, sk = _workspace(tmp_path)
    made = anchor_ledger(ws, sk, tmp_path / "a.json")
    doc = json.loads((tmp_path / "a.json").read_text())
    assert doc["version"] == 2 and doc["gate_key_fingerprint"] == made.gate_key_fingerprint
    assert made.gate_key_fingerprint == read_gate_public_key(ws).fingerprint
    assert check_anchor(ws, tmp_path / "a.json", [pub]).gate_key_fingerprint == made.gate_key_fingerprint
    # an anchor made before the gate signed its ledger: no gate key in its signed body
    old = Anchor(**{k: getattr(made, k) for k in ("entry", "entry_id", "entry_hash", "entries", "epsilon_spent",
                                                    "anchored_at", "signer_fingerprint")})  # fmt: skip
    assert old.version == 1 and b'"gate_key' not in old.signed_message()
    signed = {**old.body(), "signature": base64.b64encode(crypto.sign(sk, old.signed_message())).decode()}
    (tmp_path / "v1.json").write_text(json.dumps(signed))
    assert check_anchor(ws, tmp_path / "v1.json", [pub]).gate_key_fingerprint is None
    # dropping the gate key from a version-2 anchor (to dodge the check) breaks its signature
    doc.pop("gate_key_fingerprint")
    doc["version"] = 1
    (tmp_path / "stripped.json").write_text(json.dumps(doc))
    with pytest.raises(AnchorInvalid, match="does not verify"):
        check_anchor(ws, tmp_path / "stripped.json", [pub])


def test_an_anchor_is_never_written_for_a_ledger_that_does_not_verify(tmp_path: Path) -> None:
    ws, _, _, sk = _workspace(tmp_path)
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        conn.execute("UPDATE ledger SET requested_by = 'someone else' WHERE seq = 2")
    with pytest.raises(LedgerCorrupted):
        anchor_ledger(ws, sk, tmp_path / "a.json")
    assert list(tmp_path.glob("a.json*")) == [] and list(tmp_path.glob(".a.json*")) == []


def test_an_existing_anchor_is_never_overwritten(tmp_path: Path) -> None:
    ws, _, _, sk = _workspace(tmp_path, releases=1)
    (tmp_path / "a.json").write_text("keep me")
    with pytest.raises(OutputExists):
        anchor_ledger(ws, sk, tmp_path / "a.json")
    assert (tmp_path / "a.json").read_text() == "keep me"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_fields = ("format", "version", "entry", "entry_id", "entry_hash", "entries", "epsilon_spent", "anchored_at")


@settings(max_examples=150, deadline=None)
@given(
    version=st.sampled_from([1, 2]),
    doc=st.fixed_dictionaries(
        {}, optional={k: _json for k in (*_fields, "signer_fingerprint", "gate_key_fingerprint", "signature")}
    ),
)
def test_a_malformed_anchor_file_gets_a_precise_error_never_a_crash(tmp_path_factory, version, doc) -> None:
    path = tmp_path_factory.mktemp("anchor") / "a.json"
    path.write_text(json.dumps({"format": "kansrijk-ledger-anchor", "version": version, **doc}))
    try:
        read_anchor(path)
    except AnchorInvalid as exc:
        assert str(path) in str(exc)


def test_cli_anchor_then_verify_and_a_truncated_ledger_fails(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", "correct horse")
    ws, _, pub, sk = _workspace(tmp_path)
    key = tmp_path / "officer.key"
    crypto.write_secret_key(key, "ed25519-signing", sk, "correct horse", label="officer")
    runner = CliRunner()
    made = runner.invoke(app, ["ledger", "anchor", str(ws), "--key", str(key), "--out", str(tmp_path / "a.json")])
    assert made.exit_code == 0, made.output
    again = runner.invoke(app, ["ledger", "anchor", str(ws), "--key", str(key), "--out", str(tmp_path / "a.json")])
    assert again.exit_code == OutputExists.exit_code
    args = ["ledger", "verify", str(ws), "--anchor", str(tmp_path / "a.json"), "--officer-key", str(pub)]
    ok = runner.invoke(app, args)
    assert ok.exit_code == 0 and "L000003 intact" in ok.output, ok.output
    forged = tmp_path / "forged.json"
    forged.write_text((tmp_path / "a.json").read_text().replace('"entries": 3', '"entries": 4'))
    assert runner.invoke(app, [*args[:4], str(forged), *args[5:]]).exit_code == AnchorInvalid.exit_code
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        conn.execute("DELETE FROM ledger WHERE seq = 3")
    assert runner.invoke(app, args).exit_code == LedgerCorrupted.exit_code
