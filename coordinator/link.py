"""Linkage: the per-partner tables of one reference year, joined on the coordinator pseudonym P2, into one
analysis dataset.

Guarantees:

- exact join on P2 (``pseudonym``), a full outer join: every person present at any partner appears once, with
  presence flags ``in_<partner>``;
- every attribute held by more than one partner (the study's ``shared_attributes``) is
  checked for agreement and resolved by the **resolution rule**:

  1. all partners that report the attribute agree → that value (``agree``);
  2. otherwise the value reported by a strict majority of the reporting partners wins (``majority``);
  3. otherwise (a tie) the value of the study's tie-break partner wins when that partner reports it and it is
     among the tied values (the study names the partner that draws on the authoritative register; ``tiebreak``);
  4. otherwise the conflict is unresolved: the person is **excluded** from the analysis dataset and counted
     in the linkage report (``unresolved``).

  The dataset keeps a ``conflict_<attribute>`` flag so an analysis can check its sensitivity to rule 2/3;
- outcomes come from ``kansrijk.outcomes`` (their single definition); features derived here are listed in
  ``DERIVED_FEATURES``;
- the linkage report (coverage per partner, overlap patterns, conflicts by kind and resolution) holds counts
  only. It is written for the operator under ``WS/internal/`` and, through the release gate, as count tables.

The plan is a polars lazy query run on the streaming engine; nothing loops over rows in Python.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from coordinator.workspace import WorkspacePaths, now_utc, open_workspace, read_state, write_state
from kansrijk.errors import WorkspaceError
from kansrijk.fsutil import atomic_path, atomic_write_bytes, sweep_stale_temp_files
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import CountSpec
from kansrijk.outcomes import age_expr, derive_outcomes
from kansrijk.schema import PARTNERS, SHARED_ATTRIBUTES
from kansrijk.study import active_study

KEY = "pseudonym"
RESOLUTIONS = ("agree", "majority", "tiebreak", "unresolved", "missing")
DERIVED_FEATURES = ("age_years",)
_SEP = "__"


@dataclass(frozen=True, slots=True)
class AttributeConflicts:
    """How one shared attribute was resolved, in persons (each person counted once)."""

    attribute: str
    agree: int
    majority: int
    tiebreak: int
    unresolved: int
    missing: int

    @property
    def conflicts(self) -> int:
        return self.majority + self.tiebreak + self.unresolved


@dataclass(frozen=True, slots=True)
class LinkageReport:
    """Counts only: what the linkage found for one reference year. ``persons_linked`` counts every person held by
    any partner; ``persons_in_dataset`` those left after excluding unresolved conflicts (what ``status`` and the
    analysis see); ``persons_across_partners`` those two partners or more hold (whom the join joined)."""

    year: int
    partners: tuple[str, ...]
    persons_linked: int
    persons_in_dataset: int
    excluded_unresolved: int
    rows_per_partner: dict[str, int]
    only_at_partner: dict[str, int]
    overlap_patterns: list[dict[str, Any]]
    conflicts: dict[str, AttributeConflicts]

    @property
    def partners_missing(self) -> tuple[str, ...]:
        """Partners of the study that delivered nothing for this year."""
        return tuple(p for p in PARTNERS if p not in self.partners)

    @property
    def persons_across_partners(self) -> int:
        """Persons held by two partners or more: the ones the linkage actually joined."""
        flags = [f"in_{p}" for p in PARTNERS]
        return sum(int(row["persons"]) for row in self.overlap_patterns if sum(bool(row.get(f)) for f in flags) >= 2)

    def headline(self) -> str:
        """The year's outcome in one line, in the words ``status`` uses too (persons in the dataset)."""
        line = (
            f"{self.year}: {self.persons_in_dataset} persons in the dataset ({self.persons_across_partners} held by "
            f"two partners or more; {self.excluded_unresolved} excluded for an unresolved conflict)"
        )
        if len(self.partners) < 2:
            line += (
                f"; only {', '.join(self.partners)} delivered {self.year} (none from "
                f"{', '.join(self.partners_missing)}): nobody was linked across partners"
            )
        elif self.partners_missing:
            line += f"; no extract from {', '.join(self.partners_missing)} for {self.year}"
        return line

    def as_dict(self) -> dict[str, Any]:
        return {
            "year": self.year,
            "partners": list(self.partners),
            "partners_missing": list(self.partners_missing),
            "persons_linked": self.persons_linked,
            "persons_in_dataset": self.persons_in_dataset,
            "persons_across_partners": self.persons_across_partners,
            "excluded_unresolved": self.excluded_unresolved,
            "coverage": {
                p: {
                    "rows": self.rows_per_partner[p],
                    "share_of_linked": round(self.rows_per_partner[p] / self.persons_linked, 6)
                    if self.persons_linked
                    else 0.0,
                    "only_here": self.only_at_partner[p],
                }
                for p in self.partners
            },
            "overlap_patterns": self.overlap_patterns,
            "conflicts": {
                a: {
                    "conflicts": c.conflicts,
                    "agree": c.agree,
                    "majority": c.majority,
                    "tiebreak": c.tiebreak,
                    "unresolved": c.unresolved,
                    "missing": c.missing,
                }
                for a, c in self.conflicts.items()
            },
            "resolution_rule": "agree > strict majority of reporting partners > "
            f"{active_study().file.tiebreak_partner or 'no'} tie-break > exclude",
        }


