"""``kansrijk coordinator analyse``: run the signed analysis plan and release every output through the gate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from coordinator.service import client as gate_client
from coordinator.workspace import DEFAULT_PASSPHRASE_ENV, passphrase_from_env_or_prompt
from kansrijk.console import console, progress_bar
from kansrijk.errors import InputError

if TYPE_CHECKING:
    from coordinator.analysis.run import AnalysisReport


_STYLE = {"released": "green", "suppressed": "yellow", "refused": "red", "skipped": "magenta"}


def analyse(
    plan: Annotated[Path, typer.Option("--plan", help="The signed analysis plan (policies/analysis/*.toml).")],
    factors: Annotated[
        Path, typer.Option("--factors", help="The signed factor model (e.g. policies/factors/factor-model.toml).")
    ],
    workspace: Annotated[
        Path | None,
        typer.Argument(help="The coordinator workspace (after `coordinator link`); with --gate-socket, the gate's."),
    ] = None,
    release_policy: Annotated[
        Path | None,
        typer.Option(
            "--release-policy",
            help="The signed release policy the gate runs under (e.g. policies/release/sdc-only.toml); required "
            "without --gate-socket, refused with it (the service runs under its own).",
        ),
    ] = None,
    officer_key: Annotated[
        list[Path] | None,
        typer.Option("--officer-key", help="A trusted privacy officer's public key (repeat for several)."),
    ] = None,
    gate_socket: Annotated[
        Path | None,
        typer.Option(
            "--gate-socket",
            help="Run the plan in the gate service listening on this socket (under its policy and officer keys).",
        ),
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

    With --gate-socket the plan and factor model (and their signatures) are sent to the gate service, which
    runs them on its side under the release policy and officer keys it was started with (docs/deployment.md);
    the output and exit codes are the same. WS may then be left out; when given it must be the gate's.

    The policy files are named explicitly (no defaults relative to the working directory), so the command
    runs the same from any directory.

    Example: kansrijk coordinator analyse ws --plan policies/analysis/rotterdam-groeit.toml
    --factors policies/factors/factor-model.toml --release-policy policies/release/sdc-only.toml
    --officer-key officer.pub
    """
    if gate_socket is None and workspace is None:
        raise InputError("no workspace given", hint="kansrijk coordinator analyse WS --plan … (or --gate-socket)")
    if gate_socket is None and release_policy is None:
        # no default: a path relative to wherever the command happens to run would pick up another policy, or none
        raise InputError(
            "--release-policy is required: the signed release policy the gate releases under",
            hint="pass it, e.g. --release-policy policies/release/sdc-only.toml --officer-key officer.pub",
        )
    with progress_bar("analysing", unit="tree fits") as (progress, task):

        def total(steps: int) -> None:
            progress.update(task, total=steps)

        def advance(steps: int) -> None:
            progress.advance(task, steps)

        if gate_socket is not None:
            report = _through_gate(gate_socket, workspace, plan, factors, release_policy, officer_key, total, advance,
                                   lambda text: progress.update(task, description=text))  # fmt: skip
        else:
            # imported here: the analysis stack (scikit-learn, statsmodels) takes seconds to load, and every
            # other command, `gate status` or `--version`, would pay for it
            from coordinator.analysis.run import run_analysis

            assert workspace is not None
            passphrase = passphrase_from_env_or_prompt(passphrase_env)
            assert release_policy is not None
            report = run_analysis(workspace, plan, factors, release_policy, officer_key or [],
                                  progress_total=total, progress=advance, passphrase=passphrase)  # fmt: skip
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
        detail = line.summary if line.verdict not in ("refused", "skipped") else "; ".join(line.reasons)
        if line.note:
            detail = f"{detail}  [{line.note}]" if detail else line.note
        table.add_row(line.name, f"[{_STYLE.get(line.verdict, 'white')}]{line.verdict}[/]", detail)
    console.print(table)
    counts = ", ".join(f"{n} {v}" for v, n in sorted(report.counts().items()))
    console.print(f"{counts}; plan {report.plan_digest}")


def _through_gate(
    socket_path: Path,
    workspace: Path | None,
    plan: Path,
    factors: Path,
    release_policy: Path | None,
    officer_key: list[Path] | None,
    total: Callable[[int], None],
    advance: Callable[[int], None],
    note: Callable[[str], None],
) -> AnalysisReport:
    """The analysis run by the gate service; refuses options the service decides itself."""
    if release_policy is not None or officer_key:
        raise InputError(
            "--release-policy and --officer-key do not go with --gate-socket: the gate service runs under the release "
            "policy and trusts the officer keys it was started with",
            hint="drop them; `kansrijk gate ping --socket SOCKET` shows the service's policy digest and officers",
        )
    if workspace is not None:
        served = Path(gate_client.ping(socket_path).workspace)
        if served != workspace.resolve():
            raise InputError(
                f"the gate service at {socket_path} serves workspace {served}, not {workspace}",
                hint="leave WS out with --gate-socket, or use the socket of that workspace's gate",
            )
    return gate_client.run_analysis_via_gate(socket_path, plan, factors, progress_total=total, progress=advance,
                                             note=note)  # fmt: skip


__all__ = ["analyse"]
