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
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from safescan.carrier import rom
from safescan.carrier.errors import RestartRequired, WrongPin
from safescan.carrier.pin import PinFormatError, check_pin
from safescan.code.certs import TrustStore
from safescan.code.cli_input import minor_units
from safescan.code.cli_options import JsonOpt
from safescan.code.currency import currency as lookup_currency
from safescan.code.display import term, visible
from safescan.code.errors import SafescanError
from safescan.code.inspect import EMV_SUMMARY_LABELS
from safescan.code.keys import parse_pinned_keys
from safescan.code.output import emit_json, fail, json_text
from safescan.code.smallfile import read_small_text
from safescan.wallet.account import change_pin, history_with_refunds, read_statement
from safescan.wallet.errors import (
    CodeRefusedByWallet,
    PaymentNotMade,
    PaymentOutcomeUnknown,
    WalletError,
)
from safescan.wallet.flow import Offer, Scan, Wallet, enroll
from safescan.wallet.store import default_dir
from safescan.wallet.web.run import serve_command

wallet_app = typer.Typer(
    help="The customer wallet: enroll a key carrier, scan and pay, history.",
    no_args_is_help=True,
)
wallet_app.command("serve")(serve_command)  # the wallet app: safescan.wallet.web
console = Console()
err_console = Console(stderr=True)

DirOpt = Annotated[
    Path | None,
    typer.Option("--wallet-dir", help="wallet directory (default: $SAFESCAN_WALLET_DIR)"),
]

EXIT_DECLINED, EXIT_ERROR, EXIT_NOT_PAYABLE, EXIT_REFUSED, EXIT_UNKNOWN = 1, 2, 3, 4, 5


def _fail(exc: SafescanError, status: int = EXIT_ERROR, *, as_json: bool = False) -> typer.Exit:
    return fail(exc, as_json=as_json, status=status)


def _read_pin_file(path: Path, *, as_json: bool = False) -> str:
    try:
        lines = read_small_text(path).splitlines()
    except OSError as exc:
        error = WalletError(f"cannot read the PIN file: {exc.strerror}")
        raise _fail(error, as_json=as_json) from None
    return lines[0].strip() if lines else ""


def _new_pin(pin_file: Path | None, *, as_json: bool, prompt: str = "Choose a PIN") -> str:
    """A new PIN from a file or asked twice; its form is checked before anything else."""
    if pin_file is not None:
        pin = _read_pin_file(pin_file, as_json=as_json)
    else:
        pin = getpass.getpass(f"{prompt} ({rom.PIN_MIN}-{rom.PIN_MAX} digits): ")
    try:
        check_pin(pin)
    except PinFormatError as exc:
        raise _fail(WalletError(f"the PIN is not valid: {exc}"), as_json=as_json) from None
    if pin_file is None and getpass.getpass("Repeat the PIN: ") != pin:
        raise _fail(WalletError("the PINs differ"), as_json=as_json)
    return pin


def _when(ts: int) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


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
        raise _fail(exc, as_json=as_json) from None
    directory = wallet_dir or default_dir()
    pin = _new_pin(pin_file, as_json=as_json)
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
        raise _fail(exc, as_json=as_json) from None
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


def _show_other(scan: Scan) -> None:
    info = scan.info
    if scan.kind == "emv":
        table = Table(show_header=False, show_edge=False)
        summary = info.get("summary", {})
        for label, key in EMV_SUMMARY_LABELS:
            value = summary.get(key)
            if value:
                shown = ", ".join(value) if isinstance(value, list) else str(value)
                table.add_row(term(label), Text(visible(shown)))
        if "amount" not in summary:
            table.add_row("amount", "not in the code (the payer would enter it)")
        table.add_row("CRC", "ok" if info.get("crc_valid") else "[red]does not match[/]")
        for warning in info.get("warnings", []):
            table.add_row("[yellow]deviation[/]", Text(visible(warning)))
        if info.get("error"):
            table.add_row("[red]error[/]", Text(visible(str(info["error"].get("message")))))
        console.print(
            Panel(
                table,
                title="[bold yellow]EMVCo QR code: UNVERIFIED, not payable here[/]",
                subtitle="anyone can print such a code: it carries no signature",
                border_style="yellow",
            )
        )
        return
    label = "a link" if scan.kind == "url" else "text"
    console.print(
        Panel(
            Text(visible(scan.text[:500])),
            title=f"[bold]This is {term(label)}, not a payment code[/]",
            subtitle="it was not opened or followed",
            border_style="blue",
        )
    )


