"""The gate's internal, computed releases: every value and count in them comes from the gate itself.

These types are built only by ``kansrijk.gate.compute`` from a release spec (``kansrijk.gate.specs``) and the data
the gate reads; ``Gate.release`` refuses them from anyone else. Tabular ones hold the rows the gate selected (one
row per person per reference year) and are checked and answered by ``kansrijk.gate.sdc`` and ``kansrijk.gate.dp``;
model outputs hold the counts, metrics and fits the gate computed, checked by the model rules.

Each says what it reveals (the docstrings below), which the output-checking rules test. ``name`` becomes the file
name under ``released/``; ``population`` is the spec's population in words.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any, ClassVar, Literal

import polars as pl

from kansrijk.errors import GateError

OutputKind = Literal[
    "frequency_table",
    "mean_table",
    "sum_table",
    "quantile",
    "histogram",
    "extremes",
    "model_metrics",
    "feature_importances",
    "tree_structure",
    "test_result",
    "regression",
    "dp_model",
]

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,119}$")


class RequestInvalid(GateError):
    """A release request is malformed (bad name, missing column, inconsistent counts). Nothing was released."""

    exit_code = 23


def _check_name(kind: str, name: str) -> None:
    if not _NAME.match(name) or ".." in name:
        raise RequestInvalid(
            f"{kind} request {name!r}: name must match [a-z0-9][a-z0-9_.-]* (at most 120 characters)",
            hint="use a short lower-case release name such as 'outcome_by_buurt'",
        )


def _check_columns(kind: str, name: str, data: pl.DataFrame, columns: tuple[str, ...]) -> None:
    if not isinstance(data, pl.DataFrame):
        raise RequestInvalid(f"{kind} request {name!r}: data must be a polars DataFrame (one row per person)")
    missing = [c for c in columns if c not in data.columns]
    if missing:
        raise RequestInvalid(
            f"{kind} request {name!r}: column(s) {', '.join(missing)} not in the data",
            hint=f"available columns: {', '.join(data.columns)}",
        )


def _frame_digest(data: pl.DataFrame, columns: tuple[str, ...]) -> str:
    """SHA-256 over the Arrow IPC bytes of the columns the request uses (identifies the input exactly)."""
    buf = io.BytesIO()
    data.select(list(columns)).write_ipc(buf, compression="uncompressed")
    return hashlib.sha256(buf.getvalue()).hexdigest()


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, TreeNode):
        return _jsonable({f.name: getattr(value, f.name) for f in fields(value)})
    return value


@dataclass(frozen=True, eq=False, kw_only=True)
class ReleaseRequest:
    """Base of every request. Subclasses are frozen dataclasses; ``kind`` names the policy section that rules."""

    kind: ClassVar[OutputKind]
    data_columns: ClassVar[tuple[str, ...]] = ()

    name: str
    description: str = ""
    population: str = ""

    def __post_init__(self) -> None:
        _check_name(self.kind, self.name)

    # -- what the gate records --------------------------------------------------------------------------
    def parameters(self) -> dict[str, Any]:
        """Every field except the data, as JSON-able values (the released values of a model output)."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in fields(self):
            if f.name == "data":
                continue
            out[f.name] = _jsonable(getattr(self, f.name))
        return out

    def used_columns(self) -> tuple[str, ...]:
        return ()

    def digest(self) -> str:
        """SHA-256 of the canonical parameters and of the exact input columns: identifies the request."""
        params = self.parameters()
        data = getattr(self, "data", None)
        if isinstance(data, pl.DataFrame):
            params["data_sha256"] = _frame_digest(data, self.used_columns())
            params["data_rows"] = data.height
        blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()


# --- tables computed by the gate from person-level data --------------------------------------------------
@dataclass(frozen=True, eq=False, kw_only=True)
class CountTable(ReleaseRequest):
    """A frequency table or crosstab: the number of persons in every combination of the ``by`` variables.

    Reveals: how many persons share each combination (and, through margins, every sub-total). A cell of 0 or
    equal to its margin reveals that all (or none) of a group share an attribute (class disclosure).
    ``keys`` optionally lists the public categories per variable (needed for DP; also makes empty cells
    visible to the zeros rule). ``data`` has one row per person.
    """

    kind: ClassVar[OutputKind] = "frequency_table"

    data: pl.DataFrame
    by: tuple[str, ...]
    keys: Mapping[str, tuple[Any, ...]] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "by", tuple(self.by))
        if not self.by:
            raise RequestInvalid(f"frequency_table request {self.name!r}: 'by' needs at least one variable")
        _check_columns(self.kind, self.name, self.data, self.by)

    def used_columns(self) -> tuple[str, ...]:
        return self.by


