"""Findings in words: per outcome, sentences generated from released numbers only.

Nothing here is a fixed claim. Each sentence is chosen and filled from the numbers it is given (the sections build
``OutcomeNumbers`` from released documents), so a different release gives different words:

- *what matters*: the variables whose permutation importance stands out from its noise, i.e. is at least
  ``MIN_IMPORTANCE`` and more than ``NOISE_FACTOR`` times its standard deviation over the folds;
- *how good the model is*: its ROC AUC against 0.5 (ranking at random) and its recall in the top k% against k%
  (picking at random), each with its spread over the folds;
- *against the factor model*: the paired-bootstrap interval of the difference (all variables minus factor model)
  per metric; an interval that holds 0 is "no difference beyond the uncertainty", and a metric that disagrees
  with the ROC AUC is named;
- *what cannot be concluded*: importances inside their noise, factors without an indicator, proxies standing in
  for a factor, and variables that matter but belong to no factor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .fmt import (
    capitalise,
    feature_set_label,
    fmt_importance,
    fmt_metric,
    fmt_number,
    fmt_percent,
    fmt_pm,
    join_and,
    label,
    metric_label,
)

NOISE_FACTOR = 2.0  # an importance stands out when it is more than twice its standard deviation over the folds
MIN_IMPORTANCE = 0.001  # ... and at least this large (a drop of 0.001 in ROC AUC)
CHANCE_AUC = 0.5
TIMES = "twice" if NOISE_FACTOR == 2 else f"{NOISE_FACTOR:g} times"  # how the sentences say NOISE_FACTOR
_LOWER_IS_BETTER = {"brier"}


@dataclass(frozen=True, slots=True)
class Importance:
    variable: str
    value: float
    sd: float = 0.0

    @property
    def stands_out(self) -> bool:
        return self.value >= MIN_IMPORTANCE and self.value > NOISE_FACTOR * abs(self.sd)


@dataclass(frozen=True, slots=True)
class Quality:
    """One model's out-of-fold metrics (each with its standard deviation over the folds, when released)."""

    feature_set: str
    roc_auc: float | None
    roc_sd: float | None = None
    recall: float | None = None
    recall_sd: float | None = None
    k_percent: float | None = None


@dataclass(frozen=True, slots=True)
class Difference:
    """One metric of the comparison: ``a`` (all variables) minus ``b`` (factor model), with its interval."""

    metric: str
    a: float | None
    b: float | None
    delta: float
    low: float
    high: float

    @property
    def winner(self) -> str | None:
        """ "a", "b", or None when the interval holds 0 (no difference beyond the uncertainty)."""
        if self.low <= 0 <= self.high:
            return None
        a_higher = self.low > 0
        better_is_higher = self.metric not in _LOWER_IS_BETTER
        return "a" if a_higher == better_is_higher else "b"


@dataclass(frozen=True, slots=True)
class Proxy:
    variable: str
    factor: str
    importance: float


@dataclass(frozen=True, slots=True)
class OutcomeNumbers:
    """The released numbers the findings of one outcome (in one scope) are made from."""

    outcome: str
    persons: float | None = None
    positives: float | None = None
    noisy_counts: bool = False
    not_modelled: str | None = None  # the analysis' reason, when the outcome was not modelled
    models: tuple[Quality, ...] = ()  # all variables first
    importances: tuple[Importance, ...] = ()  # permutation importances of the all-variables model
    differences: tuple[Difference, ...] = ()
    labels: tuple[str, str] = ("all", "factor_model")
    confidence: float | None = None
    uncovered_factors: tuple[str, ...] = ()
    factor_importance: Mapping[str, float] = field(default_factory=dict)  # factor -> sum over its indicators
    proxies: tuple[Proxy, ...] = ()
    unmapped: tuple[str, ...] = ()  # variables of the all-variables model that belong to no factor


@dataclass(frozen=True, slots=True)
class Findings:
    matters: str = ""
    quality: str = ""
    comparison: str = ""
    cannot: str = ""

    @property
    def paragraphs(self) -> tuple[str, ...]:
        return tuple(p for p in (self.matters, self.quality, self.comparison, self.cannot) if p)


