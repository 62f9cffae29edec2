"""The wallet app in Debian's headless Chromium with a fake camera (docs/apps.md, "The wallet
app").

Each video is made here from a rendered code as a phone sees it (fakecam.py beside this file:
a hand bringing it in, perspective, focus blur, glare, low light, noise). The app runs as its own
process (``safescan wallet serve``) against the session's real institution and a real key
carrier process, on loopback. Screenshots go to artifacts/.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from safescan.code import LineItem, Merchant
from safescan.demo import altered_code, forged_code
from safescan.merchant.client import MerchantApi
from safescan.remote import AdminApi
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, Party, World
from tests.e2e.walletapp import fakecam
from tests.e2e.walletapp.browser import (
    CHROMIUM,
    PHONE,
    WalletServer,
    check_screen,
    collect_errors,
    open_paired,
    phone,
    press_pin,
    wait_screen,
)

pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(f"headless browser tests need Chromium at {CHROMIUM}", allow_module_level=True)

ITEMS = [LineItem("Flat white", 2, 350), LineItem("Croissant", 1, 180), LineItem("Juice", 1, 420)]


def _order(world: World, items: list[LineItem] = ITEMS) -> Any:
    with MerchantApi(world.pos) as api:
        return api.create_order(items, currency="EUR")


def _balance(world: World, customer: str) -> int:
    with AdminApi(world.base_url, world.stack.admin_token) as admin:
        return admin.balance(customer, "EUR")


def _signatures(party: Party) -> int:
    with Wallet.load(party.wallet_dir) as wallet:
        return int(wallet.status()["carrier"]["signature_counter"])


@pytest.mark.parametrize("decoder", ["wasm", "server"])
def test_camera_scan_shows_the_verified_offer_and_pays(
    world: World, party: Party, server: WalletServer, pw: Any, tmp_path: Path, decoder: str
) -> None:
    order = _order(world)
    video = fakecam.write_video(tmp_path / "genuine.y4m", order.code)
    before = _balance(world, party.customer_id)
    with phone(pw, video) as ctx:
        requests: list[str] = []
        ctx.on("request", lambda r: requests.append(r.url))
        consoles: list[str] = []
        page = open_paired(ctx, server, f"/?decoder={decoder}#/scan")
        page.on("console", lambda m: consoles.append(m.text))
        errors = collect_errors(page)
        wait_screen(page, "offer")
        assert page.locator("#offer-merchant").inner_text() == "Café Lumière"
        assert page.locator("#offer-where").inner_text() == "Paris, FR"
        rows = page.locator("#offer-items tbody tr").all_inner_texts()
        assert [r.split("\t")[0] for r in rows] == ["Flat white", "Croissant", "Juice"]
        assert page.locator("#offer-total").inner_text() == "13.00 EUR"
        assert "min" in page.locator("#offer-expiry").inner_text()
        assert page.locator("#offer-pay").inner_text() == "Pay 13.00 EUR"
        timings = page.evaluate("window.safescanTimings")
        assert timings["decoder"] == decoder and timings["frames"] >= 1
        # the decision is under the thumb: in the viewport without scrolling
        box = page.locator("#offer-pay").bounding_box()
        assert box is not None and box["y"] + box["height"] <= PHONE["height"]
        check_screen(page, f"offer-{decoder}")

        page.locator("#offer-pay").click()
        wait_screen(page, "pin")
        assert "Pay 13.00 EUR to Café Lumière" in page.locator("#pin-what").inner_text()
        check_screen(page, f"pin-{decoder}")
        press_pin(page, PIN)
        wait_screen(page, "receipt")
        check_screen(page, f"receipt-{decoder}")
        payment_id = page.locator("#receipt-payment").inner_text()
        assert page.locator("#receipt-amount").inner_text() == "13.00 EUR"
        assert "Verified" in page.locator("#receipt-verified").inner_text()
        screens = page.evaluate("window.__screens")
        assert screens.index("offer") < screens.index("pin") < screens.index("receipt")
        assert errors == []
        assert not [c for c in consoles if PIN in c]
    with MerchantApi(world.pos) as api:
        paid = api.get_order(order.order_id)
    assert paid["state"] == "PAID" and paid["payment_id"] == payment_id
    assert _balance(world, party.customer_id) == before - 1300
    with Wallet.load(party.wallet_dir) as wallet:
        assert wallet.history.paid_code(order.digest) == payment_id
    # everything the page loaded came from the wallet service itself (no CDN, no third party)
    assert requests and all(u.startswith(server.url + "/") for u in requests), requests


def _refused_video(world: World, kind: str) -> str:
    genuine = _order(world)
    if kind == "swapped_sticker":
        merchant = Merchant(world.pos.merchant_id, "Café Lumière", "Paris", "FR", 5814)
        kid = next(iter(world.pos.trust.institution_keys))
        return forged_code(world.base_url, genuine, merchant, kid)
    offset = {"altered_40": 40, "altered_90": 90, "altered_150": 150}[kind]
    return altered_code(genuine.code, offset)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("swapped_sticker", "signature invalid"),
        ("altered_40", "decryption failed"),
        ("altered_150", "decryption failed"),
    ],
)
def test_a_swapped_or_altered_code_is_refused_before_any_pin(
    world: World,
    party: Party,
    server: WalletServer,
    pw: Any,
    tmp_path: Path,
    kind: str,
    reason: str,
) -> None:
    text = _refused_video(world, kind)
    video = fakecam.write_video(tmp_path / f"{kind}.y4m", text)
    before, signed = _balance(world, party.customer_id), _signatures(party)
    with phone(pw, video) as ctx:
        page = open_paired(ctx, server, "/#/scan")
        errors = collect_errors(page)
        wait_screen(page, "refused")
        assert page.locator("#refused-reason").inner_text() == reason
        assert "Nothing was paid. You were not asked anything." in page.inner_text(
            "#screen-refused"
        )
        screens = page.evaluate("window.__screens")
        assert "offer" not in screens and "pin" not in screens, screens
        assert page.locator("#pin-ok").is_hidden()
        check_screen(page, f"refused-{kind}")
        assert errors == []
    assert _balance(world, party.customer_id) == before
    assert _signatures(party) == signed  # the carrier signed nothing


def test_a_video_with_no_code_keeps_scanning_without_error(
    party: Party, server: WalletServer, pw: Any, tmp_path: Path
) -> None:
    video = fakecam.write_video(tmp_path / "nocode.y4m", None)
    with phone(pw, video) as ctx:
        scans: list[str] = []
        ctx.on("request", lambda r: scans.append(r.url) if r.url.endswith("/api/scan") else None)
        page = open_paired(ctx, server, "/#/scan")
        errors = collect_errors(page)
        # more frames than the clip has: it looped, and the app is still looking
        page.wait_for_function(
            "() => Number(document.getElementById('camera').dataset.frames || 0) >= 60",
            timeout=120_000,
        )
        assert page.evaluate("document.body.dataset.screen") == "scan"
        assert page.locator("#scan-status").inner_text() == "Looking for a payment code…"
        assert page.locator("#scan-hint").inner_text() == ""
        check_screen(page, "scan")
        assert scans == [] and errors == []
