"""The partner registry: which partners the coordinator accepts bundles from, with which signing keys, schema
versions and sharing policies.

A privacy officer owns this file (``policies/partners.toml``). It is the coordinator's only source of trust for
partner identity: a bundle is accepted only when its signing key is listed, active, for the partner the manifest
names, and the bundle's schema version and sharing-policy digest are among those listed for that partner.

Example::

    format = "kansrijk-partner-registry"
    version = 1

    [partners.registry_office]
    description = "Statistics Netherlands"
    allowed_schema_versions = ["1"]
    allowed_policy_digests = ["sha256:6f1c..."]

    [[partners.registry_office.keys]]
    public_key = "base64 of the 32-byte Ed25519 public key"
    fingerprint = "0123456789abcdef0123456789abcdef"
    epoch = 1
    status = "active"

Key rotation: add the new key with the next epoch and ``status = "active"``; mark the old one ``"revoked"``
once its last bundle is ingested. A revoked key's bundles are refused (``UnknownPartner``).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from kansrijk.crypto import KEY_BYTES, fingerprint
from kansrijk.errors import SchemaMismatch, UnknownPartner
from kansrijk.policy.common import PolicyModel, parse_policy, policy_digest, read_policy_bytes
from kansrijk.schema import PARTNERS

REGISTRY_FORMAT = "kansrijk-partner-registry"
SIGNING_KIND = "ed25519-signing"
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_FINGERPRINT = re.compile(r"^[0-9a-f]{32}$")


class PartnerKey(PolicyModel):
    """One Ed25519 signing key of a partner. The fingerprint must match the key (a typo cannot pass)."""

    public_key: str = Field(description="Base64 of the raw 32-byte Ed25519 public key.")
    fingerprint: str = Field(description="kansrijk fingerprint of the key (32 hex characters).")
    epoch: int = Field(ge=1, description="Key epoch: 1 for the first key, +1 at every rotation.")
    status: Literal["active", "revoked"] = "active"

    @field_validator("public_key")
    @classmethod
    def _public_key_is_32_bytes(cls, value: str) -> str:
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("public_key is not valid base64") from None
        if len(raw) != KEY_BYTES:
            raise ValueError(f"public_key decodes to {len(raw)} bytes, an Ed25519 public key has {KEY_BYTES}")
        return value

    @field_validator("fingerprint")
    @classmethod
    def _fingerprint_shape(cls, value: str) -> str:
        if not _FINGERPRINT.match(value):
            raise ValueError("fingerprint must be 32 lower-case hex characters (as `kansrijk node keygen` prints)")
        return value

    @model_validator(mode="after")
    def _fingerprint_matches_key(self) -> PartnerKey:
        if fingerprint(SIGNING_KIND, self.key_bytes) != self.fingerprint:
            raise ValueError("fingerprint does not match public_key; copy both from the partner's .pub file")
        return self

    @property
    def key_bytes(self) -> bytes:
        return base64.b64decode(self.public_key)


class Partner(PolicyModel):
    """What the coordinator accepts from one partner."""

    description: str = ""
    keys: list[PartnerKey] = Field(min_length=1)
    allowed_schema_versions: list[str] = Field(min_length=1)
    allowed_policy_digests: list[str] = Field(min_length=1)

    @field_validator("allowed_policy_digests")
    @classmethod
    def _digest_shape(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _DIGEST.match(value):
                raise ValueError(f"{value!r} is not a policy digest of the form sha256:<64 hex>")
        return values

    @model_validator(mode="after")
    def _unique_keys(self) -> Partner:
        fps = [k.fingerprint for k in self.keys]
        if len(set(fps)) != len(fps):
            raise ValueError("the same key is listed twice")
        epochs = [k.epoch for k in self.keys]
        if len(set(epochs)) != len(epochs):
            raise ValueError("two keys share an epoch; give each rotation the next epoch")
        return self


class PartnerRegistry(PolicyModel):
    """The whole registry file."""

    format: Literal["kansrijk-partner-registry"] = REGISTRY_FORMAT
    version: Literal[1] = 1
    partners: dict[str, Partner]

    @field_validator("partners")
    @classmethod
    def _known_partners(cls, value: dict[str, Partner]) -> dict[str, Partner]:
        unknown = sorted(set(value) - set(PARTNERS))
        if unknown:
            raise ValueError(f"unknown partner name(s) {unknown}; the schema knows {list(PARTNERS)}")
        return value

    # --- the checks ingest relies on --------------------------------------------------------------------
    def signing_key(self, partner: str, key_fingerprint: str) -> PartnerKey:
        """The active key ``key_fingerprint`` of ``partner``; raises ``UnknownPartner`` otherwise."""
        entry = self.partners.get(partner)
        if entry is None:
            raise UnknownPartner(
                f"partner {partner!r} is not in the partner registry",
                hint="ask the privacy officer to register the partner, or check the bundle's origin",
            )
        for key in entry.keys:
            if key.fingerprint == key_fingerprint:
                if key.status != "active":
                    raise UnknownPartner(
                        f"signing key {key_fingerprint} (epoch {key.epoch}) of partner {partner!r} is revoked",
                        hint="ask the partner to re-seal the extract with its current key",
                    )
                return key
        owner = next(
            (name for name, other in self.partners.items() for k in other.keys if k.fingerprint == key_fingerprint),
            None,
        )
        if owner is not None:
            raise UnknownPartner(
                f"signing key {key_fingerprint} is partner {owner!r}'s, but the bundle says it is {partner!r}'s: "
                f"it was sealed with another partner's key",
                hint=f"ask {partner} to seal the extract again with its own signing key; do not register the key",
            )
        raise UnknownPartner(
            f"signing key {key_fingerprint} is not registered for partner {partner!r}",
            hint="if the partner rotated its key, ask the privacy officer to add the new key (next epoch) to the "
            "registry after checking its fingerprint with the partner; otherwise refuse the bundle",
        )

    def check_allowed(self, partner: str, *, schema_version: str, policy_digest: str) -> None:
        """Raise ``SchemaMismatch`` unless the schema version and sharing-policy digest are allowed."""
        entry = self.partners.get(partner)
        if entry is None:
            raise UnknownPartner(f"partner {partner!r} is not in the partner registry")
        if schema_version not in entry.allowed_schema_versions:
            raise SchemaMismatch(
                f"partner {partner!r}: schema version {schema_version!r} is not allowed "
                f"(registry allows {entry.allowed_schema_versions})",
                hint="the partner must upgrade its node agent, or the privacy officer must allow the version",
            )
        if policy_digest not in entry.allowed_policy_digests:
            raise SchemaMismatch(
                f"partner {partner!r}: sharing policy {policy_digest} is not an approved policy for this partner",
                hint="the privacy officer must review the sharing policy and add its digest to the registry",
            )

    def public_keys(self, partner: str) -> list[PartnerKey]:
        entry = self.partners.get(partner)
        return [] if entry is None else list(entry.keys)


def load_registry(path: Path) -> tuple[PartnerRegistry, str]:
    """Parse the registry at ``path``; returns it with the digest of its exact bytes."""
    raw = read_policy_bytes(path)
    return parse_policy(path, PartnerRegistry, raw), policy_digest(raw)


def render_registry(registry: PartnerRegistry) -> str:
    """The registry as TOML text (what ``load_registry`` reads back to an equal model)."""
    lines = [f'format = "{registry.format}"', f"version = {registry.version}", ""]
    for name in sorted(registry.partners):
        partner = registry.partners[name]
        lines.append(f"[partners.{name}]")
        lines.append(f"description = {_toml_str(partner.description)}")
        lines.append(f"allowed_schema_versions = {_toml_list(partner.allowed_schema_versions)}")
        lines.append(f"allowed_policy_digests = {_toml_list(partner.allowed_policy_digests)}")
        lines.append("")
        for key in partner.keys:
            lines.append(f"[[partners.{name}.keys]]")
            lines.append(f"public_key = {_toml_str(key.public_key)}")
            lines.append(f"fingerprint = {_toml_str(key.fingerprint)}")
            lines.append(f"epoch = {key.epoch}")
            lines.append(f"status = {_toml_str(key.status)}")
            lines.append("")
    return "\n".join(lines)


def partner_key_from_bytes(public_key: bytes, *, epoch: int, status: Literal["active", "revoked"] = "active"):
    """A registry key entry for a raw Ed25519 public key (fingerprint computed here)."""
    return PartnerKey(
        public_key=base64.b64encode(public_key).decode("ascii"),
        fingerprint=fingerprint(SIGNING_KIND, public_key),
        epoch=epoch,
        status=status,
    )


def with_partner(
    registry: PartnerRegistry | None,
    name: str,
    *,
    key: PartnerKey,
    schema_versions: Iterable[str],
    policy_digests: Iterable[str],
    description: str = "",
) -> PartnerRegistry:
    """A new registry equal to ``registry`` plus ``key`` and the allowances for partner ``name``.

    Existing keys stay; an existing key with the same fingerprint is replaced (e.g. to revoke it).
    """
    partners = dict(registry.partners) if registry is not None else {}
    old = partners.get(name)
    keys = [k for k in (old.keys if old else []) if k.fingerprint != key.fingerprint] + [key]
    schemas = list(dict.fromkeys([*(old.allowed_schema_versions if old else []), *schema_versions]))
    digests = list(dict.fromkeys([*(old.allowed_policy_digests if old else []), *policy_digests]))
    partners[name] = Partner(
        description=description or (old.description if old else ""),
        keys=sorted(keys, key=lambda k: k.epoch),
        allowed_schema_versions=schemas,
        allowed_policy_digests=digests,
    )
    return PartnerRegistry(partners=partners)


def _toml_str(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"
