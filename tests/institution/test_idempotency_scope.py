"""One ``Idempotency-Key`` used by two merchants, with different bodies (redteam): each merchant
gets its own order and its own refund, never the other's recorded answer (which would hand
one merchant another's order, code and amounts), and a replay by each gets its own first
answer back. A body naming a key twice under a used key is refused as such, changing nothing.
A real server on 127.0.0.1 (SQLite and PostgreSQL).
"""

from __future__ import annotations

from typing import Any

from safescan.api.merchant_auth import sign_request
from tests.institution.harness import MerchantClient, World

ORDERS = "/v1/merchant/orders"


def _order(m: MerchantClient, price: int, key: str) -> Any:
    body = {"items": [{"name": "Jam", "quantity": 1, "unit_price": price}], "currency": "EUR"}
    return m.request("POST", ORDERS, body, headers={"Idempotency-Key": key})


def test_one_key_two_merchants_two_bodies_two_answers(world: World) -> None:
    a, b = world.merchant("Harbour Books"), world.merchant("Alpine Bakery")
    ra, rb = _order(a, 450, "shared-1"), _order(b, 9_900, "shared-1")
    assert ra.status_code == rb.status_code == 201, (ra.text, rb.text)
    oa, ob = ra.json(), rb.json()
    assert oa["order_id"] != ob["order_id"] and oa["code"] != ob["code"]
    assert oa["total"] == 450 and ob["total"] == 9_900
    # each replay gets its own first answer, byte for byte
    assert _order(a, 450, "shared-1").content == ra.content
    assert _order(b, 9_900, "shared-1").content == rb.content
    # the other body under the same key, by the same merchant: refused, not the other's answer
    assert _order(a, 9_900, "shared-1").status_code == 409
    # neither sees the other's order
    assert a.request("GET", f"{ORDERS}/{ob['order_id']}").status_code == 404
    assert b.request("GET", f"{ORDERS}/{oa['order_id']}").status_code == 404
    # a key twice in the body under a used key: the typed refusal, nothing made
    before = a.request("GET", ORDERS).json()["orders"]
    raw = (
        b'{"items": [{"name": "Jam", "quantity": 1, "unit_price": 450}], "currency": "EUR",'
        b' "currency": "USD"}'
    )
    h = sign_request(a.key, a.merchant_id, "POST", ORDERS, raw, idempotency_key="shared-1")
    h.update({"Content-Type": "application/json", "Idempotency-Key": "shared-1"})
    dup = a.http.request("POST", ORDERS, content=raw, headers=h)
    assert dup.status_code == 400 and dup.json()["error"]["code"] == "duplicate_key", dup.text
    assert a.request("GET", ORDERS).json()["orders"] == before


def test_one_refund_key_two_merchants_two_refunds(world: World) -> None:
    cid = world.customer({"EUR": 100_000})
    carrier = world.carrier(cid)
    a, b = world.merchant("Quay Florist"), world.merchant("Ridge Outfitters")
    paid = []
    for m in (a, b):
        o = m.order([("Box", 1, 2_000)])
        assert world.pay(o["code"], carrier.authorize(o["code"])).status_code == 201
        paid.append(o)
    refunds = []
    for m, o, amount in ((a, paid[0], 300), (b, paid[1], 700)):
        r = m.request(
            "POST",
            f"{ORDERS}/{o['order_id']}/refunds",
            {"amount": amount},
            headers={"Idempotency-Key": "refund-1"},
        )
        assert r.status_code == 201, r.text
        refunds.append(r.json())
    assert refunds[0]["amount"] == 300 and refunds[1]["amount"] == 700
    assert refunds[0]["refund_id"] != refunds[1]["refund_id"]
    for m, o, total in ((a, paid[0], 300), (b, paid[1], 700)):
        got = m.request("GET", f"{ORDERS}/{o['order_id']}").json()
        assert got["refunded_amount"] == total, got
