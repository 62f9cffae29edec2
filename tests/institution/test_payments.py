"""Payments: happy path, receipts, idempotency, and every rejection; concurrency."""

from __future__ import annotations

import base64
import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from safescan.code import (
    Authorization,
    Issuer,
    Receipt,
    Role,
    SigningKey,
    StaticCode,
    TrustStore,
    cbor,
    encode_text,
    issue_certificate,
    seal,
)
from safescan.code.certs import Certificate
from safescan.code.errors import MalformedAuthorization, MalformedCode
from safescan.code.keys import SchemePublicKey, VerifyKey
from safescan.code.payment import DynamicCode, LineItem, Merchant
from tests.institution.harness import Carrier, MerchantClient, World, b64


@pytest.fixture(scope="module")
def shop(world: World) -> tuple[MerchantClient, str, Carrier]:
    """A merchant and a well-funded customer with one carrier."""
    m = world.merchant("Corner Cafe")
    cid = world.customer({"EUR": 1_000_000, "JPY": 50_000})
    return m, cid, world.carrier(cid)


def trust(world: World) -> TrustStore:
    keys = world.http.get("/v1/keys").json()
    return TrustStore(
        {k["kid"]: VerifyKey(base64.b64decode(k["public_key"])) for k in keys["root_keys"]}
    )


def balance(world: World, cid: str, cur: str = "EUR") -> int:
    c = world.admin("GET", f"/v1/admin/customers/{cid}").json()
    return next((b["amount"] for b in c["balances"] if b["currency"] == cur), 0)


