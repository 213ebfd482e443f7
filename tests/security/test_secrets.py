"""No secret escapes: a full small pipeline, run step by step through the real CLI, leaves no key material, no BSN
and no raw birth date in any file it produced (logs, errors, bundles and their manifests, quarantine reports,
tables, the dataset, the ledger, released outputs, the report) nor in the captured stdout/stderr of any step.
Key files readable by others are refused by every command that loads one.

The city's own extracts and ground truth (the partners' raw input) are the only files excluded from the scan.
"""

from __future__ import annotations

import base64
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from coordinator.workspace import load_keys, open_workspace
from kansrijk import bundle
from kansrijk.cli import app
from kansrijk.crypto import read_public_key, read_secret_key
from kansrijk.policy.common import policy_digest

REPO = Path(__file__).resolve().parents[2]
PARTNERS = ("cbs", "gemeente", "cjg", "duo")
PASS = "secrets-scan passphrase 7f3a"
PERSONS = 1_500


@dataclass
class Run:
    root: Path
    city: Path
    ws: Path
    keys: Path
    officer: Path
    policies: Path
    bundles: dict[str, Path]
    logs: list[tuple[str, str]] = field(default_factory=list)  # (command, stdout+stderr)

    def cli(self, *args: str, expect: int = 0) -> str:
        result = CliRunner().invoke(app, [str(a) for a in args])
        text = result.output + (result.stderr if result.stderr_bytes is not None else "")
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            text += repr(result.exception)
        self.logs.append((" ".join(str(a) for a in args[:3]), text))
        assert result.exit_code == expect, f"{args}: exit {result.exit_code}\n{text}"
        return text


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    mp = pytest.MonkeyPatch()
    mp.setenv("KANSRIJK_SCRYPT_LOG2N", "14")
    mp.setenv("KANSRIJK_PASSPHRASE", PASS)
    mp.delenv("KANSRIJK_LINK_PASSPHRASE", raising=False)
    root = tmp_path_factory.mktemp("pipeline")
    r = Run(root, root / "city", root / "ws", root / "keys", root / "officer", root / "policies", {})
    try:
        _pipeline(r)
    finally:
        mp.undo()
    return r