@dataclass(frozen=True, eq=False, kw_only=True)
class MeanTable(ReleaseRequest):
    """The mean of ``value`` per combination of the ``by`` variables (``by=()`` for one overall mean).

    Reveals: each group's mean and its number of contributors. A mean over few persons, or one dominated by
    one or two persons, reveals their values. ``bounds`` (lower, upper) are the public clamping bounds DP
    needs; SDC checks use the raw values.
    """

    kind: ClassVar[OutputKind] = "mean_table"

    data: pl.DataFrame
    value: str
    by: tuple[str, ...] = ()
    keys: Mapping[str, tuple[Any, ...]] | None = None
    bounds: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "by", tuple(self.by))
        _check_columns(self.kind, self.name, self.data, (*self.by, self.value))
        if self.bounds is not None and not self.bounds[0] < self.bounds[1]:
            raise RequestInvalid(f"{self.kind} request {self.name!r}: bounds must be (lower, upper) with lower < upper")

    def used_columns(self) -> tuple[str, ...]:
        return (*self.by, self.value)


@dataclass(frozen=True, eq=False, kw_only=True)
class SumTable(MeanTable):
    """The sum of ``value`` per combination of the ``by`` variables.

    Reveals: each group's total and its number of contributors; a total dominated by one or two persons
    reveals (close to) their values, which is what the p% and (n,k) rules test.
    """

    kind: ClassVar[OutputKind] = "sum_table"


@dataclass(frozen=True, eq=False, kw_only=True)
class QuantileRequest(ReleaseRequest):
    """Quantiles (e.g. the median) of ``value``, overall or per group.

    Reveals: a value that some person actually has (an order statistic). Quantiles 0 and 1 are the minimum and
    maximum and are never released; other quantiles need at least the threshold of contributors per group.
    """

    kind: ClassVar[OutputKind] = "quantile"

    data: pl.DataFrame
    value: str
    quantiles: tuple[float, ...] = (0.5,)
    by: tuple[str, ...] = ()
    keys: Mapping[str, tuple[Any, ...]] | None = None
    bounds: tuple[float, float] | None = None
    candidates: tuple[float, ...] | None = None  # public candidate values for the DP quantile

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "by", tuple(self.by))
        object.__setattr__(self, "quantiles", tuple(float(q) for q in self.quantiles))
        _check_columns(self.kind, self.name, self.data, (*self.by, self.value))
        if not self.quantiles or any(not 0.0 <= q <= 1.0 for q in self.quantiles):
            raise RequestInvalid(f"quantile request {self.name!r}: quantiles must lie in [0, 1]")

    def used_columns(self) -> tuple[str, ...]:
        return (*self.by, self.value)


@dataclass(frozen=True, eq=False, kw_only=True)
class Histogram(ReleaseRequest):
    """Counts of ``value`` in bins ``[edges[i], edges[i+1])`` (last bin closed), overall or per group.

    Reveals: the distribution's shape; the outer edges, if data-driven, reveal the minimum and maximum, so
    edges must be fixed in advance (public) and values outside them are counted in the outer bins.
    """

    kind: ClassVar[OutputKind] = "histogram"

    data: pl.DataFrame
    value: str
    edges: tuple[float, ...]
    by: tuple[str, ...] = ()
    keys: Mapping[str, tuple[Any, ...]] | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "by", tuple(self.by))
        object.__setattr__(self, "edges", tuple(float(e) for e in self.edges))
        _check_columns(self.kind, self.name, self.data, (*self.by, self.value))
        if len(self.edges) < 2 or any(b <= a for a, b in zip(self.edges, self.edges[1:], strict=False)):
            raise RequestInvalid(f"histogram request {self.name!r}: edges must be at least two increasing values")

    def used_columns(self) -> tuple[str, ...]:
        return (*self.by, self.value)


@dataclass(frozen=True, eq=False, kw_only=True)
class Extremes(ReleaseRequest):
    """The minimum and maximum of ``value``. Reveals two persons' exact values; the default policy refuses it."""

    kind: ClassVar[OutputKind] = "extremes"

    data: pl.DataFrame
    value: str
    by: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "by", tuple(self.by))
        _check_columns(self.kind, self.name, self.data, (*self.by, self.value))

    def used_columns(self) -> tuple[str, ...]:
        return (*self.by, self.value)


