"""The answers of a merchant's webhook and API-key operations (``safescan pos webhook ...``,
``safescan pos apikey ...``): frozen dataclasses built from their JSON in one place each, with
the rules of :mod:`.fields` (a malformed answer is
:class:`~safescan.client.errors.InstitutionProtocolError`; ``to_json()`` gives back the
document as received)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from safescan.client.fields import Answer, Fields, rows_of

# --- webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    """How long the delivery log keeps attempts: at most ``per_endpoint`` rows, ``max_age``
    seconds."""

    per_endpoint: int
    max_age: int

    @classmethod
    def read(cls, f: Fields) -> Retention:
        """The ``retention`` object of an answer."""
        r = Fields(f.obj("retention"), f.what)
        return cls(r.integer("per_endpoint"), r.integer("max_age"))


@dataclass(frozen=True)
class SecretInfo:
    """What the merchant may see of its ``whsec_`` secret: its version and dates (never the
    secret), and until when the previous one still signs."""

    version: int
    created_at: int
    rotated_at: int | None
    previous_valid_until: int | None


@dataclass(frozen=True)
class WebhookEndpoint(Answer):
    """``GET /v1/merchant/webhook``: the URL, the ``v1a`` public key (``whpk_...``) and its key
    id, the secret's version and dates (None: no secret yet), the log's retention."""

    url: str | None
    secret: SecretInfo | None
    public_key: str
    kid: int
    retention: Retention

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the endpoint document."""
        f = Fields(doc, "webhook endpoint")
        secret = None
        if (raw := f.opt_obj("secret")) is not None:
            s = Fields(raw, f.what + " secret")
            secret = SecretInfo(
                s.integer("version"),
                s.integer("created_at"),
                s.opt_integer("rotated_at"),
                s.opt_integer("previous_valid_until"),
            )
        return cls(
            url=f.opt_text("url"),
            secret=secret,
            public_key=f.text("public_key"),
            kid=f.integer("kid"),
            retention=Retention.read(f),
            doc=f.doc,
        )


@dataclass(frozen=True)
class WebhookSecret(Answer):
    """A new ``whsec_`` secret (shown in this answer only) and until when the previous one
    still signs."""

    secret: str
    version: int
    previous_valid_until: int | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the rotation answer."""
        f = Fields(doc, "webhook secret")
        return cls(
            f.text("secret"),
            f.integer("version"),
            f.opt_integer("previous_valid_until"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class WebhookTest(Answer):
    """The outcome of one signed ``webhook.test`` delivery (``state``: delivered or failed)."""

    event_id: str
    url: str
    status: int | None  # the endpoint's HTTP status, if it answered
    error_kind: str | None
    error: str | None
    latency_ms: int
    state: str

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the test answer."""
        f = Fields(doc, "webhook test")
        return cls(
            event_id=f.text("event_id"),
            url=f.text("url"),
            status=f.opt_integer("status"),
            error_kind=f.opt_text("error_kind"),
            error=f.opt_text("error"),
            latency_ms=f.integer("latency_ms"),
            state=f.text("state"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class Delivery(Answer):
    """One delivery attempt in the log (``kind``: event or test; ``state``: delivered,
    retrying, failed)."""

    id: int
    event_id: str
    kind: str
    attempt: int
    at_ms: int
    url: str
    status: int | None
    error_kind: str | None
    error: str | None
    latency_ms: int
    next_retry_ms: int | None
    state: str
    request_id: str | None
    original_request_id: str | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From one row of the delivery log."""
        f = Fields(doc, "webhook delivery")
        return cls(
            id=f.integer("id"),
            event_id=f.text("event_id"),
            kind=f.text("kind"),
            attempt=f.integer("attempt"),
            at_ms=f.integer("at_ms"),
            url=f.text("url"),
            status=f.opt_integer("status"),
            error_kind=f.opt_text("error_kind"),
            error=f.opt_text("error"),
            latency_ms=f.integer("latency_ms"),
            next_retry_ms=f.opt_integer("next_retry_ms"),
            state=f.text("state"),
            request_id=f.opt_text("request_id"),
            original_request_id=f.opt_text("original_request_id"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class DeliveryPage(Answer):
    """The delivery log, newest first (page on with ``before=<the last id>``)."""

    deliveries: tuple[Delivery, ...]
    retention: Retention

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From ``{"deliveries", "retention"}``."""
        f = Fields(doc, "webhook delivery log")
        rows = rows_of(Delivery.from_json, doc, "deliveries", f.what)
        return cls(rows, Retention.read(f), doc=f.doc)


@dataclass(frozen=True)
class Resend(Answer):
    """An event queued again (``requeued`` False: it was still pending, left as it was);
    ``request_id`` is the resend's, ``original_request_id`` the request that caused the
    event."""

    event_id: str
    state: str
    requeued: bool
    request_id: str | None
    original_request_id: str | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the resend answer."""
        f = Fields(doc, "resend")
        return cls(
            event_id=f.text("event_id"),
            state=f.text("state"),
            requeued=f.flag("requeued"),
            request_id=f.opt_text("request_id"),
            original_request_id=f.opt_text("original_request_id"),
            doc=f.doc,
        )


# --- API keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeyInfo(Answer):
    """A secret API key as listed (never the secret): ``state`` is active, expiring (a
    rotation's grace), expired or revoked."""

    id: str
    prefix: str
    merchant_id: str
    name: str | None
    scopes: tuple[str, ...]
    state: str
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None
    replaced_by: str | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From one key document."""
        f = Fields(doc, "API key")
        return cls(
            id=f.text("id"),
            prefix=f.text("prefix"),
            merchant_id=f.text("merchant_id"),
            name=f.opt_text("name"),
            scopes=f.texts("scopes"),
            state=f.text("state"),
            created_at=f.integer("created_at"),
            expires_at=f.opt_integer("expires_at"),
            revoked_at=f.opt_integer("revoked_at"),
            last_used_at=f.opt_integer("last_used_at"),
            replaced_by=f.opt_text("replaced_by"),
            doc=f.doc,
        )


@dataclass(frozen=True)
class NewApiKey(Answer):
    """A key just made or rotated: ``key`` is the whole ``sk_live_...`` secret, in this answer
    only; ``previous`` the rotated key, now expiring."""

    info: ApiKeyInfo
    key: str
    previous: ApiKeyInfo | None

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the creation or rotation answer."""
        f = Fields(doc, "new API key")
        previous = ApiKeyInfo.from_json(f.obj("previous")) if f.has("previous") else None
        return cls(ApiKeyInfo.from_json(doc), f.text("key"), previous, doc=f.doc)


@dataclass(frozen=True)
class ApiKeyList(Answer):
    """The merchant's keys (``{"api_keys": [...]}``)."""

    api_keys: tuple[ApiKeyInfo, ...]

    @classmethod
    def from_json(cls, doc: object) -> Self:
        """From the key list."""
        f = Fields(doc, "API key list")
        return cls(rows_of(ApiKeyInfo.from_json, doc, "api_keys", f.what), doc=f.doc)


__all__ = [
    "ApiKeyInfo",
    "ApiKeyList",
    "Delivery",
    "DeliveryPage",
    "NewApiKey",
    "Resend",
    "Retention",
    "SecretInfo",
    "WebhookEndpoint",
    "WebhookSecret",
    "WebhookTest",
]
