"""Attacks on the gate service's socket: every malformed, oversized, slow, replayed-twice, tampered or concurrent
request gets a precise answer, and the server keeps answering afterwards. Nothing is released by a refused
request."""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
from pathlib import Path

import pytest
from service_kit import Served, exchange, minimal_workspace, ping_line, serving

from coordinator.service import client
from coordinator.service.protocol import MAX_JSON_DEPTH, MAX_POLICY_BYTES, MAX_REQUEST_BYTES
from kansrijk import crypto
from kansrijk.errors import (
    PolicyNotSigned,
    ProtocolMismatch,
    ServiceUnavailable,
    SocketInUse,
    WorkspaceError,
)
from kansrijk.gate.ledger import entries, open_existing
from kansrijk.policy.signing import sign_policy


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Served:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    return minimal_workspace(tmp_path)


@pytest.fixture
def gate(served: Served, tmp_path: Path):
    socket_path = tmp_path / "gate.sock"
    with serving(served.ws, served.release_policy, served.officer_pub, socket_path, read_timeout=1.0,
                 max_clients=4) as server:  # fmt: skip
        yield server, socket_path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _analyse(plan: dict, factors: dict | None = None) -> bytes:
    factors = factors or {"name": "f.toml", "content": _b64(b"x"), "signature": None}
    return (json.dumps({"version": 1, "op": "analyse", "plan": plan, "factors": factors}) + "\n").encode()


MALFORMED = {
    "not JSON": (b"{bad\n", "malformed_json"),
    "not UTF-8": (b'{"version": 1, "op": "\xff"}\n', "malformed_json"),
    "NaN": (b'{"version": NaN, "op": "ping"}\n', "malformed_json"),
    "duplicate keys": (b'{"version": 1, "op": "ping", "op": "analyse"}\n', "malformed_json"),
    "nesting bomb": (b"[" * 200_000 + b"\n", "malformed_json"),
    "nested past the limit": (
        b'{"version": 1, "op": "ping", "x": ' + b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1) + b"}\n",
        "malformed_json",
    ),
    "empty line": (b"\n", "malformed_json"),
    "a JSON array": (b"[1, 2]\n", "invalid_request"),
    "a JSON string": (b'"ping"\n', "invalid_request"),
    "no version": (b'{"op": "ping"}\n', "invalid_request"),
    "version as text": (b'{"version": "1", "op": "ping"}\n', "version_mismatch"),
    "version true": (b'{"version": true, "op": "ping"}\n', "version_mismatch"),
    "future version": (b'{"version": 2, "op": "ping"}\n', "version_mismatch"),
    "no op": (b'{"version": 1}\n', "invalid_request"),
    "unknown op": (b'{"version": 1, "op": "drop_table"}\n', "unknown_op"),
    "query without a spec": (b'{"version": 1, "op": "query"}\n', "invalid_request"),
    "query with an unknown field": (b'{"version": 1, "op": "query", "spec": {}, "rows": [[1]]}\n', "invalid_request"),
    "op as a number": (b'{"version": 1, "op": 7}\n', "invalid_request"),
    "unknown field": (b'{"version": 1, "op": "status", "workspace": "/etc"}\n', "invalid_request"),
    "two requests in one connection": (b'{"version": 1, "op": "ping"}\n{"version": 1, "op": "ping"}\n',
                                       "invalid_request"),
    "plan path traversal": (_analyse({"name": "../../etc/passwd", "content": _b64(b"x")}), "invalid_request"),
    "plan name with a slash": (_analyse({"name": "a/b.toml", "content": _b64(b"x")}), "invalid_request"),
    "plan name hidden": (_analyse({"name": ".plan.toml", "content": _b64(b"x")}), "invalid_request"),
    "content not base64": (_analyse({"name": "p.toml", "content": "!!not base64!!"}), "invalid_request"),
    "content over the file limit": (
        _analyse({"name": "p.toml", "content": _b64(b"x" * (MAX_POLICY_BYTES + 1))}), "invalid_request"
    ),
    "plan as a list": (_analyse([1, 2]), "invalid_request"),  # type: ignore[arg-type]
    "extra field in plan": (_analyse({"name": "p.toml", "content": _b64(b"x"), "path": "/etc/shadow"}),
                            "invalid_request"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(MALFORMED), ids=list(MALFORMED))
