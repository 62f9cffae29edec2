"""The institution's state and event vocabulary, as the wire and the database spell it.

``str``-valued enums: ``OrderState.PAID == "PAID"`` and JSON-encodes as ``"PAID"``, so the API,
the stored rows and the audit entries are unchanged; code compares with the members, never with
string literals. Shared by the server and its clients (merchant terminals, wallets).
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class OrderState(StrEnum):
    """An order's life (docs/institution.md, "State machines")."""

    CREATED = "CREATED"  # payable until it expires
    PAID = "PAID"
    PARTIALLY_REFUNDED = "PARTIALLY_REFUNDED"
    REFUNDED = "REFUNDED"
    CLOSED = "CLOSED"  # withdrawn by its merchant before it was paid
    EXPIRED = "EXPIRED"  # not paid in time

    @property
    def is_paid(self) -> bool:
        """Paid (and perhaps refunded since): the order's code can no longer be paid."""
        return self in PAID_STATES

    @property
    def is_refundable(self) -> bool:
        """Money is left to refund (if the refunds so far did not take it all)."""
        return self in REFUNDABLE_STATES


#: the states of an order that was paid
PAID_STATES = frozenset({OrderState.PAID, OrderState.PARTIALLY_REFUNDED, OrderState.REFUNDED})
#: the states a refund may start from
REFUNDABLE_STATES = frozenset({OrderState.PAID, OrderState.PARTIALLY_REFUNDED})

#: the states an order can reach from each state (docs/institution.md, "State machines"): its
#: life only goes forward, and CLOSED, EXPIRED and REFUNDED are final. A copy of an order kept
#: elsewhere (the POS journal and pages) takes a state only if it is one of these: a snapshot
#: older than what it holds (an event delivered late or again, a list read before a refund
#: and stored after it) never moves it back. The one place this order is written down.
LATER_STATES: dict[OrderState, frozenset[OrderState]] = {
    OrderState.CREATED: frozenset(
        {
            OrderState.PAID,
            OrderState.PARTIALLY_REFUNDED,
            OrderState.REFUNDED,
            OrderState.CLOSED,
            OrderState.EXPIRED,
        }
    ),
    OrderState.PAID: frozenset({OrderState.PARTIALLY_REFUNDED, OrderState.REFUNDED}),
    OrderState.PARTIALLY_REFUNDED: frozenset({OrderState.REFUNDED}),
    OrderState.REFUNDED: frozenset(),
    OrderState.CLOSED: frozenset(),
    OrderState.EXPIRED: frozenset(),
}


def later_order_state(held: str, seen: str | None) -> str:
    """The state a copy of an order holding ``held`` keeps after being told ``seen``: ``seen``
    if the order can move there from ``held`` (:data:`LATER_STATES`), else ``held`` (the same
    state, an older one, a sibling such as PAID after EXPIRED, or a word that is no state).
    A ``held`` that is no state (a row written by hand) takes any state."""
    if seen is None or seen not in _KNOWN:
        return held
    if held not in _KNOWN:
        return seen
    return seen if seen in LATER_STATES[OrderState(held)] else held


_KNOWN = frozenset(OrderState)


@unique
class EventType(StrEnum):
    """A merchant event's ``type`` (the signed event stream and webhooks)."""

    PAYMENT_SUCCEEDED = "payment.succeeded"
    REFUND_SUCCEEDED = "refund.succeeded"
    ORDER_CLOSED = "order.closed"
    ORDER_EXPIRED = "order.expired"
    CHECKOUT_SESSION_COMPLETED = "checkout.session.completed"


@unique
class CheckoutState(StrEnum):
    """A checkout session's life (docs/checkout.md): ``open`` until its order is paid
    (``complete``), expires unpaid (``expired``) or the merchant cancels it (``canceled``)."""

    OPEN = "open"
    COMPLETE = "complete"
    EXPIRED = "expired"
    CANCELED = "canceled"


@unique
class CodeState(StrEnum):
    """What ``POST /v1/codes/status`` says of a code a wallet holds."""

    PAYABLE = "payable"
    PAID = "paid"
    REFUNDED = "refunded"
    CLOSED = "closed"
    EXPIRED = "expired"
    REVOKED = "revoked"  # its merchant (or the merchant's certificate) was revoked
    UNKNOWN = "unknown"  # no such merchant, or an institution-issued code without its order


@unique
class Status(StrEnum):
    """A merchant's, customer's or key carrier's status."""

    ACTIVE = "active"
    REVOKED = "revoked"


__all__ = [
    "LATER_STATES",
    "PAID_STATES",
    "REFUNDABLE_STATES",
    "CheckoutState",
    "CodeState",
    "EventType",
    "OrderState",
    "Status",
    "later_order_state",
]
