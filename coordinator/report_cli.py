"""`kansrijk coordinator report`: the HTML report of a workspace's released outputs (thin command)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from coordinator.report import build_report, fmt_fraction
from kansrijk.console import console, err_console

SOCKET_ENV = "KANSRIJK_GATE_SOCKET"


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
    ledger: Annotated[
        Path | None,
        typer.Option(
            "--ledger",
            help="The ledger entries saved with `kansrijk gate ledger --json > FILE` (or `ledger show WS --json`); "
            "shows each refusal's rules.",
        ),
    ] = None,
    gate_socket: Annotated[
        Path | None,
        typer.Option(
            "--gate-socket",
            envvar=SOCKET_ENV,
            help="Ask the gate service on this socket for the ledger entries (or $KANSRIJK_GATE_SOCKET).",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write one self-contained HTML report built only from WS/released/ and the gate's ledger entries.

    Sections: findings in words per outcome, linkage, outcome base rates, model comparison (against chance, all
    variables vs factor model with intervals, DP model vs non-private tree), feature importances, decision trees
    (each drawn and written out as rules), reference years side by side (when there are several), differentially
    private models, the association the plan tests, factor coverage (proxies under their factor), refusals and
    suppressions, and privacy (every ledger entry with its rules, ε spent and left, the ledger head hash).
    Suppressed cells stay suppressed; noisy (DP) numbers are marked ≈.
    Refused releases have no file in WS/released/: their ledger entries come from --ledger, from the gate
    service (--gate-socket), or from WS/ledger.sqlite when this user can read it; without any, the report lists
    the entry numbers it cannot explain. The file opens without a network: inline CSS and SVG, no scripts.

    Example: kansrijk coordinator report ws --out report.html --policy policies/release/dp-models.toml
    """
    with err_console.status("building the report"):
        result = build_report(workspace, out, release_policy=policy, ledger=ledger, gate_socket=gate_socket,
                              force=force)  # fmt: skip
    refused = "refusals not known" if result.refused is None else f"{result.refused} refused"
    console.print(
        f"report written: {result.path} ({result.releases} released outputs, {result.trees} trees drawn, "
        f"{result.figures} plots, {result.suppressed} with withheld values, {refused}, {result.noisy} noisy)"
    )
    console.print(f"ledger entries from: {result.ledger_source}")
    console.print(
        f"ε spent {fmt_fraction(result.budget.spent)}, left {fmt_fraction(result.budget.left)}; "
        f"ledger head entry {result.ledger_head.seq} {result.ledger_head.entry_hash}"
    )
