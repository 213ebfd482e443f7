"""The limited statistical analysis: is a binary outcome associated with one variable (WOZ), linearly or not?

The factsheet found "no significant linear association between WOZ and social-emotional health" and read it as a
hint of a non-linear relation. Reading a non-significant linear test as evidence of non-linearity is not a test;
here each reading is its own test on the same persons (docs/analysis.md, "Association"):

- ``linear_wald`` / ``linear_lr``: logistic regression of the outcome on the variable alone (in units of
  ``scale``), Wald z-test and likelihood-ratio test of the slope (chi-square, 1 df);
- ``spline_lr``: logistic regression on a cubic B-spline basis of the variable (``spline_df`` columns, knots at
  quantiles), likelihood-ratio test against the intercept-only model (any association, linear or not);
- ``nonlinearity_lr``: the spline model against the linear one (``spline_df - 1`` df): is there association
  beyond the linear trend? This is the test the factsheet's reading needs;
- ``binned_lr``: logistic regression on the public WOZ bins (one-hot), against intercept-only;
- ``mutual_information``: mutual information between the binned variable and the outcome, with a permutation
  p-value. Permuting the outcome over persons leaves the bin sizes and the number of positives fixed, so the
  permuted positives per bin follow a multivariate hypergeometric distribution, which is drawn directly.

Statsmodels fits the logistic regressions (maximum likelihood, Newton). Only aggregates leave this module; the
rate curve (share of positives per public bin) goes to the gate as a mean table computed by the gate itself.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import statsmodels.api as sm
from scipy import stats
from sklearn.preprocessing import SplineTransformer

BIN_COLUMN = "value_bin"  # the binned variable (internal column; never released under this name)


@dataclass(frozen=True, slots=True)
class TestOutcome:
    """One test: its statistic, the reference distribution's df, p-value, persons and residual df."""

    test: str
    statistic: float
    df: float
    p_value: float
    n: int
    residual_dof: int
    distribution: str


@dataclass(frozen=True, eq=False)
class AssociationResult:
    tests: dict[str, TestOutcome]
    linear_coefficients: dict[str, float]
    linear_std_errors: dict[str, float]
    n: int
    n_positive: int

    def verdict(self, alpha: float) -> str:
        """A one-line reading of the tests."""
        return reading({name: t.p_value for name, t in self.tests.items()}, alpha)


def reading(p_values: dict[str, float], alpha: float) -> str:
    """A one-line reading of the linear, non-linearity and spline tests' p-values at ``alpha`` (the report reads
    the released p-values with it)."""
    lin = p_values["linear_lr"] < alpha
    nonlin = p_values["nonlinearity_lr"] < alpha
    anyassoc = p_values["spline_lr"] < alpha
    if nonlin and not lin:
        return "non-linear association: no linear trend, but the spline model fits significantly better"
    if nonlin and lin:
        return "association with a linear trend and significant non-linearity beyond it"
    if lin:
        return "linear association; no evidence of non-linearity"
    if anyassoc:
        return "association detected only jointly by the spline model"
    return "no association detected"


def bin_labels(edges: tuple[float, ...]) -> tuple[str, ...]:
    """Public labels of the open-ended bins defined by the inner ``edges`` (no minimum or maximum shown)."""
    e = [int(x) if float(x).is_integer() else x for x in edges]
    labels = [f"<{e[0]}"]
    labels += [f"[{a},{b})" for a, b in itertools.pairwise(e)]
    labels.append(f">={e[-1]}")
    return tuple(labels)


def bin_expr(column: str, edges: tuple[float, ...]) -> pl.Expr:
    """The public bin label of each row (null when the value is missing)."""
    labels = bin_labels(edges)
    return pl.col(column).cut(list(edges), labels=list(labels), left_closed=True).cast(pl.String).alias(BIN_COLUMN)


def _bin_index(x: np.ndarray, edges: tuple[float, ...]) -> np.ndarray:
    return np.searchsorted(np.asarray(edges, dtype=np.float64), x, side="right")


def _logit_llf(y: np.ndarray, X: np.ndarray) -> tuple[float, object]:
    result = sm.Logit(y, X).fit(disp=0, method="newton", maxiter=100)
    return float(result.llf), result


