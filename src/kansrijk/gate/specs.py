"""Release specs: what a requester may ask the gate. A spec carries no data, no persons and no counts.

The gate reads the workspace's linked dataset itself, selects the population a spec describes, and computes every
number it releases (``kansrijk.gate.compute``). A spec says only *what* to compute:

- ``years``: the reference years (one year; or several, pooled: then a person has one row per year, which the
  gate checks, and DP's privacy unit bounds a person's contributions by the number of years);
- ``population``: a conjunction of conditions over canonical variables (``Condition``: comparisons, membership,
  missing or not) — a small validated language, never code;
- the grouping variables (``by``), the aggregate, and its value variable (a canonical variable, aggregated in the
  one form the release policy declares: raw, or clipped to ``grids.value_clip``);
- parameters only from the policy's public grids (quantile levels, histogram edges, bands), checked by the gate.

Model specs carry a model's *structure* and training facts (``TreeSpec``), or per-person scores made inside the
coordinator (``MetricsSpec``/``ComparisonSpec``: the gate computes every metric and count from them and from the
outcome it reads itself). Specs that carry no data at all can also come over the gate's socket
(``parse_spec``); specs with scores or importances are built in-process by the plan the gate runs.

Every spec is immutable and validates on construction (``RequestInvalid`` names the spec, the field and the rule).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
import polars as pl
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from kansrijk.gate.requests import OutputKind, RequestInvalid

_NAME = r"^[a-z0-9][a-z0-9_.-]{0,119}$"
_VAR = r"^[a-z][a-z0-9_]{0,63}$"
MAX_YEARS = 20
MAX_CONDITIONS = 16
MAX_VALUES = 500


Scalar = StrictBool | StrictInt | Annotated[float, Field(allow_inf_nan=False)] | Annotated[str, Field(max_length=64)]
VarName = Annotated[str, Field(pattern=_VAR)]
Label = Annotated[str, Field(pattern=r"^([a-z][a-z0-9_]{0,63}|[0-9]{4})$")]

Op = Literal["==", "!=", "<", "<=", ">", ">=", "in", "not_in", "is_null", "not_null"]


class SpecModel(BaseModel):
    """Immutable; unknown fields are errors (a typo must not widen a population silently). Invalid input raises
    ``RequestInvalid`` naming every problem by field path."""

    # revalidate_instances: a nested condition or node made with model_construct/model_copy (which skip every
    # check) is checked again whenever the spec holding it is validated
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True, revalidate_instances="always")

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            problems = [
                f"{'.'.join(str(p) for p in e['loc']) or '(spec)'}: {e['msg']}"
                for e in exc.errors(include_url=False, include_input=False)
            ]
            name = data.get("name", "")
            label = f"{type(self).__name__} {name!r}" if name else type(self).__name__
            raise RequestInvalid(
                f"{label}: " + "; ".join(problems[:8]), hint="see docs/queries.md"
            ) from None


class Condition(SpecModel):
    """One condition on a variable: ``var op value`` (comparisons), ``var in values``, or ``var is_null``.

    Comparisons with ``<``/``>`` need a numeric variable; ``in``/``not_in`` take up to 500 values; a missing
    value never satisfies a comparison or a membership (``is_null`` selects it explicitly)."""

    var: VarName
    op: Op
    value: Scalar | None = None
    values: tuple[Scalar, ...] = ()

    @model_validator(mode="after")
    def _arity(self) -> Condition:
        if self.op in ("in", "not_in"):
            if self.value is not None or not 1 <= len(self.values) <= MAX_VALUES:
                raise ValueError(f"{self.op!r} takes 'values' (1 to {MAX_VALUES} of them) and no 'value'")
        elif self.op in ("is_null", "not_null"):
            if self.value is not None or self.values:
                raise ValueError(f"{self.op!r} takes neither 'value' nor 'values'")
        elif self.value is None or self.values:
            raise ValueError(f"{self.op!r} takes one 'value' and no 'values'")
        return self

    def describe(self) -> str:
        if self.op in ("is_null", "not_null"):
            return f"{self.var} {'is missing' if self.op == 'is_null' else 'is known'}"
        if self.op in ("in", "not_in"):
            return f"{self.var} {'in' if self.op == 'in' else 'not in'} {list(self.values)}"
        return f"{self.var} {self.op} {self.value!r}"


def where(var: str, op: Op, value: Any = None) -> Condition:
    """A condition, shortest form: ``where("age_years", "<=", 23)``, ``where("sex", "in", ["M"])``."""
    if op in ("in", "not_in"):
        return Condition(var=var, op=op, values=tuple(value))
    return Condition(var=var, op=op, value=value)


class ReleaseSpec(SpecModel):
    """Base of every spec. ``kind`` names the policy section that rules the release."""

    kind: ClassVar[OutputKind]
    socket_allowed: ClassVar[bool] = True  # may come over the gate's socket (carries no data at all)

    name: Annotated[str, Field(pattern=_NAME)]
    description: Annotated[str, Field(max_length=2000)] = ""
    years: Annotated[tuple[StrictInt, ...], Field(min_length=1, max_length=MAX_YEARS)]
    population: Annotated[tuple[Condition, ...], Field(max_length=MAX_CONDITIONS)] = ()
    table: Literal["linked", "linkage"] = "linked"  # the linked dataset, or the linkage flags of each year

    @field_validator("name")
    @classmethod
    def _no_dots(cls, v: str) -> str:
        if ".." in v:
            raise ValueError("must not contain '..'")
        return v

    @field_validator("years")
    @classmethod
    def _years(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if len(set(v)) != len(v) or any(not 1900 <= y <= 2200 for y in v):
            raise ValueError("reference years must be distinct years between 1900 and 2200")
        return tuple(sorted(v))

    # -- what the gate records -------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """The whole spec as JSON-able values (recorded in the release file; its digest in the ledger)."""
        out = {"kind": self.kind, **self.model_dump(mode="json", exclude=self._data_fields())}
        out.update(self._data_summary())
        return out

    def _data_fields(self) -> set[str]:
        return set()

    def _data_summary(self) -> dict[str, Any]:
        return {}

    def digest(self) -> str:
        blob = json.dumps(self.parameters(), sort_keys=True, separators=(",", ":"), default=str).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    def population_label(self) -> str:
        """The population in words (recorded in the release file)."""
        years = (
            f"reference year {self.years[0]}"
            if len(self.years) == 1
            else ("reference years " + "+".join(str(y) for y in self.years) + " pooled")
        )
        conds = "; ".join(c.describe() for c in self.population)
        source = "linkage flags" if self.table == "linkage" else "linked dataset"
        return f"{source}, {years}" + (f", where {conds}" if conds else "")

    def variables(self) -> tuple[str, ...]:
        """Every variable the spec reads (the gate checks each is known)."""
        return tuple(c.var for c in self.population)


# --- tables -------------------------------------------------------------------------------------------------
class CountSpec(ReleaseSpec):
    """Persons in every combination of the ``by`` variables (numeric variables in the policy's bands)."""

    kind: ClassVar[OutputKind] = "frequency_table"
    by: Annotated[tuple[VarName, ...], Field(min_length=1, max_length=4)]

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), *self.by)


