"""The people of the city and what does not change about them across the reference years.

Everything is drawn with numpy from one seeded generator, in a fixed order, as whole columns (no loop over
persons). Coefficients are log-odds; every one is listed in ``PopulationParameters`` and in effects.json.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import polars as pl
from scipy.optimize import brentq
from scipy.special import expit

from kansrijk.synth.geography import STREETS, CityMap

MIN_AGE = 4
MAX_AGE = 23
WOZ_MEAN_2021 = 245_000.0  # CBS, mean WOZ of homes in Rotterdam, 2021
# The standardised log WOZ every effect is expressed in: z = (ln(WOZ in 2021 euros) - ln(220,000)) / 0.45.
LOG_WOZ_CENTRE = float(np.log(220_000.0))
LOG_WOZ_SCALE = 0.45
BSN_WEIGHTS = np.array([9, 8, 7, 6, 5, 4, 3, 2], dtype=np.int64)


@dataclass(frozen=True, slots=True)
class PopulationParameters:
    """Targets and log-odds coefficients of the stable household and person attributes."""

    share_male: float = 0.512
    within_buurt_woz_sd: float = 0.30  # sd of ln WOZ around the buurt level
    share_western: float = 0.10
    non_western_target: float = 0.40  # CBS: ~half have a migration background, non-Western ~40% (2013)
    non_western_woz: float = -1.0
    single_parent_target: float = 0.24  # assumption (Rotterdam has many single-parent households)
    single_parent_woz: float = -0.5
    single_parent_non_western: float = 0.4
    share_other_household: float = 0.04
    low_income_target_minors: float = 0.175  # CBS 2018: 17.5% of minors in Rotterdam below the social minimum
    low_income_woz: float = -1.1
    low_income_single_parent: float = 1.1
    low_income_non_western: float = 0.6
    social_assistance_target: float = 0.12  # assumption
    social_assistance_low_income: float = 2.8
    social_assistance_single_parent: float = 0.4
    debt_assistance_target: float = 0.08  # assumption (15.5% of households with problematic debts, R'dam 2020)
    debt_assistance_low_income: float = 1.3
    debt_assistance_woz: float = -0.3
    language_delay_target: float = 0.07  # assumption
    language_delay_non_western: float = 0.9
    ability_woz: float = 0.6
    ability_low_income: float = -0.3
    ability_non_western: float = -0.2
    ability_noise_sd: float = 0.8
    # School advice shares, lowest to highest (CBS Jeugdmonitor: ~51% of year-3 pupils in vmbo).
    advice_shares: tuple[float, ...] = (0.12, 0.14, 0.26, 0.22, 0.26)
    vmbo_g_share_of_gt: float = 0.2
    prior_delay_intercept: float = -1.6
    prior_delay_ability: float = -0.5
    only_one_partner_share: float = 0.004
    cbs_missing_share: float = 0.002
    gemeente_missing_share: float = 0.003
    intercepts: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Population:
    """The persons (one row each) with their stable attributes, and the calibrated parameters."""

    persons: pl.DataFrame
    parameters: PopulationParameters


CALIBRATION_ROWS = 200_000


def masked(values: np.ndarray, keep: np.ndarray, dtype: pl.DataType) -> pl.Series:
    """``values`` as a polars column, missing where ``keep`` is false."""
    return pl.Series(values, dtype=dtype).scatter(np.flatnonzero(~np.asarray(keep, dtype=bool)), None)


def labels(names: tuple[str | None, ...] | list[str | None] | list[str], codes: np.ndarray) -> pl.Series:
    """A string column from integer codes into ``names`` (fast: no per-row Python strings)."""
    return pl.Series(list(names), dtype=pl.String).gather(np.asarray(codes, dtype=np.int64))


def calibrate_intercept(linear: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """The intercept a with mean(expit(a + linear)) == target (over the rows in ``weights`` if given).

    Solved on at most ``CALIBRATION_ROWS`` rows (the first ones: persons are drawn i.i.d., so they are a random
    sample), by Newton steps with a bracketing fallback.
    """
    if weights is not None:
        linear = linear[weights]
    linear = linear[:CALIBRATION_ROWS]
    finite = linear[np.isfinite(linear)]
    a = float(np.log(target / (1.0 - target)) - (np.median(finite) if finite.size else 0.0))
    for _ in range(50):
        prob = expit(a + linear)
        gap = float(prob.mean()) - target
        slope = float((prob * (1.0 - prob)).mean())
        if abs(gap) < 1e-12:
            return a
        if slope <= 1e-12 or not np.isfinite(gap):
            break
        a -= max(min(gap / slope, 5.0), -5.0)
    return float(brentq(lambda x: float(expit(x + linear).mean()) - target, -40.0, 40.0, xtol=1e-12))


def generate_bsns(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` unique 9-digit BSNs (as int64) that pass the 11-check, in random order."""
    out = np.empty(0, dtype=np.int64)
    while out.size < n:
        need = n - out.size
        prefix = rng.integers(1_000_000, 100_000_000, size=int(need * 1.2) + 64, dtype=np.int64)
        digits = (prefix[:, None] // (10 ** np.arange(7, -1, -1, dtype=np.int64))) % 10
        check = (digits @ BSN_WEIGHTS) % 11
        ok = check != 10  # a remainder of 10 cannot be a check digit
        cand = prefix[ok] * 10 + check[ok]
        merged = np.sort(np.concatenate([out, cand]))
        out = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]  # unique, sorted
    return rng.permutation(out)[:n]


