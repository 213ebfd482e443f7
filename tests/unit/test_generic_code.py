"""The code is generic: no partner, outcome or variable name of a shipped study, and no municipality code, appears
in ``src/``, ``node_agent/`` or ``coordinator/``. A study is data (``policies/studies/<study>/study.toml``); a
name in the code would tie the toolkit to one municipality and its partners again.

What the scan allows, and why (nothing else):

- the identity variables every study must declare with fixed kinds (``kansrijk.study.model.IDENTITY``:
  ``pseudonym``, ``year``, ``birth_year``): the code links on the pseudonym per reference year and computes age
  from the birth year, so it names them by design;
- ``ALLOWED_WORDS``: three variable names that are ordinary English words (``sex``, ``grade``, ``track``). The code
  uses them only in that sense, in docstring and help examples ("a condition such as sex == F", "a threshold of
  a whole-number variable such as a grade", "pupils who cannot move up a track"); no code path reads them;
- ``PENDING``: files that still hold study-specific code, each with the reason it is still there. The list may
  only shrink; a file not on it that names a study's partner, outcome, variable or code fails the test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kansrijk.study import load_study
from kansrijk.study.model import IDENTITY

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("src", "node_agent", "coordinator")
STUDIES = sorted((ROOT / "policies" / "studies").glob("*/study.toml"))
ALLOWED_WORDS = frozenset({"sex", "grade", "track"})
# Files still specific to the shipped study, with the reason. The calibrated synthetic city (kansrijk.synth.city
# and its modules) is the shipped study's realistic generator: its base rates, native formats and faults are
# calibrated to that study's published figures and it refuses any other study (kansrijk.synth.generate_study_city);
# other studies declare their city in the study file (kansrijk.synth.declared).
PENDING: dict[str, str] = {
    "src/kansrijk/synth/city.py": "the calibrated city of the shipped study",
    "src/kansrijk/synth/population.py": "the calibrated city of the shipped study",
    "src/kansrijk/synth/outcomes_model.py": "the calibrated city of the shipped study",
    "src/kansrijk/synth/extracts.py": "the calibrated city of the shipped study",
    "src/kansrijk/synth/faults.py": "the calibrated city of the shipped study",
    "src/kansrijk/synth/geography.py": "the calibrated city of the shipped study",
    "src/kansrijk/synth/cli.py": "the calibrated city's command (kansrijk synth city)",
}


def _names() -> dict[str, str]:
    """name -> what it is (for the failure message), over every shipped study."""
    found: dict[str, str] = {}
    for path in STUDIES:
        study = load_study(path)
        for p in study.partners:
            found[p] = f"partner of {study.name}"
        for o in study.outcomes:
            found[o] = f"outcome of {study.name}"
        for v in study.variables:
            if v not in IDENTITY and v not in ALLOWED_WORDS:
                found.setdefault(v, f"variable of {study.name}")
    return found


def _codes() -> dict[str, str]:
    out = {}
    for path in STUDIES:
        study = load_study(path)
        code = study.file.geography.municipality_code
        out[code] = f"municipality code of {study.name}"
    return out


def _hits(text: str, names: dict[str, str], codes: dict[str, str]) -> list[tuple[int, str, str]]:
    word = re.compile(
        r"(?<![A-Za-z0-9_])(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")(?![A-Za-z0-9_])",
        re.IGNORECASE,
    )
    hits = []
    for number, line in enumerate(text.splitlines(), start=1):
        for m in word.finditer(line):
            hits.append((number, m.group(1), names[m.group(1).lower()]))
        for code, what in codes.items():
            if code in line:
                hits.append((number, code, what))
    return hits


def test_the_shipped_studies_are_found() -> None:
    assert len(STUDIES) >= 2, STUDIES
    assert len(_codes()) == len(STUDIES)  # each its own municipality


def test_the_scan_finds_a_partner_an_outcome_a_variable_and_a_code() -> None:
    names, codes = _names(), _codes()
    study = load_study(STUDIES[0])
    partner, outcome = study.partners[0], next(iter(study.outcomes))
    variable = next(v for v in study.variables if v not in IDENTITY and v not in ALLOWED_WORDS)
    code = study.file.geography.municipality_code
    text = (
        f"x = '{partner}'\n# {outcome.upper()} here\ny = f(\"{variable}\")\nz = 'BU{code}0001'\nok = 'a_{partner}_b'\n"
    )
    found = {(n, h) for n, h, _ in _hits(text, names, codes)}
    assert found == {(1, partner), (2, outcome.upper()), (3, variable), (4, code)}


@pytest.mark.parametrize("folder", SCANNED)
def test_the_code_names_no_partner_outcome_variable_or_municipality_code(folder: str) -> None:
    names, codes = _names(), _codes()
    problems = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in PENDING:
            continue
        for number, hit, what in _hits(path.read_text(encoding="utf-8"), names, codes):
            problems.append(f"{rel}:{number}: {hit!r} ({what})")
    assert not problems, f"{len(problems)} study-specific names in generic code:\n" + "\n".join(problems)


def test_pending_files_still_exist() -> None:
    """A file leaves PENDING when it is made generic (or removed); a stale entry would hide nothing but misleads."""
    assert all((ROOT / rel).is_file() for rel in PENDING)
