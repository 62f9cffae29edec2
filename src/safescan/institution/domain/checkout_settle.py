"""Moving a checkout session after its order, inside a transaction (docs/checkout.md).

A session is settled once: ``open`` -> ``complete`` / ``expired`` / ``canceled`` with one
``checkout.<status>`` audit entry and, when complete, one ``checkout.session.completed`` event.
The audit log is the record of that move: before moving a session, :func:`settle` looks up its
settling entry (a partial index covers exactly those entries, migration
``checkout_settle_index``). A session whose row says ``open`` although the log already closed
it was set back behind the institution's back (SQL tampering, a partial restore): it is not
closed a second time (no second entry, no second event); it is left as found, for ``safescan
institution audit`` to report, and its logged status is what the caller is told.

:func:`settle` runs wherever a session may have to move: in the payment's own transaction
(:func:`complete_paid`, so that ``checkout.session.completed`` leaves with the payment), and
on a read or in the maintenance sweep for the rest (expiry, cancellation, and sessions whose
payment did not complete them: made before the pay path did).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import Connection, and_, select, text, update

from safescan.api.states import CheckoutState, EventType, OrderState
from safescan.institution import audit
from safescan.institution.models import CHECKOUT_SETTLES_WHERE, AuditEntry, OrderRow
from safescan.institution.models import CheckoutSession as SessionRow
from safescan.institution.webhooks import new_event

log = logging.getLogger("safescan.institution.checkout")

#: the session status an order's state settles it in (CREATED: still open)
SETTLED = {
    OrderState.PAID: CheckoutState.COMPLETE,
    OrderState.PARTIALLY_REFUNDED: CheckoutState.COMPLETE,
    OrderState.REFUNDED: CheckoutState.COMPLETE,
    OrderState.EXPIRED: CheckoutState.EXPIRED,
    OrderState.CLOSED: CheckoutState.CANCELED,
}
#: checkout orders' ids start with this (never in an ordinary order id, whose characters are
#: A-Z and 2-9): the pay path completes the session of such an order in its own transaction
ORDER_PREFIX = "cs-"


def entity(mid: str, sid: str) -> str:
    """A session's audit entity."""
    return f"checkout:{mid}:{sid}"


def joined() -> Any:
    """Sessions with their orders' state (one row each)."""
    return select(
        SessionRow,
        OrderRow.state.label("order_state"),
        OrderRow.currency.label("order_currency"),
        OrderRow.total.label("order_total"),
        OrderRow.items.label("order_items"),
        OrderRow.reference.label("order_reference"),
        OrderRow.expires_at.label("order_expires_at"),
        OrderRow.paid_at.label("order_paid_at"),
        OrderRow.payment_id.label("order_payment_id"),
    ).join(
        OrderRow,
        and_(
            OrderRow.merchant_id == SessionRow.merchant_id, OrderRow.order_id == SessionRow.order_id
        ),
    )


def logged_status(conn: Connection, mid: str, sid: str) -> CheckoutState | None:
    """The status the audit log settled the session in (its first settling entry), None if
    the log has none (the session is open as far as the log knows)."""
    found = conn.execute(
        select(AuditEntry.data)
        .where(AuditEntry.entity == entity(mid, sid), text(CHECKOUT_SETTLES_WHERE))
        .order_by(AuditEntry.id)
        .limit(1)
    ).scalar_one_or_none()
    if found is None:
        return None
    return CheckoutState(json.loads(found)["status"])


def settle(conn: Connection, row: Any, now: int, *, webhooks: bool) -> CheckoutState:
    """Move the session ``row`` (a :func:`joined` row) after its order, at most once: the
    status it has afterwards (for a session the log already settled: the logged status,
    the row left as found)."""
    status = CheckoutState(row.status)
    settled = SETTLED.get(OrderState(row.order_state))
    if status is not CheckoutState.OPEN or settled is None:
        return status
    mid, sid = row.merchant_id, row.id
    logged = logged_status(conn, mid, sid)
    if logged is not None:
        log.warning(
            "checkout session %s is open in the database but the audit log settled it (%s):"
            " set back behind the institution's back; left for the audit",
            sid,
            logged,
        )
        return logged
    paid = settled is CheckoutState.COMPLETE
    moved = conn.execute(
        update(SessionRow)
        .where(SessionRow.pk == row.pk, SessionRow.status == CheckoutState.OPEN)
        .values(
            status=settled,
            completed_at=row.order_paid_at if paid else None,
            payment_id=row.order_payment_id if paid else None,
        )
    )
    if moved.rowcount != 1:  # another caller moved it first
        return CheckoutState(
            conn.execute(select(SessionRow.status).where(SessionRow.pk == row.pk)).scalar_one()
        )
    audit.append(
        conn,
        at=now,
        actor="system",
        action=f"checkout.{settled}",
        entity=entity(mid, sid),
        data={
            "status": settled,
            "order_id": row.order_id,
            "order_state": row.order_state,
            # what the row now says of its completion (the audit compares them)
            **(
                {"payment_id": row.order_payment_id, "completed_at": row.order_paid_at}
                if paid
                else {}
            ),
        },
    )
    if paid:
        new_event(
            conn,
            merchant_id=mid,
            type_=EventType.CHECKOUT_SESSION_COMPLETED,
            data={
                "session_id": sid,
                "status": settled,
                "order_id": row.order_id,
                "payment_id": row.order_payment_id,
                "amount_total": row.order_total,
                "currency": row.order_currency,
                "reference": row.order_reference,
                "completed_at": row.order_paid_at,
            },
            now=now,
            webhook=webhooks,
        )
    return settled


def complete_paid(conn: Connection, mid: str, order_id: str, now: int, *, webhooks: bool) -> None:
    """The payment's hook: in the transaction that paid order ``order_id`` (a checkout order,
    :data:`ORDER_PREFIX`), complete its session (if it has one) with the payment."""
    row = conn.execute(
        joined().where(SessionRow.merchant_id == mid, SessionRow.order_id == order_id)
    ).one_or_none()
    if row is not None:
        settle(conn, row, now, webhooks=webhooks)


__all__ = [
    "ORDER_PREFIX",
    "SETTLED",
    "complete_paid",
    "entity",
    "joined",
    "logged_status",
    "settle",
]
