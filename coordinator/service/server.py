"""The gate service: a long-lived server on an AF_UNIX stream socket (``kansrijk gate serve``).

It runs under the gate's own OS user (docs/deployment.md), holds the workspace's linked data, keys and ledger,
and answers one request per connection (``coordinator/service/protocol.py``) with the operations of
``coordinator/service/ops.py``. Each connection is served on its own thread; analyses run one at a time and the
gate serialises every release in SQLite anyway.

What it guarantees:

- a request is read within ``read_timeout`` seconds and at most ``MAX_REQUEST_BYTES`` long, or refused with a
  precise error; malformed JSON, an unknown op or a wrong protocol version get an error reply, never a crash;
- at most ``max_clients`` connections at once (more are answered ``busy`` and closed);
- every request is logged with the peer's uid, gid and pid (``SO_PEERCRED``), its op, outcome and duration, and
  never with its content or its result;
- at start: the workspace opens, the release policy's signature verifies (the service keeps a private copy of
  the bytes it verified), the socket path is free (a live socket is refused, a stale one replaced) and short
  enough; the process umask becomes 022 so ``released/`` files are world-readable while every private file is
  protected by its own mode (the ledger is created 0600 before the gate opens it) and by the private
  directories ``kansrijk gate harden`` sets;
- SIGTERM or SIGINT stops it gracefully: no new connections (the socket file is removed), an analysis in
  progress stops between two releases and says so to its client, and the process waits for that (up to
  ``STOP_GRACE_S`` seconds) before it exits.
"""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import shutil
import signal
import socket
import socketserver
import stat
import struct
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coordinator.service.harden import boundary_problems
from coordinator.service.ops import OPERATIONS, ClientGone, GateService, ServiceStopping
from coordinator.service.protocol import (
    MAX_REQUEST_BYTES,
    ErrorReply,
    ProgressReply,
    ProtocolViolation,
    ResultReply,
    encode,
    parse_request,
)
from coordinator.workspace import open_workspace
from kansrijk.errors import (
    InputError,
    KansrijkError,
    PolicyError,
    ProtocolMismatch,
    ServiceError,
    ServiceRefused,
    SocketInUse,
)
from kansrijk.gate import ledger as ledger_mod
from kansrijk.gate.ledger import LEDGER_FILE
from kansrijk.policy.release import ReleasePolicy
from kansrijk.policy.signing import load_signed_policy, officer_keys, signature_path

log = logging.getLogger("kansrijk.gate.service")

SERVE_UMASK = 0o022  # released/ files 0644; private files have explicit modes and private directories
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with its NUL
WRITE_TIMEOUT_S = 60.0  # a client that stops reading for this long is dropped
STOP_GRACE_S = 30.0  # how long a stop waits for connections still being answered


@dataclass(frozen=True, slots=True)
class ServeOptions:
    """What ``kansrijk gate serve`` was given (validated by ``open_service`` and ``bind_socket``)."""

    workspace: Path
    release_policy: Path
    officer_keys: tuple[Path, ...]
    socket_path: Path
    socket_mode: int = 0o660
    socket_group: str | None = None
    read_timeout: float = 10.0
    max_clients: int = 8


@dataclass(frozen=True, slots=True)
class Peer:
    pid: int
    uid: int
    gid: int

    def __str__(self) -> str:
        return f"uid={self.uid} gid={self.gid} pid={self.pid}"


def peer_of(sock: socket.socket) -> Peer:
    """The connecting process's credentials, from the kernel (``SO_PEERCRED``): not something it claims."""
    fmt = "3i"
    pid, uid, gid = struct.unpack(fmt, sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(fmt)))
    return Peer(pid, uid, gid)


