"""The web POS keeps its state (issue #18): orders and staff sessions live in the POS journal,
a restart reconciles with the institution (a payment made while the POS was down shows as
paid once its receipt verifies), and a page open across the restart says it lost the live
connection, reconnects and catches up. Real processes on 127.0.0.1; Debian's Chromium.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from safescan import merchant
from safescan.procs import ManagedProcess
from safescan.web import pki
from tests.e2e.conftest import World
from tests.e2e.test_web_pos import Staff, _code_of, _pay
from tests.e2e.walletapp.browser import AXE, axe_violations, bound, evaluate, headless_chromium

STATIC = Path(merchant.__file__).with_name("static")

PHONE = {"width": 390, "height": 844}


def restart(world: World, proc: ManagedProcess, url: str) -> tuple[ManagedProcess, str]:
    """Start the same ``pos serve`` command again on the same port (as after a crash)."""
    port = url.rsplit(":", 1)[1]
    argv = list(proc.argv)
    argv[argv.index("--port") + 1] = port
    again = world.stack.supervisor.spawn(
        proc.name + "-again", argv, capture=True, env=world.stack.env()
    )
    got = again.ready_line("READY")
    again.wait_http(got + "/health", verify=pki.verify_for(got))
    assert got == url
    return again, got


def wait_for(check: Any, what: str, seconds: float = 30) -> Any:
    """Poll ``check()`` until it returns something true (no timing assertion: a deadline)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"never: {what}")


def test_payment_while_the_pos_is_down_shows_as_paid_after_restart(world: World) -> None:
    proc, url = world.stack.start_pos_server(world.pos_path, name="pos-restarted")
    try:
        staff = Staff(world, url)
        doc = staff.order()
        oid, checkout = doc["order_id"], doc["checkout_url"]
        code = _code_of(staff, oid)
        assert doc["expires_in"] > 500  # the counter's countdown starts from this
        proc.stop()  # the POS dies with the order waiting
        _pay(world, code)  # the customer pays meanwhile
        proc, url = restart(world, proc, url)
        # the same staff session works after the restart (kept, hashed, in the journal)
        got = wait_for(
            lambda: (r := staff.http.get(f"/api/orders/{oid}").json()).get("state") == "PAID" and r,
            "the restarted POS shows the order paid",
        )
        assert got["receipt"]["signature_verified"] is True
        assert got["receipt"]["order_id"] == oid
        # the customer's checkout page, from before the restart, still works
        customer = httpx.Client(base_url=url, verify=pki.verify_for(url))
        state = customer.get(checkout + "/state").json()
        assert state["state"] == "PAID" and state["paid"]["payment_id"]
        # a refund of it, confirmed, after the restart
        base = f"/api/orders/{oid}/refunds"
        offer = staff.post(base + "/preview", {"amount": 100, "reason": "after restart"}).json()
        r = staff.post(base, {"confirmation": offer["confirmation"]})
        assert r.status_code == 201 and r.json()["refunded"] == 100
    finally:
        proc.stop()


def test_signed_out_and_expired_sessions_stay_ended_after_restart(world: World) -> None:
    proc, url = world.stack.start_pos_server(world.pos_path, name="pos-sessions")
    try:
        staff, gone = Staff(world, url), Staff(world, url)
        gone_sid = gone.http.cookies["safescan_pos_session"]
        r = gone.http.post("/logout", data={"csrf": gone.csrf}, headers={"Origin": url})
        assert r.status_code == 303
        proc.stop()
        proc, url = restart(world, proc, url)
        assert staff.http.get("/", follow_redirects=False).status_code == 200
        thief = httpx.Client(base_url=url, verify=pki.verify_for(url))
        for sid in (gone_sid, "x" * 43, ""):
            thief.cookies.set("safescan_pos_session", sid)
            r = thief.post(
                "/api/orders",
                json={"items": [{"name": "T", "quantity": 1, "unit_price": 1}]},
                headers={"Origin": url, "X-CSRF-Token": gone.csrf},
            )
            assert r.status_code == 401, sid
        # the journal holds no session id in clear
        journal = world.pos_path.with_name(world.pos_path.stem + "-journal.sqlite3")
        raw = b"".join(
            p.read_bytes() for p in journal.parent.glob(journal.name + "*") if p.is_file()
        )
        assert staff.http.cookies["safescan_pos_session"].encode() not in raw
    finally:
        proc.stop()


# --- in the browser -------------------------------------------------------------------------

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with headless_chromium("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run") as b:
        assert AXE.is_file()
        yield b


