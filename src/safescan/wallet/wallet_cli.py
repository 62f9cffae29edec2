"""``safescan wallet``: the customer wallet's command group, each command imported when it runs.

``safescan wallet --help`` lists the commands from their stored one-line help
(:class:`safescan.code.lazy_cli.LazyGroup`) without importing the wallet (its flow, store,
scanning and web app: ~0.7 s of CPU); ``tests/code/test_lazy_cli.py`` checks the listing is
exactly what the loaded commands show and that it names every command of
:data:`safescan.wallet.cli.wallet_app`. The group's own option (``--config``) is
:func:`settings`, the callback of both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, ClassVar

import typer

from safescan.code.cli_app import new_app
from safescan.code.errors import SafescanError
from safescan.code.lazy_cli import LazyCommand, LazyGroup, attribute

_CLI = "safescan.wallet.cli"
HELP = "The customer wallet: enroll a key carrier, scan and pay, history."


def settings(
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="settings file (FILE.toml: [wallet] [server] [tls]) for every command"
            " (default: $SAFESCAN_WALLET_CONFIG)",
        ),
    ] = None,
) -> None:
    """The customer wallet: enroll a key carrier, scan and pay, history."""
    if config is None:
        return
    from safescan.wallet.settings import ENV_CONFIG, wallet_settings

    try:
        wallet_settings(config)  # a bad file stops here, before any command runs
    except SafescanError as exc:
        from safescan.wallet.cli_common import wallet_fail

        raise wallet_fail(exc) from None
    os.environ[ENV_CONFIG] = str(config)  # the commands (and the wallet app) read it


class _WalletGroup(LazyGroup):
    # in the order `safescan wallet --help` has always listed them; the texts are the first
    # paragraphs of the commands' own help
    lazy: ClassVar[dict[str, LazyCommand]] = {
        "serve": LazyCommand(
            "Run the wallet app (mobile web: camera scan, verified offer, PIN pad, history).",
            attribute(_CLI, "serve_command"),
        ),
        "enroll": LazyCommand(
            "Register your key carrier with the institution and set its PIN.",
            attribute(_CLI, "enroll_command"),
        ),
        "scan": LazyCommand(
            "Scan a code: show what it really holds, and pay it if you approve.",
            attribute(_CLI, "scan"),
        ),
        "status": LazyCommand(
            "The wallet and its key carrier: institution keys, revocation list, carrier counters.",
            attribute(_CLI, "status"),
        ),
        "balance": LazyCommand(
            "Your balances and recent payments with their refunds, from the institution.",
            attribute(_CLI, "balance"),
        ),
        "pending": LazyCommand(
            "Payments sent whose outcome is not known yet: ask the institution again.",
            attribute(_CLI, "pending"),
        ),
        "history": LazyCommand(
            "Your payments (verified receipts), with the refunds the institution made on them.",
            attribute(_CLI, "history"),
        ),
        "change-pin": LazyCommand(
            "Change the key carrier's PIN (the current PIN is checked by the carrier: a wrong one"
            " spends a try, like any PIN entry).",
            attribute(_CLI, "change_pin_command"),
        ),
        "config": LazyCommand(
            "The wallet's settings (TOML file + environment).", attribute(_CLI, "config_app")
        ),
    }


wallet_group = new_app(cls=_WalletGroup, help=HELP)
wallet_group.callback()(settings)

__all__ = ["HELP", "settings", "wallet_group"]
