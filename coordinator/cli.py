"""`kansrijk coordinator`: the secure environment's commands (init, set-registry, ingest, link, status).

Thin commands: parse options, call one library function, render its result with rich. Errors are
``KansrijkError`` subclasses; the root group turns them into a one-line message and their exit code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coordinator import ingest as ingest_mod
from coordinator.analysis.cli import analyse
from coordinator.link import gate_release_hook, link_workspace
from coordinator.report_cli import report_command
from coordinator.status import workspace_status
from coordinator.workspace import (
    DEFAULT_PASSPHRASE_ENV,
    init_workspace,
    install_registry,
    open_workspace,
    passphrase_from_env_or_prompt,
    register_partner,
)
from kansrijk.console import console, err_console, progress_bar
from kansrijk.errors import BundleError
from kansrijk.schema import schema_version as study_schema_version

app = typer.Typer(
    help=(
        "The coordinator's secure environment: verify and ingest sealed bundles, link them on keyed "
        "pseudonyms, build the analysis dataset.\n\n"
        "Example: kansrijk coordinator init ws --registry policies/partners.toml && "
        "kansrijk coordinator ingest ws bundles/*.kbundle && kansrijk coordinator link ws"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

WorkspaceArg = Annotated[Path, typer.Argument(help="The coordinator workspace directory.")]
PassphraseEnv = Annotated[
    str,
    typer.Option(
        "--passphrase-env", help="Environment variable holding the key passphrase (prompted for when it is unset)."
    ),
]


@app.command("init")
def init_command(
    workspace: Annotated[
        Path, typer.Argument(help="Directory to create the workspace in (must not exist or be empty).")
    ],
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Partner registry to install (policies/partners.toml); can be set later."),
    ] = None,
    officer_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--officer-key", help="Privacy officer public key; registries must then be signed by one. Repeatable."
        ),
    ] = None,
    passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
) -> None:
    """Create a coordinator workspace with fresh keys: HPKE, pseudonym and the release gate's signing key.

    All three are protected by one passphrase; the gate's key signs every ledger entry.

    Prints the public key file and fingerprint partners seal their bundles to, and the gate key's fingerprint
    (the privacy officer notes it down to pin it: `kansrijk ledger verify --gate-key`).

    Example: KANSRIJK_PASSPHRASE=... kansrijk coordinator init ws --registry policies/partners.toml
    """
    passphrase = passphrase_from_env_or_prompt(passphrase_env, confirm=True)
    result = init_workspace(workspace, passphrase, registry=registry, officer_keys=officer_key or [])
    console.print(f"workspace created: {result.paths.root}")
    console.print(f"public key for partners: {result.hpke_public_path}")
    console.print(f"public key fingerprint:  {result.hpke_fingerprint}")
    console.print(f"release gate signing key: {result.gate_key_fingerprint} (WS/keys/gate-signing.pub)")
    if officer_key:
        console.print(f"trusted privacy officers: {len(officer_key)} (registries must be signed by one)")
    if result.registry_digest:
        console.print(f"partner registry installed ({result.registry_digest})")
    else:
        console.print("no partner registry yet: run `kansrijk coordinator set-registry WS FILE` before ingest")


@app.command("set-registry")
def set_registry_command(
    workspace: WorkspaceArg,
    registry: Annotated[Path, typer.Argument(help="The partner registry file (TOML) to install.")],
) -> None:
    """Validate a partner registry and install it in the workspace (replacing the previous one).

    Example: kansrijk coordinator set-registry ws policies/partners.toml
    """
    digest = install_registry(open_workspace(workspace), registry)
    console.print(f"partner registry installed ({digest})")


@app.command("register-partner")
def register_partner_command(
    registry: Annotated[Path, typer.Argument(help="Registry file to create or update (TOML).")],
    partner: Annotated[str, typer.Option("--partner", help="Partner name, as the study file names it.")],
    public_key: Annotated[
        Path, typer.Option("--public-key", help="The partner's Ed25519 public key file (from `kansrijk node keygen`).")
    ],
    policy_digest: Annotated[
        list[str], typer.Option("--policy-digest", help="Approved sharing-policy digest (sha256:...); repeatable.")
    ],
    epoch: Annotated[int, typer.Option("--epoch", help="Key epoch (1, then +1 per rotation).")] = 1,
    schema_version: Annotated[
        list[str] | None, typer.Option("--schema-version", help="Allowed schema version; repeatable.")
    ] = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="List the key as revoked instead of active.")] = False,
) -> None:
    """Add (or revoke) a partner signing key in a registry file, a helper for the privacy officer.

    Example: kansrijk coordinator register-partner p.toml --partner NAME --public-key NAME.pub --policy-digest sha256:…
    """
    fp = register_partner(
        registry,
        partner,
        public_key,
        epoch=epoch,
        policy_digests=policy_digest,
        schema_versions=schema_version or [study_schema_version()],
        revoked=revoke,
    )
    console.print(f"{registry}: partner {partner} key {fp} (epoch {epoch}) {'revoked' if revoke else 'active'}")


@app.command("ingest")
def ingest_command(
    workspace: WorkspaceArg,
    bundles: Annotated[list[Path], typer.Argument(help="Sealed bundle files, in the order the partners made them.")],
    registry: Annotated[
        Path | None,
        typer.Option("--registry", help="Verify against this registry instead of the workspace's installed one."),
    ] = None,
    passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="JSON Lines: one object per bundle, ingested or refused, as it is processed."),
    ] = False,
) -> None:
    """Verify, decrypt, re-pseudonymise and store each bundle; all-or-nothing per bundle.

    Each bundle is reported on its own line. A refused bundle changes nothing.

    Exit code: that of the first refusal, 0 when all were ingested.

    Example: kansrijk coordinator ingest ws out/PARTNER_A/*.kbundle out/PARTNER_B/*.kbundle
    """
    passphrase = passphrase_from_env_or_prompt(passphrase_env)
    session = ingest_mod.IngestSession.open(workspace, passphrase, registry=registry)
    first_failure: BundleError | None = None
    with progress_bar("ingesting bundles", total=len(bundles)) as (progress, task):
        for path in bundles:
            outcome = session.ingest(path)
            if as_json:
                typer.echo(json.dumps(_ingest_line(outcome)))
            if outcome.error is None and not as_json:
                empty = " (declared empty by the partner)" if outcome.declared_empty else ""
                console.print(
                    f"[green]ingested[/] {path.name}: {outcome.partner} {outcome.period}, {outcome.rows} rows{empty} "
                    f"→ {outcome.table}"
                )
            elif outcome.error is not None:
                first_failure = first_failure or outcome.error
                err_console.print(
                    f"[red]refused[/] {path.name}: {type(outcome.error).__name__} "
                    f"(exit {outcome.error.exit_code}): {outcome.error}"
                )
            progress.advance(task)
    if first_failure is not None:
        raise typer.Exit(first_failure.exit_code)


def _ingest_line(outcome: ingest_mod.IngestOutcome) -> dict[str, object]:
    """One bundle's outcome as ``ingest --json`` prints it (one line each)."""
    if outcome.error is not None:
        return {
            "bundle": str(outcome.source),
            "ingested": False,
            "error": type(outcome.error).__name__,
            "exit_code": outcome.error.exit_code,
            "message": outcome.error.message,
            "hint": outcome.error.hint,
        }
    return {
        "bundle": str(outcome.source),
        "ingested": True,
        "partner": outcome.partner,
        "year": int(outcome.period),
        "extract_id": outcome.extract_id,
        "bundle_digest": outcome.bundle_digest,
        "rows": outcome.rows,
        "declared_empty": outcome.declared_empty,
        "table": str(outcome.table),
    }


@app.command("link")
def link_command(
    workspace: WorkspaceArg,
    year: Annotated[
        int | None, typer.Option("--year", help="Link only this reference year (default: all ingested).")
    ] = None,
    release_policy: Annotated[
        Path | None,
        typer.Option("--release-policy", help="Signed release policy: send the linkage report through the gate."),
    ] = None,
    officer_key: Annotated[
        list[Path] | None,
        typer.Option("--officer-key", help="Privacy officer public key that signed the policy; repeatable."),
    ] = None,
    passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print each year's linkage report (counts only) as JSON, for scripts.")
    ] = False,
) -> None:
    """Link the partners' tables on the coordinator pseudonym into one analysis dataset per year.

    Writes WS/dataset/<year>.parquet, and WS/dataset/longitudinal.parquet when several years are ingested.

    The linkage report (counts only) goes to WS/internal/ and to the release gate.

    With --release-policy the gate signs its ledger entries with the workspace's gate key (passphrase from
    --passphrase-env, prompted for when it is unset).

    Example: kansrijk coordinator link ws --release-policy policies/release/sdc-only.toml --officer-key po.pub
    """
    hook = None
    if release_policy:
        passphrase = passphrase_from_env_or_prompt(passphrase_env)
        hook = gate_release_hook(release_policy, officer_key or [], passphrase=passphrase)
    with progress_bar("linking") as (progress, task):
        result = link_workspace(
            workspace,
            year=year,
            release=hook,
            progress=lambda msg: progress.update(task, description=msg),
        )
    if as_json:
        doc = {
            "years": [
                {
                    **linked.report.as_dict(),
                    "dataset": str(linked.dataset_path),
                    "report": str(linked.report_path),
                    "released": list(linked.released),
                    "headline": linked.report.headline(),
                }
                for linked in result.years
            ],
            "longitudinal": str(result.longitudinal_path) if result.longitudinal_path else None,
        }
        typer.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for linked in result.years:
        r = linked.report
        table = Table(title=f"linkage {r.headline()}")
        for column in ("partner", "rows", "only here"):
            table.add_column(column, justify="right" if column != "partner" else "left")
        for p in r.partners:
            table.add_row(p, str(r.rows_per_partner[p]), str(r.only_at_partner[p]))
        console.print(table)
        if len(r.partners) < 2:
            err_console.print(
                f"[yellow]warning:[/] {r.year}: only {', '.join(r.partners)} delivered this year; the dataset holds "
                f"their persons unlinked (the analysis skips outcomes that need the other partners' variables)"
            )
        for attr, c in r.conflicts.items():
            console.print(
                f"{attr}: {c.conflicts} conflicts ({c.majority} by majority, {c.tiebreak} by the tie-break partner, "
                f"{c.unresolved} unresolved → excluded)"
            )
        console.print(f"dataset: {linked.dataset_path}")
        console.print(f"report (internal): {linked.report_path}")
        for line in linked.released:
            console.print(f"release gate: {line}")
        if release_policy is None:
            console.print("linkage report kept internal (pass --release-policy to send it through the gate)")
    if result.longitudinal_path:
        console.print(f"longitudinal view: {result.longitudinal_path}")


@app.command("status")
def status_command(
    workspace: WorkspaceArg,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON (for scripts).")] = False,
) -> None:
    """Show what was ingested per partner and period, and the link runs. No person-level data.

    Example: kansrijk coordinator status ws --json
    """
    status = workspace_status(workspace)
    if as_json:
        typer.echo(json.dumps(status.as_dict(), indent=2))
        return
    console.print(f"workspace {status.root} (coordinator key {status.hpke_fingerprint})")
    if not status.registry_installed:
        console.print("[yellow]no partner registry installed[/]")
    elif status.trusted_officers:
        console.print(f"partner registry signed; {status.trusted_officers} trusted privacy officer key(s)")
    else:
        console.print("partner registry installed without signature (no trusted privacy officers)")
    table = Table(title="ingested bundles")
    for column in ("partner", "period", "extract id", "bundle digest", "epoch", "rows", "quarantined", "ingested"):
        table.add_column(column, overflow="fold")  # on a narrow terminal a digest wraps in its cell, never cut
    for b in status.bundles:
        table.add_row(
            b.partner,
            b.period,
            b.extract_id,
            b.bundle_digest,
            str(b.key_epoch),
            str(b.row_count),
            str(b.quarantine_count),
            b.ingested_at,
        )
    console.print(table)
    if status.link_runs:
        runs = Table(title="link runs")
        for column in ("year", "persons in dataset", "excluded", "dataset", "linked"):
            runs.add_column(column)
        for run in status.link_runs:
            runs.add_row(str(run.year), str(run.persons), str(run.excluded), run.dataset_path, run.linked_at)
        console.print(runs)


app.command("analyse")(analyse)
app.command("report")(report_command)