@dataclass(frozen=True, slots=True)
class LinkedYear:
    year: int
    dataset_path: Path
    report_path: Path
    report: LinkageReport
    released: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LinkResult:
    years: tuple[LinkedYear, ...]
    longitudinal_path: Path | None = None


# --- the pure part: frames in, frames out -----------------------------------------------------------------
def link_frames(tables: dict[str, pl.LazyFrame], year: int) -> pl.LazyFrame:
    """The linked (not yet filtered) frame of one year from per-partner lazy tables keyed by ``pseudonym``.

    Output columns: ``pseudonym``, ``year``, ``in_<partner>`` for every partner of ``PARTNERS`` (False for a
    partner without a table), each resolved shared attribute, ``conflict_<attr>``, ``resolution_<attr>``, the
    partner-specific variables, and the derived features. Rows: one per person present at any partner.
    """
    if not tables:
        raise WorkspaceError(f"no partner tables to link for {year}")
    partners = [p for p in PARTNERS if p in tables] + sorted(set(tables) - set(PARTNERS))
    schemas = {p: tables[p].collect_schema() for p in partners}
    for p, schema in schemas.items():
        if KEY not in schema:
            raise WorkspaceError(f"table of partner {p!r} for {year} has no {KEY!r} column; re-ingest it")
    counts: dict[str, int] = {}
    for schema in schemas.values():
        for name in schema:
            counts[name] = counts.get(name, 0) + 1
    shared = [n for n in counts if n not in (KEY, "year") and (counts[n] > 1 or n in SHARED_ATTRIBUTES)]

    prepared: list[pl.LazyFrame] = []
    for p in partners:
        cols: list[pl.Expr] = [pl.col(KEY), pl.lit(True).alias(f"in_{p}")]
        for name in schemas[p]:
            if name in (KEY, "year"):
                continue
            cols.append(pl.col(name).alias(f"{name}{_SEP}{p}") if name in shared else pl.col(name))
        prepared.append(tables[p].select(cols))

    linked = prepared[0]
    for frame in prepared[1:]:
        linked = linked.join(frame, on=KEY, how="full", coalesce=True, maintain_order="none")

    present = {p: f"in_{p}" for p in PARTNERS}
    linked = linked.with_columns(
        [pl.col(present[p]).fill_null(False) if p in tables else pl.lit(False).alias(present[p]) for p in PARTNERS]
    )
    stages = [_resolve(attr, [p for p in partners if attr in schemas[p]]) for attr in shared]
    for depth in range(max((len(st) for st in stages), default=0)):
        linked = linked.with_columns([e for st in stages if depth < len(st) for e in st[depth]])
    linked = linked.with_columns(pl.lit(year, dtype=pl.Int32).alias("year"))
    drop = [f"{attr}{_SEP}{p}" for attr in shared for p in partners if attr in schemas[p]]
    helpers = [c for c in linked.collect_schema() if any(c.startswith(f"_{attr}_") for attr in shared)]
    linked = linked.drop(drop + helpers)
    if "birth_year" in linked.collect_schema():
        linked = linked.with_columns(age_expr().alias("age_years"))
    linked = derive_outcomes(linked)
    first = [KEY, "year", *present.values()]
    return linked.select(first + [c for c in linked.collect_schema() if c not in first])


