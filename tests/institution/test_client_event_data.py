"""Each merchant event type's ``data`` is read typed (:mod:`safescan.client.event_data`), by the
one reader of :mod:`safescan.client.fields`.

* Every event an institution wrote (a populated one: payments, refunds, a closed and an expired
  order, a completed checkout session) reads as its type's dataclass, and that dataclass holds
  exactly the fields the institution sent: a field added, renamed or dropped on either side
  fails here.
* A malformed ``data`` (each field missing, null or of another type, in each event type) is
  :class:`InstitutionProtocolError` naming the field; a type the client does not know is None;
  unknown extra fields are tolerated.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select

from safescan.api.states import EventType, OrderState
from safescan.client.errors import InstitutionProtocolError
from safescan.client.event_data import (
    DATA_TYPES,
    CheckoutSessionCompleted,
    OrderEnded,
    PaymentSucceeded,
    RefundSucceeded,
    WebhookTestData,
    event_data,
)
from safescan.client.events import VerifiedEvent
from safescan.institution.models import Event
from tests.faults.populate import Populated, populated_on

#: one well-formed ``data`` of each type, as the institution writes it
SAMPLES: dict[str, dict[str, Any]] = {
    "payment.succeeded": {
        "payment_id": "pay_0123456789abcdef",
        "order_id": "O1",
        "amount": 500,
        "currency": 978,
        "payer_pseudonym": "ps_x",
        "paid_at": 1_796_000_000,
    },
    "refund.succeeded": {
        "refund_id": "re_1",
        "payment_id": "pay_1",
        "order_id": "O1",
        "amount": 100,
        "currency": 978,
        "order_state": "PARTIALLY_REFUNDED",
        "refunded_amount": 100,
    },
    "order.closed": {"order_id": "O1"},
    "order.expired": {"order_id": "O2"},
    "checkout.session.completed": {
        "session_id": "cs_1",
        "status": "complete",
        "order_id": "O3",
        "payment_id": "pay_3",
        "amount_total": 2500,
        "currency": 978,
        "reference": "cart-1",
        "completed_at": 1_796_000_001,
    },
    "webhook.test": {"test": True},
}


@pytest.fixture(scope="module", params=["sqlite"])
def populated(request: pytest.FixtureRequest) -> Iterator[Populated]:
    with populated_on(request, payments=4) as p:
        yield p


def test_every_event_the_institution_wrote_reads_as_its_type_with_exactly_its_fields(
    populated: Populated,
) -> None:
    rows = populated.inst.db.read(
        lambda c: c.execute(select(Event.type, Event.payload).order_by(Event.seq)).all()
    )
    seen: set[str] = set()
    for kind, payload in rows:
        data = json.loads(payload)["data"]
        typed = event_data(kind, data)
        assert isinstance(typed, DATA_TYPES[kind]), (kind, typed)
        assert dataclasses.asdict(typed) == data, kind  # every field, no more, no less
        seen.add(kind)
    assert seen == set(EventType), seen  # the populated institution wrote every type


def test_a_verified_event_s_payload_is_its_typed_data() -> None:
    data = SAMPLES["refund.succeeded"]
    event = VerifiedEvent(3, "refund.succeeded", "evt_1", 1, dict(data))
    assert event.payload == RefundSucceeded(
        refund_id="re_1",
        payment_id="pay_1",
        order_id="O1",
        amount=100,
        currency=978,
        order_state=OrderState.PARTIALLY_REFUNDED,
        refunded_amount=100,
    )
    assert isinstance(event.payload.order_state, OrderState)
    assert VerifiedEvent(3, "order.expired", "e", 1, {"order_id": "O9"}).payload == OrderEnded("O9")
    assert VerifiedEvent(3, "webhook.test", "e", 1, {"test": True}).payload == WebhookTestData(True)
    paid = VerifiedEvent(3, "payment.succeeded", "e", 1, SAMPLES["payment.succeeded"]).payload
    assert isinstance(paid, PaymentSucceeded) and paid.payment_id == "pay_0123456789abcdef"
    done = event_data("checkout.session.completed", SAMPLES["checkout.session.completed"])
    assert isinstance(done, CheckoutSessionCompleted) and done.reference == "cart-1"


def test_an_unknown_type_is_none_and_unknown_fields_are_tolerated() -> None:
    assert event_data("invoice.finalized", {"anything": 1}) is None
    assert VerifiedEvent(1, "order.updated", "e", 1, {}).payload is None
    more = {**SAMPLES["order.closed"], "closed_by": "till 2"}
    assert event_data("order.closed", more) == OrderEnded("O1")


MISSING = object()
BAD_VALUES: list[Any] = [MISSING, None, True, 1.5, "x", -1, [], {"a": 1}]


def _malformed() -> Iterator[tuple[str, str, Any]]:
    for kind, sample in SAMPLES.items():
        for name, good in sample.items():
            for value in BAD_VALUES:
                if value is not MISSING and type(value) is type(good) and value != -1:
                    continue  # of the right type: well formed
                if value == -1 and name not in ("amount", "refunded_amount", "amount_total"):
                    continue  # negative is malformed only for amounts
                if value is None and name == "reference":
                    continue  # a session without a reference
                yield kind, name, value


@pytest.mark.parametrize(("kind", "name", "value"), list(_malformed()))
def test_a_malformed_field_is_a_typed_error_naming_it(kind: str, name: str, value: Any) -> None:
    data = dict(SAMPLES[kind])
    if value is MISSING:
        del data[name]
    else:
        data[name] = value
    with pytest.raises(InstitutionProtocolError) as err:
        event_data(kind, data)
    assert name in err.value.message and kind in err.value.message


@pytest.mark.parametrize("kind", sorted(SAMPLES))
def test_data_that_is_not_an_object_is_a_typed_error(kind: str) -> None:
    for doc in (None, [], "x", 1):
        with pytest.raises(InstitutionProtocolError):
            event_data(kind, doc)


def test_an_unknown_state_in_a_refund_is_a_typed_error() -> None:
    data = {**SAMPLES["refund.succeeded"], "order_state": "HALF_PAID"}
    with pytest.raises(InstitutionProtocolError, match="order_state"):
        event_data("refund.succeeded", data)
    status = {**SAMPLES["checkout.session.completed"], "status": "paid"}
    with pytest.raises(InstitutionProtocolError, match="status"):
        event_data("checkout.session.completed", status)
