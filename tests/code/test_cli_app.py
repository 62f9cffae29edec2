"""Every command line renders its help one way (safescan.code.cli_app): each group of the tree
is a SafescanGroup made by new_app, each listing entry is one line, and no help text loses a
``[...]`` to Rich markup (``[on]``, ``[wallet] [server] [tls]`` vanished before)."""

from __future__ import annotations

from collections.abc import Iterator

import typer
import typer.main
from rich.text import Text
from typer import _click
from typer.testing import CliRunner

from safescan.code.cli_app import SafescanGroup, literal


def tree() -> Iterator[tuple[str, _click.Command]]:
    from safescan.cli import app

    def walk(command: _click.Command, path: str) -> Iterator[tuple[str, _click.Command]]:
        yield path, command
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, f"{path} {name}")

    yield from walk(typer.main.get_command(app), "safescan")


def texts(command: _click.Command) -> Iterator[str]:
    yield from (t for t in (command.help, command.short_help, command.epilog) if t)
    for param in command.params:
        if isinstance(param, (typer.core.TyperOption, typer.core.TyperArgument)) and param.help:
            yield param.help


def test_every_group_is_made_by_new_app_and_shows_its_texts_as_written() -> None:
    found = list(tree())
    assert len(found) > 60
    groups = [(path, c) for path, c in found if isinstance(c, typer.core.TyperGroup)]
    assert len(groups) > 10
    assert [path for path, c in groups if not isinstance(c, SafescanGroup)] == []
    for path, command in found:
        if path == "safescan":
            continue  # the root page is Click's plain text, not Rich markup
        assert command.short_help is not None and "\n" not in command.short_help, path
        for text in texts(command):
            assert Text.from_markup(text).plain.count("[") == text.count("["), (path, text)


def test_literal_keeps_brackets_and_is_what_rich_shows() -> None:
    for text in ("[on]", "FILE.toml: [wallet] [server] [tls]", "[8080]", "a \\[b] [/c]", "x"):
        assert Text.from_markup(literal(text)).plain == text


def test_an_option_help_in_brackets_is_shown() -> None:
    from safescan.cli import app

    out = CliRunner().invoke(app, ["wallet", "--help"], env={"COLUMNS": "200"}).output
    for section in ("[wallet]", "[server]", "[tls]"):  # each a word: kept whole by any wrapping
        assert section in out, out
