"""`kansrijk node`: what a partner runs on its own machine (keys, prepare, inspect).

Thin commands: parse options, call one library function, render its result with rich. Errors are
``KansrijkError`` subclasses; the root group turns them into a message and their exit code.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kansrijk import bundle
from kansrijk.console import ask_passphrase, console, err_console, progress_bar
from kansrijk.errors import InputError
from node_agent import config as nodeconfig
from node_agent import keys
from node_agent.prepare import STAGES, prepare_extract

# Names of environment variables, not passphrases.
DEFAULT_PASSPHRASE_ENV = "KANSRIJK_PASSPHRASE"  # noqa: S105
DEFAULT_LINK_PASSPHRASE_ENV = "KANSRIJK_LINK_PASSPHRASE"  # noqa: S105

app = typer.Typer(
    help=(
        "The partner node: make keys, turn a raw extract into a sealed bundle, inspect a bundle.\n\n"
        "Example: kansrijk node prepare --policy policies/sharing/PARTNER.toml --input PARTNER_2023.csv --out outbox/ "
        "--signing-key keys/PARTNER-signing.key --link-key link.key --coordinator-key coordinator-hpke.pub"
    ),
    no_args_is_help=True,
    rich_markup_mode="rich",
)
linkkey_app = typer.Typer(
    help=(
        "The link key shared by all partners (never by the coordinator); see docs/key-ceremony.md.\n\n"
        "Example: kansrijk node linkkey new --out link.key"
    ),
    no_args_is_help=True,
)
app.add_typer(linkkey_app, name="linkkey")

PassphraseEnv = Annotated[
    str,
    typer.Option(
        "--passphrase-env",
        help="Environment variable holding the key passphrase; prompted for when it is unset.",
    ),
]
LinkPassphraseEnv = Annotated[
    str,
    typer.Option(
        "--passphrase-env",
        help="Environment variable holding the link key's passphrase (falls back to KANSRIJK_PASSPHRASE, then a "
        "prompt).",
    ),
]


def _passphrase(env_name: str, *, what: str, confirm: bool = False) -> str:
    """From ``env_name``; for the link key's variable falling back to KANSRIJK_PASSPHRASE; else a prompt
    (``KeyMaterialError`` when there is no terminal to type it on)."""
    fallback = env_name == DEFAULT_LINK_PASSPHRASE_ENV and not os.environ.get(env_name)
    if fallback and os.environ.get(DEFAULT_PASSPHRASE_ENV):
        env_name = DEFAULT_PASSPHRASE_ENV
    return ask_passphrase(env_name, what=what, confirm=confirm)


@app.command("keygen")
def keygen_command(
    partner: Annotated[str, typer.Option("--partner", help="Partner name, as the study file names it.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for <partner>-signing.key and .pub.")],
    epoch: Annotated[int, typer.Option("--epoch", help="Key epoch: 1, then +1 at every rotation.")] = 1,
    passphrase_env: PassphraseEnv = DEFAULT_PASSPHRASE_ENV,
) -> None:
    """Make the partner's Ed25519 signing key pair and print its fingerprint.

    The secret key file is passphrase-protected (scrypt) and mode 0600; send only the .pub file to the
    privacy officer for the partner registry, and read the fingerprint to them over another channel.

    Example: KANSRIJK_PASSPHRASE=... kansrijk node keygen --partner PARTNER --out keys/
    """
    passphrase = _passphrase(passphrase_env, what=f"the new {partner} signing key", confirm=True)
    files = keys.generate_partner_keys(partner, out, passphrase, epoch=epoch)
    console.print(f"secret key:  {files.secret_key}  (keep it here; mode 0600)")
    console.print(f"public key:  {files.public_key}  (for the coordinator's partner registry)")
    console.print(f"epoch:       {files.epoch}")
    console.print(f"fingerprint: [bold]{files.fingerprint}[/bold]")


@linkkey_app.command("new")
def linkkey_new_command(
    out: Annotated[Path, typer.Option("--out", help="File to write the new link key to.")],
    passphrase_env: LinkPassphraseEnv = DEFAULT_LINK_PASSPHRASE_ENV,
) -> None:
    """Make the link key (once, at the key ceremony) and print its fingerprint.

    Every partner gets a copy; the coordinator never does. Partners compare fingerprints to confirm they hold
    the same key.

    Example: KANSRIJK_LINK_PASSPHRASE=... kansrijk node linkkey new --out link.key
    """
    passphrase = _passphrase(passphrase_env, what="the new link key", confirm=True)
    fingerprint = keys.new_link_key(out, passphrase)
    console.print(f"link key:    {out}")
    console.print(f"fingerprint: [bold]{fingerprint}[/bold]")


@linkkey_app.command("fingerprint")
def linkkey_fingerprint_command(
    path: Annotated[Path, typer.Argument(help="The link key file.")],
    passphrase_env: LinkPassphraseEnv = DEFAULT_LINK_PASSPHRASE_ENV,
) -> None:
    """Decrypt the link key file and print its fingerprint (to compare with the other partners').

    Example: kansrijk node linkkey fingerprint link.key
    """
    passphrase = _passphrase(passphrase_env, what=str(path))
    typer.echo(keys.link_key_fingerprint(path, passphrase))


ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="The node configuration (default: $KANSRIJK_NODE_CONFIG, else ~/.config/kansrijk/node.toml).",
    ),
]


@app.command("init")
def init_command(
    policy: Annotated[Path, typer.Option("--policy", help="The partner's signed sharing policy (TOML).")],
    signing_key: Annotated[Path, typer.Option("--signing-key", help="The partner's secret signing key file.")],
    link_key: Annotated[Path, typer.Option("--link-key", help="The link key file from the key ceremony.")],
    coordinator_key: Annotated[
        Path, typer.Option("--coordinator-key", help="The coordinator's public encryption key file.")
    ],
    outbox: Annotated[Path, typer.Option("--outbox", help="Directory the sealed bundles go to.")],
    quarantine_out: Annotated[
        Path | None,
        typer.Option("--quarantine-out", help="Directory for quarantine reports (default: next to the outbox)."),
    ] = None,
    config: ConfigOption = None,
    passphrase_env: Annotated[
        str, typer.Option("--passphrase-env", help="Environment variable prepare reads the key passphrase from.")
    ] = DEFAULT_PASSPHRASE_ENV,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing configuration.")] = False,
) -> None:
    """Save the node's configuration once, so a routine run is `kansrijk node prepare EXTRACT`.

    Checks the files first: the policy validates, the signing key is that policy's partner's, the coordinator key
    is an encryption public key, the link key file is a link key. Paths are stored absolute. With a configuration
    the node also remembers the last bundle it sealed and chains the next one to it (no --previous needed).

    Example: kansrijk node init --policy policies/sharing/PARTNER.toml --signing-key keys/PARTNER-signing.key
    --link-key link.key --coordinator-key coordinator-hpke.pub --outbox outbox/
    """
    path = config or nodeconfig.default_config_path()
    saved = nodeconfig.write_node_config(
        path,
        policy=policy,
        signing_key=signing_key,
        link_key=link_key,
        coordinator_key=coordinator_key,
        outbox=outbox,
        quarantine=quarantine_out,
        passphrase_env=passphrase_env,
        force=force,
    )
    console.print(f"node configuration written: {path} (partner {saved.partner})", markup=False)
    hint = "kansrijk node prepare EXTRACT" + ("" if config is None else f" --config {path}")
    console.print(f"a routine run is now: {hint}", markup=False)


@app.command("prepare")
def prepare_command(
    extract: Annotated[
        Path | None, typer.Argument(help="The raw extract (CSV or Parquet, per the policy); or give --input.")
    ] = None,
    input_path: Annotated[
        Path | None, typer.Option("--input", help="The raw extract (the same as the EXTRACT argument).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="The partner's sharing policy (TOML); default: the configuration's.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Outbox directory for the sealed bundle; default: the configuration's.")
    ] = None,
    signing_key: Annotated[
        Path | None, typer.Option("--signing-key", help="The partner's secret signing key file; default: configured.")
    ] = None,
    link_key: Annotated[
        Path | None, typer.Option("--link-key", help="The link key file from the key ceremony; default: configured.")
    ] = None,
    coordinator_key: Annotated[
        Path | None,
        typer.Option("--coordinator-key", help="The coordinator's public encryption key file; default: configured."),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            "--previous",
            help="The last bundle this partner sealed (chains the bundles); with a configuration the node "
            "remembers it.",
        ),
    ] = None,
    quarantine_out: Annotated[
        Path | None,
        typer.Option("--quarantine-out", help="Directory for the local quarantine report (default: ../quarantine)."),
    ] = None,
    year: Annotated[
        int | None, typer.Option("--year", help="Reference year, when the policy's column or file name is wrong.")
    ] = None,
    key_epoch: Annotated[
        int | None,
        typer.Option(
            "--key-epoch",
            help="Epoch of the signing key; read from the key file, so only a check: a different value is refused.",
        ),
    ] = None,
    extract_id: Annotated[
        str | None, typer.Option("--extract-id", help="Extract id (default: partner, year and file digest).")
    ] = None,
    declare_empty: Annotated[
        bool,
        typer.Option(
            "--declare-empty",
            help="The partner holds nobody for this year: seal a bundle without rows that says so in its signed "
            "manifest (needs --year; an extract with rows is refused). Without it a header-only extract is refused.",
        ),
    ] = False,
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")] = False,
    passphrase_env: Annotated[
        str | None,
        typer.Option(
            "--passphrase-env",
            help="Environment variable holding the key passphrase (default: the configuration's, else "
            "KANSRIJK_PASSPHRASE); prompted for when it is unset.",
        ),
    ] = None,
    link_passphrase_env: Annotated[
        str,
        typer.Option(
            "--link-passphrase-env",
            help="Environment variable with the link key's passphrase (falls back to --passphrase-env).",
        ),
    ] = DEFAULT_LINK_PASSPHRASE_ENV,
) -> None:
    """Validate, minimise, generalise and pseudonymise an extract, and seal it for the coordinator.

    Rows that fail a check go to a local quarantine report (line or row, field, rule, what it expects; never a BSN
    or value) that stays here; if more rows fail than the policy's max_fault_rate allows, nothing is sealed
    (exit 5). With a node configuration (`kansrijk node init`) the files come from it and the bundle is chained to
    the last one this node sealed; an option on the command line wins.

    Example: kansrijk node prepare exports/PARTNER_2023.csv
    (or, without a configuration: kansrijk node prepare --policy policies/sharing/PARTNER.toml --input PARTNER_2023.csv
    --out outbox/ --signing-key keys/PARTNER-signing.key --link-key link.key --coordinator-key coordinator-hpke.pub)
    """
    if extract is not None and input_path is not None and extract != input_path:
        raise InputError("give the extract once: as EXTRACT or as --input", hint="kansrijk node prepare EXTRACT")
    source = extract or input_path
    if source is None:
        raise InputError("no extract given", hint="kansrijk node prepare EXTRACT (the raw file from your system)")
    files = {"--policy": policy, "--out": out, "--signing-key": signing_key, "--link-key": link_key,
             "--coordinator-key": coordinator_key}  # fmt: skip
    use_config = config is not None or os.environ.get(nodeconfig.CONFIG_ENV) or any(v is None for v in files.values())
    config_path = (config or nodeconfig.default_config_path()) if use_config else None
    saved = nodeconfig.load_node_config(config_path) if config_path is not None else None
    if saved is not None:
        policy, out = policy or saved.policy, out or saved.outbox
        signing_key, link_key = signing_key or saved.signing_key, link_key or saved.link_key
        coordinator_key = coordinator_key or saved.coordinator_key
        quarantine_out = quarantine_out or saved.quarantine
        passphrase_env = passphrase_env or saved.passphrase_env
    passphrase_env = passphrase_env or DEFAULT_PASSPHRASE_ENV
    assert policy and out and signing_key and link_key and coordinator_key  # from the flags or the configuration
    chain = nodeconfig.read_chain(config_path) if config_path is not None and previous is None else None

    sk = keys.load_partner_signing_key(signing_key, _passphrase(passphrase_env, what=str(signing_key)))
    link_env = link_passphrase_env if os.environ.get(link_passphrase_env) else passphrase_env
    lk = keys.load_link_key(link_key, _passphrase(link_env, what=str(link_key)))
    recipient = keys.load_coordinator_key(coordinator_key)
    with progress_bar("prepare", total=len(STAGES)) as (progress, task):

        def step(stage: str) -> None:
            progress.update(task, completed=STAGES.index(stage), description=f"prepare: {stage}")

        result = prepare_extract(
            policy_path=policy,
            input_path=source,
            out_dir=out,
            signing_key=sk,
            link_key=lk,
            coordinator_public_key=recipient,
            previous_bundle=previous,
            previous_digest=chain.digest if chain is not None else None,
            quarantine_dir=quarantine_out,
            key_epoch=key_epoch,
            year=year,
            extract_id=extract_id,
            progress=step,
            declare_empty=declare_empty,
        )
        progress.update(task, completed=len(STAGES))
    if config_path is not None:
        nodeconfig.write_chain(
            config_path,
            nodeconfig.ChainTip(result.bundle_digest, str(result.bundle_path), result.manifest.extract_id, result.year),
        )
    if as_json:
        doc = {
            "bundle": str(result.bundle_path),
            "digest": result.bundle_digest,
            "partner": result.partner,
            "year": result.year,
            "extract_id": result.manifest.extract_id,
            "previous_bundle_hash": result.manifest.previous_bundle_hash,
            "declared_empty": result.manifest.declared_empty,
            "rows_in": result.rows_in,
            "rows_shared": result.rows_shared,
            "rows_quarantined": result.rows_quarantined,
            "quarantine_report": str(result.quarantine_path),
            "rules": result.counts_by_rule,
            "unexpected_columns": list(result.unexpected_columns),
            "configuration": str(config_path) if config_path is not None else None,
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    console.print(f"sealed:      {result.bundle_path}")
    console.print(f"digest:      {result.bundle_digest}")
    if result.manifest.previous_bundle_hash:
        console.print(f"chained to:  {result.manifest.previous_bundle_hash}")
    console.print(
        f"rows:        {result.rows_shared} shared, {result.rows_quarantined} quarantined of {result.rows_in}"
    )
    console.print(f"quarantine:  {result.quarantine_path}  (local only; not in the bundle)")
    for line in result.rule_lines:
        console.print(line, markup=False)
    if result.unexpected_columns:
        names = ", ".join(repr(c[:64]) for c in result.unexpected_columns)
        err_console.print(
            f"note: {len(result.unexpected_columns)} column(s) of the extract are not in the sharing policy and were "
            f"left out of the bundle: {names} (list them under `dropped` in the policy to make that explicit)",
            markup=False,
        )


@app.command("inspect")
def inspect_command(
    path: Annotated[Path, typer.Argument(help="The bundle file.")],
    partner_key: Annotated[
        Path | None, typer.Option("--partner-key", help="The partner's public signing key file, to verify against.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Show a bundle's manifest and verify its signature; needs no private key.

    Without --partner-key the signature is not checked; the fingerprint the bundle claims is shown instead.

    Example: kansrijk node inspect outbox/PARTNER_2023_0123abcd.kbundle --partner-key keys/PARTNER-signing.pub
    """
    try:
        data = path.read_bytes()
    except OSError:
        raise InputError(f"{path}: bundle file not found or unreadable") from None
    manifest = bundle.read_manifest(data)
    if partner_key is not None:
        key = keys.load_partner_public_key(partner_key)
        manifest = bundle.verify_bundle(data, {manifest.partner: key})
        verdict = f"[green]signature valid[/green] (key {manifest.keys.signing})"
    else:
        verdict = f"[yellow]not verified[/yellow]: claims signing key {manifest.keys.signing}; pass --partner-key"
    if as_json:
        typer.echo(json.dumps(manifest.to_json_object(), indent=2, sort_keys=True))
        err_console.print(verdict)
        return
    table = Table(title=f"{path.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    obj = manifest.to_json_object()
    for name in (
        "partner", "extract_id", "extract_year", "row_count", "quarantine_count", "schema_version",
        "policy_digest", "previous_bundle_hash", "created_at", "format", "format_version",
    ):  # fmt: skip
        table.add_row(name, str(obj[name]))
    table.add_row("columns", ", ".join(manifest.column_names))
    table.add_row(
        "keys",
        f"signing {manifest.keys.signing}, link {manifest.keys.link}, "
        f"recipient {manifest.keys.recipient}, epoch {manifest.keys.epoch}",
    )
    table.add_row(
        "payload", f"{manifest.payload.format}, {manifest.payload.size} bytes, sha256 {manifest.payload.sha256}"
    )
    table.add_row("bundle digest", bundle.bundle_digest(data))
    table.add_row("signature", verdict)
    console.print(table)
