"""End to end from the CLI on the small synthetic city: partners make keys and seal their extracts with the node
agent, the coordinator ingests and links them, and the linked dataset's coverage and conflicts equal the
synthetic ground truth person by person (after the partners' own quarantine)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from analysis_workspace import key_ceremony_and_workspace
from typer.testing import CliRunner

from coordinator.workspace import load_keys, open_workspace
from kansrijk.cli import app
from kansrijk.crypto import hmac_sha256_expr, read_secret_key
from kansrijk.errors import OutOfOrderBundle, ReplayedBundle
from kansrijk.pseudonym import pseudonym_expr
from kansrijk.synth.city import CityPaths

PARTNERS = ("cbs", "gemeente", "cjg", "duo")
POLICIES = Path(__file__).parents[2] / "policies" / "sharing"
PASS = "end-to-end passphrase"


def _ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{' '.join(args)}\n{result.output}"
    return result.output


@pytest.fixture
def linked_city(small_city: CityPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", PASS)
    runner = CliRunner()
    keys, ws = key_ceremony_and_workspace(runner, tmp_path)
    bundles = {}
    for p in PARTNERS:
        outbox = tmp_path / "outbox" / p
        _ok(
            runner,
            "node",
            "prepare",
            "--policy",
            str(POLICIES / f"{p}.toml"),
            "--input",
            str(small_city.extracts[(p, 2023)]),
            "--out",
            str(outbox),
            "--signing-key",
            str(keys / f"{p}-signing.key"),
            "--link-key",
            str(keys / "link.key"),
            "--coordinator-key",
            str(ws / "keys" / "coordinator-hpke.pub"),
            "--quarantine-out",
            str(tmp_path / "quarantine" / p),
        )
        (bundles[p],) = outbox.glob("*.kbundle")
    output = _ok(runner, "coordinator", "ingest", str(ws), *(str(bundles[p]) for p in PARTNERS))
    assert output.count("ingested") == 4
    _ok(runner, "coordinator", "link", str(ws))
    return {"runner": runner, "ws": ws, "keys": keys, "tmp": tmp_path, "bundles": bundles}


def _expected(small_city: CityPaths, tmp: Path, ws: Path, keys: Path) -> pl.DataFrame:
    """Ground truth per person, keyed by the P2 the coordinator must have computed, with presence after each
    partner's quarantine and the conflicts that linkage can see."""
    link_key = read_secret_key(keys / "link.key", "link-key", PASS)
    coordinator_key = load_keys(open_workspace(ws), PASS).pseudonym_key
    persons = pl.read_parquet(small_city.persons).filter(pl.col("year") == 2023)
    faults = pl.read_parquet(small_city.faults).filter(pl.col("year") == 2023)
    bsn_to_person = dict(zip(persons["bsn"].to_list(), persons["person_id"].to_list(), strict=True))
    shared: dict[str, set[int]] = {}  # persons with at least one row the partner's node agent did not quarantine
    conflict_rows: dict[str, set[int]] = {}
    for p in PARTNERS:
        (report,) = (tmp / "quarantine" / p).glob("*.csv")
        quarantined = pl.read_csv(report)
        # a CSV report numbers lines (header line 1; no line break in a synthetic field), a Parquet report rows
        rows = set((quarantined["line"] - 1 if "line" in quarantined.columns else quarantined["row"]).to_list())
        fault_rows = set(faults.filter(pl.col("partner") == p)["row"].to_list())
        assert rows <= fault_rows | {r - 1 for r in fault_rows}, p  # only synthetic faults (and their originals)
        raw = _raw_bsns(small_city.extracts[(p, 2023)])
        kept = [bsn for row, bsn in enumerate(raw, start=1) if row not in rows]
        shared[p] = {bsn_to_person[b] for b in kept if b in bsn_to_person}
        conflict_rows[p] = rows
    frame = persons.select(
        "person_id",
        hmac_sha256_expr(coordinator_key, pseudonym_expr(link_key, pl.col("bsn"))).alias("pseudonym"),
        *[pl.col("person_id").is_in(sorted(shared[p])).alias(f"in_{p}") for p in PARTNERS],
    )
    assert frame.filter(pl.any_horizontal([pl.col(f"in_{p}") for p in PARTNERS])).height > 0
    for p in PARTNERS:
        truth = set(persons.filter(pl.col(f"in_{p}"))["person_id"].to_list())
        faulty = set(faults.filter(pl.col("partner") == p)["person_id"].to_list())
        # shared = the ground truth's people at that partner, minus only people with a synthetic fault there
        assert shared[p] <= truth and truth - shared[p] <= faulty, p
    for kind in ("sex", "birth_year"):
        faulty = faults.filter(pl.col("kind") == f"conflict_{kind}")
        # a partner's wrong value is a visible conflict if that row was shared and another partner holds the person
        visible = []
        for p in PARTNERS:
            ids = faulty.filter((pl.col("partner") == p) & ~pl.col("row").is_in(sorted(conflict_rows[p])))
            visible.append(
                pl.col("person_id").is_in(ids["person_id"].to_list())
                & pl.col(f"in_{p}")
                & pl.any_horizontal([pl.col(f"in_{q}") for q in PARTNERS if q != p])
            )
        frame = frame.with_columns(pl.any_horizontal(visible).alias(f"conflict_{kind}"))
    return frame.filter(pl.any_horizontal([pl.col(f"in_{p}") for p in PARTNERS]))