def _pipeline(r: Run) -> None:
    r.cli("synth", "city", "--out", r.city, "--persons", PERSONS, "--years", "2023")
    r.cli("policy", "keygen", "--out", r.officer)
    r.cli("node", "linkkey", "new", "--out", r.keys / "link.key")
    shutil.copytree(REPO / "policies", r.policies, ignore=shutil.ignore_patterns("*.sig", "partners.toml"))
    plan = r.policies / "analysis" / "rotterdam-groeit.toml"
    plan.write_text(re.sub(r"(?m)^min_positives = \d+", "min_positives = 40", plan.read_text()))
    registry = r.policies / "partners.toml"
    for p in PARTNERS:
        r.cli("node", "keygen", "--partner", p, "--out", r.keys)
        digest = policy_digest((r.policies / "sharing" / f"{p}.toml").read_bytes())
        r.cli(
            "coordinator",
            "register-partner",
            registry,
            "--partner",
            p,
            "--public-key",
            r.keys / f"{p}-signing.pub",
            "--policy-digest",
            digest,
        )
    release = r.policies / "release" / "dp-sdc.toml"
    factors = r.policies / "factors" / "factor-model.toml"
    for f in (registry, release, plan, factors):
        r.cli("policy", "sign", f, "--key", r.officer / "officer.key")
    officer = r.officer / "officer.pub"
    r.cli("coordinator", "init", r.ws, "--registry", registry, "--officer-key", officer)
    for p in PARTNERS:
        (extract,) = (r.city / "extracts" / p).glob(f"{p}_2023.*")
        r.cli(
            "node",
            "prepare",
            "--policy",
            r.policies / "sharing" / f"{p}.toml",
            "--input",
            extract,
            "--out",
            r.root / "outbox" / p,
            "--signing-key",
            r.keys / f"{p}-signing.key",
            "--link-key",
            r.keys / "link.key",
            "--coordinator-key",
            r.ws / "keys" / "coordinator-hpke.pub",
            "--quarantine-out",
            r.root / "quarantine" / p,
        )
        (r.bundles[p],) = (r.root / "outbox" / p).glob("*.kbundle")
        r.cli("node", "inspect", r.bundles[p], "--partner-key", r.keys / f"{p}-signing.pub")
        r.cli("node", "inspect", r.bundles[p], "--json")
    r.cli("coordinator", "ingest", r.ws, *(r.bundles[p] for p in PARTNERS))
    r.cli("coordinator", "ingest", r.ws, r.bundles["cbs"], expect=15)  # a refusal's message is scanned too
    r.cli("coordinator", "link", r.ws, "--release-policy", release, "--officer-key", officer)
    r.cli(
        "coordinator",
        "analyse",
        r.ws,
        "--plan",
        plan,
        "--factors",
        factors,
        "--release-policy",
        release,
        "--officer-key",
        officer,
    )
    r.cli("coordinator", "report", r.ws, "--out", r.root / "report.html", "--policy", release)
    r.cli("coordinator", "status", r.ws)
    r.cli("coordinator", "status", r.ws, "--json")
    r.cli("ledger", "show", r.ws)
    r.cli("ledger", "show", r.ws, "--json")
    r.cli("ledger", "verify", r.ws)
    r.cli("policy", "verify", release, "--officer-key", officer)
    r.cli("policy", "explain", release)
    r.cli("node", "linkkey", "fingerprint", r.keys / "link.key")
    wrong = {"KANSRIJK_PASSPHRASE": "wrong passphrase"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in wrong.items():
            mp.setenv(k, v)
        r.cli("coordinator", "ingest", r.ws, r.bundles["duo"], expect=6)  # wrong passphrase: error text scanned


# --- what must not appear ---------------------------------------------------------------------------------
def _secret_keys(r: Run) -> dict[str, bytes]:
    kinds = {
        "gate-signing.key": "gate-signing",
        "-signing.key": "ed25519-signing",
        "link.key": "link-key",
        "officer.key": "ed25519-signing",
        "coordinator-hpke.key": "x25519-hpke",
        "coordinator-pseudonym.key": "coordinator-pseudonym-key",
    }
    found = {}
    for path in [*r.keys.glob("*.key"), *r.officer.glob("*.key"), *(r.ws / "keys").glob("*.key")]:
        kind = next(v for k, v in kinds.items() if path.name.endswith(k))
        found[path.name] = read_secret_key(path, kind, PASS)  # type: ignore[arg-type]
    assert len(found) == 4 + 1 + 1 + 3
    return found


def _encodings(key: bytes) -> list[bytes]:
    b64 = base64.b64encode(key)
    return [
        key,
        key.hex().encode(),
        key.hex().upper().encode(),
        b64,
        b64.rstrip(b"="),
        base64.urlsafe_b64encode(key).rstrip(b"="),
        PASS.encode(),
    ]


def _person_secrets(r: Run) -> tuple[set[str], set[str]]:
    persons = pl.read_parquet(r.city / "ground_truth" / "persons.parquet")
    bsns = set(persons["bsn"].cast(pl.String).to_list())
    dates = (
        persons.select(
            pl.concat_list(
                pl.col("birth_date").dt.strftime("%Y-%m-%d"),
                pl.col("birth_date").dt.strftime("%d-%m-%Y"),
                pl.col("birth_date").dt.strftime("%Y%m%d"),
            )
        )
        .to_series()
        .explode()
    )
    return bsns, set(dates.to_list())


_NINE = re.compile(r"(?<![0-9])[0-9]{9}(?![0-9])")
_DATES = re.compile(r"(?<![0-9])(?:[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9]{2}-[0-9]{2}-[0-9]{4}|[0-9]{8})(?![0-9])")
# Runs of 16+ hex characters: digests, fingerprints, salts, bundle ids (in SQLite's raw bytes often glued to the
# next field). They change every run (keys, times, nonces) and 10 of their 16 symbols are digits, so one run of the
# pipeline holds ~100 runs of exactly 8 or 9 digits between two hex letters; each equals one of ~1,300 eight-digit
# birth dates with probability 1.3e-5 (one of 1,500 BSNs: 1.5e-6), so the scan reported a "leak" in about one
# run in 700. A BSN or date written out (CSV, JSON, logs) is never inside such a run, so blank them first.
_HEX_RUN = re.compile(r"[0-9a-fA-F]{16,}")


def _texts(path: Path, r: Run) -> list[str]:
    """What a reader of ``path`` could see: its raw bytes, plus decoded content for binary formats."""
    raw = path.read_bytes()
    out = [raw.decode("latin-1")]
    if path.suffix == ".parquet":
        out.append(_frame_text(pl.read_parquet(path)))
    elif path.suffix == ".sqlite":
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        out.append("\n".join(conn.iterdump()))
        conn.close()
    elif path.suffix == ".kbundle":
        keys = load_keys(open_workspace(r.ws), PASS)
        trusted = {p: read_public_key(r.keys / f"{p}-signing.pub", "ed25519-signing").key for p in PARTNERS}
        opened = bundle.open_bundle(raw, trusted_keys=trusted, recipient_private_key=keys.hpke_private)
        out += [bundle.canonical_json(opened.manifest.to_json_object()).decode(), _frame_text(opened.payload)]
    return out


def _frame_text(frame: pl.DataFrame) -> str:
    parts = []
    for name, dtype in frame.schema.items():
        col = frame[name]
        parts.append(name)
        if dtype == pl.Binary:
            parts += [b.decode("latin-1") for b in col.drop_nulls().to_list()]
        elif dtype == pl.Date:
            parts += col.dt.strftime("%Y-%m-%d").drop_nulls().to_list()
        else:
            parts += [str(v) for v in col.drop_nulls().to_list()]
    return "\n".join(parts)


def test_no_key_bsn_or_birth_date_in_any_file_or_cli_output(run: Run, tally) -> None:
    keys = _secret_keys(run)
    bsns, dates = _person_secrets(run)
    assert len(bsns) >= PERSONS and len(dates) >= PERSONS
    files = [p for p in run.root.rglob("*") if p.is_file() and run.city not in p.parents]
    assert any(p.suffix == ".kbundle" for p in files) and (run.root / "report.html") in files
    assert any(p.name.endswith(".quarantine.csv") for p in files) and (run.ws / "ledger.sqlite") in files
    sources = [(str(p.relative_to(run.root)), t) for p in files for t in _texts(p, run)]
    sources += [(f"output of `kansrijk {cmd}`", text) for cmd, text in run.logs]
    leaks: dict[str, list[str]] = {"key material": [], "BSN": [], "birth date": []}
    for where, text in sources:
        data = text.encode("latin-1", errors="ignore")
        for name, key in keys.items():
            if any(form in data for form in _encodings(key)):
                leaks["key material"].append(f"{name} in {where}")
        plain = _HEX_RUN.sub(" ", text)
        if bsns & set(_NINE.findall(plain)):
            leaks["BSN"].append(where)
        if dates & set(_DATES.findall(plain)):
            leaks["birth date"].append(where)
    for what, places in leaks.items():
        tally.attack(f"look for {what} in {len(sources)} files and outputs", not places, count=len(sources))
    assert not any(leaks.values()), {k: v[:5] for k, v in leaks.items()}
    # the scan can find them: the raw extracts hold BSNs and birth dates in these very encodings
    (gemeente,) = (run.city / "extracts" / "gemeente").glob("*.csv")
    text = gemeente.read_text(encoding="utf-8")
    assert bsns & set(_NINE.findall(text)) and dates & set(_DATES.findall(text))


@pytest.mark.parametrize(
    "key, command",
    [
        ("keys/cbs-signing.key", "prepare"),
        ("keys/link.key", "prepare"),
        ("officer/officer.key", "sign"),
        ("ws/keys/coordinator-hpke.key", "ingest"),
        ("ws/keys/coordinator-pseudonym.key", "ingest"),
    ],
)
def test_a_key_file_readable_by_others_is_refused_by_the_command_that_loads_it(
    run: Run, tally, key: str, command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KANSRIJK_PASSPHRASE", PASS)
    path = run.root / key
    mode = path.stat().st_mode
    path.chmod(0o644)
    try:
        if command == "prepare":
            (extract,) = (run.city / "extracts" / "cbs").glob("cbs_2023.*")
            args = [
                "node",
                "prepare",
                "--policy",
                run.policies / "sharing" / "cbs.toml",
                "--input",
                extract,
                "--out",
                tmp_path / "out",
                "--signing-key",
                run.keys / "cbs-signing.key",
                "--link-key",
                run.keys / "link.key",
                "--coordinator-key",
                run.ws / "keys" / "coordinator-hpke.pub",
            ]
        elif command == "sign":
            target = tmp_path / "p.toml"
            shutil.copy(run.policies / "release" / "sdc-only.toml", target)
            args = ["policy", "sign", target, "--key", path]
        else:
            args = ["coordinator", "ingest", run.ws, run.bundles["duo"]]
        before = sorted(p.name for p in tmp_path.rglob("*"))
        text = run.cli(*args, expect=6)
        assert "readable by others" in text and "chmod 600" in text
        assert sorted(p.name for p in tmp_path.rglob("*")) == before
        tally.attack(f"{key} with mode 0644", True)
    finally:
        path.chmod(mode)
