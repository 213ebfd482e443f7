"""A new partner operator following docs/partner-operator.md: what a refusal says, that it exits non-zero, and
that it leaves nothing behind (no bundle, no quarantine report, no stray folder); and that the coordinator
refuses what the node should not have sealed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from operator_kit import Partner, make_partner, make_workspace, operator_env, register, run, tree
from unit.node_samples import gemeente_rows, write_gemeente

from kansrijk import bundle


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in operator_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("KANSRIJK_LINK_PASSPHRASE", raising=False)


@pytest.fixture
def site(tmp_path: Path) -> tuple[Path, Partner]:
    """A coordinator workspace and the gemeente's machine, registered with it."""
    ws = make_workspace(tmp_path)
    gemeente = make_partner(tmp_path, "gemeente", ws / "keys" / "coordinator-hpke.pub")
    register(ws, gemeente)
    return ws, gemeente


def _nothing_left(partner: Partner) -> None:
    assert tree(partner.outbox) == {}
    assert not (partner.dir / "quarantine").exists()


# --- empty extracts --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("content", "says"), [(b"", "is empty (0 bytes)"), (b"\n\n  \r\n", "only blank lines")])
def test_an_empty_or_blank_file_is_called_empty_not_unreadable_csv(site, tmp_path, content, says) -> None:
    _, gemeente = site
    extract = tmp_path / "gemeente_2023.csv"
    extract.write_bytes(content)
    result = run(*gemeente.prepare_args(extract, "--year", "2023"))
    assert result.exit_code == 2
    assert says in result.stderr and "cannot be read as CSV" not in result.stderr
    _nothing_left(gemeente)


def test_a_header_only_extract_is_refused_even_with_a_year(site, tmp_path) -> None:
    _, gemeente = site
    rows = gemeente_rows(3)
    extract = tmp_path / "gemeente_2023.csv"
    extract.write_text(";".join(rows[0]) + "\n", encoding="utf-8")
    for extra in ((), ("--year", "2023")):
        result = run(*gemeente.prepare_args(extract, *extra))
        assert result.exit_code == 2, result.output
        assert "header but no data rows" in result.stderr and "--declare-empty" in result.stderr
    _nothing_left(gemeente)


def test_a_declared_empty_extract_seals_a_signed_declaration_the_coordinator_accepts(site, tmp_path) -> None:
    ws, gemeente = site
    extract = tmp_path / "gemeente_2023.csv"
    extract.write_text(";".join(gemeente_rows(1)[0]) + "\n", encoding="utf-8")
    without_year = run(*gemeente.prepare_args(extract, "--declare-empty"))
    assert without_year.exit_code == 2 and "pass --year" in without_year.stderr
    result = run(*gemeente.prepare_args(extract, "--declare-empty", "--year", "2023"))
    assert result.exit_code == 0, result.output
    (sealed,) = gemeente.outbox.glob("*.kbundle")
    manifest = bundle.read_manifest(sealed.read_bytes())
    assert manifest.row_count == 0 and manifest.declared_empty
    assert json.loads(manifest.canonical_bytes())["declared_empty"] is True
    ingested = run("coordinator", "ingest", str(ws), str(sealed))
    assert ingested.exit_code == 0, ingested.output
    assert "0 rows (declared empty by the partner)" in ingested.stdout


def test_declare_empty_with_rows_is_refused(site, tmp_path) -> None:
    _, gemeente = site
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(4))
    result = run(*gemeente.prepare_args(extract, "--declare-empty", "--year", "2023"))
    assert result.exit_code == 2 and "holds 4 data rows" in result.stderr
    _nothing_left(gemeente)


