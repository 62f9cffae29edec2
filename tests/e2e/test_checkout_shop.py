"""The example web shop (examples/shop) sells through the hosted checkout, end to end in Debian's
headless Chromium (/usr/bin/chromium through Playwright; never a downloaded browser).

Real processes on 127.0.0.1: the institution and Alice's key carrier (the e2e world), the shop
(``python -m shop``, its own process, holding only its secret API key and webhook secret). The
customer adds to the cart, checks out, the hosted page shows the code, Alice's wallet pays it
(the real wallet flow with the carrier process), the page goes to the shop's success page and the
shop shows the order paid (its webhook endpoint got the verified ``checkout.session.completed``).
The time from the payment to the shop's success page is printed (no assertion on it). axe-core
runs on every page: no violation; at 390 px nothing scrolls sideways.
"""

from __future__ import annotations

import base64
import re
import shutil
import socket
import sqlite3
import ssl
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from safescan.code import qr
from safescan.merchant.client import MerchantApi
from safescan.procs import ManagedProcess
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, World
from tests.e2e.walletapp.browser import axe_violations, bound, evaluate

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync"]
PHONE = {"width": 390, "height": 844}
SHOP_DIR = Path(__file__).resolve().parents[2] / "examples" / "shop"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
TIMEOUT = 30_000

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"headless browser tests need Chromium at {CHROMIUM}", allow_module_level=True)


@dataclass
class ShopServer:
    url: str
    api_key: str
    proc: ManagedProcess
    db: Path
    merchant_name: str


@pytest.fixture(scope="module")
def shop(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShopServer]:
    """The shop as its own process, with a checkout-only API key and the webhook secret; the
    merchant's webhook URL pointed at it."""
    tmp = tmp_path_factory.mktemp("shop")
    with MerchantApi(world.pos) as api:
        made = api.api_keys.create(["checkout:read", "checkout:write"], name="web shop")
        secret = api.webhook.rotate_secret(0).secret
        env = {
            "PATH": "/usr/bin:/bin",
            "SHOP_INSTITUTION_URL": world.base_url,
            "SHOP_API_KEY": made.key,
            "SHOP_WEBHOOK_SECRET": secret,
            "SHOP_DB": str(tmp / "shop.db"),
            "SHOP_PORT": "0",
        }
        if world.stack.tls_ca is not None:
            env["SHOP_INSTITUTION_CA"] = str(world.stack.tls_ca)
        proc = ManagedProcess(
            "shop",
            [sys.executable, "-m", "shop"],
            env=env,
            cwd=SHOP_DIR,
            log=tmp / "shop.log",
            capture=True,
        ).start()
        try:
            url = proc.ready_line("READY")
            api.webhook.set(url + "/webhooks/safescan")
            name = api.profile().name
            yield ShopServer(url, made.key, proc, tmp / "shop.db", name)
        finally:
            api.webhook.set(None)
            proc.stop()