class MeanSpec(ReleaseSpec):
    """The mean of ``value`` per group (``by=()``: one overall mean), in the value's one declared form."""

    kind: ClassVar[OutputKind] = "mean_table"
    value: VarName
    by: Annotated[tuple[VarName, ...], Field(max_length=4)] = ()

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), *self.by, self.value)


class SumSpec(MeanSpec):
    """The sum of ``value`` per group, in the value's one declared form."""

    kind: ClassVar[OutputKind] = "sum_table"


class QuantileSpec(ReleaseSpec):
    """Quantiles of ``value`` at ``levels`` from the policy's grid. Under output checking each is released as
    the mean of the threshold-many values nearest the quantile, with at least the threshold of persons on each
    side (an exact quantile is one person's value); under DP through OpenDP's quantile."""

    kind: ClassVar[OutputKind] = "quantile"
    value: VarName
    levels: Annotated[tuple[Annotated[float, Field(allow_inf_nan=False)], ...], Field(min_length=1, max_length=9)]
    by: Annotated[tuple[VarName, ...], Field(max_length=3)] = ()

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), *self.by, self.value)


class HistogramSpec(ReleaseSpec):
    """Counts of ``value`` in the bins of the policy's ``grids.histogram_edges.<value>`` (outer bins open)."""

    kind: ClassVar[OutputKind] = "histogram"
    value: VarName
    by: Annotated[tuple[VarName, ...], Field(max_length=3)] = ()

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), *self.by, self.value)


