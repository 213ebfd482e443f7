"""The node's saved configuration: the files a partner names on every run of ``prepare``, written once.

``kansrijk node init`` checks the files (the sharing policy validates, the signing key file is the policy's
partner's, the coordinator key is an encryption public key, the link key file is a link key) and writes a small
TOML file, by default ``$XDG_CONFIG_HOME/kansrijk/node.toml`` (``~/.config/kansrijk/node.toml``); another place with
``--config`` or ``KANSRIJK_NODE_CONFIG``. Paths are stored absolute, so a run does the same from any directory.
A routine run is then ``kansrijk node prepare EXTRACT``.

With a configuration the node also keeps its bundle chain (``<config>.chain.json``: the digest and file of the last
bundle it sealed), so the next ``prepare`` names it as the previous bundle without ``--previous``. Without a
configuration nothing is remembered and ``--previous`` works as before.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from kansrijk import crypto
from kansrijk.errors import InputError, KeyMaterialError, OutputExists, PolicyError
from kansrijk.fsutil import atomic_write_bytes
from kansrijk.policy.common import format_validation_error
from kansrijk.policy.sharing import load_sharing_policy

CONFIG_FORMAT = "kansrijk-node-config"
CONFIG_ENV = "KANSRIJK_NODE_CONFIG"
DEFAULT_PASSPHRASE_ENV = "KANSRIJK_PASSPHRASE"  # noqa: S105 (the name of a variable)


class NodeConfig(BaseModel):
    """What ``prepare`` needs besides the extract. Unknown keys are errors."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: str = Field(CONFIG_FORMAT, pattern=f"^{CONFIG_FORMAT}$")
    version: int = Field(1, ge=1, le=1)
    partner: str
    policy: Path
    signing_key: Path
    link_key: Path
    coordinator_key: Path
    outbox: Path
    quarantine: Path | None = None
    passphrase_env: str = DEFAULT_PASSPHRASE_ENV


@dataclass(frozen=True, slots=True)
class ChainTip:
    """The last bundle this node sealed: what the next bundle names as its previous one."""

    digest: str
    bundle: str
    extract_id: str
    year: int


def default_config_path() -> Path:
    """``$KANSRIJK_NODE_CONFIG``, else ``$XDG_CONFIG_HOME/kansrijk/node.toml`` (``~/.config/kansrijk/node.toml``)."""
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "kansrijk" / "node.toml"


def chain_path(config_path: Path) -> Path:
    return Path(config_path).with_name(Path(config_path).name + ".chain.json")


