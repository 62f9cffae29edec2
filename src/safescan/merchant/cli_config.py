"""``safescan pos config show``: the effective settings (file, environment, defaults) and what
the terminal's file holds, secrets masked (the API key is never opened)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, fail

config_app = typer.Typer(help="The POS's settings (TOML file + environment).", no_args_is_help=True)


@config_app.command("show")
def show(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="settings file (FILE.toml) or the terminal's JSON (default: $SAFESCAN_POS_CONFIG)",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable output")] = False,
) -> None:
    """Print the effective settings, secrets masked."""
    from safescan.merchant.settings import describe

    try:
        doc = describe(config)
    except SafescanError as exc:
        raise fail(exc, as_json=as_json, status=2) from None
    if as_json:
        emit_json(doc)
        return
    typer.echo(json.dumps(doc, indent=2))
