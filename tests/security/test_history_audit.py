"""A curious analyst combining many releases: the release-history audit (``kansrijk.gate.audit``).

Each release passes the gate's rules on its own and differencing against any one earlier release; the attacks
here combine three or more (linked tables over a hierarchy, chains, trees next to counts, means over nested
populations) and random sequences of requests (hypothesis). Every case is then checked by an **independent
attacker**: a linear program written here, over the finest groups the attacker can form from the published
cells (the persons who share every released cell's membership), with the numbers read back from ``released/``
alone. It must find no group of 1 to t-1 persons whose count it pins to fewer than the policy's ``audit_interval``
whole values, nor a small group's sum to within p%.

The city: 400 persons in six buurten of two wijken, ages 4-22 plus two persons aged 23, WOZ values distinct.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import scipy.optimize
from gate_kit import gate_workspace, signed_policy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kansrijk.gate.audit import AuditRecord
from kansrijk.gate.compute import condition_expr
from kansrijk.gate.history import person_year_ids
from kansrijk.gate.release import Gate, Refused, Released, Suppressed
from kansrijk.gate.requests import RequestInvalid
from kansrijk.gate.specs import CountSpec, MeanSpec, QuantileSpec, ReleaseSpec, SplitNode, TreeSpec, where

REQUESTER = "analysis"
T = 10
INTERVAL = 2  # sdc.audit_interval of the shipped policies
RISK = "psychosocial_risk"
WIJKEN = {
    "WK059901": ("BU05990101", "BU05990102", "BU05990103"),
    "WK059902": ("BU05990201", "BU05990202", "BU05990203"),
}
BUURT_WIJK = {b: w for w, bs in WIJKEN.items() for b in bs}
# positives per buurt: two buurten hold 4 and 7 (withheld by the threshold; the linked-table attack wants them
# back); every buurt holds 50..90 persons, so the margins pass
POSITIVES = {"BU05990101": 4, "BU05990102": 30, "BU05990103": 26, "BU05990201": 7, "BU05990202": 25, "BU05990203": 20}
SIZES = {"BU05990101": 50, "BU05990102": 90, "BU05990103": 60, "BU05990201": 55, "BU05990202": 85, "BU05990203": 60}


def city(seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for b, n in SIZES.items():
        risk = np.zeros(n, dtype=bool)
        risk[: POSITIVES[b]] = True
        rng.shuffle(risk)
        for r in risk:
            rows.append((b, BUURT_WIJK[b], bool(r)))
    n = len(rows)
    ages = rng.integers(4, 23, n)
    ages[:2] = 23  # the two persons a chain of releases would isolate
    return pl.DataFrame(
        {
            "buurt_code": [r[0] for r in rows],
            "wijk_code": [r[1] for r in rows],
            RISK: [r[2] for r in rows],
            "sex": rng.choice(["M", "F"], n).tolist(),
            "age_years": ages.astype(np.int32),
            "woz_eur": rng.permutation(np.arange(100_000, 100_000 + 997 * n, 997))[:n].astype(np.int32),
        }
    )


@dataclass
class Bench:
    ws: Path
    gate: Gate
    frame: pl.DataFrame
    sent: dict[str, ReleaseSpec]

    def release(self, spec: ReleaseSpec) -> Any:
        self.sent[spec.name] = spec
        try:
            return self.gate.release(spec, requested_by=REQUESTER)
        except RequestInvalid as exc:
            return exc

    def document(self, name: str) -> dict[str, Any] | None:
        path = self.ws / "released" / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None


@pytest.fixture
def bench(tmp_path: Path) -> Iterator[Callable[..., Bench]]:
    gates: list[Gate] = []

    def make(frame: pl.DataFrame | None = None) -> Bench:
        root = tmp_path / f"b{len(gates)}"
        root.mkdir()
        frame = city() if frame is None else frame
        ws = gate_workspace(root, frame)
        path, pub, _ = signed_policy(root, "sdc-only")
        gates.append(Gate.open(ws, path, [pub]))
        return Bench(ws, gates[-1], pl.read_parquet(ws / "dataset" / "2023.parquet"), {})

    yield make
    for g in gates:
        g.close()


# --- the independent attacker ----------------------------------------------------------------------------------
def _mask(frame: pl.DataFrame, spec: ReleaseSpec) -> np.ndarray:
    if not spec.population:
        return np.ones(frame.height, dtype=bool)
    return frame.select(pl.all_horizontal([condition_expr(spec, c) for c in spec.population])).to_series().to_numpy()


def published(b: Bench) -> list[tuple[np.ndarray, float, np.ndarray | None]]:
    """Every exact number in ``released/`` as (the persons it covers, its value, their WOZ values for a sum),
    rebuilt from the released documents and the specs the attacker sent (not from the gate's records)."""
    out: list[tuple[np.ndarray, float, np.ndarray | None]] = []
    f = b.frame
    for name, spec in b.sent.items():
        doc = b.document(name)
        if doc is None or doc["noisy"]:
            continue
        base = _mask(f, spec)
        values = doc["values"]
        if isinstance(spec, TreeSpec):
            for node in values["nodes"]:
                if node["class_counts"] is None:
                    continue
                inside = base & _route(f, spec, node["node_id"])
                for c, n in enumerate(node["class_counts"]):
                    out.append((inside & (f[RISK].to_numpy() == bool(c)), float(n), None))
            continue
        columns, by = values["columns"], list(getattr(spec, "by", ()))
        for row in values["rows"]:
            cell = dict(zip(columns, row, strict=True))
            if cell["status"] != "released":
                continue
            inside = base.copy()
            for var in by:
                inside &= f[var].to_numpy() == cell[var]
            if isinstance(spec, QuantileSpec):  # each level's window of T persons, whom the attacker is taken to know
                woz = f[spec.value].cast(pl.Float64).to_numpy()
                for q in spec.levels:
                    window = quantile_window(woz, inside, q)
                    out.append((window, float(cell[f"q{q:g}"]) * window.sum(), woz))
                continue
            if isinstance(spec, MeanSpec):
                inside &= f[spec.value].is_not_null().to_numpy()
                woz = f[spec.value].cast(pl.Float64).to_numpy()
                out.append((inside, float(cell["n"]), None))
                out.append((inside, float(cell["n"]) * float(cell["mean"]), woz))
            else:
                out.append((inside, float(cell["n"]), None))
    return out


def quantile_window(values: np.ndarray, inside: np.ndarray, q: float) -> np.ndarray:
    """The persons whose values a released quantile averages: the T sorted values nearest the quantile (the gate's
    documented window, computed here from the frame)."""
    at = np.flatnonzero(inside & ~np.isnan(values))
    order = at[np.argsort(values[at], kind="stable")]
    start = round(q * (order.size - 1) - (T - 1) / 2)
    window = np.zeros(values.size, dtype=bool)
    window[order[start : start + T]] = True
    return window


def _route(f: pl.DataFrame, spec: TreeSpec, target: int) -> np.ndarray:
    nodes = {n.node_id: n for n in spec.nodes}
    parent = {c: (n.node_id, side) for n in spec.nodes if not n.is_leaf for side, c in (("L", n.left), ("R", n.right))}
    inside = np.ones(f.height, dtype=bool)
    node = target
    while node in parent:
        p, side = parent[node]
        split = nodes[p]
        left = (f[split.var].cast(pl.Float32) <= split.threshold).fill_null(split.missing_left).to_numpy()
        inside &= left if side == "L" else ~left
        node = p
    return inside


def attacker_finds(b: Bench, numbers: list[tuple[np.ndarray, float, np.ndarray | None]] | None = None) -> list[str]:
    """Small groups the attacker pins: for counts, the finest groups (persons sharing every published cell's
    membership), the withheld cells and the persons between two nested published cells, of 1..t-1 persons, whose
    count a linear program over all published counts bounds to fewer than INTERVAL whole values; for sums, such
    groups whose WOZ total it bounds to within 10%."""
    numbers = published(b) if numbers is None else numbers
    found: list[str] = []
    for kind in ("count", "sum"):
        cells = [(m, v, w) for m, v, w in numbers if (w is None) == (kind == "count")]
        if not cells:
            continue
        member = np.array([m for m, _, _ in cells])  # cells x persons
        keys, atom = np.unique(member.T, axis=0, return_inverse=True)
        atom = atom.ravel()
        sizes = np.bincount(atom, minlength=len(keys))
        a = np.array(keys.T, dtype=float)  # cells x atoms
        rhs = np.array([v for _, v, _ in cells])
        if kind == "count":
            truth, lo, hi = sizes.astype(float), np.zeros(len(keys)), [None] * len(keys)
        else:
            woz = cells[0][2]
            truth = np.bincount(atom, weights=woz, minlength=len(keys))
            lo, hi = sizes * 1e5, list(sizes * 1.5e6)
        groups = [[i] for i in np.flatnonzero((sizes < T) & (a.sum(axis=0) > 0))]
        for part in withheld_parts(b):  # a withheld cell whose persons other releases split into several groups
            atoms_in = np.unique(atom[part])
            whole = all((atom[~part] != g).all() for g in atoms_in)
            if whole and len(atoms_in) >= 2 and 0 < part.sum() < T and a[:, atoms_in].any():
                groups.append(atoms_in.tolist())
        for outer in member:  # and the persons between two nested published cells
            for inner in member:
                between = outer & ~inner
                if not (inner & ~outer).any() and 0 < between.sum() < T:
                    groups.append(np.unique(atom[between]).tolist())
        for group in groups:
            span = []
            for sign in (1.0, -1.0):
                c = np.zeros(len(keys))
                c[group] = sign
                res = scipy.optimize.linprog(c, A_eq=a, b_eq=rhs, bounds=list(zip(lo, hi, strict=True)), method="highs")
                span.append(sign * res.fun if res.status == 0 else -sign * np.inf)  # unbounded: no bound that way
            low, high = span[0], span[1]
            size, true = int(sizes[group].sum()), float(truth[group].sum())
            narrow = (
                np.floor(high + 1e-6) - np.ceil(low - 1e-6) < INTERVAL
                if kind == "count"
                else high - low < 0.2 * abs(true)
            )
            if narrow:
                found.append(f"{kind} of a group of {size}: true {true:g}, pinned to [{low:g}, {high:g}]")
    return found


def withheld_parts(b: Bench) -> list[np.ndarray]:
    """The persons of every cell a table withheld (the attacker knows the grid from the spec and the document)."""
    f = b.frame
    parts = []
    for name, spec in b.sent.items():
        doc = b.document(name)
        if doc is None or doc["noisy"] or isinstance(spec, TreeSpec) or "rows" not in doc["values"]:
            continue
        columns, by = doc["values"]["columns"], list(getattr(spec, "by", ()))
        base = _mask(f, spec)
        for row in doc["values"]["rows"]:
            cell = dict(zip(columns, row, strict=True))
            if cell["status"] == "released":
                continue
            inside = base.copy()
            for var in by:
                inside &= f[var].to_numpy() == cell[var]
            parts.append(inside)
    return parts


def verdict(outcome: Any) -> str:
    if isinstance(outcome, Refused):
        return "refused (" + ", ".join(v.rule for v in outcome.verdicts if v.verdict == "refuse") + ")"
    if isinstance(outcome, Suppressed):
        return "suppressed (" + ", ".join(v.rule for v in outcome.verdicts if v.verdict == "suppress") + ")"
    return "released" if isinstance(outcome, Released) else type(outcome).__name__


def record(tally: Any, attack_class: str, name: str, b: Bench, outcome: Any) -> list[str]:
    found = attacker_finds(b)
    tally.attack(name, not found, attack_class=attack_class, how=verdict(outcome))
    return found


# --- linked tables over a hierarchy -----------------------------------------------------------------------------
def test_linked_tables_over_buurt_and_wijk_pin_no_withheld_cell(bench, tally) -> None:
    b = bench()
    by_buurt = b.release(CountSpec(name="risk_by_buurt", years=(2023,), by=(RISK, "buurt_code")))
    assert isinstance(by_buurt, Suppressed), verdict(by_buurt)  # 4 and 7 positives are withheld
    margins = b.release(CountSpec(name="buurt_margins", years=(2023,), by=("buurt_code",)))
    by_wijk = b.release(CountSpec(name="risk_by_wijk", years=(2023,), by=(RISK, "wijk_code")))
    total = b.release(CountSpec(name="risk_total", years=(2023,), by=(RISK,)))
    outcomes = [margins, by_wijk, total]
    assert any(
        v.rule == "history_audit" and v.verdict in ("suppress", "refuse") for o in outcomes for v in o.verdicts
    ), [verdict(o) for o in outcomes]
    found = record(tally, "linked tables (history)", "outcome x buurt, buurt margins, outcome x wijk", b, outcomes[-1])
    assert not found, found


def test_without_the_audit_the_linked_tables_would_pin_the_withheld_cells(bench) -> None:
    """The attacker above can fail: the same cells published without the audit pin the withheld ones."""
    b = bench()
    b.release(CountSpec(name="risk_by_buurt", years=(2023,), by=(RISK, "buurt_code")))
    f = b.frame
    # what margins and the wijk table would say, computed here (not released): add them as published numbers
    extra = [(f["buurt_code"].to_numpy() == bu, float(n), None) for bu, n in SIZES.items()]
    for bs in WIJKEN.values():
        for r in (True, False):
            m = np.isin(f["buurt_code"].to_numpy(), bs) & (f[RISK].to_numpy() == r)
            extra.append((m, float(m.sum()), None))
    found = attacker_finds(b, published(b) + extra)
    assert found, "the independent attacker must find the withheld cells when margins are published"


def test_a_withheld_cell_split_by_another_table_is_not_pinned_as_a_whole(bench, tally) -> None:
    """Positives by buurt withholds two buurten (4 and 7); positives by sex splits every buurt's positives in two,
    so each withheld buurt is now two groups, neither pinned (each trades persons with its buurt's neighbours);
    positives by wijk then pins each withheld buurt as a whole (wijk minus the two released buurten = 4). An audit
    of single groups misses it: the withheld cell is a group of its own."""
    b = bench()
    positives = (where(RISK, "==", True),)
    by_buurt = b.release(CountSpec(name="pos_by_buurt", years=(2023,), population=positives, by=("buurt_code",)))
    assert isinstance(by_buurt, Suppressed), verdict(by_buurt)
    by_sex = b.release(CountSpec(name="pos_by_sex", years=(2023,), population=positives, by=("sex",)))
    by_wijk = b.release(CountSpec(name="pos_by_wijk", years=(2023,), population=positives, by=("wijk_code",)))
    outcomes = [by_sex, by_wijk]
    assert any(v.rule == "history_audit" and v.verdict != "pass" for o in outcomes for v in o.verdicts), [
        verdict(o) for o in outcomes
    ]
    found = record(tally, "linked tables (history)", "withheld buurten split by sex, then wijk totals", b, by_wijk)
    assert not found, found


def test_without_the_audit_a_split_withheld_cell_would_be_pinned(bench) -> None:
    """The attacker above can fail: positives by sex and by wijk, published next to positives by buurt, pin the
    withheld buurten as wholes while no single group of the attacker's is pinned."""
    b = bench()
    positives = (where(RISK, "==", True),)
    b.release(CountSpec(name="pos_by_buurt", years=(2023,), population=positives, by=("buurt_code",)))
    f = b.frame
    pos = f[RISK].to_numpy()
    extra = [(pos & (f["sex"].to_numpy() == s), float((pos & (f["sex"].to_numpy() == s)).sum()), None) for s in "MF"]
    for w in WIJKEN:
        m = pos & (f["wijk_code"].to_numpy() == w)
        extra.append((m, float(m.sum()), None))
    found = attacker_finds(b, published(b) + extra)
    assert found and all("group of 4" in x or "group of 7" in x for x in found), found


# --- chains of three releases -------------------------------------------------------------------------------------
UP_TO_23 = (where("age_years", "<=", 23),)
SEVEN_TO_22 = (where("age_years", ">=", 7), where("age_years", "<=", 22))
UP_TO_6 = (where("age_years", "<=", 6),)


@pytest.mark.parametrize("by", [("sex",), (RISK,)], ids=["by sex", "by outcome"])
def test_a_chain_of_three_counts_does_not_isolate_two_persons(bench, tally, by) -> None:
    b = bench()
    first = b.release(CountSpec(name="g", years=(2023,), population=UP_TO_23, by=by))
    second = b.release(CountSpec(name="g_minus", years=(2023,), population=SEVEN_TO_22, by=by))
    assert isinstance(first, Released | Suppressed) and isinstance(second, Released | Suppressed)
    third = b.release(CountSpec(name="r", years=(2023,), population=UP_TO_6, by=by))
    assert any(v.rule == "history_audit" and v.verdict != "pass" for v in third.verdicts), verdict(third)
    found = record(tally, "chains of releases", f"G, G - X + R, R (by {by[0]})", b, third)
    assert not found, found


def test_a_chain_of_four_with_an_overlap_is_stopped(bench, tally) -> None:
    b = bench()
    b.release(CountSpec(name="a", years=(2023,), population=(where("age_years", "<=", 23),), by=("sex",)))
    b.release(
        CountSpec(
            name="b",
            years=(2023,),
            population=(where("age_years", ">=", 10), where("age_years", "<=", 22)),
            by=("sex",),
        )
    )
    b.release(CountSpec(name="c", years=(2023,), population=(where("age_years", "<=", 9),), by=("sex",)))
    last = b.release(CountSpec(name="d", years=(2023,), population=(where("age_years", "<=", 22),), by=("sex",)))
    found = record(tally, "chains of releases", "four overlapping age ranges", b, last)
    assert not found, found


# --- trees and model counts ----------------------------------------------------------------------------------------
def _stump(name: str, population: Sequence[Any]) -> TreeSpec:
    return TreeSpec(
        name=name,
        years=(2023,),
        population=tuple(population),
        outcome=RISK,
        features=("woz_eur",),
        nodes=(
            SplitNode(node_id=0, var="woz_eur", threshold=300_000.0, left=1, right=2, missing_left=True),
            SplitNode(node_id=1),
            SplitNode(node_id=2),
        ),
        min_samples_leaf=20,
        max_depth=1,
        min_samples_split=40,
    )


def test_trees_and_a_count_in_a_chain_do_not_give_two_persons_outcomes(bench, tally) -> None:
    b = bench()
    first = b.release(_stump("tree_g", UP_TO_23))
    second = b.release(_stump("tree_g_minus", SEVEN_TO_22))
    third = b.release(CountSpec(name="r_by_risk", years=(2023,), population=UP_TO_6, by=(RISK,)))
    outcomes = [first, second, third]
    assert isinstance(first, Released), verdict(first)
    stoppers = {"history_audit", "differencing"}
    assert any(v.rule in stoppers and v.verdict != "pass" for o in outcomes[1:] for v in o.verdicts), [
        verdict(o) for o in outcomes
    ]
    found = record(tally, "tree and model counts (history)", "two trees and a count, chained", b, third)
    assert not found, found


def test_two_trees_on_nearly_the_same_population_are_stopped(bench, tally) -> None:
    b = bench()
    first = b.release(_stump("tree_all", ()))
    assert isinstance(first, Released), verdict(first)
    one = int(b.frame.filter(pl.col(RISK))["woz_eur"][0])
    second = b.release(_stump("tree_all_but_one", (where("woz_eur", "!=", one),)))
    assert isinstance(second, Refused), verdict(second)
    found = record(tally, "tree and model counts (history)", "leaves [n, k] and [n, k-1]", b, second)
    assert not found, found


# --- values ---------------------------------------------------------------------------------------------------------
def test_means_over_a_chain_do_not_give_two_persons_woz(bench, tally) -> None:
    b = bench()
    outcomes = [
        b.release(MeanSpec(name=f"woz_{i}", years=(2023,), population=pop, value="woz_eur"))
        for i, pop in enumerate((UP_TO_23, SEVEN_TO_22, UP_TO_6))
    ]
    assert isinstance(outcomes[0], Released), verdict(outcomes[0])
    assert any(v.rule == "history_audit" and v.verdict != "pass" for o in outcomes for v in o.verdicts)
    found = record(tally, "value differencing (history)", "means over G, G - X + R, R", b, outcomes[-1])
    assert not found, found


def test_a_quantiles_windows_enter_the_audit_as_sums(bench) -> None:
    """A quantile is released as the mean of the T values nearest it: the gate's audit records hold, per level,
    exactly those T persons and their sum (the released mean times T), as this test computes them itself."""
    b = bench()
    levels = (0.25, 0.5, 0.75)
    out = b.release(QuantileSpec(name="woz_quantiles", years=(2023,), value="woz_eur", levels=levels))
    assert isinstance(out, Released), verdict(out)
    with sqlite3.connect(b.ws / "ledger.sqlite") as conn:
        rows = conn.execute("SELECT seq, record FROM audit_records ORDER BY seq, part").fetchall()
    records = [AuditRecord.from_blob(bytes(blob), seq) for seq, blob in rows]
    assert [r.quantity for r in records] == ["sum:woz_eur"] * len(levels)
    doc = b.document("woz_quantiles")
    assert doc is not None
    cell = dict(zip(doc["values"]["columns"], doc["values"]["rows"][0], strict=True))
    woz = b.frame["woz_eur"].cast(pl.Float64).to_numpy()
    ids = person_year_ids(b.frame)
    for q, r in zip(levels, records, strict=True):
        window = quantile_window(woz, np.ones(woz.size, dtype=bool), q)
        assert sorted(r.ids[r.codes >= 0].tolist()) == sorted(ids[window].tolist())
        assert len(r.cells) == 1 and r.cells[0].value == pytest.approx(float(cell[f"q{q:g}"]) * T)
        assert r.cells[0].value == pytest.approx(woz[window].sum())


def test_a_mean_over_a_quantile_window_and_one_more_person_is_stopped(bench, tally) -> None:
    """The median is the mean of a window of T persons; a mean over a population that is that window plus the
    next person up (chosen by WOZ bounds) differences to that one person's WOZ. The audit withholds it."""
    b = bench()
    median = b.release(QuantileSpec(name="woz_median", years=(2023,), value="woz_eur", levels=(0.5,)))
    assert isinstance(median, Released), verdict(median)
    woz = b.frame["woz_eur"].to_numpy()
    ranked = np.sort(woz)
    start = round(0.5 * (woz.size - 1) - (T - 1) / 2)
    window_and_one = (where("woz_eur", ">=", int(ranked[start])), where("woz_eur", "<=", int(ranked[start + T])))
    mean = b.release(MeanSpec(name="woz_around_median", years=(2023,), population=window_and_one, value="woz_eur"))
    assert not isinstance(mean, Released), verdict(mean)
    assert any(v.rule == "history_audit" and v.verdict != "pass" for v in mean.verdicts), verdict(mean)
    found = record(tally, "value differencing (history)", "median window, then a mean over it plus one", b, mean)
    assert not found, found


# --- random sequences ------------------------------------------------------------------------------------------------
@st.composite
def requests(draw: st.DrawFn) -> list[CountSpec]:
    specs = []
    for i in range(draw(st.integers(2, 5))):
        # boundaries where chains happen: the two persons aged 23, and age bands that tile 4..22
        lo = draw(st.sampled_from([4, 5, 7, 10, 16, 23]))
        hi = draw(st.sampled_from([h for h in (4, 6, 9, 15, 22, 23) if h >= lo]))
        population = [where("age_years", ">=", lo), where("age_years", "<=", hi)]
        if draw(st.integers(0, 4)) == 0:
            population.append(
                where("buurt_code", "in", sorted(draw(st.sets(st.sampled_from(list(SIZES)), min_size=1))))
            )
        by = draw(st.sampled_from([(RISK,), ("sex",), (RISK, "wijk_code")]))
        specs.append(CountSpec(name=f"q{i}", years=(2023,), population=tuple(population), by=by))
    return specs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=requests())
def test_random_request_sequences_leave_no_small_group_pinned(bench, tally, specs) -> None:
    b = bench()
    outcomes = [b.release(s) for s in specs]
    assert not any(isinstance(o, Exception) for o in outcomes), outcomes
    found = record(
        tally, "random sequences (history)", " / ".join(s.population_label() for s in specs), b, outcomes[-1]
    )
    assert not found, (found, [verdict(o) for o in outcomes])
