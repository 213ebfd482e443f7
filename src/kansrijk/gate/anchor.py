"""Ledger anchors: a privacy officer's signed statement of the ledger head, kept outside the workspace.

The ledger's hash chain shows any edited, removed or reordered entry, but not a *truncated* chain: whoever can
write the workspace can delete the newest entries and the mirrored head file together. An anchor closes that
gap up to the moment it was made. After ``verify_ledger`` passes, the officer signs::

    {"format": "kansrijk-ledger-anchor", "version": 2, "entry": 73, "entry_id": "L000073",
     "entry_hash": "<hex>", "entries": 73, "epsilon_spent": {"rotterdam-groeit": "17/5"},
     "anchored_at": "2026-11-25T14:00:00Z", "signer_fingerprint": "...",
     "gate_key_fingerprint": "...", "signature": "base64"}

The signature (Ed25519) covers the canonical JSON of every field but ``signature``, under a domain-separation
prefix. ``check_anchor`` verifies the signature against trusted officer keys, then requires the ledger to still
hold entry ``entry`` with exactly that hash, the budget spent to be no lower than the anchored one (a budget
that shrank was rolled back), and the workspace's gate key to be the anchored one (``gate_key_fingerprint``):
whoever replaces ``keys/gate-signing.pub`` and re-signs the ledger with a key of their own passes
``verify_ledger`` but not the anchor. Anchors of version 1 (made before the gate signed its ledger) carry no
gate key and are still checked for everything else. The officer keeps anchors off-site (mail, a register,
paper): a copy inside the workspace proves nothing against someone who controls the workspace.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from kansrijk import crypto
from kansrijk.errors import AnchorInvalid, LedgerCorrupted, OutputExists
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.gate.keys import GATE_PUB, read_gate_public_key
from kansrijk.gate.ledger import LEDGER_FILE, LedgerReport, open_existing, verify_ledger
from kansrijk.policy.signing import OfficerKey, officer_keys

ANCHOR_FORMAT = "kansrijk-ledger-anchor"
SIGNING_KIND = "ed25519-signing"
_DOMAIN = b"kansrijk/v1/ledger-anchor\n"
_FIELDS = ("entry", "entry_id", "entry_hash", "entries", "epsilon_spent", "anchored_at", "signer_fingerprint")
_FIELDS_V2 = (*_FIELDS, "gate_key_fingerprint")


@dataclass(frozen=True, slots=True)
class Anchor:
    entry: int
    entry_id: str
    entry_hash: str
    entries: int
    epsilon_spent: dict[str, str]
    anchored_at: str
    signer_fingerprint: str
    signature: bytes = b""
    gate_key_fingerprint: str | None = None  # None only in a version-1 anchor

    @property
    def version(self) -> int:
        return 1 if self.gate_key_fingerprint is None else 2

    def body(self) -> dict[str, Any]:
        fields = _FIELDS if self.version == 1 else _FIELDS_V2
        return {"format": ANCHOR_FORMAT, "version": self.version, **{k: getattr(self, k) for k in fields}}

    def signed_message(self) -> bytes:
        return _DOMAIN + json.dumps(self.body(), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    anchor: Path
    entry_id: str
    signer_fingerprint: str
    anchored_at: str
    entries_since: int
    gate_key_fingerprint: str | None = None  # the anchored gate key, checked against the workspace's


def anchor_ledger(workspace: Path, private_key: bytes, out: Path, *, now: dt.datetime | None = None) -> Anchor:
    """Verify the whole ledger, then sign its head and write the anchor to ``out`` (atomically, never over an
    existing file). Raises ``LedgerCorrupted`` (nothing written) if the ledger does not verify."""
    out = Path(out)
    if out.exists():
        raise OutputExists(f"{out}: exists already; an anchor is never overwritten", hint="choose a new --out")
    report: LedgerReport = verify_ledger(workspace)
    if report.entries == 0:
        raise LedgerCorrupted(f"{Path(workspace) / LEDGER_FILE}: the ledger has no entries to anchor")
    unsigned = Anchor(
        entry=report.head_seq,
        entry_id=f"L{report.head_seq:06d}",
        entry_hash=report.head_hash,
        entries=report.entries,
        epsilon_spent={d: str(e) for d, e in sorted(report.epsilon_spent.items())},
        anchored_at=(now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        signer_fingerprint=crypto.fingerprint(SIGNING_KIND, crypto.signing_public_key(private_key)),
        gate_key_fingerprint=report.gate_key_fingerprint,
    )
    signature = crypto.sign(private_key, unsigned.signed_message())
    document = {**unsigned.body(), "signature": base64.b64encode(signature).decode("ascii")}
    atomic_write_bytes(out, (json.dumps(document, indent=2) + "\n").encode())
    return dataclasses.replace(unsigned, signature=signature)


def read_anchor(path: Path) -> Anchor:
    """Parse an anchor file; ``AnchorInvalid`` names the file and the field that is wrong."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AnchorInvalid(f"{path}: no such anchor file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AnchorInvalid(f"{path}: not a JSON anchor file ({type(exc).__name__})") from None
    version = doc.get("version") if isinstance(doc, dict) else None
    known = type(version) is int and version in (1, 2)  # type() is int: True is no version
    if not isinstance(doc, dict) or doc.get("format") != ANCHOR_FORMAT or not known:
        raise AnchorInvalid(f"{path}: not a {ANCHOR_FORMAT} version 1 or 2 file (field 'format'/'version')")
    expected: dict[str, type] = {
        "entry": int,
        "entry_id": str,
        "entry_hash": str,
        "entries": int,
        "epsilon_spent": dict,
        "anchored_at": str,
        "signer_fingerprint": str,
        "signature": str,
    }
    if version == 2:
        expected["gate_key_fingerprint"] = str
    for field, kind in expected.items():
        value = doc.get(field)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise AnchorInvalid(f"{path}: field {field!r} is missing or not a {kind.__name__}")
    if doc["entry"] < 1 or not all(isinstance(v, str) for v in doc["epsilon_spent"].values()):
        raise AnchorInvalid(f"{path}: field 'entry' must be >= 1 and 'epsilon_spent' must map names to strings")
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise AnchorInvalid(f"{path}: field 'signature' is not base64") from None
    fields = _FIELDS if version == 1 else _FIELDS_V2
    return Anchor(**{k: doc[k] for k in fields}, signature=signature)


