"""The wallet app's other screens in headless Chromium at 390 px: pairing, enrollment with the
PIN set on the carrier, change PIN, history with refunds, balance, carrier status, codes that
are not payable, a payment the institution refuses, a wrong PIN, and installability.

axe-core (vendored, tests/e2e/walletapp/vendor/axe-core) must report no violation on any screen.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from safescan.client import AdminClient
from safescan.code import LineItem
from safescan.merchant.client import MerchantApi
from safescan.wallet.account import change_pin
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, Party, World, start_new_carrier
from tests.e2e.walletapp.browser import (
    CHROMIUM,
    WalletServer,
    check_screen,
    collect_errors,
    evaluate,
    open_paired,
    phone,
    press_pin,
    record_screens,
    start_wallet_server,
    wait_screen,
)

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"headless browser tests need Chromium at {CHROMIUM}", allow_module_level=True)

EMV = (
    "00020101021229300012D156000000000510A93FO3230Q31280012D15600000001030812345678520441115802CN"
    "5914BEST TRANSPORT6007BEIJING64200002ZH0104最佳运输0202北京540523.7253031565502016233030412"
    "340603***0708A60086670902ME91320016A0112233449988770708123456786304A13A"
)


def _paste(page: Any, text: str) -> None:
    """Use the fallback: the code's text typed or pasted instead of the camera."""
    if page.locator(".fallback").get_attribute("open") is None:
        page.locator(".fallback summary").click()
    page.locator("#scan-text").fill(text)
    page.locator("#scan-text-go").click()


# PINs long enough (the carrier takes 4-16 digits) that no digest, timestamp or counter in the
# wallet's files can hold one by chance: a 6-digit PIN can turn up in any long run of digits.
PIN_A, PIN_DIFFERENT = "135790864213", "135790864214"
PIN_B, PIN_WRONG = "246801357924", "9999999999"


def _secrets_absent(paths: list[Path], secrets: list[str]) -> None:
    for path in paths:
        data = path.read_bytes()
        for s in secrets:
            assert s.encode() not in data, f"{s!r} found in {path}"


def test_enroll_in_the_app_then_change_pin(world: World, pw: Any, tmp_path: Path) -> None:
    stack = world.stack
    carrier, carrier_url = start_new_carrier(stack, "carrier-appenroll")
    wallet_dir = stack.workdir / "wallet-appenroll"
    srv = start_wallet_server(
        stack, wallet_dir, "appenroll-serve", "--institution", stack.base_url,
        "--carrier", carrier_url,
    )  # fmt: skip
    try:
        cid = stack.customer("Enrola Appuser", fund=5_000)
        with AdminClient(stack.base_url, stack.admin_token) as admin:
            token = admin.enrollment_tokens.issue(cid).token
        with phone(pw, None) as ctx:
            page = open_paired(ctx, srv)
            errors = collect_errors(page)
            wait_screen(page, "enroll")
            assert page.locator("#enroll-institution").input_value() == stack.base_url
            assert page.locator("#enroll-carrier").input_value() == carrier_url
            check_screen(page, "enroll")
            # a malformed token is refused here, before anything is sent (the token stays unused)
            page.locator("#enroll-token").fill("not a token!")
            page.locator("#enroll-keys").fill(" ".join(stack.root_keys()))
            page.locator("#enroll-submit").click()
            press_pin(page, PIN_A)
            press_pin(page, PIN_A)
            wait_screen(page, "enroll")
            assert "nothing was sent" in page.locator("#enroll-error").inner_text()
            # the two PINs must match
            page.locator("#enroll-token").fill(token)
            page.locator("#enroll-submit").click()
            wait_screen(page, "pin")
            assert page.locator("#pin-title").inner_text() == "Choose a PIN"
            press_pin(page, PIN_A)
            press_pin(page, PIN_DIFFERENT)
            page.wait_for_selector("#pin-error:has-text('differ')")
            check_screen(page, "enroll-pin")
            press_pin(page, PIN_A)
            press_pin(page, PIN_A)
            wait_screen(page, "scan")
            assert page.locator("#top-status").inner_text().startswith("carrier ")

            page.goto(srv.url + "/#/carrier")
            page.wait_for_selector("#carrier-state:has-text('Ready')", timeout=60_000)
            assert "5 of 5" in page.locator("#carrier-details").inner_text()
            check_screen(page, "carrier")
            page.locator("#carrier-change-pin").click()
            wait_screen(page, "pin")
            assert page.locator("#pin-title").inner_text() == "Current PIN"
            press_pin(page, PIN_WRONG)  # wrong: spends a try, changes nothing
            press_pin(page, PIN_B)
            press_pin(page, PIN_B)
            page.wait_for_selector("#pin-error:has-text('4 tries left')", timeout=60_000)
            assert page.locator("#pin-title").inner_text() == "Current PIN"
            press_pin(page, PIN_A)
            press_pin(page, PIN_B)
            press_pin(page, PIN_B)
            wait_screen(page, "pin-changed")
            assert page.locator("#pin-changed-title").inner_text() == "PIN changed"
            check_screen(page, "pin-changed")
            assert errors == []
        with Wallet.load(wallet_dir) as wallet:
            assert wallet.config.customer_id == cid
            change_pin(wallet, PIN_B, PIN_A)  # only the new PIN opens the carrier now
        srv.stop()
        files = [srv.proc.log, *[p for p in wallet_dir.rglob("*") if p.is_file()]]
        _secrets_absent(files, [PIN_A, PIN_B, PIN_WRONG, PIN_DIFFERENT])
    finally:
        srv.stop()
        carrier.stop()