class ExtremesSpec(ReleaseSpec):
    """The minimum and maximum of ``value``: two persons' exact values. Every policy refuses it."""

    kind: ClassVar[OutputKind] = "extremes"
    value: VarName
    by: Annotated[tuple[VarName, ...], Field(max_length=3)] = ()

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), *self.by, self.value)


# --- models whose numbers the gate recomputes ----------------------------------------------------------------
class SplitNode(SpecModel):
    """One node of a submitted tree. A split sends a person left when ``var <= threshold`` (numeric) or when
    ``var`` is one of ``categories``; a missing value goes left when ``missing_left``. A leaf names no variable
    and no children. Counts are never submitted: the gate computes them."""

    node_id: Annotated[int, Field(ge=0, lt=100_000)]
    var: VarName | None = None
    threshold: Annotated[float, Field(allow_inf_nan=False)] | None = None
    categories: Annotated[tuple[Scalar, ...], Field(max_length=MAX_VALUES)] = ()
    missing_left: StrictBool = False
    left: Annotated[int, Field(ge=0)] | None = None
    right: Annotated[int, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _shape(self) -> SplitNode:
        if self.var is None:
            if self.left is not None or self.right is not None or self.threshold is not None or self.categories:
                raise ValueError(f"node {self.node_id}: a leaf has no variable, rule or children")
            return self
        if self.left is None or self.right is None:
            raise ValueError(f"node {self.node_id}: a split on {self.var!r} needs both children")
        if (self.threshold is None) == (not self.categories):
            raise ValueError(f"node {self.node_id}: a split has either a threshold or categories, not both or none")
        return self

    @property
    def is_leaf(self) -> bool:
        return self.var is None


class TreeSpec(ReleaseSpec):
    """A decision tree's structure and training facts; the gate applies it to the population (persons with a
    known ``outcome``) and computes every node's class counts itself, then checks the tree rules on them."""

    kind: ClassVar[OutputKind] = "tree_structure"
    outcome: VarName
    features: Annotated[tuple[VarName, ...], Field(min_length=1, max_length=200)]
    nodes: Annotated[tuple[SplitNode, ...], Field(min_length=1, max_length=10_000)]
    min_samples_leaf: Annotated[int, Field(ge=1)]
    max_depth: Annotated[int, Field(ge=0, le=64)] | None = None
    min_samples_split: Annotated[int, Field(ge=2)] = 2
    model: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _structure(self) -> TreeSpec:
        ids = [n.node_id for n in self.nodes]
        if len(set(ids)) != len(ids):
            raise ValueError("node ids must be unique")
        if 0 not in ids:
            raise ValueError("the root must be node 0")
        by_id = {n.node_id: n for n in self.nodes}
        parents: dict[int, int] = {}
        for n in self.nodes:
            for child in (n.left, n.right):
                if child is None:
                    continue
                if child not in by_id:
                    raise ValueError(f"node {n.node_id}: child {child} does not exist")
                if child == 0 or child in parents:
                    raise ValueError(f"node {child} has more than one parent (or is the root)")
                parents[child] = n.node_id
            if n.var is not None and n.var not in self.features:
                raise ValueError(f"node {n.node_id}: split variable {n.var!r} is not among the features")
        # walk from the root: a node that only a detached cycle points to has a parent but is never reached
        reached, todo = {0}, [0]
        while todo:
            node = by_id[todo.pop()]
            for child in (node.left, node.right):
                if child is not None and child not in reached:
                    reached.add(child)
                    todo.append(child)
        unreachable = set(ids) - reached
        if unreachable:
            raise ValueError(f"node(s) {sorted(unreachable)[:5]} are not reachable from the root")
        if self.outcome in self.features:
            raise ValueError(f"the outcome {self.outcome!r} is also a feature")
        return self

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), self.outcome, *self.features)


