"""The terminal surface every command shares: one stderr console and one progress-bar shape.

Progress and errors go to stderr so that stdout carries only a command's result (tables, JSON).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

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
