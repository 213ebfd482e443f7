"""The deployment boundary, with real OS users: the gate service runs as ``kansrijk-gate`` on a hardened workspace;
the operator ``kansrijk-op`` runs the signed plan through its socket, reads ``released/`` and the status, and is
refused by the kernel when it reads the linked dataset, a key, the ledger or the state database, or writes into
``released/``. Needs root (to create the users and start processes as them); CI runs as root.

Both users run the project's ``.venv/bin/kansrijk``, so the checkout, the venv and the interpreter it was made
from must be reachable by them. Where a directory on the way grants others no search permission (a pyenv under
``/root``, mode 0700) the test adds only that bit (``o+x``: enter, not list) for its duration and restores the mode
afterwards.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from analysis_workspace import LIGHT_PLAN, PASS, Prepared, build_workspace

from coordinator.service.harden import harden_workspace
from coordinator.service.process import running_gate
from kansrijk.errors import ServicePermissionDenied

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not hasattr(os, "geteuid") or os.geteuid() != 0,
        reason="creates system users and starts processes as them: needs root (CI runs the suite as root)",
    ),
]

GATE_USER = "kansrijk-gate"
OPERATOR = "kansrijk-op"
OPERATORS = "kansrijk-operators"
KANSRIJK = Path(sys.executable).with_name("kansrijk")
ROOT = Path(__file__).resolve().parents[2]


def _tolerant(command: list[str]) -> None:
    """Run a user-management command; exit 9 (the user or group exists already, made by a parallel run) is fine."""
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode not in (0, 9):
        pytest.fail(f"{' '.join(command)}: exit {done.returncode}: {done.stderr.strip()}")


def ensure_accounts() -> None:
    """The two system users and the operators' group (idempotent; tolerant of existing ones)."""
    if shutil.which("useradd") is None or shutil.which("groupadd") is None:
        pytest.skip("useradd/groupadd not available on this system")
    nologin = shutil.which("nologin") or "/bin/false"
    common = ["--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", nologin]
    try:
        grp.getgrnam(OPERATORS)
    except KeyError:
        _tolerant(["groupadd", "--system", OPERATORS])
    for user in (GATE_USER, OPERATOR):
        try:
            pwd.getpwnam(user)
        except KeyError:
            _tolerant(["useradd", *common, "--user-group", user])
    if OPERATOR not in grp.getgrnam(OPERATORS).gr_mem:
        _tolerant(["usermod", "--append", "--groups", OPERATORS, OPERATOR])


@dataclass(frozen=True)
class Account:
    """Run a command as an OS user: its own uid and primary group, and exactly the given supplementary groups
    (never root's)."""

    user: str
    groups: tuple[str, ...] = ()

    def run(self, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), user=self.user, group=pwd.getpwnam(self.user).pw_gid,
            extra_groups=[grp.getgrnam(g).gr_gid for g in self.groups], env=env, capture_output=True, text=True,
            timeout=300, check=False, cwd="/",
        )  # fmt: skip


def _env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "LANG": "C.UTF-8",
            "KANSRIJK_SCRYPT_LOG2N": "14", "COLUMNS": "200"}  # fmt: skip


# The operator's attempts, each in its own try: prints {what: errno or 0}; never reads more than a byte.
PROBE = r"""
import json, os, sys, sqlite3
out = {}
def attempt(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as exc:
        out[name] = exc.errno
    except sqlite3.Error as exc:
        out[name] = "sqlite: " + str(exc)
targets = json.loads(sys.argv[1])
for path in targets["read"]:
    attempt("read " + path, lambda p=path: open(p, "rb").read(1))
for path in targets["list"]:
    attempt("list " + path, lambda p=path: os.listdir(p))
for path in targets["write"]:
    attempt("write " + path, lambda p=path: open(p, "xb").write(b"{}"))
for path in targets["sqlite"]:
    attempt("sqlite " + path, lambda p=path: sqlite3.connect(f"file:{p}?mode=ro", uri=True).execute(
        "SELECT count(*) FROM sqlite_master").fetchall())
for path in targets["allowed"]:
    attempt("read " + path, lambda p=path: open(p, "rb").read(1))
print(json.dumps(out))
"""