class TestSpec(ReleaseSpec):
    """An association test of the binary ``outcome`` with ``variable``, fitted by the gate (statsmodels);
    binned tests use the policy's ``grids.bands.<variable>``."""

    __test__: ClassVar[bool] = False  # not a pytest test class
    kind: ClassVar[OutputKind] = "test_result"
    test: Literal["linear_wald", "linear_lr", "spline_lr", "nonlinearity_lr", "binned_lr", "mutual_information"]
    outcome: VarName
    variable: VarName
    scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    spline_df: Annotated[int, Field(ge=3, le=12)] = 5
    permutations: Annotated[int, Field(ge=99, le=100_000)] = 999
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), self.outcome, self.variable)


class RegressionSpec(ReleaseSpec):
    """A logistic regression of the binary ``outcome`` on ``variable`` / ``scale`` alone, fitted by the gate."""

    kind: ClassVar[OutputKind] = "regression"
    model: Literal["logit"] = "logit"
    outcome: VarName
    variable: VarName
    scale: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), self.outcome, self.variable)


class DpModelSpec(ReleaseSpec):
    """Train a differentially private tree model for ``outcome`` inside the gate (``kansrijk.gate.dp_models``)
    on the population; the gate's own bins and the policy's ``[dp_model]`` rules apply."""

    kind: ClassVar[OutputKind] = "dp_model"
    outcome: VarName
    features: Annotated[tuple[VarName, ...], Field(min_length=1, max_length=200)]
    model: Literal["dp_tree", "dp_boosted"] = "dp_tree"
    epsilon: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(/[1-9][0-9]*)?$")] = "1"
    max_depth: Annotated[int, Field(ge=1, le=12)] = 5
    trees: Annotated[int, Field(ge=1, le=500)] = 1
    folds: Annotated[int, Field(ge=2, le=20)] = 5
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    learning_rate: Annotated[float, Field(gt=0, le=1)] = 0.5
    # public inner bin edges of numeric features (the policy's dp_model.bin_edges take precedence); DP's guarantee
    # does not depend on them, only the model's accuracy does
    bin_edges: Mapping[VarName, tuple[Annotated[float, Field(allow_inf_nan=False)], ...]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> DpModelSpec:
        if Fraction(self.epsilon) <= 0:
            raise ValueError("epsilon must be positive (an exact decimal or fraction written as text)")
        if self.outcome in self.features:
            raise ValueError(f"the outcome {self.outcome!r} is also a feature")
        if self.model == "dp_tree" and self.trees != 1:
            raise ValueError("a dp_tree has exactly one tree (trees = 1)")
        return self

    @property
    def epsilon_exact(self) -> Fraction:
        return Fraction(self.epsilon)

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), self.outcome, *self.features)


# --- model outputs from per-person scores made inside the coordinator -------------------------------------------
@dataclass(frozen=True, eq=False)
class ScoreSet:
    """Per-person scores of a model (out-of-fold predictions): columns ``pseudonym`` (binary), ``year`` (int),
    ``score`` (float in [0, 1]) and optionally ``fold`` (int). Exactly one row per person and year of the spec's
    population, checked by the gate. Built in-process only; never accepted over the socket."""

    frame: pl.DataFrame

    def __post_init__(self) -> None:
        f = self.frame
        if not isinstance(f, pl.DataFrame):
            raise RequestInvalid("scores must be a polars DataFrame with pseudonym, year, score (and fold)")
        need = {"pseudonym": pl.Binary, "year": None, "score": None}
        missing = [c for c in need if c not in f.columns]
        extra = [c for c in f.columns if c not in (*need, "fold")]
        if missing or extra:
            raise RequestInvalid(
                f"scores: columns must be pseudonym, year, score and optionally fold (missing {missing}, extra {extra})"
            )
        if f.schema["pseudonym"] != pl.Binary or not f.schema["year"].is_integer():
            raise RequestInvalid("scores: pseudonym must be binary and year an integer")
        score = f.get_column("score").cast(pl.Float64, strict=False)
        if (
            score.null_count()
            or not np.all(np.isfinite(score.to_numpy()))
            or (
                score.len()
                and (
                    score.min() < 0 or score.max() > 1  # type: ignore[operator]
                )
            )
        ):
            raise RequestInvalid("scores: every score must be a finite probability in [0, 1]")

    def digest(self) -> str:
        """SHA-256 over the Arrow IPC bytes of the scores (identifies them in the ledger; never released)."""
        buf = io.BytesIO()
        self.frame.write_ipc(buf, compression="uncompressed")
        return "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest()


