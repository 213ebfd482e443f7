"""The city's map: 14 real Rotterdam gebieden, 70 buurten with CBS-like codes, WOZ levels and addresses.

Gebied names are Rotterdam's 14 districts (wijkprofiel.rotterdam.nl, 2024). Their WOZ levels, youth shares and
buurt counts are plausible assumptions (CBS's buurt table for Rotterdam was not available offline), chosen so the
city-wide mean WOZ is about EUR 245,000 in 2021 terms with a wide spread across buurten. Codes follow the CBS
pattern (``WK0599WW``, ``BU0599WWBB``) but are not claimed to be the official numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl


@dataclass(frozen=True, slots=True)
class Gebied:
    name: str
    wijk_number: int  # the WW of WK0599WW
    woz_median_2021: float  # typical home value in the district, EUR, 2021 terms
    youth_share: float  # share of the city's youth living here
    n_buurten: int
    postcode_base: int  # first 4-digit postcode of the district's range


GEBIEDEN: tuple[Gebied, ...] = (
    Gebied("Centrum", 1, 285_000, 0.035, 5, 3011),
    Gebied("Delfshaven", 3, 185_000, 0.110, 7, 3021),
    Gebied("Overschie", 4, 265_000, 0.035, 4, 3041),
    Gebied("Noord", 5, 240_000, 0.075, 6, 3031),
    Gebied("Hillegersberg-Schiebroek", 6, 430_000, 0.060, 5, 3051),
    Gebied("Kralingen-Crooswijk", 8, 290_000, 0.075, 6, 3061),
    Gebied("Feijenoord", 10, 180_000, 0.115, 7, 3071),
    Gebied("IJsselmonde", 12, 215_000, 0.090, 6, 3077),
    Gebied("Pernis", 13, 235_000, 0.008, 1, 3195),
    Gebied("Prins Alexander", 14, 275_000, 0.140, 8, 3067),
    Gebied("Charlois", 15, 165_000, 0.125, 7, 3081),
    Gebied("Hoogvliet", 16, 205_000, 0.065, 4, 3191),
    Gebied("Hoek van Holland", 17, 310_000, 0.022, 2, 3151),
    Gebied("Rozenburg", 18, 215_000, 0.020, 2, 3181),
)

# Street names used for the (never to be shared) Gemeente address columns. Some carry diacritics so that the
# Latin-1 export is a real test of a reader's encoding handling.
STREETS: tuple[str, ...] = (
    "Zwaanshals",
    "Bergweg",
    "Noordsingel",
    "Mathenesserlaan",
    "Schiedamseweg",
    "Nieuwe Binnenweg",
    "Coolsingel",
    "Kruiskade",
    "Witte de Withstraat",
    "Vierambachtsstraat",
    "Beukelsdijk",
    "Spanjaardstraat",
    "Grondherendijk",
    "Straatweg",
    "Kastanjesingel",
    "Peppelweg",
    "Oudedijk",
    "Crooswijksesingel",
    "Boezemsingel",
    "Lusthofstraat",
    "Beijerlandselaan",
    "Putselaan",
    "Hillevliet",
    "Oranjeboomstraat",
    "Rosestraat",
    "Groene Hilledijk",
    "Dordtsestraatweg",
    "Wolphaertsbocht",
    "Pleinweg",
    "Mijnsherenlaan",
    "Strevelsweg",
    "Vaanweg",
    "Keizerswaard",
    "Prinsenlaan",
    "Hesseplaats",
    "Ommoord",
    "Kralingseweg",
    "Hoeksekade",
    "Gaddingen",
    "Middenbaan",
    "Achterdijk",
    "Nieuwe Maasstraat",
    "Pernisserweg",
    "Burgemeester van Walsumweg",
    "Molenweg",
    "Müllerkade",
    "Händelstraat",
    "Réaumurstraat",
    "Curaçaostraat",
    "Citroënstraat",
    "Kleinpolderplein",
    "Rijksstraatweg",
    "Abraham van Stolkweg",
    "Noorderhavenkade",
    "Zaagmolenkade",
    "Goudsesingel",
    "Pijnackerstraat",
    "Heemraadssingel",
    "'s-Gravendijkwal",
    "Tweede Middellandstraat",
    "Stadhoudersweg",
    "Walenburgerweg",
    "Dorpsweg",
    "Slinge",
    "Zuiderparkweg",
    "Brielselaan",
    "Sleephellingstraat",
    "Vlaardingerdijk",
    "Kerkwervesingel",
    "Oldegaarde",
    "Zuidplein",
    "Pendrechtstraat",
    "Tarwewijk",
    "Lombardijen",
)


@dataclass(frozen=True, slots=True)
class CityMap:
    """The buurten of the city as a polars frame (one row per buurt) plus its street table."""

    buurten: pl.DataFrame  # buurt_index, buurt_code, wijk_code, gebied, woz_level_2021, youth_weight, ...

    @property
    def n_buurten(self) -> int:
        return self.buurten.height


def build_city_map(rng: np.random.Generator) -> CityMap:
    """Draw the buurten: codes, a WOZ level per buurt, youth weights, a delinquency effect and addresses.

    WOZ level of a buurt = district median x lognormal(0, 0.25); the within-buurt spread is added per home in
    ``population``. ``neighbourhood_effect`` is the buurt's planted effect on delinquency (log-odds).
    """
    rows: list[dict[str, object]] = []
    for g in GEBIEDEN:
        weights = rng.dirichlet(np.full(g.n_buurten, 4.0))
        levels = g.woz_median_2021 * np.exp(rng.normal(0.0, 0.25, g.n_buurten))
        for b in range(g.n_buurten):
            rows.append(
                {
                    "buurt_code": f"BU0599{g.wijk_number:02d}{b:02d}",
                    "wijk_code": f"WK0599{g.wijk_number:02d}",
                    "gebied": g.name,
                    "woz_level_2021": float(levels[b]),
                    "youth_weight": float(g.youth_share * weights[b]),
                    "postcode_number": g.postcode_base + b // 2,
                }
            )
    frame = pl.DataFrame(rows).with_row_index("buurt_index")
    n = frame.height
    effect = rng.normal(0.0, 0.30, n)
    # Each buurt gets a handful of streets from the list: a contiguous, wrapping run starting at a random offset.
    start = rng.integers(0, len(STREETS), n)
    frame = frame.with_columns(
        pl.Series("youth_weight", frame["youth_weight"].to_numpy() / frame["youth_weight"].sum()),
        pl.Series("neighbourhood_effect", effect),
        pl.Series("street_offset", start.astype(np.int32)),
    )
    return CityMap(buurten=frame)
