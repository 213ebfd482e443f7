"""The review route for refused outputs: a requester asks, a privacy officer decides, the gate releases.

Output checkers in secure research environments (ACRO and SACRO's "exception requests") let a researcher ask for a
refused output to be looked at again with a justification; a human decides. Here:

1. **Request** (``request_review``): the requester names a refused ledger entry and justifies the request. The gate
   recomputes the output from its own data under the current policy and records the request in ``reviews``: the
   rules that refuse it (with their reasons), the numbers as they would be released (``released_form``), and the
   *review digest* that binds all of it (the workspace's gate key, the entry, the request digest, the refusing
   verdicts, the numbers' digest, the requester and the justification). Nothing is released. Only outputs under
   output checking can be reviewed; a refusal by a rule a review may not lift is refused (``NotReviewable``):
   the DP budget and every DP rule (never for the budget: a DP output is never released this way), differencing
   and the release name (checked against the whole history at release), the requester allow-list, and the fixed
   rules on extremes and negative values.
2. **Decision** (``sign_decision``): the privacy officer reads the request (``kansrijk review show``: the rule that
   refused it and the numbers), then signs an approval or a rejection with their Ed25519 key, over the review digest
   and the refusing verdicts, into a small JSON file (never overwritten).
3. **Release** (``apply_decision``): the gate verifies the decision before anything else (a trusted officer key, the
   signature, the review digest of a pending request of *this* workspace: an approval for another request, a
   replayed or altered one is ``ApprovalInvalid``), recomputes the output, and releases it only if the refusing
   verdicts and the numbers are exactly those approved (``NotReviewable`` otherwise: the data or the policy
   changed; ask again). The release goes through the gate's one commit path (``Gate.release_reviewed``): epsilon 0,
   no budget touched, name and differencing checked again. Each lifted verdict is recorded as passed "on officer
   review" with its original reason, and an ``officer_review`` verdict names the review, the officer's key and the
   decision's digest, in the signed ledger entry and the released document. The request's status changes in the
   same transaction, so an approval releases once.

``verify_reviews`` checks the stored decisions' signatures and that each approved release is the ledger entry it
names.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kansrijk import crypto
from kansrijk.errors import ApprovalInvalid, NotReviewable, OutputExists
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.gate import history as history_mod
from kansrijk.gate import ledger as ledger_mod
from kansrijk.gate.audit import AuditRecord
from kansrijk.gate.compute import materialise
from kansrijk.gate.keys import read_gate_public_key
from kansrijk.gate.ledger import LEDGER_FILE, canonical, open_existing
from kansrijk.gate.release import (
    TABULAR,
    DifferenceRecord,
    Gate,
    Population,
    ReleaseResult,
    _count_record,
    _difference_record,
    _sdc_values,
    _tree_node_records,
)
from kansrijk.gate.requests import DpModelRequest, RequestInvalid
from kansrijk.gate.sdc import RuleOutcome, check_model_output, check_table
from kansrijk.gate.specs import ReleaseSpec, parse_spec
from kansrijk.policy.signing import OfficerKey, officer_keys

DECISION_FORMAT = "kansrijk-review-decision"
REVIEW_FORMAT = "kansrijk-review-request"
SIGNING_KIND = "ed25519-signing"
_DOMAIN = b"kansrijk/v1/review-decision\n"
OFFICER_REVIEW = "officer_review"

# The output-checking rules an officer may lift after review: each protects one output, which the gate computes in
# full and the officer sees. Never lifted: what cannot be judged from one output (the DP budget and every DP rule,
# differencing, the release-history audit and the release name, the requester allow-list), the fixed rules on extremes
# and negative values, and the verdicts the gate reaches while computing (class_counts, bin_threshold,
# score_groups, importance_holders: a model refused there is not fitted, so there would be nothing to look at).
REVIEWABLE_RULES = frozenset(
    {
        "threshold",
        "p_percent",
        "nk_dominance",
        "class_disclosure",
        "secondary_suppression",
        "max_suppressed_share",
        "dof",
        "tree_training",
        "tree_leaf_size",
        "tree_small_class_count",
        "tree_zero_class_probability",
        "tree_hyperparameters",
    }
)


# --- values ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Evaluation:
    """A spec computed and checked by the gate as it would release it, without releasing it."""

    spec: ReleaseSpec
    verdicts: tuple[RuleOutcome, ...]
    values: Any
    record: DifferenceRecord | None
    audit_records: tuple[AuditRecord, ...] = ()  # what it adds to the release-history audit (never lifted)

    @property
    def refusing(self) -> tuple[RuleOutcome, ...]:
        return tuple(v for v in self.verdicts if v.verdict == "refuse")

    @property
    def values_digest(self) -> str:
        return ledger_mod.sha256_prefixed(canonical(self.values))


@dataclass(frozen=True, slots=True)
class Review:
    """One review request as recorded (``reviews`` table)."""

    review_id: str
    refused_entry: str
    release_name: str
    kind: str
    request_digest: str
    requested_by: str
    justification: str
    requested_at: str
    refused: tuple[dict[str, Any], ...]
    released_form: Any
    values_digest: str
    review_digest: str
    status: str  # requested | released | rejected | refused_at_release
    decision: dict[str, Any] | None = None
    decided_at: str | None = None
    released_entry: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "review": self.review_id,
            "refused_entry": self.refused_entry,
            "release": self.release_name,
            "kind": self.kind,
            "request_digest": self.request_digest,
            "requested_by": self.requested_by,
            "justification": self.justification,
            "requested_at": self.requested_at,
            "refused": list(self.refused),
            "released_form": self.released_form,
            "values_digest": self.values_digest,
            "review_digest": self.review_digest,
            "status": self.status,
            "decision": self.decision,
            "decided_at": self.decided_at,
            "released_entry": self.released_entry,
        }


@dataclass(frozen=True, slots=True)
class Decision:
    """An officer's signed decision on one review request."""

    review_id: str
    review_digest: str
    decision: str  # approved | rejected
    note: str
    decided_at: str
    officer_fingerprint: str
    signature: bytes = b""

    def body(self) -> dict[str, Any]:
        return {
            "format": DECISION_FORMAT,
            "version": 1,
            "review": self.review_id,
            "review_digest": self.review_digest,
            "decision": self.decision,
            "note": self.note,
            "decided_at": self.decided_at,
            "officer_fingerprint": self.officer_fingerprint,
        }

    def signed_message(self) -> bytes:
        return _DOMAIN + canonical(self.body())

    def document(self) -> dict[str, Any]:
        return {**self.body(), "signature": base64.b64encode(self.signature).decode("ascii")}

    @property
    def digest(self) -> str:
        return ledger_mod.sha256_prefixed(canonical(self.document()))


