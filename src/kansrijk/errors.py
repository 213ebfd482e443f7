"""The exception hierarchy: one class per failure a user can cause, each with a documented exit code.

Messages say where (file, row, field, key path), what (the rule) and what to do. They never contain a BSN, key
material or a raw value of a sensitive field: callers pass locations and rule names, not values.
"""

from __future__ import annotations


class KansrijkError(Exception):
    """Root of every error kansrijk raises on purpose. The CLI maps each subclass to its exit code."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if self.hint is None else f"{self.message}\n  what to do: {self.hint}"


# --- input and configuration (exit 2..9) -------------------------------------------------------------------
class InputError(KansrijkError):
    """A file or option given by the user is missing, unreadable or malformed."""

    exit_code = 2


class PolicyError(KansrijkError):
    """A policy file does not validate; the message names file, key path and problem."""

    exit_code = 3


class PolicyNotSigned(PolicyError):
    """A policy has no valid signature from a registered privacy officer, or was altered after signing."""

    exit_code = 4


class ValidationFailed(KansrijkError):
    """An extract's fault rate exceeded the sharing policy's maximum; nothing was sealed."""

    exit_code = 5


class KeyMaterialError(KansrijkError):
    """A key file is missing, has the wrong type, wrong passphrase, or unsafe permissions."""

    exit_code = 6


class WorkspaceError(KansrijkError):
    """A workspace is missing, not initialised, or in a state that forbids the operation."""

    exit_code = 7


class OutputExists(KansrijkError):
    """An output path exists already and overwriting was not asked for."""

    exit_code = 8


# --- bundles (exit 10..19) ------------------------------------------------------------------------------
class BundleError(KansrijkError):
    """A bundle was refused at ingest. Each subclass is one distinct reason; the workspace is unchanged."""

    exit_code = 10


class BundleMalformed(BundleError):
    """The bundle is not a kansrijk bundle of a known version, or its framing is broken or truncated."""

    exit_code = 11


class BundleTampered(BundleError):
    """The manifest signature, the payload digest or the authenticated encryption does not verify."""

    exit_code = 12


class WrongRecipient(BundleError):
    """The bundle was sealed for another coordinator key."""

    exit_code = 13


class UnknownPartner(BundleError):
    """The signing partner or its key is not in the partner registry, or the key was revoked."""

    exit_code = 14


class ReplayedBundle(BundleError):
    """This extract (or this exact bundle) was ingested already."""

    exit_code = 15


class OutOfOrderBundle(BundleError):
    """The bundle's previous-bundle hash does not match the last bundle ingested from that partner."""

    exit_code = 16


class SchemaMismatch(BundleError):
    """The bundle's schema version or policy digest is not one the registry allows for that partner."""

    exit_code = 17


class EmptyBundle(BundleError):
    """The bundle holds no rows and its partner did not declare the extract empty (an empty export is almost
    always a mistake; a partner that holds nobody for the year seals with ``--declare-empty``)."""

    exit_code = 18


# --- release gate (exit 20..29) -------------------------------------------------------------------------
class GateError(KansrijkError):
    """The release gate refused or could not process a release request."""

    exit_code = 20


class BudgetExceeded(GateError):
    """The request would spend more privacy budget than the policy leaves; nothing was spent."""

    exit_code = 21


class LedgerCorrupted(GateError):
    """The audit ledger's hash chain does not verify: an entry was edited, removed or reordered."""

    exit_code = 22


class AnchorInvalid(GateError):
    """A ledger anchor file is malformed, signed by an untrusted key, or its signature does not verify."""

    exit_code = 24


class NotReviewable(GateError):
    """A refused output cannot be put to (or released by) an officer's review: not a refusal, a DP output, a rule
    a review never lifts (budget, differencing, name, requester, fixed rules), a pending review, or an output that
    changed since it was reviewed. Nothing is released."""

    exit_code = 27


class ApprovalInvalid(GateError):
    """An officer's review decision is malformed, signed by an untrusted key, altered, for another request or
    workspace, or used before. Nothing is released."""

    exit_code = 28


# --- analysis (exit 30..39) -----------------------------------------------------------------------------
class AnalysisError(KansrijkError):
    """The analysis plan cannot be carried out on this dataset."""

    exit_code = 30


# --- the gate service (exit 40..49) ----------------------------------------------------------------------
class ServiceError(KansrijkError):
    """The gate service broke off: the connection closed without an answer, its reply was malformed, it failed
    inside (its log says why), or it is stopping."""

    exit_code = 40


class ServiceUnavailable(ServiceError):
    """No gate service answers at that socket path: no socket file there, or nothing listens on it."""

    exit_code = 41


class ServicePermissionDenied(ServiceError):
    """The operating system refused the connection: the caller is not in the socket's group."""

    exit_code = 42


class ServiceRefused(ServiceError):
    """The gate service refused the request itself (malformed, too large, unknown operation, too slow, busy);
    the message carries its reason."""

    exit_code = 43


class ProtocolMismatch(ServiceError):
    """Client and gate service speak different protocol versions."""

    exit_code = 44


class SocketInUse(ServiceError):
    """``gate serve`` will not start: a live service listens on the socket path, or the path is not a socket."""

    exit_code = 45
