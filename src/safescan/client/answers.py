"""The institution's answers as the client returns them: one frozen dataclass per wire object,
read by the one reader of :mod:`.fields` (the dataclass is the schema). Where the institution's
JSON has the same fields as its own result, the answer derives from the shared declaration in
:mod:`safescan.api.schema` and adds only what every answer has (``doc``, ``to_json``).

Orders, payments, refunds and their status lookups, settlement rows, static codes, checkout
sessions, merchant profiles, a carrier's status, a code's status, the published keys. The
webhook and API-key answers are in :mod:`.answers_merchant`. A malformed answer (a field
missing or of the wrong type, an unknown state) is
:class:`~safescan.client.errors.InstitutionProtocolError`; unknown extra fields are kept and
``to_json()`` gives back the document as received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum, unique
from typing import Any, Literal, Self, cast

from safescan.api import schema
from safescan.api.errors import InstitutionError, error_from_dict
from safescan.api.schema import Amount
from safescan.api.states import CheckoutState, OrderState
from safescan.client.event_data import RefundSucceeded
from safescan.client.fields import Answer, one, rows_of, wire
from safescan.code.payment import LineItem

# --- orders (the shapes the institution shares: safescan.api.schema) ----------------------------


@dataclass(frozen=True)
class OrderView(Answer, schema.OrderView, what="order"):
    """An order as its merchant reads it (``GET`` and ``close``; a row of the order list)."""


@dataclass(frozen=True)
class OrderPage(Answer, what="order list"):
    """A page of the merchant's orders, newest first (page on with the last ``order_id``)."""

    orders: tuple[OrderView, ...]
    has_more: bool


@dataclass(frozen=True)
class StaticCodeIssued(Answer, schema.StaticCodeIssued, what="static code"):
    """A sealed static code to print (the customer enters the amount)."""


# --- payments and refunds -----------------------------------------------------------------------


@dataclass(frozen=True)
class _Payment(Answer):
    """What a payment's answer and the merchant's view of it share (``receipt``: the signed
    receipt as sent, standard base64 of its CBOR: verify it with
    :func:`safescan.client.trust.verify_receipt`)."""

    payment_id: str
    order_id: str
    merchant_id: str
    amount: Amount
    currency: int
    payer_pseudonym: str
    paid_at: int
    receipt: str


@dataclass(frozen=True)
class PaymentMade(_Payment, what="payment"):
    """A payment's answer (``POST /v1/payments``; a lookup's ``payment``)."""

    status: str  # "succeeded"


@dataclass(frozen=True)
class PaymentView(_Payment, what="payment"):
    """A payment as its merchant reads it (``GET /v1/merchant/payments/{id}``): the payer's
    pseudonym, never the account; and the order's state now."""

    order_state: OrderState


@dataclass(frozen=True)
class RefundMade(Answer, RefundSucceeded, what="refund"):
    """A refund's answer: what its ``refund.succeeded`` event says (with the order's state
    after it), and its status and time."""

    status: str  # "succeeded"
    created_at: int


@dataclass(frozen=True)
class RefundRecord(Answer, schema.RefundView, what="refund list"):
    """A refund in the merchant's refund list (``GET /v1/merchant/refunds``)."""


@unique
class LookupOutcome(StrEnum):
    """What a status lookup found (docs/institution.md, "Status lookups")."""

    SUCCEEDED = "succeeded"  # done: the answer is the request's
    REFUSED = "refused"  # refused, certainly not done
    NOT_PROCESSED = "not_processed"  # never processed, and now never will be