def check_anchor(workspace: Path, anchor_path: Path, trusted_officer_keys: Sequence[OfficerKey]) -> AnchorCheck:
    """Check one anchor against the workspace's ledger (run after ``verify_ledger``).

    ``AnchorInvalid`` (exit 24) if the anchor is not a valid signed statement of a trusted officer;
    ``LedgerCorrupted`` (exit 22) if the workspace's gate key is not the anchored one, the ledger no longer holds
    the anchored entry with its hash, or its budget spent is lower than anchored."""
    anchor_path = Path(anchor_path)
    anchor = read_anchor(anchor_path)
    keys = officer_keys(trusted_officer_keys)
    signer = next((k for k in keys if k.fingerprint == anchor.signer_fingerprint), None)
    if signer is None:
        raise AnchorInvalid(
            f"{anchor_path}: signed by key {anchor.signer_fingerprint}, which is not a trusted privacy-officer key",
            hint="pass the officer's public key with --officer-key",
        )
    if not crypto.verify_signature(signer.key, anchor.signed_message(), anchor.signature):
        raise AnchorInvalid(f"{anchor_path}: the signature does not verify (the anchor file was altered)")
    if anchor.gate_key_fingerprint is not None:
        current = read_gate_public_key(workspace).fingerprint
        if not crypto.constant_time_equal(current.encode(), anchor.gate_key_fingerprint.encode()):
            raise LedgerCorrupted(
                f"{Path(workspace) / GATE_PUB}: the workspace's gate key {current} is not the gate key "
                f"{anchor.gate_key_fingerprint} anchored by {anchor_path} ({anchor.anchored_at}); the gate key was "
                f"replaced and the ledger may have been re-signed",
                hint="restore the workspace from its last verified backup and report the incident",
            )
    where = Path(workspace) / LEDGER_FILE
    conn = open_existing(workspace)
    try:
        row = conn.execute("SELECT entry_hash FROM ledger WHERE seq = ?", (anchor.entry,)).fetchone()
        count = int(conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
        budget = {r["dataset"]: Fraction(r["epsilon_spent"]) for r in conn.execute("SELECT * FROM budget")}
    finally:
        conn.close()
    if row is None:
        raise LedgerCorrupted(
            f"{where}: entry {anchor.entry_id} anchored by {anchor_path} ({anchor.anchored_at}) is gone; the ledger "
            f"holds {count} entries (truncated or replaced)",
            hint="restore the ledger from its last verified backup and report the incident",
        )
    if not crypto.constant_time_equal(str(row["entry_hash"]).encode(), anchor.entry_hash.encode()):
        raise LedgerCorrupted(
            f"{where}: entry {anchor.entry_id} does not have the hash anchored by {anchor_path} "
            f"({anchor.anchored_at}); the chain was rewritten",
            hint="restore the ledger from its last verified backup and report the incident",
        )
    for dataset, spent in anchor.epsilon_spent.items():
        if budget.get(dataset, Fraction(0)) < Fraction(spent):
            raise LedgerCorrupted(
                f"{where}: epsilon spent on {dataset!r} is {budget.get(dataset, Fraction(0))}, below the {spent} "
                f"anchored by {anchor_path}; the budget was rolled back",
            )
    return AnchorCheck(
        anchor_path,
        anchor.entry_id,
        anchor.signer_fingerprint,
        anchor.anchored_at,
        count - anchor.entry,
        anchor.gate_key_fingerprint,
    )