def write_node_config(
    path: Path,
    *,
    policy: Path,
    signing_key: Path,
    link_key: Path,
    coordinator_key: Path,
    outbox: Path,
    quarantine: Path | None = None,
    passphrase_env: str = DEFAULT_PASSPHRASE_ENV,
    force: bool = False,
) -> NodeConfig:
    """Check the files and write the configuration to ``path`` (atomically; ``OutputExists`` unless ``force``).

    Refuses (before writing) a policy that does not validate, a signing key file of another partner or without a
    partner, a coordinator key that is not an encryption public key, a link key file of another kind, and an
    outbox or quarantine path that is a file."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExists(f"{path} exists already", hint="pass --force to replace the node configuration")
    sharing, _ = load_sharing_policy(Path(policy))
    owner = signing_key_owner(Path(signing_key))
    if owner != sharing.partner:
        raise KeyMaterialError(
            f"{signing_key}: this is partner {owner!r}'s signing key, but {policy} is the sharing policy of "
            f"{sharing.partner!r}",
            hint=f"name {sharing.partner}'s own signing key (keys/{sharing.partner}-signing.key)",
        )
    crypto.read_public_key(Path(coordinator_key), "x25519-hpke")
    _check_kind(Path(link_key), "link-key")
    for where, option in ((outbox, "--outbox"), (quarantine, "--quarantine-out")):
        if where is not None and Path(where).exists() and not Path(where).is_dir():
            raise InputError(f"{where}: {option} must be a directory, and this is a file")
    config = NodeConfig(
        partner=sharing.partner,
        policy=Path(policy).resolve(),
        signing_key=Path(signing_key).resolve(),
        link_key=Path(link_key).resolve(),
        coordinator_key=Path(coordinator_key).resolve(),
        outbox=Path(outbox).resolve(),
        quarantine=Path(quarantine).resolve() if quarantine is not None else None,
        passphrase_env=passphrase_env,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, render_node_config(config).encode("utf-8"), mode=0o600)
    return config


def render_node_config(config: NodeConfig) -> str:
    lines = [
        "# kansrijk node configuration, written by `kansrijk node init` (check it, or run init again with --force).",
        "# A routine run is `kansrijk node prepare EXTRACT`; an option given on the command line wins over this file.",
        f'format = "{CONFIG_FORMAT}"',
        "version = 1",
        f"partner = {json.dumps(config.partner)}",
        f"policy = {json.dumps(str(config.policy))}",
        f"signing_key = {json.dumps(str(config.signing_key))}",
        f"link_key = {json.dumps(str(config.link_key))}",
        f"coordinator_key = {json.dumps(str(config.coordinator_key))}",
        f"outbox = {json.dumps(str(config.outbox))}",
    ]
    if config.quarantine is not None:
        lines.append(f"quarantine = {json.dumps(str(config.quarantine))}")
    lines.append(f"passphrase_env = {json.dumps(config.passphrase_env)}")
    return "\n".join(lines) + "\n"


def load_node_config(path: Path) -> NodeConfig:
    """The configuration at ``path``; ``InputError`` when it is missing, ``PolicyError`` when it is malformed."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(
            f"{path}: no node configuration here",
            hint="run `kansrijk node init` once (see docs/partner-operator.md), or name every file on the command "
            "line: --policy, --out, --signing-key, --link-key, --coordinator-key",
        ) from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise PolicyError(f"{path}: not a readable node configuration ({exc})") from None
    try:
        return NodeConfig.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(format_validation_error(path, exc)) from None


def signing_key_owner(path: Path) -> str:
    """The partner a signing key file says it belongs to, from its header (authenticated only on decryption,
    which ``prepare`` does: this is the early check ``init`` can make without the passphrase)."""
    document = _key_document(path)
    label = str(document.get("label", ""))
    if document.get("kind") != "ed25519-signing" or " epoch " not in label:
        raise KeyMaterialError(
            f"{path}: not a partner signing key made by `kansrijk node keygen` (label {label!r})",
            hint="name the secret key file keygen wrote: keys/<partner>-signing.key",
        )
    return label.split(" epoch ", 1)[0]


def _check_kind(path: Path, kind: str) -> None:
    found = _key_document(path).get("kind")
    if found != kind:
        raise KeyMaterialError(f"{path}: holds a {found} key, expected a {kind} key")


def _key_document(path: Path) -> dict[str, object]:
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise KeyMaterialError(f"{path}: key file not found") from None
    except (OSError, ValueError):
        raise KeyMaterialError(f"{path}: not a kansrijk key file") from None
    if not isinstance(document, dict) or document.get("format") != "kansrijk-secret-key":
        raise KeyMaterialError(f"{path}: not a kansrijk secret key file")
    return document


def read_chain(config_path: Path) -> ChainTip | None:
    path = chain_path(config_path)
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return ChainTip(str(data["digest"]), str(data["bundle"]), str(data["extract_id"]), int(data["year"]))
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(
            f"{path}: the node's record of its last bundle is damaged",
            hint="pass --previous with the last bundle you delivered (it is rewritten after the next run)",
        ) from None


def write_chain(config_path: Path, tip: ChainTip) -> None:
    doc = {"digest": tip.digest, "bundle": tip.bundle, "extract_id": tip.extract_id, "year": tip.year}
    atomic_write_bytes(chain_path(config_path), (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)


__all__ = [
    "CONFIG_ENV",
    "ChainTip",
    "NodeConfig",
    "chain_path",
    "default_config_path",
    "load_node_config",
    "read_chain",
    "render_node_config",
    "signing_key_owner",
    "write_chain",
    "write_node_config",
]
