"""Public API of the synthetic city: ``generate_city`` and the ``CityPaths`` it returns.

Layout of a city directory::

    city.json                              written last: a city without it is incomplete
    extracts/<partner>/<partner>_<year>.<ext>
    ground_truth/persons.parquet           one row per person x year: truth, true probabilities, presence
    ground_truth/faults.parquet            every injected fault
    ground_truth/effects.json              the generative model, calibration and realised base rates

The ground truth never sits inside ``extracts/``: a partner's node agent is pointed at ``extracts/<partner>``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from kansrijk.errors import InputError, OutputExists
from kansrijk.fsutil import atomic_path, atomic_write_bytes
from kansrijk.outcomes import OUTCOMES
from kansrijk.synth.extracts import (
    PARTNER_ORDER,
    build_typed_extract,
    extract_path,
    membership,
    render_native,
    write_extract,
)
from kansrijk.synth.faults import FAULT_KINDS, FAULTS_SCHEMA, inject_faults
from kansrijk.synth.geography import GEBIEDEN, build_city_map
from kansrijk.synth.outcomes_model import (
    SUSPECTS_PER_10K,
    WOZ_YEARLY_GROWTH,
    OutcomeParameters,
    YearCalibration,
    sdq_clinical_cutoffs,
    simulate_years,
)
from kansrijk.synth.population import (
    LOG_WOZ_CENTRE,
    LOG_WOZ_SCALE,
    MAX_AGE,
    MIN_AGE,
    WOZ_MEAN_2021,
    PopulationParameters,
    generate_population,
)

CITY_FORMAT = "kansrijk-synthetic-city/1"
MARKER = "city.json"
_OWN_ENTRIES = (MARKER, "extracts", "ground_truth")

GROUND_TRUTH_COLUMNS = (
    "person_id",
    "year",
    "bsn",
    "birth_date",
    "birth_year",
    "sex",
    "age",
    "buurt_code",
    "wijk_code",
    "gebied",
    "woz_eur",
    "woz_eur_2021",
    "migration_background",
    "household_type",
    "low_income",
    "social_assistance",
    "debt_assistance",
    "youth_care",
    "parenting_concerns",
    "language_delay",
    "truancy_reports",
    "school_type",
    "track",
    "grade",
    "school_advice",
    "bmi",
    "cjg_visit",
    "sdq_total",
    "peer_relations",
    "neighbourhood_effect",
    "p_psychosocial_risk",
    "p_grade_repetition",
    "p_track_up",
    "p_track_down",
    "p_early_school_leaving",
    "p_delinquency",
    "psychosocial_risk",
    "grade_repetition",
    "track_up",
    "track_down",
    "early_school_leaving",
    "delinquency",
    "in_cbs",
    "in_gemeente",
    "in_cjg",
    "in_duo",
)

FACTORS_WITHOUT_INDICATOR = (
    {
        "factor": "peer relations / social network",
        "variable": "peer_relations",
        "distribution": "standard normal, independent of every other attribute",
        "effects": {"psychosocial_risk": "log-odds -0.15 per SD (better peer relations, lower risk)"},
        "in_extracts": False,
        "why": "the factsheet: a factor without an indicator can never show up as important",
    },
)


@dataclass(frozen=True)
class CityPaths:
    """Where a generated city's files are."""

    root: Path
    extracts: dict[tuple[str, int], Path]
    ground_truth: Path

    @property
    def persons(self) -> Path:
        return self.ground_truth / "persons.parquet"

    @property
    def faults(self) -> Path:
        return self.ground_truth / "faults.parquet"

    @property
    def effects(self) -> Path:
        return self.ground_truth / "effects.json"

    @property
    def marker(self) -> Path:
        return self.root / MARKER


