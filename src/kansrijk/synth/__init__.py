"""Synthetic cities with a known ground truth, and the raw extracts the partners would hand over, each in its
own native format: the calibrated city (``kansrijk.synth.city``) for the shipped study, or a city drawn from any
study's declared ``[synthetic]`` section (``kansrijk.synth.declared``)."""

from __future__ import annotations

from pathlib import Path

from kansrijk.errors import InputError
from kansrijk.study import Study
from kansrijk.synth.city import CityPaths, generate_city, load_city
from kansrijk.synth.declared import DeclaredCity, generate_declared_city


def generate_study_city(
    study: Study, out: Path, *, persons: int, seed: int, years: tuple[int, ...], fault_rate: float, force: bool = False
) -> CityPaths | DeclaredCity:
    """The synthetic city the study's ``[synthetic]`` section asks for. ``InputError`` when it asks for none, or
    for the calibrated city while its partners are not the ones that city models."""
    syn = study.file.synthetic
    if syn is None:
        raise InputError(f"{study.path}: synthetic: the study declares no synthetic city",
                         hint="add a [synthetic] section, or run on your own extracts (--city DIR)")  # fmt: skip
    if syn.generator == "declared":
        return generate_declared_city(study, out, persons=persons, seed=seed, years=years, fault_rate=fault_rate,
                                      force=force)  # fmt: skip
    from kansrijk.synth.city import PARTNER_ORDER

    if set(PARTNER_ORDER) != set(study.partners):
        raise InputError(
            f"{study.path}: synthetic.generator: the calibrated city models partners "
            f"{', '.join(PARTNER_ORDER)}, not {', '.join(study.partners)}",
            hint="declare the city in the study's [synthetic] section (generator = 'declared')",
        )
    return generate_city(out, persons=persons, seed=seed, years=years, fault_rate=fault_rate, force=force,
                         planted=dict(syn.planted_parameters))  # fmt: skip


__all__ = ["CityPaths", "DeclaredCity", "generate_city", "generate_declared_city", "generate_study_city", "load_city"]
