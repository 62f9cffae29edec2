"""Checkout sessions: a web shop's hosted checkout (docs/checkout.md).

A session is one institution-issued order (:class:`~.orders.Orders`, created in the same
transaction) shown on the institution's checkout page, with where the customer's browser goes
after paying (``success_url``) or giving up (``cancel_url``). Its status follows its order, the
one source of truth (the order alone is paid, expired or closed, atomically, by the pay path and
the order sweep)::

    open --(order paid)-----------------> complete   + event checkout.session.completed
    open --(order expired)--------------> expired
    open --(merchant cancels: order closed)--> canceled

:meth:`Checkout.settle` moves a session after its order (conditional UPDATE from ``open``:
exactly one move, one audit entry, one event however many callers race); it runs whenever a
session is read (the merchant's GET, the hosted page and its live stream) and in the
maintenance sweep (:meth:`Checkout.sweep`), so a session whose page was closed completes too.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, and_, insert, or_, select, update

from safescan.api.errors import Conflict, InvalidRequest, UnknownCheckoutSession
from safescan.api.states import CheckoutState, EventType, OrderState
from safescan.code.currency import currency as lookup_currency
from safescan.code.payment import LineItem
from safescan.institution import audit
from safescan.institution.domain.checkout_urls import redirect_url
from safescan.institution.domain.core import Core
from safescan.institution.domain.idempotency import Stored
from safescan.institution.domain.merchants import Merchants
from safescan.institution.domain.orders import Orders
from safescan.institution.domain.results import CheckoutSessionView, HostedCheckout, OrderCreated
from safescan.institution.models import CheckoutSession as SessionRow
from safescan.institution.models import OrderRow
from safescan.institution.util import new_id
from safescan.institution.webhooks import new_event

SESSION_PREFIX = "cs_"
SESSION_ID_CHARS = 26  # 130 random bits: the hosted page's URL is its only key
MIN_EXPIRY = 10  # a shop under test may want a short one
MAX_EXPIRY = 24 * 3600
DEFAULT_EXPIRY = 30 * 60
#: the session status an order's state settles it in (CREATED: still open)
SETTLED = {
    OrderState.PAID: CheckoutState.COMPLETE,
    OrderState.PARTIALLY_REFUNDED: CheckoutState.COMPLETE,
    OrderState.REFUNDED: CheckoutState.COMPLETE,
    OrderState.EXPIRED: CheckoutState.EXPIRED,
    OrderState.CLOSED: CheckoutState.CANCELED,
}


def _session_id() -> str:
    return new_id(SESSION_PREFIX, SESSION_ID_CHARS)


def _joined() -> Any:
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


def _view(r: Any) -> CheckoutSessionView:
    return CheckoutSessionView(
        id=r.id,
        merchant_id=r.merchant_id,
        order_id=r.order_id,
        status=CheckoutState(r.status),
        order_state=OrderState(r.order_state),
        currency=r.order_currency,
        total=r.order_total,
        items=tuple(LineItem(*line) for line in json.loads(r.order_items)),
        reference=r.order_reference,
        success_url=r.success_url,
        cancel_url=r.cancel_url,
        created_at=r.created_at,
        expires_at=r.expires_at,
        completed_at=r.completed_at,
        payment_id=r.payment_id,
        code=r.code,
    )


class Checkout:
    """Checkout sessions around the :class:`Core`, over :class:`Orders` (each session's order)
    and :class:`Merchants` (the name the page shows)."""

    def __init__(self, core: Core, orders: Orders, merchants: Merchants) -> None:
        self.core = core
        self.orders = orders
        self.merchants = merchants

    def create(
        self,
        mid: str,
        *,
        items: Sequence[LineItem],
        currency_code: str | int,
        success_url: str,
        cancel_url: str,
        expires_in: int = DEFAULT_EXPIRY,
        reference: str | None = None,
    ) -> CheckoutSessionView:
        """A new open session and its order (one transaction); the URLs are checked
        (:func:`.checkout_urls.redirect_url`) before anything is written."""
        if isinstance(expires_in, bool) or not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
            raise InvalidRequest(
                f"expires_in must be {MIN_EXPIRY}-{MAX_EXPIRY} seconds", param="expires_in"
            )
        sid = _session_id()
        success = redirect_url(success_url, param="success_url", session_id=sid)
        cancel = redirect_url(cancel_url, param="cancel_url", session_id=sid)
        now = self.core.now()

        def record(conn: Connection, order: OrderCreated) -> None:
            conn.execute(
                insert(SessionRow).values(
                    id=sid,
                    merchant_id=mid,
                    order_id=order.order_id,
                    status=CheckoutState.OPEN,
                    success_url=success,
                    cancel_url=cancel,
                    code=order.code,
                    created_at=now,
                    expires_at=order.expires_at,
                )
            )
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="checkout.create",
                entity=f"checkout:{mid}:{sid}",
                data={
                    "order_id": order.order_id,
                    "success_url": success,
                    "cancel_url": cancel,
                    "expires_at": order.expires_at,
                },
            )

        made = self.orders.create(
            mid,
            items=items,
            currency_code=currency_code,
            expires_in=expires_in,
            reference=reference,
            idempotency_key=None,
            also=record,
        )
        assert not isinstance(made, Stored)  # no Idempotency-Key: always a new order
        return self._read(sid, mid)

    def _read(self, sid: str, mid: str | None) -> CheckoutSessionView:
        def q(conn: Connection) -> Any:
            stmt = _joined().where(SessionRow.id == sid)
            if mid is not None:
                stmt = stmt.where(SessionRow.merchant_id == mid)
            return conn.execute(stmt).one_or_none()

        row = self.core.db.read(q)
        if row is None:
            # another merchant's session is as unknown as a made-up id
            raise UnknownCheckoutSession(f"no checkout session {sid}", param="session_id")
        return _view(row)

    def get(self, mid: str | None, sid: str) -> CheckoutSessionView:
        """A session (``mid``: only that merchant's; None: anyone holding its id, the hosted
        page), settled after its order first."""
        view = self._read(sid, mid)
        if view.status is CheckoutState.OPEN and self._due(view):
            self.settle(sid)
            view = self._read(sid, mid)
        return view

    def _due(self, view: CheckoutSessionView) -> bool:
        """Whether an open session's order moved or expired (it is to be settled)."""
        return view.order_state is not OrderState.CREATED or self.core.now() >= view.expires_at

    def hosted(self, sid: str) -> HostedCheckout:
        """What the hosted page shows of session ``sid`` (settled first)."""
        view = self.get(None, sid)
        profile = self.merchants.get(view.merchant_id)
        cur = lookup_currency(view.currency)
        return HostedCheckout(
            session=view,
            merchant_name=profile.name,
            merchant_city=profile.city,
            currency_code=cur.alpha,
            total_display=cur.format(view.total),
            now=self.core.now(),
        )

    def cancel(self, mid: str, sid: str) -> CheckoutSessionView:
        """Cancel an open session: its order is closed (its code can no longer be paid).
        :class:`Conflict` when the session is no longer open (paid, expired or canceled)."""
        view = self.get(mid, sid)
        if view.status is not CheckoutState.OPEN:
            raise Conflict(f"the checkout session is {view.status}", param="session_id")
        try:
            self.orders.close(mid, view.order_id)
        except Conflict:
            self.settle(sid)  # paid or expired meanwhile: the session says which
            view = self._read(sid, mid)
            raise Conflict(f"the checkout session is {view.status}", param="session_id") from None
        self.settle(sid)
        return self._read(sid, mid)

    def settle(self, sid: str) -> CheckoutState:
        """Move an open session after its order (see the module's state machine); the status
        it has afterwards. An unpaid order past its expiry is expired first."""
        view = self._read(sid, None)
        if view.status is not CheckoutState.OPEN:
            return view.status
        if self.core.now() >= view.expires_at:
            self.orders.expire(only=(view.merchant_id, view.order_id))
        return self.core.db.write(lambda conn: self._settle_tx(conn, sid))

    def _settle_tx(self, conn: Connection, sid: str) -> CheckoutState:
        row = conn.execute(_joined().where(SessionRow.id == sid)).one()
        status = CheckoutState(row.status)
        settled = SETTLED.get(OrderState(row.order_state))
        if status is not CheckoutState.OPEN or settled is None:
            return status
        now = self.core.now()
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
        mid = row.merchant_id
        audit.append(
            conn,
            at=now,
            actor="system",
            action=f"checkout.{settled}",
            entity=f"checkout:{mid}:{sid}",
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
                webhook=self.core.webhooks_enabled,
            )
        return settled

    def sweep(self, limit: int = 200) -> int:
        """Settle open sessions whose orders moved or expired (the maintenance loop's round);
        how many moved."""
        now = self.core.now()
        due = self.core.db.read(
            lambda c: (
                c.execute(
                    select(SessionRow.id)
                    .join(
                        OrderRow,
                        and_(
                            OrderRow.merchant_id == SessionRow.merchant_id,
                            OrderRow.order_id == SessionRow.order_id,
                        ),
                    )
                    .where(
                        SessionRow.status == CheckoutState.OPEN,
                        or_(OrderRow.state != OrderState.CREATED, SessionRow.expires_at <= now),
                    )
                    .limit(limit)
                )
                .scalars()
                .all()
            )
        )
        return sum(self.settle(sid) is not CheckoutState.OPEN for sid in due)


__all__ = [
    "DEFAULT_EXPIRY",
    "MAX_EXPIRY",
    "MIN_EXPIRY",
    "Checkout",
    "CheckoutSessionView",
    "HostedCheckout",
]
