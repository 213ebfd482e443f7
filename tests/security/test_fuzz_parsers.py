"""Hypothesis against every parser at a trust boundary: bundle framing and manifest, extract readers, sharing,
release and registry policy files, and the gate's table check. The property is always the same: the input is
either accepted or refused with a ``KansrijkError`` (never another exception, never a partial result)."""

from __future__ import annotations

import contextlib
import struct
import tomllib
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kansrijk import bundle, crypto
from kansrijk.errors import BundleError, KansrijkError
from kansrijk.gate.requests import CountTable, MeanTable, RequestInvalid
from kansrijk.gate.sdc import check_table, exposed_cells
from kansrijk.policy.registry import load_registry
from kansrijk.policy.release import SdcRules, load_release_policy
from kansrijk.policy.sharing import load_sharing_policy
from node_agent.extract import read_extract

REPO = Path(__file__).resolve().parents[2]
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

_SK, _PK = crypto.generate_signing_key()
_RK, _RPK = crypto.generate_encryption_key()
_DF = pl.DataFrame(
    {"pseudonym": [bytes([i]) * 32 for i in range(20)], "year": [2023] * 20, "sex": ["M", "F"] * 10},
    schema={"pseudonym": pl.Binary, "year": pl.Int32, "sex": pl.String},
)
_GOOD = bundle.seal_bundle(
    _DF,
    partner="cbs",
    extract_id="fuzz",
    extract_year=2023,
    policy_digest="sha256:" + "1" * 64,
    quarantine_count=0,
    signing_key=_SK,
    link_key_fingerprint="0" * 32,
    recipient_public_key=_RPK,
)


def _open(data: bytes) -> None:
    bundle.open_bundle(data, trusted_keys={"cbs": _PK}, recipient_private_key=_RK)


@FUZZ
@given(
    st.lists(
        st.tuples(st.integers(0, len(_GOOD) - 1), st.integers(1, 255)), min_size=1, max_size=6, unique_by=lambda e: e[0]
    )
)
def test_mutated_bundles_are_refused_with_a_bundle_error(tally, edits) -> None:
    data = bytearray(_GOOD)
    for offset, mask in edits:
        data[offset] ^= mask
    try:
        _open(bytes(data))
    except BundleError:
        return
    raise AssertionError("a mutated bundle opened")


@FUZZ
@given(st.binary(max_size=400), st.integers(0, 2**32 - 1), st.booleans())
def test_random_framing_is_refused_with_a_bundle_error(tally, body, manifest_len, magic) -> None:
    head = (bundle.MAGIC if magic else b"XXXXXXXX") + struct.pack(">HI", 1, manifest_len)
    with pytest.raises(BundleError):
        _open(head + body)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.text(max_size=12),
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=5),
    max_leaves=12,
)


@FUZZ
@given(
    st.one_of(
        _JSON,
        st.fixed_dictionaries(
            {k: _JSON for k in ("format", "format_version", "partner", "extract_id", "columns", "keys", "payload")}
        ),
    )
)
def test_arbitrary_manifest_json_is_malformed_not_a_crash(tally, obj) -> None:
    try:
        raw = bundle.canonical_json(obj)
    except TypeError:
        return
    framed = bundle.MAGIC + struct.pack(">HI", 1, len(raw)) + raw + bytes(64) + struct.pack(">H", 80) + bytes(80)
    framed += struct.pack(">Q", 28) + bytes(28)
    with pytest.raises(BundleError):
        bundle.verify_bundle(framed, {"cbs": _PK})


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_as_an_extract_are_read_or_refused(tmp_path_factory, tally, raw) -> None:
    policy, _ = load_sharing_policy(REPO / "policies" / "sharing" / "gemeente.toml")
    path = tmp_path_factory.mktemp("fx") / "gemeente_2023.csv"
    header = b"BSN;Geboortedatum;Geslacht;Straat;Huisnummer;Postcode;Buurtcode;Wijkcode;Gebied;WOZ_waarde;Bijstand;"
    header += b"Schuldhulp;Verzuimmeldingen;Jeugdhulp;Peiljaar\n"
    path.write_bytes(header + raw)
    with contextlib.suppress(KansrijkError):  # refused is fine; any other exception fails the test
        read_extract(path, policy)


def _mutate_toml(text: str, data: st.DataObject) -> str:
    lines = text.splitlines()
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(lines) - 1))
        action = data.draw(st.sampled_from(["drop", "dup", "value", "junk"]))
        if action == "drop":
            lines.pop(i)
        elif action == "dup":
            lines.insert(i, lines[i])
        elif action == "value" and "=" in lines[i]:
            key = lines[i].split("=", 1)[0]
            value = data.draw(
                st.sampled_from(['"0"', "-1", "1e400", '"../../x"', "[]", "{}", '"NaN"', "true", '"1/0"'])
            )
            lines[i] = f"{key}= {value}"
        else:
            lines.insert(i, data.draw(st.text(max_size=20)))
        if not lines:
            lines = [""]
    return "\n".join(lines)


@FUZZ
@given(
    st.sampled_from(
        ["sharing/gemeente.toml", "sharing/cjg.toml", "release/dp-sdc.toml", "release/sdc-only.toml", "partners.toml"]
    ),
    st.data(),
)
def test_mutated_policy_files_load_or_are_refused_with_a_policy_error(tmp_path_factory, tally, name, data) -> None:
    path = tmp_path_factory.mktemp("pol") / Path(name).name
    path.write_text(_mutate_toml((REPO / "policies" / name).read_text(), data))
    loader = {"sharing": load_sharing_policy, "release": load_release_policy}.get(name.split("/")[0], load_registry)
    try:
        loader(path)
    except KansrijkError:
        return
    tomllib.loads(path.read_text())  # accepted: then it was valid TOML that passed the strict model


@FUZZ
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", None]),
            st.sampled_from(["M", "F"]),
            st.one_of(st.floats(-1e6, 1e12), st.sampled_from([float("nan"), float("inf")])),
        ),
        min_size=0,
        max_size=60,
    )
)
def test_gate_checks_never_crash_and_never_leave_a_determined_cell(tally, rows) -> None:
    frame = pl.DataFrame(rows, schema={"buurt": pl.String, "sex": pl.String, "v": pl.Float64}, orient="row")
    rules = SdcRules()
    for request in (
        lambda: CountTable(name="c", data=frame, by=("buurt", "sex")),
        lambda: MeanTable(name="m", data=frame, value="v", by=("buurt",)),
    ):
        try:
            check = check_table(request(), rules)
        except RequestInvalid:
            continue
        if check.verdict == "refuse" or not check.shape:
            continue
        mask = check.cells["suppressed"].to_numpy().reshape(check.shape)
        if 0 < mask.sum() < mask.size:
            assert exposed_cells(check.cells["n"].to_numpy().reshape(check.shape), mask).size == 0
        assert np.all(check.cells.filter(~pl.col("suppressed"))["n"].to_numpy() >= rules.min_persons_per_cell)
