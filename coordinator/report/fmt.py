"""How the report writes numbers and names: one place, so a table, a sentence and a tree say the same thing.

Thousands are separated by commas (the report is in English); a number is never split across lines (the template
keeps numeric cells on one line, and sentences use these strings as they are). Small values are written in fixed
point with "< 0.001" where three decimals would round a positive value to 0.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

from kansrijk.schema import VARIABLES

MISSING = "–"

# Derived names as a reader says them; canonical variables take their label from the study file (anything else:
# underscores become spaces).
_DERIVED_LABEL = {"age_years": "age"}
FEATURE_SETS = {"all": "all variables", "factor": "factor model", "factor_model": "factor model"}
METRIC_ORDER = ("roc_auc", "pr_auc", "recall_at_k", "brier")
_METRIC_LABEL = {
    "roc_auc": "ROC AUC (ranking)",
    "pr_auc": "PR AUC (precision)",
    "brier": "Brier score (lower is better)",
}
_CURRENCY = {"EUR": "€"}


def label(name: str) -> str:
    """A canonical variable (or factor, outcome) name as a reader says it."""
    var = VARIABLES.get(name)
    if var is not None and var.label:
        return var.label
    return _DERIVED_LABEL.get(name, name.replace("_", " "))


def feature_set_label(name: str) -> str:
    return FEATURE_SETS.get(name, label(name) if name else "model")


def metric_label(metric: str, k_percent: float | None = None) -> str:
    """The metric's name; recall names its k ("recall in top 10%") when the release gives it."""
    if metric == "recall_at_k":
        return f"recall in top {fmt_number(k_percent)}%" if k_percent is not None else "recall in top k%"
    return _METRIC_LABEL.get(metric, label(metric))


def fmt_number(value: Any, *, digits: int = 3) -> str:
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return MISSING
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) < 1e-3 and value != 0:  # two significant digits, in fixed point (no "5.67e-05")
            places = min(12, 1 - math.floor(math.log10(abs(value))))
            return f"{value:.{places}f}".rstrip("0")
        return f"{value:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return str(value)


def as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt_p(value: Any) -> str:
    """A p-value: three decimals, and "< 0.001" for one that would round to 0 (a p-value is never exactly 0)."""
    v = as_float(value)
    if v is None:
        return MISSING
    if v < 0.0005:
        return "< 0.001"
    return f"{v:.3f}"


def fmt_importance(value: Any) -> str:
    """An importance with three decimals; below 0.0005 in size it is "< 0.001" (the fourth decimal of an
    importance is noise of the folds, and a small negative permutation importance means "none" as 0 does)."""
    v = as_float(value)
    if v is None:
        return MISSING
    if abs(v) < 0.0005:
        return "< 0.001" if v != 0 else "0"
    return f"{v:.3f}"


def fmt_metric(value: Any) -> str:
    """A model metric: three decimals, "< 0.001" for a positive one that would round to 0."""
    v = as_float(value)
    if v is None:
        return MISSING
    if 0 < abs(v) < 0.0005:
        return "< 0.001" if v > 0 else "> −0.001"
    return f"{v:.3f}"


def fmt_pm(value: Any, spread: Any) -> str:
    """A value ± its spread, both to the decimal of the spread's first significant digit (at least three, at
    most five): "0.728 ± 0.014", "0.0794 ± 0.0007". A spread of 0 or none gives the value alone."""
    v, s = as_float(value), as_float(spread)
    if v is None:
        return MISSING
    if not s:
        return fmt_metric(v)
    places = min(5, max(3, -math.floor(math.log10(abs(s)))))
    return f"{v:.{places}f} ± {abs(s):.{places}f}"


def fmt_share(value: float) -> str:
    """A share in [0, 1] with three decimals; a positive one below 0.0005 is "< 0.001"."""
    if 0 < value < 0.0005:
        return "< 0.001"
    return f"{value:.3f}"


