"""The partner pipeline: native extract -> validated, minimised, generalised, pseudonymised, sealed bundle.

``prepare_extract`` reads the extract as the sharing policy declares it, validates every row, writes the local
quarantine report (always, also when the run aborts), refuses to seal when the fault rate is above the policy's
``max_fault_rate``, pseudonymises the BSN of every clean row with the link key, and seals one bundle for the
coordinator. Either the complete bundle file appears in the outbox or nothing does.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import polars as pl

from kansrijk import bundle, crypto
from kansrijk.errors import InputError, KeyMaterialError, OutputExists, ValidationFailed
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.policy.sharing import SharingPolicy, load_sharing_policy
from kansrijk.pseudonym import pseudonym_expr
from node_agent.extract import RawExtract, read_extract, reference_year_from_filename
from node_agent.keys import PartnerSigningKey
from node_agent.transform import _parse_int, normalised_text
from node_agent.validate import BSN, ValidationResult, validate_extract

STAGES = ("read", "validate", "quarantine", "pseudonymise", "seal", "write")

Progress = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class PrepareResult:
    """What a run produced. ``bundle_path`` is None when nothing was sealed (never returned that way today:
    an aborted run raises ``ValidationFailed``)."""

    partner: str
    year: int
    bundle_path: Path
    bundle_digest: str
    quarantine_path: Path
    manifest: bundle.Manifest
    rows_in: int
    rows_shared: int
    rows_quarantined: int
    counts_by_rule: dict[str, int] = field(default_factory=dict)
    rule_lines: tuple[str, ...] = ()  # per rule its rows and what it expects (``rule_lines``), for the operator
    unexpected_columns: tuple[str, ...] = ()  # columns the policy names nowhere: left out of the bundle


def prepare_extract(
    *,
    policy_path: Path,
    input_path: Path,
    out_dir: Path,
    signing_key: bytes | PartnerSigningKey,
    link_key: bytes,
    coordinator_public_key: bytes,
    previous_bundle: Path | None = None,
    quarantine_dir: Path | None = None,
    key_epoch: int | None = None,
    year: int | None = None,
    extract_id: str | None = None,
    created_at: datetime | None = None,
    progress: Progress | None = None,
    declare_empty: bool = False,
    previous_digest: str | None = None,
) -> PrepareResult:
    """Run the pipeline (see the module docstring). Raises ``ValidationFailed`` (after writing the quarantine
    report) when too many rows are faulty; ``InputError``/``PolicyError`` on unreadable input; nothing is sealed
    in either case.

    An extract without data rows is refused (``InputError``): an empty export is almost always a mistake. A
    partner that really holds nobody for the year says so with ``declare_empty`` (and the year): the bundle then
    has no rows and its signed manifest says ``declared_empty``. ``declare_empty`` with rows is refused too.

    Given as a ``PartnerSigningKey`` (as the CLI loads it), the signing key must be the policy's partner's
    (``KeyMaterialError`` otherwise, before anything is read or written) and its epoch is the key file's;
    ``key_epoch``, when given too, must agree with it. A raw key is taken with ``key_epoch`` (default 1).

    The bundle names as its previous one ``previous_bundle`` (a file, verified when it is this key's) or else
    ``previous_digest`` (the node's own record of its last bundle), or none (a partner's first bundle)."""
    step = progress or (lambda _stage: None)
    out_dir = Path(out_dir)
    q_dir = Path(quarantine_dir) if quarantine_dir is not None else out_dir.resolve().parent / "quarantine"
    _check_directories(out_dir, q_dir)
    policy, digest = load_sharing_policy(Path(policy_path))
    signing_key, key_epoch = _own_signing_key(signing_key, key_epoch, policy, Path(policy_path))
    previous_hash = _previous_hash(previous_bundle, policy.partner, signing_key) if previous_bundle else None
    if previous_hash is None and previous_digest is not None:
        if re.fullmatch(r"sha256:[0-9a-f]{64}", previous_digest) is None:
            raise InputError(f"previous bundle digest {previous_digest!r} is not 'sha256:' and 64 hex digits")
        previous_hash = previous_digest  # the node's own record of the last bundle it sealed (node_agent.config)

    step("read")
    extract = read_extract(Path(input_path), policy)
    _check_emptiness(extract, policy, declare_empty=declare_empty)
    ref_year = _reference_year(extract, policy, year)
    extract_id = extract_id or f"{policy.partner}-{ref_year}-{extract.sha256[:16]}"
    _check_not_sealed_before(out_dir, extract, policy.partner, extract_id)

    step("validate")
    result = validate_extract(extract, policy, ref_year)

    step("quarantine")
    buffer = io.BytesIO()
    result.quarantine.write_csv(buffer)
    quarantine_path = _new_report_path(q_dir / f"{policy.partner}_{ref_year}_{extract.sha256[:12]}.quarantine.csv",
                                       buffer.getvalue())  # fmt: skip
    atomic_write_bytes(quarantine_path, buffer.getvalue(), mode=0o640)
    if result.fault_rate > policy.max_fault_rate:
        raise ValidationFailed(
            _failure_summary(extract, policy, result, quarantine_path),
            hint="fix the extract at the source (see the quarantine report) and run prepare again",
        )

    step("pseudonymise")
    payload = _payload(result, policy, link_key)
    if payload.height == 0 and not declare_empty:
        raise ValidationFailed(
            f"{extract.path}: no row of the {result.rows_in} passed validation; nothing was sealed "
            f"(quarantine report: {quarantine_path})",
            hint="fix the extract at the source (see the quarantine report) and run prepare again",
        )

    step("seal")
    sealed = bundle.seal_bundle(
        payload,
        partner=policy.partner,
        extract_id=extract_id,
        extract_year=ref_year,
        policy_digest=digest,
        quarantine_count=result.rows_quarantined,
        signing_key=signing_key,
        link_key_fingerprint=crypto.fingerprint("link-key", link_key),
        recipient_public_key=coordinator_public_key,
        key_epoch=key_epoch,
        previous_bundle_hash=previous_hash,
        created_at=created_at,
        declared_empty=declare_empty,
    )

    step("write")
    sealed_digest = bundle.bundle_digest(sealed)
    bundle_path = out_dir / f"{policy.partner}_{ref_year}_{sealed_digest.removeprefix('sha256:')[:16]}.kbundle"
    if bundle_path.exists():
        raise OutputExists(f"{bundle_path} exists already", hint="this exact bundle was written before")
    atomic_write_bytes(bundle_path, sealed)
    return PrepareResult(
        partner=policy.partner,
        year=ref_year,
        bundle_path=bundle_path,
        bundle_digest=sealed_digest,
        quarantine_path=quarantine_path,
        manifest=bundle.read_manifest(sealed),
        rows_in=result.rows_in,
        rows_shared=payload.height,
        rows_quarantined=result.rows_quarantined,
        counts_by_rule=result.counts_by_rule(),
        rule_lines=tuple(rule_lines(result)),
        unexpected_columns=extract.unexpected,
    )


def _check_directories(out_dir: Path, quarantine_dir: Path) -> None:
    """The outbox and the quarantine folder must be directories or not exist yet; checked before anything is
    read or written, so a wrong --out leaves nothing behind."""
    for path, option in ((out_dir, "--out"), (quarantine_dir, "--quarantine-out")):
        if path.exists() and not path.is_dir():
            raise InputError(
                f"{path}: {option} must be a directory, and this is a file; nothing was written",
                hint=f"pass the outbox directory as {option} (it is created when missing)"
                if option == "--out"
                else "pass a directory for the quarantine reports",
            )


def _check_not_sealed_before(out_dir: Path, extract: RawExtract, partner: str, extract_id: str) -> None:
    """Refuse to seal an extract a bundle in the outbox already holds (the same extract id): a second bundle of
    the same extract would be refused at the coordinator as a replay, and delivering the wrong one is worse."""
    if not out_dir.is_dir():
        return
    for path in sorted(out_dir.glob("*.kbundle")):
        manifest = bundle.read_manifest_file(path)
        if manifest is not None and manifest.partner == partner and manifest.extract_id == extract_id:
            raise OutputExists(
                f"{extract.path}: this extract was sealed already as {path} (extract id {extract_id}); nothing was "
                "written",
                hint="deliver that bundle; a corrected extract is a new file and gets a new extract id",
            )


def _new_report_path(path: Path, content: bytes) -> Path:
    """``path`` unless a different report is there already: a report is never overwritten (the same report
    again is left as it is), the next free ``-N`` name is used instead."""
    candidate, n = path, 1
    while candidate.exists() and candidate.read_bytes() != content:
        n += 1
        candidate = path.with_name(path.name.replace(".quarantine.csv", f"-{n}.quarantine.csv"))
    return candidate


def _own_signing_key(
    key: bytes | PartnerSigningKey, epoch: int | None, policy: SharingPolicy, policy_path: Path
) -> tuple[bytes, int]:
    """The raw key and the epoch to seal with; refuses another partner's key and a contradicting epoch."""
    if not isinstance(key, PartnerSigningKey):
        return key, 1 if epoch is None else epoch
    if key.partner != policy.partner:
        raise KeyMaterialError(
            f"{key.path}: this is partner {key.partner!r}'s signing key, but {policy_path} is the sharing policy of "
            f"{policy.partner!r}; nothing was sealed",
            hint=f"pass {policy.partner}'s own signing key (keys/{policy.partner}-signing.key), or the policy of "
            f"{key.partner}",
        )
    if epoch is not None and epoch != key.epoch:
        raise KeyMaterialError(
            f"{key.path}: the key file is epoch {key.epoch}, but --key-epoch says {epoch}; nothing was sealed",
            hint="leave out --key-epoch: the epoch is read from the key file",
        )
    return key.key, key.epoch


def _payload(result: ValidationResult, policy: SharingPolicy, link_key: bytes) -> pl.DataFrame:
    """``pseudonym`` + the shared variables of every clean row, ordered by a hash of the pseudonym so that the
    extract's row order (often by BSN or address) does not survive into the bundle."""
    shared = list(policy.shared_variables)
    payload = (
        result.clean.lazy()
        .select(pseudonym_expr(link_key, pl.col(BSN)).alias("pseudonym"), *shared)
        .collect(engine="streaming")
    )
    payload = payload.sort(pl.col("pseudonym").hash(seed=0), maintain_order=False)
    # Minimisation is asserted, not assumed: only the pseudonym and mapped canonical variables may be present.
    leaked = set(payload.columns) & (set(policy.never_share) | {policy.input.bsn_column, BSN})
    if leaked or payload.columns != ["pseudonym", *shared]:
        raise AssertionError("payload columns differ from the sharing policy's shared variables")
    return payload


def _previous_hash(previous: Path | None, partner: str, signing_key: bytes) -> str | None:
    if previous is None:
        return None
    try:
        data = Path(previous).read_bytes()
    except OSError:
        raise InputError(f"{previous}: previous bundle not found or unreadable") from None
    manifest = bundle.read_manifest(data)
    if manifest.partner != partner:
        raise InputError(
            f"{previous}: the previous bundle is partner {manifest.partner!r}'s, not {partner!r}'s",
            hint="pass the last bundle this partner sealed",
        )
    own = crypto.signing_public_key(signing_key)
    if manifest.keys.signing == crypto.fingerprint("ed25519-signing", own):
        bundle.verify_bundle(data, {partner: own})  # our own bundle must verify; older epochs are checked upstream
    return bundle.bundle_digest(data)


def _check_emptiness(extract: RawExtract, policy: SharingPolicy, *, declare_empty: bool) -> None:
    """A header without data rows is refused unless the partner declares the extract empty, and a declaration
    goes only with an extract that really has no rows."""
    if extract.rows == 0 and not declare_empty:
        raise InputError(
            f"{extract.path}: the extract has a header but no data rows; nothing was sealed",
            hint="an empty export is almost always a mistake: export it again. If "
            f"{policy.partner} really holds nobody for the year, run prepare again with --declare-empty --year "
            "YYYY: the bundle then says so in its signed manifest",
        )
    if declare_empty and extract.rows:
        raise InputError(
            f"{extract.path}: --declare-empty, but the extract holds {extract.rows} data rows",
            hint="leave out --declare-empty to seal these rows",
        )


def _reference_year(extract: RawExtract, policy: SharingPolicy, year: int | None) -> int:
    if year is not None:
        return year
    from_name = reference_year_from_filename(extract.path, policy)
    if from_name is not None:
        return from_name
    if extract.rows == 0:
        raise InputError(
            f"{extract.path}: an extract declared empty has no rows to read its reference year from",
            hint="pass --year",
        )
    source = next(s for s, spec in policy.columns.items() if spec.variable == "year")
    dtype = extract.frame.schema[source]
    counts = (
        extract.frame.lazy()
        .select(normalised_text(source, dtype))
        .select(_parse_int(source, dtype).alias("y"))
        .collect()
        .drop_nulls()
        .group_by("y")
        .len()
        .sort(["len", "y"], descending=True)
    )
    if counts.is_empty():
        raise InputError(f"{extract.path}: column {source!r} holds no reference year", hint="pass --year")
    if counts.height > 1 and counts["len"][0] == counts["len"][1]:
        raise InputError(
            f"{extract.path}: column {source!r} holds two reference years equally often", hint="pass --year"
        )
    return int(counts["y"][0])


def _failure_summary(extract: RawExtract, policy: SharingPolicy, result: ValidationResult, report: Path) -> str:
    lines = [
        f"{extract.path}: {result.rows_quarantined} of {result.rows_in} rows are faulty "
        f"({result.fault_rate:.2%}), above the sharing policy's max_fault_rate of {policy.max_fault_rate:.2%}; "
        "nothing was sealed.",
        "  rows per rule (and what the rule expects):",
    ]
    lines += rule_lines(result, indent="    ")
    lines.append(f"  quarantine report ({result.position}, field, variable, rule, expected; no values): {report}")
    return "\n".join(lines)


def rule_lines(result: ValidationResult, *, indent: str = "  ") -> list[str]:
    """``rule: rows`` per rule, each followed by what it expects of each field it failed on."""
    expected = result.expected_by_rule()
    lines: list[str] = []
    for rule, count in result.counts_by_rule().items():
        lines.append(f"{indent}{rule}: {count}")
        lines += [f"{indent}  expected {what}" for what in expected.get(rule, [])]
    return lines
