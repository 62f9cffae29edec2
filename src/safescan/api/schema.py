"""The wire schema the institution and its clients share: one frozen dataclass per JSON object
whose fields are the same on both sides, declared once.

The institution builds them as its domain results (:mod:`safescan.institution.domain.results`
re-exports them; :mod:`safescan.institution.wire` writes their JSON by hand, the fast way); the
client reads them (:mod:`safescan.client.fields`, where the dataclass is the schema: its answer
types derive from these). ``Annotated`` rules say what the JSON must hold beyond its type
(:class:`Check`: :data:`Amount` never negative, :func:`max_bytes`; :class:`Parse`: an order
line in its array form); they cost the institution nothing (annotations are not evaluated).
Shapes that differ on the two sides (a payment's receipt: bytes here, base64 text in the
client's answer) are declared on each side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from safescan.api.states import CodeState, OrderState, Status
from safescan.code.payment import LineItem

# --- rules beyond the JSON type ------------------------------------------------------------------


@dataclass(frozen=True)
class Parse:
    """Read the JSON value with ``fn`` instead of by its type (``fn`` raises
    :class:`~safescan.code.errors.SafescanError`, ``ValueError`` or ``TypeError``)."""

    fn: Callable[[Any], Any]


@dataclass(frozen=True)
class Check:
    """The value read must pass ``test``, else the field ``fails``."""

    test: Callable[[Any], bool]
    fails: str


def max_bytes(n: int) -> Check:
    """At most ``n`` bytes (a base64 field's decoded size)."""
    return Check(lambda b: len(b) <= n, f"is longer than {n} bytes")


#: an amount or a count in minor units: never negative
Amount = Annotated[int, Check(lambda v: v >= 0, "is negative")]
#: an order line in the array form ``[name, quantity, unit_price]`` (checked as in a code)
CborItem = Annotated[LineItem, Parse(LineItem.from_cbor)]
#: a certificate or a provisioning bundle (base64 on the wire)
Blob = Annotated[bytes, max_bytes(8192)]
#: a sealed KEY UPDATE (base64 on the wire)
SealedUpdate = Annotated[bytes, max_bytes(4096)]


# --- merchants, customers, carriers ----------------------------------------------------------


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
class CarrierSummary:
    """A key carrier as its customer's record lists it."""

    serial: int
    status: Status
    last_counter: int


@dataclass(frozen=True, slots=True)
class CarrierStatus:
    """A carrier's status after a change (revocation)."""

    serial: int
    status: Status


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
    certificate: Blob  # CBOR
    bundle: Blob  # sealed to the carrier's transport key
    model: str
    epoch: int
    key_update: SealedUpdate  # the first KEY UPDATE


@dataclass(frozen=True, slots=True)
class CarrierKeyUpdate:
    """The sealed KEY UPDATE to the current epoch (None: the carrier is up to date)."""

    carrier_serial: int
    epoch: int
    key_update: SealedUpdate | None


# --- orders, codes, refunds ------------------------------------------------------------------


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
    total: Amount
    items: tuple[CborItem, ...]  # on the wire: [name, quantity, unit_price]
    created_at: int
    expires_at: int
    paid_at: int | None
    paid_amount: Amount
    refunded_amount: Amount
    payment_id: str | None


@dataclass(frozen=True, slots=True)
class CodeStatus:
    """What a wallet may learn of a code before paying it (no amounts, no payer)."""

    state: CodeState
    merchant_status: Status
    order_state: OrderState | None
    expires_at: int


@dataclass(frozen=True, slots=True)
class RefundView:
    """A refund as its merchant sees it (``GET /v1/merchant/refunds``)."""

    refund_id: str
    payment_id: str
    order_id: str
    amount: Amount
    currency: int
    reason: str | None
    created_at: int


# --- the institution's public keys -----------------------------------------------------------


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


# --- settlement ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SettlementRow:
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

    def to_dict(self) -> dict[str, Any]:
        """JSON form (the columns in order)."""
        return {name: getattr(self, name) for name in SETTLEMENT_COLUMNS}


SETTLEMENT_COLUMNS = (
    "date",
    "merchant_id",
    "merchant_name",
    "settlement_account",
    "currency",
    "payments",
    "gross",
    "refunds",
    "refunded",
    "net",
)

__all__ = [
    "SETTLEMENT_COLUMNS",
    "Amount",
    "Blob",
    "CarrierEnrolled",
    "CarrierKeyUpdate",
    "CarrierStatus",
    "CarrierSummary",
    "CborItem",
    "Check",
    "CodeStatus",
    "CustomerListed",
    "EnrollmentTokenIssued",
    "MerchantProfile",
    "Money",
    "OrderView",
    "Parse",
    "PublicKeys",
    "RefundView",
    "RootKey",
    "SchemeKeyInfo",
    "SealedUpdate",
    "SettlementRow",
    "StaticCodeIssued",
    "max_bytes",
]
