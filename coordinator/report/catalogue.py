"""Which section shows which release: decided by each document's kind and its spec, never by its file name.

- linkage: any output over the linkage table (``spec.table == "linkage"``);
- base rates: a frequency table the analysis asked for over one flag (the outcome's positives);
- comparison: model metrics of two labelled score sets (``labels``); a change between years is one with
  ``mode == "years"``; plain model metrics otherwise;
- factor coverage: feature importances whose keys map to variables (``variables_of``); importances otherwise;
- trees, DP models: their own kinds;
- association: tests and regressions of an outcome on one ``variable``, and the mean table of that outcome by that
  variable (its binned curve) in the same scope;
- everything else: "Other released outputs", shown as released.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .released import Release, Scope

ANALYSIS = "analysis"


def _is_flag_table(r: Release) -> bool:
    if r.kind != "frequency_table" or not r.is_table or len(r.by) != 1 or r.table != "linked":
        return False
    column = r.by[0]
    columns = [str(c) for c in r.values["columns"]]
    if column not in columns:
        return False
    at = columns.index(column)
    values = {row[at] for row in r.values["rows"] if len(row) > at}
    return bool(values) and values <= {True, False}


@dataclass(frozen=True, slots=True)
class Catalogue:
    linkage: tuple[Release, ...]
    base_rates: tuple[Release, ...]
    metrics: tuple[Release, ...]
    compares: tuple[Release, ...]
    changes: tuple[Release, ...]
    importances: tuple[Release, ...]
    factors: tuple[Release, ...]
    trees: tuple[Release, ...]
    dp_models: tuple[Release, ...]
    association: tuple[Release, ...]
    other: tuple[Release, ...]

    @classmethod
    def of(cls, releases: Sequence[Release]) -> Catalogue:
        taken: set[str] = set()

        def take(match: Callable[[Release], bool]) -> tuple[Release, ...]:
            picked = tuple(r for r in releases if r.name not in taken and match(r))
            taken.update(r.name for r in picked)
            return picked

        linkage = take(lambda r: r.table == "linkage")
        base_rates = take(lambda r: r.requested_by == ANALYSIS and _is_flag_table(r))
        changes = take(lambda r: r.is_year_change)
        compares = take(lambda r: r.is_comparison)
        metrics = take(lambda r: r.kind == "model_metrics")
        factors = take(lambda r: r.kind == "feature_importances" and bool(r.variables_of))
        importances = take(lambda r: r.kind == "feature_importances")
        trees = take(lambda r: r.kind == "tree_structure")
        dp_models = take(lambda r: r.kind == "dp_model")
        tests = take(lambda r: r.kind in ("test_result", "regression") and r.variable is not None)
        pairs = {(r.scope, r.outcome, r.variable) for r in tests}
        curves = take(lambda r: r.kind == "mean_table" and len(r.by) == 1 and (r.scope, r.outcome, r.by[0]) in pairs)
        other = take(lambda r: True)
        return cls(
            linkage=linkage,
            base_rates=base_rates,
            metrics=metrics,
            compares=compares,
            changes=changes,
            importances=importances,
            factors=factors,
            trees=trees,
            dp_models=dp_models,
            association=tuple(sorted((*tests, *curves), key=lambda r: r.seq)),
            other=other,
        )

    # --- lookups used by the findings and the years view ---
    def positives(self, scope: Scope, outcome: str) -> Release | None:
        return next((r for r in self.base_rates if r.scope == scope and r.by[0] == outcome), None)

    def model_metrics(self, scope: Scope, outcome: str, feature_set: str) -> Release | None:
        return next(
            (r for r in self.metrics if r.scope == scope and r.outcome == outcome and r.feature_set == feature_set),
            None,
        )

    def comparison(self, scope: Scope, outcome: str) -> Release | None:
        return next((r for r in self.compares if r.scope == scope and r.outcome == outcome), None)

    def importance(self, scope: Scope, outcome: str, feature_set: str, method: str) -> Release | None:
        return next(
            (
                r
                for r in self.importances
                if r.scope == scope
                and r.outcome == outcome
                and r.feature_set == feature_set
                and r.importance_method == method
            ),
            None,
        )

    def factor_coverage(self, scope: Scope, outcome: str) -> Release | None:
        return next((r for r in self.factors if r.scope == scope and r.outcome == outcome), None)

    def modelled(self, scope: Scope, outcome: str) -> bool:
        """Whether any model of ``outcome`` was released in ``scope`` (metrics, a tree or a DP model)."""
        return any(r.scope == scope and r.outcome == outcome for r in (*self.metrics, *self.trees, *self.dp_models))

    def feature_sets(self, scope: Scope, outcome: str) -> list[str]:
        """The feature sets of the models of ``outcome`` in ``scope``, "all" first."""
        found = {r.feature_set for r in self.metrics if r.scope == scope and r.outcome == outcome}
        return sorted(found, key=lambda fs: (fs != "all", fs))

    def outcomes(self, scope: Scope) -> list[str]:
        """Every outcome of ``scope``, in the order the analysis released them."""
        seen: dict[str, int] = {}
        for r in (*self.base_rates, *self.metrics, *self.trees):
            name = r.by[0] if r in self.base_rates else r.outcome
            if r.scope == scope and name:
                seen.setdefault(name, r.seq)
        return sorted(seen, key=lambda o: seen[o])

    def scopes(self) -> list[Scope]:
        found = {r.scope for r in (*self.base_rates, *self.metrics, *self.trees, *self.importances)}
        return sorted(found, key=lambda s: s.sort_key)


__all__ = ["Catalogue"]