def findings(n: OutcomeNumbers) -> Findings:
    """The findings of one outcome, every sentence filled from ``n``."""
    if n.not_modelled is not None:
        return Findings(
            quality=_base_rate(n) + f" It was not modelled: {n.not_modelled.rstrip('.')}.",
            cannot=f"Nothing can be concluded here about what predicts {label(n.outcome)}: no model was released.",
        )
    return Findings(
        matters=_matters(n),
        quality=" ".join(s for s in (_base_rate(n), *_quality(n)) if s),
        comparison=_comparison(n),
        cannot=" ".join(_cannot(n)),
    )


def _base_rate(n: OutcomeNumbers) -> str:
    if not n.persons or n.positives is None:
        return ""
    if n.noisy_counts:  # noisy counts: both numbers are approximate
        return (
            f"Of about {fmt_number(round(n.persons))} persons in its population, about "
            f"{fmt_percent(n.positives / n.persons)} have {label(n.outcome)}."
        )
    return (
        f"Of the {fmt_number(round(n.persons))} persons in its population, {fmt_percent(n.positives / n.persons)} "
        f"have {label(n.outcome)}."
    )


def model_name(feature_set: str) -> str:
    """A feature set as the adjective of a model: "all-variables", "factor-model"."""
    return feature_set_label(feature_set).replace(" ", "-")


def _matters(n: OutcomeNumbers) -> str:
    if not n.importances:
        return ""
    outcome = label(n.outcome)
    standing = sorted((i for i in n.importances if i.stands_out), key=lambda i: -i.value)
    if not standing:
        return (
            f"No variable's importance for {outcome} stands out from its noise: none is both at least "
            f"{fmt_importance(MIN_IMPORTANCE)} and more than {TIMES} its spread over the folds."
        )
    top = standing[0]
    total = sum(max(0.0, i.value) for i in n.importances) or 1.0
    text = (
        f"{capitalise(label(top.variable))} matters most for {outcome}: shuffling it lowers the ROC AUC by "
        f"{fmt_pm(top.value, top.sd)}, {fmt_percent(top.value / total)} of all importance."
    )
    rest = standing[1:4]
    if rest:
        listed = [f"{label(i.variable)} ({fmt_pm(i.value, i.sd)})" for i in rest]
        text += f" {'Next come' if len(rest) > 1 else 'Next comes'} {join_and(listed)}."
        if len(standing) > 4:
            text += f" {len(standing) - 4} more stand out from their noise, each by less."
    else:
        text += " No other variable stands out from its noise."
    return text


def _auc_words(auc: float) -> str:
    if auc >= 0.8:
        return "good"
    if auc >= 0.7:
        return "fair"
    if auc >= 0.6:
        return "modest"
    return "weak"


def _quality(n: OutcomeNumbers) -> list[str]:
    out = []
    outcome = label(n.outcome)
    for i, q in enumerate(n.models):
        if q.roc_auc is None:
            continue
        model = f"the {model_name(q.feature_set)} tree"
        if i == 0:
            clear = q.roc_sd is not None and q.roc_auc - NOISE_FACTOR * q.roc_sd > CHANCE_AUC
            against = (
                f"clearly better than chance (0.5, more than {TIMES} its spread over the folds away)"
                if clear
                else f"not clearly better than chance (0.5 is within {TIMES} its spread over the folds)"
            )
            out.append(
                f"{capitalise(model)} ranks a person with {outcome} above one without it "
                f"{fmt_percent(q.roc_auc, digits=0)} of the time (ROC AUC {fmt_pm(q.roc_auc, q.roc_sd)}): "
                f"{_auc_words(q.roc_auc)}, and {against}."
            )
            if q.recall is not None and q.k_percent:
                k = fmt_number(q.k_percent)
                ratio = q.recall / (q.k_percent / 100)
                out.append(
                    f"Among the {k}% of persons it ranks at highest risk it finds {fmt_percent(q.recall)} of everyone "
                    f"with {outcome} ({fmt_pm(q.recall, q.recall_sd)}); picking {k}% at random finds {k}%, so it "
                    f"does {ratio:.1f} times as well as chance."
                )
        else:
            out.append(f"{capitalise(model)} reaches a ROC AUC of {fmt_pm(q.roc_auc, q.roc_sd)}.")
    return out