@dataclass(frozen=True, slots=True)
class ApprovedRelease:
    """What ``Gate.release_reviewed`` releases: made here only, after the decision verified and the output was
    recomputed unchanged. ``mark_released`` records the release in ``reviews`` inside the commit's transaction."""

    review_id: str
    spec: ReleaseSpec
    requested_by: str
    verdicts: tuple[RuleOutcome, ...]
    values: Any
    record: DifferenceRecord | None
    audit_records: tuple[AuditRecord, ...] = ()

    def mark_released(self, conn: sqlite3.Connection, seq: int) -> None:
        changed = conn.execute(
            "UPDATE reviews SET status = 'released', released_seq = ? WHERE review_id = ? AND status = 'requested'",
            (seq, self.review_id),
        ).rowcount
        if changed != 1:  # another process applied it between the check and this transaction
            raise ApprovalInvalid(f"review {self.review_id}: already decided; an approval releases once")


@dataclass(frozen=True, slots=True)
class Applied:
    review: Review
    decision: Decision
    result: ReleaseResult | None  # None for a rejection


# --- evaluating a spec as the gate would release it -------------------------------------------------------------
def evaluate(gate: Gate, spec: ReleaseSpec, requested_by: str) -> Evaluation:
    """Compute and check ``spec`` exactly as ``Gate.release`` does for an output-checked release, and the values
    it would release, without releasing or recording anything. Tables are checked cell by cell even when a model
    rule refuses first, so the officer sees every cell's status. ``NotReviewable`` for a DP output."""
    method = gate.policy.rule_for(spec.kind).method
    if method != "sdc" or spec.kind == "dp_model":
        raise NotReviewable(
            f"release {spec.name!r}: its kind {spec.kind!r} is released with differential privacy under this policy; "
            "a review never releases a DP output (it would have to spend budget, and the budget is never reviewed)",
            hint="ask a smaller or coarser question, or wait for a policy with budget left",
        )
    verdicts: list[RuleOutcome] = []
    if requested_by not in gate.policy.requesters.allowed:
        verdicts.append(RuleOutcome("requested_by", "refuse", f"{requested_by!r} is not in requesters.allowed"))
        return Evaluation(spec, tuple(verdicts), {}, None)
    verdicts.append(RuleOutcome("requested_by", "pass", f"{requested_by!r} may request releases"))
    computed = materialise(spec, gate.data, gate.policy)
    request = computed.request
    if isinstance(request, DpModelRequest):
        raise NotReviewable(f"release {spec.name!r}: a DP model is never released by review")
    verdicts += computed.verdicts
    verdicts += check_model_output(request, gate.policy.sdc)
    check = check_table(request, gate.policy.sdc) if isinstance(request, TABULAR) else None
    if check is not None:
        verdicts += check.outcomes
    values = _sdc_values(request, check, verdicts, computed.withheld)
    record = _difference_record(request, check) if check is not None else _count_record(request)
    if record is not None:
        record = dataclasses.replace(
            record,
            persons=Population.of(computed.persons, spec.name),
            nodes=_tree_node_records(request, computed, spec.name),
        )
    audit_records = tuple(history_mod.records_for(request, computed, check, verdicts, gate.policy.sdc))
    return Evaluation(spec, tuple(verdicts), _plain(values), record, audit_records)