def pinned_server_key(world: World) -> list[str]:
    """Over HTTPS, Chromium trusts exactly the institution's server key (its SPKI hash, taken
    from a connection verified with the deployment's CA); nothing for plain HTTP on loopback."""
    if not world.base_url.startswith("https://") or world.stack.tls_ca is None:
        return []
    where = urlsplit(world.base_url)
    ctx = ssl.create_default_context(cafile=str(world.stack.tls_ca))
    with (
        socket.create_connection((where.hostname, where.port or 443), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=where.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    spki = (
        x509.load_der_x509_certificate(der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return [
        f"--ignore-certificate-errors-spki-list={base64.b64encode(sha256(spki).digest()).decode()}"
    ]


@pytest.fixture(scope="module")
def browser(world: World) -> Iterator[Any]:
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(
            executable_path=CHROMIUM, args=[*ARGS, *pinned_server_key(world)], headless=True
        )
        try:
            yield b
        finally:
            b.close()


def phone_page(browser: Any, world: World) -> Any:
    ctx = bound(
        browser.new_context(
            viewport=PHONE,
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            ignore_https_errors=False,
        )
    )
    page = ctx.new_page()
    page.set_default_timeout(TIMEOUT)
    return page


def check_page(page: Any, name: str, results: dict[str, int]) -> None:
    """axe-core finds nothing; nothing is wider than the phone; a screenshot in artifacts/."""
    violations = axe_violations(page)
    results[name] = len(violations)
    assert violations == [], f"{name}: {violations}"
    assert evaluate(page, "() => document.documentElement.scrollWidth") <= PHONE["width"], name
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"checkout-shop-{name}.png"), full_page=True)


def errors_of(page: Any) -> list[str]:
    """Script errors, console errors and failed loads (the browser's own favicon request
    aside; a load failure is named by its URL)."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url}")
            if r.status >= 400 and not r.url.endswith("/favicon.ico")
            else None
        ),
    )
    return errors


def read_code(page: Any) -> str:
    """The payment code as a phone would read it: the QR image on the screen, decoded."""
    # a function, never an expression string: Playwright re-evaluates an expression with eval()
    # in the page on every poll after the first, which the checkout page's CSP (script-src
    # 'self') refuses, so the wait failed whenever the image was not loaded at the first check
    # (since 31d4d0d the first qr.svg also imports QR imaging). Polled on a timer, not frames.
    page.wait_for_function(
        "() => document.getElementById('qr').complete"
        " && document.getElementById('qr').naturalWidth > 0",
        polling=250,
    )
    return qr.decode_image(page.locator("#qr").screenshot())


def wait_for_webhook(shop: ShopServer, kind: str, timeout: float = 30) -> str:
    """The id of the first webhook of type ``kind`` the shop verified and handled."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sqlite3.connect(shop.db) as db:
            row = db.execute("SELECT id FROM webhooks_seen WHERE type = ?", (kind,)).fetchone()
        if row is not None:
            return str(row[0])
        time.sleep(0.2)
    raise AssertionError(f"the shop never handled a {kind} webhook: {shop.proc.tail()}")


def in_view(page: Any, selector: str) -> bool:
    box = page.locator(selector).bounding_box()
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"]


def test_a_customer_buys_in_the_shop_and_pays_with_the_wallet(
    world: World, shop: ShopServer, browser: Any
) -> None:
    page = phone_page(browser, world)
    errors = errors_of(page)
    axe: dict[str, int] = {}
    page.goto(shop.url + "/")
    check_page(page, "products", axe)
    page.locator("#qty-teapot").fill("1")
    page.locator("#add-teapot").click()
    page.wait_for_url(shop.url + "/cart")
    page.goto(shop.url + "/")
    page.locator("#qty-sencha").fill("2")
    page.locator("#add-sencha").click()
    page.wait_for_url(shop.url + "/cart")
    assert page.locator("#cart-total").inner_text() == "62.80 EUR"  # 45.00 + 2 x 8.90
    check_page(page, "cart", axe)
    page.locator("#checkout").click()
    page.wait_for_url(re.compile(re.escape(world.base_url) + r"/checkout/cs_[A-Z2-9]{26}$"))
    page.wait_for_selector("body[data-ready='1'][data-status='open']")
    sid = page.url.rsplit("/", 1)[1]
    assert page.locator("#merchant").inner_text() == f"Pay {shop.merchant_name}"
    assert page.locator("#total").inner_text() == "62.80 EUR"
    assert re.fullmatch(r"Code expires in 1[45]:\d\d", page.locator("#countdown").inner_text())
    code = read_code(page)
    assert in_view(page, "#qr"), "the code is not in view at 390 px"
    check_page(page, "hosted-checkout", axe)
    assert "sk_live_" not in evaluate(page, "() => document.documentElement.outerHTML")
    # Alice's wallet pays the code it read off the screen (carrier process, PIN, receipt)
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(code) as offer:
        seen = offer.describe()
        assert seen["merchant"]["name"] == shop.merchant_name and seen["total"] == 6280
        start = time.monotonic()
        offer.pay(PIN)
        paid = time.monotonic()
    page.wait_for_url(shop.url + f"/success?session={sid}")
    page.wait_for_selector("#order-status[data-status='paid']")
    shown = time.monotonic()
    print(
        f"\npayment to the shop's success page: {(shown - paid) * 1000:.0f} ms after the"
        f" wallet's payment returned ({(shown - start) * 1000:.0f} ms after it started)"
    )
    check_page(page, "success", axe)
    # the webhook: verified and handled by the shop, acknowledged in the institution's log
    event_id = wait_for_webhook(shop, "checkout.session.completed")
    with MerchantApi(world.pos) as api:
        log = api.webhook.deliveries(limit=20, event_id=event_id).deliveries
    assert [(d.state, d.status) for d in log][-1:] == [("delivered", 200)], log
    page.goto(shop.url + "/orders")
    row = page.locator("tr[data-status]").first
    assert row.get_attribute("data-status") == "paid"
    text = row.inner_text()
    assert "1 x Cast-iron teapot, 0.8 l" in text and "2 x Sencha green tea, 100 g" in text
    assert "62.80 EUR" in text and "Paid" in text
    check_page(page, "orders", axe)
    page.goto(shop.url + "/cart")
    assert page.locator("#empty").is_visible()  # the cart was emptied once paid
    assert errors == [], errors
    print(f"axe-core violations per page: {axe}")
    page.context.close()


def session_via_key(world: World, shop: ShopServer, **body: Any) -> dict[str, Any]:
    doc = {
        "items": [{"name": "Tea", "quantity": 1, "unit_price": 100}],
        "currency": "EUR",
        "success_url": shop.url + "/success?session={CHECKOUT_SESSION_ID}",
        "cancel_url": shop.url + "/cart",
        **body,
    }
    tls_ca = world.stack.tls_ca
    verify: Any = ssl.create_default_context(cafile=str(tls_ca)) if tls_ca else True
    r = httpx.post(
        world.base_url + "/v1/checkout/sessions",
        json=doc,
        headers={"Authorization": f"Bearer {shop.api_key}"},
        verify=verify,
        timeout=30,
    )
    assert r.status_code == 201, r.text
    return dict(r.json())


XSS_NAMES = [
    '<img src=x onerror="window.__xss=1">',
    '"><script>window.__xss=2</script>',
    "</td></tr><svg onload=window.__xss=3>",
    "<iframe srcdoc='<script>parent.__xss=4</script>'>",
    "javascript:window.__xss=5",
    "{{constructor.constructor('window.__xss=6')()}}",
]


def test_markup_in_item_names_stays_text_on_the_hosted_page(
    world: World, shop: ShopServer, browser: Any
) -> None:
    items = [{"name": n, "quantity": 1, "unit_price": 100 + i} for i, n in enumerate(XSS_NAMES)]
    s = session_via_key(world, shop, items=items)
    page = phone_page(browser, world)
    errors = errors_of(page)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(s["url"])
    page.wait_for_selector("body[data-ready='1']")
    cells = page.locator("#items tr td:first-child").all_inner_texts()
    assert cells == XSS_NAMES
    assert evaluate(page, "() => window.__xss") is None
    assert page.locator("#items img, #items script, #items svg, #items iframe").count() == 0
    assert dialogs == [] and errors == [], (dialogs, errors)
    page.context.close()


def test_the_page_says_when_the_live_connection_drops_and_catches_up(
    world: World, shop: ShopServer, browser: Any
) -> None:
    """The stream is cut (network failure, then an error answer) while the order is paid: the
    page says so, reconnects, and still goes to the success page."""
    s = session_via_key(world, shop)
    page = phone_page(browser, world)
    cut = {"mode": "abort"}

    def stream(route: Any) -> None:
        if cut["mode"] == "abort":
            route.abort("connectionreset")
        elif cut["mode"] == "503":
            route.fulfill(status=503, body="down")
        else:
            route.continue_()

    page.route(re.compile(r".*/checkout/cs_[A-Z2-9]{26}/events$"), stream)
    page.goto(s["url"])
    page.wait_for_selector("body[data-ready='1'][data-status='open']")
    banner = page.locator("#connection")
    banner.wait_for(state="visible")
    assert banner.inner_text() == "Live connection lost. Reconnecting…"
    cut["mode"] = "503"  # the server answers an error: the browser gives up, the page does not
    page.wait_for_timeout(2500)
    assert banner.is_visible()
    code = read_code(page)
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(code) as offer:
        offer.pay(PIN)
    cut["mode"] = "open"
    page.wait_for_url(shop.url + f"/success?session={s['id']}")
    page.wait_for_selector("#order-status")
    page.context.close()


def test_cancel_returns_to_the_shop(world: World, shop: ShopServer, browser: Any) -> None:
    s = session_via_key(world, shop)
    page = phone_page(browser, world)
    page.goto(s["url"])
    page.wait_for_selector("body[data-ready='1'][data-status='open']")
    assert in_view(page, "#cancel") or page.locator("#cancel").is_visible()
    page.locator("#cancel").click()
    page.wait_for_url(shop.url + "/cart")
    page.context.close()


def test_the_countdown_runs_out_and_the_page_says_the_checkout_expired(
    world: World, shop: ShopServer, browser: Any
) -> None:
    s = session_via_key(world, shop, expires_in=20)
    page = phone_page(browser, world)
    page.goto(s["url"])
    page.wait_for_selector("body[data-ready='1']")
    if page.locator("body").get_attribute("data-status") == "open":  # not yet run out
        assert re.fullmatch(r"Code expires in 0:[0-2]\d", page.locator("#countdown").inner_text())
    page.wait_for_selector("body[data-status='expired']", timeout=90_000)
    assert page.locator("#state").inner_text() == "This checkout has expired. Nothing was paid."
    assert not page.locator("#qr").is_visible() and not page.locator("#cancel").is_visible()
    back = page.locator("#continue")
    assert back.is_visible() and back.get_attribute("href") == shop.url + "/cart"
    check_page(page, "hosted-expired", {})
    page.context.close()
