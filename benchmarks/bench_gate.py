"""Release-gate speed: batched DP counts vs separate OpenDP queries, and SDC checks vs ACRO.

- DP: 1,000 grouped counts (a 40 x 25 table over 20,000 persons at "small", 150,000 at "full") measured in one
  batched OpenDP query (``kansrijk.gate.dp.measure``), and released through the whole gate (``Gate.release``
  under the signed dp-sdc policy: budget check, OpenDP, output checks on the true counts, ledger entry, files).
  Reference: 1,000 separate OpenDP queries, one per cell, the way a naive caller would do it (extrapolated from
  the first 50 at "small"). Target: the batched release <= 2 s.
- SDC: the gate's output checks (cell minimum, dominance, secondary suppression) of a 12 x 6 crosstab against
  ACRO's ``crosstab(suppress=True)`` on the same frames. Target: >= 10x faster.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import polars as pl

from kansrijk import crypto
from kansrijk.gate import dp as gate_dp
from kansrijk.gate.keys import create_gate_key
from kansrijk.gate.release import Gate, Refused
from kansrijk.gate.requests import CountTable
from kansrijk.gate.sdc import check_table
from kansrijk.gate.specs import CountSpec
from kansrijk.policy.release import SdcRules
from kansrijk.policy.signing import sign_policy

POLICY = Path(__file__).resolve().parents[1] / "policies" / "release" / "dp-sdc.toml"
_PASSPHRASE = "benchmark gate key"  # a throw-away workspace's key; the timing starts after the gate opened


def _frame(persons: int, cells_a: int, cells_b: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {"a": rng.integers(0, cells_a, persons).astype(str), "b": rng.integers(0, cells_b, persons).astype(str)}
    )


CANONICAL_BY = ("age_years", "school_advice", "sex", "household_type")  # 31 x 5 x 2 x 3 = 930 public cells


def _canonical_frame(persons: int, seed: int = 0) -> pl.DataFrame:
    """A linked dataset of ``persons`` with the grouping variables of ``CANONICAL_BY`` and 32-byte person keys."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "pseudonym": [rng.bytes(32) for _ in range(persons)],
            "year": np.full(persons, 2023, dtype=np.int32),
            "age_years": rng.integers(0, 31, persons).astype(np.int32),
            "school_advice": rng.choice(["VMBO-B", "VMBO-K", "VMBO-GT", "HAVO", "VWO"], persons),
            "sex": rng.choice(["M", "F"], persons),
            "household_type": rng.choice(["two_parent", "single_parent", "other"], persons),
        },
        schema_overrides={"pseudonym": pl.Binary},
    )


def _gate_release_seconds(persons: int) -> float:
    """Seconds for ``Gate.release`` of a DP count spec over the 930 public cells of ``CANONICAL_BY``, computed by
    the gate from a linked dataset of ``persons``, in a fresh workspace under a freshly signed dp-sdc policy."""
    with tempfile.TemporaryDirectory(prefix="kansrijk-bench-gate-") as tmp:
        root = Path(tmp)
        (root / "ws" / "dataset").mkdir(parents=True)
        _canonical_frame(persons).write_parquet(root / "ws" / "dataset" / "2023.parquet")
        request = CountSpec(name="bench", years=(2023,), by=CANONICAL_BY)
        signing, public = crypto.generate_signing_key()
        crypto.write_public_key(root / "officer.pub", "ed25519-signing", public, label="officer")
        shutil.copy(POLICY, root / "policy.toml")
        sign_policy(root / "policy.toml", signing)
        create_gate_key(root / "ws", _PASSPHRASE)
        # the gate keeps the budget per person-key space: a workspace names its pseudonym key
        (root / "ws" / "workspace.toml").write_text(f'pseudonym_key_fingerprint = "{"0" * 32}"\n')
        with Gate.open(root / "ws", root / "policy.toml", [root / "officer.pub"], passphrase=_PASSPHRASE) as gate:
            start = time.perf_counter()
            result = gate.release(request, requested_by="coordinator")
            seconds = time.perf_counter() - start
        if isinstance(result, Refused):
            raise RuntimeError(f"the gate refused the benchmark table: {result}")
    return seconds


