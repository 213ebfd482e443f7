"""`kansrijk policy` and `kansrijk ledger`: the privacy officer's commands.

Thin commands: each parses its options, calls one library function and renders the result with rich.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from kansrijk import crypto
from kansrijk.console import ask_passphrase, console, fmt_epsilon
from kansrijk.console import err_console as err
from kansrijk.errors import OutputExists, PolicyError
from kansrijk.gate.anchor import anchor_ledger, check_anchor
from kansrijk.gate.ledger import LEDGER_FILE, LedgerEntry, entries, open_existing, verify_ledger
from kansrijk.policy.common import policy_digest, read_policy_bytes
from kansrijk.policy.diff import ABSENT, diff_policy_files
from kansrijk.policy.dpia import write_dpia_annex
from kansrijk.policy.release import ReleasePolicy, explain_release_policy
from kansrijk.policy.sharing import SharingPolicy, explain_sharing_policy
from kansrijk.policy.signing import load_policy, sign_policy, verify_policy
from kansrijk.study.explain import explain_study
from kansrijk.study.model import StudyFile

PASSPHRASE_ENV = "KANSRIJK_PASSPHRASE"  # noqa: S105 (the variable name, not a secret)

policy_app = typer.Typer(
    help="Check, explain, compare, sign and verify policy files (for privacy officers).", no_args_is_help=True
)
ledger_app = typer.Typer(help="Read and verify the release gate's audit ledger.", no_args_is_help=True)


def _passphrase(env: str, *, confirm: bool, what: str = "the officer's key") -> str:
    return ask_passphrase(env, what=what, confirm=confirm)


@policy_app.command("check")
def check_cmd(
    files: Annotated[list[Path], typer.Argument(help="Policy files (TOML) to validate.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one object per file (valid, kind, digest, problems).")
    ] = False,
) -> None:
    """Validate policy files of any known kind (dispatch on the top-level `kind` key).

    Every problem is listed as `file: key.path: message`; a number past a floor or ceiling names the rule, the
    bound and where the bound comes from. A release policy fails when any number is looser than its floor or above
    its DP ceiling (epsilon 1 per release, 2 per DP model, 10 in total), DP-only outputs included. Exit code 3 if
    any file fails.

    Example: kansrijk policy check policies/release/dp-sdc.toml policies/release/sdc-only.toml
    """
    failed: PolicyError | None = None
    for path in files:
        try:
            kind, _ = load_policy(path)
        except PolicyError as exc:
            failed = exc
            if as_json:
                problems = [line.strip() for line in exc.message.splitlines()[1:]] or [exc.message]
                typer.echo(json.dumps({"file": str(path), "valid": False, "problems": problems}, ensure_ascii=False))
            else:
                err.print(Text.assemble(("FAIL ", "bold red"), str(exc)))  # the message is printed as it is
            continue
        digest = policy_digest(read_policy_bytes(path))
        if as_json:
            typer.echo(json.dumps({"file": str(path), "valid": True, "kind": kind, "digest": digest, "problems": []}))
        else:
            console.print(f"[green]ok[/]   {path}  kind={kind}  {digest}")
    if failed is not None:
        raise typer.Exit(failed.exit_code)


@policy_app.command("explain")
def explain_cmd(
    file: Annotated[Path, typer.Argument(help="A release policy, a partner's sharing policy or a study file.")],
) -> None:
    """Say in plain language what a policy does.

    A release policy: what each rule protects against, what epsilon means for one person in words, the floors and
    ceilings it is held to, whose DP budget it spends, and where it is stricter than ACRO and why. A sharing
    policy: what the partner shares, in which form, under which purpose and legal basis, and what never leaves.
    A study file: its partners and what each holds, the variables, the linkage check and each outcome's definition.

    Example: kansrijk policy explain policies/release/dp-sdc.toml
    """
    kind, model = load_policy(file)
    if isinstance(model, ReleasePolicy):
        lines = explain_release_policy(model)
    elif isinstance(model, SharingPolicy):
        lines = explain_sharing_policy(model)
    elif isinstance(model, StudyFile):
        lines = explain_study(model)
    else:
        raise PolicyError(
            f"{file}: explain knows release policies, sharing policies and study files (this file is kind {kind!r})",
            hint="`kansrijk policy dpia` puts every policy of a study in one document",
        )
    for line in lines:
        console.print(line, markup=False)


@policy_app.command("diff")
def diff_cmd(
    a: Annotated[Path, typer.Argument(help="The policy before (the signed one).")],
    b: Annotated[Path, typer.Argument(help="The policy after (the proposal); shown even when it does not validate.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the diff as one JSON document, for scripts.")] = False,
) -> None:
    """Key-by-key difference between two versions of a policy, every change judged: stricter, looser, or no
    privacy effect (only for keys that name, describe or format). A change not known to be stricter is called
    looser. A file that does not validate is still compared, as written, and its problems are listed: it cannot
    be signed. Exit code 0 even when they differ.

    Example: kansrijk policy diff policies/release/sdc-only.toml proposed.toml
    """
    diff = diff_policy_files(a, b)
    if as_json:
        typer.echo(json.dumps(diff.to_json(), indent=2, ensure_ascii=False))
        return
    for side, label in ((diff.before, "before"), (diff.after, "after")):
        if not side.valid:
            console.print(f"[bold red]{label}: {side.path} does not validate[/] (it cannot be signed):")
            for problem in side.problems:
                console.print(f"  {problem}", markup=False)
    if diff.compared_as_written:
        console.print("compared as written (defaults are not filled in for a file that does not validate)")
    if not diff.changes:
        console.print("no semantic difference")
        return
    table = Table("key", "before", "after", "effect", "why")
    for column in table.columns:
        column.overflow = "fold"
    style = {"stricter": "green", "looser": "bold red", "no privacy effect": "dim"}
    for c in diff.changes:
        table.add_row(
            c.key,
            _shown(c.before),
            _shown(c.after),
            f"[{style[c.effect]}]{c.effect}[/]",
            c.why,
        )
    console.print(table)
    counts = diff.to_json()["summary"]
    console.print(
        f"{len(diff.changes)} change(s): {counts['looser']} looser, {counts['stricter']} stricter, "
        f"{counts['no privacy effect']} with no privacy effect"
    )


def _shown(value: Any) -> str:
    """A policy value as written (no JSON escapes: an em dash stays an em dash)."""
    if value is ABSENT:
        return "(absent)"
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value


@policy_app.command("dpia")
def dpia_cmd(
    policies: Annotated[
        Path,
        typer.Option(
            "--policies",
            help="The study's signed policies, laid out like policies/: sharing/*.toml, analysis/ and factors/ "
            "(one file each), partners.toml.",
        ),
    ],
    release_policy: Annotated[
        Path, typer.Option("--release-policy", help="The signed release policy the gate runs under.")
    ],
    threat_model: Annotated[
        Path,
        typer.Option("--threat-model", help="The threat model whose mitigations the annex lists: docs/threat-model.md"),
    ],
    out: Annotated[Path, typer.Option("--out", help="The Markdown file to write.")],
    officer_key: Annotated[
        list[Path] | None,
        typer.Option(
            "--officer-key",
            help="Trusted officer public key(s): every policy must then be signed by one (else exit 4, nothing "
            "written). Without it the annex says the signatures were not checked.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Regenerate OUT in place if it exists.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the sources (file, digest, signer) as JSON.")] = False,
) -> None:
    """Write the DPIA annex from the signed policies: what each partner shares and in what form, under which
    purpose and legal basis; what the coordinator holds and for how long; the analysis; the release rules and the
    DP budget (epsilon in words); and the threat model's mitigations. Deterministic: regenerate it whenever a
    policy changes, the digests in it show which versions it describes.

    Example: kansrijk policy dpia --policies policies --release-policy policies/release/sdc-only.toml
    --threat-model docs/threat-model.md --officer-key officer.pub --out dpia-annex.md
    """
    annex = write_dpia_annex(policies, release_policy, threat_model, out, officer_keys=officer_key or [], force=force)
    if as_json:
        doc = {
            "annex": str(annex.path),
            "partners": list(annex.partners),
            "signatures_checked": bool(officer_key),
            "sources": [
                {"file": str(s.path), "kind": s.kind, "digest": s.digest, "signer": s.signer or None}
                for s in annex.sources
            ],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    console.print(
        f"DPIA annex written: {annex.path} ({len(annex.sources)} policies, partners {', '.join(annex.partners)})"
    )
    if not officer_key:
        err.print("[yellow]note:[/] signatures were not checked (pass --officer-key); the annex says so")


@policy_app.command("keygen")
def keygen_cmd(
    out: Annotated[Path, typer.Option("--out", help="Directory for officer.key (secret) and officer.pub.")],
    label: Annotated[str, typer.Option(help="Label stored in the key files.")] = "privacy officer",
    passphrase_env: Annotated[str, typer.Option(help="Environment variable with the passphrase.")] = PASSPHRASE_ENV,
) -> None:
    """Create a privacy officer's Ed25519 signing key pair (secret key passphrase-protected with scrypt).

    Example: KANSRIJK_PASSPHRASE=... kansrijk policy keygen --out ~/officer-keys
    """
    out.mkdir(parents=True, exist_ok=True)
    key_path, pub_path = out / "officer.key", out / "officer.pub"
    if key_path.exists() or pub_path.exists():
        raise OutputExists(f"{out}: officer.key or officer.pub exists already", hint="choose another --out")
    private, public = crypto.generate_signing_key()
    fp = crypto.write_secret_key(
        key_path, "ed25519-signing", private, _passphrase(passphrase_env, confirm=True), label=label
    )
    crypto.write_public_key(pub_path, "ed25519-signing", public, label=label)
    console.print(f"wrote {key_path} (secret, 0600) and {pub_path}; fingerprint {fp}")


@policy_app.command("sign")
def sign_cmd(
    file: Annotated[Path, typer.Argument(help="The policy file to sign (it must validate).")],
    key: Annotated[Path, typer.Option("--key", help="The officer's secret key file (officer.key).")],
    passphrase_env: Annotated[str, typer.Option(help="Environment variable with the passphrase.")] = PASSPHRASE_ENV,
) -> None:
    """Sign a policy file: writes FILE.sig (JSON with the file digest and the signer's fingerprint). A file that
    does not validate (a release policy past a floor or ceiling included) is refused and nothing is written.

    Example: kansrijk policy sign policies/release/dp-sdc.toml --key ~/officer-keys/officer.key
    """
    private = crypto.read_secret_key(key, "ed25519-signing", _passphrase(passphrase_env, confirm=False))
    sig = sign_policy(file, private)
    console.print(f"signed {file} -> {sig}")


@policy_app.command("verify")
def verify_cmd(
    file: Annotated[Path, typer.Argument(help="The signed policy file.")],
    officer_key: Annotated[list[Path], typer.Option("--officer-key", help="Trusted officer public key(s) (.pub).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the verified digest and signer as JSON.")] = False,
) -> None:
    """Verify FILE.sig against trusted officer keys and the file's bytes. Exit code 4 if unsigned or altered.

    Example: kansrijk policy verify policies/release/dp-sdc.toml --officer-key officer.pub
    """
    _, digest, signer = verify_policy(file, officer_key)
    if as_json:
        typer.echo(json.dumps({"file": str(file), "verified": True, "digest": digest, "signer_fingerprint": signer}))
        return
    console.print(f"[green]verified[/] {file}  {digest}  signed by {signer}")


def entry_document(e: LedgerEntry) -> dict[str, Any]:
    """One ledger entry as ``ledger show --json`` prints it (and the gate service's ``ledger`` op sends it)."""
    return {
        "entry": e.entry_id,
        "time": e.time,
        "requested_by": e.requested_by,
        "release": e.release_name,
        "kind": e.kind,
        "outcome": e.outcome,
        "epsilon": str(e.epsilon),
        "policy_digest": e.policy_digest,
        "request_digest": e.request_digest,
        "outputs": e.outputs,
        "verdicts": list(e.verdicts),
        "entry_hash": e.entry_hash,
        "signature": e.signature,
    }


def print_entries(documents: Sequence[dict[str, Any]], *, as_json: bool) -> None:
    """Print entry documents (``entry_document``) as ``ledger show`` does: a table and the head, or JSON Lines
    (one compact object per line, epsilon as the exact fraction the ledger holds)."""
    if as_json:
        for doc in documents:
            typer.echo(json.dumps(doc, sort_keys=True, ensure_ascii=False))
        return
    table = Table("entry", "time (UTC)", "by", "release", "kind", "outcome", "ε", "rules not passed")
    for column in table.columns:
        column.overflow = "fold"  # a narrow terminal wraps a release name in its cell; it never cuts it
    for d in documents:
        rules = ", ".join(f"{v['rule']}:{v['verdict']}" for v in d["verdicts"] if v["verdict"] != "pass")
        table.add_row(
            d["entry"], d["time"][:19], d["requested_by"], d["release"], d["kind"], d["outcome"],
            fmt_epsilon(d["epsilon"]), rules,
        )  # fmt: skip
    console.print(table)
    if documents:
        last = documents[-1]
        console.print(f"head: {last['entry']} {last['entry_hash']}  (note it down to anchor the chain)")


@ledger_app.command("show")
def show_cmd(
    workspace: Annotated[Path, typer.Argument(help="The coordinator workspace (holds ledger.sqlite).")],
    as_json: Annotated[
        bool, typer.Option("--json", help="JSON Lines: one compact JSON object per entry, instead of a table.")
    ] = False,
) -> None:
    """List every ledger entry: time, requester, release, outcome, epsilon, refusing/suppressing rules.

    Example: kansrijk ledger show demo-run/coordinator
    """
    conn = open_existing(workspace)
    try:
        rows = entries(conn)
    finally:
        conn.close()
    print_entries([entry_document(e) for e in rows], as_json=as_json)


@ledger_app.command("verify")
def verify_ledger_cmd(
    workspace: Annotated[Path, typer.Argument(help="The coordinator workspace (holds ledger.sqlite).")],
    anchor: Annotated[
        list[Path] | None,
        typer.Option("--anchor", help="Signed anchor file(s) from 'kansrijk ledger anchor' to check as well."),
    ] = None,
    officer_key: Annotated[
        list[Path] | None,
        typer.Option("--officer-key", help="Trusted officer public key(s) (.pub) for the anchors."),
    ] = None,
    gate_key: Annotated[
        Path | None,
        typer.Option(
            "--gate-key",
            help="The gate's public key (gate-signing.pub) kept outside the workspace: the workspace's must be it.",
        ),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print what was verified as JSON; a failure keeps its exit code.")
    ] = False,
) -> None:
    """Verify the ledger: hash chain, gate signatures, budget, head and every file under released/.

    Every entry's signature is checked against WS/keys/gate-signing.pub. With --gate-key, the workspace's gate
    key must be that pinned key. With --anchor, also check that each anchored entry is still there with its
    signed hash (a truncated or rewritten chain) and that the gate key is the anchored one (a replaced key,
    re-signed ledger).
    Exit code 22 on any edited, removed, reordered or unsigned entry, a signature that does not verify, a
    replaced gate key, a file without its entry or digest, or a lost anchored entry; exit code 24 for an anchor
    that is malformed or not signed by a trusted officer; exit code 6 for a missing gate public key.

    Example: kansrijk ledger verify demo-run/coordinator --anchor anchors/2026-11-25.json --officer-key officer.pub
    """
    from kansrijk.gate.review import verify_reviews

    report = verify_ledger(workspace, gate_key=gate_key)
    reviews = verify_reviews(workspace)
    checks = [check_anchor(workspace, a, officer_key or []) for a in anchor or []]
    if as_json:
        doc = {
            "verified": True,
            "ledger": str(workspace / LEDGER_FILE),
            "entries": report.entries,
            "files_checked": report.files_checked,
            "head_hash": report.head_hash,
            "epsilon_spent": {d: str(e) for d, e in report.epsilon_spent.items()},
            "gate_key_fingerprint": report.gate_key_fingerprint,
            "gate_key_pinned": gate_key is not None,
            "reviews_checked": reviews,
            "anchors": [
                {
                    "anchor": str(c.anchor),
                    "entry": c.entry_id,
                    "anchored_at": c.anchored_at,
                    "signer_fingerprint": c.signer_fingerprint,
                    "entries_since": c.entries_since,
                    "gate_key_fingerprint": c.gate_key_fingerprint or None,
                }
                for c in checks
            ],
        }
        typer.echo(json.dumps(doc, indent=2))
        return
    spent = ", ".join(f"{d}: ε {fmt_epsilon(e)}" for d, e in report.epsilon_spent.items()) or "no DP budget spent"
    console.print(
        f"ledger verified: {report.entries} entries, {report.files_checked} released files, "
        f"head {report.head_hash} ({spent}), {workspace / LEDGER_FILE}",
        markup=False,
    )
    pinned = " (the pinned key)" if gate_key is not None else ""
    console.print(f"every entry signed by gate key {report.gate_key_fingerprint}{pinned}", markup=False)
    if reviews:
        console.print(f"{reviews} officer review(s): each decision verifies and each approval is in its release entry",
                      markup=False)  # fmt: skip
    for c in checks:
        console.print(
            f"anchor {c.anchor}: entry {c.entry_id} intact (anchored {c.anchored_at} by {c.signer_fingerprint}; "
            f"{c.entries_since} entries since; "
            + (f"gate key {c.gate_key_fingerprint} as anchored)" if c.gate_key_fingerprint else "no gate key in it)"),
            markup=False,
        )


@ledger_app.command("anchor")
def anchor_cmd(
    workspace: Annotated[Path, typer.Argument(help="The coordinator workspace (holds ledger.sqlite).")],
    key: Annotated[Path, typer.Option("--key", help="The officer's secret key file (officer.key).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed anchor (never overwritten).")],
    passphrase_env: Annotated[str, typer.Option(help="Environment variable with the passphrase.")] = PASSPHRASE_ENV,
) -> None:
    """Verify the ledger, then sign its head as the privacy officer: a small JSON file to keep outside the
    workspace. 'ledger verify --anchor' later proves the chain was not truncated or rewritten up to it.

    Example: kansrijk ledger anchor demo-run/coordinator --key ~/officer-keys/officer.key --out anchors/today.json
    """
    private = crypto.read_secret_key(key, "ed25519-signing", _passphrase(passphrase_env, confirm=False))
    made = anchor_ledger(workspace, private, out)
    del private
    console.print(
        f"anchored entry {made.entry_id} ({made.entry_hash}) of {workspace / LEDGER_FILE} -> {out}; "
        f"keep it outside the workspace",
        markup=False,
    )


# --- the review route for refused outputs (kansrijk.gate.review) ------------------------------------------------------
review_app = typer.Typer(
    help=(
        "Put a refused output to the privacy officer: the requester asks with a justification, the officer sees the "
        "rule that refused it and the numbers and signs an approval or a rejection, the gate releases an approved "
        "output and records the approval in the ledger. Never for the DP budget.\n\n"
        "Example: kansrijk review request ws --entry L000034 --justification '…' --release-policy p.toml "
        "--officer-key officer.pub"
    ),
    no_args_is_help=True,
)

WorkspaceArg = Annotated[Path, typer.Argument(help="The coordinator workspace (holds ledger.sqlite).")]
ReleasePolicyOpt = Annotated[
    Path, typer.Option("--release-policy", help="The signed release policy the gate runs under.")
]
OfficerKeysOpt = Annotated[
    list[Path], typer.Option("--officer-key", help="Trusted privacy officer public key(s) (.pub); repeatable.")
]
PassphraseEnvOpt = Annotated[
    str, typer.Option("--passphrase-env", help="Environment variable with the workspace key passphrase (gate key).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON (for scripts).")]


def _open_gate(workspace: Path, release_policy: Path, officer_key: list[Path], passphrase_env: str) -> Any:
    from kansrijk.gate.release import Gate

    passphrase = ask_passphrase(passphrase_env, what="the workspace's gate key")
    return Gate.open(workspace, release_policy, officer_key, passphrase=passphrase)


def _print_review(review: Any, *, numbers: bool) -> None:
    console.print(f"review {review.review_id}: {review.status}", markup=False)
    console.print(f"  release:        {review.release_name} ({review.kind}), refused in {review.refused_entry}",
                  markup=False)  # fmt: skip
    console.print(f"  requested by:   {review.requested_by} at {review.requested_at}", markup=False)
    console.print(f"  justification:  {review.justification}", markup=False)
    for verdict in review.refused:
        console.print(f"  refused by:     {verdict['rule']}: {verdict['reason']}", markup=False)
    console.print(f"  review digest:  {review.review_digest}", markup=False)
    if review.decision is not None:
        doc = review.decision["decision"]
        console.print(f"  decision:       {doc['decision']} by officer {doc['officer_fingerprint']} on "
                      f"{doc['decided_at']}" + (f": {doc['note']}" if doc["note"] else ""), markup=False)  # fmt: skip
    if review.released_entry:
        console.print(f"  released in:    {review.released_entry}", markup=False)
    if numbers:
        console.print("  the numbers as they would be released (withheld cells are null):", markup=False)
        console.print_json(json.dumps(review.released_form, ensure_ascii=False))


@review_app.command("request")
def review_request_cmd(
    workspace: WorkspaceArg,
    entry: Annotated[str, typer.Option("--entry", help="The refused ledger entry (L000034), from `ledger show`.")],
    justification: Annotated[
        str,
        typer.Option(
            "--justification",
            help="Why the output is needed and why it does not disclose a person (20 to 1000 characters; recorded "
            "with the release).",
        ),
    ],
    release_policy: ReleasePolicyOpt,
    officer_key: OfficerKeysOpt,
    requested_by: Annotated[
        str | None, typer.Option("--requested-by", help="Who asks (default: the requester of the refused entry).")
    ] = None,
    passphrase_env: PassphraseEnvOpt = PASSPHRASE_ENV,
    as_json: JsonOpt = False,
) -> None:
    """Ask the privacy officer to review a refused output. The gate recomputes it and records the request: the
    rules that refused it and the numbers as they would be released. Nothing is released.

    Refused (exit 27): not a refusal, a DP output, a refusal by a rule a review never lifts (the DP budget,
    differencing, the release name, the requester), or a review already pending.

    Example: kansrijk review request ws --entry L000034 --justification "district table for the youth plan;
    cells of 7 and 8 persons, no attribute" --release-policy policies/release/sdc-only.toml --officer-key officer.pub
    """
    from kansrijk.gate.review import request_review

    with _open_gate(workspace, release_policy, officer_key, passphrase_env) as gate:
        review = request_review(gate, entry, justification=justification, requested_by=requested_by)
    if as_json:
        typer.echo(json.dumps(review.to_json(), indent=2, ensure_ascii=False))
        return
    _print_review(review, numbers=False)
    console.print(f"next: the privacy officer reads it (kansrijk review show {workspace} {review.review_id}) and "
                  f"signs a decision", markup=False)  # fmt: skip


@review_app.command("list")
def review_list_cmd(workspace: WorkspaceArg, as_json: JsonOpt = False) -> None:
    """List every review request and its status (requested, released, rejected, refused_at_release). Reads the
    ledger only; no key needed.

    Example: kansrijk review list ws
    """
    from kansrijk.gate.review import list_reviews

    reviews = list_reviews(workspace)
    if as_json:
        for review in reviews:
            typer.echo(json.dumps(review.to_json(), ensure_ascii=False))
        return
    table = Table("review", "status", "release", "refused in", "requested by", "refused by", "released in")
    for column in table.columns:
        column.overflow = "fold"
    for r in reviews:
        table.add_row(r.review_id, r.status, r.release_name, r.refused_entry, r.requested_by,
                      ", ".join(v["rule"] for v in r.refused), r.released_entry or "")  # fmt: skip
    console.print(table)


@review_app.command("show")
def review_show_cmd(
    workspace: WorkspaceArg,
    review_id: Annotated[str, typer.Argument(help="The review (R000001), from `review list`.")],
    as_json: JsonOpt = False,
) -> None:
    """Show a review request as the privacy officer decides on it: the justification, every rule that refused the
    output with its reason, and the numbers as they would be released. Reads the ledger only; no key needed.

    Example: kansrijk review show ws R000001
    """
    from kansrijk.gate.review import get_review

    review = get_review(workspace, review_id)
    if as_json:
        typer.echo(json.dumps(review.to_json(), indent=2, ensure_ascii=False))
        return
    _print_review(review, numbers=True)


def _decide(workspace: Path, review_id: str, key: Path, out: Path, note: str, passphrase_env: str, *,
            approve: bool) -> None:  # fmt: skip
    from kansrijk.gate.review import sign_decision

    private = crypto.read_secret_key(key, "ed25519-signing", _passphrase(passphrase_env, confirm=False))
    decision = sign_decision(workspace, review_id, private, approve=approve, note=note, out=out)
    del private
    console.print(f"{decision.decision} review {review_id} as officer {decision.officer_fingerprint} -> {out}; hand "
                  f"it to the operator: kansrijk review apply {workspace} {out}", markup=False)  # fmt: skip


@review_app.command("approve")
def review_approve_cmd(
    workspace: WorkspaceArg,
    review_id: Annotated[str, typer.Argument(help="The review (R000001).")],
    key: Annotated[Path, typer.Option("--key", help="The officer's secret key file (officer.key).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed approval (never overwritten).")],
    note: Annotated[str, typer.Option("--note", help="A remark recorded with the approval.")] = "",
    passphrase_env: Annotated[str, typer.Option(help="Environment variable with the passphrase.")] = PASSPHRASE_ENV,
) -> None:
    """Approve a review request as the privacy officer: sign the request's review digest, which binds the request,
    the rules that refused it and the numbers you saw. The approval is a small JSON file for the operator.

    Example: kansrijk review approve ws R000001 --key ~/officer-keys/officer.key --out approvals/R000001.json
    """
    _decide(workspace, review_id, key, out, note, passphrase_env, approve=True)


@review_app.command("reject")
def review_reject_cmd(
    workspace: WorkspaceArg,
    review_id: Annotated[str, typer.Argument(help="The review (R000001).")],
    key: Annotated[Path, typer.Option("--key", help="The officer's secret key file (officer.key).")],
    out: Annotated[Path, typer.Option("--out", help="Where to write the signed rejection (never overwritten).")],
    note: Annotated[str, typer.Option("--note", help="The reason, for the requester (required).")] = "",
    passphrase_env: Annotated[str, typer.Option(help="Environment variable with the passphrase.")] = PASSPHRASE_ENV,
) -> None:
    """Reject a review request as the privacy officer, with a reason: a signed decision the operator records.

    Example: kansrijk review reject ws R000001 --key officer.key --out R000001.json --note "a cell of 2 persons"
    """
    _decide(workspace, review_id, key, out, note, passphrase_env, approve=False)


@review_app.command("apply")
def review_apply_cmd(
    workspace: WorkspaceArg,
    decision: Annotated[Path, typer.Argument(help="The officer's signed decision file.")],
    release_policy: ReleasePolicyOpt,
    officer_key: OfficerKeysOpt,
    passphrase_env: PassphraseEnvOpt = PASSPHRASE_ENV,
    as_json: JsonOpt = False,
) -> None:
    """Carry out the officer's decision. The gate verifies it first (a trusted officer key, the signature, a pending
    request of this workspace with exactly that review digest); a rejection is recorded; an approved output is
    recomputed and released only if its refusing rules and numbers are those approved, with the approval in its
    ledger entry. Never spends DP budget; name and differencing are checked again.

    Exit 28 (ApprovalInvalid): untrusted or altered decision, another request's, or used before. Exit 27
    (NotReviewable): the output changed since the review.

    Example: kansrijk review apply ws approvals/R000001.json --release-policy p.toml --officer-key officer.pub
    """
    from kansrijk.gate.review import apply_decision

    with _open_gate(workspace, release_policy, officer_key, passphrase_env) as gate:
        applied = apply_decision(gate, decision, officer_key)
    result = applied.result
    if as_json:
        doc = {
            "review": applied.review.to_json(),
            "outcome": result.outcome if result is not None else "rejected",
            "entry": result.entry_id if result is not None else None,
            "reasons": list(result.reasons) if result is not None else [],
        }
        typer.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    if result is None:
        console.print(f"review {applied.review.review_id} rejected and recorded; nothing released", markup=False)
    elif result.outcome == "refused":
        console.print(f"review {applied.review.review_id}: approved, but refused at release ({result.entry_id}): "
                      f"{'; '.join(result.reasons)}", markup=False)  # fmt: skip
    else:
        console.print(f"review {applied.review.review_id}: {result.outcome} as {result.entry_id} "
                      f"({applied.review.release_name}), the officer's approval in its ledger entry", markup=False)
