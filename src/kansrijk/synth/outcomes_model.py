"""The yearly waves: school careers, year-specific covariates, true outcome probabilities and realised outcomes.

One state per person (sector, track, grade) moves from year to year; each reference year draws the outcomes
"since last year" (grade repetition, track change) from the previous state, and the outcomes "this year" (early
school leaving, crime suspect, SDQ) from the current one. Every outcome's true probability is kept in the ground
truth. Intercepts are calibrated per year so the base rates hold; the psychosocial-risk U's centre is calibrated
per year so that the covariance between WOZ and the true probability is zero in the population at risk, which is
what makes a linear test on WOZ alone come out non-significant while the relation is strong.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
from scipy.optimize import brentq
from scipy.special import expit

from kansrijk.synth.population import LOG_WOZ_CENTRE, LOG_WOZ_SCALE, Population, calibrate_intercept, labels, masked


@dataclass(frozen=True, slots=True)
class SdqCutoff:
    """Total difficulties strictly above ``above`` is clinical for ages ``min_age``..``max_age`` (inclusive)."""

    min_age: int
    max_age: int
    above: int


def sdq_clinical_cutoffs() -> tuple[SdqCutoff, ...]:
    """The clinical cut-offs by age band, as the study's psychosocial outcome declares them (one definition)."""
    from kansrijk.outcomes import outcome

    bands = outcome("psychosocial_risk").model.derivation.by_age
    return tuple(SdqCutoff(b.min_age, b.max_age, int(b.value)) for b in bands)


OUT, PO, VO, MBO = 0, 1, 2, 3
SECTOR_NAMES = (None, "primary", "secondary", "mbo")
SECTOR_CODES = (None, "PO", "VO", "MBO")
# The school tracks in the order the generator's indices follow (the study file lists the same; a test checks it).
TRACKS = ("PO", "VMBO-B", "VMBO-K", "VMBO-G", "VMBO-T", "HAVO", "VWO", "MBO-1", "MBO-2", "MBO-3", "MBO-4")
TRACK_NAMES = (*TRACKS, None)  # index -1 -> missing
T_PO, T_VMBO_B, T_VMBO_K, T_VMBO_G, T_VMBO_T, T_HAVO, T_VWO, T_MBO1, T_MBO2, T_MBO3, T_MBO4 = range(11)
# Years a track takes (VO tracks, MBO levels); PO is groep 1-8.
DURATION = np.array([8, 4, 4, 4, 4, 5, 6, 1, 2, 3, 4, 0], dtype=np.int8)
WOZ_INDEX_BASE_YEAR = 2021
WOZ_YEARLY_GROWTH = 0.08  # assumption: WOZ values rise ~8% a year after 2021

# CBS StatLine 81997NED (NL 2022): registered suspects per 10,000 by single age; 20-23 are an assumption.
SUSPECTS_PER_10K = {
    12: 34,
    13: 91,
    14: 153,
    15: 184,
    16: 199,
    17: 200,
    18: 206,
    19: 218,
    20: 210,
    21: 200,
    22: 185,
    23: 170,
}
# Median BMI by age (WHO reference, rounded); individual BMI = median x exp(0.12 z).
BMI_MEDIAN_AGES = np.array([4, 6, 8, 10, 12, 14, 16, 18, 23])
BMI_MEDIAN = np.array([15.4, 15.4, 16.0, 16.9, 18.0, 19.2, 20.3, 21.3, 22.5])
PROBLEM_ITEMS = (3, 8, 13, 16, 24, 5, 7, 12, 18, 22, 2, 10, 15, 21, 25, 6, 11, 14, 19, 23)
REVERSED_ITEMS = (7, 11, 14, 21, 25)
PROSOCIAL_ITEMS = (1, 4, 9, 17, 20)


