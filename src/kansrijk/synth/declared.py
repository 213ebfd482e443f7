"""A synthetic city drawn from a study's ``[synthetic]`` section, so any study gets test data with a known truth.

The section declares, per canonical variable, a distribution (share true, category weights, a normal or uniform
number, codes), per outcome a base rate, and planted effects: ``outcome``'s log-odds move by ``log_odds`` for a
true flag, a named category or one unit of a number. For each person and year the generator

1. draws age (uniform over ``ages``), birth year and every declared variable, independently;
2. derives code parents from the study's hierarchies (a buurt's wijk);
3. draws each outcome in its population at risk with probability ``expit(logit(base_rate) + planted effects)``,
   then writes the outcome's source variable so that the study's own derivation gives that outcome back (a
   threshold source above or below the person's threshold, an equality source equal to the value or to another
   category);
4. writes each partner's extract (``coverage`` of the persons; its native column names; CSV with ``J``/``N``
   booleans or Parquet) with a share ``fault_rate`` of rows given an invalid BSN, which the node quarantines.

The ground truth (``ground_truth/persons.parquet``: every variable, ``p_<outcome>`` and the outcome;
``ground_truth/effects.json``: the planted effects) is kept apart from the extracts, as the calibrated city does.
Randomness comes from one seeded generator: same study, seed and options, same files.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from scipy.special import expit, logit

from kansrijk.errors import InputError, OutputExists
from kansrijk.fsutil import atomic_path, atomic_write_bytes
from kansrijk.outcomes import derive_outcomes, outcome
from kansrijk.study import Study
from kansrijk.study.model import IDENTITY, Distribution, Kind, Synthetic, Variable
from kansrijk.synth.population import bsn_strings, generate_bsns

MARKER = "city.json"
CITY_FORMAT = "kansrijk-declared-city"


@dataclass(frozen=True, slots=True)
class DeclaredCity:
    root: Path
    extracts: dict[tuple[str, int], Path]
    ground_truth: Path


def _draw(rng: np.random.Generator, var: Variable, dist: Distribution, n: int) -> pl.Series:
    if var.kind == Kind.BOOL:
        values: pl.Series = pl.Series(var.name, rng.random(n) < float(dist.share_true or 0.0))
    elif var.kind == Kind.CATEGORY:
        weights = dist.weights or {}
        cats = [c for c in var.categories if weights.get(c, 0) > 0]
        p = np.array([weights[c] for c in cats], dtype=float)
        values = pl.Series(var.name, np.array(cats, dtype=object)[rng.choice(len(cats), n, p=p / p.sum())], pl.String)
    elif var.kind == Kind.CODE:
        assert dist.codes is not None and dist.code_format is not None
        codes = [dist.code_format.format(i + 1) for i in range(dist.codes)]
        bad = [c for c in codes if not re.search(var.pattern or "", c)]
        if bad:
            raise InputError(f"synthetic.distributions.{var.name}.code_format: {bad[0]!r} does not match {var.pattern}")
        values = pl.Series(var.name, np.array(codes, dtype=object)[rng.integers(0, len(codes), n)], pl.String)
    else:
        raw = (
            rng.normal(dist.mean, dist.sd, n)
            if dist.mean is not None and dist.sd is not None
            else rng.uniform(float(dist.low or 0.0), float(dist.high or 0.0), n)
        )
        lo = var.minimum if var.minimum is not None else -np.inf
        hi = var.maximum if var.maximum is not None else np.inf
        raw = np.clip(raw, lo, hi)
        values = pl.Series(var.name, np.rint(raw).astype(np.int64) if var.kind == Kind.INT else np.round(raw, 1))
    if dist.share_missing > 0:
        values = values.scatter(np.flatnonzero(rng.random(n) < dist.share_missing), None)
    return values


def _parent(child: pl.Series, child_prefix: str, parent_prefix: str, length: int, name: str) -> pl.Series:
    """The parent code of each child code (a buurt's wijk), by the study's hierarchy rule."""
    body = child.str.strip_prefix(child_prefix).str.slice(0, length)
    return pl.select((pl.lit(parent_prefix) + pl.lit(body)).alias(name)).to_series()


def _effect(frame: pl.DataFrame, study: Study, syn: Synthetic, name: str) -> np.ndarray:
    linear = np.full(frame.height, float(logit(syn.base_rates[name])))
    for p in syn.planted:
        if p.outcome != name:
            continue
        var = study.variables[p.variable]
        col = frame.get_column(p.variable)
        if var.kind == Kind.CATEGORY:
            x = (col == p.category).fill_null(False).to_numpy().astype(float)
        elif var.kind == Kind.BOOL:
            x = col.fill_null(False).to_numpy().astype(float)
        else:
            x = col.cast(pl.Float64).fill_null(float(col.cast(pl.Float64).mean() or 0.0)).to_numpy()
        linear += p.log_odds * x
    return expit(linear)


def _write_source(rng: np.random.Generator, frame: pl.DataFrame, study: Study, name: str, positive: np.ndarray,
                  at_risk: np.ndarray) -> pl.Series:  # fmt: skip
    """The outcome's source variable, rewritten for persons at risk so the study's derivation returns ``positive``."""
    o = outcome(name)
    var = study.variables[o.source_variable]
    d = o.model.derivation
    n = frame.height
    current = (
        frame.get_column(o.source_variable)
        if o.source_variable in frame.columns
        else pl.Series(o.source_variable, [None] * n, dtype=var.dtype)
    )
    if d.rule == "equals" and var.kind == Kind.BOOL:
        new = np.where(positive, bool(d.value), not bool(d.value))
        values = pl.Series(var.name, new, pl.Boolean)
    elif d.rule in ("equals", "in"):
        hits = [d.value] if d.rule == "equals" else list(d.values)
        others = [c for c in var.categories if c not in hits] or hits
        chosen = np.where(positive, np.array(hits, dtype=object)[rng.integers(0, len(hits), n)],
                          np.array(others, dtype=object)[rng.integers(0, len(others), n)])  # fmt: skip
        values = pl.Series(var.name, chosen, pl.String)
    else:  # threshold: a value on the right side of the person's limit
        ages = (frame["year"] - frame["birth_year"]).to_numpy()
        raw = [o.threshold_for_age(int(a)) if d.by_age else d.value for a in ages]
        limits = np.array([np.nan if v is None else float(v) for v in raw])
        step = 1.0 if var.kind == Kind.INT else 0.1
        lo = float(var.minimum) if var.minimum is not None else float(np.nanmin(limits)) - 10
        hi = float(var.maximum) if var.maximum is not None else float(np.nanmax(limits)) + 10
        # the side of the limit the derivation calls positive: [a, b] inclusive
        upper = (limits + step, np.full(n, hi)) if d.compare == "above" else (limits, np.full(n, hi))
        lower = (np.full(n, lo), limits) if d.compare == "above" else (np.full(n, lo), limits - step)
        pos_side, neg_side = (lower, upper) if d.compare == "below" else (upper, lower)
        a_ = np.where(positive, pos_side[0], neg_side[0])
        b_ = np.maximum(np.where(positive, pos_side[1], neg_side[1]), a_)
        u = rng.random(n)
        if var.kind == Kind.INT:
            draw = np.floor(a_ + u * (b_ - a_ + 1))
            values = pl.Series(var.name, np.nan_to_num(np.clip(draw, a_, b_)).astype(np.int64))
        else:
            values = pl.Series(var.name, np.clip(np.round(a_ + u * (b_ - a_), 1), a_, b_))
    values = values.cast(current.dtype, strict=False) if current.dtype != pl.Null else values
    return pl.select(pl.when(pl.lit(pl.Series(at_risk))).then(values).otherwise(current).alias(var.name)).to_series()


def _person_year(rng: np.random.Generator, study: Study, syn: Synthetic, bsn: pl.Series, birth: np.ndarray,
                 year: int) -> tuple[pl.DataFrame, dict[str, np.ndarray]]:  # fmt: skip
    n = bsn.len()
    cols: dict[str, pl.Series] = {"bsn": bsn, "year": pl.Series("year", np.full(n, year), pl.Int32),
                                  "birth_year": pl.Series("birth_year", birth, pl.Int32)}  # fmt: skip
    for name, dist in syn.distributions.items():
        cols[name] = _draw(rng, study.variables[name], dist, n)
    frame = pl.DataFrame(cols)
    for h in study.file.geography.hierarchies:
        if h.child in frame.columns:
            frame = frame.with_columns(
                _parent(frame[h.child], h.child_prefix, h.parent_prefix, h.prefix_length, h.parent)
            )
    probabilities: dict[str, np.ndarray] = {}
    for name in syn.base_rates:
        o = outcome(name)
        missing_conditions = [c for c in o.conditions if c not in frame.columns]
        if missing_conditions:
            raise InputError(
                f"synthetic: outcome {name} has conditions on {missing_conditions}, which the city does not draw"
            )
        p = _effect(frame, study, syn, name)
        population = (
            frame.select(
                (pl.col("year") - pl.col("birth_year")).is_between(o.min_age, o.max_age).alias("ages")
                & pl.all_horizontal(
                    [pl.col(c).is_in(list(v)).fill_null(False) for c, v in o.conditions.items()] or [pl.lit(True)]
                )
            )
            .to_series()
            .to_numpy()
        )
        if o.model.derivation.by_age:
            ages = (frame["year"] - frame["birth_year"]).to_numpy()
            population &= np.array([o.threshold_for_age(int(a)) is not None for a in ages])
        positive = rng.random(n) < p
        frame = frame.with_columns(_write_source(rng, frame, study, name, positive, population))
        probabilities[name] = np.where(population, p, np.nan)
    return frame, probabilities


def _native(frame: pl.DataFrame, study: Study, columns: dict[str, str], bsn_column: str, fmt: str) -> pl.DataFrame:
    out = [pl.col("bsn").alias(bsn_column)]
    for var_name, native in columns.items():
        var = study.variables[var_name]
        expr = pl.col(var_name)
        if fmt == "csv" and var.kind == Kind.BOOL:
            expr = pl.when(expr).then(pl.lit("J")).when(~expr).then(pl.lit("N")).otherwise(None)
        out.append(expr.alias(native))
    return frame.select(out)


def generate_declared_city(
    study: Study, out: Path, *, persons: int, seed: int, years: tuple[int, ...], fault_rate: float, force: bool = False
) -> DeclaredCity:
    """Write the study's declared synthetic city into ``out`` (see the module docstring). ``OutputExists`` for a
    non-empty ``out`` without ``force``; ``InputError`` for a study without a declared ``[synthetic]`` section."""
    syn = study.file.synthetic
    if syn is None or syn.generator != "declared":
        raise InputError(f"{study.path}: synthetic: the study declares no synthetic city (generator = 'declared')")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExists(f"output directory {out} exists and is not empty", hint="pass --force or another --out")
        shutil.rmtree(out)
    rng = np.random.default_rng(seed)
    bsn = bsn_strings(generate_bsns(rng, persons))
    last = max(years)
    birth = last - rng.integers(syn.ages[0], syn.ages[1] + 1, persons)
    extracts: dict[tuple[str, int], Path] = {}
    truth_frames = []
    for year in sorted(years):
        frame, probabilities = _person_year(rng, study, syn, bsn, birth, year)
        valid_bsn = np.ones(persons, dtype=bool)
        for partner, spec in syn.extracts.items():
            keep = rng.random(persons) < spec.coverage
            part = frame.filter(pl.Series(keep))
            faulty = rng.random(part.height) < fault_rate
            part = part.with_columns(
                pl.when(pl.Series(faulty)).then(pl.lit("123456789")).otherwise(pl.col("bsn")).alias("bsn")
            )
            valid_bsn[np.flatnonzero(keep)[faulty]] = False
            native = _native(part, study, spec.columns, spec.bsn_column, spec.format)
            path = out / "extracts" / partner / spec.file.format(year=year)
            with atomic_path(path) as tmp:
                if spec.format == "csv":
                    native.write_csv(tmp)
                else:
                    native.write_parquet(tmp)
            extracts[(partner, year)] = path
        truth = frame.drop("bsn").with_columns(
            pl.Series("valid_bsn", valid_bsn),
            *(pl.Series(f"p_{name}", p) for name, p in probabilities.items()),
        )
        truth_frames.append(derive_outcomes(truth, tuple(syn.base_rates)).collect())
    gt = out / "ground_truth"
    with atomic_path(gt / "persons.parquet") as tmp:
        pl.concat(truth_frames, how="diagonal_relaxed").write_parquet(tmp)
    effects = {
        "study": study.name,
        "study_digest": study.digest,
        "seed": seed,
        "persons": persons,
        "years": list(years),
        "base_rates": syn.base_rates,
        "planted": [p.model_dump() for p in syn.planted],
    }
    atomic_write_bytes(gt / "effects.json", (json.dumps(effects, indent=2, sort_keys=True) + "\n").encode())
    atomic_write_bytes(out / MARKER, (json.dumps({"format": CITY_FORMAT, **effects}, indent=2) + "\n").encode())
    return DeclaredCity(root=out, extracts=extracts, ground_truth=gt)


__all__ = ["IDENTITY", "DeclaredCity", "generate_declared_city"]
