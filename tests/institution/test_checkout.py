"""Checkout sessions (issue 18): the merchant API, the hosted page's public routes, the
``checkout.session.completed`` webhook, and attacks on them, against a real server on 127.0.0.1
(SQLite and PostgreSQL).

Attacks: open redirects through the return URLs (many spellings), another merchant's session,
an expired or canceled session paid, tampered amounts (in the request, in the authorization, in
the code), one session paid twice (in a row and at the same time), settling raced by readers,
made-up and malformed session ids.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from safescan.api.errors import Conflict, InsufficientScope, InvalidRequest
from safescan.api.wire import PaymentRequest
from safescan.client import MerchantClient as TypedClient
from safescan.client.credentials import SecretKey
from safescan.code.payment import LineItem
from safescan.institution.db import Database
from safescan.institution.util import canonical_json
from tests.institution.harness import Carrier, MerchantClient, World, institution_cli
from tests.institution.pg import free_port
from tests.institution.test_webhooks_sse import Receiver, trust_of

SHOP = "https://shop.example"
ITEMS = [{"name": "Teapot", "quantity": 1, "unit_price": 2500}]


@pytest.fixture(scope="module")
def shop(world: World) -> tuple[MerchantClient, str, Carrier]:
    m = world.merchant("Tea Shop")
    cid = world.customer({"EUR": 1_000_000})
    return m, cid, world.carrier(cid)


def session(m: MerchantClient, **extra: Any) -> dict[str, Any]:
    body = {
        "items": ITEMS,
        "currency": "EUR",
        "success_url": f"{SHOP}/done?session={{CHECKOUT_SESSION_ID}}",
        "cancel_url": f"{SHOP}/cart",
        **extra,
    }
    r = m.request("POST", "/v1/checkout/sessions", body)
    assert r.status_code == 201, r.text
    return dict(r.json())


def get(m: MerchantClient, sid: str) -> dict[str, Any]:
    r = m.request("GET", f"/v1/checkout/sessions/{sid}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def public(world: World, sid: str) -> dict[str, Any]:
    r = world.http.get(f"/checkout/{sid}/session")
    assert r.status_code == 200, r.text
    return dict(r.json())


def balance(world: World, cid: str) -> int:
    c = world.admin("GET", f"/v1/admin/customers/{cid}").json()
    return next(b["amount"] for b in c["balances"] if b["currency"] == "EUR")


def order_count(m: MerchantClient) -> int:
    return len(m.request("GET", "/v1/merchant/orders?limit=100").json()["orders"])


def wait_status(m: MerchantClient, sid: str, status: str, timeout: float = 40) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    s = get(m, sid)
    while s["status"] != status and time.monotonic() < deadline:
        time.sleep(0.3)
        s = get(m, sid)
    return s


# --- the flow ---------------------------------------------------------------------------------


def test_session_is_made_read_and_shown(world: World, shop: Any) -> None:
    m, _, carrier = shop
    s = session(m, reference="cart-17", expires_in=900)
    sid = s["id"]
    assert sid.startswith("cs_") and len(sid) == 29
    assert s["status"] == "open" and s["object"] == "checkout.session"
    assert s["url"] == f"{world.server.base_url}/checkout/{sid}"
    assert s["success_url"] == f"{SHOP}/done?session={sid}"  # the placeholder filled in
    assert s["items"] == ITEMS and s["total"] == 2500 and s["currency"] == 978
    assert s["expires_at"] - s["created_at"] == 900 and s["reference"] == "cart-17"
    # the session's order is an ordinary order of the merchant's, payable by its code
    o = m.request("GET", f"/v1/merchant/orders/{s['order_id']}").json()
    assert o["state"] == "CREATED" and o["total"] == 2500 and o["reference"] == "cart-17"
    assert get(m, sid) == s
    # the hosted page: one static file under a strict policy; the data as JSON
    page = world.http.get(s["url"])
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and page.headers["x-frame-options"] == "DENY"
    assert "Teapot" not in page.text and sid not in page.text  # nothing dynamic in the HTML
    shown = public(world, sid)
    assert shown["merchant"] == {"name": "Tea Shop", "city": "Berlin"}
    assert shown["items"][0]["display"] == "25.00 EUR" and shown["total_display"] == "25.00 EUR"
    assert shown["status"] == "open" and shown["currency"] == "EUR"
    assert "reference" not in shown and "order_id" not in shown
    assert carrier.open(shown["code"]).order_id == s["order_id"]
    svg = world.http.get(f"/checkout/{sid}/qr.svg")
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert svg_code(svg.text) == [shown["code"]]  # drawn after the warm-up: still the code
    for name in ("checkout.js", "checkout.css"):
        assert world.http.get(f"/checkout-assets/{name}").status_code == 200


def svg_code(svg: str) -> list[str]:
    """The codes read from a qr.svg (its dark runs "M{x} {y}h{run}v1h-{run}z" drawn at 8 px a
    module on white, then decoded with zxing-cpp)."""
    import numpy as np
    from PIL import Image

    from safescan.code import qr

    side = int(re.search(r'viewBox="0 0 (\d+) \1"', svg)[1])  # type: ignore[index]
    dark = np.zeros((side, side), dtype=bool)
    for x, y, run in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\3z", svg):
        dark[int(y), int(x) : int(x) + int(run)] = True
    pixels = np.where(dark, 0, 255).astype(np.uint8).repeat(8, axis=0).repeat(8, axis=1)
    return qr.decode_all(Image.fromarray(pixels))


def test_qr_imaging_is_warmed_off_the_request_and_never_at_start(tmp_path: Path) -> None:
    """The checkout routes import no QR imaging when the server starts (readiness waits for
    nothing of it); warm_qr_imaging, which the session creation and the page call, imports it
    and draws once on one background thread per process (a second call: the same thread)."""
    script = (
        "import sys\n"
        "import safescan.institution.http.checkout\n"
        "from safescan.code.qrwarm import warm_qr_imaging\n"
        "heavy = ('safescan.code.qr', 'numpy', 'PIL', 'zxingcpp')\n"
        "at_start = [m for m in heavy if m in sys.modules]\n"
        "t = warm_qr_imaging()\n"
        "same = warm_qr_imaging() is t and t.daemon\n"
        "t.join(120)\n"
        "print(at_start, same, t.is_alive(), 'safescan.code.qr' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[0] == "[] True False True", done.stdout


def test_paid_session_completes_once_and_sends_its_webhook(world: World) -> None:
    port = free_port()
    m = world.merchant("Hooked Shop", webhook_url=f"http://127.0.0.1:{port}/hook")
    cid = world.customer({"EUR": 100_000})
    carrier = world.carrier(cid)
    receiver = Receiver(port, trust_of(world))
    receiver.start()
    try:
        s = session(m, reference="cart-9")
        code = public(world, s["id"])["code"]
        r = world.pay(code, carrier.authorize(code))
        assert r.status_code == 201, r.text
        payment_id = r.json()["payment_id"]
        # many readers settle the session at once: it completes exactly once
        with ThreadPoolExecutor(8) as pool:
            seen = list(pool.map(lambda _: public(world, s["id"])["status"], range(16)))
        assert set(seen) == {"complete"}
        done = get(m, s["id"])
        assert done["status"] == "complete" and done["payment_id"] == payment_id
        assert done["completed_at"] is not None
        assert public(world, s["id"])["code"] is None  # no code once paid
        assert world.http.get(f"/checkout/{s['id']}/qr.svg").status_code == 404
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            e["type"] == "checkout.session.completed" for e in receiver.deliveries
        ):
            time.sleep(0.2)
        time.sleep(1.5)  # a duplicate would arrive now
    finally:
        receiver.stop()
    completed = [e for e in receiver.deliveries if e["type"] == "checkout.session.completed"]
    assert len({e["id"] for e in completed}) == 1, completed
    data = completed[0]["data"]
    assert data == {
        "session_id": s["id"],
        "status": "complete",
        "order_id": s["order_id"],
        "payment_id": payment_id,
        "amount_total": 2500,
        "currency": 978,
        "reference": "cart-9",
        "completed_at": done["completed_at"],
    }
    assert receiver.rejected == 0


def test_a_session_nobody_watches_completes_in_the_sweep(world: World, shop: Any) -> None:
    m, _, carrier = shop
    s = session(m)
    code = carrier_code(world, s)
    assert world.pay(code, carrier.authorize(code)).status_code == 201
    # nobody reads the session through the API (a read would settle it): the maintenance
    # sweep (every 0.5 s here) does; watched in the database itself
    database = Database(world.db_url)  # type: ignore[attr-defined]
    query = text(
        "SELECT s.status, e.id FROM checkout_sessions s LEFT JOIN events e"
        " ON e.type = 'checkout.session.completed' AND e.payload LIKE :pattern"
        " WHERE s.id = :sid"
    )
    args = {"sid": s["id"], "pattern": f'%"session_id":"{s["id"]}"%'}
    try:
        deadline = time.monotonic() + 30
        row = database.read(lambda c: c.execute(query, args).one())
        while row[0] == "open" and time.monotonic() < deadline:
            time.sleep(0.2)
            row = database.read(lambda c: c.execute(query, args).one())
    finally:
        database.dispose()
    assert row[0] == "complete" and row[1] is not None, row
    assert get(m, s["id"])["status"] == "complete"


def carrier_code(world: World, s: dict[str, Any]) -> str:
    return str(public(world, s["id"])["code"])


def test_merchant_cancels_an_open_session(world: World, shop: Any) -> None:
    m, cid, carrier = shop
    s = session(m)
    code = carrier_code(world, s)
    auth = carrier.authorize(code)
    r = m.request("POST", f"/v1/checkout/sessions/{s['id']}/cancel")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert m.request("GET", f"/v1/merchant/orders/{s['order_id']}").json()["state"] == "CLOSED"
    before = balance(world, cid)
    r = world.pay(code, auth)
    assert r.status_code == 409, r.text
    assert balance(world, cid) == before
    assert get(m, s["id"])["status"] == "canceled"
    again = m.request("POST", f"/v1/checkout/sessions/{s['id']}/cancel")
    assert again.status_code == 409 and again.json()["error"]["param"] == "session_id"
    assert public(world, s["id"])["code"] is None


# --- attacks ----------------------------------------------------------------------------------

REFUSED_URLS = [
    "javascript:alert(document.domain)",
    "JavaScript:alert(1)",
    " javascript:alert(1)",
    "java\tscript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "vbscript:msgbox(1)",
    "file:///etc/passwd",
    "//evil.example/",
    "/\\evil.example",
    "https:/\\evil.example/",
    "https:\\\\evil.example/",
    "https://evil.example\\@shop.example/",
    "http://evil.example/",  # plain http off loopback
    "http://127.0.0.1.evil.example/",
    "http://localhost.evil.example/",
    "https://shop.example@evil.example/",
    "https://user:pass@shop.example/",
    "https://shop.example /x",
    "https://shop.example/\u2028",
    "https://ѕhop.example/",  # Cyrillic look-alike
    "https://0177.0.0.1/",
    "https://0x7f.0.0.1/",
    "https://2130706433/",
    "https://[::1/",
    "https://shop/",  # no dot: not a full name
    "https://shop.example:0/",
    "https://shop.example:99999/",
    "https://shop.example/%zz",
    "https://shop.example/<script>",
    "ftp://shop.example/",
    "https://",
    "",
    "https://shop.example/" + "a" * 520,
]


@pytest.mark.parametrize("field", ["success_url", "cancel_url"])
def test_return_urls_that_could_redirect_anywhere_are_refused(
    world: World, shop: Any, field: str
) -> None:
    m, _, _ = shop
    before = order_count(m)
    for bad in REFUSED_URLS:
        body = {
            "items": ITEMS,
            "currency": "EUR",
            "success_url": f"{SHOP}/ok",
            "cancel_url": f"{SHOP}/cart",
            field: bad,
        }
        r = m.request("POST", "/v1/checkout/sessions", body)
        assert r.status_code == 400, (bad, r.status_code, r.text)
        assert r.json()["error"]["param"] == field, (bad, r.text)
    assert order_count(m) == before  # nothing was made


def test_return_urls_are_normalised_and_loopback_http_allowed(world: World, shop: Any) -> None:
    m, _, _ = shop
    cases = {
        "HTTPS://Shop.Example/Done?x=1#top": "https://shop.example/Done?x=1#top",
        "https://shop.example": "https://shop.example/",
        "https://shop.example:8443?a=b": "https://shop.example:8443/?a=b",
        "http://127.0.0.1:8080/ok": "http://127.0.0.1:8080/ok",
        "http://localhost:9/ok": "http://localhost:9/ok",
        "http://[::1]:8080/ok": "http://[::1]:8080/ok",
        "https://xn--shp-9cd.example/ok": "https://xn--shp-9cd.example/ok",
    }
    for given, stored in cases.items():
        s = session(m, success_url=given)
        assert s["success_url"] == stored, given
        assert public(world, s["id"])["success_url"] == stored


def test_the_page_takes_no_redirect_from_its_own_url(world: World, shop: Any) -> None:
    m, _, _ = shop
    s = session(m)
    for query in ("?success_url=https://evil.example/", "?next=//evil.example", "?cancel_url=x"):
        r = world.http.get(f"/checkout/{s['id']}/session{query}")
        assert r.status_code == 200
        assert r.json()["success_url"] == f"{SHOP}/done?session={s['id']}"
        assert "evil" not in r.text


def test_the_hosted_page_opens_from_a_link_with_tracking_parameters(
    world: World, shop: Any
) -> None:
    """The API refuses unknown query parameters (test_strict_requests.py); the shopper's pages
    are not API operations: a link carrying ``utm_*`` or ``lang`` still opens them."""
    m, _, _ = shop
    s = session(m)
    query = "?utm_source=newsletter&utm_campaign=winter&lang=de&lang=en"
    page = world.http.get(f"/checkout/{s['id']}{query}")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    data = world.http.get(f"/checkout/{s['id']}/session{query}")
    assert data.status_code == 200 and data.json()["id"] == s["id"]
    # the API keeps its rule, and a key in a page's URL keeps its refusal
    api = world.http.get(f"/v1/checkout/sessions/{s['id']}?utm_source=x")
    assert api.status_code in (400, 401)
    leaked = world.http.get(f"/checkout/{s['id']}?api_key=sk_live_x")
    assert leaked.status_code == 401 and leaked.json()["error"]["code"] == "api_key_in_url"


def test_another_merchants_session_is_invisible(world: World, shop: Any) -> None:
    m, _, _ = shop
    s = session(m)
    other = world.merchant("Rival Shop")
    for method, path in (
        ("GET", f"/v1/checkout/sessions/{s['id']}"),
        ("POST", f"/v1/checkout/sessions/{s['id']}/cancel"),
    ):
        r = other.request(method, path)
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    made_up = "cs_" + "A" * 26
    assert other.request("GET", f"/v1/checkout/sessions/{made_up}").status_code == 404
    assert get(m, s["id"])["status"] == "open"  # untouched by the rival's cancel
    # the rival cannot reach it through the order API either
    assert other.request("GET", f"/v1/merchant/orders/{s['order_id']}").status_code == 404


def test_unsigned_and_forged_requests_make_no_session(world: World, shop: Any) -> None:
    m, _, _ = shop
    before = order_count(m)
    body = {"items": ITEMS, "currency": "EUR", "success_url": SHOP, "cancel_url": SHOP}
    assert world.http.post("/v1/checkout/sessions", json=body).status_code == 401
    forged = world.merchant("Forger")
    r = forged.http.post(
        "/v1/checkout/sessions",
        json=body,
        headers={"Authorization": "Bearer sk_live_made_up", "X-Merchant-Id": m.merchant_id},
    )
    assert r.status_code == 401
    assert order_count(m) == before


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"total": 1}, "total"),
        ({"amount": 1}, "amount"),
        ({"items": [{"name": "Teapot", "quantity": 1, "unit_price": 0}]}, "items.0.unit_price"),
        ({"items": [{"name": "Teapot", "quantity": 1, "unit_price": -2500}]}, "items.0.unit_price"),
        ({"items": [{"name": "Teapot", "quantity": 1, "unit_price": 25.0}]}, "items.0.unit_price"),
        (
            {"items": [{"name": "Teapot", "quantity": 1, "unit_price": "2500"}]},
            "items.0.unit_price",
        ),
        ({"items": [{"name": "Teapot", "quantity": 0, "unit_price": 1}]}, "items.0.quantity"),
        ({"items": [{"name": "Teapot", "quantity": True, "unit_price": 1}]}, "items.0.quantity"),
        (
            {"items": [{"name": "T", "quantity": 9999, "unit_price": 10**12 - 1}]},
            "items",
        ),  # the total overflows
        ({"items": []}, "items"),
        ({"currency": "XYZ"}, "currency"),
        ({"expires_in": 5}, "expires_in"),
        ({"expires_in": 86401}, "expires_in"),
        ({"items": [{"name": "T\u202eab", "quantity": 1, "unit_price": 1}]}, "items.0.name"),
    ],
)
def test_tampered_or_impossible_amounts_are_refused(
    world: World, shop: Any, change: dict[str, Any], param: str
) -> None:
    m, _, _ = shop
    before = order_count(m)
    body = {
        "items": ITEMS,
        "currency": "EUR",
        "success_url": SHOP,
        "cancel_url": SHOP,
        **change,
    }
    r = m.request("POST", "/v1/checkout/sessions", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param, r.text
    assert order_count(m) == before


def test_a_tampered_payment_leaves_the_session_open(world: World, shop: Any) -> None:
    m, cid, carrier = shop
    s = session(m)
    code = carrier_code(world, s)
    before = balance(world, cid)
    for auth in (
        carrier.authorize(code, amount=1),  # less than the total
        carrier.authorize(code, amount=2501),
        carrier.authorize(code, currency=840),
        carrier.authorize(code, order_id="OTHERORDER12"),
    ):
        r = world.pay(code, auth)
        assert r.status_code in (409, 422), r.text
    # the code itself altered: one character of its text changed
    flipped = code[:-3] + ("A" if code[-3] != "A" else "B") + code[-2:]
    assert world.pay(flipped, carrier.authorize(code)).status_code in (400, 422)
    assert balance(world, cid) == before
    assert get(m, s["id"])["status"] == "open"
    # and the real payment still goes through afterwards
    assert world.pay(code, carrier.authorize(code)).status_code == 201
    assert wait_status(m, s["id"], "complete")["status"] == "complete"
    assert balance(world, cid) == before - 2500


def test_one_session_is_paid_once_in_a_row_and_at_the_same_time(world: World, shop: Any) -> None:
    m, cid, carrier = shop
    # in a row
    s = session(m)
    code = carrier_code(world, s)
    before = balance(world, cid)
    assert world.pay(code, carrier.authorize(code)).status_code == 201
    second = world.pay(code, carrier.authorize(code))
    assert second.status_code == 409, second.text
    assert balance(world, cid) == before - 2500
    # at the same time: two carriers of two customers race for one session
    s2 = session(m)
    code2 = carrier_code(world, s2)
    payers = [world.carrier(world.customer({"EUR": 10_000})) for _ in range(2)]
    auths = [p.authorize(code2) for p in payers]
    start = threading.Barrier(2)

    def pay(i: int) -> int:
        with httpx.Client(base_url=world.server.base_url, verify=world.server.verify) as c:
            start.wait()
            body = PaymentRequest(code2, auths[i].to_bytes()).to_json()
            return c.post("/v1/payments", json=body, timeout=30).status_code

    with ThreadPoolExecutor(2) as pool:
        codes = sorted(pool.map(pay, range(2)))
    assert codes == [201, 409], codes
    done = wait_status(m, s2["id"], "complete")
    assert done["payment_id"] is not None


def test_an_expired_session_cannot_be_paid(world: World, shop: Any) -> None:
    m, cid, carrier = shop
    s = session(m, expires_in=20)  # time to read the code on a busy machine
    code = carrier_code(world, s)
    auth = carrier.authorize(code)  # authorized in time, presented too late
    before = balance(world, cid)
    assert wait_status(m, s["id"], "expired", timeout=60)["status"] == "expired"
    r = world.pay(code, auth)
    assert r.status_code in (409, 422), r.text
    assert balance(world, cid) == before
    assert get(m, s["id"])["status"] == "expired"
    assert m.request("GET", f"/v1/merchant/orders/{s['order_id']}").json()["state"] == "EXPIRED"
    assert public(world, s["id"])["code"] is None
    assert m.request("POST", f"/v1/checkout/sessions/{s['id']}/cancel").status_code == 409


def test_made_up_and_malformed_session_ids(world: World) -> None:
    for sid in ("cs_" + "A" * 26, "cs_" + "2" * 26):
        for suffix in ("", "/session", "/qr.svg", "/events"):
            assert world.http.get(f"/checkout/{sid}{suffix}").status_code == 404, sid
    for sid in ("cs_short", "cs_" + "a" * 26, "cs_" + "A" * 27, "../v1/keys", "cs_%00" + "A" * 23):
        r = world.http.get(f"/checkout/{sid}/session")
        assert r.status_code in (400, 404), (sid, r.status_code)
    assert world.http.get("/checkout-assets/../../etc/passwd").status_code == 404
    assert world.http.get("/checkout-assets/checkout.html").status_code in (400, 404)


def test_the_status_stream_reports_the_payment(world: World, shop: Any) -> None:
    m, _, carrier = shop
    s = session(m)
    code = carrier_code(world, s)
    lines: list[str] = []
    opened = threading.Event()

    def listen() -> None:
        with httpx.stream(
            "GET",
            f"{world.server.base_url}/checkout/{s['id']}/events",
            verify=world.server.verify,
            timeout=30,
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            for line in r.iter_lines():
                lines.append(line)
                opened.set()
                if '"complete"' in line:
                    return

    t = threading.Thread(target=listen)
    t.start()
    assert opened.wait(20)
    assert world.pay(code, carrier.authorize(code)).status_code == 201
    t.join(30)
    assert not t.is_alive()
    data = [x for x in lines if x.startswith("data:")]
    assert data[0] == 'data: {"status": "open"}' and data[-1] == 'data: {"status": "complete"}'


def test_the_python_client_with_a_secret_key(world: World, shop: Any) -> None:
    """``MerchantClient(...).checkout`` over a checkout-only API key: make, read, cancel; a key
    without the scope is refused; a malformed session id never reaches a path."""
    m, _, _ = shop
    made = m.request(
        "POST", "/v1/merchant/api-keys", {"scopes": ["checkout:read", "checkout:write"]}
    )
    assert made.status_code == 201, made.text
    with TypedClient(
        world.server.base_url, m.merchant_id, SecretKey(made.json()["key"]), trust_of(world)
    ) as client:
        s = client.checkout.create(
            [LineItem("Teapot", 1, 2500)],
            currency="EUR",
            success_url=f"{SHOP}/done",
            cancel_url=f"{SHOP}/cart",
            reference="py-1",
        )
        assert s.status == "open" and s.reference == "py-1"
        assert s.items == (LineItem("Teapot", 1, 2500),) and s.total == 2500
        assert client.checkout.get(s.id) == s
        assert client.checkout.cancel(s.id).status == "canceled"
        for bad in ("../orders", "cs_short", s.id + "/cancel"):
            with pytest.raises(InvalidRequest):
                client.checkout.get(bad)
        with pytest.raises(Conflict):
            client.checkout.cancel(s.id)
    read_only = m.request("POST", "/v1/merchant/api-keys", {"scopes": ["checkout:read"]})
    with TypedClient(
        world.server.base_url, m.merchant_id, SecretKey(read_only.json()["key"]), trust_of(world)
    ) as client:
        with pytest.raises(InsufficientScope):
            client.checkout.create(
                [LineItem("Teapot", 1, 2500)],
                currency="EUR",
                success_url=SHOP,
                cancel_url=SHOP,
            )
        assert client.checkout.get(s.id).status == "canceled"


def test_zz_the_audit_accounts_for_every_checkout_event(world: World, shop: Any) -> None:
    """After every flow above (run last in the module): the audit command passes, so each
    completed session was announced exactly once and agrees with its order; then a second,
    forged ``checkout.session.completed`` event is found."""
    m, _, carrier = shop
    s = session(m)
    code = carrier_code(world, s)
    assert world.pay(code, carrier.authorize(code)).status_code == 201
    assert wait_status(m, s["id"], "complete")["status"] == "complete"
    db_url = world.db_url  # type: ignore[attr-defined]
    ok = institution_cli("audit", "--db", db_url, "--json")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["problems"] == []
    database = Database(db_url)
    try:
        payload = database.read(
            lambda c: c.execute(
                text("SELECT payload FROM events WHERE type = 'checkout.session.completed'")
            ).scalar()
        )
        doc = json.loads(payload)
        doc["id"] = "evt_" + "F" * 20
        doc["data"]["amount_total"] += 1
        database.write(
            lambda c: c.execute(
                text(
                    "INSERT INTO events (id, merchant_id, type, payload, signature, created_at,"
                    " webhook_state, attempts, next_attempt_ms) VALUES (:id, :mid,"
                    " 'checkout.session.completed', :p, '', :t, 'none', 0, 0)"
                ),
                {
                    "id": doc["id"],
                    "mid": doc["merchant_id"],
                    "p": canonical_json(doc),
                    "t": doc["created"],
                },
            )
        )
    finally:
        database.dispose()
    bad = institution_cli("audit", "--db", db_url, "--json")
    assert bad.returncode != 0
    problems = "\n".join(json.loads(bad.stdout)["problems"])
    assert "amount_total" in problems and "announced 2 times" in problems, problems
