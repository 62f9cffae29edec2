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

import copy
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest

from safescan.api.errors import InstitutionError
from safescan.api.states import CheckoutState, CodeState, OrderState, Status
from safescan.api.wire import PaymentRequest
from safescan.client import MerchantClient, WalletClient
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
from safescan.code import LineItem, SigningKey
from tests.institution.harness import World
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
    out["merchant created"] = admin.merchants.create(
        name="Answer Bakery",
        city="Lyon",
        country="FR",
        mcc=5462,
        settlement_account="FR7630006000011234567890189",
        api_public_key=SigningKey.generate().public_key,
    )
    today = dt.datetime.now(dt.UTC).date().isoformat()
    with (
        MerchantClient(url, m.merchant_id, m.key, trust) as api,
        WalletClient(url) as wallet,
    ):
        order = api.orders.create([LineItem("Tea", 2, 250)], currency="EUR", reference="ans-1")
        status = wallet.codes.status(order.code)
        assert status is not None
        out["code status"] = status
        request = PaymentRequest(order.code, carrier.authorize(order.code).to_bytes())
        out["payment"] = paid = wallet.payments.create(request, idempotency_key="ans-pay-1")
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


@pytest.fixture(scope="module")
def answers(world: World) -> Iterator[dict[str, Answer]]:
    receiver = Listener(answer(204))
    try:
        yield _collect(world, receiver)
    finally:
        receiver.close()


EXPECTED: dict[str, type[Answer]] = {
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
        assert type(got).from_json(doc) == got, name  # parsed in one place, the same again
        doc["changed"] = True  # to_json is a copy: the answer does not change
        assert "changed" not in got.to_json(), name


def test_the_values_are_typed_and_say_what_happened(answers: dict[str, Answer]) -> None:
    a: Any = answers
    assert a["customer"].balance("EUR") == 100_000 and a["customer"].carrier_count == 1
    assert a["customer"].carriers[0].status is Status.ACTIVE
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
    assert (a["settlement row"].gross, a["settlement row"].refunded) == (500, 200)
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


def _wrong_type(value: Any) -> Any:
    """A JSON value of another type than ``value`` (null only where null is not allowed)."""
    if isinstance(value, bool):
        return "true"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return 7
    if isinstance(value, list | dict):
        return "x"
    return []  # a null: a list is never what a nullable field holds


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
            doc = got.to_json()
            parent, key = _at(doc, path)
            parent[key] = _wrong_type(parent[key])
            _refused(type(got), doc, f"{name} with {'.'.join(map(str, path))} = {parent[key]!r}")
            tried += 1
    assert tried > 250, tried


@pytest.mark.parametrize(
    ("name", "field"),
    [
        ("order", "state"),
        ("merchant payment", "order_state"),
        ("refund", "order_state"),
        ("code status", "state"),
        ("code status", "merchant_status"),
        ("merchant profile", "status"),
        ("checkout session", "status"),
        ("revoked carrier", "status"),
        ("customer", "status"),
        ("payment lookup", "outcome"),
    ],
)
def test_an_unknown_state_is_a_protocol_error(
    answers: dict[str, Answer], name: str, field: str
) -> None:
    for value in ("NO_SUCH_STATE", "", "paid ", "Paid"):
        doc = answers[name].to_json()
        doc[field] = value
        _refused(type(answers[name]), doc, f"{name} with {field} = {value!r}")


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
        again = type(got).from_json(copy.deepcopy(doc))
        assert again == got, name
        assert again.to_json() == doc, name  # what --json prints: the answer as received
