"""Coordinator linkage speed and peak memory: ``coordinator.link.link_tables`` (polars lazy plan, streaming
engine, conflict resolution, outcomes, report) against a plain eager polars full join of the same four files.

Scale "full": a national youth population of 4.5M persons over 4 partners (CBS 98%, Gemeente 95%, CJG 70%,
DUO 80% coverage); "small": 150k (Rotterdam). Each variant runs in its own subprocess so its peak RSS is its own.
Targets (full): linkage ≤ 30 s and ≤ 8 GiB peak RSS on 2 cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

PERSONS = {"small": 150_000, "full": 4_500_000}
COVERAGE = {"cbs": 0.98, "gemeente": 0.95, "cjg": 0.70, "duo": 0.80}
YEAR = 2023
TARGET_SECONDS = 30.0
TARGET_RSS_GIB = 8.0


def _pseudonyms(rng: np.random.Generator, n: int) -> pl.Series:
    buf = pa.py_buffer(rng.bytes(32 * n))
    fixed = pa.Array.from_buffers(pa.binary(32), n, [None, buf])
    return pl.from_arrow(fixed.cast(pa.binary())).alias("pseudonym")  # type: ignore[return-value]


def make_tables(out: Path, persons: int, seed: int = 2023) -> dict[str, Path]:
    """Four partner tables of one year, shaped like ingested workspace tables (P2 pseudonyms, schema dtypes)."""
    rng = np.random.default_rng(seed)
    base = pl.DataFrame(
        {
            "pseudonym": _pseudonyms(rng, persons),
            "birth_year": rng.integers(2001, 2024, persons).astype(np.int32),
            "sex": rng.choice(np.array(["M", "F"]), persons),
        }
    )
    n = persons
    extra = {
        "cbs": {
            "migration_background": rng.choice(np.array(["dutch", "western", "non_western"]), n),
            "household_type": rng.choice(np.array(["two_parent", "single_parent", "other"]), n),
            "low_income": rng.random(n) < 0.17,
            "crime_suspect": rng.random(n) < 0.02,
        },
        "gemeente": {
            "buurt_code": np.char.add("BU0599", rng.integers(1000, 1100, n).astype(str)),
            "wijk_code": np.char.add("WK0599", rng.integers(10, 24, n).astype(str)),
            "woz_eur": rng.integers(80_000, 900_000, n).astype(np.int32),
            "social_assistance": rng.random(n) < 0.1,
            "debt_assistance": rng.random(n) < 0.05,
            "truancy_reports": rng.poisson(0.2, n).astype(np.int32),
            "youth_care": rng.random(n) < 0.1,
        },
        "cjg": {
            "sdq_total": rng.integers(0, 41, n).astype(np.int32),
            "sdq_prosocial": rng.integers(0, 11, n).astype(np.int32),
            "bmi": np.round(rng.normal(18, 3, n), 1),
            "language_delay": rng.random(n) < 0.05,
            "parenting_concerns": rng.random(n) < 0.07,
            "visit_year": np.full(n, YEAR, dtype=np.int32),
        },
        "duo": {
            "school_type": rng.choice(np.array(["primary", "secondary", "mbo"]), n),
            "track": rng.choice(np.array(["PO", "VMBO-B", "HAVO", "VWO", "MBO-2"]), n),
            "grade": rng.integers(1, 7, n).astype(np.int32),
            "repeated_grade": rng.random(n) < 0.05,
            "track_change": rng.choice(np.array(["none", "up", "down"]), n, p=[0.9, 0.04, 0.06]),
            "early_school_leaver": rng.random(n) < 0.02,
        },
    }
    paths: dict[str, Path] = {}
    for partner, share in COVERAGE.items():
        keep = rng.random(n) < share
        sex = base["sex"]
        if partner != "cbs":  # 0.5% of the records disagree on sex with the others
            flip = rng.random(n) < 0.005
            sex = pl.Series("sex", np.where(flip, np.where(sex.to_numpy() == "M", "F", "M"), sex.to_numpy()))
        frame = (
            base.with_columns(sex.alias("sex"), pl.lit(YEAR, dtype=pl.Int32).alias("year"))
            .hstack(pl.DataFrame(extra[partner]))
            .filter(pl.Series(keep))
        )
        paths[partner] = out / f"{partner}.parquet"
        frame.write_parquet(paths[partner], compression="zstd")
    return paths


_INGEST_CHILD = r"""
import json, os, resource, sys, time
from pathlib import Path
import polars as pl
os.environ["KANSRIJK_SCRYPT_LOG2N"] = "14"
from coordinator.ingest import IngestSession, ingest_bundle
from coordinator.workspace import hpke_public_key, init_workspace, open_workspace
from kansrijk import bundle
from kansrijk.crypto import fingerprint, generate_signing_key
from kansrijk.policy.registry import partner_key_from_bytes, render_registry, with_partner
table, root = Path(sys.argv[1]), Path(sys.argv[2])
sk, pk = generate_signing_key()
digest = "sha256:" + "0" * 64
reg = with_partner(None, "cbs", key=partner_key_from_bytes(pk, epoch=1), schema_versions=["1"], policy_digests=[digest])
(root / "partners.toml").write_text(render_registry(reg))
init_workspace(root / "ws", "bench", registry=root / "partners.toml")
payload = pl.read_parquet(table)
sealed = bundle.seal_bundle(payload, partner="cbs", extract_id="cbs-2023", extract_year=2023, policy_digest=digest,
    quarantine_count=0, signing_key=sk, link_key_fingerprint=fingerprint("link-key", b"k" * 32),
    recipient_public_key=hpke_public_key(open_workspace(root / "ws")))
