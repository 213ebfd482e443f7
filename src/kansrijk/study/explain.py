"""A study file in words, for the privacy officer who reviews and signs it (``kansrijk policy explain``)."""

from __future__ import annotations

from kansrijk.study.model import Derivation, Kind, StudyFile, Variable


def _values(var: Variable) -> str:
    if var.kind == Kind.CATEGORY:
        return "one of " + ", ".join(var.categories)
    if var.kind == Kind.CODE:
        return f"a code matching {var.pattern}"
    if var.kind == Kind.BOOL:
        return "yes or no"
    if var.kind == Kind.BINARY:
        return "a keyed pseudonym (never a BSN)"
    low = "" if var.minimum is None else f"{var.minimum:g}"
    high = "" if var.maximum is None else f"{var.maximum:g}"
    unit = f" {var.unit}" if var.unit else ""
    return f"a {'whole ' if var.kind == Kind.INT else ''}number from {low or '-∞'} to {high or '∞'}{unit}"


def _rule(source: str, d: Derivation) -> str:
    if d.rule == "equals":
        return f"{source} is {str(d.value).lower() if isinstance(d.value, bool) else d.value}"
    if d.rule == "in":
        return f"{source} is one of {', '.join(map(str, d.values))}"
    words = {"above": "above", "at_least": "at least", "below": "below"}[d.compare]
    if d.by_age:
        bands = "; ".join(f"ages {b.min_age}-{b.max_age}: {b.value:g}" for b in d.by_age)
        return f"{source} is {words} the cut-off for the person's age ({bands})"
    return f"{source} is {words} {d.value:g}"


def explain_study(study: StudyFile) -> list[str]:
    """What the study links, about whom, and how each outcome is defined, in sentences an officer can check."""
    lines = [
        f"Study '{study.name}': {study.title}",
        f"Reviewed by {study.reviewed_by} on {study.reviewed_on}. Municipality {study.geography.municipality} "
        f"(code {study.geography.municipality_code}). Its digest is the schema version every bundle carries.",
        "",
        f"Partners ({len(study.partners)}), and the variables each holds:",
    ]
    for name, partner in study.partners.items():
        held = [v for v, var in study.variables.items() if name in var.holders and v != "pseudonym"]
        lines.append(f"- {name}: {partner.description}; holds {', '.join(held)}")
    lines += ["", "Variables:"]
    lines += [f"- {name}: {var.description.rstrip('.')} ({_values(var)})" for name, var in study.variables.items()]
    lines += [
        "",
        f"After linkage the partners must agree on {', '.join(study.shared_attributes)}; "
        + (f"a tie is settled by {study.tiebreak_partner}" if study.tiebreak_partner else "a tie is excluded")
        + ", an unresolved conflict excludes the person.",
        "",
        "Outcomes (missing outside the population at risk and where the source is missing):",
    ]
    for name, o in study.outcomes.items():
        cond = "".join(f", {v} in {', '.join(map(str, allowed))}" for v, allowed in o.at_risk.conditions.items())
        lines.append(
            f"- {name}: true when {_rule(o.source, o.derivation)}; among {o.at_risk.description} "
            f"(ages {o.at_risk.min_age}-{o.at_risk.max_age}{cond})"
        )
    lines += ["", f"Factor model: {study.factor_model} (relative to the study file)."]
    if study.synthetic is not None:
        lines.append(f"Synthetic city: {study.synthetic.generator} ({len(study.synthetic.planted)} planted effects).")
    return lines


__all__ = ["explain_study"]
