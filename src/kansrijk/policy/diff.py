"""``kansrijk policy diff``: what changes between two policy files, each change judged stricter or looser.

A privacy officer diffs a proposed policy against the signed one before signing it. Three guarantees:

- **an invalid proposal is still shown.** A file that does not validate (a loosening past a floor, say) is
  compared as written, next to the list of its problems, so the officer sees exactly what was proposed; the
  diff says it cannot be signed. When both files validate they are compared with their defaults filled in (a key
  only written out explicitly is not a change);
- **every change is classified**: ``stricter``, ``looser``, or ``no privacy effect`` for an explicit list of
  keys that only name, describe or format (a title, the reviewer, how a CSV is read). A change the rules below do
  not recognise is ``looser`` with "not known to be stricter": the default fails closed, it never hides a
  loosening behind "changed";
- **whole sections count**: removing ``[dp]`` (no noise, no budget) is looser, adding it stricter; a requester
  added is looser; a shared column added or a ``never_share`` entry removed is looser.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from kansrijk.errors import PolicyError
from kansrijk.policy.common import read_policy_bytes
from kansrijk.policy.release import judge_change
from kansrijk.policy.signing import load_policy

ABSENT: Any = type("Absent", (), {"__repr__": lambda self: "(absent)", "__str__": lambda self: "(absent)"})()

STRICTER, LOOSER, NEUTRAL = "stricter", "looser", "no privacy effect"


@dataclass(frozen=True, slots=True)
class Side:
    """One of the two files: its kind, whether it validates, and its problems if not."""

    path: Path
    kind: str
    valid: bool
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Change:
    """One key that differs, with its effect (``stricter``, ``looser``, ``no privacy effect``) and why."""

    key: str
    before: Any
    after: Any
    effect: str
    why: str

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "before": None if self.before is ABSENT else self.before,
            "after": None if self.after is ABSENT else self.after,
            "absent_before": self.before is ABSENT,
            "absent_after": self.after is ABSENT,
            "effect": self.effect,
            "why": self.why,
        }


@dataclass(frozen=True, slots=True)
class PolicyDiff:
    before: Side
    after: Side
    changes: tuple[Change, ...] = field(default=())
    compared_as_written: bool = False

    @property
    def looser(self) -> tuple[Change, ...]:
        return tuple(c for c in self.changes if c.effect == LOOSER)

    def to_json(self) -> dict[str, Any]:
        return {
            "before": {"file": str(self.before.path), "kind": self.before.kind, "valid": self.before.valid,
                       "problems": list(self.before.problems)},
            "after": {"file": str(self.after.path), "kind": self.after.kind, "valid": self.after.valid,
                      "problems": list(self.after.problems)},
            "compared_as_written": self.compared_as_written,
            "changes": [c.to_json() for c in self.changes],
            "summary": {e: sum(c.effect == e for c in self.changes) for e in (STRICTER, LOOSER, NEUTRAL)},
        }  # fmt: skip


def diff_policy_files(a: Path, b: Path) -> PolicyDiff:
    """Compare policy file ``a`` (before) with ``b`` (after); see the module docstring. ``PolicyError`` only
    when a file cannot be read as TOML at all, or the two are policies of different kinds."""
    side_a, flat_a = _read(Path(a))
    side_b, flat_b = _read(Path(b))
    if side_a.kind != side_b.kind:
        raise PolicyError(
            f"{b}: is a {side_b.kind!r} policy and {a} a {side_a.kind!r} one; diff compares two versions of one "
            "policy",
            hint="compare the proposed file with the signed file of the same kind",
        )
    as_written = not (side_a.valid and side_b.valid)
    if as_written:
        flat_a, flat_b = _flatten(_toml(Path(a))), _flatten(_toml(Path(b)))
    changes = []
    for key in sorted(set(flat_a) | set(flat_b)):
        before, after = flat_a.get(key, ABSENT), flat_b.get(key, ABSENT)
        if before == after:
            continue
        nested = any(k.startswith(key + ".") for k in (*flat_a, *flat_b))
        if nested and before in (None, ABSENT) and after in (None, ABSENT):
            continue  # a section absent on one side: its keys are listed one by one instead
        effect, why = classify(side_a.kind, key, before, after)
        changes.append(Change(key, before, after, effect, why))
    return PolicyDiff(side_a, side_b, tuple(changes), as_written)


def _toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(read_policy_bytes(path).decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: not a TOML policy file ({exc})") from None


def _read(path: Path) -> tuple[Side, dict[str, Any]]:
    raw = _toml(path)
    kind = str(raw.get("kind") or raw.get("format") or "unknown")
    try:
        kind, model = load_policy(path)
    except PolicyError as exc:
        problems = tuple(line.strip() for line in exc.message.splitlines()[1:]) or (exc.message,)
        return Side(path, kind, False, problems), _flatten(raw)
    return Side(path, kind, True), _flatten(model.model_dump(mode="json"))


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(value, list | tuple):
        return {prefix: [str(v) if not isinstance(v, int | float | str | bool) else v for v in value]}
    if not isinstance(value, int | float | str | bool) and value is not None:
        return {prefix: str(value)}  # dates, times: as written
    return {prefix: value}


# --- classification ----------------------------------------------------------------------------------------
def classify(kind: str, key: str, before: Any, after: Any) -> tuple[str, str]:
    """(effect, why) of one change of a policy of ``kind``; never an empty effect (see the module docstring)."""
    rule = _RULES.get(kind)
    if rule is not None:
        judged = rule(key, before, after)
        if judged is not None:
            return judged
    head = key.split(".")[0]
    if key in _NEUTRAL.get(kind, ()) or head in _NEUTRAL.get(kind, ()):
        return NEUTRAL, "names, describes or formats; changes nothing that is shared or released"
    return LOOSER, "not known to be stricter: review this change by hand"


def _numbers(before: Any, after: Any) -> tuple[Fraction, Fraction] | None:
    try:
        return Fraction(str(before)), Fraction(str(after))
    except (ValueError, ZeroDivisionError):
        return None


def _release(key: str, before: Any, after: Any) -> tuple[str, str] | None:
    parts = key.split(".")
    if parts[0] == "dp" and (before is ABSENT or after is ABSENT):
        return (LOOSER, "DP removed: no noise and no budget") if after is ABSENT else (STRICTER, "DP added")
    if parts[0] == "dp_model" and (before is ABSENT or after is ABSENT):
        if after is ABSENT:
            return STRICTER, "DP models removed: none may be trained"
        return LOOSER, "DP models allowed: a new kind of release"
    if len(parts) == 3 and parts[0] == "outputs" and parts[2] == "epsilon":
        if after in (None, ABSENT) and before not in (None, ABSENT):
            return LOOSER, f"no DP noise on {parts[1]} any more"
        if before in (None, ABSENT) and after not in (None, ABSENT):
            return STRICTER, f"DP noise added on {parts[1]}"
    if parts[0] == "requesters" and isinstance(before, list) and isinstance(after, list):
        added, removed = set(after) - set(before), set(before) - set(after)
        if added:
            return LOOSER, f"requester(s) added: {', '.join(sorted(added))}"
        if removed:
            return STRICTER, f"requester(s) removed: {', '.join(sorted(removed))}"
    if len(parts) == 3 and parts[0] == "outputs" and parts[2] == "method" and ABSENT in (before, after):
        return None  # an output kind's section added or removed: its default method applies; judged below
    verdict = judge_change(key, before, after)
    if verdict:
        return verdict, "a floor, ceiling or choice of the release rules moved" + (
            "" if verdict == STRICTER else " towards disclosure"
        )
    if len(parts) == 3 and parts[0] == "outputs" and parts[2] == "method" and {before, after} == {"sdc", "dp"}:
        return LOOSER, "output checking and DP protect differently: dropping either one loosens; review by hand"
    return None


def _sharing(key: str, before: Any, after: Any) -> tuple[str, str] | None:
    parts = key.split(".")
    if parts[0] == "columns":
        column = parts[1] if len(parts) > 1 else "?"
        if len(parts) == 3 and parts[2] == "variable" and before is ABSENT:
            return LOOSER, f"column {column} is shared now (as {after})"
        if len(parts) == 3 and parts[2] == "variable" and after is ABSENT:
            return STRICTER, f"column {column} is no longer shared"
        if len(parts) == 3 and parts[2] == "generalise":
            order = ("none", "round", "year_month", "year", "bands")
            if before in order and after in order:
                coarser = order.index(str(after)) > order.index(str(before))
                return (STRICTER, f"{column} generalised more") if coarser else (LOOSER, f"{column} generalised less")
        if len(parts) == 3 and parts[2] == "round_to":
            nums = _numbers(before, after)
            if nums is not None:
                return (STRICTER, f"{column} rounded coarser") if nums[1] > nums[0] else (
                    LOOSER, f"{column} rounded finer")
        if len(parts) == 3 and parts[2] == "bands" and isinstance(before, list) and isinstance(after, list):
            return (STRICTER, f"{column} in fewer bands") if len(after) < len(before) else (
                LOOSER, f"{column} in as many or more bands")
        if len(parts) == 3 and parts[2] in ("parse", "required", "values", "empty_value", "date_formats"):
            return NEUTRAL, f"how {column} is read and checked; what is shared stays the variable"
        if len(parts) >= 3 and parts[2] == "values":
            return NEUTRAL, f"how the raw codes of {column} map to the canonical categories"
    if parts[0] == "never_share" and isinstance(before, list) and isinstance(after, list):
        removed = set(before) - set(after)
        if removed:
            return LOOSER, f"no longer asserted never to leave: {', '.join(sorted(removed))}"
        return STRICTER, "more columns asserted never to leave"
    if parts[0] == "sdq" and parts[-1] == "share" and isinstance(before, list) and isinstance(after, list):
        return (LOOSER, "more SDQ scores shared") if set(after) - set(before) else (STRICTER, "fewer SDQ scores")
    if parts[0] in ("purpose", "legal_basis"):
        return LOOSER, f"the {parts[0].replace('_', ' ')} changed: review it against the DPIA before signing"
    return None


def _registry(key: str, before: Any, after: Any) -> tuple[str, str] | None:
    parts = key.split(".")
    if parts[-1] in ("allowed_policy_digests", "allowed_schema_versions") and isinstance(after, list):
        was = before if isinstance(before, list) else []
        if set(after) - set(was):
            return LOOSER, f"{parts[-1].replace('_', ' ')} added for {parts[1]}"
        return STRICTER, f"{parts[-1].replace('_', ' ')} removed for {parts[1]}"
    if parts[-1] == "keys" or (len(parts) > 2 and parts[2] == "keys"):
        return LOOSER, f"the signing keys of {parts[1]} changed: check each fingerprint with the partner"
    return None


def _analysis(key: str, before: Any, after: Any) -> tuple[str, str] | None:
    if key == "retention.workspace_until" and before is not ABSENT and after is not ABSENT:
        later = str(after) > str(before)  # ISO dates compare as text
        return (LOOSER, "person-level data kept longer") if later else (STRICTER, "person-level data kept shorter")
    if key.startswith("retention.") and after is ABSENT:
        return LOOSER, "no retention stated any more"
    if key == "release_trees":
        return (LOOSER, "trees are released") if after is True else (STRICTER, "no tree is released")
    return None


_RULES: dict[str, Callable[[str, Any, Any], tuple[str, str] | None]] = {
    "release": _release,
    "analysis": _analysis,
    "sharing": _sharing,
    "kansrijk-partner-registry": _registry,
}

# Keys that only name, describe or format: their change cannot share or release anything more.
_NEUTRAL: dict[str, frozenset[str]] = {
    "release": frozenset({"title", "dataset", "version", "description"}),
    "sharing": frozenset({"reviewed_by", "reviewed_on", "input", "dropped", "rules", "max_fault_rate"}),
    "analysis": frozenset({"title", "dataset", "version", "description"}),
    "factor_model": frozenset({"title", "version", "description", "source"}),
    "kansrijk-partner-registry": frozenset({"format", "version"}),
}

__all__ = ["ABSENT", "LOOSER", "NEUTRAL", "STRICTER", "Change", "PolicyDiff", "Side", "classify", "diff_policy_files"]
