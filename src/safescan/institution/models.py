"""The institution's schema (SQLAlchemy 2 declarative models).

Times are integer unix seconds unless a column name ends in ``_ms``. Amounts are integers in
minor units; currencies are ISO 4217 numeric codes. The Alembic migrations in
``safescan/institution/migrations`` create exactly this schema (a test compares them).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: the audit entries that settle a checkout session (a partial index covers exactly these)
CHECKOUT_SETTLES = ("checkout.complete", "checkout.expired", "checkout.canceled")
# the orders ``ix_orders_created_expires`` holds; Orders.expire's read names it word for word,
# so that the index is usable whatever plan the database makes (a PostgreSQL generic plan of a
# prepared statement, as psycopg prepares after 5 executions, cannot use a partial index
# through a bound parameter)
ORDERS_OPEN_WHERE = "state = 'CREATED'"
CHECKOUT_SETTLES_WHERE = "action IN ('checkout.complete', 'checkout.expired', 'checkout.canceled')"


class Base(DeclarativeBase):
    """Declarative base with a stable constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING)


class Counter(Base):
    """Named monotonic counters (e.g. the revocation list sequence)."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


class CheckpointHead(Base):
    """The newest record of a checkpoint file this database knows was written (its chain
    position and SHA-256), by the file's name: a file that is missing, ends before it or holds
    another record there was deleted, truncated or replaced
    (``safescan.institution.checkpoints``)."""

    __tablename__ = "checkpoint_head"
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    n: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class InstitutionKey(Base):
    """Public halves of the institution's keys (the private halves live encrypted in files)."""

    __tablename__ = "institution_keys"
    purpose: Mapped[str] = mapped_column(String(16), primary_key=True)  # "root" / "scheme"
    kid: Mapped[int] = mapped_column(Integer, primary_key=True)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    retire_at: Mapped[int | None] = mapped_column(BigInteger)


class AdminToken(Base):
    """Administrator bearer tokens, stored as SHA-256 hashes only."""

    __tablename__ = "admin_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class MerchantRow(Base):
    """An onboarded merchant."""

    __tablename__ = "merchants"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    city: Mapped[str] = mapped_column(String(64), nullable=False)
    country: Mapped[str] = mapped_column(String(2), nullable=False)
    mcc: Mapped[int] = mapped_column(Integer, nullable=False)
    settlement_account: Mapped[str] = mapped_column(String(64), nullable=False)
    api_public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    webhook_url: Mapped[str | None] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class MerchantApiKey(Base):
    """A merchant's secret API key (``Authorization: Bearer sk_live_<id>_<secret>``): only its
    keyed hash is stored (HMAC-SHA256 under the institution secret, see
    :mod:`safescan.institution.domain.api_keys`); the key itself is shown once."""

    __tablename__ = "merchant_api_keys"
    id: Mapped[str] = mapped_column(String(24), primary_key=True)  # the public key id
    merchant_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("merchants.id"), nullable=False, index=True
    )
    name: Mapped[str | None] = mapped_column(String(64))
    secret_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    scopes: Mapped[str] = mapped_column(String(512), nullable=False)  # space-separated
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    last_used_at: Mapped[int | None] = mapped_column(BigInteger)
    replaced_by: Mapped[str | None] = mapped_column(String(24))  # the key a rotation made


class CertificateRow(Base):
    """Every certificate the institution issued; ``serial`` is the certificate serial."""

    __tablename__ = "certificates"
    serial: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    role: Mapped[int] = mapped_column(Integer, nullable=False)
    subject: Mapped[str] = mapped_column(String(64), nullable=False)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    not_before: Mapped[int] = mapped_column(BigInteger, nullable=False)
    not_after: Mapped[int] = mapped_column(BigInteger, nullable=False)
    cert: Mapped[bytes | None] = mapped_column(LargeBinary(512))
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class CustomerRow(Base):
    """A customer (account holder)."""

    __tablename__ = "customers"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class EnrollmentToken(Base):
    """Single-use carrier enrollment tokens (hashed), issued by an administrator."""

    __tablename__ = "enrollment_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    used_at: Mapped[int | None] = mapped_column(BigInteger)


