"""Coordinator ingest + link speed and peak memory, for four partners' bundles of one year.

- ingest: ``coordinator.ingest.ingest_bundle`` of the four sealed bundles (verify the signature, check the
  registry, replay and order, decrypt, P1 -> P2 re-pseudonymisation, atomic store, state transaction);
- link: ``coordinator.link.link_workspace`` of the ingested tables (polars lazy plan on the streaming engine,
  conflict resolution, outcomes, the linkage report, the state row).

References in the same run: a plain eager polars full join of the same four partner files (no crypto, no
resolution, no outcomes, no report) for ingest + link and for link alone; ``kansrijk.bundle.open_bundle`` of
the same four bundles (verify and decrypt, nothing stored) for ingest.

Scale "full": all of them at Rotterdam scale (150,000 persons) and at national scale (4.5M persons over 4
partners: CBS 98%, Gemeente 95%, CJG 70%, DUO 80% coverage); "small": Rotterdam only. Every step runs in its own
child process, so its peak RSS (``ru_maxrss``) is its own; the bundles are sealed in another child beforehand.
Targets (4.5M, 2 cores): ingest + link <= 30 s, peak RSS <= 8 GiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa

from benchmarks.run import figure as _figure

ROTTERDAM = 150_000
NATIONAL = 4_500_000
PERSONS = {"small": (ROTTERDAM,), "full": (ROTTERDAM, NATIONAL)}
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


_SEAL_CHILD = r"""
import json, sys
from pathlib import Path
import polars as pl
from coordinator.workspace import hpke_public_key, init_workspace, open_workspace
from kansrijk import bundle
from kansrijk.crypto import fingerprint, generate_signing_key
from kansrijk.policy.registry import partner_key_from_bytes, render_registry, with_partner
tables, root = {k: Path(v) for k, v in json.loads(sys.argv[1]).items()}, Path(sys.argv[2])
digest = "sha256:" + "0" * 64
keys, reg = {}, None
for partner in tables:
    keys[partner], pk = generate_signing_key()
    reg = with_partner(reg, partner, key=partner_key_from_bytes(pk, epoch=1), schema_versions=["1"],
                       policy_digests=[digest])
(root / "partners.toml").write_text(render_registry(reg))
init_workspace(root / "ws", "bench", registry=root / "partners.toml")
recipient = hpke_public_key(open_workspace(root / "ws"))
for partner, table in tables.items():
    sealed = bundle.seal_bundle(pl.read_parquet(table), partner=partner, extract_id=f"{partner}-2023",
        extract_year=2023, policy_digest=digest, quarantine_count=0, signing_key=keys[partner],
        link_key_fingerprint=fingerprint("link-key", b"k" * 32), recipient_public_key=recipient)
    (root / f"{partner}.kbundle").write_bytes(sealed)
    del sealed
