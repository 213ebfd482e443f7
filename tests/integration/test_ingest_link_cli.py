"""The coordinator CLI end to end on bundles sealed from hand-made payloads: init, ingest (with per-bundle exit
codes), link, status; coverage and conflicts equal what the payloads were built with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from kansrijk import bundle
from kansrijk.cli import app
from kansrijk.crypto import fingerprint, generate_signing_key, read_public_key, write_public_key
from kansrijk.errors import OutOfOrderBundle, ReplayedBundle, WorkspaceError

PARTNERS = ("cbs", "gemeente", "cjg", "duo")
POLICY = {p: "sha256:" + f"{i + 1}" * 64 for i, p in enumerate(PARTNERS)}
EXTRA = {
    "cbs": ("low_income", pl.Boolean),
    "gemeente": ("woz_eur", pl.Int32),
    "cjg": ("sdq_total", pl.Int32),
    "duo": ("repeated_grade", pl.Boolean),
}


def _population(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    presence = rng.random((n, 4)) < np.array([0.9, 0.8, 0.5, 0.6])
    presence[~presence.any(axis=1), 0] = True  # everyone is somewhere
    return pl.DataFrame(
        {
            "pseudonym": [rng.bytes(32) for _ in range(n)],
            "birth_year": rng.integers(2006, 2019, n).astype(np.int32),
            "sex": rng.choice(["M", "F"], n),
            **{f"in_{p}": presence[:, i] for i, p in enumerate(PARTNERS)},
        }
    )


def _payload(pop: pl.DataFrame, partner: str, year: int, flip_sex: set[int]) -> pl.DataFrame:
    column, dtype = EXTRA[partner]
    rows = pop.with_row_index("i").filter(pl.col(f"in_{partner}"))
    sex = (
        pl.when(pl.col("i").is_in(sorted(flip_sex)))
        .then(pl.when(pl.col("sex") == "M").then(pl.lit("F")).otherwise(pl.lit("M")))
        .otherwise(pl.col("sex"))
    )
    return rows.select(
        "pseudonym",
        pl.lit(year, dtype=pl.Int32).alias("year"),
        "birth_year",
        sex.alias("sex"),
        (pl.col("i") % 7).cast(dtype).alias(column),
    )


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", "integration passphrase")
    runner = CliRunner()
    signing = {}
    registry = tmp_path / "partners.toml"
    for p in PARTNERS:
        sk, pk = generate_signing_key()
        signing[p] = sk
        write_public_key(tmp_path / f"{p}.pub", "ed25519-signing", pk, label=p)
        result = runner.invoke(
            app,
            [
                "coordinator",
                "register-partner",
                str(registry),
                "--partner",
                p,
                "--public-key",
                str(tmp_path / f"{p}.pub"),
                "--policy-digest",
                POLICY[p],
            ],
        )
        assert result.exit_code == 0, result.output
    ws = tmp_path / "ws"
    result = runner.invoke(app, ["coordinator", "init", str(ws), "--registry", str(registry)])
    assert result.exit_code == 0, result.output
    assert "fingerprint" in result.output
    return {
        "runner": runner,
        "ws": ws,
        "signing": signing,
        "tmp": tmp_path,
        "recipient": read_public_key(ws / "keys" / "coordinator-hpke.pub", "x25519-hpke").key,
    }


def _seal(env: dict, frame: pl.DataFrame, partner: str, year: int, previous: str | None) -> Path:
    data = bundle.seal_bundle(
        frame,
        partner=partner,
        extract_id=f"{partner}-{year}",
        extract_year=year,
        policy_digest=POLICY[partner],
        quarantine_count=0,
        signing_key=env["signing"][partner],
        link_key_fingerprint=fingerprint("link-key", b"k" * 32),
        recipient_public_key=env["recipient"],
        previous_bundle_hash=previous,
    )
    path = env["tmp"] / f"{partner}-{year}.kbundle"
    path.write_bytes(data)
    return path


def test_cli_ingests_links_and_reports_coverage_and_conflicts_exactly(env: dict) -> None:
    runner, ws = env["runner"], env["ws"]
    pop = _population(400, seed=7)
    # person 3 is reported with the other sex by gemeente only -> conflict resolved by majority (if >= 3 report)
    flips = {"gemeente": {3, 10}, "cjg": {10}}
    bundles, previous = {}, {}
    for year in (2023, 2024):
        for p in PARTNERS:
            path = _seal(env, _payload(pop, p, year, flips.get(p, set())), p, year, previous.get(p))
            previous[p] = bundle.bundle_digest(path.read_bytes())
            bundles[(p, year)] = path
    result = runner.invoke(app, ["coordinator", "ingest", str(ws), *(str(bundles[(p, 2023)]) for p in PARTNERS)])
    assert result.exit_code == 0, result.output
    assert result.output.count("ingested") == 4

    # out of order (2024 of cbs before... already fine) and replay, per bundle, with the first refusal's exit code
    result = runner.invoke(
        app, ["coordinator", "ingest", str(ws), str(bundles[("cbs", 2023)]), str(bundles[("cbs", 2024)])]
    )
    assert result.exit_code == ReplayedBundle.exit_code
    assert "ReplayedBundle" in result.output and "ingested cbs-2024.kbundle" in result.output
    result = runner.invoke(
        app,
        [
            "coordinator",
            "ingest",
            str(ws),
            str(bundles[("duo", 2024)]),
            str(bundles[("gemeente", 2024)]),
            str(bundles[("cjg", 2024)]),
        ],
    )
    assert result.exit_code == 0, result.output

    result = runner.invoke(app, ["coordinator", "link", str(ws)])
    assert result.exit_code == 0, result.output
    assert "longitudinal" in result.output
    report = json.loads((ws / "internal" / "linkage-2023.json").read_text())
    truth = pop.select(pl.col(f"in_{p}").sum() for p in PARTNERS).row(0)
    assert [report["coverage"][p]["rows"] for p in PARTNERS] == list(truth)
    flags = [f"in_{p}" for p in PARTNERS]
    only = pop.filter(pl.sum_horizontal(flags) == 1)
    assert {p: report["coverage"][p]["only_here"] for p in PARTNERS} == {
        p: only.filter(pl.col(f"in_{p}")).height for p in PARTNERS
    }
    assert report["persons_linked"] == pop.height

    # the conflicts: person 3 (gemeente flipped) and 10 (gemeente and cjg flipped), where they were reported twice+
    def reporters(i: int) -> list[str]:
        return [p for p in PARTNERS if pop[f"in_{p}"][i]]

    expected_conflicts = sum(
        1
        for i in (3, 10)
        if {p for p in reporters(i) if i in flips.get(p, set())}
        and {p for p in reporters(i) if i not in flips.get(p, set())}
    )
    assert report["conflicts"]["sex"]["conflicts"] == expected_conflicts
    assert report["conflicts"]["birth_year"]["conflicts"] == 0

    dataset = pl.read_parquet(ws / "dataset" / "2023.parquet")
    assert dataset.height == report["persons_in_dataset"] == pop.height - report["excluded_unresolved"]
    assert {"age_years", "conflict_sex", "in_cjg", "woz_eur", "sdq_total", "psychosocial_risk"} <= set(dataset.columns)
    longitudinal = pl.read_parquet(ws / "dataset" / "longitudinal.parquet")
    assert sorted(longitudinal["year"].unique().to_list()) == [2023, 2024]

    result = runner.invoke(app, ["coordinator", "status", str(ws)])
    assert result.exit_code == 0, result.output
    assert "ingested bundles" in result.output and "link runs" in result.output
    result = runner.invoke(app, ["coordinator", "status", str(ws), "--json"])
    status = json.loads(result.output)
    assert sorted((b["partner"], b["year"]) for b in status["bundles"]) == sorted(bundles)
    assert {b["extract_id"] for b in status["bundles"]} == {f"{p}-{y}" for p, y in bundles}
    assert [r["year"] for r in status["link_runs"]] == [2023, 2024]
    assert "pseudonym" not in result.output


def test_link_before_ingest_and_out_of_order_ingest_have_their_exit_codes(env: dict) -> None:
    runner, ws = env["runner"], env["ws"]
    result = runner.invoke(app, ["coordinator", "link", str(ws)])
    assert result.exit_code == WorkspaceError.exit_code
    assert "nothing ingested" in result.output
    pop = _population(30, seed=1)
    first = _seal(env, _payload(pop, "cbs", 2023, set()), "cbs", 2023, None)
    second = _seal(env, _payload(pop, "cbs", 2024, set()), "cbs", 2024, bundle.bundle_digest(first.read_bytes()))
    result = runner.invoke(app, ["coordinator", "ingest", str(ws), str(second)])
    assert result.exit_code == OutOfOrderBundle.exit_code
    assert "OutOfOrderBundle" in result.output
    result = runner.invoke(app, ["coordinator", "init", str(ws)])
    assert result.exit_code == 8 and "refusing" in result.output


def test_linkage_report_goes_through_the_release_gate_when_a_signed_policy_is_given(env: dict) -> None:
    import shutil

    from kansrijk.crypto import generate_signing_key as officer_keypair
    from kansrijk.errors import PolicyNotSigned
    from kansrijk.policy.signing import sign_policy

    runner, ws, tmp = env["runner"], env["ws"], env["tmp"]
    pop = _population(3000, seed=3)
    flips = set(range(0, 3000, 50))  # 60 persons reported with the other sex by the gemeente
    for p in PARTNERS:
        path = _seal(env, _payload(pop, p, 2023, flips if p == "gemeente" else set()), p, 2023, None)
        assert runner.invoke(app, ["coordinator", "ingest", str(ws), str(path)]).exit_code == 0
    policy = tmp / "sdc-only.toml"
    shutil.copy(Path(__file__).parents[2] / "policies" / "release" / "sdc-only.toml", policy)
    officer_sk, officer_pk = officer_keypair()
    write_public_key(tmp / "officer.pub", "ed25519-signing", officer_pk, label="officer")

    # unsigned: refused before anything is released
    result = runner.invoke(
        app,
        ["coordinator", "link", str(ws), "--release-policy", str(policy), "--officer-key", str(tmp / "officer.pub")],
    )
    assert result.exit_code == PolicyNotSigned.exit_code, result.output

    sign_policy(policy, officer_sk)
    result = runner.invoke(
        app,
        ["coordinator", "link", str(ws), "--release-policy", str(policy), "--officer-key", str(tmp / "officer.pub")],
    )
    assert result.exit_code == 0, result.output
    for name in ("partners", "coverage_cbs", "coverage_duo", "conflicts", "resolution"):
        assert f"linkage_2023_{name}:" in result.output
    released = {p.name for p in (ws / "released").iterdir()}
    for name in ("partners", "coverage_cbs", "coverage_gemeente", "coverage_cjg", "coverage_duo"):
        assert any(r.startswith(f"linkage_2023_{name}.") for r in released), (name, released, result.output)
    document = json.loads((ws / "released" / "linkage_2023_coverage_cbs.json").read_text())
    assert "cbs" in json.dumps(document)

    # linking again re-writes the dataset; the gate refuses to release the same names twice
    result = runner.invoke(
        app,
        ["coordinator", "link", str(ws), "--release-policy", str(policy), "--officer-key", str(tmp / "officer.pub")],
    )
    assert result.exit_code == 0, result.output
    assert "linkage_2023_partners: refused" in result.output
    assert (ws / "ledger.sqlite").is_file()
