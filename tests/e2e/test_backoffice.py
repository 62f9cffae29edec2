"""The back office (issue #18): every web POS page in Debian's headless Chromium at phone width
(axe-core: 0 violations; nothing scrolls sideways), and attacks over raw HTTP on a real
``pos serve``: refunds beyond what was paid (at once, in parts, concurrently), without a
session, from another merchant's staff, cross-site or without the CSRF token; markup in item
names and search filters; spreadsheet formulas in exports; two terminals of one merchant.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from lxml import etree

from safescan.code import qr
from safescan.merchant.client import MerchantApi
from safescan.procs import ManagedProcess
from safescan.wallet.errors import WalletError
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, World
from tests.e2e.test_web_pos import Staff, _code_of, _institution_state, _pay
from tests.e2e.test_web_pos_state import PHONE, no_sideways_scroll, wait_for
from tests.e2e.walletapp.browser import ARTIFACTS, axe_violations, bound, headless_chromium
from tests.merchant.test_exports import XSD

XSS = '<img src=x onerror=alert(1)>"><script>alert(2)</script>'
FORMULA = "=cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def pos(world: World) -> Iterator[str]:
    proc: ManagedProcess
    proc, url = world.stack.start_pos_server(world.pos_path, name="pos-backoffice")
    try:
        yield url
    finally:
        proc.stop()


def _paid_order(world: World, staff: Staff, items: list[dict[str, Any]]) -> str:
    r = staff.post("/api/orders", {"items": items})
    assert r.status_code == 201, r.text
    oid = str(r.json()["order_id"])
    _pay(world, _code_of(staff, oid))
    wait_for(lambda: staff.http.get(f"/api/orders/{oid}").json()["state"] == "PAID", f"{oid} paid")
    return oid


def _form_refund(staff: Staff, oid: str, amount: str, reason: str = "") -> httpx.Response:
    """The back office's two steps: review (a confirmation page), then confirm."""
    r = staff.http.post(
        f"/orders/{oid}/refund",
        data={"csrf": staff.csrf, "amount": amount, "reason": reason},
        headers={"Origin": staff.url},
    )
    if r.status_code != 200 or "refund-confirm" not in r.text:
        return r
    token = re.search(r'name="confirmation" value="([^"]+)"', r.text)
    assert token
    return staff.http.post(
        f"/orders/{oid}/refund/confirm",
        data={"csrf": staff.csrf, "confirmation": token.group(1)},
        headers={"Origin": staff.url},
    )


def _refunded(world: World, oid: str) -> tuple[str, int]:
    with MerchantApi(world.pos) as api:
        order = api.orders.get(oid)
    return str(order.state), order.refunded_amount


# --- refunds: never more than was paid ------------------------------------------------------


def test_refunds_beyond_what_was_paid_are_refused(world: World, pos: str) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(world, staff, [{"name": "Soup", "quantity": 1, "unit_price": 1000}])
    # at once: more than paid, in every spelling
    for amount in ("10.01", "11", "1000", "99999999", "10.001", "-1", "0x10", "1e3", "", "abc"):
        r = _form_refund(staff, oid, amount)
        assert r.status_code in (400, 409), (amount, r.status_code)
        assert _refunded(world, oid) == ("PAID", 0), amount
    # in parts: 4 + 4 is fine, then 4 more is refused, 2 is the rest
    assert _form_refund(staff, oid, "4.00", "one").status_code == 303
    assert _form_refund(staff, oid, "4", "two").status_code == 303
    assert _form_refund(staff, oid, "4.00").status_code in (400, 409)
    assert _refunded(world, oid) == ("PARTIALLY_REFUNDED", 800)
    assert _form_refund(staff, oid, "2.00").status_code == 303
    assert _refunded(world, oid) == ("REFUNDED", 1000)
    assert _form_refund(staff, oid, "0.01").status_code in (400, 409)
    page = staff.http.get(f"/orders/{oid}").text
    assert "one" in page and "two" in page and "refund-form" not in page


