"""A released decision tree drawn as a small hand-written SVG (no plotting library, no script).

A box per node: a split shows its question ("WOZ value ≤ €145,500?") with persons and outcome rate, a leaf its
outcome rate and persons, coloured from light (0%) to dark (the highest leaf rate drawn). The left branch is the
question's answer written on its line ("yes", "no or unknown": a missing value follows the branch the tree chose
for it). When more than ``MAX_SLOTS`` boxes would sit side by side the depth is cut: a branch below the cut shows
as one dashed box with how many leaves it holds (the rules list every leaf). Counts the gate withheld are drawn as
"withheld". Every text is escaped; the rest are numbers formatted here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from markupsafe import Markup, escape

from .fmt import fmt_number, fmt_percent, fmt_threshold, is_flag, label
from .trees import Node, Tree, values_text, whole_numbers

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
        if whole_numbers(var, node.threshold):
            return f"{name} ≤ {math.floor(node.threshold)}?", "yes" + left_unknown, "no" + right_unknown
        return f"{name} ≤ {fmt_threshold(var, node.threshold)}?", "yes" + left_unknown, "no" + right_unknown
    cats = list(node.categories)
    if is_flag(var) and len(cats) == 1:
        if cats[0] is False:  # left = "not the flag": ask for the flag, so "yes" is the right branch
            return f"{name}?", "no" + left_unknown, "yes" + right_unknown
        return f"{name}?", "yes" + left_unknown, "no" + right_unknown
    return f"{name}: {values_text(cats, True)}?", "yes" + left_unknown, "no" + right_unknown


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




def shown_depth(tree: Tree) -> tuple[int, int]:
    """(depth drawn, depth of the tree)."""
    return cut_depth(tree), tree.depth


__all__ = ["MAX_SLOTS", "cut_depth", "shown_depth", "tree_svg"]