def _check_options(persons: int, years: tuple[int, ...], fault_rate: float) -> tuple[int, ...]:
    if persons < 100:
        raise InputError(
            f"--persons {persons} is too small: the city needs at least 100 persons",
            hint="pass --persons 100 or more (150000 is Rotterdam scale)",
        )
    if not years:
        raise InputError("--years is empty", hint="give one or more reference years, e.g. --years 2022,2023")
    if len(set(years)) != len(years) or any(not 2000 <= y <= 2100 for y in years):
        raise InputError(
            "--years must be distinct years between 2000 and 2100",
            hint="give reference years such as --years 2021,2022,2023",
        )
    if max(years) - min(years) > 20:
        raise InputError("--years spans more than 20 years", hint="give reference years within 20 years")
    if not 0.0 <= fault_rate <= 0.2:
        raise InputError(
            f"--fault-rate {fault_rate} is outside 0..0.2", hint="give a share of rows, e.g. --fault-rate 0.005"
        )
    return tuple(sorted(years))


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out} exists and is not a directory", hint="choose another --out")
    if out.exists() and any(out.iterdir()):
        if not force:
            raise OutputExists(
                f"output directory {out} exists and is not empty",
                hint="choose an empty or new directory, or pass --force to replace the city in it",
            )
        # Remove the marker first: if we are interrupted, the directory is recognisably incomplete.
        (out / MARKER).unlink(missing_ok=True)
        for name in _OWN_ENTRIES[1:]:
            shutil.rmtree(out / name, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _base_rates(truth: pl.DataFrame, prm: OutcomeParameters) -> dict[str, dict[str, dict[str, float | int]]]:
    targets = {
        "psychosocial_risk": prm.psychosocial_target,
        "grade_repetition": prm.repetition_target,
        "track_up": prm.track_up_target,
        "track_down": prm.track_down_target,
        "early_school_leaving": prm.early_leaving_target,
        "delinquency": prm.delinquency_target,
    }
    result: dict[str, dict[str, dict[str, float | int]]] = {}
    for (year,), part in truth.group_by("year", maintain_order=True):
        per: dict[str, dict[str, float | int]] = {}
        for name in OUTCOMES:
            pop = part.filter(pl.col(name).is_not_null())
            if name == "psychosocial_risk":
                pop = pop.filter(pl.col("in_cjg"))
            n = pop.height
            pos = int(pop[name].sum()) if n else 0
            per[name] = {
                "population": n,
                "positives": pos,
                "rate": pos / n if n else 0.0,
                "mean_true_probability": float(pop[f"p_{name}"].mean() or 0.0) if n else 0.0,
                "target": targets[name],
            }
        minors = part.filter(pl.col("age") < 18)
        per["covariates"] = {
            "low_income_minors": float(minors["low_income"].mean() or 0.0),
            "single_parent": float((part["household_type"] == "single_parent").mean() or 0.0),
            "migration_background": float((part["migration_background"] != "dutch").mean() or 0.0),
            "non_western": float((part["migration_background"] == "non_western").mean() or 0.0),
            "youth_care": float(part["youth_care"].mean() or 0.0),
            "social_assistance": float(part["social_assistance"].mean() or 0.0),
            "debt_assistance": float(part["debt_assistance"].mean() or 0.0),
            "mean_woz_eur": float(part["woz_eur"].mean() or 0.0),
            "mean_woz_eur_2021": float(part["woz_eur_2021"].mean() or 0.0),
            "in_cbs": float(part["in_cbs"].mean() or 0.0),
            "in_gemeente": float(part["in_gemeente"].mean() or 0.0),
            "in_cjg_ages_4_18": float(part.filter(pl.col("age").is_between(4, 18))["in_cjg"].mean() or 0.0),
            "in_duo_ages_4_17": float(part.filter(pl.col("age").is_between(4, 17))["in_duo"].mean() or 0.0),
        }
        result[str(year)] = per
    return result


def _effects_document(
    *,
    seed: int,
    persons: int,
    years: tuple[int, ...],
    fault_rate: float,
    latin1: bool,
    pop_params: PopulationParameters,
    out_params: OutcomeParameters,
    calibrations: list[YearCalibration],
    base_rates: dict[str, object],
    fault_counts: dict[str, object],
) -> dict[str, object]:
    o = out_params
    effects = [
        {
            "outcome": "psychosocial_risk",
            "variable": "woz_z",
            "form": "U: curvature * (woz_z - centre)^2",
            "coefficient": o.psychosocial_curvature,
            "note": "centre calibrated per year so cov(WOZ, p) = 0",
        },
        {
            "outcome": "psychosocial_risk",
            "variable": "low_income",
            "form": "linear",
            "coefficient": o.psychosocial_low_income,
        },
        {
            "outcome": "psychosocial_risk",
            "variable": "youth_care",
            "form": "linear",
            "coefficient": o.psychosocial_youth_care,
        },
        {
            "outcome": "psychosocial_risk",
            "variable": "parenting_concerns",
            "form": "linear",
            "coefficient": o.psychosocial_parenting_concerns,
        },
        {
            "outcome": "psychosocial_risk",
            "variable": "peer_relations (latent)",
            "form": "linear",
            "coefficient": o.psychosocial_peer_relations,
        },
        {"outcome": "grade_repetition", "variable": "woz_z", "form": "linear", "coefficient": o.repetition_woz},
        {
            "outcome": "grade_repetition",
            "variable": "secondary (last year)",
            "form": "linear",
            "coefficient": o.repetition_secondary,
        },
        {
            "outcome": "grade_repetition",
            "variable": "low_income",
            "form": "linear",
            "coefficient": o.repetition_low_income,
        },
        {"outcome": "grade_repetition", "variable": "male", "form": "linear", "coefficient": o.repetition_male},
        {
            "outcome": "grade_repetition",
            "variable": "language_delay (primary)",
            "form": "linear",
            "coefficient": o.repetition_language_delay,
        },
        {
            "outcome": "track_up",
            "variable": "woz_z",
            "form": "linear",
            "coefficient": o.track_up_woz,
            "note": "0 in VWO and for pupils new in secondary school",
        },
        {"outcome": "track_up", "variable": "female", "form": "linear", "coefficient": o.track_up_female},
        {
            "outcome": "track_down",
            "variable": "woz_z",
            "form": "linear",
            "coefficient": o.track_down_woz,
            "note": "0 in VMBO-B and for pupils new in secondary school",
        },
        {"outcome": "track_down", "variable": "low_income", "form": "linear", "coefficient": o.track_down_low_income},
        {"outcome": "track_down", "variable": "male", "form": "linear", "coefficient": o.track_down_male},
        {"outcome": "early_school_leaving", "variable": "woz_z", "form": "linear", "coefficient": o.early_leaving_woz},
        {
            "outcome": "early_school_leaving",
            "variable": "MBO-1/MBO-2",
            "form": "linear",
            "coefficient": o.early_leaving_mbo_low,
        },
        {
            "outcome": "early_school_leaving",
            "variable": "truancy_reports > 0",
            "form": "linear",
            "coefficient": o.early_leaving_truancy,
        },
        {"outcome": "early_school_leaving", "variable": "male", "form": "linear", "coefficient": o.early_leaving_male},
        {"outcome": "delinquency", "variable": "woz_z", "form": "linear", "coefficient": o.delinquency_woz},
        {
            "outcome": "delinquency",
            "variable": "age",
            "form": "offset ln(suspects per 10k at age / 200)",
            "coefficient": 1.0,
            "table": {str(k): v for k, v in SUSPECTS_PER_10K.items()},
        },
        {"outcome": "delinquency", "variable": "male", "form": "linear", "coefficient": o.delinquency_male},
        {
            "outcome": "delinquency",
            "variable": "VMBO track (this year)",
            "form": "linear",
            "coefficient": o.delinquency_vmbo,
        },
        {
            "outcome": "delinquency",
            "variable": "buurt (neighbourhood_effect)",
            "form": "random effect per buurt",
            "coefficient": o.delinquency_neighbourhood_sd,
            "note": "sd of the buurt effects",
        },
    ]
    return {
        "format": CITY_FORMAT,
        "seed": seed,
        "persons": persons,
        "years": list(years),
        "fault_rate": fault_rate,
        "gemeente_encoding": "iso-8859-1" if latin1 else "utf-8",
        "ages_in_last_year": [MIN_AGE, MAX_AGE],
        "woz": {
            "mean_eur_2021": WOZ_MEAN_2021,
            "woz_z": f"(ln(WOZ in 2021 euros) - {LOG_WOZ_CENTRE:.6f}) / {LOG_WOZ_SCALE}",
            "yearly_growth_after_2021": WOZ_YEARLY_GROWTH,
            "gebieden": {
                g.name: {
                    "wijk_code": f"WK0599{g.wijk_number:02d}",
                    "woz_median_2021": g.woz_median_2021,
                    "youth_share": g.youth_share,
                    "buurten": g.n_buurten,
                }
                for g in GEBIEDEN
            },
        },
        "sdq_clinical_cutoffs": [
            {"ages": [b.min_age, b.max_age], "clinical_if_total_above": b.above} for b in sdq_clinical_cutoffs()
        ],
        "effects": effects,
        "population_parameters": pop_params.to_json(),
        "outcome_parameters": out_params.to_json(),
        "calibration": [
            {
                "year": c.year,
                "intercepts": c.intercepts,
                "psychosocial_centre_woz_z": c.psychosocial_centre,
                "psychosocial_centre_woz_eur_2021": c.psychosocial_centre_woz_eur_2021,
                "cov_woz_true_probability_cjg": c.woz_probability_covariance,
            }
            for c in calibrations
        ],
        "base_rates": base_rates,
        "factors_without_indicator": list(FACTORS_WITHOUT_INDICATOR),
        "faults": fault_counts,
    }


def outcome_parameters(planted: dict[str, float]) -> OutcomeParameters:
    """The calibrated city's targets and log-odds, as the study file's ``[synthetic.planted_parameters]`` sets
    them (the rest keep their documented defaults). ``InputError`` naming an unknown key."""
    known = set(OutcomeParameters.__dataclass_fields__)
    unknown = sorted(set(planted) - known)
    if unknown:
        raise InputError(
            f"synthetic.planted_parameters: unknown parameter(s) {unknown} of the calibrated city",
            hint=f"known: {', '.join(sorted(known))}",
        )
    return OutcomeParameters(**{k: float(v) for k, v in planted.items()})


def generate_city(
    out: Path,
    *,
    persons: int = 150_000,
    seed: int = 7,
    years: tuple[int, ...] = (2023,),
    fault_rate: float = 0.005,
    latin1: bool = False,
    force: bool = False,
    on_step: Callable[[str], None] | None = None,
    planted: dict[str, float] | None = None,
) -> CityPaths:
    """Generate the city into ``out``: the partners' raw extracts and, separately, the ground truth.

    Same arguments give byte-identical files. Refuses (``OutputExists``) a non-empty ``out`` unless ``force``,
    which replaces only the city's own entries (``city.json``, ``extracts/``, ``ground_truth/``). ``city.json``
    is written last, so a directory without it holds an interrupted run. ``on_step`` is called with a short
    description before each step (for a progress display).
    """
    step = on_step or (lambda _msg: None)
    out = Path(out)
    years = _check_options(persons, tuple(int(y) for y in years), float(fault_rate))
    _prepare_out(out, force)

    rng = np.random.default_rng(seed)
    step("drawing the city and its people")
    city = build_city_map(rng)
    population = generate_population(rng, city, persons, max(years))
    step("simulating the yearly waves")
    out_params = outcome_parameters(planted or {})
    person_year, calibrations, items = simulate_years(rng, population, years, out_params)

    stable = population.persons
    extracts: dict[tuple[str, int], Path] = {}
    fault_frames: list[pl.DataFrame] = []
    truth_frames: list[pl.DataFrame] = []
    for i, year in enumerate(years):
        n = stable.height
        year_frame = pl.concat([stable, person_year.slice(i * n, n).drop("person_id")], how="horizontal")
        year_items = items[i * n : (i + 1) * n]
        members = membership(year_frame)
        conflicted: set[int] = set()
        presence: dict[str, pl.Series] = {}
        for partner in PARTNER_ORDER:
            step(f"writing the {partner} extract for {year}")
            mask = members[partner]
            rows = np.flatnonzero(mask.to_numpy())
            typed = build_typed_extract(partner, year_frame[rows], year_items[rows], rng)
            faulted = inject_faults(rng, partner, year, typed, fault_rate, conflicted)
            path = extract_path(out, partner, year)
            write_extract(partner, render_native(partner, faulted.frame), path, latin1=latin1)
            extracts[(partner, year)] = path
            fault_frames.append(faulted.faults)
            invalid = np.isin(year_frame["person_id"].to_numpy(), faulted.invalid_person_ids)
            presence[f"in_{partner}"] = pl.Series(f"in_{partner}", mask.to_numpy() & ~invalid)
        truth_frames.append(
            year_frame.with_columns(
                *presence.values(),
                school_advice=pl.col("school_advice_index").replace_strict(
                    {0: "VMBO-B", 1: "VMBO-K", 2: "VMBO-GT", 3: "HAVO", 4: "VWO"}, return_dtype=pl.String
                ),
            ).select(GROUND_TRUTH_COLUMNS)
        )

    step("writing the ground truth")
    truth = pl.concat(truth_frames, how="vertical")
    faults = pl.concat(fault_frames, how="vertical") if fault_frames else pl.DataFrame(schema=FAULTS_SCHEMA)
    gt = out / "ground_truth"
    with atomic_path(gt / "persons.parquet") as tmp:
        truth.write_parquet(tmp, compression="zstd")
    with atomic_path(gt / "faults.parquet") as tmp:
        faults.write_parquet(tmp, compression="zstd")
    fault_counts = {
        f"{p}_{y}": {
            k: int(((faults["partner"] == p) & (faults["year"] == y) & (faults["kind"] == k)).sum())
            for k in FAULT_KINDS
        }
        for p in PARTNER_ORDER
        for y in years
    }
    doc = _effects_document(
        seed=seed,
        persons=persons,
        years=years,
        fault_rate=fault_rate,
        latin1=latin1,
        pop_params=population.parameters,
        out_params=out_params,
        calibrations=calibrations,
        base_rates=_base_rates(truth, out_params),
        fault_counts=fault_counts,
    )
    atomic_write_bytes(gt / "effects.json", (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode())

    paths = CityPaths(root=out, extracts=extracts, ground_truth=gt)
    files = [*extracts.values(), paths.persons, paths.faults, paths.effects]
    marker = {
        "format": CITY_FORMAT,
        "seed": seed,
        "persons": persons,
        "years": list(years),
        "fault_rate": fault_rate,
        "latin1": latin1,
        "files": {str(f.relative_to(out)): _file_digest(f) for f in files},
    }
    atomic_write_bytes(out / MARKER, (json.dumps(marker, indent=2, sort_keys=True) + "\n").encode())
    return paths


def load_city(root: Path) -> CityPaths:
    """The ``CityPaths`` of a complete city written earlier; refuses a directory without ``city.json``."""
    root = Path(root)
    marker = root / MARKER
    if not marker.is_file():
        raise InputError(
            f"{root} is not a complete synthetic city: {MARKER} is missing",
            hint="the generation was interrupted or this is another directory; run `kansrijk synth city` again",
        )
    meta = json.loads(marker.read_text())
    extracts = {
        (p, int(y)): root / "extracts" / p / f"{p}_{y}.{'parquet' if p == 'cbs' else 'csv'}"
        for p in PARTNER_ORDER
        for y in meta["years"]
    }
    return CityPaths(root=root, extracts=extracts, ground_truth=root / "ground_truth")
