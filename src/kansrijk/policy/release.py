"""The release policy: how every kind of output is checked before it leaves the coordinator.

A privacy officer writes, reviews and signs this file (``policies/release/*.toml``); the release gate refuses to
run on an unsigned or altered one. Per output kind it says whether the output is checked by statistical
disclosure control (``sdc``), answered with differential privacy (``dp``), or both (``dp+sdc``: every SDC rule
runs on the true data and the values that pass are released with DP noise).

The defaults are the strictest figures in ``sdc-rules.md`` (ACRO, ABS DataLab, Bundesbank RDSC, SACRO-ML,
Statistics Netherlands).
A policy may be stricter; a policy that is *looser* than that floor, or spends more privacy than the DP ceilings
below allow, does not validate, so neither a typo nor a hostile edit can weaken the gate: every number a policy
can set has a floor or a ceiling (``LIMITS``), or cannot loosen anything (said per key in
``docs/privacy-officer.md``).

The policy's ``dataset`` is a label. The DP budget belongs to the persons the data is about, not to a name: the
gate keeps it per person-key space of the workspace (``kansrijk.gate.budget.budget_key``), so every policy over the
same persons spends from one budget.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from kansrijk.gate.requests import OutputKind
from kansrijk.policy.common import PolicyModel, StudyPolicy, parse_policy, study_field
from kansrijk.policy.grids import PublicGrids

RELEASE_KIND = "release"

# --- floors and ceilings ----------------------------------------------------------------------------------
# The floor: no policy may be looser than these (sdc-rules.md, strictest row per rule). Where a looser rule means
# a *higher* number (nk_k, the suppressed share, the risky depth) the floor is a ceiling; the names say which.
FLOOR_MIN_PERSONS = 10
FLOOR_P_PERCENT = 0.10
FLOOR_NK_N = 2
FLOOR_NK_K = 0.85  # a ceiling: fail when the n largest are >= k of the total (Bundesbank RDSC; ACRO 0.90)
FLOOR_MIN_DOF = 10
FLOOR_MIN_SAMPLES_LEAF = 5
FLOOR_MIN_LEAF_PERSONS = 10
FLOOR_MIN_CLASS_COUNT = 10
FLOOR_QUANTILE_CONTRIBUTORS = 10
# The release-history audit (kansrijk.gate.audit): a group below the threshold must stay uncertain to an interval of
# at least this many persons under every release together (1: never exactly; tau-Argus's protection interval).
FLOOR_AUDIT_INTERVAL = 1
DEFAULT_AUDIT_INTERVAL = 2
# A table with more than half its cells withheld is refused: the blanks and the cells left say too much together
# and the table has no analytical value (our stricter-than-ACRO rule 3, docs/privacy-officer.md; the ACRO
# comparison suite refuses 16 small pivot tables on it). A higher share would quietly switch the rule off.
CEILING_MAX_SUPPRESSED_SHARE = 0.5
# SACRO-ML _get_unnecessary_risk_dt: depth > 7 with min_samples_leaf <= 7 and min_samples_split <= 15.
CEILING_RISKY_MAX_DEPTH = 7

# The DP ceilings (privacy unit: one person; pure epsilon-DP, so epsilon bounds by e^epsilon how much any one
# person's presence can change the probability of any output, whatever an attacker knows):
# - per release (a table, quantile or histogram) <= 1: e^1 ~ 2.7. Dwork & Roth (The Algorithmic Foundations of
#   Differential Privacy, 2014) treat epsilon as a small constant (0.01..1, "ln 2 or ln 3"); above 1 a single
#   answer already lets an attacker multiply their odds on one person by more than e. Our shipped policies use
#   0.1..0.2 per table and cap a release at 0.5.
# - a DP model release <= 2: a tree or a boosted ensemble is one release made of many measurements (a noisy split
#   choice per level, leaf counts, a held-out score histogram); at 2 the whole model costs what four table
#   releases at our 0.5 cap do, and its parts get epsilon 0.1..0.4 each at depth 6.
# - total <= 10 over *all* releases about the same persons, under every policy (the budget is per person-key
#   space, kansrijk.gate.budget): e^10 ~ 22,000, the loosest total we consider defensible for a whole study. For
#   scale: the US Census Bureau spent epsilon 17.14 on persons for the entire 2020 redistricting data
#   (delta 1e-10; 19.61 with housing units), a national product for 330 million people and a decade; Dwork, Kohli
#   & Mulligan ("Differential Privacy in Practice: Expose your Epsilons!", 2019) found deployed totals in the
#   single digits to tens and no consensus, and ask that every epsilon be published (the ledger does). One
#   municipal study should stay well below a national census: our shipped policies spend 4 and 8.
# - delta total < 1/1000: the gate's mechanisms (Laplace, exponential) are pure DP and spend delta 0; any delta
#   must stay far below 1/n ("privacy for all but one in a thousand persons" is no privacy at all at n >= 1000).
CEILING_EPSILON_PER_RELEASE = Fraction(1)
CEILING_DP_MODEL_EPSILON = Fraction(2)
CEILING_EPSILON_TOTAL = Fraction(10)
CEILING_DELTA_TOTAL = Fraction(1, 1000)  # exclusive: delta_total must be strictly below it
# Who may request a release: a plain name, compared exactly (no pattern, no wildcard).
REQUESTER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# DP counts are rounded only in these kinds (kansrijk.gate.dp: counts of a table or histogram).
ROUNDED_KINDS = frozenset({"frequency_table", "histogram"})


@dataclass(frozen=True, slots=True)
class Limit:
    """One bound a release policy must respect: ``key`` (``*`` for every output kind) is at least (``floor``)
    or at most (``ceiling``) ``bound``; ``exclusive`` bounds must not be reached either. ``domain`` bounds only
    keep a number meaningful (a share above 0); the others are privacy floors and ceilings."""

    key: str
    side: Literal["floor", "ceiling"]
    bound: Fraction
    why: str
    exclusive: bool = False
    domain: bool = False

    def holds(self, value: object) -> bool:
        v = Fraction(str(value))
        if self.side == "floor":
            return v > self.bound if self.exclusive else v >= self.bound
        return v < self.bound if self.exclusive else v <= self.bound


def _f(x: float | int) -> Fraction:
    return Fraction(str(x))


# Every number a release policy can set that could make a release less private, with its bound. Validation
# enforces them (pydantic constraints and the validators below); the tests check no valid policy breaks one;
# ``explain`` lists them in words. Keys absent here cannot loosen the gate (docs/privacy-officer.md says why).
LIMITS: tuple[Limit, ...] = (
    Limit(
        "sdc.min_persons_per_cell",
        "floor",
        _f(FLOOR_MIN_PERSONS),
        "persons per cell: ACRO, ABS DataLab, Statistics Netherlands",
    ),
    Limit("sdc.p_percent", "floor", _f(FLOOR_P_PERCENT), "p% rule: ACRO"),
    Limit("sdc.p_percent", "ceiling", Fraction(1), "a share", domain=True),
    Limit("sdc.nk_n", "floor", _f(FLOOR_NK_N), "(n,k) dominance over the 2 largest: Bundesbank RDSC, ACRO"),
    Limit("sdc.nk_n", "ceiling", Fraction(10), "a handful of contributors", domain=True),
    Limit("sdc.nk_k", "ceiling", _f(FLOOR_NK_K), "(n,k) dominance share: Bundesbank RDSC (ACRO uses 0.90)"),
    Limit("sdc.nk_k", "floor", Fraction(0), "a share", exclusive=True, domain=True),
    Limit("sdc.min_dof", "floor", _f(FLOOR_MIN_DOF), "residual degrees of freedom: ACRO, SACRO-ML"),
    Limit(
        "sdc.min_quantile_contributors",
        "floor",
        _f(FLOOR_QUANTILE_CONTRIBUTORS),
        "contributors per quantile group: ABS DataLab",
    ),
    Limit(
        "sdc.audit_interval",
        "floor",
        _f(FLOOR_AUDIT_INTERVAL),
        "persons of uncertainty the release-history audit keeps on every group below the threshold",
    ),
    Limit(
        "sdc.max_suppressed_share",
        "ceiling",
        _f(CEILING_MAX_SUPPRESSED_SHARE),
        "share of withheld cells before the whole table is refused: kansrijk, stricter than ACRO",
    ),
    Limit("sdc.max_suppressed_share", "floor", Fraction(0), "a share", exclusive=True, domain=True),
    Limit(
        "sdc.tree.min_samples_leaf_training",
        "floor",
        _f(FLOOR_MIN_SAMPLES_LEAF),
        "min_samples_leaf the model was trained with: SACRO-ML",
    ),
    Limit("sdc.tree.min_leaf_persons", "floor", _f(FLOOR_MIN_LEAF_PERSONS), "persons per leaf: SACRO-ML"),
    Limit("sdc.tree.min_class_count", "floor", _f(FLOOR_MIN_CLASS_COUNT), "a class count in a leaf: SACRO-ML"),
    Limit(
        "sdc.tree.risky_max_depth",
        "ceiling",
        _f(CEILING_RISKY_MAX_DEPTH),
        "tree depth before the unnecessary-risk rule refuses: SACRO-ML",
    ),
    Limit("sdc.tree.risky_max_depth", "floor", Fraction(0), "a depth", domain=True),
    Limit("dp.epsilon_total", "ceiling", CEILING_EPSILON_TOTAL, "epsilon over all releases about the same persons: "
          "Dwork, Kohli & Mulligan 2019 and the US Census 2020 (docs/privacy-officer.md)"),
    Limit("dp.epsilon_total", "floor", Fraction(0), "a budget", exclusive=True, domain=True),
    Limit("dp.epsilon_per_release_max", "ceiling", CEILING_EPSILON_PER_RELEASE, "epsilon of one table release: "
          "Dwork & Roth 2014 (epsilon a small constant, at most 1)"),
    Limit("dp.epsilon_per_release_max", "floor", Fraction(0), "a cap", exclusive=True, domain=True),
    Limit(
        "dp.delta_total",
        "ceiling",
        CEILING_DELTA_TOTAL,
        "delta over all releases: far below 1/n (the gate's mechanisms are pure DP and spend 0)",
        exclusive=True,
    ),
    Limit("dp.delta_total", "floor", Fraction(0), "a probability", domain=True),
    Limit("dp_model.max_epsilon", "ceiling", CEILING_DP_MODEL_EPSILON, "epsilon of one DP model release: "
          "kansrijk, the cost of four table releases at the 0.5 cap"),
    Limit("dp_model.max_epsilon", "floor", Fraction(0), "a cap", exclusive=True, domain=True),
    Limit("outputs.*.epsilon", "ceiling", CEILING_EPSILON_PER_RELEASE, "epsilon of one table release: "
          "Dwork & Roth 2014 (epsilon a small constant, at most 1)"),
    Limit("outputs.*.epsilon", "floor", Fraction(0), "a cost", exclusive=True, domain=True),
    Limit("outputs.*.rounding", "floor", Fraction(1), "1: no rounding", domain=True),
)

# The numbers a policy can set that have no privacy floor or ceiling, and why none is needed. Every other number
# is in LIMITS (a test checks that the two together cover every number of a policy).
UNBOUNDED: dict[str, str] = {
    "version": "the file format",
    "dp.max_persons": "a public upper bound OpenDP needs for sums and means: a larger value is the more conservative "
    "claim; it must be at least the real number of persons, which the data decides, not a policy number",
    "dp_model.max_depth": "covered by dp_model.max_epsilon: a whole model release costs its epsilon whatever its "
    "shape (bounded to 10 for running time)",
    "dp_model.max_trees": "covered by dp_model.max_epsilon, as max_depth (bounded to 500 for running time)",
    "dp_model.eval_share": "how a model's epsilon is split; the parts always add up to the epsilon charged",
    "dp_model.leaf_share": "how a tree's epsilon is split; the parts always add up to the epsilon charged",
    "dp_model.bin_edges.*": "public bin edges, never taken from the data; any edges keep the guarantee",
    "grids.quantile_levels.*": "public quantile levels, strictly between 0 and 1 (never min or max); under output "
    "checking each is a mean of the threshold-many nearest values with as many on each side, whatever the level",
    "grids.bands.*": "public band edges, never taken from the data; every band is a cell under the threshold, "
    "dominance and differencing rules like any other",
    "grids.histogram_edges.*": "public histogram edges, never taken from the data; every bin is a cell under the "
    "output-checking rules",
    "grids.value_clip.*": "the one form a value is summed in (clipped to a public interval); dominance is checked "
    "on the clipped values that are released",
}


def bound_message(key: str, value: object) -> str | None:
    """Why ``value`` at ``key`` does not validate, when it is past one of the ``LIMITS``: the value, the floor or
    ceiling, the rule it protects and where the bound comes from, and what to set instead. None when no limit of
    that key is broken (the caller keeps the validator's own message)."""
    generic = _generic(key)
    try:
        v = Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        return None
    broken = sorted((lim for lim in LIMITS if lim.key == generic and not lim.holds(v)), key=lambda lim: lim.domain)
    if not broken:
        return None
    limit = broken[0]
    shown = str(value)
    bound = str(limit.bound) if isinstance(value, Fraction) else _number(limit.bound)
    rule, _, source = limit.why.partition(": ")
    if limit.domain:
        need = ("more than" if limit.exclusive else "at least") if limit.side == "floor" else "at most"
        return f"{shown} is not a possible value: {generic} is {rule} and must be {need} {bound}"
    word = "floor" if limit.side == "floor" else "ceiling"
    past = "below" if limit.side == "floor" else "above"
    if limit.exclusive:
        past = f"at or {past}"
    if limit.side == "floor":
        fix = f"set more than {bound}" if limit.exclusive else f"set {bound} or more"
    else:
        fix = f"set less than {bound}" if limit.exclusive else f"set {bound} or less"
    origin = f"; the {word} comes from {source}" if source else ""
    return (
        f"{shown} is {past} the {word} {bound} (rule: {rule}{origin}; kansrijk.policy.release.LIMITS, "
        f"docs/privacy-officer.md 'Floors and ceilings'): {fix}"
    )


def _ceiling(key: str) -> AfterValidator:
    """A validator refusing a value past the ``LIMITS`` of ``key`` with ``bound_message``."""

    def check(value: Fraction) -> Fraction:
        message = bound_message(key, value)
        if message is not None:
            raise ValueError(message)
        return value

    return AfterValidator(check)


Method = Literal["sdc", "dp", "dp+sdc"]
# Output kinds a policy rules per section; DP models have their own [dp_model] section.
OUTPUT_KINDS = tuple(kind for kind in get_args(OutputKind) if kind != "dp_model")
# Kinds whose numbers the gate computes from person-level data, and so can answer through OpenDP.
DP_CAPABLE = frozenset({"frequency_table", "mean_table", "sum_table", "quantile", "histogram"})


def _to_fraction(value: object) -> Fraction:
    """Exact privacy parameters: TOML strings ("0.1", "1/10") or ints; floats are refused (0.1 is not 1/10)."""
    if isinstance(value, Fraction):
        return value
    if isinstance(value, bool):
        raise ValueError('expected a number written as a string, e.g. "0.5"')
    if isinstance(value, int):
        return Fraction(value)
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise ValueError(f'{value!r} is not an exact decimal or fraction such as "0.5" or "1/10"') from None
    if isinstance(value, float):
        raise ValueError('privacy parameters must be exact: write them as strings (epsilon = "0.5"), not as floats')
    raise ValueError('expected a number written as a string, e.g. "0.5"')


ExactNumber = Annotated[
    Fraction,
    BeforeValidator(_to_fraction),
    PlainSerializer(lambda f: str(f), return_type=str),
]


class Requesters(PolicyModel):
    """Who may ask the gate for a release (the ``requested_by`` of every request is checked against this)."""

    allowed: tuple[Annotated[str, Field(pattern=REQUESTER_PATTERN, max_length=64)], ...] = Field(
        default=("coordinator",), min_length=1, description="Names that may request releases (compared exactly)."
    )

    @field_validator("allowed", mode="after")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError("a name is listed twice")
        return value


class TreeRules(PolicyModel):
    """Decision-tree structure rules (SACRO-ML rules.json and structural attack)."""

    min_samples_leaf_training: int = Field(
        default=FLOOR_MIN_SAMPLES_LEAF, ge=FLOOR_MIN_SAMPLES_LEAF, description="Training rule the model must obey."
    )
    min_leaf_persons: int = Field(
        default=FLOOR_MIN_LEAF_PERSONS, ge=FLOOR_MIN_LEAF_PERSONS, description="Persons in every leaf, at least."
    )
    min_class_count: int = Field(
        default=FLOOR_MIN_CLASS_COUNT,
        ge=FLOOR_MIN_CLASS_COUNT,
        description="A leaf's count of any class must be 0 or at least this.",
    )
    zero_class_probability: Literal["refuse", "suppress_counts"] = Field(
        default="refuse",
        description=(
            "A leaf where a class has probability 0 (everyone has, or lacks, the outcome). 'refuse' refuses the "
            "tree; 'suppress_counts' releases the splits but withholds every leaf's class counts."
        ),
    )
    small_class_count: Literal["refuse", "suppress_counts"] = Field(
        default="refuse", description="A leaf with a class count 0 < n < min_class_count: refuse, or withhold counts."
    )
    risky_max_depth: int = Field(
        default=CEILING_RISKY_MAX_DEPTH,
        ge=0,
        le=CEILING_RISKY_MAX_DEPTH,
        description="SACRO-ML unnecessary risk: deeper than this with min_samples_leaf <= 7 and min split <= 15.",
    )


class SdcRules(PolicyModel):
    """Output-checking rules. Every default is the strictest figure in sdc-rules.md."""

    min_persons_per_cell: int = Field(default=FLOOR_MIN_PERSONS, ge=FLOOR_MIN_PERSONS)
    p_percent: float = Field(default=FLOOR_P_PERCENT, ge=FLOOR_P_PERCENT, le=1.0)
    nk_n: int = Field(default=FLOOR_NK_N, ge=FLOOR_NK_N, le=10)
    nk_k: float = Field(default=FLOOR_NK_K, gt=0.0, le=FLOOR_NK_K)
    zeros_are_disclosive: Literal[True] = True
    class_disclosure: Literal[True] = True
    negative_values: Literal["refuse"] = Field(
        default="refuse", description="Dominance is undefined with negative contributions: refuse the release."
    )
    min_dof: int = Field(default=FLOOR_MIN_DOF, ge=FLOOR_MIN_DOF)
    min_quantile_contributors: int = Field(default=FLOOR_QUANTILE_CONTRIBUTORS, ge=FLOOR_QUANTILE_CONTRIBUTORS)
    allow_extremes: Literal[False] = Field(default=False, description="Raw minimum and maximum are never released.")
    secondary_suppression: Literal[True] = True
    differencing: Literal[True] = True
    audit_interval: int = Field(
        default=DEFAULT_AUDIT_INTERVAL,
        ge=FLOOR_AUDIT_INTERVAL,
        description="The release-history audit refuses (or withholds cells of a table) when all exact releases "
        "together pin a group of fewer than min_persons_per_cell persons to an interval narrower than this.",
    )
    max_suppressed_share: float = Field(
        default=CEILING_MAX_SUPPRESSED_SHARE,
        gt=0.0,
        le=CEILING_MAX_SUPPRESSED_SHARE,
        description="Refuse a table when more than this share of its cells would be suppressed.",
    )
    tree: TreeRules = TreeRules()


class DpBudget(PolicyModel):
    """The differential-privacy budget (privacy unit: one person). The gate keeps one budget per person-key space
    of the workspace, shared by every policy over those persons; each policy's caps apply to its own releases."""

    epsilon_total: Annotated[ExactNumber, _ceiling("dp.epsilon_total")] = Field(
        description="Total epsilon over all releases about the workspace's persons, under every policy."
    )
    delta_total: ExactNumber = Field(default=Fraction(0), description="Total delta (0: pure DP only).")
    epsilon_per_release_max: Annotated[
        ExactNumber, _ceiling("dp.epsilon_per_release_max")
    ] = Field(description="No single release may spend more.")
    max_persons: int = Field(
        default=10_000_000,
        ge=1,
        description="Public upper bound on the number of persons in the dataset (OpenDP needs it for sums).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DpBudget:
        if self.epsilon_total <= 0:
            raise ValueError(f"dp.epsilon_total = {self.epsilon_total} must be > 0")
        if not 0 < self.epsilon_per_release_max <= self.epsilon_total:
            raise ValueError(
                f"dp.epsilon_per_release_max = {self.epsilon_per_release_max} must be > 0 and <= dp.epsilon_total "
                f"= {self.epsilon_total}"
            )
        return self

    @field_validator("delta_total", mode="after")
    @classmethod
    def _delta_below_ceiling(cls, value: Fraction) -> Fraction:
        if not 0 <= value < CEILING_DELTA_TOTAL:
            raise ValueError(f"{bound_message('dp.delta_total', value)}, or 0 for pure DP")
        return value


class DpModelRules(PolicyModel):
    """Differentially private models trained inside the gate (``DpModelRequest``; ``kansrijk.gate.dp_models``).

    Each model release spends its request's epsilon in full from the ``[dp]`` budget; this section caps it and
    fixes how it is split and which public bin edges numeric features use.
    """

    max_epsilon: Annotated[ExactNumber, _ceiling("dp_model.max_epsilon")] = Field(
        description="No single DP model release may spend more (instead of the per-release cap of tables)."
    )
    models: tuple[Literal["dp_tree", "dp_boosted"], ...] = Field(
        default=("dp_tree", "dp_boosted"), min_length=1, description="Model kinds the gate will train."
    )
    max_depth: int = Field(default=6, ge=1, le=10, description="Deepest tree the gate will train.")
    max_trees: int = Field(default=50, ge=1, le=500, description="Largest boosted ensemble.")
    eval_share: ExactNumber = Field(
        default=Fraction(1, 10), description="Share of a model's epsilon for the held-out score histogram."
    )
    leaf_share: ExactNumber = Field(
        default=Fraction(1, 5), description="Share of each tree's training epsilon for its leaf values."
    )
    bin_edges: dict[str, tuple[float, ...]] = Field(
        default_factory=dict,
        description="Public inner bin edges per numeric variable; they override the request's edges.",
    )

    @model_validator(mode="after")
    def _shares(self) -> DpModelRules:
        if self.max_epsilon <= 0:
            raise ValueError("max_epsilon must be > 0")
        for key in ("eval_share", "leaf_share"):
            share = getattr(self, key)
            if not 0 < share < 1:
                raise ValueError(f"{key} must lie strictly between 0 and 1")
        for name, edges in self.bin_edges.items():
            if not edges or any(b <= a for a, b in itertools.pairwise(edges)):
                raise ValueError(f"bin_edges.{name}: give one or more strictly increasing values")
        return self


class OutputRule(PolicyModel):
    """How one output kind is checked."""

    method: Method = "sdc"
    epsilon: Annotated[ExactNumber, _ceiling("outputs.*.epsilon")] | None = (
        Field(default=None, description="Epsilon each release of this kind spends (dp).")
    )
    rounding: int = Field(
        default=1, ge=1, description="Released DP counts (frequency tables, histograms) are rounded to a multiple."
    )

    @model_validator(mode="after")
    def _epsilon_when_dp(self) -> OutputRule:
        if self.method != "sdc" and (self.epsilon is None or self.epsilon <= 0):
            raise ValueError(f"method '{self.method}' needs epsilon > 0 (written as a string, e.g. \"0.1\")")
        if self.method == "sdc" and self.epsilon is not None:
            raise ValueError("epsilon is set but method is 'sdc'; set method = 'dp' or 'dp+sdc', or remove epsilon")
        if self.method == "sdc" and self.rounding != 1:
            # output checking releases exact values: a rounding here would be ignored, not protect anything
            raise ValueError("rounding applies to DP counts only; with method 'sdc' remove it (or set 1)")
        return self


def _default_outputs() -> dict[str, OutputRule]:
    return {kind: OutputRule() for kind in OUTPUT_KINDS}


class ReleasePolicy(StudyPolicy):
    """A release policy file (``kind = "release"``)."""

    @classmethod
    def bound_message(cls, key: str, value: object) -> str | None:
        return bound_message(key, value)

    kind: Literal["release"]
    study: str | None = study_field()
    version: Literal[1] = 1
    title: str = Field(min_length=1)
    dataset: str = Field(
        min_length=1,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="A name shown by explain and the report; the budget belongs to the workspace's persons, not to it.",
    )
    requesters: Requesters = Requesters()
    sdc: SdcRules = SdcRules()
    dp: DpBudget | None = None
    outputs: dict[str, OutputRule] = Field(default_factory=_default_outputs)
    dp_model: DpModelRules | None = None
    grids: PublicGrids = PublicGrids()

    @field_validator("outputs", mode="after")
    @classmethod
    def _known_kinds(cls, value: dict[str, OutputRule]) -> dict[str, OutputRule]:
        unknown = sorted(set(value) - set(OUTPUT_KINDS))
        if unknown:
            raise ValueError(f"unknown output kind(s) {unknown}; known: {', '.join(OUTPUT_KINDS)}")
        return {**_default_outputs(), **value}

    @model_validator(mode="after")
    def _dp_where_possible(self) -> ReleasePolicy:
        for kind, rule in self.outputs.items():
            if rule.method == "sdc":
                continue
            if kind not in DP_CAPABLE:
                raise ValueError(
                    f"outputs.{kind}: method '{rule.method}' is not available for {kind} (the analysis computes "
                    f"it, so the gate cannot add calibrated noise); use 'sdc'"
                )
            if self.dp is None:
                raise ValueError(f"outputs.{kind}: method '{rule.method}' needs a [dp] section with the budget")
            assert rule.epsilon is not None
            if rule.rounding != 1 and kind not in ROUNDED_KINDS:
                raise ValueError(
                    f"outputs.{kind}.rounding: the gate rounds DP counts of {' and '.join(sorted(ROUNDED_KINDS))} "
                    f"only; remove it (or set 1) for {kind}"
                )
            if rule.epsilon > self.dp.epsilon_per_release_max:
                raise ValueError(
                    f"outputs.{kind}.epsilon {rule.epsilon} exceeds dp.epsilon_per_release_max "
                    f"{self.dp.epsilon_per_release_max}"
                )
        return self

    @model_validator(mode="after")
    def _dp_model_budget(self) -> ReleasePolicy:
        if self.dp_model is None:
            return self
        if self.dp is None:
            raise ValueError("dp_model: DP models need a [dp] section with the budget")
        if self.dp_model.max_epsilon > self.dp.epsilon_total:
            raise ValueError(
                f"dp_model.max_epsilon {self.dp_model.max_epsilon} exceeds dp.epsilon_total {self.dp.epsilon_total}"
            )
        return self

    def rule_for(self, kind: str) -> OutputRule:
        return self.outputs.get(kind, OutputRule())


def load_release_policy(path: Path, raw: bytes | None = None) -> ReleasePolicy:
    """Parse and validate a release policy; ``PolicyError`` names file, key path and problem."""
    return parse_policy(Path(path), ReleasePolicy, raw)


# --- plain-language explanation ---------------------------------------------------------------------------
_ACRO = {"min_persons_per_cell": 10, "p_percent": 0.10, "nk_n": 2, "nk_k": 0.90, "min_dof": 10}


def explain_release_policy(policy: ReleasePolicy) -> list[str]:
    """What the policy does, in sentences a privacy officer can check, including where it is stricter than
    ACRO's defaults and why."""
    s = policy.sdc
    tr = s.tree
    lines = [
        f"Release policy '{policy.title}' for dataset '{policy.dataset}'.",
        f"Only {', '.join(repr(r) for r in policy.requesters.allowed)} may ask for a release.",
        "",
        "Output checking (applies to every output kind marked 'sdc' or 'dp+sdc'):",
        f"- Every released cell, mean, sum, quantile group, model or test rests on at least "
        f"{s.min_persons_per_cell} persons; a cell of 0 is treated as disclosive (everyone in the group has, or "
        f"lacks, the attribute).",
        f"- p% rule: a sum or mean is withheld when the other contributors together are within "
        f"{s.p_percent:.0%} of the largest one, because the second-largest contributor could then estimate the "
        f"largest value to within {s.p_percent:.0%}.",
        f"- (n,k) dominance: withheld when the {s.nk_n} largest contributions make up {s.nk_k:.0%} or more of the "
        f"total.",
        "- A cell where every contributor has the same value is withheld (class disclosure).",
        "- Negative values make dominance undefined: such a sum or mean table is refused.",
        "- Secondary suppression: further cells are withheld until no withheld cell can be recomputed exactly "
        "from the row, column and other margins (checked by linear algebra).",
        f"- Differencing: a table is refused if, compared with an earlier released table over shared variables, "
        f"any cell or total differs by 1..{s.min_persons_per_cell - 1} persons.",
        f"- Release history: before every exact release, all exact numbers released about the same persons are "
        f"audited together; if they would determine a group of 1..{s.min_persons_per_cell - 1} persons to fewer "
        f"than {s.audit_interval} whole persons (or a small group's value total to within "
        f"{s.p_percent:.0%}), a table withholds further cells and any other output is refused.",
        f"- A table is refused when more than {s.max_suppressed_share:.0%} of its cells would be withheld.",
        f"- Models and tests need at least {s.min_dof} residual degrees of freedom; model metrics need at least "
        f"{s.min_persons_per_cell} persons in each outcome class.",
        f"- Quantiles need {s.min_quantile_contributors} contributors per group; the minimum and maximum "
        f"(quantiles 0 and 1) are never released.",
        f"- Decision trees: trained with min_samples_leaf >= {tr.min_samples_leaf_training}; every leaf holds "
        f">= {tr.min_leaf_persons} persons; a class count between 1 and {tr.min_class_count - 1} in a leaf: "
        f"{tr.small_class_count}; a class with probability 0 in a leaf: {tr.zero_class_probability}; depth "
        f"> {tr.risky_max_depth} with min_samples_leaf <= 7 and min_samples_split <= 15 is refused.",
        "",
    ]
    if policy.dp is None:
        lines.append("Differential privacy: not used (no [dp] section); no output carries noise.")
    else:
        d = policy.dp
        per_output = sorted({rule.epsilon for rule in policy.outputs.values() if rule.epsilon is not None})
        lines += [
            "What epsilon means for one person: " + epsilon_in_words(per_output[0] if per_output else
                                                                    d.epsilon_per_release_max, d.epsilon_total),
            "",
        ]
        lines += [
            f"Differential privacy (privacy unit: one person): at most epsilon {_number(d.epsilon_total)} "
            f"(delta {_number(d.delta_total)}) over all releases about the persons of the workspace, and at most "
            f"{_number(d.epsilon_per_release_max)} per release. The budget belongs to those persons, not to this "
            f"policy or its dataset label '{policy.dataset}': the gate keeps one budget per workspace person-key "
            f"space (the coordinator pseudonym key), and every policy over the same persons, whatever its name, "
            f"spends from it; a re-link does not reset it. The budget is checked and debited before any noise is "
            f"drawn; a release that does not fit is refused. Group categories and value bounds must be public.",
        ]
    if policy.dp_model is not None:
        m = policy.dp_model
        lines += [
            "",
            f"Differentially private models ({', '.join(m.models)}) are trained inside the gate: each release "
            f"spends its epsilon (at most {m.max_epsilon}) from the budget above before training starts; depth at "
            f"most {m.max_depth}, at most {m.max_trees} boosted trees; {m.eval_share} of the epsilon measures "
            f"held-out ROC-AUC and PR-AUC from a noisy score histogram, {m.leaf_share} of each tree's training "
            f"epsilon its noisy leaf values, the rest chooses splits by report-noisy-max level by level. Structure, "
            f"importances and metrics are covered by the guarantee; feature list and bin edges are public. Bin "
            f"edges fixed here: {', '.join(sorted(m.bin_edges)) or 'none'}.",
        ]
    lines.append("")
    lines.append("Per output kind:")
    for kind in OUTPUT_KINDS:
        rule = policy.rule_for(kind)
        eps = _number(rule.epsilon) if rule.epsilon is not None else ""
        how = {
            "sdc": "output checking on the exact values",
            "dp": f"differential privacy only (epsilon {eps} per release), no output checking",
            "dp+sdc": "output checking on the true data, then released with DP noise "
            f"(epsilon {eps})",
        }[rule.method]
        lines.append(f"- {kind}: {how}.")
    lines += ["", *explain_limits(policy)]
    lines += ["", "Where this policy is stricter than ACRO's defaults, and why:"]
    stricter = []
    if s.nk_k < _ACRO["nk_k"]:
        stricter.append(
            f"- (n,k) dominance k = {s.nk_k} instead of ACRO's 0.90: the Bundesbank RDSC uses 0.85, and a "
            f"two-company/two-household share of 85-90% still lets each estimate the other closely."
        )
    if s.min_persons_per_cell > _ACRO["min_persons_per_cell"]:
        stricter.append(f"- minimum {s.min_persons_per_cell} persons per cell instead of 10.")
    if s.p_percent > _ACRO["p_percent"]:
        stricter.append(f"- p% = {s.p_percent:.0%} instead of 10%.")
    if s.min_dof > _ACRO["min_dof"]:
        stricter.append(f"- minimum {s.min_dof} residual degrees of freedom instead of 10.")
    stricter += [
        "- Secondary suppression is automatic and exact; ACRO suppresses only the primary cells, so a withheld "
        "cell can often be recomputed from the margins it prints.",
        "- Differencing between releases is checked automatically; ACRO leaves it to the human output checker.",
        "- Negative values in a dominance check refuse the release; ACRO marks it for review.",
        "- Decision-tree leaves need >= 10 persons and no small or zero class counts (SACRO-ML's structural "
        "rules); ACRO's table functions do not look at trees.",
        "- Minimum and maximum are never released; quantiles need 10 contributors.",
        "- A request by someone outside the allow-list is refused and recorded.",
    ]
    return lines + stricter


def _odds_after(prior: float, epsilon: Fraction) -> float:
    """The most an epsilon-DP release can move a belief ``prior`` about one person: odds times e^epsilon."""
    odds = prior / (1 - prior) * math.exp(float(epsilon))
    return odds / (1 + odds)


def epsilon_in_words(per_release: Fraction, total: Fraction) -> str:
    """Epsilon in terms of one person, for a privacy officer (pure epsilon-DP, privacy unit one person)."""
    one, whole = math.exp(float(per_release)), math.exp(float(total))
    e1, et = _number(per_release), _number(total)
    return (
        f"whatever an attacker already knows, one release at epsilon {e1} changes the odds of any conclusion the "
        f"attacker draws about a person (that they are in the data, that they have an outcome) by at most a factor "
        f"e^{e1} = {one:.3f}, {(one - 1):.1%} at most: the release looks nearly the same whether or not that "
        f"person's record is in the data. Over the whole budget (epsilon {et}) the factor is at most e^{et} = "
        f"{whole:,.0f} on the odds: an attacker who first thought it 1 in 100 that a person has an outcome could at "
        f"worst come to think it {_odds_after(0.01, total):.0%} after every release, 1 in 1,000 becomes "
        f"{_odds_after(0.001, total):.1%}. A smaller epsilon is stronger; the budget caps what all releases "
        f"together can reveal about anyone."
    )


def _values(policy: ReleasePolicy, key: str) -> list[tuple[str, object]]:
    """The values of ``key`` in ``policy`` as (key path, value); ``outputs.*.X`` gives one per output kind, and a
    key of an absent section gives none."""
    if key.startswith("outputs.*."):
        leaf = key.removeprefix("outputs.*.")
        pairs = [(f"outputs.{k}.{leaf}", getattr(r, leaf)) for k, r in sorted(policy.outputs.items())]
        return [(k, v) for k, v in pairs if v is not None]
    value: object = policy
    for part in key.split("."):
        value = getattr(value, part, None)
        if value is None:
            return []
    return [(key, value)]


def limit_values(policy: ReleasePolicy) -> list[tuple[Limit, str, object]]:
    """Every bounded number of ``policy`` with its limit: (limit, key path, value)."""
    return [(limit, k, v) for limit in LIMITS for k, v in _values(policy, limit.key)]


def _number(value: object) -> str:
    """A policy number as an officer writes it: 0.85 rather than 17/20, 1/3 where no decimal is exact."""
    f = Fraction(str(value))
    if f.denominator == 1:
        return str(f.numerator)
    d = f.denominator
    while d % 2 == 0:
        d //= 2
    while d % 5 == 0:
        d //= 5
    return format(float(f), "g") if d == 1 and len(format(float(f), "g")) < 12 else str(f)


format_number = _number  # public name: how every policy number is written for a person


def explain_limits(policy: ReleasePolicy) -> list[str]:
    """The floors and ceilings every release policy is held to, in words, with this policy's values."""
    lines = [
        "Floors and ceilings (built into kansrijk; a policy past any of them does not validate and cannot be "
        "signed, so the values below can only be made stricter):"
    ]
    for limit in LIMITS:
        if limit.domain:
            continue
        if limit.side == "floor":
            bound = f"more than {_number(limit.bound)}" if limit.exclusive else f"at least {_number(limit.bound)}"
        else:
            bound = f"below {_number(limit.bound)}" if limit.exclusive else f"at most {_number(limit.bound)}"
        here = ", ".join(sorted({_number(v) for _, v in _values(policy, limit.key)})) or "not used"
        lines.append(f"- {limit.key} {bound} ({limit.why}); this policy: {here}.")
    lines += [
        f"- Over all releases about the same persons, under every policy: epsilon at most {CEILING_EPSILON_TOTAL} "
        f"(each policy's epsilon_total is checked against everything already spent on those persons).",
        "- Fixed, cannot be switched off: zeros are disclosive, class disclosure, negative values refuse, no raw "
        "minimum or maximum, secondary suppression, differencing.",
        "- Requesters: plain names compared exactly (no patterns); every request, refused or not, is recorded.",
    ]
    return lines


# For `kansrijk policy diff`: in which direction a key becomes stricter (unlisted keys are not judged).
# ``outputs.*.X`` stands for the key X of every output kind.
STRICTER_WHEN: dict[str, Literal["higher", "lower"]] = {
    "sdc.min_persons_per_cell": "higher",
    "sdc.p_percent": "higher",
    "sdc.nk_n": "higher",
    "sdc.nk_k": "lower",
    "sdc.min_dof": "higher",
    "sdc.min_quantile_contributors": "higher",
    "sdc.max_suppressed_share": "lower",
    "sdc.tree.min_samples_leaf_training": "higher",
    "sdc.tree.min_leaf_persons": "higher",
    "sdc.tree.min_class_count": "higher",
    "sdc.tree.risky_max_depth": "lower",
    "dp.epsilon_total": "lower",
    "dp.delta_total": "lower",
    "dp.epsilon_per_release_max": "lower",
    "dp_model.max_epsilon": "lower",
    "dp_model.max_depth": "lower",
    "dp_model.max_trees": "lower",
    "dp.max_persons": "higher",  # a larger public bound is the more conservative claim
    "outputs.*.epsilon": "lower",
    "outputs.*.rounding": "higher",  # coarser DP counts (post-processing)
}
# Choices from strictest to loosest.
STRICTER_CHOICE: dict[str, tuple[str, ...]] = {
    "sdc.tree.zero_class_probability": ("refuse", "suppress_counts"),
    "sdc.tree.small_class_count": ("refuse", "suppress_counts"),
}
# Lists where fewer entries is stricter (fewer names may request, fewer model kinds may be trained).
STRICTER_WHEN_FEWER = frozenset({"requesters.allowed", "dp_model.models"})
# Methods: DP on top of output checking is stricter than either alone; 'sdc' and 'dp' protect differently.
_METHOD_STRICTER = {("sdc", "dp+sdc"), ("dp", "dp+sdc")}


def _generic(key: str) -> str:
    parts = key.split(".")
    return f"outputs.*.{parts[2]}" if len(parts) == 3 and parts[0] == "outputs" else key


def judge_change(key: str, before: object, after: object) -> str:
    """'stricter', 'looser' or '' (not comparable, or not judged) for a changed key of a release policy."""
    generic = _generic(key)
    if generic == "outputs.*.method":
        if (before, after) in _METHOD_STRICTER:
            return "stricter"
        return "looser" if (after, before) in _METHOD_STRICTER else ""
    if generic in STRICTER_CHOICE:
        order = STRICTER_CHOICE[generic]
        if before in order and after in order and before != after:
            return "stricter" if order.index(str(after)) < order.index(str(before)) else "looser"
        return ""
    if generic in STRICTER_WHEN_FEWER:
        if not isinstance(before, list | tuple) or not isinstance(after, list | tuple):
            return ""
        b_set, a_set = set(before), set(after)
        if a_set < b_set:
            return "stricter"
        return "looser" if a_set > b_set else ("" if a_set == b_set else "looser")
    direction = STRICTER_WHEN.get(generic)
    if direction is None:
        return ""
    try:
        b, a = Fraction(str(before)), Fraction(str(after))
    except (ValueError, ZeroDivisionError):
        return ""
    if a == b:
        return ""
    return "stricter" if (a > b) == (direction == "higher") else "looser"
