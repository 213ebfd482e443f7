"""`kansrijk coordinator report`: the HTML report of a workspace's released outputs (thin command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coordinator.report import build_report, fmt_fraction
from kansrijk.console import console, err_console


def report_command(
    workspace: Annotated[Path, typer.Argument(help="The coordinator workspace directory.")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write (outside WS/released/).")] = Path(
        "report.html"
    ),
    policy: Annotated[
        Path | None,
        typer.Option(
            "--policy", help="The release policy the gate ran under; adds the budget total, so ε left is shown."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write one self-contained HTML report built only from WS/released/ and the published ledger head.

    Sections: linkage, outcome base rates, model comparison (all variables vs factor model, with intervals; DP
    model vs non-private tree), feature importances, released trees, differentially private models (noisy
    metrics, importances, ε per step), the WOZ relation, factor coverage, refused outcomes, and privacy (every
    number's rule, ε spent and left, the ledger head hash). Suppressed cells stay suppressed; noisy (DP) numbers
    are marked ≈.
    The file opens without a network: inline CSS and SVG plots, no scripts.

    Example: kansrijk coordinator report ws --out report.html --policy policies/release/dp-models.toml
    """
    with err_console.status("building the report"):
        result = build_report(workspace, out, release_policy=policy, force=force)
    console.print(
        f"report written: {result.path} ({result.releases} released outputs, {result.figures} plots, "
        f"{result.suppressed} with suppressed cells, {result.noisy} noisy)"
    )
    console.print(
        f"ε spent {fmt_fraction(result.budget.spent)}, left {fmt_fraction(result.budget.left)}; "
        f"ledger head entry {result.ledger_head.seq} {result.ledger_head.entry_hash}"
    )
