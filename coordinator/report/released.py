"""What the gate released, read back through the gate's own document schema.

Every file ``WS/released/NAME.json`` is read with ``kansrijk.gate.document.read_document`` (``ReleaseDocument``):
anything that is not exactly such a document is refused, so the report cannot show a number the gate did not
write. ``Release`` keeps that document and adds read-only views of the fields of the spec the gate recorded
(years, outcome, grouping, labels, ...), so no section looks into an untyped dictionary or guesses an output's
kind from its file name.

Two labels are not fields of any spec: the feature set of a model ("all", "factor_model") and the method of an
importance ("permutation", "impurity"). They come from the analysis' name convention
``<scope>.<outcome>.<feature set>.<part>`` (``coordinator/analysis/run.py``) and only label and group outputs;
what an output *is* comes from its kind and its spec.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from kansrijk.errors import InputError, WorkspaceError
from kansrijk.gate.document import ReleaseDocument, Verdict, read_document
from kansrijk.gate.ledger import HEAD_FILE, RELEASED_DIR

POOLED = "pooled"


@dataclass(frozen=True, slots=True, order=True)
class Scope:
    """The reference years an output covers: one year, several pooled, or a change between years."""

    change: bool
    years: tuple[int, ...]

    @property
    def key(self) -> str:
        if self.change:
            return "change-" + "-".join(map(str, self.years))
        if len(self.years) == 1:
            return str(self.years[0])
        return POOLED + "-" + "-".join(map(str, self.years))

    @property
    def label(self) -> str:
        years = _and([str(y) for y in self.years])
        if self.change:
            return f"change between reference years {years}"
        if len(self.years) == 1:
            return f"reference year {years}"
        if not self.years:
            return "no reference year"
        return f"reference years {years} pooled"

    @property
    def single(self) -> bool:
        return not self.change and len(self.years) == 1

    @property
    def sort_key(self) -> tuple[int, int, tuple[int, ...]]:
        """Single years first (oldest first), then pooled scopes, then changes."""
        return (int(self.change), 0 if len(self.years) == 1 else 1, self.years)


def _and(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


@dataclass(frozen=True, slots=True)
class Release:
    """One release document as the gate wrote it, with typed views of its spec and the digest of its file."""

    doc: ReleaseDocument
    file_digest: str  # "sha256:…" of the file's bytes, checked against its ledger entry when the ledger is read

    # --- the document's own fields ---
    @property
    def name(self) -> str:
        return self.doc.name

    @property
    def kind(self) -> str:
        return self.doc.kind

    @property
    def status(self) -> str:
        """``released`` or ``suppressed`` (some values withheld)."""
        return self.doc.outcome

    @property
    def method(self) -> str:
        return self.doc.method

    @property
    def noisy(self) -> bool:
        return self.doc.noisy

    @property
    def epsilon(self) -> Fraction:
        return self.doc.epsilon

    @property
    def ledger_entry(self) -> str:
        return self.doc.ledger_entry

    @property
    def seq(self) -> int:
        return int(self.doc.ledger_entry[1:])

    @property
    def requested_by(self) -> str:
        return self.doc.requested_by

    @property
    def policy_digest(self) -> str:
        return self.doc.policy_digest

    @property
    def values(self) -> Mapping[str, Any]:
        return self.doc.values

    @property
    def verdicts(self) -> tuple[Verdict, ...]:
        return tuple(self.doc.verdicts)

    @property
    def description(self) -> str:
        """The description without the trailing plan/factor-model digest stamp (shown in the privacy section)."""
        return plain_description(self.doc.description)

    @property
    def is_table(self) -> bool:
        return self.doc.is_table

    # --- the spec the gate computed it from ---
    def _spec(self, key: str) -> Any:
        return self.doc.spec.get(key)

    @property
    def years(self) -> tuple[int, ...]:
        return tuple(int(y) for y in self._spec("years") or ())

    @property
    def table(self) -> str:
        return str(self._spec("table") or "linked")

    @property
    def outcome(self) -> str | None:
        """The outcome variable the output is about (a mean table's value variable counts as its outcome)."""
        value = self._spec("outcome") or (self._spec("value") if self.kind == "mean_table" else None)
        return str(value) if value else None

    @property
    def variable(self) -> str | None:
        """The one variable an association test or regression relates the outcome to."""
        value = self._spec("variable")
        return str(value) if value else None

    @property
    def by(self) -> tuple[str, ...]:
        return tuple(str(v) for v in self._spec("by") or ())

    @property
    def labels(self) -> tuple[str, ...]:
        """The two labels of a comparison (``a`` minus ``b``); empty for everything else."""
        return tuple(str(v) for v in self._spec("labels") or ())

    @property
    def mode(self) -> str | None:
        value = self._spec("mode")
        return str(value) if value else None

    @property
    def is_comparison(self) -> bool:
        return self.kind == "model_metrics" and len(self.labels) == 2

    @property
    def is_year_change(self) -> bool:
        return self.is_comparison and self.mode == "years"

    @property
    def top_k_percent(self) -> float | None:
        value = self._spec("top_k_percent")
        if value is None:
            value = (self.values.get("metrics") or {}).get("top_k_percent")
        return float(value) if isinstance(value, int | float) else None

    @property
    def variables_of(self) -> Mapping[str, tuple[str, ...]]:
        raw = self._spec("variables_of") or {}
        return {str(k): tuple(str(v) for v in vs) for k, vs in raw.items()}

    @property
    def features(self) -> tuple[str, ...]:
        return tuple(str(v) for v in self._spec("features") or ())

    @property
    def test(self) -> str | None:
        value = self._spec("test")
        return str(value) if value else None

    @property
    def scope(self) -> Scope:
        return Scope(change=self.is_year_change, years=tuple(sorted(set(self.years))))

    # --- labels from the analysis' name convention (grouping and captions only) ---
    @property
    def feature_set(self) -> str:
        """The feature set part of ``<scope>.<outcome>.<feature set>.<part>``, or "" when the name has none."""
        parts = self.name.split(".")
        if self.outcome and self.outcome in parts:
            at = parts.index(self.outcome) + 1
            if at < len(parts) and parts[at] not in ("positives", "compare", "factors"):
                return parts[at]
        return ""

    @property
    def importance_method(self) -> str:
        """``permutation`` or ``impurity`` from ``….importance.<method>``; "importance" when not named."""
        parts = self.name.split(".")
        if "importance" in parts[:-1]:
            return parts[parts.index("importance") + 1]
        return "importance"


def plain_description(text: str) -> str:
    """``text`` without the trailing ``[plan sha256:…; factor model sha256:…]`` stamp."""
    at = text.rfind(" [plan sha256:")
    return text[:at].rstrip() if at >= 0 and text.rstrip().endswith("]") else text


@dataclass(frozen=True, slots=True)
class LedgerHead:
    seq: int
    entry_hash: str

    @property
    def entry_id(self) -> str:
        return f"L{self.seq:06d}"


def load_released(workspace: Path) -> tuple[list[Release], LedgerHead]:
    """Every release document of ``WS/released/`` (sorted by ledger entry) and the published ledger head.

    Refuses (``WorkspaceError``) a workspace with nothing released, and (``InputError``) a release file that
    is not a gate document: the report must not show a number the gate did not pass.
    """
    released_dir = Path(workspace) / RELEASED_DIR
    head_path = released_dir / HEAD_FILE
    if not released_dir.is_dir() or not head_path.is_file():
        raise WorkspaceError(
            f"{released_dir}: no released outputs (no {HEAD_FILE})",
            hint="run the analysis first: kansrijk coordinator analyse WS --plan PLAN ...",
        )
    try:
        head_doc = json.loads(head_path.read_text(encoding="utf-8"))
        head = LedgerHead(seq=int(head_doc["seq"]), entry_hash=str(head_doc["entry_hash"]))
    except (ValueError, KeyError, TypeError):
        raise InputError(f"{head_path}: not a ledger head file", hint="run: kansrijk ledger verify WS") from None
    releases = [_read(path) for path in sorted(released_dir.glob("*.json")) if path.name != HEAD_FILE]
    releases.sort(key=lambda r: (r.seq, r.name))
    return releases, head


def _read(path: Path) -> Release:
    doc = read_document(path)
    return Release(doc=doc, file_digest="sha256:" + hashlib.sha256(path.read_bytes()).hexdigest())


__all__ = ["POOLED", "LedgerHead", "Release", "Scope", "load_released", "plain_description"]
