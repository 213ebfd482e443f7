"""A coordinator workspace built the way the partners and the coordinator build it, through the CLI: a synthetic
city, four partners sealing their extracts per reference year, ingest, link, three signed policies, and
``coordinator analyse`` (or not: ``build_workspace``). Shared by the analysis integration tests and the gate
service's tests (each builds its own under its tmp path)."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from service_kit import serving
from typer.testing import CliRunner

import coordinator.workspace
from coordinator.service.process import socket_path_in
from kansrijk import crypto
from kansrijk.cli import app
from kansrijk.policy.common import policy_digest
from kansrijk.synth.city import CityPaths, generate_city

PARTNERS = ("cbs", "gemeente", "cjg", "duo")
ROOT = Path(__file__).parents[2]
POLICIES = ROOT / "policies"
PASS = "analysis passphrase"
# A small city (3,000-6,000 persons): the shipped thresholds scaled down and a light grid, for tests that need an
# analysis to run, not its numbers.
LIGHT_PLAN = {
    "min_positives": "40",
    "folds": "3",
    "max_depth": "[3, 5]",
    "min_samples_leaf": "[30]",
    "shrinkage": "[0, 300]",
    "bootstrap_replicates": "100",
    "permutation_repeats": "1",
    "permutations": "199",
}


@dataclass(frozen=True)
class Analysed:
    runner: CliRunner
    ws: Path
    keys: Path
    city: CityPaths
    summary: dict[str, Any]
    signed: Path
    officer: Path


@contextlib.contextmanager
def seeded_secret_keys(seed: int) -> Iterator[None]:
    """While open, the symmetric keys kansrijk makes with ``os.urandom`` (the link key, the coordinator's pseudonym
    key, bundle data keys) come from a generator seeded with ``seed`` instead.

    The pseudonyms are the persons' identity in the analysis (folds by person, sorting, ties); with fresh keys each
    run's metrics, importances and confidence intervals differ, so a bound that holds for one run may not for the
    next. With these keys every run links the same pseudonyms. (The numbers are then reproducible once the linked
    dataset's row order is too: ``coordinator link`` writes it in the order of an unordered join, so the analysis
    folds still move between runs until it sorts by pseudonym.) Key pairs (signing, HPKE) and nonces stay fresh.
    Tests only.
    """
    rng = np.random.default_rng(seed)

    def key() -> bytes:
        return rng.bytes(crypto.KEY_BYTES)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(crypto, "random_key", key)
        mp.setattr(coordinator.workspace, "random_key", key)
        yield


def ok(runner: CliRunner, *args: str) -> str:
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"{' '.join(args)}\n{result.output}"
    return result.output


def key_ceremony_and_workspace(runner: CliRunner, tmp: Path, partners: Sequence[str] = PARTNERS) -> tuple[Path, Path]:
    """From the CLI: the link key, each partner's signing key registered with its sharing policy's digest, and the
    coordinator's workspace with that registry. Returns (keys directory, workspace)."""
    keys, ws, registry = tmp / "keys", tmp / "ws", tmp / "partners.toml"
    ok(runner, "node", "linkkey", "new", "--out", str(keys / "link.key"))
    for p in partners:
        ok(runner, "node", "keygen", "--partner", p, "--out", str(keys))
        digest = policy_digest((POLICIES / "sharing" / f"{p}.toml").read_bytes())
        ok(runner, "coordinator", "register-partner", str(registry), "--partner", p, "--public-key",
           str(keys / f"{p}-signing.pub"), "--policy-digest", digest)  # fmt: skip
    ok(runner, "coordinator", "init", str(ws), "--registry", str(registry))
    return keys, ws


def edit_plan(text: str, edits: dict[str, str]) -> str:
    """Replace the value of each ``key = ...`` line (keys unique in the shipped plan)."""
    for key, value in edits.items():
        text, n = re.subn(rf"(?m)^{re.escape(key)} = .*$", f"{key} = {value}", text)
        assert n == 1, key
    return text


@dataclass(frozen=True)
class Prepared:
    """A linked workspace and the three policies the privacy officer signed for it (not analysed yet)."""

    runner: CliRunner
    ws: Path
    keys: Path
    city: CityPaths
    signed: Path  # plan.toml, factors.toml, release.toml and their .sig files
    officer: Path  # officer.key, officer.pub


