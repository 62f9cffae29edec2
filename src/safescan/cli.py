"""The ``safescan`` command line: one entry point, one sub-command group per part.

Each group's module is imported only when one of its commands runs (``safescan.code.lazy_cli``):
``safescan --help`` and ``safescan code inspect`` do not pay for the institution server, the
QR imaging stack or the demo (bench/bench_cli_startup.py times it).
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import typer

from safescan import __version__
from safescan.code.cli_app import new_app
from safescan.code.lazy_cli import LazyCommand, LazyGroup, attribute


def _institution_app() -> typer.Typer:
    from safescan import admin
    from safescan.institution.cli import institution_app

    admin.register(institution_app)
    return institution_app


class _Safescan(LazyGroup):
    plain_help = True  # `safescan --help` in 0.15 s: see LazyGroup.plain_help
    # in the order `safescan --help` has always listed them (commands before groups); the help
    # texts are the groups' own first paragraphs (tests/code/test_lazy_cli.py)
    lazy: ClassVar[dict[str, LazyCommand]] = {
        "demo": LazyCommand(
            "Run the end-to-end demo: institution, key carrier, POS, wallet, payment, attacks.",
            attribute("safescan.demo", "demo_command"),
        ),
        "keys": LazyCommand(
            "Generate and inspect keys and certificates.",
            attribute("safescan.code.cli", "keys_app"),
        ),
        "code": LazyCommand(
            "Make and inspect payment codes.", attribute("safescan.code.code_cli", "code_app")
        ),
        "carrier": LazyCommand(
            "The key carrier (emulated security token).",
            attribute("safescan.carrier.cli", "carrier_app"),
        ),
        "institution": LazyCommand(
            "The payment institution: API server, ledger, audit.", _institution_app
        ),
        "pos": LazyCommand(
            "The merchant terminal (POS): orders, QR codes, live payment, refunds.",
            attribute("safescan.merchant.pos_cli", "pos_app"),
        ),
        "wallet": LazyCommand(
            "The customer wallet: enroll a key carrier, scan and pay, history.",
            attribute("safescan.wallet.wallet_cli", "wallet_group"),
        ),
        "cluster": LazyCommand(
            "A PostgreSQL HA cluster on this machine: 3 etcd, 3 Patroni/PostgreSQL (synchronous"
            " replication), HAProxy, 2 institution API processes. All state in one directory.",
            attribute("safescan.cluster.cli", "cluster_app"),
        ),
    }


app = new_app(
    name="safescan",
    cls=_Safescan,
    help="Secure QR-code payments: sealed, signed payment codes opened only by a key carrier."
    "\n\nEvery command that prints a result takes --json: one JSON object on stdout (on failure"
    ' {"error": {...}} with a non-zero exit status). Shell completion: --install-completion.',
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"safescan {__version__}")  # term-safe: our version
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


def main() -> None:
    """Console-script entry point."""
    from safescan.code.output import run_app

    run_app(app, prog_name="safescan")
