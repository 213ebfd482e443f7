"""The operator's side of the gate service: connect, send one request, read the replies.

Every failure is one ``KansrijkError`` with its own exit code: no socket or nothing listening
(``ServiceUnavailable``), not allowed to connect (``ServicePermissionDenied``), the service refused the
request (``ServiceRefused``, with its reason), a different protocol version (``ProtocolMismatch``), a broken
connection or reply (``ServiceError``). When an operation itself refuses (an unsigned plan, a workspace
without a dataset, …) the client raises the same error class the in-process command would, with the same
exit code.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from coordinator.service.protocol import (
    MAX_REPLY_BYTES,
    PROTOCOL_VERSION,
    RESULTS,
    AnalyseRequest,
    AnalyseResult,
    ErrorReply,
    LedgerRequest,
    LedgerResult,
    PingRequest,
    PingResult,
    ProgressReply,
    ProtocolViolation,
    QueryRequest,
    QueryResult,
    ResultReply,
    StatusRequest,
    StatusResult,
    SubmittedPolicy,
    encode,
    format_validation_error,
    parse_reply,
)
from kansrijk.errors import (
    InputError,
    KansrijkError,
    PolicyError,
    ProtocolMismatch,
    ServiceError,
    ServicePermissionDenied,
    ServiceRefused,
    ServiceUnavailable,
)
from kansrijk.policy.signing import signature_path

if TYPE_CHECKING:
    from coordinator.analysis.run import AnalysisReport

CONNECT_TIMEOUT_S = 10.0
QUICK_TIMEOUT_S = 60.0  # ping, status, ledger; an analysis may be silent for longer (one DP model) and has none


def connect(socket_path: Path, *, timeout: float = CONNECT_TIMEOUT_S) -> socket.socket:
    """A connected socket, or the precise error why not."""
    path = Path(socket_path)
    if len(os.fsencode(path)) > 107:
        raise InputError(f"{path}: too long for a local socket path (107 bytes at most)")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fsencode(path))
    except FileNotFoundError:
        sock.close()
        raise ServiceUnavailable(
            f"{path}: no gate service socket here",
            hint="start the service (kansrijk gate serve WS … --socket PATH) or check the socket path",
        ) from None
    except ConnectionRefusedError:
        sock.close()
        raise ServiceUnavailable(
            f"{path}: nothing listens on this socket (the gate service stopped)",
            hint="start the service again (systemctl start kansrijk-gate)",
        ) from None
    except PermissionError:
        sock.close()
        raise ServicePermissionDenied(
            f"{path}: permission denied",
            hint="your user must be in the socket's group (ls -l the socket; docs/deployment.md)",
        ) from None
    except TimeoutError:
        sock.close()
        raise ServiceUnavailable(f"{path}: the gate service does not accept connections (timed out)") from None
    except OSError as exc:
        sock.close()
        raise ServiceUnavailable(f"{path}: cannot connect to the gate service ({exc.strerror})") from None
    return sock


def _lines(sock: socket.socket) -> Iterator[bytes]:
    buf = bytearray()
    while True:
        end = buf.find(b"\n")
        while end >= 0:
            yield bytes(buf[:end])
            del buf[: end + 1]
            end = buf.find(b"\n")
        if len(buf) > MAX_REPLY_BYTES:
            raise ServiceError("the gate service sent a reply line longer than the client accepts")
        try:
            chunk = sock.recv(1 << 16)
        except TimeoutError:
            raise ServiceError("the gate service did not answer in time") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise ServiceError("the gate service closed the connection without an answer",
                               hint="the gate's log says why (journalctl -u kansrijk-gate)")  # fmt: skip
        buf += chunk


def _error_class(name: str, exit_code: int) -> type[KansrijkError] | None:
    stack: list[type[KansrijkError]] = [KansrijkError]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name and cls.exit_code == exit_code:
            return cls
        stack.extend(cls.__subclasses__())
    return None


def raise_error(reply: ErrorReply) -> None:
    """Turn an error reply into the client's exception (see the module docstring)."""
    if reply.code == "version_mismatch":
        raise ProtocolMismatch(reply.message, hint="use the same kansrijk version for the gate service and the CLI")
    if reply.code == "refused":
        cls = _error_class(reply.error, reply.exit_code)
        if cls is not None:
            raise cls(reply.message, hint=reply.hint)
        error = KansrijkError(f"{reply.error}: {reply.message}", hint=reply.hint)
        error.exit_code = reply.exit_code
        raise error
    if reply.code in ("internal", "stopping"):
        raise ServiceError(f"gate service: {reply.message}", hint=reply.hint)
    raise ServiceRefused(f"the gate service refused the request ({reply.code}): {reply.message}", hint=reply.hint)


