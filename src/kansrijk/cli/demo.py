"""`kansrijk demo`: the whole pipeline on a study's synthetic city, every role played once, in one directory.

This module belongs to the composition root ``kansrijk.cli``, the only package of ``kansrijk`` that imports both
roles (``node_agent`` and ``coordinator``); it only calls their library functions, in the order the real parties
would act. The study (``--study``, default the shipped one) names the partners, the policies and the outcomes;
nothing below names them:

1. the synthetic city writes each partner's raw extract (``kansrijk.synth``), or ``--city DIR`` supplies the
   partners' own extracts (``DIR/<partner>/<file with the year in its name>``);
2. key ceremony: each partner makes its signing key, one link key is made and copied to every partner, the
   privacy officer makes a signing key;
3. the privacy officer writes the partner registry for those keys and signs it, the release policy, the
   analysis plan and the factor model;
4. the coordinator creates its workspace (HPKE key, coordinator pseudonym key, the release gate's signing
   key) and installs the registry;
5. each partner's node agent validates, minimises, pseudonymises and seals its extracts into its outbox;
6. the coordinator ingests the bundles, links them, and runs the signed analysis plan through the release gate
   (the run's copy of the plan adds a differentially private tree for the plan's first outcome next to the
   non-private tree, so the report shows what privacy costs; the study's release policy must allow it). The
   analysis runs inside a gate service the demo starts as its own process (``kansrijk gate serve``) and stops
   at the end: the operator's side sends the signed plan over the service's local socket, the gate trains and
   releases on its side. The demo runs the service under the same OS user as itself, so the process boundary
   holds but the file boundary does not; in deployment the gate has its own user (docs/deployment.md);
7. the review route: the analyst asks for a refused output (a hand-built one-split tree on the study's first
   shared category attribute, refused on the training rule because it was built without a minimum leaf size) to
   be reviewed, with a justification; the
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
from kansrijk.schema import PARTNERS, VARIABLES, Kind, schema_version
from kansrijk.study import (
    Study,
    default_study_path,
    load_signed_study,
    load_study,
    shipped_policies,
    study_path,
    use_study,
)

PASSPHRASE_ENV = "KANSRIJK_PASSPHRASE"  # noqa: S105 (the variable's name, not a secret)
PASSPHRASE_FILE = "DEMO-PASSPHRASE"  # noqa: S105 (a file name)
ANCHOR_FILE = "ledger-anchor.json"
GATE_LOG = "gate-service.log"
# The shipped study's release policy (dp-models.toml) is dp-sdc.toml (same output rules, same per-table epsilon)
# plus a [dp_model] section and a budget large enough for the DP models. Paths relative to the policies root.
RELEASE_POLICY = Path("release") / "dp-models.toml"
# The model the demo adds for the plan's first outcome and its epsilon per feature set: two DP models in all, next
# to the non-private trees of the same outcome.
DP_MODEL = "dp_tree"
DP_EPSILON = Fraction(1)
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
    study: Path | None = None  # the study file (or its directory); None: the shipped default study
    city: Path | None = None  # the partners' own raw extracts instead of a generated city


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
    return shipped_policies()


@dataclass(frozen=True, slots=True)
class StudyFiles:
    """Where a study's policy files are, below one root the demo copies (``root`` holds them all)."""

    root: Path
    study: Path
    sharing: Path
    analysis_plan: Path
    release_policy: Path
    factor_model: Path

    def moved(self, new_root: Path) -> StudyFiles:
        def move(p: Path) -> Path:
            return new_root / p.relative_to(self.root)

        return StudyFiles(new_root, move(self.study), move(self.sharing), move(self.analysis_plan),
                          move(self.release_policy), move(self.factor_model))  # fmt: skip


def study_files(study: Study) -> StudyFiles:
    """The study's files and the root to copy: the shipped policies for a shipped study, else the study's own
    directory. ``InputError`` when the study names no ``files`` or one lies outside that root."""
    if study.file.files is None:
        raise InputError(f"{study.path}: files: the study names no sharing policies, plan or release policy",
                         hint="add files = { sharing = ..., analysis_plan = ..., release_policy = ... }")  # fmt: skip
    shipped = shipped_policies().resolve()
    root = shipped if study.path.is_relative_to(shipped) else study.directory
    here = study.directory
    found = StudyFiles(
        root=root,
        study=study.path,
        sharing=(here / study.file.files.sharing).resolve(),
        analysis_plan=(here / study.file.files.analysis_plan).resolve(),
        release_policy=(here / study.file.files.release_policy).resolve(),
        factor_model=study.factor_model_path,
    )
    for key in ("sharing", "analysis_plan", "release_policy", "factor_model"):
        path: Path = getattr(found, key)
        if not path.is_relative_to(root) or not path.exists():
            raise InputError(f"{study.path}: files.{key}: {path} does not exist below {root}",
                             hint="keep a study's policy files in its directory")  # fmt: skip
    for partner in study.partners:
        if not (found.sharing / f"{partner}.toml").is_file():
            raise InputError(f"{study.path}: files.sharing: no sharing policy {found.sharing / (partner + '.toml')}")
    return found