def show_offer(doc: dict[str, Any]) -> None:
    """Print what the customer approves: verified merchant, items, total, expiry."""
    m = doc["merchant"]
    head = Table.grid(padding=(0, 2))
    head.add_row(
        "[bold]Pay[/]", f"[bold]{term(m['name'])}[/], {term(m['city'])} ({term(m['country'])})"
    )
    who = (
        f"merchant certificate serial {doc['certificate_serial']}"
        if doc["certificate_serial"] is not None
        else f"signed by the payment institution (key {doc['issuer_kid']})"
    )
    head.add_row(
        "verified", f"[green]✓[/] {term(who)}; merchant id {term(m['id'])}, MCC {term(m['mcc'])}"
    )
    if doc["order_id"]:
        head.add_row("order", term(doc["order_id"]))
    left = doc["expires_in"]
    head.add_row("expires", f"in {left // 60} min {left % 60:02d} s")
    items = Table(show_edge=False, box=None)
    items.add_column("item")
    items.add_column("qty", justify="right")
    items.add_column("amount", justify="right")
    for i in doc["items"]:
        items.add_row(term(i["name"]), term(str(i["quantity"])), term(i["display"]))
    if doc["total_display"]:
        items.add_row("[bold]total[/]", "", f"[bold]{term(doc['total_display'])}[/]")
    body = Table.grid()
    body.add_row(head)
    if doc["items"]:
        body.add_row("")
        body.add_row(items)
    else:
        body.add_row("[yellow]static code: you enter the amount[/]")
    for w in doc["warnings"]:
        body.add_row(f"[bold yellow]warning:[/] {term(w)}")
    console.print(Panel(body, title="[bold green]Verified payment code[/]", border_style="green"))


def _ask_pin(offer: Offer, pin_file: Path | None) -> None:
    """Verify the PIN on the carrier; interactive retries show the tries left."""
    while True:
        pin = _read_pin_file(pin_file) if pin_file else getpass.getpass("PIN: ")
        try:
            offer.verify_pin(pin)
            return
        except WrongPin as exc:
            err_console.print(
                f"[red]wrong PIN[/]: {term(exc.retries_left)} tries left before the carrier wipes"
            )
            if pin_file is not None or exc.retries_left == 0:
                raise
        except RestartRequired as exc:
            raise PaymentNotMade(exc.message, cause=exc.code) from None


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
        raise _fail(exc, as_json=as_json) from None
    try:
        _scan(wallet, source, yes=yes, pin_file=pin_file, amount=amount, as_json=as_json)
    finally:
        wallet.close()


def _caution(message: str, title: str, subtitle: str) -> None:
    """A yellow panel: what happened to a payment that is not a plain success or failure
    (``message`` is shown as text, never markup; ``title`` and ``subtitle`` are ours)."""
    console.print(
        Panel(
            Text(visible(message)),
            title=f"[bold yellow]{title}[/]",  # markup-safe: our constant titles
            subtitle=subtitle,  # markup-safe: our constant subtitles
            border_style="yellow",
        )
    )


def _emit(doc: dict[str, Any]) -> None:
    print(json_text(doc), flush=True)


def _scan_fail(exc: SafescanError, as_json: bool) -> typer.Exit:
    """``scan --json`` prints one object per step; a failure is ``{"result": "error", ...}``."""
    if as_json:
        _emit({"result": "error", "error": exc.to_dict()})
        return typer.Exit(EXIT_ERROR)
    return _fail(exc)


