"""The audit ledger: an append-only, hash-chained record of every release decision, in ``WS/ledger.sqlite``.

Each entry records what was asked (request digest, kind, name, requested_by), under which policy (policy digest),
every rule's verdict, the privacy budget spent (exact fractions as text) and the digests of the files written to
``released/``. ``entry_hash = SHA-256(prev_hash || canonical JSON of the entry)``; the head (last sequence number
and hash) is kept in the ``meta`` table and mirrored to ``released/LEDGER-HEAD.json`` so a removed last entry is
detected too.

The chain alone proves nothing against someone who can write the database: they can append an entry and
recompute every hash. So the gate signs each entry (releases and refusals alike) with its own Ed25519 key
(``kansrijk.gate.keys``): ``signature = Ed25519(gate key, "kansrijk/v1/ledger-entry\n" || canonical JSON of
{seq, entry_hash, gate_key})``, stored as hex in the entry's ``signature`` column; ``entry_hash`` covers every
other field and the previous entry. The gate key's fingerprint is kept in ``meta`` (``gate_key``).

The budget table (``kansrijk.gate.budget``) lives in the same database so a release's budget spend and its ledger
entry commit in one transaction.

The differencing records (``table_records``: true person counts per release; ``node_records``: the class counts
of every other node of a released tree) and the populations they name (``populations``: sorted 64-bit person-year
ids, stored once per distinct population) live there too; an entry's ``record_digest`` covers its records
and their population digests.

The officer review of refused outputs (``kansrijk.gate.review``) keeps two tables here: ``refused_specs`` (the spec
of every refused release that carries no data, so a review can recompute it; its digest is the entry's
``request_digest``, which ``verify_ledger`` checks) and ``reviews`` (each review request, the officer's signed
decision, and the entry that released an approved output).

``verify_ledger`` recomputes the chain, checks every signature against the workspace's gate public key (and,
when given, that this key is a pinned one), and cross-checks the budget, the differencing records and their
populations, and every file anywhere under ``released/``; any mismatch is ``LedgerCorrupted``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from kansrijk import crypto
from kansrijk.errors import KeyMaterialError, LedgerCorrupted, WorkspaceError
from kansrijk.fsutil import atomic_write_bytes, is_temp_name
from kansrijk.gate.keys import GATE_KEY_KIND, GATE_PUB, GateSigner, read_gate_public_key

LEDGER_FILE = "ledger.sqlite"
RELEASED_DIR = "released"
HEAD_FILE = "LEDGER-HEAD.json"
PENDING_PREFIX = ".pending."
GENESIS = "0" * 64
LEDGER_FORMAT = "kansrijk-release-ledger"
SIGNATURE_DOMAIN = b"kansrijk/v1/ledger-entry\n"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS budget (
    dataset        TEXT PRIMARY KEY,
    epsilon_spent  TEXT NOT NULL,
    delta_spent    TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ledger (
    seq            INTEGER PRIMARY KEY,
    time           TEXT NOT NULL,
    requested_by   TEXT NOT NULL,
    release_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    outcome        TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    policy_digest  TEXT NOT NULL,
    dataset        TEXT NOT NULL,
    epsilon        TEXT NOT NULL,
    delta          TEXT NOT NULL,
    verdicts       TEXT NOT NULL,
    outputs        TEXT NOT NULL,
    record_digest  TEXT NOT NULL,
    prev_hash      TEXT NOT NULL,
    entry_hash     TEXT NOT NULL UNIQUE,
    signature      TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS table_records (
    seq               INTEGER PRIMARY KEY REFERENCES ledger(seq),
    dims              TEXT NOT NULL,
    population        TEXT NOT NULL,
    cells             TEXT NOT NULL,
    population_digest TEXT REFERENCES populations(digest)
);
CREATE TABLE IF NOT EXISTS node_records (
    seq               INTEGER NOT NULL REFERENCES table_records(seq),
    node              INTEGER NOT NULL,
    dims              TEXT NOT NULL,
    population        TEXT NOT NULL,
    cells             TEXT NOT NULL,
    population_digest TEXT REFERENCES populations(digest),
    PRIMARY KEY (seq, node)
);
CREATE TABLE IF NOT EXISTS populations (
    digest TEXT PRIMARY KEY,
    ids    BLOB NOT NULL,
    size   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit_records (
    seq    INTEGER NOT NULL REFERENCES ledger(seq),
    part   INTEGER NOT NULL,
    record BLOB NOT NULL,
    PRIMARY KEY (seq, part)
);
CREATE TABLE IF NOT EXISTS refused_specs (
    seq  INTEGER PRIMARY KEY REFERENCES ledger(seq),
    spec TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reviews (
    review_id      TEXT PRIMARY KEY,
    refused_seq    INTEGER NOT NULL REFERENCES ledger(seq),
    release_name   TEXT NOT NULL,
    kind           TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    requested_by   TEXT NOT NULL,
    justification  TEXT NOT NULL,
    requested_at   TEXT NOT NULL,
    refused        TEXT NOT NULL,
    released_form  TEXT NOT NULL,
    values_digest  TEXT NOT NULL,
    review_digest  TEXT NOT NULL UNIQUE,
    status         TEXT NOT NULL,
    decision       TEXT,
    decided_at     TEXT,
    released_seq   INTEGER
);
"""

