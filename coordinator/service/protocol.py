"""The gate service's wire protocol: one request per connection, newline-delimited JSON both ways.

A client connects to the gate's AF_UNIX stream socket and writes **one** request: a JSON object on one line,
at most ``MAX_REQUEST_BYTES`` bytes with its newline::

    {"version": 1, "op": "ping"}
    {"version": 1, "op": "status"}
    {"version": 1, "op": "ledger"}
    {"version": 1, "op": "analyse",
     "plan":    {"name": "plan.toml",    "content": "<base64>", "signature": "<base64 of plan.toml.sig>"},
     "factors": {"name": "factors.toml", "content": "<base64>", "signature": "<base64>"}}

The server answers with zero or more ``progress`` lines and then exactly one ``result`` or ``error`` line, and
closes the connection::

    {"version": 1, "type": "progress", "total": 120, "advance": 0, "note": ""}
    {"version": 1, "type": "progress", "total": null, "advance": 7, "note": ""}
    {"version": 1, "type": "result", "op": "analyse", "result": {...}}
    {"version": 1, "type": "error", "code": "refused", "error": "PolicyNotSigned", "exit_code": 4,
     "message": "...", "hint": "..."}

Every request is validated strictly (unknown keys, wrong types, duplicate keys, NaN and over-deep nesting are
refused) in this order, each with its own error code: the bytes are UTF-8 JSON (``malformed_json``), an object
(``invalid_request``) whose ``version`` is this one (``version_mismatch``), whose ``op`` is known
(``unknown_op``) and whose fields fit that op's model (``invalid_request``). Results carry only what the gate
released or what ``coordinator status`` shows: never person-level data.

To add an operation: a request model and a result model here (and the request model in ``REQUESTS``), and one
function in ``coordinator/service/ops.py``'s ``OPERATIONS``; a unit test checks the two tables agree.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

PROTOCOL_VERSION = 1
MAX_REQUEST_BYTES = 1 << 20  # one request line, newline included
MAX_POLICY_BYTES = 256 << 10  # each submitted policy file or signature file, before base64
MAX_REPLY_BYTES = 64 << 20  # one reply line (the ledger of a long-lived workspace is the largest)
MAX_JSON_DEPTH = 32

ErrorCode = Literal[
    "malformed_json",  # not UTF-8 JSON, duplicate keys, NaN, nesting deeper than MAX_JSON_DEPTH
    "invalid_request",  # not an object, missing or mistyped fields, unknown fields
    "version_mismatch",  # the request's protocol version is not the server's
    "unknown_op",  # no such operation
    "too_large",  # more than MAX_REQUEST_BYTES before the newline
    "timeout",  # no complete request within the server's read timeout
    "busy",  # the server holds its maximum number of connections
    "refused",  # the operation raised a KansrijkError (``error`` and ``exit_code`` say which)
    "stopping",  # the server is shutting down; an analysis in progress stopped between releases
    "internal",  # an unexpected failure inside the server (its log says where, never with data)
]


class ProtocolViolation(Exception):
    """A request the server refuses before any operation runs; ``code`` is the reply's error code."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