_YEAR = re.compile(r"(?<!\d)(19\d\d|20\d\d)(?!\d)")


def existing_extracts(city: Path, partners: Sequence[str], years: Sequence[int]) -> dict[tuple[str, int], Path]:
    """The partners' own raw extracts under ``city``: ``city/<partner>/`` (or ``city/extracts/<partner>/``), one
    file per reference year with the year in its name. ``InputError`` naming what is missing or ambiguous."""
    city = Path(city)
    if not city.is_dir():
        raise InputError(f"--city {city}: not a directory", hint="point --city at DIR/<partner>/<extract files>")
    base = city / "extracts" if (city / "extracts").is_dir() else city
    found: dict[tuple[str, int], Path] = {}
    for partner in partners:
        folder = base / partner
        if not folder.is_dir():
            raise InputError(f"--city {city}: no folder {folder} for partner {partner!r}",
                             hint="one folder per partner of the study, holding its extract files")  # fmt: skip
        for year in years:
            files = sorted(p for p in folder.iterdir() if p.is_file() and str(year) in _YEAR.findall(p.name))
            if len(files) != 1:
                what = "no file" if not files else f"{len(files)} files ({', '.join(f.name for f in files)})"
                raise InputError(
                    f"--city {city}: {what} for partner {partner!r} and year {year} in {folder}",
                    hint="exactly one extract file per partner and year, with the year in its name",
                )
            found[(partner, year)] = files[0]
    return found


def first_shared_category(study: Study) -> tuple[str, tuple[str, ...]]:
    """The first shared attribute that is a category (the review route's one-split tree splits on it)."""
    for name in study.shared_attributes:
        var = VARIABLES[name]
        if var.kind == Kind.CATEGORY:
            return name, var.categories
    raise InputError(f"{study.path}: shared_attributes: the demo's review route needs a shared category attribute")


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


def review_justification(attribute: str) -> str:
    return (
        f"a one-split tree on {attribute}, built by hand to show the outcome's rate per {attribute} in tree form; it "
        f"was built without a minimum leaf size, but each of its two leaves holds every person of one {attribute}"
    )


