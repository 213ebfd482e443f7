"""Pinned vectors for the coordinator pseudonym P2 = HMAC-SHA256(coordinator_key, P1)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from kansrijk import crypto
from kansrijk.pseudonym import coordinator_pseudonym_expr

HERE = Path(__file__).parent
VECTORS = json.loads((HERE / "pseudonyms_p2_v1.json").read_text())
KEY = bytes.fromhex(VECTORS["coordinator_key_hex"])


def test_the_vector_key_has_its_recorded_fingerprint() -> None:
    assert crypto.fingerprint("coordinator-pseudonym-key", KEY) == VECTORS["coordinator_key_fingerprint"]


def test_p2_of_every_p1_vector_in_one_vectorised_pass() -> None:
    p1 = pl.Series("p1", [bytes.fromhex(c["p1_hex"]) for c in VECTORS["cases"]], dtype=pl.Binary)
    out = pl.DataFrame({"p1": p1}).select(coordinator_pseudonym_expr(KEY, pl.col("p1")).alias("p2"))["p2"]
    assert [b.hex() for b in out] == [c["p2_hex"] for c in VECTORS["cases"]]


def test_the_p2_vectors_start_from_the_pinned_p1_vectors() -> None:
    p1 = json.loads((HERE / "pseudonyms_v1.json").read_text())
    assert [c["pseudonym_hex"] for c in p1["cases"]] == [c["p1_hex"] for c in VECTORS["cases"]]


def test_a_key_of_the_wrong_length_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        coordinator_pseudonym_expr(KEY[:16], pl.col("p1"))
