"""A city drawn from a study's [synthetic] section: same seed, same files; outcomes follow the study's own
derivation; the planted effects are there to be found (the ground truth a test of the analysis can check)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
import pytest
import statsmodels.api as sm

from kansrijk.errors import InputError
from kansrijk.outcomes import derive_outcomes
from kansrijk.study import load_study, use_study
from kansrijk.synth import generate_study_city

ROOT = Path(__file__).resolve().parents[2]
SECOND = ROOT / "policies" / "studies" / "utrecht-jeugdmonitor" / "study.toml"
SHIPPED = ROOT / "policies" / "studies" / "rotterdam-groeit" / "study.toml"
PERSONS = 12_000


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory):
    study = load_study(SECOND)
    with use_study(study):
        made = generate_study_city(study, tmp_path_factory.mktemp("c") / "city", persons=PERSONS, seed=3,
                                   years=(2023,), fault_rate=0.01)  # fmt: skip
    return study, made


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.*"))}


def test_same_seed_same_files(city, tmp_path: Path) -> None:
    study, made = city
    with use_study(study):
        again = generate_study_city(study, tmp_path / "city", persons=PERSONS, seed=3, years=(2023,), fault_rate=0.01)
    assert _digests(made.root) == _digests(again.root)


def test_every_partner_gets_its_extract_with_its_native_columns(city) -> None:
    study, made = city
    assert set(made.extracts) == {(p, 2023) for p in study.partners}
    ggd = pl.read_csv(made.extracts[("ggd", 2023)], infer_schema_length=0)
    assert set(ggd.columns) == {"bsn", *study.file.synthetic.extracts["ggd"].columns.values()}
    assert 0.55 < ggd.height / PERSONS < 0.65  # coverage 0.6
    assert set(ggd["gepest"].drop_nulls().unique()) == {"J", "N"}
    brp = pl.read_csv(made.extracts[("brp", 2023)], infer_schema_length=0)
    assert brp["buurtcode"].str.contains(r"^BU0344\d{4}$").all()
    assert (brp["wijkcode"] == ("WK" + brp["buurtcode"].str.slice(2, 6))).all()  # the hierarchy holds


def test_outcomes_in_the_ground_truth_follow_the_study_derivation(city) -> None:
    study, made = city
    truth = pl.read_parquet(made.ground_truth / "persons.parquet")
    with use_study(study):
        again = derive_outcomes(truth.drop("loneliness", "grade_repetition")).collect()
    for name in ("loneliness", "grade_repetition"):
        assert again[name].to_list() == truth[name].to_list()
        assert truth[name].drop_nulls().len() > 1000


def test_the_planted_effects_are_recovered_from_the_ground_truth(city) -> None:
    study, made = city
    truth = pl.read_parquet(made.ground_truth / "persons.parquet").filter(pl.col("loneliness").is_not_null())
    x = truth.select(pl.col("bullied").cast(pl.Float64), pl.col("parent_mental_health_concern").cast(pl.Float64),
                     pl.col("active_days").cast(pl.Float64)).to_numpy()  # fmt: skip
    fit = sm.Logit(truth["loneliness"].cast(pl.Int8).to_numpy(), sm.add_constant(x)).fit(disp=0)
    planted = {p.variable: p.log_odds for p in study.file.synthetic.planted if p.outcome == "loneliness"}
    effects = json.loads((made.ground_truth / "effects.json").read_text())
    assert {p["variable"] for p in effects["planted"] if p["outcome"] == "loneliness"} == set(planted)
    for i, name in enumerate(("bullied", "parent_mental_health_concern", "active_days"), start=1):
        assert abs(fit.params[i] - planted[name]) < 4 * fit.bse[i], (name, fit.params[i], planted[name])
    rate = truth["loneliness"].mean()
    assert 0.05 < rate < 0.4


def test_the_calibrated_city_refuses_a_study_with_other_partners(tmp_path: Path) -> None:
    text = SECOND.read_text(encoding="utf-8").replace('generator = "declared"', 'generator = "calibrated"')
    copy = tmp_path / "study.toml"
    copy.write_text(text, encoding="utf-8")
    (tmp_path / "factor-model.toml").symlink_to(SECOND.parent / "factor-model.toml")
    other = load_study(copy)
    with use_study(other), pytest.raises(InputError, match="the calibrated city models partners"):
        generate_study_city(other, tmp_path / "city", persons=500, seed=1, years=(2023,), fault_rate=0.0)


def test_the_calibrated_city_takes_its_planted_effects_from_the_study_file() -> None:
    from dataclasses import fields

    from kansrijk.synth.city import outcome_parameters
    from kansrijk.synth.outcomes_model import OutcomeParameters

    declared = load_study(SHIPPED).file.synthetic.planted_parameters
    assert set(declared) == {f.name for f in fields(OutcomeParameters)}  # every effect and target is in the file
    assert outcome_parameters(dict(declared)) == OutcomeParameters()  # ... at the values the city is calibrated to
    assert outcome_parameters({**declared, "delinquency_male": 0.9}).delinquency_male == 0.9
    with pytest.raises(InputError, match=r"unknown parameter\(s\) \['delinquency_mail'\]"):
        outcome_parameters({"delinquency_mail": 0.9})
