"""The ``safescan`` command line: one entry point, one sub-command group per part."""

from __future__ import annotations

import typer

from safescan.carrier.cli import carrier_app
from safescan.cluster.cli import cluster_app
from safescan.code.cli import code_app, keys_app
from safescan.demo import demo_command
from safescan.institution.cli import institution_app
from safescan.merchant.cli import merchant_app
from safescan.wallet.cli import wallet_app

app = typer.Typer(
    name="safescan",
    help="Secure QR-code payments: sealed, signed payment codes opened only by a key carrier.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(code_app, name="code")
app.add_typer(carrier_app, name="carrier")
app.add_typer(institution_app, name="institution")
app.add_typer(merchant_app, name="pos")
app.add_typer(wallet_app, name="wallet")
app.add_typer(cluster_app, name="cluster")
app.command("demo")(demo_command)


def main() -> None:
    """Console-script entry point."""
    app()