# --- requests ----------------------------------------------------------------------------------------------
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_B64_MAX = 4 * ((MAX_POLICY_BYTES + 2) // 3)


def _decode_b64(value: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise ValueError(f"{what} is not standard base64") from None
    if len(raw) > MAX_POLICY_BYTES:
        raise ValueError(f"{what} is larger than {MAX_POLICY_BYTES} bytes")
    return raw


class SubmittedPolicy(_Strict):
    """A policy file the operator holds, sent as its exact bytes with the bytes of its ``FILE.sig``.

    ``name`` is the file's base name (kept so the server's messages name the file the operator knows);
    ``signature`` is null when the operator has no signature file (the server then refuses it as unsigned).
    """

    name: Annotated[str, Field(max_length=100)]
    content: Annotated[str, Field(max_length=_B64_MAX)]
    signature: Annotated[str, Field(max_length=_B64_MAX)] | None = None

    @field_validator("name")
    @classmethod
    def _plain_name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be a plain file name (letters, digits, '.', '_', '-'; a letter or digit first)")
        return value

    @field_validator("content", "signature")
    @classmethod
    def _base64(cls, value: str | None) -> str | None:
        if value is not None:
            _decode_b64(value, "the value")
        return value

    def content_bytes(self) -> bytes:
        return _decode_b64(self.content, "content")

    def signature_bytes(self) -> bytes | None:
        return None if self.signature is None else _decode_b64(self.signature, "signature")

    @classmethod
    def of(cls, name: str, content: bytes, signature: bytes | None) -> SubmittedPolicy:
        return cls(
            name=name,
            content=base64.b64encode(content).decode("ascii"),
            signature=None if signature is None else base64.b64encode(signature).decode("ascii"),
        )


class PingRequest(_Strict):
    """Is the gate there, which version, which workspace, which release policy (by digest)."""

    version: Literal[1]
    op: Literal["ping"]


class StatusRequest(_Strict):
    """What ``coordinator status`` shows (no person-level data), the budget left and the ledger head."""

    version: Literal[1]
    op: Literal["status"]


class LedgerRequest(_Strict):
    """Every ledger entry as ``kansrijk ledger show`` lists it."""

    version: Literal[1]
    op: Literal["ledger"]


class AnalyseRequest(_Strict):
    """Run the officer-signed analysis plan on the gate's side; progress lines, then the summary."""

    version: Literal[1]
    op: Literal["analyse"]
    plan: SubmittedPolicy
    factors: SubmittedPolicy


class QueryRequest(_Strict):
    """An ad-hoc release spec (``kansrijk.gate.specs.parse_spec``'s JSON: no data, only conditions, grouping
    and parameters from the policy's grids); the gate computes it from its own data and answers as for any
    release."""

    version: Literal[1]
    op: Literal["query"]
    spec: dict[str, Any]
    requested_by: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = "coordinator"


Request = PingRequest | StatusRequest | LedgerRequest | AnalyseRequest | QueryRequest
# Extension point: a new operation's request model goes here.
REQUESTS: dict[str, type[_Strict]] = {
    "ping": PingRequest,
    "status": StatusRequest,
    "ledger": LedgerRequest,
    "analyse": AnalyseRequest,
    "query": QueryRequest,
}


# --- results -----------------------------------------------------------------------------------------------
class PingResult(_Strict):
    server: Literal["kansrijk-gate"] = "kansrijk-gate"
    version: str  # kansrijk's version
    protocol: int
    workspace: str
    policy_digest: str  # the release policy the service verified at start and runs under
    dataset: str  # the release policy's dataset (the budget's owner)
    officers: list[str]  # fingerprints of the privacy-officer keys the service trusts
    exposed: list[str]  # workspace paths other users can reach that only the gate should (empty: hardened)


class BundleLine(_Strict):
    partner: str
    year: int
    period: str
    extract_id: str
    bundle_digest: str
    key_epoch: int
    schema_version: str
    row_count: int
    quarantine_count: int
    ingested_at: str


class LinkRunLine(_Strict):
    year: int
    persons: int
    excluded: int
    dataset: str  # relative to the workspace
    linked_at: str


class BudgetLine(_Strict):
    """Exact fractions as text (``"3/4"``)."""

    dataset: str
    epsilon_total: str
    epsilon_spent: str
    epsilon_left: str
    delta_total: str
    delta_spent: str


class LedgerHead(_Strict):
    entries: int
    entry_id: str
    entry_hash: str


class StatusResult(_Strict):
    workspace: str
    hpke_fingerprint: str
    registry_installed: bool
    trusted_officers: int
    bundles: list[BundleLine]
    link_runs: list[LinkRunLine]
    policy_digest: str
    budget: BudgetLine | None  # None: the release policy has no DP budget
    ledger: LedgerHead | None  # None: nothing was released yet
    exposed: list[str]


class LedgerLine(_Strict):
    """One entry, the fields of ``kansrijk ledger show --json``."""

    entry: str
    time: str
    requested_by: str
    release: str
    kind: str
    outcome: str
    epsilon: str
    policy_digest: str
    request_digest: str
    outputs: dict[str, str]
    verdicts: list[dict[str, Any]]
    entry_hash: str
    signature: str = ""


class LedgerResult(_Strict):
    entries: list[LedgerLine]


class ReleaseLine(_Strict):
    """One line of the analysis summary (``SummaryLine.to_json()``): released numbers only."""

    name: str
    kind: str
    scope: str
    outcome: str
    feature_set: str
    part: str
    verdict: str
    summary: str
    reasons: list[str]
    note: str


class AnalyseResult(_Strict):
    """The document ``coordinator analyse --json`` prints."""

    plan_digest: str
    factors_digest: str
    seconds: float
    model_fits: int
    verdicts: dict[str, int]
    releases: list[ReleaseLine]


class QueryResult(_Strict):
    """The gate's answer to a query: its verdict, ledger entry and reasons; for a release, the release document
    (released numbers only: withheld cells are null)."""

    name: str
    outcome: Literal["released", "suppressed", "refused"]
    entry: str
    epsilon: str
    reasons: list[str]
    document: dict[str, Any] | None = None


RESULTS: dict[str, type[_Strict]] = {
    "ping": PingResult,
    "status": StatusResult,
    "ledger": LedgerResult,
    "analyse": AnalyseResult,
    "query": QueryResult,
}


# --- replies -----------------------------------------------------------------------------------------------
class ProgressReply(_Strict):
    version: int = PROTOCOL_VERSION
    type: Literal["progress"] = "progress"
    total: int | None = None  # the analysis's number of steps, once known
    advance: Annotated[int, Field(ge=0)] = 0  # steps done since the last progress line
    note: str = ""  # a line worth showing ("waiting for the analysis in progress")


class ResultReply(_Strict):
    version: int = PROTOCOL_VERSION
    type: Literal["result"] = "result"
    op: str
    result: dict[str, Any]


class ErrorReply(_Strict):
    version: int = PROTOCOL_VERSION
    type: Literal["error"] = "error"
    code: ErrorCode
    message: str
    hint: str | None = None
    error: str = ""  # the KansrijkError class name when code == "refused"
    exit_code: int = 1


Reply = Annotated[ProgressReply | ResultReply | ErrorReply, Field(discriminator="type")]
_REPLY: TypeAdapter[ProgressReply | ResultReply | ErrorReply] = TypeAdapter(Reply)


# --- encoding and strict decoding ------------------------------------------------------------------------
def encode(message: BaseModel) -> bytes:
    """One message as a JSON line (UTF-8, no NaN)."""
    return json.dumps(message.model_dump(mode="json"), allow_nan=False, separators=(",", ":")).encode() + b"\n"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _depth(value: Any, limit: int) -> int:
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if deepest > limit:
            return deepest
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def loads_strict(data: bytes) -> Any:
    """JSON from bytes, refusing what a lenient parser would let through (duplicate keys, NaN, deep nesting)."""
    try:
        text = data.decode("utf-8")
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise ProtocolViolation("malformed_json", "the request is not UTF-8") from None
    except RecursionError:  # the C parser counts its recursion: a bomb of "[[[[..." ends here, not in a crash
        raise ProtocolViolation("malformed_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError as exc:
        raise ProtocolViolation("malformed_json", f"the request is not valid JSON: {_short(exc)}") from None
    if _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise ProtocolViolation("malformed_json", f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return value


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def format_validation_error(exc: ValidationError) -> str:
    """``field.path: message`` per problem, without echoing the input values."""
    parts = []
    for err in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(p) for p in err["loc"]) or "request"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts[:10]) + (f" (and {len(parts) - 10} more)" if len(parts) > 10 else "")


def parse_request(line: bytes) -> Request:
    """Validate one request line in the documented order; ``ProtocolViolation`` with its code otherwise."""
    value = loads_strict(line)
    if not isinstance(value, dict):
        raise ProtocolViolation("invalid_request", "a request is one JSON object")
    if "version" not in value:
        raise ProtocolViolation("invalid_request", f"version: missing (this server speaks protocol {PROTOCOL_VERSION})")
    version = value["version"]
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise ProtocolViolation(
            "version_mismatch",
            f"protocol version {json.dumps(version)[:20]} is not this server's ({PROTOCOL_VERSION})",
        )
    op = value.get("op")
    if not isinstance(op, str):
        raise ProtocolViolation("invalid_request", "op: missing or not a string")
    model = REQUESTS.get(op)
    if model is None:
        raise ProtocolViolation("unknown_op", f"op {op[:40]!r} is unknown; known: {', '.join(sorted(REQUESTS))}")
    try:
        return model.model_validate(value)  # type: ignore[return-value]
    except ValidationError as exc:
        raise ProtocolViolation("invalid_request", f"{op}: {format_validation_error(exc)}") from None


def parse_reply(line: bytes) -> ProgressReply | ResultReply | ErrorReply:
    """One reply line; ``ValueError`` when it is not one (the client turns that into ``ServiceError``) and
    ``ProtocolViolation("version_mismatch")`` when the server speaks another version."""
    try:
        value = loads_strict(line)
    except ProtocolViolation as exc:
        raise ValueError(exc.message) from None
    if not isinstance(value, dict):
        raise ValueError("a reply is one JSON object")
    if value.get("version") != PROTOCOL_VERSION:
        raise ProtocolViolation(
            "version_mismatch",
            f"the gate service speaks protocol {json.dumps(value.get('version'))[:20]}, this client {PROTOCOL_VERSION}",
        )
    try:
        return _REPLY.validate_python(value)
    except ValidationError as exc:
        raise ValueError(f"malformed reply: {format_validation_error(exc)}") from None


__all__ = [
    "MAX_POLICY_BYTES",
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "PROTOCOL_VERSION",
    "REQUESTS",
    "RESULTS",
    "AnalyseRequest",
    "AnalyseResult",
    "BudgetLine",
    "BundleLine",
    "ErrorCode",
    "ErrorReply",
    "LedgerHead",
    "LedgerLine",
    "LedgerRequest",
    "LedgerResult",
    "LinkRunLine",
    "PingRequest",
    "PingResult",
    "ProgressReply",
    "ProtocolViolation",
    "ReleaseLine",
    "Request",
    "ResultReply",
    "StatusRequest",
    "StatusResult",
    "SubmittedPolicy",
    "encode",
    "parse_reply",
    "parse_request",
]