# --- model outputs computed by the analysis ----------------------------------------------------------------
@dataclass(frozen=True, eq=False, kw_only=True)
class ModelMetrics(ReleaseRequest):
    """Performance metrics of a fitted model (AUC, precision, recall, Brier, ...).

    Reveals: aggregate fit on ``n`` persons of whom ``n_positive`` have the outcome. A metric on a test set with
    few positives (or few negatives) can reveal individual outcomes; ``dof`` (residual degrees of freedom,
    if the model has them) below the threshold means the model nearly memorises its data.
    """

    kind: ClassVar[OutputKind] = "model_metrics"

    metrics: Mapping[str, float]
    n: int
    n_positive: int | None = None
    dof: int | None = None
    model: str = ""
    outcome: str = ""  # the binary outcome's column: differencing compares the split with tables over it

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "metrics", dict(self.metrics))
        if self.n < 0 or (self.n_positive is not None and not 0 <= self.n_positive <= self.n):
            raise RequestInvalid(f"model_metrics request {self.name!r}: need 0 <= n_positive <= n")


@dataclass(frozen=True, eq=False, kw_only=True)
class FeatureImportances(ReleaseRequest):
    """Feature importances of a fitted model on ``n`` persons.

    Reveals: which variables the model used and how much; little about individuals unless ``n`` is small or
    a variable splits off a tiny group (checked through the tree structure, not here).
    """

    kind: ClassVar[OutputKind] = "feature_importances"

    importances: Mapping[str, float]
    n: int
    model: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "importances", dict(self.importances))


@dataclass(frozen=True, kw_only=True)
class TreeNode:
    """One node of a decision tree. Leaves have ``feature=None``; ``class_counts`` are persons per class. A split
    sends a person left when ``feature <= threshold``, or (``categories``) when the feature is one of them; a
    missing value goes left when ``missing_left``."""

    node_id: int
    depth: int
    class_counts: tuple[int, ...]
    feature: str | None = None
    threshold: float | None = None
    left: int | None = None
    right: int | None = None
    categories: tuple[Any, ...] = ()
    missing_left: bool | None = None

    @property
    def is_leaf(self) -> bool:
        return self.feature is None


@dataclass(frozen=True, eq=False, kw_only=True)
class TreeStructure(ReleaseRequest):
    """A fitted decision tree: split variables and thresholds, and per node the persons per class.

    Reveals: every leaf is an equivalence class of persons defined by the path's conditions; its class counts
    say how many of them have each outcome. A small leaf, a small class count, or a class probability of 0
    (everyone in the leaf has, or lacks, the outcome) discloses persons' outcomes.
    """

    kind: ClassVar[OutputKind] = "tree_structure"

    nodes: tuple[TreeNode, ...]
    classes: tuple[str, ...]
    min_samples_leaf: int
    max_depth: int | None = None
    min_samples_split: int = 2
    model: str = ""
    outcome: str = ""  # the binary outcome's column: differencing compares the root split with tables over it

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "nodes", tuple(self.nodes))
        bad = [n.node_id for n in self.nodes if len(n.class_counts) != len(self.classes)]
        if bad:
            raise RequestInvalid(
                f"tree_structure request {self.name!r}: node(s) {bad[:5]} have class_counts of the wrong length"
            )

    @property
    def leaves(self) -> tuple[TreeNode, ...]:
        return tuple(n for n in self.nodes if n.is_leaf)


@dataclass(frozen=True, eq=False, kw_only=True)
class TestResult(ReleaseRequest):
    """A statistical test: its statistic, degrees of freedom, p-value and number of persons.

    Reveals: one aggregate number; with few residual degrees of freedom the statistic pins down individual
    values.
    """

    __test__: ClassVar[bool] = False  # not a pytest test class

    kind: ClassVar[OutputKind] = "test_result"

    test: str
    statistic: float
    dof: float
    p_value: float
    n: int


@dataclass(frozen=True, eq=False, kw_only=True)
class RegressionResult(ReleaseRequest):
    """A fitted regression: coefficients (and standard errors) of ``n`` persons with ``dof`` residual dof.

    Reveals: with residual dof below the threshold the fit nearly interpolates the data and coefficients
    reveal individual values; a dummy coefficient for a tiny group reveals that group's mean.
    """

    kind: ClassVar[OutputKind] = "regression"

    coefficients: Mapping[str, float]
    n: int
    dof: int
    std_errors: Mapping[str, float] = field(default_factory=dict)
    model: str = ""

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "coefficients", dict(self.coefficients))
        object.__setattr__(self, "std_errors", dict(self.std_errors))


