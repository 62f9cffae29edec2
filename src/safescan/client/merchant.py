"""The institution's merchant API: every request authenticated with a secret API key
(:class:`~safescan.client.credentials.SecretKey`, Bearer) or signed with the merchant's signing
key (:func:`safescan.api.merchant_auth.sign_request`). One service per resource:

    api = MerchantClient(url, merchant_id, SecretKey("sk_live_..."), trust)  # or a SigningKey
    order = api.orders.create([LineItem("Tea", 1, 250)], currency="EUR")
    api.orders.get(order.order_id).state             # OrderState.CREATED, .PAID, ...
    api.refunds.create(order.order_id, amount=100)   # rides through a failover
    with api.events.open() as stream: ...            # verified events only

State-changing calls (orders, refunds, checkout sessions, API key creation and rotation) are
sent with one Idempotency-Key until their outcome is known
(:func:`safescan.client.retry.send_until_known`). Every answer is a typed object of
:mod:`safescan.client.answers` / :mod:`safescan.client.answers_merchant`.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from safescan.api.errors import InvalidRequest
from safescan.api.schema import Amount
from safescan.api.standard_webhooks import ID_PATTERN
from safescan.api.states import OrderState
from safescan.client.answers import (
    CheckoutSession,
    MerchantProfile,
    OrderPage,
    OrderView,
    PaymentView,
    RefundLookup,
    RefundMade,
    RefundRecord,
    SettlementRow,
    StaticCodeIssued,
    settlement_rows,
)
from safescan.client.answers_merchant import (
    ApiKeyInfo,
    ApiKeyList,
    DeliveryPage,
    NewApiKey,
    Resend,
    WebhookEndpoint,
    WebhookSecret,
    WebhookTest,
)
from safescan.client.credentials import MerchantCredential, auth_headers
from safescan.client.errors import InstitutionProtocolError, OutcomeUnknown
from safescan.client.events import EventStream
from safescan.client.fields import Answer, rows_of, wire
from safescan.client.http import DEFAULT_TIMEOUT, ApiClient, InstitutionHttp, JsonDoc, decode_object
from safescan.client.http import encode_json as encode_json
from safescan.client.public import KeyService, RevocationService
from safescan.client.retry import retry_budget, send_until_known
from safescan.client.trust import verify_receipt
from safescan.code.authorization import Receipt
from safescan.code.certs import TrustStore
from safescan.code.currency import currency as lookup_currency
from safescan.code.envelope import decode_text
from safescan.code.payment import LineItem

_ORDERS = "/v1/merchant/orders"


@dataclass(frozen=True)
class Order(Answer, what="order"):
    """An order the institution created, with its sealed dynamic code (``items``: the lines
    asked for, not in the answer)."""

    order_id: str
    merchant_id: str
    code: str
    total: Amount
    currency: int
    expires_at: int
    code_bytes: int
    items: tuple[LineItem, ...] = field(default=(), metadata=wire(None))
    # merchant-signed by this terminal (safescan.merchant.sealing)
    sealed_here: bool = field(default=False, metadata=wire(None))
    # as answered (not compared: a journal's order does not keep them)
    state: OrderState = field(
        default=OrderState.CREATED, compare=False, metadata=wire("state", required=True)
    )
    reference: str | None = field(
        default=None, compare=False, metadata=wire("reference", required=True)
    )

    @property
    def digest(self) -> bytes:
        """SHA-256 of the binary code (what receipts refer to)."""
        return hashlib.sha256(decode_text(self.code)).digest()

    def total_display(self) -> str:
        """``12.50 EUR``."""
        return lookup_currency(self.currency).format(self.total)


class _Signed:
    """Signed JSON calls for one merchant (shared by the services)."""

    def __init__(
        self,
        http: InstitutionHttp,
        merchant_id: str,
        api_key: MerchantCredential,
        *,
        tries: int | None,
        lookups: int,
        retry_seconds: float,
    ) -> None:
        self.http, self.merchant_id, self.key = http, merchant_id, api_key
        self.tries, self.lookups, self.retry_seconds = tries, lookups, retry_seconds

    def headers(
        self, method: str, path: str, body: bytes = b"", *, idempotency_key: str | None = None
    ) -> dict[str, str]:
        """Authentication headers for one request (the Idempotency-Key signed among them)."""
        return auth_headers(
            self.key, self.merchant_id, method, path, body, idempotency_key=idempotency_key
        )

    def call(
        self, method: str, path: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> JsonDoc:
        body = b"" if payload is None else encode_json(payload)
        headers = self.headers(method, path, body, idempotency_key=idempotency_key)
        headers["Content-Type"] = "application/json"
        return decode_object(self.http.send(method, path, body=body, headers=headers))

    def until_known(self, path: str, payload: Any, key: str, what: str) -> JsonDoc:
        """POST with ``key`` until the outcome is known (each attempt signed afresh): it
        rides through a failover (:func:`safescan.client.retry.send_until_known`)."""
        try:
            doc = send_until_known(
                lambda: self.call("POST", path, payload, idempotency_key=key),
                lambda: self.call("POST", path + "/lookup", payload, idempotency_key=key),
                what,
                budget=self.retry_seconds,
                tries=self.tries,
                lookups=self.lookups,
            )
        except OutcomeUnknown as exc:
            raise OutcomeUnknown(
                f"{exc.message}; check with the same request and Idempotency-Key {key}"
                f" (or its lookup, POST {path}/lookup): it is never done twice"
            ) from None
        if not isinstance(doc, dict):
            raise InstitutionProtocolError(f"the institution's {what} answer is malformed")
        return doc


class OrderService:
    """``/v1/merchant/orders``."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def create(
        self,
        items: Sequence[LineItem],
        *,
        currency: str,
        expires_in: int = 300,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Order:
        """Precreate an order; returns it with its sealed code (retries are idempotent)."""
        cur = lookup_currency(currency)
        payload: dict[str, Any] = {
            "items": [i.to_json() for i in items],
            "currency": cur.alpha,
            "expires_in": expires_in,
        }
        if reference:
            payload["reference"] = reference
        key = idempotency_key or "ord-" + secrets.token_urlsafe(16)
        answer = Order.from_json(self._s.until_known(_ORDERS, payload, key, "order"))
        order = dataclasses.replace(answer, items=tuple(items))
        if order.merchant_id != self._s.merchant_id or order.total != sum(i.amount for i in items):
            raise InstitutionProtocolError("the institution returned an order we did not ask for")
        return order

    def list(
        self, limit: int = 20, after: str | None = None, *, starting_after: str | None = None
    ) -> OrderPage:
        """The merchant's orders, newest first, ``limit`` (1-100) of them (``orders``); while
        ``has_more``, the next page starts after the last order id (``starting_after``;
        ``after`` is its older name)."""
        cursor = starting_after or after
        query: dict[str, str | int] = {"limit": limit}
        if cursor:
            query["starting_after"] = _cursor(cursor)
        return OrderPage.from_json(self._s.call("GET", f"{_ORDERS}?{urlencode(query)}"))

    def iterate(self, page_size: int = 100) -> Iterator[OrderView]:
        """Every order of the merchant, newest first, a page of ``page_size`` at a time."""
        cursor: str | None = None
        while True:
            page = self.list(page_size, starting_after=cursor)
            yield from page.orders
            if not page.has_more or not page.orders:
                return
            cursor = page.orders[-1].order_id

    def get(self, order_id: str) -> OrderView:
        """The order's current state (``state``: ``CREATED``, ``PAID``, ``REFUNDED`` ...;
        ``payment_id`` once paid)."""
        return OrderView.from_json(self._s.call("GET", f"{_ORDERS}/{order_id}"))

    def close(self, order_id: str, *, code: str | None = None) -> OrderView:
        """Close an unpaid order so its code can no longer be paid (``code``: withdraw a code
        this terminal sealed itself, which the institution knows only from the code)."""
        payload = {} if code is None else {"code": code}
        return OrderView.from_json(self._s.call("POST", f"{_ORDERS}/{order_id}/close", payload))