def test_history_balance_and_carrier_show_refunds(
    world: World, party: Party, server: WalletServer, pw: Any
) -> None:
    with MerchantApi(world.pos) as api, Wallet.load(party.wallet_dir) as wallet:
        order = api.create_order(
            [LineItem("Tea", 2, 300), LineItem("Cake", 1, 450)], currency="EUR"
        )
        with wallet.open(order.code) as offer:
            paid = offer.pay(PIN)
        api.refunds.create(order.order_id, 300, reason="one tea was cold")
    payment_id = paid.receipt.payment_id
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        balance = admin.customers.balance(party.customer_id, "EUR")
    with phone(pw, None) as ctx:
        page = open_paired(ctx, server, "/#/history")
        errors = collect_errors(page)
        wait_screen(page, "history")
        entry = page.locator(f"#history-list li[data-payment-id='{payment_id}']")
        entry.wait_for(timeout=60_000)
        text = entry.inner_text()
        assert "Café Lumière, Paris" in text and "10.50 EUR" in text
        assert "2× Tea, 1× Cake" in text and "Refunded 3.00 EUR" in text
        assert page.locator("#history-note").is_hidden()  # refunds were checked
        check_screen(page, "history")

        page.locator(".tabs a[data-tab='balance']").click()
        wait_screen(page, "balance")
        page.wait_for_selector("#balance-list li", timeout=60_000)
        shown = f"{balance // 100}.{balance % 100:02d} EUR"
        assert page.locator("#balance-list").inner_text() == shown
        assert "Refunded 3.00 EUR" in page.locator("#balance-payments").inner_text()
        check_screen(page, "balance")

        page.locator(".tabs a[data-tab='carrier']").click()
        page.wait_for_selector("#carrier-state:has-text('Ready')", timeout=60_000)
        assert page.locator(".tabs a[aria-current='page']").inner_text() == "Carrier"
        check_screen(page, "carrier-status")
        assert errors == []


def test_codes_that_are_not_payable_are_shown_not_opened(
    party: Party, server: WalletServer, pw: Any
) -> None:
    with phone(pw, None) as ctx:
        page = open_paired(ctx, server, "/#/scan")
        errors = collect_errors(page)
        # no camera on this phone: the app says so and offers the fallback
        page.wait_for_selector("#scan-status:has-text('No camera')", timeout=30_000)
        _paste(page, EMV)
        wait_screen(page, "other")
        assert "EMVCo" in page.locator("#other-title").inner_text()
        assert "BEST TRANSPORT" in page.locator("#other-details").inner_text()
        check_screen(page, "other-emv")
        page.locator("#other-again").click()
        wait_screen(page, "scan")
        _paste(page, "https://example.com/pay?to=fraudster")
        wait_screen(page, "other")
        assert page.locator("#other-title").inner_text() == "A link, not a payment code"
        assert "pin" not in evaluate(page, "() => window.__screens")
        assert errors == []


