"""A printed shop-front code (a static code, issue #18) paid from the wallet app in Debian's
headless Chromium: the customer enters the amount and, if they like, a tip; the wallet pays the
sum, and a bad amount or tip is refused on the page before any PIN is asked."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from safescan.client import AdminClient
from safescan.merchant.client import MerchantApi
from tests.e2e.conftest import PIN, Party, World
from tests.e2e.walletapp import fakecam
from tests.e2e.walletapp.browser import (
    CHROMIUM,
    WalletServer,
    check_screen,
    collect_errors,
    evaluate,
    open_paired,
    phone,
    press_pin,
    wait_screen,
)

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"headless browser tests need Chromium at {CHROMIUM}", allow_module_level=True)


def _balance(world: World, customer: str) -> int:
    with AdminClient(world.base_url, world.stack.admin_token) as admin:
        return admin.customers.balance(customer, "EUR")


def test_a_printed_code_is_paid_with_the_amount_and_a_tip(
    world: World, party: Party, server: WalletServer, pw: Any, tmp_path: Path
) -> None:
    with MerchantApi(world.pos) as api:
        code = api.static_code(currency="EUR", valid_days=30).code
    video = fakecam.write_video(tmp_path / "printed.y4m", code)
    before = _balance(world, party.customer_id)
    with phone(pw, video) as ctx:
        page = open_paired(ctx, server, "/#/scan")
        errors = collect_errors(page)
        wait_screen(page, "offer")
        assert page.locator("#offer-static").is_visible()
        assert page.locator("#offer-merchant").inner_text() == "Café Lumière"
        # nothing payable yet; then a bad tip; neither asks for the PIN
        for amount, tip in (("", ""), ("8.00", "1.2.3"), ("8.00", "-1"), ("0", "1.00")):
            page.locator("#offer-amount").fill(amount)
            page.locator("#offer-tip").fill(tip)
            assert page.locator("#offer-sum").inner_text() == "-"
            page.locator("#offer-pay").click()
            assert "Enter the amount" in page.locator("#offer-error").inner_text()
            assert evaluate(page, "() => document.body.dataset.screen") == "offer"
        page.locator("#offer-amount").fill("8.00")
        page.locator("#offer-tip").fill("1.20")
        assert page.locator("#offer-sum").inner_text() == "9.20 EUR"
        check_screen(page, "offer-static-tip")
        page.locator("#offer-pay").click()
        wait_screen(page, "pin")
        assert "Pay 9.20 EUR to Café Lumière" in page.locator("#pin-what").inner_text()
        press_pin(page, PIN)
        wait_screen(page, "receipt")
        assert page.locator("#receipt-amount").inner_text() == "9.20 EUR"
        assert errors == []
    assert _balance(world, party.customer_id) == before - 920