def _cursor(text: str) -> str:
    """An order id given as a page cursor, or InvalidRequest (it goes into a query)."""
    if not re.fullmatch(r"[A-Za-z0-9._:\-]{1,40}", text):
        raise InvalidRequest(f"not an order id: {text!r}", param="starting_after")
    return text


def _refund_payload(amount: int | None, reason: str | None) -> dict[str, Any]:
    payload: dict[str, Any] = {}
    if amount is not None:
        payload["amount"] = amount
    if reason:
        payload["reason"] = reason
    return payload


class RefundService:
    """``/v1/merchant/orders/{id}/refunds``."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def create(
        self,
        order_id: str,
        amount: int | None = None,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> RefundMade:
        """Refund an order fully (``amount`` None) or partly.

        Sent with one Idempotency-Key until its outcome is known (retried on timeouts, then
        looked up). Raises the institution's typed refusal or
        :class:`~safescan.client.errors.RequestNotProcessed` when it is certain that no refund
        was made, and :class:`~safescan.client.errors.OutcomeUnknown` (with the key, to look it
        up later with :meth:`lookup`) when it is not known."""
        key = idempotency_key or "ref-" + secrets.token_urlsafe(16)
        path = f"{_ORDERS}/{order_id}/refunds"
        doc = self._s.until_known(path, _refund_payload(amount, reason), key, "refund")
        return RefundMade.from_json(doc)

    def lookup(
        self,
        order_id: str,
        idempotency_key: str,
        amount: int | None = None,
        *,
        reason: str | None = None,
    ) -> RefundLookup:
        """What a refund whose answer was lost did (the same arguments and key): its lookup,
        which also settles it (``outcome``: succeeded with the ``refund``, refused with the
        ``error``, or not_processed)."""
        path = f"{_ORDERS}/{order_id}/refunds/lookup"
        payload = _refund_payload(amount, reason)
        return RefundLookup.from_json(
            self._s.call("POST", path, payload, idempotency_key=idempotency_key)
        )


class RefundListService:
    """``/v1/merchant/refunds``: the merchant's refunds (every terminal's)."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def list(
        self, *, day: str | None = None, order_id: str | None = None
    ) -> tuple[RefundRecord, ...]:
        """The refunds of one UTC day (``YYYY-MM-DD``) and/or one order, oldest first."""
        query = {k: v for k, v in (("date", day), ("order_id", order_id)) if v is not None}
        doc = self._s.call("GET", f"/v1/merchant/refunds?{urlencode(query)}")
        return rows_of(RefundRecord, doc, "refunds", RefundRecord.what)