@dataclass(frozen=True, slots=True)
class OutcomeParameters:
    """Targets and log-odds coefficients of the yearly covariates and the six outcomes (woz_z = standardised ln WOZ)."""

    # psychosocial risk: logit = a + curvature * (woz_z - centre)^2 + ...
    psychosocial_target: float = 0.10
    psychosocial_curvature: float = 0.55
    psychosocial_low_income: float = 0.30
    psychosocial_single_parent: float = 0.0
    psychosocial_youth_care: float = 0.45
    psychosocial_parenting_concerns: float = 0.30
    psychosocial_male: float = 0.0
    psychosocial_peer_relations: float = -0.15  # the factor without indicator
    # grade repetition (PO and VO, since last year)
    repetition_target: float = 0.035
    repetition_woz: float = -0.9
    repetition_secondary: float = 0.9
    repetition_low_income: float = 0.25
    repetition_male: float = 0.2
    repetition_language_delay: float = 0.3
    # track change (VO from leerjaar 2)
    track_up_target: float = 0.06
    track_up_woz: float = 0.9
    track_up_female: float = 0.2
    track_down_target: float = 0.08
    track_down_woz: float = -0.9
    track_down_low_income: float = 0.3
    track_down_male: float = 0.2
    # early school leaving (VO/MBO pupils 12+)
    early_leaving_target: float = 0.015
    early_leaving_woz: float = -0.8
    early_leaving_mbo_low: float = 0.9
    early_leaving_truancy: float = 0.6
    early_leaving_male: float = 0.3
    # delinquency (12-23): logit = a + ln(age rate / 200) + ...
    delinquency_target: float = 0.035
    delinquency_woz: float = -1.0
    delinquency_male: float = 0.45
    delinquency_vmbo: float = 0.60
    delinquency_neighbourhood_sd: float = 0.30
    # yearly covariates
    youth_care_target: float = 0.10  # CBS 84134NED: 9.8% of 0-22 year olds (2020)
    youth_care_propensity: float = 1.6
    youth_care_single_parent: float = 0.5
    youth_care_low_income: float = 0.4
    youth_care_woz: float = -0.2
    parenting_target: float = 0.09
    parenting_propensity: float = 1.0
    parenting_single_parent: float = 0.5
    parenting_low_income: float = 0.5
    truancy_mean: float = 0.12
    truancy_woz: float = -0.5
    truancy_vmbo_mbo: float = 0.6
    truancy_male: float = 0.3
    cjg_visit_share: float = 0.88
    sdq_total_only_share: float = 0.15

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class YearCalibration:
    """What was solved numerically for one reference year."""

    year: int
    intercepts: dict[str, float]
    psychosocial_centre: float  # in woz_z units
    psychosocial_centre_woz_eur_2021: float
    woz_probability_covariance: float


def woz_index(year: int) -> float:
    """WOZ in ``year`` euros per euro of 2021 value (assumed growth, documented)."""
    return float((1.0 + WOZ_YEARLY_GROWTH) ** (year - WOZ_INDEX_BASE_YEAR))


def _calibration_subset(mask: np.ndarray, limit: int = 400_000) -> np.ndarray:
    """Indices used for calibration: all rows of ``mask``, or its first ``limit`` (rows are in random order)."""
    idx = np.flatnonzero(mask)
    return idx[:limit]


def calibrate_psychosocial(
    z: np.ndarray, woz: np.ndarray, rest: np.ndarray, curvature: float, target: float
) -> tuple[float, float, float]:
    """Solve (centre, intercept) so mean p == target and cov(woz, p) == 0; returns (centre, intercept, cov)."""

    def intercept_for(centre: float) -> float:
        return calibrate_intercept(curvature * (z - centre) ** 2 + rest, target)

    def covariance(centre: float) -> float:
        a = intercept_for(centre)
        prob = expit(a + curvature * (z - centre) ** 2 + rest)
        return float(np.mean((woz - woz.mean()) * (prob - prob.mean())))

    lo, hi = float(np.quantile(z, 0.01)), float(np.quantile(z, 0.99))
    centre = float(brentq(covariance, lo, hi, xtol=1e-9))
    return centre, intercept_for(centre), covariance(centre)


