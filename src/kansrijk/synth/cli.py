"""`kansrijk synth`: generate the synthetic city."""

import typer

app = typer.Typer(
    help="Generate the synthetic city: raw partner extracts plus a separate ground truth.", no_args_is_help=True
)
