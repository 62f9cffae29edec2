"""Attacks on the web POS (issue #13 item 2): a real ``safescan pos serve`` process on
127.0.0.1, attacked over raw HTTP and from Debian's headless Chromium.

What must hold: only a signed-in staff member, on this POS's own pages, can create orders,
cancel and refund; customers' shop and checkout pages can never reach a staff action; a DNS
rebinding page or another site in the cashier's browser changes nothing. Each attack checks
that nothing happened at the institution (the merchant's orders and refunds are unchanged).
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from safescan.code import qr
from safescan.merchant.client import MerchantApi
from safescan.merchant.input import parse_item
from safescan.procs import ManagedProcess
from safescan.wallet.flow import Wallet
from tests.e2e.conftest import PIN, World
from tests.e2e.walletapp.browser import CALL_TIMEOUT, bound, evaluate, headless_chromium
from tests.institution.pg import free_port

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def pos_url(world: World) -> Iterator[str]:
    proc: ManagedProcess
    proc, url = world.stack.start_pos_server(world.pos_path, name="pos-attacked")
    try:
        yield url
    finally:
        proc.stop()


class Staff:
    """A signed-in staff browser session over raw HTTP."""

    def __init__(self, world: World, url: str) -> None:
        self.url = url
        self.http = httpx.Client(base_url=url, timeout=30)
        page = self.http.get("/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
        assert nonce
        r = self.http.post(
            "/login",
            data={
                "nonce": nonce.group(1),
                "name": world.stack.staff_name,
                "password": world.stack.staff_password,
            },
            headers={"Origin": url},
        )
        assert r.status_code == 303 and r.headers["location"] == "/", r.text
        home = self.http.get("/")
        csrf = re.search(r'<meta name="csrf" content="([^"]+)">', home.text)
        assert csrf and csrf.group(1)
        self.csrf = csrf.group(1)

    def post(self, path: str, body: Any, **headers: str) -> httpx.Response:
        h = {"Origin": self.url, "X-CSRF-Token": self.csrf, **headers}
        return self.http.post(path, json=body, headers={k: v for k, v in h.items() if v})

    def order(self) -> dict[str, Any]:
        r = self.post("/api/orders", {"items": [{"name": "Tea", "quantity": 1, "unit_price": 400}]})
        assert r.status_code == 201, r.text
        return dict(r.json())


def _institution_state(world: World) -> list[tuple[str, str, int]]:
    with MerchantApi(world.pos) as api:
        page = api.orders.list(limit=100)
    return sorted((o.order_id, str(o.state), o.refunded_amount) for o in page.orders)


def _pay(world: World, code: str) -> None:
    with Wallet.load(world.alice.wallet_dir) as wallet, wallet.open(code) as offer:
        offer.pay(PIN)


def _refused(r: httpx.Response, code: str, status: int | None = None) -> None:
    assert r.json()["error"]["code"] == code, r.text
    if status is not None:
        assert r.status_code == status


# --- Host allow-list (DNS rebinding) --------------------------------------------------------


def test_forged_host_headers_are_refused_before_any_route(world: World, pos_url: str) -> None:
    staff = Staff(world, pos_url)
    before = _institution_state(world)
    port = pos_url.rsplit(":", 1)[1]
    forged = [
        "evil.example",
        f"evil.example:{port}",
        f"127.0.0.1.evil.example:{port}",
        f"127.0.0.1:{int(port) + 1}",
        f"localhost:{int(port) + 1}",
        f"127.0.0.1:{port}@evil.example",
        "",
        f"[::2]:{port}",
    ]
    for host in forged:
        headers = {"Host": host, "Origin": f"http://{host}", "X-CSRF-Token": staff.csrf}
        for method, path in (
            ("GET", "/"),
            ("GET", "/shop"),
            ("GET", "/login"),
            ("POST", "/api/orders"),
            ("POST", "/shop/checkout"),
        ):
            r = staff.http.request(method, path, headers=headers, json={"items": []})
            assert r.status_code == 421, (host, path, r.status_code)
            assert "Verified" not in r.text and staff.csrf not in r.text
    assert _institution_state(world) == before


# --- Origin ----------------------------------------------------------------------------------


def test_hostile_json_bodies_are_typed_refusals_that_change_nothing(
    world: World, pos_url: str
) -> None:
    """redteam: Python's json reads lone surrogates (a string no later ``.encode()`` takes),
    ``NaN`` and nesting deep enough for a ``RecursionError``; the POS now refuses each as the
    typed ``pos_request_refused`` (web.jsonbody), and nothing reaches the institution."""
    staff = Staff(world, pos_url)
    order = staff.order()
    before = _institution_state(world)
    hostile = [
        b'{"items": [{"name": "T\\ud800", "quantity": 1, "unit_price": 100}]}',
        b'{"items": [{"\\udc80": 1}]}',
        b'{"items": [{"name": "Tea", "quantity": NaN, "unit_price": 100}]}',
        b'{"items": [{"name": "Tea", "quantity": 1, "unit_price": Infinity}]}',
        b'{"items": [{"name": "Tea", "quantity": 1, "unit_price": 1e999}]}',
        b'{"items": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"amount": 1, "reason": "\\ud83d"}',
        b'{"items": "\xff"}',
    ]
    paths = ["/api/orders", f"/api/orders/{order['order_id']}/refunds/preview"]
    for raw in hostile:
        for path in paths:
            r = staff.http.post(
                path,
                content=raw,
                headers={
                    "Origin": staff.url,
                    "X-CSRF-Token": staff.csrf,
                    "Content-Type": "application/json",
                },
            )
            assert r.status_code == 400, (path, raw[:40], r.status_code, r.text[:200])
            _refused(r, "pos_request_refused")
    assert _institution_state(world) == before


def test_state_changes_need_this_pos_origin(world: World, pos_url: str) -> None:
    staff = Staff(world, pos_url)
    before = _institution_state(world)
    port = int(pos_url.rsplit(":", 1)[1])
    bad_origins: list[dict[str, str]] = [
        {"Origin": ""},  # none
        {"Origin": "null"},
        {"Origin": "http://evil.example"},
        {"Origin": f"http://127.0.0.1:{port + 1}"},
        {"Origin": f"https://127.0.0.1:{port}"},
        {"Origin": f"http://localhost.evil.example:{port}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ]
    order = {"items": [{"name": "Tea", "quantity": 1, "unit_price": 400}]}
    for extra in bad_origins:
        for path in ("/api/orders", "/shop/checkout", "/logout", "/login"):
            r = staff.post(path, order, **extra)
            assert r.status_code == 403, (extra, path, r.status_code)
    assert _institution_state(world) == before


# --- sessions and CSRF ------------------------------------------------------------------------


def test_csrf_token_is_bound_to_the_session(world: World, pos_url: str) -> None:
    alice, bob = Staff(world, pos_url), Staff(world, pos_url)
    assert alice.csrf != bob.csrf
    before = _institution_state(world)
    body = {"items": [{"name": "Tea", "quantity": 1, "unit_price": 400}]}
    for token in ("", "x" * 43, bob.csrf, alice.csrf[:-1], alice.csrf.upper()):
        r = alice.http.post(
            "/api/orders", json=body, headers={"Origin": pos_url, "X-CSRF-Token": token}
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_refused", token
    # the token in the query string or a form field of a JSON request does not count
    r = alice.http.post(f"/api/orders?csrf={alice.csrf}", json=body, headers={"Origin": pos_url})
    assert r.status_code == 403
    assert _institution_state(world) == before
    # with its own token, each session works
    assert alice.post("/api/orders", body).status_code == 201
    assert bob.post("/api/orders", body).status_code == 201


def test_no_session_forged_or_ended_sessions_and_fixation(world: World, pos_url: str) -> None:
    anon = httpx.Client(base_url=pos_url)
    assert anon.get("/", follow_redirects=False).headers["location"] == "/login"
    for cookie in ("", "forged", "A" * 43):
        anon.cookies.set("safescan_pos_session", cookie)
        r = anon.post("/api/orders", json={}, headers={"Origin": pos_url, "X-CSRF-Token": "x"})
        assert r.status_code == 401 and r.json()["error"]["code"] == "not_signed_in"
    staff = Staff(world, pos_url)
    old_sid = staff.http.cookies["safescan_pos_session"]
    r = staff.http.post("/logout", data={"csrf": staff.csrf}, headers={"Origin": pos_url})
    assert r.status_code == 303
    thief = httpx.Client(base_url=pos_url)
    thief.cookies.set("safescan_pos_session", old_sid)
    r = thief.post(
        "/api/orders",
        json={"items": [{"name": "T", "quantity": 1, "unit_price": 1}]},
        headers={"Origin": pos_url, "X-CSRF-Token": staff.csrf},
    )
    assert r.status_code == 401
    # fixation: a session id planted before sign-in is never the one after
    planted = httpx.Client(base_url=pos_url)
    planted.cookies.set("safescan_pos_session", "planted-by-attacker")
    page = planted.get("/login")
    nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
    assert nonce
    r = planted.post(
        "/login",
        data={
            "nonce": nonce.group(1),
            "name": world.stack.staff_name,
            "password": world.stack.staff_password,
        },
        headers={"Origin": pos_url},
    )
    assert "safescan_pos_session=" in r.headers["set-cookie"]
    assert "planted-by-attacker" not in r.headers["set-cookie"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_password_guessing_is_throttled_and_forwarded_headers_do_not_help(world: World) -> None:
    # its own POS process: the lock-out it provokes covers this machine's address
    proc, pos_url = world.stack.start_pos_server(world.pos_path, name="pos-throttled")
    try:
        _guessing(world, pos_url)
    finally:
        proc.stop()


def _guessing(world: World, pos_url: str) -> None:
    client = httpx.Client(base_url=pos_url)

    def attempt(password: str, name: str = "mallory-target", **headers: str) -> int:
        page = client.get("/login")
        nonce = re.search(r'name="nonce" value="([^"]+)"', page.text)
        assert nonce
        r = client.post(
            "/login",
            data={"nonce": nonce.group(1), "name": name, "password": password},
            headers={"Origin": pos_url, **headers},
        )
        return r.status_code

    assert [attempt(f"guess-{i:04d}") for i in range(5)] == [401] * 5
    assert attempt("guess-0005") == 429
    # another name from the same address: the address is locked too, whatever it claims
    for spoof in ({"X-Forwarded-For": "203.0.113.9"}, {"Forwarded": "for=198.51.100.1"}, {}):
        assert attempt(world.stack.staff_password, world.stack.staff_name, **spoof) == 429
    # a sign-in without the form's nonce is refused
    r = httpx.post(
        pos_url + "/login",
        data={"name": world.stack.staff_name, "password": world.stack.staff_password},
        headers={"Origin": pos_url},
    )
    assert r.status_code != 303


# --- customers never reach staff actions ------------------------------------------------------


def test_customer_pages_hold_no_staff_capability(world: World, pos_url: str) -> None:
    customer = httpx.Client(base_url=pos_url)
    shop = customer.get("/shop")
    assert shop.status_code == 200
    assert 'content=""' in shop.text  # the csrf meta is empty on customer pages
    assert "set-cookie" not in shop.headers
    r = customer.post("/shop/checkout", headers={"Origin": pos_url}, follow_redirects=False)
    assert r.status_code == 303
    token = r.headers["location"].rsplit("/", 1)[1]
    page = customer.get(r.headers["location"])
    assert page.status_code == 200 and "set-cookie" not in page.headers
    state = customer.get(f"/shop/checkout/{token}/state").json()
    assert set(state) == {
        "qr_px",
        "items",
        "total_display",
        "state",
        "expires_in",
        "paid",
        "qr_svg",
        "qr_png",
        "events",
    }
    assert customer.get(f"/shop/checkout/{token}/qr.svg").status_code == 200
    order_ids = re.findall(r"[A-Z0-9]{12}", page.text)
    before = _institution_state(world)
    # everything a customer holds, thrown at every staff route
    for capability in (token, *order_ids):
        for path in (
            f"/api/orders/{capability}",
            f"/api/orders/{capability}/qr.svg",
            f"/api/orders/{capability}/events",
        ):
            assert customer.get(path).status_code == 401
        for path in (
            f"/api/orders/{capability}/refunds/preview",
            f"/api/orders/{capability}/refunds",
            f"/api/orders/{capability}/close",
            "/api/orders",
        ):
            r = customer.post(
                path,
                json={"amount": 1, "confirmation": capability},
                headers={"Origin": pos_url, "X-CSRF-Token": capability},
            )
            assert r.status_code == 401, (path, r.status_code)
    assert customer.get("/shop/checkout/not-a-token").status_code == 400
    assert _institution_state(world) == before


# --- refunds: confirmation, partial amounts, JSON integers -------------------------------------


def test_refunds_need_a_fresh_confirmation_of_this_session(world: World, pos_url: str) -> None:
    staff, other = Staff(world, pos_url), Staff(world, pos_url)
    with MerchantApi(world.pos) as api:
        order = api.create_order([parse_item("Tea:1:900")])
    # make the POS know it: an order made on this terminal
    doc = staff.order()
    _pay(world, _code_of(staff, doc["order_id"]))
    oid = doc["order_id"]
    _wait_state(staff, oid, "PAID")
    before = _institution_state(world)
    base = f"/api/orders/{oid}/refunds"
    # no preview, a made-up or another session's confirmation
    assert staff.post(base, {"confirmation": "rfc_made_up"}).status_code == 400
    preview = other.post(base + "/preview", {"amount": 100}).json()
    assert staff.post(base, {"confirmation": preview["confirmation"]}).status_code == 400
    # amounts: JSON integers only, within what is left
    for bad in (True, "100", "1_0", 1.0, 150.5, 0, -5, 401, [100], {"x": 1}):
        r = staff.post(base + "/preview", {"amount": bad})
        assert r.status_code == 400, (bad, r.text)
    assert (
        staff.post(base + "/preview", {"amount": 100, "reason": "bad\u202ereason"}).status_code
        == 400
    )
    assert staff.post(base + "/preview", {"amount": 100, "extra": 1}).status_code == 400
    assert _institution_state(world) == before
    # a partial refund, confirmed once; the same confirmation again does nothing more
    offer = staff.post(base + "/preview", {"amount": 150, "reason": "cold tea"}).json()
    assert offer["amount"] == 150 and offer["amount_display"] == "1.50 EUR"
    r = staff.post(base, {"confirmation": offer["confirmation"]})
    assert r.status_code == 201 and r.json()["refunded"] == 150
    assert r.json()["state"] == "PARTIALLY_REFUNDED"
    assert staff.post(base, {"confirmation": offer["confirmation"]}).status_code == 400
    refunded = [s for s in _institution_state(world) if s[0] == oid]
    assert refunded == [(oid, "PARTIALLY_REFUNDED", 150)]
    # an order not made on this terminal is not reachable at all
    assert staff.post(f"/api/orders/{order.order_id}/refunds/preview", {}).status_code == 400


def _code_of(staff: Staff, order_id: str) -> str:
    """The code, read back from the QR image the POS shows (as a phone would)."""
    png = staff.http.get(f"/api/orders/{order_id}/qr.png")
    assert png.status_code == 200
    return qr.decode_image(png.content)


def _wait_state(staff: Staff, order_id: str, state: str) -> None:
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if staff.http.get(f"/api/orders/{order_id}").json()["state"] == state:
            return
        time.sleep(0.2)
    raise AssertionError(f"order {order_id} never became {state}")


# --- in the browser ------------------------------------------------------------------------------

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with headless_chromium(*ARGS, "--host-resolver-rules=MAP evil.example 127.0.0.1") as b:
        yield b


class _Attacker(http.server.BaseHTTPRequestHandler):
    """Another site on this machine: its page tries to drive the POS."""

    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: Any) -> None:
        return


def test_another_site_and_dns_rebinding_in_the_cashiers_browser_change_nothing(
    world: World, pos_url: str, chromium: Any
) -> None:
    context = bound(chromium.new_context())
    page = context.new_page()
    page.goto(pos_url + "/")
    page.locator("#name").fill(world.stack.staff_name)
    page.locator("#password").fill(world.stack.staff_password)
    page.locator("#sign-in").click()
    page.wait_for_url(pos_url + "/")
    staff = Staff(world, pos_url)
    doc = staff.order()
    _pay(world, _code_of(staff, doc["order_id"]))
    _wait_state(staff, doc["order_id"], "PAID")
    before = _institution_state(world)
    port = pos_url.rsplit(":", 1)[1]
    oid = doc["order_id"]
    script = f"""
      const pos = "{pos_url}";
      const tries = [
        fetch(pos + "/api/orders/{oid}/refunds/preview", {{method: "POST", credentials: "include",
          headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({{amount: 400}})}}),
        fetch(pos + "/api/orders", {{method: "POST", credentials: "include", mode: "no-cors",
          body: JSON.stringify({{items: [{{name: "x", quantity: 1, unit_price: 1}}]}})}}),
        fetch("http://evil.example:{port}/api/orders/{oid}", {{credentials: "include"}}),
      ];
      Promise.allSettled(tries).then(() => {{ document.title = "done"; }});
    """
    form = f'<form id=f method=post action="{pos_url}/logout"><input name=csrf value=x></form>'
    _Attacker.page = f"<!doctype html><title>win</title>{form}<script>{script}</script>".encode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Attacker)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        evil = context.new_page()
        evil.goto(f"http://127.0.0.1:{server.server_address[1]}/")
        evil.wait_for_function("() => document.title === 'done'", timeout=20_000)
        with evil.expect_navigation():
            evil.locator("#f").evaluate("(f) => f.submit()", timeout=CALL_TIMEOUT)
        answer = evaluate(evil, "() => document.documentElement.outerHTML")
        assert "another site" in answer or "Origin" in answer
        # DNS rebinding: evil.example now resolves to the POS; its pages get nothing
        rebound = context.new_page()
        resp = rebound.goto(f"http://evil.example:{port}/")
        assert resp is not None and resp.status == 421
        assert "does not answer to that host" in evaluate(
            rebound, "() => document.documentElement.outerHTML"
        )
        resp = rebound.goto(f"http://evil.example:{port}/shop")
        assert resp is not None and resp.status == 421
    finally:
        server.shutdown()
    # still signed in (the forged sign-out did nothing), and nothing was refunded or created
    page.reload()
    assert page.locator("#user").inner_text() == world.stack.staff_name
    assert _institution_state(world) == before
    context.close()


def test_markup_and_html_in_item_names_stay_text_in_the_browser(
    world: World, pos_url: str, chromium: Any
) -> None:
    page = bound(chromium.new_page())
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.goto(pos_url + "/")
    page.locator("#name").fill(world.stack.staff_name)
    page.locator("#password").fill(world.stack.staff_password)
    page.locator("#sign-in").click()
    page.wait_for_url(pos_url + "/")
    evil = '<img src=x onerror=alert(1)>"><script>alert(2)</script>'
    page.locator("#add-row").click()
    rows = page.locator("#items tbody tr")
    last = rows.nth(rows.count() - 1)
    last.locator(".name").fill(evil[:64])
    last.locator(".price").fill("1.00")
    page.locator("#create").click()
    page.locator("#qr").wait_for()
    assert evil[:40] in page.locator("table.summary").inner_text()
    customer = bound(chromium.new_page())
    customer.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    customer.goto(pos_url + page.locator("text=customer screen").get_attribute("href"))
    customer.locator("#qr").wait_for()
    assert evil[:40] in customer.locator("table.summary").inner_text()
    assert dialogs == []
    page.close()
    customer.close()