def _lr(test: str, ll1: float, ll0: float, df: int, n: int, k: int) -> TestOutcome:
    stat = max(0.0, 2.0 * (ll1 - ll0))
    return TestOutcome(test, stat, float(df), float(stats.chi2.sf(stat, df)), n, n - k, "chi2")


def mutual_information(table: np.ndarray) -> float:
    """Mutual information (nats) of a bins x 2 contingency table of counts."""
    n = table.sum()
    if n == 0:
        return 0.0
    p = table / n
    pr = p.sum(axis=1, keepdims=True)
    pc = p.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p / (pr * pc)), 0.0)
    return float(terms.sum())


def associate(
    x: np.ndarray,
    y: np.ndarray,
    *,
    scale: float,
    spline_df: int,
    edges: tuple[float, ...],
    permutations: int,
    rng: np.random.Generator,
) -> AssociationResult:
    """Run every test of the module on persons with a known ``x`` (raw units) and binary ``y``."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    keep = np.isfinite(x)
    x, y = x[keep], y[keep]
    n = int(y.size)
    xs = x / scale
    ones = np.ones((n, 1))
    ll0 = float(np.sum(y * np.log(y.mean()) + (1 - y) * np.log(1 - y.mean())))
    ll_lin, lin = _logit_llf(y, np.column_stack([ones, xs]))
    z = float(lin.params[1] / lin.bse[1])
    tests = {
        "linear_wald": TestOutcome("linear_wald", z, 1.0, float(2 * stats.norm.sf(abs(z))), n, n - 2, "normal"),
        "linear_lr": _lr("linear_lr", ll_lin, ll0, 1, n, 2),
    }
    basis = SplineTransformer(n_knots=spline_df - 1, degree=3, knots="quantile", include_bias=False).fit_transform(
        xs.reshape(-1, 1)
    )
    ll_spl, _ = _logit_llf(y, np.column_stack([ones, basis]))
    k_spl = 1 + basis.shape[1]
    tests["spline_lr"] = _lr("spline_lr", ll_spl, ll0, basis.shape[1], n, k_spl)
    tests["nonlinearity_lr"] = _lr("nonlinearity_lr", ll_spl, ll_lin, basis.shape[1] - 1, n, k_spl)

    bins = _bin_index(x, edges)
    n_bins = len(edges) + 1
    sizes = np.bincount(bins, minlength=n_bins)
    used = np.flatnonzero(sizes > 0)
    onehot = (bins[:, None] == used[None, 1:]).astype(np.float64)
    ll_bin, _ = _logit_llf(y, np.column_stack([ones, onehot]))
    tests["binned_lr"] = _lr("binned_lr", ll_bin, ll0, used.size - 1, n, used.size)

    positives = np.bincount(bins, weights=y, minlength=n_bins).astype(np.int64)
    table = np.column_stack([sizes - positives, positives])[used]
    mi = mutual_information(table)
    n_pos = int(positives.sum())
    draws = rng.multivariate_hypergeometric(sizes[used], n_pos, size=permutations)
    null = np.array([mutual_information(np.column_stack([sizes[used] - d, d])) for d in draws])
    p_perm = float((1 + np.sum(null >= mi - 1e-12)) / (permutations + 1))
    tests["mutual_information"] = TestOutcome(
        "mutual_information", mi, float(used.size - 1), p_perm, n, n - used.size, f"permutation({permutations})"
    )
    return AssociationResult(
        tests=tests,
        linear_coefficients={"intercept": float(lin.params[0]), f"per_{_unit(scale)}": float(lin.params[1])},
        linear_std_errors={"intercept": float(lin.bse[0]), f"per_{_unit(scale)}": float(lin.bse[1])},
        n=n,
        n_positive=n_pos,
    )


def _unit(scale: float) -> str:
    if scale >= 1000 and math.isclose(scale % 1000, 0):
        return f"{int(scale // 1000)}k"
    return f"{scale:g}"


__all__ = ["BIN_COLUMN", "AssociationResult", "TestOutcome", "associate", "bin_expr", "bin_labels", "reading"]
