"""Loading what the analysis runs on: the signed plan and factor model, the linked datasets, and the numeric
design matrix of one outcome population and feature set.

Encoding (documented in docs/analysis.md, "Features"):

- booleans become 0/1, numbers stay numbers; a missing value (the person is not known at that partner) stays
  missing (NaN), which scikit-learn's trees route explicitly rather than imputing;
- a nominal variable with at most ``features.one_hot_max_levels`` categories is one-hot encoded over its
  *public* categories from ``kansrijk.schema`` (never from the data); a missing value is NaN in every column;
- a code variable (buurt, wijk) becomes the rank of its code among the codes present (codes are grouped
  geographically, so a range of codes is a group of neighbouring areas);
- encoded columns that are constant in the population carry no information and are dropped;
- ``features.ordinal`` variables (ordered public categories) become the rank of their category instead;
- ``features.previous_year`` variables are also taken from the person's record in the previous reference year
  (``<variable>_last_year``, encoded like the variable itself; missing when the person has no record then, or
  when that year is not linked). They are measured before the outcomes "since last year" happened, so they are
  predictors, not leaks, where this year's value is excluded (track, grade).

Importances are always reported per canonical variable (one-hot columns summed, permuted together).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from coordinator.workspace import WorkspacePaths, open_workspace
from kansrijk.errors import AnalysisError, WorkspaceError
from kansrijk.gate.data import LAST_YEAR, PERSON, with_previous_year
from kansrijk.outcomes import outcome as outcome_def
from kansrijk.policy.analysis import AnalysisPlan, load_analysis_plan
from kansrijk.policy.common import policy_digest, read_policy_bytes
from kansrijk.policy.factors import DERIVED_INDICATORS, IDENTIFIERS, FactorModel, load_factor_model
from kansrijk.policy.signing import OfficerKey, verify_policy
from kansrijk.schema import VARIABLES, Kind


@dataclass(frozen=True, slots=True)
class LoadedPolicies:
    """The plan and factor model that will run, with the digests recorded in every release request."""

    plan: AnalysisPlan
    plan_path: Path
    plan_digest: str
    factors: FactorModel
    factors_path: Path
    factors_digest: str
    signed: bool


def load_policies(
    plan_path: Path, factors_path: Path, trusted_officer_keys: Sequence[OfficerKey] | None
) -> LoadedPolicies:
    """Verify (when officer keys are given) and parse the plan and the factor model.

    With officer keys, each file must carry a valid signature of one of them (``PolicyNotSigned`` otherwise),
    checked before the file is parsed. Without keys the files are only validated: callers that release
    anything pass keys (the gate refuses an unsigned release policy anyway).
    """
    plan_path, factors_path = Path(plan_path), Path(factors_path)
    if trusted_officer_keys:
        plan_raw, plan_dig, _ = verify_policy(plan_path, trusted_officer_keys)
        fac_raw, fac_dig, _ = verify_policy(factors_path, trusted_officer_keys)
    else:
        plan_raw = read_policy_bytes(plan_path)
        fac_raw = read_policy_bytes(factors_path)
        plan_dig, fac_dig = policy_digest(plan_raw), policy_digest(fac_raw)
    return LoadedPolicies(
        plan=load_analysis_plan(plan_path, plan_raw),
        plan_path=plan_path,
        plan_digest=plan_dig,
        factors=load_factor_model(factors_path, fac_raw),
        factors_path=factors_path,
        factors_digest=fac_dig,
        signed=bool(trusted_officer_keys),
    )


def dataset_years(paths: WorkspacePaths) -> list[int]:
    """Reference years with a linked dataset ``WS/dataset/<year>.parquet``."""
    return sorted(int(p.stem) for p in paths.dataset.glob("[0-9][0-9][0-9][0-9].parquet"))


def load_datasets(workspace: Path, plan: AnalysisPlan, plan_path: Path) -> dict[int, pl.DataFrame]:
    """The analysis datasets of the plan's reference years, restricted to the plan's cohort (age range)."""
    paths = open_workspace(Path(workspace))
    available = dataset_years(paths)
    if not available:
        raise WorkspaceError(
            f"{paths.root}: no linked dataset under dataset/", hint="run: kansrijk coordinator link WS"
        )
    wanted = available if plan.cohort.reference_years == "all" else list(plan.cohort.reference_years)
    missing = [y for y in wanted if y not in available]
    if missing:
        raise AnalysisError(
            f"{plan_path}: cohort.reference_years: no linked dataset for {missing} (linked: {available})",
            hint="link those years first, or change the plan's reference_years",
        )
    out: dict[int, pl.DataFrame] = {}
    for year in wanted:
        frame = pl.read_parquet(paths.dataset_for(year))
        if "age_years" not in frame.columns:
            raise AnalysisError(f"{paths.dataset_for(year)}: no age_years column; re-run coordinator link")
        if plan.features.previous_year and year - 1 in available:
            previous = pl.read_parquet(paths.dataset_for(year - 1))
            frame = with_previous_year(frame, previous, plan.features.previous_year, str(paths.dataset_for(year - 1)))
        out[year] = frame.filter(pl.col("age_years").is_between(plan.cohort.min_age, plan.cohort.max_age))
    return out


def attach_previous_years(datasets: dict[int, pl.DataFrame], variables: Sequence[str]) -> dict[int, pl.DataFrame]:
    """Every year's frame with last year's ``variables`` where the previous year is among ``datasets``."""
    if not variables:
        return datasets
    return {
        y: with_previous_year(f, datasets[y - 1], variables, f"reference year {y - 1}") if y - 1 in datasets else f
        for y, f in datasets.items()
    }


def previous_year_base(name: str, plan: AnalysisPlan) -> str | None:
    """The variable a previous-year feature is taken from (``track`` for ``track_last_year``), else None."""
    if name.endswith(LAST_YEAR) and name[: -len(LAST_YEAR)] in plan.features.previous_year:
        return name[: -len(LAST_YEAR)]
    return None


# --- feature sets -----------------------------------------------------------------------------------------
def is_feature_column(name: str) -> bool:
    return (name in VARIABLES and name not in IDENTIFIERS) or name in DERIVED_INDICATORS


def feature_variables(
    columns: Sequence[str], plan: AnalysisPlan, factors: FactorModel, outcome: str, feature_set: str
) -> tuple[str, ...]:
    """The canonical variables of ``feature_set`` for ``outcome``, in a fixed order, that the data holds.

    Never included: identifiers, the plan's ``features.exclude`` and ``outcomes.<outcome>.exclude``, and the
    outcome's own source variable (an outcome is never predicted from the variable it is derived from).
    """
    source = outcome_def(outcome).source_variable
    banned = {source, *plan.features.exclude, *(plan.outcomes[outcome].exclude if outcome in plan.outcomes else ())}
    present = [c for c in columns if is_feature_column(c) and _not_binary(c)]
    if feature_set == "all":
        chosen = [c for c in present if c not in banned]
        # last year's state: measured before this year's outcomes, so kept even where this year's value is excluded
        base_order = {v: i for i, v in enumerate(plan.features.previous_year)}
        last_year = [c for c in columns if (b := previous_year_base(c, plan)) is not None and _not_binary(b)]
        chosen += sorted(last_year, key=lambda c: base_order[c[: -len(LAST_YEAR)]])
    elif feature_set == "factor_model":
        chosen = [c for c in factors.indicators if c in present and c not in banned]
    else:
        raise AnalysisError(f"unknown feature set {feature_set!r}")
    always = [c for c in plan.features.always if c in present and c not in chosen and c not in banned]
    return tuple(always + chosen)


def _not_binary(name: str) -> bool:
    var = VARIABLES.get(name)
    return var is None or var.kind is not Kind.BINARY


@dataclass(frozen=True, slots=True)
class Encoding:
    """How one design column encodes its variable: ``numeric`` (the value), ``bool`` (0/1), ``onehot`` (1 when
    the variable is ``categories[0]``) or ``rank`` (the position of the value in ``categories``)."""

    how: str
    variable: str
    categories: tuple[object, ...] = ()

    def split(self, threshold: float) -> dict[str, object]:
        """The canonical rule of ``column <= threshold`` (what the gate re-applies to its own data)."""
        if self.how == "numeric":
            # a split that only separates missing values has an infinite threshold: every known value goes left
            return {
                "var": self.variable,
                "threshold": float(threshold) if math.isfinite(threshold) else sys.float_info.max,
            }
        if self.how == "bool":
            return {"var": self.variable, "categories": tuple(v for v in (False, True) if float(v) <= threshold)}
        if self.how == "onehot":  # the column is 1 for the category and 0 for every other one
            return {
                "var": self.variable,
                "categories": tuple(c for c in self._all if float(c == self.categories[0]) <= threshold),
            }
        return {"var": self.variable, "categories": tuple(c for i, c in enumerate(self.categories) if i <= threshold)}

    @property
    def _all(self) -> tuple[object, ...]:
        var = VARIABLES.get(self.variable.removesuffix(LAST_YEAR))
        return tuple(var.categories) if var is not None else ()


@dataclass(frozen=True, slots=True)
class Design:
    """The numeric design matrix of one population and feature set."""

    X: np.ndarray  # float32, (persons, columns), NaN = missing
    columns: tuple[str, ...]  # encoded column names, e.g. "sex=M", "income_eur"
    variable_of: tuple[str, ...]  # canonical variable of each column
    dropped: tuple[str, ...]  # variables with no information in this population
    encodings: tuple[Encoding, ...] = ()  # per column: how it encodes its variable (for the gate's tree spec)

    @property
    def variables(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.variable_of))

    def column_groups(self) -> dict[str, np.ndarray]:
        """Variable -> indices of its encoded columns."""
        groups: dict[str, list[int]] = {}
        for i, v in enumerate(self.variable_of):
            groups.setdefault(v, []).append(i)
        return {v: np.asarray(ix, dtype=np.int64) for v, ix in groups.items()}


def _encoders(
    frame: pl.DataFrame, name: str, one_hot_max_levels: int, ordinal: bool = False
) -> list[tuple[str, pl.Expr, Encoding]]:
    col = pl.col(name)
    dtype = frame.schema[name]
    nan = pl.lit(float("nan"), dtype=pl.Float32)
    var = VARIABLES.get(name.removesuffix(LAST_YEAR))  # last year's track has the categories of track
    if dtype == pl.Boolean:
        return [(name, col.cast(pl.Float32).fill_null(nan), Encoding("bool", name))]
    if dtype.is_numeric():
        return [(name, col.cast(pl.Float32).fill_null(nan), Encoding("numeric", name))]
    if var is not None and var.kind is Kind.CATEGORY and len(var.categories) <= one_hot_max_levels and not ordinal:
        return [
            (
                f"{name}={cat}",
                pl.when(col.is_null()).then(nan).otherwise((col == cat).cast(pl.Float32)),
                Encoding("onehot", name, (cat,)),
            )
            for cat in var.categories
        ]
    categories = list(var.categories) if var is not None and var.categories else None
    if categories is None:
        categories = sorted(v for v in frame.get_column(name).unique().to_list() if v is not None)
    mapping = {c: float(i) for i, c in enumerate(categories)}
    return [
        (
            name,
            col.replace_strict(mapping, default=None, return_dtype=pl.Float32).fill_null(nan),
            Encoding("rank", name, tuple(categories)),
        )
    ]


def encode(
    frame: pl.DataFrame, variables: Sequence[str], *, one_hot_max_levels: int, ordinal: Sequence[str] = ()
) -> Design:
    """Encode ``variables`` of ``frame`` (one row per person) into a float32 matrix; see the module doc.

    ``ordinal``: nominal variables whose public categories are in a meaningful order (the plan's
    ``features.ordinal``); each becomes one column, the rank of its category in that order.
    """
    named: list[tuple[str, str, pl.Expr]] = []
    encodings: list[Encoding] = []
    for v in variables:
        for column, expr, enc in _encoders(frame, v, one_hot_max_levels, v.removesuffix(LAST_YEAR) in ordinal):
            named.append((column, v, expr))
            encodings.append(enc)
    if not named:
        raise AnalysisError("no feature variable is present in the dataset")
    full = frame.select([expr.alias(f"c{i}") for i, (_, _, expr) in enumerate(named)]).to_numpy()
    full = full.astype(np.float32, copy=False)
    finite = np.isfinite(full)
    with np.errstate(invalid="ignore"):
        lo = np.nanmin(np.where(finite, full, np.inf), axis=0) if full.shape[0] else np.zeros(full.shape[1])
        hi = np.nanmax(np.where(finite, full, -np.inf), axis=0) if full.shape[0] else np.zeros(full.shape[1])
    has_value = finite.any(axis=0)
    informative = has_value & ((hi > lo) | ~finite.all(axis=0))
    keep = [i for i, ok in enumerate(informative.tolist()) if ok]
    X = full[:, keep]
    kept_vars = {named[i][1] for i in keep}
    dropped = tuple(v for v in dict.fromkeys(n[1] for n in named) if v not in kept_vars)
    return Design(
        X=np.ascontiguousarray(X),
        columns=tuple(named[i][0] for i in keep),
        variable_of=tuple(named[i][1] for i in keep),
        dropped=dropped,
        encodings=tuple(encodings[i] for i in keep),
    )


__all__ = [
    "LAST_YEAR",
    "PERSON",
    "Design",
    "Encoding",
    "LoadedPolicies",
    "attach_previous_years",
    "dataset_years",
    "encode",
    "feature_variables",
    "load_datasets",
    "load_policies",
    "previous_year_base",
    "with_previous_year",
]
