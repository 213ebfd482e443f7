"""The analysis plan (``policies/analysis/*.toml``, ``kind = "analysis"``): what the coordinator may compute.

A privacy officer reviews and signs the plan like every other policy: it fixes the cohort and reference years,
the outcomes and the minimum number of positives below which an outcome is refused (too rare to model without
revealing persons, as early school leaving was in the Rotterdam Groeit analysis), the two feature sets (all
variables; the factor model's indicators), the model grid, the metrics, and the limited statistical analysis
(association of one outcome with one variable, linear against non-linear).

Every key is documented in ``docs/analysis.md``. Cross-checks with the release policy (the tree grid's
``min_samples_leaf`` must respect the policy's minimum leaf size) run when both are loaded, in
``check_plan_against_release``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kansrijk.errors import PolicyError
from kansrijk.outcomes import OUTCOME_NAMES, OUTCOMES
from kansrijk.policy.common import PolicyModel, StudyPolicy, parse_policy, study_field
from kansrijk.policy.factors import indicator_names
from kansrijk.policy.release import ExactNumber
from kansrijk.schema import VARIABLES, Kind

ANALYSIS_KIND = "analysis"
FEATURE_SETS: tuple[str, ...] = ("all", "factor_model")


class Cohort(PolicyModel):
    """Who is analysed: an age range (age reached in the reference year) and which reference years."""

    min_age: int = Field(default=0, ge=0, le=30)
    max_age: int = Field(default=23, ge=0, le=30)
    reference_years: Literal["all"] | tuple[int, ...] = Field(
        default="all", description='"all" ingested years, or a list of years.'
    )
    pooled: bool = Field(default=True, description="With several years, also analyse all years pooled.")

    @field_validator("reference_years")
    @classmethod
    def _years(cls, value: Literal["all"] | tuple[int, ...]) -> Literal["all"] | tuple[int, ...]:
        if value != "all":
            if not value:
                raise ValueError('give at least one year, or "all"')
            if any(not 2000 <= y <= 2100 for y in value):
                raise ValueError("years must lie in 2000..2100")
            if len(set(value)) != len(value):
                raise ValueError("a year is listed twice")
        return value

    @model_validator(mode="after")
    def _ages(self) -> Cohort:
        if self.min_age > self.max_age:
            raise ValueError("min_age must be <= max_age")
        return self


ModelKind = Literal["tree", "dp_tree", "dp_boosted"]
DP_MODEL_KINDS: tuple[str, ...] = ("dp_tree", "dp_boosted")


class OutcomeSpec(PolicyModel):
    """Per-outcome settings; ``min_positives`` overrides ``model.min_positives``.

    ``model`` names the one model of the outcome; ``models`` (instead of ``model``) names several: the
    non-private tree and at most one differentially private model, e.g. ``["tree", "dp_tree"]``, so a reader
    sees both side by side. Read the choice through ``kinds``, ``has_tree`` and ``dp_kind``.
    """

    min_positives: int | None = Field(default=None, ge=10)
    model: ModelKind = Field(
        default="tree",
        description=(
            "'tree': decision trees (grown by model.engine), released under output checking. 'dp_tree' / "
            "'dp_boosted': a differentially private model trained inside the release gate (see [dp_model])."
        ),
    )
    models: tuple[ModelKind, ...] | None = Field(
        default=None,
        description=(
            'Instead of \'model\': several models of this outcome, e.g. ["tree", "dp_tree"] for the non-private '
            "tree and a DP tree side by side; at most one DP model."
        ),
    )
    epsilon: ExactNumber | None = Field(
        default=None, description="Epsilon of each DP model of this outcome (one per feature set); default dp_model."
    )
    exclude: tuple[str, ...] = Field(
        default=(),
        description=(
            "Variables never used for this outcome: measurements taken after the outcome happened that encode it "
            "(e.g. the current track after a track change)."
        ),
    )

    @field_validator("exclude")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = set(indicator_names())
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise ValueError(f"unknown variable(s) {unknown}; known: {', '.join(indicator_names())}")
        return value

    @field_validator("models")
    @classmethod
    def _models(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return value
        if not value:
            raise ValueError('name at least one model, e.g. ["tree", "dp_tree"]')
        if len(set(value)) != len(value):
            raise ValueError(f"a model is listed twice in {list(value)}")
        dp = [m for m in value if m in DP_MODEL_KINDS]
        if len(dp) > 1:
            raise ValueError(
                f"at most one differentially private model per outcome, got {dp} (each would be released as "
                f"<scope>.<outcome>.<feature set>.dp_model and spend its own epsilon); keep one"
            )
        return value

    @model_validator(mode="after")
    def _one_way(self) -> OutcomeSpec:
        if self.models is not None and "model" in self.model_fields_set:
            raise ValueError(
                f"give either 'model' or 'models', not both (model = {self.model!r}, models = {list(self.models)}); "
                f'to add a DP model to the tree write models = ["tree", "dp_tree"]'
            )
        if self.epsilon is not None and self.epsilon <= 0:
            raise ValueError("epsilon must be > 0")
        if self.epsilon is not None and self.dp_kind is None:
            raise ValueError(
                "epsilon is set but this outcome has no differentially private model; add one with "
                'models = ["tree", "dp_tree"] (or model = "dp_tree"), or remove epsilon'
            )
        return self

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every model the plan asks for this outcome, the non-private tree first."""
        chosen = self.models if self.models is not None else (self.model,)
        return tuple(sorted(chosen, key=lambda m: m != "tree"))

    @property
    def has_tree(self) -> bool:
        """Whether the non-private tree (with its metrics, importances, comparison and structure) is run."""
        return "tree" in self.kinds

    @property
    def dp_kind(self) -> str | None:
        """The differentially private model of this outcome (``dp_tree`` / ``dp_boosted``), if any."""
        return next((m for m in self.kinds if m in DP_MODEL_KINDS), None)