class SettlementService:
    """``/v1/merchant/settlement``."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def day(self, day: str) -> tuple[SettlementRow, ...]:
        """The settlement rows of one UTC day (``YYYY-MM-DD``): one per currency with activity."""
        return settlement_rows(
            self._s.call("GET", f"/v1/merchant/settlement?{urlencode({'date': day})}")
        )


class StaticCodeService:
    """``/v1/merchant/static-codes``: sealed codes to print, the customer enters the amount."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def create(self, *, currency: str | None = None, valid_days: int = 365) -> StaticCodeIssued:
        """A new sealed static code."""
        payload: dict[str, Any] = {"valid_days": valid_days}
        if currency is not None:
            payload["currency"] = currency
        return StaticCodeIssued.from_json(
            self._s.call("POST", "/v1/merchant/static-codes", payload)
        )


class PaymentService:
    """``/v1/merchant/payments``."""

    def __init__(self, signed: _Signed, trust: TrustStore) -> None:
        self._s, self._trust = signed, trust

    def get(self, payment_id: str) -> PaymentView:
        """A payment (with the payer pseudonym and the signed receipt)."""
        return PaymentView.from_json(self._s.call("GET", f"/v1/merchant/payments/{payment_id}"))

    def verified_receipt(self, payment_id: str, order: Order | None = None) -> Receipt:
        """Fetch a payment's receipt and verify it (signature, merchant, and the order)."""
        return verify_receipt(
            self.get(payment_id).receipt,
            self._trust,
            merchant_id=self._s.merchant_id,
            order_id=order.order_id if order else None,
            amount=order.total if order else None,
            currency=order.currency if order else None,
            code_digest=order.digest if order else None,
        )


