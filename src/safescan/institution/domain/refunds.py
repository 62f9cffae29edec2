"""Refunds: all or part of a paid order back to its payer, never more than was paid."""

from __future__ import annotations

from sqlalchemy import Connection, case, insert, select, update

from safescan.api.errors import OrderNotRefundable
from safescan.api.states import REFUNDABLE_STATES, EventType, OrderState
from safescan.code.currency import currency as lookup_currency
from safescan.institution import audit, guards, ledger, wire
from safescan.institution.domain import idempotency
from safescan.institution.domain.core import Core
from safescan.institution.domain.idempotency import Stored, refund_request
from safescan.institution.domain.orders import order_row
from safescan.institution.domain.results import RefundMade, RefundView
from safescan.institution.models import OrderRow, Payment, Refund
from safescan.institution.settlement import day_bounds
from safescan.institution.util import new_id
from safescan.institution.webhooks import new_event


def _answer(made: RefundMade) -> Stored:
    return Stored(wire.CREATED, wire.refund_made(made))


class Refunds:
    """Refunds of paid orders around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def refund(
        self,
        mid: str,
        order_id: str,
        *,
        amount: int | None,
        reason: str | None,
        idempotency_key: str | None,
    ) -> RefundMade | Stored:
        """Refund all (``amount`` None) or part of a paid order; never more than was paid.
        With an ``idempotency_key`` the answer recorded for it (:class:`Stored`, built once; a
        retry gets the first answer)."""
        amount = None if amount is None else guards.amount(amount)
        reason = guards.optional_text(reason, param="reason", max_chars=200)
        req = refund_request(mid, idempotency_key, order_id, amount, reason)
        now = self.core.now()
        refund_id = new_id("re_", 16)

        def tx(conn: Connection) -> RefundMade:
            o = order_row(conn, mid, order_id)
            if o.state not in REFUNDABLE_STATES:
                raise OrderNotRefundable(
                    f"the order is {o.state}; nothing to refund", param="order_id"
                )
            amt = o.paid_amount - o.refunded_amount if amount is None else amount
            row = conn.execute(
                update(OrderRow)
                .where(
                    OrderRow.pk == o.pk,
                    OrderRow.state.in_((OrderState.PAID, OrderState.PARTIALLY_REFUNDED)),
                    OrderRow.refunded_amount + amt <= OrderRow.paid_amount,
                )
                .values(
                    refunded_amount=OrderRow.refunded_amount + amt,
                    state=case(
                        (
                            OrderRow.refunded_amount + amt == OrderRow.paid_amount,
                            OrderState.REFUNDED,
                        ),
                        else_=OrderState.PARTIALLY_REFUNDED,
                    ),
                )
                .returning(OrderRow.state, OrderRow.refunded_amount, OrderRow.paid_amount)
            ).first()
            if row is None:
                cur = lookup_currency(o.currency)
                left = cur.format(o.paid_amount - o.refunded_amount)
                raise OrderNotRefundable(
                    f"the refund of {cur.format(amt)} exceeds the {left} left to refund",
                    param="amount",
                )
            p = conn.execute(
                select(Payment.id, Payment.customer_id, Payment.currency).where(
                    Payment.order_pk == o.pk
                )
            ).one()
            cust = ledger.ensure_account(conn, ledger.CUSTOMER, p.customer_id, p.currency, now)
            merch = ledger.ensure_account(conn, ledger.MERCHANT, mid, p.currency, now)
            ledger.post_transfer(
                conn,
                debit=merch,
                credit=cust,
                amount=amt,
                currency=p.currency,
                kind="refund",
                ref=refund_id,
                now=now,
                checked=frozenset({cust}),
            )
            conn.execute(
                insert(Refund).values(
                    id=refund_id,
                    payment_id=p.id,
                    order_pk=o.pk,
                    merchant_id=mid,
                    amount=amt,
                    currency=p.currency,
                    reason=reason,
                    created_at=now,
                )
            )
            data = {
                "refund_id": refund_id,
                "payment_id": p.id,
                "order_id": order_id,
                "amount": amt,
                "currency": p.currency,
                "order_state": row.state,
                "refunded_amount": row.refunded_amount,
            }
            new_event(
                conn,
                merchant_id=mid,
                type_=EventType.REFUND_SUCCEEDED,
                data=data,
                now=now,
                webhook=self.core.webhooks_enabled,
            )
            audit.append(
                conn,
                at=now,
                actor=f"merchant:{mid}",
                action="refund.create",
                entity=f"order:{mid}:{order_id}",
                data=data | {"reason": reason},
            )
            return RefundMade(
                refund_id=refund_id,
                payment_id=p.id,
                order_id=order_id,
                amount=amt,
                currency=p.currency,
                order_state=OrderState(row.state),
                refunded_amount=row.refunded_amount,
                created_at=now,
            )

        return idempotency.execute(self.core.db, req, now, tx, record=_answer)

    def listed(
        self, mid: str, *, day: str | None = None, order_id: str | None = None, limit: int = 5000
    ) -> tuple[RefundView, ...]:
        """The merchant's refunds made on one UTC ``day`` (YYYY-MM-DD) and/or of one order,
        oldest first (at most ``limit``)."""
        q = (
            select(
                Refund.id,
                Refund.payment_id,
                OrderRow.order_id,
                Refund.amount,
                Refund.currency,
                Refund.reason,
                Refund.created_at,
            )
            .join(OrderRow, OrderRow.pk == Refund.order_pk)
            .where(Refund.merchant_id == mid, OrderRow.merchant_id == mid)
        )
        if day is not None:
            start, end = day_bounds(day)
            q = q.where(Refund.created_at >= start, Refund.created_at < end)
        if order_id is not None:
            q = q.where(OrderRow.order_id == order_id)
        q = q.order_by(Refund.created_at, Refund.id).limit(limit)
        return self.core.db.read(
            lambda conn: tuple(RefundView(*row) for row in conn.execute(q).all())
        )


__all__ = ["Refunds"]
