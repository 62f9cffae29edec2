"""Every typed answer of the API client (``safescan.client.answers``, ``.answers_merchant``)
against a real institution on 127.0.0.1 (SQLite and PostgreSQL), then attacked.

One story collects each kind of answer from the real server. Each must parse into its frozen
dataclass, give back the document as received (``to_json``: what ``--json`` prints) and parse
again to the same value. Then every answer is mutated, field by field, at every depth: a field
removed, a field of the wrong JSON type, an unknown state, not an object at all. Each must be
:class:`InstitutionProtocolError` (never a ``KeyError``/``TypeError``/``ValueError``). Unknown
extra fields are tolerated (a newer institution may add fields) and kept in ``to_json``.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import os
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from safescan.api.account import KIND_CERTIFIED, open_statement, presence_transcript
from safescan.api.errors import InstitutionError
from safescan.api.states import CheckoutState, CodeState, OrderState, Status
from safescan.api.wire import PaymentRequest
from safescan.client import MerchantClient, Order, WalletClient
from safescan.client.admin import Customer, CustomerPage, EnrollmentToken, MerchantCreated
from safescan.client.answers import (
    CarrierStatus,
    CheckoutSession,
    CodeStatus,
    LookupOutcome,
    MerchantProfile,
    OrderPage,
    OrderView,
    PaymentLookup,
    PaymentMade,
    PaymentView,
    PublicKeys,
    RefundLookup,
    RefundMade,
    RefundRecord,
    SettlementRow,
    StaticCodeIssued,
)
from safescan.client.answers_merchant import (
    ApiKeyInfo,
    ApiKeyList,
    DeliveryPage,
    NewApiKey,
    Resend,
    WebhookEndpoint,
    WebhookSecret,
    WebhookTest,
)
from safescan.client.credentials import SecretKey
from safescan.client.errors import InstitutionProtocolError
from safescan.client.fields import Answer
from safescan.client.merchant import CodeCertificate
from safescan.client.wallet import Challenge, Enrolled, KeyUpdate, SealedStatement
from safescan.code import LineItem, SigningKey
from safescan.code.certs import Certificate
from tests.institution.harness import Carrier, World
from tests.institution.receivers import Listener, answer, wait_until

# optional fields: an answer without them is still well formed
OPTIONAL = {(NewApiKey, "previous")}
# a refusal's error object is rebuilt leniently (the institution's own error vocabulary)
LENIENT = {"error"}


def _collect(world: World, receiver: Listener) -> dict[str, Answer]:
    url = world.server.base_url
    out: dict[str, Answer] = {}
    admin = world.admin_api
    trust = admin.keys.root_keys()
    m = world.merchant("Answer Cafe")
    cid = world.customer({"EUR": 100_000})
    carrier = world.carrier(cid)
    out["customer"] = admin.customers.get(cid)
    out["customer page"] = admin.customers.list(limit=3)
    out["enrollment token"] = admin.enrollment_tokens.issue(cid, ttl_seconds=600)
    assert carrier.enrolled is not None
    out["enrollment"] = carrier.enrolled
    out["merchant created"] = admin.merchants.create(
        name="Answer Bakery",
        city="Lyon",
        country="FR",
        mcc=5462,
        settlement_account="FR7630006000011234567890189",
        api_public_key=SigningKey.generate().public_key,
    )
    with (
        MerchantClient(url, m.merchant_id, m.key, trust) as api,
        WalletClient(url) as wallet,
    ):
        order = api.orders.create([LineItem("Tea", 2, 250)], currency="EUR", reference="ans-1")
        out["new order"] = order
        out["key update"] = wallet.carriers.key_update(carrier.serial, from_epoch=0)
        current = out["key update"].epoch
        out["key update, up to date"] = wallet.carriers.key_update(
            carrier.serial, from_epoch=current
        )
        out["challenge"], out["statement"] = _statement(wallet, carrier)
        out["code certificate"] = api.certificates.issue(SigningKey.generate().public_key.raw, 30)
        status = wallet.codes.status(order.code)
        assert status is not None
        out["code status"] = status
        request = PaymentRequest(order.code, carrier.authorize(order.code).to_bytes())
        out["payment"] = paid = wallet.payments.create(request, idempotency_key="ans-pay-1")
        # the payment's UTC day (the clock's day before the payment was the day before when
        # midnight passed in between: no settlement row then)
        today = dt.datetime.fromtimestamp(paid.paid_at, dt.UTC).date().isoformat()
        out["payment lookup"] = wallet.payments.lookup(request, idempotency_key="ans-pay-1")
        other = api.orders.create([LineItem("Cake", 1, 300)], currency="EUR")
        never = PaymentRequest(other.code, carrier.authorize(other.code).to_bytes())
        out["payment lookup, not processed"] = wallet.payments.lookup(
            never, idempotency_key="ans-pay-never"
        )
        out["merchant payment"] = api.payments.get(paid.payment_id)
        out["refund"] = api.refunds.create(order.order_id, 200, idempotency_key="ans-ref-1")
        out["refund lookup"] = api.refunds.lookup(order.order_id, "ans-ref-1", 200)
        with pytest.raises(InstitutionError) as refused:
            api.refunds.create(order.order_id, 10_000, idempotency_key="ans-ref-big")
        out["refund lookup, refused"] = looked = api.refunds.lookup(
            order.order_id, "ans-ref-big", 10_000
        )
        assert isinstance(looked, RefundLookup) and looked.outcome is LookupOutcome.REFUSED
        assert looked.error is not None and type(looked.error) is type(refused.value)
        out["order"] = api.orders.get(order.order_id)
        out["order page"] = api.orders.list(limit=5)
        out["closed order"] = api.orders.close(other.order_id)
        out["refund list row"] = api.refund_history.list(order_id=order.order_id)[0]
        out["settlement row"] = api.settlements.day(today)[0]
        out["static code"] = api.static_codes.create(currency="EUR", valid_days=30)
        out["merchant profile"] = api.profile()
        out["webhook set"] = api.webhook.set(receiver.url)
        out["webhook secret"] = api.webhook.rotate_secret(0)
        out["webhook endpoint"] = api.webhook.get()
        out["webhook test"] = api.webhook.test()
        closed = api.orders.create([LineItem("Soup", 1, 400)], currency="EUR")
        api.orders.close(closed.order_id)  # an event, delivered to the receiver

        def delivered() -> bool:
            return any(d.kind == "event" for d in api.webhook.deliveries(limit=50).deliveries)

        assert wait_until(delivered, 40), "no event was delivered"
        out["delivery page"] = page = api.webhook.deliveries(limit=50)
        event = next(d for d in page.deliveries if d.kind == "event")
        out["resend"] = api.webhook.resend(event.event_id)
        made = api.api_keys.create(["checkout:read", "checkout:write"], name="answers")
        out["new API key"] = made
        out["API key list"] = api.api_keys.list()
        spare = api.api_keys.create(["orders:read"], name="spare")
        out["rotated API key"] = rotated = api.api_keys.rotate(spare.info.id, 60)
        out["revoked API key"] = api.api_keys.revoke(rotated.info.id)
        out["public keys"] = api.keys.document()
    with MerchantClient(url, m.merchant_id, SecretKey(made.key), trust) as shop:
        out["checkout session"] = session = shop.checkout.create(
            [LineItem("Teapot", 1, 2500)],
            currency="EUR",
            success_url="https://shop.example/done",
            cancel_url="https://shop.example/cart",
        )
        out["canceled checkout session"] = shop.checkout.cancel(session.id)
    out["admin merchant"] = admin.merchants.get(m.merchant_id)
    out["admin settlement row"] = next(
        r for r in admin.settlements.rows(today) if r.merchant_id == m.merchant_id
    )
    out["revoked merchant"] = admin.merchants.revoke(world.merchant("Gone").merchant_id)
    gone = world.carrier(world.customer())
    out["revoked carrier"] = admin.carriers.revoke(gone.serial)
    return out


def _statement(wallet: WalletClient, carrier: Carrier) -> tuple[Challenge, SealedStatement]:
    """The account challenge and the sealed statement, answered as the carrier answers."""
    private = X25519PrivateKey.generate()
    wallet_key = private.public_key().public_bytes_raw()
    asked = wallet.account.challenge(carrier.serial, wallet_key)
    card_public = os.urandom(32)
    signed = presence_transcript(carrier.certificate, asked.challenge, card_public)
    response = card_public + bytes([KIND_CERTIFIED]) + carrier.key.sign(signed)
    sealed = wallet.account.statement(carrier.serial, wallet_key, asked.expires_at, response)
    opened = open_statement(sealed.sealed, private, carrier.serial, asked.expires_at)
    assert opened["carrier_serial"] == carrier.serial
    return asked, sealed


@pytest.fixture(scope="module")
def answers(world: World) -> Iterator[dict[str, Answer]]:
    receiver = Listener(answer(204))
    try:
        yield _collect(world, receiver)
    finally:
        receiver.close()


EXPECTED: dict[str, type[Answer]] = {
    "enrollment": Enrolled,
    "new order": Order,
    "key update": KeyUpdate,
    "key update, up to date": KeyUpdate,
    "challenge": Challenge,
    "statement": SealedStatement,
    "code certificate": CodeCertificate,
    "customer": Customer,
    "customer page": CustomerPage,
    "enrollment token": EnrollmentToken,
    "merchant created": MerchantCreated,
    "code status": CodeStatus,
    "payment": PaymentMade,
    "payment lookup": PaymentLookup,
    "payment lookup, not processed": PaymentLookup,
    "merchant payment": PaymentView,
    "refund": RefundMade,
    "refund lookup": RefundLookup,
    "refund lookup, refused": RefundLookup,
    "order": OrderView,
    "order page": OrderPage,
    "closed order": OrderView,
    "refund list row": RefundRecord,
    "settlement row": SettlementRow,
    "static code": StaticCodeIssued,
    "merchant profile": MerchantProfile,
    "webhook set": MerchantProfile,
    "webhook secret": WebhookSecret,
    "webhook endpoint": WebhookEndpoint,
    "webhook test": WebhookTest,
    "delivery page": DeliveryPage,
    "resend": Resend,
    "new API key": NewApiKey,
    "API key list": ApiKeyList,
    "rotated API key": NewApiKey,
    "revoked API key": ApiKeyInfo,
    "public keys": PublicKeys,
    "checkout session": CheckoutSession,
    "canceled checkout session": CheckoutSession,
    "admin merchant": MerchantProfile,
    "admin settlement row": SettlementRow,
    "revoked merchant": MerchantProfile,
    "revoked carrier": CarrierStatus,
}


def test_every_answer_of_the_real_server_parses_into_its_type(
    answers: dict[str, Answer],
) -> None:
    assert {k: type(v) for k, v in answers.items()} == EXPECTED
    for name, got in answers.items():
        doc = got.to_json()
        assert _parsed(got, doc) == got, name  # parsed in one place, the same again
        doc["changed"] = True  # to_json is a copy: the answer does not change
        assert "changed" not in got.to_json(), name


def test_the_values_are_typed_and_say_what_happened(answers: dict[str, Answer]) -> None:
    a: Any = answers
    assert a["customer"].balance("EUR") == 100_000 and a["customer"].carrier_count == 1
    assert a["customer"].carriers[0].status is Status.ACTIVE
    assert a["enrollment"].customer_id == a["customer"].id and a["enrollment"].key_update
    assert a["new order"].order_id == a["order"].order_id and a["new order"].total == 500
    assert a["new order"].items == (LineItem("Tea", 2, 250),)
    assert a["key update"].key_update and a["key update, up to date"].key_update is None
    assert len(a["challenge"].challenge) == 32 and a["statement"].sealed
    cert = Certificate.from_bytes(a["code certificate"].certificate)
    assert cert.serial == a["code certificate"].serial
    assert all(c.carriers == () for c in a["customer page"].customers)
    assert a["enrollment token"].customer_id == a["customer"].id
    assert a["merchant created"].profile.city == "Lyon"
    assert a["merchant created"].id == a["merchant created"].profile.id
    assert a["code status"].state is CodeState.PAYABLE
    assert a["code status"].order_state is OrderState.CREATED
    assert a["payment lookup"].outcome is LookupOutcome.SUCCEEDED
    assert a["payment lookup"].payment == a["payment"] and a["payment"].amount == 500
    assert a["payment lookup, not processed"].outcome is LookupOutcome.NOT_PROCESSED
    assert a["payment lookup, not processed"].payment is None
    assert a["payment lookup, not processed"].message
    assert a["merchant payment"].receipt == a["payment"].receipt
    assert a["refund lookup"].refund == a["refund"] and a["refund"].amount == 200
    order = a["order"]
    assert order.state is OrderState.PARTIALLY_REFUNDED and order.refunded_amount == 200
    assert order.items == (LineItem("Tea", 2, 250),) and order.reference == "ans-1"
    assert order.payment_id == a["payment"].payment_id
    assert order.order_id in {o.order_id for o in a["order page"].orders}
    assert a["closed order"].state is OrderState.CLOSED and a["closed order"].paid_at is None
    assert a["refund list row"].refund_id == a["refund"].refund_id
    assert a["settlement row"] == a["admin settlement row"]
    # the payment's day holds the refund too, unless midnight passed between the two (a refund
    # counts on its own UTC day)
    days = {
        dt.datetime.fromtimestamp(t, dt.UTC).date()
        for t in (a["payment"].paid_at, a["refund"].created_at)
    }
    refunded = 200 if len(days) == 1 else 0
    assert (a["settlement row"].gross, a["settlement row"].refunded) == (500, refunded)
    assert a["static code"].currency == 978
    assert a["merchant profile"].status is Status.ACTIVE
    assert a["webhook set"].webhook_url is not None
    assert a["webhook endpoint"].secret is not None
    assert a["webhook endpoint"].secret.version == a["webhook secret"].version
    assert a["webhook test"].state == "delivered" and a["webhook test"].status == 204
    assert a["resend"].requeued in (True, False) and a["resend"].event_id.startswith("evt_")
    assert a["new API key"].key.startswith("sk_live_") and a["new API key"].previous is None
    assert a["new API key"].info in a["API key list"].api_keys
    assert a["rotated API key"].previous is not None
    assert a["revoked API key"].state == "revoked"
    assert any(k.current for k in a["public keys"].scheme_keys)
    assert a["checkout session"].status is CheckoutState.OPEN
    assert a["canceled checkout session"].status is CheckoutState.CANCELED
    assert a["admin merchant"] == a["webhook set"]  # the profile with its webhook URL
    assert a["revoked merchant"].status is Status.REVOKED
    assert a["revoked carrier"].status is Status.REVOKED


# --- attacks: malformed answers -------------------------------------------------------------


def _parsed(like: Answer, doc: Any) -> Answer:
    """``doc`` parsed as ``like``'s type; an order's lines are the request's (not answered)."""
    got = type(like).from_json(doc)
    return dataclasses.replace(got, items=like.items) if isinstance(like, Order) else got


