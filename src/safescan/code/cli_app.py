"""The one place that sets how every ``safescan`` command line renders its help.

Every Typer app of the project is made by :func:`new_app`, so ``safescan pos --help``,
``safescan institution --help``, ``python -m safescan.merchant --help`` and the rest share one
set of Typer settings (:data:`APP_SETTINGS`) and one group class (:class:`SafescanGroup`), which
evens out two habits of Typer's rich help ("rich" markup mode):

- a group's command listing kept the single line breaks of each command's first paragraph
  (a docstring wrapped at 100 columns came out as ragged half lines), while the command's own
  page and the import-free listings of :mod:`safescan.code.lazy_cli` joined them: every listing
  now shows the first paragraph joined into one line, wrapped to the terminal;
- help texts were read as Rich markup, so ``[on]`` or ``[wallet] [server] [tls]`` in an
  option's help vanished from the page: the texts are plain text, shown as written.

``tests/code/test_cli_app.py`` checks both on the whole command tree.
"""

from __future__ import annotations

import inspect
import re
import weakref
from typing import Any, ClassVar, Final

import typer
import typer.core
from typer import _click

#: the settings every app shares (``safescan`` itself adds shell completion: :mod:`safescan.cli`)
APP_SETTINGS: Final[dict[str, Any]] = {
    "rich_markup_mode": "rich",  # Typer's default, said once: the panels of every sub-page
    "pretty_exceptions_short": True,
    "no_args_is_help": True,
    "add_completion": False,  # completion is installed for `safescan`, not for a sub-part
}

# what Rich would take for a markup tag (rich.markup.escape's pattern, without importing rich)
_TAG = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])")
_literal: weakref.WeakSet[_click.Command] = weakref.WeakSet()


def literal(text: str) -> str:
    """``text`` escaped so that Rich markup shows it as written (``[on]`` stays ``[on]``)."""
    return _TAG.sub(lambda m: m.group(1) * 2 + "\\" + m.group(2), text)


def one_line(help_text: str | None) -> str:
    """The first paragraph of a help text joined into one line (a listing's entry)."""
    return " ".join(inspect.cleandoc(help_text or "").split("\n\n")[0].split())


def show_as_written(command: _click.Command) -> None:
    """Make ``command``'s help texts plain text for Rich and give it a one-line listing entry
    (once per command object, however many groups hand it out)."""
    if command in _literal:
        return
    _literal.add(command)
    if command.help is not None:
        command.help = literal(command.help)
    if command.epilog is not None:
        command.epilog = literal(command.epilog)
    if command.short_help is None:
        command.short_help = one_line(command.help)
    else:
        command.short_help = literal(command.short_help)
    for param in command.params:
        if isinstance(param, (typer.core.TyperOption, typer.core.TyperArgument)) and param.help:
            param.help = literal(param.help)


class SafescanGroup(typer.core.TyperGroup):
    """The group class of every app (:func:`new_app`): its own texts and its commands' are
    shown as written, and its listing gives each command's first paragraph in one line."""

    #: render this group's own help page as plain text (Click's layout) instead of Typer's rich
    #: panels, which import rich.markdown and rich.traceback (~90 ms CPU) just to draw boxes;
    #: its texts are then not Rich markup and are left as they are
    plain_help: ClassVar[bool] = False

    def __init__(self, *, commands: Any = None, **attrs: Any) -> None:
        super().__init__(commands=commands, **attrs)
        if not self.plain_help:
            show_as_written(self)
            for command in self.commands.values():
                show_as_written(command)


def new_app(*, help: str, cls: type[SafescanGroup] = SafescanGroup, **settings: Any) -> typer.Typer:
    """A Typer app with the project's help settings (:data:`APP_SETTINGS`; ``settings``
    overrides them, e.g. ``add_completion=True`` for ``safescan`` itself)."""
    return typer.Typer(cls=cls, help=help, **{**APP_SETTINGS, **settings})


__all__ = ["APP_SETTINGS", "SafescanGroup", "literal", "new_app", "one_line", "show_as_written"]