def _scan(
    wallet: Wallet,
    source: str,
    *,
    yes: bool,
    pin_file: Path | None,
    amount: int | None,
    as_json: bool,
) -> None:
    try:
        scanned = wallet.scan(source)
    except SafescanError as exc:
        raise _scan_fail(exc, as_json) from None
    if not scanned.payable:
        if as_json:
            _emit({"result": "not_payable", "kind": scanned.kind, "info": scanned.info})
        else:
            _show_other(scanned)
        raise typer.Exit(EXIT_NOT_PAYABLE)
    try:
        offer = wallet.open(scanned.text)
    except CodeRefusedByWallet as exc:
        if as_json:
            _emit({"result": "refused", "reason": exc.reason, "message": exc.message})
        else:
            console.print(
                Panel(
                    Text(visible(exc.message)),
                    title=f"[bold red]REFUSED: {term(exc.reason.replace('_', ' '))}[/]",
                    subtitle=(
                        "an earlier payment of this code is not confirmed yet:"
                        " safescan wallet pending"
                        if exc.reason == "outcome_unknown"
                        else "nothing was paid; you were not asked anything"
                    ),
                    border_style="red",
                )
            )
        raise typer.Exit(EXIT_REFUSED) from None
    except SafescanError as exc:  # NotPayable, PaymentNotMade (carrier unusable) ...
        raise _scan_fail(exc, as_json) from None
    with offer:
        doc = offer.describe()
        if as_json:
            _emit({"result": "offer", "offer": doc})
        else:
            show_offer(doc)
        pay_amount = amount
        if doc["kind"] == "static" and pay_amount is None:
            if yes:
                missing = PaymentNotMade("a static code needs --amount", cause="amount")
                raise _scan_fail(missing, as_json)
            pay_amount = typer.prompt(
                "Amount to pay (minor units, e.g. 350 for 3.50)", value_proc=minor_units
            )
        shown = doc["total_display"] or (
            lookup_currency(doc["currency"]).format(pay_amount or 0) if doc["currency"] else ""
        )
        if not yes and not typer.confirm(f"Pay {shown} to {doc['merchant']['name']}?"):
            console.print("declined: nothing was paid")
            raise typer.Exit(EXIT_DECLINED)
        try:
            _ask_pin(offer, pin_file)
            with console.status("Signing on the key carrier and paying…") as status:

                def look_at_the_carrier() -> None:  # a display carrier asks its own question
                    status.update(
                        "Check merchant and amount on your key carrier's own screen, then press"
                        " OK there (Cancel if they are not what you expect)…"
                    )

                paid = offer.pay(
                    None,
                    amount=pay_amount if doc["kind"] == "static" else None,
                    on_confirm=look_at_the_carrier,
                )
        except PaymentOutcomeUnknown as exc:
            if as_json:
                _emit({"result": "unknown", "error": exc.to_dict()})
            else:
                _caution(
                    exc.message,
                    "OUTCOME NOT KNOWN YET",
                    "do not pay again: run `safescan wallet pending`",
                )
            raise typer.Exit(EXIT_UNKNOWN) from None
        except SafescanError as exc:
            raise _scan_fail(exc, as_json) from None
    out = paid.to_json()
    if as_json:
        _emit({"result": "paid", "payment": out})
        return
    console.print(
        Panel(
            f"[bold green]PAID[/] {term(out['amount_display'])} to {term(out['merchant_name'])},"
            f" {term(out['merchant_city'])}\n"
            f"payment {term(out['payment_id'])} · order {term(out['order_id'] or '-')} ·"
            f" {_when(out['paid_at'])}\n"
            "[green]receipt verified[/]: signed by the institution"
            f" (key {term(out['issuer_kid'])}),"
            " matches this code, merchant, amount and currency",
            border_style="green",
        )
    )
    if paid.history_error is not None:  # paid all the same: told apart, never as a failure
        _caution(
            paid.history_error,
            "PAID, BUT NOT SAVED IN THIS WALLET'S HISTORY",
            "do not pay this code again",
        )


@wallet_app.command()
def status(as_json: JsonOpt = False, wallet_dir: DirOpt = None) -> None:
    """The wallet and its key carrier: institution keys, revocation list, carrier counters.

    Exit status 0, or 2 when the carrier cannot be reached or authenticated.
    """
    try:
        with Wallet.load(wallet_dir) as wallet:
            doc = wallet.status()
    except SafescanError as exc:
        raise _fail(exc, as_json=as_json) from None
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
        console.print(table)
    if not card["reachable"]:
        raise typer.Exit(EXIT_ERROR)


@wallet_app.command()
def balance(as_json: JsonOpt = False, wallet_dir: DirOpt = None) -> None:
    """Your balances and recent payments with their refunds, from the institution.

    The wallet proves it holds your key carrier (the carrier signs the institution's
    challenge; no PIN needed) and the answer is sealed to this request alone.
    """
    try:
        with Wallet.load(wallet_dir) as wallet:
            doc = read_statement(wallet)
    except SafescanError as exc:
        raise _fail(exc, as_json=as_json) from None
    if as_json:
        emit_json(doc)
        return
    table = Table(show_header=False, show_edge=False)
    for b in doc.get("balances", []) or [{"display": "0 (no account yet)"}]:
        table.add_row("balance", f"[bold]{term(b['display'])}[/]")
    console.print(table)
    _print_statement_payments(doc.get("payments", []))


def _print_statement_payments(payments: list[dict[str, Any]]) -> None:
    if not payments:
        console.print("no payments yet")
        return
    table = Table(show_edge=False)
    for col in ("when", "merchant", "amount", "refunded", "payment"):
        table.add_column(col, justify="right" if col in ("amount", "refunded") else "left")
    for p in payments:
        table.add_row(
            _when(p["paid_at"]),
            Text(visible(f"{p['merchant_name']}, {p['merchant_city']}")),
            term(p["display"]),
            term(p["refunded_display"] if p["refunded"] else "-"),
            term(p["payment_id"]),
        )
    console.print(table)


