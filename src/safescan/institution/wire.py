"""The JSON form of the domain's results (:mod:`.domain.results`), declared once.

The HTTP layer answers with these; the Idempotency-Key records (:mod:`.idempotency`) keep the
same form of the keyed requests' answers, so a retry is answered with the first answer, byte for
byte. Bytes go out as base64, enums as their values; key order is the documented answers'.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safescan.api.encoding import b64e
from safescan.api.states import CheckoutState
from safescan.institution.domain.results import (
    CarrierEnrolled,
    CarrierKeyUpdate,
    CarrierStatus,
    CheckoutSessionView,
    CodeStatus,
    CustomerAccount,
    CustomerList,
    EnrollmentTokenIssued,
    HostedCheckout,
    ManufacturerKeyView,
    MerchantProfile,
    Money,
    NewMerchant,
    OrderCreated,
    OrderPage,
    OrderView,
    PaymentMade,
    PaymentView,
    PrecreatedOrder,
    PublicKeys,
    RefundMade,
    RefundView,
    Statement,
    StaticCodeIssued,
)

#: the status a keyed request's success is answered with, and stored with for its key
#: (every keyed request creates something: an order, a payment, a refund)
CREATED = 201


def merchant(m: MerchantProfile) -> dict[str, Any]:
    """A merchant's profile."""
    return {
        "id": m.id,
        "name": m.name,
        "city": m.city,
        "country": m.country,
        "mcc": m.mcc,
        "settlement_account": m.settlement_account,
        "api_public_key": b64e(m.api_public_key),
        "webhook_url": m.webhook_url,
        "status": m.status,
        "created_at": m.created_at,
    }


def new_merchant(n: NewMerchant) -> dict[str, Any]:
    """An onboarded merchant, with its generated API key seed when there is one."""
    out = merchant(n.merchant)
    if n.api_secret_key is not None:
        out["api_secret_key"] = b64e(n.api_secret_key)
    return out


def customer(c: CustomerAccount) -> dict[str, Any]:
    """A customer with balances and carriers."""
    return {
        "id": c.id,
        "name": c.name,
        "status": c.status,
        "created_at": c.created_at,
        "balances": [{"currency": b.currency, "amount": b.amount} for b in c.balances],
        "carriers": [
            {"serial": k.serial, "status": k.status, "last_counter": k.last_counter}
            for k in c.carriers
        ],
    }


def enrollment_token(t: EnrollmentTokenIssued) -> dict[str, Any]:
    """A new enrollment token."""
    return {"token": t.token, "customer_id": t.customer_id, "expires_at": t.expires_at}


def carrier_enrolled(e: CarrierEnrolled) -> dict[str, Any]:
    """An enrolled carrier's certificate, bundle and first key update."""
    return {
        "carrier_serial": e.carrier_serial,
        "customer_id": e.customer_id,
        "certificate": b64e(e.certificate),
        "bundle": b64e(e.bundle),
        "model": e.model,
        "epoch": e.epoch,
        "key_update": b64e(e.key_update),
    }


def carrier_key_update(u: CarrierKeyUpdate) -> dict[str, Any]:
    """A carrier's key update (``key_update`` null: up to date)."""
    return {
        "carrier_serial": u.carrier_serial,
        "epoch": u.epoch,
        "key_update": None if u.key_update is None else b64e(u.key_update),
    }


def carrier_status(s: CarrierStatus) -> dict[str, Any]:
    """A carrier's status."""
    return {"serial": s.serial, "status": s.status}


def order_created(o: OrderCreated) -> dict[str, Any]:
    """A precreated order with its code."""
    return {
        "order_id": o.order_id,
        "merchant_id": o.merchant_id,
        "state": o.state,
        "total": o.total,
        "currency": o.currency,
        "expires_at": o.expires_at,
        "reference": o.reference,
        "code": o.code,
        "code_bytes": o.code_bytes,
    }