def _plain(values: Any) -> Any:
    """The values as JSON would carry them (tuples as lists, no NaN), so their digest is stable."""
    return json.loads(json.dumps(values, default=str, allow_nan=False))


def _refusal_json(verdicts: Sequence[RuleOutcome]) -> list[dict[str, Any]]:
    return [v.to_json() for v in verdicts]


# --- 1. the request ---------------------------------------------------------------------------------------------
def request_review(gate: Gate, entry: str | int, *, justification: str, requested_by: str | None = None) -> Review:
    """Record a review request for refused ledger ``entry`` (``L000012`` or 12). See the module docstring."""
    seq = _seq(entry)
    justification = " ".join(justification.split())
    if len(justification) > 1000:
        raise NotReviewable("a justification of at most 1000 characters, please: it is recorded with the release")
    if len(justification) < 20:
        raise NotReviewable(
            "a review request needs a justification of at least 20 characters: why the output is needed and why it "
            "does not disclose a person",
            hint='pass --justification "…"',
        )
    conn = gate._conn
    row = conn.execute("SELECT * FROM ledger WHERE seq = ?", (seq,)).fetchone()
    if row is None:
        raise NotReviewable(f"{LEDGER_FILE}: there is no entry L{seq:06d}", hint="kansrijk ledger show WS")
    if row["outcome"] != "refused":
        raise NotReviewable(
            f"entry L{seq:06d} ({row['release_name']}) was {row['outcome']}, not refused: nothing to review"
        )
    kept = conn.execute("SELECT spec FROM refused_specs WHERE seq = ?", (seq,)).fetchone()
    if kept is None:
        raise NotReviewable(
            f"entry L{seq:06d} ({row['release_name']}): its request carries data (per-person scores or importances) "
            "or was refused before refusals were kept; the gate cannot recompute it for a review",
            hint="only outputs the gate computes from a data-free spec can be reviewed",
        )
    spec = parse_spec(json.loads(kept["spec"]))
    if spec.digest() != row["request_digest"]:
        raise NotReviewable(f"entry L{seq:06d}: the kept spec is not the refused request (the ledger was edited)")
    recorded = {str(v.get("rule")) for v in json.loads(row["verdicts"]) if v.get("verdict") == "refuse"}
    _never_lifted(recorded, seq, spec.name)  # the budget, differencing, the name: refused where they were checked
    requester = requested_by or str(row["requested_by"])
    evaluation = evaluate(gate, spec, requester)
    refusing = evaluation.refusing
    if not refusing:
        raise NotReviewable(
            f"entry L{seq:06d} ({spec.name}): the gate no longer refuses this output under the current policy",
            hint="request it again the ordinary way (a refused name can be released)",
        )
    _never_lifted({v.rule for v in refusing}, seq, spec.name)
    with ledger_mod.immediate(conn):
        pending = conn.execute(
            "SELECT review_id FROM reviews WHERE refused_seq = ? AND status = 'requested'", (seq,)
        ).fetchone()
        if pending is not None:
            raise NotReviewable(f"entry L{seq:06d} has a pending review already: {pending['review_id']}")
        count = int(conn.execute("SELECT COUNT(*) FROM reviews").fetchone()[0])
        review_id = f"R{count + 1:06d}"
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        refused = tuple(_refusal_json(refusing))
        review_digest = _digest(
            review=review_id,
            gate_key=read_gate_public_key(gate.workspace).fingerprint,
            refused_entry=f"L{seq:06d}",
            release=spec.name,
            request_digest=spec.digest(),
            refused=list(refused),
            values_digest=evaluation.values_digest,
            requested_by=requester,
            justification=justification,
        )
        conn.execute(
            "INSERT INTO reviews(review_id, refused_seq, release_name, kind, request_digest, requested_by, "
            "justification, requested_at, refused, released_form, values_digest, review_digest, status) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'requested')",
            (review_id, seq, spec.name, spec.kind, spec.digest(), requester, justification, now,
             canonical(list(refused)).decode(), canonical(evaluation.values).decode(), evaluation.values_digest,
             review_digest),
        )  # fmt: skip
    return get_review(gate.workspace, review_id)


