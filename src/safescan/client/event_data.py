"""The ``data`` of each merchant event type (the signed event stream and webhooks), typed: one
frozen dataclass per type, read with the one reader of :mod:`.fields` (the dataclass is the
schema; docs/institution.md, "Notifications").

:func:`event_data` reads an event's ``data`` by its ``type``: a malformed one (a field missing
or of the wrong type) is :class:`~safescan.client.errors.InstitutionProtocolError`; a type this
client does not know (a newer institution's) is None, for the caller to pass over. Fields the
client does not know are tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from safescan.api.schema import Amount
from safescan.api.states import CheckoutState, EventType, OrderState
from safescan.client.fields import read


@dataclass(frozen=True)
class PaymentSucceeded:
    """``payment.succeeded``: an order (or a static code) was paid; fetch and verify the signed
    receipt by ``payment_id`` before trusting it."""

    payment_id: str
    order_id: str
    amount: Amount
    currency: int
    payer_pseudonym: str
    paid_at: int


@dataclass(frozen=True)
class RefundSucceeded:
    """``refund.succeeded``: a refund was made; the order's state and refunded total after it."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: Amount
    currency: int
    order_state: OrderState
    refunded_amount: Amount


@dataclass(frozen=True)
class OrderEnded:
    """``order.closed`` (its merchant withdrew it) or ``order.expired`` (not paid in time)."""

    order_id: str


@dataclass(frozen=True)
class CheckoutSessionCompleted:
    """``checkout.session.completed``: a checkout session's order was paid (docs/checkout.md)."""

    session_id: str
    status: CheckoutState
    order_id: str
    payment_id: str
    amount_total: Amount
    currency: int
    reference: str | None
    completed_at: int


@dataclass(frozen=True)
class WebhookTestData:
    """``webhook.test``: the test delivery of ``POST /v1/merchant/webhook/test``."""

    test: bool


EventData = (
    PaymentSucceeded | RefundSucceeded | OrderEnded | CheckoutSessionCompleted | WebhookTestData
)

#: the ``data`` type of each event type
DATA_TYPES: dict[str, type[EventData]] = {
    EventType.PAYMENT_SUCCEEDED: PaymentSucceeded,
    EventType.REFUND_SUCCEEDED: RefundSucceeded,
    EventType.ORDER_CLOSED: OrderEnded,
    EventType.ORDER_EXPIRED: OrderEnded,
    EventType.CHECKOUT_SESSION_COMPLETED: CheckoutSessionCompleted,
    "webhook.test": WebhookTestData,
}


def event_data(type_: str, data: Any) -> EventData | None:
    """The event's ``data`` read as its type's dataclass (None: a type this client does not
    know); malformed: :class:`~safescan.client.errors.InstitutionProtocolError`."""
    kind = DATA_TYPES.get(type_)
    return None if kind is None else read(kind, data, f"{type_} event")


__all__ = [
    "DATA_TYPES",
    "CheckoutSessionCompleted",
    "EventData",
    "OrderEnded",
    "PaymentSucceeded",
    "RefundSucceeded",
    "WebhookTestData",
    "event_data",
]
