"""``kansrijk coordinator analyse``: run the signed analysis plan and release every output through the gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from coordinator.analysis.run import run_analysis
from coordinator.workspace import DEFAULT_PASSPHRASE_ENV, passphrase_from_env_or_prompt
from kansrijk.console import progress_bar

console = Console(highlight=False)

DEFAULT_FACTORS = Path("policies/factors/factor-model.toml")
DEFAULT_RELEASE = Path("policies/release/sdc-only.toml")
_STYLE = {"released": "green", "suppressed": "yellow", "refused": "red"}


def analyse(
    workspace: Annotated[Path, typer.Argument(help="The coordinator workspace (after `coordinator link`).")],
    plan: Annotated[Path, typer.Option("--plan", help="The signed analysis plan (policies/analysis/*.toml).")],
    factors: Annotated[Path, typer.Option("--factors", help="The signed factor model.")] = DEFAULT_FACTORS,
    release_policy: Annotated[
        Path, typer.Option("--release-policy", help="The signed release policy.")
    ] = DEFAULT_RELEASE,
    officer_key: Annotated[
        list[Path] | None,
        typer.Option("--officer-key", help="A trusted privacy officer's public key (repeat for several)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON instead of a table.")] = False,
    passphrase_env: Annotated[
        str,
        typer.Option(
            "--passphrase-env",
            help="Environment variable holding the workspace key passphrase, for the gate's signing key "
            "(prompted for when it is unset).",
        ),
    ] = DEFAULT_PASSPHRASE_ENV,
) -> None:
    """Train and explain decision trees per outcome and feature set, compare all variables with the factor
    model, test the WOZ association, and release every number through the release gate.

    Verifies the signatures of the plan, the factor model and the release policy first. Outputs land in
    WS/released/ with a ledger entry each; the summary shows only what the gate released.

    Example: kansrijk coordinator analyse ws --plan policies/analysis/rotterdam-groeit.toml
    --officer-key officer.pub
    """
    passphrase = passphrase_from_env_or_prompt(passphrase_env)
    with progress_bar("analysing", unit="tree fits") as (progress, task):
        report = run_analysis(
            workspace,
            plan,
            factors,
            release_policy,
            officer_key or [],
            progress_total=lambda total: progress.update(task, total=total),
            progress=lambda n: progress.advance(task, n),
            passphrase=passphrase,
        )
    if as_json:
        doc = {
            "plan_digest": report.plan_digest,
            "factors_digest": report.factors_digest,
            "seconds": round(report.seconds, 2),
            "model_fits": report.model_fits,
            "verdicts": report.counts(),
            "releases": [line.to_json() for line in report.lines],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    table = Table(title=f"analysis releases ({report.model_fits} tree fits, {report.seconds:.1f} s)")
    for column in ("release", "verdict", "released numbers / reason"):
        table.add_column(column, overflow="fold")
    for line in report.lines:
        detail = line.summary if line.verdict != "refused" else "; ".join(line.reasons)
        if line.note:
            detail = f"{detail}  [{line.note}]" if detail else line.note
        table.add_row(line.name, f"[{_STYLE.get(line.verdict, 'white')}]{line.verdict}[/]", detail)
    console.print(table)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(report.counts().items()))
    console.print(f"{counts}; plan {report.plan_digest}")


__all__ = ["analyse"]
