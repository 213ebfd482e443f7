"""Factor coverage: for each factor of the literature model, its indicators in the linked data and how much
they matter in the all-variables model; and the factors no indicator covers.

A factor's importance for an outcome is the sum of its indicators' permutation importances (drop in ROC-AUC
when the indicator is permuted) in the all-variables model; its ``share`` is that sum over the sum of all
positive permutation importances. A factor's declared proxies (variables that stand in for it without measuring
it, e.g. the WOZ value for household income) are summed apart (``proxy_importance``): they are not indicators, but
a reader must see them under their factor. Variables neither indicator nor proxy of any factor are listed as
``outside``: a large importance outside the model is what "enriching the factor model with local data" looks for.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.analysis.trees import Importance
from kansrijk.policy.factors import FactorModel


@dataclass(frozen=True, slots=True)
class FactorCoverage:
    factor: str
    rank: int
    indicators: tuple[str, ...]  # as the factor model lists them
    present: tuple[str, ...]  # those the analysis dataset holds, with information in the population
    importance: float | None  # sum of permutation importances; None when no indicator is present
    share: float | None
    proxies: tuple[str, ...] = ()  # declared proxies present in the model
    proxy_importance: float | None = None  # sum of their permutation importances; None when none is present


@dataclass(frozen=True, slots=True)
class Coverage:
    outcome: str
    factors: tuple[FactorCoverage, ...]
    uncovered: tuple[str, ...]  # factors without any indicator in the model
    absent: tuple[str, ...]  # factors whose indicators are all missing from the data
    outside: dict[str, float]  # variables neither indicator nor proxy of a factor -> permutation importance


def factor_coverage(outcome: str, model: FactorModel, permutation: dict[str, Importance]) -> Coverage:
    """Coverage of ``model`` in one outcome's all-variables importances (variables -> permutation importance)."""
    total = sum(max(0.0, imp.mean) for imp in permutation.values()) or 1.0
    rows: list[FactorCoverage] = []
    for f in model.ranked:
        present = tuple(i for i in f.indicators if i in permutation)
        imp = sum(permutation[i].mean for i in present) if present else None
        proxies = tuple(p for p in f.proxies if p in permutation)
        rows.append(
            FactorCoverage(
                factor=f.name,
                rank=f.rank,
                indicators=f.indicators,
                present=present,
                importance=imp,
                share=None if imp is None else max(0.0, imp) / total,
                proxies=proxies,
                proxy_importance=sum(permutation[p].mean for p in proxies) if proxies else None,
            )
        )
    indicators = set(model.indicators) | set(model.proxies)
    outside = {v: imp.mean for v, imp in permutation.items() if v not in indicators}
    return Coverage(
        outcome=outcome,
        factors=tuple(rows),
        uncovered=tuple(f.name for f in model.uncovered),
        absent=tuple(r.factor for r in rows if r.indicators and not r.present),
        outside=outside,
    )


__all__ = ["Coverage", "FactorCoverage", "factor_coverage"]