def _resolve(attr: str, holders: Sequence[str]) -> list[list[pl.Expr]]:
    """Stages of expressions giving the resolved value, ``conflict_<attr>`` and ``resolution_<attr>``.

    Each stage is one ``with_columns`` over the previous one's helper columns (prefixed ``_<attr>_``), so every
    pairwise comparison is computed once; the caller drops the helpers.
    """
    vals = [pl.col(f"{attr}{_SEP}{p}") for p in holders]
    n = len(vals)
    pairs = list(itertools.combinations(range(n), 2))
    h = f"_{attr}_"
    # stage 1: who reports, and which pairs of reporters agree
    stage1 = [vals[i].is_not_null().alias(f"{h}nn{i}") for i in range(n)]
    stage1 += [(vals[i] == vals[j]).fill_null(False).alias(f"{h}eq{i}{j}") for i, j in pairs]
    nn = [pl.col(f"{h}nn{i}") for i in range(n)]
    eq = {(i, j): pl.col(f"{h}eq{i}{j}") for i, j in pairs}
    eq.update({(j, i): e for (i, j), e in list(eq.items())})
    differ = {(i, j): nn[i] & nn[j] & ~eq[(i, j)] for i, j in pairs}
    # stage 2: support[i] = how many reporters agree with partner i's value (0 when i does not report)
    stage2 = [
        pl.sum_horizontal([nn[i].cast(pl.Int8), *(eq[(i, j)].cast(pl.Int8) for j in range(n) if j != i)]).alias(
            f"{h}s{i}"
        )
        for i in range(n)
    ]
    stage2.append((pl.any_horizontal(list(differ.values())) if pairs else pl.lit(False)).alias(f"conflict_{attr}"))
    stage2.append(pl.any_horizontal(nn).alias(f"{h}reported"))
    support = [pl.col(f"{h}s{i}") for i in range(n)]
    # stage 3: the best support
    stage3 = [pl.max_horizontal(support).alias(f"{h}best")]
    best = pl.col(f"{h}best")
    # stage 4: is the best support shared by two different values (a tie)?
    stage4 = [
        (
            pl.any_horizontal([(support[i] == best) & (support[j] == best) & differ[(i, j)] for i, j in pairs])
            if pairs
            else pl.lit(False)
        ).alias(f"{h}tie")
    ]
    tie = pl.col(f"{h}tie")
    tiebreak_partner = active_study().file.tiebreak_partner
    k = list(holders).index(tiebreak_partner) if tiebreak_partner in holders else -1
    tiebreak_wins = (tie & (support[k] == best) & nn[k]) if k >= 0 else pl.lit(False)
    # stage 5: value and label
    winner = pl.coalesce([pl.when(support[i] == best).then(vals[i]) for i in range(n)])
    value = pl.when(~tie).then(winner)
    if k >= 0:
        value = value.when(tiebreak_wins).then(vals[k])
    conflict = pl.col(f"conflict_{attr}")
    label = (
        pl.when(~pl.col(f"{h}reported"))
        .then(pl.lit("missing"))
        .when(~conflict)
        .then(pl.lit("agree"))
        .when(~tie)
        .then(pl.lit("majority"))
        .when(tiebreak_wins)
        .then(pl.lit("tiebreak"))
        .otherwise(pl.lit("unresolved"))
    )
    stage5 = [value.alias(attr), label.cast(pl.Enum(RESOLUTIONS)).alias(f"resolution_{attr}")]
    return [stage1, stage2, stage3, stage4, stage5]