def test_malformed_requests_get_a_precise_error_and_the_server_keeps_answering(gate, case: str, tally) -> None:
    _, socket_path = gate
    payload, code = MALFORMED[case]
    replies = exchange(socket_path, payload)
    assert len(replies) == 1, replies
    reply = replies[0]
    held = reply["type"] == "error" and reply["code"] == code and reply["message"]
    assert held, reply
    assert reply["exit_code"] == (ProtocolMismatch.exit_code if code == "version_mismatch" else 43)
    assert ping_line(socket_path)["type"] == "result"  # alive and well
    tally.attack(f"malformed request: {case}", bool(held))


def test_a_huge_request_is_cut_off_at_the_limit(gate, tally) -> None:
    _, socket_path = gate
    for size in (MAX_REQUEST_BYTES, 8 * MAX_REQUEST_BYTES):  # one byte over with its newline; far over
        (reply,) = exchange(socket_path, b"x" * size + b"\n")
        assert reply["code"] == "too_large" and str(MAX_REQUEST_BYTES) in reply["message"]
    # a request of exactly the limit (newline included) is read and judged on its content
    body = b'{"version": 1, "op": "ping"}'
    (reply,) = exchange(socket_path, b" " * (MAX_REQUEST_BYTES - 1 - len(body)) + body + b"\n")
    assert reply["type"] == "result", reply
    assert ping_line(socket_path)["type"] == "result"
    tally.attack("requests of 1 MiB + 1 byte and 8 MiB", True, count=2)


def test_a_client_that_sends_nothing_is_timed_out_without_holding_up_others(gate, tally) -> None:
    _, socket_path = gate
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.settimeout(10)
    idle.connect(str(socket_path))
    started = time.monotonic()
    assert ping_line(socket_path)["type"] == "result"  # answered while the idle client waits
    reply = json.loads(idle.recv(65536).splitlines()[0])
    waited = time.monotonic() - started
    idle.close()
    assert reply["code"] == "timeout" and 0.5 < waited < 5, (reply, waited)
    tally.attack("connect and send nothing", True)


def test_a_slow_sender_cannot_stretch_the_read_timeout(gate, tally) -> None:
    _, socket_path = gate
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.settimeout(10)
    slow.connect(str(socket_path))
    started = time.monotonic()
    reply = None
    for byte in b'{"version": 1, "op": "ping"}':  # one byte every 0.2 s: 5.6 s in all, past the 1 s deadline
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.2)
    data = slow.recv(65536)
    slow.close()
    reply = json.loads(data.splitlines()[0])
    assert reply["code"] == "timeout" and time.monotonic() - started < 4
    tally.attack("send the request one byte at a time", True)


def test_more_clients_than_the_limit_are_answered_busy(gate, tally) -> None:
    _, socket_path = gate
    idle = []
    for _ in range(4):  # max_clients
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(socket_path))
        idle.append(s)
    time.sleep(0.2)
    (reply,) = exchange(socket_path, b'{"version": 1, "op": "ping"}\n')
    for s in idle:
        s.close()
    assert reply["code"] == "busy"
    time.sleep(1.5)  # the idle ones time out and free their slots
    assert ping_line(socket_path)["type"] == "result"
    tally.attack("exhaust the connection slots", True)


def _tampered(served: Served, tmp: Path) -> dict[str, Path]:
    """Plans that must not run: altered after signing, signed by an unknown officer, unsigned."""
    out = tmp / "attempts"
    out.mkdir()
    altered = out / "altered.toml"
    altered.write_bytes(served.plan.read_bytes().replace(b"min_positives = 1000", b"min_positives = 1"))
    (out / "altered.toml.sig").write_bytes((served.plan.parent / "plan.toml.sig").read_bytes())
    stranger = out / "stranger.toml"
    stranger.write_bytes(served.plan.read_bytes())
    sk, _ = crypto.generate_signing_key()
    sign_policy(stranger, sk)
    unsigned = out / "unsigned.toml"
    unsigned.write_bytes(served.plan.read_bytes())
    forged = out / "forged.toml"
    forged.write_bytes(served.plan.read_bytes())
    sig = json.loads((served.plan.parent / "plan.toml.sig").read_text())
    sig["signature"] = base64.b64encode(bytes(64)).decode()
    (out / "forged.toml.sig").write_text(json.dumps(sig))
    return {"altered after signing": altered, "signed by an untrusted key": stranger, "unsigned": unsigned,
            "signature bytes forged": forged}  # fmt: skip


