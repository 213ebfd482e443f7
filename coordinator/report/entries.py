"""The ledger entries the report shows next to the released documents: refusals have no file in ``released/``,
only an entry, so the report needs the entries to show every refusal and leave no gap in the numbering.

The entries come, read-only, from what the gate already exposes, in this order:

- ``--ledger FILE``: the entries as ``kansrijk gate ledger --json`` (the gate service) or ``kansrijk ledger show
  --json`` print them, saved to a file (one JSON object per entry, or a JSON list of them);
- ``--gate-socket PATH``: the gate service's ``ledger`` operation (the deployment path: the ledger database is
  readable by the gate's own user only, docs/deployment.md);
- otherwise ``WS/ledger.sqlite``, opened read-only, when this user can read it (the demo, a single-user setup).

When none is available the report still builds; it then lists the entry numbers that have no document and says
that their reasons are in the ledger. Entries from any source are checked against what ``released/`` holds: they
must end at the published ledger head, and every document must be the file its entry records (same name, same
SHA-256). A stale export or one of another workspace is refused (``InputError``).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from coordinator.service.protocol import LedgerLine
from kansrijk.errors import InputError
from kansrijk.gate.document import Verdict

from .released import LedgerHead, Release

RELEASED_OUTCOMES = ("released", "suppressed")


@dataclass(frozen=True, slots=True)
class Entry:
    """One ledger entry, the fields ``ledger show --json`` prints (typed)."""

    seq: int
    release: str
    kind: str
    outcome: str  # released | suppressed | refused
    requested_by: str
    epsilon: Fraction
    verdicts: tuple[Verdict, ...]
    outputs: tuple[tuple[str, str], ...]  # (file under released/, sha256 digest)
    entry_hash: str

    @property
    def entry_id(self) -> str:
        return f"L{self.seq:06d}"

    @property
    def refused(self) -> bool:
        return self.outcome == "refused"

    @property
    def deciding(self) -> tuple[Verdict, ...]:
        """The verdicts that did not simply pass (for a refusal: the rules that refused and why), and an officer's
        approval of a refused output (who approved it and what it lifted), which is always shown."""
        return tuple(v for v in self.verdicts if v.verdict != "pass" or v.rule == "officer_review")


@dataclass(frozen=True, slots=True)
class LedgerEntries:
    """The entries the report was given (``None`` when no source was available) and where they came from."""

    source: str
    entries: tuple[Entry, ...] | None

    @property
    def available(self) -> bool:
        return self.entries is not None


def read_entries(workspace: Path, *, ledger_file: Path | None = None, gate_socket: Path | None = None) -> LedgerEntries:
    """The ledger entries from the first available source (see the module docstring)."""
    if ledger_file is not None:
        return LedgerEntries(f"ledger export {Path(ledger_file).name}", tuple(_from_export(Path(ledger_file))))
    if gate_socket is not None:
        from coordinator.service import client

        result = client.ledger(Path(gate_socket))
        return LedgerEntries("the gate service's ledger", tuple(_entry(line) for line in result.entries))
    return _from_workspace(Path(workspace))


def _from_workspace(workspace: Path) -> LedgerEntries:
    from kansrijk.gate.cli import entry_document
    from kansrijk.gate.ledger import LEDGER_FILE, entries, open_existing

    path = workspace / LEDGER_FILE
    if not path.is_file():
        return LedgerEntries("none (no ledger in this directory)", None)
    try:
        conn = open_existing(workspace)
        try:
            rows = entries(conn)
        finally:
            conn.close()
    except (PermissionError, sqlite3.OperationalError):  # deployment: only the gate's user reads the ledger
        return LedgerEntries("none (the ledger is not readable by this user)", None)
    return LedgerEntries("the workspace ledger (read-only)", tuple(_entry(entry_document(e)) for e in rows))


def _from_export(path: Path) -> list[Entry]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: cannot read the ledger export ({exc})") from None
    objects: list[Any] = []
    decoder = json.JSONDecoder()
    at = 0
    try:
        while True:
            while at < len(text) and text[at].isspace():
                at += 1
            if at >= len(text):
                break
            value, at = decoder.raw_decode(text, at)
            objects.extend(value if isinstance(value, list) else [value])
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}: not a ledger export (JSON error at line {exc.lineno}: {exc.msg})",
            hint="save it with: kansrijk gate ledger --json > FILE (or kansrijk ledger show WS --json > FILE)",
        ) from None
    return [_entry(obj, where=f"{path}: entry {i + 1}") for i, obj in enumerate(objects)]


def _entry(line: LedgerLine | Any, *, where: str = "ledger") -> Entry:
    try:
        parsed = line if isinstance(line, LedgerLine) else LedgerLine.model_validate(line)
        verdicts = tuple(Verdict.model_validate(v) for v in parsed.verdicts)
        seq = int(parsed.entry.removeprefix("L"))
        epsilon = Fraction(parsed.epsilon)
    except (ValidationError, ValueError, ZeroDivisionError, TypeError):
        raise InputError(
            f"{where}: not a ledger entry as `kansrijk ledger show --json` prints it",
            hint="save it with: kansrijk gate ledger --json > FILE (or kansrijk ledger show WS --json > FILE)",
        ) from None
    return Entry(
        seq=seq,
        release=parsed.release,
        kind=parsed.kind,
        outcome=parsed.outcome,
        requested_by=parsed.requested_by,
        epsilon=epsilon,
        verdicts=verdicts,
        outputs=tuple(sorted(parsed.outputs.items())),
        entry_hash=parsed.entry_hash,
    )


def check_entries(given: LedgerEntries, head: LedgerHead, releases: Sequence[Release]) -> None:
    """Refuse (``InputError``) entries that are not the ledger these released documents came from."""
    if given.entries is None:
        return
    entries = given.entries
    hint = "export the entries again (kansrijk gate ledger --json > FILE) from the gate that wrote released/"
    numbers = [e.seq for e in entries]
    if numbers != list(range(1, len(entries) + 1)):
        raise InputError(f"{given.source}: the entries are not numbered 1 to {len(entries)} without gaps", hint=hint)
    last = entries[-1] if entries else None
    if len(entries) != head.seq or (last is not None and last.entry_hash != head.entry_hash):
        raise InputError(
            f"{given.source}: the entries end at entry {len(entries)}, but released/ was published up to entry "
            f"{head.seq} ({head.entry_hash[:16]}…); they are not this workspace's ledger at this point",
            hint=hint,
        )
    for r in releases:
        entry = entries[r.seq - 1] if 0 < r.seq <= len(entries) else None
        outputs = dict(entry.outputs) if entry is not None else {}
        if entry is None or entry.release != r.name or outputs.get(f"{r.name}.json") != r.file_digest:
            raise InputError(
                f"{given.source}: released/{r.name}.json is not the file ledger entry {r.ledger_entry} records "
                f"(name or SHA-256 differs)",
                hint="run `kansrijk ledger verify WS` as the gate's user; then " + hint,
            )


@dataclass(frozen=True, slots=True)
class LedgerRow:
    """One ledger number as the report accounts for it: its document, its entry, or both (or neither, when the
    report has no entries and ``released/`` holds no file for the number)."""

    seq: int
    release: Release | None
    entry: Entry | None

    @property
    def entry_id(self) -> str:
        return f"L{self.seq:06d}"

    @property
    def name(self) -> str | None:
        if self.release is not None:
            return self.release.name
        return self.entry.release if self.entry is not None else None

    @property
    def kind(self) -> str | None:
        if self.release is not None:
            return self.release.kind
        return self.entry.kind if self.entry is not None else None

    @property
    def decision(self) -> str:
        """released | suppressed | refused | missing (an entry whose file is not in released/) | unknown."""
        if self.release is not None:
            return self.release.status
        if self.entry is not None:
            return "refused" if self.entry.refused else "missing"
        return "unknown"

    @property
    def epsilon(self) -> Fraction | None:
        if self.release is not None:
            return self.release.epsilon
        return self.entry.epsilon if self.entry is not None else None

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        if self.release is not None:
            return self.release.verdicts
        return self.entry.verdicts if self.entry is not None else ()

    @property
    def deciding(self) -> tuple[Verdict, ...]:
        return tuple(v for v in self.verdicts if v.verdict != "pass" or v.rule == "officer_review")


def ledger_rows(releases: Sequence[Release], given: LedgerEntries, head: LedgerHead) -> list[LedgerRow]:
    """Every ledger number from 1 to the published head, each with what the report knows of it."""
    documents = {r.seq: r for r in releases}
    entries = {e.seq: e for e in given.entries or ()}
    last = max([head.seq, *documents, *entries], default=0)
    return [LedgerRow(seq, documents.get(seq), entries.get(seq)) for seq in range(1, last + 1)]


__all__ = ["Entry", "LedgerEntries", "LedgerRow", "check_entries", "ledger_rows", "read_entries"]
