"""The institution's answers as the client returns them: one frozen dataclass per wire object,
each built from its JSON in one place (its ``from_json``; the rules: :mod:`.fields`).

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
from typing import Annotated, Any, Literal, Self, cast

from safescan.api.errors import InstitutionError, error_from_dict
from safescan.api.states import CheckoutState, CodeState, OrderState, Status
from safescan.client.fields import Amount, Answer, Parse, one, rows_of, wire
from safescan.code.payment import LineItem

# --- orders -------------------------------------------------------------------------------------

#: an order line in the array form ``[name, quantity, unit_price]`` (checked as in a code)
CborItem = Annotated[LineItem, Parse(LineItem.from_cbor)]


@dataclass(frozen=True)
class OrderView(Answer, what="order"):
    """An order as its merchant reads it (``GET`` and ``close``; a row of the order list)."""

    order_id: str
    merchant_id: str
    kind: str
    state: OrderState
    reference: str | None
    currency: int  # ISO 4217 numeric
    total: Amount
    items: tuple[CborItem, ...]
    created_at: int
    expires_at: int
    paid_at: int | None
    paid_amount: Amount
    refunded_amount: Amount
    payment_id: str | None


@dataclass(frozen=True)
class OrderPage(Answer, what="order list"):
    """A page of the merchant's orders, newest first (page on with the last ``order_id``)."""

    orders: tuple[OrderView, ...]
    has_more: bool


@dataclass(frozen=True)
class StaticCodeIssued(Answer, what="static code"):
    """A sealed static code to print (the customer enters the amount)."""

    merchant_id: str
    currency: int | None  # None: the customer chooses
    expires_at: int
    code: str
    code_bytes: int


# --- payments and refunds -----------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentMade(Answer, what="payment"):
    """A payment's answer (``POST /v1/payments``; a lookup's ``payment``). ``receipt`` is the
    signed receipt as sent (standard base64 of its CBOR: verify it with
    :func:`safescan.client.trust.verify_receipt`)."""

    payment_id: str
    status: str  # "succeeded"
    order_id: str
    merchant_id: str
    amount: Amount
    currency: int
    payer_pseudonym: str
    paid_at: int
    receipt: str


@dataclass(frozen=True)
class PaymentView(Answer, what="payment"):
    """A payment as its merchant reads it (``GET /v1/merchant/payments/{id}``): the payer's
    pseudonym, never the account; ``receipt`` as :class:`PaymentMade`'s."""

    payment_id: str
    order_id: str
    order_state: OrderState
    merchant_id: str
    amount: Amount
    currency: int
    payer_pseudonym: str
    paid_at: int
    receipt: str


@dataclass(frozen=True)
class RefundMade(Answer, what="refund"):
    """A refund's answer, with the order's state after it."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: Amount
    currency: int
    order_state: OrderState
    refunded_amount: Amount
    status: str  # "succeeded"
    created_at: int


@dataclass(frozen=True)
class RefundRecord(Answer, what="refund list"):
    """A refund in the merchant's refund list (``GET /v1/merchant/refunds``)."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: Amount
    currency: int
    reason: str | None
    created_at: int


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
class SettlementRow(Answer, what="settlement"):
    """One merchant's day in one currency (amounts in minor units; ``currency`` the ISO 4217
    alpha code)."""

    date: str
    merchant_id: str
    merchant_name: str
    settlement_account: str
    currency: str
    payments: Amount  # how many
    gross: Amount
    refunds: Amount  # how many
    refunded: Amount
    net: int  # gross - refunded


def settlement_rows(doc: object) -> tuple[SettlementRow, ...]:
    """The rows of a settlement report ``{"rows": [...]}``."""
    return rows_of(SettlementRow, doc, "rows", SettlementRow.what)


# --- merchants, carriers, codes -----------------------------------------------------------------


@dataclass(frozen=True)
class MerchantProfile(Answer, what="merchant"):
    """A merchant as the institution records it (its API public key, never a secret)."""

    id: str
    name: str
    city: str
    country: str
    mcc: int
    settlement_account: str
    api_public_key: bytes
    webhook_url: str | None
    status: Status
    created_at: int


@dataclass(frozen=True)
class CarrierStatus(Answer, what="carrier"):
    """A key carrier's status after a change (revocation)."""

    serial: int
    status: Status


@dataclass(frozen=True)
class CodeStatus(Answer, what="code status"):
    """What a wallet may learn of a code before paying it (no amounts, no payer)."""

    state: CodeState
    merchant_status: Status
    order_state: OrderState | None
    expires_at: int


# --- the published keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class RootKey:
    """A root signing key (a trust anchor): key id and Ed25519 public key."""

    kid: int
    public_key: bytes


@dataclass(frozen=True)
class SchemeKey:
    """A live scheme key: dynamic codes are sealed to the ``current`` one, static codes to
    ``current_static``; each opens codes until its ``retire_at``."""

    kid: int
    public_key: bytes
    retire_at: int | None
    current: bool
    use: str  # "dynamic" or "static"
    current_static: bool


@dataclass(frozen=True)
class PublicKeys(Answer, what="key list"):
    """``GET /v1/keys``: the root keys, the live scheme keys, the signed scheme key list (CBOR;
    verify before use) and the current epoch."""

    root_keys: tuple[RootKey, ...]
    scheme_keys: tuple[SchemeKey, ...]
    scheme_key_list: bytes
    epoch: int


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
