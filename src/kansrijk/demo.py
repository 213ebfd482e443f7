"""`kansrijk demo`: the whole pipeline on the synthetic city, every role played once, in one directory.

This module is a composition root like ``kansrijk.cli``: it is the one place outside the CLI root that imports
both roles (``node_agent`` and ``coordinator``), and it only calls their library functions, in the order the
real parties would act:

1. the synthetic city writes each partner's raw extract (``kansrijk.synth``);
2. key ceremony: each partner makes its signing key, one link key is made and copied to every partner, the
   privacy officer makes a signing key;
3. the privacy officer writes the partner registry for those keys and signs it, the release policy, the
   analysis plan and the factor model;
4. the coordinator creates its workspace (HPKE key, coordinator pseudonym key, the release gate's signing
   key) and installs the registry;
5. each partner's node agent validates, minimises, pseudonymises and seals its extracts into its outbox;
6. the coordinator ingests the bundles, links them, and runs the signed analysis plan through the release gate
   (the run's copy of the plan adds a differentially private tree for psychosocial risk next to the non-private
   tree, so the report shows what privacy costs; the release policy is ``dp-models.toml``, which allows it). The
   analysis runs inside a gate service the demo starts as its own process (``kansrijk gate serve``) and stops
   at the end: the operator's side sends the signed plan over the service's local socket, the gate trains and
   releases on its side. The demo runs the service under the same OS user as itself, so the process boundary
   holds but the file boundary does not; in deployment the gate has its own user (docs/deployment.md);
7. the review route: the analyst asks for a refused output (a hand-built one-split tree on sex, refused on the
   training rule because it was built without a minimum leaf size) to be reviewed, with a justification; the
   privacy officer reads the request and signs an approval (``officer/reviews/R000001.json``); the gate verifies
   it and releases the tree with the approval in its ledger entry (``kansrijk.gate.review``);
8. the report is built from ``WS/released/`` only, the ledger is verified, and the privacy officer signs its
   head (an anchor kept outside the workspace: ``officer/ledger-anchor.json``).

Layout of ``--out`` (README.txt in it says the same)::

    city/                 the synthetic city: extracts/ (partners' raw files) and ground_truth/ (kept apart)
    officer/              the privacy officer's signing key pair, the signed ledger anchor, reviews/ (decisions)
    policies/             the policies as signed for this run (each FILE has FILE.sig), partners.toml included
    partners/<p>/keys/    partner p's signing key pair and its copy of the link key
    partners/<p>/outbox/  the sealed bundles partner p hands over
    partners/<p>/quarantine/  rows that failed validation (never shared)
    coordinator/          the coordinator workspace (WS): keys, tables, dataset, ledger.sqlite, released/
    gate-service.log      the gate service's log: one line per request, with the caller's uid and pid
    report.html           the report built from coordinator/released/
    DEMO-PASSPHRASE       the generated passphrase of every key file (only when none was given)

The passphrase protects every key file of the run. It comes from ``$KANSRIJK_PASSPHRASE`` when set; otherwise
one is generated and written to ``DEMO-PASSPHRASE`` (mode 0600) so the commands can be re-run by hand. That is
for a demo only: real parties each hold their own passphrase.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any

import typer

from kansrijk import crypto
from kansrijk.errors import InputError, OutputExists
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.schema import PARTNERS, SCHEMA_VERSION

PASSPHRASE_ENV = "KANSRIJK_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)
PASSPHRASE_FILE = "DEMO-PASSPHRASE"  # noqa: S105 (a file name)
ANCHOR_FILE = "ledger-anchor.json"
GATE_LOG = "gate-service.log"
# dp-models.toml is dp-sdc.toml (same output rules, same per-table epsilon) plus a [dp_model] section and a budget
# large enough for the DP models: every release the demo made under dp-sdc.toml passes under it unchanged.
RELEASE_POLICY = Path("release") / "dp-models.toml"
ANALYSIS_PLAN = Path("analysis") / "rotterdam-groeit.toml"
FACTOR_MODEL = Path("factors") / "factor-model.toml"
# The outcome the demo also models with differential privacy (the most common one), the model and its epsilon per
# feature set: two DP models in all, next to the non-private trees of the same outcome.
DP_OUTCOME = "psychosocial_risk"
DP_MODEL = "dp_tree"
DP_EPSILON = Fraction(1)
PARTNER_DESCRIPTIONS = {
    "cbs": "Statistics Netherlands (CBS)",
    "gemeente": "Gemeente Rotterdam (municipality)",
    "cjg": "Centrum voor Jeugd en Gezin (youth health service)",
    "duo": "Dienst Uitvoering Onderwijs (education register)",
}
STAGES = (
    "generate the synthetic city",
    "key ceremony",
    "privacy officer signs the policies",
    "coordinator creates its workspace",
    "node agents seal their extracts",
    "coordinator ingests the bundles",
    "coordinator links the partners",
    "analysis through the release gate",
    "privacy officer reviews a refused output",
    "report from released outputs",
    "verify the ledger",
)


class DemoProgress:
    """What the demo reports while it runs. The CLI renders it with rich; tests pass the silent default."""

    def stage(self, index: int, name: str) -> None:
        """Stage ``index`` (0-based, of ``len(STAGES)``) starts."""

    def total(self, steps: int) -> None:
        """The current stage has ``steps`` units of work."""

    def advance(self, steps: int = 1) -> None:
        """``steps`` units of the current stage are done."""

    def note(self, text: str) -> None:
        """A line worth showing (what was made, where)."""


@dataclass(frozen=True, slots=True)
class DemoOptions:
    out: Path
    persons: int = 150_000
    years: tuple[int, ...] = (2023,)
    seed: int = 7
    fault_rate: float = 0.005
    force: bool = False
    min_positives: int | None = None  # lowers the plan's model.min_positives in this run's copy (small cities)


@dataclass(frozen=True, slots=True)
class DpModelLine:
    """One differentially private model of the run, as the gate answered it (numbers only when released)."""

    name: str
    outcome: str
    feature_set: str
    verdict: str
    model: str
    epsilon: Fraction
    roc_auc: float | None = None  # noisy (DP), from the release file


@dataclass(frozen=True, slots=True)
class DemoResult:
    """What the run produced, with the numbers of the terminal summary (all from released outputs, the ledger,
    or the parties' own counts: none is person-level)."""

    out: Path
    workspace: Path
    report: Path
    passphrase_source: str
    bundles: int
    rows_in: int
    rows_quarantined: int
    linked_persons: dict[int, int]
    excluded_persons: dict[int, int]
    models: int
    dp_models: tuple[DpModelLine, ...]
    released: int
    suppressed: int
    refused: int
    epsilon_spent: Fraction
    epsilon_total: Fraction | None
    ledger_entries: int
    ledger_head: str
    files_checked: int
    anchor: Path | None = None
    review: str = ""  # what the review route did, in one line
    seconds: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def epsilon_left(self) -> Fraction | None:
        return None if self.epsilon_total is None else self.epsilon_total - self.epsilon_spent

    @property
    def epsilon_dp_models(self) -> Fraction:
        """The part of ``epsilon_spent`` the released DP models spent (a refused model spends nothing)."""
        return sum((m.epsilon for m in self.dp_models if m.verdict == "released"), Fraction(0))

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())


