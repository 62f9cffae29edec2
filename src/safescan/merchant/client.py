"""The merchant terminal's client for the institution's merchant API.

Every request is signed with the merchant's API key (:func:`safescan.api.merchant_auth.
sign_request`). Events come from the live stream (``GET /v1/merchant/events``, server-sent
events); each one is verified against the pinned institution keys before anyone sees it, and a
payment is only reported once its signed receipt verifies and matches the order.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from safescan.api.errors import InvalidRequest, NotFound
from safescan.api.merchant_auth import sign_request
from safescan.api.standard_webhooks import ID_PATTERN
from safescan.code.authorization import Receipt
from safescan.code.certs import TrustStore
from safescan.code.cli_input import whole_number
from safescan.code.currency import currency as lookup_currency
from safescan.code.envelope import decode_text
from safescan.code.errors import MalformedCode, SafescanError
from safescan.code.payment import LineItem
from safescan.merchant.config import PosConfig
from safescan.remote import (
    InstitutionHttp,
    InstitutionProtocolError,
    InstitutionUnreachable,
    OutcomeUnknown,
    decode_answer,
    encode_json,
    error_from_response,
    retry_budget,
    send_until_known,
    verify_receipt,
)

EVENTS_PATH = "/v1/merchant/events"


class OrderNotPaid(SafescanError):
    """The order ended (closed, expired) or waiting was stopped, without a payment."""

    code = "order_not_paid"


@dataclass(frozen=True)
class Order:
    """An order the institution created, with its sealed dynamic code."""

    order_id: str
    merchant_id: str
    code: str
    total: int
    currency: int
    expires_at: int
    code_bytes: int
    items: tuple[LineItem, ...]
    sealed_here: bool = False  # merchant-signed by this terminal (safescan.merchant.sealing)

    @property
    def digest(self) -> bytes:
        """SHA-256 of the binary code (what receipts refer to)."""
        return hashlib.sha256(decode_text(self.code)).digest()

    def total_display(self) -> str:
        """``12.50 EUR``."""
        return lookup_currency(self.currency).format(self.total)


@dataclass(frozen=True)
class VerifiedEvent:
    """A stream event whose institution signature verified."""

    seq: int
    type: str
    id: str
    created: int
    data: dict[str, Any]


def parse_item(spec: str) -> LineItem:
    """``"Flat white:2:350"`` -> ``LineItem("Flat white", 2, 350)`` (price in minor units)."""
    name, sep, rest = spec.rpartition(":")
    name2, sep2, qty = name.rpartition(":")
    if not sep or not sep2 or not name2.strip():
        raise MalformedCode(f"item {spec!r} must be NAME:QUANTITY:UNIT_PRICE (minor units)")
    quantity, price = whole_number(qty.strip()), whole_number(rest.strip())
    if quantity is None or price is None:
        raise MalformedCode(
            f"item {spec!r}: quantity and price must be whole numbers (the price in minor"
            " units: 350 = 3.50)"
        )
    return LineItem(name2.strip(), quantity, price).validated()


class SseParser:
    """Incremental ``text/event-stream`` parser: feed lines, get complete events."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = "message"
        self._id = ""

    def feed(self, line: str) -> tuple[str, str, str] | None:
        """One line (without newline); returns ``(id, event, data)`` at a blank line."""
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            out = (self._id, self._event, "\n".join(self._data))
            self._data, self._event = [], "message"
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


def _verified(
    sse_id: str, data: str, trust: TrustStore, on_rejected: Callable[[str], None] | None
) -> VerifiedEvent | None:
    # Imported here: the institution's webhook module pulls in its database layer.
    from safescan.api.events import verify_event

    try:
        event = verify_event(data, trust)
    except SafescanError as exc:
        if on_rejected is not None:
            on_rejected(exc.message)
        return None
    payload = event.get("data")
    return VerifiedEvent(
        seq=int(sse_id) if sse_id.isdigit() else 0,
        type=str(event.get("type", "")),
        id=str(event["id"]),
        created=int(event.get("created", 0)),
        data=payload if isinstance(payload, dict) else {},
    )


def _event_id(text: str) -> str:
    """An event id as the institution makes them (``evt_...``), or InvalidRequest."""
    if not ID_PATTERN.match(text):
        raise InvalidRequest(
            f"not an event id: {text!r} (they look like evt_...)", param="event_id"
        )
    return text


