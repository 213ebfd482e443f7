"""The release policy: how every kind of output is checked before it leaves the coordinator.

A privacy officer writes, reviews and signs this file (``policies/release/*.toml``); the release gate refuses to
run on an unsigned or altered one. Per output kind it says whether the output is checked by statistical
disclosure control (``sdc``), answered with differential privacy (``dp``), or both (``dp+sdc``: every SDC rule
runs on the true data and the values that pass are released with DP noise).

The defaults are the strictest figures in ``sdc-rules.md`` (ACRO, ABS DataLab, Bundesbank RDSC, SACRO-ML, CBS).
A policy may be stricter; a policy that is *looser* than that floor does not validate, so a typo cannot weaken
the gate. Every key is documented in ``docs/privacy-officer.md``.
"""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import BeforeValidator, Field, PlainSerializer, field_validator, model_validator

from kansrijk.gate.requests import OutputKind
from kansrijk.policy.common import PolicyModel, parse_policy
from kansrijk.policy.grids import PublicGrids

RELEASE_KIND = "release"

# The floor: no policy may be looser than these (sdc-rules.md, strictest row per rule).
FLOOR_MIN_PERSONS = 10
FLOOR_P_PERCENT = 0.10
FLOOR_NK_N = 2
FLOOR_NK_K = 0.85
FLOOR_MIN_DOF = 10
FLOOR_MIN_SAMPLES_LEAF = 5
FLOOR_MIN_LEAF_PERSONS = 10
FLOOR_MIN_CLASS_COUNT = 10
FLOOR_QUANTILE_CONTRIBUTORS = 10

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

    allowed: tuple[str, ...] = Field(
        default=("coordinator",), min_length=1, description="Names that may request releases."
    )


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
        default=7,
        ge=0,
        le=7,
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
    max_suppressed_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="Refuse a table when more than this share of its cells would be suppressed.",
    )
    tree: TreeRules = TreeRules()


class DpBudget(PolicyModel):
    """The differential-privacy budget of one dataset (privacy unit: one person)."""

    epsilon_total: ExactNumber = Field(description="Total epsilon for this dataset over all releases.")
    delta_total: ExactNumber = Field(default=Fraction(0), description="Total delta (0: pure DP only).")
    epsilon_per_release_max: ExactNumber = Field(description="No single release may spend more.")
    max_persons: int = Field(
        default=10_000_000,
        ge=1,
        description="Public upper bound on the number of persons in the dataset (OpenDP needs it for sums).",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DpBudget:
        if self.epsilon_total <= 0:
            raise ValueError("epsilon_total must be > 0")
        if not 0 < self.epsilon_per_release_max <= self.epsilon_total:
            raise ValueError("epsilon_per_release_max must be > 0 and <= epsilon_total")
        if self.delta_total < 0 or self.delta_total >= Fraction(1, 1000):
            raise ValueError("delta_total must be in [0, 1/1000)")
        return self


class DpModelRules(PolicyModel):
    """Differentially private models trained inside the gate (``DpModelRequest``; ``kansrijk.gate.dp_models``).

    Each model release spends its request's epsilon in full from the ``[dp]`` budget; this section caps it and
    fixes how it is split and which public bin edges numeric features use.
    """

    max_epsilon: ExactNumber = Field(description="No single DP model release may spend more (instead of the "
                                     "per-release cap of tables).")  # fmt: skip
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
    epsilon: ExactNumber | None = Field(default=None, description="Epsilon each release of this kind spends (dp).")
    rounding: int = Field(default=1, ge=1, description="Released DP counts are rounded to a multiple of this.")

    @model_validator(mode="after")
    def _epsilon_when_dp(self) -> OutputRule:
        if self.method != "sdc" and (self.epsilon is None or self.epsilon <= 0):
            raise ValueError(f"method '{self.method}' needs epsilon > 0 (written as a string, e.g. \"0.1\")")
        if self.method == "sdc" and self.epsilon is not None:
            raise ValueError("epsilon is set but method is 'sdc'; set method = 'dp' or 'dp+sdc', or remove epsilon")
        return self


def _default_outputs() -> dict[str, OutputRule]:
    return {kind: OutputRule() for kind in OUTPUT_KINDS}


class ReleasePolicy(PolicyModel):
    """A release policy file (``kind = "release"``)."""

    kind: Literal["release"]
    version: Literal[1] = 1
    title: str = Field(min_length=1)
    dataset: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="The budget is per dataset.")
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
        lines += [
            f"Differential privacy (privacy unit: one person): at most epsilon {d.epsilon_total} "
            f"(delta {d.delta_total}) over all releases about '{policy.dataset}', and at most "
            f"{d.epsilon_per_release_max} per release. The budget is checked and debited before any noise is drawn; "
            f"a release that does not fit is refused. Group categories and value bounds must be public.",
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
        how = {
            "sdc": "output checking on the exact values",
            "dp": f"differential privacy only (epsilon {rule.epsilon} per release), no output checking",
            "dp+sdc": f"output checking on the true data, then released with DP noise (epsilon {rule.epsilon})",
        }[rule.method]
        lines.append(f"- {kind}: {how}.")
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


# For `kansrijk policy diff`: in which direction a key becomes stricter (unlisted keys are not judged).
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
}


def judge_change(key: str, before: object, after: object) -> str:
    """'stricter', 'looser' or '' for a changed key of a release policy."""
    direction = STRICTER_WHEN.get(key)
    if key.startswith("outputs.") and key.endswith(".epsilon"):
        direction = "lower"
    if direction is None:
        return ""
    try:
        b, a = Fraction(str(before)), Fraction(str(after))
    except (ValueError, ZeroDivisionError):
        return ""
    if a == b:
        return ""
    return "stricter" if (a > b) == (direction == "higher") else "looser"