def request(
    socket_path: Path,
    message: BaseModel,
    *,
    timeout: float | None = QUICK_TIMEOUT_S,
    on_progress: Callable[[ProgressReply], None] | None = None,
) -> ResultReply:
    """Send one request and read replies until its result (returned) or error (raised)."""
    sock = connect(socket_path)
    try:
        sock.settimeout(timeout)
        with contextlib.suppress(OSError):  # the service answered early (too large) and closed: read its reply
            sock.sendall(encode(message))
        for line in _lines(sock):
            try:
                reply = parse_reply(line)
            except ProtocolViolation as exc:
                raise ProtocolMismatch(exc.message) from None
            except ValueError as exc:
                raise ServiceError(f"the gate service sent a malformed reply: {exc}") from None
            if isinstance(reply, ProgressReply):
                if on_progress is not None:
                    on_progress(reply)
                continue
            if isinstance(reply, ErrorReply):
                raise_error(reply)
            assert isinstance(reply, ResultReply)
            return reply
        raise ServiceError("the gate service closed the connection without an answer")  # pragma: no cover
    finally:
        sock.close()


def _result(reply: ResultReply, op: str) -> BaseModel:
    if reply.op != op:
        raise ServiceError(f"the gate service answered op {reply.op!r} to a {op!r} request")
    try:
        return RESULTS[op].model_validate(reply.result)
    except ValidationError as exc:
        raise ServiceError(f"the gate service sent a malformed {op} result: {format_validation_error(exc)}") from None


def ping(socket_path: Path) -> PingResult:
    """The service's version, workspace, release policy digest, trusted officers and boundary problems."""
    return _result(request(socket_path, PingRequest(version=PROTOCOL_VERSION, op="ping")), "ping")  # type: ignore[return-value]


def status(socket_path: Path) -> StatusResult:
    """What ``coordinator status`` shows, the budget left and the ledger head."""
    return _result(request(socket_path, StatusRequest(version=PROTOCOL_VERSION, op="status")), "status")  # type: ignore[return-value]


def ledger(socket_path: Path) -> LedgerResult:
    """Every ledger entry (the fields of ``ledger show --json``)."""
    return _result(request(socket_path, LedgerRequest(version=PROTOCOL_VERSION, op="ledger")), "ledger")  # type: ignore[return-value]


def query(socket_path: Path, spec: dict[str, Any], *, requested_by: str = "coordinator") -> QueryResult:
    """Release an ad-hoc spec (``kansrijk.gate.specs.spec_to_json``) through the gate service."""
    message = QueryRequest(version=PROTOCOL_VERSION, op="query", spec=spec, requested_by=requested_by)
    return _result(request(socket_path, message), "query")  # type: ignore[return-value]


def submitted(path: Path) -> SubmittedPolicy:
    """A policy file and its signature file as the service receives them. ``PolicyError`` when the file is
    missing (as in-process); a missing signature is sent as none, and the service refuses it as unsigned."""
    path = Path(path)
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        raise PolicyError(f"{path}: policy file not found") from None
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the policy file ({exc.strerror})") from None
    try:
        signature: bytes | None = signature_path(path).read_bytes()
    except FileNotFoundError:
        signature = None
    try:
        return SubmittedPolicy.of(path.name, content, signature)
    except ValidationError as exc:
        raise InputError(f"{path}: cannot be sent to the gate service: {format_validation_error(exc)}") from None


def analyse(
    socket_path: Path,
    plan_path: Path,
    factors_path: Path,
    *,
    progress_total: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> AnalyseResult:
    """Run the signed plan on the gate's side (under the service's release policy and officer keys)."""
    message = AnalyseRequest(
        version=PROTOCOL_VERSION, op="analyse", plan=submitted(plan_path), factors=submitted(factors_path)
    )

    def on_progress(reply: ProgressReply) -> None:
        if reply.total is not None and progress_total is not None:
            progress_total(reply.total)
        if reply.advance and progress is not None:
            progress(reply.advance)
        if reply.note and note is not None:
            note(reply.note)

    reply = request(socket_path, message, timeout=None, on_progress=on_progress)
    return _result(reply, "analyse")  # type: ignore[return-value]


def analysis_report(result: AnalyseResult) -> AnalysisReport:
    """The summary as ``run_analysis`` returns it, for the same rendering. ``released`` values are not sent
    (they are in ``WS/released/``); each line's ``summary`` text carries the released numbers."""
    from coordinator.analysis.run import AnalysisReport, SummaryLine  # the analysis stack loads only when used

    lines = tuple(
        SummaryLine(
            name=r.name,
            kind=r.kind,
            scope=r.scope,
            outcome=r.outcome,
            feature_set=r.feature_set,
            part=r.part,
            verdict=r.verdict,
            summary=r.summary,
            reasons=tuple(r.reasons),
            note=r.note,
        )
        for r in result.releases
    )
    return AnalysisReport(
        lines=lines,
        seconds=result.seconds,
        model_fits=result.model_fits,
        plan_digest=result.plan_digest,
        factors_digest=result.factors_digest,
    )


def run_analysis_via_gate(
    socket_path: Path,
    plan_path: Path,
    factors_path: Path,
    *,
    progress_total: Callable[[int], None] | None = None,
    progress: Callable[[int], None] | None = None,
    note: Callable[[str], None] | None = None,
) -> AnalysisReport:
    """``run_analysis`` through the gate service at ``socket_path``: same summary, same errors."""
    result = analyse(socket_path, plan_path, factors_path, progress_total=progress_total, progress=progress, note=note)
    return analysis_report(result)


__all__ = [
    "analyse",
    "analysis_report",
    "connect",
    "ledger",
    "ping",
    "raise_error",
    "request",
    "run_analysis_via_gate",
    "status",
    "submitted",
]
