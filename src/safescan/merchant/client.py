"""The merchant terminal's use of the institution's merchant API.

:class:`MerchantApi` is the typed merchant client (:class:`safescan.client.MerchantClient`:
signed requests, one service per resource) bound to this terminal's configuration.
:func:`wait_for_payment` follows the verified event stream until an order is paid, and reports
a payment only once its signed receipt verifies and matches the order.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from safescan.api.errors import NotFound
from safescan.api.states import EventType, OrderState
from safescan.client.answers import RefundRecord, SettlementRow, StaticCodeIssued
from safescan.client.errors import InstitutionUnreachable
from safescan.client.event_data import OrderEnded, PaymentSucceeded
from safescan.client.events import VerifiedEvent
from safescan.client.merchant import MerchantClient, Order
from safescan.code.authorization import Receipt
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.code.payment import LineItem
from safescan.merchant.config import PosConfig

__all__ = [
    "MerchantApi",
    "Order",
    "OrderNotPaid",
    "VerifiedEvent",
    "order_summary",
    "receipt_summary",
    "wait_for_payment",
]


class OrderNotPaid(SafescanError):
    """The order ended (closed, expired) or waiting was stopped, without a payment."""

    code = "order_not_paid"


class MerchantApi(MerchantClient):
    """The merchant client for this terminal's configuration (institution, merchant, API key,
    pinned institution keys, default currency)."""

    def __init__(
        self,
        config: PosConfig,
        *,
        timeout: float = 10.0,
        tries: int | None = None,
        lookups: int = 3,
        retry_seconds: float | None = None,
    ) -> None:
        super().__init__(
            config.institution_url,
            config.merchant_id,
            config.api_key,
            config.trust,
            timeout=timeout,
            tries=tries,
            lookups=lookups,
            retry_seconds=retry_seconds,
        )
        self.config = config

    def create_order(
        self,
        items: Sequence[LineItem],
        *,
        currency: str | None = None,
        expires_in: int = 300,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Order:
        """:meth:`orders.create <safescan.client.merchant.OrderService.create>` in the
        terminal's currency unless ``currency`` says otherwise."""
        return self.orders.create(
            items,
            currency=currency or self.config.currency,
            expires_in=expires_in,
            reference=reference,
            idempotency_key=idempotency_key,
        )

    def settlement(self, day: str) -> tuple[SettlementRow, ...]:
        """The institution's settlement rows of this merchant for one UTC day (``YYYY-MM-DD``;
        ``GET /v1/merchant/settlement``): one per currency with activity."""
        return self.settlements.day(day)

    def refund_list(
        self, *, day: str | None = None, order_id: str | None = None
    ) -> tuple[RefundRecord, ...]:
        """The merchant's refunds (every terminal's) of one UTC day and/or one order, oldest
        first (``GET /v1/merchant/refunds``)."""
        return self.refund_history.list(day=day, order_id=order_id)

    def static_code(
        self, *, currency: str | None = None, valid_days: int = 365
    ) -> StaticCodeIssued:
        """A new sealed static code to print (``POST /v1/merchant/static-codes``): the customer
        enters the amount."""
        return self.static_codes.create(currency=currency, valid_days=valid_days)


def _paid_already(api: MerchantApi, order: Order) -> tuple[VerifiedEvent, Receipt] | None:
    try:
        state = api.orders.get(order.order_id)
    except NotFound:
        if not order.sealed_here:
            raise
        # sealed by this terminal: the institution records the order only when it is paid
        if time.time() >= order.expires_at:
            raise OrderNotPaid("the code expired without payment") from None
        return None
    if state.payment_id:
        receipt = api.payments.verified_receipt(state.payment_id, order)
        paid = PaymentSucceeded(
            payment_id=receipt.payment_id,
            order_id=order.order_id,
            amount=receipt.amount,
            currency=receipt.currency,
            payer_pseudonym=receipt.payer_pseudonym,
            paid_at=receipt.paid_at,
        )
        data = dataclasses.asdict(paid)
        return VerifiedEvent(0, EventType.PAYMENT_SUCCEEDED, "", receipt.paid_at, data), receipt
    if state.state in (OrderState.CLOSED, OrderState.EXPIRED):
        raise OrderNotPaid(f"the order is {state.state.lower()}, without payment")
    return None


def wait_for_payment(
    api: MerchantApi,
    order: Order,
    *,
    stop: threading.Event | None = None,
    on_event: Callable[[VerifiedEvent], None] | None = None,
    read_timeout: float = 20.0,
) -> tuple[VerifiedEvent, Receipt]:
    """Block until the order is paid; returns the verified event and the verified receipt.

    The event must verify, and the receipt it points to must verify and match the order
    (merchant, order id, amount, currency, code digest). The order's state is checked each
    time the stream (re)opens, so a payment made before that is not missed. Raises
    :class:`OrderNotPaid` if the order is closed or expires, or ``stop`` is set.
    """
    after: int | None = None
    while stop is None or not stop.is_set():
        until = order.expires_at + 1 if order.sealed_here else None
        with api.events.open(after=after, read_timeout=read_timeout, until=until) as stream:
            done = _paid_already(api, order)
            if done is not None:
                return done
            try:
                for event in stream:
                    after = event.seq or after
                    if on_event is not None:
                        on_event(event)
                    if stop is not None and stop.is_set():
                        break
                    if event.data.get("order_id") != order.order_id:
                        continue  # another order's (read only the events of this one)
                    payload = event.payload
                    if isinstance(payload, PaymentSucceeded):
                        pid = payload.payment_id
                        return event, api.payments.verified_receipt(pid, order)
                    if isinstance(payload, OrderEnded):
                        kind = event.type.split(".")[1]
                        raise OrderNotPaid(f"the order was {kind} without payment")
            except InstitutionUnreachable:
                pass  # the stream dropped: reconnect (a dead institution fails the reopen)
        if stop is not None:
            stop.wait(0.3)
        else:
            time.sleep(0.3)
    raise OrderNotPaid("stopped while waiting for the payment")


def order_summary(order: Order) -> dict[str, Any]:
    """A JSON-ready description of an order."""
    cur = lookup_currency(order.currency)
    return {
        "order_id": order.order_id,
        "merchant_id": order.merchant_id,
        "items": [i.display_json(order.currency) for i in order.items],
        "total": order.total,
        "total_display": cur.format(order.total),
        "currency": cur.alpha,
        "expires_at": order.expires_at,
        "code_bytes": order.code_bytes,
        "sealed_here": order.sealed_here,
    }


def receipt_summary(receipt: Receipt) -> dict[str, Any]:
    """A JSON-ready description of a verified receipt."""
    return {
        "payment_id": receipt.payment_id,
        "order_id": receipt.order_id,
        "merchant_id": receipt.merchant_id,
        "amount": receipt.amount,
        "currency": lookup_currency(receipt.currency).alpha,
        "amount_display": lookup_currency(receipt.currency).format(receipt.amount),
        "payer_pseudonym": receipt.payer_pseudonym,
        "paid_at": receipt.paid_at,
        "issuer_kid": receipt.issuer_kid,
        "signature_verified": True,
    }
