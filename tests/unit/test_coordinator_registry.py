"""The partner registry: what it accepts, what it refuses, and the checks ingest relies on."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kansrijk.crypto import generate_signing_key
from kansrijk.errors import PolicyError, SchemaMismatch, UnknownPartner
from kansrijk.policy.registry import (
    PartnerRegistry,
    load_registry,
    partner_key_from_bytes,
    render_registry,
    with_partner,
)

DIGEST = "sha256:" + "ab" * 32


def _registry(**extra_keys) -> PartnerRegistry:
    _, pub = generate_signing_key()
    reg = with_partner(
        None, "cbs", key=partner_key_from_bytes(pub, epoch=1), schema_versions=["1"], policy_digests=[DIGEST]
    )
    return reg


def test_registry_round_trips_through_toml(tmp_path: Path) -> None:
    reg = _registry()
    _, pub2 = generate_signing_key()
    reg = with_partner(
        reg, "duo", key=partner_key_from_bytes(pub2, epoch=3), schema_versions=["1"], policy_digests=[DIGEST]
    )
    path = tmp_path / "partners.toml"
    path.write_text(render_registry(reg))
    loaded, digest = load_registry(path)
    assert loaded == reg
    assert digest.startswith("sha256:")


def test_active_key_is_found_and_revoked_or_unknown_keys_are_refused() -> None:
    reg = _registry()
    key = reg.partners["cbs"].keys[0]
    assert reg.signing_key("cbs", key.fingerprint) == key
    with pytest.raises(UnknownPartner, match="not in the partner registry"):
        reg.signing_key("duo", key.fingerprint)
    with pytest.raises(UnknownPartner, match="not registered for partner 'cbs'"):
        reg.signing_key("cbs", "0" * 32)
    revoked = with_partner(
        reg,
        "cbs",
        key=partner_key_from_bytes(key.key_bytes, epoch=1, status="revoked"),
        schema_versions=[],
        policy_digests=[],
    )
    with pytest.raises(UnknownPartner, match="revoked"):
        revoked.signing_key("cbs", key.fingerprint)


def test_schema_version_and_policy_digest_must_be_allowed() -> None:
    reg = _registry()
    reg.check_allowed("cbs", schema_version="1", policy_digest=DIGEST)
    with pytest.raises(SchemaMismatch, match="schema version '2'"):
        reg.check_allowed("cbs", schema_version="2", policy_digest=DIGEST)
    with pytest.raises(SchemaMismatch, match="sharing policy"):
        reg.check_allowed("cbs", schema_version="1", policy_digest="sha256:" + "cd" * 32)


def test_fingerprint_that_does_not_match_the_key_is_a_policy_error(tmp_path: Path) -> None:
    text = render_registry(_registry())
    lines = [
        'fingerprint = "' + "f" * 32 + '"' if line.startswith("fingerprint") else line for line in text.splitlines()
    ]
    path = tmp_path / "partners.toml"
    path.write_text("\n".join(lines))
    with pytest.raises(PolicyError, match=r"partners\.cbs\.keys\.0.*fingerprint does not match"):
        load_registry(path)


def test_unknown_partner_names_and_unknown_keys_are_refused(tmp_path: Path) -> None:
    text = render_registry(_registry()).replace("[partners.cbs", "[partners.belastingdienst")
    path = tmp_path / "partners.toml"
    path.write_text(text)
    with pytest.raises(PolicyError, match="unknown partner name"):
        load_registry(path)
    path.write_text(render_registry(_registry()) + "\nextra_setting = 1\n")
    with pytest.raises(PolicyError, match="extra_setting"):
        load_registry(path)


@settings(deadline=None)  # a wall-clock limit per example fails at random on a loaded CI machine
@given(st.binary(min_size=0, max_size=48))
def test_public_keys_of_the_wrong_length_are_refused(raw: bytes) -> None:
    from pydantic import ValidationError

    from kansrijk.policy.registry import PartnerKey

    if len(raw) == 32:
        return
    with pytest.raises(ValidationError, match="public_key"):
        PartnerKey(public_key=base64.b64encode(raw).decode(), fingerprint="0" * 32, epoch=1)


def test_the_example_registry_in_policies_validates() -> None:
    registry, _ = load_registry(Path(__file__).parents[2] / "policies" / "partners.toml")
    assert set(registry.partners) == {"cbs", "gemeente", "cjg", "duo"}
