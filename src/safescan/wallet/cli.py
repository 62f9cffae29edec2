"""``safescan wallet ...``: the customer's wallet on the command line.

    safescan wallet enroll --institution URL --carrier tcp://127.0.0.1:9000 --token enr_...
    safescan wallet scan code.png            (or the payload text itself)
    safescan wallet scan code.png --yes --pin-file pin.txt      (for scripts)
    safescan wallet history
    safescan wallet status         (institution keys, revocation list, the carrier's counters)

Exit status of ``scan``: 0 paid, 1 declined by you, 2 error (nothing paid), 3 not a safescan
payment code (EMV, link, text: shown only), 4 code refused before any question.
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from safescan.carrier.errors import RestartRequired, WrongPin
from safescan.code.certs import TrustStore
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.code.keys import parse_pinned_keys
from safescan.wallet.errors import CodeRefusedByWallet, PaymentNotMade
from safescan.wallet.flow import Offer, Scan, Wallet, enroll
from safescan.wallet.store import History, WalletConfig, default_dir

wallet_app = typer.Typer(
    help="The customer wallet: enroll a key carrier, scan and pay, history.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

DirOpt = Annotated[
    Path | None,
    typer.Option("--wallet-dir", help="wallet directory (default: $SAFESCAN_WALLET_DIR)"),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable output")]

EXIT_DECLINED, EXIT_ERROR, EXIT_NOT_PAYABLE, EXIT_REFUSED = 1, 2, 3, 4


def _fail(exc: SafescanError, status: int = EXIT_ERROR) -> typer.Exit:
    err_console.print(f"[bold red]error:[/] {exc.message} [dim]({exc.code})[/]")
    return typer.Exit(status)


def _read_pin_file(path: Path) -> str:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        err_console.print(f"[red]error:[/] cannot read the PIN file: {exc.strerror}")
        raise typer.Exit(EXIT_ERROR) from None
    return lines[0].strip() if lines else ""


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
) -> None:
    """Register your key carrier with the institution and set its PIN."""
    try:
        pinned = TrustStore(parse_pinned_keys(institution_key)) if institution_key else None
    except SafescanError as exc:
        raise _fail(exc) from None
    if pin_file is not None:
        pin = _read_pin_file(pin_file)
    else:
        pin = getpass.getpass("Choose a PIN (4-16 digits): ")
        if getpass.getpass("Repeat the PIN: ") != pin:
            err_console.print("[red]error:[/] the PINs differ")
            raise typer.Exit(EXIT_ERROR)
    directory = wallet_dir or default_dir()
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
            )
    except SafescanError as exc:
        raise _fail(exc) from None
    console.print(
        f"[green]enrolled[/]: key carrier {cfg.carrier_serial} is personalised; wallet in"
        f" {directory}"
    )


def _show_other(scan: Scan) -> None:
    info = scan.info
    if scan.kind == "emv":
        table = Table(show_header=False, show_edge=False)
        for label, key in (("merchant", "merchant_name"), ("city", "merchant_city")):
            if info.get(key):
                table.add_row(label, str(info[key]))
        if info.get("amount"):
            table.add_row("amount", f"{info['amount']} ({info.get('currency', '?')})")
        table.add_row("CRC", "ok" if info.get("crc_valid") else "[red]does not match[/]")
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
            Text(scan.text[:500]),
            title=f"[bold]This is {label}, not a payment code[/]",
            subtitle="it was not opened or followed",
            border_style="blue",
        )
    )


def show_offer(doc: dict[str, Any]) -> None:
    """Print what the customer approves: verified merchant, items, total, expiry."""
    m = doc["merchant"]
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]Pay[/]", f"[bold]{m['name']}[/], {m['city']} ({m['country']})")
    who = (
        f"merchant certificate serial {doc['certificate_serial']}"
        if doc["certificate_serial"] is not None
        else f"signed by the payment institution (key {doc['issuer_kid']})"
    )
    head.add_row("verified", f"[green]✓[/] {who}; merchant id {m['id']}, MCC {m['mcc']}")
    if doc["order_id"]:
        head.add_row("order", doc["order_id"])
    left = doc["expires_in"]
    head.add_row("expires", f"in {left // 60} min {left % 60:02d} s")
    items = Table(show_edge=False, box=None)
    items.add_column("item")
    items.add_column("qty", justify="right")
    items.add_column("amount", justify="right")
    for i in doc["items"]:
        items.add_row(i["name"], str(i["quantity"]), i["display"])
    if doc["total_display"]:
        items.add_row("[bold]total[/]", "", f"[bold]{doc['total_display']}[/]")
    body = Table.grid()
    body.add_row(head)
    if doc["items"]:
        body.add_row("")
        body.add_row(items)
    else:
        body.add_row("[yellow]static code: you enter the amount[/]")
    for w in doc["warnings"]:
        body.add_row(f"[bold yellow]warning:[/] {w}")
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
                f"[red]wrong PIN[/]: {exc.retries_left} tries left before the carrier wipes"
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
        int | None, typer.Option(help="amount for a static code (minor units)")
    ] = None,
    as_json: JsonOpt = False,
    wallet_dir: DirOpt = None,
) -> None:
    """Scan a code: show what it really holds, and pay it if you approve."""
    try:
        wallet = Wallet.load(wallet_dir)
    except SafescanError as exc:
        raise _fail(exc) from None
    try:
        _scan(wallet, source, yes=yes, pin_file=pin_file, amount=amount, as_json=as_json)
    finally:
        wallet.close()


def _emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, ensure_ascii=False), flush=True)


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
        if as_json:
            _emit({"result": "error", "error": exc.to_dict()})
        raise _fail(exc) from None
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
                    Text(exc.message),
                    title=f"[bold red]REFUSED: {exc.reason.replace('_', ' ')}[/]",
                    subtitle="nothing was paid; you were not asked anything",
                    border_style="red",
                )
            )
        raise typer.Exit(EXIT_REFUSED) from None
    except SafescanError as exc:  # NotPayable, PaymentNotMade (carrier unusable) ...
        if as_json:
            _emit({"result": "error", "error": exc.to_dict()})
        raise _fail(exc) from None
    with offer:
        doc = offer.describe()
        if as_json:
            _emit({"result": "offer", "offer": doc})
        else:
            show_offer(doc)
        pay_amount = amount
        if doc["kind"] == "static" and pay_amount is None:
            if yes:
                raise _fail(PaymentNotMade("a static code needs --amount", cause="amount"))
            pay_amount = typer.prompt("Amount to pay (minor units, e.g. 350 for 3.50)", type=int)
        shown = doc["total_display"] or (
            lookup_currency(doc["currency"]).format(pay_amount or 0) if doc["currency"] else ""
        )
        if not yes and not typer.confirm(f"Pay {shown} to {doc['merchant']['name']}?"):
            console.print("declined: nothing was paid")
            raise typer.Exit(EXIT_DECLINED)
        try:
            _ask_pin(offer, pin_file)
            with console.status("Signing on the key carrier and paying…"):
                paid = offer.pay(None, amount=pay_amount if doc["kind"] == "static" else None)
        except SafescanError as exc:
            if as_json:
                _emit({"result": "error", "error": exc.to_dict()})
            raise _fail(exc) from None
    out = paid.to_json()
    if as_json:
        _emit({"result": "paid", "payment": out})
        return
    console.print(
        Panel(
            f"[bold green]PAID[/] {out['amount_display']} to {out['merchant_name']},"
            f" {out['merchant_city']}\n"
            f"payment {out['payment_id']} · order {out['order_id'] or '-'} ·"
            f" {_when(out['paid_at'])}\n"
            f"[green]receipt verified[/]: signed by the institution (key {out['issuer_kid']}),"
            " matches this code, merchant, amount and currency",
            border_style="green",
        )
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
        raise _fail(exc) from None
    card = doc["carrier"]
    if as_json:
        print(json.dumps(doc, ensure_ascii=False))
    else:
        crl = doc["revocation_list"]
        table = Table(show_header=False, show_edge=False)
        table.add_row("institution", doc["institution_url"])
        for kid, key in doc["institution_keys"].items():
            table.add_row(f"root key {kid}", key)
        table.add_row(
            "revocation list",
            f"{crl['sequence']} ({crl['revoked_serials']} revoked, from {crl['source']})",
        )
        table.add_row("key carrier", f"{doc['carrier_serial']} at {doc['carrier_url']}")
        if card["reachable"]:
            table.add_row("  lifecycle", f"{card['lifecycle']} (firmware {card['version']})")
            table.add_row("  payments signed", str(card["signature_counter"]))
            table.add_row(
                "  PIN tries left", f"{card['pin_retries_left']} of {card['pin_retry_limit']}"
            )
            table.add_row("  its revocation list", str(card["revocations_sequence"]))
            for notice in card["notices"]:
                table.add_row("  [yellow]notice[/]", notice)
        else:
            table.add_row("  [red]unreachable[/]", card["error"])
        console.print(table)
    if not card["reachable"]:
        raise typer.Exit(EXIT_ERROR)


@wallet_app.command()
def history(
    limit: Annotated[int, typer.Option(help="how many")] = 20,
    as_json: JsonOpt = False,
    wallet_dir: DirOpt = None,
) -> None:
    """Your payments (verified receipts)."""
    try:
        cfg = WalletConfig.load(wallet_dir)
        store = History(cfg.history_path)
    except SafescanError as exc:
        raise _fail(exc) from None
    try:
        rows = store.recent(limit)
    finally:
        store.close()
    if as_json:
        print(json.dumps({"payments": rows}, ensure_ascii=False))
        return
    if not rows:
        console.print("no payments yet")
        return
    table = Table(show_edge=False)
    for col in ("when", "merchant", "items", "amount", "payment"):
        table.add_column(col, justify="right" if col == "amount" else "left")
    for r in rows:
        cur = lookup_currency(r["currency"])
        items = ", ".join(f"{q}× {n}" for n, q, _ in r["items"]) or "-"
        table.add_row(
            _when(r["paid_at"]),
            f"{r['merchant_name']}, {r['merchant_city']}",
            items,
            cur.format(r["amount"]),
            r["payment_id"],
        )
    console.print(table)
