"""Status lookups: what happened to a request whose answer a client lost (timeout, connection
cut), and the certainty that it will not happen later.

A client that sent a request and got no answer does not know whether it was done. It sends the
*same* request to the lookup twin of its endpoint, with the same Idempotency-Key:

* ``POST /v1/payments/lookup`` (the wallet; authenticated by the carrier: the authorization's
  signature must verify under the carrier's registered key, revoked or not);
* ``POST /v1/merchant/orders/lookup``, ``POST /v1/merchant/orders/{id}/refunds/lookup``,
  ``POST /v1/checkout/sessions/lookup``, ``POST /v1/merchant/api-keys/lookup`` and ``POST
  /v1/merchant/api-keys/{id}/rotate/lookup`` (the merchant; the key is required).

The lookup never does the request. It answers ``{"outcome": "succeeded", <what>: the answer}``,
``{"outcome": "refused", "error": ...}``, or ``{"outcome": "not_processed"}``, or ``409
request_in_progress`` while the request is still running. ``not_processed`` is certain: the
lookup stores "withdrawn" as the key's answer in the same transaction (so the request, should it
still arrive, does nothing), and for a payment it also moves the carrier's counter to the
authorization's, so that the authorization can never be paid, whatever key it comes with.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select

from safescan.api.errors import CarrierRevoked, InvalidRequest
from safescan.code.authorization import Authorization
from safescan.code.keys import VerifyKey
from safescan.code.payment import LineItem
from safescan.institution import audit, guards, sql, wire
from safescan.institution.domain import idempotency
from safescan.institution.domain.checkout import with_page_url
from safescan.institution.domain.idempotency import (
    Request,
    Stored,
    api_key_request,
    checkout_request,
    order_request,
    payment_request,
    refund_request,
)
from safescan.institution.domain.results import PaymentMade
from safescan.institution.models import CarrierRow, OrderRow, Payment

if TYPE_CHECKING:
    from safescan.institution.service import Institution

_LOOKUP_WAIT = "1s"  # PostgreSQL: how long a lookup waits for a request it must see finish
WITHDRAW_ACTION = "payment.withdrawn"  # audit log: a lookup fenced a carrier's counter
_FENCE = (
    "UPDATE carriers SET last_counter = :counter WHERE serial = :serial AND last_counter < :counter"
)


def _bounded_waits(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        sql.run(conn, f"SET LOCAL lock_timeout = '{_LOOKUP_WAIT}'", {})


def _payment_answer(conn: Connection, auth: Authorization) -> Stored | None:
    """The answer of the payment this authorization made, if it made one."""
    row = conn.execute(
        select(Payment, OrderRow.order_id)
        .join(OrderRow, OrderRow.pk == Payment.order_pk)
        .where(Payment.carrier_serial == auth.carrier_serial, Payment.counter == auth.counter)
    ).first()
    if row is None:
        return None
    p = row
    made = PaymentMade(
        payment_id=p.id,
        order_id=row.order_id,
        merchant_id=p.merchant_id,
        amount=p.amount,
        currency=p.currency,
        payer_pseudonym=p.payer_pseudonym,
        paid_at=p.created_at,
        receipt=bytes(p.receipt),
    )
    return Stored(wire.CREATED, wire.payment_made(made))  # the answer the payment was given


def _carrier_key(inst: Institution, serial: int) -> VerifyKey:
    """The carrier's registered signing key (a revoked carrier may still look up)."""
    row = inst.db.read(
        lambda c: c.execute(
            select(CarrierRow.signing_public_key).where(CarrierRow.serial == serial)
        ).first()
    )
    if row is None:
        raise CarrierRevoked(f"key carrier {serial} is not registered here")
    return VerifyKey(row.signing_public_key)


