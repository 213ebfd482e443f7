"""Shared setup for the gate's unit and security tests: a release policy signed by a fresh privacy-officer key,
and the gate's own signing key in a bare workspace directory."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from unittest import mock

import numpy as np
import polars as pl

from kansrijk import crypto
from kansrijk.gate.keys import create_gate_key
from kansrijk.policy.signing import sign_policy

REPO = Path(__file__).resolve().parents[1]
# The passphrase of every gate key these helpers make; tests/conftest.py puts it in $KANSRIJK_PASSPHRASE.
GATE_PASSPHRASE = "gate test passphrase"


def signed_policy(tmp: Path, policy: str = "sdc-only", text: str | None = None) -> tuple[Path, Path, bytes]:
    """Copy ``policies/release/<policy>.toml`` (or write ``text``) into ``tmp`` and sign it with a new officer key.

    Returns (policy path, officer public key path, officer secret key)."""
    sk, pk = crypto.generate_signing_key()
    pub = tmp / "officer.pub"
    crypto.write_public_key(pub, "ed25519-signing", pk, label="officer")
    target = tmp / f"{policy}.toml"
    if text is None:
        shutil.copy(REPO / "policies" / "release" / f"{policy}.toml", target)
    else:
        target.write_text(text)
    sign_policy(target, sk)
    return target, pub, sk


def add_workspace_identity(ws: Path, fingerprint: str | None = None) -> str:
    """Make ``ws`` (created if needed) a workspace with a person-key identity: a minimal ``workspace.toml`` with
    ``pseudonym_key_fingerprint`` (a fresh random one unless given), which the gate keys the budget by.

    Returns the fingerprint. Tests that need a real workspace use ``kansrijk coordinator init`` instead."""
    fingerprint = fingerprint or secrets.token_hex(16)
    ws.mkdir(parents=True, exist_ok=True)
    (ws / "workspace.toml").write_text(f'pseudonym_key_fingerprint = "{fingerprint}"\n')
    return fingerprint


def add_gate_key(ws: Path, passphrase: str = GATE_PASSPHRASE) -> str:
    """Give the (bare) workspace directory ``ws`` a gate signing key, as ``coordinator init`` does; returns its
    fingerprint. The key file uses the cheapest scrypt cost kansrijk reads (2^14), so tests stay fast."""
    ws.mkdir(parents=True, exist_ok=True)
    with mock.patch.dict(os.environ, {"KANSRIJK_SCRYPT_LOG2N": "14"}):
        return create_gate_key(ws, passphrase)


YEAR = 2023


def person_keys(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct 32-byte person keys from a seeded generator (stand-ins for P2 pseudonyms)."""
    rng = np.random.default_rng(seed)
    keys = {rng.bytes(32) for _ in range(n)}
    while len(keys) < n:
        keys.add(rng.bytes(32))
    return sorted(keys)[:n]


def write_dataset(ws: Path, frame: pl.DataFrame, year: int = YEAR, *, seed: int = 0, table: str = "linked") -> Path:
    """Write ``frame`` (one row per person; canonical variable names) as the workspace's linked dataset of
    ``year`` (or its linkage flags), the way ``coordinator link`` does: with a ``pseudonym`` column (added from
    ``person_keys`` when missing) and the ``year``. Returns the file written."""
    if "pseudonym" not in frame.columns:
        frame = frame.with_columns(pl.Series("pseudonym", person_keys(frame.height, seed), dtype=pl.Binary))
    if "year" not in frame.columns and table == "linked":
        frame = frame.with_columns(pl.lit(year, dtype=pl.Int32).alias("year"))
    folder = ws / "dataset" if table == "linked" else ws / "dataset" / "linkage"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{year}.parquet"
    frame.write_parquet(path)
    return path


def gate_workspace(tmp: Path, frames: pl.DataFrame | dict[int, pl.DataFrame] | None = None, name: str = "ws") -> Path:
    """``tmp/name`` as a workspace for a gate under test: the directory, its gate key and person-key identity
    (made once) and ``frames`` (one frame: reference year 2023; or a ``{year: frame}`` dict) as its linked
    datasets."""
    ws = tmp / name
    if not (ws / "keys" / "gate-signing.key").exists():
        add_gate_key(ws)
    if not (ws / "workspace.toml").exists():
        add_workspace_identity(ws)
    if isinstance(frames, pl.DataFrame):
        frames = {YEAR: frames}
    for year, frame in sorted((frames or {}).items()):  # the same persons every year (seed 0)
        write_dataset(ws, frame, year)
    return ws
