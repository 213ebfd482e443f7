"""The build: read what the gate released, sort it into sections, render the one HTML file, write it atomically."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from kansrijk.errors import InputError, OutputExists, PolicyError
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.gate.ledger import RELEASED_DIR
from kansrijk.policy.common import policy_digest, read_policy_bytes
from kansrijk.policy.release import ReleasePolicy, load_release_policy

from .catalogue import Catalogue
from .entries import LedgerEntries, LedgerRow, check_entries, ledger_rows, read_entries
from .fmt import fmt_fraction, fmt_number
from .released import LedgerHead, Release, load_released
from .sections.association import association_section
from .sections.base_rates import base_rate_section
from .sections.dp_models import dp_model_section
from .sections.factors import factor_section
from .sections.findings import findings_section
from .sections.importances import importance_section
from .sections.linkage import linkage_section
from .sections.models import models_section
from .sections.other import other_section
from .sections.privacy import Budget, compute_budget, ledger_table
from .sections.refusals import refusals_section
from .sections.trees import trees_section
from .sections.years import years_section
from .view import Section, TableView, Tile

TEMPLATE = "report.html.j2"
TITLE = "Rotterdam Groeit — released results"


@dataclass(frozen=True, slots=True)
class ReportResult:
    path: Path
    releases: int
    sections: tuple[str, ...]
    figures: int
    trees: int
    suppressed: int
    refused: int | None  # None: built without the ledger entries
    noisy: int
    ledger_head: LedgerHead
    ledger_source: str
    budget: Budget


@dataclass(frozen=True, slots=True)
class Built:
    """The view of a whole report: its sections, the ledger table and the summary tiles."""

    sections: tuple[Section, ...]
    ledger: TableView
    rows: tuple[LedgerRow, ...]
    tiles: tuple[Tile, ...]


def _shown_at(sections: Sequence[Section]) -> dict[str, str]:
    """Release name -> the anchor of the first item that shows it (the findings only summarise, so they come last)."""
    out: dict[str, str] = {}
    for section in sorted(sections, key=lambda s: s.id == "findings"):
        for item in section.items:
            for name in item.sources:
                out.setdefault(name, f"#{section.id}-{item.anchor}")
    return out


def build_view(releases: Sequence[Release], head: LedgerHead, given: LedgerEntries, budget: Budget) -> Built:
    """Every section, with each released document shown at least once and each ledger number accounted for."""
    catalogue = Catalogue.of(releases)
    sections: list[Section | None] = [
        findings_section(catalogue),
        linkage_section(catalogue.linkage),
        base_rate_section(catalogue),
        models_section(catalogue),
        importance_section(catalogue),
        trees_section(catalogue),
        years_section(catalogue),
        dp_model_section(catalogue.dp_models),
        association_section(catalogue),
        factor_section(catalogue),
    ]
    shown = [s for s in sections if s is not None]
    shown_at = _shown_at(shown)
    # anything no section took (or took but did not show) is shown as released: no document is left out
    rest = [r for r in releases if r.name not in shown_at]
    other = other_section(rest)
    if other is not None:
        shown.append(other)
        shown_at = _shown_at(shown)
    rows = tuple(ledger_rows(releases, given, head))
    refusals = refusals_section(catalogue, rows, given, shown_at)
    shown.insert(len(shown) - (1 if other is not None else 0), refusals)
    refused = sum(r.decision == "refused" for r in rows)
    unknown = sum(r.decision == "unknown" for r in rows)
    withheld = sum(r.status == "suppressed" for r in releases)
    tiles = (
        Tile("released outputs", fmt_number(len(releases)), "#ledger"),
        Tile("with values withheld", fmt_number(withheld), "#refusals-suppressed" if withheld else ""),
        Tile(
            "refused by the gate",
            fmt_number(refused) if given.available else f"{fmt_number(unknown)} unexplained",
            "#refusals-refused" if given.available else "#refusals-unexplained",
            "tile-refused" if refused or unknown else "",
        ),
        Tile("noisy (differential privacy)", fmt_number(sum(r.noisy for r in releases))),
        Tile("ε spent", fmt_fraction(budget.spent)),
        Tile("ε left", fmt_fraction(budget.left)),
        Tile("ledger entries", fmt_number(len(rows)), "#ledger"),
    )
    return Built(tuple(shown), ledger_table(rows, shown_at), rows, tiles)


# --- rendering -------------------------------------------------------------------------------------------------
def _environment() -> jinja2.Environment:
    loader = jinja2.FunctionLoader(_load_template)
    env = jinja2.Environment(
        loader=loader, autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    env.filters["fraction"] = fmt_fraction
    env.filters["number"] = fmt_number
    env.filters["breakable"] = _breakable
    # a header never breaks at a hyphen either ("p-value", "all-variables"): U+2011 is a non-breaking hyphen
    env.filters["nobreak_hyphen"] = lambda text: str(text).replace("-", "\u2011")
    return env


def _breakable(text: str) -> Markup:
    """``text`` escaped, with a line-break opportunity (<wbr>) after every "." and "_"."""
    escaped = str(Markup.escape(text))
    return Markup(re.sub(r"([._])", r"\1<wbr>", escaped))  # noqa: S704 (escaped above; only <wbr> is added)


def _load_template(name: str) -> str:
    return resources.files("coordinator.report").joinpath("templates", name).read_text(encoding="utf-8")


def render_report(
    releases: Sequence[Release],
    head: LedgerHead,
    *,
    budget: Budget,
    entries: LedgerEntries | None = None,
    workspace_label: str,
    generated_at: str | None = None,
) -> tuple[str, Built]:
    given = entries if entries is not None else LedgerEntries("none (no ledger entries were given)", None)
    built = build_view(releases, head, given, budget)
    html = (
        _environment()
        .get_template(TEMPLATE)
        .render(
            title=TITLE,
            workspace=workspace_label,
            generated_at=generated_at or dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            sections=built.sections,
            ledger=built.ledger,
            tiles=built.tiles,
            budget=budget,
            head=head,
            ledger_source=given.source,
            ledger_available=given.available,
            policy_digests=sorted({r.policy_digest for r in releases}),
        )
    )
    return html, built


def build_report(
    workspace: Path,
    out: Path,
    *,
    release_policy: Path | None = None,
    ledger: Path | None = None,
    gate_socket: Path | None = None,
    force: bool = False,
    generated_at: str | None = None,
) -> ReportResult:
    """Write the HTML report of everything ``WS/released/`` holds to ``out``.

    The ledger entries (for the refusals) come from ``ledger`` (an export), the gate service at ``gate_socket``,
    or ``WS/ledger.sqlite`` read-only when readable (``coordinator.report.entries``); they must be the ledger that
    wrote ``released/`` (``InputError`` otherwise). ``release_policy`` (the policy the gate ran under) only adds the
    budget total, so the report can say how much epsilon is left; it is parsed, not trusted for any number.
    Refuses to overwrite ``out`` unless ``force``, and refuses to write into ``WS/released/`` (only the gate
    writes there).
    """
    workspace, out = Path(workspace), Path(out)
    released_dir = (workspace / RELEASED_DIR).resolve()
    if out.resolve().parent == released_dir:
        raise InputError(
            f"{out}: the report may not be written into {released_dir} (only the gate writes there)",
            hint="choose another path, e.g. --out report.html",
        )
    if out.exists() and not force:
        raise OutputExists(f"{out}: exists already", hint="pass --force to overwrite it, or choose another path")
    releases, head = load_released(workspace)
    policy: ReleasePolicy | None = None
    if release_policy is not None:
        policy = load_release_policy(release_policy)
        digests = {r.policy_digest for r in releases}
        given_digest = policy_digest(read_policy_bytes(release_policy))
        if digests and given_digest not in digests:
            raise PolicyError(
                f"{release_policy}: this is not the release policy the gate ran under ({given_digest} is not among "
                f"{sorted(digests)})",
                hint="pass the signed release policy the workspace's releases name, or leave --policy out",
            )
    entries = read_entries(workspace, ledger_file=ledger, gate_socket=gate_socket)
    check_entries(entries, head, releases)
    budget = compute_budget(releases, policy)
    html, built = render_report(
        releases, head, budget=budget, entries=entries, workspace_label=workspace.name, generated_at=generated_at
    )
    atomic_write_bytes(out, html.encode("utf-8"))
    items = [i for s in built.sections for i in s.items]
    return ReportResult(
        path=out,
        releases=len(releases),
        sections=(*(s.id for s in built.sections), "privacy"),
        figures=sum(1 for i in items for f in i.figures if f.css == "plot"),
        trees=sum(1 for i in items for f in i.figures if f.css == "tree"),
        suppressed=sum(r.status == "suppressed" for r in releases),
        refused=sum(r.decision == "refused" for r in built.rows) if entries.available else None,
        noisy=sum(r.noisy for r in releases),
        ledger_head=head,
        ledger_source=entries.source,
        budget=budget,
    )


__all__ = ["Built", "ReportResult", "build_report", "build_view", "render_report"]
