"""The coordinator's workspace: its layout, its keys and its SQLite state.

Layout (``kansrijk coordinator init WS``)::

    WS/workspace.toml           what this workspace is: format, creation time, public key fingerprints
    WS/partners.toml            the installed partner registry (a copy of the privacy officer's file)
    WS/partners.toml.sig        its signature, when the workspace trusts privacy officers
    WS/keys/coordinator-hpke.pub    X25519 public key partners seal bundles to (hand this out)
    WS/keys/coordinator-hpke.key    its private key (passphrase-protected, mode 0600)
    WS/keys/coordinator-pseudonym.key  the coordinator pseudonym key: P2 = HMAC-SHA256(key, P1) (0600)
    WS/keys/gate-signing.key    the release gate's Ed25519 key: it signs every ledger entry (passphrase, 0600)
    WS/keys/gate-signing.pub    its public key; `kansrijk ledger verify` checks the signatures against it
    WS/keys/officers/<fp>.pub   privacy officers trusted to sign the registry (optional; then it must be signed)
    WS/state.sqlite             ingested bundles (per partner chain), link runs; no person-level data
    WS/tables/<partner>/<year>.parquet   one table per ingested extract, keyed by P2
    WS/dataset/<year>.parquet   the linked analysis dataset per reference year (+ longitudinal.parquet)
    WS/internal/                operator-only outputs that never leave the environment (linkage reports)
    WS/ledger.sqlite, WS/released/   owned by the release gate (created by the gate, not here)

The state database runs in SQLite's default rollback-journal mode, so a read leaves the file byte-identical:
a refused bundle changes nothing in the workspace.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import os
import sqlite3
import tomllib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from kansrijk.crypto import (
    fingerprint,
    generate_encryption_key,
    random_key,
    read_public_key,
    read_secret_key,
    write_public_key,
    write_secret_key,
)
from kansrijk.errors import KeyMaterialError, OutputExists, PolicyError, WorkspaceError
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.gate.keys import GATE_PUB, create_gate_key
from kansrijk.policy.common import format_validation_error
from kansrijk.policy.registry import (
    PartnerRegistry,
    load_registry,
    partner_key_from_bytes,
    render_registry,
    with_partner,
)
from kansrijk.policy.signing import signature_path, verify_policy

WORKSPACE_FORMAT = "kansrijk-coordinator-workspace"
DEFAULT_PASSPHRASE_ENV = "KANSRIJK_PASSPHRASE"  # noqa: S105  (the name of a variable, not a secret)

_SCHEMA = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE bundles (
    seq                  INTEGER PRIMARY KEY AUTOINCREMENT,
    bundle_digest        TEXT NOT NULL UNIQUE,
    extract_id           TEXT NOT NULL UNIQUE,
    partner              TEXT NOT NULL,
    year                 INTEGER NOT NULL,
    period               TEXT NOT NULL,
    schema_version       TEXT NOT NULL,
    policy_digest        TEXT NOT NULL,
    signer_fingerprint   TEXT NOT NULL,
    key_epoch            INTEGER NOT NULL,
    previous_bundle_hash TEXT,
    row_count            INTEGER NOT NULL,
    quarantine_count     INTEGER NOT NULL,
    table_path           TEXT NOT NULL,
    table_sha256         TEXT NOT NULL,
    registry_digest      TEXT NOT NULL,
    source_name          TEXT NOT NULL,
    ingested_at          TEXT NOT NULL,
    UNIQUE (partner, year)
);
CREATE INDEX bundles_partner ON bundles (partner, seq);
CREATE TABLE link_runs (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    year          INTEGER NOT NULL,
    persons       INTEGER NOT NULL,
    excluded      INTEGER NOT NULL,
    dataset_path  TEXT NOT NULL,
    report_path   TEXT NOT NULL,
    linked_at     TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class WorkspacePaths:
    """Every path of a workspace, derived from its root. Pure: creates nothing."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "workspace.toml"

    @property
    def registry(self) -> Path:
        return self.root / "partners.toml"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def hpke_public(self) -> Path:
        return self.keys / "coordinator-hpke.pub"

    @property
    def hpke_private(self) -> Path:
        return self.keys / "coordinator-hpke.key"

    @property
    def pseudonym_key(self) -> Path:
        return self.keys / "coordinator-pseudonym.key"

    @property
    def officers(self) -> Path:
        return self.keys / "officers"

    @property
    def state(self) -> Path:
        return self.root / "state.sqlite"

    @property
    def tables(self) -> Path:
        return self.root / "tables"

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    @property
    def internal(self) -> Path:
        return self.root / "internal"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def released(self) -> Path:
        return self.root / "released"

    def table(self, partner: str, year: int) -> Path:
        return self.tables / partner / f"{year}.parquet"

    def dataset_for(self, year: int) -> Path:
        return self.dataset / f"{year}.parquet"

    @property
    def longitudinal(self) -> Path:
        return self.dataset / "longitudinal.parquet"