@wallet_app.command()
def pending(as_json: JsonOpt = False, wallet_dir: DirOpt = None) -> None:
    """Payments sent whose outcome is not known yet: ask the institution again.

    Each is reported ``paid`` (its verified receipt is now in the history), ``not_charged``
    (certain: the institution never processed it, or refused it) or still ``unknown``. Exit
    status 0 when every outcome is known, 5 while one is still unknown.
    """
    try:
        with Wallet.load(wallet_dir) as wallet:
            results = wallet.resolve_pending()
    except SafescanError as exc:
        raise _fail(exc, as_json=as_json) from None
    if as_json:
        emit_json({"pending": results})
    elif not results:
        console.print("no payment with an unknown outcome")
    for r in results if not as_json else []:
        p = r["pending"]
        cur = lookup_currency(p["currency"])
        what = f"{cur.format(p['amount'])} to {p['merchant_name']} ({_when(p['created_at'])})"
        if r["outcome"] == "paid":
            paid_id = r["payment"]["payment_id"]
            console.print(f"[green]paid[/] {term(what)}: payment {term(paid_id)}")
        elif r["outcome"] == "not_charged":
            console.print(f"[cyan]not charged[/] {term(what)}: {term(r['message'])}")
        else:
            console.print(f"[yellow]still unknown[/] {term(what)}: {term(r['message'])}")
    if any(r["outcome"] == "unknown" for r in results):
        raise typer.Exit(EXIT_UNKNOWN)


@wallet_app.command()
def history(
    limit: Annotated[int, typer.Option(help="how many", min=1, max=1000)] = 20,
    offline: Annotated[
        bool, typer.Option("--offline", help="do not ask the institution about refunds")
    ] = False,
    as_json: JsonOpt = False,
    wallet_dir: DirOpt = None,
) -> None:
    """Your payments (verified receipts), with the refunds the institution made on them.

    Refunds are asked from the institution with the key carrier (as ``balance``); when that
    is not possible the receipts are shown alone, marked "refunds not checked".
    """
    try:
        with Wallet.load(wallet_dir) as wallet:
            doc = history_with_refunds(wallet, limit, offline=offline)
    except SafescanError as exc:
        raise _fail(exc, as_json=as_json) from None
    if as_json:
        emit_json(doc)
        return
    rows, refunds_error = doc["payments"], doc.get("refunds_error")
    if not rows:
        console.print("no payments yet")
        return
    table = Table(show_edge=False)
    for col in ("when", "merchant", "items", "amount", "refunded", "payment"):
        table.add_column(col, justify="right" if col in ("amount", "refunded") else "left")
    for r in rows:
        cur = lookup_currency(r["currency"])
        items = ", ".join(f"{q}× {n}" for n, q, _ in r["items"]) or "-"
        refunded = "?" if refunds_error else (cur.format(r["refunded"]) if r["refunded"] else "-")
        table.add_row(
            _when(r["paid_at"]),
            Text(visible(f"{r['merchant_name']}, {r['merchant_city']}")),
            Text(visible(items)),
            term(cur.format(r["amount"])),
            term(refunded),
            term(r["payment_id"]),
        )
    console.print(table)
    for r in rows:
        for refund in r["refunds"]:
            console.print(
                f"[magenta]refund[/] {term(refund['display'])} on payment {term(r['payment_id'])}"
                f" ({_when(refund['created_at'])})"
            )
    if refunds_error:
        console.print(f"[yellow]refunds not checked[/]: {term(refunds_error)}")


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
        raise _fail(exc, as_json=as_json) from None
    with wallet:
        if old_pin_file is not None:
            old = _read_pin_file(old_pin_file, as_json=as_json)
        else:
            old = getpass.getpass("Current PIN: ")
        new = _new_pin(new_pin_file, as_json=as_json, prompt="New PIN")
        try:
            change_pin(wallet, old, new)
        except WrongPin as exc:
            error = WalletError(
                f"wrong PIN: {exc.retries_left} tries left before the carrier wipes;"
                " the PIN was not changed"
            )
            raise _fail(error, as_json=as_json) from None
        except SafescanError as exc:
            raise _fail(exc, as_json=as_json) from None
    if as_json:
        emit_json({"pin_changed": True})
        return
    console.print("[green]PIN changed[/] on the key carrier")


config_app = typer.Typer(
    help="The wallet's settings (TOML file + environment).", no_args_is_help=True
)
wallet_app.add_typer(config_app, name="config")


@wallet_app.callback()
def _settings(
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
        raise _fail(exc) from None
    os.environ[ENV_CONFIG] = str(config)  # the commands (and the wallet app) read it


@config_app.command("show")
def config_show(as_json: JsonOpt = False, wallet_dir: DirOpt = None) -> None:
    """Print the effective settings and what wallet.json holds (it holds no secret)."""
    from safescan.wallet.settings import describe

    try:
        doc = describe(None, wallet_dir or default_dir())
    except SafescanError as exc:
        raise _fail(exc, as_json=as_json) from None
    if as_json:
        print(json.dumps(doc))
        return
    print(json.dumps(doc, indent=2))
