"""``kansrijk query count|mean|sum|quantile|histogram|spec``: ad-hoc questions released through the gate.

Thin commands: parse the options into a spec (``coordinator.query``), hand it to the gate, print what the gate
released (suppressed cells show no number) or why it refused. A refusal exits with code 26.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from coordinator.query import query_spec, spec_from_file
from coordinator.workspace import DEFAULT_PASSPHRASE_ENV, passphrase_from_env_or_prompt
from kansrijk.console import console, fmt_epsilon
from kansrijk.errors import GateError, InputError
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import ReleaseSpec, spec_to_json

app = typer.Typer(
    help="Ask the release gate an ad-hoc question (counts, means, sums, quantiles, histograms); the gate computes "
    "and checks every number.",
    no_args_is_help=True,
)
REQUESTED_BY = "coordinator"


class ReleaseRefused(GateError):
    """The gate refused the query; its reasons are printed and recorded in the ledger."""

    exit_code = 26


Workspace = Annotated[
    Path | None,
    typer.Argument(help="The coordinator workspace (the gate reads its linked dataset); omit with --gate-socket."),
]
Name = Annotated[str, typer.Option("--name", help="Release name: the file under released/ (unique).")]
Year = Annotated[list[int], typer.Option("--year", help="Reference year (repeat to pool several years).")]
Where = Annotated[
    list[str] | None,
    typer.Option("--where", help="Population condition, e.g. 'age_years <= 12' or 'level in A,B' (repeat)."),
]
By = Annotated[list[str] | None, typer.Option("--by", help="Grouping variable (repeat for a crosstab).")]
Policy = Annotated[Path | None, typer.Option("--release-policy", help="The signed release policy (in-process).")]
Socket = Annotated[
    Path | None,
    typer.Option(
        "--gate-socket", envvar="KANSRIJK_GATE_SOCKET", help="Ask the gate service on this socket (deployed)."
    ),
]
Officer = Annotated[list[Path] | None, typer.Option("--officer-key", help="A trusted privacy officer's public key.")]
TableOpt = Annotated[str, typer.Option("--table", help="'linked' (the dataset) or 'linkage' (linkage flags).")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the gate's release document as JSON.")]
Requester = Annotated[str, typer.Option("--requested-by", help="Who asks (must be in the policy's allow-list).")]
PassphraseEnv = Annotated[
    str,
    typer.Option(
        "--passphrase-env", help="Environment variable holding the workspace key passphrase (the gate's signing key)."
    ),
]


@dataclass(frozen=True)
class _Answer:
    outcome: str
    entry: str
    epsilon: str
    reasons: tuple[str, ...]
    document: dict[str, Any]


def _ask(
    workspace: Path | None,
    spec: ReleaseSpec,
    policy: Path | None,
    officer_key: list[Path] | None,
    requester: str,
    passphrase_env: str,
    gate_socket: Path | None,
) -> _Answer:
    """The gate's answer: through the gate service's socket (deployed), or from a gate opened in this process."""
    if gate_socket is not None:
        if policy is not None or officer_key:
            raise InputError(
                "--release-policy and --officer-key are the gate service's own (given at 'kansrijk gate serve'); "
                "leave them out with --gate-socket"
            )
        from coordinator.service import client as gate_client

        r = gate_client.query(gate_socket, spec_to_json(spec), requested_by=requester)
        return _Answer(r.outcome, r.entry, r.epsilon, tuple(r.reasons), r.document or {})
    if workspace is None or policy is None:
        raise InputError("give the workspace and --release-policy (or --gate-socket to ask the gate service)")
    passphrase = passphrase_from_env_or_prompt(passphrase_env)
    with Gate.open(workspace, policy, list(officer_key or []), passphrase=passphrase) as gate:
        result = gate.release(spec, requested_by=requester)
    document = dict(getattr(result, "document", {}) or {})
    return _Answer(result.outcome, result.entry_id, str(result.epsilon), tuple(result.reasons), document)


def _release(
    workspace: Path | None,
    spec: ReleaseSpec,
    policy: Path | None,
    officer_key: list[Path] | None,
    requester: str,
    as_json: bool,
    passphrase_env: str,
    gate_socket: Path | None = None,
) -> None:
    answer = _ask(workspace, spec, policy, officer_key, requester, passphrase_env, gate_socket)
    document = answer.document
    if as_json:
        console.print_json(json.dumps(document or {"name": spec.name, "outcome": "refused", "reasons": answer.reasons}))
    if answer.outcome == "refused":
        raise ReleaseRefused(
            f"{spec.name}: refused by the gate ({answer.entry}): " + "; ".join(answer.reasons),
            hint="coarsen the grouping, widen the population, or use the policy's public grids",
        )
    if as_json:
        return
    values = document.get("values", {})
    head = f"{spec.name}: {answer.outcome} ({answer.entry}, ε {fmt_epsilon(answer.epsilon)})"
    console.print(f"{head} — {spec.population_label()}", markup=False)
    if "rows" in values:
        table = Table(*[str(c) for c in values["columns"]])
        for row in values["rows"]:
            table.add_row(*["—" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v) for v in row])
        console.print(table)
    for reason in answer.reasons:
        console.print(f"  note: {reason}", markup=False)


def _command(kind: str, doc: str):
    def command(
        name: Name,
        year: Year,
        workspace: Workspace = None,
        release_policy: Policy = None,
        gate_socket: Socket = None,
        where: Where = None,
        by: By = None,
        value: Annotated[
            str | None, typer.Option("--value", help="The value variable (mean, sum, quantile, histogram).")
        ] = None,
        level: Annotated[
            list[float] | None, typer.Option("--level", help="Quantile level from the policy's grid.")
        ] = None,
        officer_key: Officer = None,
        table: TableOpt = "linked",
        requested_by: Requester = REQUESTED_BY,
        as_json: AsJson = False,
        passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
    ) -> None:
        spec = query_spec(
            kind, name=name, years=year, where=where or (), by=by or (), value=value, levels=level or (), table=table
        )
        _release(workspace, spec, release_policy, officer_key, requested_by, as_json, passphrase_env, gate_socket)

    command.__doc__ = doc
    return command


app.command("count")(
    _command(
        "count",
        """Count persons per group.

    Example: kansrijk query count ws --name girls_by_buurt --year 2023 --where 'sex == F' --by AREA_CODE
    --release-policy policies/release/sdc-only.toml --officer-key officer.pub""",
    )
)
app.command("mean")(
    _command(
        "mean",
        """Mean of a value per group (in the one form the policy declares, e.g. WOZ clipped).

    Example: kansrijk query mean ws --name amount_by_sex --year 2023 --value AMOUNT --by sex
    --release-policy policies/release/sdc-only.toml --officer-key officer.pub""",
    )
)
app.command("sum")(
    _command(
        "sum",
        """Sum of a value per group (dominance rules apply).

    Example: kansrijk query sum ws --name count_total --year 2023 --value COUNT --by sex
    --release-policy policies/release/sdc-only.toml --officer-key officer.pub""",
    )
)
app.command("quantile")(
    _command(
        "quantile",
        """Quantiles at levels from the policy's grid (released as the mean of the nearest values, or with DP).

    Example: kansrijk query quantile ws --name amount_median --year 2023 --value AMOUNT --level 0.5
    --release-policy policies/release/sdc-only.toml --officer-key officer.pub""",
    )
)
app.command("histogram")(
    _command(
        "histogram",
        """Histogram of a value over the policy's public edges for it.

    Example: kansrijk query histogram ws --name amount_hist --year 2023 --value AMOUNT
    --release-policy policies/release/sdc-only.toml --officer-key officer.pub""",
    )
)


@app.command("spec")
def spec_cmd(
    file: Annotated[Path, typer.Argument(help='A JSON spec, e.g. {"spec": "count", "name": ..., ...}.')],
    workspace: Workspace = None,
    release_policy: Policy = None,
    gate_socket: Socket = None,
    officer_key: Officer = None,
    requested_by: Requester = REQUESTED_BY,
    as_json: AsJson = False,
    passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
) -> None:
    """Release any data-free spec written as JSON (counts, means, trees, tests, DP models; see docs/queries.md).

    Example: kansrijk query spec ws my-query.json --release-policy policies/release/sdc-only.toml
    --officer-key officer.pub
    """
    _release(
        workspace, spec_from_file(file), release_policy, officer_key, requested_by, as_json, passphrase_env, gate_socket
    )
