"""The raw extracts are exactly in each partner's native format (docs/extract-formats.md)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from kansrijk.synth.city import CityPaths, generate_city
from kansrijk.synth.extracts import SDQ_COLUMNS

CBS_COLUMNS = [
    "bsn",
    "geboortedatum",
    "geslacht",
    "herkomst",
    "huishouden",
    "ink_onder_sociaal_min",
    "verdachte",
    "jaar",
]
GEMEENTE_COLUMNS = [
    "BSN", "Geboortedatum", "Geslacht", "Straat", "Huisnummer", "Postcode", "Buurtcode", "Wijkcode", "Gebied",
    "WOZ_waarde", "Bijstand", "Schuldhulp", "Verzuimmeldingen", "Jeugdhulp", "Peiljaar",
]  # fmt: skip
CJG_COLUMNS = ["bsn", "geboortedatum", "geslacht", "contactdatum", *SDQ_COLUMNS, "sdq_totaal", "bmi",
               "taalachterstand", "zorgen_opvoeding", "opmerking"]  # fmt: skip
DUO_COLUMNS = [
    "BSN", "GEBOORTEDATUM", "GESLACHT", "BRIN", "SOORT_ONDERWIJS", "ONDERWIJSTYPE", "LEERJAAR", "ZITTENBLIJVER",
    "OP_AFSTROOM", "VSV", "SCHOOLADVIES", "TELJAAR",
]  # fmt: skip


def _read_text(path, sep: str, encoding: str = "utf8") -> pl.DataFrame:
    """All columns as text; an empty field (quoted or not) is a missing value."""
    df = pl.read_csv(path, separator=sep, infer_schema=False, encoding=encoding)
    return df.with_columns(pl.all().replace("", None))


def test_layout_keeps_ground_truth_apart_from_extracts(small_city: CityPaths) -> None:
    root = small_city.root
    assert sorted(small_city.extracts) == [("cbs", 2023), ("cjg", 2023), ("duo", 2023), ("gemeente", 2023)]
    for (partner, year), path in small_city.extracts.items():
        assert path == root / "extracts" / partner / f"{partner}_{year}.{'parquet' if partner == 'cbs' else 'csv'}"
        assert path.is_file()
    assert not list((root / "extracts").rglob("*persons*")) and not list((root / "extracts").rglob("*fault*"))
    assert {p.name for p in small_city.ground_truth.iterdir()} == {"persons.parquet", "faults.parquet", "effects.json"}
    assert (root / "city.json").is_file()


def test_cbs_extract_is_parquet_with_the_documented_types(small_city: CityPaths) -> None:
    df = pl.read_parquet(small_city.extracts[("cbs", 2023)])
    assert df.columns == CBS_COLUMNS
    assert df.schema == pl.Schema(
        {
            "bsn": pl.String,
            "geboortedatum": pl.Date,
            "geslacht": pl.Int8,
            "herkomst": pl.String,
            "huishouden": pl.String,
            "ink_onder_sociaal_min": pl.Boolean,
            "verdachte": pl.Boolean,
            "jaar": pl.Int16,
        }
    )
    assert set(df["geslacht"].drop_nulls().unique()) == {1, 2}
    assert set(df["herkomst"].drop_nulls().unique()) == {"Nederland", "westers", "niet-westers"}
    assert set(df["huishouden"].unique()) == {"paar met kinderen", "eenouder", "overig"}
    assert df["bsn"].str.len_chars().eq(9).all()
    # No suspects below 12 (CBS records suspects from age 12).
    young = df.filter((2023 - pl.col("geboortedatum").dt.year()).is_between(0, 11))
    assert not young["verdachte"].any()


def test_gemeente_csv_uses_semicolons_decimal_comma_dutch_dates_and_jn_flags(small_city: CityPaths) -> None:
    path = small_city.extracts[("gemeente", 2023)]
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header == ";".join(GEMEENTE_COLUMNS)
    df = _read_text(path, ";")
    assert df["WOZ_waarde"].drop_nulls().str.contains(r"^-?\d+,\d{2}$").all()
    assert df["Geboortedatum"].drop_nulls().str.contains(r"^\d{2}-\d{2}-\d{4}$").all()
    for flag in ("Bijstand", "Schuldhulp", "Jeugdhulp"):
        assert set(df[flag].unique()) == {"J", "N"}
    assert set(df["Geslacht"].drop_nulls().unique()) == {"M", "V"}
    assert df["Buurtcode"].drop_nulls().str.contains(r"^BU0599\d{4}$").all()
    assert df["Wijkcode"].str.contains(r"^WK0599\d{2}$").all()
    assert df["Gebied"].n_unique() == 14
    assert df["Postcode"].str.contains(r"^\d{4} [A-Z]{2}$").all()
    assert df["Peiljaar"].unique().to_list() == ["2023"]
    # Readable as the municipality's own tooling would read it: decimal comma, Dutch day-first dates.
    typed = pl.read_csv(path, separator=";", decimal_comma=True, schema_overrides={"BSN": pl.String}).with_columns(
        pl.col("Geboortedatum").str.strptime(pl.Date, "%d-%m-%Y")
    )
    assert typed["WOZ_waarde"].dtype == pl.Float64
    assert 150_000 < typed["WOZ_waarde"].filter(typed["WOZ_waarde"] > 0).mean() < 400_000


def test_cjg_csv_uses_commas_iso_dates_and_sdq_items_or_total(small_city: CityPaths) -> None:
    path = small_city.extracts[("cjg", 2023)]
    df = _read_text(path, ",")
    assert df.columns == CJG_COLUMNS
    assert df["geboortedatum"].drop_nulls().str.contains(r"^\d{4}-\d{2}-\d{2}$").all()
    assert df["contactdatum"].drop_nulls().str.starts_with("2023-").all()
    assert set(df["geslacht"].drop_nulls().unique()) == {"m", "v"}
    assert df["bmi"].str.contains(r"^\d+\.\d$").all()
    with_items = df.filter(pl.col("sdq_01").is_not_null())
    only_total = df.filter(pl.col("sdq_01").is_null())
    # Items and total are exclusive: a row carries the 25 items, or only the total.
    assert with_items["sdq_totaal"].is_null().all()
    assert only_total["sdq_totaal"].is_not_null().all()
    assert 0.05 < only_total.height / df.height < 0.3
    ages = 2023 - df["geboortedatum"].drop_nulls().str.slice(0, 4).cast(pl.Int32)
    assert ages.filter(ages < 200).is_between(4, 18).all()


def test_duo_csv_is_quoted_with_compact_dates_and_known_codes(small_city: CityPaths) -> None:
    path = small_city.extracts[("duo", 2023)]
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == ",".join(f'"{c}"' for c in DUO_COLUMNS)
    df = _read_text(path, ",")
    assert df["GEBOORTEDATUM"].drop_nulls().str.contains(r"^\d{8}$").all()
    assert set(df["SOORT_ONDERWIJS"].drop_nulls().unique()) == {"PO", "VO", "MBO"}
    assert set(df["ONDERWIJSTYPE"].drop_nulls().unique()) <= {
        "PO", "VMBO-B", "VMBO-K", "VMBO-G", "VMBO-T", "HAVO", "VWO", "MBO-1", "MBO-2", "MBO-3", "MBO-4"
    }  # fmt: skip
    assert set(df["OP_AFSTROOM"].fill_null("").unique()) <= {"OP", "AF", ""}
    assert set(df["ZITTENBLIJVER"].unique()) == {"J", "N"}
    assert df["BRIN"].str.contains(r"^\d{2}[A-Z]{2}$").all()
    vo = df.filter(pl.col("SOORT_ONDERWIJS") == "VO")
    assert vo["SCHOOLADVIES"].is_in(["VMBO-B", "VMBO-K", "VMBO-GT", "HAVO", "VWO"]).all()
    assert df.filter(pl.col("SOORT_ONDERWIJS") == "PO")["LEERJAAR"].cast(pl.Int32).is_between(1, 8).all()


def test_latin1_option_writes_the_gemeente_csv_in_iso_8859_1(tmp_path) -> None:
    paths = generate_city(tmp_path / "city", persons=2_000, seed=3, latin1=True)
    raw = paths.extracts[("gemeente", 2023)].read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    text = raw.decode("iso-8859-1")
    assert any(ch in text for ch in "üäéçë")
    df = pl.read_csv(raw, separator=";", encoding="iso-8859-1", infer_schema=False)
    assert df.height > 1_900
    # The other partners stay UTF-8.
    paths.extracts[("cjg", 2023)].read_bytes().decode("utf-8")


def test_ground_truth_has_one_row_per_person_and_year_with_the_documented_columns(small_city: CityPaths) -> None:
    truth = pl.read_parquet(small_city.persons)
    assert truth.height == 3_000
    assert truth["person_id"].n_unique() == 3_000
    for col in (
        "person_id", "bsn", "birth_date", "sex", "woz_eur", "p_psychosocial_risk", "p_grade_repetition",
        "p_track_up", "p_track_down", "p_early_school_leaving", "p_delinquency", "in_cbs", "in_gemeente",
        "in_cjg", "in_duo",
    ):  # fmt: skip
        assert col in truth.columns
    assert truth["birth_date"].dtype == pl.Date
    ages = 2023 - truth["birth_date"].dt.year()
    assert ages.min() == 4 and ages.max() == 23
    assert truth["birth_date"].max() <= dt.date(2019, 12, 31)
