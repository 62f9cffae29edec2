"""The web POS in headless Chromium: build an order, show the code, switch to paid live.

Uses Debian's /usr/bin/chromium through Playwright (never `playwright install`). Screenshots
are saved to artifacts/ as test artefacts.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safescan.procs import ManagedProcess
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, World
from tests.e2e.walletapp.browser import bound

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"headless browser tests need Chromium at {CHROMIUM}", allow_module_level=True)


@pytest.fixture(scope="module")
def pos_url(world: World) -> Iterator[str]:
    """`safescan pos serve` as a real process."""
    proc: ManagedProcess
    proc, url = world.stack.start_pos_server(world.pos_path, name="pos-web")
    try:
        yield url
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium."""
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def sign_in(world: World, page: Any, pos_url: str) -> None:
    """Staff sign-in through the form, as a cashier does."""
    page.goto(pos_url + "/")
    page.wait_for_url("**/login")
    page.locator("#name").fill(world.stack.staff_name)
    page.locator("#password").fill(world.stack.staff_password)
    page.locator("#sign-in").click()
    page.wait_for_url(pos_url + "/")


def _pay_from_screen(world: World, page: Any, tmp_path: Path) -> str:
    """The customer photographs the screen; the wallet decodes it and pays."""
    shot = tmp_path / "screen.png"
    page.locator("#qr").screenshot(path=str(shot))
    with Wallet.load(world.alice.wallet_dir) as wallet:
        scan = wallet.scan(shot)
        assert scan.kind == "safescan"
        with wallet.open(scan.text) as offer:
            return offer.pay(PIN).receipt.payment_id


def test_pos_page_switches_to_paid_live_and_refunds(
    world: World, pos_url: str, browser: Any, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = bound(browser.new_page(viewport={"width": 1100, "height": 900}))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(world, page, pos_url)
    page.get_by_role("button", name="Flat white 3.50").click()
    page.get_by_role("button", name="Flat white 3.50").click()
    page.get_by_role("button", name="Croissant 1.80").click()
    page.get_by_role("button", name="Orange juice 4.20").click()
    assert page.locator("#draft-total").inner_text() == "13.00 EUR"
    page.locator("#create").click()
    page.locator("#qr").wait_for()
    status = page.locator("#status")
    assert status.get_attribute("data-state") == "CREATED"
    assert "Waiting for payment" in status.inner_text()
    assert page.locator("#total").inner_text() == "13.00 EUR"
    page.wait_for_function("() => document.getElementById('qr').naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "pos-waiting.png"))

    payment_id = _pay_from_screen(world, page, tmp_path)

    page.wait_for_selector("#status[data-state='PAID']", timeout=20_000)
    assert "Paid" in status.inner_text()
    receipt = page.locator("#receipt").inner_text()
    assert payment_id in receipt and "Receipt verified" in receipt
    page.screenshot(path=str(ARTIFACTS / "pos-paid.png"))

    # a partial refund, reviewed then confirmed; then the rest
    page.locator("#refund").click()
    assert page.locator("#refund-amount").input_value() == "13.00"
    page.locator("#refund-amount").fill("3.50")
    page.locator("#refund-reason").fill("one coffee was cold")
    page.locator("#refund-review").click()
    page.locator("#refund-confirm").wait_for()
    question = page.locator("#refund-question").inner_text()
    assert "3.50 EUR" in question and "13.00 EUR" in question and "cold" in question
    page.screenshot(path=str(ARTIFACTS / "pos-refund-confirm.png"))
    page.locator("#refund-yes").click()
    page.wait_for_selector("#status[data-state='PARTIALLY_REFUNDED']", timeout=10_000)
    page.locator("#refund").click()
    assert page.locator("#refund-amount").input_value() == "9.50"
    page.locator("#refund-review").click()
    page.locator("#refund-confirm").wait_for()
    page.locator("#refund-no").click()  # changed one's mind: nothing happens
    assert status.get_attribute("data-state") == "PARTIALLY_REFUNDED"
    page.locator("#refund").click()
    page.locator("#refund-review").click()
    page.locator("#refund-yes").click()
    page.wait_for_selector("#status[data-state='REFUNDED']", timeout=10_000)
    assert "Refunded" in status.inner_text()
    assert errors == []
    page.close()


def test_checkout_page_shows_summary_code_and_live_status(
    world: World, pos_url: str, browser: Any, tmp_path: Path
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page = bound(browser.new_page(viewport={"width": 700, "height": 1000}))
    page.goto(pos_url + "/shop")
    page.locator("#checkout-button").click()
    page.wait_for_url("**/shop/checkout/*")
    page.locator("#qr").wait_for()
    assert page.locator("#total").inner_text() == "13.00 EUR"
    assert "Orange juice" in page.locator("table.summary").inner_text()
    page.wait_for_function("() => document.getElementById('qr').naturalWidth > 0")
    _pay_from_screen(world, page, tmp_path)
    page.wait_for_selector("#status[data-state='PAID']", timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "checkout-paid.png"), full_page=True)
    page.close()


def test_pos_api_refuses_requests_without_a_session(pos_url: str) -> None:
    origin = {"Origin": pos_url}
    r = httpx.post(
        pos_url + "/api/orders",
        json={"items": [{"name": "Tea", "quantity": 1, "unit_price": 200}]},
        headers=origin,
    )
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "not_signed_in"
    page = httpx.get(pos_url + "/login")
    assert "script-src 'self'" in page.headers["content-security-policy"]