class MetricsSpec(ReleaseSpec):
    """Out-of-fold performance of a model for the binary ``outcome``: the gate joins the scores with its own
    population and outcome and computes ROC-AUC, PR-AUC, Brier, recall in the top k%, the class counts and (when
    folds are given) the spread over folds itself."""

    socket_allowed: ClassVar[bool] = False
    kind: ClassVar[OutputKind] = "model_metrics"
    outcome: VarName
    scores: ScoreSet
    top_k_percent: Annotated[float, Field(gt=0, lt=100)] = 10.0
    model: Annotated[str, Field(max_length=500)] = ""

    def _data_fields(self) -> set[str]:
        return {"scores"}

    def _data_summary(self) -> dict[str, Any]:
        return {"scores_sha256": self.scores.digest(), "scores_rows": self.scores.frame.height}

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), self.outcome)


class ComparisonSpec(ReleaseSpec):
    """The difference of two models' out-of-fold metrics with bootstrap intervals, computed by the gate.

    ``paired``: both score sets cover the same persons (e.g. all variables vs the factor model); the bootstrap
    resamples persons. ``years``: ``a`` covers the later of the spec's two years and ``b`` the earlier; each
    year is resampled on its own."""

    socket_allowed: ClassVar[bool] = False
    kind: ClassVar[OutputKind] = "model_metrics"
    outcome: VarName
    a: ScoreSet
    b: ScoreSet
    labels: tuple[Label, Label]
    mode: Literal["paired", "years"] = "paired"
    replicates: Annotated[int, Field(ge=50, le=10_000)] = 500
    confidence: Annotated[float, Field(gt=0.5, lt=1)] = 0.95
    top_k_percent: Annotated[float, Field(gt=0, lt=100)] = 10.0
    seed: Annotated[int, Field(ge=0, lt=2**63)] = 0
    model: Annotated[str, Field(max_length=500)] = ""

    @model_validator(mode="after")
    def _mode(self) -> ComparisonSpec:
        if self.mode == "years" and len(self.years) != 2:
            raise ValueError("a comparison of years names exactly two years")
        return self

    def _data_fields(self) -> set[str]:
        return {"a", "b"}

    def _data_summary(self) -> dict[str, Any]:
        return {"a_sha256": self.a.digest(), "b_sha256": self.b.digest()}

    def variables(self) -> tuple[str, ...]:
        return (*super().variables(), self.outcome)


class ImportanceSpec(ReleaseSpec):
    """Feature importances of a model trained on the population (computed by the analysis from the model). The
    gate releases a value only when every variable behind it is held by at least the threshold of persons of the
    population (``variables_of`` maps a key such as a factor to its variables; by default a key ``v`` or
    ``v.sd`` is the variable ``v``)."""

    socket_allowed: ClassVar[bool] = False
    kind: ClassVar[OutputKind] = "feature_importances"
    importances: Mapping[str, Annotated[float, Field(allow_inf_nan=False)]]
    variables_of: Mapping[str, tuple[VarName, ...]] = Field(default_factory=dict)
    outcome: VarName | None = None
    model: Annotated[str, Field(max_length=500)] = ""

    def variables_for(self, key: str) -> tuple[str, ...]:
        if key in self.variables_of:
            return tuple(self.variables_of[key])
        return (re.sub(r"\.sd$", "", key),)

    def variables(self) -> tuple[str, ...]:
        out = [*super().variables(), *((self.outcome,) if self.outcome else ())]
        for key in self.importances:
            out.extend(self.variables_for(key))
        return tuple(out)