def _draw_sdq(
    rng: np.random.Generator, risk: np.ndarray, cutoff: np.ndarray, prob: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """SDQ totals consistent with the drawn outcome, and the 25 raw item answers (0/1/2) that score to them."""
    n = risk.size
    above = np.minimum(cutoff + 1 + rng.poisson(3.0, n), 40)
    below = rng.binomial(cutoff, np.clip(0.25 + 1.5 * prob, 0.0, 0.92))
    total = np.where(risk, above, below).astype(np.int64)
    # Spread the total over the 20 problem items: k2 items score 2, k1 score 1, at random positions.
    lo = np.maximum(0, total - 20)
    hi = total // 2
    k2 = lo + np.floor(rng.random(n) * (hi - lo + 1)).astype(np.int64)
    k1 = total - 2 * k2
    by_rank = np.arange(20)[None, :]
    by_rank = np.where(by_rank < k2[:, None], 2, np.where(by_rank < (k2 + k1)[:, None], 1, 0)).astype(np.int8)
    scored = np.empty((n, 20), dtype=np.int8)
    np.put_along_axis(scored, np.argsort(rng.random((n, 20)), axis=1), by_rank, axis=1)
    items = np.empty((n, 25), dtype=np.int8)
    for j, item in enumerate(PROBLEM_ITEMS):
        items[:, item - 1] = 2 - scored[:, j] if item in REVERSED_ITEMS else scored[:, j]
    prosocial = rng.choice(np.array([0, 1, 2], dtype=np.int8), size=(n, 5), p=[0.05, 0.25, 0.70])
    for j, item in enumerate(PROSOCIAL_ITEMS):
        items[:, item - 1] = prosocial[:, j]
    return total, items


def score_sdq_items(items: np.ndarray) -> np.ndarray:
    """Total difficulties from raw item answers (n x 25), reverse-scoring items 7, 11, 14, 21 and 25."""
    total = np.zeros(items.shape[0], dtype=np.int64)
    for item in PROBLEM_ITEMS:
        v = items[:, item - 1].astype(np.int64)
        total += 2 - v if item in REVERSED_ITEMS else v
    return total


def _initial_state(age_prev: np.ndarray, persons: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nominal school state in the year before the first reference year, from age and prior delay."""
    n = age_prev.size
    delay = np.where(age_prev >= 6, persons["prior_delay"], 0)
    # Children born in October-December start a school year later than their birth year suggests.
    e = age_prev - persons["late_born"] - delay
    first_track = persons["first_track"]
    sector = np.zeros(n, dtype=np.int8)
    track = np.full(n, -1, dtype=np.int8)
    grade = np.zeros(n, dtype=np.int8)
    po = (e >= 4) & (e <= 11)
    sector[po], track[po], grade[po] = PO, T_PO, (e[po] - 3)
    k = e - 11
    vo_dur = DURATION[first_track]
    vo = (k >= 1) & (k <= vo_dur)
    sector[vo], track[vo], grade[vo] = VO, first_track[vo], k[vo]
    post = _post_school_track(first_track, persons["post_school_u"])
    m = k - vo_dur
    mbo = (k > vo_dur) & (post >= 0) & (m <= DURATION[post])
    sector[mbo], track[mbo], grade[mbo] = MBO, post[mbo], m[mbo]
    return sector, track, grade


def _post_school_track(vo_track: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Where a VO graduate goes next: an MBO level (track index) or -1 (higher education or work: not in DUO)."""
    return np.select(
        [vo_track == T_VMBO_B, vo_track == T_VMBO_K, vo_track == T_VMBO_G, vo_track == T_VMBO_T, vo_track == T_HAVO],
        [
            np.where(u < 0.3, T_MBO1, T_MBO2),
            np.where(u < 0.6, T_MBO2, T_MBO3),
            np.where(u < 0.7, T_MBO3, T_MBO4),
            np.where(u < 0.85, T_MBO4, T_MBO3),
            np.where(u < 0.25, T_MBO4, -1),
        ],
        default=-1,
    ).astype(np.int8)


def simulate_years(
    rng: np.random.Generator,
    population: Population,
    years: tuple[int, ...],
    params: OutcomeParameters | None = None,
) -> tuple[pl.DataFrame, list[YearCalibration], np.ndarray]:
    """Run the yearly waves from the first to the last of ``years``; keep the rows of the requested years.

    Returns the person x year frame (ground truth plus the fields the extracts need), the per-year calibration,
    and the SDQ item matrix (rows aligned with the frame; zeros where no SDQ was recorded).
    """
    prm = OutcomeParameters() if params is None else params
    frame = population.persons
    n = frame.height
    g = {c: frame[c].to_numpy() for c in frame.columns if frame[c].dtype.is_numeric() or frame[c].dtype == pl.Boolean}
    z = g["woz_z"]
    male = (frame["sex"] == "M").to_numpy()
    low = g["low_income"]
    single = (frame["household_type"] == "single_parent").to_numpy()
    advice = g["school_advice_index"].astype(np.int8)
    first_track = np.select(
        [advice == 0, advice == 1, advice == 2, advice == 3],
        [T_VMBO_B, T_VMBO_K, np.where(g["gt_u"] < 0.2, T_VMBO_G, T_VMBO_T), T_HAVO],
        default=T_VWO,
    ).astype(np.int8)
    g["first_track"] = first_track
    g["late_born"] = (frame["birth_date"].dt.month() >= 10).to_numpy().astype(np.int64)
    birth_year = g["birth_year"].astype(np.int64)
    woz_2021 = g["woz_eur_2021"].astype(np.float64)
    age_rate = np.array([np.log(SUSPECTS_PER_10K.get(a, 1) / 200.0) for a in range(0, 30)])

    first, last = min(years), max(years)
    sector, track, grade = _initial_state((first - 1) - birth_year, g)
    left_prev = np.zeros(n, dtype=bool)
    frames: list[pl.DataFrame] = []
    item_blocks: list[np.ndarray] = []
    calibrations: list[YearCalibration] = []

    for year in range(first, last + 1):
        age = year - birth_year
        ints: dict[str, float] = {}
        # --- transition from last year's state: repetition and track change ("since last year") ---
        at_po, at_vo = sector == PO, sector == VO
        vo_final = at_vo & (grade >= DURATION[track])
        risk_rep = (at_po | (at_vo & ~vo_final)) & ~left_prev
        risk_tc = at_vo & ~vo_final & ~left_prev
        vo_next = risk_tc | (at_po & (grade == 8) & ~left_prev)
        lin = (
            prm.repetition_woz * z
            + prm.repetition_secondary * at_vo
            + prm.repetition_low_income * low
            + prm.repetition_male * male
            + prm.repetition_language_delay * g["language_delay"] * at_po
        )
        # Calibrated over this year's primary and secondary pupils: those at risk, plus next groep 1 (p = 0).
        entering = (sector == OUT) & (age - g["late_born"] == 4) & ~left_prev
        ints["grade_repetition"] = calibrate_intercept(
            np.where(risk_rep, lin, -np.inf), prm.repetition_target, risk_rep | entering
        )
        p_rep = np.where(risk_rep, expit(ints["grade_repetition"] + lin), 0.0)
        can_up = risk_tc & (track < T_VWO)
        lin = prm.track_up_woz * z + prm.track_up_female * ~male
        ints["track_up"] = calibrate_intercept(np.where(can_up, lin, -np.inf), prm.track_up_target, vo_next)
        p_up = np.where(can_up, expit(ints["track_up"] + lin), 0.0)
        can_down = risk_tc & (track > T_VMBO_B)
        lin = prm.track_down_woz * z + prm.track_down_low_income * low + prm.track_down_male * male
        ints["track_down"] = calibrate_intercept(np.where(can_down, lin, -np.inf), prm.track_down_target, vo_next)
        p_down = np.where(can_down, expit(ints["track_down"] + lin), 0.0)
        u = rng.random(n)
        repeated = risk_rep & (u < p_rep)
        went_up = ~repeated & (u >= p_rep) & (u < p_rep + p_up)
        went_down = ~repeated & ~went_up & (u >= p_rep + p_up) & (u < p_rep + p_up + p_down)

        new_sector = np.zeros(n, dtype=np.int8)
        new_track = np.full(n, -1, dtype=np.int8)
        new_grade = np.zeros(n, dtype=np.int8)
        # primary school
        adv = at_po & ~left_prev & ~repeated
        stay = at_po & ~left_prev & repeated
        new_sector[stay], new_track[stay], new_grade[stay] = PO, T_PO, grade[stay]
        to_vo = adv & (grade >= 8)
        up_po = adv & (grade < 8)
        new_sector[up_po], new_track[up_po], new_grade[up_po] = PO, T_PO, grade[up_po] + 1
        new_sector[to_vo], new_track[to_vo], new_grade[to_vo] = VO, first_track[to_vo], 1
        # secondary school, not in the final year
        t_next = np.where(went_up, track + 1, np.where(went_down, track - 1, track)).astype(np.int8)
        g_next = np.where(repeated, grade, np.minimum(grade + 1, DURATION[t_next])).astype(np.int8)
        new_sector[risk_tc], new_track[risk_tc], new_grade[risk_tc] = VO, t_next[risk_tc], g_next[risk_tc]
        # secondary school graduates
        grad = vo_final & ~left_prev
        post = _post_school_track(track, g["post_school_u"])
        to_mbo = grad & (post >= 0)
        new_sector[to_mbo], new_track[to_mbo], new_grade[to_mbo] = MBO, post[to_mbo], 1
        # MBO: next year, or graduated
        mbo_on = (sector == MBO) & ~left_prev & (grade < DURATION[track])
        new_sector[mbo_on], new_track[mbo_on], new_grade[mbo_on] = MBO, track[mbo_on], grade[mbo_on] + 1
        # new entrants in groep 1
        enter = entering
        new_sector[enter], new_track[enter], new_grade[enter] = PO, T_PO, 1
        sector, track, grade = new_sector, new_track, new_grade

        # --- this year's covariates ---
        vmbo = (track >= T_VMBO_B) & (track <= T_VMBO_T)
        mbo_low = (track == T_MBO1) | (track == T_MBO2)
        lin = (
            prm.youth_care_propensity * g["youth_care_propensity"]
            + prm.youth_care_single_parent * single
            + prm.youth_care_low_income * low
            + prm.youth_care_woz * z
        )
        ints["youth_care"] = calibrate_intercept(lin, prm.youth_care_target)
        youth_care = rng.random(n) < expit(ints["youth_care"] + lin)
        lin = (
            prm.parenting_propensity * g["parenting_propensity"]
            + prm.parenting_single_parent * single
            + prm.parenting_low_income * low
        )
        cutoffs = sdq_clinical_cutoffs()
        in_sdq_ages = (age >= cutoffs[0].min_age) & (age <= cutoffs[-1].max_age)
        ints["parenting_concerns"] = calibrate_intercept(lin, prm.parenting_target, in_sdq_ages)
        parenting = in_sdq_ages & (rng.random(n) < expit(ints["parenting_concerns"] + lin))
        compulsory = (age >= 5) & (age <= 17)
        log_rate = prm.truancy_woz * z + prm.truancy_vmbo_mbo * (vmbo | (sector == MBO)) + prm.truancy_male * male
        ints["truancy_log_rate"] = float(np.log(prm.truancy_mean / np.exp(log_rate[compulsory]).mean()))
        truancy = np.where(compulsory, rng.poisson(np.exp(ints["truancy_log_rate"] + log_rate)), 0)
        cjg_visit = in_sdq_ages & (rng.random(n) < prm.cjg_visit_share)
        visit_day = rng.integers(0, 365, n)
        bmi = np.interp(age, BMI_MEDIAN_AGES, BMI_MEDIAN) * np.exp(0.12 * g["bmi_z"] + rng.normal(0.0, 0.03, n))
        bmi = np.round(bmi, 1)

        # --- early school leaving (this year) ---
        risk_vsv = ((sector == VO) | (sector == MBO)) & (age >= 12)
        lin = (
            prm.early_leaving_woz * z
            + prm.early_leaving_mbo_low * mbo_low
            + prm.early_leaving_truancy * (truancy > 0)
            + prm.early_leaving_male * male
        )
        ints["early_school_leaving"] = calibrate_intercept(lin, prm.early_leaving_target, risk_vsv)
        p_vsv = np.where(risk_vsv, expit(ints["early_school_leaving"] + lin), 0.0)
        vsv = rng.random(n) < p_vsv

        # --- delinquency (this year) ---
        risk_del = (age >= 12) & (age <= 23)
        lin = (
            age_rate[np.clip(age, 0, 29)]
            + prm.delinquency_woz * z
            + prm.delinquency_male * male
            + prm.delinquency_vmbo * vmbo
            + g["neighbourhood_effect"]
        )
        ints["delinquency"] = calibrate_intercept(lin, prm.delinquency_target, risk_del)
        p_del = np.where(risk_del, expit(ints["delinquency"] + lin), 0.0)
        suspect = rng.random(n) < p_del

        # --- psychosocial risk: U in WOZ, centre calibrated so cov(WOZ, p) = 0 among the CJG children ---
        rest = (
            prm.psychosocial_low_income * low
            + prm.psychosocial_single_parent * single
            + prm.psychosocial_youth_care * youth_care
            + prm.psychosocial_parenting_concerns * parenting
            + prm.psychosocial_male * male
            + prm.psychosocial_peer_relations * g["peer_relations"]
        )
        sub = _calibration_subset(cjg_visit)
        centre, a_psy, cov = calibrate_psychosocial(
            z[sub], woz_2021[sub], rest[sub], prm.psychosocial_curvature, prm.psychosocial_target
        )
        ints["psychosocial_risk"] = a_psy
        p_psy = np.where(in_sdq_ages, expit(a_psy + prm.psychosocial_curvature * (z - centre) ** 2 + rest), 0.0)
        psy = in_sdq_ages & (rng.random(n) < p_psy)
        cutoff = np.zeros(n, dtype=np.int64)
        for band in cutoffs:
            cutoff[(age >= band.min_age) & (age <= band.max_age)] = band.above
        sdq_total = np.zeros(n, dtype=np.int64)
        items = np.zeros((n, 25), dtype=np.int8)
        sdq_total[cjg_visit], items[cjg_visit] = _draw_sdq(rng, psy[cjg_visit], cutoff[cjg_visit], p_psy[cjg_visit])
        sdq_items_only_total = rng.random(n) < prm.sdq_total_only_share

        calibrations.append(
            YearCalibration(
                year=year,
                intercepts=ints,
                psychosocial_centre=centre,
                psychosocial_centre_woz_eur_2021=float(np.exp(LOG_WOZ_CENTRE + LOG_WOZ_SCALE * centre)),
                woz_probability_covariance=cov,
            )
        )

        if year in years:
            pupil = sector != OUT
            rep_pop = (sector == PO) | (sector == VO)
            vo_pop = sector == VO
            woz_year = np.round(woz_2021 * woz_index(year) / 500.0) * 500.0

            frames.append(
                pl.DataFrame(
                    {
                        "person_id": g["person_id"],
                        "year": np.full(n, year, dtype=np.int32),
                        "age": age.astype(np.int32),
                        "woz_eur": woz_year.astype(np.int64),
                        "youth_care": youth_care,
                        "parenting_concerns": parenting,
                        "truancy_reports": truancy.astype(np.int32),
                        "cjg_visit": cjg_visit,
                        "visit_day": visit_day.astype(np.int32),
                        "bmi": bmi,
                        "school_type": labels(SECTOR_NAMES, sector),
                        "_sector_code": labels(SECTOR_CODES, sector),
                        "track": labels(TRACK_NAMES, np.where(track < 0, len(TRACK_NAMES) - 1, track)),
                        "grade": masked(grade.astype(np.int32), pupil, pl.Int32()),
                        "sdq_total": masked(sdq_total, cjg_visit, pl.Int32()),
                        "_sdq_only_total": sdq_items_only_total & cjg_visit,
                        "p_psychosocial_risk": masked(p_psy, in_sdq_ages, pl.Float64()),
                        "p_grade_repetition": masked(p_rep, rep_pop, pl.Float64()),
                        "p_track_up": masked(p_up, vo_pop, pl.Float64()),
                        "p_track_down": masked(p_down, vo_pop, pl.Float64()),
                        "p_early_school_leaving": masked(p_vsv, risk_vsv, pl.Float64()),
                        "p_delinquency": masked(p_del, risk_del, pl.Float64()),
                        "psychosocial_risk": masked(psy, in_sdq_ages, pl.Boolean()),
                        "grade_repetition": masked(repeated, rep_pop, pl.Boolean()),
                        "track_up": masked(went_up, vo_pop, pl.Boolean()),
                        "track_down": masked(went_down, vo_pop, pl.Boolean()),
                        "early_school_leaving": masked(vsv, risk_vsv, pl.Boolean()),
                        "delinquency": masked(suspect, risk_del, pl.Boolean()),
                        "_repeated": repeated & rep_pop,
                        "_track_change": labels(
                            ["", "OP", "AF"], np.where(went_up & vo_pop, 1, np.where(went_down & vo_pop, 2, 0))
                        ),
                        "_vsv": vsv,
                        "_suspect": suspect & risk_del,
                    }
                )
            )
            item_blocks.append(items)
        left_prev = vsv.copy()

    person_year = pl.concat(frames, how="vertical")
    return person_year, calibrations, np.concatenate(item_blocks, axis=0)
