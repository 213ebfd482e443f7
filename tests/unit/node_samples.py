"""Small hand-written partner extracts in exactly the formats of docs/extract-formats.md, for node-agent tests.

Each writer returns the extract path; rows are valid unless a test asks for a fault. BSNs are real 11-check
numbers made here (never real people's: they are consecutive numbers from 100000000 that pass the check).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl

WEIGHTS = (9, 8, 7, 6, 5, 4, 3, 2, -1)


def valid_bsns(n: int, start: int = 100_000_000) -> list[str]:
    out: list[str] = []
    candidate = start
    while len(out) < n:
        text = f"{candidate:09d}"
        if sum(int(d) * w for d, w in zip(text, WEIGHTS, strict=True)) % 11 == 0:
            out.append(text)
        candidate += 1
    return out


def invalid_bsn(valid: str) -> str:
    """A nine-digit number that fails the 11-check (change the last digit)."""
    return valid[:8] + str((int(valid[8]) + 1) % 10)


def cjg_rows(n: int) -> list[dict[str, str]]:
    rows = []
    for i, bsn in enumerate(valid_bsns(n)):
        items = [str((i + k) % 3) for k in range(25)]
        only_total = i % 4 == 3
        rows.append(
            {
                "bsn": bsn,
                "geboortedatum": f"{2008 + i % 10}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                "geslacht": "mv"[i % 2],
                "contactdatum": f"2023-{1 + i % 12:02d}-14",
                **{f"sdq_{k + 1:02d}": ("" if only_total else items[k]) for k in range(25)},
                "sdq_totaal": str(5 + i % 20) if only_total else "",
                "bmi": f"{15 + (i % 50) / 10:.1f}",
                "taalachterstand": str(i % 2),
                "zorgen_opvoeding": str((i // 2) % 2),
                "opmerking": f"Moeder maakt zich zorgen, adres Zwaanshals {i}",
            }
        )
    return rows


def write_cjg(path: Path, rows: list[dict[str, str]]) -> Path:
    pl.DataFrame(rows).write_csv(path, separator=",")
    return path


def gemeente_rows(n: int) -> list[dict[str, str]]:
    rows = []
    for i, bsn in enumerate(valid_bsns(n, start=200_000_000)):
        rows.append(
            {
                "BSN": bsn,
                "Geboortedatum": f"{1 + i % 28:02d}-{1 + i % 12:02d}-{2007 + i % 12}",
                "Geslacht": "MV"[i % 2],
                "Straat": "Zwaanshals" if i % 2 else "Bergweg",
                "Huisnummer": f"{i + 1}a",
                "Postcode": "3035 KS",
                "Buurtcode": f"BU0599{310 + i % 20:04d}",
                "Wijkcode": f"WK0599{3 + i % 5:02d}",
                "Gebied": "Noord",
                "WOZ_waarde": f"{150000 + 1250 * i},00",
                "Bijstand": "JN"[i % 2],
                "Schuldhulp": "N",
                "Verzuimmeldingen": str(i % 4),
                "Jeugdhulp": "JN"[(i // 3) % 2],
                "Peiljaar": "2023",
            }
        )
    return rows


def write_gemeente(path: Path, rows: list[dict[str, str]], *, encoding: str = "utf-8") -> Path:
    text = pl.DataFrame(rows).write_csv(separator=";")
    path.write_bytes(text.encode(encoding))
    return path


def duo_rows(n: int) -> list[dict[str, str]]:
    rows = []
    sectors = [("PO", "PO", 6, ""), ("VO", "HAVO", 2, "HAVO"), ("VO", "VMBO-T", 3, "VMBO-GT"), ("MBO", "MBO-2", 1, "")]
    for i, bsn in enumerate(valid_bsns(n, start=300_000_000)):
        sector, track, grade, advice = sectors[i % 4]
        rows.append(
            {
                "BSN": bsn,
                "GEBOORTEDATUM": f"{2006 + i % 10}{1 + i % 12:02d}{1 + i % 28:02d}",
                "GESLACHT": "MV"[i % 2],
                "BRIN": f"{10 + i % 80}AB",
                "SOORT_ONDERWIJS": sector,
                "ONDERWIJSTYPE": track,
                "LEERJAAR": str(grade),
                "ZITTENBLIJVER": "N" if i % 5 else "J",
                "OP_AFSTROOM": ["", "OP", "AF", ""][i % 4],
                "VSV": "N",
                "SCHOOLADVIES": advice,
                "TELJAAR": "2023",
            }
        )
    return rows


def write_duo(path: Path, rows: list[dict[str, str]]) -> Path:
    pl.DataFrame(rows).write_csv(path, separator=",", quote_style="always")
    return path


def cbs_frame(n: int) -> pl.DataFrame:
    bsns = valid_bsns(n, start=400_000_000)
    return pl.DataFrame(
        {
            "bsn": bsns,
            "geboortedatum": [dt.date(2006 + i % 12, 1 + i % 12, 1 + i % 28) for i in range(n)],
            "geslacht": pl.Series([1 + i % 2 for i in range(n)], dtype=pl.Int8),
            "herkomst": [["Nederland", "westers", "niet-westers"][i % 3] for i in range(n)],
            "huishouden": [["paar met kinderen", "eenouder", "overig"][i % 3] for i in range(n)],
            "ink_onder_sociaal_min": [i % 4 == 0 for i in range(n)],
            "verdachte": [i % 17 == 0 for i in range(n)],
            "jaar": pl.Series([2023] * n, dtype=pl.Int16),
        }
    )


def write_cbs(path: Path, frame: pl.DataFrame) -> Path:
    frame.write_parquet(path)
    return path