def _comparison(n: OutcomeNumbers) -> str:
    diffs = {d.metric: d for d in n.differences}
    if not diffs:
        return ""
    a_name, b_name = (model_name(x) for x in n.labels)
    conf = f"{n.confidence:.0%} " if n.confidence else ""
    k = next((q.k_percent for q in n.models if q.k_percent), None)
    names = {"a": a_name, "b": b_name}
    parts = []
    roc = diffs.get("roc_auc")
    if roc is not None:
        interval = f"{conf}interval {fmt_metric(roc.low)} to {fmt_metric(roc.high)}"
        if roc.winner is None:
            parts.append(
                f"The {a_name} and {b_name} trees rank equally well within the uncertainty: ROC AUC "
                f"{fmt_metric(roc.a)} against {fmt_metric(roc.b)}, and the {interval} of the difference holds 0."
            )
        else:
            win, lose = ("a", "b") if roc.winner == "a" else ("b", "a")
            values = {"a": roc.a, "b": roc.b}
            parts.append(
                f"The {names[win]} tree ranks better than the {names[lose]} tree: ROC AUC {fmt_metric(values[win])} "
                f"against {fmt_metric(values[lose])}, a difference of {fmt_metric(abs(roc.delta))} ({interval})."
            )
    for metric in ("recall_at_k", "pr_auc", "brier"):
        d = diffs.get(metric)
        if d is None or d.winner is None or (roc is not None and d.winner == roc.winner):
            continue
        win = names[d.winner]
        values = {"a": d.a, "b": d.b}
        lead = "However, on" if roc is not None and roc.winner is not None else "On"
        parts.append(
            f"{lead} {metric_label(metric, k)} the {win} tree does better ({fmt_metric(values[d.winner])} against "
            f"{fmt_metric(values['b' if d.winner == 'a' else 'a'])}; {conf}interval of the difference "
            f"{fmt_metric(d.low)} to {fmt_metric(d.high)})."
        )
    return " ".join(parts)


def _cannot(n: OutcomeNumbers) -> list[str]:
    out = []
    noise = sorted((i for i in n.importances if not i.stands_out and i.value >= MIN_IMPORTANCE), key=lambda i: -i.value)
    nothing = [i for i in n.importances if i.value < MIN_IMPORTANCE]
    if noise:
        shown = [label(i.variable) for i in noise[:5]]
        more = f" and {len(noise) - 5} more" if len(noise) > 5 else ""
        one = len(noise) == 1
        out.append(
            f"The importance{'' if one else 's'} of {join_and(shown) if not more else ', '.join(shown)}{more} "
            f"{'is' if one else 'are'} inside {'its' if one else 'their'} noise (less than {TIMES} "
            f"{'its' if one else 'their'} spread over the folds): the data do not show whether "
            f"{'it matters' if one else 'they matter'}."
        )
    if nothing:
        out.append(f"{_count(len(nothing), 'other variable')} show{'s' if len(nothing) == 1 else ''} no measurable "
                   f"importance (below {fmt_importance(MIN_IMPORTANCE)}).")  # fmt: skip
    if n.uncovered_factors:
        factors = join_and([label(f) for f in n.uncovered_factors])
        out.append(
            f"{capitalise(factors)} {'has' if len(n.uncovered_factors) == 1 else 'have'} no indicator in the data, "
            "so the models cannot show whether "
            f"{'it matters' if len(n.uncovered_factors) == 1 else 'they matter'}."
        )
    for p in n.proxies:
        indicators = n.factor_importance.get(p.factor)
        through = (
            f"; the factor's own indicators together reach {_words(fmt_importance(indicators))}"
            if indicators is not None
            else "; the factor has no indicator of its own in the model"
        )
        out.append(
            f"{capitalise(label(p.variable))} is a proxy for {label(p.factor)} in the factor model, not an "
            f"indicator: its importance of {_words(fmt_importance(p.importance))} is about what it stands in for"
            f"{through}."
        )
    standing_unmapped = [i.variable for i in n.importances if i.stands_out and i.variable in set(n.unmapped)]
    if standing_unmapped:
        names = join_and([label(v) for v in standing_unmapped])
        out.append(
            f"{capitalise(names)} {'stands' if len(standing_unmapped) == 1 else 'stand'} out but "
            f"{'belongs' if len(standing_unmapped) == 1 else 'belong'} to no factor of the factor model."
        )
    return out


