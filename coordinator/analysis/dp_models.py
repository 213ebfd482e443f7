"""Release requests for the differentially private models an analysis plan asks for (``outcomes.<o>.model =
"dp_tree" | "dp_boosted"``, or one of those in ``outcomes.<o>.models`` next to ``"tree"``).

The analysis does not train these models: it builds one ``DpModelSpec`` per outcome and feature set (the outcome
population as conditions, never data), and the release gate selects the persons itself, debits the epsilon,
trains the model through OpenDP
and releases structure, importances and held-out metrics (``kansrijk.gate.dp_models``). Code variables (buurt,
wijk) have no public category list and are left out; numeric variables need public bin edges (the release
policy's ``dp_model.bin_edges`` or the plan's). Pooled years are not offered: a person appears once per year
there, and the guarantee is per person, not per row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from coordinator.analysis.plan import LoadedPolicies, feature_variables, previous_year_base
from coordinator.analysis.trees import seed_int, stable_seed
from kansrijk.gate.specs import Condition, DpModelSpec
from kansrijk.schema import VARIABLES, Kind


def dp_features(columns: list[str], policies: LoadedPolicies, outcome: str, feature_set: str) -> tuple[str, ...]:
    """The feature set's canonical variables that can be binned publicly (code variables and last year's values
    are left out)."""
    chosen = feature_variables(columns, policies.plan, policies.factors, outcome, feature_set)
    plan = policies.plan
    return tuple(
        v
        for v in chosen
        if not (v in VARIABLES and VARIABLES[v].kind is Kind.CODE) and previous_year_base(v, plan) is None
    )


def dp_model_requests(
    *, scope_name: str, years: tuple[int, ...], grouped: bool, outcome: str, columns: list[str],
    cohort: tuple[Condition, ...], policies: LoadedPolicies, stamp: str,
) -> Iterator[tuple[str, DpModelSpec]]:  # fmt: skip
    """(feature set, spec) for every feature set of the plan; nothing for pooled (grouped) scopes."""
    if grouped:
        return
    plan = policies.plan
    spec, settings = plan.outcomes[outcome], plan.dp_model
    model = spec.dp_kind
    assert model in ("dp_tree", "dp_boosted")
    epsilon = spec.epsilon if spec.epsilon is not None else settings.epsilon
    boosted = model == "dp_boosted"
    for fs in plan.feature_sets:
        features = dp_features(columns, policies, outcome, fs)
        seed = seed_int(stable_seed(plan.seed, scope_name, outcome, fs, "dp_model"))
        shape = (
            f"{settings.boosted_trees} boosted trees of depth {settings.boosted_depth}"
            if boosted
            else f"one tree of depth {settings.max_depth}"
        )
        yield (
            fs,
            DpModelSpec(
                name=f"{scope_name}.{outcome}.{fs}.dp_model",
                description=(
                    f"Differentially private model ({model}: {shape}) for {outcome} with the {fs} feature set, "
                    f"trained inside the release gate at epsilon {epsilon}: structure, importances, and ROC-AUC / "
                    f"PR-AUC from a noisy score histogram on 1 of {settings.folds} held-out folds.{stamp}"
                ),
                years=years,
                population=cohort,
                outcome=outcome,
                features=features,
                model=model,
                epsilon=str(epsilon),
                max_depth=settings.boosted_depth if boosted else settings.max_depth,
                trees=settings.boosted_trees if boosted else 1,
                folds=settings.folds,
                seed=seed,
                bin_edges=settings.bin_edges,
                learning_rate=settings.learning_rate,
            ),
        )


def describe_dp_model(values: dict[str, Any]) -> str:
    """One summary line from the released values (all noisy: marked ≈)."""
    m = values.get("metrics", {})
    imp = sorted(values.get("importances", {}).items(), key=lambda kv: -kv[1])[:3]
    eps = values.get("epsilon", {}).get("total", "?")
    parts = [f"{values.get('model', 'dp model')} ε={eps} (DP, noisy)"]
    parts += [f"{k} ≈{m[k]:.3f}" for k in ("roc_auc", "pr_auc") if isinstance(m.get(k), float)]
    if imp:
        parts.append("top " + ", ".join(f"{k} {v:.2f}" for k, v in imp))
    return "; ".join(parts)


__all__ = ["describe_dp_model", "dp_features", "dp_model_requests"]