"""

_INGEST_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from coordinator.ingest import IngestSession, ingest_bundle
from kansrijk import bundle
root, partners, mode = Path(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
session = IngestSession.open(root / "ws", "bench")
rows = 0
start = time.perf_counter()
for partner in partners:
    path = root / f"{partner}.kbundle"
    if mode == "open":  # the reference: verify and decrypt only
        trusted = {n: [k.key_bytes for k in p.keys] for n, p in session.registry.partners.items()}
        opened = bundle.open_bundle(path.read_bytes(), trusted_keys=trusted,
                                    recipient_private_key=session.keys.hpke_private)
        rows += opened.payload.height
        del opened
    else:
        rows += ingest_bundle(session, path).rows
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "rows": rows, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

_LINK_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
import polars as pl
from coordinator.link import link_workspace  # imported before the clock starts, like polars
root, tables = Path(sys.argv[2]), {k: Path(v) for k, v in json.loads(sys.argv[3]).items()}
start = time.perf_counter()
if sys.argv[1] == "kansrijk":
    persons = link_workspace(root / "ws").years[0].report.persons_in_dataset
else:
    frames = [
        pl.read_parquet(p).rename(lambda c, p=p: c if c == "pseudonym" else f"{c}__{p.stem}")
        for p in tables.values()
    ]
    joined = frames[0]
    for f in frames[1:]:
        joined = joined.join(f, on="pseudonym", how="full", coalesce=True)
    joined.write_parquet(root / "plain.parquet")
    persons = joined.height
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "persons": persons,
                  "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

GIB_IN_KIB = 1024**2  # ru_maxrss is in KiB on Linux


def _child(code: str, *args: str) -> dict:
    env = {**os.environ, "KANSRIJK_SCRYPT_LOG2N": "14"}  # a fast key-file KDF: the bench measures data, not KDF
    done = subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True, text=True, env=env)
    lines = done.stdout.strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def measure(persons: int) -> dict[str, dict]:
    """Make the four tables, seal them, then time ingest, link, the open-only and the plain-join references."""
    with tempfile.TemporaryDirectory(prefix="kansrijk-bench-coordinator-") as tmp:
        root = Path(tmp)
        (root / "tables").mkdir()
        tables = make_tables(root / "tables", persons)
        as_json = json.dumps({k: str(v) for k, v in tables.items()})
        _child(_SEAL_CHILD, as_json, str(root))
        partners = json.dumps(list(tables))
        return {
            "open": _child(_INGEST_CHILD, str(root), partners, "open"),
            "ingest": _child(_INGEST_CHILD, str(root), partners, "ingest"),
            "link": _child(_LINK_CHILD, "kansrijk", str(root), as_json),
            "plain": _child(_LINK_CHILD, "plain", str(root), as_json),
        }


def figures_of(persons: int, m: dict[str, dict]) -> list[dict]:
    national = persons == NATIONAL
    both = m["ingest"]["seconds"] + m["link"]["seconds"]
    peak = max(m["ingest"]["rss_kib"], m["link"]["rss_kib"]) / GIB_IN_KIB
    plain, plain_rss = m["plain"]["seconds"], m["plain"]["rss_kib"] / GIB_IN_KIB
    scale = f"4 partners x {persons:,} persons"
    return [
        _figure(
            f"coordinator ingest + link, {scale} ({m['ingest']['rows']:,} rows in, "
            f"{m['link']['persons']:,} persons linked)",
            both, "s", "plain eager polars full join of the same four files", plain,
            f"<= {TARGET_SECONDS:.0f} s at 4.5M on 2 cores" if national else "", both <= TARGET_SECONDS,
        ),
        _figure(
            f"coordinator ingest + link peak RSS (the larger of the two steps), {scale}",
            peak, "GiB", "plain eager polars full join peak RSS", plain_rss,
            f"<= {TARGET_RSS_GIB:.0f} GiB at 4.5M" if national else "", peak <= TARGET_RSS_GIB,
        ),
        _figure(
            f"coordinator link alone, {scale} (lazy/streaming, resolution, outcomes, report)",
            m["link"]["seconds"], "s", "plain eager polars full join of the same four files", plain, "",
        ),
        _figure(
            f"coordinator link alone peak RSS, {scale}",
            m["link"]["rss_kib"] / GIB_IN_KIB, "GiB", "plain eager polars full join peak RSS", plain_rss, "",
        ),
        _figure(
            f"coordinator ingest of 4 bundles, {m['ingest']['rows']:,} rows (verify, decrypt, P1->P2, store)",
            m["ingest"]["seconds"], "s", "kansrijk.bundle.open_bundle of the same bundles (verify, decrypt)",
            m["open"]["seconds"], "",
        ),
        _figure(
            f"coordinator ingest of 4 bundles peak RSS, {scale}",
            m["ingest"]["rss_kib"] / GIB_IN_KIB, "GiB", "open_bundle of the same bundles peak RSS",
            m["open"]["rss_kib"] / GIB_IN_KIB, "",
        ),
    ]  # fmt: skip


def run(scale: str) -> list[dict]:
    figures: list[dict] = []
    for persons in PERSONS[scale]:
        figures += figures_of(persons, measure(persons))
    return figures


if __name__ == "__main__":
    for figure in run(sys.argv[1] if len(sys.argv) > 1 else "small"):
        print(figure)