def _wrong_types(value: Any) -> list[Any]:
    """JSON values of another type than ``value`` (null only where null is not allowed): the
    plain other type first, then the near misses: a boolean for an integer and back, a float
    for an integer, the value wrapped in an array, an object where an array or text is."""
    if isinstance(value, bool):
        return ["true", int(value), [value]]
    if isinstance(value, int):
        return [str(value), True, False, float(value), value + 0.5, [value]]
    if isinstance(value, str):
        return [7, [value], {"value": value}, True]
    if isinstance(value, dict):
        return ["x", [value], True]
    if isinstance(value, list):
        return ["x", {}, True, [value]]
    return [[]]  # a null: a list is never what a nullable field holds


def _paths(doc: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every field and array element below ``doc`` (not inside a lenient key's value)."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        yield (*path, key)
        if isinstance(value, dict | list) and key not in LENIENT:
            yield from _paths(value, (*path, key))


def _at(doc: Any, path: tuple[Any, ...]) -> tuple[Any, Any]:
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    return parent, path[-1]


def _refused(kind: type[Answer], doc: Any, what: str) -> None:
    try:
        kind.from_json(doc)
    except InstitutionProtocolError as exc:
        assert "malformed" in exc.message, exc.message
    else:
        pytest.fail(f"{kind.__name__} accepted {what}")


def test_a_field_missing_at_any_depth_is_a_protocol_error(answers: dict[str, Answer]) -> None:
    tried = 0
    for name, got in answers.items():
        kind = type(got)
        for path in _paths(got.to_json()):
            doc = got.to_json()
            parent, key = _at(doc, path)
            if not isinstance(parent, dict) or ((kind, key) in OPTIONAL and len(path) == 1):
                continue
            del parent[key]
            _refused(kind, doc, f"{name} without {'.'.join(map(str, path))}")
            tried += 1
    assert tried > 200, tried


def test_a_field_of_the_wrong_type_at_any_depth_is_a_protocol_error(
    answers: dict[str, Answer],
) -> None:
    tried = 0
    for name, got in answers.items():
        for path in _paths(got.to_json()):
            parent, key = _at(got.to_json(), path)
            for bad in _wrong_types(parent[key]):
                doc = got.to_json()
                parent, key = _at(doc, path)
                parent[key] = bad
                _refused(type(got), doc, f"{name} with {'.'.join(map(str, path))} = {bad!r:.60}")
                tried += 1
    assert tried > 1500, tried


def _b64(n: int) -> str:
    return base64.b64encode(b"\x01" * n).decode()


STATES = ("NO_SUCH_STATE", "", "paid ", "Paid")
NEGATIVE = (-1, -(2**63))
NOT_BASE64 = ("not base64!", "QUJD-_8", "QUJ", "QUJD\n", "\u2014", "AB==CD")


def _too_long(n: int) -> tuple[str, ...]:
    return (*NOT_BASE64, _b64(n + 1))


@pytest.mark.parametrize(
    ("name", "field", "values"),
    [
        ("order", "state", STATES),
        ("merchant payment", "order_state", STATES),
        ("refund", "order_state", STATES),
        ("code status", "state", STATES),
        ("code status", "merchant_status", STATES),
        ("merchant profile", "status", STATES),
        ("checkout session", "status", STATES),
        ("revoked carrier", "status", STATES),
        ("customer", "status", STATES),
        ("payment lookup", "outcome", STATES),
        ("checkout session", "object", ("order", "Checkout.Session", "checkout.session ", "")),
        ("payment", "amount", NEGATIVE),
        ("merchant payment", "amount", NEGATIVE),
        ("order", "total", NEGATIVE),
        ("order", "paid_amount", NEGATIVE),
        ("order", "refunded_amount", NEGATIVE),
        ("new order", "total", NEGATIVE),
        ("refund", "amount", NEGATIVE),
        ("refund", "refunded_amount", NEGATIVE),
        ("refund list row", "amount", NEGATIVE),
        ("settlement row", "gross", NEGATIVE),
        ("settlement row", "refunded", NEGATIVE),
        ("settlement row", "payments", NEGATIVE),
        ("checkout session", "total", NEGATIVE),
        ("merchant profile", "api_public_key", NOT_BASE64),
        ("public keys", "scheme_key_list", NOT_BASE64),
        ("code certificate", "certificate", NOT_BASE64),
        ("enrollment", "certificate", _too_long(8192)),
        ("enrollment", "bundle", _too_long(8192)),
        ("enrollment", "key_update", _too_long(4096)),
        ("key update", "key_update", _too_long(4096)),
        ("statement", "sealed", _too_long(1 << 20)),
        ("challenge", "challenge", (*NOT_BASE64, _b64(31), _b64(33), _b64(0))),
    ],
)
def test_a_value_the_protocol_does_not_allow_is_a_protocol_error(
    answers: dict[str, Answer], name: str, field: str, values: tuple[Any, ...]
) -> None:
    """An unknown state, a negative amount, text that is not base64, bytes of the wrong size."""
    for value in values:
        doc = answers[name].to_json()
        doc[field] = value
        _refused(type(answers[name]), doc, f"{name} with {field} = {value!r:.40}")


def test_an_answer_that_is_no_object_is_a_protocol_error(answers: dict[str, Answer]) -> None:
    for name, got in answers.items():
        for doc in (None, [], [got.to_json()], "order", 1, True):
            _refused(type(got), doc, f"{name} as {doc!r:.40}")


def test_unknown_extra_fields_are_tolerated_and_kept(answers: dict[str, Answer]) -> None:
    for name, got in answers.items():
        doc = got.to_json()
        doc["added_in_a_later_version"] = {"nested": [1, 2]}
        for path in _paths(got.to_json()):
            parent, key = _at(doc, path)
            if isinstance(parent[key], dict):
                parent[key]["also_new"] = None
        again = _parsed(got, copy.deepcopy(doc))
        assert again == got, name
        assert again.to_json() == doc, name  # what --json prints: the answer as received