# --- helpers -----------------------------------------------------------------------------------------------
def example_policies() -> Path:
    """The example policy files: ``policies/`` of the source tree, or ``kansrijk/_policies`` in a wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[2] / "policies", here.parent / "_policies"):
        if (candidate / RELEASE_POLICY).is_file():
            return candidate
    raise InputError(
        "the example policy files were not found (policies/ in the source tree, kansrijk/_policies in a wheel)",
        hint="reinstall kansrijk (pip install -e .) or run from a checkout",
    )


def prepare_out(out: Path, *, force: bool) -> None:
    """Make ``out`` an empty directory. A non-empty one is refused unless ``force``, which clears it first.

    Never clears a directory that holds a source checkout, the current directory or one of its parents.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExists(f"{out}: exists and is not a directory", hint="choose another --out")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExists(
                f"{out}: exists and is not empty; refusing to mix two demo runs",
                hint="pass --force to clear it first, or choose another --out",
            )
        resolved, cwd = out.resolve(), Path.cwd().resolve()
        if resolved in (cwd, *cwd.parents) or resolved == Path.home().resolve():
            raise OutputExists(f"{out}: is the current directory, a parent of it or the home directory; not clearing")
        if any((resolved / marker).exists() for marker in (".git", "pyproject.toml", "src")):
            raise OutputExists(f"{out}: looks like a source checkout, not a demo run; not clearing it")
        for child in resolved.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    out.mkdir(parents=True, exist_ok=True)