def test_a_tampered_plan_is_refused_by_the_signature_check_and_nothing_is_released(gate, served, tmp_path, tally):
    _, socket_path = gate
    for name, plan in _tampered(served, tmp_path).items():
        with pytest.raises(PolicyNotSigned) as caught:
            client.analyse(socket_path, plan, served.factors)
        assert caught.value.exit_code == PolicyNotSigned.exit_code == 4
        assert "kansrijk-analyse-" not in str(caught.value)  # the service's private temp dir is not shown
        assert plan.name in str(caught.value)
        tally.attack(f"analyse a plan {name}", True)
    assert not (served.ws / "released").exists() or not any((served.ws / "released").glob("*.json"))
    conn = open_existing(served.ws)
    try:
        assert entries(conn) == []
    finally:
        conn.close()


def test_a_refused_operation_keeps_its_error_class_and_exit_code(gate, served) -> None:
    _, socket_path = gate
    with pytest.raises(WorkspaceError) as caught:  # signed plan, but nothing was linked
        client.analyse(socket_path, served.plan, served.factors)
    assert caught.value.exit_code == 7 and "no linked dataset" in str(caught.value)
    assert client.ping(socket_path).policy_digest  # still serving


def test_concurrent_clients_are_all_answered(served, tmp_path) -> None:
    socket_path = tmp_path / "busy.sock"
    with serving(served.ws, served.release_policy, served.officer_pub, socket_path, max_clients=32):
        _concurrent_clients(served, tmp_path, socket_path)


def _concurrent_clients(served: Served, tmp_path: Path, socket_path: Path) -> None:
    results: list[object] = []
    tampered = _tampered(served, tmp_path)["altered after signing"]

    def one(i: int) -> None:
        try:
            if i % 4 == 0:
                client.analyse(socket_path, tampered, served.factors)
            results.append([client.ping, client.status, client.ledger][i % 3](socket_path))
        except PolicyNotSigned as exc:
            results.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(results) == 24  # every client got its answer: 6 refused analyses, 18 results
    assert sum(isinstance(r, PolicyNotSigned) for r in results) == 6
    assert client.status(socket_path).ledger.entries == 0  # type: ignore[union-attr]


def test_a_second_service_on_a_live_socket_refuses_to_start(gate, served) -> None:
    _, socket_path = gate
    with pytest.raises(SocketInUse), serving(served.ws, served.release_policy, served.officer_pub, socket_path):
        pass
    assert ping_line(socket_path)["type"] == "result"  # the first one still serves, its socket untouched


def test_a_stale_socket_is_replaced_and_a_file_in_the_way_is_not(served, tmp_path) -> None:
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(stale))
    s.close()  # bound, never listening: what a killed service leaves
    with pytest.raises(ServiceUnavailable):
        client.ping(stale)
    with serving(served.ws, served.release_policy, served.officer_pub, stale):
        assert client.ping(stale).workspace == str(served.ws.resolve())
    assert not stale.exists()  # removed at stop
    regular = tmp_path / "file.sock"
    regular.write_text("not a socket")
    with pytest.raises(SocketInUse), serving(served.ws, served.release_policy, served.officer_pub, regular):
        pass
    assert regular.read_text() == "not a socket"


def test_a_service_refuses_to_start_on_an_unsigned_release_policy(served, tmp_path) -> None:
    policy = tmp_path / "loose.toml"
    policy.write_bytes(served.release_policy.read_bytes().replace(b"min_dof = 10 ", b"min_dof = 11 "))
    (tmp_path / "loose.toml.sig").write_bytes(
        served.release_policy.with_name(served.release_policy.name + ".sig").read_bytes()
    )
    with pytest.raises(PolicyNotSigned), serving(served.ws, policy, served.officer_pub, tmp_path / "g.sock"):
        pass
    assert not (tmp_path / "g.sock").exists()
