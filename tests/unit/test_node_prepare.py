"""The partner pipeline on small hand-written extracts: what leaves, in which form, and what is held back."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import node_samples as ns
import polars as pl
import pytest

from kansrijk import bundle, crypto
from kansrijk.errors import InputError, KansrijkError, ValidationFailed
from node_agent.prepare import prepare_extract

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "sharing"


class Keys:
    def __init__(self) -> None:
        self.signing, self.signing_public = crypto.generate_signing_key()
        self.recipient, self.recipient_public = crypto.generate_encryption_key()
        self.link = crypto.random_key()


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys()


def run(keys: Keys, partner: str, extract: Path, out: Path, policy: Path | None = None, **options):
    return prepare_extract(
        policy_path=policy or POLICIES / f"{partner}.toml",
        input_path=extract,
        out_dir=out / "outbox",
        signing_key=keys.signing,
        link_key=keys.link,
        coordinator_public_key=keys.recipient_public,
        quarantine_dir=out / "quarantine",
        **options,
    )


def open_payload(keys: Keys, partner: str, path: Path) -> pl.DataFrame:
    data = path.read_bytes()
    return bundle.open_bundle(
        data, trusted_keys={partner: keys.signing_public}, recipient_private_key=keys.recipient
    ).payload


def plaintext(keys: Keys, path: Path) -> bytes:
    """The decrypted Parquet bytes, decoded by the spec (docs/bundle-format.md), not by kansrijk.bundle."""
    data = path.read_bytes()
    mlen = int.from_bytes(data[10:14], "big")
    manifest = data[14 : 14 + mlen]
    rest = data[14 + mlen + 64 :]
    wrapped, payload = rest[2:82], rest[90:]
    digest = hashlib.sha256(manifest).digest()
    key = crypto.hpke_open(keys.recipient, wrapped, info=bundle.DATA_KEY_INFO + digest)
    return crypto.aead_decrypt(key, payload, aad=bundle.PAYLOAD_AAD + digest)


def policy_variant(tmp_path: Path, partner: str, old: str, new: str) -> Path:
    text = (POLICIES / f"{partner}.toml").read_text(encoding="utf-8")
    assert old in text
    path = tmp_path / f"{partner}-variant.toml"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return path


# --- what leaves ---------------------------------------------------------------------------------------------
def test_gemeente_bundle_holds_no_identifier_address_or_birth_date(keys, tmp_path):
    rows = ns.gemeente_rows(60)
    extract = ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows)
    result = run(keys, "gemeente", extract, tmp_path)
    assert (result.rows_in, result.rows_shared, result.rows_quarantined) == (60, 60, 0)
    raw = plaintext(keys, result.bundle_path)
    sealed = result.bundle_path.read_bytes()
    for row in rows:
        for column in ("BSN", "Geboortedatum", "Straat", "Postcode"):  # house numbers are too short to grep
            needle = row[column].encode()
            assert needle not in raw, column
            assert needle not in sealed, column
    payload = open_payload(keys, "gemeente", result.bundle_path)
    assert payload.columns == [
        "pseudonym",
        "year",
        "birth_year",
        "sex",
        "buurt_code",
        "wijk_code",
        "woz_eur",
        "social_assistance",
        "debt_assistance",
        "truancy_reports",
        "youth_care",
    ]
    assert payload.schema["pseudonym"] == pl.Binary and payload["pseudonym"].bin.size().unique().to_list() == [32]


def test_payload_order_does_not_depend_on_the_extract_order(keys, tmp_path):
    rows = ns.gemeente_rows(50)
    first = run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path / "a")
    second = run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows[::-1]), tmp_path / "b")
    assert open_payload(keys, "gemeente", first.bundle_path).equals(open_payload(keys, "gemeente", second.bundle_path))


def test_pseudonyms_are_hmac_of_the_bsn_under_the_link_key(keys, tmp_path):
    rows = ns.gemeente_rows(10)
    result = run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path)
    import hmac

    expected = {hmac.new(keys.link, b"kansrijk/v1/bsn" + r["BSN"].encode(), hashlib.sha256).digest() for r in rows}
    assert set(open_payload(keys, "gemeente", result.bundle_path)["pseudonym"].to_list()) == expected


def test_woz_is_rounded_to_a_thousand_euros_half_away_from_zero(keys, tmp_path):
    rows = ns.gemeente_rows(4)
    for row, woz in zip(rows, ["187499,99", "187500,00", "186500,00", "0,00"], strict=True):
        row["WOZ_waarde"] = woz
    result = run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path)
    payload = open_payload(keys, "gemeente", result.bundle_path)
    assert sorted(payload["woz_eur"].to_list()) == [0, 187000, 187000, 188000]


def test_woz_bands_when_the_policy_asks(keys, tmp_path):
    policy = policy_variant(
        tmp_path,
        "gemeente",
        'generalise = "round"\nround_to = 1000',
        'generalise = "bands"\nbands = [0, 150000, 250000, 400000]',
    )
    rows = ns.gemeente_rows(3)
    for row, woz in zip(rows, ["149999,00", "250000,00", "900000,00"], strict=True):
        row["WOZ_waarde"] = woz
    result = run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path, policy)
    assert sorted(open_payload(keys, "gemeente", result.bundle_path)["woz_eur"].to_list()) == [0, 250000, 400000]


def test_birth_date_to_year_and_month_when_the_policy_asks(keys, tmp_path):
    policy = policy_variant(
        tmp_path,
        "duo",
        'variable = "birth_year"\ngeneralise = "year"',
        'variable = "birth_year"\ngeneralise = "year_month"',
    )
    rows = ns.duo_rows(2)
    rows[0]["GEBOORTEDATUM"], rows[1]["GEBOORTEDATUM"] = "20110703", "20091231"
    result = run(keys, "duo", ns.write_duo(tmp_path / "duo_2023.csv", rows), tmp_path, policy)
    payload = open_payload(keys, "duo", result.bundle_path)
    assert sorted(zip(payload["birth_year"], payload["birth_month"], strict=True)) == [(2009, 12), (2011, 7)]


def test_cjg_shares_sdq_scores_with_reverse_items_and_never_the_remark(keys, tmp_path):
    rows = ns.cjg_rows(3)
    for k in range(25):
        rows[0][f"sdq_{k + 1:02d}"] = "0"
        rows[1][f"sdq_{k + 1:02d}"] = "2"
        rows[2][f"sdq_{k + 1:02d}"] = ""
    rows[0]["sdq_totaal"] = rows[1]["sdq_totaal"] = ""
    rows[2]["sdq_totaal"] = "17"
    result = run(keys, "cjg", ns.write_cjg(tmp_path / "cjg_2023.csv", rows), tmp_path)
    assert result.rows_quarantined == 0
    payload = open_payload(keys, "cjg", result.bundle_path)
    # all 0: only the five reverse-scored items count (2 each), four of them in difficulty scales -> 8 ... see key
    scores = sorted(
        zip(payload["sdq_total"].to_list(), payload["sdq_prosocial"].to_list(), strict=True), key=lambda t: t[0]
    )
    # all items 0: reverse items 7 (conduct), 21, 25 (hyperactivity), 11, 14 (peer) score 2 -> total 10, prosocial 0
    # all items 2: 20 problem items minus the 5 reversed (0) -> 15 x 2 = 30, prosocial 10
    # only a recorded total: 17, no prosocial
    assert scores == [(10, 0), (17, None), (30, 10)]
    raw = plaintext(keys, result.bundle_path)
    for row in rows:
        assert row["opmerking"].encode() not in raw
        assert row["geboortedatum"].encode() not in raw and row["bsn"].encode() not in raw
    assert not any(c.startswith("sdq_0") or c == "opmerking" for c in payload.columns)


def test_cbs_parquet_is_read_with_its_own_types(keys, tmp_path):
    frame = ns.cbs_frame(30)
    result = run(keys, "cbs", ns.write_cbs(tmp_path / "cbs_2023.parquet", frame), tmp_path)
    payload = open_payload(keys, "cbs", result.bundle_path)
    assert result.rows_quarantined == 0
    assert set(payload["sex"].unique()) == {"M", "F"}
    assert set(payload["migration_background"].unique()) == {"dutch", "western", "non_western"}
    assert payload["low_income"].sum() == frame["ink_onder_sociaal_min"].sum()
    assert payload["year"].unique().to_list() == [2023]


def test_duo_tracks_and_empty_track_change(keys, tmp_path):
    result = run(keys, "duo", ns.write_duo(tmp_path / "duo_2023.csv", ns.duo_rows(8)), tmp_path)
    payload = open_payload(keys, "duo", result.bundle_path)
    assert result.rows_quarantined == 0
    assert set(payload["track_change"].unique()) == {"none", "up", "down"}
    assert set(payload["school_type"].unique()) == {"primary", "secondary", "mbo"}
    assert payload.filter(pl.col("school_type") == "primary")["school_advice"].null_count() == 2


def test_manifest_records_policy_digest_counts_and_key_fingerprints(keys, tmp_path):
    rows = ns.duo_rows(60)
    rows[4]["BSN"] = ns.invalid_bsn(rows[4]["BSN"])
    policy = POLICIES / "duo.toml"
    result = run(keys, "duo", ns.write_duo(tmp_path / "duo_2023.csv", rows), tmp_path)
    m = result.manifest
    assert m.policy_digest == "sha256:" + hashlib.sha256(policy.read_bytes()).hexdigest()
    assert (m.row_count, m.quarantine_count, m.extract_year, m.partner) == (59, 1, 2023, "duo")
    assert m.keys.signing == crypto.fingerprint("ed25519-signing", keys.signing_public)
    assert m.keys.link == crypto.fingerprint("link-key", keys.link)
    assert m.keys.recipient == crypto.fingerprint("x25519-hpke", keys.recipient_public)
    assert m.extract_id.startswith("duo-2023-")
    assert m.previous_bundle_hash is None


def test_previous_bundle_chains_by_digest(keys, tmp_path):
    first = run(keys, "cbs", ns.write_cbs(tmp_path / "cbs_2023.parquet", ns.cbs_frame(10)), tmp_path)
    frame = ns.cbs_frame(12).with_columns(pl.lit(2024, dtype=pl.Int16).alias("jaar"))
    second = run(
        keys, "cbs", ns.write_cbs(tmp_path / "cbs_2024.parquet", frame), tmp_path, previous_bundle=first.bundle_path
    )
    assert second.manifest.previous_bundle_hash == bundle.bundle_digest(first.bundle_path.read_bytes())
    assert second.year == 2024


def test_previous_bundle_of_another_partner_is_refused(keys, tmp_path):
    first = run(keys, "cbs", ns.write_cbs(tmp_path / "cbs_2023.parquet", ns.cbs_frame(10)), tmp_path)
    with pytest.raises(InputError, match="partner 'cbs'"):
        run(
            keys,
            "duo",
            ns.write_duo(tmp_path / "duo_2023.csv", ns.duo_rows(5)),
            tmp_path,
            previous_bundle=first.bundle_path,
        )


# --- what is held back ---------------------------------------------------------------------------------------
def lenient(tmp_path: Path, partner: str) -> Path:
    """The shipped policy with max_fault_rate raised, so that a small extract with many faults still seals."""
    text = (POLICIES / f"{partner}.toml").read_text(encoding="utf-8")
    path = tmp_path / f"{partner}-lenient.toml"
    path.write_text(re.sub(r"max_fault_rate = [0-9.]+", "max_fault_rate = 0.5", text, count=1), encoding="utf-8")
    return path


def quarantine(result_or_dir) -> pl.DataFrame:
    """The report, with ``row`` the 1-based data row these tests count in: a CSV report gives the line (header
    line 1, and these extracts hold no line break inside a field, so row = line - 1), a Parquet report the row."""
    path = result_or_dir.quarantine_path if hasattr(result_or_dir, "quarantine_path") else result_or_dir
    report = pl.read_csv(path, infer_schema=False).with_columns(pl.col("^(line|row)$").cast(pl.Int64))
    return report.with_columns((pl.col("line") - 1).alias("row")) if "line" in report.columns else report


def _faults(q: pl.DataFrame) -> set[tuple[int, str, str]]:
    return set(zip(q["row"].to_list(), q["field"].to_list(), q["rule"].to_list(), strict=True))


def test_gemeente_faults_are_quarantined_by_row_field_and_rule(keys, tmp_path):
    rows = ns.gemeente_rows(100)
    rows[2]["BSN"] = ns.invalid_bsn(rows[2]["BSN"])
    rows[3]["BSN"] = "12345678"
    rows[4]["Geboortedatum"] = ""
    rows[5]["Geslacht"] = "X"
    rows[6]["Buurtcode"] = "BU03630001"
    rows[7]["WOZ_waarde"] = "onbekend"
    rows[8]["Bijstand"] = "ja"
    rows[10]["BSN"] = rows[9]["BSN"]
    rows[11]["Geboortedatum"] = "31-02-2011"
    rows[12]["Peiljaar"] = "2022"
    rows[13]["WOZ_waarde"] = "-5000,00"
    rows[14]["Geboortedatum"] = "01-01-2030"
    rows[15]["BSN"] = ""
    result = run(
        keys,
        "gemeente",
        ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows),
        tmp_path,
        lenient(tmp_path, "gemeente"),
    )
    expected = {
        (3, "BSN", "bsn_fails_11_check"),
        (4, "BSN", "bsn_not_9_digits"),
        (5, "Geboortedatum", "required"),
        (6, "Geslacht", "unknown_category"),
        (7, "Buurtcode", "malformed_code"),
        (8, "WOZ_waarde", "not_a_number"),
        (9, "Bijstand", "not_a_boolean"),
        (10, "BSN", "duplicate_bsn"),
        (11, "BSN", "duplicate_bsn"),
        (12, "Geboortedatum", "not_a_date"),
        (13, "Peiljaar", "other_reference_year"),
        (14, "WOZ_waarde", "out_of_range"),
        (15, "Geboortedatum", "date_after_reference_year"),
        (16, "BSN", "bsn_missing"),
    }
    assert _faults(quarantine(result)) == expected
    assert result.rows_quarantined == 14 and result.rows_shared == 86
    assert result.manifest.quarantine_count == 14
    assert result.counts_by_rule["duplicate_bsn"] == 2


def test_cjg_sdq_and_range_faults(keys, tmp_path):
    rows = ns.cjg_rows(100)
    rows[0]["sdq_05"] = "3"
    rows[1]["sdq_10"] = ""  # one item missing of 25
    rows[2]["sdq_totaal"] = "39"  # recorded total disagrees with the items
    rows[3]["bmi"] = "250.0"
    rows[4]["geboortedatum"] = "1999-01-01"  # 24 years old at CJG
    rows[5]["geslacht"] = "x"
    rows[7]["sdq_totaal"] = "41"  # row 8 has only a total (i % 4 == 3)
    result = run(keys, "cjg", ns.write_cjg(tmp_path / "cjg_2023.csv", rows), tmp_path, lenient(tmp_path, "cjg"))
    assert _faults(quarantine(result)) == {
        (1, "sdq_05", "sdq_item_not_0_1_2"),
        (2, "sdq_01..sdq_25", "sdq_items_incomplete"),
        (3, "sdq_totaal", "sdq_total_disagrees_with_items"),
        (4, "bmi", "out_of_range"),
        (5, "geboortedatum", "age_outside_cjg_range"),
        (6, "geslacht", "unknown_category"),
        (8, "sdq_totaal", "out_of_range"),
    }


def test_duo_cross_field_rules(keys, tmp_path):
    rows = ns.duo_rows(100)
    rows[0]["LEERJAAR"] = "9"  # primary, groep 9
    rows[1]["ONDERWIJSTYPE"] = "PO"  # secondary pupil in a primary track
    rows[2]["SCHOOLADVIES"] = "GYMNASIUM"
    rows[3]["SOORT_ONDERWIJS"] = "HBO"
    rows[4]["OP_AFSTROOM"] = "ZIJ"
    result = run(keys, "duo", ns.write_duo(tmp_path / "duo_2023.csv", rows), tmp_path, lenient(tmp_path, "duo"))
    faults = _faults(quarantine(result))
    assert (1, "LEERJAAR", "grade_outside_primary_range") in faults
    assert (2, "ONDERWIJSTYPE", "track_not_secondary") in faults
    assert (3, "SCHOOLADVIES", "unknown_category") in faults
    assert (4, "SOORT_ONDERWIJS", "unknown_category") in faults
    assert (5, "OP_AFSTROOM", "unknown_category") in faults
    assert {r for r, _, _ in faults} == {1, 2, 3, 4, 5}


def test_cbs_faults_in_parquet(keys, tmp_path):
    frame = (
        ns.cbs_frame(200)
        .with_row_index("i")
        .with_columns(
            pl.when(pl.col("i") == 0).then(pl.lit(3, dtype=pl.Int8)).otherwise(pl.col("geslacht")).alias("geslacht"),
            pl.when(pl.col("i") == 1).then(pl.lit("onbekend")).otherwise(pl.col("herkomst")).alias("herkomst"),
            pl.when(pl.col("i") == 2).then(None).otherwise(pl.col("geboortedatum")).alias("geboortedatum"),
        )
        .drop("i")
    )
    result = run(keys, "cbs", ns.write_cbs(tmp_path / "cbs_2023.parquet", frame), tmp_path, lenient(tmp_path, "cbs"))
    assert _faults(quarantine(result)) == {
        (1, "geslacht", "unknown_category"),
        (2, "herkomst", "unknown_category"),
        (3, "geboortedatum", "required"),
    }


def test_quarantine_report_holds_no_bsn_and_no_raw_value(keys, tmp_path):
    rows = ns.gemeente_rows(100)
    rows[1]["BSN"] = ns.invalid_bsn(rows[1]["BSN"])
    rows[2]["WOZ_waarde"] = "zeer-geheim-bedrag"
    rows[3]["Geslacht"] = "Onbekend-123"
    result = run(
        keys,
        "gemeente",
        ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows),
        tmp_path,
        lenient(tmp_path, "gemeente"),
    )
    text = result.quarantine_path.read_text()
    assert text.splitlines()[0] == "line,field,variable,rule,expected"
    for value in (rows[1]["BSN"], "zeer-geheim-bedrag", "Onbekend-123", rows[0]["BSN"]):
        assert value not in text
    assert result.quarantine_path.parent == tmp_path / "quarantine"
    assert result.quarantine_path.parent != result.bundle_path.parent


def test_fault_rate_above_the_policy_maximum_seals_nothing(keys, tmp_path):
    rows = ns.gemeente_rows(50)
    for i in range(0, 50, 10):
        rows[i]["Geslacht"] = "?"
    rows[1]["BSN"] = ns.invalid_bsn(rows[1]["BSN"])
    with pytest.raises(ValidationFailed) as info:
        run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path)
    message = str(info.value)
    assert "6 of 50 rows are faulty" in message and "max_fault_rate" in message
    assert "unknown_category: 5" in message and "bsn_fails_11_check: 1" in message
    assert rows[1]["BSN"] not in message and rows[0]["BSN"] not in message
    assert info.value.exit_code == 5
    outbox = tmp_path / "outbox"
    assert not outbox.exists() or list(outbox.iterdir()) == []
    reports = list((tmp_path / "quarantine").iterdir())
    assert len(reports) == 1 and quarantine(reports[0]).height == 6


def test_latin1_extract_needs_the_policy_to_say_so(keys, tmp_path):
    rows = ns.gemeente_rows(5)
    rows[0]["Straat"] = "Kralingse Plaslaan ë"
    extract = ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows, encoding="latin-1")
    with pytest.raises(InputError, match=r"line 2: not valid UTF-8") as info:
        run(keys, "gemeente", extract, tmp_path)
    assert "Plaslaan" not in str(info.value)
    policy = policy_variant(tmp_path, "gemeente", 'encoding = "utf-8"', 'encoding = "latin-1"')
    assert run(keys, "gemeente", extract, tmp_path, policy).rows_shared == 5


def test_missing_column_and_wrong_separator_are_input_errors(keys, tmp_path):
    rows = [{k: v for k, v in r.items() if k != "Jeugdhulp"} for r in ns.gemeente_rows(5)]
    with pytest.raises(InputError, match=r"\['Jeugdhulp'\]"):
        run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path)
    comma = tmp_path / "gemeente_2023_comma.csv"
    pl.DataFrame(ns.gemeente_rows(5)).write_csv(comma, separator=",")
    with pytest.raises(InputError, match="separator"):
        run(keys, "gemeente", comma, tmp_path)


def test_errors_carry_no_key_material(keys, tmp_path):
    rows = ns.gemeente_rows(10)
    for r in rows:
        r["Geslacht"] = "?"
    with pytest.raises(KansrijkError) as info:
        run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path)
    text = str(info.value)
    for secret in (keys.signing, keys.link, keys.recipient):
        assert secret.hex()[:12] not in text


def test_failed_write_leaves_no_partial_bundle(keys, tmp_path, monkeypatch):
    import kansrijk.fsutil as fsutil

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(fsutil.os, "replace", boom)
    with pytest.raises(OSError):
        run(keys, "cbs", ns.write_cbs(tmp_path / "cbs_2023.parquet", ns.cbs_frame(10)), tmp_path)
    outbox = tmp_path / "outbox"
    assert not outbox.exists() or list(outbox.iterdir()) == []


def test_exact_copy_of_a_row_is_quarantined_and_the_first_kept(keys, tmp_path):
    rows = ns.gemeente_rows(60)
    rows.insert(8, dict(rows[7]))  # data row 9 is an exact copy of data row 8
    result = run(keys, "gemeente", ns.write_gemeente(tmp_path / "gemeente_2023.csv", rows), tmp_path)
    assert _faults(quarantine(result)) == {(9, "BSN", "duplicate_row")}
    assert result.rows_shared == 60