def check_options(options: DemoOptions) -> None:
    """Refuse options the run would only fail on later (``InputError``), before ``--out`` is touched."""
    if options.persons < 100:
        raise InputError(
            f"--persons {options.persons}: the city needs at least 100 persons", hint="e.g. --persons 5000"
        )
    if not options.years or len(set(options.years)) != len(options.years):
        raise InputError("--years must name distinct reference years", hint="e.g. --years 2022,2023")
    if any(not 2000 <= y <= 2100 for y in options.years):
        raise InputError("--years must lie between 2000 and 2100", hint="e.g. --years 2023")
    if options.min_positives is not None and options.min_positives < 1:
        raise InputError(f"--min-positives {options.min_positives}: must be at least 1")


def demo_passphrase(out: Path) -> tuple[str, str]:
    """(passphrase, where it came from). From ``$KANSRIJK_PASSPHRASE``, else generated and saved (0600)."""
    value = os.environ.get(PASSPHRASE_ENV)
    if value:
        return value, f"from ${PASSPHRASE_ENV}"
    value = secrets.token_urlsafe(24)
    path = Path(out) / PASSPHRASE_FILE
    atomic_write_bytes(path, (value + "\n").encode(), mode=0o600)
    return value, f"generated for this demo and saved in {path} (mode 0600; demo only)"


def _set_min_positives(plan: Path, value: int) -> None:
    """Rewrite ``min_positives = N`` in the plan's ``[model]`` table (before the officer signs the copy)."""
    if value < 1:
        raise InputError(f"--min-positives {value}: must be at least 1")
    text = plan.read_text(encoding="utf-8")
    new, count = re.subn(
        r"^min_positives\s*=\s*\d+.*$",
        f"min_positives = {value}   # set by `kansrijk demo --min-positives` for a small city",
        text,
        count=1,
        flags=re.MULTILINE,
    )
    if count != 1:
        raise InputError(f"{plan}: no 'min_positives = N' line to change", hint="run the demo without --min-positives")
    atomic_write_bytes(plan, new.encode("utf-8"))


def _add_dp_model(plan: Path, outcome: str, model: str, epsilon: Fraction) -> None:
    """Ask the plan for ``model`` next to the non-private tree of ``outcome`` (before the officer signs the copy).

    The shipped plan's ``[outcomes.<outcome>]`` table is empty; an edited plan that already chooses a model for
    it is refused rather than silently overridden.
    """
    text = plan.read_text(encoding="utf-8")
    header = re.compile(rf"^\[outcomes\.{re.escape(outcome)}\][ \t]*(#.*)?$", flags=re.MULTILINE)
    found = header.search(text)
    if found is None:
        raise InputError(f"{plan}: no [outcomes.{outcome}] table to add a DP model to", hint="restore the shipped plan")
    rest = text[found.end() :]
    table = rest[: m.start()] if (m := re.search(r"^\[", rest, flags=re.MULTILINE)) else rest
    if re.search(r"^\s*(model|models|epsilon)\s*=", table, flags=re.MULTILINE):
        raise InputError(
            f"{plan}: [outcomes.{outcome}] already chooses its model; the demo adds the DP model itself",
            hint="restore the shipped plan",
        )
    added = (
        f'\nmodels = ["tree", "{model}"]   # added by `kansrijk demo`: the DP model next to the non-private tree'
        f'\nepsilon = "{epsilon}"              # per DP model (one per feature set), from the release policy\'s budget'
    )
    atomic_write_bytes(plan, (text[: found.end()] + added + text[found.end() :]).encode("utf-8"))


def _released_values(released: Path, name: str) -> dict[str, Any]:
    """The values of a release, from the gate's document in ``released/`` (what the report reads too)."""
    path = released / f"{name}.json"
    if not path.is_file():
        return {}
    values = json.loads(path.read_text(encoding="utf-8")).get("values")
    return values if isinstance(values, dict) else {}


def _dp_model_lines(lines: Sequence[Any], released: Path) -> tuple[DpModelLine, ...]:
    """The analysis summary's DP model lines (``part == "dp_model"``), with the gate's verdict and the noisy AUC
    from the released document (the service's summary carries the verdicts, ``released/`` the numbers)."""
    out = []
    for line in lines:
        if line.part != "dp_model":
            continue
        values = line.released or (_released_values(released, line.name) if line.verdict != "refused" else {})
        auc = (values.get("metrics") or {}).get("roc_auc")
        out.append(
            DpModelLine(
                name=line.name,
                outcome=line.outcome,
                feature_set=line.feature_set,
                verdict=line.verdict,
                model=str(values.get("model") or DP_MODEL),
                epsilon=Fraction(str((values.get("epsilon") or {}).get("total") or DP_EPSILON)),
                roc_auc=float(auc) if isinstance(auc, int | float) else None,
            )
        )
    return tuple(out)


