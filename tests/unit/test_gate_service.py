"""The gate service's parts on their own: the protocol's strict parsing (fuzzed), the dispatch table, the client's
error mapping, the socket checks, hardening a workspace (as the current user), and what the server logs."""

from __future__ import annotations

import base64
import grp
import json
import logging
import os
import pwd
import socket
import stat
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from service_kit import exchange, minimal_workspace, serving
from typer.testing import CliRunner

from coordinator.service import client
from coordinator.service.harden import boundary_problems, harden_workspace
from coordinator.service.ops import OPERATIONS
from coordinator.service.protocol import (
    REQUESTS,
    RESULTS,
    ErrorReply,
    ProtocolViolation,
    SubmittedPolicy,
    parse_reply,
    parse_request,
)
from coordinator.service.server import check_socket_path, parse_mode
from coordinator.workspace import init_workspace
from kansrijk.cli import app
from kansrijk.errors import (
    BudgetExceeded,
    InputError,
    KansrijkError,
    PolicyNotSigned,
    ProtocolMismatch,
    ServiceError,
    ServicePermissionDenied,
    ServiceRefused,
    ServiceUnavailable,
)


def test_every_operation_has_a_request_a_result_and_a_function() -> None:
    assert set(REQUESTS) == set(RESULTS) == set(OPERATIONS) == {"ping", "status", "ledger", "analyse", "query"}


@given(st.binary(max_size=2000))
def test_any_bytes_parse_to_a_request_or_a_protocol_violation(data: bytes) -> None:
    try:
        parse_request(data)
    except ProtocolViolation as exc:
        assert exc.code in ("malformed_json", "invalid_request", "version_mismatch", "unknown_op") and exc.message


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=30,
)


@given(st.dictionaries(st.sampled_from(["version", "op", "plan", "factors", "x"]), _json, max_size=5))
def test_any_json_object_parses_to_a_request_or_a_protocol_violation(value: dict) -> None:
    try:
        request = parse_request(json.dumps(value).encode())
    except ProtocolViolation:
        return
    assert request.op in REQUESTS and value["version"] == 1


def test_a_submitted_policy_keeps_its_exact_bytes() -> None:
    raw, sig = bytes(range(256)) * 3, b'{"signature": "..."}'
    sent = SubmittedPolicy.of("plan.toml", raw, sig)
    again = SubmittedPolicy.model_validate(json.loads(sent.model_dump_json()))
    assert again.content_bytes() == raw and again.signature_bytes() == sig
    assert SubmittedPolicy.of("plan.toml", raw, None).signature_bytes() is None


@pytest.mark.parametrize(
    ("reply", "error", "exit_code"),
    [
        (ErrorReply(code="version_mismatch", message="m", exit_code=44), ProtocolMismatch, 44),
        (ErrorReply(code="malformed_json", message="m", exit_code=43), ServiceRefused, 43),
        (ErrorReply(code="busy", message="m", exit_code=43), ServiceRefused, 43),
        (ErrorReply(code="internal", message="m", exit_code=40), ServiceError, 40),
        (ErrorReply(code="refused", message="m", error="PolicyNotSigned", exit_code=4), PolicyNotSigned, 4),
        (ErrorReply(code="refused", message="m", error="BudgetExceeded", exit_code=21), BudgetExceeded, 21),
        (ErrorReply(code="refused", message="m", error="SomethingNew", exit_code=31), KansrijkError, 31),
    ],
)
def test_error_replies_become_the_same_error_class_and_exit_code(reply, error, exit_code) -> None:
    with pytest.raises(error) as caught:
        client.raise_error(reply)
    assert caught.value.exit_code == exit_code


def test_a_reply_of_another_protocol_version_is_a_mismatch() -> None:
    with pytest.raises(ProtocolViolation):
        parse_reply(b'{"version": 2, "type": "result", "op": "ping", "result": {}}')
    with pytest.raises(ValueError):
        parse_reply(b'{"version": 1, "type": "surprise"}')


def test_socket_errors_are_precise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    missing = runner.invoke(app, ["gate", "ping", "--socket", str(tmp_path / "none.sock")])
    assert missing.exit_code == ServiceUnavailable.exit_code == 41 and "no gate service socket" in missing.output
    stale = tmp_path / "stale.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(stale))
    s.close()
    with pytest.raises(ServiceUnavailable, match="nothing listens"):
        client.ping(stale)

    def denied(self, address):  # what the kernel says to a user outside the socket's group (root never hears it)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", denied)
    result = runner.invoke(app, ["gate", "status", "--socket", str(stale)])
    assert result.exit_code == ServicePermissionDenied.exit_code == 42 and "permission denied" in result.output
    too_long = tmp_path / ("x" * 120)
    with pytest.raises(InputError):
        client.ping(too_long)
    with pytest.raises(InputError, match="longer than"):
        check_socket_path(too_long)