def _bench_dp(scale: str) -> list[dict]:
    persons = 20_000 if scale == "small" else 150_000
    separate_n = 50 if scale == "small" else 1000
    df = _frame(persons, 40, 25)
    keys = {"a": tuple(str(i) for i in range(40)), "b": tuple(str(i) for i in range(25))}  # 1,000 cells
    request = CountTable(name="bench", data=df, by=("a", "b"), keys=keys)
    gate_dp.measure(request, Fraction(1), max_persons=10_000_000)  # warm-up: OpenDP and polars initialise once
    start = time.perf_counter()
    gate_dp.measure(request, Fraction(1), max_persons=10_000_000)
    batched = time.perf_counter() - start
    # reference: one OpenDP query per cell (each a filtered count), the way a naive caller would do it
    cells = [(a, b) for a in keys["a"] for b in keys["b"]][:separate_n]
    start = time.perf_counter()
    for a, b in cells:
        sub = df.filter((pl.col("a") == a) & (pl.col("b") == b)).select("a")
        gate_dp.measure(
            CountTable(name="one", data=sub, by=("a",), keys={"a": (a,)}), Fraction(1, 1000), max_persons=10_000_000
        )
    separate = (time.perf_counter() - start) * (1000 / separate_n)
    released = _gate_release_seconds(persons)
    reference = "1,000 separate OpenDP queries" + (" (extrapolated from 50)" if scale == "small" else "")
    return [
        {
            "name": f"gate: 1,000 grouped DP counts ({persons:,} persons), one batched OpenDP measurement",
            "value": round(batched, 3),
            "unit": "s",
            "reference_name": reference,
            "reference_value": round(separate, 3),
            "ratio": round(separate / batched, 1),
            "target": "<= 2 s",
            "met": batched <= 2.0,
        },
        {
            "name": "gate: 930 grouped DP counts as one Gate.release of a spec (the gate reads the dataset; budget, "
            "OpenDP, output checks, ledger, files)",
            "value": round(released, 3),
            "unit": "s",
            "reference_name": reference,
            "reference_value": round(separate, 3),
            "ratio": round(separate / released, 1),
            "target": "<= 2 s",
            "met": released <= 2.0,
        },
    ]


def _bench_sdc(scale: str) -> list[dict]:
    logging.disable(logging.WARNING)
    warnings.simplefilter("ignore")
    from acro import ACRO

    repeats = 5 if scale == "small" else 20
    frames = [_frame(5_000, 12, 6, seed) for seed in range(repeats)]
    rules = SdcRules()
    start = time.perf_counter()
    for df in frames:
        check_table(CountTable(name="x", data=df, by=("a", "b")), rules)
    ours = (time.perf_counter() - start) / repeats
    acro = ACRO(suppress=True)
    pandas_frames = [f.to_pandas() for f in frames]
    start = time.perf_counter()
    for df in pandas_frames:
        acro.crosstab(df.a, df.b)
    theirs = (time.perf_counter() - start) / repeats
    # A sparse buurt-sized table where the secondary suppression's linear-program audit really runs.
    sparse = _frame(30_000, 70, 30, 1)
    start = time.perf_counter()
    check = check_table(CountTable(name="x", data=sparse, by=("a", "b")), rules)
    sparse_ours = time.perf_counter() - start
    withheld = int(check.cells["suppressed"].sum())
    sparse_pd = sparse.to_pandas()
    start = time.perf_counter()
    acro.crosstab(sparse_pd.a, sparse_pd.b)
    sparse_theirs = time.perf_counter() - start
    return [
        {
            "name": f"gate: SDC check of a sparse 70x30 crosstab (30,000 persons, {withheld} cells withheld, "
            f"linear-program audit of every withheld cell)",
            "value": round(sparse_ours * 1000, 1),
            "unit": "ms",
            "reference_name": "ACRO crosstab(suppress=True), primary suppression only",
            "reference_value": round(sparse_theirs * 1000, 1),
            "ratio": round(sparse_theirs / sparse_ours, 2),
            "target": "-",
            "met": None,
        },
        {
            "name": "gate: SDC check of a 12x6 crosstab (5,000 persons, incl. secondary suppression)",
            "value": round(ours * 1000, 2),
            "unit": "ms",
            "reference_name": "ACRO crosstab(suppress=True)",
            "reference_value": round(theirs * 1000, 2),
            "ratio": round(theirs / ours, 1),
            "target": ">= 10x faster",
            "met": theirs >= 10 * ours,
        },
    ]


def run(scale: str) -> list[dict]:
    return _bench_dp(scale) + _bench_sdc(scale)


if __name__ == "__main__":
    import sys

    for row in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(row)