REVIEW_JUSTIFICATION = (
    "a one-split tree on sex, built by hand to show the outcome's rate per sex in tree form; it was built without "
    "a minimum leaf size, but each of its two leaves holds every person of one sex"
)


def _review_round(
    workspace: Path, release_policy: Path, officer_dir: Path, passphrase: str, year: int, show: DemoProgress
) -> str:
    """The review route once: the analyst's tree is refused, put to review, approved by the officer and released
    with the approval in the ledger. Returns one line for the summary."""
    from kansrijk.gate.release import Gate
    from kansrijk.gate.review import apply_decision, request_review, sign_decision
    from kansrijk.gate.specs import SplitNode, TreeSpec, where
    from node_agent.keys import load_signing_key

    officer_pub = officer_dir / "officer-signing.pub"
    tree = TreeSpec(
        name=f"{year}.psychosocial_risk.sex_tree",
        description="Psychosocial risk by sex as a one-split tree, built by hand without a minimum leaf size "
        "(min_samples_leaf 1): refused on the training rule, released on the privacy officer's review.",
        years=(year,),
        population=(where("age_years", ">=", 0), where("age_years", "<=", 23)),
        outcome="psychosocial_risk",
        features=("sex",),
        nodes=(SplitNode(node_id=0, var="sex", categories=("F",), left=1, right=2), SplitNode(node_id=1),
               SplitNode(node_id=2)),
        min_samples_leaf=1,
        max_depth=1,
    )
    with Gate.open(workspace, release_policy, [officer_pub], passphrase=passphrase) as gate:
        refused = gate.release(tree, requested_by="analysis")
        if refused.outcome != "refused":
            return f"none needed: {tree.name} was {refused.outcome}"
        review = request_review(gate, refused.entry_id, justification=REVIEW_JUSTIFICATION)
    show.advance()
    decision = officer_dir / "reviews" / f"{review.review_id}.json"
    decision.parent.mkdir(parents=True, exist_ok=True)
    officer_key = load_signing_key(officer_dir / "officer-signing.key", passphrase)
    sign_decision(workspace, review.review_id, officer_key, approve=True, out=decision,
                  note="both leaves hold thousands of persons; the training rule is a proxy here")  # fmt: skip
    del officer_key
    show.advance()
    with Gate.open(workspace, release_policy, [officer_pub], passphrase=passphrase) as gate:
        applied = apply_decision(gate, decision, [officer_pub])
    show.advance()
    result = applied.result
    if result is None or result.outcome == "refused":
        return f"{review.review_id}: {tree.name} approved, then refused at release ({applied.review.status})"
    return (
        f"{review.review_id}: {tree.name} refused ({refused.entry_id}), approved by the officer "
        f"({decision.relative_to(officer_dir.parent)}), {result.outcome} as {result.entry_id}"
    )


def _copy_secret(source: Path, target: Path) -> None:
    atomic_write_bytes(target, source.read_bytes(), mode=0o600)


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=dict)
    _start: float = 0.0
    _name: str = ""

    def start(self, name: str) -> None:
        self.stop()
        self._name, self._start = name, time.perf_counter()

    def stop(self) -> None:
        if self._name:
            self.seconds[self._name] = time.perf_counter() - self._start
            self._name = ""