(root / "cbs.kbundle").write_bytes(sealed)
del payload, sealed
session = IngestSession.open(root / "ws", "bench")
trusted = {"cbs": [pk]}
start = time.perf_counter()
opened = bundle.open_bundle((root / "cbs.kbundle").read_bytes(), trusted_keys=trusted,
                            recipient_private_key=session.keys.hpke_private)
open_only = time.perf_counter() - start
del opened
start = time.perf_counter()
outcome = ingest_bundle(session, root / "cbs.kbundle")
elapsed = time.perf_counter() - start
rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": elapsed, "open_seconds": open_only, "rows": outcome.rows, "rss_kib": rss_kib}))
"""

_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import polars as pl
tables = {k: Path(v) for k, v in json.loads(sys.argv[2]).items()}
out = Path(sys.argv[3])
from coordinator.link import link_tables  # imported before the clock starts, like polars
start = time.perf_counter()
if sys.argv[1] == "kansrijk":
    link_tables(tables, 2023, dataset_path=out / "dataset.parquet", report_path=out / "report.json")
else:
    frames = [
        pl.read_parquet(p).rename(lambda c, p=p: c if c == "pseudonym" else f"{c}__{p.stem}")
        for p in tables.values()
    ]
    joined = frames[0]
    for f in frames[1:]:
        joined = joined.join(f, on="pseudonym", how="full", coalesce=True)
    joined.write_parquet(out / "plain.parquet")
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def _run(variant: str, tables: dict[str, Path], out: Path) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, variant, json.dumps({k: str(v) for k, v in tables.items()}), str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(scale: str) -> list[dict]:
    persons = PERSONS[scale]
    with tempfile.TemporaryDirectory(prefix="kansrijk-bench-coordinator-") as tmp:
        root = Path(tmp)
        tables = make_tables(root, persons)
        ours = _run("kansrijk", tables, root)
        plain = _run("plain", tables, root)
        done = subprocess.run(
            [sys.executable, "-c", _INGEST_CHILD, str(tables["cbs"]), str(root)],
            check=True,
            capture_output=True,
            text=True,
        )
        ingest = json.loads(done.stdout.strip().splitlines()[-1])
    gib = 1024**2  # ru_maxrss is in KiB on Linux
    return [
        {
            "name": f"coordinator link, 4 partners x {persons:,} persons (lazy/streaming, resolution, outcomes)",
            "value": round(ours["seconds"], 2),
            "unit": "s",
            "reference_name": "plain eager polars full join of the same files",
            "reference_value": round(plain["seconds"], 2),
            "ratio": round(ours["seconds"] / plain["seconds"], 2),
            "target": f"<= {TARGET_SECONDS:.0f} s at 4.5M" if scale == "full" else "",
        },
        {
            "name": f"coordinator link peak RSS, 4 partners x {persons:,} persons",
            "value": round(ours["rss_kib"] / gib, 2),
            "unit": "GiB",
            "reference_name": "plain eager polars full join peak RSS",
            "reference_value": round(plain["rss_kib"] / gib, 2),
            "ratio": round(ours["rss_kib"] / plain["rss_kib"], 2),
            "target": f"<= {TARGET_RSS_GIB:.0f} GiB at 4.5M" if scale == "full" else "",
        },
        {
            "name": f"coordinator ingest of one bundle, {ingest['rows']:,} rows (verify, decrypt, P1->P2, store)",
            "value": round(ingest["seconds"], 2),
            "unit": "s",
            "reference_name": "kansrijk.bundle.open_bundle alone (verify and decrypt, nothing stored)",
            "reference_value": round(ingest["open_seconds"], 2),
            "ratio": round(ingest["seconds"] / ingest["open_seconds"], 2),
            "target": "",
        },
    ]


if __name__ == "__main__":
    for figure in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(figure)
