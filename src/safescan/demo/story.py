"""``safescan demo``: the whole product, end to end, on embedded defaults, in a few seconds.

A temporary directory; the payment institution on SQLite as a real subprocess on a free
loopback port; a key carrier as a real subprocess over TCP; a merchant onboarded; a customer
funded and enrolled (carrier GENERATE KEYS -> institution -> PERSONALIZE). Then an order with
three items -> QR PNG -> the wallet scans the PNG -> the carrier opens and verifies it -> PIN ->
the carrier signs -> the institution pays -> both receipts verified, the POS notified on its
live stream, balances and a ledger audit. Then attacks, each refused with its reason.

This module is the story; the deployment is :class:`safescan.demo.stack.Stack`, the attacks
are in :mod:`safescan.demo.attacks`, and the processes are supervised by :mod:`safescan.procs`
(each child in its own process group, stopped with SIGTERM then SIGKILL, also on Ctrl-C or
SIGTERM).
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

from safescan.client.admin import AdminClient
from safescan.code import LineItem, Merchant, SafescanError, qr
from safescan.code.display import term
from safescan.code.output import json_text
from safescan.demo.attacks import (
    Attack,
    altered_code,
    brute_force_pin,
    forged_code,
    institution_refuses_resubmission,
    refused_by_wallet,
    replay_authorization,
)
from safescan.demo.metrics import PAYMENTS, payments_total
from safescan.demo.stack import DEMO_PIN, Stack
from safescan.merchant.client import MerchantApi, Order, wait_for_payment
from safescan.merchant.config import PosConfig
from safescan.procs import terminating_on_signals
from safescan.wallet.flow import Payment, Wallet
from safescan.web import pki

ITEMS = (
    LineItem("Flat white", 2, 350),
    LineItem("Croissant", 1, 180),
    LineItem("Orange juice", 1, 420),
)


class DemoRun:
    """One run of the demo; ``result`` is the JSON document."""

    def __init__(self, workdir: Path, console: Console) -> None:
        self.stack = Stack(workdir, tls=True)
        self.console = console
        self.result: dict[str, Any] = {
            "paid": False,
            "receipt_verified": False,
            "merchant_notified": False,
            "ledger_balanced": False,
            "attacks": [],
        }
        self.started = time.monotonic()
        self.pos_url = ""

    def hold(self) -> None:
        """Keep everything running (with a web POS) until Ctrl-C or SIGTERM."""
        stack = self.stack
        pos_url = self.pos_url or stack.start_pos_server(stack.pos_path, name="pos-web")[1]
        self.result["running"] = {"institution": stack.base_url, "pos": pos_url}
        self.console.print(
            "[bold]still running[/] (`--keep-running`):\n"
            f"  payment institution  {term(stack.base_url)}"
            f"  (OpenAPI: {term(stack.base_url)}/docs)\n"
            f"  web POS              {term(pos_url)}  (staff sign-in: {term(stack.staff_name)}"
            f" / {term(stack.staff_password)}; customers: {term(pos_url)}/shop)\n"
            f"  work directory       {term(stack.workdir)}\n"
            "press Ctrl-C to stop everything"
        )
        while True:
            time.sleep(3600)

    def step(self, text: str) -> None:
        """Print a step with the elapsed time."""
        elapsed = time.monotonic() - self.started
        # callers escape every value they put into ``text`` (the markup guard checks step())
        self.console.print(f"[dim]{elapsed:5.1f}s[/] " + text)  # markup-safe: see above

    def run(self) -> dict[str, Any]:
        """Set up, pay, attack; returns the result document."""
        stack, c = self.stack, self.console
        c.rule("[bold]safescan[/]: safe code-scanning payment, end to end")
        stack.begin_institution_init()
        _carrier_proc, carrier_url = stack.start_carrier("carrier")
        self.step(f"key carrier process up (blank), at [cyan]{term(carrier_url)}[/]")
        base = stack.start_institution()
        self.step(f"payment institution up (SQLite) at [cyan]{term(base)}[/]")
        pos_cfg = stack.onboard_merchant()
        self.step(f"merchant [bold]Café Lumière[/] onboarded as {term(pos_cfg.merchant_id)}")
        _pos, self.pos_url = stack.start_pos_server(stack.pos_path, name="pos-web")
        self.step(f"web POS up at [cyan]{term(self.pos_url)}[/] (its certificate from the same CA)")
        customer = stack.customer()
        wallet_dir = stack.enroll_wallet(customer, carrier_url)
        admin = stack.need_admin()
        before = admin.customers.balance(customer, "EUR")
        self.step(
            f"customer {term(customer)} funded with 100.00 EUR; key carrier enrolled and"
            " personalised with a PIN"
        )

        with MerchantApi(pos_cfg) as api, Wallet.load(wallet_dir) as wallet:
            order = api.create_order(list(ITEMS), currency="EUR", reference="demo")
            png = stack.workdir / f"order-{order.order_id}.png"
            qr.save_png(order.code, png)
            version = qr.qr_version(order.code)
            self.result.update(
                order_id=order.order_id,
                amount=order.total,
                currency="EUR",
                qr_version=version,
                code_bytes=order.code_bytes,
            )
            self.step(
                f"POS created order {term(order.order_id)}: {term(order.total_display())},"
                f" sealed code {term(order.code_bytes)} bytes -> QR version {term(version)}"
                f" -> {term(png.name)}"
            )

            pos_seen: dict[str, Any] = {}
            stop = threading.Event()

            def pos_listener() -> None:
                try:
                    event, receipt = wait_for_payment(api, order, stop=stop)
                    pos_seen.update(event=event, receipt=receipt)
                except SafescanError as exc:
                    pos_seen["error"] = exc.message

            listener = threading.Thread(target=pos_listener, name="pos", daemon=True)
            listener.start()

            scan = wallet.scan(png)
            self.step(
                f"wallet scanned the PNG: a [bold]{term(scan.kind)}[/] code"
                f" ({len(scan.text)} characters)"
            )
            with wallet.open(scan.text) as offer:
                doc = offer.describe()
                self._show_offer(doc)
                paid = offer.pay(DEMO_PIN)
            self.result["paid"] = True
            self.result["receipt_verified"] = True
            self.result["payment_id"] = paid.receipt.payment_id
            self.step(
                f"[green]paid[/] {term(paid.amount_display)}: the carrier signed (counter bound),"
                " the institution settled and signed the receipt; the wallet verified it"
            )

            listener.join(10)
            stop.set()
            if "receipt" in pos_seen:
                self.result["merchant_notified"] = True
                ev = pos_seen["event"]
                self.step(
                    f"POS received [bold]{term(ev.type)}[/] on its live stream"
                    f"{'' if ev.seq else ' (order query)'}; event signature and receipt"
                    " verified"
                )
            else:
                self.step(f"[red]POS was not notified[/]: {term(pos_seen.get('error', 'timeout'))}")
            self._receipts(paid, pos_seen.get("receipt"))
            after = admin.customers.balance(customer, "EUR")
            merchant_net = self._merchant_net(admin, pos_cfg.merchant_id)
            self.result["balances"] = {
                "customer_before": before,
                "customer_after": after,
                "merchant_net": merchant_net,
            }
            c.print(
                f"  balances: customer {before / 100:.2f} -> [bold]{after / 100:.2f}[/] EUR;"
                f" merchant settlement today [bold]{merchant_net / 100:.2f}[/] EUR"
            )
            audit = stack.audit()
            self.result["ledger_balanced"] = bool(audit.get("ok"))
            self.result["audit_problems"] = audit.get("problems", [])
            self.step(
                "ledger audit (double entry, hash-chained log, receipts): "
                + ("[green]passed[/]" if audit.get("ok") else f"[red]FAILED[/] {term(audit)}")
            )

            c.rule("[bold]attacks[/]")
            self._attacks(wallet, order, paid, carrier_url, base)
            final = admin.customers.balance(customer, "EUR")
            self.result["balances"]["customer_after_attacks"] = final
            self.step(
                f"customer balance after the attacks: {final / 100:.2f} EUR"
                f" ({'unchanged' if final == after else '[red]CHANGED[/]'})"
            )
        paid_total = payments_total(stack.base_url)
        self.result["metrics"] = {"payments_total": paid_total}
        self.step(
            f"institution /metrics: {term(PAYMENTS)} {int(paid_total)} (the attacks added none)"
        )
        return self.result

    def _show_offer(self, doc: dict[str, Any]) -> None:
        m = doc["merchant"]
        table = Table.grid(padding=(0, 2))
        who = f"signed by the institution (key {doc['issuer_kid']})"
        table.add_row(
            "merchant",
            f"[bold]{term(m['name'])}[/], {term(m['city'])} {term(m['country'])}"
            f" ([green]verified[/], {term(who)})",
        )
        for i in doc["items"]:
            table.add_row(
                "", f"{term(i['quantity'])} x {term(i['name']):<14} {term(i['display']):>10}"
            )
        table.add_row(
            "total",
            f"[bold]{term(doc['total_display'])}[/]   expires in {doc['expires_in'] // 60} min",
        )
        self.console.print(
            Panel(
                table,
                title="what the carrier showed the customer",
                border_style="green",
                expand=False,
            )
        )

    def _receipts(self, paid: Payment, pos_receipt: Any) -> None:
        r = paid.receipt
        t = Table(show_edge=False, title="receipts (both verified: institution signature)")
        t.add_column("")
        t.add_column("customer's wallet")
        t.add_column("merchant's POS")
        pr = pos_receipt
        t.add_row("payment", term(r.payment_id), term(pr.payment_id if pr else "-"))
        t.add_row(
            "amount", term(paid.amount_display), term(f"{pr.amount / 100:.2f} EUR" if pr else "-")
        )
        t.add_row(
            "merchant",
            f"{term(paid.merchant_name)} ({term(r.merchant_id)})",
            term(pr.merchant_id if pr else "-"),
        )
        t.add_row("payer", term(r.payer_pseudonym), term(pr.payer_pseudonym if pr else "-"))
        t.add_row("order", term(r.order_id), term(pr.order_id if pr else "-"))
        self.console.print(t)

    @staticmethod
    def _merchant_net(admin: AdminClient, merchant_id: str) -> int:
        today = dt.datetime.now(dt.UTC).date().isoformat()
        for row in admin.settlements.rows(today):
            if row.merchant_id == merchant_id:
                return row.net
        return 0

    def _attack(self, name: str, title: str, outcome: tuple[bool, str]) -> None:
        refused, reason = outcome
        self.result["attacks"].append(Attack(name, title, refused, reason).to_json())
        mark = "[bold green]REFUSED[/]" if refused else "[bold red]NOT REFUSED[/]"
        self.console.print(f"  {term(mark)} {term(title)}\n      [dim]{term(reason)}[/]")

    def _attacks(
        self, wallet: Wallet, order: Order, paid: Payment, carrier_url: str, base: str
    ) -> None:
        merchant = Merchant(order.merchant_id, "Café Lumière", "Paris", "FR", 5814)
        kid = next(iter(wallet.config.trust.institution_keys))
        self._attack(
            "swapped_sticker",
            "a sticker over the merchant's code: same merchant and goods, another issuer key",
            refused_by_wallet(wallet, forged_code(base, order, merchant, kid)),
        )
        with MerchantApi(
            PosConfig.load(self.stack.pos_path, passphrase=self.stack.passphrase.encode())
        ) as api:
            fresh = api.create_order(list(ITEMS), currency="EUR", reference="demo-2")
        self._attack(
            "altered_amount",
            "a genuine code with its sealed amount bytes edited",
            refused_by_wallet(wallet, altered_code(fresh.code)),
        )
        wallet_says = refused_by_wallet(wallet, order.code)
        inst_says = institution_refuses_resubmission(wallet, order.code, DEMO_PIN)
        self._attack(
            "paid_code_replay",
            "the paid code scanned again (and, bypassing the wallet, signed and sent again)",
            (
                wallet_says[0] and inst_says[0],
                f"wallet: {wallet_says[1]}; institution: {inst_says[1]}",
            ),
        )
        self._attack(
            "authorization_replay",
            "the captured authorization sent to the institution again",
            replay_authorization(base, order.code, paid.authorization),
        )
        trust, _ = wallet.trust()
        self._attack(
            "pin_brute_force",
            "guessing the PIN on the customer's key carrier",
            brute_force_pin(
                carrier_url,
                trust,
                real_pin=DEMO_PIN,
                say=lambda s: self.console.print(f"      [dim]{term(s)}[/]"),
            ),
        )


def verdict(result: dict[str, Any], status: int, hops: list[pki.Hop]) -> bool:
    """Fill in ``http_hops``, ``tls`` and ``ok`` of the result document; returns ``ok``.

    ``hops``: every HTTP connection this process made (institution, web POS), recorded as it
    was made. ``tls`` is true only when each one was TLS verified against the pinned CA, and
    ``ok`` requires it besides the payment, the receipts, the audit and the five attacks."""
    result["http_hops"] = [{"origin": h.origin, "tls": h.tls, "verified": h.verified} for h in hops]
    result["tls"] = pki.all_verified(hops)
    attacks = result.get("attacks", [])
    ok = (
        status == 0
        and result["tls"]
        and result.get("paid")
        and result.get("receipt_verified")
        and result.get("merchant_notified")
        and result.get("ledger_balanced")
        and len(attacks) == 5
        and all(a["refused"] for a in attacks)
    )
    result["ok"] = bool(ok)
    return bool(ok)


def demo_command(
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object at the end")
    ] = False,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running",
            help="Afterwards keep the institution, key carrier and a web POS running to look"
            " around in; Ctrl-C stops everything",
        ),
    ] = False,
) -> None:
    """Run the end-to-end demo: institution, key carrier, POS, wallet, payment, attacks."""
    console = Console(stderr=as_json, quiet=as_json, highlight=False)
    started = time.monotonic()
    result: dict[str, Any] = {}
    status = 0
    with terminating_on_signals(), tempfile.TemporaryDirectory(prefix="safescan-demo-") as tmp:
        run = DemoRun(Path(tmp), console)
        finished = False
        try:
            result = run.run()
            finished = True
            if keep_running:
                run.hold()
        except KeyboardInterrupt:
            if finished:  # the way out of --keep-running
                console.print("stopping everything")
            else:
                console.print("[yellow]interrupted: stopping everything[/]")
                status = 130
            result = run.result
        except SafescanError as failure:
            exc = run.stack.supervisor.died() or failure  # a child that died explains it best
            console.print(f"[bold red]demo failed:[/] {term(exc.message)}")
            result = {**run.result, "error": exc.to_dict()}
            status = 1
        finally:
            run.stack.stop()
    result["duration_s"] = round(time.monotonic() - started, 2)
    ok = verdict(result, status, pki.hops())
    if as_json:
        print(json_text(result))
    else:
        console.rule(
            f"[bold {'green' if ok else 'red'}]{'all good' if ok else 'problems'}[/] in"
            f" {result['duration_s']:.1f} s; everything started was stopped"
        )
    if status or not ok:
        raise typer.Exit(status or 1)
