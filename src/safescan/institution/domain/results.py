"""What the domain modules answer: frozen dataclasses, one per kind of result.

They carry values (bytes as bytes, states as enums), not JSON and not HTTP: the JSON form of each
is :mod:`safescan.institution.wire`, which the HTTP layer answers with and the Idempotency-Key
records keep (so a replayed answer is the first one, byte for byte).
"""

from __future__ import annotations

from dataclasses import dataclass

from safescan.api.states import CheckoutState, CodeState, OrderState, Status
from safescan.code.payment import LineItem

# --- merchants ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MerchantProfile:
    """A merchant's record (its API public key, never a secret)."""

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
class CarrierSummary:
    """A key carrier as its customer's record lists it."""

    serial: int
    status: Status
    last_counter: int


@dataclass(frozen=True, slots=True)
class CustomerAccount:
    """A customer with its balances and key carriers."""

    id: str
    name: str
    status: Status
    created_at: int
    balances: tuple[Balance, ...]
    carriers: tuple[CarrierSummary, ...]


@dataclass(frozen=True, slots=True)
class EnrollmentTokenIssued:
    """A single-use enrollment token (shown once; only its hash is kept)."""

    token: str
    customer_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class CarrierEnrolled:
    """An enrolled carrier: its certificate, sealed provisioning bundle and first KEY UPDATE."""

    carrier_serial: int
    customer_id: str
    certificate: bytes
    bundle: bytes
    model: str
    epoch: int
    key_update: bytes


@dataclass(frozen=True, slots=True)
class CarrierKeyUpdate:
    """The sealed KEY UPDATE to the current epoch (None: the carrier is up to date)."""

    carrier_serial: int
    epoch: int
    key_update: bytes | None


@dataclass(frozen=True, slots=True)
class CarrierStatus:
    """A carrier's status after a change (revocation)."""

    serial: int
    status: Status


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
class StaticCodeIssued:
    """A sealed static (printed) code."""

    merchant_id: str
    currency: int | None
    expires_at: int
    code: str
    code_bytes: int


@dataclass(frozen=True, slots=True)
class OrderView:
    """An order as its merchant sees it."""

    order_id: str
    merchant_id: str
    kind: str
    state: OrderState
    reference: str | None
    currency: int
    total: int
    items: tuple[LineItem, ...]
    created_at: int
    expires_at: int
    paid_at: int | None
    paid_amount: int
    refunded_amount: int
    payment_id: str | None


@dataclass(frozen=True, slots=True)
class OrderPage:
    """A page of a merchant's orders, newest first."""

    orders: tuple[OrderView, ...]
    has_more: bool


@dataclass(frozen=True, slots=True)
class CodeStatus:
    """What a wallet may learn of a code before paying it (no amounts, no payer)."""

    state: CodeState
    merchant_status: Status
    order_state: OrderState | None
    expires_at: int


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


@dataclass(frozen=True, slots=True)
class RefundView:
    """A refund as its merchant sees it (``GET /v1/merchant/refunds``)."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: int
    currency: int
    reason: str | None
    created_at: int


# --- the institution's public keys -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RootKey:
    """A root signing key (a trust anchor)."""

    kid: int
    public_key: bytes


@dataclass(frozen=True, slots=True)
class SchemeKeyInfo:
    """A live scheme key: dynamic codes are sealed to the ``current`` one (the epoch's), static
    codes to ``current_static``; every live key opens codes until its ``retire_at``."""

    kid: int
    public_key: bytes
    retire_at: int | None
    current: bool
    use: str  # "dynamic" (an epoch key) or "static"
    current_static: bool


@dataclass(frozen=True, slots=True)
class PublicKeys:
    """The public trust anchors, and the scheme keys signed under the root key (terminals cache
    the list to seal offline)."""

    root_keys: tuple[RootKey, ...]
    scheme_keys: tuple[SchemeKeyInfo, ...]
    scheme_key_list: bytes
    epoch: int


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
class Money:
    """An amount as a person reads it: ISO 4217 alpha code (the numeric code as text when the
    currency is unknown), minor units, the formatted amount."""

    currency: str
    amount: int
    display: str


@dataclass(frozen=True, slots=True)
class CustomerListed:
    """A customer in the administrator's list: balances and how many carriers it has."""

    id: str
    name: str
    status: Status
    created_at: int
    balances: tuple[Money, ...]
    carriers: int


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