@pytest.mark.parametrize("way", ["forms", "json"])
def test_concurrent_refunds_never_exceed_the_payment(world: World, pos: str, way: str) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(world, staff, [{"name": "Cake", "quantity": 1, "unit_price": 1000}])
    # five refunds of 6.00 each on a 10.00 payment, all previewed first (each one fits on its
    # own), then confirmed at the same moment: the institution makes exactly one
    tokens = []
    for _ in range(5):
        if way == "json":
            r = staff.post(f"/api/orders/{oid}/refunds/preview", {"amount": 600})
            tokens.append(r.json()["confirmation"])
        else:
            r = staff.http.post(
                f"/orders/{oid}/refund",
                data={"csrf": staff.csrf, "amount": "6.00"},
                headers={"Origin": pos},
            )
            found = re.search(r'name="confirmation" value="([^"]+)"', r.text)
            assert found, r.text
            tokens.append(found.group(1))
    results: list[int] = []
    start = threading.Barrier(len(tokens))

    def confirm(token: str) -> None:
        client = httpx.Client(base_url=pos, cookies=staff.http.cookies, timeout=30)
        start.wait()
        if way == "json":
            r = client.post(
                f"/api/orders/{oid}/refunds",
                json={"confirmation": token},
                headers={"Origin": pos, "X-CSRF-Token": staff.csrf},
            )
            results.append(r.status_code)
        else:
            r = client.post(
                f"/orders/{oid}/refund/confirm",
                data={"csrf": staff.csrf, "confirmation": token},
                headers={"Origin": pos},
            )
            results.append(201 if r.status_code == 303 else r.status_code)

    threads = [threading.Thread(target=confirm, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results).count(201) == 1, results
    assert _refunded(world, oid) == ("PARTIALLY_REFUNDED", 600)


# --- who may refund -------------------------------------------------------------------------


def test_refunds_need_this_merchants_signed_in_staff_and_the_csrf_token(
    world: World, pos: str
) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(world, staff, [{"name": "Bread", "quantity": 1, "unit_price": 500}])
    before = _institution_state(world)
    review = {"amount": "1.00", "reason": "x"}
    # no session, a forged one, an ended one
    anon = httpx.Client(base_url=pos)
    for sid in ("", "forged", "A" * 43):
        anon.cookies.set("safescan_pos_session", sid)
        for path in (f"/orders/{oid}/refund", f"/orders/{oid}/refund/confirm"):
            r = anon.post(path, data={**review, "csrf": staff.csrf}, headers={"Origin": pos})
            assert r.status_code == 401, (sid, path, r.status_code)
    # signed in, but no / a wrong / another session's CSRF token, or from another site
    other = Staff(world, pos)
    for csrf in ("", "x" * 43, other.csrf, staff.csrf[:-1]):
        r = staff.http.post(
            f"/orders/{oid}/refund", data={**review, "csrf": csrf}, headers={"Origin": pos}
        )
        assert r.status_code == 403, csrf
    for origin in ("http://evil.example", "null", ""):
        r = staff.http.post(
            f"/orders/{oid}/refund",
            data={**review, "csrf": staff.csrf},
            headers={"Origin": origin} if origin else {},
        )
        assert r.status_code == 403, origin
    # a confirmation offered to another session does not work in this one
    r = other.http.post(
        f"/orders/{oid}/refund", data={**review, "csrf": other.csrf}, headers={"Origin": pos}
    )
    token = re.search(r'name="confirmation" value="([^"]+)"', r.text)
    assert token
    r = staff.http.post(
        f"/orders/{oid}/refund/confirm",
        data={"csrf": staff.csrf, "confirmation": token.group(1)},
        headers={"Origin": pos},
    )
    assert r.status_code == 400
    assert _institution_state(world) == before


def test_another_merchants_staff_cannot_see_or_refund_the_order(world: World, pos: str) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(world, staff, [{"name": "Jam", "quantity": 1, "unit_price": 700}])
    path = world.stack.workdir / "pos-other-merchant.json"
    world.stack.onboard_merchant("Librairie Soleil", "Lyon", config_name=path.name)
    proc, url = world.stack.start_pos_server(path, name="pos-other-merchant")
    try:
        rival = Staff(world, url)
        assert oid not in rival.http.get("/orders").text
        assert rival.http.get(f"/orders/{oid}").status_code == 404
        r = _form_refund(rival, oid, "1.00")
        assert r.status_code == 404
        r = rival.post(f"/api/orders/{oid}/refunds/preview", {"amount": 100})
        assert r.status_code == 404
        assert _refunded(world, oid) == ("PAID", 0)
    finally:
        proc.stop()


# --- markup, formulas, terminals --------------------------------------------------------------


def test_markup_in_item_names_and_filters_stays_text(world: World, pos: str) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(world, staff, [{"name": XSS[:64], "quantity": 1, "unit_price": 250}])
    for query in (
        {"q": XSS[:64]},
        {"q": "<script>alert(1)</script>"},
        {"state": "<b>PAID</b>"},
        {"from": '"><svg onload=alert(1)>'},
        {"min": "<i>1</i>"},
    ):
        r = staff.http.get("/orders", params=query)
        assert "<script>alert" not in r.text and "<img src=x" not in r.text, query
        assert "<svg onload" not in r.text and "<b>PAID</b>" not in r.text, query
    r = staff.http.get("/orders", params={"q": XSS[:20]})
    assert r.status_code == 200 and oid in r.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in staff.http.get(f"/orders/{oid}").text
    # % and _ are text, not patterns
    assert "0 orders" in staff.http.get("/orders", params={"q": "%_%_%"}).text
    # bad filters: a clear error, nothing listed
    for bad in ({"state": "PAYED"}, {"from": "2026-02-30"}, {"min": "1.2.3"}, {"q": "a\x07b"}):
        r = staff.http.get("/orders", params=bad)
        assert r.status_code == 400 and "0 orders" in r.text, bad


def test_exports_neutralise_formulas_and_validate(world: World, pos: str) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(world, staff, [{"name": FORMULA, "quantity": 2, "unit_price": 150}])
    assert _form_refund(staff, oid, "1.00", "@SUM(1+1)").status_code == 303
    text = staff.http.get("/settlement.csv").text
    rows = list(csv.DictReader(io.StringIO(text)))
    mine = [r for r in rows if r["order_id"] == oid]
    assert {r["type"] for r in mine} == {"payment", "refund"}
    for row in rows:
        for value in row.values():
            assert value[:1] not in ("=", "+", "-", "@", "\t", "\r"), row
    assert any(r["reason"] == "'@SUM(1+1)" for r in mine)
    xml = staff.http.get("/settlement.camt053.xml")
    assert xml.status_code == 200 and "attachment" in xml.headers["content-disposition"]
    schema = etree.XMLSchema(etree.parse(str(XSD)))
    doc = etree.fromstring(xml.content)
    assert schema.validate(doc), schema.error_log
    assert oid.encode() in xml.content


def test_two_terminals_of_one_merchant_list_the_same_orders(world: World, pos: str) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(world, staff, [{"name": "Terminal A tea", "quantity": 1, "unit_price": 300}])
    second = world.stack.workdir / "terminal-b" / "pos.json"
    second.parent.mkdir(exist_ok=True)
    shutil.copy(world.pos_path, second)
    proc, url = world.stack.start_pos_server(second, name="pos-terminal-b")
    try:
        b = Staff(world, url)
        listing = b.http.get("/orders", params={"q": "Terminal A"}).text
        assert oid in listing and "other terminal" in listing
        # terminal B refunds A's order; A sees it
        assert _form_refund(b, oid, "1.00", "from B").status_code == 303
        assert _refunded(world, oid) == ("PARTIALLY_REFUNDED", 100)
        wait_for(
            lambda: staff.http.get(f"/api/orders/{oid}").json()["refunded"] == 100,
            "terminal A shows B's refund",
        )
        detail = staff.http.get(f"/orders/{oid}").text
        assert "from B" in detail and "another terminal" in detail
        assert b.csrf not in detail
        rows = list(csv.DictReader(io.StringIO(staff.http.get("/settlement.csv").text)))
        assert [r["reason"] for r in rows if r["order_id"] == oid and r["type"] == "refund"] == [
            "from B"
        ]
        # and an order B makes shows in A's list
        oid_b = _paid_order(
            world, b, [{"name": "Terminal B cake", "quantity": 1, "unit_price": 200}]
        )
        wait_for(lambda: oid_b in staff.http.get("/orders").text, "A lists B's order")
    finally:
        proc.stop()


# --- every page in the browser ------------------------------------------------------------------

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run") as b:
        yield b


def test_every_page_is_usable_at_phone_width_with_no_axe_violation(
    world: World, pos: str, browser: Any
) -> None:
    staff = Staff(world, pos)
    oid = _paid_order(
        world,
        staff,
        [
            {"name": XSS[:64], "quantity": 1, "unit_price": 420},
            {"name": "Flat white", "quantity": 2, "unit_price": 350},
        ],
    )
    ctx = bound(browser.new_context(viewport=PHONE))
    page = ctx.new_page()
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    checked: dict[str, list[Any]] = {}

    def check(name: str) -> None:
        page.wait_for_load_state("load")
        checked[name] = axe_violations(page)
        no_sideways_scroll(page)

    try:
        page.goto(pos + "/shop")
        check("shop")
        page.locator("#checkout-button").click()
        page.wait_for_url("**/shop/checkout/*")
        page.locator("#qr").wait_for()
        check("checkout")
        page.goto(pos + "/shop/checkout/not-a-token")
        check("error")
        page.goto(pos + "/login")
        check("login")
        page.locator("#name").fill(world.stack.staff_name)
        page.locator("#password").fill(world.stack.staff_password)
        page.locator("#sign-in").click()
        page.wait_for_url(pos + "/")
        check("counter")
        page.get_by_role("link", name="Orders").click()
        page.wait_for_url("**/orders")
        assert oid in page.locator("#orders").inner_text()
        page.locator("#f-state").select_option("PAID")
        page.locator("#f-q").fill("Flat white")
        page.locator("#search").click()
        page.wait_for_url("**/orders?*")
        assert oid in page.locator("#orders").inner_text()
        check("orders")
        page.get_by_role("link", name=oid).click()
        page.wait_for_url(f"**/orders/{oid}")
        assert XSS[:40] in page.locator("table.summary").first.inner_text()
        check("order")
        page.locator("#f-amount").fill("2.50")
        page.locator("#f-reason").fill("spilled")
        page.locator("#refund-review").click()
        page.locator("#refund-question").wait_for()
        question = page.locator("#refund-question").inner_text()
        assert "2.50 EUR" in question and "11.20 EUR" in question and "spilled" in question
        check("refund-confirm")
        page.locator("#refund-yes").click()
        page.wait_for_url(f"**/orders/{oid}?done=refund")
        assert page.locator("#order").get_attribute("data-state") == "PARTIALLY_REFUNDED"
        assert "spilled" in page.locator("#refunds").inner_text()
        page.get_by_role("link", name="Settlement").click()
        page.wait_for_url("**/settlement")
        for chart in ("chart-sales", "chart-refunds", "chart-items"):
            assert page.locator(f"#{chart} svg rect").count() >= 1
        assert "Flat white" in page.locator("#chart-items").inner_text()
        check("settlement")
        page.get_by_role("link", name="Shop-front codes").click()
        page.wait_for_url("**/codes")
        page.locator("#f-label").fill("Table 4")
        page.locator("#make-code").click()
        page.wait_for_url("**/codes")
        check("codes")
        png_href = page.locator("#codes a", has_text="PNG").first.get_attribute("href")
        pdf_href = page.locator("#codes a", has_text="PDF").first.get_attribute("href")
        png = page.request.get(pos + str(png_href))
        assert png.status == 200 and png.headers["content-type"] == "image/png"
        text = qr.decode_image(png.body())
        pdf = page.request.get(pos + str(pdf_href))
        assert pdf.status == 200 and pdf.body().startswith(b"%PDF")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "backoffice-codes.png"), full_page=True)
    finally:
        ctx.close()
    assert checked == {name: [] for name in checked}, checked
    assert len(checked) == 10
    assert dialogs == [] and errors == []
    # the printed code is a static code of this merchant: the wallet asks for the amount (the
    # customer adds a tip to it: 8.00 + 1.20), pays, and the back office lists the payment
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(text) as offer:
        shown = offer.describe()
        assert shown["kind"] == "static" and shown["merchant"]["id"] == world.pos.merchant_id
        with pytest.raises(WalletError):
            offer.pay(PIN)  # no amount: refused before anything is signed
        paid = offer.pay(PIN, amount=800 + 120)
    assert paid.receipt.amount == 920
    wait_for(
        lambda: "9.20 EUR" in staff.http.get("/orders", params={"state": "PAID"}).text,
        "the static code's payment is listed",
    )
