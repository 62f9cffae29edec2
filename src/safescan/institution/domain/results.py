"""What the domain modules answer: frozen dataclasses, one per kind of result.

They carry values (bytes as bytes, states as enums), not JSON and not HTTP: the JSON form of each
is :mod:`safescan.institution.wire`, which the HTTP layer answers with and the Idempotency-Key
records keep (so a replayed answer is the first one, byte for byte). The results whose JSON
has the same fields are declared once for the institution and its clients in
:mod:`safescan.api.schema` and re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from safescan.api.schema import (
    CarrierEnrolled,
    CarrierKeyUpdate,
    CarrierStatus,
    CarrierSummary,
    CodeStatus,
    CustomerListed,
    EnrollmentTokenIssued,
    MerchantProfile,
    Money,
    OrderView,
    PublicKeys,
    RefundView,
    RootKey,
    SchemeKeyInfo,
    StaticCodeIssued,
)
from safescan.api.states import CheckoutState, OrderState, Status
from safescan.code.payment import LineItem

# --- merchants ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewMerchant:
    """An onboarded merchant; ``api_secret_key`` is the generated API key seed, given once
    (None when the merchant brought its own public key)."""

    merchant: MerchantProfile
    api_secret_key: bytes | None


# --- customers and carriers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Balance:
    """A customer's balance in one currency (ISO 4217 alpha code, minor units)."""

    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class CustomerAccount:
    """A customer with its balances and key carriers."""

    id: str
    name: str
    status: Status
    created_at: int
    balances: tuple[Balance, ...]
    carriers: tuple[CarrierSummary, ...]


# --- orders and codes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderCreated:
    """A precreated order and its sealed dynamic code (text form, and its size in bytes)."""

    order_id: str
    merchant_id: str
    state: OrderState
    total: int
    currency: int
    expires_at: int
    reference: str | None
    code: str
    code_bytes: int


@dataclass(frozen=True, slots=True)
class PrecreatedOrder:
    """One order of a bulk precreation."""

    order_id: str
    code: str
    total: int
    currency: int


@dataclass(frozen=True, slots=True)
class OrderPage:
    """A page of a merchant's orders, newest first."""

    orders: tuple[OrderView, ...]
    has_more: bool


# --- payments and refunds ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PaymentMade:
    """A payment just made (or, from a status lookup, the one an authorization made)."""

    payment_id: str
    order_id: str
    merchant_id: str
    amount: int
    currency: int
    payer_pseudonym: str
    paid_at: int
    receipt: bytes  # the signed receipt


@dataclass(frozen=True, slots=True)
class PaymentView:
    """A payment as its merchant sees it (the payer's pseudonym, never the account)."""

    payment_id: str
    order_id: str
    order_state: OrderState
    merchant_id: str
    amount: int
    currency: int
    payer_pseudonym: str
    paid_at: int
    receipt: bytes


@dataclass(frozen=True, slots=True)
class RefundMade:
    """A refund just made, with the order's state after it."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: int
    currency: int
    order_state: OrderState
    refunded_amount: int
    created_at: int


# --- the institution's public keys -------------------------------------------------------------


# --- checkout sessions (domain.checkout) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckoutSessionView:
    """A checkout session as its merchant sees it (``code``: the order's code text)."""

    id: str
    merchant_id: str
    order_id: str
    status: CheckoutState
    order_state: OrderState
    currency: int
    total: int
    items: tuple[LineItem, ...]
    reference: str | None
    success_url: str
    cancel_url: str
    created_at: int
    expires_at: int
    completed_at: int | None
    payment_id: str | None
    code: str


@dataclass(frozen=True, slots=True)
class HostedCheckout:
    """What the hosted checkout page shows a customer: the merchant's public name, the lines,
    the total, and the code while the session is open (never the reference or ids of others)."""

    session: CheckoutSessionView
    merchant_name: str
    merchant_city: str
    currency_code: str
    total_display: str
    now: int


# --- customer accounts as their readers see them, trusted manufacturers ------------------------


@dataclass(frozen=True, slots=True)
class CustomerList:
    """A page of customers in id order."""

    customers: tuple[CustomerListed, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class StatementRefund:
    """A refund of a payment on a customer's statement."""

    refund_id: str
    created_at: int
    money: Money


@dataclass(frozen=True, slots=True)
class StatementPayment:
    """A payment on a customer's statement, with its refunds."""

    payment_id: str
    merchant_id: str
    merchant_name: str
    merchant_city: str
    paid_at: int
    carrier_serial: int
    money: Money
    refunded: Money
    refunds: tuple[StatementRefund, ...]


@dataclass(frozen=True, slots=True)
class Statement:
    """What a wallet reads with its key carrier: balances and the newest payments."""

    customer_id: str
    carrier_serial: int
    as_of: int
    balances: tuple[Money, ...]
    payments: tuple[StatementPayment, ...]


@dataclass(frozen=True, slots=True)
class ManufacturerKeyView:
    """A trusted (or revoked) manufacturer key that attests carriers."""

    kid: int
    name: str
    public_key: bytes
    status: Status
    created_at: int
    revoked_at: int | None


__all__ = [
    "Balance",
    "CarrierEnrolled",
    "CarrierKeyUpdate",
    "CarrierStatus",
    "CarrierSummary",
    "CheckoutSessionView",
    "CodeStatus",
    "CustomerAccount",
    "CustomerList",
    "CustomerListed",
    "EnrollmentTokenIssued",
    "HostedCheckout",
    "ManufacturerKeyView",
    "MerchantProfile",
    "Money",
    "NewMerchant",
    "OrderCreated",
    "OrderPage",
    "OrderView",
    "PaymentMade",
    "PaymentView",
    "PrecreatedOrder",
    "PublicKeys",
    "RefundMade",
    "RefundView",
    "RootKey",
    "SchemeKeyInfo",
    "Statement",
    "StatementPayment",
    "StatementRefund",
    "StaticCodeIssued",
]