# --- starting ---------------------------------------------------------------------------------------------
def open_service(workspace: Path, release_policy: Path, keys: Sequence[Path], *, private_dir: Path) -> GateService:
    """Verify what the service will run on, before it listens: the workspace, the officer keys and the release
    policy's signature. The policy's verified bytes (and signature) are copied into ``private_dir`` and every
    analysis runs on that copy."""
    paths = open_workspace(Path(workspace))
    if not keys:
        raise InputError("no --officer-key given: the gate trusts the privacy officers named at serve only")
    trusted = tuple(officer_keys(list(keys)))
    policy, digest = load_signed_policy(Path(release_policy), trusted)
    if not isinstance(policy, ReleasePolicy):
        raise PolicyError(f'{release_policy}: kind: the gate needs a release policy (kind = "release")')
    snapshot = Path(private_dir) / Path(release_policy).name
    shutil.copyfile(release_policy, snapshot)
    shutil.copyfile(signature_path(Path(release_policy)), signature_path(snapshot))
    _, copied = load_signed_policy(snapshot, trusted)
    if copied != digest:  # the file changed between the check and the copy
        raise PolicyError(f"{release_policy}: changed while the gate service started; start it again")
    return GateService(
        workspace=paths.root.resolve(),
        release_policy=snapshot,
        policy=policy,
        policy_digest=digest,
        officer_keys=trusted,
    )


def private_ledger(workspace: Path) -> None:
    """Create the ledger 0600 before the gate opens it (SQLite gives its journal the database's mode), or make an
    existing one 0600: with the serve umask of 022 SQLite would otherwise create it readable by everyone. A new
    ledger is initialised (empty, genesis head) so ``status`` and ``ledger`` answer before the first release."""
    path = Path(workspace) / LEDGER_FILE
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
    except FileExistsError:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{path}: not a regular file") from None
        if stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, 0o600)
            log.warning("%s was mode %04o; made it 0600", path, stat.S_IMODE(st.st_mode))
        return
    conn = ledger_mod.connect(path)
    try:
        ledger_mod.initialise(conn)
    finally:
        conn.close()


def check_socket_path(path: Path) -> None:
    """Refuse a path that is too long for AF_UNIX, or taken: by a live service (``SocketInUse``) or by
    something that is not a socket. A stale socket (nothing listens) is removed."""
    path = Path(path)
    if len(os.fsencode(path)) > SOCKET_PATH_MAX:
        raise InputError(
            f"--socket {path}: longer than {SOCKET_PATH_MAX} bytes, the limit of a local socket's path",
            hint="choose a shorter path, e.g. /run/kansrijk-gate/gate.sock",
        )
    if not path.parent.is_dir():
        raise InputError(f"--socket {path}: directory {path.parent} does not exist", hint="create it first")
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise SocketInUse(f"--socket {path}: exists and is not a socket; not removing it", hint="choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(os.fsencode(path))
    except ConnectionRefusedError:  # stale: its server died without removing it
        path.unlink(missing_ok=True)
        log.info("removed the stale socket %s", path)
        return
    except OSError as exc:
        raise SocketInUse(f"--socket {path}: exists and cannot be probed ({exc.strerror}); not removing it") from None
    finally:
        probe.close()
    raise SocketInUse(
        f"--socket {path}: a gate service is listening there already",
        hint="stop it first (systemctl stop kansrijk-gate), or choose another --socket",
    )


def bind_socket(path: Path, *, mode: int, group: str | None) -> socket.socket:
    """A listening socket at ``path`` with ``mode`` and ``group``. It is created 0600 (under a strict umask) and
    only then opened up, so nobody connects before the permissions are final."""
    gid = -1
    if group is not None:
        try:
            gid = grp.getgrnam(group).gr_gid
        except KeyError:
            raise InputError(f"--socket-group {group}: no such group") from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)
    try:
        sock.bind(os.fsencode(path))
    except OSError as exc:
        sock.close()
        raise InputError(f"--socket {path}: cannot create the socket ({exc.strerror})") from None
    finally:
        os.umask(old)
    try:
        if gid != -1:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
    except PermissionError:
        sock.close()
        Path(path).unlink(missing_ok=True)
        raise InputError(
            f"--socket {path}: cannot give it group {group} and mode {mode:04o}",
            hint="the gate user must be a member of --socket-group",
        ) from None
    sock.listen(64)
    return sock


