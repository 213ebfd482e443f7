"""The release-history audit (``kansrijk.gate.audit``): its cost, incremental against a full re-audit, and what it
withholds.

The analysis plan over two reference years is released through a real gate under the SDC-only release policy
(every number exact, so every one enters the audit), then the ledger's audit records are replayed release by
release: the incremental audit (only the components the new release touches) and the full re-audit (every
component of the history), timed in the same run. The same plan is released once more through a gate whose audit
is switched off, and the exact numbers each gate withheld are counted (target: the audit withholds at most 5% more
cells than the gate without it).

Complexity: the incremental audit folds each record into its history once; a new release then costs a pass over its
own persons, one sort of the N persons' signatures and a sparse product per stored record (O(N log N + R x n) for R
records of n persons each, without re-sorting them). The algebra keeps, per record, only the cells that span all of
its cells (a tree's leaves, not its nodes), so an atom lies in about one row per release. Per connected component
the new release touches, the leverage step bound clears small atoms in O(sum over atoms of rows^2) after one
pivoted Cholesky factorisation of the rows' Gram matrix (O(rank^3), rank at most the number of released cells);
exact directions (two sparse products per block, never the dense basis) and linear programs only for the groups
left. The full re-audit rebuilds every record's contribution from scratch and audits every component, at every
release.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from benchmarks.run import figure as _figure
from coordinator.analysis.plan import attach_previous_years, load_policies
from coordinator.analysis.run import analysis_requests
from coordinator.analysis.trees import LeafRules
from kansrijk import crypto
from kansrijk.gate import history
from kansrijk.gate.audit import AuditRecord, AuditResult, audit
from kansrijk.gate.keys import create_gate_key
from kansrijk.gate.release import Gate
from kansrijk.policy.signing import sign_policy

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "tests" / "unit"))
from analysis_frames import city_dataset  # noqa: E402

PERSONS = {"small": 20_000, "full": 150_000}
YEARS = (2022, 2023)
_PASSPHRASE = "benchmark gate key"
TARGET_MORE_WITHHELD = 0.05


@contextmanager
def _audit_off() -> Iterator[None]:
    real = history.run
    history.run = lambda *args, **kwargs: AuditResult()  # type: ignore[assignment]
    try:
        yield
    finally:
        history.run = real  # type: ignore[assignment]


def _release_plan(root: Path, frames: dict[int, pl.DataFrame]) -> tuple[Path, dict[str, int], int, int, float]:
    """Release the plan through a fresh gate: (its ledger database, outcomes, exact numbers released, exact numbers
    withheld, wall seconds)."""
    ws = root / "ws"
    (ws / "dataset").mkdir(parents=True)
    for year, frame in frames.items():
        frame.write_parquet(ws / "dataset" / f"{year}.parquet")
    (ws / "workspace.toml").write_text(f'pseudonym_key_fingerprint = "{"0" * 32}"\n')
    signing, public = crypto.generate_signing_key()
    crypto.write_public_key(root / "officer.pub", "ed25519-signing", public, label="officer")
    shutil.copy(ROOT / "policies" / "release" / "sdc-only.toml", root / "policy.toml")
    sign_policy(root / "policy.toml", signing)
    os.environ["KANSRIJK_SCRYPT_LOG2N"] = "14"  # a throw-away key; its cost is not what is measured
    try:
        create_gate_key(ws, _PASSPHRASE)
    finally:
        os.environ.pop("KANSRIJK_SCRYPT_LOG2N")
    policies = load_policies(
        ROOT / "policies" / "analysis" / "rotterdam-groeit.toml", ROOT / "policies" / "factors" / "factor-model.toml",
        None,
    )  # fmt: skip
    linked = attach_previous_years(frames, policies.plan.features.previous_year)
    outcomes: dict[str, int] = {}
    released = withheld = 0
    start = time.perf_counter()
    with Gate.open(ws, root / "policy.toml", [root / "officer.pub"], passphrase=_PASSPHRASE) as gate:
        for planned in analysis_requests(policies, linked, leaf_rules=LeafRules()):
            result = gate.release(planned.request, requested_by="analysis")
            outcomes[result.outcome] = outcomes.get(result.outcome, 0) + 1
            r, w = _exact_numbers(result)
            released, withheld = released + r, withheld + w
    return ws / "ledger.sqlite", outcomes, released, withheld, time.perf_counter() - start


def _exact_numbers(result: object) -> tuple[int, int]:
    """Exact counts a result released and withheld: table cells, tree class counts, a model's n and positives."""
    document = getattr(result, "document", None)
    if document is None or document.get("noisy"):
        return 0, 0
    values = document["values"]
    if isinstance(values, dict) and "rows" in values:
        status = [dict(zip(values["columns"], row, strict=True))["status"] for row in values["rows"]]
        return sum(s == "released" for s in status), sum(s != "released" for s in status)
    if isinstance(values, dict) and "nodes" in values:
        counts = [n.get("class_counts") for n in values["nodes"]]
        return 2 * sum(c is not None for c in counts), 2 * sum(c is None for c in counts)
    return (1, 0) if isinstance(values, dict) and "n" in values else (0, 0)