@dataclass(frozen=True)
class _Lookup(Answer):
    outcome: LookupOutcome
    status: int | None  # the request's HTTP status (succeeded, refused)
    error: InstitutionError | None = field(compare=False)  # refused: the typed refusal
    message: str | None  # not_processed: why nothing was done

    @classmethod
    def _read(cls, doc: object, key: str, kind: type[Answer]) -> Self:
        """``{"outcome", ...}``: what the other fields are depends on the outcome."""
        outcome = one(doc, "outcome", LookupOutcome, cls.what)
        if outcome is LookupOutcome.NOT_PROCESSED:
            status, error, made, message = None, None, None, one(doc, "message", str, cls.what)
        else:
            status, message = one(doc, "status", int, cls.what), None
            error = None
            if outcome is LookupOutcome.REFUSED:
                error = error_from_dict(one(doc, "error", dict, cls.what), status)
            made = one(doc, key, kind, cls.what) if outcome is LookupOutcome.SUCCEEDED else None
        args: Any = (outcome, status, error, message, made)  # and the subclass's answer
        return cls(*args, doc=cast(dict[str, Any], doc))


@dataclass(frozen=True)
class RefundLookup(_Lookup, what="refund lookup"):
    """A refund's status lookup: ``refund`` when it succeeded."""

    refund: RefundMade | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From ``{"outcome", ...}``."""
        return cls._read(doc, "refund", RefundMade)


@dataclass(frozen=True)
class PaymentLookup(_Lookup, what="payment lookup"):
    """A payment's status lookup: ``payment`` when it succeeded."""

    payment: PaymentMade | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From ``{"outcome", ...}``."""
        return cls._read(doc, "payment", PaymentMade)


# --- settlement ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettlementRow(Answer, schema.SettlementRow, what="settlement"):
    """One merchant's day in one currency (amounts in minor units; ``currency`` the ISO 4217
    alpha code)."""


def settlement_rows(doc: object) -> tuple[SettlementRow, ...]:
    """The rows of a settlement report ``{"rows": [...]}``."""
    return rows_of(SettlementRow, doc, "rows", SettlementRow.what)


# --- merchants, carriers, codes -----------------------------------------------------------------


@dataclass(frozen=True)
class MerchantProfile(Answer, schema.MerchantProfile, what="merchant"):
    """A merchant as the institution records it (its API public key, never a secret)."""


@dataclass(frozen=True)
class CarrierStatus(Answer, schema.CarrierStatus, what="carrier"):
    """A key carrier's status after a change (revocation)."""


@dataclass(frozen=True)
class CodeStatus(Answer, schema.CodeStatus, what="code status"):
    """What a wallet may learn of a code before paying it (no amounts, no payer)."""


# --- the published keys -------------------------------------------------------------------------

RootKey = schema.RootKey  # a root signing key (a trust anchor): key id, Ed25519 public key
SchemeKey = schema.SchemeKeyInfo  # a live scheme key


@dataclass(frozen=True)
class PublicKeys(Answer, schema.PublicKeys, what="key list"):
    """``GET /v1/keys``: the root keys, the live scheme keys, the signed scheme key list (CBOR;
    verify before use) and the current epoch."""


# --- checkout sessions --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckoutSession(Answer, what="checkout session"):
    """A hosted checkout session as its merchant sees it (``url``: its hosted page)."""

    id: str
    status: CheckoutState
    url: str
    merchant_id: str
    order_id: str
    items: tuple[LineItem, ...]
    total: Amount
    currency: int
    reference: str | None
    success_url: str
    cancel_url: str
    created_at: int
    expires_at: int
    completed_at: int | None
    payment_id: str | None
    object_: Literal["checkout.session"] = field(repr=False, metadata=wire("object"))


__all__ = [
    "CarrierStatus",
    "CheckoutSession",
    "CodeStatus",
    "LookupOutcome",
    "MerchantProfile",
    "OrderPage",
    "OrderView",
    "PaymentLookup",
    "PaymentMade",
    "PaymentView",
    "PublicKeys",
    "RefundLookup",
    "RefundMade",
    "RefundRecord",
    "RootKey",
    "SchemeKey",
    "SettlementRow",
    "StaticCodeIssued",
    "settlement_rows",
]