class Features(PolicyModel):
    """How the feature sets are built from the analysis dataset."""

    exclude: tuple[str, ...] = Field(
        default=(), description="Variables never used as features (besides each outcome's own source variable)."
    )
    always: tuple[str, ...] = Field(
        default=(), description="Variables in both feature sets (demographic controls such as age and sex)."
    )
    one_hot_max_levels: int = Field(
        default=12, ge=2, le=40, description="Nominal variables with at most this many levels are one-hot encoded."
    )
    ordinal: tuple[str, ...] = Field(
        default=(),
        description="Category variables whose public categories are ordered levels: encoded as their rank instead.",
    )

    previous_year: tuple[str, ...] = Field(
        default=(),
        description=(
            "State variables also taken from the person's record in the previous reference year, when that year's "
            "linked dataset is in the workspace; features '<variable>_last_year' of the 'all' feature set."
        ),
    )

    @field_validator("previous_year")
    @classmethod
    def _previous(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = [n for n in VARIABLES if n not in ("pseudonym", "year")]
        bad = [v for v in value if v not in allowed]
        if bad or len(set(value)) != len(value):
            raise ValueError(
                f"previous_year variables must be distinct canonical variables; unknown: {bad}; "
                f"known: {', '.join(allowed)}"
            )
        return value

    @field_validator("ordinal")
    @classmethod
    def _ordered(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        categorical = [n for n, v in VARIABLES.items() if v.kind is Kind.CATEGORY]
        bad = [v for v in value if v not in categorical]
        if bad or len(set(value)) != len(value):
            raise ValueError(
                f"ordinal variables must be distinct category variables; not one: {bad}; "
                f"category variables: {', '.join(categorical)}"
            )
        return value

    @field_validator("exclude", "always")
    @classmethod
    def _known(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        allowed = set(indicator_names())
        unknown = [v for v in value if v not in allowed]
        if unknown:
            raise ValueError(f"unknown variable(s) {unknown}; known: {', '.join(indicator_names())}")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> Features:
        both = sorted(set(self.exclude) & set(self.always))
        if both:
            raise ValueError(f"variable(s) {both} are both excluded and always included")
        return self


class Model(PolicyModel):
    """Decision trees: the tuning grid, cross-validation and class weighting."""

    algorithm: Literal["decision_tree"] = "decision_tree"
    engine: Literal["histogram", "exact"] = Field(
        default="histogram",
        description=(
            "How trees are grown: 'histogram' bins every column once per dataset (at most max_bins bins; a column "
            "with fewer values keeps one bin per value) and grows trees from per-node histograms of class counts; "
            "'exact' tries every threshold between two values (scikit-learn), kept to compare."
        ),
    )
    max_bins: int = Field(
        default=255, ge=2, le=255, description="Histogram engine: at most this many value bins per column."
    )
    criterion: Literal["gini", "entropy", "log_loss"] = "gini"
    class_weight: Literal["balanced", "none"] = "balanced"
    folds: int = Field(default=5, ge=3, le=10)
    max_depth: tuple[int, ...] = Field(default=(4, 6, 8), min_length=1)
    min_samples_leaf: tuple[int, ...] = Field(default=(50, 200), min_length=1)
    select_by: Literal["roc_auc", "pr_auc", "brier"] = "roc_auc"
    min_positives: int = Field(default=500, ge=10, description="Outcomes with fewer positives are refused.")
    n_jobs: int = Field(default=2, ge=1, le=64)
    shrinkage: tuple[float, ...] = Field(
        default=(0.0,),
        min_length=1,
        description="Hierarchical shrinkage strengths (lambda, persons) tried with every grid point; 0 = none.",
    )

    @model_validator(mode="after")
    def _engine(self) -> Model:
        if self.engine == "histogram" and self.criterion != "gini":
            raise ValueError(
                f"the histogram engine splits by Gini impurity only (criterion = {self.criterion!r}); use "
                f'criterion = "gini" or engine = "exact"'
            )
        return self

    @field_validator("shrinkage")
    @classmethod
    def _shrinkage(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(not (math.isfinite(v) and 0.0 <= v <= 1e6) for v in value) or len(set(value)) != len(value):
            raise ValueError("shrinkage values must be distinct numbers in 0..1000000")
        return value

    @field_validator("max_depth")
    @classmethod
    def _depths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(not 1 <= d <= 12 for d in value) or len(set(value)) != len(value):
            raise ValueError("depths must be distinct integers in 1..12")
        return value

    @field_validator("min_samples_leaf")
    @classmethod
    def _leaves(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(v < 1 for v in value) or len(set(value)) != len(value):
            raise ValueError("min_samples_leaf values must be distinct positive integers")
        return value


class Metrics(PolicyModel):
    """What is measured and how its uncertainty is estimated."""

    top_k_percent: float = Field(default=10.0, gt=0.0, lt=100.0, description="Recall among the top k% risk.")
    bootstrap_replicates: int = Field(default=500, ge=50, le=10_000)
    confidence: float = Field(default=0.95, gt=0.5, lt=1.0)
    permutation_repeats: int = Field(default=3, ge=1, le=50)
    best_of_rest: int = Field(default=3, ge=1, le=10, description="How many runners-up the summary names.")


class Association(PolicyModel):
    """The limited statistical analysis: is ``outcome`` associated with ``variable``, linearly or not?"""

    outcome: str = Field(description="The binary outcome (an outcome of the study).")
    variable: str = Field(description="The numeric canonical variable it is tested against.")
    scale: float = Field(default=1.0, gt=0.0, description="The variable is divided by this (e.g. 100000 euro).")
    spline_df: int = Field(default=5, ge=3, le=10, description="Degrees of freedom of the spline basis.")
    bin_edges: tuple[float, ...] = Field(
        description="Public inner bin edges; the outer bins are open (no minimum or maximum is revealed).",
    )
    permutations: int = Field(default=999, ge=99, le=100_000)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, value: str) -> str:
        if value not in OUTCOMES:
            raise ValueError(f"unknown outcome {value!r}; known: {', '.join(OUTCOME_NAMES)}")
        return value

    @field_validator("variable")
    @classmethod
    def _variable(cls, value: str) -> str:
        if value not in indicator_names():
            raise ValueError(f"unknown variable {value!r}")
        return value

    @field_validator("bin_edges")
    @classmethod
    def _edges(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if len(value) < 2 or any(b <= a for a, b in itertools.pairwise(value)):
            raise ValueError("bin_edges must be at least two strictly increasing values")
        return value


class DpModelPlan(PolicyModel):
    """Settings of the differentially private models (outcomes with ``model = "dp_tree"`` or ``"dp_boosted"``)."""

    epsilon: ExactNumber = Field(default=Fraction(1), description="Default epsilon per DP model (exact string).")
    max_depth: int = Field(default=5, ge=1, le=10, description="Depth of a dp_tree.")
    boosted_trees: int = Field(default=10, ge=1, le=500, description="Trees of a dp_boosted ensemble.")
    boosted_depth: int = Field(default=3, ge=1, le=10, description="Depth of each boosted tree.")
    learning_rate: float = Field(default=0.5, gt=0.0, le=1.0)
    folds: int = Field(default=5, ge=2, le=20, description="One fold of persons is held out for the DP metrics.")
    bin_edges: dict[str, tuple[float, ...]] = Field(
        default_factory=dict, description="Public inner bin edges per numeric variable (the release policy's win)."
    )

    @model_validator(mode="after")
    def _positive(self) -> DpModelPlan:
        if self.epsilon <= 0:
            raise ValueError("epsilon must be > 0")
        return self


class Retention(PolicyModel):
    """How long the coordinator keeps the study's person-level data (for the DPIA annex, ``policy dpia``)."""

    workspace_until: date = Field(
        description="The date by which the coordinator destroys the workspace's person-level data and keys."
    )
    after: str = Field(min_length=10, description="What is destroyed then and what is kept (released outputs, ledger).")


class AnalysisPlan(StudyPolicy):
    """An analysis plan file (``kind = "analysis"``)."""

    kind: Literal["analysis"]
    study: str | None = study_field()
    version: Literal[1] = 1
    title: str = Field(min_length=1)
    dataset: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    seed: int = Field(ge=0, lt=2**32, description="Seeds folds, trees, bootstraps and permutations.")
    cohort: Cohort = Cohort()
    outcomes: dict[str, OutcomeSpec] = Field(min_length=1)
    feature_sets: tuple[Literal["all", "factor_model"], ...] = FEATURE_SETS
    features: Features = Features()
    model: Model = Model()
    metrics: Metrics = Metrics()
    association: Association | None = None
    release_trees: bool = True
    dp_model: DpModelPlan = DpModelPlan()
    retention: Retention | None = None

    @field_validator("outcomes")
    @classmethod
    def _outcomes(cls, value: dict[str, OutcomeSpec]) -> dict[str, OutcomeSpec]:
        unknown = sorted(set(value) - set(OUTCOME_NAMES))
        if unknown:
            raise ValueError(f"unknown outcome(s) {unknown}; known: {', '.join(OUTCOME_NAMES)}")
        return value

    @field_validator("feature_sets")
    @classmethod
    def _sets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or len(set(value)) != len(value):
            raise ValueError('give each of "all" and "factor_model" at most once, at least one')
        return value

    def min_positives(self, outcome: str) -> int:
        spec = self.outcomes[outcome]
        return spec.min_positives if spec.min_positives is not None else self.model.min_positives

    @property
    def grid(self) -> tuple[tuple[int, int], ...]:
        """(max_depth, min_samples_leaf) pairs in a fixed order."""
        return tuple((d, m) for d in self.model.max_depth for m in self.model.min_samples_leaf)


def load_analysis_plan(path: Path, raw: bytes | None = None) -> AnalysisPlan:
    """Parse and validate an analysis plan; ``PolicyError`` names file, key path and problem."""
    return parse_policy(Path(path), AnalysisPlan, raw)


def check_plan_against_release(
    plan: AnalysisPlan,
    plan_path: Path,
    *,
    min_leaf_persons: int,
    min_samples_leaf_training: int,
    bands: Mapping[str, tuple[float, ...]] | None = None,
) -> None:
    """Refuse a plan whose tree grid could grow leaves the release policy forbids, or whose association bins are
    not the release policy's public bands.

    Every ``model.min_samples_leaf`` must be at least the release policy's ``sdc.tree.min_leaf_persons`` (so
    every leaf of a tree fitted on the released population holds enough persons) and its training rule. The gate
    bins the association variable only in the policy's ``grids.bands.<variable>`` (``bands``), so the plan's
    ``association.bin_edges`` must be exactly those.
    """
    if bands is not None and plan.association is not None:
        var = plan.association.variable
        declared = tuple(float(x) for x in bands.get(var, ()))
        if declared != tuple(float(x) for x in plan.association.bin_edges):
            raise PolicyError(
                f"{plan_path}: association.bin_edges {list(plan.association.bin_edges)} are not the release "
                f"policy's public bands for {var} (grids.bands.{var} = {list(declared) or 'none'})",
                hint="the gate bins only in the policy's bands: make the two the same, or ask the privacy officer",
            )
    floor = max(min_leaf_persons, min_samples_leaf_training)
    low = [m for m in plan.model.min_samples_leaf if m < floor]
    if low:
        raise PolicyError(
            f"{plan_path}: model.min_samples_leaf: value(s) {low} are below the release policy's minimum leaf size "
            f"{floor} (sdc.tree.min_leaf_persons / min_samples_leaf_training)",
            hint=f"raise every min_samples_leaf to at least {floor}",
        )


__all__ = [
    "ANALYSIS_KIND",
    "DP_MODEL_KINDS",
    "FEATURE_SETS",
    "AnalysisPlan",
    "Association",
    "Cohort",
    "DpModelPlan",
    "Features",
    "Metrics",
    "Model",
    "ModelKind",
    "OutcomeSpec",
    "check_plan_against_release",
    "load_analysis_plan",
]