def fmt_percent(share: float | None, *, digits: int | None = None) -> str:
    """A share in [0, 1] as a percentage: no decimals from 10% up, one below (0.5% stays visible)."""
    if share is None or not math.isfinite(share):
        return MISSING
    pct = 100 * share
    places = digits if digits is not None else (0 if abs(pct) >= 9.95 else 1)
    text = f"{pct:.{places}f}"
    if places and "." in text:
        text = text.rstrip("0").rstrip(".")
    if share > 0 and float(text) == 0:
        return "< 0.1%"
    return text + "%"


def fmt_fraction(value: Fraction | None) -> str:
    if value is None:
        return "unknown"
    if value.denominator == 1:
        return str(value.numerator)
    as_float_ = float(value)
    exact = f"{as_float_:.6f}".rstrip("0").rstrip(".")
    return exact if Fraction(exact) == value else f"{value} (≈ {exact})"


def fmt_threshold(variable: str, value: float) -> str:
    """A split threshold in the variable's unit: "€145,500" for a euro amount, "17.75" for a measure in kg/m2."""
    unit = getattr(VARIABLES.get(variable), "unit", None)
    if unit in _CURRENCY:
        return f"{_CURRENCY[unit]}{value:,.0f}"
    if float(value).is_integer():
        return f"{int(value):,}"
    places = 2 if abs(value) < 100 else 0
    return f"{value:,.{places}f}".rstrip("0").rstrip(".")


def _compact(number: str, unit: str) -> str:
    try:
        x = float(number)
    except ValueError:
        return number
    if abs(x) >= 1_000_000:
        text = f"{x / 1_000_000:g}M"
    elif abs(x) >= 1000:
        text = f"{x / 1000:g}k"
    else:
        text = f"{x:g}"
    return _CURRENCY.get(unit, "") + text


def band_label(variable: str, band: Any) -> str:
    """A public band as a plot's axis says it: "[100000,150000)" → "€100k–150k", "<100000" → "< €100k",
    ">=500000" → "≥ €500k" (the tables keep the released label)."""
    text = str(band)
    unit = getattr(VARIABLES.get(variable), "unit", None) or ""
    if text.startswith("[") and text.endswith(")") and "," in text:
        low, high = text[1:-1].split(",", 1)
        return f"{_compact(low, unit)}–{_compact(high, '')}"
    if text.startswith(">="):
        return f"≥ {_compact(text[2:], unit)}"
    if text.startswith("<"):
        return f"< {_compact(text[1:], unit)}"
    return text


def category(value: Any) -> str:
    """A category as a table cell shows it."""
    if value is None:
        return "(missing)"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and value.is_integer():
        return fmt_number(int(value))
    return str(value)


def category_label(value: Any) -> str:
    """A category inside a sentence ("two parent", "VMBO-B")."""
    return str(value).replace("_", " ") if isinstance(value, str) else category(value)


def join_and(items: list[str] | tuple[str, ...], word: str = "and") -> str:
    items = list(items)
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + f" {word} " + items[-1]


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]


def schema_categories(variable: str) -> tuple[Any, ...]:
    """The public categories of a canonical variable (booleans for a flag); () when unknown or unbounded."""
    v = VARIABLES.get(variable)
    if v is None:
        return ()
    if v.kind.value == "bool":
        return (False, True)
    return tuple(v.categories)


def is_flag(variable: str) -> bool:
    v = VARIABLES.get(variable)
    return v is not None and v.kind.value == "bool"


__all__ = [
    "FEATURE_SETS",
    "METRIC_ORDER",
    "MISSING",
    "as_float",
    "band_label",
    "capitalise",
    "category",
    "category_label",
    "feature_set_label",
    "fmt_fraction",
    "fmt_importance",
    "fmt_metric",
    "fmt_number",
    "fmt_p",
    "fmt_percent",
    "fmt_pm",
    "fmt_share",
    "fmt_threshold",
    "is_flag",
    "join_and",
    "label",
    "metric_label",
    "schema_categories",
]
