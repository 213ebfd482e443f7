"""A released decision tree, read from the gate-checked structure, and its leaves written out as rules.

The gate releases a tree as its nodes: each split names a canonical variable and either a threshold (a person goes
left when ``value <= threshold``) or a set of categories (left when the value is one of them); a missing value goes
left when ``missing_left``. Every node carries the class counts the gate counted on its own data (negative,
positive), unless a tree rule withheld them (then they are ``null``, and shown as *withheld*, never guessed).

- ``leaf_rules`` turns the path to each leaf into one readable rule, merging the conditions on one variable
  ("WOZ value between €122,500 and €145,500 and youth care: 23% (412 persons)").
- ``coordinator.report.tree_svg`` draws the same tree as a diagram.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kansrijk.schema import VARIABLES

from .fmt import category_label, fmt_number, fmt_percent, fmt_threshold, is_flag, join_and, label, schema_categories


@dataclass(frozen=True, slots=True)
class Node:
    node_id: int
    depth: int
    counts: tuple[int, int] | None  # (negative, positive) persons; None when withheld
    feature: str | None
    threshold: float | None
    categories: tuple[Any, ...]
    missing_left: bool
    left: int | None
    right: int | None

    @property
    def is_leaf(self) -> bool:
        return self.feature is None

    @property
    def persons(self) -> int | None:
        return None if self.counts is None else self.counts[0] + self.counts[1]

    @property
    def rate(self) -> float | None:
        n = self.persons
        return None if self.counts is None or not n else self.counts[1] / n


def _counts(raw: Any) -> tuple[int, int] | None:
    """(negative, positive) from a released node; ``None`` (withheld) for null or any count that is not a number."""
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        return None
    if not all(isinstance(c, int | float) and not isinstance(c, bool) for c in raw):
        return None
    return int(raw[0]), int(raw[1])


@dataclass(frozen=True, slots=True)
class Tree:
    nodes: Mapping[int, Node]
    root: int = 0

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> Tree | None:
        """The tree of a ``tree_structure`` release, or ``None`` when its nodes do not form one tree."""
        nodes: dict[int, Node] = {}
        try:
            for raw in values.get("nodes") or ():
                counts = raw.get("class_counts")
                feature = raw.get("feature")
                node = Node(
                    node_id=int(raw["node_id"]),
                    depth=int(raw.get("depth") or 0),
                    counts=_counts(counts),
                    feature=str(feature) if feature else None,
                    threshold=float(raw["threshold"]) if raw.get("threshold") is not None else None,
                    categories=tuple(raw.get("categories") or ()),
                    missing_left=bool(raw.get("missing_left")),
                    left=int(raw["left"]) if raw.get("left") is not None else None,
                    right=int(raw["right"]) if raw.get("right") is not None else None,
                )
                nodes[node.node_id] = node
        except (KeyError, TypeError, ValueError):
            return None
        tree = cls(nodes)
        return tree if nodes and 0 in nodes and tree._well_formed() else None

    def _well_formed(self) -> bool:
        seen: set[int] = set()
        stack = [self.root]
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in self.nodes:
                return False
            seen.add(node_id)
            node = self.nodes[node_id]
            if not node.is_leaf:
                if node.left is None or node.right is None:
                    return False
                stack += [node.left, node.right]
        return len(seen) == len(self.nodes)

    def children(self, node: Node) -> tuple[Node, Node]:
        assert node.left is not None and node.right is not None
        return self.nodes[node.left], self.nodes[node.right]

    def leaves(self, node: Node | None = None) -> list[Node]:
        """The leaves under ``node`` (default: the root), left to right."""
        node = node or self.nodes[self.root]
        if node.is_leaf:
            return [node]
        left, right = self.children(node)
        return self.leaves(left) + self.leaves(right)

    @property
    def depth(self) -> int:
        return max(self._depths().values())

    def _depths(self) -> dict[int, int]:
        out: dict[int, int] = {}
        stack = [(self.root, 0)]
        while stack:
            node_id, d = stack.pop()
            out[node_id] = d
            node = self.nodes[node_id]
            if not node.is_leaf:
                left, right = self.children(node)
                stack += [(left.node_id, d + 1), (right.node_id, d + 1)]
        return out

    @property
    def withheld(self) -> bool:
        return any(n.counts is None for n in self.nodes.values())

    def paths(self) -> dict[int, list[tuple[Node, bool]]]:
        """For every leaf: the splits on the way to it and whether the way went left."""
        out: dict[int, list[tuple[Node, bool]]] = {}
        stack: list[tuple[int, list[tuple[Node, bool]]]] = [(self.root, [])]
        while stack:
            node_id, path = stack.pop()
            node = self.nodes[node_id]
            if node.is_leaf:
                out[node_id] = path
            else:
                left, right = self.children(node)
                stack += [(left.node_id, [*path, (node, True)]), (right.node_id, [*path, (node, False)])]
        return out


# --- rules ---------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Condition:
    """What the splits on one variable say about a person who reaches a node."""

    low: float | None = None  # value > low
    high: float | None = None  # value <= high
    inside: set[Any] | None = None  # value in these categories
    outside: set[Any] = field(default_factory=set)  # value not in these
    missing_ok: bool = True  # a missing value also reaches the node

    def add(self, node: Node, went_left: bool) -> None:
        self.missing_ok = self.missing_ok and (node.missing_left == went_left)
        if node.threshold is not None:
            if went_left:
                self.high = node.threshold if self.high is None else min(self.high, node.threshold)
            else:
                self.low = node.threshold if self.low is None else max(self.low, node.threshold)
        else:
            cats = set(node.categories)
            if went_left:
                self.inside = cats if self.inside is None else self.inside & cats
            else:
                self.outside |= cats

    def text(self, variable: str, *, short: bool = False) -> str:
        """The condition in words; ``short`` summarises a list of more than ``LIST_MAX`` values by its size."""
        name = label(variable)
        unknown = " (or unknown)" if self.missing_ok else ""
        if self.low is not None or self.high is not None:
            return _range_text(variable, self.low, self.high) + unknown
        known = schema_categories(variable)
        allowed: set[Any] | None = None
        if self.inside is not None or known:
            allowed = (set(self.inside) if self.inside is not None else set(known)) - self.outside
        if allowed is not None and is_flag(variable) and len(allowed) == 1:
            return (name if True in allowed else f"no {name}") + unknown
        if allowed is not None:
            ordered = [c for c in known if c in allowed] + sorted((c for c in allowed if c not in known), key=str)
            if not ordered:
                return f"{name} is unknown" if self.missing_ok else f"no value of {name}"
            return f"{name} is {values_text(ordered, short)}" + unknown
        excluded = sorted(self.outside, key=str)
        return f"{name} is not {values_text(excluded, short)}" + unknown


LIST_MAX = 6  # a rule lists at most this many values of one variable in its short form


def values_text(values: Sequence[Any], short: bool) -> str:
    if short and len(values) > LIST_MAX:
        return f"one of {len(values)} values ({', '.join(category_label(v) for v in values[:3])}, …)"
    return join_and([category_label(v) for v in values], "or")


def whole_numbers(variable: str, *thresholds: float | None) -> bool:
    """Whether the variable takes whole numbers: an integer canonical variable without a unit (grade), or a derived
    one (age, last year's grade) whose thresholds all lie halfway between two whole numbers, as a tree's split
    between two whole values does."""
    v = VARIABLES.get(variable)
    if v is not None:
        return v.kind.value == "int" and v.unit is None
    given = [t for t in thresholds if t is not None]
    return bool(given) and all(t - math.floor(t) == 0.5 for t in given)


def _range_text(variable: str, low: float | None, high: float | None) -> str:
    """"age 12 to 15", "grade at most 2", "WOZ value between €122,500 and €145,500", "weight above 17.85".

    For a whole-number variable without a unit (age, grade) a threshold between two whole numbers is written as
    the whole numbers it keeps (a person goes left when the value is at most the threshold)."""
    name = label(variable)
    if whole_numbers(variable, low, high):
        lo = None if low is None else math.floor(low) + 1  # value > low
        hi = None if high is None else math.floor(high)  # value <= high
        if lo is not None and hi is not None:
            return f"{name} {lo}" if lo == hi else f"{name} {lo} to {hi}"
        if hi is not None:
            return f"{name} at most {hi}"
        return f"{name} {lo} or more"
    if low is not None and high is not None:
        return f"{name} between {fmt_threshold(variable, low)} and {fmt_threshold(variable, high)}"
    if high is not None:
        return f"{name} at most {fmt_threshold(variable, high)}"
    return f"{name} above {fmt_threshold(variable, low or 0.0)}"


@dataclass(frozen=True, slots=True)
class Rule:
    node_id: int
    conditions: tuple[str, ...]
    persons: int | None
    positives: int | None
    full: tuple[str, ...] = ()  # the conditions with every value listed (when ``conditions`` summarise a list)

    @property
    def rate(self) -> float | None:
        return None if self.persons in (None, 0) or self.positives is None else self.positives / self.persons

    @property
    def text(self) -> str:
        return join_and(list(self.conditions)) if self.conditions else "everyone"

    @property
    def full_text(self) -> str:
        return join_and(list(self.full or self.conditions)) if self.conditions else "everyone"

    def sentence(self, unit: str = "persons") -> str:
        """ "WOZ value at most €145,500 and youth care: 23% (412 persons)"."""
        if self.persons is None:
            return f"{self.text}: counts withheld"
        return f"{self.text}: {fmt_percent(self.rate)} ({fmt_number(self.persons)} {unit})"


def leaf_rules(tree: Tree) -> list[Rule]:
    """One rule per leaf, in the tree's left-to-right order."""
    out = []
    paths = tree.paths()
    for leaf in tree.leaves():
        conditions: dict[str, _Condition] = {}
        for node, went_left in paths[leaf.node_id]:
            assert node.feature is not None
            conditions.setdefault(node.feature, _Condition()).add(node, went_left)
        out.append(
            Rule(
                node_id=leaf.node_id,
                conditions=tuple(c.text(v, short=True) for v, c in conditions.items()),
                full=tuple(c.text(v) for v, c in conditions.items()),
                persons=leaf.persons,
                positives=None if leaf.counts is None else leaf.counts[1],
            )
        )
    return out


def rules_rows(rules: Sequence[Rule]) -> list[Rule]:
    """Rules with the highest outcome rate first; rules whose counts were withheld last."""
    return sorted(rules, key=lambda r: (r.rate is None, -(r.rate or 0.0), r.node_id))


__all__ = ["LIST_MAX", "Node", "Rule", "Tree", "leaf_rules", "rules_rows", "values_text", "whole_numbers"]
