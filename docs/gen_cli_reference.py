"""Generate ``docs/cli-reference.md`` from the ``kansrijk`` typer app: every command's help, usage and options.

Run ``python docs/gen_cli_reference.py`` after changing a command; ``tests/unit/test_cli_reference.py``
regenerates the text and fails when the committed file differs. The output depends only on the command tree
(no terminal width, no rich rendering), so it is the same on every machine.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import typer
import typer.main
from typer.core import TyperArgument, TyperCommand, TyperGroup

OUTPUT = Path(__file__).with_name("cli-reference.md")
# Shell-completion helpers typer adds to the root command: not part of kansrijk's interface.
_SKIPPED_OPTIONS = {"--install-completion", "--show-completion"}

HEADER = """# Command reference

Generated from the `kansrijk` command tree by `docs/gen_cli_reference.py`; do not edit by hand (a test fails
when this file and the commands disagree). Every command also answers `--help`. Exit codes of every error are
listed in [architecture.md](architecture.md#errors-and-exit-codes).

"""


# typer ships its own copy of click; its classes are reached through typer's public names only.
Command = TyperCommand | TyperGroup


def root_command() -> Command:
    """The click command behind ``kansrijk`` (imports the CLI root, which mounts every role's group)."""
    from kansrijk.cli import app

    return typer.main.get_command(app)


def walk(command: Command, path: tuple[str, ...] = ("kansrijk",)) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Every command under ``command``, depth first, in name order, with its full invocation path."""
    yield path, command
    if isinstance(command, TyperGroup):
        ctx = typer.Context(command, info_name=path[-1])
        for name in sorted(command.list_commands(ctx)):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, (*path, name))


def _context(path: tuple[str, ...], command: Command) -> typer.Context:
    parent: typer.Context | None = None
    for name in path[:-1]:
        parent = typer.Context(TyperGroup(name=name), info_name=name, parent=parent)
    return typer.Context(command, info_name=path[-1], parent=parent)


def _clean(text: str) -> str:
    """Help text as plain Markdown: typer's rich line-break marker removed, trailing space trimmed."""
    lines = [line.rstrip() for line in text.replace("\b\n", "").strip().splitlines()]
    return "\n".join(lines)


def render_command(path: tuple[str, ...], command: Command) -> str:
    ctx = _context(path, command)
    depth = min(len(path) + 1, 6)
    out = [f"{'#' * depth} `{' '.join(path)}`", ""]
    if command.help:
        out += [_clean(command.help), ""]
    out += ["```console", f"$ {' '.join(path)} {' '.join(command.collect_usage_pieces(ctx))}".rstrip(), "```", ""]
    arguments, options = [], []
    for param in command.get_params(ctx):
        if set(param.opts) & _SKIPPED_OPTIONS:
            continue
        record = param.get_help_record(ctx)
        if isinstance(param, TyperArgument):
            help_text = getattr(param, "help", None) or ""
            required = "required" if param.required else "optional"
            metavar = (param.metavar or param.name or "").upper()
            arguments.append(f"* `{metavar}` ({required}): {_clean(help_text)}".rstrip(": "))
        elif record is not None:
            names, help_text = record
            options.append(f"* `{names}`: {_clean(help_text)}".rstrip(": "))
    if arguments:
        out += ["Arguments:", "", *arguments, ""]
    if options:
        out += ["Options:", "", *options, ""]
    if isinstance(command, TyperGroup):
        subs = [name for name in sorted(command.list_commands(ctx)) if not command.get_command(ctx, name).hidden]  # type: ignore[union-attr]
        if subs:
            out += ["Commands:", ""]
            for name in subs:
                sub = command.get_command(ctx, name)
                assert sub is not None
                out.append(f"* `{name}`: {sub.get_short_help_str(limit=100)}")
            out.append("")
    return "\n".join(out)


def render() -> str:
    """The whole reference as Markdown text."""
    sections = [render_command(path, command) for path, command in walk(root_command())]
    return HEADER + "\n".join(sections).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else OUTPUT
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