def test_ingest_refuses_a_zero_row_bundle_that_was_not_declared_empty(site, tmp_path) -> None:
    """A node of an older version (or a hand-made bundle) seals 0 rows without a declaration: refused, and the
    workspace is byte-identical."""
    import polars as pl

    from kansrijk import crypto
    from kansrijk.schema import VARIABLES

    ws, gemeente = site
    signing = crypto.read_secret_key(gemeente.signing, "ed25519-signing", operator_env()["KANSRIJK_PASSPHRASE"])
    payload = pl.DataFrame(schema={"pseudonym": pl.Binary, "sex": VARIABLES["sex"].dtype})
    sealed = bundle.seal_bundle(
        payload,
        partner="gemeente",
        extract_id="gemeente-2023-empty",
        extract_year=2023,
        policy_digest="sha256:" + crypto.sha256_hex(gemeente.policy.read_bytes()),
        quarantine_count=0,
        signing_key=signing,
        link_key_fingerprint="0" * 32,
        recipient_public_key=crypto.read_public_key(gemeente.coordinator, "x25519-hpke").key,
    )
    path = tmp_path / "empty.kbundle"
    path.write_bytes(sealed)
    before = tree(ws)
    result = run("coordinator", "ingest", str(ws), str(path))
    assert result.exit_code == 18
    assert "EmptyBundle" in result.stderr and "did not declare" in result.stderr and "--declare-empty" in result.stderr
    assert tree(ws) == before


# --- keys: whose key, which epoch ------------------------------------------------------------------------
def test_another_partners_signing_key_is_refused_at_the_node_before_anything_is_written(site, tmp_path) -> None:
    ws, gemeente = site
    cjg = make_partner(tmp_path, "cjg", ws / "keys" / "coordinator-hpke.pub")
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(5))
    args = gemeente.prepare_args(extract)
    args[args.index("--signing-key") + 1] = str(cjg.signing)
    result = run(*args)
    assert result.exit_code == 6
    assert "partner 'cjg''s signing key" in result.stderr and "sharing policy of 'gemeente'" in result.stderr
    _nothing_left(gemeente)


def test_the_coordinator_names_a_key_of_another_partner_instead_of_advising_to_register_it(site, tmp_path) -> None:
    from kansrijk import crypto
    from node_agent.prepare import prepare_extract

    ws, gemeente = site
    cjg = make_partner(tmp_path, "cjg", ws / "keys" / "coordinator-hpke.pub")
    register(ws, gemeente, cjg)
    passphrase = operator_env()["KANSRIJK_PASSPHRASE"]
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(5))
    made = prepare_extract(  # an older node agent that did not check whose key it was given
        policy_path=gemeente.policy,
        input_path=extract,
        out_dir=tmp_path / "old-node",
        signing_key=crypto.read_secret_key(cjg.signing, "ed25519-signing", passphrase),
        link_key=crypto.read_secret_key(gemeente.link, "link-key", passphrase),
        coordinator_public_key=crypto.read_public_key(gemeente.coordinator, "x25519-hpke").key,
    )
    result = run("coordinator", "ingest", str(ws), str(made.bundle_path))
    assert result.exit_code == 14
    assert "partner 'cjg''s" in result.stderr and "another partner's key" in result.stderr
    assert "add the new key" not in result.stderr


def test_the_key_epoch_is_read_from_the_key_file(site, tmp_path) -> None:
    ws, _ = site
    rotated = make_partner(tmp_path / "rotated", "gemeente", ws / "keys" / "coordinator-hpke.pub", epoch=2)
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(5))
    wrong = run(*rotated.prepare_args(extract, "--key-epoch", "1"))
    assert wrong.exit_code == 6 and "epoch 2, but --key-epoch says 1" in wrong.stderr
    _nothing_left(rotated)
    result = run(*rotated.prepare_args(extract))
    assert result.exit_code == 0, result.output
    (sealed,) = rotated.outbox.glob("*.kbundle")
    assert bundle.read_manifest(sealed.read_bytes()).keys.epoch == 2


# --- wrong --out, no passphrase, running twice ---------------------------------------------------------
def test_out_pointing_at_a_file_is_refused_without_a_traceback_or_a_stray_folder(site, tmp_path) -> None:
    _, gemeente = site
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(5))
    outfile = gemeente.dir / "outbox-file"
    outfile.parent.mkdir(parents=True, exist_ok=True)
    outfile.write_text("not a directory\n")
    args = gemeente.prepare_args(extract)
    args[args.index("--out") + 1] = str(outfile)
    before = tree(gemeente.dir)
    result = run(*args)
    assert result.exit_code == 2
    assert "--out must be a directory, and this is a file" in result.stderr and "Traceback" not in result.output
    assert tree(gemeente.dir) == before and not (gemeente.dir / "quarantine").exists()


