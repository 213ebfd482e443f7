"""The security suite's tally and its summary table.

Every attack a test tries and every fault it injects is recorded with ``tally.attack(...)`` /
``tally.fault(...)``: one line per case, with whether the defence held. The lines travel in the test report's
``user_properties`` (so they also arrive from pytest-xdist workers), and ``pytest_terminal_summary`` prints,
per category, how many attacks were tried and stopped and how many faults were injected and survived.

A test that records nothing counts as one case of its module's category (passed = stopped). A test marked
``xfail(strict=True)`` documents a missing defence: its cases show up in the "known gaps" column.

An attack may also name its *attack class* (``tally.attack(..., attack_class=..., how=...)``): the summary then
prints a second table, one row per class, with the verdict (stopped or not) and how the gate stopped it
(``RequestInvalid``, a refusal naming its rules, suppression, noise); ``test_spec_attacks.py`` does this.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

PROPERTY = "kansrijk_security"

# Module -> category, for tests that do not record their own cases.
CATEGORIES = {
    "test_bundle_tampering": "bundles",
    "test_bundle_attacks": "bundles",
    "test_extract_attacks": "extracts",
    "test_secrets": "secrets",
    "test_gate_attacks": "gate",
    "test_membership_inference": "gate",
    "test_faults": "faults",
    "test_fuzz_parsers": "fuzz",
    "test_gate_service_attacks": "service",
    "test_spec_attacks": "specs",
    "test_history_audit": "history",
    "test_review_attacks": "review",
}
ORDER = ("bundles", "extracts", "secrets", "gate", "specs", "history", "review", "service", "fuzz", "faults")
# The attack classes of test_spec_attacks.py, in the order of the attack -> verdict table.
ATTACK_CLASSES = (
    "population differencing",
    "smuggled rows or persons",
    "pooled years",
    "tree structure",
    "scores and models",
    "isolating parameters",
    "transformed values",
    "extremes",
    "conditions and names",
    "random specs (hypothesis)",
    "linked tables (history)",
    "chains of releases",
    "tree and model counts (history)",
    "value differencing (history)",
    "random sequences (history)",
)


@dataclass
class Tally:
    """Cases recorded by one test. ``attack``/``fault`` return ``held`` so a test can assert on it."""

    node: pytest.Item
    category: str
    cases: list[dict[str, Any]] = field(default_factory=list)

    def _record(
        self, kind: str, name: str, held: bool, category: str | None, count: int, extra: dict[str, str] | None = None
    ) -> bool:
        case = {"kind": kind, "category": category or self.category, "name": name, "held": bool(held), "n": count}
        case.update(extra or {})
        self.cases.append(case)
        self.node.user_properties.append((PROPERTY, case))
        return bool(held)

    def attack(
        self,
        name: str,
        stopped: bool,
        *,
        category: str | None = None,
        count: int = 1,
        attack_class: str | None = None,
        how: str = "",
    ) -> bool:
        """Record ``count`` attack case(s) called ``name``; ``stopped`` says whether the defence held. With
        ``attack_class``, the case also counts in the attack -> verdict table (``how``: how it was stopped)."""
        extra = {"attack_class": attack_class, "how": how} if attack_class else None
        return self._record("attack", name, stopped, category, count, extra)

    def fault(self, name: str, survived: bool, *, category: str | None = None, count: int = 1) -> bool:
        """Record ``count`` injected fault(s) called ``name``; ``survived`` says whether state stayed consistent."""
        return self._record("fault", name, survived, category, count)

    def measure(self, text: str) -> None:
        """A measured figure printed under the summary table (e.g. a membership-inference AUC)."""
        self.node.user_properties.append((PROPERTY + "_measure", text))


def _category(item: pytest.Item) -> str:
    module = item.module.__name__.rsplit(".", 1)[-1] if getattr(item, "module", None) else ""
    return CATEGORIES.get(module, "other")


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Tally:
    return Tally(request.node, _category(request.node))


# --- the summary -------------------------------------------------------------------------------------------
_results: dict[str, dict[str, Any]] = {}
_measures: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "tests/security/" not in report.nodeid.replace("\\", "/"):
        return
    entry = _results.setdefault(report.nodeid, {"cases": [], "outcome": "passed", "xfail": False})
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        entry["cases"] = [v for k, v in report.user_properties if k == PROPERTY]
        _measures.extend(v for k, v in report.user_properties if k == PROPERTY + "_measure")
        entry["xfail"] = hasattr(report, "wasxfail")
        entry["outcome"] = report.outcome
    elif report.outcome == "failed":
        entry["outcome"] = "failed"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _results:
        return
    rows: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    classes: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for nodeid, entry in _results.items():
        module = nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        category = CATEGORIES.get(module, "other")
        cases = entry["cases"] or [
            {
                "kind": "fault" if category == "faults" else "attack",
                "category": category,
                "name": nodeid,
                "n": 1,
                "held": entry["outcome"] == "passed",
            }
        ]
        for case in cases:
            row = rows[case["category"]]
            kind, n = case["kind"], int(case["n"])
            if case.get("attack_class"):
                _count_class(classes, case, n, entry)
            if entry["xfail"]:
                row[f"{kind}_gap"] += n
                continue
            row[f"{kind}_tried"] += n
            if case["held"] and entry["outcome"] == "passed":
                row[f"{kind}_held"] += n
            elif case["held"] is False or entry["outcome"] == "failed":
                failures.append(f"{case['category']}: {case['name']} ({nodeid})")
    tr = terminalreporter
    tr.write_sep("=", "kansrijk security summary")
    header = (
        f"{'category':<10} {'attacks tried':>13} {'stopped':>8} {'faults injected':>15} {'survived':>9} "
        f"{'known gaps (xfail)':>18}"
    )
    tr.write_line(header)
    tr.write_line("-" * len(header))
    total: dict[str, int] = defaultdict(int)
    for category in [*ORDER, *sorted(set(rows) - set(ORDER))]:
        if category not in rows:
            continue
        row = rows[category]
        for key, value in row.items():
            total[key] += value
        tr.write_line(_line(category, row))
    tr.write_line("-" * len(header))
    tr.write_line(_line("total", total))
    for text in _measures:
        tr.write_line(f"measured: {text}")
    if classes:
        _class_table(tr, classes)
    if failures:
        tr.write_line(f"NOT STOPPED / NOT SURVIVED ({len(failures)}):", red=True, bold=True)
        for line in failures[:40]:
            tr.write_line(f"  {line}", red=True)
    else:
        tr.write_line("every attack tried was stopped and every injected fault survived", green=True, bold=True)


def _line(name: str, row: dict[str, int]) -> str:
    gaps = row.get("attack_gap", 0) + row.get("fault_gap", 0)
    return (
        f"{name:<10} {row.get('attack_tried', 0):>13} {row.get('attack_held', 0):>8} "
        f"{row.get('fault_tried', 0):>15} {row.get('fault_held', 0):>9} {gaps:>18}"
    )


def _count_class(classes: dict[str, dict[str, Any]], case: dict[str, Any], n: int, entry: dict[str, Any]) -> None:
    row = classes.setdefault(case["attack_class"], {"tried": 0, "stopped": 0, "gaps": 0, "how": defaultdict(int)})
    if entry["xfail"]:
        row["gaps"] += n
        return
    row["tried"] += n
    if case["held"] and entry["outcome"] == "passed":
        row["stopped"] += n
        for how in filter(None, str(case.get("how", "")).split("; ")):
            row["how"][how] += n


def _class_table(tr: Any, classes: dict[str, dict[str, Any]]) -> None:
    """The attack -> verdict table: one row per attack class, with how its attacks were stopped (most often
    first) and any known gap."""
    tr.write_sep("=", "release specs: attack -> verdict")
    header = f"{'attack class':<27} {'tried':>5} {'stopped':>7}  verdict"
    tr.write_line(header)
    tr.write_line("-" * 118)
    for name in [*(c for c in ATTACK_CLASSES if c in classes), *sorted(set(classes) - set(ATTACK_CLASSES))]:
        row = classes[name]
        hows = sorted(row["how"].items(), key=lambda kv: (-kv[1], kv[0]))
        verdict = "STOPPED" if row["tried"] == row["stopped"] else f"NOT STOPPED ({row['tried'] - row['stopped']})"
        detail = ", ".join(h for h, _ in hows)
        gap = f"; known gap(s) (xfail): {row['gaps']}" if row["gaps"] else ""
        tr.write_line(f"{name:<27} {row['tried']:>5} {row['stopped']:>7}  {verdict}: {detail}{gap}"[:400])