def lookup_payment(
    inst: Institution, code_text: str, authorization: bytes, key: str | None
) -> dict[str, Any]:
    """What a payment request (the code and the carrier's authorization) did; settles it:
    after a ``not_processed`` answer this authorization can never be paid."""
    auth = Authorization.from_bytes(authorization)
    auth.verify(_carrier_key(inst, auth.carrier_serial))
    req = payment_request(auth.carrier_serial, code_text, authorization, key)
    now = inst.now()

    def tx(conn: Connection) -> dict[str, Any]:
        _bounded_waits(conn)
        stored = idempotency.settle(conn, req, now) if req is not None else None
        if stored is not None:  # the key has its answer
            return idempotency.outcome(stored, "payment")
        _bounded_waits(conn)  # (the claim reset the lock wait) also for the carrier's row
        # no answer under this key (now withdrawn): did the authorization pay anyway (with
        # another key or none)? Then that payment is this request's answer too.
        paid = _payment_answer(conn, auth)
        if paid is None:
            fenced = sql.run(
                conn, _FENCE, {"counter": auth.counter, "serial": auth.carrier_serial}
            ).rowcount
            if fenced != 1:  # the counter was already there: look again after the lock
                paid = _payment_answer(conn, auth)
            else:  # logged, so that the audit knows why the counter moved without a payment
                audit.append(
                    conn,
                    at=now,
                    actor=f"carrier:{auth.carrier_serial}",
                    action=WITHDRAW_ACTION,
                    entity=f"carrier:{auth.carrier_serial}",
                    data={"carrier_serial": auth.carrier_serial, "counter": auth.counter},
                )
        if paid is not None and req is not None:  # dated as the payment (not this lookup)
            idempotency.complete(conn, req, paid, at=int(paid.body["paid_at"]))
        return idempotency.outcome(paid, "payment")

    return inst.db.write(tx)


def _settle_merchant(inst: Institution, req: Request | None, what: str) -> dict[str, Any]:
    if req is None:
        raise InvalidRequest(
            "a lookup needs the Idempotency-Key of the request it asks about",
            param="Idempotency-Key",
        )
    now = inst.now()

    def tx(conn: Connection) -> dict[str, Any]:
        _bounded_waits(conn)
        return idempotency.outcome(idempotency.settle(conn, req, now), what)

    return inst.db.write(tx)


def lookup_order(
    inst: Institution,
    mid: str,
    key: str | None,
    *,
    items: Sequence[LineItem],
    currency: int,
    expires_in: int,
    reference: str | None,
) -> dict[str, Any]:
    """What an order creation did; settles it (``not_processed``: it never will)."""
    # the same normalisation as the order creation, so that the same request has the same hash
    items = guards.items(items)
    reference = guards.optional_text(reference, param="reference")
    return _settle_merchant(
        inst, order_request(mid, key, items, currency, expires_in, reference), "order"
    )


def lookup_refund(
    inst: Institution,
    mid: str,
    order_id: str,
    key: str | None,
    *,
    amount: int | None,
    reason: str | None,
) -> dict[str, Any]:
    """What a refund request did; settles it (``not_processed``: it never will)."""
    amount = None if amount is None else guards.amount(amount)  # as the refund does
    reason = guards.optional_text(reason, param="reason", max_chars=200)
    return _settle_merchant(inst, refund_request(mid, key, order_id, amount, reason), "refund")


def lookup_checkout(
    inst: Institution,
    mid: str,
    key: str | None,
    *,
    items: Sequence[LineItem],
    currency: str | int,
    success_url: str,
    cancel_url: str,
    expires_in: int,
    reference: str | None,
    page_url: Callable[[str], str] | None = None,
) -> dict[str, Any]:
    """What a checkout session creation did; settles it (``not_processed``: it never will).
    A session made is answered with its hosted link made now by ``page_url``
    (:func:`.domain.checkout.with_page_url`), like a retry of the creation."""
    req = checkout_request(
        mid,
        key,
        guards.items(items),  # as the creation does
        currency,
        success_url,
        cancel_url,
        expires_in,
        reference,
    )
    found = _settle_merchant(inst, req, "checkout_session")
    made = found.get("checkout_session")
    if isinstance(made, dict):
        stored = with_page_url(Stored(int(found["status"]), made), page_url)
        found = {**found, "checkout_session": stored.body}
    return found


def lookup_api_key(
    inst: Institution, actor: str, mid: str, key: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    """What an API key creation or rotation did (``refused`` with ``api_key_already_created``
    naming the key when it was done: the secret is not kept); settles it."""
    return _settle_merchant(inst, api_key_request(actor, mid, key, body), "api_key")


__all__ = [
    "WITHDRAW_ACTION",
    "lookup_api_key",
    "lookup_checkout",
    "lookup_order",
    "lookup_payment",
    "lookup_refund",
]
