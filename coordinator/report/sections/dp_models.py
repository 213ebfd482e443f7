"""Differentially private models: noisy metrics, importances, size and ε per step of each ``dp_model`` release."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction

from ..figures import importance_figure
from ..fmt import as_float, capitalise, feature_set_label, fmt_fraction, fmt_number, fmt_share, label
from ..released import Release
from ..view import Cell, Figure, Item, Section, TableView, anchor, badges, value_cell

DP_GUARANTEE = (
    "The guarantee: whether any one person is in the data or not changes the probability of anything in this "
    "release — the splits, the leaf counts, the importances and the metrics — by at most a factor e^ε; the "
    "feature list, bin edges and settings are public, and what was released about the same persons under output "
    "checking is not covered."
)
DP_MODEL_LABEL = {"dp_tree": "DP tree", "dp_boosted": "DP boosted trees"}


def dp_metric(r: Release, key: str) -> float | None:
    return as_float((r.values.get("metrics") or {}).get(key))


def _eval_epsilon(r: Release) -> Fraction | None:
    for step in (r.values.get("epsilon") or {}).get("steps") or ():
        if str(step.get("step", "")).startswith("evaluation"):
            try:
                return Fraction(str(step.get("epsilon")))
            except (ValueError, ZeroDivisionError):
                return None
    return None


def _title(r: Release) -> str:
    model = DP_MODEL_LABEL.get(str(r.values.get("model")), label(str(r.values.get("model") or "DP model")))
    return f"{capitalise(label(r.outcome or ''))} — {feature_set_label(r.feature_set)}, {model}, {r.scope.label}"


def _int_or_none(value: float | None) -> int | None:
    return None if value is None else round(value)


def dp_model_item(r: Release) -> Item:
    """One ``dp_model`` release: noisy metrics (≈, with the evaluation's noise), importances, size, ε per step."""
    v = r.values
    noisy, why = "noisy num", "differentially private (noisy) value"
    eval_eps = _eval_epsilon(r)
    levels = len((v.get("score_histogram") or {}).get("score") or ())
    noise_text = ""
    if eval_eps:
        noise_text = (
            f"ε {fmt_fraction(eval_eps)} of {fmt_fraction(r.epsilon)}: discrete Laplace noise (scale 1/ε ≈ "
            f"{fmt_number(float(1 / eval_eps))} persons) on each count of a {levels}-level score histogram"
        )
    model = str(v.get("model") or "")
    n_trees = len(v.get("trees") or [])
    shape = (
        f"one tree of depth {v.get('max_depth')}"
        if model == "dp_tree"
        else f"{n_trees} boosted trees of depth {v.get('max_depth')}"
    )
    folds_n = (v.get("evaluation") or {}).get("folds")
    text = (
        f"{DP_MODEL_LABEL.get(model, label(model))} ({shape}) trained inside the release gate at ε = "
        f"{fmt_fraction(r.epsilon)} on the persons of {fmt_number((folds_n or 1) - 1)} of {fmt_number(folds_n)} "
        f"folds; its metrics come from the persons of the remaining fold, through a noisy score histogram"
        + (f" ({noise_text})" if noise_text else "")
        + "."
    )
    metrics = TableView(
        f"Held-out metrics (persons of one of {fmt_number(folds_n)} folds, never used for training); values marked ≈ "
        "carry differential-privacy noise",
        ("ROC AUC (ranking)", "PR AUC (precision)", "held-out persons", "of whom with the outcome", "evaluation ε"),
        (
            (
                value_cell(dp_metric(r, "roc_auc"), noisy=True),
                value_cell(dp_metric(r, "pr_auc"), noisy=True),
                value_cell(_int_or_none(dp_metric(r, "n_holdout")), noisy=True),
                value_cell(_int_or_none(dp_metric(r, "n_positive_holdout")), noisy=True),
                Cell(fmt_fraction(eval_eps), "num", noise_text),
            ),
        ),
        row_header=False,
    )
    shares = sorted(
        ((k, x) for k, val in (v.get("importances") or {}).items() if (x := as_float(val)) is not None),
        key=lambda kv: -kv[1],
    )
    used = [(k, x) for k, x in shares if x > 0]
    unused = sorted(k for k, x in shares if x <= 0)
    tables = [metrics]
    figures: list[Figure] = []
    if used:
        top = used[:10]
        figures.append(
            importance_figure(
                [{"variable": label(k), "importance": x} for k, x in top],
                title=f"Top {len(top)} variables of the DP model (noisy share of the impurity decrease)",
                alt=f"Bar chart of the {len(top)} variables with the largest share of the DP model's noisy impurity "
                "decrease; the table below lists every variable.",
                x_title="share of the impurity decrease (noisy)",
                color="#805ad5",
            )
        )
        rows = [(Cell(label(k)), Cell("≈ " + fmt_share(x), noisy, why)) for k, x in used]
        if unused:
            rows.append((Cell(", ".join(label(k) for k in unused)), Cell("0", "num", "no share of the decrease")))
        tables.append(
            TableView(
                "Importance per variable: noisy share of the impurity decrease, from the released counts",
                ("variable", "share"),
                tuple(rows),
                css="narrow",
            )
        )
    trees = v.get("trees") or []
    nodes = [n for t in trees for n in (t.get("nodes") or [])]
    leaves = sum(1 for n in nodes if n.get("feature") is None)
    split_vars = sorted({str(n["feature"]) for n in nodes if n.get("feature")})
    tables.append(
        TableView(
            "Model size, fixed in advance (every DP tree is grown to its full depth)",
            ("trees", "depth", "splits", "leaves", "split variables"),
            (
                (
                    Cell(fmt_number(len(trees)), "num"),
                    Cell(fmt_number(v.get("max_depth")), "num"),
                    Cell(fmt_number(len(nodes) - leaves), "num"),
                    Cell(fmt_number(leaves), "num"),
                    Cell(", ".join(label(x) for x in split_vars) or "none"),
                ),
            ),
            row_header=False,
        )
    )
    steps = (v.get("epsilon") or {}).get("steps") or []
    if steps:
        tables.append(
            TableView(
                f"How ε = {fmt_fraction(r.epsilon)} was spent (OpenDP measurements; the parts add up exactly)",
                ("step", "ε", "mechanism", "composition"),
                tuple(
                    (
                        Cell(str(st.get("step", ""))),
                        Cell(fmt_fraction(Fraction(str(st.get("epsilon", "0")))), "num"),
                        Cell(str(st.get("mechanism", ""))),
                        Cell(str(st.get("composition", ""))),
                    )
                    for st in steps
                ),
            )
        )
    return Item(
        title=_title(r),
        anchor=anchor(r.name),
        text=text,
        badges=badges(r),
        tables=tuple(tables),
        figures=tuple(figures),
        sources=(r.name,),
        note=DP_GUARANTEE,
    )


def dp_model_section(dp_models: Sequence[Release]) -> Section:
    intro = (
        "Models trained inside the release gate with differential privacy (OpenDP; privacy unit: one person), "
        "for comparison with the non-private trees (see Model comparison for the two side by side). Every number "
        "here is noisy (≈): the split choices, the leaf counts, the importances recomputed from them, and the ROC "
        "and PR AUC, which come from a noisy histogram of scores of persons held out from training."
    )
    return Section(
        "dp-models",
        "Differentially private models",
        intro,
        tuple(dp_model_item(r) for r in dp_models),
        empty="The analysis plan asked for no differentially private model.",
    )
