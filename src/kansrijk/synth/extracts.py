"""The four partners' raw extracts, exactly in the native formats of docs/extract-formats.md.

Each extract is first built as a *typed* frame with the partner's own column names (dates as dates, flags as
booleans), so faults can be injected at the level of meaning (``faults``); ``write_extract`` then renders it in
the partner's format: CBS Parquet; Gemeente ``;`` CSV with decimal comma, ``dd-mm-yyyy`` and J/N; CJG ``,`` CSV
with ISO dates; DUO quoted ``,`` CSV with ``yyyymmdd`` dates and J/N.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from kansrijk.fsutil import atomic_path, atomic_write_bytes
from kansrijk.synth.population import labels, masked

PARTNER_ORDER: tuple[str, ...] = ("cbs", "gemeente", "cjg", "duo")
EXTENSIONS = {"cbs": "parquet", "gemeente": "csv", "cjg": "csv", "duo": "csv"}
SDQ_COLUMNS = tuple(f"sdq_{i:02d}" for i in range(1, 26))
ID_COLUMN = "_pid"  # person id carried alongside an extract until it is written; never written

REMARKS = (
    "Ouders maken zich zorgen over het slapen; advies gegeven.",
    "Vervolgafspraak over 6 maanden, gewicht opnieuw meten.",
    'Moeder vertelt dat het op school "goed gaat", vader is minder positief.',
    "Verwezen naar logopedie; één keer eerder gezien.",
    "Geen bijzonderheden.",
    "Kind is verlegen, contact met leerkracht, overleg met ouders.",
    "Opvoedondersteuning besproken; ouders staan er open voor.",
    "Zorgen over pesten op school, signaal naar intern begeleider.",
)


@dataclass(frozen=True, slots=True)
class PartnerColumns:
    """Column names a fault touches in one partner's extract."""

    bsn: str
    birth_date: str
    sex: str
    sex_codes: tuple[object, object]  # (male, female) in the partner's own coding
    missing: tuple[str, ...]  # required fields a missing-value fault may blank out
    impossible: tuple[str, ...]  # fields an impossible-value fault may corrupt


PARTNER_COLUMNS: dict[str, PartnerColumns] = {
    "cbs": PartnerColumns(
        "bsn", "geboortedatum", "geslacht", (1, 2), ("geboortedatum", "geslacht", "herkomst"), ("geboortedatum",)
    ),
    "gemeente": PartnerColumns(
        "BSN",
        "Geboortedatum",
        "Geslacht",
        ("M", "V"),
        ("Geboortedatum", "Geslacht", "Buurtcode", "WOZ_waarde"),
        ("Geboortedatum", "WOZ_waarde"),
    ),
    "cjg": PartnerColumns(
        "bsn",
        "geboortedatum",
        "geslacht",
        ("m", "v"),
        ("geboortedatum", "geslacht", "contactdatum"),
        ("geboortedatum", "sdq_item", "bmi"),
    ),
    "duo": PartnerColumns(
        "BSN",
        "GEBOORTEDATUM",
        "GESLACHT",
        ("M", "V"),
        ("GEBOORTEDATUM", "GESLACHT", "SOORT_ONDERWIJS", "ONDERWIJSTYPE"),
        ("GEBOORTEDATUM",),
    ),
}


def extract_path(root: Path, partner: str, year: int) -> Path:
    return root / "extracts" / partner / f"{partner}_{year}.{EXTENSIONS[partner]}"


def membership(year_frame: pl.DataFrame) -> dict[str, pl.Series]:
    """Who has a row at each partner this year (before faults): coverage profile and eligibility."""
    only = year_frame["only_partner"]
    return {
        "cbs": ((only == 0) | (only == 1)) & ~year_frame["cbs_missing"],
        "gemeente": ((only == 0) | (only == 2)) & ~year_frame["gemeente_missing"],
        "cjg": (only == 0) & year_frame["cjg_visit"],
        "duo": ((only == 0) | (only == 4)) & year_frame["school_type"].is_not_null(),
    }


