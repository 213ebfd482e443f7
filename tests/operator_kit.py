"""A partner machine and a coordinator workspace made through the CLI only, as the operators' guides tell a new
operator to make them (docs/partner-operator.md, docs/coordinator-operator.md). Real key files (scrypt at the
test cost), real bundles, a real workspace; no mocks.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from typer.testing import CliRunner, Result

from kansrijk.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARING = REPO / "policies" / "sharing"
PASS = "operator test passphrase"


def run(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
    """``kansrijk ARGS`` as a shell would run it: exit code, stdout and stderr apart."""
    return CliRunner().invoke(app, list(args), input=input, env=env, catch_exceptions=False)


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (to show that a refusal changed nothing)."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def digest_of(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Partner:
    """A partner machine: its signing keys, the link key and the coordinator's public key."""

    name: str
    dir: Path
    signing: Path
    public: Path
    link: Path
    coordinator: Path
    policy: Path

    @property
    def outbox(self) -> Path:
        return self.dir / "outbox"

    def prepare_args(self, extract: Path, *extra: str) -> list[str]:
        return [
            "node", "prepare",
            "--policy", str(self.policy),
            "--input", str(extract),
            "--out", str(self.outbox),
            "--signing-key", str(self.signing),
            "--link-key", str(self.link),
            "--coordinator-key", str(self.coordinator),
            *extra,
        ]  # fmt: skip


def make_workspace(root: Path) -> Path:
    """``kansrijk coordinator init`` with no registry yet."""
    ws = root / "ws"
    result = run("coordinator", "init", str(ws))
    assert result.exit_code == 0, result.output
    return ws


def make_partner(root: Path, name: str, coordinator_pub: Path, *, epoch: int = 1) -> Partner:
    """``kansrijk node keygen`` and ``kansrijk node linkkey new`` in ``root/<name>``."""
    home = root / name
    keys = home / "keys"
    result = run("node", "keygen", "--partner", name, "--out", str(keys), "--epoch", str(epoch))
    assert result.exit_code == 0, result.output
    link = root / "link.key"
    if not link.exists():
        assert run("node", "linkkey", "new", "--out", str(link)).exit_code == 0
    return Partner(
        name=name,
        dir=home,
        signing=keys / f"{name}-signing.key",
        public=keys / f"{name}-signing.pub",
        link=link,
        coordinator=coordinator_pub,
        policy=SHARING / f"{name}.toml",
    )


def register(ws: Path, *partners: Partner) -> None:
    """The privacy officer's registry with each partner's key and sharing-policy digest, installed in ``ws``."""
    registry = ws.parent / "partners.toml"
    for p in partners:
        result = run(
            "coordinator", "register-partner", str(registry), "--partner", p.name, "--public-key", str(p.public),
            "--policy-digest", digest_of(p.policy),
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    result = run("coordinator", "set-registry", str(ws), str(registry))
    assert result.exit_code == 0, result.output


def operator_env() -> dict[str, str]:
    """The environment every operator test runs in: a passphrase and the test cost of scrypt."""
    return {"KANSRIJK_PASSPHRASE": PASS, "KANSRIJK_SCRYPT_LOG2N": "14"}


def no_terminal_env() -> dict[str, str]:
    """As a cron job runs: no passphrase in the environment (and no terminal on stdin)."""
    env = {k: v for k, v in os.environ.items() if k not in ("KANSRIJK_PASSPHRASE", "KANSRIJK_LINK_PASSPHRASE")}
    return env