def err(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"}, body
    assert {"type", "code", "message"} <= set(body["error"])
    return dict(body["error"])


def test_payment_moves_money_and_returns_signed_receipt(world: World, shop: Any) -> None:
    m, cid, carrier = shop
    before = balance(world, cid)
    order = m.order([("Coffee", 2, 350), ("Cake", 1, 420)], reference="table-4")
    assert len(order["order_id"]) == 12 and order["code"].startswith("SS1:")
    r = world.pay(order["code"], carrier.authorize(order["code"]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["amount"] == 1120 and body["status"] == "succeeded"
    receipt = Receipt.from_bytes(base64.b64decode(body["receipt"]))
    receipt.verify(trust(world))
    assert receipt.order_id == order["order_id"] and receipt.amount == 1120
    assert receipt.payer_pseudonym == body["payer_pseudonym"]
    assert cid not in receipt.payer_pseudonym
    assert balance(world, cid) == before - 1120
    got = m.request("GET", f"/v1/merchant/orders/{order['order_id']}").json()
    assert got["state"] == "PAID" and got["payment_id"] == body["payment_id"]
    pay = m.request("GET", f"/v1/merchant/payments/{body['payment_id']}").json()
    assert pay["payer_pseudonym"] == body["payer_pseudonym"] and "customer_id" not in pay


def test_pseudonym_is_stable_per_merchant_and_differs_between_merchants(
    world: World, shop: Any
) -> None:
    m, _cid, carrier = shop
    other = world.merchant("Book Shop")
    names = []
    for merchant in (m, m, other):
        o = merchant.order([("Thing", 1, 100)])
        r = world.pay(o["code"], carrier.authorize(o["code"]))
        assert r.status_code == 201, r.text
        names.append(r.json()["payer_pseudonym"])
    assert names[0] == names[1] != names[2]


def test_idempotency_same_key_same_body_returns_stored_response(world: World, shop: Any) -> None:
    m, cid, carrier = shop
    order = m.order([("Tea", 1, 300)])
    auth = carrier.authorize(order["code"])
    before = balance(world, cid)
    r1 = world.pay(order["code"], auth, idem="idem-1")
    r2 = world.pay(order["code"], auth, idem="idem-1")
    assert r1.status_code == r2.status_code == 201
    assert r1.json() == r2.json()
    assert balance(world, cid) == before - 300


def test_idempotency_same_key_other_body_is_409(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o1, o2 = m.order([("Tea", 1, 300)]), m.order([("Tea", 1, 310)])
    assert world.pay(o1["code"], carrier.authorize(o1["code"]), idem="idem-2").status_code == 201
    r = world.pay(o2["code"], carrier.authorize(o2["code"]), idem="idem-2")
    assert r.status_code == 409 and err(r)["code"] == "idempotency_conflict"
    assert m.request("GET", f"/v1/merchant/orders/{o2['order_id']}").json()["state"] == "CREATED"


def test_second_payment_of_same_code_is_refused(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o = m.order([("Bagel", 1, 250)])
    assert world.pay(o["code"], carrier.authorize(o["code"])).status_code == 201
    r = world.pay(o["code"], carrier.authorize(o["code"]))
    assert r.status_code == 409 and err(r)["code"] == "order_not_payable"


def test_replayed_counter_is_refused(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o1, o2 = m.order([("A", 1, 100)]), m.order([("B", 1, 100)])
    a1 = carrier.authorize(o1["code"])
    assert world.pay(o1["code"], a1).status_code == 201
    r = world.pay(o2["code"], carrier.authorize(o2["code"], counter=a1.counter))
    assert r.status_code == 409 and err(r)["code"] == "counter_replay"
    assert m.request("GET", f"/v1/merchant/orders/{o2['order_id']}").json()["state"] == "CREATED"


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"amount": 1}, "payment_refused"),
        ({"currency": 840}, "payment_refused"),
        ({"order_id": "OTHERORDER12"}, "payment_refused"),
        ({"merchant_id": "MXXXXXXXXX"}, "payment_refused"),
    ],
)
def test_authorization_must_match_the_code(
    world: World, shop: Any, override: dict[str, Any], code: str
) -> None:
    m, cid, carrier = shop
    o = m.order([("Wine", 1, 1500)])
    before = balance(world, cid)
    r = world.pay(o["code"], carrier.authorize(o["code"], **override))
    assert r.status_code == 422 and err(r)["code"] == code
    assert balance(world, cid) == before


def test_authorization_for_another_code_is_refused(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o1, o2 = m.order([("X", 1, 100)]), m.order([("X", 1, 100)])
    r = world.pay(o2["code"], carrier.authorize(o1["code"]))
    assert r.status_code == 422 and "another code" in err(r)["message"]


def test_forged_authorization_signature_is_refused(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o = m.order([("X", 1, 100)])
    auth = carrier.authorize(o["code"])
    forged = dataclasses.replace(auth, signature=b"").signed(SigningKey.generate())
    r = world.pay(o["code"], forged)
    assert r.status_code == 422 and err(r)["code"] == "signature_invalid"


def test_tampered_code_is_refused(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o = m.order([("X", 1, 100)])
    auth = carrier.authorize(o["code"])
    code = o["code"]
    tampered = code[:20] + ("A" if code[20] != "A" else "B") + code[21:]
    r = world.pay(tampered, auth)
    assert r.status_code in (400, 422)
    assert err(r)["code"] in ("decryption_failed", "malformed_code")


def test_insufficient_funds_changes_nothing(world: World) -> None:
    m = world.merchant()
    cid = world.customer({"EUR": 500})
    carrier = world.carrier(cid)
    o = m.order([("TV", 1, 90_000)])
    r = world.pay(o["code"], carrier.authorize(o["code"]))
    assert r.status_code == 402 and err(r)["code"] == "insufficient_funds"
    assert balance(world, cid) == 500
    assert m.request("GET", f"/v1/merchant/orders/{o['order_id']}").json()["state"] == "CREATED"
    # the counter was not consumed: the same authorization works once funded
    auth = carrier.authorize(o["code"])
    world.admin("POST", f"/v1/admin/customers/{cid}/fund", {"currency": "EUR", "amount": 100_000})
    assert world.pay(o["code"], auth).status_code == 201


def test_no_account_in_currency_is_insufficient_funds(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o = m.order([("X", 1, 100)], currency="GBP")
    r = world.pay(o["code"], carrier.authorize(o["code"]))
    assert r.status_code == 402


def test_revoked_carrier_is_refused(world: World) -> None:
    m = world.merchant()
    cid = world.customer({"EUR": 10_000})
    carrier = world.carrier(cid)
    r = world.admin("POST", f"/v1/admin/carriers/{carrier.serial}/revoke")
    assert r.status_code == 200, r.text
    o = m.order([("X", 1, 100)])
    r = world.pay(o["code"], carrier.authorize(o["code"]))
    assert r.status_code == 403 and err(r)["code"] == "carrier_revoked"
    crl = world.http.get("/v1/revocation-list").json()
    assert carrier.serial in crl["serials"]


def test_unknown_carrier_is_refused(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o = m.order([("X", 1, 100)])
    fake = Carrier(
        999_999,
        SigningKey.generate(),
        provisioned=carrier.provisioned,
        epoch_keys=carrier.epoch_keys,  # it can open the code; only its key is unknown
    )
    r = world.pay(o["code"], fake.authorize(o["code"]))
    assert r.status_code == 403 and err(r)["code"] == "carrier_revoked"


def test_closed_order_cannot_be_paid(world: World, shop: Any) -> None:
    m, _, carrier = shop
    o = m.order([("X", 1, 100)])
    r = m.request("POST", f"/v1/merchant/orders/{o['order_id']}/close")
    assert r.status_code == 200 and r.json()["state"] == "CLOSED"
    r = world.pay(o["code"], carrier.authorize(o["code"]))
    assert r.status_code == 409 and "CLOSED" in err(r)["message"]


def test_revoked_merchant_codes_cannot_be_paid(world: World) -> None:
    m = world.merchant("Shady Shop")
    cid = world.customer({"EUR": 10_000})
    carrier = world.carrier(cid)
    o = m.order([("X", 1, 100)])
    assert world.admin("POST", f"/v1/admin/merchants/{m.merchant_id}/revoke").status_code == 200
    r = world.pay(o["code"], carrier.authorize(o["code"]))
    assert r.status_code == 403
    r = m.request("GET", "/v1/merchant")
    assert r.status_code == 403


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"code": "SS1:AAAA"},
        {"code": "SS1:AAAA", "authorization": "!!!"},
        {"code": "SS1:AAAA", "authorization": "AAAA"},
        {"code": "nope", "authorization": b64(b"\x80")},
        {"code": "SS1:AAAA", "authorization": b64(b"x"), "extra": 1},
        {"code": 5, "authorization": None},
    ],
)
def test_malformed_payment_requests_are_400(world: World, body: dict[str, Any]) -> None:
    r = world.http.post("/v1/payments", json=body)
    assert r.status_code == 400, r.text
    err(r)


def _malformed_authorizations(auth: Authorization) -> dict[str, bytes]:
    """Ways an authorization's bytes are not a well-formed authorization (its own typed error,
    MalformedAuthorization; on the wire ``malformed_code``, as before)."""
    good = auth.to_bytes()
    fields = cbor.strict_loads(good)
    return {
        "truncated": good[:-1],
        "trailing-byte": good + b"\x00",
        "wrong-arity": cbor.dumps(fields[:-1]),
        "merchant-id-not-text": cbor.dumps([*fields[:2], 42, *fields[3:]]),
        "bad-merchant-id": cbor.dumps([*fields[:2], "m 7Qx2", *fields[3:]]),
        "short-signature": cbor.dumps([*fields[:-1], fields[-1][:63]]),
        "non-canonical": b"\x9f" + good[1:] + b"\xff",  # indefinite length
        "a-map": cbor.dumps({1: fields[1]}),
    }


@pytest.mark.parametrize(
    "kind",
    sorted(_malformed_authorizations(Authorization(bytes(32), "M1", "O1", 1, 978, 1, 1, 1))),
)
@pytest.mark.parametrize("route", ["/v1/payments", "/v1/payments/lookup"])
def test_a_malformed_authorization_is_its_own_error_and_changes_nothing(
    world: World, shop: Any, kind: str, route: str
) -> None:
    m, cid, carrier = shop
    o = m.order([("Tea", 1, 240)])
    auth = carrier.authorize(o["code"])
    bad = _malformed_authorizations(auth)[kind]
    with pytest.raises(MalformedAuthorization) as raised:
        Authorization.from_bytes(bad)
    assert not isinstance(raised.value, MalformedCode)  # a bad payment code is another error
    before = balance(world, cid)
    body = {"code": o["code"], "authorization": b64(bad)}
    r = world.http.post(route, json=body, headers={"Idempotency-Key": f"bad-{kind}-{route}"})
    assert r.status_code == 400, r.text
    assert {k: err(r)[k] for k in ("type", "code")} == {
        "type": "MalformedCode",  # the wire form clients and the interop suite read
        "code": "malformed_code",
    }
    assert balance(world, cid) == before
    assert m.request("GET", f"/v1/merchant/orders/{o['order_id']}").json()["state"] == "CREATED"
    # nothing was consumed: the carrier's authorization pays the order afterwards
    assert world.pay(o["code"], auth).status_code == 201


def test_static_code_payment_uses_the_authorized_amount(world: World, shop: Any) -> None:
    m, cid, carrier = shop
    r = m.request("POST", "/v1/merchant/static-codes", {"currency": "EUR", "valid_days": 30})
    assert r.status_code == 201, r.text
    code = r.json()["code"]
    before = balance(world, cid)
    p1 = world.pay(code, carrier.authorize(code, amount=777, currency=978, order_id=""))
    p2 = world.pay(code, carrier.authorize(code, amount=223, currency=978, order_id=""))
    assert p1.status_code == p2.status_code == 201, p1.text
    assert p1.json()["order_id"] != p2.json()["order_id"]
    assert balance(world, cid) == before - 1000
    wrong = world.pay(code, carrier.authorize(code, amount=5, currency=840, order_id=""))
    assert wrong.status_code == 422


def test_merchant_signed_code_is_paid_once(world: World, shop: Any) -> None:
    m, _, carrier = shop
    code_key = SigningKey.generate()
    r = m.request("POST", "/v1/merchant/certificates", {"public_key": b64(code_key.public_key.raw)})
    assert r.status_code == 201, r.text
    cert = Certificate.from_bytes(base64.b64decode(r.json()["certificate"]))
    assert cert.role is Role.MERCHANT and cert.subject == m.merchant_id
    me = m.request("GET", "/v1/merchant").json()
    keys = world.http.get("/v1/keys").json()
    sk = next(k for k in keys["scheme_keys"] if k["current"])
    now = int(time.time())
    code = encode_text(
        seal(
            DynamicCode(
                Merchant(m.merchant_id, me["name"], me["city"], me["country"], me["mcc"]),
                "POS-0001",
                (LineItem("Soup", 1, 650),),
                650,
                978,
                now,
                now + 300,
                b"12345678",
            ),
            Issuer.merchant(code_key, cert),
            SchemePublicKey(sk["kid"], base64.b64decode(sk["public_key"])),
        )
    )
    assert world.pay(code, carrier.authorize(code)).status_code == 201
    again = world.pay(code, carrier.authorize(code))
    assert again.status_code == 409
    # a certificate the institution did not issue is refused
    rogue = issue_certificate(
        SigningKey.generate(),
        1,
        serial=cert.serial,
        role=Role.MERCHANT,
        subject=m.merchant_id,
        public_key=code_key.public_key,
        not_before=now - 10,
        not_after=now + 1000,
        merchant=Merchant(m.merchant_id, me["name"], me["city"], me["country"], me["mcc"]),
    )
    bad = encode_text(
        seal(
            StaticCode(
                Merchant(m.merchant_id, me["name"], me["city"], me["country"], me["mcc"]),
                978,
                now,
                now + 3600,
            ),
            Issuer.merchant(code_key, rogue),
            SchemePublicKey(sk["kid"], base64.b64decode(sk["public_key"])),
        )
    )
    r = world.pay(bad, carrier.authorize(code, amount=5, order_id=""))
    assert r.status_code in (400, 422) and err(r)


def test_100_concurrent_attempts_pay_one_code_once(world: World) -> None:
    m = world.merchant()
    cid = world.customer({"EUR": 10_000_000})
    carriers = [world.carrier(cid) for _ in range(4)]
    o = m.order([("Limited edition", 1, 5000)])
    auths = [carriers[i % 4].authorize(o["code"]) for i in range(100)]
    before = balance(world, cid)
    limits = httpx.Limits(max_connections=100)
    with world.server.client(timeout=60, limits=limits) as client:

        def attempt(i: int) -> int:
            body = {"code": o["code"], "authorization": b64(auths[i].to_bytes())}
            return client.post("/v1/payments", json=body).status_code

        with ThreadPoolExecutor(50) as pool:
            statuses = list(pool.map(attempt, range(100)))
    assert statuses.count(201) == 1, statuses
    assert all(s == 409 for s in statuses if s != 201), statuses
    assert balance(world, cid) == before - 5000