@dataclass(frozen=True, eq=False, kw_only=True)
class DpModelRequest(ReleaseRequest):
    """Train a differentially private tree model for the binary ``outcome`` inside the gate and release its
    structure, importances and held-out metrics (``kansrijk.gate.dp_models``).

    Reveals: with epsilon-DP for one person, the model's splits and noisy leaf values, importances derived
    from them, and ROC-AUC / PR-AUC from a noisy score histogram of held-out persons. Public (not protected):
    the feature list, the bin edges and categories, the settings and the seed. ``data`` has one row per person
    (``person`` names an id column, used only to assign persons to folds). ``epsilon`` is spent in full and
    split as the release file shows; ``bin_edges`` are inner edges of numeric features (the policy's win);
    ``keys`` are public categories of string features.
    """

    kind: ClassVar[OutputKind] = "dp_model"

    data: pl.DataFrame
    outcome: str
    features: tuple[str, ...]
    model: Literal["dp_tree", "dp_boosted"] = "dp_tree"
    epsilon: Fraction = Fraction(1)
    max_depth: int = 5
    trees: int = 1
    folds: int = 5
    seed: int = 0
    bin_edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    keys: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    person: str | None = None
    learning_rate: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "features", tuple(self.features))
        object.__setattr__(self, "bin_edges", {k: tuple(float(x) for x in v) for k, v in self.bin_edges.items()})
        object.__setattr__(self, "keys", {k: tuple(v) for k, v in self.keys.items()})
        eps = self.epsilon
        if isinstance(eps, str | int) and not isinstance(eps, bool):
            eps = Fraction(eps)
        if not isinstance(eps, Fraction) or eps <= 0:
            raise RequestInvalid(
                f"dp_model request {self.name!r}: epsilon must be an exact positive number (Fraction, int or "
                f"a string such as '1/2'); floats are refused because 0.1 is not one tenth"
            )
        object.__setattr__(self, "epsilon", eps)
        if not self.features:
            raise RequestInvalid(f"dp_model request {self.name!r}: 'features' needs at least one column")
        if self.outcome in self.features:
            raise RequestInvalid(f"dp_model request {self.name!r}: the outcome {self.outcome!r} is also a feature")
        extra = (self.person,) if self.person else ()
        _check_columns(self.kind, self.name, self.data, (self.outcome, *self.features, *extra))
        if not 1 <= self.max_depth <= 12 or not 1 <= self.trees <= 500 or not 2 <= self.folds <= 20:
            raise RequestInvalid(
                f"dp_model request {self.name!r}: need 1 <= max_depth <= 12, 1 <= trees <= 500, 2 <= folds <= 20"
            )
        if self.model == "dp_tree" and self.trees != 1:
            raise RequestInvalid(f"dp_model request {self.name!r}: a dp_tree has exactly one tree (trees = 1)")
        dtype = self.data.schema[self.outcome]
        if dtype != pl.Boolean and not dtype.is_integer():
            raise RequestInvalid(f"dp_model request {self.name!r}: outcome {self.outcome!r} must be boolean or 0/1")

    def parameters(self) -> dict[str, Any]:
        out = super().parameters()
        out["epsilon"] = str(self.epsilon)
        return out

    def used_columns(self) -> tuple[str, ...]:
        return (self.outcome, *self.features, *((self.person,) if self.person else ()))


TABLE_REQUESTS = (CountTable, MeanTable, SumTable, QuantileRequest, Histogram, Extremes)
ALL_REQUESTS = (
    *TABLE_REQUESTS,
    ModelMetrics,
    FeatureImportances,
    TreeStructure,
    TestResult,
    RegressionResult,
    DpModelRequest,
)

__all__ = [
    "ALL_REQUESTS",
    "TABLE_REQUESTS",
    "CountTable",
    "DpModelRequest",
    "Extremes",
    "FeatureImportances",
    "Histogram",
    "MeanTable",
    "ModelMetrics",
    "OutputKind",
    "QuantileRequest",
    "RegressionResult",
    "ReleaseRequest",
    "RequestInvalid",
    "SumTable",
    "TestResult",
    "TreeNode",
    "TreeStructure",
]
