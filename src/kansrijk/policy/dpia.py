"""The DPIA annex: one Markdown document a data-protection officer can attach, written from the signed policies.

``write_dpia_annex`` reads a policies directory laid out as ``policies/`` is (``sharing/*.toml``,
``analysis/*.toml``, ``factors/*.toml``, ``partners.toml``), the release policy the gate runs under and the threat
model (``docs/threat-model.md``), and writes:

1. the sources: every file with its digest and, with trusted officer keys, who signed it (a file that is not
   validly signed by one of them stops the annex: it documents what is signed, nothing else);
2. per partner, what it shares and in what form, under which purpose and legal basis, what never leaves;
3. what the coordinator holds, who can read it and for how long (the plan's ``[retention]``);
4. the analysis: cohort, outcomes, feature sets, models, minimum positives;
5. the release rules and the DP budget, with epsilon in words;
6. the mitigations: the threat model's attacks and what stops each.

The text depends only on the inputs (no clock, sorted everywhere), so a regenerated annex changes exactly when a
policy does, and its digests show which version it describes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kansrijk.errors import InputError, OutputExists, PolicyError
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.policy.analysis import AnalysisPlan
from kansrijk.policy.common import policy_digest, read_policy_bytes
from kansrijk.policy.factors import FactorModel
from kansrijk.policy.registry import PartnerRegistry
from kansrijk.policy.release import OUTPUT_KINDS, ReleasePolicy, epsilon_in_words, explain_limits
from kansrijk.policy.release import format_number as _number
from kansrijk.policy.sharing import SharingPolicy, describe_column
from kansrijk.policy.signing import OfficerKey, load_policy, verify_policy


@dataclass(frozen=True, slots=True)
class Source:
    path: Path
    kind: str
    digest: str
    signer: str  # fingerprint, or "" when signatures were not checked


@dataclass(frozen=True, slots=True)
class DpiaAnnex:
    path: Path
    sources: tuple[Source, ...]
    partners: tuple[str, ...]
    text: str


def write_dpia_annex(
    policies: Path,
    release_policy: Path,
    threat_model: Path,
    out: Path,
    *,
    officer_keys: Sequence[OfficerKey] = (),
    force: bool = False,
) -> DpiaAnnex:
    """Write the annex (see the module docstring) to ``out`` atomically; ``OutputExists`` unless ``force``.

    With ``officer_keys`` every input policy must carry a valid signature of one of them (``PolicyNotSigned``
    otherwise, nothing written); without, the annex says the signatures were not checked."""
    out = Path(out)
    if out.exists() and not force:
        raise OutputExists(f"{out} exists already", hint="pass --force to regenerate the annex in place")
    policies = Path(policies)
    sharing = sorted((policies / "sharing").glob("*.toml"))
    plans = sorted((policies / "analysis").glob("*.toml"))
    factor_files = sorted((policies / "factors").glob("*.toml"))
    registry_path = policies / "partners.toml"
    if not sharing or len(plans) != 1 or len(factor_files) != 1:
        raise InputError(
            f"{policies}: expected sharing/*.toml (at least one), one analysis/*.toml and one factors/*.toml; found "
            f"{len(sharing)}, {len(plans)} and {len(factor_files)}",
            hint="point --policies at a directory laid out like policies/ with the study's signed files",
        )
    files = [*sharing, plans[0], factor_files[0], Path(release_policy)]
    if registry_path.is_file():
        files.append(registry_path)
    sources, models = [], {}
    for path in files:
        if officer_keys:
            _, digest, signer = verify_policy(path, officer_keys)
        else:
            digest, signer = policy_digest(read_policy_bytes(path)), ""
        kind, model = load_policy(path)
        sources.append(Source(path, kind, digest, signer))
        models[path] = model
    release = models[Path(release_policy)]
    if not isinstance(release, ReleasePolicy):
        raise PolicyError(f"{release_policy}: kind: the annex needs a release policy (kind = \"release\")")
    shared = [models[p] for p in sharing]
    plan, factors = models[plans[0]], models[factor_files[0]]
    assert isinstance(plan, AnalysisPlan) and isinstance(factors, FactorModel)
    registry = models.get(registry_path)
    text = render_annex(
        sources=sources,
        sharing=[s for s in shared if isinstance(s, SharingPolicy)],
        plan=plan,
        factors=factors,
        release=release,
        registry=registry if isinstance(registry, PartnerRegistry) else None,
        threats=threat_rows(Path(threat_model)),
        signatures_checked=bool(officer_keys),
    )
    atomic_write_bytes(out, text.encode("utf-8"), mode=0o644)
    partners = tuple(s.partner for s in shared if isinstance(s, SharingPolicy))
    return DpiaAnnex(out, tuple(sources), partners, text)


def threat_rows(path: Path) -> list[tuple[str, str, str]]:
    """(boundary, attack, what stops it) from the threat model's "Attacks and what stops them" tables."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        raise InputError(
            f"{path}: threat model not found or unreadable", hint="pass --threat-model docs/threat-model.md"
        ) from None
    start = text.find("## Attacks and what stops them")
    if start < 0:
        raise InputError(
            f"{path}: has no section '## Attacks and what stops them'", hint="pass the kansrijk threat model"
        )
    body = text[start:]
    end = body.find("\n## ", 5)
    body = body if end < 0 else body[:end]
    rows: list[tuple[str, str, str]] = []
    boundary = ""
    for line in body.splitlines():
        if line.startswith("### "):
            boundary = line[4:].strip()
        elif line.startswith("| ") and not line.startswith("| attack") and not set(line) <= set("|- "):
            cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
            if len(cells) >= 2:
                rows.append((boundary, cells[0], cells[1]))
    if not rows:
        raise InputError(f"{path}: no attack rows under 'Attacks and what stops them'")
    return rows


