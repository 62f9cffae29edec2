"""``safescan pos ...``: the merchant terminal on the command line (listed and loaded command by
command through :mod:`safescan.merchant.pos_cli`; the administrator client and the QR imaging
stack are imported only by the commands that use them).

    safescan pos onboard --institution URL --admin-token-file F --name "Café Lumière" \
        --city Paris --country FR --mcc 5814 --settlement-account FR76...
    safescan pos order --item "Flat white:2:350" --item "Croissant:1:180"
    safescan pos seal-setup                 # then: safescan pos order --seal-here ... (offline)
    safescan pos orders
    safescan pos refund ORDER [--amount 350] [--idempotency-key K]
    safescan pos serve [--port 8090]
    safescan pos webhook set URL | show | test | deliveries | resend EVENT | rotate
    safescan pos apikey create --scope orders:write ... | list | rotate KEY | revoke KEY

The configuration (institution URL, merchant id, API key, pinned institution keys) is read
from ``--config``, else ``$SAFESCAN_POS_CONFIG``, else ``~/.config/safescan/pos.json``.
Exit status: 0 done, 2 error (nothing done), 5 sent but the outcome is not known yet (``refund``
prints the Idempotency-Key to learn it with).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from safescan.api.errors import InvalidRequest, NotFound
from safescan.client.errors import InstitutionUnreachable, OutcomeUnknown
from safescan.code.cli import PassphraseFile, read_passphrase
from safescan.code.cli_app import new_app
from safescan.code.cli_input import minor_units
from safescan.code.cli_options import JsonOpt
from safescan.code.currency import currency as lookup_currency
from safescan.code.display import term
from safescan.code.errors import SafescanError
from safescan.code.output import emit_json, fail
from safescan.merchant.cli_apikey import apikey_app
from safescan.merchant.cli_config import ConfigOpt, config_app
from safescan.merchant.cli_rekey import rekey as pos_rekey
from safescan.merchant.cli_staff import staff_app
from safescan.merchant.cli_webhook import webhook_app
from safescan.merchant.client import (
    MerchantApi,
    Order,
    order_summary,
    receipt_summary,
    wait_for_payment,
)
from safescan.merchant.config import PosConfig
from safescan.merchant.input import parse_item
from safescan.merchant.journal import Filters, Journal
from safescan.merchant.sealing import CERT_DAYS, LocalSealer, SealingError, is_local
from safescan.merchant.settings import load_terminal, pos_settings
from safescan.web.serving import (
    BodyTimeoutOpt,
    HeadTimeoutOpt,
    MaxConnectionsOpt,
    MaxPerAddressOpt,
    connection_options,
)

merchant_app = new_app(
    help="The merchant terminal (POS): orders, QR codes, live payment, refunds.",
)
console = Console()
err_console = Console(stderr=True)

EXIT_STALE = 3  # `pos orders`: shown, but some states could not be checked
IDEMPOTENCY_KEY_RE = re.compile(r"[\x21-\x7e]{1,255}")
EXIT_UNKNOWN = 5  # `refund`: sent, the outcome is not known yet (the key is printed)
CLI_STAFF = "pos-cli"  # who made a refund from the command line, in the journal


def _fail(exc: SafescanError, as_json: bool = False) -> typer.Exit:
    return fail(exc, as_json=as_json, status=2)


def _when(ts: int | None) -> str:
    if not ts:
        return "-"
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


@merchant_app.command()
def onboard(
    institution: Annotated[str, typer.Option(help="institution base URL")],
    name: Annotated[str, typer.Option(help="merchant name shown to customers")],
    city: Annotated[str, typer.Option(help="merchant city")],
    country: Annotated[str, typer.Option(help="ISO 3166 two-letter country, e.g. FR")],
    mcc: Annotated[int, typer.Option(help="ISO 18245 merchant category code, e.g. 5814")],
    settlement_account: Annotated[
        str, typer.Option(help="IBAN the institution settles to (mod-97 checked)")
    ],
    currency: Annotated[str, typer.Option(help="default currency of orders")] = "EUR",
    admin_token_file: Annotated[
        Path | None,
        typer.Option(help="file holding the administrator token (default: $SAFESCAN_ADMIN_TOKEN)"),
    ] = None,
    admin_token: Annotated[
        str | None,
        typer.Option(help="the token itself (visible to other users: prefer --admin-token-file)"),
    ] = None,
    config: ConfigOpt = None,
    institution_ca: Annotated[
        Path | None,
        typer.Option(
            help="the institution's CA certificate (PEM; what `institution init` printed):"
            " pinned in this terminal's configuration for every HTTPS connection"
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Onboard a merchant (administrator) and write this terminal's configuration.

    Country, MCC and settlement account are required: nothing is filled in for you. The
    IBAN is checked (format and mod-97 check digits) before anything is sent.
    """
    from safescan.client.admin import AdminClient, read_admin_token
    from safescan.merchant.onboard import check_merchant_details, onboard_merchant
    from safescan.web.pki import cert_pem, load_ca, pin_ca

    try:
        details = check_merchant_details(
            country=country, mcc=mcc, settlement_account=settlement_account, currency=currency
        )
        token = admin_token or read_admin_token(admin_token_file)
        ca = load_ca(institution_ca) if institution_ca is not None else None
        if ca is not None:
            pin_ca(institution, ca)  # before the first connection
        with AdminClient(institution, token) as admin:
            cfg = onboard_merchant(admin, name=name, city=city, **details)
        cfg.tls_ca = cert_pem(ca).decode() if ca is not None else None
        path = cfg.save(pos_settings(config).terminal_file)
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    if as_json:
        emit_json({"merchant_id": cfg.merchant_id, "config": str(path), **details})
        return
    console.print(
        f"merchant [bold]{term(cfg.merchant_id)}[/] onboarded (settles to"
        f" {term(details['settlement_account'])}, default currency {term(cfg.currency)});"
        f" configuration in {term(path)}"
    )