def test_wrong_pin_shows_tries_left_then_pays(
    world: World, party: Party, server: WalletServer, pw: Any
) -> None:
    order = MerchantApi(world.pos).create_order([LineItem("Soup", 1, 650)], currency="EUR")
    with phone(pw, None) as ctx:
        page = open_paired(ctx, server, "/#/scan")
        _paste(page, order.code)
        wait_screen(page, "offer")
        page.locator("#offer-pay").click()
        press_pin(page, "000000")
        page.wait_for_selector("#pin-error:has-text('4 tries left')", timeout=60_000)
        check_screen(page, "pin-wrong")
        press_pin(page, PIN)
        wait_screen(page, "receipt")
        assert page.locator("#receipt-amount").inner_text() == "6.50 EUR"
    with Wallet.load(party.wallet_dir) as wallet:
        assert wallet.status()["carrier"]["pin_retries_left"] == 5  # a good PIN resets it


def test_a_payment_the_institution_refuses_is_shown_as_not_paid(
    world: World, party: Party, server: WalletServer, pw: Any
) -> None:
    with MerchantApi(world.pos) as api:
        order = api.create_order([LineItem("Bread", 1, 240)], currency="EUR")
        with phone(pw, None) as ctx:
            page = open_paired(ctx, server, "/#/scan")
            _paste(page, order.code)
            wait_screen(page, "offer")
            api.orders.close(order.order_id)  # the merchant cancels while the customer reads
            page.locator("#offer-pay").click()
            press_pin(page, PIN)
            wait_screen(page, "failed")
            assert page.locator("#failed-badge").inner_text() == "Not paid"
            assert page.locator("#screen-failed").get_attribute("data-outcome") == "not_paid"
            assert "refused" in page.locator("#failed-message").inner_text()
            check_screen(page, "failed")
        assert api.orders.get(order.order_id).state == "CLOSED"


def test_cancel_on_the_offer_pays_nothing(
    world: World, party: Party, server: WalletServer, pw: Any
) -> None:
    order = MerchantApi(world.pos).create_order([LineItem("Jam", 1, 390)], currency="EUR")
    with phone(pw, None) as ctx:
        page = open_paired(ctx, server, "/#/scan")
        _paste(page, order.code)
        wait_screen(page, "offer")
        page.locator("#offer-pay").click()
        wait_screen(page, "pin")
        page.locator("#pin-cancel").click()
        wait_screen(page, "scan")
        assert page.locator("#announcer").inner_text() in ("", "Cancelled: nothing was paid")
    with MerchantApi(world.pos) as api:
        assert api.orders.get(order.order_id).state == "CREATED"


def test_an_unpaired_browser_gets_nothing_but_the_pair_screen(
    party: Party, server: WalletServer, pw: Any
) -> None:
    with phone(pw, None) as ctx:
        page = ctx.new_page()
        record_screens(page)
        errors = collect_errors(page)
        page.goto(server.url + "/#/history")
        wait_screen(page, "pair")
        check_screen(page, "pair")
        page.goto(server.url + "/#pair=" + "A" * 43)  # a made-up pairing secret
        page.wait_for_selector("#pair-error:has-text('not this wallet')", timeout=30_000)
        assert evaluate(page, "() => location.hash") == "#/scan"  # the secret left the address bar
        assert evaluate(page, "() => localStorage.length") == 0
        assert set(evaluate(page, "() => window.__screens")) <= {"pair"}
        assert errors == []


def test_the_app_is_installable_with_a_service_worker(
    party: Party, server: WalletServer, pw: Any
) -> None:
    with phone(pw, None) as ctx:
        page = open_paired(ctx, server, "/#/scan")
        scope = evaluate(page, "async () => (await navigator.serviceWorker.ready).active.scriptURL")
        assert scope == server.url + "/sw.js"
        cdp = ctx.new_cdp_session(page)
        found = cdp.send("Page.getInstallabilityErrors")
        assert found["installabilityErrors"] == []
        manifest = cdp.send("Page.getAppManifest")
        assert manifest["errors"] == [] and '"display": "standalone"' in manifest["data"]
        # the API is never answered from the worker's cache
        cached = evaluate(
            page,
            """async () => {
                 const names = await caches.keys();
                 const urls = [];
                 for (const n of names) for (const r of await (await caches.open(n)).keys())
                   urls.push(new URL(r.url).pathname);
                 return urls;
               }""",
        )
        assert {"/", "/static/app.js", "/static/scanner.js", "/static/app.css"} <= set(cached)
        assert not [u for u in cached if u.startswith("/api/")]