def _sex(codes: tuple[object, object], dtype: pl.DataType) -> pl.Expr:
    male, female = codes
    return pl.when(pl.col("sex") == "M").then(pl.lit(male)).otherwise(pl.lit(female)).cast(dtype)


def _brin(index: pl.Expr) -> pl.Expr:
    """A school id like ``12AB`` from a school number (synthetic, stable, unique for indices < 676)."""
    letters = [chr(65 + i) for i in range(26)]
    first = (index % 26).replace_strict(dict(enumerate(letters)), return_dtype=pl.String)
    second = ((index // 26) % 26).replace_strict(dict(enumerate(letters)), return_dtype=pl.String)
    digits = ((index * 37) % 90 + 10).cast(pl.String)
    return digits + first + second


def build_typed_extract(partner: str, frame: pl.DataFrame, items: np.ndarray, rng: np.random.Generator) -> pl.DataFrame:
    """One partner's extract for one year as a typed frame in the partner's column names, rows in random order.

    ``frame`` holds the rows of the persons this partner holds (person x year ground truth joined with the stable
    attributes), ``items`` the SDQ answers aligned with it.
    """
    year = pl.col("year")
    if partner == "cbs":
        out = frame.select(
            pl.col("bsn"),
            pl.col("birth_date").alias("geboortedatum"),
            _sex((1, 2), pl.Int8()).alias("geslacht"),
            pl.col("migration_background")
            .replace_strict({"dutch": "Nederland", "western": "westers", "non_western": "niet-westers"})
            .alias("herkomst"),
            pl.col("household_type")
            .replace_strict({"two_parent": "paar met kinderen", "single_parent": "eenouder", "other": "overig"})
            .alias("huishouden"),
            pl.col("low_income").alias("ink_onder_sociaal_min"),
            pl.col("_suspect").alias("verdachte"),
            year.cast(pl.Int16).alias("jaar"),
            pl.col("person_id").alias(ID_COLUMN),
        )
    elif partner == "gemeente":
        out = frame.select(
            pl.col("bsn").alias("BSN"),
            pl.col("birth_date").alias("Geboortedatum"),
            _sex(("M", "V"), pl.String()).alias("Geslacht"),
            pl.col("street").alias("Straat"),
            pl.col("house_number").alias("Huisnummer"),
            pl.col("postcode").alias("Postcode"),
            pl.col("buurt_code").alias("Buurtcode"),
            pl.col("wijk_code").alias("Wijkcode"),
            pl.col("gebied").alias("Gebied"),
            pl.col("woz_eur").alias("WOZ_waarde"),
            pl.col("social_assistance").alias("Bijstand"),
            pl.col("debt_assistance").alias("Schuldhulp"),
            pl.col("truancy_reports").alias("Verzuimmeldingen"),
            pl.col("youth_care").alias("Jeugdhulp"),
            year.alias("Peiljaar"),
            pl.col("person_id").alias(ID_COLUMN),
        )
    elif partner == "cjg":
        only_total = frame["_sdq_only_total"].to_numpy()
        item_cols = [masked(items[:, i], ~only_total, pl.Int8()).alias(name) for i, name in enumerate(SDQ_COLUMNS)]
        remark_idx = rng.integers(0, len(REMARKS) * 4, frame.height)
        remarks = labels([*REMARKS, *([None] * (len(REMARKS) * 3))], remark_idx)
        out = frame.select(
            pl.col("bsn"),
            pl.col("birth_date").alias("geboortedatum"),
            _sex(("m", "v"), pl.String()).alias("geslacht"),
            (pl.date(year, 1, 1) + pl.duration(days=pl.col("visit_day"))).alias("contactdatum"),
        ).with_columns(
            *item_cols,
            masked(frame["sdq_total"].to_numpy(), only_total, pl.Int32()).alias("sdq_totaal"),
            frame["bmi"].alias("bmi"),
            frame["language_delay"].cast(pl.Int8).alias("taalachterstand"),
            frame["parenting_concerns"].cast(pl.Int8).alias("zorgen_opvoeding"),
            remarks.alias("opmerking"),
            frame["person_id"].alias(ID_COLUMN),
        )
    elif partner == "duo":
        sector = pl.col("_sector_code")
        school = (
            pl.when(sector == "PO")
            .then(pl.col("buurt_index").cast(pl.Int64) * 2 + pl.col("school_pick") % 2)
            .when(sector == "VO")
            .then(200 + pl.col("school_pick") % 25)
            .otherwise(300 + pl.col("school_pick") % 6)
        )
        advice = pl.col("school_advice_index").replace_strict(
            {0: "VMBO-B", 1: "VMBO-K", 2: "VMBO-GT", 3: "HAVO", 4: "VWO"}, return_dtype=pl.String
        )
        out = frame.select(
            pl.col("bsn").alias("BSN"),
            pl.col("birth_date").alias("GEBOORTEDATUM"),
            _sex(("M", "V"), pl.String()).alias("GESLACHT"),
            _brin(school).alias("BRIN"),
            sector.alias("SOORT_ONDERWIJS"),
            pl.col("track").alias("ONDERWIJSTYPE"),
            pl.col("grade").alias("LEERJAAR"),
            pl.col("_repeated").alias("ZITTENBLIJVER"),
            pl.col("_track_change").alias("OP_AFSTROOM"),
            pl.col("_vsv").alias("VSV"),
            pl.when(sector == "VO").then(advice).otherwise(pl.lit("")).alias("SCHOOLADVIES"),
            year.alias("TELJAAR"),
            pl.col("person_id").alias(ID_COLUMN),
        )
    else:  # pragma: no cover - partners are fixed
        raise ValueError(f"unknown partner {partner!r}")
    return out[rng.permutation(out.height)]


def _jn(column: str) -> pl.Expr:
    return pl.when(pl.col(column)).then(pl.lit("J")).when(pl.col(column).not_()).then(pl.lit("N")).alias(column)


def render_native(partner: str, typed: pl.DataFrame) -> pl.DataFrame:
    """The typed extract rendered as the partner writes it (strings where the partner's format is text)."""
    df = typed.drop(ID_COLUMN, strict=False)
    if partner == "cbs":
        return df
    if partner == "gemeente":
        return df.with_columns(
            pl.col("Geboortedatum").dt.strftime("%d-%m-%Y"),
            (pl.col("WOZ_waarde").cast(pl.String) + ",00").alias("WOZ_waarde"),
            _jn("Bijstand"),
            _jn("Schuldhulp"),
            _jn("Jeugdhulp"),
        )
    if partner == "cjg":
        return df.with_columns(
            pl.col("geboortedatum").dt.strftime("%Y-%m-%d"),
            pl.col("contactdatum").dt.strftime("%Y-%m-%d"),
            pl.col("bmi").round(1),
        )
    return df.with_columns(
        pl.col("GEBOORTEDATUM").dt.strftime("%Y%m%d"),
        _jn("ZITTENBLIJVER"),
        _jn("VSV"),
    )


def write_extract(partner: str, native: pl.DataFrame, path: Path, *, latin1: bool = False) -> None:
    """Write a rendered extract atomically in its partner's file format."""
    if partner == "cbs":
        with atomic_path(path) as tmp:
            native.write_parquet(tmp, compression="zstd", statistics=True)
        return
    buffer = io.BytesIO()
    if partner == "gemeente":
        native.write_csv(buffer, separator=";")
    elif partner == "cjg":
        native.write_csv(buffer, separator=",", float_precision=1)
    else:
        native.write_csv(buffer, separator=",", quote_style="always")
    data = buffer.getvalue()
    if partner == "gemeente" and latin1:
        data = data.decode("utf-8").encode("iso-8859-1")
    atomic_write_bytes(path, data)
