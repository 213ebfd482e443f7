"""Shared setup for the gate service's tests: a workspace with a signed release policy, a service on a thread of
the test process, and a raw client that sends any bytes and reads every reply line."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gate_kit import GATE_PASSPHRASE, REPO, signed_policy

from coordinator.service.server import GateServer, ServeOptions, serve_gate
from coordinator.workspace import init_workspace
from kansrijk.policy.signing import sign_policy

# the workspace's keys (its gate key too) use the passphrase tests/conftest.py puts in $KANSRIJK_PASSPHRASE
PASSPHRASE = GATE_PASSPHRASE


@dataclass(frozen=True)
class Served:
    """A workspace and what the privacy officer signed for it."""

    ws: Path
    release_policy: Path
    officer_pub: Path
    officer_key: bytes
    plan: Path  # signed
    factors: Path  # signed


def minimal_workspace(tmp: Path, release: str = "sdc-only") -> Served:
    """An initialised workspace (nothing ingested) with the shipped release policy, plan and factor model signed
    by a fresh officer key. The caller sets a small KANSRIJK_SCRYPT_LOG2N."""
    ws = tmp / "ws"
    init_workspace(ws, PASSPHRASE)
    signed = tmp / "signed"
    signed.mkdir()
    policy, pub, sk = signed_policy(signed, release)
    plan, factors = signed / "plan.toml", signed / "factors.toml"
    shutil.copy(REPO / "policies" / "analysis" / "rotterdam-groeit.toml", plan)
    shutil.copy(REPO / "policies" / "factors" / "factor-model.toml", factors)
    sign_policy(plan, sk)
    sign_policy(factors, sk)
    return Served(ws, policy, pub, sk, plan, factors)


@contextlib.contextmanager
def serving(
    ws: Path, release_policy: Path, officer_pub: Path, socket_path: Path, **options: Any
) -> Iterator[GateServer]:
    """``serve_gate`` on a thread of this process until the block ends (then stopped, socket removed)."""
    ready = threading.Event()
    holder: dict[str, Any] = {}

    def run() -> None:
        try:
            serve_gate(
                ServeOptions(ws, release_policy, (officer_pub,), socket_path, **options),
                ready=lambda server: (holder.setdefault("server", server), ready.set()),
            )
        except BaseException as exc:  # surfaced to the test below
            holder["error"] = exc
            ready.set()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    ready.wait(30)
    if "error" in holder:
        raise holder["error"]
    server: GateServer = holder["server"]
    try:
        yield server
    finally:
        server.stop()
        thread.join(60)


def exchange(socket_path: Path, payload: bytes, *, read_timeout: float = 30.0) -> list[dict[str, Any]]:
    """Send ``payload`` as it is (a send the server cut short is fine) and return every reply line, parsed."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(read_timeout)
    sock.connect(str(socket_path))
    try:
        with contextlib.suppress(OSError):
            sock.sendall(payload)
        data = bytearray()
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    finally:
        sock.close()
    return [json.loads(line) for line in bytes(data).splitlines() if line.strip()]


def ping_line(socket_path: Path) -> dict[str, Any]:
    (reply,) = exchange(socket_path, b'{"version": 1, "op": "ping"}\n')
    return reply


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)