def _review_round(
    workspace: Path, release_policy: Path, officer_dir: Path, passphrase: str, year: int, show: DemoProgress,
    *, outcome: str, ages: tuple[int, int], study: Study,
) -> str:
    """The review route once: the analyst's tree is refused, put to review, approved by the officer and released
    with the approval in the ledger. Returns one line for the summary."""
    from kansrijk.gate.release import Gate
    from kansrijk.gate.review import apply_decision, request_review, sign_decision
    from kansrijk.gate.specs import SplitNode, TreeSpec, where
    from node_agent.keys import load_signing_key

    officer_pub = officer_dir / "officer-signing.pub"
    attribute, categories = first_shared_category(study)
    tree = TreeSpec(
        name=f"{year}.{outcome}.{attribute}_tree",
        description=f"{outcome.replace('_', ' ').capitalize()} by {attribute} as a one-split tree, built by hand "
        "without a minimum leaf size (min_samples_leaf 1): refused on the training rule, released on the privacy "
        "officer's review.",
        years=(year,),
        population=(where("age_years", ">=", ages[0]), where("age_years", "<=", ages[1])),
        outcome=outcome,
        features=(attribute,),
        nodes=(SplitNode(node_id=0, var=attribute, categories=(categories[-1],), left=1, right=2),
               SplitNode(node_id=1), SplitNode(node_id=2)),
        min_samples_leaf=1,
        max_depth=1,
    )
    with Gate.open(workspace, release_policy, [officer_pub], passphrase=passphrase) as gate:
        refused = gate.release(tree, requested_by="analysis")
        if refused.outcome != "refused":
            return f"none needed: {tree.name} was {refused.outcome}"
        review = request_review(gate, refused.entry_id, justification=review_justification(attribute))
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
    that error (what was written so far stays, for inspection). The study is active for the whole run (and for
    the gate service it starts), then the previous one is again.
    """
    source = load_study(study_path(options.study) if options.study is not None else default_study_path())
    with use_study(source):
        return _run_demo(options, progress, source)


def _run_demo(options: DemoOptions, progress: DemoProgress | None, study: Study) -> DemoResult:
    # Imported here: the roles are composed only when the demo runs (and the CLI root stays quick to load).
    from kansrijk.policy.analysis import load_analysis_plan
    from kansrijk.policy.registry import partner_key_from_bytes, render_registry, with_partner
    from kansrijk.policy.sharing import load_sharing_policy
    from kansrijk.policy.signing import sign_policy
    from kansrijk.synth import generate_study_city
    from node_agent.keys import generate_partner_keys, load_signing_key, new_link_key

    show = progress or DemoProgress()
    timer = _Timer()
    out = Path(options.out)
    years = tuple(sorted(options.years))
    check_options(options)  # before anything is written: a bad option must not leave a half-made --out
    files = study_files(study)
    given = existing_extracts(options.city, PARTNERS, years) if options.city is not None else None
    prepare_out(out, force=options.force)
    passphrase, passphrase_source = demo_passphrase(out)
    notes: list[str] = [f"key passphrase {passphrase_source}"]

    def stage(index: int) -> None:
        timer.start(STAGES[index])
        show.stage(index, STAGES[index])

    # 1. the synthetic city ---------------------------------------------------------------------------------
    stage(0)
    show.total(1)
    if given is None:
        extracts = generate_study_city(
            study, out / "city", persons=options.persons, seed=options.seed, years=years, fault_rate=options.fault_rate
        ).extracts
    else:
        extracts = given
        notes.append(f"the partners' own extracts from {options.city} (no city generated)")
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
    policies = out / "policies"
    shutil.copytree(files.root, policies, ignore=shutil.ignore_patterns("*.sig", "partners.toml"))
    run_files = files.moved(policies)
    release_policy, analysis_plan = run_files.release_policy, run_files.analysis_plan
    plan = load_analysis_plan(analysis_plan)
    dp_outcome = next(iter(plan.outcomes))
    registry = None
    for partner in PARTNERS:
        _, digest = load_sharing_policy(run_files.sharing / f"{partner}.toml")
        public = crypto.read_public_key(partner_keys[partner].public_key, "ed25519-signing").key
        registry = with_partner(
            registry,
            partner,
            key=partner_key_from_bytes(public, epoch=partner_keys[partner].epoch),
            schema_versions=[schema_version()],
            policy_digests=[digest],
            description=study.describe(partner),
        )
    assert registry is not None
    registry_path = policies / "partners.toml"
    atomic_write_bytes(
        registry_path,
        (
            "# Partner registry written by `kansrijk demo` for this run's fresh keys.\n" + render_registry(registry)
        ).encode(),
    )
    to_sign = [registry_path, run_files.study, release_policy, analysis_plan, run_files.factor_model]
    _add_dp_model(analysis_plan, dp_outcome, DP_MODEL, DP_EPSILON)
    notes.append(
        f"the analysis plan's copy {analysis_plan.relative_to(out)} adds a {DP_MODEL} (ε {DP_EPSILON} per feature set) "
        f"for {dp_outcome.replace('_', ' ')} next to its non-private tree, under {release_policy.relative_to(out)}"
    )
    if options.min_positives is not None:
        _set_min_positives(analysis_plan, options.min_positives)
        notes.append(
            f"the analysis plan's model.min_positives was set to {options.min_positives} for this run "
            f"(--min-positives); the signed copy {analysis_plan.relative_to(out)} says so"
        )
    # Sharing policies are approved twice over: by digest in the signed registry (what ingest checks) and by
    # their own signatures (what a partner can check before preparing an extract).
    to_sign += [run_files.sharing / f"{partner}.toml" for partner in PARTNERS]
    show.total(len(to_sign))
    officer_key = load_signing_key(officer_dir / "officer-signing.key", passphrase)
    for path in to_sign:
        sign_policy(path, officer_key)
        show.advance()
    del officer_key
    # From here on the run reads the study the officer signed (same bytes, so the same schema version).
    with use_study(load_signed_study(run_files.study, [officer_pub])) as signed:
        return _run_signed(
            options, show, timer, out, years, passphrase, passphrase_source, notes, signed, run_files, extracts,
            partner_keys, officer_dir, officer_pub, registry_path, dp_outcome, plan.cohort,
        )


def _run_signed(
    options: DemoOptions, show: DemoProgress, timer: _Timer, out: Path, years: tuple[int, ...], passphrase: str,
    passphrase_source: str, notes: list[str], study: Study, run_files: StudyFiles,
    extracts: dict[tuple[str, int], Path], partner_keys: dict[str, Any], officer_dir: Path, officer_pub: Path,
    registry_path: Path, dp_outcome: str, cohort: Any,
) -> DemoResult:
    from coordinator.ingest import IngestSession
    from coordinator.link import gate_release_hook, link_workspace
    from coordinator.report import build_report
    from coordinator.service.client import run_analysis_via_gate
    from coordinator.service.process import running_gate, socket_path_in
    from coordinator.workspace import init_workspace
    from kansrijk.gate.anchor import anchor_ledger, check_anchor
    from kansrijk.gate.ledger import entries, open_existing, verify_ledger
    from kansrijk.policy.release import load_release_policy
    from node_agent.keys import load_coordinator_key, load_link_key, load_partner_signing_key, load_signing_key
    from node_agent.prepare import prepare_extract

    def stage(index: int) -> None:
        timer.start(STAGES[index])
        show.stage(index, STAGES[index])

    release_policy, analysis_plan = run_files.release_policy, run_files.analysis_plan

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
                policy_path=run_files.sharing / f"{partner}.toml",
                input_path=extracts[(partner, year)],
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
        release=gate_release_hook(release_policy, [officer_pub], passphrase=passphrase),
        progress=lambda _msg: show.advance(0),
    )
    show.advance(len(years))

    # 8. analysis, in a gate service of its own ------------------------------------------------------------
    stage(7)
    with running_gate(
        workspace,
        release_policy,
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
            analysis_plan,
            run_files.factor_model,
            progress_total=show.total,
            progress=show.advance,
        )

    # 9. the review route: a refused output put to the privacy officer ---------------------------------------
    stage(8)
    show.total(3)
    review = _review_round(workspace, release_policy, officer_dir, passphrase, years[-1], show, outcome=dp_outcome,
                           ages=(cohort.min_age, cohort.max_age), study=study)  # fmt: skip

    # 10. report ---------------------------------------------------------------------------------------------
    stage(9)
    show.total(1)
    report = build_report(workspace, out / "report.html", release_policy=release_policy)
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

    policy = load_release_policy(release_policy)
    _write_readme(out, release_policy.relative_to(out))
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


def _write_readme(out: Path, release_policy: Path) -> None:
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
        + f"--policy {out}/{release_policy}\n"
        + f"  kansrijk review list {out}/coordinator        # the review route: request, decision, release\n"
        + f"  kansrijk review show {out}/coordinator R000001\n"
        + "\nThe gate service. The analysis ran in a release gate of its own process: the demo started\n"
        + "`kansrijk gate serve`, sent it the signed plan and factor model over its local socket, the gate trained\n"
        + "and released on its side, and the demo stopped it. It ran under the same OS user as the demo, so the\n"
        + "process boundary holds but not the file boundary: in deployment the gate runs as its own user, the only\n"
        + "one that can read the dataset, the keys and the ledger (docs/deployment.md, `kansrijk gate harden`).\n"
        + "Start one by hand and ask it:\n"
        + f"  kansrijk gate serve {out}/coordinator --release-policy {out}/{release_policy} "
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
        int, typer.Option("--persons", help="Persons in the synthetic city (150000: the shipped study's scale).")
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
    study: Annotated[
        Path | None,
        typer.Option("--study", help="The study file (or its directory); default: the shipped study."),
    ] = None,
    city: Annotated[
        Path | None,
        typer.Option(
            "--city",
            help="Run on raw extracts you already have (DIR/<partner>/<file with the year in its name>) instead of "
            "generating a city.",
        ),
    ] = None,
) -> None:
    """Run the whole pipeline on a study's synthetic city: partners, coordinator, release gate, report.

    Generates the study's city (or reads your extracts with --city), makes every key (partners, link key, privacy
    officer, coordinator), signs the study and its policies, seals each partner's extract, ingests and links
    them, runs the analysis plan through the release gate, writes OUT/report.html from the released outputs only
    and verifies the ledger. Key files are protected by $KANSRIJK_PASSPHRASE, or by a generated passphrase saved
    in OUT/DEMO-PASSPHRASE (demo only). A non-empty OUT is refused unless --force. The plan's minimum positives
    per outcome is set for a full-size city; for a small city, --min-positives lowers that in the run's signed
    copy of the plan. That copy also asks for a differentially private tree (ε 1 per feature set) for the plan's
    first outcome next to its non-private tree, under the study's release policy; the summary shows its noisy
    AUC and ε.

    Example: kansrijk demo --out demo-run --persons 20000 --force
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from kansrijk.console import console
    from kansrijk.console import err_console as err

    options = DemoOptions(
        out=out, persons=persons, years=parse_years(years), seed=seed, force=force, min_positives=min_positives,
        study=study, city=city,
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
