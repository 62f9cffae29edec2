"""``safescan pos``: the merchant terminal's command group, each command imported when it runs.

``safescan pos --help`` lists the commands from their stored one-line help
(:class:`safescan.code.lazy_cli.LazyGroup`) without importing the commands' modules: the
administrator client, the QR imaging stack (numpy), the sealing and the web POS stay unloaded
(``tests/code/test_lazy_cli.py`` checks the listing is exactly what the loaded commands show
and that it names every command of :data:`safescan.merchant.cli.merchant_app`).
"""

from __future__ import annotations

from typing import ClassVar

from safescan.code.cli_app import new_app
from safescan.code.lazy_cli import LazyCommand, LazyGroup, attribute

_CLI = "safescan.merchant.cli"


class _PosGroup(LazyGroup):
    # in the order `safescan pos --help` has always listed them; the texts are the first
    # paragraphs of the commands' own help (listed joined into one line: safescan.code.cli_app)
    lazy: ClassVar[dict[str, LazyCommand]] = {
        "onboard": LazyCommand(
            "Onboard a merchant (administrator) and write this terminal's configuration.",
            attribute(_CLI, "onboard"),
        ),
        "seal-setup": LazyCommand(
            "Set up local sealing (online, once): a code-signing key, its certificate, the scheme"
            "\nkeys. Afterwards `pos order --seal-here` works without the institution.",
            attribute(_CLI, "seal_setup"),
        ),
        "order": LazyCommand(
            "Create an order, show its QR code, wait for the payment and print the verified"
            " receipt.",
            attribute(_CLI, "order"),
        ),
        "orders": LazyCommand(
            "This terminal's recent orders, with their current state at the institution, a page"
            " at\na time (``--starting-after`` the last order id shown for the next page).",
            attribute(_CLI, "orders"),
        ),
        "refund": LazyCommand(
            "Refund an order fully or partly, never twice: one Idempotency-Key, retried and"
            " looked\nup until the outcome is known.",
            attribute(_CLI, "refund"),
        ),
        "serve": LazyCommand(
            "Run the web POS (staff counter page, and the customers' checkout page) for this"
            " terminal.",
            attribute(_CLI, "serve"),
        ),
        "rekey": LazyCommand(
            "Re-seal the terminal's API key and code-signing key under a new passphrase (the"
            "\ncurrent one from $SAFESCAN_POS_PASSPHRASE(_FILE) or a prompt): both or neither.",
            attribute("safescan.merchant.cli_rekey", "rekey"),
        ),
        "encrypt-key": LazyCommand(
            "Encrypt the API key of a configuration written by an older release (it held the"
            " key in\nclear), in place, under the passphrase from $SAFESCAN_POS_PASSPHRASE(_FILE)"
            " or a prompt.",
            attribute(_CLI, "encrypt_key"),
        ),
        "staff": LazyCommand(
            "Staff accounts of the web POS.", attribute("safescan.merchant.cli_staff", "staff_app")
        ),
        "webhook": LazyCommand(
            "The webhook endpoint: URL, test, delivery log, resend, secret rotation.",
            attribute("safescan.merchant.cli_webhook", "webhook_app"),
        ),
        "apikey": LazyCommand(
            "Secret API keys (Bearer) with scopes: create, list, rotate, revoke.",
            attribute("safescan.merchant.cli_apikey", "apikey_app"),
        ),
        "config": LazyCommand(
            "The POS's settings (TOML file + environment).",
            attribute("safescan.merchant.cli_config", "config_app"),
        ),
    }


pos_app = new_app(
    cls=_PosGroup,
    help="The merchant terminal (POS): orders, QR codes, live payment, refunds.",
)


#: ``python -m safescan.merchant``: the same group on its own, its page the same as
#: :data:`safescan.merchant.cli.merchant_app`'s (Typer builds a group that stands alone only
#: from a callback or commands: hence the callback, which takes no option)
pos_main_app = new_app(cls=_PosGroup, help=str(pos_app.info.help))


@pos_main_app.callback()
def _group() -> None:
    pass


__all__ = ["pos_app", "pos_main_app"]
