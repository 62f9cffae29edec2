"""The web POS's orders across restarts and terminals: restored from the journal on start,
reconciled with the institution (the source of truth), kept current by its event stream.

* :func:`restore` shows again the orders this terminal made (their code and checkout token
  are in the journal), so a page open across a restart reconnects to the same order;
* :func:`reconcile` pages through the institution's ``GET /v1/merchant/orders`` and stores
  every order in the journal: the ones this terminal made get their current state (a payment
  made while the POS was down shows as paid once its signed receipt verifies), the ones other
  terminals of the merchant made are added, so every terminal lists the same orders;
* :func:`handle_event` applies one verified event (for any of the merchant's orders).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

from safescan.api.states import OrderState, later_order_state
from safescan.client.answers import OrderView as InstitutionOrder
from safescan.client.event_data import PaymentSucceeded, RefundSucceeded
from safescan.client.events import VerifiedEvent
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.merchant.client import receipt_summary
from safescan.merchant.input import refund_amount, refund_reason
from safescan.merchant.webparts import REFUND_OFFER_SECONDS, OrderView, PosState, RefundOffer
from safescan.merchant.websec import PosRequestRefused

log = logging.getLogger("safescan.merchant.web")

RESTORE_SECONDS = 2 * 86400  # orders made here in the last two days are shown again
PAGE = 100
FINAL = ("REFUNDED", "CLOSED", "EXPIRED")


def restore(state: PosState) -> int:
    """Load the orders this terminal made lately from the journal; how many."""
    count = 0
    for stored in state.journal.made_here(int(time.time()) - RESTORE_SECONDS):
        row = stored.row
        v = OrderView(
            stored.order,
            stored.checkout,
            state=str(row.get("state") or "CREATED"),
            receipt=row.get("receipt"),
            refunded=int(row.get("refunded") or 0),
        )
        state.orders[stored.order.order_id] = v
        state.checkouts[stored.checkout] = stored.order.order_id
        count += 1
    return count


async def mark_paid(state: PosState, v: OrderView, payment_id: str) -> None:
    """Show ``v`` as paid once the payment's signed receipt verifies and matches it."""
    try:
        receipt = await asyncio.to_thread(state.api.payments.verified_receipt, payment_id, v.order)
    except SafescanError as exc:
        log.warning("payment %s refused: %s", payment_id, exc.message)
        v.message = f"a payment notice was refused: {exc.message}"
        state.publish(v)
        return
    if v.receipt is None:
        v.state = "PAID" if v.state == "CREATED" else v.state
        v.receipt, v.message = receipt_summary(receipt), ""
    await asyncio.to_thread(
        state.journal.update,
        v.order.order_id,
        {"state": v.state, **v.receipt, "paid_amount": receipt.amount, "receipt": v.receipt},
    )
    state.publish(v)


async def apply(state: PosState, order: InstitutionOrder) -> None:
    """Store what the institution says about one order; update a shown order's page."""
    await asyncio.to_thread(state.journal.refresh_from, order)
    v = state.orders.get(order.order_id)
    if v is None:
        return
    if order.payment_id and v.receipt is None:
        await mark_paid(state, v, order.payment_id)
    new_state = str(order.state)
    if v.receipt is None and new_state not in ("CREATED", "CLOSED", "EXPIRED"):
        return  # never shown as paid before the receipt verifies
    if advance(v, new_state, order.refunded_amount):
        state.publish(v)


def advance(v: OrderView, seen_state: str, seen_refunded: int) -> bool:
    """Move a shown order forward to what the institution said, never back (as the journal:
    :func:`~safescan.api.states.later_order_state`, the refunded amount only up); whether
    anything changed. What it says arrives by ways that race (a refund's answer, the event
    stream, the order list): an older snapshot applied after a newer one changes nothing."""
    new = (later_order_state(v.state, seen_state), max(v.refunded, seen_refunded))
    if new == (v.state, v.refunded):
        return False
    v.state, v.refunded = new
    return True