def build_and_analyse(
    tmp: Path,
    *,
    persons: int,
    years: Sequence[int],
    plan_edits: dict[str, str] | None = None,
    plan_text: str | None = None,
    release_policy: str = "sdc-only",
    key_seed: int = 7,
    through_gate: bool = True,
) -> Analysed:
    """City -> ``node prepare`` per partner and year -> ingest -> link -> sign -> ``coordinator analyse --json``.

    The plan is the shipped one with ``plan_edits`` applied, or ``plan_text``; the release policy is
    ``policies/release/<release_policy>.toml``. The caller sets KANSRIJK_PASSPHRASE (``PASS``) and a small
    KANSRIJK_SCRYPT_LOG2N. The link key and the coordinator's pseudonym key are made from ``key_seed``
    (``seeded_secret_keys``): the same pseudonyms in every run. The analysis runs as it does in deployment,
    through a gate service (``coordinator analyse --gate-socket``; the service on a thread of this process,
    started and stopped here), or with ``through_gate=False`` in the command's own process.
    """
    p = build_workspace(tmp, persons=persons, years=years, plan_edits=plan_edits, plan_text=plan_text,
                        release_policy=release_policy, key_seed=key_seed)  # fmt: skip
    policies = ["--plan", str(p.signed / "plan.toml"), "--factors", str(p.signed / "factors.toml")]
    if through_gate:
        socket_path = socket_path_in(tmp)
        with serving(p.ws, p.signed / "release.toml", p.officer / "officer.pub", socket_path):
            output = ok(p.runner, "coordinator", "analyse", *policies, "--gate-socket", str(socket_path), "--json")
    else:
        trust = ["--release-policy", str(p.signed / "release.toml"), "--officer-key", str(p.officer / "officer.pub")]
        output = ok(p.runner, "coordinator", "analyse", str(p.ws), *policies, *trust, "--json")
    return Analysed(p.runner, p.ws, p.keys, p.city, json.loads(output), p.signed, p.officer)


def build_workspace(
    tmp: Path,
    *,
    persons: int,
    years: Sequence[int],
    plan_edits: dict[str, str] | None = None,
    plan_text: str | None = None,
    release_policy: str = "sdc-only",
    key_seed: int = 7,
) -> Prepared:
    """``build_and_analyse`` up to the signed policies: everything but ``coordinator analyse``."""
    if plan_text is None:
        plan_text = edit_plan((POLICIES / "analysis" / "rotterdam-groeit.toml").read_text(), plan_edits or {})
    with seeded_secret_keys(key_seed):
        return _build(tmp, persons=persons, years=years, plan_text=plan_text, release=release_policy)


def _build(tmp: Path, *, persons: int, years: Sequence[int], plan_text: str, release: str) -> Prepared:
    city = generate_city(tmp / "city", persons=persons, seed=7, years=tuple(years))
    runner = CliRunner()
    keys, ws = key_ceremony_and_workspace(runner, tmp)
    bundles: list[str] = []
    last: dict[str, list[str]] = {p: [] for p in PARTNERS}  # each partner chains its bundles (--previous)
    for year in years:
        for p in PARTNERS:
            outbox = tmp / "outbox" / p / str(year)
            ok(runner, "node", "prepare", *last[p], "--policy", str(POLICIES / "sharing" / f"{p}.toml"), "--input",
               str(city.extracts[(p, year)]), "--out", str(outbox), "--signing-key", str(keys / f"{p}-signing.key"),
               "--link-key", str(keys / "link.key"), "--coordinator-key", str(ws / "keys" / "coordinator-hpke.pub"),
               "--quarantine-out", str(tmp / "quarantine" / p / str(year)))  # fmt: skip
            (bundle,) = outbox.glob("*.kbundle")
            bundles.append(str(bundle))
            last[p] = ["--previous", str(bundle)]
    ok(runner, "coordinator", "ingest", str(ws), *bundles)  # in the order they were sealed
    ok(runner, "coordinator", "link", str(ws))

    # the privacy officer signs the three policies the analysis runs under
    officer = tmp / "officer"
    ok(runner, "policy", "keygen", "--out", str(officer))
    signed = tmp / "signed"
    signed.mkdir()
    (signed / "plan.toml").write_text(plan_text)
    shutil.copy(POLICIES / "factors" / "factor-model.toml", signed / "factors.toml")
    shutil.copy(POLICIES / "release" / f"{release}.toml", signed / "release.toml")
    for name in ("plan.toml", "factors.toml", "release.toml"):
        ok(runner, "policy", "sign", str(signed / name), "--key", str(officer / "officer.key"))
    return Prepared(runner, ws, keys, city, signed, officer)


def released(ws: Path, name: str) -> dict[str, Any]:
    doc = json.loads((ws / "released" / f"{name}.json").read_text())
    assert doc["outcome"] in ("released", "suppressed")
    return doc["values"]
