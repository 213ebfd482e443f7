"""The study: which partners, variables, outcomes and geography this run is about, loaded from its file.

The code is generic; a study file (``policies/studies/<study>/study.toml``, see ``kansrijk.study.model``) makes
it about one municipality and its partners. One study is *active* per process:

1. the one activated explicitly (``use_study`` / ``activate``: the CLI's ``--study``, the demo's ``--study``);
2. else the file named by ``$KANSRIJK_STUDY`` (so a gate service started by the CLI reads the same study);
3. else the shipped default study.

``kansrijk.schema`` and ``kansrijk.outcomes`` read the active study on every lookup, so a process can run two
studies one after the other (the tests do).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

from kansrijk.errors import InputError, PolicyError
from kansrijk.policy.common import parse_policy, policy_digest, read_policy_bytes
from kansrijk.study.model import IDENTITY, STUDY_KIND, Kind, Outcome, StudyFile, Variable

STUDY_ENV = "KANSRIJK_STUDY"
STUDY_FILE = "study.toml"
# The study a plain install runs when none is named: the one the toolkit was first built for.
DEFAULT_STUDY = "rotterdam-groeit"


@dataclass(frozen=True)
class Study:
    """A loaded study file: its model, where it came from and its digest (the schema version)."""

    path: Path
    digest: str
    file: StudyFile

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def schema_version(self) -> str:
        """The study's digest: every bundle manifest carries it, the registry lists the versions it allows."""
        return self.digest

    @cached_property
    def partners(self) -> tuple[str, ...]:
        return tuple(self.file.partners)

    @property
    def variables(self) -> dict[str, Variable]:
        return self.file.variables

    @property
    def outcomes(self) -> dict[str, Outcome]:
        return self.file.outcomes

    @property
    def shared_attributes(self) -> tuple[str, ...]:
        return self.file.shared_attributes

    @property
    def factor_model_path(self) -> Path:
        return (self.path.parent / self.file.factor_model).resolve()

    @property
    def directory(self) -> Path:
        return self.path.parent

    def holder_of(self, variable: str) -> str:
        """The first partner that holds ``variable`` (the outcome's source partner)."""
        return self.file.variables[variable].holders[0]

    def variables_of(self, partner: str) -> tuple[str, ...]:
        return tuple(n for n, v in self.file.variables.items() if partner in v.holders and n != "pseudonym")

    def describe(self, partner: str) -> str:
        p = self.file.partners.get(partner)
        return p.description if p is not None else ""


def shipped_policies() -> Path:
    """The example policy files: ``policies/`` of the source tree, or ``kansrijk/_policies`` in a wheel."""
    here = Path(__file__).resolve()
    for candidate in (here.parents[3] / "policies", here.parents[1] / "_policies"):
        if (candidate / "studies").is_dir():
            return candidate
    raise InputError(
        "the example policy files were not found (policies/ in the source tree, kansrijk/_policies in a wheel)",
        hint="reinstall kansrijk (pip install -e .) or run from a checkout",
    )


def default_study_path() -> Path:
    return shipped_policies() / "studies" / DEFAULT_STUDY / STUDY_FILE


def study_path(path: Path) -> Path:
    """A study file path, or a directory holding ``study.toml``."""
    path = Path(path)
    return path / STUDY_FILE if path.is_dir() else path


def parse_study(path: Path, raw: bytes) -> Study:
    """Parse a study file's bytes (already read or verified). ``PolicyError`` names file, key path and rule."""
    model = parse_policy(path, StudyFile, raw)
    study = Study(path=Path(path).resolve(), digest=policy_digest(raw), file=model)
    if not study.factor_model_path.is_file():
        raise PolicyError(f"{path}: factor_model: {study.factor_model_path} not found (paths are relative to the file)")
    return study


def load_study(path: Path) -> Study:
    """Read and parse a study file (unsigned check). ``PolicyError`` for a missing or malformed file."""
    path = study_path(path)
    if not path.is_file():
        raise PolicyError(f"{path}: study file not found", hint="name a study.toml, or the directory that holds one")
    return parse_study(path, read_policy_bytes(path))


def load_signed_study(path: Path, officer_keys: Sequence[object]) -> Study:
    """Verify the officer's signature over the study file, then parse it (``PolicyNotSigned`` if it fails)."""
    from kansrijk.policy.signing import verify_policy

    path = study_path(path)
    raw, _, _ = verify_policy(path, officer_keys)  # type: ignore[arg-type]
    return parse_study(path, raw)


@lru_cache(maxsize=8)
def _cached(path: str, mtime_ns: int) -> Study:
    return load_study(Path(path))


def _from_path(path: Path) -> Study:
    path = study_path(path)
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        raise PolicyError(f"{path}: study file not found", hint=f"check --study or ${STUDY_ENV}") from None
    return _cached(str(path.resolve()), mtime)


_lock = threading.Lock()
_active: Study | None = None


def active_study() -> Study:
    """The active study (see the module docstring for the order)."""
    if _active is not None:
        return _active
    env = os.environ.get(STUDY_ENV)
    return _from_path(Path(env)) if env else _from_path(default_study_path())


def activate(study: Study | Path | None) -> Study | None:
    """Make ``study`` (or the study file at a path) active for this process; None goes back to the default
    order. Returns the previously activated study."""
    global _active
    loaded = _from_path(study) if isinstance(study, Path | str) else study
    with _lock:
        previous, _active = _active, loaded
    return previous


@contextmanager
def use_study(study: Study | Path) -> Iterator[Study]:
    """Activate ``study`` for the ``with`` block (and its ``$KANSRIJK_STUDY``, for processes it starts)."""
    previous = activate(study)
    current = active_study()
    env = os.environ.get(STUDY_ENV)
    os.environ[STUDY_ENV] = str(current.path)
    try:
        yield current
    finally:
        activate(previous)
        if env is None:
            os.environ.pop(STUDY_ENV, None)
        else:
            os.environ[STUDY_ENV] = env


__all__ = [
    "DEFAULT_STUDY",
    "IDENTITY",
    "STUDY_ENV",
    "STUDY_KIND",
    "Kind",
    "Study",
    "activate",
    "active_study",
    "default_study_path",
    "load_signed_study",
    "load_study",
    "shipped_policies",
    "use_study",
]