# --- the run -----------------------------------------------------------------------------------------------
def run_demo(options: DemoOptions, progress: DemoProgress | None = None) -> DemoResult:
    """Run every stage (see the module docstring) into ``options.out``; returns the summary numbers.

    Refuses a non-empty ``out`` unless ``options.force``. Any stage's ``KansrijkError`` stops the run with
    that error (what was written so far stays, for inspection).
    """
    # Imported here: the roles are composed only when the demo runs (and the CLI root stays quick to load).
    from coordinator.ingest import IngestSession
    from coordinator.link import gate_release_hook, link_workspace
    from coordinator.report import build_report
    from coordinator.service.client import run_analysis_via_gate
    from coordinator.service.process import running_gate, socket_path_in
    from coordinator.workspace import init_workspace
    from kansrijk.gate.anchor import anchor_ledger, check_anchor
    from kansrijk.gate.ledger import entries, open_existing, verify_ledger
    from kansrijk.policy.registry import partner_key_from_bytes, render_registry, with_partner
    from kansrijk.policy.release import load_release_policy
    from kansrijk.policy.sharing import load_sharing_policy
    from kansrijk.policy.signing import sign_policy
    from kansrijk.synth.city import generate_city
    from node_agent.keys import (
        generate_partner_keys,
        load_coordinator_key,
        load_link_key,
        load_partner_signing_key,
        load_signing_key,
        new_link_key,
    )
    from node_agent.prepare import prepare_extract

    show = progress or DemoProgress()
    timer = _Timer()
    out = Path(options.out)
    years = tuple(sorted(options.years))
    check_options(options)  # before anything is written: a bad option must not leave a half-made --out
    prepare_out(out, force=options.force)
    passphrase, passphrase_source = demo_passphrase(out)
    notes: list[str] = [f"key passphrase {passphrase_source}"]

    def stage(index: int) -> None:
        timer.start(STAGES[index])
        show.stage(index, STAGES[index])

    # 1. the synthetic city ---------------------------------------------------------------------------------
    stage(0)
    show.total(1)
    city = generate_city(
        out / "city", persons=options.persons, seed=options.seed, years=years, fault_rate=options.fault_rate
    )
    show.advance()

    # 2. keys ---------------------------------------------------------------------------------------------
    stage(1)
    show.total(len(PARTNERS) + 2)
    officer_dir = out / "officer"
    officer_dir.mkdir()
    officer_private, officer_public = crypto.generate_signing_key()
    crypto.write_secret_key(
        officer_dir / "officer-signing.key", "ed25519-signing", officer_private, passphrase, label="privacy officer"
    )
    officer_pub = officer_dir / "officer-signing.pub"
    crypto.write_public_key(officer_pub, "ed25519-signing", officer_public, label="privacy officer")
    show.advance()
    ceremony_link_key = out / "partners" / "link.key"
    ceremony_link_key.parent.mkdir(parents=True)
    new_link_key(ceremony_link_key, passphrase)
    show.advance()
    partner_keys = {}
    for partner in PARTNERS:
        keys_dir = out / "partners" / partner / "keys"
        keys_dir.mkdir(parents=True)
        partner_keys[partner] = generate_partner_keys(partner, keys_dir, passphrase)
        _copy_secret(ceremony_link_key, keys_dir / "link.key")  # each partner holds its own copy
        show.advance()
    ceremony_link_key.unlink()  # the ceremony's copy is not kept

    # 3. the privacy officer's policies ---------------------------------------------------------------------
    stage(2)
    source = example_policies()
    policies = out / "policies"
    shutil.copytree(source, policies, ignore=shutil.ignore_patterns("*.sig", "partners.toml"))
    registry = None
    for partner in PARTNERS:
        _, digest = load_sharing_policy(policies / "sharing" / f"{partner}.toml")
        public = crypto.read_public_key(partner_keys[partner].public_key, "ed25519-signing").key
        registry = with_partner(
            registry,
            partner,
            key=partner_key_from_bytes(public, epoch=partner_keys[partner].epoch),
            schema_versions=[SCHEMA_VERSION],
            policy_digests=[digest],
            description=PARTNER_DESCRIPTIONS.get(partner, ""),
        )
    assert registry is not None
    registry_path = policies / "partners.toml"
    atomic_write_bytes(
        registry_path,
        (
            "# Partner registry written by `kansrijk demo` for this run's fresh keys.\n" + render_registry(registry)
        ).encode(),
    )
    to_sign = [registry_path, policies / RELEASE_POLICY, policies / ANALYSIS_PLAN, policies / FACTOR_MODEL]
    _add_dp_model(policies / ANALYSIS_PLAN, DP_OUTCOME, DP_MODEL, DP_EPSILON)
    notes.append(
        f"the analysis plan's copy in policies/analysis/ adds a {DP_MODEL} (ε {DP_EPSILON} per feature set) for "
        f"{DP_OUTCOME.replace('_', ' ')} next to its non-private tree, under policies/{RELEASE_POLICY}"
    )
    if options.min_positives is not None:
        _set_min_positives(policies / ANALYSIS_PLAN, options.min_positives)
        notes.append(
            f"the analysis plan's model.min_positives was set to {options.min_positives} for this run "
            "(--min-positives); the signed copy in policies/analysis/ says so"
        )
    # Sharing policies are approved twice over: by digest in the signed registry (what ingest checks) and by
    # their own signatures (what a partner can check before preparing an extract).
    to_sign += sorted((policies / "sharing").glob("*.toml"))
    show.total(len(to_sign))
    officer_key = load_signing_key(officer_dir / "officer-signing.key", passphrase)
    for path in to_sign:
        sign_policy(path, officer_key)
        show.advance()
    del officer_key

    # 4. the coordinator's workspace -------------------------------------------------------------------------
    stage(3)
    show.total(1)
    workspace = out / "coordinator"
    init = init_workspace(workspace, passphrase, registry=registry_path, officer_keys=[officer_pub])
    show.advance()
    coordinator_public = load_coordinator_key(init.hpke_public_path)

    # 5. node agents -----------------------------------------------------------------------------------------
    stage(4)
    show.total(len(PARTNERS) * len(years))
    bundles: list[Path] = []
    rows_in = rows_quarantined = 0
    for partner in PARTNERS:
        keys_dir = out / "partners" / partner / "keys"
        signing_key = load_partner_signing_key(partner_keys[partner].secret_key, passphrase)
        link_key = load_link_key(keys_dir / "link.key", passphrase)
        previous: Path | None = None
        for year in years:
            result = prepare_extract(
                policy_path=policies / "sharing" / f"{partner}.toml",
                input_path=city.extracts[(partner, year)],
                out_dir=out / "partners" / partner / "outbox",
                signing_key=signing_key,
                link_key=link_key,
                coordinator_public_key=coordinator_public,
                previous_bundle=previous,
                quarantine_dir=out / "partners" / partner / "quarantine",
                year=year,
            )
            previous = result.bundle_path
            bundles.append(result.bundle_path)
            rows_in += result.rows_in
            rows_quarantined += result.rows_quarantined
            show.advance()
        del signing_key, link_key

    # 6. ingest ----------------------------------------------------------------------------------------------
    stage(5)
    show.total(len(bundles))
    session = IngestSession.open(workspace, passphrase)
    for path in sorted(bundles, key=lambda p: (p.name.split("_")[1], p.name)):  # year order per partner chain
        outcome = session.ingest(path)
        if outcome.error is not None:
            raise outcome.error
        show.advance()
    del session

    # 7. link ------------------------------------------------------------------------------------------------
    stage(6)
    show.total(len(years))
    linked = link_workspace(
        workspace,
        release=gate_release_hook(policies / RELEASE_POLICY, [officer_pub], passphrase=passphrase),
        progress=lambda _msg: show.advance(0),
    )
    show.advance(len(years))

    # 8. analysis, in a gate service of its own ------------------------------------------------------------
    stage(7)
    with running_gate(
        workspace,
        policies / RELEASE_POLICY,
        [officer_pub],
        socket_path=socket_path_in(out),
        log_path=out / GATE_LOG,
        env={**os.environ, PASSPHRASE_ENV: passphrase},
    ) as gate:
        notes.append(
            f"the analysis ran in a gate service (pid {gate.process.pid}) the demo started and stopped, under the same "
            f"OS user as the demo; in deployment the gate runs as its own user (docs/deployment.md); log: {GATE_LOG}"
        )
        analysis = run_analysis_via_gate(
            gate.socket_path,
            policies / ANALYSIS_PLAN,
            policies / FACTOR_MODEL,
            progress_total=show.total,
            progress=show.advance,
        )

    # 9. the review route: a refused output put to the privacy officer ---------------------------------------
    stage(8)
    show.total(3)
    review = _review_round(workspace, policies / RELEASE_POLICY, officer_dir, passphrase, years[-1], show)

    # 10. report ---------------------------------------------------------------------------------------------
    stage(9)
    show.total(1)
    report = build_report(workspace, out / "report.html", release_policy=policies / RELEASE_POLICY)
    show.advance()

    # 11. ledger ---------------------------------------------------------------------------------------------
    stage(10)
    show.total(1)
    verified = verify_ledger(workspace)
    officer_key = load_signing_key(officer_dir / "officer-signing.key", passphrase)
    anchor_ledger(workspace, officer_key, officer_dir / ANCHOR_FILE)
    del officer_key
    check_anchor(workspace, officer_dir / ANCHOR_FILE, [officer_pub])
    conn = open_existing(workspace)
    try:
        outcomes = [e.outcome for e in entries(conn)]
    finally:
        conn.close()
    show.advance()
    timer.stop()

    policy = load_release_policy(policies / RELEASE_POLICY)
    _write_readme(out)
    return DemoResult(
        out=out,
        workspace=workspace,
        report=report.path,
        passphrase_source=passphrase_source,
        bundles=len(bundles),
        rows_in=rows_in,
        rows_quarantined=rows_quarantined,
        linked_persons={y.year: y.report.persons_in_dataset for y in linked.years},
        excluded_persons={y.year: y.report.excluded_unresolved for y in linked.years},
        models=sum(1 for line in analysis.lines if line.part == "metrics" and line.verdict != "refused"),
        dp_models=_dp_model_lines(analysis.lines, workspace / "released"),
        released=outcomes.count("released"),
        suppressed=outcomes.count("suppressed"),
        refused=outcomes.count("refused"),
        epsilon_spent=sum(verified.epsilon_spent.values(), Fraction(0)),
        epsilon_total=policy.dp.epsilon_total if policy.dp is not None else None,
        ledger_entries=verified.entries,
        ledger_head=verified.head_hash,
        anchor=officer_dir / ANCHOR_FILE,
        files_checked=verified.files_checked,
        review=review,
        seconds=dict(timer.seconds),
        notes=tuple(notes),
    )