def _load(config: Path | None, as_json: bool = False) -> PosConfig:
    try:
        return load_terminal(config)
    except SafescanError as exc:
        raise _fail(exc, as_json) from None


def _print_order(order: Order, png: Path | None, svg: Path | None) -> None:
    from safescan.code import qr  # imaging (numpy): only the commands that draw a code

    cur = lookup_currency(order.currency)
    table = Table(title=f"Order {order.order_id}", show_edge=False, title_justify="left")
    table.add_column("item")
    table.add_column("qty", justify="right")
    table.add_column("unit", justify="right")
    table.add_column("amount", justify="right")
    for i in order.items:
        table.add_row(
            term(i.name),
            term(str(i.quantity)),
            term(cur.format(i.unit_price)),
            term(cur.format(i.amount)),
        )
    table.add_row("[bold]total[/]", "", "", f"[bold]{term(cur.format(order.total))}[/]")
    console.print(table)
    qr_text = Text(qr.render_terminal(order.code))  # markup-safe: our own QR drawing
    console.print(qr_text, no_wrap=True, crop=False)
    console.print(
        f"[dim]sealed code {term(order.code_bytes)} bytes,"
        f" QR version {term(qr.qr_version(order.code))}"
        f"{term(f'; PNG {png}' if png else '')}{term(f'; SVG {svg}' if svg else '')};"
        f" expires {_when(order.expires_at)}[/]"
    )


