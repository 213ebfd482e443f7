"""`kansrijk gate`: run the release gate as its own process, ask it, and harden a workspace for it.

Thin commands: parse options, call one function of ``coordinator.service``, render its result.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from coordinator.service import client
from coordinator.service.harden import harden_workspace
from coordinator.service.server import ServeOptions, parse_mode, serve_gate
from kansrijk.console import console, fmt_epsilon
from kansrijk.gate.cli import print_entries

app = typer.Typer(
    help=(
        "The release gate as its own process: `serve` it under the gate's OS user, ask it over its local socket "
        "(`ping`, `status`, `ledger`; `coordinator analyse --gate-socket`), `harden` a workspace for it.\n\n"
        "Example: kansrijk gate serve ws --release-policy release.toml --officer-key officer.pub "
        "--socket /run/kansrijk-gate/gate.sock"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)

SOCKET_ENV = "KANSRIJK_GATE_SOCKET"
SocketOption = Annotated[
    Path, typer.Option("--socket", envvar=SOCKET_ENV, help="The gate service's socket (or $KANSRIJK_GATE_SOCKET).")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the answer as JSON (for scripts).")]


@app.command("serve")
def serve_command(
    workspace: Annotated[Path, typer.Argument(help="The coordinator workspace the gate owns.")],
    release_policy: Annotated[
        Path, typer.Option("--release-policy", help="The signed release policy every release runs under.")
    ],
    officer_key: Annotated[
        list[Path], typer.Option("--officer-key", help="A trusted privacy officer's public key (repeatable).")
    ],
    socket_path: Annotated[Path, typer.Option("--socket", help="Where to listen (an AF_UNIX socket path).")],
    socket_mode: Annotated[
        str, typer.Option("--socket-mode", help="The socket's permission mode (octal; others never connect).")
    ] = "0660",
    socket_group: Annotated[
        str | None, typer.Option("--socket-group", help="Give the socket to this group (the operators).")
    ] = None,
    read_timeout: Annotated[
        float, typer.Option("--read-timeout", min=0.1, help="Seconds a client has to send its whole request.")
    ] = 10.0,
    max_clients: Annotated[
        int, typer.Option("--max-clients", min=1, help="Connections served at once; more are answered busy.")
    ] = 8,
) -> None:
    """Serve the release gate on a local socket until SIGTERM or SIGINT.

    Run it as the gate's own OS user (docs/deployment.md): the only user that can read the linked dataset, the
    keys and the ledger, and write WS/released/. Verifies the workspace, the officer keys and the release
    policy's signature first; refuses a socket path where a service listens already (a stale socket is
    replaced). Logs one line per request with the peer's uid and pid, never data. On SIGTERM it stops taking
    connections, stops an analysis in progress between two releases, and removes the socket.

    Example: kansrijk gate serve /srv/kansrijk/ws --release-policy /etc/kansrijk/release.toml
    --officer-key /etc/kansrijk/officer.pub --socket /run/kansrijk-gate/gate.sock --socket-group kansrijk-operators
    """
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s kansrijk-gate %(levelname)s %(message)s"
    )
    options = ServeOptions(
        workspace=workspace,
        release_policy=release_policy,
        officer_keys=tuple(officer_key),
        socket_path=socket_path.absolute(),
        socket_mode=parse_mode(socket_mode),
        socket_group=socket_group,
        read_timeout=read_timeout,
        max_clients=max_clients,
    )
    serve_gate(options)


@app.command("ping")
def ping_command(socket_path: SocketOption, as_json: JsonOption = False) -> None:
    """Ask the gate service who it is.

    Prints its version and protocol, the workspace it serves, the digest of the release policy it runs under,
    the officer keys it trusts, and whether the workspace is hardened (any private path others can reach).

    Example: kansrijk gate ping --socket /run/kansrijk-gate/gate.sock
    """
    info = client.ping(socket_path)
    if as_json:
        typer.echo(json.dumps(info.model_dump(mode="json"), indent=2))
        return
    console.print(f"kansrijk gate {info.version} (protocol {info.protocol}) serving {info.workspace}")
    console.print(f"release policy {info.policy_digest} (dataset {info.dataset}); officers: {', '.join(info.officers)}")
    _print_exposed(info.exposed)


def _print_exposed(exposed: list[str]) -> None:
    if not exposed:
        console.print("workspace hardened: only the gate's user reaches the data, keys and ledger")
    for problem in exposed:
        console.print(f"[yellow]not hardened:[/] {problem} (kansrijk gate harden; docs/deployment.md)")


@app.command("status")
def status_command(socket_path: SocketOption, as_json: JsonOption = False) -> None:
    """Ask the gate service what its workspace holds, the budget left and the ledger head.

    Shows what `coordinator status` shows (bundles, link runs; no person-level data), the release policy's DP
    budget spent and left, the ledger's head entry, and whether the workspace is hardened.

    Example: kansrijk gate status --socket /run/kansrijk-gate/gate.sock --json
    """
    status = client.status(socket_path)
    if as_json:
        typer.echo(json.dumps(status.model_dump(mode="json"), indent=2))
        return
    console.print(f"workspace {status.workspace} (coordinator key {status.hpke_fingerprint})")
    if not status.registry_installed:
        console.print("[yellow]no partner registry installed[/]")
    table = Table(title="ingested bundles")
    for column in ("partner", "period", "extract id", "bundle digest", "epoch", "rows", "quarantined", "ingested"):
        table.add_column(column, overflow="fold")  # a digest wraps in its cell on a narrow terminal, never cut
    for b in status.bundles:
        table.add_row(b.partner, b.period, b.extract_id, b.bundle_digest, str(b.key_epoch),
                      str(b.row_count), str(b.quarantine_count), b.ingested_at)  # fmt: skip
    console.print(table)
    if status.link_runs:
        runs = Table(title="link runs")
        for column in ("year", "persons in dataset", "excluded", "dataset", "linked"):
            runs.add_column(column)
        for r in status.link_runs:
            runs.add_row(str(r.year), str(r.persons), str(r.excluded), r.dataset, r.linked_at)
        console.print(runs)
    console.print(f"release policy {status.policy_digest}")
    if status.budget is not None:
        b = status.budget
        console.print(
            f"budget of {b.dataset}: ε spent {fmt_epsilon(b.epsilon_spent)} of {fmt_epsilon(b.epsilon_total)}, "
            f"left {fmt_epsilon(b.epsilon_left)}"
        )
    else:
        console.print("no DP budget in the release policy")
    if status.ledger is not None:
        h = status.ledger
        console.print(f"ledger: {h.entries} entries, head {h.entry_id} {h.entry_hash}")
    else:
        console.print("ledger: nothing released yet")
    _print_exposed(status.exposed)


@app.command("ledger")
def ledger_command(socket_path: SocketOption, as_json: JsonOption = False) -> None:
    """List every ledger entry through the gate service, as `kansrijk ledger show` does.

    Example: kansrijk gate ledger --socket /run/kansrijk-gate/gate.sock
    """
    result = client.ledger(socket_path)
    print_entries([e.model_dump(mode="json") for e in result.entries], as_json=as_json)


@app.command("harden")
def harden_command(
    workspace: Annotated[Path, typer.Argument(help="The coordinator workspace to give to the gate user.")],
    gate_user: Annotated[str, typer.Option("--gate-user", help="The gate service's OS user (owns everything).")],
    operator_group: Annotated[
        str, typer.Option("--operator-group", help="The operators' group (reads internal/ and the socket).")
    ],
    socket_dir: Annotated[
        Path | None,
        typer.Option("--socket-dir", help="Also create/own the socket directory (gate user, operator group, 2750)."),
    ] = None,
) -> None:
    """Give a workspace to the gate's OS user with the modes of a deployment (run as root).

    Afterwards only the gate user reads the dataset, tables, keys, ledger and state database and writes
    released/; operators read released/ and (as the operator group) internal/. Run it with the service and every
    other writer stopped; the modes table is in docs/deployment.md.

    Refuses a workspace that holds symbolic links, hard links or special files (nothing changed then).

    Example: sudo kansrijk gate harden /srv/kansrijk/ws --gate-user kansrijk-gate --operator-group
    kansrijk-operators --socket-dir /run/kansrijk-gate
    """
    report = harden_workspace(workspace, gate_user=gate_user, operator_group=operator_group, socket_dir=socket_dir)
    table = Table(title=f"{report.workspace} now belongs to {report.gate_user}")
    table.add_column("part")
    table.add_column("paths", justify="right")
    for name, count in report.counts.items():
        table.add_row(name, str(count))
    console.print(table)
    if report.socket_dir is not None:
        console.print(f"socket directory {report.socket_dir}: {report.gate_user}:{report.operator_group} 2750")


__all__ = ["app"]
