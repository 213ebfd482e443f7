"""Released decision trees: each drawn as a diagram and written out as rules, from the gate-checked structure."""

from __future__ import annotations

import re
from collections.abc import Sequence

from ..catalogue import Catalogue
from ..fmt import MISSING, capitalise, feature_set_label, fmt_number, fmt_percent, label
from ..released import Release, Scope
from ..tree_svg import shown_depth, tree_svg
from ..trees import Tree, leaf_rules, rules_rows
from ..view import Cell, Figure, Item, Section, TableView, anchor, badges, by_scope, group_badges


def _pruned(r: Release) -> tuple[int, int] | None:
    found = re.search(r"pruned from (\d+) to (\d+) leaves", r.description)
    return (int(found.group(1)), int(found.group(2))) if found else None


def trees_section(catalogue: Catalogue) -> Section:
    intro = (
        "The decision trees refitted on the whole population and released as structures, after pruning every leaf "
        "that breaks the release policy's leaf rules (minimum persons and class counts per leaf). The gate applied "
        "each tree's splits to its own data and counted the persons in every node; those counts are what is drawn. "
        "Each tree is drawn as a diagram (a split asks a question; the left branch is its answer given above the "
        "line; leaves are coloured by the share with the outcome; branches too deep to fit are cut and shown as one "
        "box) and written out as rules, one per leaf, highest share first. A threshold sends values at most it to "
        "the left. Counts a tree rule withheld are shown as withheld."
    )
    items: list[Item] = []
    for scope, group in by_scope(catalogue.trees):
        items.append(_overview(scope, group))
        items.extend(tree_item(r) for r in group)
    return Section("trees", "Decision trees", intro, tuple(items), empty="No tree structure was released.")


def _overview(scope: Scope, group: Sequence[Release]) -> Item:
    rows = []
    for r in group:
        tree = Tree.from_values(r.values)
        pruned = _pruned(r)
        used = sorted({str(n.get("feature")) for n in r.values.get("nodes") or () if n.get("feature")})
        rows.append(
            (
                Cell(label(r.outcome or ""), href=f"#trees-{anchor(r.name)}"),
                Cell(feature_set_label(r.feature_set)),
                Cell(fmt_number(len(tree.leaves())) if tree else MISSING, "num"),
                Cell(fmt_number(tree.depth) if tree else MISSING, "num"),
                Cell(f"{pruned[0]} → {pruned[1]}" if pruned else MISSING, "num"),
                Cell(fmt_number(r.values.get("min_samples_leaf")), "num"),
                Cell(", ".join(label(x) for x in used) or "none"),
            )
        )
    table = TableView(
        "Released trees: leaves, depth, leaves before → after pruning, minimum persons per leaf at training, split "
        "variables",
        ("outcome", "feature set", "leaves", "depth", "pruned", "min leaf", "split variables"),
        tuple(rows),
    )
    return Item(
        title=f"Released trees, {scope.label}",
        anchor=f"trees-{scope.key}",
        tables=(table,),
        badges=group_badges(group),
        sources=tuple(r.name for r in group),
    )


def tree_item(r: Release) -> Item:
    """One tree: a sentence on its size, the diagram, and its leaves as rules."""
    outcome = label(r.outcome or "the outcome")
    unit = "persons" if r.scope.single else "person-years"
    title = f"{capitalise(label(r.outcome or ''))} — {feature_set_label(r.feature_set)}, {r.scope.label}"
    tree = Tree.from_values(r.values)
    if tree is None:
        return Item(
            title=title,
            anchor=anchor(r.name),
            text="The released nodes do not form one tree, so it is not drawn; the released file holds them.",
            badges=badges(r),
            sources=(r.name,),
            level=4,
        )
    rules = leaf_rules(tree)
    drawn, depth = shown_depth(tree)
    root = tree.nodes[tree.root]
    text = (
        f"{len(rules)} leaves, depth {depth}"
        + (
            f"; drawn to depth {drawn}, deeper branches cut into one box each (the rules list every leaf)"
            if drawn < depth
            else ""
        )
        + "."
    )
    if root.persons is not None:
        text += f" It splits {fmt_number(root.persons)} {unit}, of whom {fmt_percent(root.rate)} have {outcome}."
    if tree.withheld:
        text += " The gate withheld some counts (a tree rule); they are shown as withheld."
    figure = Figure(
        svg=tree_svg(tree, outcome=outcome, unit=unit),
        caption=f"Decision tree for {outcome} ({feature_set_label(r.feature_set)}, {r.scope.label})",
        alt=f"Diagram of the decision tree for {outcome}: every split with its question, persons and share with "
        f"{outcome}, and the leaves coloured by that share. The table below gives every leaf as a rule.",
        css="tree",
    )
    rows = []
    for rule in rules_rows(rules):
        withheld = rule.persons is None
        rows.append(
            (
                Cell(rule.text, title=rule.full_text if rule.full_text != rule.text else ""),
                Cell("withheld", "suppressed", "counts withheld by a tree rule")
                if withheld
                else Cell(fmt_number(rule.persons), "num"),
                Cell("withheld", "suppressed", "counts withheld by a tree rule")
                if withheld
                else Cell(fmt_percent(rule.rate), "num"),
            )
        )
    table = TableView(
        f"Every leaf as a rule, highest share first (a person in a leaf meets all of its conditions; {unit})",
        ("rule", unit, f"share with {outcome}"),
        tuple(rows),
        css="rules",
    )
    return Item(
        title=title,
        anchor=anchor(r.name),
        text=text,
        badges=badges(r),
        figures=(figure,),
        tables=(table,),
        sources=(r.name,),
        level=4,
    )