def bsn_strings(values: np.ndarray) -> pl.Series:
    """BSNs as 9-character strings, leading zeros kept."""
    return pl.Series("bsn", values, dtype=pl.Int64).cast(pl.String).str.zfill(9)


def elfproef_expr(column: str | pl.Expr) -> pl.Expr:
    """True where a string column holds 9 digits passing the BSN 11-check (weights 9..2, -1 for the last)."""
    col = pl.col(column) if isinstance(column, str) else column
    weights = [9, 8, 7, 6, 5, 4, 3, 2, -1]
    total = pl.sum_horizontal([col.str.slice(i, 1).cast(pl.Int64, strict=False) * w for i, w in enumerate(weights)])
    return (col.str.contains(r"^\d{9}$") & ((total % 11) == 0)).fill_null(False)


def _categorical(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One draw per row from the row's category probabilities (columns), as an index."""
    cum = np.cumsum(probabilities, axis=1)
    u = rng.random(probabilities.shape[0])[:, None]
    return np.minimum((u > cum).sum(axis=1), probabilities.shape[1] - 1)


def generate_population(
    rng: np.random.Generator, city: CityMap, n: int, last_year: int, params: PopulationParameters | None = None
) -> Population:
    """Draw ``n`` persons aged 4-23 in ``last_year`` with their stable attributes."""
    p = PopulationParameters() if params is None else params
    buurten = city.buurten
    age = rng.integers(MIN_AGE, MAX_AGE + 1, n)
    birth_year = last_year - age
    day_of_year = rng.random(n)
    sex_male = rng.random(n) < p.share_male
    buurt = rng.choice(buurten.height, size=n, p=buurten["youth_weight"].to_numpy())

    levels = buurten["woz_level_2021"].to_numpy()[buurt]
    woz = levels * np.exp(rng.normal(0.0, p.within_buurt_woz_sd, n))
    woz = woz * (WOZ_MEAN_2021 / woz.mean())
    woz_2021 = np.maximum(np.round(woz / 500.0) * 500.0, 25_000.0)
    z = (np.log(woz_2021) - LOG_WOZ_CENTRE) / LOG_WOZ_SCALE
    minors = age < 18

    intercepts: dict[str, float] = {}
    lin = p.non_western_woz * z
    intercepts["non_western"] = calibrate_intercept(lin, p.non_western_target)
    p_nw = expit(intercepts["non_western"] + lin)
    p_w = np.full(n, p.share_western)
    migration = _categorical(rng, np.column_stack([1.0 - p_nw - p_w, p_w, p_nw]))  # 0 dutch, 1 western, 2 nw
    non_western = migration == 2

    lin = p.single_parent_woz * z + p.single_parent_non_western * non_western
    intercepts["single_parent"] = calibrate_intercept(lin, p.single_parent_target)
    p_single = expit(intercepts["single_parent"] + lin)
    household = _categorical(
        rng, np.column_stack([1.0 - p_single - p.share_other_household, p_single, np.full(n, p.share_other_household)])
    )  # 0 two_parent, 1 single_parent, 2 other
    single = household == 1

    lin = p.low_income_woz * z + p.low_income_single_parent * single + p.low_income_non_western * non_western
    intercepts["low_income"] = calibrate_intercept(lin, p.low_income_target_minors, minors)
    low_income = rng.random(n) < expit(intercepts["low_income"] + lin)

    lin = p.social_assistance_low_income * low_income + p.social_assistance_single_parent * single
    intercepts["social_assistance"] = calibrate_intercept(lin, p.social_assistance_target)
    social = rng.random(n) < expit(intercepts["social_assistance"] + lin)

    lin = p.debt_assistance_low_income * low_income + p.debt_assistance_woz * z
    intercepts["debt_assistance"] = calibrate_intercept(lin, p.debt_assistance_target)
    debt = rng.random(n) < expit(intercepts["debt_assistance"] + lin)

    lin = p.language_delay_non_western * non_western
    intercepts["language_delay"] = calibrate_intercept(lin, p.language_delay_target)
    language_delay = rng.random(n) < expit(intercepts["language_delay"] + lin)

    # Latent traits: never in any extract. peer_relations is the "factor without indicator".
    peer_relations = rng.normal(0.0, 1.0, n)
    youth_care_propensity = rng.normal(0.0, 1.0, n)
    parenting_propensity = rng.normal(0.0, 1.0, n)
    bmi_z = rng.normal(0.0, 1.0, n) - 0.15 * z

    ability = (
        p.ability_woz * z
        + p.ability_low_income * low_income
        + p.ability_non_western * non_western
        + rng.normal(0.0, p.ability_noise_sd, n)
    )
    cuts = np.quantile(ability, np.cumsum(p.advice_shares)[:-1])
    advice = np.searchsorted(cuts, ability)  # 0 VMBO-B, 1 VMBO-K, 2 VMBO-GT, 3 HAVO, 4 VWO
    delay_u = rng.random(n)
    p_delay = expit(p.prior_delay_intercept + p.prior_delay_ability * ability)
    prior_delay = np.where(delay_u < p_delay * 0.15, 2, np.where(delay_u < p_delay, 1, 0))
    gt_u = rng.random(n)
    post_school_u = rng.random(n)
    # Schools (BRIN) are picked from pools in extracts; the pick is stable per person.
    school_pick = rng.integers(0, 1_000_000, n)

    street_idx = (buurten["street_offset"].to_numpy()[buurt] + rng.integers(0, 5, n)) % len(STREETS)
    house_number = rng.integers(1, 250, n)
    suffix = labels(["", "", "", "", "a", "b", "A", "-1"], rng.integers(0, 8, n))
    letters = rng.integers(0, 26, (n, 2))

    coverage_u = rng.random(n)
    only_one = coverage_u < p.only_one_partner_share
    # Of those present at one partner only: 40% only CBS, 20% only Gemeente, 40% only DUO (pupils from
    # outside the city at a Rotterdam school).
    only_partner = np.where(
        ~only_one,
        0,
        np.where(
            coverage_u < 0.4 * p.only_one_partner_share, 1, np.where(coverage_u < 0.6 * p.only_one_partner_share, 2, 4)
        ),
    )
    miss_u = rng.random(n)
    cbs_missing = (only_partner == 0) & (miss_u < p.cbs_missing_share)
    gemeente_missing = (
        (only_partner == 0)
        & (miss_u >= p.cbs_missing_share)
        & (miss_u < p.cbs_missing_share + p.gemeente_missing_share)
    )

    bsn = generate_bsns(rng, n)

    offset_days = np.floor(day_of_year * 365).astype(np.int64)
    letters_a = list("ABCDEFGHJKLMNPRSTVWXZABCDE")
    buurt_info = buurten.select(
        "buurt_index", "buurt_code", "wijk_code", "gebied", "postcode_number", "neighbourhood_effect"
    )
    persons = (
        pl.DataFrame(
            {
                "person_id": np.arange(1, n + 1, dtype=np.int64),
                "bsn": bsn_strings(bsn),
                "birth_year": birth_year.astype(np.int32),
                "_day": offset_days,
                "sex": labels(["F", "M"], sex_male.astype(np.int64)),
                "buurt_index": buurt.astype(np.uint32),
                "woz_eur_2021": woz_2021.astype(np.int64),
                "woz_z": z,
                "migration_background": labels(["dutch", "western", "non_western"], migration),
                "household_type": labels(["two_parent", "single_parent", "other"], household),
                "low_income": low_income,
                "social_assistance": social,
                "debt_assistance": debt,
                "language_delay": language_delay,
                "peer_relations": peer_relations,
                "youth_care_propensity": youth_care_propensity,
                "parenting_propensity": parenting_propensity,
                "bmi_z": bmi_z,
                "ability": ability,
                "school_advice_index": advice.astype(np.int8),
                "prior_delay": prior_delay.astype(np.int8),
                "gt_u": gt_u,
                "post_school_u": post_school_u,
                "school_pick": school_pick,
                "street": labels(STREETS, street_idx),
                "house_number": pl.Series(house_number).cast(pl.String) + suffix,
                "_pc_letters": labels(letters_a, letters[:, 0]) + labels(letters_a, letters[:, 1]),
                "only_partner": only_partner.astype(np.int8),
                "cbs_missing": cbs_missing,
                "gemeente_missing": gemeente_missing,
            }
        )
        .join(buurt_info, on="buurt_index", how="left", maintain_order="left")
        .with_columns(
            birth_date=pl.date(pl.col("birth_year"), 1, 1) + pl.duration(days=pl.col("_day")),
            postcode=pl.col("postcode_number").cast(pl.String) + " " + pl.col("_pc_letters"),
        )
        .drop("_day", "_pc_letters", "postcode_number")
    )
    return Population(persons=persons, parameters=PopulationParameters(**{**asdict(p), "intercepts": intercepts}))