def _write_readme(out: Path) -> None:
    text = (__doc__ or "").split("Layout of ``--out`` (README.txt in it says the same)::", 1)[-1]
    layout = text.split("The passphrase protects", 1)[0]
    body = (
        "kansrijk demo run: every role played once on the synthetic city.\n\n"
        + "\n".join(line[4:] if line.startswith("    ") else line for line in layout.strip("\n").splitlines())
        + "\n\nRe-run a step by hand, e.g.:\n"
        + f"  export {PASSPHRASE_ENV}=$(cat {out}/{PASSPHRASE_FILE})   # when the passphrase was generated\n"
        + f"  kansrijk coordinator status {out}/coordinator\n"
        + f"  kansrijk ledger verify {out}/coordinator --anchor {out}/officer/{ANCHOR_FILE} "
        + f"--officer-key {out}/officer/officer-signing.pub\n"
        + f"  kansrijk coordinator report {out}/coordinator --out {out}/report.html --force "
        + f"--policy {out}/policies/{RELEASE_POLICY}\n"
        + f"  kansrijk review list {out}/coordinator        # the review route: request, decision, release\n"
        + f"  kansrijk review show {out}/coordinator R000001\n"
        + "\nThe gate service. The analysis ran in a release gate of its own process: the demo started\n"
        + "`kansrijk gate serve`, sent it the signed plan and factor model over its local socket, the gate trained\n"
        + "and released on its side, and the demo stopped it. It ran under the same OS user as the demo, so the\n"
        + "process boundary holds but not the file boundary: in deployment the gate runs as its own user, the only\n"
        + "one that can read the dataset, the keys and the ledger (docs/deployment.md, `kansrijk gate harden`).\n"
        + "Start one by hand and ask it:\n"
        + f"  kansrijk gate serve {out}/coordinator --release-policy {out}/policies/{RELEASE_POLICY} "
        + f"--officer-key {out}/officer/officer-signing.pub --socket /tmp/kansrijk-gate.sock &\n"
        + "  kansrijk gate status --socket /tmp/kansrijk-gate.sock\n"
        + "  kansrijk gate ledger --socket /tmp/kansrijk-gate.sock\n"
        + "  kill %1   # SIGTERM: the service stops and removes its socket\n"
    )
    atomic_write_bytes(out / "README.txt", body.encode())