def no_sideways_scroll(page: Any) -> None:
    """Nothing is wider than the phone (the offending elements are named if something is)."""
    wide = evaluate(
        page,
        """(w) => [...document.querySelectorAll('body *')]
             .filter(e => e.getBoundingClientRect().right > w + 0.5
                          || e.scrollWidth > e.clientWidth + 1)
             .map(e => e.tagName + '#' + e.id + '.' + e.className + ':'
                       + e.scrollWidth + '/' + e.clientWidth)""",
        PHONE["width"],
    )
    assert evaluate(page, "() => document.documentElement.scrollWidth") <= PHONE["width"], wide


def test_a_page_never_takes_an_older_answer_of_its_order(browser: Any) -> None:
    """order.js's rule for the staff page (pos.js's render): the answer to its own request
    (a refund, a cancel) can arrive after a newer server-sent message of the same order; the
    POS raises the order's ``version`` at every change it publishes, and the older is dropped
    (tests/merchant/test_journal_forward.py: the same rule for the journal and the POS)."""
    ctx = bound(browser.new_context())
    try:
        page = ctx.new_page()
        page.set_content("<!doctype html><title>order.js</title>")
        page.add_script_tag(content=(STATIC / "order.js").read_text(encoding="utf-8"))
        got = evaluate(
            page,
            """() => { const n = window.safescanOrder.newer;
                const a = (v) => ({order_id: "A", version: v});
                return [n(null, a(1)), n(a(3), a(2)), n(a(3), a(3)), n(a(3), a(4)),
                        n(a(3), {order_id: "B", version: 1}), n(a(3), {order_id: "A"})]; }""",
        )
        assert got == [True, False, True, True, True, True]
    finally:
        ctx.close()
    assert "if (!newer(current, doc)) return;" in (STATIC / "pos.js").read_text(encoding="utf-8")


def test_counter_page_at_phone_width_survives_a_restart(world: World, browser: Any) -> None:
    proc, url = world.stack.start_pos_server(world.pos_path, name="pos-phone")
    ctx = bound(browser.new_context(viewport=PHONE, ignore_https_errors=False))
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url + "/")
        page.wait_for_url("**/login")
        assert axe_violations(page) == []
        no_sideways_scroll(page)
        page.locator("#name").fill(world.stack.staff_name)
        page.locator("#password").fill(world.stack.staff_password)
        page.locator("#sign-in").click()
        page.wait_for_url(url + "/")
        assert axe_violations(page) == []
        no_sideways_scroll(page)
        page.get_by_role("button", name="Flat white 3.50").click()
        page.get_by_role("button", name="Croissant 1.80").click()
        page.locator("#create").click()
        page.locator("#qr").wait_for()
        page.wait_for_function("() => document.getElementById('qr').naturalWidth > 0")
        no_sideways_scroll(page)
        # the code is in view after "show payment code", with its countdown and downloads
        box = page.locator("#qr").bounding_box()
        assert box is not None
        assert box["y"] >= 0 and box["y"] + box["height"] <= PHONE["height"]
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        expiry = page.locator("#expiry")
        assert expiry.is_visible() and "Code expires in" in expiry.inner_text()
        left = int(expiry.get_attribute("data-left") or 0)
        assert 0 < left <= 600
        for fmt, media in (("png", "image/png"), ("svg", "image/svg+xml")):
            link = page.locator(f"#download-{fmt}")
            assert link.get_attribute("download", timeout=1000)
            got = page.request.get(url + (link.get_attribute("href") or ""))
            assert got.status == 200 and got.headers["content-type"].startswith(media)
        assert axe_violations(page) == []
        oid = page.locator(".order").get_attribute("data-order-id")
        staff = Staff(world, url)
        code = _code_of(staff, str(oid))
        # the POS goes away: the page says so
        proc.stop()
        page.wait_for_selector("#live[data-state='lost']", timeout=20_000)
        assert "lost" in page.locator("#live").inner_text()
        assert axe_violations(page) == []
        _pay(world, code)
        proc, url = restart(world, proc, url)
        # it reconnects by itself and catches up with the payment made meanwhile
        page.wait_for_selector("#status[data-state='PAID']", timeout=30_000)
        page.wait_for_selector("#live[data-state='up']", timeout=10_000)
        assert "Receipt verified" in page.locator("#receipt").inner_text()
        no_sideways_scroll(page)
        assert axe_violations(page) == []
        assert errors == []
    finally:
        ctx.close()
        proc.stop()
