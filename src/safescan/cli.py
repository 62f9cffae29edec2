"""The ``safescan`` command line: one entry point, one sub-command group per part."""

from __future__ import annotations

from typing import Annotated

import typer

from safescan import __version__, admin
from safescan.carrier.cli import carrier_app
from safescan.cluster.cli import cluster_app
from safescan.code.cli import code_app, keys_app
from safescan.code.output import run_app
from safescan.demo import demo_command
from safescan.institution.cli import institution_app
from safescan.merchant.cli import merchant_app
from safescan.wallet.cli import wallet_app

app = typer.Typer(
    name="safescan",
    help="Secure QR-code payments: sealed, signed payment codes opened only by a key carrier."
    "\n\nEvery command that prints a result takes --json: one JSON object on stdout (on failure"
    ' {"error": {...}} with a non-zero exit status). Shell completion: --install-completion.',
    no_args_is_help=True,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"safescan {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Secure QR-code payments: sealed, signed payment codes opened only by a key carrier.

    Every command that prints a result takes --json (one JSON object on stdout; on failure
    {"error": {...}} and a non-zero exit status). Shell completion: --install-completion.
    """


app.add_typer(keys_app, name="keys")
app.add_typer(code_app, name="code")
app.add_typer(carrier_app, name="carrier")
admin.register(institution_app)
app.add_typer(institution_app, name="institution")
app.add_typer(merchant_app, name="pos")
app.add_typer(wallet_app, name="wallet")
app.add_typer(cluster_app, name="cluster")
app.command("demo")(demo_command)


def main() -> None:
    """Console-script entry point."""
    run_app(app, prog_name="safescan")
