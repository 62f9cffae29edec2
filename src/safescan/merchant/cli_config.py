"""``safescan pos config show``: the effective settings (file, environment, defaults) and what
the terminal's file holds, secrets masked (the API key is never opened)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from safescan.code.cli_app import new_app
from safescan.code.cli_options import JsonOpt
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, fail

#: the POS settings file, shared by every ``safescan pos`` command
ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="settings file (FILE.toml: [terminal] [server] [tls]) or the terminal's JSON"
        " itself (default: $SAFESCAN_POS_CONFIG)",
    ),
]

config_app = new_app(help="The POS's settings (TOML file + environment).")


@config_app.command("show")
def show(
    config: ConfigOpt = None,
    as_json: JsonOpt = False,
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