def report_from_frame(linked: pl.DataFrame, year: int, partners: Sequence[str]) -> LinkageReport:
    """Count coverage, overlap patterns and conflicts in a linked (unfiltered) frame. Counts only."""
    flags = [f"in_{p}" for p in PARTNERS]
    unresolved_any = _unresolved_any(linked.columns)
    totals = linked.select(
        pl.len().alias("linked"),
        unresolved_any.sum().alias("excluded"),
        *[pl.col(f).sum().alias(f) for f in flags],
        *[
            (pl.col(f"in_{p}") & (pl.sum_horizontal([pl.col(g).cast(pl.Int8) for g in flags]) == 1))
            .sum()
            .alias(f"only_{p}")
            for p in PARTNERS
        ],
    ).row(0, named=True)
    patterns = (
        linked.group_by(flags).agg(pl.len().alias("persons")).sort(flags, descending=True).to_dicts()
        if linked.height
        else []
    )
    conflicts: dict[str, AttributeConflicts] = {}
    for column in linked.columns:
        if not column.startswith("resolution_"):
            continue
        attr = column.removeprefix("resolution_")
        counts = dict(linked.group_by(column).agg(pl.len()).iter_rows())
        conflicts[attr] = AttributeConflicts(attr, *(int(counts.get(r, 0)) for r in RESOLUTIONS))
    return LinkageReport(
        year=year,
        partners=tuple(partners),
        persons_linked=int(totals["linked"]),
        persons_in_dataset=int(totals["linked"] - totals["excluded"]),
        excluded_unresolved=int(totals["excluded"]),
        rows_per_partner={p: int(totals[f"in_{p}"]) for p in PARTNERS},
        only_at_partner={p: int(totals[f"only_{p}"]) for p in PARTNERS},
        overlap_patterns=patterns,
        conflicts=conflicts,
    )


def _unresolved_any(columns: Sequence[str]) -> pl.Expr:
    checks = [pl.col(c) == "unresolved" for c in columns if c.startswith("resolution_")]
    return pl.any_horizontal(checks) if checks else pl.lit(False)


# --- the workspace part ---------------------------------------------------------------------------------
def ingested_years(paths: WorkspacePaths) -> dict[int, list[str]]:
    """``{year: [partners]}`` of every ingested table, from the state database."""
    with read_state(paths) as db:
        rows = db.execute("SELECT year, partner FROM bundles ORDER BY year, partner").fetchall()
    years: dict[int, list[str]] = {}
    for row in rows:
        years.setdefault(int(row["year"]), []).append(str(row["partner"]))
    return years


ReleaseHook = Callable[[LinkageReport], tuple[str, ...]]


REQUESTED_BY = "linkage-report"


def linkage_flags(flags: pl.DataFrame) -> pl.DataFrame:
    """One row per person held by any partner: the pseudonym and the linkage flags the report counts (no
    attributes): ``partners`` (how many hold the person), ``in_<partner>``, ``conflict_kind`` (none, or which
    shared attributes the partners disagree on) and ``resolution`` (no_conflict, resolved, excluded)."""
    presence = [f"in_{p}" for p in PARTNERS]
    attrs = [a for a in SHARED_ATTRIBUTES if f"conflict_{a}" in flags.columns]
    conflict_cols = [f"conflict_{a}" for a in attrs]
    kind_expr = pl.concat_str(
        [pl.when(pl.col(c)).then(pl.lit(a)) for c, a in zip(conflict_cols, attrs, strict=True)],
        separator="+",
        ignore_nulls=True,
    )
    excluded = _unresolved_any(flags.columns)
    any_conflict = pl.any_horizontal(conflict_cols) if conflict_cols else pl.lit(False)
    return flags.select(
        KEY,
        pl.sum_horizontal([pl.col(c).cast(pl.Int8) for c in presence if c in flags.columns]).cast(pl.Int32).alias(
            "partners"
        ),
        *[(pl.col(c) if c in flags.columns else pl.lit(False)).fill_null(False).alias(c) for c in presence],
        (pl.when(kind_expr == "").then(pl.lit("none")).otherwise(kind_expr) if attrs else pl.lit("none")).alias(
            "conflict_kind"
        ),
        pl.when(excluded)
        .then(pl.lit("excluded"))
        .when(any_conflict)
        .then(pl.lit("resolved"))
        .otherwise(pl.lit("no_conflict"))
        .alias("resolution"),
    ).sort(KEY)