def _replay(ledger: Path) -> tuple[int, float, float, int]:
    """Replay the stored audit records release by release: (releases, incremental seconds, full seconds, atoms)."""
    with sqlite3.connect(ledger) as conn:
        rows = conn.execute("SELECT seq, record FROM audit_records ORDER BY seq, part").fetchall()
    records = [AuditRecord.from_blob(bytes(blob), seq) for seq, blob in rows]
    by_seq: dict[int, list[AuditRecord]] = {}
    for r in records:
        by_seq.setdefault(r.seq, []).append(r)
    history_so_far: list[AuditRecord] = []
    incremental = full = 0.0
    atoms = 0
    for seq in sorted(by_seq):
        new = [AuditRecord(r.quantity, r.unit, r.ids, r.codes, r.cells, r.values, r.bounds) for r in by_seq[seq]]
        for incr in (True, False):
            start = time.perf_counter()
            result = audit(history_so_far, new, threshold=10, interval=2, p=0.10, incremental=incr)
            spent = time.perf_counter() - start
            if incr:
                incremental += spent
                atoms = max(atoms, result.atoms)
            else:
                full += spent
        history_so_far += by_seq[seq]
    return len(by_seq), incremental, full, atoms


def _say(what: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} audit bench: {what}", file=sys.stderr, flush=True)


def run(scale: str) -> list[dict]:
    persons = PERSONS[scale]
    with tempfile.TemporaryDirectory() as tmp:
        stacked = city_dataset(Path(tmp) / "city", persons=persons, seed=7, years=YEARS)
        frames = {y: stacked.filter(pl.col("year") == y) for y in YEARS}
        with_audit = Path(tmp) / "with"
        with_audit.mkdir()
        _say(f"{persons:,} persons, two years: the plan through the gate with the audit")
        ledger, outcomes, released, withheld, seconds = _release_plan(with_audit, frames)
        _say(f"done in {seconds:.1f} s; replaying the audit records, incremental and full")
        releases, incremental, full, atoms = _replay(ledger)
        _say(f"replayed: incremental {incremental:.1f} s, full {full:.1f} s; the plan without the audit")
        without = Path(tmp) / "without"
        without.mkdir()
        with _audit_off():
            _, outcomes_off, released_off, withheld_off, seconds_off = _release_plan(without, frames)
    total = released + withheld
    more = (withheld - withheld_off) / total if total else 0.0
    described = ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items()))
    return [
        _figure(
            f"release-history audit, incremental: {releases} exact releases of a two-year plan, {persons:,} persons "
            f"(up to {atoms:,} atoms), audited one after another", incremental, "s",
            "the full re-audit of every component at every release (same run)", full, "seconds (2 cores)",
            incremental <= 10.0,
        ),
        _figure(
            f"two-year plan through the gate under the SDC-only policy ({described}), wall", seconds, "s",
            "the same plan through a gate without the audit (same run)", seconds_off, "",
        ),
        _figure(
            f"exact numbers withheld with the audit ({withheld} of {total}), extra share", more, "share",
            f"withheld without the audit: {withheld_off} of {released_off + withheld_off}",
            withheld_off / max(1, total),
            f"<= {TARGET_MORE_WITHHELD:.0%} more withheld", more <= TARGET_MORE_WITHHELD,
        ),
        _figure(
            "releases refused with the audit", float(outcomes.get("refused", 0)), "releases",
            "refused without the audit (same run)", float(outcomes_off.get("refused", 0)), "",
        ),
    ]  # fmt: skip


if __name__ == "__main__":
    for fig in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(fig)