_HASHED_FIELDS = (
    "seq",
    "time",
    "requested_by",
    "release_name",
    "kind",
    "outcome",
    "request_digest",
    "policy_digest",
    "dataset",
    "epsilon",
    "delta",
    "verdicts",
    "outputs",
    "record_digest",
)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One ledger row. ``outputs`` maps file name (under ``released/``) to ``sha256:`` digest; ``signature`` is
    the gate's Ed25519 signature of ``entry_signing_message(seq, entry_hash, gate key fingerprint)``, as hex."""

    seq: int
    time: str
    requested_by: str
    release_name: str
    kind: str
    outcome: str
    request_digest: str
    policy_digest: str
    dataset: str
    epsilon: Fraction
    delta: Fraction
    verdicts: tuple[dict[str, Any], ...]
    outputs: dict[str, str]
    record_digest: str
    prev_hash: str
    entry_hash: str
    signature: str = ""

    @property
    def entry_id(self) -> str:
        return f"L{self.seq:06d}"


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_prefixed(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def record_digest(dims: str, population: str, cells: str, population_digest: str | None) -> str:
    """The digest of a differencing record, kept in its ledger entry. A record without a population (written
    before populations were recorded, or for a request without persons) keeps the three-part digest."""
    parts = [dims, population, cells] if population_digest is None else [dims, population, cells, population_digest]
    return sha256_prefixed(canonical(parts))


def record_digest_with_nodes(root: str, nodes: list[tuple[int, str]]) -> str:
    """The digest of a tree's differencing record: its root record's digest and every other node's record
    digest (``node_records``), in node order."""
    return sha256_prefixed(canonical([root, [[node, digest] for node, digest in sorted(nodes)]]))


def record_digest_with_audit(record: str, audit_blobs: list[bytes]) -> str:
    """An entry's record digest when the release also left audit records (``audit_records``, the release-history
    audit's): the differencing record's digest and each audit record's SHA-256, in part order. Editing, removing
    or adding an audit record (weakening what later releases are audited against) fails ``ledger verify``."""
    return sha256_prefixed(canonical([record, [sha256_prefixed(blob) for blob in audit_blobs]]))


def population_digest(ids_bytes: bytes) -> str:
    """The digest of a population: SHA-256 over its sorted unique 64-bit person-year ids (big-endian bytes)."""
    return sha256_prefixed(ids_bytes)


def entry_hash(prev_hash: str, row: dict[str, Any]) -> str:
    body = {k: row[k] for k in _HASHED_FIELDS}
    return hashlib.sha256(prev_hash.encode() + b"\n" + canonical(body)).hexdigest()


def entry_signing_message(seq: int, entry_hash: str, gate_key: str) -> bytes:
    """The bytes the gate signs for an entry: a domain-separation prefix, then the canonical JSON of the entry's
    number, its hash (which covers every other field and the previous entry) and the gate key's fingerprint."""
    return SIGNATURE_DOMAIN + canonical({"entry_hash": entry_hash, "gate_key": gate_key, "seq": seq})


def connect(path: Path) -> sqlite3.Connection:
    """Open the ledger database in autocommit mode (transactions are explicit: BEGIN IMMEDIATE)."""
    conn = sqlite3.connect(str(path), timeout=120.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    # Rollback journal (SQLite's default): readers never change the file; writers serialise on BEGIN IMMEDIATE.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def initialise(conn: sqlite3.Connection, *, gate_key: str | None = None) -> None:
    """Create the tables (or add what an older ledger lacks). With ``gate_key`` (the gate key's fingerprint):
    record it in ``meta``, or refuse (``KeyMaterialError``) a ledger that another gate key signed."""
    with immediate(conn):
        for statement in _SCHEMA.strip().split(";"):
            if statement.strip():
                conn.execute(statement)
        # a ledger created before populations were recorded: its records keep population_digest NULL
        columns = {r[1] for r in conn.execute("PRAGMA table_info(table_records)")}
        if "population_digest" not in columns:
            conn.execute("ALTER TABLE table_records ADD COLUMN population_digest TEXT REFERENCES populations(digest)")
        # a ledger created before entries were signed: its entries keep an empty signature (and fail verify)
        if "signature" not in {r[1] for r in conn.execute("PRAGMA table_info(ledger)")}:
            conn.execute("ALTER TABLE ledger ADD COLUMN signature TEXT NOT NULL DEFAULT ''")
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('format', ?)", (LEDGER_FORMAT,))
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('version', '1')")
        # differencing populations are person-years from this entry on (a ledger written before holds sets of
        # persons, which differencing treats as unknown populations)
        head_seq = conn.execute("SELECT value FROM meta WHERE key = 'head_seq'").fetchone()
        conn.execute(
            "INSERT OR IGNORE INTO meta(key, value) VALUES ('person_year_populations_from', ?)",
            (str(int(head_seq[0]) + 1 if head_seq is not None else 1),),
        )
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('head_seq', '0')")
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('head_hash', ?)", (GENESIS,))
        if gate_key is not None:
            _record_gate_key(conn, gate_key)


@contextlib.contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction, taking the write lock up front (safe across processes)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def _meta(conn: sqlite3.Connection, key: str) -> str | None:
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _record_gate_key(conn: sqlite3.Connection, gate_key: str) -> None:
    """Inside a write transaction: the ledger's gate key is ``gate_key``, recorded now if it is the first."""
    recorded = _meta(conn, "gate_key")
    if recorded is None:
        conn.execute("INSERT INTO meta(key, value) VALUES ('gate_key', ?)", (gate_key,))
    elif recorded != gate_key:
        raise KeyMaterialError(
            f"{LEDGER_FILE}: the ledger is signed by gate key {recorded}, but the workspace's gate key is {gate_key}",
            hint=f"restore the workspace's own gate key ({GATE_PUB} and its private key); never replace it",
        )


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    seq = _meta(conn, "head_seq")
    h = _meta(conn, "head_hash")
    if seq is None or h is None:
        raise LedgerCorrupted("ledger.sqlite: meta table has no head; the ledger was altered or is not initialised")
    return int(seq), h


def append_entry(
    conn: sqlite3.Connection,
    *,
    signer: GateSigner,
    requested_by: str,
    release_name: str,
    kind: str,
    outcome: str,
    request_digest: str,
    policy_digest: str,
    dataset: str,
    epsilon: Fraction,
    delta: Fraction,
    verdicts: list[dict[str, Any]],
    outputs: dict[str, str],
    record_digest: str = "",
    seq: int | None = None,
    now: dt.datetime | None = None,
) -> LedgerEntry:
    """Append one entry signed by the gate's ``signer``; must run inside ``immediate(conn)``. ``seq`` (if given)
    must be the next number. Refuses (``KeyMaterialError``) a signer other than the ledger's gate key."""
    _record_gate_key(conn, signer.fingerprint)
    head_seq, head_hash = head(conn)
    if seq is not None and seq != head_seq + 1:
        raise LedgerCorrupted(f"ledger.sqlite: expected next entry {head_seq + 1}, got {seq}")
    row: dict[str, Any] = {
        "seq": head_seq + 1,
        "time": (now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "requested_by": requested_by,
        "release_name": release_name,
        "kind": kind,
        "outcome": outcome,
        "request_digest": request_digest,
        "policy_digest": policy_digest,
        "dataset": dataset,
        "epsilon": str(epsilon),
        "delta": str(delta),
        "verdicts": canonical(verdicts).decode(),
        "outputs": canonical(outputs).decode(),
        "record_digest": record_digest,
    }
    h = entry_hash(head_hash, row)
    signature = signer.sign(entry_signing_message(row["seq"], h, signer.fingerprint)).hex()
    conn.execute(
        f"INSERT INTO ledger({', '.join(_HASHED_FIELDS)}, prev_hash, entry_hash, signature) "  # noqa: S608
        f"VALUES ({', '.join('?' for _ in _HASHED_FIELDS)}, ?, ?, ?)",  # (fixed column names)
        (*[row[k] for k in _HASHED_FIELDS], head_hash, h, signature),
    )
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head_seq'", (str(row["seq"]),))
    conn.execute("UPDATE meta SET value = ? WHERE key = 'head_hash'", (h,))
    return _entry({**row, "prev_hash": head_hash, "entry_hash": h, "signature": signature})


def person_year_populations_from(conn: sqlite3.Connection) -> int:
    """The first entry whose differencing populations are person-years (1 for a ledger created since)."""
    value = _meta(conn, "person_year_populations_from")
    return int(value) if value is not None else 1


def next_seq(conn: sqlite3.Connection) -> int:
    return head(conn)[0] + 1


def _entry(row: Any) -> LedgerEntry:
    r = dict(row)
    return LedgerEntry(
        seq=int(r["seq"]),
        time=r["time"],
        requested_by=r["requested_by"],
        release_name=r["release_name"],
        kind=r["kind"],
        outcome=r["outcome"],
        request_digest=r["request_digest"],
        policy_digest=r["policy_digest"],
        dataset=r["dataset"],
        epsilon=Fraction(r["epsilon"]),
        delta=Fraction(r["delta"]),
        verdicts=tuple(json.loads(r["verdicts"])),
        outputs=json.loads(r["outputs"]),
        record_digest=r["record_digest"],
        prev_hash=r["prev_hash"],
        entry_hash=r["entry_hash"],
        signature=r.get("signature") or "",
    )


def entries(conn: sqlite3.Connection) -> list[LedgerEntry]:
    return [_entry(r) for r in conn.execute("SELECT * FROM ledger ORDER BY seq")]


def record_refused_spec(conn: sqlite3.Connection, seq: int, spec: Any) -> None:
    """Inside the write transaction of refused entry ``seq``: keep its spec, when it carries no data, so the
    requester can put the refusal to a privacy officer's review (``kansrijk.gate.review``)."""
    from kansrijk.gate.requests import RequestInvalid
    from kansrijk.gate.specs import spec_to_json

    try:
        text = canonical(spec_to_json(spec)).decode()
    except RequestInvalid:
        return  # a spec that carries data (scores, importances) cannot be recomputed for a review
    conn.execute("INSERT OR REPLACE INTO refused_specs(seq, spec) VALUES (?, ?)", (seq, text))


def released_names(conn: sqlite3.Connection) -> set[str]:
    rows = conn.execute("SELECT release_name FROM ledger WHERE outcome IN ('released', 'suppressed')")
    return {r[0] for r in rows}


# --- head mirror -----------------------------------------------------------------------------------------
def write_head_file(released: Path, seq: int, h: str) -> None:
    atomic_write_bytes(released / HEAD_FILE, canonical({"format": LEDGER_FORMAT, "seq": seq, "entry_hash": h}))


def read_head_file(released: Path) -> tuple[int, str] | None:
    path = released / HEAD_FILE
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return int(doc["seq"]), str(doc["entry_hash"])
    except (ValueError, KeyError, TypeError):
        raise LedgerCorrupted(f"{path}: not a ledger head file") from None


# --- verification ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LedgerReport:
    entries: int
    head_seq: int
    head_hash: str
    files_checked: int
    epsilon_spent: dict[str, Fraction]
    gate_key_fingerprint: str = ""


def open_existing(workspace: Path) -> sqlite3.Connection:
    path = Path(workspace) / LEDGER_FILE
    if not path.is_file():
        raise WorkspaceError(
            f"{path}: no release ledger in this workspace", hint="run a release through the gate first"
        )
    # Read-only URI so verifying or showing never changes the file.
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=120.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    return conn


def verify_ledger(workspace: Path, *, gate_key: Path | None = None) -> LedgerReport:
    """Recompute the hash chain, check every entry's gate signature, and cross-check budget, differencing
    records, head and every file anywhere under ``released/``.

    Signatures are checked against the workspace's ``keys/gate-signing.pub``. With ``gate_key`` (a gate public
    key file kept outside the workspace) that key must also be the pinned one, which catches a replaced key
    file with a re-signed ledger. Raises ``LedgerCorrupted`` naming the first problem found (entry number and
    what does not match); ``KeyMaterialError`` when a gate public key file is missing or unreadable.
    """
    workspace = Path(workspace)
    released = workspace / RELEASED_DIR
    public = _gate_public_key(workspace, gate_key)
    conn = open_existing(workspace)
    try:
        try:
            rows = [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY rowid")]
            budget_rows = {r["dataset"]: dict(r) for r in conn.execute("SELECT * FROM budget")}
            records = {r["seq"]: dict(r) for r in conn.execute("SELECT * FROM table_records")}
            node_records = _read_node_records(conn)
            audit_blobs: dict[int, list[bytes]] = {}
            has_audit = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'audit_records'"
            ).fetchone()  # a ledger from before the release-history audit has none
            stored = "SELECT seq, record FROM audit_records ORDER BY seq, part"
            for seq, blob in conn.execute(stored) if has_audit else ():
                audit_blobs.setdefault(seq, []).append(bytes(blob))
            populations = _read_populations(conn)
            refused_specs = _read_refused_specs(conn)
            head_seq, head_hash = head(conn)
            recorded_gate_key = _meta(conn, "gate_key")
        except sqlite3.DatabaseError as exc:
            raise LedgerCorrupted(f"{workspace / LEDGER_FILE}: unreadable ledger database ({exc})") from None
    finally:
        conn.close()
    prev = GENESIS
    spent: dict[str, Fraction] = {}
    delta_spent: dict[str, Fraction] = {}
    expected_files: dict[str, str] = {}
    where = workspace / LEDGER_FILE
    if rows and recorded_gate_key != public.fingerprint:
        raise LedgerCorrupted(
            f"{where}: the ledger records gate key {recorded_gate_key}, but {workspace / GATE_PUB} is gate key "
            f"{public.fingerprint}; the gate key or the ledger was replaced",
            hint="restore the workspace from its last verified backup and report the incident",
        )
    for i, row in enumerate(rows, start=1):
        if row["seq"] != i:
            raise LedgerCorrupted(
                f"{where}: entry {i} is missing or out of order (found entry {row['seq']} in its place)",
                hint="restore the ledger from its last verified backup",
            )
        _check_types(row, i, where)
        if row["prev_hash"] != prev:
            raise LedgerCorrupted(f"{where}: entry {i} does not link to entry {i - 1} (removed or reordered)")
        if entry_hash(prev, row) != row["entry_hash"]:
            raise LedgerCorrupted(f"{where}: entry {i} was edited (its hash does not match its contents)")
        _check_signature(row, i, public, where, workspace / GATE_PUB)
        prev = row["entry_hash"]
        try:
            spent[row["dataset"]] = spent.get(row["dataset"], Fraction(0)) + Fraction(row["epsilon"])
            delta_spent[row["dataset"]] = delta_spent.get(row["dataset"], Fraction(0)) + Fraction(row["delta"])
        except (ValueError, ZeroDivisionError):
            raise LedgerCorrupted(f"{where}: entry {i} has an unreadable epsilon/delta") from None
        record = records.pop(i, None)
        nodes = node_records.pop(i, [])
        if record is not None:
            pops = [record.get("population_digest"), *(n.get("population_digest") for n in nodes)]
            digest = record_digest(record["dims"], record["population"], record["cells"], pops[0])
            if nodes:
                parts = [(n["node"], record_digest(n["dims"], n["population"], n["cells"], n["population_digest"]))
                         for n in nodes]  # fmt: skip
                digest = record_digest_with_nodes(digest, parts)
            blobs = audit_blobs.pop(i, [])
            if blobs:
                digest = record_digest_with_audit(digest, blobs)
            if digest != row["record_digest"]:
                raise LedgerCorrupted(f"{where}: the differencing record of entry {i} was edited")
            if any(pop is not None and pop not in populations for pop in pops):
                raise LedgerCorrupted(f"{where}: the population of entry {i}'s differencing record is missing")
        elif row["record_digest"]:
            raise LedgerCorrupted(f"{where}: the differencing record of entry {i} was removed")
        try:
            outputs = json.loads(row["outputs"])
        except ValueError:
            raise LedgerCorrupted(f"{where}: entry {i} has unreadable outputs") from None
        if not isinstance(outputs, dict):
            raise LedgerCorrupted(f"{where}: entry {i} has unreadable outputs")
        for name, digest in outputs.items():
            expected_files[name] = digest
    _check_refused_specs(refused_specs, rows, where)
    if records or node_records or audit_blobs:
        orphans = sorted({*records, *node_records, *audit_blobs})
        raise LedgerCorrupted(f"{where}: differencing record(s) for entries {orphans} have no ledger entry")
    for digest, (ids, size) in populations.items():
        if population_digest(ids) != digest or size * 8 != len(ids):
            raise LedgerCorrupted(f"{where}: a recorded population ({digest[:19]}...) was edited")
    n = len(rows)
    if (head_seq, head_hash) != ((n, prev) if n else (0, GENESIS)):
        raise LedgerCorrupted(f"{where}: the ledger head says entry {head_seq} but the chain ends at entry {n}")
    mirrored = read_head_file(released)
    if mirrored is not None:
        m_seq, m_hash = mirrored
        if m_seq > n or (m_seq > 0 and rows[m_seq - 1]["entry_hash"] != m_hash):
            raise LedgerCorrupted(
                f"{released / HEAD_FILE}: the published head (entry {m_seq}) is not in the ledger; entries were "
                f"removed or rewritten"
            )
    elif n:
        raise LedgerCorrupted(f"{released / HEAD_FILE}: missing, but the ledger has {n} entries")
    for dataset in set(spent) | set(budget_rows):
        row = budget_rows.get(dataset) or {"epsilon_spent": "0", "delta_spent": "0"}
        if Fraction(row["epsilon_spent"]) != spent.get(dataset, 0) or Fraction(row["delta_spent"]) != delta_spent.get(
            dataset, 0
        ):
            raise LedgerCorrupted(
                f"{where}: budget of dataset {dataset!r} does not equal the sum of its ledger entries"
            )
    checked = _verify_files(released, expected_files)
    return LedgerReport(
        entries=n,
        head_seq=head_seq,
        head_hash=head_hash,
        files_checked=checked,
        epsilon_spent=spent,
        gate_key_fingerprint=public.fingerprint,
    )


def _gate_public_key(workspace: Path, pinned: Path | None) -> crypto.PublicKeyFile:
    """The workspace's gate public key; with ``pinned``, only if it is that key (else ``LedgerCorrupted``)."""
    public = read_gate_public_key(workspace)
    if pinned is None:
        return public
    expected = crypto.read_public_key(Path(pinned), GATE_KEY_KIND)
    if not crypto.constant_time_equal(expected.key, public.key):
        raise LedgerCorrupted(
            f"{workspace / GATE_PUB}: the workspace's gate key {public.fingerprint} is not the pinned gate key "
            f"{expected.fingerprint} ({pinned}); the gate key was replaced and the ledger may have been re-signed",
            hint="restore the workspace from its last verified backup and report the incident",
        )
    return public


_TEXT_FIELDS = (*_HASHED_FIELDS[1:], "prev_hash", "entry_hash", "signature")
_HEX = frozenset("0123456789abcdef")


def _check_types(row: dict[str, Any], i: int, where: Path) -> None:
    """Every stored field has the type the gate writes (a field stored as a blob or a number was altered)."""
    for name in _TEXT_FIELDS:
        if not isinstance(row.get(name), str):
            raise LedgerCorrupted(f"{where}: entry {i}'s field {name!r} is not text (the entry was altered)")


def _check_signature(row: dict[str, Any], i: int, public: crypto.PublicKeyFile, where: Path, pub_path: Path) -> None:
    signature: str = row["signature"]
    if not signature:
        raise LedgerCorrupted(
            f"{where}: entry {i} (L{i:06d}) has no gate signature (written outside the gate, or by a version "
            f"that did not sign its entries)",
            hint="restore the ledger from its last verified backup and report the incident",
        )
    # Only the gate's own encoding is accepted (128 lowercase hex digits): no second spelling of a signature.
    valid = len(signature) == 128 and _HEX.issuperset(signature)
    message = entry_signing_message(i, row["entry_hash"], public.fingerprint)
    if not valid or not crypto.verify_signature(public.key, message, bytes.fromhex(signature)):
        raise LedgerCorrupted(
            f"{where}: entry {i} (L{i:06d}): its signature does not verify against the gate key "
            f"{public.fingerprint} ({pub_path}); the entry was not written by this workspace's gate",
            hint="restore the ledger from its last verified backup and report the incident",
        )


def _read_node_records(conn: sqlite3.Connection) -> dict[int, list[dict[str, Any]]]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    out: dict[int, list[dict[str, Any]]] = {}
    if "node_records" in tables:  # a ledger from before tree nodes were recorded, opened read-only, has none
        for r in conn.execute("SELECT * FROM node_records ORDER BY seq, node"):
            out.setdefault(int(r["seq"]), []).append(dict(r))
    return out


def _read_populations(conn: sqlite3.Connection) -> dict[str, tuple[bytes, int]]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "populations" not in tables:  # a ledger from before populations were recorded, opened read-only
        return {}
    return {r["digest"]: (bytes(r["ids"]), int(r["size"])) for r in conn.execute("SELECT * FROM populations")}


def _read_refused_specs(conn: sqlite3.Connection) -> dict[int, str]:
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "refused_specs" not in tables:  # a ledger from before refusals could be reviewed, opened read-only
        return {}
    return {int(r["seq"]): str(r["spec"]) for r in conn.execute("SELECT seq, spec FROM refused_specs")}


def _check_refused_specs(specs: dict[int, str], rows: list[dict[str, Any]], where: Path) -> None:
    """Each kept spec belongs to a refused entry and is the very request that entry records (its digest)."""
    from kansrijk.gate.requests import RequestInvalid
    from kansrijk.gate.specs import parse_spec

    for seq, text in sorted(specs.items()):
        row = rows[seq - 1] if 0 < seq <= len(rows) else None
        if row is None or row["outcome"] != "refused":
            raise LedgerCorrupted(f"{where}: a refused spec is kept for entry {seq}, which is not a refusal")
        try:
            digest = parse_spec(json.loads(text)).digest()
        except (ValueError, RequestInvalid):
            raise LedgerCorrupted(f"{where}: the refused spec of entry {seq} is unreadable (edited)") from None
        if digest != row["request_digest"]:
            raise LedgerCorrupted(f"{where}: the refused spec of entry {seq} is not the request it records (edited)")


def _released_files(released: Path) -> dict[str, Path]:
    """Every file anywhere under ``released/`` (but the head file) by its path relative to ``released/``.

    Links and other non-regular entries are refused outright: the gate writes regular files only."""
    present: dict[str, Path] = {}
    if not released.is_dir():
        return present

    def unreadable(exc: OSError) -> None:
        raise LedgerCorrupted(f"{exc.filename}: cannot be read ({exc.strerror}); verify cannot see what is in it")

    for dirpath, dirnames, filenames in os.walk(released, onerror=unreadable, followlinks=False):
        base = Path(dirpath)
        for name in (*dirnames, *filenames):
            path = base / name
            if path.is_symlink() or not (path.is_dir() or path.is_file()):
                raise LedgerCorrupted(f"{path}: a link or special file, not written by the gate")
        for name in filenames:
            relative = (base / name).relative_to(released).as_posix()
            if relative != HEAD_FILE:
                present[relative] = base / name
    return present


def _verify_files(released: Path, expected: dict[str, str]) -> int:
    present = _released_files(released)
    pending = [name for name in present if "/" not in name and (name.startswith(PENDING_PREFIX) or is_temp_name(name))]
    if pending:
        raise LedgerCorrupted(
            f"{released}: unfinished release or head file(s) {pending[:3]}",
            hint="open the gate once (it recovers interrupted releases), then verify again",
        )
    for name in sorted(present):
        if name not in expected:
            raise LedgerCorrupted(f"{released / name}: file has no ledger entry (not written by the gate)")
        if sha256_prefixed(present[name].read_bytes()) != expected[name]:
            raise LedgerCorrupted(f"{released / name}: file content does not match its ledger digest (edited)")
    missing = sorted(set(expected) - set(present))
    if missing:
        raise LedgerCorrupted(f"{released}: released file(s) {missing[:3]} recorded in the ledger are missing")
    return len(present)
