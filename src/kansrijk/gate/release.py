"""The release gate: ``Gate.open(...)`` once, then ``gate.release(request, requested_by=...)`` per output.

The gate is the only code that writes to ``WS/released/``. For every request it:

1. checks ``requested_by`` against the policy's allow-list;
2. runs every output-checking rule the policy asks for on the true data (``kansrijk.gate.sdc``); a refusal
   stops here, before any budget is touched;
3. in one ``BEGIN IMMEDIATE`` transaction on ``WS/ledger.sqlite``: checks the release name is new, checks
   differencing against earlier releases over shared variables, checks and debits the DP budget (exact
   fractions) *before* calling OpenDP, computes the noisy values, writes the output to a pending temp file,
   appends the hash-chained ledger entry, commits;
4. renames the pending file into place and publishes the new ledger head.

A crash before the commit leaves no spent budget and no entry (the pending file is removed on the next open);
a crash after it leaves an entry whose pending file is renamed into place on the next open. So ``released/``,
the budget and the ledger always agree, which ``kansrijk ledger verify`` checks.

Every refusal is recorded in the ledger too (with epsilon 0 and no file), so the audit trail shows what was
asked and why it was refused.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from kansrijk.errors import PolicyError, WorkspaceError
from kansrijk.fsutil import sweep_stale_temp_files
from kansrijk.gate import budget as budget_mod
from kansrijk.gate import dp as dp_mod
from kansrijk.gate import dp_models as dpm
from kansrijk.gate import history as history_mod
from kansrijk.gate import ledger as ledger_mod
from kansrijk.gate.audit import AuditRecord
from kansrijk.gate.compute import Materialised, materialise
from kansrijk.gate.data import GateData
from kansrijk.gate.document import RELEASE_FORMAT, RELEASE_VERSION, ReleaseDocument
from kansrijk.gate.keys import GateSigner, load_gate_signer
from kansrijk.gate.ledger import (
    LEDGER_FILE,
    PENDING_PREFIX,
    RELEASED_DIR,
    sha256_prefixed,
)
from kansrijk.gate.requests import (
    CountTable,
    DpModelRequest,
    Histogram,
    MeanTable,
    ModelMetrics,
    QuantileRequest,
    ReleaseRequest,
    RequestInvalid,
    SumTable,
    TreeStructure,
)
from kansrijk.gate.sdc import (
    BIN,
    RuleOutcome,
    TableCheck,
    check_model_output,
    check_table,
    grid_cells,
    marginalise,
    worst,
)
from kansrijk.gate.specs import ReleaseSpec, revalidated
from kansrijk.policy.release import DpBudget, ReleasePolicy
from kansrijk.policy.signing import OfficerKey, load_signed_policy

TABULAR = (CountTable, Histogram, MeanTable, QuantileRequest)


def _fault_point(name: str) -> None:
    """No-op in production. Crash-consistency tests replace it in a child process to stop at ``name``."""


# --- outcomes --------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class _Outcome:
    name: str
    kind: str
    verdicts: tuple[RuleOutcome, ...]
    entry_id: str
    epsilon: Fraction = Fraction(0)

    @property
    def reasons(self) -> tuple[str, ...]:
        return tuple(f"{v.rule}: {v.reason}" for v in self.verdicts if v.verdict != "pass")


@dataclass(frozen=True, eq=False)
class Released(_Outcome):
    """Everything requested was released. ``document`` is the JSON written to ``released/NAME.json``."""

    path: Path = field(default=Path())
    document: Mapping[str, Any] = field(default_factory=dict)
    outcome: Literal["released", "suppressed"] = "released"


@dataclass(frozen=True, eq=False)
class Suppressed(Released):
    """Released with some cells (or a tree's class counts) withheld; ``verdicts`` say which and why."""

    outcome: Literal["released", "suppressed"] = "suppressed"


@dataclass(frozen=True, eq=False)
class Refused(_Outcome):
    """Nothing was released and no budget was spent; ``reasons`` say which rules refused."""

    outcome: Literal["refused"] = "refused"


ReleaseResult = Released | Suppressed | Refused


# --- differencing records ----------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Population:
    """The rows a release describes, in two views that differencing checks both:

    - ``ids``, one sorted 64-bit id per person-year: the first 8 bytes of the person key mixed (XOR) with a
      constant of the reference year. A person pooled over two years is two elements, so a pooled table and a
      table of one of its years differ by the other year's rows and their counts are compared (persons alone
      would take them for one population and leave the other year's table open to subtraction);
    - ``persons``, one sorted id per person (years dropped): two releases of different years about nearly the
      same persons (everyone in 2022, everyone but 5 in 2024) differ by those 5 persons, whose stable attributes
      (sex, birth year) the difference of counts would give away.

    Stored as one blob: the number of person-year ids, the person-year ids, the person ids (big-endian u64)."""

    digest: str
    ids: np.ndarray
    persons: np.ndarray

    @classmethod
    def of(cls, rows: pl.DataFrame | pl.Series, release_name: str) -> Population:
        """From the rows' ``pseudonym`` and ``year`` columns (or a series of person ids, years unknown)."""
        persons = rows.get_column("pseudonym") if isinstance(rows, pl.DataFrame) else rows
        ids: pl.Series | None = None
        if persons.dtype == pl.Binary:
            ids = persons.bin.head(8).bin.reinterpret(dtype=pl.UInt64, endianness="big")
        elif persons.dtype.is_integer() and (persons.len() == 0 or persons.min() >= 0):  # type: ignore[operator]
            ids = persons.cast(pl.UInt64)
        if ids is None or ids.null_count():
            raise RequestInvalid(
                f"release {release_name!r}: persons must be the pseudonym column (binary keys of at least 8 bytes, "
                f"no missing values) or non-negative integer ids"
            )
        values = ids.to_numpy().astype(np.uint64)
        persons_only = np.unique(values)
        if isinstance(rows, pl.DataFrame) and "year" in rows.columns:
            years = rows.get_column("year").to_numpy()
            for year in np.unique(years):
                values[years == year] ^= history_mod.year_constant(int(year))
        unique = np.unique(values)
        blob = np.concatenate([np.array([unique.size], dtype=np.uint64), unique, persons_only]).astype(">u8")
        return cls(ledger_mod.population_digest(blob.tobytes()), unique, persons_only)

    def blob(self) -> bytes:
        """What the ledger stores (its digest is ``digest``)."""
        head = np.array([self.ids.size], dtype=np.uint64)
        return np.concatenate([head, self.ids, self.persons]).astype(">u8").tobytes()

    @classmethod
    def from_blob(cls, digest: str, blob: bytes) -> Population:
        values = np.frombuffer(blob, dtype=">u8").astype(np.uint64)
        n = int(values[0]) if values.size else 0
        return cls(digest, values[1 : 1 + n], values[1 + n :])


@dataclass(frozen=True, eq=False)
class DifferenceRecord:
    """What differencing compares: the true person counts per cell (``cells``, JSON) over ``dims`` (JSON), the
    population label and, when the request named its persons, the population itself."""

    dims: str
    population: str
    cells: str
    persons: Population | None = None
    # a tree: the record of every other node (its class counts over its own persons), by node id
    nodes: tuple[tuple[int, DifferenceRecord], ...] = ()

    @property
    def population_digest(self) -> str | None:
        return None if self.persons is None else self.persons.digest

    def digest(self) -> str:
        root = ledger_mod.record_digest(self.dims, self.population, self.cells, self.population_digest)
        if not self.nodes:
            return root
        return ledger_mod.record_digest_with_nodes(root, [(node, rec.digest()) for node, rec in self.nodes])


# --- the gate --------------------------------------------------------------------------------------------
class Gate:
    """The release gate of one workspace under one signed release policy."""

    def __init__(
        self,
        workspace: Path,
        policy: ReleasePolicy,
        policy_digest: str,
        conn: sqlite3.Connection,
        signer: GateSigner,
        budget_key: str,
    ):
        self.workspace = workspace
        self.policy = policy
        # the budget belongs to the persons the workspace answers about, not to the policy's dataset label
        self.budget_key = budget_key
        self.policy_digest = policy_digest
        self.released_dir = workspace / RELEASED_DIR
        self._conn = conn
        self.data = GateData(workspace)
        self._signer = signer  # signs every ledger entry
        # populations are immutable once stored (keyed by digest): cache them and the sizes of their differences
        self._populations: dict[str, Population] = {}
        self._set_differences: dict[tuple[str, str], tuple[int, int]] = {}
        # the release-history audit's records, as stored (immutable once committed), loaded as the ledger grows
        self._audit_records: list[AuditRecord] = []
        self._audit_loaded = 0

    @classmethod
    def open(
        cls,
        workspace: Path,
        policy_path: Path,
        trusted_officer_keys: Sequence[OfficerKey],
        *,
        passphrase: str | None = None,
    ) -> Gate:
        """Verify the policy's signature (``PolicyNotSigned`` otherwise), load the gate's signing key (with
        ``passphrase``, else from ``$KANSRIJK_PASSPHRASE``; ``KeyMaterialError`` if it is missing), open or create
        the ledger, and recover any release interrupted by a crash."""
        workspace = Path(workspace)
        if not workspace.is_dir():
            raise WorkspaceError(f"{workspace}: workspace directory not found", hint="create the workspace first")
        policy, digest = load_signed_policy(Path(policy_path), trusted_officer_keys)
        if not isinstance(policy, ReleasePolicy):
            raise PolicyError(f'{policy_path}: kind: the gate needs a release policy (kind = "release")')
        signer = load_gate_signer(workspace, passphrase)
        budget_key = budget_mod.budget_key(workspace)  # before anything is written: no identity, no gate
        (workspace / RELEASED_DIR).mkdir(exist_ok=True)
        conn = ledger_mod.connect(workspace / LEDGER_FILE)
        ledger_mod.initialise(conn, gate_key=signer.fingerprint)
        try:
            budget_mod.check_budget_owner(conn, budget_key)
        except WorkspaceError:
            conn.close()
            raise
        gate = cls(workspace, policy, digest, conn, signer, budget_key)
        gate.recover()
        return gate

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- crash recovery --------------------------------------------------------------------------------
    def recover(self) -> list[str]:
        """Finish or discard interrupted releases. Returns what was done (one line per file)."""
        done: list[str] = []
        # Under the write lock: a release in flight holds it from writing its pending file until its commit,
        # so every pending file seen here is either committed (finish it) or from a crashed process (discard).
        with ledger_mod.immediate(self._conn):
            expected: dict[int, dict[str, str]] = {
                int(r["seq"]): json.loads(r["outputs"]) for r in self._conn.execute("SELECT seq, outputs FROM ledger")
            }
            head = ledger_mod.head(self._conn)
            for pending in sorted(self.released_dir.glob(PENDING_PREFIX + "*")):
                parts = pending.name[len(PENDING_PREFIX) :].split(".", 1)
                seq = int(parts[0]) if parts[0].isdigit() else -1
                final = parts[1] if len(parts) == 2 else ""
                try:
                    digest = sha256_prefixed(pending.read_bytes())
                except FileNotFoundError:  # its own process renamed it meanwhile
                    continue
                if final and expected.get(seq, {}).get(final) == digest:
                    _replace(pending, self.released_dir / final)
                    done.append(f"completed {final} (entry L{seq:06d})")
                else:
                    pending.unlink(missing_ok=True)
                    done.append(f"discarded {pending.name} (its release was never committed)")
        # a head file's temp copy left by a process killed while mirroring the head (never a release output)
        done += [f"removed {p.name} (left by a stopped process)" for p in sweep_stale_temp_files(self.released_dir)]
        ledger_mod.write_head_file(self.released_dir, *head)
        return done

    # -- queries -----------------------------------------------------------------------------------------
    def budget(self) -> budget_mod.BudgetState | None:
        if self.policy.dp is None:
            return None
        return budget_mod.state(self._conn, self.budget_key, self.policy.dp)

    # -- the release ---------------------------------------------------------------------------------------
    def release(self, spec: ReleaseSpec, *, requested_by: str) -> ReleaseResult:
        """Compute ``spec`` from the gate's own data, check it under the policy and release it, suppress parts of
        it, or refuse it.

        Only specs are taken (``kansrijk.gate.specs``): a request never carries rows, persons or counts. A
        malformed spec raises ``RequestInvalid`` and changes nothing; every other outcome (refusals included) is
        a committed ledger entry when this returns.
        """
        if not isinstance(spec, ReleaseSpec):
            raise RequestInvalid(
                f"the gate takes release specs only, not {type(spec).__name__}: a request never carries data, "
                f"persons or counts (kansrijk.gate.specs)"
            )
        spec = revalidated(spec)  # copies made with model_copy/model_construct skip the spec's checks
        result = self._release(spec, requested_by)
        ledger_mod.write_head_file(self.released_dir, *ledger_mod.head(self._conn))
        return result

    def _release(self, spec: ReleaseSpec, requested_by: str) -> ReleaseResult:
        rule = self.policy.rule_for(spec.kind)
        method = rule.method
        verdicts: list[RuleOutcome] = []
        if requested_by not in self.policy.requesters.allowed:
            verdicts.append(
                RuleOutcome(
                    "requested_by",
                    "refuse",
                    f"{requested_by!r} is not in the policy's requesters.allowed list",
                )
            )
            return self._refuse(spec, requested_by, verdicts)
        verdicts.append(RuleOutcome("requested_by", "pass", f"{requested_by!r} may request releases"))
        computed = materialise(spec, self.data, self.policy)
        request = computed.request
        verdicts.extend(computed.verdicts)
        if worst(computed.verdicts) == "refuse":
            return self._refuse(spec, requested_by, verdicts)
        if isinstance(request, DpModelRequest):
            return self._release_dp_model(request, spec, requested_by, verdicts)

        check: TableCheck | None = None
        checked = request
        if method != "sdc":
            try:
                keys = self._dp_preflight(request)
            except dp_mod.DpNotPossible as exc:
                verdicts.append(RuleOutcome("dp_inputs", "refuse", str(exc)))
                return self._refuse(spec, requested_by, verdicts)
            if keys:  # SDC checks the same cells DP answers, empty ones included
                checked = dataclasses.replace(request, keys=keys)  # type: ignore[type-var]
        if method in ("sdc", "dp+sdc"):
            extra = check_model_output(checked, self.policy.sdc)
            verdicts.extend(extra)
            if worst(extra) != "refuse" and isinstance(checked, TABULAR):
                check = check_table(checked, self.policy.sdc)
                verdicts.extend(check.outcomes)
            if worst(verdicts) == "refuse":
                return self._refuse(spec, requested_by, verdicts)

        # the population differencing compares: the persons the gate itself selected (outside the write lock:
        # sorting them takes a moment)
        persons = Population.of(computed.persons, spec.name) if method == "sdc" else None
        nodes = _tree_node_records(request, computed, spec.name) if method == "sdc" else ()
        record = None
        audited: Callable[[], tuple[RuleOutcome, list[AuditRecord]]] | None = None
        state = {"check": check}
        if method == "sdc":
            record = _difference_record(request, check) if check is not None else _count_record(request)
            record = dataclasses.replace(record, persons=persons, nodes=nodes) if record is not None else None
            new = history_mod.records_for(request, computed, check, verdicts, self.policy.sdc)

            def audit_new() -> tuple[RuleOutcome, list[AuditRecord]]:
                """Inside the write lock: the new numbers against every exact number released before."""
                earlier = self._audit_history()
                table = state["check"]
                if table is None or not new or (table.dims == () and table.cells.height == 1):
                    result = history_mod.run(earlier, new, self.policy.sdc)
                    return history_mod.outcome(result), new
                result, state["check"], withheld = history_mod.suppress_against_history(
                    earlier, new, table, self.policy.sdc
                )
                kept = {int(i) for i in np.flatnonzero(~state["check"].cells.get_column("suppressed").to_numpy())}
                final = [r.with_cells(c for c in r.cells if c.codes[0] in kept) for r in new]
                return history_mod.outcome(result, withheld), final

            audited = audit_new if new else None

        def produce() -> tuple[Any, Any]:
            if method == "sdc":
                return _sdc_values(request, state["check"], verdicts, computed.withheld), None
            assert self.policy.dp is not None
            dp_result = dp_mod.measure(
                request,
                rule.epsilon or Fraction(0),
                max_persons=self.policy.dp.max_persons,
                rounding=rule.rounding,
                contributions=computed.contributions,
            )
            return _dp_values(request, dp_result, check), dp_result.noise

        return self._commit(
            spec,
            requested_by,
            verdicts,
            method=method,
            epsilon=rule.epsilon if method != "sdc" and rule.epsilon is not None else Fraction(0),
            budget=self.policy.dp,
            record=record,
            produce=produce,
            debited="epsilon {epsilon} debited before measuring",
            audited=audited,
        )

    # -- the one commit path of every release -----------------------------------------------------------------
    def _commit(
        self,
        spec: ReleaseSpec,
        requested_by: str,
        verdicts: list[RuleOutcome],
        *,
        method: str,
        epsilon: Fraction,
        budget: DpBudget | None,
        record: DifferenceRecord | None,
        produce: Callable[[], tuple[Any, Any]],
        debited: str,
        audited: Callable[[], tuple[RuleOutcome, list[AuditRecord]]] | None = None,
    ) -> ReleaseResult:
        """In one ``BEGIN IMMEDIATE`` transaction: the name is new, differencing against every earlier record,
        the budget checked and debited *before* ``produce`` computes the released values (OpenDP runs there),
        the files written under pending names and the signed ledger entry appended; then commit and rename.

        A refusal at any step is a ledger entry with nothing spent. A crash before the commit leaves no spent
        budget and no entry; after it, ``recover`` finishes the rename."""
        with ledger_mod.immediate(self._conn):
            if spec.name in ledger_mod.released_names(self._conn):
                verdicts.append(RuleOutcome("unique_name", "refuse", f"a release named {spec.name!r} exists already"))
                return self._record_refusal(spec, requested_by, verdicts)
            if record is not None:
                conflict = self._differencing(record)
                verdicts.append(conflict)
                if conflict.verdict == "refuse":
                    return self._record_refusal(spec, requested_by, verdicts)
            audit_records: list[AuditRecord] = []
            if audited is not None:
                verdict, audit_records = audited()
                verdicts.append(verdict)
                if verdict.verdict == "refuse":
                    return self._record_refusal(spec, requested_by, verdicts)
            if epsilon > 0:
                assert budget is not None
                why = budget_mod.refusal_reason(self._conn, self.budget_key, budget, epsilon)
                if why is not None:
                    verdicts.append(RuleOutcome("dp_budget", "refuse", why))
                    return self._record_refusal(spec, requested_by, verdicts)
                budget_mod.spend(self._conn, self.budget_key, epsilon)
                verdicts.append(RuleOutcome("dp_budget", "pass", debited.format(epsilon=epsilon)))
            values, noise = produce()
            outcome: Literal["released", "suppressed"] = "suppressed" if worst(verdicts) == "suppress" else "released"
            entry, pending, document = self._record_release(
                spec,
                requested_by,
                outcome=outcome,
                method=method,
                epsilon=epsilon,
                noise=noise,
                values=values,
                verdicts=verdicts,
                record=record,
                audit_records=audit_records,
            )
            _fault_point("before_commit")
        _fault_point("after_commit")
        for tmp, final in pending:
            _replace(tmp, final)
        cls = Suppressed if outcome == "suppressed" else Released
        return cls(
            name=spec.name,
            kind=spec.kind,
            verdicts=tuple(verdicts),
            entry_id=entry.entry_id,
            epsilon=epsilon,
            path=self.released_dir / f"{spec.name}.json",
            document=document,
        )

    # -- officer review: the one way a refused output is released (kansrijk.gate.review) ------------------------
    def release_reviewed(self, approved: Any) -> ReleaseResult:
        """Release an output the gate refused, on a privacy officer's approval that ``kansrijk.gate.review`` has
        verified (signature of a trusted officer, this exact request and its refusing rules, not used before, the
        numbers unchanged) and recomputed from the gate's own data (``approved``: a ``review.ApprovedRelease``).

        It goes through the one commit path like every release, as an output-checked release: it never spends
        or touches the DP budget (epsilon 0, no budget), and the name and differencing against the whole release
        history are checked again there. ``approved.mark_released`` runs inside the commit's transaction."""
        if self.policy.rule_for(approved.spec.kind).method != "sdc" or approved.spec.kind == "dp_model":
            raise RequestInvalid(f"release {approved.spec.name!r}: an officer's review never releases a DP output")

        def produce() -> tuple[Any, Any]:
            approved.mark_released(self._conn, ledger_mod.next_seq(self._conn))
            return approved.values, None

        def audited() -> tuple[RuleOutcome, list[AuditRecord]]:
            """The release-history audit is never lifted: the approved numbers are refused if, with every earlier
            exact release, they pin a small group (no cells can be withheld from values the officer approved)."""
            records = list(approved.audit_records)
            return history_mod.outcome(history_mod.run(self._audit_history(), records, self.policy.sdc)), records

        result = self._commit(approved.spec, approved.requested_by, list(approved.verdicts), method="sdc",
                              epsilon=Fraction(0), budget=None, record=approved.record, produce=produce,
                              debited="", audited=audited if approved.audit_records else None)  # fmt: skip
        ledger_mod.write_head_file(self.released_dir, *ledger_mod.head(self._conn))
        return result

    # -- differentially private models ------------------------------------------------------------------
    def _release_dp_model(
        self, request: DpModelRequest, spec: ReleaseSpec, requested_by: str, verdicts: list[RuleOutcome]
    ) -> ReleaseResult:
        """Check the request against ``[dp_model]``, debit its epsilon, then train, evaluate and release.

        Every refusal happens before the budget is touched; the debit, the OpenDP training, the release file
        and the ledger entry are one transaction (as for DP tables).
        """
        rules, budget = self.policy.dp_model, self.policy.dp
        if rules is None or budget is None:
            verdicts.append(
                RuleOutcome(
                    "dp_model_policy",
                    "refuse",
                    "the release policy has no [dp_model] section: it allows no differentially private models",
                )
            )
            return self._refuse(spec, requested_by, verdicts)
        problems = []
        if request.model not in rules.models:
            problems.append(f"model {request.model!r} is not in dp_model.models {list(rules.models)}")
        if request.max_depth > rules.max_depth:
            problems.append(f"max_depth {request.max_depth} exceeds dp_model.max_depth {rules.max_depth}")
        if request.trees > rules.max_trees:
            problems.append(f"trees {request.trees} exceeds dp_model.max_trees {rules.max_trees}")
        if request.epsilon > rules.max_epsilon:
            problems.append(f"epsilon {request.epsilon} exceeds dp_model.max_epsilon {rules.max_epsilon}")
        if problems:
            verdicts.append(RuleOutcome("dp_model_policy", "refuse", "; ".join(problems)))
            return self._refuse(spec, requested_by, verdicts)
        verdicts.append(RuleOutcome("dp_model_policy", "pass", "model, depth, trees and epsilon within [dp_model]"))
        data = request.data.filter(pl.col(request.outcome).is_not_null())
        try:
            bins = dpm.plan_bins(
                data, request.features, policy_edges=rules.bin_edges, request_edges=request.bin_edges, keys=request.keys
            )
        except dpm.DpModelNotPossible as exc:
            verdicts.append(RuleOutcome("dp_inputs", "refuse", str(exc)))
            return self._refuse(spec, requested_by, verdicts)
        verdicts.append(RuleOutcome("dp_inputs", "pass", "every feature has public bins"))
        settings = dpm.Settings(
            model=request.model,
            epsilon=request.epsilon,
            max_depth=request.max_depth,
            trees=request.trees,
            folds=request.folds,
            learning_rate=request.learning_rate,
            eval_share=rules.eval_share,
            leaf_share=rules.leaf_share,
            max_persons=budget.max_persons,
        )
        epsilon = request.epsilon

        def produce() -> tuple[Any, Any]:
            result = dpm.train_and_evaluate(
                data,
                outcome=request.outcome,
                bins=bins,
                settings=settings,
                seed=request.seed,
                person=request.person,
            )
            spent = sum((st.epsilon for st in result.steps), Fraction(0))
            if spent != epsilon:  # never release a model whose steps do not add up to the debit
                raise RuntimeError(f"DP model steps spend {spent}, the ledger debited {epsilon}")
            return result.values, {"guarantee": dpm.GUARANTEE, "steps": [st.to_json() for st in result.steps]}

        return self._commit(
            spec,
            requested_by,
            verdicts,
            method="dp",
            epsilon=epsilon,
            budget=budget.model_copy(update={"epsilon_per_release_max": rules.max_epsilon}),
            record=None,
            produce=produce,
            debited="epsilon {epsilon} debited before training",
        )

    # -- helpers -----------------------------------------------------------------------------------------
    def _dp_preflight(self, request: ReleaseRequest) -> dict[str, tuple[Any, ...]]:
        """Raise ``DpNotPossible`` unless DP has the public keys and bounds it needs; return the keys."""
        if not isinstance(request, TABULAR):
            raise dp_mod.DpNotPossible(f"{request.kind} cannot be answered with DP by the gate")
        by: tuple[str, ...] = tuple(getattr(request, "by", ()))
        keys = dp_mod.public_keys(request, by)
        if isinstance(request, MeanTable | QuantileRequest):
            dp_mod.public_bounds(request)
        return {c: tuple(keys.get_column(c).unique(maintain_order=True).to_list()) for c in by}

    def _write_pending(self, seq: int, files: Mapping[str, bytes]) -> list[tuple[Path, Path]]:
        out = []
        for name, data in files.items():
            tmp = self.released_dir / f"{PENDING_PREFIX}{seq}.{name}"
            with open(tmp, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            out.append((tmp, self.released_dir / name))
        return out

    def _audit_history(self) -> list[AuditRecord]:
        """Every stored audit record (in ledger order), loading only those added since the last call."""
        for seq, blob in self._conn.execute(
            "SELECT seq, record FROM audit_records WHERE seq > ? ORDER BY seq, part", (self._audit_loaded,)
        ):
            self._audit_records.append(AuditRecord.from_blob(bytes(blob), seq))
            self._audit_loaded = max(self._audit_loaded, seq)
        return self._audit_records

    def _population(self, digest: str) -> Population:
        if digest not in self._populations:
            row = self._conn.execute("SELECT ids FROM populations WHERE digest = ?", (digest,)).fetchone()
            if row is None:
                raise ledger_mod.LedgerCorrupted(f"{LEDGER_FILE}: population {digest[:19]}... of a record is missing")
            self._populations[digest] = Population.from_blob(digest, bytes(row[0]))
        return self._populations[digest]

    def _set_difference(self, new: Population, old_digest: str) -> tuple[int, int, str]:
        """(|new \\ old|, |old \\ new|, view) in the first view that isolates fewer than ``t``: persons, then
        person-years (``Population``); the persons view when neither does (not a conflict then)."""
        key = (new.digest, old_digest)
        if key not in self._set_differences:
            self._populations.setdefault(new.digest, new)
            old = self._population(old_digest)
            t = self.policy.sdc.min_persons_per_cell
            views = []
            for view, a, b in (("persons", new.persons, old.persons), ("person-years", new.ids, old.ids)):
                views.append((
                    int(np.setdiff1d(a, b, assume_unique=True).size),
                    int(np.setdiff1d(b, a, assume_unique=True).size),
                    view,
                ))  # fmt: skip
            unsafe = [v for v in views if not (v[0] == v[1] == 0 or (v[0] >= t and v[1] >= t))]
            self._set_differences[key] = unsafe[0] if unsafe else views[0]
        return self._set_differences[key]

    def _differencing(self, record: DifferenceRecord) -> RuleOutcome:
        """Refuse when comparing this release with an earlier one would isolate fewer than ``t`` persons.

        Every record is compared with every earlier one (a tree's every node too: each is a population whose
        class counts are released, so two trees splitting at age 22 and 23 isolate the persons aged 23). The
        counts are compared over the shared variables and the totals; where they differ by 1 to t-1 and both
        records name their persons, identical populations isolate nobody and populations that each hold at least
        ``t`` persons the other lacks mix at least ``t`` persons into every difference (not a conflict); where
        either does not, the count difference is a conflict (the conservative rule)."""
        t = self.policy.sdc.min_persons_per_cell
        # populations recorded before they were person-years (sets of persons) cannot be compared with these:
        # their counts are always compared, as for a record without a population
        since = ledger_mod.person_year_populations_from(self._conn)
        rows = [
            (row, json.loads(row["dims"]), {tuple(k): n for k, n in json.loads(row["cells"])})
            for row in self._conn.execute(
                "SELECT seq, NULL AS node, dims, cells, population_digest FROM table_records UNION ALL "
                "SELECT seq, node, dims, cells, population_digest FROM node_records ORDER BY seq, node"
            )
        ]
        conflicts: list[str] = []
        for label, rec in [("", record), *((f"node {node}: ", rec) for node, rec in record.nodes)]:
            dims = json.loads(rec.dims)
            cells = {tuple(k): n for k, n in json.loads(rec.cells)}
            for row, old_dims, old in rows:
                where = _count_conflict(dims, cells, old_dims, old, t)
                if where is None:
                    continue
                note = ""
                if rec.persons is not None and row["population_digest"] is not None and row["seq"] >= since:
                    only_new, only_old, view = self._set_difference(rec.persons, row["population_digest"])
                    if only_new == only_old == 0 or (only_new >= t and only_old >= t):
                        continue
                    sides = [n for n in (only_new, only_old) if n]
                    unit = "persons" if view == "persons" else "person-years"
                    note = (
                        f"; population differs by {sides[0]} {unit}"
                        if len(sides) == 1
                        else f"; populations differ by {only_new} {unit} one way and {only_old} the other"
                    )
                earlier = f"entry L{row['seq']:06d}" + (f" node {row['node']}" if row["node"] is not None else "")
                conflicts.append(f"{label}{earlier} ({where} differs by fewer than {t}{note})")
                if len(conflicts) >= 5:
                    break
            if len(conflicts) >= 5:
                break
        if conflicts:
            return RuleOutcome(
                "differencing",
                "refuse",
                f"comparing with earlier release(s) over the same variables would isolate fewer than {t} persons: "
                + "; ".join(conflicts[:5]),
            )
        return RuleOutcome("differencing", "pass", "no earlier release isolates a small group by differencing")

    def _record_release(
        self,
        spec: ReleaseSpec,
        requested_by: str,
        *,
        outcome: Literal["released", "suppressed"],
        method: str,
        epsilon: Fraction,
        noise: Any,
        values: Any,
        verdicts: list[RuleOutcome],
        record: DifferenceRecord | None = None,
        audit_records: Sequence[AuditRecord] = (),
    ) -> tuple[ledger_mod.LedgerEntry, list[tuple[Path, Path]], dict[str, Any]]:
        """Inside the open write transaction: write the release files under pending names and append the
        ledger entry (and the differencing record). The caller commits, then renames the pending files."""
        seq = ledger_mod.next_seq(self._conn)
        document = {
            "format": RELEASE_FORMAT,
            "version": RELEASE_VERSION,
            "name": spec.name,
            "kind": spec.kind,
            "description": spec.description,
            "population": spec.population_label(),
            "outcome": outcome,
            "method": method,
            "requested_by": requested_by,
            "ledger_entry": f"L{seq:06d}",
            "policy_digest": self.policy_digest,
            "request_digest": spec.digest(),
            "spec": spec.parameters(),
            "epsilon_spent": str(epsilon),
            "noisy": noise is not None,
            "noise": noise,
            "values": values,
            "verdicts": [v.to_json() for v in verdicts],
        }
        document = _finite(document)
        ReleaseDocument.model_validate(document)  # the one schema the report reads back; never write another
        files = {f"{spec.name}.json": (json.dumps(document, indent=2) + "\n").encode()}
        audit_blobs = [r.blob() for r in audit_records]
        if audit_blobs and record is None:
            raise RuntimeError(f"release {spec.name!r}: audit records without a differencing record")
        if isinstance(values, dict) and "rows" in values:
            files[f"{spec.name}.csv"] = _csv(values)
        pending = self._write_pending(seq, files)
        _fault_point("after_pending_write")
        entry = ledger_mod.append_entry(
            self._conn,
            signer=self._signer,
            requested_by=requested_by,
            release_name=spec.name,
            kind=spec.kind,
            outcome=outcome,
            request_digest=document["request_digest"],
            policy_digest=self.policy_digest,
            dataset=self.budget_key,
            epsilon=epsilon,
            delta=Fraction(0),
            verdicts=[v.to_json() for v in verdicts],
            outputs={name: sha256_prefixed(data) for name, data in files.items()},
            record_digest=_entry_record_digest(record, audit_blobs),
            seq=seq,
        )
        for part, blob in enumerate(audit_blobs):
            self._conn.execute("INSERT INTO audit_records(seq, part, record) VALUES (?, ?, ?)", (entry.seq, part, blob))
        if record is not None:
            if record.persons is not None:
                blob = record.persons.blob()
                self._conn.execute(
                    "INSERT OR IGNORE INTO populations(digest, ids, size) VALUES (?, ?, ?)",
                    (record.persons.digest, blob, len(blob) // 8),
                )
            self._conn.execute(
                "INSERT INTO table_records(seq, dims, population, cells, population_digest) VALUES (?, ?, ?, ?, ?)",
                (entry.seq, record.dims, record.population, record.cells, record.population_digest),
            )
            for node, part in record.nodes:
                if part.persons is not None:
                    blob = part.persons.blob()
                    self._conn.execute(
                        "INSERT OR IGNORE INTO populations(digest, ids, size) VALUES (?, ?, ?)",
                        (part.persons.digest, blob, len(blob) // 8),
                    )
                self._conn.execute(
                    "INSERT INTO node_records(seq, node, dims, population, cells, population_digest) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (entry.seq, node, part.dims, part.population, part.cells, part.population_digest),
                )
        return entry, pending, document

    def _refuse(self, spec: ReleaseSpec, requested_by: str, verdicts: list[RuleOutcome]) -> Refused:
        with ledger_mod.immediate(self._conn):
            refused = self._record_refusal(spec, requested_by, verdicts)
        return refused

    def _record_refusal(self, spec: ReleaseSpec, requested_by: str, verdicts: list[RuleOutcome]) -> Refused:
        entry = ledger_mod.append_entry(
            self._conn,
            signer=self._signer,
            requested_by=requested_by,
            release_name=spec.name,
            kind=spec.kind,
            outcome="refused",
            request_digest=spec.digest(),
            policy_digest=self.policy_digest,
            dataset=self.budget_key,
            epsilon=Fraction(0),
            delta=Fraction(0),
            verdicts=[v.to_json() for v in verdicts],
            outputs={},
        )
        ledger_mod.record_refused_spec(self._conn, entry.seq, spec)  # for an officer's review (gate.review)
        return Refused(name=spec.name, kind=spec.kind, verdicts=tuple(verdicts), entry_id=entry.entry_id)


def _entry_record_digest(record: DifferenceRecord | None, audit_blobs: list[bytes]) -> str:
    """What the ledger entry's ``record_digest`` covers: the differencing record and the audit records."""
    if record is None:
        return ""
    digest = record.digest()
    return ledger_mod.record_digest_with_audit(digest, audit_blobs) if audit_blobs else digest


def _replace(tmp: Path, final: Path) -> None:
    """Rename a committed pending file into place; another process's recovery may have done it already."""
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        if not final.exists():
            raise


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json_key(values: Sequence[Any]) -> list[Any]:
    return json.loads(json.dumps(list(values), default=str))


def _difference_record(request: ReleaseRequest, check: TableCheck) -> DifferenceRecord:
    """The differencing record of a table: its true person counts per cell."""
    dims = [f"{BIN}({request.value})" if d == BIN and isinstance(request, Histogram) else d for d in check.dims]
    counts = grid_cells(check.dims, check.cells)
    cells = [[_json_key(k), int(n)] for k, n in counts.items()]
    return DifferenceRecord(json.dumps(dims), request.population, json.dumps(cells, separators=(",", ":")))


def _count_record(request: ReleaseRequest) -> DifferenceRecord | None:
    """The differencing record of a model output: the person counts it carries, so differencing compares them
    with every table and model released before. A binary outcome's (negative, positive) split over the outcome
    (metrics with ``n_positive``; a two-class tree's root), else the total (``n``; a tree's root)."""
    split: tuple[int, int] | None = None
    n: Any = getattr(request, "n", None)
    if isinstance(request, ModelMetrics) and request.n_positive is not None:
        split = (request.n - request.n_positive, request.n_positive)
    elif isinstance(request, TreeStructure):
        root = next((node for node in request.nodes if node.node_id == 0), None)
        if root is None:
            return None
        if len(root.class_counts) == 2:
            split = (int(root.class_counts[0]), int(root.class_counts[1]))
        n = int(sum(root.class_counts))
    if split is not None:
        # the outcome's column name (so the split meets tables over that outcome, and never another outcome's
        # split); without it every binary split is one variable, 'positive' (conservative)
        dim = getattr(request, "outcome", "") or "positive"
        cells = [[[False], split[0]], [[True], split[1]]]
        return DifferenceRecord(json.dumps([dim]), request.population, json.dumps(cells, separators=(",", ":")))
    if not isinstance(n, int) or isinstance(n, bool):
        return None
    return DifferenceRecord(json.dumps([]), request.population, json.dumps([[[], n]], separators=(",", ":")))


def _count_conflict(
    dims: list[str],
    cells: Mapping[tuple[Any, ...], int],
    old_dims: list[str],
    old: Mapping[tuple[Any, ...], int],
    t: int,
) -> str | None:
    """Where two records' counts differ by 1 to t-1: the margins over every shared variable and, always, the totals
    (two tables grouped by different variables over populations that differ by a few persons isolate those
    persons through their totals: a tracker attack, whatever the grouping). None when nowhere."""
    shared = [d for d in dims if d in old_dims]
    for over in [shared, []] if shared else [[]]:
        a = marginalise(cells, dims, over)
        b = marginalise(old, old_dims, over)
        hit = next((key for key in a.keys() | b.keys() if 0 < abs(a.get(key, 0) - b.get(key, 0)) < t), None)
        if hit is not None:
            return ", ".join(f"{d}={v}" for d, v in zip(over, hit, strict=True)) or "the total"
    return None


def _tree_node_records(
    request: ReleaseRequest, computed: Materialised, name: str
) -> tuple[tuple[int, DifferenceRecord], ...]:
    """The differencing record of every node of a tree but the root: its class counts over the outcome, as the
    root's record, and the persons the gate sent to it."""
    if not isinstance(request, TreeStructure) or not computed.nodes:
        return ()
    counts = {node.node_id: node.class_counts for node in request.nodes}
    dim = json.dumps([request.outcome or "positive"])
    out = []
    for node_id, persons in computed.nodes:
        c = counts[node_id]
        if len(c) != 2:
            continue
        cells = json.dumps([[[False], int(c[0])], [[True], int(c[1])]], separators=(",", ":"))
        population = f"{request.population}, tree node {node_id}"
        out.append((node_id, DifferenceRecord(dim, population, cells, Population.of(persons, name))))
    return tuple(out)


def _statistics(request: ReleaseRequest) -> list[str]:
    if isinstance(request, SumTable):
        return ["n", "sum"]
    if isinstance(request, MeanTable):
        return ["n", "mean"]
    if isinstance(request, QuantileRequest):
        return [f"q{q:g}" for q in request.quantiles]
    return ["n"]


def _sdc_values(
    request: ReleaseRequest, check: TableCheck | None, verdicts: list[RuleOutcome], withheld: Sequence[str] = ()
) -> dict[str, Any]:
    if check is not None:
        stats = _statistics(request)
        table = check.cells.select(
            *check.dims,
            *[pl.when(pl.col("suppressed")).then(None).otherwise(pl.col(s)).alias(s) for s in stats],
            pl.when(pl.col("suppressed"))
            .then(pl.lit("suppressed: ") + pl.col("suppressed_by"))
            .otherwise(pl.lit("released"))
            .alias("status"),
        )
        return {"columns": table.columns, "rows": [list(r) for r in table.rows()], "exact": True}
    params = request.parameters()
    for key in ("kind", "name", "description", "population", "outcome"):
        params.pop(key, None)
    if withheld:
        params["withheld"] = list(withheld)
    if isinstance(request, TreeStructure) and any(
        v.rule.startswith("tree_") and v.verdict == "suppress" for v in verdicts
    ):
        for node in params["nodes"]:
            node["class_counts"] = None
        params["class_counts_withheld"] = True
    return params


def _dp_values(request: ReleaseRequest, result: dp_mod.DpResult, check: TableCheck | None) -> dict[str, Any]:
    dims: list[str] = list(getattr(request, "by", ()))
    if isinstance(request, Histogram):
        dims.append(BIN)
    stats = [c for c in result.table.columns if c not in dims]
    table = result.table
    if check is not None:
        table = (
            table.join(check.cells.select(*check.dims, "suppressed", "suppressed_by"), on=dims or None, how="left")
            if dims
            else table.with_columns(
                pl.lit(bool(check.cells["suppressed"][0])).alias("suppressed"),
                pl.lit(check.cells["suppressed_by"][0], dtype=pl.String).alias("suppressed_by"),
            )
        )
        table = table.select(
            *dims,
            *[pl.when(pl.col("suppressed").fill_null(True)).then(None).otherwise(pl.col(s)).alias(s) for s in stats],
            pl.when(pl.col("suppressed").fill_null(True))
            .then(pl.lit("suppressed: ") + pl.col("suppressed_by").fill_null("not checked"))
            .otherwise(pl.lit("released (noisy)"))
            .alias("status"),
        )
    else:
        table = table.with_columns(pl.lit("released (noisy)").alias("status"))
    return {"columns": table.columns, "rows": [list(r) for r in table.rows()], "exact": False}


_SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def _csv(values: Mapping[str, Any]) -> bytes:
    """The released table as CSV. Text cells a spreadsheet would run as a formula (starting with = + - @, tab or
    carriage return) get a leading apostrophe (OWASP CSV injection); numbers are written as numbers."""
    frame = pl.DataFrame(
        [list(r) for r in values["rows"]], schema=list(values["columns"]), orient="row", infer_schema_length=None
    )
    for column, dtype in frame.schema.items():
        if dtype == pl.String:
            risky = pl.any_horizontal(pl.col(column).str.starts_with(t) for t in _SPREADSHEET_TRIGGERS)
            frame = frame.with_columns(
                pl.when(risky).then("'" + pl.col(column)).otherwise(pl.col(column)).alias(column)
            )
    return frame.write_csv().encode()


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