def _digest(**fields: Any) -> str:
    """The review digest: what the officer's signature binds (see the module docstring)."""
    return ledger_mod.sha256_prefixed(canonical({"format": REVIEW_FORMAT, "version": 1, **fields}))


def _checked(review: Review, workspace: Path) -> Review:
    """``review`` only if what it shows is what its digest binds: the numbers are the ones digested and every
    field rebuilds the recorded review digest (an edited request in the database cannot show an officer other
    numbers or rules than the ones the signature and the release are held to)."""
    where = Path(workspace) / LEDGER_FILE
    if ledger_mod.sha256_prefixed(canonical(review.released_form)) != review.values_digest:
        raise ledger_mod.LedgerCorrupted(f"{where}: review {review.review_id}'s numbers were edited")
    rebuilt = _digest(
        review=review.review_id,
        gate_key=read_gate_public_key(Path(workspace)).fingerprint,
        refused_entry=review.refused_entry,
        release=review.release_name,
        request_digest=review.request_digest,
        refused=list(review.refused),
        values_digest=review.values_digest,
        requested_by=review.requested_by,
        justification=review.justification,
    )
    if rebuilt != review.review_digest:
        raise ledger_mod.LedgerCorrupted(f"{where}: review {review.review_id} was edited (its digest does not match)")
    return review


def _never_lifted(rules: set[str], seq: int, name: str) -> None:
    blocked = sorted(rules - REVIEWABLE_RULES)
    if blocked:
        raise NotReviewable(
            f"entry L{seq:06d} ({name}): refused by {', '.join(blocked)}, which a review never lifts (the DP "
            "budget and DP rules, differencing, the release-history audit and the release name, the requester "
            "allow-list, the fixed rules on extremes and negative values, and refusals reached while computing, "
            "where nothing is computed to review)",
            hint="change the request instead: another population, a coarser grouping",
        )


def _seq(entry: str | int) -> int:
    text = str(entry).strip().upper().removeprefix("L")
    if not text.isdigit() or int(text) < 1:
        raise NotReviewable(f"{entry!r} is not a ledger entry (L000012, or 12)")
    return int(text)


