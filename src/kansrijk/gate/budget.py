"""The privacy budget: exact (``fractions.Fraction``, stored as text) epsilon and delta spent per budget key.

The budget belongs to the data, not to a policy's name: its key is the identity of the persons the gate answers
about (``budget_key``), the workspace's person-key space. Every linked dataset of a workspace is keyed by P2 under
the one coordinator pseudonym key, so every policy over those persons, whatever its ``dataset`` label, spends
from one budget, and a re-link does not reset it. (The ``dataset`` column of the budget table and the ledger holds
this key.)

The budget lives in the ledger database. ``spend`` must run inside the same ``BEGIN IMMEDIATE`` transaction that
appends the release's ledger entry, and *before* OpenDP is called: a request that does not fit is refused
without touching the data, and concurrent processes cannot overspend (the write lock serialises them).
"""

from __future__ import annotations

import math
import re
import sqlite3
import tomllib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from kansrijk.errors import WorkspaceError
from kansrijk.policy.release import DpBudget

WORKSPACE_MANIFEST = "workspace.toml"
PERSONS_PREFIX = "persons:"
_FINGERPRINT = re.compile(r"^[0-9a-f]{32}$")  # kansrijk.crypto.fingerprint: 128 bits as lowercase hex


def budget_key(workspace: Path) -> str:
    """The key the privacy budget of ``workspace`` is kept under: ``persons:<fingerprint>``, the fingerprint of
    the coordinator pseudonym key recorded as ``pseudonym_key_fingerprint`` in ``WS/workspace.toml``.

    Fails closed: a workspace whose manifest is missing, unreadable or names no well-formed fingerprint raises
    ``WorkspaceError`` (the gate cannot tell whose budget a release would spend). Reads only; writes nothing.
    """
    manifest = Path(workspace) / WORKSPACE_MANIFEST
    fix = (
        "the gate keeps the privacy budget per person-key space; run it on a workspace made by "
        "'kansrijk coordinator init', whose workspace.toml records pseudonym_key_fingerprint"
    )
    try:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkspaceError(
            f"{manifest}: not found, so the workspace has no person-key identity to keep the budget under",
            hint=fix,
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise WorkspaceError(f"{manifest}: cannot be read as TOML ({type(exc).__name__})", hint=fix) from None
    fingerprint = data.get("pseudonym_key_fingerprint")
    if not isinstance(fingerprint, str) or not _FINGERPRINT.fullmatch(fingerprint):
        raise WorkspaceError(
            f"{manifest}: pseudonym_key_fingerprint is missing or not a key fingerprint (32 lowercase hex "
            f"characters), so the workspace has no person-key identity to keep the budget under",
            hint=fix,
        )
    return PERSONS_PREFIX + fingerprint


def check_budget_owner(conn: sqlite3.Connection, key: str) -> None:
    """Refuse a ledger that already holds budget spent under another key than ``key``.

    A workspace's pseudonym key never changes (a workspace is never re-initialised), so budget under another key
    means ``workspace.toml`` was altered, the ledger belongs to another workspace, or it predates budgets kept per
    person-key space. Carrying on would start a fresh budget over the same persons: ``WorkspaceError`` instead.
    """
    others = [r[0] for r in conn.execute("SELECT dataset FROM budget WHERE dataset != ? ORDER BY dataset", (key,))]
    if others:
        raise WorkspaceError(
            f"the ledger holds privacy budget spent under {', '.join(repr(o) for o in others)}, but "
            f"{WORKSPACE_MANIFEST} names {key!r}; the gate will not start a second budget over the same persons",
            hint="restore the workspace's own workspace.toml, or use the ledger that belongs to this workspace",
        )


@dataclass(frozen=True, slots=True)
class BudgetState:
    dataset: str
    epsilon_total: Fraction
    epsilon_spent: Fraction
    delta_total: Fraction
    delta_spent: Fraction

    @property
    def epsilon_left(self) -> Fraction:
        return self.epsilon_total - self.epsilon_spent


def spent(conn: sqlite3.Connection, dataset: str) -> tuple[Fraction, Fraction]:
    row = conn.execute("SELECT epsilon_spent, delta_spent FROM budget WHERE dataset = ?", (dataset,)).fetchone()
    if row is None:
        return Fraction(0), Fraction(0)
    return Fraction(row[0]), Fraction(row[1])


def state(conn: sqlite3.Connection, dataset: str, policy: DpBudget) -> BudgetState:
    eps, delta = spent(conn, dataset)
    return BudgetState(dataset, policy.epsilon_total, eps, policy.delta_total, delta)


def refusal_reason(
    conn: sqlite3.Connection, dataset: str, policy: DpBudget, epsilon: Fraction, delta: Fraction = Fraction(0)
) -> str | None:
    """Why ``epsilon``/``delta`` cannot be spent now, or None if it fits. Call inside the write transaction."""
    if epsilon > policy.epsilon_per_release_max:
        return f"epsilon {epsilon} exceeds the per-release cap {policy.epsilon_per_release_max}"
    eps_spent, delta_spent = spent(conn, dataset)
    if eps_spent + epsilon > policy.epsilon_total:
        return (
            f"the budget of {dataset!r} has epsilon {policy.epsilon_total - eps_spent} left of "
            f"{policy.epsilon_total}; this release needs {epsilon}"
        )
    if delta_spent + delta > policy.delta_total:
        return (
            f"the budget of {dataset!r} has delta {policy.delta_total - delta_spent} left; this release needs {delta}"
        )
    return None


def spend(conn: sqlite3.Connection, dataset: str, epsilon: Fraction, delta: Fraction = Fraction(0)) -> None:
    """Add to the spent budget of ``dataset`` (a ``budget_key``). Caller has checked ``refusal_reason`` in the
    same transaction."""
    eps_spent, delta_spent = spent(conn, dataset)
    conn.execute(
        "INSERT INTO budget(dataset, epsilon_spent, delta_spent) VALUES (?, ?, ?) "
        "ON CONFLICT(dataset) DO UPDATE SET epsilon_spent = excluded.epsilon_spent, "
        "delta_spent = excluded.delta_spent",
        (dataset, str(eps_spent + epsilon), str(delta_spent + delta)),
    )


def float_at_most(value: Fraction) -> float:
    """The largest float not above ``value``: what we hand OpenDP, so its loss never exceeds the ledger's."""
    f = float(value)
    if Fraction(f) > value:
        f = math.nextafter(f, -math.inf)
    return f