def precreated(o: PrecreatedOrder) -> dict[str, Any]:
    """One order of a bulk precreation."""
    return {"order_id": o.order_id, "code": o.code, "total": o.total, "currency": o.currency}


def static_code(s: StaticCodeIssued) -> dict[str, Any]:
    """A static code."""
    return {
        "merchant_id": s.merchant_id,
        "currency": s.currency,
        "expires_at": s.expires_at,
        "code": s.code,
        "code_bytes": s.code_bytes,
    }


def order(o: OrderView) -> dict[str, Any]:
    """An order (items as ``[name, quantity, unit_price]``)."""
    return {
        "order_id": o.order_id,
        "merchant_id": o.merchant_id,
        "kind": o.kind,
        "state": o.state,
        "reference": o.reference,
        "currency": o.currency,
        "total": o.total,
        "items": [i.to_cbor() for i in o.items],
        "created_at": o.created_at,
        "expires_at": o.expires_at,
        "paid_at": o.paid_at,
        "paid_amount": o.paid_amount,
        "refunded_amount": o.refunded_amount,
        "payment_id": o.payment_id,
    }


def order_page(p: OrderPage) -> dict[str, Any]:
    """A page of orders."""
    return {"orders": [order(o) for o in p.orders], "has_more": p.has_more}


def code_status(s: CodeStatus) -> dict[str, Any]:
    """What a wallet learns of a code."""
    return {
        "state": s.state,
        "merchant_status": s.merchant_status,
        "order_state": s.order_state,
        "expires_at": s.expires_at,
    }


def payment_made(p: PaymentMade) -> dict[str, Any]:
    """A payment's answer (``POST /v1/payments``; a lookup's ``payment``)."""
    return {
        "payment_id": p.payment_id,
        "status": "succeeded",
        "order_id": p.order_id,
        "merchant_id": p.merchant_id,
        "amount": p.amount,
        "currency": p.currency,
        "payer_pseudonym": p.payer_pseudonym,
        "paid_at": p.paid_at,
        "receipt": b64e(p.receipt),
    }


def payment(p: PaymentView) -> dict[str, Any]:
    """A payment as its merchant reads it."""
    return {
        "payment_id": p.payment_id,
        "order_id": p.order_id,
        "order_state": p.order_state,
        "merchant_id": p.merchant_id,
        "amount": p.amount,
        "currency": p.currency,
        "payer_pseudonym": p.payer_pseudonym,
        "paid_at": p.paid_at,
        "receipt": b64e(p.receipt),
    }


def refund_made(r: RefundMade) -> dict[str, Any]:
    """A refund's answer."""
    return {
        "refund_id": r.refund_id,
        "payment_id": r.payment_id,
        "order_id": r.order_id,
        "amount": r.amount,
        "currency": r.currency,
        "order_state": r.order_state,
        "refunded_amount": r.refunded_amount,
        "status": "succeeded",
        "created_at": r.created_at,
    }


def refund_list(refunds: Sequence[RefundView]) -> dict[str, Any]:
    """The merchant's refunds (``GET /v1/merchant/refunds``)."""
    return {
        "refunds": [
            {
                "refund_id": r.refund_id,
                "payment_id": r.payment_id,
                "order_id": r.order_id,
                "amount": r.amount,
                "currency": r.currency,
                "reason": r.reason,
                "created_at": r.created_at,
            }
            for r in refunds
        ]
    }


def public_keys(k: PublicKeys) -> dict[str, Any]:
    """The institution's public keys (``GET /v1/keys``)."""
    return {
        "root_keys": [{"kid": r.kid, "public_key": b64e(r.public_key)} for r in k.root_keys],
        "scheme_keys": [
            {
                "kid": s.kid,
                "public_key": b64e(s.public_key),
                "retire_at": s.retire_at,
                "current": s.current,
                "use": s.use,
                "current_static": s.current_static,
            }
            for s in k.scheme_keys
        ],
        "scheme_key_list": b64e(k.scheme_key_list),
        "epoch": k.epoch,
    }


