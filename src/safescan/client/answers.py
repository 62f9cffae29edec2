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
from typing import Self

from safescan.api.errors import InstitutionError, error_from_dict
from safescan.api.states import CheckoutState, CodeState, OrderState, Status
from safescan.client.fields import Answer, Fields, malformed, rows_of
from safescan.code.errors import SafescanError
from safescan.code.payment import LineItem

# --- orders -------------------------------------------------------------------------------------


def _cbor_items(f: Fields, name: str) -> tuple[LineItem, ...]:
    """Order lines in the array form ``[name, quantity, unit_price]``."""
    try:
        return tuple(LineItem.from_cbor(i) for i in f.array(name))
    except SafescanError as exc:
        raise malformed(f.what, f"{name}: {exc.message}") from None


def _json_items(f: Fields, name: str) -> tuple[LineItem, ...]:
    """Order lines in the object form ``{"name", "quantity", "unit_price"}``."""
    out = []
    for row in f.array(name):
        i = Fields(row, f.what + " line")
        out.append(LineItem(i.text("name"), i.integer("quantity"), i.integer("unit_price")))
    return tuple(out)


@dataclass(frozen=True)
class OrderView(Answer):
    """An order as its merchant reads it (``GET`` and ``close``; a row of the order list)."""

    order_id: str
    merchant_id: str
    kind: str
    state: OrderState
    reference: str | None
    currency: int  # ISO 4217 numeric
    total: int
    items: tuple[LineItem, ...]
    created_at: int
    expires_at: int
    paid_at: int | None
    paid_amount: int
    refunded_amount: int
    payment_id: str | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the institution's order document."""
        f = Fields(doc, "order")
        return cls(
            order_id=f.text("order_id"),
            merchant_id=f.text("merchant_id"),
            kind=f.text("kind"),
            state=f.enum("state", OrderState),
            reference=f.opt_text("reference"),
            currency=f.integer("currency"),
            total=f.integer("total"),
            items=_cbor_items(f, "items"),
            created_at=f.integer("created_at"),
            expires_at=f.integer("expires_at"),
            paid_at=f.opt_integer("paid_at"),
            paid_amount=f.integer("paid_amount"),
            refunded_amount=f.integer("refunded_amount"),
            payment_id=f.opt_text("payment_id"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class OrderPage(Answer):
    """A page of the merchant's orders, newest first (page on with the last ``order_id``)."""

    orders: tuple[OrderView, ...]
    has_more: bool

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From ``{"orders", "has_more"}``."""
        f = Fields(doc, "order list")
        return cls(
            rows_of(OrderView.from_json, doc, "orders", f.what), f.flag("has_more"), doc=f.doc
        )


@dataclass(frozen=True)
class StaticCodeIssued(Answer):
    """A sealed static code to print (the customer enters the amount)."""

    merchant_id: str
    currency: int | None  # None: the customer chooses
    expires_at: int
    code: str
    code_bytes: int

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the static-code answer."""
        f = Fields(doc, "static code")
        return cls(
            merchant_id=f.text("merchant_id"),
            currency=f.opt_integer("currency"),
            expires_at=f.integer("expires_at"),
            code=f.text("code"),
            code_bytes=f.integer("code_bytes"),
            doc=f.doc,
        )


# --- payments and refunds -----------------------------------------------------------------------


@dataclass(frozen=True)
class PaymentMade(Answer):
    """A payment's answer (``POST /v1/payments``; a lookup's ``payment``). ``receipt`` is the
    signed receipt as sent (standard base64 of its CBOR: verify it with
    :func:`safescan.client.trust.verify_receipt`)."""

    payment_id: str
    status: str  # "succeeded"
    order_id: str
    merchant_id: str
    amount: int
    currency: int
    payer_pseudonym: str
    paid_at: int
    receipt: str

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the payment answer."""
        f = Fields(doc, "payment")
        return cls(
            payment_id=f.text("payment_id"),
            status=f.text("status"),
            order_id=f.text("order_id"),
            merchant_id=f.text("merchant_id"),
            amount=f.integer("amount"),
            currency=f.integer("currency"),
            payer_pseudonym=f.text("payer_pseudonym"),
            paid_at=f.integer("paid_at"),
            receipt=f.text("receipt"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class PaymentView(Answer):
    """A payment as its merchant reads it (``GET /v1/merchant/payments/{id}``): the payer's
    pseudonym, never the account; ``receipt`` as :class:`PaymentMade`'s."""

    payment_id: str
    order_id: str
    order_state: OrderState
    merchant_id: str
    amount: int
    currency: int
    payer_pseudonym: str
    paid_at: int
    receipt: str

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the merchant's payment document."""
        f = Fields(doc, "payment")
        return cls(
            payment_id=f.text("payment_id"),
            order_id=f.text("order_id"),
            order_state=f.enum("order_state", OrderState),
            merchant_id=f.text("merchant_id"),
            amount=f.integer("amount"),
            currency=f.integer("currency"),
            payer_pseudonym=f.text("payer_pseudonym"),
            paid_at=f.integer("paid_at"),
            receipt=f.text("receipt"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class RefundMade(Answer):
    """A refund's answer, with the order's state after it."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: int
    currency: int
    order_state: OrderState
    refunded_amount: int
    status: str  # "succeeded"
    created_at: int

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the refund answer."""
        f = Fields(doc, "refund")
        return cls(
            refund_id=f.text("refund_id"),
            payment_id=f.text("payment_id"),
            order_id=f.text("order_id"),
            amount=f.integer("amount"),
            currency=f.integer("currency"),
            order_state=f.enum("order_state", OrderState),
            refunded_amount=f.integer("refunded_amount"),
            status=f.text("status"),
            created_at=f.integer("created_at"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class RefundRecord(Answer):
    """A refund in the merchant's refund list (``GET /v1/merchant/refunds``)."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: int
    currency: int
    reason: str | None
    created_at: int

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From one row of ``{"refunds": [...]}``."""
        f = Fields(doc, "refund list")
        return cls(
            refund_id=f.text("refund_id"),
            payment_id=f.text("payment_id"),
            order_id=f.text("order_id"),
            amount=f.integer("amount"),
            currency=f.integer("currency"),
            reason=f.opt_text("reason"),
            created_at=f.integer("created_at"),
            doc=f.doc,
        )


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

    @staticmethod
    def _parts(f: Fields) -> tuple[LookupOutcome, int | None, InstitutionError | None, str | None]:
        outcome = f.enum("outcome", LookupOutcome)
        if outcome is LookupOutcome.NOT_PROCESSED:
            return outcome, None, None, f.text("message")
        status = f.integer("status")
        error = (
            error_from_dict(f.obj("error"), status) if outcome is LookupOutcome.REFUSED else None
        )
        return outcome, status, error, None


@dataclass(frozen=True)
class RefundLookup(_Lookup):
    """A refund's status lookup: ``refund`` when it succeeded."""

    refund: RefundMade | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From ``{"outcome", ...}``."""
        f = Fields(doc, "refund lookup")
        outcome, status, error, message = cls._parts(f)
        made = RefundMade.from_json(f.obj("refund")) if outcome is LookupOutcome.SUCCEEDED else None
        return cls(outcome, status, error, message, made, doc=f.doc)


@dataclass(frozen=True)
class PaymentLookup(_Lookup):
    """A payment's status lookup: ``payment`` when it succeeded."""

    payment: PaymentMade | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From ``{"outcome", ...}``."""
        f = Fields(doc, "payment lookup")
        outcome, status, error, message = cls._parts(f)
        made = (
            PaymentMade.from_json(f.obj("payment")) if outcome is LookupOutcome.SUCCEEDED else None
        )
        return cls(outcome, status, error, message, made, doc=f.doc)


# --- settlement ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SettlementRow(Answer):
    """One merchant's day in one currency (amounts in minor units; ``currency`` the ISO 4217
    alpha code)."""

    date: str
    merchant_id: str
    merchant_name: str
    settlement_account: str
    currency: str
    payments: int  # how many
    gross: int
    refunds: int  # how many
    refunded: int
    net: int  # gross - refunded

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From one row of ``{"rows": [...]}``."""
        f = Fields(doc, "settlement")
        return cls(
            date=f.text("date"),
            merchant_id=f.text("merchant_id"),
            merchant_name=f.text("merchant_name"),
            settlement_account=f.text("settlement_account"),
            currency=f.text("currency"),
            payments=f.integer("payments"),
            gross=f.integer("gross"),
            refunds=f.integer("refunds"),
            refunded=f.integer("refunded"),
            net=f.integer("net"),
            doc=f.doc,
        )


def settlement_rows(doc: object) -> tuple[SettlementRow, ...]:
    """The rows of a settlement report ``{"rows": [...]}``."""
    return rows_of(SettlementRow.from_json, doc, "rows", "settlement")


# --- merchants, carriers, codes -----------------------------------------------------------------


@dataclass(frozen=True)
class MerchantProfile(Answer):
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

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the merchant document."""
        f = Fields(doc, "merchant")
        return cls(
            id=f.text("id"),
            name=f.text("name"),
            city=f.text("city"),
            country=f.text("country"),
            mcc=f.integer("mcc"),
            settlement_account=f.text("settlement_account"),
            api_public_key=f.b64("api_public_key"),
            webhook_url=f.opt_text("webhook_url"),
            status=f.enum("status", Status),
            created_at=f.integer("created_at"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class CarrierStatus(Answer):
    """A key carrier's status after a change (revocation)."""

    serial: int
    status: Status

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From ``{"serial", "status"}``."""
        f = Fields(doc, "carrier")
        return cls(f.integer("serial"), f.enum("status", Status), doc=f.doc)


@dataclass(frozen=True)
class CodeStatus(Answer):
    """What a wallet may learn of a code before paying it (no amounts, no payer)."""

    state: CodeState
    merchant_status: Status
    order_state: OrderState | None
    expires_at: int

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the code-status answer."""
        f = Fields(doc, "code status")
        return cls(
            state=f.enum("state", CodeState),
            merchant_status=f.enum("merchant_status", Status),
            order_state=f.opt_enum("order_state", OrderState),
            expires_at=f.integer("expires_at"),
            doc=f.doc,
        )


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
class PublicKeys(Answer):
    """``GET /v1/keys``: the root keys, the live scheme keys, the signed scheme key list (CBOR;
    verify before use) and the current epoch."""

    root_keys: tuple[RootKey, ...]
    scheme_keys: tuple[SchemeKey, ...]
    scheme_key_list: bytes
    epoch: int

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the key document."""
        f = Fields(doc, "key list")
        roots = []
        for row in f.array("root_keys"):
            r = Fields(row, f.what)
            roots.append(RootKey(r.integer("kid"), r.b64("public_key")))
        schemes = []
        for row in f.array("scheme_keys"):
            s = Fields(row, f.what)
            schemes.append(
                SchemeKey(
                    kid=s.integer("kid"),
                    public_key=s.b64("public_key"),
                    retire_at=s.opt_integer("retire_at"),
                    current=s.flag("current"),
                    use=s.text("use"),
                    current_static=s.flag("current_static"),
                )
            )
        return cls(
            tuple(roots), tuple(schemes), f.b64("scheme_key_list"), f.integer("epoch"), doc=f.doc
        )


# --- checkout sessions --------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckoutSession(Answer):
    """A hosted checkout session as its merchant sees it (``url``: its hosted page)."""

    id: str
    status: CheckoutState
    url: str
    merchant_id: str
    order_id: str
    items: tuple[LineItem, ...]
    total: int
    currency: int
    reference: str | None
    success_url: str
    cancel_url: str
    created_at: int
    expires_at: int
    completed_at: int | None
    payment_id: str | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the session document."""
        f = Fields(doc, "checkout session")
        if f.text("object") != "checkout.session":
            raise malformed(f.what, "it is not a checkout.session object")
        return cls(
            id=f.text("id"),
            status=f.enum("status", CheckoutState),
            url=f.text("url"),
            merchant_id=f.text("merchant_id"),
            order_id=f.text("order_id"),
            items=_json_items(f, "items"),
            total=f.integer("total"),
            currency=f.integer("currency"),
            reference=f.opt_text("reference"),
            success_url=f.text("success_url"),
            cancel_url=f.text("cancel_url"),
            created_at=f.integer("created_at"),
            expires_at=f.integer("expires_at"),
            completed_at=f.opt_integer("completed_at"),
            payment_id=f.opt_text("payment_id"),
            doc=f.doc,
        )


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