class CarrierRow(Base):
    """A key carrier; ``serial`` equals its certificate's serial."""

    __tablename__ = "carriers"
    serial: Mapped[int] = mapped_column(
        ForeignKey("certificates.serial"), primary_key=True, autoincrement=False
    )
    customer_id: Mapped[str] = mapped_column(ForeignKey("customers.id"), nullable=False)
    signing_public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    transport_public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    last_counter: Mapped[int] = mapped_column(BigInteger, nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Account(Base):
    """A ledger account. ``balance`` = credits - debits, kept for every account.

    ``allow_negative`` is false for customer accounts: the database refuses a negative balance.
    """

    __tablename__ = "accounts"
    __table_args__ = (
        UniqueConstraint("kind", "owner_id", "currency", name="uq_accounts_owner"),
        CheckConstraint("allow_negative OR balance >= 0", name="non_negative"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    owner_id: Mapped[str] = mapped_column(String(40), nullable=False)
    currency: Mapped[int] = mapped_column(Integer, nullable=False)
    balance: Mapped[int] = mapped_column(BigInteger, nullable=False)
    allow_negative: Mapped[bool] = mapped_column(Boolean, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Transfer(Base):
    """An immutable double-entry transfer (database triggers refuse UPDATE and DELETE)."""

    __tablename__ = "transfers"
    __table_args__ = (
        CheckConstraint("amount > 0", name="positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="distinct_accounts"),
        Index("ix_transfers_ref", "ref"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    debit_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), nullable=False)
    credit_account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id"), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    ref: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class OrderRow(Base):
    """An order: one dynamic code (or one static-code payment)."""

    __tablename__ = "orders"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id", name="uq_orders_merchant_order"),
        CheckConstraint("refunded_amount <= paid_amount", name="refund_le_paid"),
        # the open orders by expiry: the maintenance round's read (Orders.expire) looks here
        # for the orders due instead of scanning the table (migration 0015)
        Index(
            "ix_orders_created_expires",
            "expires_at",
            sqlite_where=text(ORDERS_OPEN_WHERE),
            postgresql_where=text(ORDERS_OPEN_WHERE),
        ),
    )
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    order_id: Mapped[str] = mapped_column(String(40), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # dynamic / static
    state: Mapped[str] = mapped_column(String(20), nullable=False)
    reference: Mapped[str | None] = mapped_column(String(64))
    currency: Mapped[int] = mapped_column(Integer, nullable=False)
    total: Mapped[int] = mapped_column(BigInteger, nullable=False)
    items: Mapped[str] = mapped_column(Text, nullable=False)  # JSON
    code_digest: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    paid_at: Mapped[int | None] = mapped_column(BigInteger)
    paid_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    refunded_amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    payment_id: Mapped[str | None] = mapped_column(String(40))


class CheckoutSession(Base):
    """A hosted checkout (``safescan.institution.domain.checkout``): one institution-issued
    order, shown on the institution's checkout page, and where the customer's browser goes
    after paying (``success_url``) or giving up (``cancel_url``). Its status follows its order:
    ``open`` -> ``complete`` (paid), ``expired`` or ``canceled``."""

    __tablename__ = "checkout_sessions"
    __table_args__ = (
        UniqueConstraint("merchant_id", "order_id", name="uq_checkout_sessions_order"),
        Index("ix_checkout_sessions_status", "status"),
    )
    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), nullable=False)
    order_id: Mapped[str] = mapped_column(String(40), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)
    success_url: Mapped[str] = mapped_column(String(512), nullable=False)
    cancel_url: Mapped[str] = mapped_column(String(512), nullable=False)
    code: Mapped[str] = mapped_column(Text, nullable=False)  # the order's code, for the page
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    expires_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    completed_at: Mapped[int | None] = mapped_column(BigInteger)
    payment_id: Mapped[str | None] = mapped_column(String(40))


class Payment(Base):
    """A successful payment (one per paid order)."""

    __tablename__ = "payments"
    # the payment an authorization made, by its carrier and counter (status lookups)
    __table_args__ = (Index("ix_payments_carrier_counter", "carrier_serial", "counter"),)
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.pk"), nullable=False, unique=True)
    merchant_id: Mapped[str] = mapped_column(String(40), nullable=False)
    customer_id: Mapped[str] = mapped_column(String(40), nullable=False)
    carrier_serial: Mapped[int] = mapped_column(Integer, nullable=False)
    counter: Mapped[int] = mapped_column(BigInteger, nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[int] = mapped_column(Integer, nullable=False)
    payer_pseudonym: Mapped[str] = mapped_column(String(40), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    receipt: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)


class Refund(Base):
    """A (full or partial) refund of a payment."""

    __tablename__ = "refunds"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), nullable=False)
    order_pk: Mapped[int] = mapped_column(ForeignKey("orders.pk"), nullable=False, index=True)
    merchant_id: Mapped[str] = mapped_column(String(40), nullable=False)
    amount: Mapped[int] = mapped_column(BigInteger, nullable=False)
    currency: Mapped[int] = mapped_column(Integer, nullable=False)
    reason: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class IdempotencyRecord(Base):
    """A stored response for an Idempotency-Key (scope = who may use the key)."""

    __tablename__ = "idempotency_keys"
    scope: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    status_code: Mapped[int] = mapped_column(Integer, nullable=False)
    response: Mapped[str] = mapped_column(Text, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class MerchantRate(Base):
    """Each merchant's request token bucket, shared by every API process (thousandths of a
    request, refilled from ``updated_ms``; see :data:`safescan.institution.sql.TAKE_TOKEN`)."""

    __tablename__ = "merchant_rate"
    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tokens_milli: Mapped[int] = mapped_column(BigInteger, nullable=False)
    updated_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)


class RequestNonce(Base):
    """Nonces of signed merchant requests (anti-replay), kept for :data:`~safescan.institution.
    nonces.RETENTION` seconds of the elapsed clock (``seen_ms``), never of the wall clock."""

    __tablename__ = "request_nonces"
    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    seen_at: Mapped[int] = mapped_column(BigInteger, nullable=False)  # wall clock, for people
    seen_ms: Mapped[int] = mapped_column(
        BigInteger, nullable=False, index=True, server_default=text("0")
    )  # the elapsed clock when recorded
    ts: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default=text("0"))


class ElapsedClockRow(Base):
    """The institution's elapsed clock (``name`` ``elapsed_ms``): ms of real time shared by every
    API process, never going back (safescan.institution.nonces)."""

    __tablename__ = "elapsed_clock"
    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger, nullable=False)


