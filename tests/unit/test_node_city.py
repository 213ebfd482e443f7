"""`kansrijk node prepare` on the synthetic city: every partner seals, nothing identifying leaves, and every
fault the generator injected (cross-partner conflicts excepted) is in that partner's quarantine report."""

from __future__ import annotations

import hashlib
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from kansrijk import bundle, crypto
from kansrijk.cli import app
from kansrijk.schema import PARTNERS

POLICIES = Path(__file__).resolve().parents[2] / "policies" / "sharing"
PASS = "city test passphrase"

# Source columns whose values must never appear in a bundle, per partner.
SENSITIVE = {
    "cbs": ("bsn", "geboortedatum"),
    "gemeente": ("BSN", "Geboortedatum", "Straat", "Postcode"),
    "cjg": ("bsn", "geboortedatum", "contactdatum", "opmerking"),
    "duo": ("BSN", "GEBOORTEDATUM", "BRIN"),
}


@pytest.fixture(scope="module")
def prepared(small_city, tmp_path_factory):
    """All four partners' extracts prepared through the CLI; returns (city, root, recipient key, partner keys)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", PASS)
    root = tmp_path_factory.mktemp("node_city")
    runner = CliRunner()
    recipient_private, recipient_public = crypto.generate_encryption_key()
    crypto.write_public_key(root / "coordinator.pub", "x25519-hpke", recipient_public, label="coordinator")
    assert runner.invoke(app, ["node", "linkkey", "new", "--out", str(root / "link.key")]).exit_code == 0
    public_keys: dict[str, bytes] = {}
    outputs: dict[str, str] = {}
    for partner in PARTNERS:
        keys_dir = root / partner / "keys"
        result = runner.invoke(app, ["node", "keygen", "--partner", partner, "--out", str(keys_dir)])
        assert result.exit_code == 0, result.output
        public_keys[partner] = crypto.read_public_key(keys_dir / f"{partner}-signing.pub", "ed25519-signing").key
        result = runner.invoke(
            app,
            [
                "node",
                "prepare",
                "--policy",
                str(POLICIES / f"{partner}.toml"),
                "--input",
                str(small_city.extracts[(partner, 2023)]),
                "--out",
                str(root / partner / "outbox"),
                "--signing-key",
                str(keys_dir / f"{partner}-signing.key"),
                "--link-key",
                str(root / "link.key"),
                "--coordinator-key",
                str(root / "coordinator.pub"),
            ],
        )
        assert result.exit_code == 0, result.output
        outputs[partner] = result.output
    mp.undo()
    return small_city, root, recipient_private, public_keys, outputs


def _bundle(root: Path, partner: str) -> Path:
    (path,) = (root / partner / "outbox").glob("*.kbundle")
    return path


def _raw(city, partner: str) -> pl.DataFrame:
    path = city.extracts[(partner, 2023)]
    if path.suffix == ".parquet":
        return pl.read_parquet(path)
    return pl.read_csv(path, infer_schema=False, separator=";" if partner == "gemeente" else ",")


def _quarantine(root: Path, partner: str) -> pl.DataFrame:
    """The report with ``row`` as the ground truth counts (1-based data rows): a CSV report gives lines (header
    line 1; the synthetic extracts hold no line break inside a field, so row = line - 1), a Parquet one rows."""
    (path,) = (root / partner / "quarantine").glob("*.quarantine.csv")
    report = pl.read_csv(path, infer_schema=False).with_columns(pl.col("^(line|row)$").cast(pl.Int64))
    return report.with_columns((pl.col("line") - 1).alias("row")) if "line" in report.columns else report


@pytest.mark.parametrize("partner", PARTNERS)
def test_every_injected_fault_is_in_the_quarantine_report(prepared, partner):
    city, root, *_ = prepared
    faults = pl.read_parquet(city.ground_truth / "faults.parquet").filter(
        (pl.col("partner") == partner) & (pl.col("year") == 2023) & ~pl.col("kind").str.starts_with("conflict_")
    )
    assert faults.height > 0, "the small city injects faults for every partner"
    report = _quarantine(root, partner)
    reported = set(zip(report["row"].to_list(), report["field"].to_list(), strict=True))
    reported_rows = set(report["row"].to_list())
    for row, field, kind in faults.select("row", "field", "kind").iter_rows():
        if field is None:  # a duplicated row: the copy's row
            assert row in reported_rows, (kind, row)
        else:
            assert (row, field) in reported, (kind, row, field)


@pytest.mark.parametrize("partner", PARTNERS)
def test_quarantine_holds_only_faulty_rows(prepared, partner):
    """Nothing valid is held back: every quarantined row carries an injected fault (conflicts are valid rows)."""
    city, root, *_ = prepared
    injected = pl.read_parquet(city.ground_truth / "faults.parquet").filter(
        (pl.col("partner") == partner) & ~pl.col("kind").str.starts_with("conflict_")
    )
    assert set(_quarantine(root, partner)["row"].to_list()) == set(injected["row"].to_list())


@pytest.mark.parametrize("partner", PARTNERS)
def test_bundle_holds_no_bsn_birth_date_address_or_free_text(prepared, partner):
    city, root, recipient_private, public_keys, _ = prepared
    data = _bundle(root, partner).read_bytes()
    opened = bundle.open_bundle(
        data, trusted_keys={partner: public_keys[partner]}, recipient_private_key=recipient_private
    )
    policy_columns = {"pseudonym", *opened.manifest.column_names}
    assert set(opened.payload.columns) == policy_columns

    # decrypt independently of kansrijk.bundle (docs/bundle-format.md) and search the plaintext bytes
    mlen = int.from_bytes(data[10:14], "big")
    digest = hashlib.sha256(data[14 : 14 + mlen]).digest()
    rest = data[14 + mlen + 64 :]
    key = crypto.hpke_open(recipient_private, rest[2:82], info=bundle.DATA_KEY_INFO + digest)
    plaintext = crypto.aead_decrypt(key, rest[90:], aad=bundle.PAYLOAD_AAD + digest)

    raw = _raw(city, partner)
    string_values = set()
    for column in opened.payload.columns:
        if opened.payload.schema[column] == pl.String:
            string_values |= set(opened.payload[column].drop_nulls().to_list())
    for column in SENSITIVE[partner]:
        values = {str(v) for v in raw[column].drop_nulls().unique().to_list() if str(v).strip()}
        assert values, column
        assert not values & string_values, column
        for value in values:
            if len(value) >= 6:  # shorter strings (house numbers) occur by chance in compressed bytes
                assert value.encode() not in plaintext, (column, value)
                assert value.encode() not in data, (column, value)
    for column in ("bsn", "BSN", "Straat", "Postcode", "Huisnummer", "opmerking", "BRIN"):
        assert column not in opened.payload.columns


@pytest.mark.parametrize("partner", PARTNERS)
def test_manifest_counts_add_up_to_the_extract(prepared, partner):
    city, root, _, public_keys, outputs = prepared
    data = _bundle(root, partner).read_bytes()
    manifest = bundle.verify_bundle(data, {partner: public_keys[partner]})
    rows = _raw(city, partner).height
    assert manifest.row_count + manifest.quarantine_count == rows
    assert manifest.quarantine_count == _quarantine(root, partner)["row"].n_unique()
    assert manifest.extract_year == 2023
    assert f"{manifest.row_count} shared, {manifest.quarantine_count} quarantined of {rows}" in outputs[partner]


def test_same_person_gets_the_same_pseudonym_at_every_partner(prepared):
    _, root, recipient_private, public_keys, _ = prepared
    sets = {}
    for partner in PARTNERS:
        opened = bundle.open_bundle(
            _bundle(root, partner).read_bytes(), trusted_keys=public_keys, recipient_private_key=recipient_private
        )
        sets[partner] = set(opened.payload["pseudonym"].to_list())
    # partners hold overlapping populations: linkage on P1 must find most CJG children at CBS
    assert len(sets["cjg"] & sets["cbs"]) > 0.8 * len(sets["cjg"])
