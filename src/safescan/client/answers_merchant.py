"""The answers of a merchant's webhook and API-key operations (``safescan pos webhook ...``,
``safescan pos apikey ...``): frozen dataclasses built from their JSON in one place each, with
the rules of :mod:`.fields` (a malformed answer is
:class:`~safescan.client.errors.InstitutionProtocolError`; ``to_json()`` gives back the
document as received)."""

from __future__ import annotations

from dataclasses import dataclass, field

from safescan.client.fields import SAME, Answer, wire

# --- webhooks -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Retention:
    """How long the delivery log keeps attempts: at most ``per_endpoint`` rows, ``max_age``
    seconds."""

    per_endpoint: int
    max_age: int


@dataclass(frozen=True)
class SecretInfo:
    """What the merchant may see of its ``whsec_`` secret: its version and dates (never the
    secret), and until when the previous one still signs."""

    version: int
    created_at: int
    rotated_at: int | None
    previous_valid_until: int | None


@dataclass(frozen=True)
class WebhookEndpoint(Answer, what="webhook endpoint"):
    """``GET /v1/merchant/webhook``: the URL, the ``v1a`` public key (``whpk_...``) and its key
    id, the secret's version and dates (None: no secret yet), the log's retention."""

    url: str | None
    secret: SecretInfo | None
    public_key: str
    kid: int
    retention: Retention


@dataclass(frozen=True)
class WebhookSecret(Answer, what="webhook secret"):
    """A new ``whsec_`` secret (shown in this answer only) and until when the previous one
    still signs."""

    secret: str
    version: int
    previous_valid_until: int | None


@dataclass(frozen=True)
class WebhookTest(Answer, what="webhook test"):
    """The outcome of one signed ``webhook.test`` delivery (``state``: delivered or failed)."""

    event_id: str
    url: str
    status: int | None  # the endpoint's HTTP status, if it answered
    error_kind: str | None
    error: str | None
    latency_ms: int
    state: str


@dataclass(frozen=True)
class Delivery(Answer, what="webhook delivery"):
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


@dataclass(frozen=True)
class DeliveryPage(Answer, what="webhook delivery log"):
    """The delivery log, newest first (page on with ``before=<the last id>``)."""

    deliveries: tuple[Delivery, ...]
    retention: Retention


@dataclass(frozen=True)
class Resend(Answer, what="resend"):
    """An event queued again (``requeued`` False: it was still pending, left as it was);
    ``request_id`` is the resend's, ``original_request_id`` the request that caused the
    event."""

    event_id: str
    state: str
    requeued: bool
    request_id: str | None
    original_request_id: str | None


# --- API keys -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKeyInfo(Answer, what="API key"):
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


@dataclass(frozen=True)
class NewApiKey(Answer, what="new API key"):
    """A key just made or rotated: ``key`` is the whole ``sk_live_...`` secret, in this answer
    only; ``previous`` the rotated key, now expiring."""

    info: ApiKeyInfo = field(metadata=wire(SAME))  # the key's fields are the answer's
    key: str
    previous: ApiKeyInfo | None = None  # absent unless rotated


@dataclass(frozen=True)
class ApiKeyList(Answer, what="API key list"):
    """The merchant's keys (``{"api_keys": [...]}``)."""

    api_keys: tuple[ApiKeyInfo, ...]


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
