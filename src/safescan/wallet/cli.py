"""``safescan wallet ...``: the customer's wallet on the command line.

    safescan wallet enroll --institution URL --carrier tcp://127.0.0.1:9000 --token enr_...
    safescan wallet scan code.png            (or the payload text itself)
    safescan wallet scan code.png --yes --pin-file pin.txt      (for scripts)
    safescan wallet history        (verified receipts, with the refunds the institution made)
    safescan wallet balance        (balances, payments and refunds, read with the key carrier)
    safescan wallet change-pin
    safescan wallet pending        (payments whose outcome is not known yet: ask again)
    safescan wallet status         (institution keys, revocation list, the carrier's counters)
    safescan wallet serve          (the mobile web app: camera scan, PIN pad; safescan.wallet.web)

Exit status of ``scan``: 0 paid, 1 declined by you, 2 error (nothing paid), 3 not a safescan
payment code (EMV, link, text: shown only), 4 code refused before any question, 5 sent but the
outcome is not known yet (the wallet keeps it: ``safescan wallet pending``).

The scan flow and its screens are :mod:`safescan.wallet.cli_scan`; balance, pending and history
are :mod:`safescan.wallet.cli_account`; what the command modules
share (consoles, ``--wallet-dir``, exit statuses, PIN files) is :mod:`safescan.wallet.cli_common`.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from safescan.carrier.errors import WrongPin
from safescan.code.certs import TrustStore
from safescan.code.cli_app import new_app
from safescan.code.cli_input import minor_units
from safescan.code.cli_options import JsonOpt
from safescan.code.display import term
from safescan.code.errors import SafescanError
from safescan.code.keys import parse_pinned_keys
from safescan.code.output import emit_json
from safescan.wallet.account import change_pin
from safescan.wallet.cli_account import balance, history, pending
from safescan.wallet.cli_common import (
    EXIT_ERROR,
    DirOpt,
    console,
    new_pin,
    read_pin_file,
    wallet_fail,
)
from safescan.wallet.cli_scan import scan_and_pay
from safescan.wallet.errors import WalletError
from safescan.wallet.flow import Wallet, enroll
from safescan.wallet.store import default_dir
from safescan.wallet.wallet_cli import HELP, settings
from safescan.wallet.web.run import serve_command

wallet_app = new_app(help=HELP)
wallet_app.command("serve")(serve_command)  # the wallet app: safescan.wallet.web


@wallet_app.command("enroll")
def enroll_command(
    institution: Annotated[str, typer.Option(help="institution base URL")],
    carrier: Annotated[str, typer.Option(help="key carrier URL (tcp://, serial://)")],
    token: Annotated[str, typer.Option(help="the enrollment token from your institution")],
    pin_file: Annotated[
        Path | None, typer.Option(help="read the new PIN from this file (scripts)")
    ] = None,
    retry_limit: Annotated[int, typer.Option(help="wrong PINs before the carrier wipes")] = 5,
    customer_id: Annotated[str | None, typer.Option(help="your customer id")] = None,
    institution_key: Annotated[
        list[str] | None,
        typer.Option(
            "--institution-key",
            help="KID:HEX of the institution's root key, from your institution (repeatable);"
            " without it the keys are fetched from the URL and trusted on first use",
        ),
    ] = None,
    wallet_dir: DirOpt = None,
    institution_ca: Annotated[
        Path | None,
        typer.Option(
            help="the institution's CA certificate (PEM, from your institution): pinned in the"
            " wallet for every HTTPS connection"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register your key carrier with the institution and set its PIN.

    Every input is checked on this machine first (PIN form, retry limit, token, addresses,
    wallet directory): a mistake is refused before the single-use token is spent.
    """
    from safescan.web.pki import cert_pem, load_ca

    try:
        pinned = TrustStore(parse_pinned_keys(institution_key)) if institution_key else None
        ca_pem = cert_pem(load_ca(institution_ca)).decode() if institution_ca else None
    except SafescanError as exc:
        raise wallet_fail(exc, as_json=as_json) from None
    directory = wallet_dir or default_dir()
    pin = new_pin(pin_file, as_json=as_json)
    try:
        with console.status("Personalising the key carrier…"):
            cfg = enroll(
                directory=directory,
                institution_url=institution,
                carrier_url=carrier,
                token=token,
                pin=pin,
                retry_limit=retry_limit,
                customer_id=customer_id,
                trust=pinned,
                tls_ca=ca_pem,
            )
    except SafescanError as exc:
        raise wallet_fail(exc, as_json=as_json) from None
    if as_json:
        emit_json(
            {
                "enrolled": True,
                "carrier_serial": cfg.carrier_serial,
                "customer_id": cfg.customer_id,
                "wallet_dir": str(directory),
            }
        )
        return
    console.print(
        f"[green]enrolled[/]: key carrier {term(cfg.carrier_serial)} is personalised; wallet in"
        f" {term(directory)}"
    )