@dataclass(frozen=True)
class CodeCertificate(Answer, what="certificate"):
    """A code-signing key's certificate (CBOR), its serial and last valid day."""

    serial: int
    not_after: int
    certificate: bytes


class CertificateService:
    """``/v1/merchant/certificates``: code-signing keys for merchant-side sealing."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def issue(self, public_key: bytes, valid_days: int | None = None) -> CodeCertificate:
        """Have the institution certify a code-signing key for ``valid_days`` (None: the
        institution's default)."""
        payload: dict[str, Any] = {"public_key": base64.b64encode(public_key).decode()}
        if valid_days is not None:
            payload["valid_days"] = valid_days
        return CodeCertificate.from_json(self._s.call("POST", "/v1/merchant/certificates", payload))

    def create(self, public_key: bytes, valid_days: int | None = None) -> bytes:
        """:meth:`issue`'s certificate (CBOR)."""
        return self.issue(public_key, valid_days).certificate


def _event_id(text: str) -> str:
    """An event id as the institution makes them (``evt_...``), or InvalidRequest."""
    if not ID_PATTERN.fullmatch(text):  # (match: "$" also takes a final newline)
        raise InvalidRequest(
            f"not an event id: {text[:80]!r} (they look like evt_...)", param="event_id"
        )
    return text


class WebhookService:
    """``/v1/merchant/webhook``: the merchant's webhook endpoint, its secret, its delivery log
    (``safescan pos webhook ...``)."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def get(self) -> WebhookEndpoint:
        """The webhook URL, the ``v1a`` public key, the secret's version and dates (never the
        secret) and the delivery log's retention."""
        return WebhookEndpoint.from_json(self._s.call("GET", "/v1/merchant/webhook"))

    def set(self, url: str | None) -> MerchantProfile:
        """Set (or clear, with None) the webhook URL; the institution checks it. Returns the
        merchant's profile with its new URL."""
        return MerchantProfile.from_json(self._s.call("PUT", "/v1/merchant/webhook", {"url": url}))

    def rotate_secret(self, overlap_seconds: int) -> WebhookSecret:
        """A new ``whsec_`` secret (the first, or a replacement; the previous one keeps
        signing for ``overlap_seconds``). Shown in this answer only."""
        payload = {"overlap_seconds": overlap_seconds}
        return WebhookSecret.from_json(self._s.call("POST", "/v1/merchant/webhook/secret", payload))

    def test(self) -> WebhookTest:
        """Send a signed ``webhook.test`` event now; the attempt's outcome."""
        return WebhookTest.from_json(self._s.call("POST", "/v1/merchant/webhook/test"))

    def deliveries(
        self, *, limit: int = 50, before: int | None = None, event_id: str | None = None
    ) -> DeliveryPage:
        """The delivery log, newest first."""
        query: dict[str, str | int] = {"limit": int(limit)}
        if before is not None:
            query["before"] = int(before)
        if event_id is not None:
            query["event_id"] = _event_id(event_id)
        return DeliveryPage.from_json(
            self._s.call("GET", f"/v1/merchant/webhook/deliveries?{urlencode(query)}")
        )

    def resend(self, event_id: str) -> Resend:
        """Queue one of this merchant's events for delivery again (idempotent)."""
        return Resend.from_json(
            self._s.call("POST", f"/v1/merchant/events/{_event_id(event_id)}/resend")
        )


