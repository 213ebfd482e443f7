"""The gate service's operations: one small function per ``op``, behind the dispatch table ``OPERATIONS``.

Each operation receives the service's ``GateService`` (what the server verified at start), its validated
request and a ``send`` function for progress lines, and returns its result model. It raises a
``KansrijkError`` to refuse (the server turns it into an ``error`` reply with the error's class and exit code).
No operation returns person-level data: ``status`` reads the state database's counts, ``ledger`` the ledger's
entries, ``analyse`` returns the summary built from what the gate released.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from coordinator.analysis.run import run_analysis
from coordinator.service.harden import boundary_problems
from coordinator.service.protocol import (
    PROTOCOL_VERSION,
    AnalyseRequest,
    AnalyseResult,
    BudgetLine,
    BundleLine,
    LedgerHead,
    LedgerLine,
    LedgerRequest,
    LedgerResult,
    LinkRunLine,
    PingRequest,
    PingResult,
    ProgressReply,
    QueryRequest,
    QueryResult,
    ReleaseLine,
    StatusRequest,
    StatusResult,
    SubmittedPolicy,
)
from coordinator.status import workspace_status
from kansrijk import __version__
from kansrijk.crypto import PublicKeyFile
from kansrijk.errors import KansrijkError
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.gate import budget as budget_mod
from kansrijk.gate.cli import entry_document
from kansrijk.gate.ledger import LEDGER_FILE, entries, head, open_existing
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import parse_spec
from kansrijk.policy.release import ReleasePolicy

Send = Callable[[ProgressReply], None]
PROGRESS_EVERY_S = 0.1  # at most ten progress lines a second: a tree fit may take a millisecond


class ClientGone(Exception):
    """The client closed its end while an operation was still streaming to it."""


class ServiceStopping(Exception):
    """The service was asked to stop while this operation ran; releases made before stay in the ledger. The
    server answers it with the ``stopping`` error code (the client raises ``ServiceError``)."""

    def __init__(self, message: str, *, hint: str) -> None:
        super().__init__(message)
        self.message, self.hint = message, hint


@dataclass(frozen=True)
class GateService:
    """What every operation may use: fixed when the service starts, never taken from a request.

    ``release_policy`` is the service's private copy of the signed release policy it verified at start (so the
    policy a client reads in ``ping`` is the one every analysis runs under, whatever happens to the original).
    """

    workspace: Path
    release_policy: Path
    policy: ReleasePolicy
    policy_digest: str
    officer_keys: tuple[PublicKeyFile, ...]
    stopping: threading.Event = field(default_factory=threading.Event)
    analysis_lock: threading.Lock = field(default_factory=threading.Lock)


# --- ping -------------------------------------------------------------------------------------------------
def ping(service: GateService, request: PingRequest, send: Send) -> PingResult:
    return PingResult(
        version=__version__,
        protocol=PROTOCOL_VERSION,
        workspace=str(service.workspace),
        policy_digest=service.policy_digest,
        dataset=service.policy.dataset,
        officers=[k.fingerprint for k in service.officer_keys],
        exposed=boundary_problems(service.workspace),
    )


# --- status -----------------------------------------------------------------------------------------------
def status(service: GateService, request: StatusRequest, send: Send) -> StatusResult:
    ws = workspace_status(service.workspace)
    budget: BudgetLine | None = None
    ledger: LedgerHead | None = None
    if (service.workspace / LEDGER_FILE).is_file():
        conn = open_existing(service.workspace)
        try:
            seq, entry_hash = head(conn)
            count = int(conn.execute("SELECT COUNT(*) FROM ledger").fetchone()[0])
            ledger = LedgerHead(entries=count, entry_id=f"L{seq:06d}", entry_hash=entry_hash)
            state = budget_mod.state(conn, service.policy.dataset, service.policy.dp) if service.policy.dp else None
        finally:
            conn.close()
    else:
        state = None
    if service.policy.dp is not None:
        if state is None:
            state = budget_mod.BudgetState(
                service.policy.dataset, service.policy.dp.epsilon_total, Fraction(0),
                service.policy.dp.delta_total, Fraction(0),
            )  # fmt: skip
        budget = BudgetLine(
            dataset=state.dataset,
            epsilon_total=str(state.epsilon_total),
            epsilon_spent=str(state.epsilon_spent),
            epsilon_left=str(state.epsilon_left),
            delta_total=str(state.delta_total),
            delta_spent=str(state.delta_spent),
        )
    return StatusResult(
        workspace=str(ws.root),
        hpke_fingerprint=ws.hpke_fingerprint,
        registry_installed=ws.registry_installed,
        trusted_officers=ws.trusted_officers,
        bundles=[BundleLine.model_validate(_fields(b, BundleLine)) for b in ws.bundles],
        link_runs=[
            LinkRunLine(
                year=r.year, persons=r.persons, excluded=r.excluded, dataset=r.dataset_path, linked_at=r.linked_at
            )
            for r in ws.link_runs
        ],
        policy_digest=service.policy_digest,
        budget=budget,
        ledger=ledger,
        exposed=boundary_problems(service.workspace),
    )


def _fields(record: Any, model: type[BundleLine]) -> dict[str, Any]:
    """The fields of ``model`` taken from ``record`` (a status dataclass): a new field in the state database is
    not sent until the protocol names it."""
    return {name: getattr(record, name) for name in model.model_fields}


# --- ledger -----------------------------------------------------------------------------------------------
def ledger(service: GateService, request: LedgerRequest, send: Send) -> LedgerResult:
    conn = open_existing(service.workspace)
    try:
        rows = entries(conn)
    finally:
        conn.close()
    return LedgerResult(entries=[LedgerLine.model_validate(entry_document(e)) for e in rows])


# --- analyse ----------------------------------------------------------------------------------------------
class _ProgressStream:
    """Progress callbacks for ``run_analysis`` that stream coalesced lines to the client, and stop the analysis
    (between two steps) when the client has gone or the service is stopping."""

    def __init__(self, send: Send, stopping: threading.Event) -> None:
        self._send, self._stopping = send, stopping
        self._pending = 0
        self._last = 0.0

    def check(self) -> None:
        if self._stopping.is_set():
            raise ServiceStopping(
                "the gate service is stopping: the analysis stopped between two releases",
                hint="every release made so far is in the ledger; run the analysis again when the service is back",
            )

    def total(self, steps: int) -> None:
        self.check()
        self._send(ProgressReply(total=int(steps)))

    def advance(self, steps: int) -> None:
        self.check()
        self._pending += int(steps)
        now = time.monotonic()
        if now - self._last >= PROGRESS_EVERY_S:
            self.flush()
            self._last = now

    def flush(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, 0
            self._send(ProgressReply(advance=pending))


def _write_submitted(directory: Path, policy: SubmittedPolicy) -> Path:
    directory.mkdir(mode=0o700)
    path = directory / policy.name
    atomic_write_bytes(path, policy.content_bytes(), mode=0o600)
    signature = policy.signature_bytes()
    if signature is not None:
        atomic_write_bytes(path.with_name(path.name + ".sig"), signature, mode=0o600)
    return path


def _without_paths(exc: KansrijkError, *directories: Path) -> KansrijkError:
    """The error as the client should read it: the service's private temp directory is not the client's
    business; the file names it sent stay."""
    for directory in directories:
        prefix = f"{directory}/"
        exc.message = exc.message.replace(prefix, "")
        exc.hint = exc.hint.replace(prefix, "") if exc.hint else exc.hint
        exc.args = (exc.message,)
    return exc


def analyse(service: GateService, request: AnalyseRequest, send: Send) -> AnalyseResult:
    """Run the submitted plan with the submitted factor model under the service's release policy and officer
    keys; every output goes through the gate. One analysis at a time (the others wait their turn)."""
    with tempfile.TemporaryDirectory(prefix="kansrijk-analyse-") as tmp:
        plan_dir, factors_dir = Path(tmp) / "plan", Path(tmp) / "factors"
        plan = _write_submitted(plan_dir, request.plan)
        factors = _write_submitted(factors_dir, request.factors)
        if not service.analysis_lock.acquire(blocking=False):
            send(ProgressReply(note="waiting for the analysis in progress to finish"))
            service.analysis_lock.acquire()
        try:
            stream = _ProgressStream(send, service.stopping)
            stream.check()
            report = run_analysis(
                service.workspace,
                plan,
                factors,
                service.release_policy,
                list(service.officer_keys),
                progress_total=stream.total,
                progress=stream.advance,
            )
            stream.flush()
        except KansrijkError as exc:
            raise _without_paths(exc, plan_dir, factors_dir) from None
        finally:
            service.analysis_lock.release()
    return AnalyseResult(
        plan_digest=report.plan_digest,
        factors_digest=report.factors_digest,
        seconds=round(report.seconds, 2),
        model_fits=report.model_fits,
        verdicts=report.counts(),
        releases=[ReleaseLine.model_validate(line.to_json()) for line in report.lines],
    )


# --- query -----------------------------------------------------------------------------------------------
def query(service: GateService, request: QueryRequest, send: Send) -> QueryResult:
    """Release one ad-hoc spec under the service's release policy. A malformed spec is refused with
    ``RequestInvalid`` (nothing recorded); a refusal by the rules is a ledger entry and a ``refused`` result."""
    spec = parse_spec(request.spec)
    with Gate.open(service.workspace, service.release_policy, list(service.officer_keys)) as gate:
        result = gate.release(spec, requested_by=request.requested_by)
    return QueryResult(
        name=result.name,
        outcome=result.outcome,
        entry=result.entry_id,
        epsilon=str(result.epsilon),
        reasons=list(result.reasons),
        document=dict(getattr(result, "document", {}) or {}) or None,
    )


Operation = Callable[[GateService, Any, Send], Any]
# The dispatch table. Extension point: an operation is a request model in protocol.REQUESTS, its result model
# in protocol.RESULTS, and one function here.
OPERATIONS: dict[str, Operation] = {
    "ping": ping,
    "status": status,
    "ledger": ledger,
    "analyse": analyse,
    "query": query,
}


__all__ = ["OPERATIONS", "ClientGone", "GateService", "Operation", "ServiceStopping", "analyse", "ledger", "ping",
           "query", "status"]  # fmt: skip
