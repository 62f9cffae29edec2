"""`safescan wallet balance`, `pending` and `history`: what the wallet and the institution
know of the customer's payments and refunds; registered by :mod:`safescan.wallet.cli`."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from safescan.code.cli_options import JsonOpt
from safescan.code.currency import currency as lookup_currency
from safescan.code.display import term, visible
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json
from safescan.wallet.account import history_with_refunds, read_statement
from safescan.wallet.cli_common import (
    EXIT_UNKNOWN,
    DirOpt,
    console,
    wallet_fail,
    when,
)
from safescan.wallet.flow import Wallet


def balance(as_json: JsonOpt = False, wallet_dir: DirOpt = None) -> None:
    """Your balances and recent payments with their refunds, from the institution.

    The wallet proves it holds your key carrier (the carrier signs the institution's
    challenge; no PIN needed) and the answer is sealed to this request alone.
    """
    try:
        with Wallet.load(wallet_dir) as wallet:
            doc = read_statement(wallet)
    except SafescanError as exc:
        raise wallet_fail(exc, as_json=as_json) from None
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
            when(p["paid_at"]),
            Text(visible(f"{p['merchant_name']}, {p['merchant_city']}")),
            term(p["display"]),
            term(p["refunded_display"] if p["refunded"] else "-"),
            term(p["payment_id"]),
        )
    console.print(table)


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
        raise wallet_fail(exc, as_json=as_json) from None
    if as_json:
        emit_json({"pending": results})
    elif not results:
        console.print("no payment with an unknown outcome")
    for r in results if not as_json else []:
        p = r["pending"]
        cur = lookup_currency(p["currency"])
        what = f"{cur.format(p['amount'])} to {p['merchant_name']} ({when(p['created_at'])})"
        if r["outcome"] == "paid":
            paid_id = r["payment"]["payment_id"]
            console.print(f"[green]paid[/] {term(what)}: payment {term(paid_id)}")
        elif r["outcome"] == "not_charged":
            console.print(f"[cyan]not charged[/] {term(what)}: {term(r['message'])}")
        else:
            console.print(f"[yellow]still unknown[/] {term(what)}: {term(r['message'])}")
    if any(r["outcome"] == "unknown" for r in results):
        raise typer.Exit(EXIT_UNKNOWN)


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
        raise wallet_fail(exc, as_json=as_json) from None
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
            when(r["paid_at"]),
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
                f" ({when(refund['created_at'])})"
            )
    if refunds_error:
        console.print(f"[yellow]refunds not checked[/]: {term(refunds_error)}")