def parse_years(text: str) -> tuple[int, ...]:
    """``"2022,2023"`` → ``(2022, 2023)``; ``InputError`` on anything else."""
    try:
        years = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(
            f"--years {text!r}: not a comma-separated list of years", hint="e.g. --years 2022,2023"
        ) from None
    if not years:
        raise InputError("--years is empty", hint="e.g. --years 2023")
    return years


def summary_rows(result: DemoResult) -> Sequence[tuple[str, str]]:
    """The terminal summary as (what, value) rows."""
    from coordinator.report import fmt_fraction

    linked = ", ".join(f"{y}: {n:,}".replace(",", " ") for y, n in sorted(result.linked_persons.items()))
    groups: dict[tuple[str, str, Fraction], list[str]] = {}
    for m in result.dp_models:  # one entry per outcome, model and epsilon; one AUC per feature set
        fs = {"all": "all variables", "factor_model": "factor model"}.get(m.feature_set, m.feature_set)
        auc = "refused" if m.verdict == "refused" else "–" if m.roc_auc is None else f"≈ {m.roc_auc:.3f}"
        groups.setdefault((m.outcome, m.model, m.epsilon), []).append(f"{auc} ({fs})")
    dp_parts = [
        f"{outcome.replace('_', ' ')}, {model} ε {fmt_fraction(eps)} each: ROC AUC {', '.join(aucs)}"
        for (outcome, model, eps), aucs in groups.items()
    ]
    eps_dp = result.epsilon_dp_models
    spent = f"{fmt_fraction(result.epsilon_spent)} / {fmt_fraction(result.epsilon_left)}"
    if eps_dp:
        spent += f" (DP models {fmt_fraction(eps_dp)}, noisy tables {fmt_fraction(result.epsilon_spent - eps_dp)})"
    return [
        ("bundles sealed and ingested", str(result.bundles)),
        ("rows read / quarantined", f"{result.rows_in:,} / {result.rows_quarantined:,}".replace(",", " ")),
        ("linked persons (analysis dataset)", linked),
        ("tree models (outcome × feature set)", str(result.models)),
        ("DP models (noisy)", "; ".join(dp_parts) or "none"),
        ("releases passed / suppressed / refused", f"{result.released} / {result.suppressed} / {result.refused}"),
        ("ε spent / left", spent),
        ("officer review of a refused output", result.review or "none"),
        (
            "ledger",
            f"{result.ledger_entries} entries verified, head {result.ledger_head}"
            + (f", anchored by the officer ({result.anchor.name})" if result.anchor else ""),
        ),
        ("report", str(result.report)),
        ("wall time", f"{result.total_seconds:.1f} s"),
    ]