def _raw_bsns(extract: Path) -> list[str]:
    """The BSN of every data row of a raw extract, in row order (row 1 = first data row)."""
    if extract.suffix == ".parquet":
        return pl.read_parquet(extract)["bsn"].cast(pl.String).to_list()
    sep = ";" if extract.name.startswith("gemeente") else ","
    frame = pl.read_csv(extract, separator=sep, infer_schema=False, encoding="utf8-lossy")
    (column,) = [c for c in frame.columns if c.lower() == "bsn"]
    return frame[column].to_list()


def test_small_city_links_to_exactly_the_ground_truth_coverage_and_conflicts(
    linked_city: dict, small_city: CityPaths
) -> None:
    ws = linked_city["ws"]
    expected = _expected(small_city, linked_city["tmp"], ws, linked_city["keys"])
    report = json.loads((ws / "internal" / "linkage-2023.json").read_text())
    dataset = pl.read_parquet(ws / "dataset" / "2023.parquet")

    assert report["persons_linked"] == expected.height
    for p in PARTNERS:
        assert report["coverage"][p]["rows"] == expected[f"in_{p}"].sum(), p
        only = expected.filter(pl.col(f"in_{p}") & (pl.sum_horizontal([f"in_{q}" for q in PARTNERS]) == 1))
        assert report["coverage"][p]["only_here"] == only.height, p
    for kind in ("sex", "birth_year"):
        assert report["conflicts"][kind]["conflicts"] == expected[f"conflict_{kind}"].sum(), kind
    assert sum(report["conflicts"][k]["conflicts"] for k in ("sex", "birth_year")) > 0  # the city has conflicts

    # person by person: the dataset holds exactly the expected people minus the excluded, with their flags
    columns = ["pseudonym", *(f"in_{p}" for p in PARTNERS), "conflict_sex", "conflict_birth_year"]
    got = dataset.select(columns).sort("pseudonym")
    want = expected.select(columns).join(got.select("pseudonym"), on="pseudonym", how="semi").sort("pseudonym")
    assert got.height == expected.height - report["excluded_unresolved"]
    assert got.equals(want)

    # the analysis variables are there: features, outcomes, partner variables
    assert {"age_years", "woz_eur", "sdq_total", "track", "low_income", "psychosocial_risk", "delinquency"} <= set(
        dataset.columns
    )
    assert dataset["pseudonym"].is_unique().all()


def test_reingest_is_replay_and_status_lists_every_bundle(linked_city: dict) -> None:
    runner, ws, bundles = linked_city["runner"], linked_city["ws"], linked_city["bundles"]
    result = runner.invoke(app, ["coordinator", "ingest", str(ws), str(bundles["cjg"])])
    assert result.exit_code == ReplayedBundle.exit_code
    status = json.loads(_ok(runner, "coordinator", "status", str(ws), "--json"))
    assert sorted(b["partner"] for b in status["bundles"]) == sorted(PARTNERS)
    assert all(b["row_count"] > 0 for b in status["bundles"])
    assert status["link_runs"][0]["year"] == 2023