def test_no_passphrase_and_no_terminal_says_so_with_exit_6(site, tmp_path, monkeypatch) -> None:
    _, gemeente = site
    monkeypatch.delenv("KANSRIJK_PASSPHRASE")
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(5))
    result = run(*gemeente.prepare_args(extract))  # stdin is empty: nothing to type the passphrase on
    assert result.exit_code == 6
    assert "no passphrase" in result.stderr and "KANSRIJK_PASSPHRASE is not set" in result.stderr
    assert "Aborted" not in result.output
    _nothing_left(gemeente)


def test_preparing_the_same_extract_twice_leaves_one_bundle_and_the_report_untouched(site, tmp_path) -> None:
    _, gemeente = site
    rows = gemeente_rows(60)
    rows[3]["Geslacht"] = "X"
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", rows)
    assert run(*gemeente.prepare_args(extract)).exit_code == 0
    before = tree(gemeente.dir)
    again = run(*gemeente.prepare_args(extract))
    assert again.exit_code == 8
    assert "sealed already as" in again.stderr and "deliver that bundle" in again.stderr
    assert tree(gemeente.dir) == before and len(list(gemeente.outbox.glob("*.kbundle"))) == 1


def test_a_quarantine_report_is_never_overwritten_by_another(site, tmp_path) -> None:
    _, gemeente = site
    rows = gemeente_rows(20)
    for row in rows[:5]:
        row["Geslacht"] = "X"
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", rows)
    failed = run(*gemeente.prepare_args(extract))
    assert failed.exit_code == 5
    (first,) = (gemeente.dir / "quarantine").iterdir()
    kept = first.read_bytes()
    variant = tmp_path / "gemeente-x.toml"
    text = gemeente.policy.read_text(encoding="utf-8")
    variant.write_text(text.replace('values = { M = "M", V = "F" }', 'values = { M = "M", V = "F", X = "F" }'))
    args = gemeente.prepare_args(extract)
    args[args.index("--policy") + 1] = str(variant)
    assert run(*args).exit_code == 0
    reports = sorted((gemeente.dir / "quarantine").iterdir())
    assert len(reports) == 2 and first.read_bytes() == kept
    assert {p.name for p in reports} == {first.name, first.name.replace(".quarantine.csv", "-2.quarantine.csv")}


# --- messages that keep the thread ----------------------------------------------------------------------
def _csv_lines(rows: list[dict[str, str]]) -> list[str]:
    return [";".join(rows[0]), *(";".join(r.values()) for r in rows)]


def test_an_unterminated_quote_is_named_as_such_with_its_line(site, tmp_path) -> None:
    _, gemeente = site
    lines = _csv_lines(gemeente_rows(6))
    fields = lines[3].split(";")
    fields[3] = '"Kruiskade'  # Straat of the record on line 4
    lines[3] = ";".join(fields)
    extract = tmp_path / "gemeente_2023.csv"
    extract.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(*gemeente.prepare_args(extract))
    assert result.exit_code == 2
    assert "line 4: a quoted field opens on this line and is not closed" in result.stderr
    assert "close the quote" in result.stderr and "separator" not in result.stderr
    _nothing_left(gemeente)


def test_a_ragged_line_says_how_many_fields_it_has(site, tmp_path) -> None:
    _, gemeente = site
    lines = _csv_lines(gemeente_rows(6))
    lines[5] += ";surplus"
    extract = tmp_path / "gemeente_2023.csv"
    extract.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(*gemeente.prepare_args(extract))
    assert result.exit_code == 2 and "line 6: has 16 fields, the header has 15" in result.stderr


def test_a_bad_date_shows_the_expected_format_and_the_report_uses_the_lines_messages_use(site, tmp_path) -> None:
    _, gemeente = site
    rows = gemeente_rows(60)
    rows[4]["Geboortedatum"] = "2011-05-03"  # ISO, but the policy says DD-MM-YYYY; the record is on line 6
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", rows)
    result = run(*gemeente.prepare_args(extract))
    assert result.exit_code == 0, result.output
    assert "not_a_date: 1" in result.stdout
    assert "expected Geboortedatum: a date as DD-MM-YYYY (e.g. 31-12-2023)" in result.stdout
    (report,) = (gemeente.dir / "quarantine").iterdir()
    header, line = report.read_text(encoding="utf-8").splitlines()
    assert header == "line,field,variable,rule,expected"
    assert line.startswith("6,Geboortedatum,birth_year,not_a_date,")