@pytest.mark.parametrize("mode", ["0666", "0777", "abc", "0400", "10660"])
def test_a_socket_mode_others_could_use_or_the_gate_could_not_is_refused(mode: str) -> None:
    with pytest.raises(InputError):
        parse_mode(mode)
    assert parse_mode("0660") == 0o660 and parse_mode("600") == 0o600


def _me() -> tuple[str, str]:
    return pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_harden_sets_the_modes_of_the_deployment_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    ws = tmp_path / "ws"
    init_workspace(ws, "passphrase")
    (ws / "dataset" / "2023.parquet").write_bytes(b"data")
    (ws / "tables" / "cbs").mkdir()
    (ws / "tables" / "cbs" / "2023.parquet").write_bytes(b"data")
    (ws / "ledger.sqlite").write_bytes(b"")
    (ws / "ledger.sqlite-journal").write_bytes(b"")
    (ws / "released").mkdir()
    (ws / "released" / "x.json").write_text("{}")
    (ws / "internal" / "linkage-2023.json").write_text("{}")
    (ws / "stray.txt").write_text("?")
    os.chmod(ws / "released" / "x.json", 0o666)
    assert boundary_problems(ws)  # dataset/, tables/ and state.sqlite are open after init
    user, group = _me()
    report = harden_workspace(ws, gate_user=user, operator_group=group, socket_dir=tmp_path / "run")
    expected = {
        ".": 0o755, "keys": 0o700, "keys/coordinator-hpke.key": 0o600, "dataset": 0o700,
        "dataset/2023.parquet": 0o600, "tables": 0o700, "tables/cbs": 0o700, "tables/cbs/2023.parquet": 0o600,
        "ledger.sqlite": 0o600, "ledger.sqlite-journal": 0o600, "state.sqlite": 0o600, "released": 0o755,
        "released/x.json": 0o644, "internal": 0o750, "internal/linkage-2023.json": 0o640, "workspace.toml": 0o644,
        "stray.txt": 0o600,
    }  # fmt: skip
    assert {name: _mode(ws / name) for name in expected} == expected
    assert _mode(tmp_path / "run") == 0o2750 and report.socket_dir == tmp_path / "run"
    assert boundary_problems(ws) == []
    assert sum(report.counts.values()) == sum(1 for _ in ws.rglob("*")) + 1


@pytest.mark.parametrize("planted", ["symlink", "hardlink", "fifo"])
def test_harden_refuses_links_and_special_files_and_changes_nothing(tmp_path: Path, monkeypatch, planted) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    ws = tmp_path / "ws"
    init_workspace(ws, "passphrase")
    outside = tmp_path / "outside-secret"
    outside.write_text("not the workspace's")
    target = ws / "dataset" / "2023.parquet"
    if planted == "symlink":  # root's chown would follow it to a file outside the workspace
        target.symlink_to(outside)
    elif planted == "hardlink":
        os.link(outside, target)
    else:
        os.mkfifo(target)
    before = {p: (_mode(p), p.lstat().st_uid) for p in [ws, *ws.rglob("*"), outside]}
    user, group = _me()
    with pytest.raises(InputError, match="links or special files"):
        harden_workspace(ws, gate_user=user, operator_group=group)
    assert {p: (_mode(p), p.lstat().st_uid) for p in before} == before


def test_harden_refuses_an_unknown_user_or_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    init_workspace(tmp_path / "ws", "passphrase")
    result = CliRunner().invoke(app, ["gate", "harden", str(tmp_path / "ws"), "--gate-user", "no-such-user-xyz",
                                      "--operator-group", "root"])  # fmt: skip
    assert result.exit_code == InputError.exit_code and "no such user" in result.output


def test_every_request_is_logged_with_the_peer_and_never_with_its_content(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    served = minimal_workspace(tmp_path)
    sock = tmp_path / "gate.sock"
    secret_marker = "PLAN-CONTENT-MUST-NOT-BE-LOGGED"
    caplog.set_level(logging.INFO, logger="kansrijk.gate.service")
    with serving(served.ws, served.release_policy, served.officer_pub, sock):
        client.status(sock)
        content = base64.b64encode(secret_marker.encode()).decode()
        plan = {"name": "p.toml", "content": content, "signature": None}
        exchange(sock, (json.dumps({"version": 1, "op": "analyse", "plan": plan, "factors": plan}) + "\n").encode())
        exchange(sock, b'{"version": 1, "op": "nope", "detail": "' + secret_marker.encode() + b'"}\n')
    text = caplog.text
    assert f"uid={os.getuid()} gid={os.getgid()} pid={os.getpid()} op=status outcome=ok" in text
    assert "op=analyse outcome=refused (PolicyNotSigned)" in text and "outcome=unknown_op" in text
    assert secret_marker not in text and content not in text


def test_serve_refuses_bad_options_before_it_listens(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["gate", "serve", str(tmp_path), "--release-policy", "x.toml", "--officer-key",
                                      "o.pub", "--socket", str(tmp_path / "s"), "--socket-mode", "0666"])  # fmt: skip
    assert result.exit_code == InputError.exit_code and "others must not connect" in result.output
    assert not (tmp_path / "s").exists()
