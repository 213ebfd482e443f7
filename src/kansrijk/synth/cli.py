"""`kansrijk synth`: generate the synthetic city."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kansrijk.console import console, progress_bar
from kansrijk.errors import InputError
from kansrijk.study import active_study
from kansrijk.synth.city import generate_city
from kansrijk.synth.declared import generate_declared_city

app = typer.Typer(
    help="Generate the synthetic city: raw partner extracts plus a separate ground truth.", no_args_is_help=True
)
_out = console


def _parse_years(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(
            f"--years {text!r} is not a comma-separated list of years", hint="write e.g. --years 2021,2022,2023"
        ) from None


@app.command("city")
def city(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the city into (must be empty or new).")],
    persons: Annotated[int, typer.Option("--persons", help="Number of persons aged 4-23 in the last year.")] = 150_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random generator; same seed, same bytes.")] = 7,
    years: Annotated[
        str, typer.Option("--years", help="Comma-separated reference years, e.g. 2021,2022,2023.")
    ] = "2023",
    fault_rate: Annotated[float, typer.Option("--fault-rate", help="Share of rows per extract given a fault.")] = 0.005,
    latin1: Annotated[
        bool, typer.Option("--latin1", help="Write the Gemeente CSV in ISO-8859-1 instead of UTF-8.")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Replace the city in a non-empty --out directory.")] = False,
) -> None:
    """Generate the active study's synthetic city: its population and each partner's raw extract.

    Writes DIR/extracts/<partner>/<file> in each partner's native format and, separately, DIR/ground_truth/
    (persons.parquet, effects.json; the calibrated city adds faults.parquet); DIR/city.json is written last. The
    study's [synthetic] section says which city: the calibrated one of the shipped study, or one drawn from the
    section's distributions and planted effects (kansrijk --study PATH synth city ...).

    Example:

        kansrijk synth city --persons 150000 --seed 7 --out city --years 2022,2023
    """
    year_tuple = _parse_years(years)
    study = active_study()
    if study.file.synthetic is not None and study.file.synthetic.generator == "declared":
        declared = generate_declared_city(
            study, out, persons=persons, seed=seed, years=year_tuple, fault_rate=fault_rate, force=force
        )
        for (partner, year), path in sorted(declared.extracts.items()):
            _out.print(f"{partner} {year}: {path.relative_to(declared.root)}")
        _out.print(f"ground truth: {declared.ground_truth} (never give it to a partner or the coordinator)")
        return
    total = 3 + 4 * len(year_tuple)
    with progress_bar("synthetic city", total=total) as (progress, task):

        def step(message: str) -> None:
            progress.update(task, description=message, advance=1)

        paths = generate_city(
            out,
            persons=persons,
            seed=seed,
            years=year_tuple,
            fault_rate=fault_rate,
            latin1=latin1,
            force=force,
            on_step=step,
            planted=dict(study.file.synthetic.planted_parameters) if study.file.synthetic is not None else None,
        )
    table = Table(title=f"synthetic city in {paths.root}", show_lines=False)
    table.add_column("partner")
    table.add_column("year", justify="right")
    table.add_column("file")
    for (partner, year), path in sorted(paths.extracts.items()):
        table.add_row(partner, str(year), str(path.relative_to(paths.root)))
    _out.print(table)
    _out.print(f"ground truth: {paths.ground_truth} (never give it to a partner or the coordinator)")
