"""Ingest: verify a partner's sealed bundle, decrypt it, re-pseudonymise it and store it, all or nothing.

Order of checks for one bundle (fail closed; the first failure refuses the bundle and nothing is written):

1. framing, manifest, registered and active signing key, Ed25519 signature, schema (``kansrijk.bundle``):
   ``BundleMalformed``, ``UnknownPartner``, ``BundleTampered``, ``SchemaMismatch``;
2. the registry's allowances for that partner: key epoch, schema version, sharing-policy digest
   (``UnknownPartner``, ``SchemaMismatch``);
3. the recipient: sealed for this workspace's HPKE key (``WrongRecipient``), checked before decrypting;
4. replay: the same bundle digest, extract id or partner-period ingested before (``ReplayedBundle``);
5. order: ``previous_bundle_hash`` names the last bundle ingested from that partner, or is empty for its first
   (``OutOfOrderBundle``);
   A bundle without rows is refused unless its partner declared the extract empty (``EmptyBundle``);
6. decrypt and authenticate the payload (``BundleTampered``), then payload sanity: one row per pseudonym,
   the manifest's reference year (``BundleMalformed``);
7. replace P1 by ``P2 = HMAC-SHA256(coordinator_key, P1)`` (vectorised), write the table to a temp file,
   record it and rename it inside one SQLite transaction.

The coordinator never holds the link key, and after step 7 it no longer holds P1 either: a partner that holds
the link key cannot recompute the stored pseudonyms, and the coordinator cannot compute the P1 of a BSN.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from coordinator.workspace import (
    CoordinatorKeys,
    WorkspacePaths,
    load_keys,
    now_utc,
    open_workspace,
    read_state,
    workspace_registry,
    write_state,
)
from kansrijk import bundle
from kansrijk.crypto import fingerprint, sha256_hex
from kansrijk.errors import (
    BundleMalformed,
    EmptyBundle,
    InputError,
    KansrijkError,
    OutOfOrderBundle,
    ReplayedBundle,
    UnknownPartner,
    WrongRecipient,
)
from kansrijk.fsutil import sweep_stale_temp_files, temp_name
from kansrijk.policy.registry import PartnerRegistry
from kansrijk.pseudonym import coordinator_pseudonym_expr

KEY = "pseudonym"


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """What happened to one bundle: ingested (``error is None``) or refused with one ``KansrijkError``."""

    source: Path
    error: KansrijkError | None = None
    partner: str = ""
    period: str = ""
    extract_id: str = ""
    bundle_digest: str = ""
    rows: int = 0
    table: Path | None = None
    declared_empty: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class IngestSession:
    """The workspace, its decrypted keys and the registry, loaded once for a batch of bundles."""

    paths: WorkspacePaths
    keys: CoordinatorKeys
    registry: PartnerRegistry
    registry_digest: str

    @classmethod
    def open(cls, root: Path, passphrase: str, *, registry: Path | None = None) -> IngestSession:
        paths = open_workspace(root)
        sweep_stale_temp_files(paths.tables)  # left by an ingest that was killed mid-write
        reg, digest = workspace_registry(paths, registry)
        return cls(paths=paths, keys=load_keys(paths, passphrase), registry=reg, registry_digest=digest)

    def ingest(self, path: Path) -> IngestOutcome:
        """Ingest one bundle file; a refusal is returned (not raised) so a batch reports every bundle."""
        try:
            return ingest_bundle(self, Path(path))
        except KansrijkError as exc:
            return IngestOutcome(source=Path(path), error=exc)


def ingest_bundles(
    root: Path, bundles: list[Path], passphrase: str, *, registry: Path | None = None
) -> list[IngestOutcome]:
    """Ingest several bundles in order; returns one ``IngestOutcome`` per bundle."""
    session = IngestSession.open(root, passphrase, registry=registry)
    return [session.ingest(p) for p in bundles]


def ingest_bundle(session: IngestSession, path: Path) -> IngestOutcome:
    """Ingest one bundle or raise the ``BundleError`` that refuses it (the workspace is then unchanged).

    Every refusal's message starts with the bundle's path.
    """
    path = Path(path)
    try:
        return _ingest(session, path, str(path))
    except KansrijkError as exc:
        if exc.message.startswith(str(path)):
            raise
        located = type(exc)(f"{path}: {exc.message.removeprefix('bundle: ')}", hint=exc.hint)
        raise located from None


def _ingest(session: IngestSession, path: Path, where: str) -> IngestOutcome:
    paths, registry = session.paths, session.registry
    data = _read_bundle(path)

    # 1. verify before parse: the manifest is trusted only after the partner's signature verifies.
    unverified = bundle.read_manifest(data)
    registry.signing_key(unverified.partner, unverified.keys.signing)  # precise message for revoked/unknown keys
    trusted = {
        name: [k.key_bytes for k in partner.keys if k.status == "active"] for name, partner in registry.partners.items()
    }
    manifest = bundle.verify_bundle(data, trusted)
    # 2. the registry's allowances
    key = registry.signing_key(manifest.partner, manifest.keys.signing)
    if key.epoch != manifest.keys.epoch:
        raise UnknownPartner(
            f"{where}: signed with key epoch {manifest.keys.epoch}, the registry lists that key as epoch {key.epoch}",
            hint="the partner's key configuration and the registry disagree; ask the privacy officer",
        )
    registry.check_allowed(
        manifest.partner, schema_version=manifest.schema_version, policy_digest=manifest.policy_digest
    )
    if manifest.row_count == 0 and not manifest.declared_empty:
        raise EmptyBundle(
            f"{where}: holds 0 rows and {manifest.partner!r} did not declare its {manifest.extract_year} extract "
            "empty; an empty export is almost always a mistake",
            hint=f"ask {manifest.partner} to check the export and seal it again; a partner that really holds nobody "
            "for the year seals with `kansrijk node prepare --declare-empty`",
        )
    # 3. recipient, before decrypting anything
    own = fingerprint("x25519-hpke", session.keys.hpke_public)
    if manifest.keys.recipient != own:
        raise WrongRecipient(
            f"{where}: sealed for coordinator key {manifest.keys.recipient}, this workspace's key is {own}",
            hint="ask the partner to seal with this workspace's public key (keys/coordinator-hpke.pub)",
        )
    # 4-5. replay and order, against the state database (read-only here; re-checked in the write transaction)
    digest = bundle.bundle_digest(data)
    with read_state(paths) as db:
        _check_replay_and_order(db, manifest, digest, where)
    # 6. decrypt and authenticate
    opened = bundle.open_bundle(data, trusted_keys=trusted, recipient_private_key=session.keys.hpke_private)
    del data
    payload = opened.payload
    _check_payload(payload, manifest.extract_year, where)
    # 7. re-pseudonymise and store
    table = payload.lazy().with_columns(coordinator_pseudonym_expr(session.keys.pseudonym_key, pl.col(KEY)).alias(KEY))
    if "year" not in payload.columns:
        table = table.with_columns(pl.lit(manifest.extract_year, dtype=pl.Int32).alias("year"))
    frame = table.collect(engine="streaming")
    del payload, opened
    target = paths.table(manifest.partner, manifest.extract_year)
    _store(session, frame, target, manifest, digest, where)
    return IngestOutcome(
        source=path,
        partner=manifest.partner,
        period=str(manifest.extract_year),
        extract_id=manifest.extract_id,
        bundle_digest=digest,
        rows=frame.height,
        table=target,
        declared_empty=manifest.declared_empty,
    )


def _read_bundle(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{path}: bundle file not found") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, expected a bundle file") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read bundle ({exc.strerror})") from None


def _check_replay_and_order(db: sqlite3.Connection, manifest: bundle.Manifest, digest: str, where: str) -> None:
    """Replay (same bundle or extract id), then the partner's chain, then one extract per partner and period."""
    seen = db.execute(
        "SELECT bundle_digest, ingested_at FROM bundles WHERE bundle_digest = ? OR extract_id = ?",
        (digest, manifest.extract_id),
    ).fetchone()
    if seen is not None:
        what = "this exact bundle" if seen["bundle_digest"] == digest else f"extract {manifest.extract_id!r}"
        raise ReplayedBundle(
            f"{where}: {what} was ingested already (at {seen['ingested_at']})",
            hint="nothing to do if this is a copy; otherwise ask the partner why it was sent again",
        )
    last = db.execute(
        "SELECT bundle_digest FROM bundles WHERE partner = ? ORDER BY seq DESC LIMIT 1", (manifest.partner,)
    ).fetchone()
    expected = None if last is None else str(last["bundle_digest"])
    if manifest.previous_bundle_hash != expected:
        if expected is None:
            raise OutOfOrderBundle(
                f"{where}: names a previous bundle of {manifest.partner!r}, but none was ingested from that partner",
                hint="ingest the partner's earlier bundles first, in the order they were made",
            )
        raise OutOfOrderBundle(
            f"{where}: previous-bundle hash does not match the last bundle ingested from {manifest.partner!r}"
            f" ({expected})",
            hint="ingest the partner's bundles in the order they were made; ask for any missing bundle",
        )
    period = db.execute(
        "SELECT extract_id, ingested_at FROM bundles WHERE partner = ? AND year = ?",
        (manifest.partner, manifest.extract_year),
    ).fetchone()
    if period is not None:
        raise ReplayedBundle(
            f"{where}: {manifest.partner!r} already delivered {manifest.extract_year} (extract "
            f"{period['extract_id']!r}, at {period['ingested_at']}); one extract per partner and period",
            hint="a corrected extract for an ingested period needs a new workspace (the analysis must be redone)",
        )


