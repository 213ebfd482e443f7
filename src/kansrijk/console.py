"""The terminal surface every command shares: one stderr console and one progress-bar shape.

Progress and errors go to stderr so that stdout carries only a command's result (tables, JSON).
"""

from __future__ import annotations

import contextlib
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