def test_a_bundle_chained_to_an_unknown_predecessor_is_out_of_order(linked_city: dict, small_city: CityPaths) -> None:
    runner, ws, keys, tmp = linked_city["runner"], linked_city["ws"], linked_city["keys"], linked_city["tmp"]
    # the partner chains to a bundle the coordinator never received (a lost one): sealed with --previous
    lost_box, next_box = tmp / "lost", tmp / "next"
    common = [
        "--policy",
        str(POLICIES / "duo.toml"),
        "--input",
        str(small_city.extracts[("duo", 2023)]),
        "--signing-key",
        str(keys / "duo-signing.key"),
        "--link-key",
        str(keys / "link.key"),
        "--coordinator-key",
        str(ws / "keys" / "coordinator-hpke.pub"),
        "--quarantine-out",
        str(tmp / "q"),
    ]
    _ok(
        runner,
        "node",
        "prepare",
        *common,
        "--out",
        str(lost_box),
        "--previous",
        str(linked_city["bundles"]["duo"]),
        "--extract-id",
        "duo-2023-lost",
    )
    (lost,) = lost_box.glob("*.kbundle")
    _ok(
        runner,
        "node",
        "prepare",
        *common,
        "--out",
        str(next_box),
        "--previous",
        str(lost),
        "--extract-id",
        "duo-2023-next",
    )
    (after_lost,) = next_box.glob("*.kbundle")
    result = runner.invoke(app, ["coordinator", "ingest", str(ws), str(after_lost)])
    assert result.exit_code == OutOfOrderBundle.exit_code, result.output


def test_two_years_chained_per_partner_link_into_a_longitudinal_view(
    small_city_multi_year: CityPaths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", PASS)
    runner = CliRunner()
    partners = ("cbs", "duo")
    keys, ws = key_ceremony_and_workspace(runner, tmp_path, partners)
    bundles: dict[tuple[str, int], Path] = {}
    for p in partners:
        previous: list[str] = []
        for year in (2022, 2023):
            outbox = tmp_path / "outbox" / p / str(year)
            _ok(
                runner,
                "node",
                "prepare",
                "--policy",
                str(POLICIES / f"{p}.toml"),
                "--input",
                str(small_city_multi_year.extracts[(p, year)]),
                "--out",
                str(outbox),
                "--signing-key",
                str(keys / f"{p}-signing.key"),
                "--link-key",
                str(keys / "link.key"),
                "--coordinator-key",
                str(ws / "keys" / "coordinator-hpke.pub"),
                "--quarantine-out",
                str(tmp_path / "quarantine"),
                *previous,
            )
            (bundles[(p, year)],) = outbox.glob("*.kbundle")
            previous = ["--previous", str(bundles[(p, year)])]

    # 2023 before 2022: out of order, and nothing changes; then the right order ingests both
    result = runner.invoke(app, ["coordinator", "ingest", str(ws), str(bundles[("cbs", 2023)])])
    assert result.exit_code == OutOfOrderBundle.exit_code, result.output
    _ok(runner, "coordinator", "ingest", str(ws), *(str(bundles[(p, y)]) for p in partners for y in (2022, 2023)))
    output = _ok(runner, "coordinator", "link", str(ws))
    assert "longitudinal" in output
    panel = pl.read_parquet(ws / "dataset" / "longitudinal.parquet")
    per_year = {y: pl.read_parquet(ws / "dataset" / f"{y}.parquet") for y in (2022, 2023)}
    assert panel.height == sum(f.height for f in per_year.values())
    assert panel.select("pseudonym", "year").is_unique().all()
    # the same person carries the same P2 in both years (the panel links across years)
    both = per_year[2022].join(per_year[2023], on="pseudonym", how="inner")
    assert both.height > 0.8 * min(f.height for f in per_year.values())
    assert (both["birth_year"] == both["birth_year_right"]).mean() > 0.99