@wallet_app.command()
def scan(
    source: Annotated[str, typer.Argument(help="an image file, or the payload text")],
    yes: Annotated[bool, typer.Option("--yes", help="do not ask for confirmation")] = False,
    pin_file: Annotated[Path | None, typer.Option(help="read the PIN from this file")] = None,
    amount: Annotated[
        int | None,
        typer.Option(help="amount for a static code (minor units)", parser=minor_units),
    ] = None,
    as_json: JsonOpt = False,
    wallet_dir: DirOpt = None,
) -> None:
    """Scan a code: show what it really holds, and pay it if you approve."""
    try:
        wallet = Wallet.load(wallet_dir)
    except SafescanError as exc:
        raise wallet_fail(exc, as_json=as_json) from None
    try:
        scan_and_pay(wallet, source, yes=yes, pin_file=pin_file, amount=amount, as_json=as_json)
    finally:
        wallet.close()


@wallet_app.command()
def status(as_json: JsonOpt = False, wallet_dir: DirOpt = None) -> None:
    """The wallet and its key carrier: institution keys, revocation list, carrier counters.

    Exit status 0, or 2 when the carrier cannot be reached or authenticated.
    """
    try:
        with Wallet.load(wallet_dir) as wallet:
            doc = wallet.status()
    except SafescanError as exc:
        raise wallet_fail(exc, as_json=as_json) from None
    card = doc["carrier"]
    if as_json:
        emit_json(doc)
    else:
        crl = doc["revocation_list"]
        table = Table(show_header=False, show_edge=False)
        table.add_row("institution", term(doc["institution_url"]))
        for kid, key in doc["institution_keys"].items():
            table.add_row(f"root key {term(kid)}", term(key))
        table.add_row(
            "revocation list",
            f"{term(crl['sequence'])} ({term(crl['revoked_serials'])} revoked,"
            f" from {term(crl['source'])})",
        )
        table.add_row("key carrier", f"{term(doc['carrier_serial'])} at {term(doc['carrier_url'])}")
        if card["reachable"]:
            table.add_row(
                "  lifecycle", f"{term(card['lifecycle'])} (firmware {term(card['version'])})"
            )
            table.add_row("  payments signed", term(str(card["signature_counter"])))
            table.add_row(
                "  PIN tries left",
                f"{term(card['pin_retries_left'])} of {term(card['pin_retry_limit'])}",
            )
            table.add_row("  its revocation list", term(str(card["revocations_sequence"])))
            for notice in card["notices"]:
                table.add_row("  [yellow]notice[/]", term(notice))
        else:
            table.add_row("  [red]unreachable[/]", term(card["error"]))
            for notice in crl["notices"]:  # (with a carrier, among its notices above)
                table.add_row("  [yellow]notice[/]", term(notice))
        console.print(table)
    if not card["reachable"]:
        raise typer.Exit(EXIT_ERROR)


wallet_app.command()(balance)
wallet_app.command()(pending)
wallet_app.command()(history)


@wallet_app.command("change-pin")
def change_pin_command(
    old_pin_file: Annotated[
        Path | None, typer.Option(help="read the current PIN from this file (scripts)")
    ] = None,
    new_pin_file: Annotated[
        Path | None, typer.Option(help="read the new PIN from this file (scripts)")
    ] = None,
    as_json: JsonOpt = False,
    wallet_dir: DirOpt = None,
) -> None:
    """Change the key carrier's PIN (the current PIN is checked by the carrier: a wrong one
    spends a try, like any PIN entry)."""
    try:
        wallet = Wallet.load(wallet_dir)
    except SafescanError as exc:
        raise wallet_fail(exc, as_json=as_json) from None
    with wallet:
        if old_pin_file is not None:
            old = read_pin_file(old_pin_file, as_json=as_json)
        else:
            old = getpass.getpass("Current PIN: ")
        new = new_pin(new_pin_file, as_json=as_json, prompt="New PIN")
        try:
            change_pin(wallet, old, new)
        except WrongPin as exc:
            error = WalletError(
                f"wrong PIN: {exc.retries_left} tries left before the carrier wipes;"
                " the PIN was not changed"
            )
            raise wallet_fail(error, as_json=as_json) from None
        except SafescanError as exc:
            raise wallet_fail(exc, as_json=as_json) from None
    if as_json:
        emit_json({"pin_changed": True})
        return
    console.print("[green]PIN changed[/] on the key carrier")


config_app = new_app(help="The wallet's settings (TOML file + environment).")
wallet_app.add_typer(config_app, name="config")


wallet_app.callback()(settings)  # --config, shared with the lazy group (wallet_cli)


@config_app.command("show")
def config_show(as_json: JsonOpt = False, wallet_dir: DirOpt = None) -> None:
    """Print the effective settings and what wallet.json holds (it holds no secret)."""
    from safescan.wallet.settings import describe

    try:
        doc = describe(None, wallet_dir or default_dir())
    except SafescanError as exc:
        raise wallet_fail(exc, as_json=as_json) from None
    if as_json:
        print(json.dumps(doc))
        return
    print(json.dumps(doc, indent=2))