@dataclass(frozen=True, slots=True)
class InitResult:
    paths: WorkspacePaths
    hpke_public_path: Path
    hpke_fingerprint: str
    pseudonym_key_fingerprint: str
    registry_digest: str | None
    gate_key_fingerprint: str


@dataclass(frozen=True, slots=True)
class CoordinatorKeys:
    """The two secrets ingest needs. Never logged, never stored outside ``WS/keys/`` (encrypted)."""

    hpke_private: bytes
    hpke_public: bytes
    pseudonym_key: bytes

    def __repr__(self) -> str:  # keep keys out of tracebacks and logs
        return "CoordinatorKeys(<redacted>)"


def passphrase_from_env_or_prompt(env: str = DEFAULT_PASSPHRASE_ENV, *, confirm: bool = False) -> str:
    """The passphrase from environment variable ``env``, else from an interactive prompt."""
    value = os.environ.get(env)
    if value:
        return value
    if not os.isatty(0):
        raise KeyMaterialError(
            f"no passphrase: environment variable {env} is not set and there is no terminal to prompt on",
            hint=f"export {env}=... or pass --passphrase-env NAME",
        )
    value = getpass.getpass("Workspace key passphrase: ")
    if confirm and getpass.getpass("Repeat passphrase: ") != value:
        raise KeyMaterialError("the two passphrases differ")
    return value


def init_workspace(
    root: Path, passphrase: str, *, registry: Path | None = None, officer_keys: Sequence[Path] = ()
) -> InitResult:
    """Create a new workspace at ``root`` with fresh keys (the coordinator's and the release gate's signing key,
    all under ``passphrase``); refuses if ``root`` holds anything already.

    ``officer_keys`` (privacy officers' Ed25519 public key files) become the workspace's trusted officers:
    from then on every registry must carry a valid signature of one of them (``FILE.sig``), checked at install
    and again at every ingest. If ``registry`` is given it is validated (and its signature verified when
    officers are given) and installed as ``WS/partners.toml``.
    """
    paths = WorkspacePaths(Path(root))
    if paths.root.exists() and (not paths.root.is_dir() or any(paths.root.iterdir())):
        raise OutputExists(
            f"{paths.root}: exists and is not empty; refusing to initialise a workspace over it",
            hint="choose a new directory (a workspace is never re-initialised: its keys would be lost)",
        )
    officers = [read_public_key(Path(k), "ed25519-signing") for k in officer_keys]
    registry_raw: bytes | None = None
    registry_digest: str | None = None
    if registry is not None:  # validate (and verify) before creating anything
        if officers:
            verify_policy(Path(registry), officers)
        _, registry_digest = load_registry(registry)
        registry_raw = Path(registry).read_bytes()

    paths.root.mkdir(parents=True, exist_ok=True)
    paths.keys.mkdir(mode=0o700)
    for directory in (paths.tables, paths.dataset, paths.internal):
        directory.mkdir()

    hpke_private, hpke_public = generate_encryption_key()
    hpke_fp = write_secret_key(paths.hpke_private, "x25519-hpke", hpke_private, passphrase, label="coordinator")
    write_public_key(paths.hpke_public, "x25519-hpke", hpke_public, label="coordinator")
    pseudonym_key = random_key()
    pseudonym_fp = write_secret_key(
        paths.pseudonym_key, "coordinator-pseudonym-key", pseudonym_key, passphrase, label="coordinator"
    )
    del hpke_private, pseudonym_key
    gate_fp = create_gate_key(paths.root, passphrase)

    with contextlib.closing(sqlite3.connect(paths.state)) as db, db:
        db.executescript(_SCHEMA)
        db.execute("INSERT INTO meta (key, value) VALUES ('format', ?)", (WORKSPACE_FORMAT,))
        db.execute("INSERT INTO meta (key, value) VALUES ('hpke_fingerprint', ?)", (hpke_fp,))

    for officer in officers:
        write_public_key(
            paths.officers / f"{officer.fingerprint}.pub", "ed25519-signing", officer.key, label=officer.label
        )
    if registry_raw is not None:
        atomic_write_bytes(paths.registry, registry_raw)
        if officers:
            atomic_write_bytes(signature_path(paths.registry), signature_path(Path(registry)).read_bytes())
    created = _now()
    manifest = (
        f'format = "{WORKSPACE_FORMAT}"\n'
        "version = 1\n"
        f'created_at = "{created}"\n'
        f'hpke_public_key = "keys/{paths.hpke_public.name}"\n'
        f'hpke_fingerprint = "{hpke_fp}"\n'
        f'pseudonym_key_fingerprint = "{pseudonym_fp}"\n'
        f'gate_public_key = "{GATE_PUB}"\n'
        f'gate_key_fingerprint = "{gate_fp}"\n'
    )
    atomic_write_bytes(paths.manifest, manifest.encode())
    return InitResult(paths, paths.hpke_public, hpke_fp, pseudonym_fp, registry_digest, gate_fp)