def _para(text: str) -> str:
    return " ".join(text.split())


def _cell(text: str) -> str:
    return _para(text).replace("|", "\\|")


def render_annex(
    *,
    sources: Sequence[Source],
    sharing: Sequence[SharingPolicy],
    plan: AnalysisPlan,
    factors: FactorModel,
    release: ReleasePolicy,
    registry: PartnerRegistry | None,
    threats: Sequence[tuple[str, str, str]],
    signatures_checked: bool,
) -> str:
    """The annex as Markdown (deterministic: the same inputs give the same bytes)."""
    out: list[str] = [
        f"# DPIA annex: {plan.title}",
        "",
        "Generated by `kansrijk policy dpia` from the policies listed under *Sources*; regenerate it whenever one of "
        "them changes (the digests say which version this annex describes). It states what the signed files say; "
        "it adds no promise of its own.",
        "",
        "## Sources",
        "",
        "| file | kind | digest | signed by |",
        "|---|---|---|---|",
    ]
    for s in sources:
        signed = f"officer key {s.signer}" if s.signer else "signature not checked"
        out.append(f"| `{s.path.name}` | {s.kind} | `{s.digest}` | {signed} |")
    if not signatures_checked:
        out += ["", "**Signatures were not checked** (no `--officer-key`): check them before attaching this annex."]

    out += ["", "## 1. Purpose, legal basis and what each partner shares", ""]
    for policy in sorted(sharing, key=lambda p: p.partner):
        out += [
            f"### {policy.partner}",
            "",
            f"- **Purpose:** {_para(policy.purpose)}",
            f"- **Legal basis:** {_para(policy.legal_basis)}",
            f"- **Reviewed by:** {policy.reviewed_by}, {policy.reviewed_on}",
            f"- **Identity:** the BSN (`{policy.input.bsn_column}`) never leaves the partner; it is replaced there by "
            "a keyed pseudonym (HMAC-SHA256 under the link key the partners share and the coordinator never holds).",
            "- **Shared, and in what form** (nothing else leaves):",
            *(f"  - {describe_column(src, spec)}" for src, spec in policy.columns.items()),
        ]
        if policy.sdq is not None:
            out.append(f"  - the SDQ answers → only the scores {', '.join(policy.sdq.share.values())}")
        out += [
            f"- **Never shared** (asserted absent from every bundle): {', '.join(policy.never_share) or 'none listed'}",
            f"- **Faulty rows** stay at the partner (local quarantine report, no values); above "
            f"{policy.max_fault_rate:.0%} faulty rows nothing is sealed.",
            "",
        ]
    if registry is not None:
        out += ["Accepted from each partner (partner registry): signing keys and sharing-policy digests.", ""]
        out += ["| partner | active keys (epoch: fingerprint) | approved sharing-policy digests |", "|---|---|---|"]
        for name in sorted(registry.partners):
            entry = registry.partners[name]
            keys = ", ".join(f"{k.epoch}: `{k.fingerprint}`" for k in entry.keys if k.status == "active") or "none"
            digests = ", ".join(f"`{d}`" for d in entry.allowed_policy_digests)
            out.append(f"| {name} | {keys} | {digests} |")
        out.append("")

    out += [
        "## 2. What the coordinator holds, who can read it, for how long",
        "",
        "- Each partner's bundle is encrypted for the coordinator only and signed by the partner; the coordinator "
        "replaces every pseudonym by its own keyed pseudonym at ingest, so it holds neither a BSN nor a pseudonym a "
        "partner could recompute.",
        "- Person-level data at the coordinator: one table per partner and reference year, the linked analysis "
        "dataset per year, the internal linkage report (counts only), under `WS/tables/`, `WS/dataset/`, "
        "`WS/internal/`; the keys under `WS/keys/`, encrypted.",
        "- Deployed, only the release gate's own OS user can read them; the operator works through the gate's socket "
        "and reads only released outputs. Nothing leaves except through the release gate (section 4).",
    ]
    if plan.retention is not None:
        out += [
            f"- **Retention:** until {plan.retention.workspace_until}. Then: {_para(plan.retention.after)}",
        ]
    else:
        out += [
            "- **Retention: not stated in the analysis plan.** Add a `[retention]` section (`workspace_until`, "
            "`after`) and sign it before this annex is final.",
        ]

    reference = "every linked year" if plan.cohort.reference_years == "all" else ", ".join(
        str(y) for y in plan.cohort.reference_years)  # fmt: skip
    out += [
        "",
        "## 3. The analysis",
        "",
        f"- **Cohort:** persons aged {plan.cohort.min_age} to {plan.cohort.max_age} in the reference year; "
        f"{reference}" + (", each year alone and pooled." if plan.cohort.pooled else ", each year alone."),
        f"- **Outcomes:** {', '.join(sorted(plan.outcomes))}; an outcome with fewer positives than "
        f"{plan.model.min_positives} (or its own minimum) is not modelled.",
        f"- **Feature sets:** {', '.join(plan.feature_sets)}; the factor model '{factors.title}' with "
        f"{len(factors.factors)} factors ({sum(bool(f.indicators) for f in factors.factors)} with an indicator in "
        "the data).",
        f"- **Models:** decision trees (depths {', '.join(map(str, plan.model.max_depth))}, leaves of at least "
        f"{min(plan.model.min_samples_leaf)} training persons), evaluated out of fold; "
        + ("released trees go to the gate as structures it recounts." if plan.release_trees else "no tree released."),
        "- No decision about any individual is taken: the outputs are population-level statistics and models.",
        "",
        "## 4. Release rules and the DP budget",
        "",
        f"Release policy '{release.title}'. Only {', '.join(repr(r) for r in release.requesters.allowed)} may "
        "request a release; every request, released or refused, is a signed entry in the gate's ledger.",
        "",
        "| output kind | how it is protected |",
        "|---|---|",
    ]
    for kind in OUTPUT_KINDS:
        rule = release.rule_for(kind)
        eps = _number(rule.epsilon) if rule.epsilon is not None else ""
        how = {
            "sdc": "output checking on the exact values",
            "dp": f"differential privacy (ε {eps} per release), no output checking",
            "dp+sdc": f"output checking, then differential privacy (ε {eps} per release)",
        }[rule.method]
        out.append(f"| {kind} | {how} |")
    out.append("")
    if release.dp is not None:
        per = sorted({r.epsilon for r in release.outputs.values() if r.epsilon is not None})
        out += [
            f"**DP budget:** ε at most {_number(release.dp.epsilon_total)} in total "
            f"(δ {_number(release.dp.delta_total)}) over all releases about the persons of the workspace, at most "
            f"{_number(release.dp.epsilon_per_release_max)} per release; "
            "the budget belongs to the persons (the workspace's pseudonym key), not to a policy's name, and is "
            "checked and debited before any noise is drawn.",
            "",
            "What ε means for one person: "
            + epsilon_in_words(per[0] if per else release.dp.epsilon_per_release_max, release.dp.epsilon_total),
            "",
        ]
    else:
        out += ["**DP:** not used; every output is output-checked.", ""]
    out += [f"{line}" for line in explain_limits(release)]
    out += [
        "",
        "An output the gate refused can be released only after a privacy officer reviews it and signs an approval "
        "for exactly that request and its refusing rules (never for a DP-budget refusal); the approval is recorded "
        "in the ledger entry of the release.",
        "",
        "## 5. Mitigations (threat model)",
        "",
        "| where | risk | what stops it |",
        "|---|---|---|",
    ]
    out += [f"| {_cell(b)} | {_cell(a)} | {_cell(m)} |" for b, a, m in threats]
    out.append("")
    return "\n".join(out)


__all__ = ["DpiaAnnex", "Source", "render_annex", "threat_rows", "write_dpia_annex"]
