"""Ad-hoc queries: ``--where`` conditions typed by each variable's public domain, specs built from command-line
words, released through a gate in this process and through the gate service's ``query`` op — with the same
verdicts, exit codes, and nothing recorded for a malformed spec."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from gate_kit import gate_workspace, signed_policy, write_dataset
from hypothesis import given
from hypothesis import strategies as st
from service_kit import minimal_workspace, serving
from typer.testing import CliRunner

from coordinator.query import parse_condition, query_spec
from coordinator.service import client as gate_client
from kansrijk.cli import app
from kansrijk.errors import InputError
from kansrijk.gate.ledger import entries, open_existing
from kansrijk.gate.requests import RequestInvalid
from kansrijk.gate.specs import CountSpec, parse_spec, spec_to_json, where

CODES = [f"BU059900{i:02d}" for i in range(12)]


def city(n: int = 3000, seed: int = 4) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "sex": rng.choice(["M", "F"], n),
            "age_years": rng.integers(0, 24, n).astype(np.int32),
            "track": rng.choice(["HAVO", "VWO", "MBO-2"], n),
            "buurt_code": rng.choice(CODES, n),
            "woz_eur": rng.integers(90_000, 600_000, n).astype(np.int32),
            "low_income": rng.random(n) < 0.2,
        }
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("age_years <= 12", {"var": "age_years", "op": "<=", "value": 12}),
        ("sex == F", {"var": "sex", "op": "==", "value": "F"}),
        ("track in HAVO,VWO", {"var": "track", "op": "in", "values": ("HAVO", "VWO")}),
        ("low_income == true", {"var": "low_income", "op": "==", "value": True}),
        ("woz_eur not_null", {"var": "woz_eur", "op": "not_null"}),
        ("  bmi > 18.5 ", {"var": "bmi", "op": ">", "value": 18.5}),
    ],
)
def test_conditions_are_typed_by_the_variables_public_domain(text: str, expected: dict) -> None:
    cond = parse_condition(text)
    assert {k: v for k, v in cond.model_dump().items() if v not in (None, ())} == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("age_years <=", "needs a value"),
        ("low_income == maybe", "true/false"),
        ("age_years == twelve", "numeric"),
        ("pseudonym == x", "not a variable"),
        ("woz_eur is_null 3", "takes no value"),
        ("1 + 1", "variable operator value"),
    ],
)
def test_a_malformed_condition_names_itself_and_the_rule(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as exc:
        parse_condition(text)
    assert repr(text) in str(exc.value)


@given(st.text(max_size=60))
def test_any_where_text_is_a_condition_or_a_precise_error(text: str) -> None:
    with contextlib.suppress(InputError, RequestInvalid):
        parse_condition(text)


def test_a_spec_round_trips_through_its_json() -> None:
    spec = query_spec("count", name="q", years=[2023], where=["age_years <= 12", "track in HAVO,VWO"], by=["sex"])
    assert parse_spec(json.loads(json.dumps(spec_to_json(spec)))) == spec


def test_a_quantile_needs_levels_and_a_count_takes_no_value() -> None:
    with pytest.raises(InputError, match="--level"):
        query_spec("quantile", name="q", years=[2023], value="woz_eur")
    with pytest.raises(InputError, match="no --value"):
        query_spec("count", name="q", years=[2023], by=["sex"], value="woz_eur")


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["query", *args])
    return result.exit_code, result.output


def test_the_cli_releases_a_count_and_refuses_with_exit_26_and_a_ledger_entry(tmp_path: Path) -> None:
    ws = gate_workspace(tmp_path, city())
    policy, pub, _ = signed_policy(tmp_path)
    common = ["--year", "2023", "--release-policy", str(policy), "--officer-key", str(pub)]
    code, out = _cli("count", str(ws), "--name", "by_sex", "--by", "sex", "--where", "age_years <= 12", *common)
    assert code == 0, out
    assert "by_sex: released" in out and "where age_years <= 12" in out
    # twelve buurten crossed with a narrow age band: too many cells withheld, refused and recorded
    code, out = _cli("count", str(ws), "--name", "tiny", "--by", "buurt_code", "--by", "sex", "--where",
                     "age_years == 3", *common)  # fmt: skip
    assert code == 26, out
    assert "refused by the gate" in out
    conn = open_existing(ws)
    try:
        recorded = [(e.release_name, e.outcome) for e in entries(conn)]
    finally:
        conn.close()
    assert recorded == [("by_sex", "released"), ("tiny", "refused")]


def test_the_cli_refuses_a_parameter_outside_the_grid_with_exit_23_and_records_nothing(tmp_path: Path) -> None:
    ws = gate_workspace(tmp_path, city())
    policy, pub, _ = signed_policy(tmp_path)
    code, out = _cli("quantile", str(ws), "--name", "q", "--year", "2023", "--value", "woz_eur", "--level",
                     "0.000001", "--release-policy", str(policy), "--officer-key", str(pub))  # fmt: skip
    assert code == RequestInvalid.exit_code, out
    assert "grids.quantile_levels" in out
    assert not (ws / "ledger.sqlite").exists() or not entries(open_existing(ws))


def test_a_json_spec_file_is_released_like_its_command_line_twin(tmp_path: Path) -> None:
    ws = gate_workspace(tmp_path, city())
    policy, pub, _ = signed_policy(tmp_path)
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"spec": "mean", "name": "woz_by_sex", "years": [2023], "value": "woz_eur",
                                "by": ["sex"]}))  # fmt: skip
    code, out = _cli("spec", str(spec), str(ws), "--release-policy", str(policy), "--officer-key", str(pub), "--json")
    assert code == 0, out
    doc = json.loads((ws / "released" / "woz_by_sex.json").read_text())
    assert doc["spec"]["value"] == "woz_eur" and doc["values"]["columns"][:2] == ["sex", "n"]
    spec.write_text(json.dumps({"spec": "count", "name": "x", "years": [2023], "by": ["sex"], "data": [[1]]}))
    code, out = _cli("spec", str(spec), str(ws), "--release-policy", str(policy), "--officer-key", str(pub))
    assert code == RequestInvalid.exit_code and "data" in out


def test_the_gate_service_answers_a_query_as_the_gate_in_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    served = minimal_workspace(tmp_path)  # a real workspace: the service checks it
    ws, policy, pub = served.ws, served.release_policy, served.officer_pub
    write_dataset(ws, city())
    sock = tmp_path / "gate.sock"
    with serving(ws, policy, pub, sock):
        spec = CountSpec(name="served", years=(2023,), by=("sex",), population=(where("age_years", ">=", 12),))
        answer = gate_client.query(sock, spec_to_json(spec))
        assert answer.outcome == "released" and answer.document is not None, answer.reasons
        assert answer.document["spec"] == json.loads(json.dumps(spec.parameters()))
        refused = gate_client.query(sock, spec_to_json(spec))  # the same name again
        assert refused.outcome == "refused" and any("unique_name" in r for r in refused.reasons)
        with pytest.raises(RequestInvalid, match="persons"):
            gate_client.query(sock, {"spec": "count", "name": "p", "years": [2023], "by": ["sex"], "persons": [1]})
        code, out = _cli("count", "--name", "via_cli", "--year", "2023", "--by", "sex", "--gate-socket", str(sock))
        assert code == 0, out
        code, out = _cli("count", "--name", "both", "--year", "2023", "--by", "sex", "--gate-socket", str(sock),
                         "--release-policy", str(policy))  # fmt: skip
        assert code == InputError.exit_code and "gate service's own" in out
    released = sorted(p.name for p in (ws / "released").glob("*.json") if p.name != "LEDGER-HEAD.json")
    assert released == ["served.json", "via_cli.json"]