# --- serving ----------------------------------------------------------------------------------------------
class GateServer(socketserver.UnixStreamServer):
    """One thread per connection, at most ``max_clients`` of them. Built around a socket ``bind_socket`` made."""

    allow_reuse_address = False

    def __init__(self, sock: socket.socket, service: GateService, *, read_timeout: float, max_clients: int) -> None:
        super().__init__(sock.getsockname(), _Handler, bind_and_activate=False)
        self.socket.close()
        self.socket = sock
        self.service = service
        self.read_timeout = read_timeout
        self._slots = threading.BoundedSemaphore(max_clients)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            _refuse_busy(request)
            self.shutdown_request(request)
            return
        thread = threading.Thread(target=self._serve_one, args=(request, client_address), daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _serve_one(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # the handler answers everything itself; this is the last line of defence
            log.error("connection handler failed:\n%s", "".join(traceback.format_tb(sys.exc_info()[2])))
        finally:
            self.shutdown_request(request)
            self._slots.release()
            with self._lock:
                self._threads.discard(threading.current_thread())

    def handle_error(self, request: Any, client_address: Any) -> None:  # never print a request to stderr
        log.error("error while accepting a connection")

    def stop(self) -> None:
        """Stop accepting and tell running operations to stop (an analysis stops at its next step). Returns once
        ``serve_forever`` has returned; ``serve_gate`` then closes the socket and waits for the connections."""
        self.service.stopping.set()
        self.shutdown()

    def drain(self, grace: float = STOP_GRACE_S) -> None:
        """Wait up to ``grace`` seconds for the connections still being answered."""
        deadline = time.monotonic() + grace
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))


def _refuse_busy(sock: socket.socket) -> None:
    reply = ErrorReply(code="busy", message="the gate service is answering its maximum number of clients; try again",
                       exit_code=ServiceRefused.exit_code)  # fmt: skip
    with contextlib.suppress(OSError):
        sock.settimeout(1.0)
        sock.sendall(encode(reply))
    log.warning("refused a connection: busy")


def read_request(sock: socket.socket, *, limit: int, timeout: float) -> bytes:
    """The request line (without its newline), read within ``timeout`` seconds in all: a client that sends one
    byte at a time cannot hold the connection longer. EOF ends the line too."""
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProtocolViolation("timeout", f"no complete request within {timeout:g} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(65536, limit - len(buf)))
        except TimeoutError:
            raise ProtocolViolation("timeout", f"no complete request within {timeout:g} s") from None
        if not chunk:
            if not buf:
                raise ProtocolViolation("invalid_request", "the connection closed before a request was sent")
            return bytes(buf)
        buf += chunk
        end = buf.find(b"\n")
        if end >= 0 and end < limit:
            if end + 1 < len(buf):
                raise ProtocolViolation("invalid_request", "one request per connection: data after the first line")
            return bytes(buf[:end])
        if len(buf) >= limit:  # no newline within the limit: reading stops here, whatever follows
            raise ProtocolViolation("too_large", f"the request exceeds {limit} bytes (newline included)")


class _Handler(socketserver.BaseRequestHandler):
    server: GateServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        peer = peer_of(sock)
        started = time.monotonic()
        op, outcome = "-", "ok"

        def send(reply: ProgressReply | ResultReply | ErrorReply) -> None:
            try:
                sock.sendall(encode(reply))
            except OSError:
                raise ClientGone() from None

        try:
            line = read_request(sock, limit=MAX_REQUEST_BYTES, timeout=self.server.read_timeout)
            request = parse_request(line)
            op = request.op
            log.info("peer %s op=%s started", peer, op)
            sock.settimeout(WRITE_TIMEOUT_S)
            result = OPERATIONS[op](self.server.service, request, send)
            send(ResultReply(op=op, result=result.model_dump(mode="json")))
        except ProtocolViolation as v:
            outcome = v.code
            exit_code = ProtocolMismatch.exit_code if v.code == "version_mismatch" else ServiceRefused.exit_code
            self._try_send(send, ErrorReply(code=v.code, message=v.message, exit_code=exit_code))
        except ClientGone:
            outcome = "client gone"
        except ServiceStopping as exc:
            outcome = "stopping"
            self._try_send(send, ErrorReply(code="stopping", message=exc.message, hint=exc.hint,
                                            exit_code=ServiceError.exit_code))  # fmt: skip
        except KansrijkError as exc:
            outcome = f"refused ({type(exc).__name__})"
            self._try_send(send, ErrorReply(code="refused", message=exc.message, hint=exc.hint,
                                            error=type(exc).__name__, exit_code=exc.exit_code))  # fmt: skip
        except Exception as exc:
            # The frames say where; the exception's text is not logged (it could quote data).
            outcome = f"internal error ({type(exc).__name__})"
            log.error("peer %s op=%s internal error %s at:\n%s", peer, op, type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))  # fmt: skip
            self._try_send(send, ErrorReply(
                code="internal", message=f"the gate service failed inside op {op} ({type(exc).__name__})",
                hint="the gate's log says where; report it", exit_code=ServiceError.exit_code))  # fmt: skip
        finally:
            log.info("peer %s op=%s outcome=%s seconds=%.2f", peer, op, outcome, time.monotonic() - started)

    @staticmethod
    def _try_send(send: Callable[[Any], None], reply: ErrorReply) -> None:
        with contextlib.suppress(ClientGone):
            send(reply)