def money(m: Money) -> dict[str, Any]:
    """``{"currency", "amount", "display"}``."""
    return {"currency": m.currency, "amount": m.amount, "display": m.display}


def customer_list(page: CustomerList) -> dict[str, Any]:
    """The administrator's page of customers (balances, carrier count)."""
    return {
        "customers": [
            {
                "id": c.id,
                "name": c.name,
                "status": c.status,
                "created_at": c.created_at,
                "balances": [money(b) for b in c.balances],
                "carriers": c.carriers,
            }
            for c in page.customers
        ],
        "has_more": page.has_more,
    }


def statement(s: Statement) -> dict[str, Any]:
    """The statement a wallet reads (sealed to it: :func:`safescan.api.account.seal_statement`)."""
    return {
        "customer_id": s.customer_id,
        "carrier_serial": s.carrier_serial,
        "as_of": s.as_of,
        "balances": [money(b) for b in s.balances],
        "payments": [
            {
                "payment_id": p.payment_id,
                "merchant_id": p.merchant_id,
                "merchant_name": p.merchant_name,
                "merchant_city": p.merchant_city,
                "paid_at": p.paid_at,
                "carrier_serial": p.carrier_serial,
                **money(p.money),
                "refunded": p.refunded.amount,
                "refunded_display": p.refunded.display,
                "refunds": [
                    {"refund_id": r.refund_id, "created_at": r.created_at, **money(r.money)}
                    for r in p.refunds
                ],
            }
            for p in s.payments
        ],
    }


def manufacturer(m: ManufacturerKeyView) -> dict[str, Any]:
    """A manufacturer key record (its public key in hex)."""
    return {
        "kid": m.kid,
        "name": m.name,
        "public_key": m.public_key.hex(),
        "status": m.status,
        "created_at": m.created_at,
        "revoked_at": m.revoked_at,
    }


__all__ = [
    "CREATED",
    "carrier_enrolled",
    "carrier_key_update",
    "carrier_status",
    "code_status",
    "customer",
    "customer_list",
    "enrollment_token",
    "manufacturer",
    "merchant",
    "money",
    "new_merchant",
    "order",
    "order_created",
    "order_page",
    "payment",
    "payment_made",
    "precreated",
    "public_keys",
    "refund_made",
    "statement",
    "static_code",
]


def checkout_session(s: CheckoutSessionView, url: str) -> dict[str, Any]:
    """A checkout session as its merchant sees it; ``url`` is its hosted page."""
    return {
        "id": s.id,
        "object": "checkout.session",
        "status": s.status,
        "url": url,
        "merchant_id": s.merchant_id,
        "order_id": s.order_id,
        "items": [i.to_json() for i in s.items],
        "total": s.total,
        "currency": s.currency,
        "reference": s.reference,
        "success_url": s.success_url,
        "cancel_url": s.cancel_url,
        "created_at": s.created_at,
        "expires_at": s.expires_at,
        "completed_at": s.completed_at,
        "payment_id": s.payment_id,
    }


def hosted_checkout(h: HostedCheckout) -> dict[str, Any]:
    """What the hosted checkout page reads (the code only while the session is open; the
    merchant's return URLs; never the reference or the payer)."""
    s = h.session
    is_open = s.status is CheckoutState.OPEN
    return {
        "id": s.id,
        "status": s.status,
        "merchant": {"name": h.merchant_name, "city": h.merchant_city},
        "items": [i.display_json(s.currency) for i in s.items],
        "currency": h.currency_code,
        "total": s.total,
        "total_display": h.total_display,
        "expires_at": s.expires_at,
        "now": h.now,
        "code": s.code if is_open else None,
        "success_url": s.success_url,
        "cancel_url": s.cancel_url,
    }
