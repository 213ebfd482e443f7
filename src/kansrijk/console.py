"""The terminal surface every command shares: one stderr console and one progress-bar shape.

Progress and errors go to stderr so that stdout carries only a command's result (tables, JSON).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from fractions import Fraction

import click
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from kansrijk.errors import KeyMaterialError

err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@contextlib.contextmanager
def progress_bar(description: str, *, total: int | None = None, unit: str = "") -> Iterator[tuple[Progress, TaskID]]:
    """A transient progress bar on stderr; yields the ``Progress`` and its one task.

    ``total=None`` shows a pulsing bar until the caller sets a total; ``unit`` follows the count (``"tree fits"``).
    """
    count = "{task.completed}/{task.total}" + (f" {unit}" if unit else "")
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn(count),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        yield progress, progress.add_task(description, total=total)

# stdout: a command's result. Piped or redirected, it is read by scripts and kept in files, so no line is wrapped
# and no table cell is cut there (a digest or a release name must survive whole): the width is then practically
# unbounded. On a terminal, long lines are not hard-wrapped either (soft_wrap); tables fit the window.
PIPE_WIDTH = 100_000
console = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else PIPE_WIDTH)


def ask_passphrase(env: str, *, what: str, confirm: bool = False) -> str:
    """The passphrase from environment variable ``env``; else typed at a hidden prompt (on stderr).

    ``KeyMaterialError`` (exit 6) when the variable is unset and nothing can be typed: no terminal (a cron job, a
    script with stdin closed) or input that ended. Never the bare "Aborted." of an unanswered prompt."""
    value = os.environ.get(env)
    if value:
        return value
    # Not a terminal on stdin (a pipe, a file, a closed stdin): read a line from it as it is, without the
    # terminal-echo dance that only warns there.
    hidden = sys.stdin is not None and sys.stdin.isatty()
    try:
        return str(typer.prompt(f"Passphrase for {what}", hide_input=hidden, confirmation_prompt=confirm, err=True))
    except (typer.Abort, click.exceptions.Abort):
        raise KeyMaterialError(
            f"no passphrase for {what}: environment variable {env} is not set and there is no terminal to type it on",
            hint=f"export {env}=... before running the command (or name another variable with --passphrase-env)",
        ) from None


def fmt_epsilon(value: Fraction | str | int | None) -> str:
    """An exact privacy quantity as every command shows it to a person: a decimal where it is exact (``3.4``,
    ``0.1``), else the fraction with its value (``1/3 (≈ 0.333333)``). JSON output keeps the exact fraction."""
    if value is None:
        return "unknown"
    f = Fraction(str(value))
    if f.denominator == 1:
        return str(f.numerator)
    decimal = f"{float(f):.6f}".rstrip("0").rstrip(".")
    return decimal if Fraction(decimal) == f else f"{f} (≈ {decimal})"