# --- the command's loop -----------------------------------------------------------------------------------
def serve_gate(options: ServeOptions, *, ready: Callable[[GateServer], None] | None = None) -> None:
    """Verify, bind and serve until SIGTERM or SIGINT (or ``server.stop()`` from another thread); then remove
    the socket and the private policy copy. ``ready`` is called once the socket accepts connections."""
    private_dir = Path(tempfile.mkdtemp(prefix="kansrijk-gate-"))
    old_umask = os.umask(SERVE_UMASK)
    try:
        service = open_service(options.workspace, options.release_policy, options.officer_keys,
                               private_dir=private_dir)  # fmt: skip
        private_ledger(service.workspace)
        check_socket_path(options.socket_path)
        sock = bind_socket(options.socket_path, mode=options.socket_mode, group=options.socket_group)
        bound = options.socket_path.lstat()
        server = GateServer(sock, service, read_timeout=options.read_timeout, max_clients=options.max_clients)
        try:
            _serve(server, options, service, ready)
        finally:
            server.server_close()  # no new connections from here
            _remove_own_socket(options.socket_path, bound)
            server.drain()  # an analysis in progress stops at its next step and answers its client
    finally:
        os.umask(old_umask)
        shutil.rmtree(private_dir, ignore_errors=True)


def _serve(
    server: GateServer, options: ServeOptions, service: GateService, ready: Callable[[GateServer], None] | None
) -> None:
    stopping = threading.Event()

    def stop(signum: int, _frame: Any) -> None:
        if stopping.is_set():
            return
        stopping.set()
        log.info("signal %s: stopping", signal.Signals(signum).name)
        threading.Thread(target=server.stop, daemon=True).start()  # shutdown() waits for the loop: not from here

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, stop)
    try:
        log.info(
            "serving %s on %s (mode %04o%s), release policy %s, %d officer key(s), pid %d uid %d",
            service.workspace, options.socket_path, options.socket_mode,
            f", group {options.socket_group}" if options.socket_group else "", service.policy_digest,
            len(service.officer_keys), os.getpid(), os.getuid(),
        )  # fmt: skip
        for problem in boundary_problems(service.workspace):
            log.warning("not hardened: %s (run kansrijk gate harden; docs/deployment.md)", problem)
        if ready is not None:
            ready(server)
        server.serve_forever(poll_interval=0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")


def _remove_own_socket(path: Path, bound: os.stat_result) -> None:
    """Remove the socket file if it is still the one this server made (never a successor's)."""
    with contextlib.suppress(FileNotFoundError):
        st = path.lstat()
        if (st.st_dev, st.st_ino) == (bound.st_dev, bound.st_ino):
            path.unlink()


def parse_mode(text: str) -> int:
    """``"0660"`` → 0o660; ``InputError`` unless an octal mode that grants nothing to others beyond rw."""
    try:
        mode = int(text, 8)
    except ValueError:
        raise InputError(f"--socket-mode {text!r}: not an octal mode", hint="e.g. --socket-mode 0660") from None
    if mode & ~0o777 or not mode & 0o600 == 0o600:
        raise InputError(f"--socket-mode {text}: must be a permission mode the gate user can use (e.g. 0660)")
    if mode & 0o007:
        raise InputError(f"--socket-mode {text}: others must not connect; grant access through --socket-group")
    return mode


__all__ = [
    "SERVE_UMASK",
    "GateServer",
    "Peer",
    "ServeOptions",
    "bind_socket",
    "check_socket_path",
    "open_service",
    "parse_mode",
    "peer_of",
    "private_ledger",
    "read_request",
    "serve_gate",
]
