"""Typer command groups whose sub-commands are imported only when a command needs them.

``safescan --help`` must not import the institution server, the QR imaging stack or the demo
just to list their names. A :class:`LazyGroup` knows each sub-command by name and one-line help
(:class:`LazyCommand`) and imports its module the first time the command is resolved, run,
completed into or walked. The root help lists the lazy commands from their stored help text
(``tests/code/test_lazy_cli.py`` checks it is exactly what the loaded commands would show).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.core
import typer.main
import typer.models
from typer import _click

from safescan.code.cli_app import SafescanGroup, literal, one_line, show_as_written

ClickCommand = _click.Command
Loader = Callable[[], "typer.Typer | Callable[..., Any]"]


@dataclass(frozen=True)
class LazyCommand:
    """A sub-command known by its help text until it is used.

    ``load`` returns the command's Typer app (a group) or its function (a single command);
    ``help`` is what the parent's listing shows (the first paragraph of the real help, joined
    into one line as every listing shows it: :mod:`safescan.code.cli_app`).
    """

    help: str
    load: Loader


def attribute(module: str, name: str) -> Loader:
    """A loader that imports ``module`` and returns its attribute ``name``."""

    def load() -> Any:
        return getattr(importlib.import_module(module), name)

    return load


class _Commands(MutableMapping[str, ClickCommand]):
    """Sub-commands by name: the eager ones, and the lazy ones built on first access."""

    def __init__(
        self,
        eager: MutableMapping[str, ClickCommand],
        lazy: dict[str, LazyCommand],
        build: Callable[[str, LazyCommand], ClickCommand],
    ) -> None:
        self._built: dict[str, ClickCommand] = dict(eager)
        self._order = [*eager, *(n for n in lazy if n not in eager)]
        self._lazy = lazy
        self._build = build

    def loaded(self, name: str) -> bool:
        """Whether ``name`` was built (or was never lazy)."""
        return name in self._built

    def __getitem__(self, name: str) -> ClickCommand:
        if name not in self._built:
            if name not in self._lazy:
                raise KeyError(name)
            self._built[name] = self._build(name, self._lazy[name])
        return self._built[name]

    def __setitem__(self, name: str, command: ClickCommand) -> None:
        if name not in self._order:
            self._order.append(name)
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        if name not in self._order:
            raise KeyError(name)
        self._order.remove(name)
        self._built.pop(name, None)
        self._lazy = {k: v for k, v in self._lazy.items() if k != name}

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)


class LazyGroup(SafescanGroup):
    """A Typer group whose sub-commands in :attr:`lazy` are imported on first use.

    Subclass it with ``lazy`` set and pass the subclass as ``typer.Typer(cls=...)``.
    """

    lazy: ClassVar[dict[str, LazyCommand]] = {}
    #: as ``typer.Typer(pretty_exceptions_short=...)`` of the app (safescan.code.cli_app)
    pretty_exceptions_short: ClassVar[bool] = True

    def __init__(self, *, commands: Any = None, **attrs: Any) -> None:
        super().__init__(commands=commands, **attrs)
        self.commands = _Commands(self.commands, dict(self.lazy), self._build)
        self._listing = 0

    def _build(self, name: str, spec: LazyCommand) -> ClickCommand:
        target = spec.load()
        if isinstance(target, typer.Typer):
            # exactly what ``app.add_typer(target, name=name)`` builds
            command: ClickCommand = typer.main.get_group_from_info(
                typer.models.TyperInfo(target, name=name),
                pretty_exceptions_short=self.pretty_exceptions_short,
                rich_markup_mode=self.rich_markup_mode,
                suggest_commands=self.suggest_commands,
            )
        else:
            # exactly what ``app.command(name)(target)`` builds
            command = typer.main.get_command_from_info(
                typer.models.CommandInfo(name=name, callback=target),
                pretty_exceptions_short=self.pretty_exceptions_short,
                rich_markup_mode=self.rich_markup_mode,
            )
        show_as_written(command)
        return command

    def get_command(self, ctx: _click.Context, cmd_name: str) -> ClickCommand | None:
        """The sub-command ``cmd_name``; while only listing names, a stand-in with its help."""
        commands = self.commands
        if (
            self._listing
            and isinstance(commands, _Commands)
            and cmd_name in self.lazy
            and not commands.loaded(cmd_name)
        ):
            text = one_line(self.lazy[cmd_name].help)
            if not self.plain_help:
                text = literal(text)
            return typer.core.TyperCommand(cmd_name, help=text, short_help=text)
        return commands.get(cmd_name)

    def list_commands(self, ctx: _click.Context) -> list[str]:
        """The sub-command names in order (without importing any)."""
        return list(self.commands)

    def format_help(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """The help page, listing lazy sub-commands without importing them."""
        self._listing += 1
        try:
            if self.plain_help:
                # Click's own page: usage, help text, then Typer's plain options and commands
                super(typer.core.TyperGroup, self).format_help(ctx, formatter)
            else:
                super().format_help(ctx, formatter)
        finally:
            self._listing -= 1

    def parse_args(self, ctx: _click.Context, args: list[str]) -> list[str]:
        """As Typer's; a plain-help group called without arguments prints its help page.

        (Typer prints a rich page as a side effect of building the error and then shows no
        error; a plain page would otherwise not be shown at all.) Exit status 2, as Typer's.
        """
        if self.plain_help and not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())  # term-safe: our help page
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def shell_complete(self, ctx: _click.Context, incomplete: str) -> list[Any]:
        """Completions of the sub-command names, without importing them."""
        self._listing += 1
        try:
            return super().shell_complete(ctx, incomplete)
        finally:
            self._listing -= 1