class MerchantApi:
    """Signed calls to the institution's merchant API, for one merchant."""

    def __init__(
        self,
        config: PosConfig,
        *,
        timeout: float = 10.0,
        tries: int | None = None,
        lookups: int = 3,
        retry_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.key = config.api_key
        self.remote = InstitutionHttp(config.institution_url, timeout=timeout)
        # state-changing calls ride through a failover: retried for `retry_seconds`
        # ($SAFESCAN_RETRY_SECONDS, 30 s), at most `tries` times when given (see _until_known)
        self.tries, self.lookups = tries, lookups
        self.retry_seconds = retry_budget(retry_seconds)

    def close(self) -> None:
        """Close connections."""
        self.remote.close()

    def __enter__(self) -> MerchantApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def merchant_id(self) -> str:
        """The merchant this terminal belongs to."""
        return self.config.merchant_id

    def signed_headers(
        self, method: str, path: str, body: bytes = b"", *, idempotency_key: str | None = None
    ) -> dict[str, str]:
        """Authentication headers for one request (the Idempotency-Key signed among them)."""
        return sign_request(
            self.key, self.merchant_id, method, path, body, idempotency_key=idempotency_key
        )

    def _call(
        self, method: str, path: str, payload: Any = None, *, idempotency_key: str | None = None
    ) -> Any:
        body = b"" if payload is None else encode_json(payload)
        headers = self.signed_headers(method, path, body, idempotency_key=idempotency_key)
        headers["Content-Type"] = "application/json"
        return decode_answer(self.remote.send(method, path, body=body, headers=headers))

    # --- orders -------------------------------------------------------------------------------

    def profile(self) -> dict[str, Any]:
        """The merchant's profile as the institution knows it."""
        return dict(self._call("GET", "/v1/merchant"))

    # --- webhook endpoint (safescan pos webhook ...) ---------------------------------------

    def webhook_endpoint(self) -> dict[str, Any]:
        """The webhook URL, the ``v1a`` public key, the secret's version and dates (never the
        secret) and the delivery log's retention."""
        return dict(self._call("GET", "/v1/merchant/webhook"))

    def set_webhook(self, url: str | None) -> dict[str, Any]:
        """Set (or clear, with None) the webhook URL; the institution checks it."""
        return dict(self._call("PUT", "/v1/merchant/webhook", {"url": url}))

    def rotate_webhook_secret(self, overlap_seconds: int) -> dict[str, Any]:
        """A new ``whsec_`` secret (the first, or a replacement; the previous one keeps
        signing for ``overlap_seconds``). Shown in this answer only."""
        return dict(
            self._call("POST", "/v1/merchant/webhook/secret", {"overlap_seconds": overlap_seconds})
        )

    def test_webhook(self) -> dict[str, Any]:
        """Send a signed ``webhook.test`` event now; the attempt's outcome."""
        return dict(self._call("POST", "/v1/merchant/webhook/test"))

    def webhook_deliveries(
        self, *, limit: int = 50, before: int | None = None, event_id: str | None = None
    ) -> dict[str, Any]:
        """The delivery log, newest first."""
        query = [f"limit={int(limit)}"]
        if before is not None:
            query.append(f"before={int(before)}")
        if event_id is not None:
            query.append(f"event_id={_event_id(event_id)}")
        return dict(self._call("GET", "/v1/merchant/webhook/deliveries?" + "&".join(query)))

    def resend_event(self, event_id: str) -> dict[str, Any]:
        """Queue one of this merchant's events for delivery again (idempotent)."""
        return dict(self._call("POST", f"/v1/merchant/events/{_event_id(event_id)}/resend"))

    def create_order(
        self,
        items: Sequence[LineItem],
        *,
        currency: str | None = None,
        expires_in: int = 300,
        reference: str | None = None,
        idempotency_key: str | None = None,
    ) -> Order:
        """Precreate an order; returns it with its sealed code (retries are idempotent)."""
        cur = lookup_currency(currency or self.config.currency)
        payload: dict[str, Any] = {
            "items": [
                {"name": i.name, "quantity": i.quantity, "unit_price": i.unit_price} for i in items
            ],
            "currency": cur.alpha,
            "expires_in": expires_in,
        }
        if reference:
            payload["reference"] = reference
        key = idempotency_key or "ord-" + secrets.token_urlsafe(16)
        doc = self._until_known("/v1/merchant/orders", payload, key, "order")
        try:
            order = Order(
                order_id=str(doc["order_id"]),
                merchant_id=str(doc["merchant_id"]),
                code=str(doc["code"]),
                total=int(doc["total"]),
                currency=int(doc["currency"]),
                expires_at=int(doc["expires_at"]),
                code_bytes=int(doc["code_bytes"]),
                items=tuple(items),
            )
        except (KeyError, TypeError, ValueError):
            raise InstitutionProtocolError("the institution's order answer is malformed") from None
        if order.merchant_id != self.merchant_id or order.total != sum(i.amount for i in items):
            raise InstitutionProtocolError("the institution returned an order we did not ask for")
        return order

    # --- merchant-side sealing (safescan.merchant.sealing) -------------------------------------

    def certify_code_key(self, public_key: bytes, valid_days: int) -> bytes:
        """Have the institution certify a code-signing key; returns the certificate (CBOR)."""
        doc = self._call(
            "POST",
            "/v1/merchant/certificates",
            {"public_key": base64.b64encode(public_key).decode(), "valid_days": valid_days},
        )
        return _b64(doc, "certificate")

    def scheme_key_list(self) -> bytes:
        """The institution-signed scheme key list (CBOR; verify before use)."""
        return _b64(decode_answer(self.remote.send("GET", "/v1/keys")), "scheme_key_list")

    def revocation_list(self) -> bytes:
        """The institution-signed revocation list (CBOR; verify before use)."""
        resp = self.remote.send("GET", "/v1/revocation-list?format=cbor")
        if resp.status_code != 200:
            raise error_from_response(resp)
        return resp.content

    def get_order(self, order_id: str) -> dict[str, Any]:
        """The order's current state (``CREATED``, ``PAID``, ``REFUNDED`` ...)."""
        return dict(self._call("GET", f"/v1/merchant/orders/{order_id}"))

    def close_order(self, order_id: str, *, code: str | None = None) -> dict[str, Any]:
        """Close an unpaid order so its code can no longer be paid (``code``: withdraw a code
        this terminal sealed itself, which the institution knows only from the code)."""
        payload = {} if code is None else {"code": code}
        return dict(self._call("POST", f"/v1/merchant/orders/{order_id}/close", payload))

    def refund(
        self,
        order_id: str,
        amount: int | None = None,
        *,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Refund an order fully (``amount`` None) or partly.

        Sent with one Idempotency-Key until its outcome is known (retried on timeouts, then
        looked up: see :func:`safescan.remote.send_until_known`). Raises the institution's
        typed refusal or :class:`~safescan.remote.RequestNotProcessed` when it is certain that
        no refund was made, and :class:`~safescan.remote.OutcomeUnknown` (with the key, to look
        it up later with :meth:`refund_outcome`) when it is not known."""
        payload: dict[str, Any] = {}
        if amount is not None:
            payload["amount"] = amount
        if reason:
            payload["reason"] = reason
        key = idempotency_key or "ref-" + secrets.token_urlsafe(16)
        path = f"/v1/merchant/orders/{order_id}/refunds"
        return dict(self._until_known(path, payload, key, "refund"))

    def refund_outcome(
        self,
        order_id: str,
        idempotency_key: str,
        amount: int | None = None,
        *,
        reason: str | None = None,
    ) -> dict[str, Any]:
        """What a refund whose answer was lost did (the same arguments and key): its lookup,
        which also settles it. ``{"outcome": "succeeded" | "refused" | "not_processed"}``."""
        payload: dict[str, Any] = {}
        if amount is not None:
            payload["amount"] = amount
        if reason:
            payload["reason"] = reason
        path = f"/v1/merchant/orders/{order_id}/refunds/lookup"
        return dict(self._call("POST", path, payload, idempotency_key=idempotency_key))

    def _until_known(self, path: str, payload: Any, key: str, what: str) -> Any:
        """POST with ``key`` until the outcome is known (each attempt signed afresh): it
        rides through a failover (:func:`safescan.remote.send_until_known`)."""
        try:
            return send_until_known(
                lambda: self._call("POST", path, payload, idempotency_key=key),
                lambda: self._call("POST", path + "/lookup", payload, idempotency_key=key),
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

    def payment(self, payment_id: str) -> dict[str, Any]:
        """A payment (with the payer pseudonym and the signed receipt)."""
        return dict(self._call("GET", f"/v1/merchant/payments/{payment_id}"))

    def verified_receipt(self, payment_id: str, order: Order | None = None) -> Receipt:
        """Fetch a payment's receipt and verify it (signature, merchant, and the order)."""
        doc = self.payment(payment_id)
        return verify_receipt(
            str(doc.get("receipt", "")),
            self.config.trust,
            merchant_id=self.merchant_id,
            order_id=order.order_id if order else None,
            amount=order.total if order else None,
            currency=order.currency if order else None,
            code_digest=order.digest if order else None,
        )

    # --- the live event stream ----------------------------------------------------------------

    def open_events(
        self, *, after: int | None = None, read_timeout: float = 20.0, until: float | None = None
    ) -> EventStream:
        """Open the live stream (use as a context manager, then iterate).

        Without ``after`` the stream starts at the newest event: whatever happens after the
        ``with`` block is entered is delivered. With ``until`` (unix time) iteration ends
        at that time even if only keep-alives arrive.
        """
        return EventStream(self, after=after, read_timeout=read_timeout, until=until)


class EventStream:
    """An open ``text/event-stream`` response yielding only verified events."""

    def __init__(
        self,
        api: MerchantApi,
        *,
        after: int | None,
        read_timeout: float,
        until: float | None = None,
    ) -> None:
        self.api = api
        self.until = until
        self.path = EVENTS_PATH if after is None else f"{EVENTS_PATH}?after={after}"
        self.timeout = httpx.Timeout(10.0, read=read_timeout)
        self.rejected: list[str] = []
        self._cm: Any = None
        self._resp: httpx.Response | None = None

    def __enter__(self) -> EventStream:
        headers = self.api.signed_headers("GET", self.path)
        headers["Accept"] = "text/event-stream"
        try:
            self._cm = self.api.remote.http.stream(
                "GET", self.path, headers=headers, timeout=self.timeout
            )
            resp = self._cm.__enter__()
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the institution's event stream cannot be opened ({type(exc).__name__})"
            ) from None
        if resp.status_code != 200:
            resp.read()
            self.close()
            raise error_from_response(resp)
        self._resp = resp
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the stream."""
        cm, self._cm, self._resp = self._cm, None, None
        if cm is not None:
            with contextlib.suppress(httpx.HTTPError):
                cm.__exit__(None, None, None)

    def __iter__(self) -> Iterator[VerifiedEvent]:
        """Verified events; rejected ones are recorded in :attr:`rejected`, never yielded."""
        if self._resp is None:
            raise InstitutionProtocolError("the event stream is not open")
        parser = SseParser()
        try:
            for line in self._resp.iter_lines():
                if self.until is not None and time.time() >= self.until:
                    return
                got = parser.feed(line)
                if got is None:
                    continue
                event = _verified(got[0], got[2], self.api.config.trust, self.rejected.append)
                if event is not None:
                    yield event
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the institution's event stream failed ({type(exc).__name__})"
            ) from None


class AsyncEventStream:
    """The same verified stream for asyncio code (the web POS)."""

    def __init__(self, config: PosConfig) -> None:
        self.config = config

    async def events(
        self,
        client: httpx.AsyncClient,
        *,
        after: int | None = None,
        on_rejected: Callable[[str], None] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[VerifiedEvent]:
        """Verified events; raises :class:`InstitutionUnreachable` when the stream fails."""
        path = EVENTS_PATH if after is None else f"{EVENTS_PATH}?after={after}"
        headers = sign_request(self.config.api_key, self.config.merchant_id, "GET", path)
        headers["Accept"] = "text/event-stream"
        parser = SseParser()
        url = self.config.institution_url.rstrip("/") + path
        try:
            async with client.stream("GET", url, headers=headers) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise error_from_response(resp)
                if on_open is not None:
                    on_open()
                async for line in resp.aiter_lines():
                    got = parser.feed(line)
                    if got is None:
                        continue
                    event = _verified(got[0], got[2], self.config.trust, on_rejected)
                    if event is not None:
                        yield event
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the institution's event stream failed ({type(exc).__name__})"
            ) from None


def _b64(doc: object, name: str) -> bytes:
    try:
        return base64.b64decode(str(doc[name]), validate=True)  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise InstitutionProtocolError(
            f"the institution's {name} is missing or not base64"
        ) from None


def _paid_already(api: MerchantApi, order: Order) -> tuple[VerifiedEvent, Receipt] | None:
    try:
        state = api.get_order(order.order_id)
    except NotFound:
        if not order.sealed_here:
            raise
        # sealed by this terminal: the institution records the order only when it is paid
        if time.time() >= order.expires_at:
            raise OrderNotPaid("the code expired without payment") from None
        return None
    if state.get("payment_id"):
        receipt = api.verified_receipt(str(state["payment_id"]), order)
        data = {
            "payment_id": receipt.payment_id,
            "order_id": order.order_id,
            "amount": receipt.amount,
            "currency": receipt.currency,
            "payer_pseudonym": receipt.payer_pseudonym,
            "paid_at": receipt.paid_at,
        }
        return VerifiedEvent(0, "payment.succeeded", "", receipt.paid_at, data), receipt
    if state.get("state") in ("CLOSED", "EXPIRED"):
        raise OrderNotPaid(f"the order is {str(state['state']).lower()}, without payment")
    return None


def wait_for_payment(
    api: MerchantApi,
    order: Order,
    *,
    stop: threading.Event | None = None,
    on_event: Callable[[VerifiedEvent], None] | None = None,
    read_timeout: float = 20.0,
) -> tuple[VerifiedEvent, Receipt]:
    """Block until the order is paid; returns the verified event and the verified receipt.

    The event must verify, and the receipt it points to must verify and match the order
    (merchant, order id, amount, currency, code digest). The order's state is checked each
    time the stream (re)opens, so a payment made before that is not missed. Raises
    :class:`OrderNotPaid` if the order is closed or expires, or ``stop`` is set.
    """
    after: int | None = None
    while stop is None or not stop.is_set():
        until = order.expires_at + 1 if order.sealed_here else None
        with api.open_events(after=after, read_timeout=read_timeout, until=until) as stream:
            done = _paid_already(api, order)
            if done is not None:
                return done
            try:
                for event in stream:
                    after = event.seq or after
                    if on_event is not None:
                        on_event(event)
                    if stop is not None and stop.is_set():
                        break
                    if event.data.get("order_id") != order.order_id:
                        continue
                    if event.type == "payment.succeeded":
                        pid = str(event.data.get("payment_id"))
                        return event, api.verified_receipt(pid, order)
                    if event.type in ("order.closed", "order.expired"):
                        kind = event.type.split(".")[1]
                        raise OrderNotPaid(f"the order was {kind} without payment")
            except InstitutionUnreachable:
                pass  # the stream dropped: reconnect (a dead institution fails the reopen)
        if stop is not None:
            stop.wait(0.3)
        else:
            time.sleep(0.3)
    raise OrderNotPaid("stopped while waiting for the payment")


def order_summary(order: Order) -> dict[str, Any]:
    """A JSON-ready description of an order."""
    cur = lookup_currency(order.currency)
    return {
        "order_id": order.order_id,
        "merchant_id": order.merchant_id,
        "items": [
            {
                "name": i.name,
                "quantity": i.quantity,
                "unit_price": i.unit_price,
                "amount": i.amount,
                "display": cur.format(i.amount),
            }
            for i in order.items
        ],
        "total": order.total,
        "total_display": cur.format(order.total),
        "currency": cur.alpha,
        "expires_at": order.expires_at,
        "code_bytes": order.code_bytes,
        "sealed_here": order.sealed_here,
    }


def receipt_summary(receipt: Receipt) -> dict[str, Any]:
    """A JSON-ready description of a verified receipt."""
    return {
        "payment_id": receipt.payment_id,
        "order_id": receipt.order_id,
        "merchant_id": receipt.merchant_id,
        "amount": receipt.amount,
        "currency": lookup_currency(receipt.currency).alpha,
        "amount_display": lookup_currency(receipt.currency).format(receipt.amount),
        "payer_pseudonym": receipt.payer_pseudonym,
        "paid_at": receipt.paid_at,
        "issuer_kid": receipt.issuer_kid,
        "signature_verified": True,
    }
