"""A released decision tree, read from the gate-checked structure and shown two ways: a diagram and rules.

The gate releases a tree as its nodes: each split names a canonical variable and either a threshold (a person goes
left when ``value <= threshold``) or a set of categories (left when the value is one of them); a missing value goes
left when ``missing_left``. Every node carries the class counts the gate counted on its own data (negative,
positive), unless a tree rule withheld them (then they are ``null``, and shown as *withheld*, never guessed).

- ``leaf_rules`` turns the path to each leaf into one readable rule, merging the conditions on one variable
  ("WOZ value between €122,500 and €145,500 and youth care: 23% (412 persons)").
- ``tree_svg`` draws the tree as a small hand-written SVG (no library): a box per node with its split question,
  persons and outcome rate, leaves coloured by rate, and the depth cut where more leaves would not fit the page
  (a cut branch shows as one box with how many leaves it holds; the rules still list every leaf).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup, escape

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
            return f"{name} is {_values_text(ordered, short)}" + unknown
        excluded = sorted(self.outside, key=str)
        return f"{name} is not {_values_text(excluded, short)}" + unknown


LIST_MAX = 6  # a rule lists at most this many values of one variable in its short form


def _values_text(values: Sequence[Any], short: bool) -> str:
    if short and len(values) > LIST_MAX:
        return f"one of {len(values)} values ({', '.join(category_label(v) for v in values[:3])}, …)"
    return join_and([category_label(v) for v in values], "or")


def _whole(variable: str, *thresholds: float | None) -> bool:
    """Whether the variable takes whole numbers: an integer canonical variable without a unit (grade), or a derived
    one (age, last year's grade) whose thresholds all lie halfway between two whole numbers, as a tree's split
    between two whole values does."""
    v = VARIABLES.get(variable)
    if v is not None:
        return v.kind.value == "int" and v.unit is None
    given = [t for t in thresholds if t is not None]
    return bool(given) and all(t - math.floor(t) == 0.5 for t in given)


def _range_text(variable: str, low: float | None, high: float | None) -> str:
    """"age 12 to 15", "grade at most 2", "WOZ value between €122,500 and €145,500", "BMI above 17.85".

    For a whole-number variable without a unit (age, grade) a threshold between two whole numbers is written as
    the whole numbers it keeps (a person goes left when the value is at most the threshold)."""
    name = label(variable)
    if _whole(variable, low, high):
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


# --- the diagram -----------------------------------------------------------------------------------------------
SLOT = 128  # horizontal room per box at the bottom of the drawing
BOX_W = 118
LINE = 14
PAD = 6
EDGE_ROOM = 40  # vertical room between a box and its children (the yes/no labels sit in it)
MAX_SLOTS = 8  # boxes side by side at 1,100 px; deeper branches are cut and shown as one box
CHARS = 16  # characters per line of a box at 11 px (DejaVu Sans), with padding
_RAMP = ((255, 247, 237), (254, 215, 170), (251, 146, 60), (234, 88, 12), (154, 52, 18))


def _question(node: Node) -> tuple[str, str, str]:
    """The split as a question, with the labels of its left and right branches."""
    var = str(node.feature)
    name = label(var)
    left_unknown = " or unknown" if node.missing_left else ""
    right_unknown = "" if node.missing_left else " or unknown"
    if node.threshold is not None:
        if _whole(var, node.threshold):
            return f"{name} ≤ {math.floor(node.threshold)}?", "yes" + left_unknown, "no" + right_unknown
        return f"{name} ≤ {fmt_threshold(var, node.threshold)}?", "yes" + left_unknown, "no" + right_unknown
    cats = list(node.categories)
    if is_flag(var) and len(cats) == 1:
        if cats[0] is False:  # left = "not the flag": ask for the flag, so "yes" is the right branch
            return f"{name}?", "no" + left_unknown, "yes" + right_unknown
        return f"{name}?", "yes" + left_unknown, "no" + right_unknown
    return f"{name}: {_values_text(cats, True)}?", "yes" + left_unknown, "no" + right_unknown


def _wrap(text: str, width: int = CHARS, max_lines: int = 3) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if len(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word if len(word) <= width else word[: width - 1] + "…"
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = (lines[-1][: width - 1] + "…") if len(lines[-1]) >= width else lines[-1] + "…"
    return lines


def _colour(t: float) -> tuple[str, str]:
    """Fill and text colour for a rate at ``t`` in [0, 1] of the tree's highest leaf rate."""
    t = min(1.0, max(0.0, t))
    at = t * (len(_RAMP) - 1)
    i = min(int(at), len(_RAMP) - 2)
    rgb = tuple(round(a + (b - a) * (at - i)) for a, b in zip(_RAMP[i], _RAMP[i + 1], strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb), ("#ffffff" if t > 0.65 else "#1a202c")


def cut_depth(tree: Tree, max_slots: int = MAX_SLOTS) -> int:
    """The deepest level to draw so that at most ``max_slots`` boxes sit side by side (at least 1)."""
    depths = tree._depths()
    for d in range(tree.depth, 0, -1):
        slots = sum(1 for nid, nd in depths.items() if nd == d or (nd < d and tree.nodes[nid].is_leaf))
        if slots <= max_slots:
            return d
    return 1


@dataclass(frozen=True, slots=True)
class _Box:
    node: Node
    x: float
    y: float
    lines: tuple[str, ...]
    stats: str
    fill: str
    ink: str
    title: str
    height: float
    cut: bool


def tree_svg(tree: Tree, *, outcome: str, unit: str = "persons") -> Markup:
    """The tree as an SVG diagram (see the module docstring)."""
    depth = cut_depth(tree)
    shown: list[tuple[Node, bool]] = []  # (node, drawn as a box without children)

    def visit(node: Node, d: int) -> None:
        terminal = node.is_leaf or d >= depth
        shown.append((node, terminal))
        if not terminal:
            for child in tree.children(node):
                visit(child, d + 1)

    visit(tree.nodes[tree.root], 0)
    terminals = [n for n, t in shown if t]
    rates = [n.rate for n in terminals if n.rate is not None]
    top = max(rates) if rates else 0.0
    # x: terminal boxes in slots left to right, a split centred over its two children
    terminal_ids = {n.node_id for n in terminals}
    xs: dict[int, float] = {}
    slot = iter(range(len(terminals)))
    level_of: dict[int, int] = {}

    def place(node: Node, d: int) -> float:
        level_of[node.node_id] = d
        if node.node_id in terminal_ids:
            xs[node.node_id] = SLOT * next(slot) + SLOT / 2
        else:
            left, right = tree.children(node)
            xs[node.node_id] = (place(left, d + 1) + place(right, d + 1)) / 2
        return xs[node.node_id]

    place(tree.nodes[tree.root], 0)
    boxes: dict[int, _Box] = {}
    for node, terminal in shown:
        n_text = "counts withheld" if node.persons is None else f"{fmt_number(node.persons)} · {fmt_percent(node.rate)}"
        if terminal:
            below = len(tree.leaves(node))
            if node.persons is None:
                lines: tuple[str, ...] = ("withheld",)
            else:
                lines = (fmt_percent(node.rate),)
            stats = f"{fmt_number(node.persons)} {unit}" if node.persons is not None else "counts withheld"
            if not node.is_leaf:
                lines = (*lines, f"{below} leaves below")
            fill, ink = ("#e2e8f0", "#1a202c")  # withheld: grey
            if node.rate is not None and top > 0:
                fill, ink = _colour(node.rate / top)
            title = (
                f"{'branch cut here: ' + str(below) + ' leaves below; ' if not node.is_leaf else 'leaf: '}"
                f"{n_text} with {outcome}"
                if node.persons is not None
                else "the gate withheld this node's counts"
            )
        else:
            question, _, _ = _question(node)
            lines = tuple(_wrap(question))
            stats = n_text
            fill, ink = "#ffffff", "#1a202c"
            title = f"{question} ({n_text} with {outcome})"
        height = PAD * 2 + LINE * (len(lines) + 1)
        boxes[node.node_id] = _Box(node, xs[node.node_id], 0.0, lines, stats, fill, ink, title, height, terminal)
    level_height = max(b.height for b in boxes.values()) + EDGE_ROOM
    width = SLOT * len(terminals)
    legend_h = 36
    height = level_height * (max(level_of[n.node_id] for n, _ in shown) + 1) - EDGE_ROOM + 8 + legend_h
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="tree-diagram" role="img" focusable="false" '
        f'width="{width + 16:.0f}" height="{height:.0f}" viewBox="-8 -4 {width + 16:.0f} {height:.0f}" '
        f'font-family="DejaVu Sans, Verdana, sans-serif" font-size="11">'
    ]
    # edges first, so boxes sit on top of them
    for node, terminal in shown:
        if terminal:
            continue
        _, yes, no = _question(node)
        y0 = level_height * level_of[node.node_id] + boxes[node.node_id].height
        for child, text in zip(tree.children(node), (yes, no), strict=True):
            x0, x1 = xs[node.node_id], xs[child.node_id]
            y1 = level_height * level_of[child.node_id]
            parts.append(
                f'<path class="edge" d="M{x0:.1f},{y0:.1f} C{x0:.1f},{(y0 + y1) / 2:.1f} {x1:.1f},{(y0 + y1) / 2:.1f} '
                f'{x1:.1f},{y1:.1f}" fill="none" stroke="#a0aec0" stroke-width="1.5"/>'
            )
            mx, my = (x0 + x1) / 2, (y0 + y1) / 2
            anchor = "end" if x1 < x0 else "start"
            dx = -4 if x1 < x0 else 4
            parts.append(
                f'<text class="edge-label" x="{mx + dx:.1f}" y="{my + 4:.1f}" text-anchor="{anchor}" font-size="10" '
                f'fill="#4a5568">{escape(text)}</text>'
            )
    for node, _ in shown:
        box = boxes[node.node_id]
        x = box.x - BOX_W / 2
        y = level_height * level_of[node.node_id]
        css = "node cut" if box.cut and not node.is_leaf else ("node leaf" if node.is_leaf else "node split")
        parts.append(f'<g class="{css}" data-node="{node.node_id}"><title>{escape(box.title)}</title>')
        stroke = "#718096" if not box.cut else "#c05621"
        dash = ' stroke-dasharray="4 3"' if box.cut and not node.is_leaf else ""
        parts.append(
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{BOX_W}" height="{box.height:.0f}" rx="5" fill="{box.fill}" '
            f'stroke="{stroke}"{dash}/>'
        )
        ty = y + PAD + LINE - 3
        for i, line in enumerate(box.lines):
            weight = ' font-weight="bold"' if box.cut and i == 0 else ""
            parts.append(
                f'<text x="{box.x:.1f}" y="{ty:.1f}" text-anchor="middle" fill="{box.ink}"{weight}>'
                f"{escape(line)}</text>"
            )
            ty += LINE
        parts.append(
            f'<text x="{box.x:.1f}" y="{ty:.1f}" text-anchor="middle" fill="{box.ink}" font-size="10">'
            f"{escape(box.stats)}</text></g>"
        )
    # legend: the colour ramp from 0% to the highest leaf rate drawn, as swatches (no gradient: no url() reference)
    ly = height - legend_h + 10
    caption = f"share with {outcome}:"
    ramp_x = round(len(caption) * 5.7) + 30  # after the caption (10 px DejaVu Sans) and the "0%" label
    swatches = "".join(
        f'<rect x="{ramp_x + 24 * i}" y="{ly:.1f}" width="24" height="14" fill="{_colour(i / 4)[0]}"/>'
        for i in range(5)
    )
    parts.append(
        f'<g class="legend"><text x="0" y="{ly + 11:.1f}" font-size="10" fill="#4a5568">{escape(caption)}</text>'
        f'<text x="{ramp_x - 4}" y="{ly + 11:.1f}" font-size="10" text-anchor="end" fill="#4a5568">0%</text>'
        f'{swatches}<rect x="{ramp_x}" y="{ly:.1f}" width="120" height="14" fill="none" stroke="#cbd5e0"/>'
        f'<text x="{ramp_x + 126}" y="{ly + 11:.1f}" font-size="10" fill="#4a5568">'
        f"{escape(fmt_percent(top))}</text></g>"
    )
    parts.append("</svg>")
    # Every text in the drawing was escaped above; the rest are numbers formatted here.
    return Markup("".join(parts))  # noqa: S704


def rules_rows(rules: Sequence[Rule]) -> list[Rule]:
    """Rules with the highest outcome rate first; rules whose counts were withheld last."""
    return sorted(rules, key=lambda r: (r.rate is None, -(r.rate or 0.0), r.node_id))


def shown_depth(tree: Tree) -> tuple[int, int]:
    """(depth drawn, depth of the tree)."""
    return cut_depth(tree), tree.depth


def rate_range(rules: Sequence[Rule]) -> tuple[float, float] | None:
    rates = [r.rate for r in rules if r.rate is not None]
    return (min(rates), max(rates)) if rates else None


__all__ = ["Node", "Rule", "Tree", "cut_depth", "leaf_rules", "rate_range", "rules_rows", "shown_depth", "tree_svg"]