# --- reading ----------------------------------------------------------------------------------------------------
def _review(row: sqlite3.Row) -> Review:
    return Review(
        review_id=row["review_id"],
        refused_entry=f"L{int(row['refused_seq']):06d}",
        release_name=row["release_name"],
        kind=row["kind"],
        request_digest=row["request_digest"],
        requested_by=row["requested_by"],
        justification=row["justification"],
        requested_at=row["requested_at"],
        refused=tuple(json.loads(row["refused"])),
        released_form=json.loads(row["released_form"]),
        values_digest=row["values_digest"],
        review_digest=row["review_digest"],
        status=row["status"],
        decision=json.loads(row["decision"]) if row["decision"] else None,
        decided_at=row["decided_at"],
        released_entry=f"L{int(row['released_seq']):06d}" if row["released_seq"] is not None else None,
    )


def list_reviews(workspace: Path) -> list[Review]:
    """Every review request of the workspace, oldest first (read-only; no key needed)."""
    conn = open_existing(Path(workspace))
    try:
        if not _has_reviews(conn):
            return []
        return [_checked(_review(r), workspace) for r in conn.execute("SELECT * FROM reviews ORDER BY review_id")]
    finally:
        conn.close()


def get_review(workspace: Path, review_id: str) -> Review:
    conn = open_existing(Path(workspace))
    try:
        row = conn.execute("SELECT * FROM reviews WHERE review_id = ?", (review_id,)).fetchone() if _has_reviews(
            conn) else None  # fmt: skip
    finally:
        conn.close()
    if row is None:
        raise NotReviewable(f"{Path(workspace) / LEDGER_FILE}: no review {review_id}", hint="kansrijk review list WS")
    return _checked(_review(row), workspace)


