"""The gate signs its ledger: an entry written by anyone else, an altered signature, a swapped gate key and a file
smuggled anywhere under released/ are each caught by ``ledger verify`` (the key swap by the pin or the anchor)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import GATE_PASSPHRASE, add_gate_key, gate_workspace, signed_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from kansrijk import crypto
from kansrijk.cli import app
from kansrijk.errors import KeyMaterialError, LedgerCorrupted
from kansrijk.gate import ledger as ledger_mod
from kansrijk.gate.anchor import anchor_ledger, check_anchor, read_anchor
from kansrijk.gate.keys import GATE_KEY, GATE_PUB, create_gate_key, load_gate_signer, read_gate_public_key
from kansrijk.gate.ledger import LEDGER_FILE, RELEASED_DIR, entry_signing_message, verify_ledger, write_head_file
from kansrijk.gate.release import Gate, Refused
from kansrijk.gate.specs import CountSpec


def _people(n: int = 2000, seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    codes = [f"BU059900{i:02d}" for i in range(4)]
    return pl.DataFrame({"sex": rng.choice(["M", "F"], n), "buurt_code": rng.choice(codes, n)})


def _populate(tmp: Path) -> tuple[Path, Path, Path, bytes]:
    """A workspace with three released tables and one refusal (entries 1-4); the policy, officer pub and key."""
    policy, pub, officer_sk = signed_policy(tmp, "sdc-only")
    ws = gate_workspace(tmp, _people())
    with Gate.open(ws, policy, [pub]) as gate:
        for i, by in enumerate([("sex",), ("buurt_code",), ("sex", "buurt_code")]):
            gate.release(CountSpec(name=f"t{i}", years=(2023,), by=by), requested_by="analysis")
        gate.release(CountSpec(name="x", years=(2023,), by=("sex",)), requested_by="intruder")
    return ws, policy, pub, officer_sk


def _resign(ws: Path, private: bytes, fingerprint: str) -> None:
    """What someone holding a gate key of their own does: sign every entry again and record their key."""
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        for seq, h in conn.execute("SELECT seq, entry_hash FROM ledger").fetchall():
            signature = crypto.sign(private, entry_signing_message(seq, h, fingerprint)).hex()
            conn.execute("UPDATE ledger SET signature = ? WHERE seq = ?", (signature, seq))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'gate_key'", (fingerprint,))


def _append_forged(ws: Path, sign: Callable[[int, str], str]) -> None:
    """Append a refusal-shaped entry the way an intruder with write access would: a valid chain, head and head
    file, no budget change, no file. ``sign(seq, entry_hash)`` gives the stored signature."""
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        conn.row_factory = sqlite3.Row
        last = dict(conn.execute("SELECT * FROM ledger ORDER BY seq DESC LIMIT 1").fetchone())
        row = {**last, "seq": last["seq"] + 1, "release_name": "forged", "outputs": "{}", "record_digest": ""}
        row |= {"outcome": "refused", "epsilon": "0", "delta": "0"}
        h = ledger_mod.entry_hash(last["entry_hash"], row)
        row |= {"prev_hash": last["entry_hash"], "entry_hash": h, "signature": sign(row["seq"], h)}
        names = [*ledger_mod._HASHED_FIELDS, "prev_hash", "entry_hash", "signature"]
        conn.execute(
            f"INSERT INTO ledger({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            [row[k] for k in names],
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (str(row["seq"]),))
        conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (h,))
    write_head_file(ws / RELEASED_DIR, row["seq"], h)


def test_an_intact_signed_ledger_verifies_and_reports_its_gate_key(tmp_path: Path) -> None:
    ws, *_ = _populate(tmp_path)
    report = verify_ledger(ws, gate_key=ws / GATE_PUB)
    assert report.entries == 4 and report.gate_key_fingerprint == read_gate_public_key(ws).fingerprint


@pytest.mark.parametrize("how", ["attacker-key", "empty", "copied-from-another-entry"])
def test_an_entry_appended_with_a_recomputed_chain_is_refused_for_its_signature(tmp_path: Path, how: str) -> None:
    ws, *_ = _populate(tmp_path)
    fp = read_gate_public_key(ws).fingerprint
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        copied = conn.execute("SELECT signature FROM ledger WHERE seq = 4").fetchone()[0]
    intruder, _ = crypto.generate_signing_key()
    signers: dict[str, Callable[[int, str], str]] = {
        # their own key, naming the gate's fingerprint in the message: the signature is still not the gate's
        "attacker-key": lambda seq, h: crypto.sign(intruder, entry_signing_message(seq, h, fp)).hex(),
        "empty": lambda seq, h: "",
        "copied-from-another-entry": lambda seq, h: copied,
    }
    _append_forged(ws, signers[how])
    with pytest.raises(LedgerCorrupted, match=r"entry 5 \(L000005\).*signature"):
        verify_ledger(ws)


def test_a_forgery_signed_with_the_stolen_gate_key_verifies_which_is_why_the_key_is_protected(tmp_path: Path) -> None:
    """The limit of the signature, stated as a test: whoever holds the gate key and its passphrase signs too."""
    ws, *_ = _populate(tmp_path)
    signer = load_gate_signer(ws, GATE_PASSPHRASE)
    _append_forged(ws, lambda seq, h: signer.sign(entry_signing_message(seq, h, signer.fingerprint)).hex())
    assert verify_ledger(ws).entries == 5


@pytest.mark.parametrize("edit", ["flip-bit", "uppercase-hex", "truncate", "swap-two-entries"])
def test_an_altered_signature_is_refused(tmp_path: Path, edit: str) -> None:
    ws, *_ = _populate(tmp_path)
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        sigs = dict(conn.execute("SELECT seq, signature FROM ledger").fetchall())
        raw = bytearray(bytes.fromhex(sigs[2]))
        raw[10] ^= 0x01
        new = {
            "flip-bit": {2: raw.hex()},
            "uppercase-hex": {2: sigs[2].upper()},  # the same bytes, another spelling: not the gate's encoding
            "truncate": {2: sigs[2][:-2]},
            "swap-two-entries": {2: sigs[3], 3: sigs[2]},
        }[edit]
        for seq, value in new.items():
            conn.execute("UPDATE ledger SET signature = ? WHERE seq = ?", (value, seq))
    with pytest.raises(LedgerCorrupted, match=r"entry 2 \(L000002\).*signature does not verify"):
        verify_ledger(ws)


def test_a_refusal_is_a_signed_entry(tmp_path: Path) -> None:
    policy, pub, _ = signed_policy(tmp_path, "sdc-only")
    ws = gate_workspace(tmp_path)
    with Gate.open(ws, policy, [pub]) as gate:
        refused = gate.release(CountSpec(name="x", years=(2023,), by=("sex",)), requested_by="intruder")
    assert isinstance(refused, Refused) and refused.entry_id == "L000001"
    gate_pub = read_gate_public_key(ws)
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        outcome, h, signature = conn.execute("SELECT outcome, entry_hash, signature FROM ledger").fetchone()
        recorded = conn.execute("SELECT value FROM meta WHERE key = 'gate_key'").fetchone()[0]
    assert outcome == "refused" and recorded == gate_pub.fingerprint
    message = entry_signing_message(1, h, gate_pub.fingerprint)
    assert crypto.verify_signature(gate_pub.key, message, bytes.fromhex(signature))
    assert not crypto.verify_signature(gate_pub.key, message.replace(b'"seq":1', b'"seq":2'), bytes.fromhex(signature))


def test_a_swapped_gate_key_and_re_signed_ledger_is_caught_by_the_pin_and_by_the_anchor(tmp_path: Path) -> None:
    ws, _, officer_pub, officer_sk = _populate(tmp_path)
    pinned = tmp_path / "pinned-gate.pub"
    shutil.copy(ws / GATE_PUB, pinned)  # the officer's copy, kept outside the workspace
    anchor_ledger(ws, officer_sk, tmp_path / "anchor.json")
    assert read_anchor(tmp_path / "anchor.json").gate_key_fingerprint == read_gate_public_key(ws).fingerprint

    # someone who can write the workspace makes a gate key of their own and re-signs every entry with it
    (ws / GATE_KEY).unlink()
    (ws / GATE_PUB).unlink()
    fp = create_gate_key(ws, "theirs")
    _resign(ws, load_gate_signer(ws, "theirs").private_key, fp)
    assert verify_ledger(ws).gate_key_fingerprint == fp  # consistent on its own: the pin and the anchor exist for this

    with pytest.raises(LedgerCorrupted, match="not the pinned gate key"):
        verify_ledger(ws, gate_key=pinned)
    with pytest.raises(LedgerCorrupted, match=r"not the gate key .* anchored by"):
        check_anchor(ws, tmp_path / "anchor.json", [officer_pub])
    runner = CliRunner()
    pin = runner.invoke(app, ["ledger", "verify", str(ws), "--gate-key", str(pinned)])
    assert pin.exit_code == LedgerCorrupted.exit_code, pin.output
    args = ["ledger", "verify", str(ws), "--anchor", str(tmp_path / "anchor.json"), "--officer-key", str(officer_pub)]
    anchored = runner.invoke(app, args)
    assert anchored.exit_code == LedgerCorrupted.exit_code, anchored.output


def test_a_replaced_public_key_alone_is_refused(tmp_path: Path) -> None:
    """Swapping gate-signing.pub without re-signing: the entries no longer verify (and the recorded key differs)."""
    ws, *_ = _populate(tmp_path)
    _, other = crypto.generate_signing_key()
    (ws / GATE_PUB).unlink()
    crypto.write_public_key(ws / GATE_PUB, "gate-signing", other, label="release gate")
    with pytest.raises(LedgerCorrupted, match="records gate key"):
        verify_ledger(ws)
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'gate_key'", (crypto.fingerprint("gate-signing", other),))
    with pytest.raises(LedgerCorrupted, match=r"entry 1 \(L000001\).*signature does not verify"):
        verify_ledger(ws)


def test_the_gate_refuses_to_append_to_a_ledger_another_gate_key_signed(tmp_path: Path) -> None:
    ws, policy, pub, _ = _populate(tmp_path)
    (ws / GATE_KEY).unlink()
    (ws / GATE_PUB).unlink()
    add_gate_key(ws)
    before = (ws / LEDGER_FILE).read_bytes()
    with pytest.raises(KeyMaterialError, match="ledger is signed by gate key"):
        Gate.open(ws, policy, [pub])
    assert (ws / LEDGER_FILE).read_bytes() == before


@pytest.mark.parametrize("where", ["sub/extra.csv", "sub/deeper/t0.json", "sub/LEDGER-HEAD.json", ".hidden/x"])
def test_a_file_anywhere_under_released_that_no_entry_lists_is_refused(tmp_path: Path, where: str) -> None:
    ws, *_ = _populate(tmp_path)
    target = ws / RELEASED_DIR / where
    target.parent.mkdir(parents=True)
    shutil.copy(ws / RELEASED_DIR / "t0.json", target)  # even a byte-identical copy of a released file
    with pytest.raises(LedgerCorrupted, match=rf"{target.name}: file has no ledger entry"):
        verify_ledger(ws)
    assert str(target) in _cli_error(ws)


def _cli_error(ws: Path) -> str:
    result = CliRunner().invoke(app, ["ledger", "verify", str(ws)])
    assert result.exit_code == LedgerCorrupted.exit_code
    return result.output + (result.stderr if result.stderr_bytes is not None else "")


@pytest.mark.parametrize("kind", ["file-link", "dir-link", "fifo"])
def test_links_and_special_files_under_released_are_refused(tmp_path: Path, kind: str) -> None:
    ws, *_ = _populate(tmp_path)
    released = ws / RELEASED_DIR
    if kind == "file-link":  # a link named like a released file, to a byte-identical copy outside
        outside = tmp_path / "outside.json"
        shutil.copy(released / "t0.json", outside)
        (released / "t0.json").unlink()
        (released / "t0.json").symlink_to(outside)
    elif kind == "dir-link":
        (tmp_path / "elsewhere").mkdir()
        (released / "sub").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    else:
        os.mkfifo(released / "pipe")
    with pytest.raises(LedgerCorrupted, match="a link or special file"):
        verify_ledger(ws)


def test_a_workspace_without_a_gate_key_gets_a_clear_error_and_is_left_untouched(tmp_path: Path) -> None:
    policy, pub, _ = signed_policy(tmp_path, "sdc-only")
    ws = tmp_path / "ws"
    ws.mkdir()
    with pytest.raises(KeyMaterialError, match=r"gate-signing\.key: the workspace has no gate signing key") as exc:
        Gate.open(ws, policy, [pub])
    assert "coordinator init" in str(exc.value)
    assert list(ws.iterdir()) == []  # no ledger, no released/


def test_gate_key_problems_each_name_the_file_and_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    policy, pub, _ = signed_policy(tmp_path, "sdc-only")
    ws = gate_workspace(tmp_path)
    with pytest.raises(KeyMaterialError, match="wrong passphrase"):
        Gate.open(ws, policy, [pub], passphrase="not it")
    monkeypatch.delenv("KANSRIJK_PASSPHRASE")
    with pytest.raises(KeyMaterialError, match="KANSRIJK_PASSPHRASE is not set") as exc:
        Gate.open(ws, policy, [pub])
    assert "export KANSRIJK_PASSPHRASE" in str(exc.value)
    Gate.open(ws, policy, [pub], passphrase=GATE_PASSPHRASE).close()  # an explicit passphrase needs no env
    (ws / GATE_KEY).chmod(0o644)
    with pytest.raises(KeyMaterialError, match="readable by others"):
        Gate.open(ws, policy, [pub], passphrase=GATE_PASSPHRASE)
    (ws / GATE_KEY).chmod(0o600)
    _, other = crypto.generate_signing_key()
    (ws / GATE_PUB).unlink()
    crypto.write_public_key(ws / GATE_PUB, "gate-signing", other, label="release gate")
    with pytest.raises(KeyMaterialError, match=r"gate-signing\.pub: is not the public key of"):
        Gate.open(ws, policy, [pub], passphrase=GATE_PASSPHRASE)
    (ws / GATE_PUB).unlink()
    with pytest.raises(KeyMaterialError, match=r"gate-signing\.pub: the workspace has no gate public key"):
        verify_ledger(ws)


def test_the_gate_key_is_typed_apart_from_officer_keys(tmp_path: Path) -> None:
    ws = gate_workspace(tmp_path)
    assert stat.S_IMODE((ws / GATE_KEY).stat().st_mode) == 0o600
    with pytest.raises(KeyMaterialError, match="holds a gate-signing key, expected a ed25519-signing key"):
        crypto.read_secret_key(ws / GATE_KEY, "ed25519-signing", GATE_PASSPHRASE)
    with pytest.raises(KeyMaterialError, match="holds a gate-signing key"):
        crypto.read_public_key(ws / GATE_PUB, "ed25519-signing")  # so it can never pass as an officer key
    with pytest.raises(Exception, match="exists already"):
        create_gate_key(ws, GATE_PASSPHRASE)
    assert GATE_PASSPHRASE.encode() not in b"".join(p.read_bytes() for p in (ws / "keys").iterdir())
    assert "private" not in repr(load_gate_signer(ws, GATE_PASSPHRASE))


# --- any single byte of any stored entry field or signature --------------------------------------------------
_FIELDS = [f for f in ledger_mod._HASHED_FIELDS if f != "seq"] + ["prev_hash", "entry_hash", "signature"]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws, *_ = _populate(tmp_path_factory.mktemp("template"))
    verify_ledger(ws)
    return ws


def _copy(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("flip") / "ws"
    shutil.copytree(template, ws, symlinks=True)
    return ws


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seq=st.integers(1, 4), position=st.integers(0, 63), mask=st.integers(1, 255))
def test_flipping_any_byte_of_a_stored_signature_fails_verify(
    template: Path, tmp_path_factory: pytest.TempPathFactory, seq: int, position: int, mask: int
) -> None:
    ws = _copy(template, tmp_path_factory)
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        (value,) = conn.execute("SELECT signature FROM ledger WHERE seq = ?", (seq,)).fetchone()
        raw = bytearray(bytes.fromhex(value))
        raw[position] ^= mask
        conn.execute("UPDATE ledger SET signature = ? WHERE seq = ?", (raw.hex(), seq))
    with pytest.raises(LedgerCorrupted, match=rf"entry {seq} \(L00000{seq}\).*signature does not verify"):
        verify_ledger(ws)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    seq=st.integers(1, 4),
    field=st.sampled_from(_FIELDS),
    position=st.integers(0, 10_000),
    mask=st.integers(1, 255),
)
def test_flipping_any_byte_of_any_stored_entry_field_fails_verify(
    template: Path, tmp_path_factory: pytest.TempPathFactory, seq: int, field: str, position: int, mask: int
) -> None:
    """Every stored text field, the signature's hex text included (another spelling of the same bytes is refused
    too); a flip that leaves no valid UTF-8 is stored as a blob, which verify must refuse rather than crash on."""
    ws = _copy(template, tmp_path_factory)
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        (value,) = conn.execute(f"SELECT {field} FROM ledger WHERE seq = ?", (seq,)).fetchone()
        raw = bytearray(value.encode())
        if not raw:  # an empty field (no differencing record) has no byte to flip
            return
        raw[position % len(raw)] ^= mask
        try:
            stored: str | bytes = raw.decode("utf-8")
        except UnicodeDecodeError:
            stored = bytes(raw)
        conn.execute(f"UPDATE ledger SET {field} = ? WHERE seq = ?", (stored, seq))
    with pytest.raises(LedgerCorrupted):
        verify_ledger(ws)


def test_verify_prints_the_gate_key_and_the_pin(tmp_path: Path) -> None:
    ws, *_ = _populate(tmp_path)
    result = CliRunner().invoke(app, ["ledger", "verify", str(ws), "--gate-key", str(ws / GATE_PUB)])
    fp = read_gate_public_key(ws).fingerprint
    assert result.exit_code == 0 and f"every entry signed by gate key {fp} (the pinned key)" in result.output
    with sqlite3.connect(ws / LEDGER_FILE) as conn:
        first = conn.execute("SELECT signature FROM ledger WHERE seq = 1").fetchone()[0]
    shown = CliRunner().invoke(app, ["ledger", "show", str(ws), "--json"])
    assert shown.exit_code == 0 and f'"signature": "{first}"' in shown.output