def test_report_lines_follow_a_line_break_inside_a_quoted_field(site, tmp_path) -> None:
    _, gemeente = site
    lines = _csv_lines(gemeente_rows(60))
    fields = lines[2].split(";")
    fields[3] = '"Laan van\nNul"'  # line 3 runs on to line 4: the next record starts on line 5
    lines[2] = ";".join(fields)
    fields = lines[3].split(";")
    fields[2] = "X"  # Geslacht of the record that now starts on line 5
    lines[3] = ";".join(fields)
    extract = tmp_path / "gemeente_2023.csv"
    extract.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(*gemeente.prepare_args(extract)).exit_code == 0
    (report,) = (gemeente.dir / "quarantine").iterdir()
    assert report.read_text(encoding="utf-8").splitlines()[1].startswith("5,Geslacht,sex,unknown_category,")


def test_a_column_the_policy_does_not_name_is_mentioned_once(site, tmp_path) -> None:
    import polars as pl

    _, gemeente = site
    extract = tmp_path / "gemeente_2023.csv"
    frame = pl.DataFrame(gemeente_rows(20)).with_columns(pl.lit("x").alias("Telefoon"))
    frame.write_csv(extract, separator=";")
    result = run(*gemeente.prepare_args(extract))
    assert result.exit_code == 0, result.output
    assert result.stderr.count("'Telefoon'") == 1 and "not in the sharing policy" in result.stderr
    assert "Gebied" not in result.stderr  # listed under `dropped`: dropped on purpose, nothing to say


# --- a saved configuration: a routine run is `kansrijk node prepare EXTRACT` ------------------------------------
def _init_args(partner: Partner, *extra: str) -> list[str]:
    return ["node", "init", "--policy", str(partner.policy), "--signing-key", str(partner.signing), "--link-key",
            str(partner.link), "--coordinator-key", str(partner.coordinator), "--outbox", str(partner.outbox),
            *extra]  # fmt: skip


def test_node_init_then_prepare_with_the_extract_alone_chains_the_bundles(site, tmp_path, monkeypatch) -> None:
    ws, gemeente = site
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config-home"))
    monkeypatch.chdir(tmp_path)  # anywhere: the configuration holds absolute paths
    made = run(*_init_args(gemeente))
    assert made.exit_code == 0, made.output
    config = tmp_path / "config-home" / "kansrijk" / "node.toml"
    assert config.is_file() and "a routine run is now: kansrijk node prepare EXTRACT" in made.stdout
    first = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(30))
    sealed = run("node", "prepare", str(first), "--json")
    assert sealed.exit_code == 0, sealed.output
    one = json.loads(sealed.stdout)
    assert one["previous_bundle_hash"] is None and one["rows_shared"] == 30 and one["configuration"] == str(config)
    rows = gemeente_rows(30)
    for row in rows:
        row["Peiljaar"] = "2024"
    second = write_gemeente(tmp_path / "gemeente_2024.csv", rows)
    two = json.loads(run("node", "prepare", str(second), "--json").stdout)
    assert two["previous_bundle_hash"] == one["digest"]  # remembered: no --previous
    ingested = run("coordinator", "ingest", str(ws), one["bundle"], two["bundle"])
    assert ingested.exit_code == 0, ingested.output


def test_node_init_refuses_another_partners_key_and_writes_nothing(site, tmp_path) -> None:
    ws, gemeente = site
    cjg = make_partner(tmp_path, "cjg", ws / "keys" / "coordinator-hpke.pub")
    args = _init_args(gemeente, "--config", str(tmp_path / "node.toml"))
    args[args.index("--signing-key") + 1] = str(cjg.signing)
    result = run(*args)
    assert result.exit_code == 6 and "partner 'cjg''s signing key" in result.stderr
    assert not (tmp_path / "node.toml").exists()


def test_prepare_without_a_configuration_or_the_files_says_what_to_do(site, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "empty-config-home"))
    extract = write_gemeente(tmp_path / "gemeente_2023.csv", gemeente_rows(5))
    result = run("node", "prepare", str(extract))
    assert result.exit_code == 2
    assert "no node configuration here" in result.stderr and "kansrijk node init" in result.stderr