def _words(number: str) -> str:
    """A formatted number inside a sentence: "< 0.001" reads "less than 0.001"."""
    return "less than " + number[2:] if number.startswith("< ") else number


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def outcome_findings(numbers: Sequence[OutcomeNumbers]) -> list[tuple[str, Findings]]:
    return [(n.outcome, findings(n)) for n in numbers]


# --- years side by side ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Change:
    """A number in two reference years, with either the released interval of its change or the spreads of the
    two values (standard deviations over folds)."""

    what: str
    first_year: int
    last_year: int
    first: float
    last: float
    low: float | None = None  # released interval of (last - first)
    high: float | None = None
    first_sd: float | None = None
    last_sd: float | None = None

    @property
    def delta(self) -> float:
        return self.last - self.first

    @property
    def spread(self) -> float | None:
        """The combined spread of the two values, sqrt(sd1² + sd2²), when both are known."""
        if self.first_sd is None or self.last_sd is None:
            return None
        return (self.first_sd**2 + self.last_sd**2) ** 0.5

    @property
    def beyond(self) -> bool | None:
        """Whether the change exceeds its uncertainty: the released interval excludes 0, or (without one) the
        change is more than ``NOISE_FACTOR`` times the combined spread. ``None`` when neither is known."""
        if self.low is not None and self.high is not None:
            return not (self.low <= 0 <= self.high)
        spread = self.spread
        if spread is None:
            return None
        return abs(self.delta) > NOISE_FACTOR * spread

    @property
    def rule(self) -> str:
        if self.low is not None and self.high is not None:
            return f"interval {fmt_metric(self.low)} to {fmt_metric(self.high)}"
        spread = self.spread
        if spread is None:
            return "no spread released"
        return f"{TIMES} the combined spread is {fmt_metric(NOISE_FACTOR * spread)}"


def change_sentences(outcome: str, quality: Sequence[Change], importances: Sequence[Change]) -> list[str]:
    """What changed between reference years, beyond its uncertainty or not."""
    out = []
    for c in quality:
        verdict = {True: "more than its uncertainty", False: "within its uncertainty", None: "uncertainty unknown"}
        out.append(
            f"From {c.first_year} to {c.last_year} the {c.what} for {label(outcome)} went from {fmt_metric(c.first)} "
            f"to {fmt_metric(c.last)}, a change of {_signed(c.delta)}: {verdict[c.beyond]} ({c.rule})."
        )
    moved = [c for c in importances if c.beyond]
    steady = [c for c in importances if c.beyond is False]
    if moved:
        listed = [
            f"{label(c.what)} ({_words(fmt_importance(c.first))} → {_words(fmt_importance(c.last))})" for c in moved[:5]
        ]
        out.append(
            f"Importances that changed by more than {TIMES} their combined spread over the folds: {join_and(listed)}."
        )
    if steady:
        out.append(
            f"The importances of {join_and([label(c.what) for c in steady[:6]])}"
            f"{f' and {len(steady) - 6} more' if len(steady) > 6 else ''} did not change beyond their uncertainty."
        )
    return out


def _signed(x: float) -> str:
    if abs(x) < 0.0005:
        return "less than 0.001" if x else "0"
    return ("+" if x > 0 else "-") + fmt_metric(abs(x))


__all__ = [
    "MIN_IMPORTANCE",
    "NOISE_FACTOR",
    "Change",
    "Difference",
    "Findings",
    "Importance",
    "OutcomeNumbers",
    "Proxy",
    "Quality",
    "change_sentences",
    "findings",
    "outcome_findings",
]
