"""Orders (precreate, query, close, expiry) and refunds (full, partial, limits, idempotency)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.institution.harness import Carrier, MerchantClient, World


@pytest.fixture(scope="module")
def shop(world: World) -> tuple[MerchantClient, str, Carrier]:
    m = world.merchant("Deli")
    cid = world.customer({"EUR": 1_000_000})
    return m, cid, world.carrier(cid)


def paid_order(world: World, shop: Any, total: int = 1000) -> dict[str, Any]:
    m, _, carrier = shop
    o = m.order([("Box", 1, total)])
    r = world.pay(o["code"], carrier.authorize(o["code"]))
    assert r.status_code == 201, r.text
    return o


def balance(world: World, cid: str) -> int:
    c = world.admin("GET", f"/v1/admin/customers/{cid}").json()
    return next(b["amount"] for b in c["balances"] if b["currency"] == "EUR")


def test_order_query_and_close(world: World, shop: Any) -> None:
    m, _, _ = shop
    o = m.order([("Bread", 3, 120)], reference="ref-1", expires_in=600)
    got = m.request("GET", f"/v1/merchant/orders/{o['order_id']}").json()
    assert got["state"] == "CREATED" and got["total"] == 360 and got["reference"] == "ref-1"
    assert got["items"] == [["Bread", 3, 120]]
    assert (
        m.request("POST", f"/v1/merchant/orders/{o['order_id']}/close").json()["state"] == "CLOSED"
    )
    again = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/close")
    assert again.status_code == 409


def test_order_expires(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o = m.order([("Ice", 1, 100)], expires_in=5)
    auth = carrier.authorize(o["code"])
    deadline = time.time() + 20
    state = "CREATED"
    while time.time() < deadline and state == "CREATED":
        time.sleep(0.5)
        state = m.request("GET", f"/v1/merchant/orders/{o['order_id']}").json()["state"]
    assert state == "EXPIRED"
    r = world.pay(o["code"], auth)
    assert r.status_code in (409, 422)  # expired code or expired order


def test_other_merchants_orders_are_invisible(world: World, shop: Any) -> None:
    m, _, _ = shop
    o = m.order([("Bread", 1, 100)])
    other = world.merchant("Other")
    assert other.request("GET", f"/v1/merchant/orders/{o['order_id']}").status_code == 404
    assert other.request("POST", f"/v1/merchant/orders/{o['order_id']}/close").status_code == 404


def test_order_idempotency(world: World, shop: Any) -> None:
    m, _, _ = shop
    body = {"items": [{"name": "Jam", "quantity": 1, "unit_price": 450}], "currency": "EUR"}
    r1 = m.request("POST", "/v1/merchant/orders", body, headers={"Idempotency-Key": "o-1"})
    r2 = m.request("POST", "/v1/merchant/orders", body, headers={"Idempotency-Key": "o-1"})
    assert r1.status_code == r2.status_code == 201 and r1.json() == r2.json()
    body["currency"] = "USD"
    r3 = m.request("POST", "/v1/merchant/orders", body, headers={"Idempotency-Key": "o-1"})
    assert r3.status_code == 409


@pytest.mark.parametrize(
    "body",
    [
        {"items": [], "currency": "EUR"},
        {"items": [{"name": "X", "quantity": 0, "unit_price": 1}], "currency": "EUR"},
        {"items": [{"name": "X", "quantity": 1, "unit_price": 0}], "currency": "EUR"},
        {"items": [{"name": "X", "quantity": 1, "unit_price": 1}], "currency": "XXX"},
        {"items": [{"name": "X\u202e", "quantity": 1, "unit_price": 1}], "currency": "EUR"},
        {"items": [{"name": "X", "quantity": 1, "unit_price": 1}], "currency": "EUR", "evil": 1},
        {
            "items": [{"name": "X", "quantity": 1, "unit_price": 1}],
            "currency": "EUR",
            "expires_in": 0,
        },
    ],
)
def test_invalid_orders_are_400(world: World, shop: Any, body: dict[str, Any]) -> None:
    m, _, _ = shop
    r = m.request("POST", "/v1/merchant/orders", body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == "invalid_request"


def test_oversized_body_is_413_before_parsing(world: World, shop: Any) -> None:
    _m, _, _ = shop
    r = world.http.post(
        "/v1/payments",
        content=b"{" + b" " * 70_000 + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_full_refund(world: World, shop: Any) -> None:
    m, cid, _ = shop
    o = paid_order(world, shop, 1000)
    before = balance(world, cid)
    r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/refunds", {})
    assert r.status_code == 201, r.text
    assert r.json()["amount"] == 1000 and r.json()["order_state"] == "REFUNDED"
    assert balance(world, cid) == before + 1000
    r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/refunds", {"amount": 1})
    assert r.status_code == 409 and r.json()["error"]["code"] == "order_not_refundable"


def test_partial_refunds_never_exceed_paid(world: World, shop: Any) -> None:
    m, cid, _ = shop
    o = paid_order(world, shop, 1000)
    before = balance(world, cid)
    path = f"/v1/merchant/orders/{o['order_id']}/refunds"
    r1 = m.request("POST", path, {"amount": 300, "reason": "broken"})
    assert r1.status_code == 201 and r1.json()["order_state"] == "PARTIALLY_REFUNDED"
    r2 = m.request("POST", path, {"amount": 300})
    assert r2.status_code == 201
    too_much = m.request("POST", path, {"amount": 401})
    assert too_much.status_code == 409
    assert too_much.json()["error"]["message"] == (
        "the refund of 4.01 EUR exceeds the 4.00 EUR left to refund"
    )
    r3 = m.request("POST", path, {"amount": 400})
    assert r3.status_code == 201 and r3.json()["order_state"] == "REFUNDED"
    assert balance(world, cid) == before + 1000
    got = m.request("GET", f"/v1/merchant/orders/{o['order_id']}").json()
    assert got["refunded_amount"] == 1000 and got["state"] == "REFUNDED"


def test_refund_idempotency(world: World, shop: Any) -> None:
    m, cid, _ = shop
    o = paid_order(world, shop, 1000)
    before = balance(world, cid)
    path = f"/v1/merchant/orders/{o['order_id']}/refunds"
    h = {"Idempotency-Key": "refund-1"}
    r1 = m.request("POST", path, {"amount": 100}, headers=h)
    r2 = m.request("POST", path, {"amount": 100}, headers=h)
    assert r1.status_code == r2.status_code == 201 and r1.json() == r2.json()
    assert balance(world, cid) == before + 100
    assert m.request("POST", path, {"amount": 200}, headers=h).status_code == 409


def test_refund_of_unpaid_or_unknown_order(world: World, shop: Any) -> None:
    m, _, _ = shop
    o = m.order([("X", 1, 100)])
    r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/refunds", {})
    assert r.status_code == 409
    assert m.request("POST", "/v1/merchant/orders/NOPE/refunds", {}).status_code == 404
    assert (
        m.request(
            "POST", f"/v1/merchant/orders/{o['order_id']}/refunds", {"amount": -5}
        ).status_code
        == 400
    )


def test_code_status_tells_a_wallet_whether_the_exact_code_is_payable(
    world: World, shop: Any
) -> None:
    m, _, carrier = shop

    def status(code: str) -> dict[str, Any]:
        r = world.http.post("/v1/codes/status", json={"code": code})
        assert r.status_code == 200, r.text
        return dict(r.json())

    o = m.order([("Cheese", 1, 900)])
    assert status(o["code"])["state"] == "payable"
    assert "total" not in status(o["code"]) and "amount" not in status(o["code"])
    assert world.pay(o["code"], carrier.authorize(o["code"])).status_code == 201
    assert status(o["code"]) | {"expires_at": 0} == {
        "state": "paid",
        "merchant_status": "active",
        "order_state": "PAID",
        "expires_at": 0,
    }
    m.request("POST", f"/v1/merchant/orders/{o['order_id']}/refunds", {})
    assert status(o["code"])["state"] == "refunded"
    c = m.order([("Cheese", 1, 900)])
    m.request("POST", f"/v1/merchant/orders/{c['order_id']}/close")
    assert status(c["code"])["state"] == "closed"
    bad = world.http.post("/v1/codes/status", json={"code": "SS1:" + "A" * 60})
    assert bad.status_code in (400, 422) and "error" in bad.json()


def test_list_orders_pages_newest_first(world: World) -> None:
    m = world.merchant("Lister")
    ids = [m.order([("N", 1, 100 + i)])["order_id"] for i in range(5)]
    page1 = m.request("GET", "/v1/merchant/orders?limit=3").json()
    assert [o["order_id"] for o in page1["orders"]] == ids[::-1][:3] and page1["has_more"]
    last = page1["orders"][-1]["order_id"]
    page2 = m.request("GET", f"/v1/merchant/orders?limit=3&after={last}").json()
    assert [o["order_id"] for o in page2["orders"]] == ids[::-1][3:] and not page2["has_more"]
    assert m.request("GET", "/v1/merchant/orders?after=NOPE").status_code == 404


def test_refund_list_by_order_and_day_only_the_callers(world: World, shop: Any) -> None:
    """``GET /v1/merchant/refunds``: the merchant's refunds of one order or one UTC day (every
    terminal's, with their reasons); another merchant lists none of them."""
    import datetime as dt

    m, _, _ = shop
    o = paid_order(world, shop, 1000)
    path = f"/v1/merchant/orders/{o['order_id']}/refunds"
    made = [
        m.request("POST", path, {"amount": 250, "reason": "cold"}).json(),
        m.request("POST", path, {"amount": 100}).json(),
    ]
    got = m.request("GET", f"/v1/merchant/refunds?order_id={o['order_id']}").json()["refunds"]
    assert sorted((r["refund_id"], r["amount"], r["reason"]) for r in got) == sorted(
        [(made[0]["refund_id"], 250, "cold"), (made[1]["refund_id"], 100, None)]
    )
    assert {r["order_id"] for r in got} == {o["order_id"]}
    # each refund under its own UTC day (the two are made apart: midnight may pass in between)
    days: set[str] = set()
    for refund in made:
        day = dt.datetime.fromtimestamp(refund["created_at"], dt.UTC).date()
        days.add(day.isoformat())
        listed = m.request("GET", f"/v1/merchant/refunds?date={day.isoformat()}").json()
        assert refund["refund_id"] in {r["refund_id"] for r in listed["refunds"]}
        before = (day - dt.timedelta(days=1)).isoformat()
        old = m.request("GET", f"/v1/merchant/refunds?date={before}").json()["refunds"]
        assert refund["refund_id"] not in {r["refund_id"] for r in old}
    rival = world.merchant("Ironmonger")
    for query in (f"order_id={o['order_id']}", *(f"date={d}" for d in sorted(days))):
        assert rival.request("GET", f"/v1/merchant/refunds?{query}").json()["refunds"] == []
    for bad in ("", "date=2026-13-01", "date=today", "order_id=", "order_id=a%20b"):
        r = m.request("GET", f"/v1/merchant/refunds?{bad}" if bad else "/v1/merchant/refunds")
        assert r.status_code == 400, (bad, r.status_code)
