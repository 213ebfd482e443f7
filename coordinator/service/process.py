"""Start and stop a gate service as a child process (the demo and the tests; in deployment systemd does it).

``running_gate`` starts ``kansrijk gate serve`` (optionally under another OS user), waits until it answers
``ping``, yields, and stops it with SIGTERM (SIGKILL only if it does not stop in time). Its log goes to a file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from coordinator.service import client
from coordinator.service.protocol import PingResult
from kansrijk.errors import ServiceError, ServiceUnavailable

SOCKET_NAME = "gate.sock"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class GateProcess:
    process: subprocess.Popen[bytes]
    socket_path: Path
    log_path: Path
    ping: PingResult


def socket_path_in(directory: Path, name: str = SOCKET_NAME) -> Path:
    """``directory/name`` when it fits a local socket's 107 bytes, else the same name in a new private
    directory under the system's temp directory."""
    candidate = Path(directory).absolute() / name
    if len(os.fsencode(candidate)) <= 100:
        return candidate
    return Path(tempfile.mkdtemp(prefix="kansrijk-gate-")) / name


def serve_command(
    workspace: Path, release_policy: Path, officer_keys: Sequence[Path], socket_path: Path,
    *, kansrijk: Sequence[str] | None = None, socket_group: str | None = None, extra: Sequence[str] = (),
) -> list[str]:  # fmt: skip
    """The ``kansrijk gate serve`` command line (``kansrijk`` defaults to this interpreter's ``-m kansrijk``)."""
    command = [*(kansrijk or (sys.executable, "-m", "kansrijk")), "gate", "serve", str(workspace),
               "--release-policy", str(release_policy), "--socket", str(socket_path)]  # fmt: skip
    for key in officer_keys:
        command += ["--officer-key", str(key)]
    if socket_group is not None:
        command += ["--socket-group", socket_group]
    return command + list(extra)


@contextlib.contextmanager
def running_gate(
    workspace: Path,
    release_policy: Path,
    officer_keys: Sequence[Path],
    *,
    socket_path: Path,
    log_path: Path,
    kansrijk: Sequence[str] | None = None,
    user: str | None = None,
    group: str | None = None,
    socket_group: str | None = None,
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Iterator[GateProcess]:
    """A gate service child process for the duration of the block; stopped (SIGTERM) when it ends.

    With ``user``/``group`` (root only) the child runs as that user with no supplementary groups. Raises
    ``ServiceUnavailable`` (with the end of its log) when it exits or does not answer within ``ready_timeout``
    seconds, ``ServiceError`` when it does not stop cleanly.
    """
    command = serve_command(workspace, release_policy, officer_keys, socket_path, kansrijk=kansrijk,
                            socket_group=socket_group, extra=extra_args)  # fmt: skip
    ids: dict[str, object] = {}
    if user is not None:
        ids = {"user": user, "group": group, "extra_groups": []}
    with open(log_path, "ab") as log:
        process = subprocess.Popen(  # our own command line, no shell
            command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(env) if env is not None else None,
            close_fds=True, **ids,  # type: ignore[arg-type]
        )  # fmt: skip
    try:
        info = _wait_ready(process, socket_path, log_path, ready_timeout)
        yield GateProcess(process, Path(socket_path), Path(log_path), info)
    except BaseException:
        with contextlib.suppress(ServiceError):  # the first error is the one worth reporting
            stop_gate(process, log_path)
        raise
    stop_gate(process, log_path)


def _wait_ready(process: subprocess.Popen[bytes], socket_path: Path, log_path: Path, timeout: float) -> PingResult:
    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            raise ServiceUnavailable(f"the gate service exited with code {code} at start:\n{_tail(log_path)}")
        if os.path.exists(socket_path):
            with contextlib.suppress(ServiceUnavailable):
                return client.ping(socket_path)
        if time.monotonic() > deadline:
            raise ServiceUnavailable(f"the gate service did not answer within {timeout:g} s:\n{_tail(log_path)}")
        time.sleep(0.1)


def stop_gate(process: subprocess.Popen[bytes], log_path: Path, *, timeout: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM, wait, SIGKILL if needed. ``ServiceError`` when it did not exit with code 0."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise ServiceError(f"the gate service did not stop within {timeout:g} s; killed it") from None
    if process.returncode != 0:
        raise ServiceError(f"the gate service exited with code {process.returncode}:\n{_tail(log_path)}")


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


__all__ = ["GateProcess", "running_gate", "serve_command", "socket_path_in", "stop_gate"]