def _check_payload(payload: pl.DataFrame, year: int, where: str) -> None:
    checks = payload.select(
        duplicates=pl.col(KEY).is_duplicated().sum(),
        other_year=(pl.col("year") != year).sum() if "year" in payload.columns else pl.lit(0),
    ).row(0, named=True)
    if checks["duplicates"]:
        raise BundleMalformed(
            f"{where}: {checks['duplicates']} rows share a pseudonym; a payload holds one row per person",
            hint="the partner must de-duplicate the extract (its node agent quarantines duplicate BSNs)",
        )
    if checks["other_year"]:
        raise BundleMalformed(
            f"{where}: {checks['other_year']} rows have a year other than the manifest's extract year {year}",
            hint="the partner must seal one reference year per bundle",
        )


def _store(
    session: IngestSession,
    frame: pl.DataFrame,
    target: Path,
    manifest: bundle.Manifest,
    digest: str,
    where: str,
) -> None:
    """Write ``frame`` to ``target`` and record it: temp file, one transaction, rename before commit."""
    paths = session.paths
    created_dir = not target.parent.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(target)
    renamed = False
    try:
        frame.write_parquet(tmp, compression="zstd", statistics=True)
        os.chmod(tmp, 0o600)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
            table_sha256 = sha256_hex(fh.read())
        with write_state(paths) as db:
            _check_replay_and_order(db, manifest, digest, where)  # another process may have ingested meanwhile
            db.execute(
                "INSERT INTO bundles (bundle_digest, extract_id, partner, year, period, schema_version,"
                " policy_digest, signer_fingerprint, key_epoch, previous_bundle_hash, row_count, quarantine_count,"
                " table_path, table_sha256, registry_digest, source_name, ingested_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    digest,
                    manifest.extract_id,
                    manifest.partner,
                    manifest.extract_year,
                    str(manifest.extract_year),
                    manifest.schema_version,
                    manifest.policy_digest,
                    manifest.keys.signing,
                    manifest.keys.epoch,
                    manifest.previous_bundle_hash,
                    frame.height,
                    manifest.quarantine_count,
                    str(target.relative_to(paths.root)),
                    "sha256:" + table_sha256,
                    session.registry_digest,
                    where,
                    now_utc(),
                ),
            )
            os.replace(tmp, target)
            renamed = True
            _fsync_dir(target.parent)
        # committed
    except BaseException:
        if renamed:
            target.unlink(missing_ok=True)
        tmp.unlink(missing_ok=True)
        if created_dir:
            _rmdir_quietly(target.parent)
        raise


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _rmdir_quietly(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not empty: another table landed there meanwhile
        directory.rmdir()