@merchant_app.command("seal-setup")
def seal_setup(
    days: Annotated[int, typer.Option(help="certificate validity, days")] = CERT_DAYS,
    passphrase_file: PassphraseFile = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Set up local sealing (online, once): a code-signing key, its certificate, the scheme
    keys. Afterwards `pos order --seal-here` works without the institution."""
    cfg = _load(config, as_json)
    try:
        new_key = not LocalSealer.for_config(cfg, b"").has_key()
        sealer = LocalSealer.for_config(cfg, read_passphrase(passphrase_file, confirm=new_key))
        with MerchantApi(cfg) as api:
            doc = sealer.setup(api, days=days)
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    if as_json:
        print(json.dumps(doc))
        return
    cert, scheme = doc["certificate"], doc["scheme_key"]
    console.print(
        term(
            f"local sealing ready in {doc['directory']}: certificate {cert['serial']} for"
            f" {', '.join(str(x) for x in cert['merchant'])} until {_when(cert['not_after'])};"
            f" scheme key {scheme['kid']}"
            + (f" (retires {_when(scheme['retire_at'])})" if scheme["retire_at"] else "")
        )
    )


@merchant_app.command()
def order(
    item: Annotated[
        list[str], typer.Option("--item", help="NAME:QUANTITY:UNIT_PRICE (minor units), repeat")
    ],
    currency: Annotated[str | None, typer.Option(help="ISO 4217 code (default: config)")] = None,
    expires_in: Annotated[int, typer.Option(help="code lifetime, seconds")] = 300,
    reference: Annotated[str | None, typer.Option(help="your own reference")] = None,
    png: Annotated[
        Path | None, typer.Option(help="write the QR code here (PNG); no file without it")
    ] = None,
    svg: Annotated[Path | None, typer.Option(help="also write an SVG here")] = None,
    wait: Annotated[bool, typer.Option(help="wait for the payment on the live stream")] = True,
    seal_here: Annotated[
        bool,
        typer.Option(help="seal the code on this terminal (works offline; see seal-setup)"),
    ] = False,
    passphrase_file: PassphraseFile = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Create an order, show its QR code, wait for the payment and print the verified receipt."""
    cfg = _load(config, as_json)
    journal = Journal(cfg.journal_path)
    try:
        items = [parse_item(spec) for spec in item]
        with MerchantApi(cfg) as api:
            if seal_here:
                if reference:
                    raise SealingError(
                        "--reference is kept by the institution with a precreated order;"
                        " a code sealed here has none (leave out --seal-here or --reference)"
                    )
                sealer = LocalSealer.for_config(cfg, read_passphrase(passphrase_file))
                sealer.refresh_if_due(api)  # online: fresh keys; offline: the cache
                new = sealer.make_order(items, currency=currency, expires_in=expires_in)
            else:
                new = api.create_order(
                    items, currency=currency, expires_in=expires_in, reference=reference
                )
            journal.add(new)
            try:  # from the moment the code exists, Ctrl-C closes its order
                receipt_doc = _show_and_wait(
                    api, new, journal, png=png, svg=svg, as_json=as_json, wait=wait
                )
            except KeyboardInterrupt:
                _cancel(api, new)
            if receipt_doc is None:
                return
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    finally:
        journal.close()
    if as_json:
        print(json.dumps({"event": "paid", "receipt": receipt_doc}), flush=True)


def _show_and_wait(
    api: MerchantApi,
    new: Order,
    journal: Journal,
    *,
    png: Path | None,
    svg: Path | None,
    as_json: bool,
    wait: bool,
) -> dict[str, Any] | None:
    """Show the order's code (terminal or JSON; a PNG or SVG file only where asked), then
    wait for its payment (None without ``wait``)."""
    from safescan.code import qr  # imaging (numpy): only the commands that draw a code

    if png is not None:
        qr.save_png(new.code, png)
    if svg is not None:
        qr.save_svg(new.code, svg)
    if as_json:
        doc = {"event": "order", "png": str(png) if png else None, **order_summary(new)}
        print(json.dumps({**doc, "code": new.code}), flush=True)
    else:
        _print_order(new, png, svg)
    if not wait:
        return None
    try:
        return _wait(api, new, journal, quiet=as_json)
    except InstitutionUnreachable as exc:
        if not new.sealed_here:
            raise
        # The code is valid and payable without us; only watching for it needs the
        # institution. Say exactly that, never "not paid".
        msg = (
            f"{exc.message}: this terminal cannot see the payment now; the code stays"
            f" payable until {_when(new.expires_at)} and `safescan pos orders` shows"
            " its payment once the institution is reachable"
        )
        if as_json:
            print(json.dumps({"event": "unwatched", "message": msg}), flush=True)
        else:
            err_console.print(f"[yellow]{term(msg)}[/]")
        raise typer.Exit(3) from None


def _cancel(api: MerchantApi, new: Order) -> NoReturn:
    """Ctrl-C: close the order (a terminal-sealed code is withdrawn with the code itself) and
    say what is known: closed, or not closed and until when the code stays payable."""
    try:
        api.orders.close(new.order_id, code=new.code if new.sealed_here else None)
        err_console.print("[yellow]cancelled: the order is closed and cannot be paid[/]")
    except SafescanError as exc:
        err_console.print(
            f"[yellow]stopped waiting, but the order could not be closed: {term(exc.message)}"
            + (
                f"; the code stays payable until {_when(new.expires_at)}"
                if isinstance(exc, InstitutionUnreachable)
                else ""
            )
            + "[/]"
        )
    raise typer.Exit(130)


def _wait(api: MerchantApi, new: Order, journal: Journal, *, quiet: bool) -> dict[str, Any]:
    """Wait for the payment with a spinner (Ctrl-C stops the wait and propagates)."""
    stop = threading.Event()
    result: dict[str, Any] = {}

    def worker() -> None:
        try:
            event, receipt = wait_for_payment(api, new, stop=stop)
            result["receipt"] = receipt
            result["event"] = event
        except SafescanError as exc:
            result["error"] = exc

    thread = threading.Thread(target=worker, name="pos-wait", daemon=True)
    thread.start()
    try:
        if quiet:
            thread.join()
        else:
            with console.status("") as status:
                while thread.is_alive():
                    left = max(0, new.expires_at - int(time.time()))
                    status.update(
                        f"[bold cyan]Waiting for payment[/] of {new.total_display()}"
                        f"  [dim](code expires in {left // 60}:{left % 60:02d}; Ctrl-C cancels)[/]"
                    )
                    thread.join(0.25)
    except KeyboardInterrupt:
        stop.set()
        raise
    if "error" in result:
        raise result["error"]
    receipt = result["receipt"]
    doc = receipt_summary(receipt)
    journal.update(new.order_id, {"state": "PAID", **doc})
    if not quiet:
        console.print(
            f"[bold green]PAID[/] {term(doc['amount_display'])}  payment {term(doc['payment_id'])}"
            f"  payer {term(doc['payer_pseudonym'])}  at {_when(doc['paid_at'])}"
        )
        console.print(
            "[green]receipt verified[/]: institution signature (key"
            f" {term(receipt.issuer_kid)}), merchant, order, amount, currency and code digest match"
        )
    return doc


@merchant_app.command()
def orders(
    limit: Annotated[int, typer.Option(min=1, max=200, help="how many (a page)")] = 20,
    starting_after: Annotated[
        str | None,
        typer.Option(help="the next page: the orders after this order id (the last one shown)"),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """This terminal's recent orders, with their current state at the institution, a page at
    a time (``--starting-after`` the last order id shown for the next page).

    Orders whose state could not be asked (the institution is down, or refused) are shown
    from the local journal and marked "may be stale"; the exit status is then 3.
    """
    cfg = _load(config, as_json)
    if starting_after is not None and not re.fullmatch(r"[A-Za-z0-9._:\-]{1,40}", starting_after):
        raise _fail(InvalidRequest("not an order id", param="starting_after"), as_json)
    journal = Journal(cfg.journal_path)
    stale: list[str] = []
    problem: str | None = None
    more = False
    try:
        rows, more = journal.page(Filters(limit=limit, starting_after=starting_after))
        with MerchantApi(cfg) as api:
            for row in rows:
                row["stale"] = False
                if row["state"] not in ("CREATED", "PAID", "PARTIALLY_REFUNDED"):
                    continue  # final states do not change
                try:
                    now = api.orders.get(row["order_id"])
                except NotFound:
                    if not is_local(row["order_id"]):
                        row["error"] = "the institution does not know this order"
                    continue  # sealed here and not paid yet: the institution learns at payment
                except SafescanError as exc:
                    row["stale"] = True
                    row["error"] = exc.message
                    stale.append(row["order_id"])
                    problem = problem or exc.message
                    continue
                journal.update(row["order_id"], now.to_json())
                row.update(
                    state=str(now.state),
                    payment_id=now.payment_id,
                    refunded=now.refunded_amount,
                    paid_at=now.paid_at,
                )
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    finally:
        journal.close()
    next_after = str(rows[-1]["order_id"]) if more and rows else None
    if as_json:
        emit_json(
            {
                "orders": rows,
                "has_more": more,
                "next_starting_after": next_after,
                "stale": stale,
                **({"error": problem} if problem else {}),
            }
        )
        if stale:
            raise typer.Exit(EXIT_STALE)
        return
    table = Table(show_edge=False)
    for col in ("order", "created", "total", "state", "payment", "refunded"):
        table.add_column(col, justify="right" if col in ("total", "refunded") else "left")
    for r in rows:
        cur = lookup_currency(r["currency"])
        colour = {"PAID": "green", "CREATED": "cyan", "REFUNDED": "magenta"}.get(
            str(r["state"]), "yellow"
        )
        table.add_row(
            term(r["order_id"]),
            _when(r["created_at"]),
            term(cur.format(r["total"])),
            term(
                f"[{colour}]{r['state']}[/]" + (" [yellow](may be stale)[/]" if r["stale"] else "")
            ),
            term(r["payment_id"] or "-"),
            term(cur.format(r["refunded"]) if r["refunded"] else "-"),
        )
    console.print(table if rows else "no orders yet")
    if next_after is not None:
        console.print(f"older orders: safescan pos orders --starting-after {term(next_after)}")
    if stale:
        err_console.print(
            f"[yellow]warning:[/] {len(stale)} order state(s) could not be checked and may be"
            f" stale ({term(problem or '')}); shown as last known on this terminal"
        )
        raise typer.Exit(EXIT_STALE)


@merchant_app.command()
def refund(
    order_id: Annotated[str, typer.Argument(help="the order to refund")],
    amount: Annotated[
        int | None, typer.Option(help="minor units (default: all)", parser=minor_units)
    ] = None,
    reason: Annotated[str | None, typer.Option(help="shown in reports")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="retrying with the same key gives the same refund, never a second one; the key"
            " of a refund whose outcome was not known learns it (default: a new key)"
        ),
    ] = None,
    as_json: JsonOpt = False,
    config: ConfigOpt = None,
) -> None:
    """Refund an order fully or partly, never twice: one Idempotency-Key, retried and looked
    up until the outcome is known.

    If the outcome is still not known (exit status 5), run the same command again with the
    printed --idempotency-key: the institution answers with the refund it made, or with none.
    """
    cfg = _load(config, as_json)
    key = idempotency_key or "ref-" + secrets.token_urlsafe(16)
    try:
        if amount is not None and amount <= 0:
            raise InvalidRequest("the amount must be positive (minor units)", param="amount")
        if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.fullmatch(idempotency_key):
            raise InvalidRequest(
                "the idempotency key is 1-255 printable ASCII characters without spaces",
                param="idempotency_key",
            )
        with MerchantApi(cfg) as api:
            made = api.refunds.create(order_id, amount, reason=reason, idempotency_key=key)
        journal = Journal(cfg.journal_path)
        try:
            # the refund, and the order's state and refunded total after it (not its amount:
            # that is the refund's, never the paid amount)
            journal.add_refund(made, reason=reason, staff=CLI_STAFF)
        finally:
            journal.close()
    except OutcomeUnknown as exc:
        if as_json:
            emit_json({"error": exc.to_dict() | {"idempotency_key": key}})
        else:
            err_console.print(
                f"[yellow]refund outcome not known yet[/]: {term(exc.message)}. Run the same"
                f" command with --idempotency-key {term(key)} to learn it (it will never refund"
                " twice)"
            )
        raise typer.Exit(EXIT_UNKNOWN) from None
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    if as_json:
        emit_json(made.to_json())
        return
    cur = lookup_currency(made.currency)
    console.print(
        f"[magenta]refunded[/] {term(cur.format(made.amount))} on order {term(order_id)}"
        f" (refund {term(made.refund_id)}; order now {term(made.order_state)})"
    )


@merchant_app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="address to bind [server.host: 127.0.0.1]")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="TCP port, 0: any free port [server.port: 8090]")
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="another host[:port] the POS answers to (repeatable; default: the loopback"
            " names, or the bound address); any other Host header is refused",
        ),
    ] = None,
    config: ConfigOpt = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="serve HTTPS with this certificate chain (PEM)")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="the certificate's private key (PEM)")
    ] = None,
    max_connections: MaxConnectionsOpt = None,
    max_per_address: MaxPerAddressOpt = None,
    head_timeout: HeadTimeoutOpt = None,
    body_timeout: BodyTimeoutOpt = None,
) -> None:
    """Run the web POS (staff counter page, and the customers' checkout page) for this terminal.

    Staff sign in with the accounts of `safescan pos staff add`; it refuses to start without one.
    HTTPS with --tls-cert/--tls-key (required to listen on a non-loopback address). Connections
    are bounded (in all and per client address) and must finish their TLS handshake, request
    head and body in time (docs/operations.md).
    """
    from safescan.merchant.web import run
    from safescan.web.tls import TlsFiles

    cfg = _load(config)
    limits = connection_options(max_connections, max_per_address, head_timeout, body_timeout)
    try:
        site = pos_settings(
            config,
            server={"host": host, "port": port, "allowed_hosts": allowed_host or None, **limits},
            tls={"cert": tls_cert, "key": tls_key},
        )
        tls = TlsFiles.from_options(site.tls.cert, site.tls.key)
        srv = site.server
        run(
            cfg,
            host=srv.host,
            port=srv.port,
            allowed_hosts=list(srv.allowed_hosts),
            tls=tls,
            connections=srv,
        )
    except SafescanError as exc:
        raise _fail(exc) from None


merchant_app.add_typer(staff_app, name="staff")  # safescan.merchant.cli_staff
merchant_app.add_typer(webhook_app, name="webhook")  # safescan.merchant.cli_webhook
merchant_app.add_typer(apikey_app, name="apikey")  # safescan.merchant.cli_apikey
merchant_app.add_typer(config_app, name="config")  # safescan.merchant.cli_config
merchant_app.command("rekey")(pos_rekey)  # safescan.merchant.cli_rekey


@merchant_app.command("encrypt-key")
def encrypt_key(config: ConfigOpt = None, as_json: JsonOpt = False) -> None:
    """Encrypt the API key of a configuration written by an older release (it held the key in
    clear), in place, under the passphrase from $SAFESCAN_POS_PASSPHRASE(_FILE) or a prompt."""
    from safescan.merchant.config import encrypt_legacy

    try:
        path = encrypt_legacy(pos_settings(config).terminal_file)
    except SafescanError as exc:
        raise _fail(exc, as_json) from None
    if as_json:
        print(json.dumps({"encrypted": str(path)}))
        return
    console.print(f"the API key in {term(path)} is now encrypted; no clear copy is left")
