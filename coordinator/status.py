"""What the workspace holds, per partner and period, from the state database: bundle ids, digests, row counts,
times. Never person-level data (the tables are not opened)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from coordinator.workspace import WorkspacePaths, open_workspace, read_state, trusted_officers


@dataclass(frozen=True, slots=True)
class IngestedBundle:
    seq: int
    partner: str
    year: int
    period: str
    extract_id: str
    bundle_digest: str
    key_epoch: int
    schema_version: str
    row_count: int
    quarantine_count: int
    table_path: str
    ingested_at: str


@dataclass(frozen=True, slots=True)
class LinkRun:
    year: int
    persons: int
    excluded: int
    dataset_path: str
    report_path: str
    linked_at: str


@dataclass(frozen=True, slots=True)
class WorkspaceStatus:
    root: Path
    hpke_fingerprint: str
    registry_installed: bool
    trusted_officers: int
    bundles: tuple[IngestedBundle, ...]
    link_runs: tuple[LinkRun, ...]

    def as_dict(self) -> dict[str, object]:
        return {
            "workspace": str(self.root),
            "hpke_fingerprint": self.hpke_fingerprint,
            "registry_installed": self.registry_installed,
            "trusted_officers": self.trusted_officers,
            "bundles": [asdict(b) for b in self.bundles],
            "link_runs": [asdict(r) for r in self.link_runs],
        }

    @property
    def partners(self) -> tuple[str, ...]:
        return tuple(sorted({b.partner for b in self.bundles}))

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(sorted({b.year for b in self.bundles}))


def workspace_status(root: Path) -> WorkspaceStatus:
    """The ingest and link history of the workspace at ``root`` (read-only)."""
    paths: WorkspacePaths = open_workspace(root)
    with read_state(paths) as db:
        meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
        bundles = tuple(
            IngestedBundle(**dict(row))
            for row in db.execute(
                "SELECT seq, partner, year, period, extract_id, bundle_digest, key_epoch, schema_version,"
                " row_count, quarantine_count, table_path, ingested_at FROM bundles ORDER BY partner, seq"
            )
        )
        runs = tuple(
            LinkRun(**dict(row))
            for row in db.execute(
                "SELECT year, persons, excluded, dataset_path, report_path, linked_at FROM link_runs ORDER BY id"
            )
        )
    return WorkspaceStatus(
        root=paths.root,
        hpke_fingerprint=str(meta.get("hpke_fingerprint", "")),
        registry_installed=paths.registry.is_file(),
        trusted_officers=len(trusted_officers(paths)),
        bundles=bundles,
        link_runs=runs,
    )