_SESSION_ID = re.compile(r"cs_[A-Z2-9]{26}")


def _session_id(text: str) -> str:
    """A checkout session id, or InvalidRequest (it goes into a path)."""
    if not _SESSION_ID.fullmatch(text):
        raise InvalidRequest(f"not a checkout session id: {text!r}", param="session_id")
    return text


class CheckoutService:
    """``/v1/checkout/sessions``: hosted checkout sessions (docs/checkout.md); an API key
    needs the ``checkout:write`` / ``checkout:read`` scopes."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def create(
        self,
        items: Sequence[LineItem],
        *,
        currency: str,
        success_url: str,
        cancel_url: str,
        expires_in: int | None = None,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> CheckoutSession:
        """A new open session (``url``: its hosted page, where the customer's browser goes).
        Sent with one Idempotency-Key until its outcome is known: never made twice."""
        payload: dict[str, Any] = {
            "items": [i.to_json() for i in items],
            "currency": currency,
            "success_url": success_url,
            "cancel_url": cancel_url,
        }
        if expires_in is not None:
            payload["expires_in"] = expires_in
        if reference is not None:
            payload["reference"] = reference
        key = idempotency_key or "cs-" + secrets.token_urlsafe(16)
        doc = self._s.until_known("/v1/checkout/sessions", payload, key, "checkout_session")
        return CheckoutSession.from_json(doc)

    def get(self, session_id: str) -> CheckoutSession:
        """A session (``status``: open, complete, expired or canceled)."""
        path = f"/v1/checkout/sessions/{_session_id(session_id)}"
        return CheckoutSession.from_json(self._s.call("GET", path))

    def cancel(self, session_id: str) -> CheckoutSession:
        """Cancel an open session (its code can no longer be paid)."""
        path = f"/v1/checkout/sessions/{_session_id(session_id)}/cancel"
        return CheckoutSession.from_json(self._s.call("POST", path))


class ApiKeyService:
    """``/v1/merchant/api-keys``: the merchant's secret API keys (signed requests only:
    ``safescan pos apikey ...``). A new key is in the creation or rotation answer only."""

    def __init__(self, signed: _Signed) -> None:
        self._s = signed

    def create(
        self,
        scopes: Sequence[str],
        *,
        name: str | None = None,
        expires_in: int | None = None,
        idempotency_key: str | None = None,
    ) -> NewApiKey:
        """A new key with ``scopes`` (``key``: the secret, shown this once). Sent with one
        Idempotency-Key until its outcome is known; if the answer holding the secret was lost,
        :class:`~safescan.api.errors.ApiKeyAlreadyCreated` names the key made (revoke it)."""
        payload, key = _new_key_request(scopes, name, expires_in, idempotency_key)
        doc = self._s.until_known("/v1/merchant/api-keys", payload, key, "api_key")
        return NewApiKey.from_json(doc)

    def list(self) -> ApiKeyList:
        """The keys (``api_keys``): prefix, scopes, state, dates, last use; never a secret."""
        return ApiKeyList.from_json(self._s.call("GET", "/v1/merchant/api-keys"))

    def rotate(
        self, key_id: str, grace_seconds: int, *, idempotency_key: str | None = None
    ) -> NewApiKey:
        """A replacement key (``key``, shown once); the old one works ``grace_seconds`` more.
        Retried with one Idempotency-Key as :meth:`create`."""
        payload = {"grace_seconds": grace_seconds}
        path = f"/v1/merchant/api-keys/{_key_id(key_id)}/rotate"
        key = idempotency_key or "rot-" + secrets.token_urlsafe(16)
        return NewApiKey.from_json(self._s.until_known(path, payload, key, "api_key"))

    def revoke(self, key_id: str) -> ApiKeyInfo:
        """Revoke a key now."""
        path = f"/v1/merchant/api-keys/{_key_id(key_id)}/revoke"
        return ApiKeyInfo.from_json(self._s.call("POST", path))


def _new_key_request(
    scopes: Sequence[str], name: str | None, expires_in: int | None, idempotency_key: str | None
) -> tuple[dict[str, Any], str]:
    """The body and the Idempotency-Key of a key creation (the merchant's or the
    administrator's): the scopes, the optional name and lifetime, a fresh key if none given."""
    payload: dict[str, Any] = {"scopes": list(scopes)}
    if name is not None:
        payload["name"] = name
    if expires_in is not None:
        payload["expires_in"] = expires_in
    return payload, idempotency_key or "key-" + secrets.token_urlsafe(16)


def _key_id(text: str) -> str:
    """A key id (or a key's ``sk_live_<id>`` prefix), or InvalidRequest."""
    key_id = text.removeprefix("sk_live_")
    if not re.fullmatch(r"[a-km-z2-9]{16}", key_id):
        raise InvalidRequest(f"not an API key id: {text!r}", param="key_id")
    return key_id


class EventService:
    """``/v1/merchant/events``: the live, verified event stream."""

    def __init__(self, signed: _Signed, trust: TrustStore) -> None:
        self._s, self._trust = signed, trust

    def open(
        self, *, after: int | None = None, read_timeout: float = 20.0, until: float | None = None
    ) -> EventStream:
        """Open the live stream (use as a context manager, then iterate).

        Without ``after`` the stream starts at the newest event: whatever happens after the
        ``with`` block is entered is delivered. With ``until`` (unix time) iteration ends
        at that time even if only keep-alives arrive.
        """
        return EventStream(
            self._s.http,
            lambda method, path: self._s.headers(method, path),
            self._trust,
            after=after,
            read_timeout=read_timeout,
            until=until,
        )


class MerchantClient(ApiClient):
    """Calls to the institution's merchant API for one merchant, authenticated by
    ``api_key``: a :class:`~safescan.client.credentials.SecretKey` (Bearer, its scopes) or the
    merchant's :class:`~safescan.code.keys.SigningKey` (signed requests, every scope)."""

    def __init__(
        self,
        base_url: str,
        merchant_id: str,
        api_key: MerchantCredential,
        trust: TrustStore,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        tries: int | None = None,
        lookups: int = 3,
        retry_seconds: float | None = None,
    ) -> None:
        super().__init__(base_url, timeout=timeout)
        # state-changing calls ride through a failover: retried for `retry_seconds`
        # ($SAFESCAN_RETRY_SECONDS, 30 s), at most `tries` times when given
        self._signed = _Signed(
            self.http,
            merchant_id,
            api_key,
            tries=tries,
            lookups=lookups,
            retry_seconds=retry_budget(retry_seconds),
        )
        self.trust = trust
        self.orders = OrderService(self._signed)
        self.refunds = RefundService(self._signed)
        self.refund_history = RefundListService(self._signed)
        self.settlements = SettlementService(self._signed)
        self.static_codes = StaticCodeService(self._signed)
        self.payments = PaymentService(self._signed, trust)
        self.certificates = CertificateService(self._signed)
        self.events = EventService(self._signed, trust)
        self.webhook = WebhookService(self._signed)
        self.api_keys = ApiKeyService(self._signed)
        self.checkout = CheckoutService(self._signed)
        self.keys = KeyService(self.http)
        self.revocations = RevocationService(self.http)

    @property
    def merchant_id(self) -> str:
        """The merchant this client speaks for."""
        return self._signed.merchant_id

    def profile(self) -> MerchantProfile:
        """The merchant's profile as the institution knows it (``GET /v1/merchant``)."""
        return MerchantProfile.from_json(self._signed.call("GET", "/v1/merchant"))

    def signed_headers(
        self, method: str, path: str, body: bytes = b"", *, idempotency_key: str | None = None
    ) -> dict[str, str]:
        """Authentication headers for one request (the Idempotency-Key signed among them)."""
        return self._signed.headers(method, path, body, idempotency_key=idempotency_key)