def open_workspace(root: Path) -> WorkspacePaths:
    """The paths of an initialised workspace; raises ``WorkspaceError`` if ``root`` is not one."""
    paths = WorkspacePaths(Path(root))
    if not paths.manifest.is_file():
        raise WorkspaceError(
            f"{paths.root}: not a coordinator workspace (no workspace.toml)",
            hint="create one with: kansrijk coordinator init WS",
        )
    try:
        manifest = tomllib.loads(paths.manifest.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        raise WorkspaceError(f"{paths.manifest}: not valid TOML") from None
    if manifest.get("format") != WORKSPACE_FORMAT or manifest.get("version") != 1:
        raise WorkspaceError(f"{paths.manifest}: not a version-1 kansrijk coordinator workspace")
    if not paths.state.is_file():
        raise WorkspaceError(f"{paths.state}: state database missing; the workspace is damaged")
    return paths


def trusted_officers(paths: WorkspacePaths) -> list[Path]:
    """The privacy officers' public key files the workspace trusts (empty: registries need no signature)."""
    return sorted(paths.officers.glob("*.pub")) if paths.officers.is_dir() else []


def install_registry(paths: WorkspacePaths, registry: Path) -> str:
    """Validate ``registry`` (and verify its signature when the workspace trusts officers) and install it as
    the workspace's registry, with its signature file. Returns its digest."""
    officers = trusted_officers(paths)
    if officers:
        verify_policy(Path(registry), officers)
    _, digest = load_registry(registry)
    atomic_write_bytes(paths.registry, Path(registry).read_bytes())
    sig = signature_path(paths.registry)
    if officers:
        atomic_write_bytes(sig, signature_path(Path(registry)).read_bytes())
    else:
        sig.unlink(missing_ok=True)  # a stale signature of an earlier file must not sit beside this one
    return digest


def register_partner(
    registry: Path,
    partner: str,
    public_key_file: Path,
    *,
    epoch: int,
    policy_digests: list[str],
    schema_versions: list[str],
    revoked: bool = False,
) -> str:
    """Add a partner's signing key (from its public key file) to the registry file, creating it if needed.

    Returns the key's fingerprint. The result is validated before it is written.
    """
    existing = load_registry(registry)[0] if Path(registry).exists() else None
    public = read_public_key(public_key_file, "ed25519-signing")
    try:
        updated = with_partner(
            existing,
            partner,
            key=partner_key_from_bytes(public.key, epoch=epoch, status="revoked" if revoked else "active"),
            schema_versions=schema_versions,
            policy_digests=policy_digests,
        )
    except ValidationError as exc:
        raise PolicyError(format_validation_error(Path(registry), exc)) from None
    atomic_write_bytes(Path(registry), render_registry(updated).encode())
    return public.fingerprint


def workspace_registry(paths: WorkspacePaths, override: Path | None = None) -> tuple[PartnerRegistry, str]:
    """The registry to verify bundles against: ``override`` if given, else the installed one."""
    source = override if override is not None else paths.registry
    if override is None and not paths.registry.is_file():
        raise WorkspaceError(
            f"{paths.root}: no partner registry installed",
            hint="run: kansrijk coordinator set-registry WS policies/partners.toml (or pass --registry)",
        )
    officers = trusted_officers(paths)
    if officers:  # verify before parse, at every use: an edit after installation is refused
        verify_policy(Path(source), officers)
    return load_registry(source)


def load_keys(paths: WorkspacePaths, passphrase: str) -> CoordinatorKeys:
    """Decrypt the coordinator's HPKE private key and pseudonym key."""
    hpke_private = read_secret_key(paths.hpke_private, "x25519-hpke", passphrase)
    public = read_public_key(paths.hpke_public, "x25519-hpke")
    if fingerprint("x25519-hpke", public.key) != public.fingerprint:  # pragma: no cover - read_public_key checks
        raise KeyMaterialError(f"{paths.hpke_public}: fingerprint mismatch")
    pseudonym_key = read_secret_key(paths.pseudonym_key, "coordinator-pseudonym-key", passphrase)
    return CoordinatorKeys(hpke_private=hpke_private, hpke_public=public.key, pseudonym_key=pseudonym_key)


def hpke_public_key(paths: WorkspacePaths) -> bytes:
    return read_public_key(paths.hpke_public, "x25519-hpke").key


@contextlib.contextmanager
def read_state(paths: WorkspacePaths) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the state database (the file is not modified, not even its header)."""
    uri = f"file:{paths.state.resolve()}?mode=ro"
    db = sqlite3.connect(uri, uri=True)
    db.row_factory = sqlite3.Row
    try:
        yield db
    finally:
        db.close()


@contextlib.contextmanager
def write_state(paths: WorkspacePaths) -> Iterator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE): committed if the block succeeds, rolled back otherwise."""
    db = sqlite3.connect(paths.state, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    finally:
        db.close()


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def now_utc() -> str:
    """The current UTC time as an ISO 8601 string (second precision), as stored in the state database."""
    return _now()
