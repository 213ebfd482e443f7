"""The privacy budget: exact (``fractions.Fraction``, stored as text) epsilon and delta spent per dataset.

The budget lives in the ledger database. ``spend`` must run inside the same ``BEGIN IMMEDIATE`` transaction that
appends the release's ledger entry, and *before* OpenDP is called: a request that does not fit is refused
without touching the data, and concurrent processes cannot overspend (the write lock serialises them).
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass
from fractions import Fraction

from kansrijk.policy.release import DpBudget


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
            f"dataset {dataset!r} has epsilon {policy.epsilon_total - eps_spent} left of {policy.epsilon_total}; "
            f"this release needs {epsilon}"
        )
    if delta_spent + delta > policy.delta_total:
        return f"dataset {dataset!r} has delta {policy.delta_total - delta_spent} left; this release needs {delta}"
    return None


def spend(conn: sqlite3.Connection, dataset: str, epsilon: Fraction, delta: Fraction = Fraction(0)) -> None:
    """Add to the dataset's spent budget. Caller has checked ``refusal_reason`` in the same transaction."""
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
