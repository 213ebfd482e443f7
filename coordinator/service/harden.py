"""File ownership and modes that make the gate's process boundary hold on disk (``kansrijk gate harden``).

After ``harden_workspace`` the gate's OS user owns the whole workspace and is the only user that can read the
linked data (``dataset/``, ``tables/``), the keys (``keys/``), the ledger and the state database, and the only
one that can write ``released/``; operators read ``released/`` and the workspace's public files, and (through
their group) ``internal/``. ``boundary_problems`` is the check the service runs at start and reports in
``ping`` and ``status``.

=========================================  ==========  =============  ======================================
path                                       owner       mode           who can read
=========================================  ==========  =============  ======================================
``WS/``                                    gate        0755           everyone may traverse and list
``keys/``, ``dataset/``, ``tables/``       gate        0700 / 0600    the gate user only
``ledger.sqlite``, ``state.sqlite`` (+     gate        0600           the gate user only
``-journal``, ``-wal``, ``-shm``)
``released/``                              gate        0755 / 0644    everyone; only the gate writes
``internal/``                              gate:ops    0750 / 0640    the gate and the operator group
``workspace.toml``, ``partners.toml(.sig)``  gate      0644           everyone (public)
anything else                              gate        0700 / 0600    the gate user only (fail closed)
socket directory (``--socket-dir``)        gate:ops    2750           the operator group reaches the socket
=========================================  ==========  =============  ======================================
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from coordinator.workspace import open_workspace
from kansrijk.errors import InputError, WorkspaceError

PRIVATE_DIRS = ("keys", "dataset", "tables")
DATABASES = ("ledger.sqlite", "state.sqlite")
DATABASE_SUFFIXES = ("", "-journal", "-wal", "-shm")
PUBLIC_FILES = ("workspace.toml", "partners.toml", "partners.toml.sig")
RELEASED = "released"
INTERNAL = "internal"
SOCKET_DIR_MODE = 0o2750  # setgid: a socket made in it belongs to the operator group


@dataclass(frozen=True, slots=True)
class Rule:
    """Owner group and modes of one part of the workspace."""

    name: str
    dir_mode: int
    file_mode: int
    operator_group: bool = False  # group is the operator group (else the gate user's primary group)


PRIVATE = Rule("private (gate user only)", 0o700, 0o600)
RELEASED_RULE = Rule("released (everyone reads, gate writes)", 0o755, 0o644)
INTERNAL_RULE = Rule("internal (gate and operators read)", 0o750, 0o640, operator_group=True)
PUBLIC = Rule("public workspace files", 0o755, 0o644)


@dataclass(frozen=True, slots=True)
class HardenReport:
    workspace: Path
    gate_user: str
    operator_group: str
    counts: dict[str, int] = field(default_factory=dict)  # rule name -> paths set
    socket_dir: Path | None = None


def rule_for(relative: Path) -> Rule:
    """The rule of a path relative to the workspace root (the root itself is public)."""
    if relative == Path("."):
        return PUBLIC
    top = relative.parts[0]
    if top == RELEASED:
        return RELEASED_RULE
    if top == INTERNAL:
        return INTERNAL_RULE
    if len(relative.parts) == 1 and top in PUBLIC_FILES:
        return PUBLIC
    return PRIVATE  # keys/, dataset/, tables/, the databases and anything unknown: fail closed


def _walk(root: Path) -> Iterator[tuple[Path, os.stat_result]]:
    """Every path under ``root`` (root first, parents before children), lstat'ed, never following a link."""
    yield root, root.lstat()
    for directory, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs) + sorted(files):
            path = Path(directory) / name
            yield path, path.lstat()


def _refusal(rel: Path, st: os.stat_result) -> str | None:
    """Why ``harden`` will not touch this path: links (a symlink or hard link planted in the workspace would make
    root chown a file outside it to the gate user) and special files."""
    if stat.S_ISLNK(st.st_mode):
        return f"{rel}: a symbolic link"
    if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
        return f"{rel}: a hard link ({st.st_nlink} names)"
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
        return f"{rel}: not a regular file or directory"
    return None