class NonceFloor(Base):
    """Per merchant, the newest signed timestamp among forgotten nonces: a request not newer
    than it is refused (its nonce may be forgotten), whatever the wall clock says."""

    __tablename__ = "nonce_floors"
    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, nullable=False)


class Event(Base):
    """A merchant notification: the outbox for webhooks and the source of the SSE stream."""

    __tablename__ = "events"
    __table_args__ = (
        Index("ix_events_merchant_seq", "merchant_id", "seq"),
        # only undelivered events are indexed for the dispatcher
        Index(
            "ix_events_delivery",
            "next_attempt_ms",
            postgresql_where=text("webhook_state = 'pending'"),
            sqlite_where=text("webhook_state = 'pending'"),
        ),
    )
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(40), nullable=False, unique=True)
    merchant_id: Mapped[str] = mapped_column(String(40), nullable=False)
    type: Mapped[str] = mapped_column(String(40), nullable=False)
    payload: Mapped[str] = mapped_column(Text, nullable=False)  # canonical JSON
    signature: Mapped[str] = mapped_column(String(100), nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    webhook_state: Mapped[str] = mapped_column(String(16), nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False)
    next_attempt_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    delivered_at: Mapped[int | None] = mapped_column(BigInteger)
    last_error: Mapped[str | None] = mapped_column(String(200))
    # when the merchant last asked for it to be sent again (the retry window restarts there)
    requeued_at: Mapped[int | None] = mapped_column(BigInteger)
    # the X-Request-Id of the request that wrote it (sent with its webhook deliveries)
    request_id: Mapped[str | None] = mapped_column(String(64))
    # the X-Request-Id of the merchant's latest resend (sent instead, once it was resent)
    resend_request_id: Mapped[str | None] = mapped_column(String(64))


class WebhookEndpoint(Base):
    """A merchant endpoint's signing secret(s) for ``v1`` signatures (``webhook_secrets``):
    sealed with AES-GCM under a key derived from the server secret; during a rotation's
    overlap the previous secret stays usable until ``previous_until``."""

    __tablename__ = "webhook_endpoints"
    merchant_id: Mapped[str] = mapped_column(String(40), primary_key=True)
    secret_box: Mapped[bytes] = mapped_column(LargeBinary(128), nullable=False)
    previous_box: Mapped[bytes | None] = mapped_column(LargeBinary(128))
    previous_until: Mapped[int | None] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer, nullable=False)
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    rotated_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class WebhookDelivery(Base):
    """One webhook delivery attempt (the delivery log; bounded, see ``webhook_log``)."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_merchant_id", "merchant_id", "id"),
        Index("ix_webhook_deliveries_event_id", "event_id"),
        Index("ix_webhook_deliveries_at_ms", "at_ms"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    merchant_id: Mapped[str] = mapped_column(String(40), nullable=False)
    event_id: Mapped[str] = mapped_column(String(40), nullable=False)
    kind: Mapped[str] = mapped_column(String(8), nullable=False)  # event, test
    attempt: Mapped[int] = mapped_column(Integer, nullable=False)
    at_ms: Mapped[int] = mapped_column(BigInteger, nullable=False)
    url: Mapped[str] = mapped_column(String(512), nullable=False)
    status: Mapped[int | None] = mapped_column(Integer)
    error_kind: Mapped[str | None] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[int] = mapped_column(Integer, nullable=False)
    next_retry_ms: Mapped[int | None] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # delivered, retrying, failed
    request_id: Mapped[str | None] = mapped_column(String(64))  # sent with this attempt
    original_request_id: Mapped[str | None] = mapped_column(String(64))  # caused the event


class AuditEntry(Base):
    """One entry of a hash-chained audit log (immutable; several chains for concurrency)."""

    __tablename__ = "audit_log"
    __table_args__ = (
        UniqueConstraint("chain", "seq", name="uq_audit_log_chain_seq"),
        # the checkout sessions' settling entries, by session: a session is settled once, and
        # a settle looks here first (safescan.institution.domain.checkout_settle)
        Index(
            "ix_audit_log_checkout_settles",
            "entity",
            sqlite_where=text(CHECKOUT_SETTLES_WHERE),
            postgresql_where=text(CHECKOUT_SETTLES_WHERE),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    chain: Mapped[int] = mapped_column(Integer, nullable=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    actor: Mapped[str] = mapped_column(String(64), nullable=False)
    action: Mapped[str] = mapped_column(String(40), nullable=False)
    entity: Mapped[str] = mapped_column(String(80), nullable=False)
    data: Mapped[str] = mapped_column(Text, nullable=False)
    prev_hash: Mapped[str] = mapped_column(String(64), nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class AuditHead(Base):
    """The last entry of each audit chain (locked while appending)."""

    __tablename__ = "audit_heads"
    chain: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(BigInteger, nullable=False)
    hash: Mapped[str] = mapped_column(String(64), nullable=False)


class ManufacturerKey(Base):
    """A carrier manufacturer's key the institution trusts to certify attestation keys."""

    __tablename__ = "manufacturer_keys"
    kid: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    name: Mapped[str] = mapped_column(String(64), nullable=False)
    status: Mapped[str] = mapped_column(String(16), nullable=False)  # active / revoked
    created_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class CarrierDevice(Base):
    """The attested chip behind an enrolled carrier (at most one active carrier per chip)."""

    __tablename__ = "carrier_devices"
    serial: Mapped[int] = mapped_column(
        ForeignKey("carriers.serial"), primary_key=True, autoincrement=False
    )
    device_id: Mapped[bytes] = mapped_column(LargeBinary(8), nullable=False, index=True)
    model: Mapped[int] = mapped_column(Integer, nullable=False)  # 1 plain, 2 display
    manufacturer_kid: Mapped[int] = mapped_column(Integer, nullable=False)
    attestation_serial: Mapped[int] = mapped_column(BigInteger, nullable=False)
    statement: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    enrolled_at: Mapped[int] = mapped_column(BigInteger, nullable=False)


class SchemeEpoch(Base):
    """A scheme-key epoch; its private key is derived from the server secret, never stored."""

    __tablename__ = "scheme_epochs"
    epoch: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    kid: Mapped[int] = mapped_column(Integer, nullable=False)
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32), nullable=False)
    started_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    retire_at: Mapped[int] = mapped_column(BigInteger, nullable=False)
    reason: Mapped[str] = mapped_column(String(16), nullable=False)  # schedule / demand
