"""A dataset frame in the shape ``coordinator link`` writes, assembled straight from the synthetic city's ground
truth (used by the analysis unit tests, which need no bundles or keys). The true probabilities stay alongside
(``p_<outcome>``) so tests can compare with the Bayes-optimal model."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from kansrijk.synth.city import generate_city

PARTNER_VARIABLES: dict[str, tuple[str, ...]] = {
    "cbs": ("migration_background", "household_type", "low_income"),
    "gemeente": ("buurt_code", "wijk_code", "woz_eur", "social_assistance", "debt_assistance", "truancy_reports",
                 "youth_care"),
    "cjg": ("sdq_total", "bmi", "language_delay", "parenting_concerns"),
    "duo": ("school_type", "track", "grade", "school_advice"),
}  # fmt: skip
OUTCOMES = ("psychosocial_risk", "grade_repetition", "track_up", "track_down", "early_school_leaving", "delinquency")


def city_dataset(root: Path, *, persons: int, seed: int = 11, years: tuple[int, ...] = (2023,)) -> pl.DataFrame:
    """Generate a city under ``root`` and return its link-shaped frame (all years stacked)."""
    paths = generate_city(root, persons=persons, seed=seed, years=years, fault_rate=0.0)
    truth = pl.read_parquet(paths.persons)
    cols: list[pl.Expr] = [
        pl.col("bsn").cast(pl.String).cast(pl.Binary).alias("pseudonym"),
        pl.col("year").cast(pl.Int32),
        *[pl.col(f"in_{p}") for p in PARTNER_VARIABLES],
        pl.col("birth_year").cast(pl.Int32),
        pl.col("sex"),
    ]
    for partner, names in PARTNER_VARIABLES.items():
        for name in names:
            cols.append(pl.when(pl.col(f"in_{partner}")).then(pl.col(name)).otherwise(None).alias(name))
    cols.append((pl.col("year") - pl.col("birth_year")).cast(pl.Int32).alias("age_years"))
    cols += [pl.col(o) for o in OUTCOMES] + [pl.col(f"p_{o}") for o in OUTCOMES]
    frame = truth.select(cols)
    return frame.filter(pl.any_horizontal([pl.col(f"in_{p}") for p in PARTNER_VARIABLES]))