# --- the command -------------------------------------------------------------------------------------------
class _RichProgress(DemoProgress):
    """One overall bar over the stages and one bar for the current stage's work, on stderr."""

    def __init__(self, progress: Any) -> None:
        self._p = progress
        self._overall = progress.add_task("demo", total=len(STAGES))
        self._current: Any = None

    def stage(self, index: int, name: str) -> None:
        if self._current is not None:
            self._p.update(self._current, completed=self._p.tasks[self._current].total or 1)
            self._p.stop_task(self._current)
        self._p.update(self._overall, completed=index, description=f"[bold]stage {index + 1}/{len(STAGES)}[/]")
        self._current = self._p.add_task(f"  {name}", total=None)

    def total(self, steps: int) -> None:
        self._p.update(self._current, total=steps, completed=0)

    def advance(self, steps: int = 1) -> None:
        self._p.advance(self._current, steps)

    def note(self, text: str) -> None:
        self._p.console.print(text)

    def finish(self) -> None:
        if self._current is not None:
            self._p.update(self._current, completed=self._p.tasks[self._current].total or 1)
        self._p.update(self._overall, completed=len(STAGES), description="[bold]done[/]")


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Directory for the whole run (new or empty).")] = Path("demo-run"),
    persons: Annotated[
        int, typer.Option("--persons", help="Persons in the synthetic city (150000: Rotterdam).")
    ] = 150_000,
    years: Annotated[str, typer.Option("--years", help="Comma-separated reference years, e.g. 2022,2023.")] = "2023",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic city (same seed, same city).")] = 7,
    force: Annotated[
        bool, typer.Option("--force", help="Clear a non-empty --out first (never mixes two runs).")
    ] = False,
    min_positives: Annotated[
        int | None,
        typer.Option(
            "--min-positives",
            help="Lower the analysis plan's minimum positives per outcome in this run's copy (small cities).",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline on the synthetic city: partners, coordinator, release gate, report.

    Generates the city, makes every key (partners, link key, privacy officer, coordinator), signs the example
    policies, seals each partner's extract, ingests and links them, runs the analysis plan through the release
    gate, writes OUT/report.html from the released outputs only and verifies the ledger. Key files are
    protected by $KANSRIJK_PASSPHRASE, or by a generated passphrase saved in OUT/DEMO-PASSPHRASE (demo only).
    A non-empty OUT is refused unless --force. The plan models an outcome only with at least 1000 positives
    (Rotterdam scale); for a small city, --min-positives lowers that in the run's signed copy of the plan.
    That copy also asks for a differentially private tree (ε 1 per feature set) for psychosocial risk next to
    its non-private tree, under the release policy dp-models.toml; the summary shows its noisy AUC and ε.

    Example: kansrijk demo --out demo-run --persons 20000 --force
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kansrijk.console import console
    from kansrijk.console import err_console as err

    options = DemoOptions(
        out=out, persons=persons, years=parse_years(years), seed=seed, force=force, min_positives=min_positives
    )
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=err, transient=False) as bar:
        shown = _RichProgress(bar)
        result = run_demo(options, shown)
        shown.finish()
    table = Table(
        title=f"kansrijk demo: {persons:,} persons, {', '.join(map(str, options.years))}".replace(",", " ", 1)
    )
    table.add_column("what", no_wrap=True)
    table.add_column("result", overflow="fold")
    for what, value in summary_rows(result):
        table.add_row(what, value)
    console.print(table)
    for note in result.notes:
        console.print(f"note: {note}")
    console.print(f"[bold]report:[/] {result.report}")