def _blocking_directories() -> list[Path]:
    """Directories on the way to the interpreter, the venv or the checkout that others cannot enter."""
    targets = [Path(os.path.realpath(sys.executable)), Path(sys.base_prefix), Path(sys.prefix), ROOT]
    blocking: list[Path] = []
    for target in targets:
        for directory in [*reversed(target.parents), target]:
            if directory.is_dir() and not directory.stat().st_mode & 0o001 and directory not in blocking:
                blocking.append(directory)
    return blocking


@contextlib.contextmanager
def reachable_by_others() -> Iterator[None]:
    """Add o+x to the blocking directories while open; restore their modes afterwards."""
    changed = {d: d.stat().st_mode & 0o7777 for d in _blocking_directories()}
    try:
        for directory, mode in changed.items():
            directory.chmod(mode | 0o001)
            print(f"note: {directory} made enterable (o+x) for the test's users; restored afterwards")
        yield
    finally:
        for directory, mode in changed.items():
            directory.chmod(mode)


@pytest.fixture(scope="module")
def deployment() -> Iterator[tuple[Path, Prepared]]:
    ensure_accounts()
    base = Path(tempfile.mkdtemp(prefix="kansrijk-boundary-"))
    base.chmod(0o755)  # both users traverse it (pytest's own tmp is private to root)
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", PASS)
    try:
        started = time.perf_counter()
        prepared = build_workspace(base / "build", persons=4_000, years=(2023,), plan_edits=LIGHT_PLAN)
        print(f"workspace built in {time.perf_counter() - started:.1f} s")
        (base / "build").chmod(0o755)
        with reachable_by_others():
            yield base, prepared
    finally:
        mp.undo()
        shutil.rmtree(base, ignore_errors=True)


# The client's error for a user outside the socket's group (the CLI maps it to its exit code); a light import.
OUTSIDER = r"""
import sys
from coordinator.service import client
from kansrijk.errors import KansrijkError
try:
    client.ping(sys.argv[1])
except KansrijkError as exc:
    print(type(exc).__name__, exc.exit_code, exc.message)
"""


def _accessible(account: Account, env: dict[str, str]) -> None:
    """The user can run the project's interpreter and import it (a quick check; the commands take seconds)."""
    try:
        probe = account.run(sys.executable, "-c", "import kansrijk, coordinator.service.client", env=env)
    except PermissionError as exc:
        pytest.fail(f"{account.user} cannot run {sys.executable}: {exc}")
    assert probe.returncode == 0, f"{account.user} cannot import kansrijk: {probe.stderr.strip()[-300:]}"


