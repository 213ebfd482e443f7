"""Shared pieces of the security suite: a coordinator workspace with one registered partner, payloads, sealing
and a whole-tree snapshot to prove a refused input changed nothing."""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from coordinator.ingest import IngestSession
from coordinator.workspace import hpke_public_key, init_workspace, open_workspace
from kansrijk import bundle
from kansrijk.crypto import fingerprint, generate_signing_key, random_key
from kansrijk.policy.registry import PartnerRegistry, partner_key_from_bytes, render_registry, with_partner
from kansrijk.schema import schema_version

REPO_POLICIES = Path(__file__).resolve().parents[2] / "policies"
PASS = "security-suite passphrase"
POLICY = "sha256:" + "1" * 64


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the SHA-256 of its bytes (``dir`` for directories) and its mode."""
    out = {}
    for p in sorted(root.rglob("*")):
        mode = p.stat().st_mode
        out[str(p.relative_to(root))] = (
            f"{hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else 'dir'}:{mode:o}"
        )
    return out


def payload(rows: int, seed: int, year: int = 2023) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "pseudonym": [rng.bytes(32) for _ in range(rows)],
            "year": np.full(rows, year, dtype=np.int32),
            "birth_year": rng.integers(2005, 2020, rows).astype(np.int32),
            "sex": rng.choice(["M", "F"], rows).tolist(),
            "low_income": rng.random(rows) < 0.2,
        },
        schema={
            "pseudonym": pl.Binary,
            "year": pl.Int32,
            "birth_year": pl.Int32,
            "sex": pl.String,
            "low_income": pl.Boolean,
        },
    )


@dataclass
class Coordinator:
    """A workspace whose registry lists partner ``cbs`` with ``keys`` (epoch -> signing key, all active)."""

    ws: Path
    tmp: Path
    session: IngestSession
    keys: dict[int, bytes]
    recipient: bytes
    link_fp: str = field(default_factory=lambda: fingerprint("link-key", random_key()))

    def seal(
        self,
        *,
        extract_id: str,
        year: int = 2023,
        previous: str | None = None,
        epoch: int = 1,
        signing_key: bytes | None = None,
        rows: int = 50,
        seed: int = 1,
        policy: str = POLICY,
        recipient: bytes | None = None,
    ) -> bytes:
        return bundle.seal_bundle(
            payload(rows, seed, year),
            partner="cbs",
            extract_id=extract_id,
            extract_year=year,
            policy_digest=policy,
            quarantine_count=0,
            signing_key=signing_key or self.keys[epoch],
            link_key_fingerprint=self.link_fp,
            recipient_public_key=recipient or self.recipient,
            key_epoch=epoch,
            previous_bundle_hash=previous,
        )

    def use_registry(self, registry: PartnerRegistry) -> None:
        self.session = IngestSession(self.session.paths, self.session.keys, registry, "sha256:" + "0" * 64)

    def write(self, data: bytes, name: str = "b.kbundle") -> Path:
        path = self.tmp / name
        path.write_bytes(data)
        return path


def coordinator(tmp_path: Path, epochs: tuple[int, ...] = (1,)) -> Coordinator:
    keys: dict[int, bytes] = {}
    registry = None
    for epoch in epochs:
        sk, pk = generate_signing_key()
        keys[epoch] = sk
        registry = with_partner(
            registry,
            "cbs",
            key=partner_key_from_bytes(pk, epoch=epoch),
            schema_versions=[schema_version()],
            policy_digests=[POLICY],
        )
    assert registry is not None
    reg_path = tmp_path / "partners.toml"
    reg_path.write_text(render_registry(registry))
    ws = tmp_path / "ws"
    init_workspace(ws, PASS, registry=reg_path)
    session = IngestSession.open(ws, PASS)
    return Coordinator(ws, tmp_path, session, keys, hpke_public_key(open_workspace(ws)))


def sections(data: bytes) -> dict[str, tuple[int, int]]:
    """Byte ranges [start, end) of every region of the version-1 layout (docs/bundle-format.md)."""
    (mlen,) = struct.unpack(">I", data[10:14])
    m0, s0 = 14, 14 + mlen
    wl0 = s0 + 64
    (wlen,) = struct.unpack(">H", data[wl0 : wl0 + 2])
    w0 = wl0 + 2
    pl0 = w0 + wlen
    p0 = pl0 + 8
    return {
        "magic": (0, 8),
        "format_version": (8, 10),
        "manifest_length": (10, 14),
        "manifest": (m0, s0),
        "signature": (s0, wl0),
        "wrapped_key_length": (wl0, w0),
        "wrapped_key": (w0, pl0),
        "payload_length": (pl0, p0),
        "payload_nonce": (p0, p0 + 12),
        "payload_ciphertext": (p0 + 12, len(data) - 16),
        "payload_tag": (len(data) - 16, len(data)),
    }