TABLE_SPECS = (CountSpec, MeanSpec, SumSpec, QuantileSpec, HistogramSpec, ExtremesSpec)
SOCKET_SPECS: dict[str, type[ReleaseSpec]] = {
    "count": CountSpec,
    "mean": MeanSpec,
    "sum": SumSpec,
    "quantile": QuantileSpec,
    "histogram": HistogramSpec,
    "extremes": ExtremesSpec,
    "tree": TreeSpec,
    "test": TestSpec,
    "regression": RegressionSpec,
    "dp_model": DpModelSpec,
}


SPEC_TYPES: tuple[type[ReleaseSpec], ...] = (
    *TABLE_SPECS,
    TreeSpec,
    TestSpec,
    RegressionSpec,
    DpModelSpec,
    MetricsSpec,
    ComparisonSpec,
    ImportanceSpec,
)


def revalidated(spec: ReleaseSpec) -> ReleaseSpec:
    """A fully checked copy of ``spec``, as the gate releases it. ``model_copy(update=...)`` and
    ``model_construct`` skip validation (a copy with years (2023, 2023) would count every person twice), and a
    subclass could change what a spec means: only the spec types themselves are taken, and every field is
    checked again."""
    cls = type(spec)
    if cls not in SPEC_TYPES:
        raise RequestInvalid(
            f"the gate takes the release specs of kansrijk.gate.specs only, not {cls.__name__} (no subclasses)"
        )
    fields = {name: getattr(spec, name, None) for name in cls.model_fields}
    # a score set is checked in its constructor, which validation does not run again
    fields = {k: ScoreSet(v.frame) if isinstance(v, ScoreSet) else v for k, v in fields.items()}
    return build(cls, **fields)


def parse_spec(obj: Any) -> ReleaseSpec:
    """A spec from JSON-like data (the socket, a file): ``{"spec": "count", "name": ..., ...}``.

    Only specs that carry no data are accepted; ``RequestInvalid`` names every problem by field path."""
    if not isinstance(obj, Mapping):
        raise RequestInvalid("a spec must be a JSON object with a 'spec' field")
    body = dict(obj)
    if not all(isinstance(key, str) for key in body):
        raise RequestInvalid("a spec's field names must be text (a JSON object's keys)")
    which = body.pop("spec", None)
    cls = SOCKET_SPECS.get(which) if isinstance(which, str) else None
    if cls is None:
        raise RequestInvalid(f"spec: {which!r} is not one of {', '.join(SOCKET_SPECS)}")
    return build(cls, **body)


def spec_to_json(spec: ReleaseSpec) -> dict[str, Any]:
    """The JSON ``parse_spec`` reads back into an equal spec (only specs that carry no data)."""
    alias = next((a for a, cls in SOCKET_SPECS.items() if type(spec) is cls), None)
    if alias is None or not spec.socket_allowed:
        raise RequestInvalid(f"{type(spec).__name__} carries data and cannot be sent as JSON")
    return {"spec": alias, **spec.model_dump(mode="json")}


def build(cls: type[ReleaseSpec], /, **fields: Any) -> Any:
    """Construct a spec (``RequestInvalid`` names every problem by field path)."""
    return cls(**fields)


__all__ = [
    "SOCKET_SPECS",
    "SPEC_TYPES",
    "TABLE_SPECS",
    "ComparisonSpec",
    "Condition",
    "CountSpec",
    "DpModelSpec",
    "ExtremesSpec",
    "HistogramSpec",
    "ImportanceSpec",
    "MeanSpec",
    "MetricsSpec",
    "QuantileSpec",
    "RegressionSpec",
    "ReleaseSpec",
    "ScoreSet",
    "SplitNode",
    "SumSpec",
    "TestSpec",
    "TreeSpec",
    "build",
    "parse_spec",
    "revalidated",
    "spec_to_json",
    "where",
]