async def reconcile(state: PosState, *, pages: int = 10) -> int:
    """Page through the institution's orders (newest first, ``pages`` pages of 100 at most);
    returns how many it stored."""
    after: str | None = None
    seen = 0
    for _ in range(pages):
        page = await asyncio.to_thread(state.api.orders.list, PAGE, after)
        for order in page.orders:
            await apply(state, order)
        seen += len(page.orders)
        if not page.has_more or not page.orders:
            break
        after = page.orders[-1].order_id
    state.reconciled_at = time.time()
    return seen


async def handle_event(state: PosState, event: VerifiedEvent) -> None:
    """Apply one verified event of the merchant's stream (its typed ``payload``)."""
    payload = event.payload
    if isinstance(payload, PaymentSucceeded | RefundSucceeded):
        v = state.orders.get(payload.order_id)
        if v is not None:
            await _apply_shown(state, v, payload)
            return
    order_id = event.data.get("order_id")
    if event.type.startswith(("payment.", "refund.", "order.")) and order_id is not None:
        # an order of another terminal (or a state change): ask the institution
        await apply(state, await asyncio.to_thread(state.api.orders.get, str(order_id)))


async def _apply_shown(
    state: PosState, v: OrderView, payload: PaymentSucceeded | RefundSucceeded
) -> None:
    if isinstance(payload, PaymentSucceeded):
        if v.receipt is None:
            await mark_paid(state, v, payload.payment_id)
        return
    await asyncio.to_thread(
        state.journal.update,
        payload.order_id,
        {"state": str(payload.order_state), "refunded_amount": payload.refunded_amount},
    )
    if advance(v, str(payload.order_state), payload.refunded_amount):
        state.publish(v)


async def preview_refund(
    state: PosState, order_id: str, doc: dict[str, Any], sid: str, user: str
) -> dict[str, Any]:
    """Check a refund request ``{amount, reason}`` against the order as the institution has
    it now (whichever terminal made it) and offer a single-use confirmation for it."""
    if set(doc) - {"amount", "reason"}:
        raise PosRequestRefused("a refund is {amount, reason}")
    now = await asyncio.to_thread(state.api.orders.get, order_id)
    await apply(state, now)
    paid = now.paid_amount
    left = paid - now.refunded_amount
    if now.state not in (OrderState.PAID, OrderState.PARTIALLY_REFUNDED) or left <= 0:
        raise PosRequestRefused(f"the order is {now.state}: nothing to refund")
    amount = left if doc.get("amount") is None else refund_amount(doc["amount"], left=left)
    reason = refund_reason(doc.get("reason") or None)
    at = time.monotonic()
    for key in [k for k, o in state.offers.items() if o.expires < at]:
        del state.offers[key]
    confirmation = "rfc_" + secrets.token_urlsafe(18)
    state.offers[confirmation] = RefundOffer(
        order_id, amount, reason, sid, at + REFUND_OFFER_SECONDS, user
    )
    cur = lookup_currency(now.currency)
    return {
        "confirmation": confirmation,
        "order_id": order_id,
        "amount": amount,
        "amount_display": cur.format(amount),
        "refundable_display": cur.format(left),
        "paid_display": cur.format(paid),
        "reason": reason,
        "expires_in": REFUND_OFFER_SECONDS,
    }


async def confirm_refund(state: PosState, order_id: str, token: object, sid: str) -> None:
    """Make the refund a confirmation offered (once; only in the session it was offered to,
    for that order, within two minutes). The institution refuses more than is left."""
    offer = state.offers.pop(token, None) if isinstance(token, str) else None
    if (
        offer is None
        or offer.sid != sid
        or offer.order_id != order_id
        or offer.expires < time.monotonic()
    ):
        raise PosRequestRefused("confirm a refund previewed in this session (it lasts two minutes)")
    out = await asyncio.to_thread(
        state.api.refunds.create,
        order_id,
        offer.amount,
        reason=offer.reason,
        idempotency_key=str(token),
    )
    await asyncio.to_thread(state.journal.add_refund, out, reason=offer.reason, staff=offer.user)
    v = state.orders.get(order_id)
    if v is not None and advance(v, str(out.order_state), out.refunded_amount):
        state.publish(v)
