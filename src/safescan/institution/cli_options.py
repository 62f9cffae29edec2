"""Options and helpers shared by the institution's command modules (`cli`, `cli_carriers`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from safescan.code.errors import SafescanError
from safescan.code.output import fail

T = TypeVar("T")


def check_db_url(value: str) -> str:
    """A bare file name is the commonest first mistake: say which URL was meant."""
    if value and "://" not in value:
        raise typer.BadParameter(
            f"{value!r} is not a database URL; did you mean sqlite:///{value} (a SQLite file"
            " relative to this directory) or postgresql://USER@HOST/DB?"
        )
    return value


DbOpt = Annotated[
    str,
    typer.Option("--db", help="sqlite:///path or postgresql://...", callback=check_db_url),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]
KeysOpt = Annotated[
    Path | None,
    typer.Option("--keys", help="key directory (default for SQLite: <db file>.keys)"),
]
CheckpointsOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoints",
        help="checkpoint file (default: <key directory>.checkpoints, beside the key directory)",
    ),
]
PassOpt = Annotated[
    Path | None,
    typer.Option(
        "--passphrase-file",
        help="file holding the key passphrase (default: $SAFESCAN_INSTITUTION_PASSPHRASE)",
    ),
]


def fail_cli(exc: SafescanError, as_json: bool = False) -> None:
    """Exit 2 with ``exc`` as a typed error (a JSON object on stdout with ``--json``)."""
    raise fail(exc, as_json=as_json, status=2)


def with_db(db: str, action: Callable[[Any], T]) -> T:
    """Run ``action`` on a connection to ``db``, closed afterwards."""
    from safescan.institution.db import Database

    database = Database(db)
    try:
        return action(database)
    finally:
        database.dispose()
