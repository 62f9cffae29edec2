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
exactly one move, one audit entry, one event however many callers race;
:mod:`.checkout_settle`). A paid session completes in its payment's transaction; the rest
(expiry, cancellation, sessions made before the pay path completed them) settle whenever a
session is read (the merchant's GET, the hosted page and its live stream) and in the
maintenance sweep (:meth:`Checkout.sweep`). A session is settled once: one whose row was set
back to ``open`` although the audit log settled it is not closed again (its logged status is
reported, the row left for ``safescan institution audit``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, literal, or_, select, text

from safescan.api.errors import Conflict, InvalidRequest, UnknownCheckoutSession
from safescan.api.states import CheckoutState, OrderState
from safescan.code.currency import currency as lookup_currency
from safescan.code.payment import LineItem
from safescan.institution import audit, guards, wire
from safescan.institution.domain import idempotency
from safescan.institution.domain.checkout_settle import ORDER_PREFIX, joined, settle
from safescan.institution.domain.checkout_urls import redirect_url
from safescan.institution.domain.core import Core
from safescan.institution.domain.idempotency import Stored, checkout_request
from safescan.institution.domain.merchants import Merchants
from safescan.institution.domain.orders import Orders
from safescan.institution.domain.results import CheckoutSessionView, HostedCheckout, OrderCreated
from safescan.institution.models import CHECKOUT_SETTLES_WHERE, AuditEntry, OrderRow
from safescan.institution.models import CheckoutSession as SessionRow
from safescan.institution.util import new_id

SESSION_PREFIX = "cs_"
SESSION_ID_CHARS = 26  # 130 random bits: the hosted page's URL is its only key
MIN_EXPIRY = 10  # a shop under test may want a short one
MAX_EXPIRY = 24 * 3600
DEFAULT_EXPIRY = 30 * 60
#: a session's audit entity (:func:`.checkout_settle.entity`) in SQL
_ENTITY = literal("checkout:") + SessionRow.merchant_id + ":" + SessionRow.id


def _session_id() -> str:
    return new_id(SESSION_PREFIX, SESSION_ID_CHARS)


def _is_session_id(value: object) -> bool:
    return (
        isinstance(value, str)
        and value.startswith(SESSION_PREFIX)
        and len(value) == len(SESSION_PREFIX) + SESSION_ID_CHARS
        and value[len(SESSION_PREFIX) :].isalnum()
        and value.isascii()
    )


def with_page_url(stored: Stored, page_url: Callable[[str], str] | None) -> Stored:
    """A recorded session answer with its hosted page's link made now, by ``page_url`` (the
    operator's ``[server] public_url`` or the connection's own address), every other field
    as recorded. The link is not part of what the key's request did (the session, its order,
    its amounts): it is where this institution serves the session's page today. Answers
    recorded before the link stopped coming from the request's ``Host`` header (21fc511)
    hold whatever host that first request named (redteam: a retry replayed
    ``http://evil.example/checkout/cs_...``); a ``public_url`` set or changed since must
    reach retries too. Anything but a recorded session (a refusal) is returned as it is."""
    body = stored.body
    if (
        page_url is None
        or stored.status >= 400
        or body.get("object") != "checkout.session"
        or not _is_session_id(body.get("id"))
    ):
        return stored
    return Stored(stored.status, {**body, "url": page_url(str(body["id"]))})


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
        idempotency_key: str | None = None,
        page_url: Callable[[str], str] | None = None,
    ) -> CheckoutSessionView | Stored:
        """A new open session and its order (one transaction); the URLs are checked
        (:func:`.checkout_urls.redirect_url`) before anything is written. With an
        ``idempotency_key`` the answer recorded for it (:class:`Stored`: the session as made,
        its hosted page ``page_url(session id)``; a retry gets this first answer, another
        request under the key ``idempotency_conflict``; the retry's link is made again,
        :func:`with_page_url`)."""
        if isinstance(expires_in, bool) or not MIN_EXPIRY <= expires_in <= MAX_EXPIRY:
            raise InvalidRequest(
                f"expires_in must be {MIN_EXPIRY}-{MAX_EXPIRY} seconds", param="expires_in"
            )
        lines = guards.items(items)
        req = checkout_request(
            mid,
            idempotency_key,
            lines,
            currency_code,
            success_url,
            cancel_url,
            expires_in,
            reference,
        )
        stored = idempotency.recorded(self.core.db, req)
        if stored is not None:  # a retry: nothing made again
            return with_page_url(stored, page_url)
        sid = _session_id()
        success = redirect_url(success_url, param="success_url", session_id=sid)
        cancel = redirect_url(cancel_url, param="cancel_url", session_id=sid)
        now = self.core.now()

        def answer(order: OrderCreated) -> Stored:
            view = CheckoutSessionView(
                id=sid,
                merchant_id=mid,
                order_id=order.order_id,
                status=CheckoutState.OPEN,
                order_state=OrderState.CREATED,
                currency=order.currency,
                total=order.total,
                items=tuple(lines),
                reference=order.reference,
                success_url=success,
                cancel_url=cancel,
                created_at=now,
                expires_at=order.expires_at,
                completed_at=None,
                payment_id=None,
                code=order.code,
            )
            url = page_url(sid) if page_url is not None else ""
            return Stored(wire.CREATED, wire.checkout_session(view, url))

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
            items=lines,
            currency_code=currency_code,
            expires_in=expires_in,
            reference=reference,
            idempotency_key=None,
            also=record,
            keyed=None if req is None else (req, answer),
            id_prefix=ORDER_PREFIX,
            now=now,  # one clock read: the session's and its order's created_at are equal
        )
        if isinstance(made, Stored):  # keyed: the answer recorded for the key
            return with_page_url(made, page_url)
        return self._read(sid, mid)

    def _read(self, sid: str, mid: str | None) -> CheckoutSessionView:
        def q(conn: Connection) -> Any:
            stmt = joined().where(SessionRow.id == sid)
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
            status = self.settle(sid)
            view = self._read(sid, mid)
            if view.status is CheckoutState.OPEN and status is not CheckoutState.OPEN:
                view = replace(view, status=status)  # set back in the database: the log's
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
            status = self.settle(sid)  # paid or expired meanwhile: the session says which
            raise Conflict(f"the checkout session is {status}", param="session_id") from None
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
        row = conn.execute(joined().where(SessionRow.id == sid)).one()
        return settle(conn, row, self.core.now(), webhooks=self.core.webhooks_enabled)

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
                        # not one the audit log settled already (set back: left for the audit)
                        ~exists(
                            select(AuditEntry.id).where(
                                AuditEntry.entity == _ENTITY,
                                text(CHECKOUT_SETTLES_WHERE),
                            )
                        ),
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