def test_the_gate_user_alone_reaches_the_data_and_the_operator_works_through_the_socket(deployment) -> None:
    base, prepared = deployment
    ws, signed, officer = prepared.ws, prepared.signed, prepared.officer
    gate, operator = Account(GATE_USER), Account(OPERATOR, (OPERATORS,))
    outsider = Account(OPERATOR)  # the same user without the operators' group
    homes = {name: base / f"home-{name}" for name in (GATE_USER, OPERATOR)}
    for name, home in homes.items():
        home.mkdir(mode=0o700)
        os.chown(home, pwd.getpwnam(name).pw_uid, pwd.getpwnam(name).pw_gid)
    # the gate alone knows the workspace's key passphrase (its signing key); the operator never does
    gate_env, op_env = {**_env(homes[GATE_USER]), "KANSRIJK_PASSPHRASE": PASS}, _env(homes[OPERATOR])
    _accessible(operator, op_env)
    _accessible(gate, gate_env)
    timings: dict[str, float] = {}

    # deployment: root hardens the workspace and makes the socket directory (the command is this function)
    t = time.perf_counter()
    run_dir = base / "run"
    harden_workspace(ws, gate_user=GATE_USER, operator_group=OPERATORS, socket_dir=run_dir)
    timings["harden"] = time.perf_counter() - t
    socket_path = run_dir / "gate.sock"

    t = time.perf_counter()
    with running_gate(
        ws, signed / "release.toml", [officer / "officer.pub"], socket_path=socket_path, log_path=base / "gate.log",
        kansrijk=[str(KANSRIJK)], user=GATE_USER, group=GATE_USER, socket_group=OPERATORS, env=gate_env,
    ) as service:  # fmt: skip
        timings["gate start"] = time.perf_counter() - t
        assert service.ping.exposed == [], service.ping.exposed  # hardened: nothing private is reachable
        st = socket_path.stat()
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (
            pwd.getpwnam(GATE_USER).pw_uid, grp.getgrnam(OPERATORS).gr_gid, 0o660
        )  # fmt: skip

        # the operator runs the signed plan through the socket
        t = time.perf_counter()
        analysed = operator.run(str(KANSRIJK), "coordinator", "analyse", "--plan", str(signed / "plan.toml"),
                                "--factors", str(signed / "factors.toml"), "--gate-socket", str(socket_path), "--json",
                                env=op_env)  # fmt: skip
        timings["analyse through the socket"] = time.perf_counter() - t
        assert analysed.returncode == 0, analysed.stdout + analysed.stderr
        summary = json.loads(analysed.stdout)
        released = [r["name"] for r in summary["releases"] if r["verdict"] != "refused"]
        assert released and summary["verdicts"].get("released", 0) > 0
        gate_uid = pwd.getpwnam(GATE_USER).pw_uid
        for name in released:  # written by the gate's user, readable by everyone, writable by the gate only
            st = (ws / "released" / f"{name}.json").stat()
            assert st.st_uid == gate_uid and st.st_mode & 0o777 == 0o644, (name, oct(st.st_mode))

        t = time.perf_counter()
        status = operator.run(str(KANSRIJK), "gate", "status", "--socket", str(socket_path), "--json", env=op_env)
        timings["status"] = time.perf_counter() - t
        assert status.returncode == 0, status.stdout + status.stderr
        doc = json.loads(status.stdout)
        assert doc["ledger"]["entries"] >= len(released) and doc["exposed"] == []
        assert [b["partner"] for b in doc["bundles"]] and doc["link_runs"][0]["persons"] > 0

        # without the operators' group the kernel refuses the connection: ServicePermissionDenied (exit 42)
        refused = outsider.run(sys.executable, "-c", OUTSIDER, str(socket_path), env=op_env)
        assert refused.stdout.startswith(f"ServicePermissionDenied {ServicePermissionDenied.exit_code} "), (
            refused.stdout + refused.stderr
        )
        assert "permission denied" in refused.stdout

        # and the kernel refuses the operator everything that is the gate's alone
        private = {
            "read": [str(ws / "dataset" / "2023.parquet"), str(ws / "ledger.sqlite"), str(ws / "state.sqlite"),
                     *(str(p) for p in sorted((ws / "keys").rglob("*")) if p.is_file()),
                     *(str(p) for p in sorted((ws / "tables").rglob("*.parquet")))],
            "list": [str(ws / "keys"), str(ws / "dataset"), str(ws / "tables")],
            "write": [str(ws / "released" / "forged.json"), str(ws / "dataset" / "forged.parquet")],
            "sqlite": [str(ws / "ledger.sqlite")],
            "allowed": [str(ws / "released" / f"{released[0]}.json"), str(ws / "released" / "LEDGER-HEAD.json")],
        }  # fmt: skip
        assert any("coordinator-hpke.key" in p for p in private["read"])
        probe = operator.run(sys.executable, "-c", PROBE, json.dumps(private), env=op_env)
        assert probe.returncode == 0, probe.stderr
        outcome = json.loads(probe.stdout)
        for what in ("read", "list", "write"):
            for path in private[what]:
                assert outcome[f"{what} {path}"] == errno.EACCES, (what, path, outcome[f"{what} {path}"])
        assert outcome[f"sqlite {ws / 'ledger.sqlite'}"] != 0
        for path in private["allowed"]:
            assert outcome[f"read {path}"] == 0, path
        assert not (ws / "released" / "forged.json").exists()
        t = time.perf_counter()

    timings["gate stop"] = time.perf_counter() - t
    assert not socket_path.exists()  # a graceful stop removes its socket
    log = (base / "gate.log").read_text()
    op_uid = pwd.getpwnam(OPERATOR).pw_uid
    assert f"uid={op_uid}" in log and "op=analyse outcome=ok" in log and "op=status outcome=ok" in log
    assert (ws / "ledger.sqlite").stat().st_mode & 0o777 == 0o600
    for journal in ("ledger.sqlite-journal", "ledger.sqlite-wal"):
        assert not (ws / journal).exists() or (ws / journal).stat().st_mode & 0o077 == 0
    print("boundary test timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
