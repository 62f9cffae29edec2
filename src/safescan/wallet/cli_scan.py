"""``safescan wallet scan``: what a scanned code really holds, shown, and its payment if the
customer approves (:func:`scan_and_pay`); a safescan code's offer (:func:`show_offer`), an EMV
code, a link or text (shown only), the PIN, and each outcome in words or as JSON."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Any

import typer
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from safescan.carrier.errors import RestartRequired, WrongPin
from safescan.code.cli_input import minor_units
from safescan.code.currency import currency as lookup_currency
from safescan.code.display import term, visible
from safescan.code.errors import SafescanError
from safescan.code.inspect import EMV_SUMMARY_LABELS
from safescan.code.output import json_text
from safescan.wallet.cli_common import (
    EXIT_DECLINED,
    EXIT_ERROR,
    EXIT_NOT_PAYABLE,
    EXIT_REFUSED,
    EXIT_UNKNOWN,
    console,
    err_console,
    read_pin_file,
    wallet_fail,
    when,
)
from safescan.wallet.errors import (
    CodeRefusedByWallet,
    PaymentNotMade,
    PaymentOutcomeUnknown,
)
from safescan.wallet.flow import Offer, Scan, Wallet


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
        pin = read_pin_file(pin_file) if pin_file else getpass.getpass("PIN: ")
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
    return wallet_fail(exc)


def scan_and_pay(
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
            f" {when(out['paid_at'])}\n"
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