def linkage_release_specs(report: LinkageReport) -> list[CountSpec]:
    """The linkage report as release specs over the year's linkage flags (``WS/dataset/linkage/<year>.parquet``),
    each a small one-way table the gate computes itself:

    - ``linkage_<year>_partners``: persons by the number of partners holding them (the overlap);
    - ``linkage_<year>_coverage_<partner>``: persons held / not held by each partner;
    - ``linkage_<year>_conflicts``: persons by the kind of shared-attribute conflict (none, or which attributes);
    - ``linkage_<year>_resolution``: persons by outcome (no conflict, resolved by the rule, excluded).

    One-way tables keep cells large enough for the output-checking rules at city scale; the full overlap
    pattern table stays internal (``WS/internal/linkage-<year>.json``).
    """
    y = report.year
    common = {"years": (y,), "table": "linkage"}
    specs = [
        CountSpec(
            name=f"linkage_{y}_partners",
            description=f"Persons by the number of partners holding them, {y}.",
            by=("partners",),
            **common,
        )
    ]
    for partner in PARTNERS:
        if partner in report.partners:
            specs.append(
                CountSpec(
                    name=f"linkage_{y}_coverage_{partner}",
                    description=f"Persons held and not held by {partner}, {y}.",
                    by=(f"in_{partner}",),
                    **common,
                )
            )
    if len(report.partners) > 1:
        specs.append(
            CountSpec(
                name=f"linkage_{y}_conflicts",
                description=f"Persons by which shared attributes the partners disagree on, {y}.",
                by=("conflict_kind",),
                **common,
            )
        )
        specs.append(
            CountSpec(
                name=f"linkage_{y}_resolution",
                description=f"Persons without conflict, with a conflict resolved by the rule, or excluded, {y}.",
                by=("resolution",),
                **common,
            )
        )
    return specs


def gate_release_hook(
    policy: Path, officer_keys: Sequence[Path], *, passphrase: str | None = None
) -> Callable[[WorkspacePaths], ReleaseHook]:
    """A hook that submits the linkage report to the workspace's release gate under the signed ``policy``
    (the gate key's ``passphrase``, else ``$KANSRIJK_PASSPHRASE``).

    Returns, per request, ``"<name>: <outcome>"`` (released, suppressed or refused with its reasons).
    """

    def bind(paths: WorkspacePaths) -> ReleaseHook:
        def release(report: LinkageReport) -> tuple[str, ...]:
            outcomes: list[str] = []
            with Gate.open(paths.root, policy, list(officer_keys), passphrase=passphrase) as gate:
                for spec in linkage_release_specs(report):
                    result = gate.release(spec, requested_by=REQUESTED_BY)
                    reasons = f" ({'; '.join(result.reasons)})" if result.reasons else ""
                    outcomes.append(f"{spec.name}: {result.outcome}{reasons}")
            return tuple(outcomes)

        return release

    return bind