def _apply(path: Path, expected: os.stat_result, uid: int, gid: int, mode: int) -> None:
    """chown and chmod through a descriptor opened without following links, after checking it is still the
    file that was inspected (no swap between the check and the change)."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if stat.S_ISDIR(expected.st_mode):
        flags |= os.O_DIRECTORY
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise WorkspaceError(f"{path}: cannot open to harden it ({exc.strerror}); it changed while hardening") from None
    try:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != (expected.st_dev, expected.st_ino) or stat.S_IFMT(st.st_mode) != stat.S_IFMT(
            expected.st_mode
        ):
            raise WorkspaceError(f"{path}: replaced while hardening; run harden again with the environment stopped")
        try:
            os.fchown(fd, uid, gid)
        except PermissionError:
            raise WorkspaceError(
                f"{path}: not allowed to change its owner", hint="run `kansrijk gate harden` as root"
            ) from None
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        raise InputError(f"--gate-user {name}: no such user", hint="create it: useradd --system " + name) from None


def _group(name: str) -> grp.struct_group:
    try:
        return grp.getgrnam(name)
    except KeyError:
        raise InputError(f"--operator-group {name}: no such group", hint="create it: groupadd " + name) from None


def harden_workspace(
    workspace: Path, *, gate_user: str, operator_group: str, socket_dir: Path | None = None
) -> HardenReport:
    """Give the workspace to ``gate_user`` and set the modes of the module's table; optionally make
    ``socket_dir`` (created when missing) the gate's socket directory for ``operator_group``.

    Refuses (``InputError``, nothing changed) a workspace holding a symbolic link, a hard link or a special
    file; ``WorkspaceError`` when not run as root (or as the gate user itself) or when a file is swapped while
    hardening. Run it with the gate service and every other writer stopped.
    """
    paths = open_workspace(Path(workspace))
    root = paths.root.resolve()
    user, group = _user(gate_user), _group(operator_group)
    refused = [r for path, st in _walk(root) if (r := _refusal(path.relative_to(root), st)) is not None]
    if refused:
        raise InputError(
            f"{root}: not hardening a workspace with links or special files: " + "; ".join(refused[:5]),
            hint="remove them (a workspace holds only regular files and directories), then run harden again",
        )
    counts: dict[str, int] = {}
    for path, st in _walk(root):  # parents first: a locked directory's entries cannot be swapped any more
        problem = _refusal(path.relative_to(root), st)
        if problem is not None:
            raise WorkspaceError(f"{root}: {problem} appeared while hardening; stop every writer and run it again")
        rule = rule_for(path.relative_to(root))
        gid = group.gr_gid if rule.operator_group else user.pw_gid
        mode = rule.dir_mode if stat.S_ISDIR(st.st_mode) else rule.file_mode
        _apply(path, st, user.pw_uid, gid, mode)
        counts[rule.name] = counts.get(rule.name, 0) + 1
    made_socket_dir = None
    if socket_dir is not None:
        made_socket_dir = Path(socket_dir).absolute()
        made_socket_dir.mkdir(mode=0o750, parents=False, exist_ok=True)
        st = made_socket_dir.lstat()
        if not stat.S_ISDIR(st.st_mode):
            raise InputError(f"--socket-dir {made_socket_dir}: not a directory")
        _apply(made_socket_dir, st, user.pw_uid, group.gr_gid, SOCKET_DIR_MODE)
    return HardenReport(root, gate_user, operator_group, counts, made_socket_dir)


def boundary_problems(workspace: Path) -> list[str]:
    """What other users could reach that only the gate should: private parts with group or other permissions,
    a ``released/`` or workspace root others can write. Empty once ``harden_workspace`` has run.

    Reads modes only (``lstat``), never contents.
    """
    root = Path(workspace)
    out: list[str] = []

    def mode(path: Path) -> int | None:
        try:
            return stat.S_IMODE(path.lstat().st_mode)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.EACCES:
                return None
            raise

    for name in PRIVATE_DIRS:
        m = mode(root / name)
        if m is not None and m & 0o077:
            out.append(f"{name}/ is mode {m:04o} (others may enter it; want 0700)")
    for db in DATABASES:
        for suffix in DATABASE_SUFFIXES:
            m = mode(root / f"{db}{suffix}")
            if m is not None and m & 0o077:
                out.append(f"{db}{suffix} is mode {m:04o} (want 0600)")
    for name in (".", RELEASED):
        m = mode(root / name)
        if m is not None and m & 0o022:
            what = "the workspace" if name == "." else f"{name}/"
            out.append(f"{what} is mode {m:04o} (others may write; want 0755)")
    return out


__all__ = ["HardenReport", "boundary_problems", "harden_workspace", "rule_for"]
