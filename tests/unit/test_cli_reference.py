"""The command reference is generated from the typer app, and every command's help carries an example."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from typer.core import TyperGroup
from typer.testing import CliRunner

from kansrijk.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_cli_reference", DOCS / "gen_cli_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN = _generator()
COMMANDS = list(GEN.walk(GEN.root_command()))
LEAVES = [(path, cmd) for path, cmd in COMMANDS if not isinstance(cmd, TyperGroup)]


def test_committed_cli_reference_matches_the_commands() -> None:
    committed = (DOCS / "cli-reference.md").read_text(encoding="utf-8")
    assert committed == GEN.render(), "docs/cli-reference.md is stale: run `python docs/gen_cli_reference.py`"


def test_reference_lists_every_command_and_option() -> None:
    text = GEN.render()
    for path, command in COMMANDS:
        assert f"`{' '.join(path)}`" in text
        for param in command.params:
            for opt in param.opts:
                if opt.startswith("--") and opt not in GEN._SKIPPED_OPTIONS:
                    assert f"`{opt}" in text, f"{' '.join(path)}: option {opt} missing from the reference"


def test_the_walk_finds_the_demo_and_report_commands() -> None:
    paths = {" ".join(path) for path, _ in COMMANDS}
    assert {"kansrijk demo", "kansrijk coordinator report"} <= paths


@pytest.mark.parametrize("path,command", LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_has_help_with_an_example(path: tuple[str, ...], command) -> None:
    help_text = command.help or ""
    assert help_text.strip(), f"{' '.join(path)} has no help text"
    assert "Example" in help_text, f"{' '.join(path)}: its help has no 'Example:' line"


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_answers_help(path: tuple[str, ...], command) -> None:
    result = CliRunner().invoke(app, [*path[1:], "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def _all_error_classes() -> list[type]:
    import importlib
    import pkgutil

    import coordinator
    import kansrijk
    import node_agent
    from kansrijk.errors import KansrijkError

    for package in (kansrijk, coordinator, node_agent):
        for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            importlib.import_module(module.name)

    def walk(cls: type) -> list[type]:
        return [cls, *(c for sub in cls.__subclasses__() for c in walk(sub))]

    return walk(KansrijkError)


def test_every_error_class_and_exit_code_is_documented() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    rows = {
        line.split("|")[2].strip(" `"): line.split("|")[1].strip()
        for line in text.splitlines()
        if line.startswith("| ") and line.count("|") >= 4 and line.split("|")[1].strip().isdigit()
    }
    for cls in _all_error_classes():
        assert cls.__name__ in rows, f"{cls.__name__} is not in docs/architecture.md 'Errors and exit codes'"
        assert rows[cls.__name__] == str(cls.exit_code), f"{cls.__name__}: documented exit code differs"