def link_workspace(
    root: Path,
    *,
    year: int | None = None,
    release: Callable[[WorkspacePaths], ReleaseHook] | None = None,
    progress: Callable[[str], None] | None = None,
) -> LinkResult:
    """Link every ingested year (or only ``year``) of the workspace at ``root``.

    Writes ``WS/dataset/<year>.parquet`` (persons with an unresolved conflict excluded), the report
    ``WS/internal/linkage-<year>.json``, and, when more than one year is ingested, ``WS/dataset/
    longitudinal.parquet`` (one row per person and year). ``release`` (e.g. ``gate_release_hook(...)``) is
    bound to the workspace and then receives each year's count columns and report; without it the report
    stays internal.
    """
    paths = open_workspace(root)
    sweep_stale_temp_files(paths.dataset)  # left by a link that was killed mid-write
    available = ingested_years(paths)
    if not available:
        raise WorkspaceError(
            f"{paths.root}: nothing ingested yet", hint="ingest bundles first: kansrijk coordinator ingest WS B..."
        )
    if year is not None and year not in available:
        raise WorkspaceError(
            f"{paths.root}: no bundles ingested for {year} (ingested: {sorted(available)})",
            hint="pick an ingested year or ingest that year's bundles",
        )
    years = [year] if year is not None else sorted(available)
    hook = release(paths) if release is not None else None
    linked_years: list[LinkedYear] = []
    for y in years:
        if progress:
            progress(f"linking {y}")
        linked_years.append(_link_year(paths, y, available[y], hook))
    longitudinal: Path | None = None
    all_datasets = sorted(paths.dataset.glob("[0-9][0-9][0-9][0-9].parquet"))
    if len(all_datasets) > 1:
        if progress:
            progress("writing the longitudinal view")
        longitudinal = paths.longitudinal
        view = pl.concat([pl.scan_parquet(p) for p in all_datasets], how="diagonal_relaxed").sort([KEY, "year"])
        with atomic_path(longitudinal) as tmp:
            view.sink_parquet(tmp, engine="streaming")
    return LinkResult(years=tuple(linked_years), longitudinal_path=longitudinal)


def link_tables(
    tables: dict[str, Path], year: int, *, dataset_path: Path, report_path: Path, flags_path: Path | None = None
) -> LinkageReport:
    """Link the Parquet ``tables`` (``{partner: path}``) of one year; write the dataset, the internal report and
    (at ``flags_path``) the linkage flags the release gate counts the report from. Every file is written
    atomically."""
    scans = {p: pl.scan_parquet(path) for p, path in tables.items()}
    linked = link_frames(scans, year).collect(engine="streaming")
    report = report_from_frame(linked, year, tuple(tables))
    count_columns = [c for c in linked.columns if c.startswith(("in_", "conflict_", "resolution_"))]
    if flags_path is not None:
        flags_path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(flags_path) as tmp:
            linkage_flags(linked.select(KEY, *count_columns)).write_parquet(tmp, statistics=True)
    with atomic_path(dataset_path) as tmp:
        # sorted by pseudonym: the full joins leave rows in no particular order, and the analysis (folds, ties)
        # must give the same numbers for the same data
        linked.filter(~_unresolved_any(linked.columns)).sort(KEY).write_parquet(tmp, statistics=True)
    del linked
    atomic_write_bytes(report_path, (json.dumps(report.as_dict(), indent=2, sort_keys=True) + "\n").encode())
    return report


def _link_year(paths: WorkspacePaths, year: int, partners: list[str], release: ReleaseHook | None) -> LinkedYear:
    dataset_path = paths.dataset_for(year)
    report_path = paths.internal / f"linkage-{year}.json"
    report = link_tables(
        {p: paths.table(p, year) for p in partners},
        year,
        dataset_path=dataset_path,
        report_path=report_path,
        flags_path=paths.dataset / "linkage" / f"{year}.parquet",
    )
    released: tuple[str, ...] = release(report) if release is not None else ()
    with write_state(paths) as db:
        db.execute(
            "INSERT INTO link_runs (year, persons, excluded, dataset_path, report_path, linked_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                year,
                report.persons_in_dataset,
                report.excluded_unresolved,
                str(dataset_path.relative_to(paths.root)),
                str(report_path.relative_to(paths.root)),
                now_utc(),
            ),
        )
    return LinkedYear(year, dataset_path, report_path, report, released)