def _has_reviews(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'reviews'").fetchone() is not None


# --- 2. the officer's decision ------------------------------------------------------------------------------------
def sign_decision(
    workspace: Path,
    review_id: str,
    private_key: bytes,
    *,
    approve: bool,
    note: str,
    out: Path,
    now: dt.datetime | None = None,
) -> Decision:
    """Sign an approval (``approve``) or a rejection of pending review ``review_id`` as the privacy officer and
    write it to ``out`` (never over an existing file). The signature covers the review digest, which binds the
    request, its refusing verdicts and the numbers the officer saw."""
    out = Path(out)
    if out.exists():
        raise OutputExists(f"{out}: exists already; a decision is never overwritten", hint="choose a new --out")
    review = get_review(workspace, review_id)
    if review.status != "requested":
        raise NotReviewable(f"review {review_id} is {review.status} already: nothing to decide")
    note = " ".join(note.split())
    if not approve and len(note) < 10:
        raise NotReviewable("a rejection needs a reason (--note) the requester can read")
    unsigned = Decision(
        review_id=review.review_id,
        review_digest=review.review_digest,
        decision="approved" if approve else "rejected",
        note=note,
        decided_at=(now or dt.datetime.now(dt.UTC)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        officer_fingerprint=crypto.fingerprint(SIGNING_KIND, crypto.signing_public_key(private_key)),
    )
    signed = dataclasses.replace(unsigned, signature=crypto.sign(private_key, unsigned.signed_message()))
    atomic_write_bytes(out, (json.dumps(signed.document(), indent=2) + "\n").encode())
    return signed


def read_decision(path: Path) -> Decision:
    """Parse a decision file; ``ApprovalInvalid`` names the file and the field that is wrong."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ApprovalInvalid(f"{path}: no such decision file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise ApprovalInvalid(f"{path}: not a JSON decision file") from None
    if not isinstance(doc, dict) or doc.get("format") != DECISION_FORMAT or doc.get("version") != 1:
        raise ApprovalInvalid(f"{path}: not a {DECISION_FORMAT} version 1 file")
    fields = ("review", "review_digest", "decision", "note", "decided_at", "officer_fingerprint", "signature")
    if set(doc) != {"format", "version", *fields}:
        raise ApprovalInvalid(f"{path}: unexpected or missing fields (the file was altered)")
    if not all(isinstance(doc[f], str) for f in fields) or doc["decision"] not in ("approved", "rejected"):
        raise ApprovalInvalid(f"{path}: a field is not text, or 'decision' is not approved/rejected")
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
    except (binascii.Error, ValueError):
        raise ApprovalInvalid(f"{path}: field 'signature' is not base64") from None
    return Decision(
        review_id=doc["review"],
        review_digest=doc["review_digest"],
        decision=doc["decision"],
        note=doc["note"],
        decided_at=doc["decided_at"],
        officer_fingerprint=doc["officer_fingerprint"],
        signature=signature,
    )


def _verified(decision: Decision, path: Path, trusted: Sequence[OfficerKey]) -> crypto.PublicKeyFile:
    keys = officer_keys(trusted)
    signer = next((k for k in keys if k.fingerprint == decision.officer_fingerprint), None)
    if signer is None:
        raise ApprovalInvalid(
            f"{path}: signed by key {decision.officer_fingerprint}, which is not a trusted privacy-officer key",
            hint="pass the officer's public key with --officer-key",
        )
    if not crypto.verify_signature(signer.key, decision.signed_message(), decision.signature):
        raise ApprovalInvalid(f"{path}: the signature does not verify (the decision was altered or forged)")
    return signer


# --- 3. applying it ----------------------------------------------------------------------------------------------
def apply_decision(gate: Gate, decision_path: Path, trusted_officer_keys: Sequence[OfficerKey]) -> Applied:
    """Verify the officer's decision and carry it out: a rejection is recorded; an approval releases the output
    through ``Gate.release_reviewed`` if it is exactly what was approved. See the module docstring."""
    decision_path = Path(decision_path)
    decision = read_decision(decision_path)
    signer = _verified(decision, decision_path, trusted_officer_keys)
    conn = gate._conn
    row = conn.execute("SELECT * FROM reviews WHERE review_id = ?", (decision.review_id,)).fetchone()
    if row is None:
        raise ApprovalInvalid(f"{decision_path}: names review {decision.review_id}, which this workspace does not hold")
    review = _checked(_review(row), gate.workspace)
    if not crypto.constant_time_equal(review.review_digest.encode(), decision.review_digest.encode()):
        raise ApprovalInvalid(
            f"{decision_path}: decides on another request than review {review.review_id} of this workspace (its "
            "review digest differs): an approval is for one exact request, its refusing rules and its numbers"
        )
    if review.status != "requested":
        raise ApprovalInvalid(
            f"{decision_path}: review {review.review_id} is {review.status} already; a decision is used once",
        )
    stored = {"decision": decision.document(), "officer_public_key": base64.b64encode(signer.key).decode("ascii")}
    if decision.decision == "rejected":
        with ledger_mod.immediate(conn):
            changed = conn.execute(
                "UPDATE reviews SET status = 'rejected', decision = ?, decided_at = ? "
                "WHERE review_id = ? AND status = 'requested'",
                (canonical(stored).decode(), decision.decided_at, review.review_id),
            ).rowcount
            if changed != 1:
                raise ApprovalInvalid(f"review {review.review_id}: decided already")
        return Applied(get_review(gate.workspace, review.review_id), decision, None)

    kept = conn.execute("SELECT spec FROM refused_specs WHERE seq = ?", (_seq(review.refused_entry),)).fetchone()
    spec = parse_spec(json.loads(kept["spec"]))
    if spec.digest() != review.request_digest:
        raise ApprovalInvalid(f"review {review.review_id}: the kept request is not the one reviewed (edited)")
    now = evaluate(gate, spec, review.requested_by)
    if _refusal_json(now.refusing) != list(review.refused) or now.values_digest != review.values_digest:
        raise NotReviewable(
            f"review {review.review_id} ({spec.name}): the output is no longer what the officer approved (the data, "
            "the policy or the refusing rules changed since the request); nothing was released",
            hint="request a new review of the refused entry",
        )
    lifted = {v.rule for v in now.refusing}
    note = f" ({decision.note})" if decision.note else ""
    kept_verdicts = [
        RuleOutcome(
            v.rule, "pass", f"lifted on officer review {review.review_id}; refused because: {v.reason}", v.cells
        )
        if v.verdict == "refuse" and v.rule in lifted
        else v
        for v in now.verdicts
    ]
    approval = RuleOutcome(
        OFFICER_REVIEW,
        "pass",
        f"review {review.review_id} approved by privacy officer {decision.officer_fingerprint} on "
        f"{decision.decided_at}{note}; lifted {', '.join(sorted(lifted))}; decision {decision.digest}; "
        f"requested by {review.requested_by}: {review.justification}",
    )
    verdicts = (*kept_verdicts, approval)
    approved = ApprovedRelease(
        review.review_id, spec, review.requested_by, verdicts, now.values, now.record, now.audit_records
    )

    def record_decision() -> None:
        with ledger_mod.immediate(conn):
            conn.execute(
                "UPDATE reviews SET decision = ?, decided_at = ? WHERE review_id = ?",
                (canonical(stored).decode(), decision.decided_at, review.review_id),
            )

    try:
        result = gate.release_reviewed(approved)
    except RequestInvalid as exc:
        raise NotReviewable(exc.message) from None
    record_decision()
    if result.outcome == "refused":  # name or differencing against the history refused it at release
        with ledger_mod.immediate(conn):
            conn.execute(
                "UPDATE reviews SET status = 'refused_at_release' WHERE review_id = ? AND status = 'requested'",
                (review.review_id,),
            )
    return Applied(get_review(gate.workspace, review.review_id), decision, result)


# --- verification ------------------------------------------------------------------------------------------------
def verify_reviews(workspace: Path) -> int:
    """Every decided review's stored decision verifies against the officer key stored with it and names its
    request, and every released review is a released ledger entry carrying its ``officer_review`` verdict.
    Returns the number of reviews checked; ``LedgerCorrupted`` names the first that does not hold."""
    workspace = Path(workspace)
    where = workspace / LEDGER_FILE
    conn = open_existing(workspace)
    try:
        if not _has_reviews(conn):
            return 0
        reviews = [dict(r) for r in conn.execute("SELECT * FROM reviews ORDER BY review_id")]
        released = {int(r["seq"]): dict(r) for r in conn.execute(
            "SELECT seq, outcome, release_name, verdicts FROM ledger WHERE seq IN "
            "(SELECT released_seq FROM reviews WHERE released_seq IS NOT NULL)")}  # fmt: skip
    finally:
        conn.close()
    for r in reviews:
        rid = r["review_id"]
        if r["status"] in ("released", "rejected", "refused_at_release"):
            if not r["decision"]:
                raise ledger_mod.LedgerCorrupted(f"{where}: review {rid} is {r['status']} without a decision")
            try:
                stored = json.loads(r["decision"])
                doc = stored["decision"]
                key = base64.b64decode(stored["officer_public_key"], validate=True)
                decision = Decision(doc["review"], doc["review_digest"], doc["decision"], doc["note"],
                                    doc["decided_at"], doc["officer_fingerprint"],
                                    base64.b64decode(doc["signature"], validate=True))  # fmt: skip
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise ledger_mod.LedgerCorrupted(f"{where}: the decision of review {rid} is unreadable") from None
            if (
                crypto.fingerprint(SIGNING_KIND, key) != decision.officer_fingerprint
                or not crypto.verify_signature(key, decision.signed_message(), decision.signature)
                or decision.review_id != rid
                or decision.review_digest != r["review_digest"]
            ):
                raise ledger_mod.LedgerCorrupted(f"{where}: the officer's decision on review {rid} does not verify")
            if (decision.decision == "approved") != (r["status"] != "rejected"):
                raise ledger_mod.LedgerCorrupted(f"{where}: review {rid}'s status does not match its decision")
        if r["status"] == "released":
            entry = released.get(int(r["released_seq"] or 0))
            if (
                entry is None
                or entry["outcome"] not in ("released", "suppressed")
                or entry["release_name"] != r["release_name"]
            ):
                raise ledger_mod.LedgerCorrupted(f"{where}: review {rid} names a release entry that is not its release")
            verdicts = json.loads(entry["verdicts"])
            if not any(v.get("rule") == OFFICER_REVIEW and f"review {rid} " in v.get("reason", "") for v in verdicts):
                raise ledger_mod.LedgerCorrupted(f"{where}: the release of review {rid} does not record the approval")
    return len(reviews)


__all__ = [
    "OFFICER_REVIEW",
    "REVIEWABLE_RULES",
    "Applied",
    "ApprovedRelease",
    "Decision",
    "Evaluation",
    "Review",
    "apply_decision",
    "evaluate",
    "get_review",
    "list_reviews",
    "read_decision",
    "request_review",
    "sign_decision",
    "verify_reviews",
]
