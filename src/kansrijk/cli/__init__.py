"""The ``kansrijk`` command: the composition root that mounts each role's command group.

This module is the only part of ``kansrijk`` that imports the role packages (``node_agent``, ``coordinator``);
the import-linter contracts in pyproject.toml keep the rest of the core free of them. Commands are thin: they
parse options, call one library function and render its result. Every ``KansrijkError`` becomes a one-line
message on stderr and its documented exit code, never a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import click
import typer
from rich.text import Text
from typer.core import TyperGroup, TyperOption

from kansrijk import __version__
from kansrijk.console import err_console
from kansrijk.errors import KansrijkError


def _flags_take_no_value() -> None:
    """A flag (``--json``, ``--force``, ``--help``) takes no value, so ``--help`` must not show a type next to it
    (typer's rich help writes ``<bool>``, which reads as if the option wanted one). Every other option keeps its
    type. Installed once, here in the composition root, for every command."""
    original = TyperOption.display_type_rich
    if getattr(original, "_kansrijk_flags", False):
        return

    def display_type_rich(self: TyperOption, ctx: click.Context) -> str | None:
        if self.is_flag and self.metavar is None:
            return None
        return original(self, ctx)

    display_type_rich._kansrijk_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_take_no_value()


class _KansrijkGroup(TyperGroup):
    """Root group that turns a ``KansrijkError`` from any subcommand into a message and its exit code."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except KansrijkError as exc:
            err_console.print(Text.assemble(("error: ", "bold red"), str(exc)))
            ctx.exit(exc.exit_code)


app = typer.Typer(
    name="kansrijk",
    cls=_KansrijkGroup,
    help=(
        "Privacy-first federated analysis of linked youth data.\n\n"
        "Partners run `kansrijk node` on their own extract; the coordinator runs `kansrijk coordinator` and the "
        "release gate as its own process (`kansrijk gate serve`); privacy officers use `kansrijk policy` and "
        "`kansrijk ledger`. `kansrijk demo` runs it all on the synthetic city."
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kansrijk {__version__}")
        raise typer.Exit()


def _activate_study(value: Path | None) -> None:
    """Activate the study named by ``--study`` (or ``$KANSRIJK_STUDY``) for this process and the processes it
    starts (a gate service reads the same study). A missing or malformed file is an error here, before any
    command runs."""
    if value is None:
        return
    from kansrijk.study import STUDY_ENV, activate, load_study, study_path

    study = load_study(study_path(value))
    activate(study)
    os.environ[STUDY_ENV] = str(study.path)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    study: Annotated[
        Path | None,
        typer.Option(
            "--study",
            envvar="KANSRIJK_STUDY",
            help="The study file (or its directory) every command works on; default: the shipped study.",
        ),
    ] = None,
) -> None:
    """Privacy-first federated analysis of linked youth data."""
    _activate_study(study)


def _mount() -> None:
    """Mount every command group, in the order the data flows. A group without commands is not registered."""
    from coordinator.cli import app as coordinator_app
    from coordinator.query_cli import app as query_app
    from coordinator.service.cli import app as gate_service_app
    from kansrijk.cli.demo import demo_command
    from kansrijk.gate.cli import ledger_app, policy_app, review_app
    from kansrijk.synth.cli import app as synth_app
    from node_agent.cli import app as node_app

    app.add_typer(synth_app, name="synth")
    app.add_typer(node_app, name="node")
    app.add_typer(coordinator_app, name="coordinator")
    app.add_typer(gate_service_app, name="gate")
    app.add_typer(policy_app, name="policy")
    app.add_typer(ledger_app, name="ledger")
    app.add_typer(review_app, name="review")
    app.add_typer(query_app, name="query")
    app.command("demo")(demo_command)


_mount()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="kansrijk")
