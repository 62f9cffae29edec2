"""Checkout sessions over HTTP (docs/checkout.md): the merchant's API and the hosted page.

Merchant (authenticated like every merchant route)::

    POST /v1/checkout/sessions               a session: lines, currency, return URLs, expiry
                                             (Idempotency-Key: a retry gets the first answer)
    POST /v1/checkout/sessions/lookup        what a creation whose answer was lost did
    GET  /v1/checkout/sessions/{id}          the session (settled after its order first)
    POST /v1/checkout/sessions/{id}/cancel   close it unpaid

The customer's browser (public, rate-limited per address; the session id in the URL is the
only key, 130 random bits)::

    GET /checkout/{id}                 the page (a package data file, the same for every session)
    GET /checkout/{id}/session         what the page shows (JSON)
    GET /checkout/{id}/qr.svg          the payment code as a QR image (while open)
    GET /checkout/{id}/events          server-sent ``status`` events until the session settles
    GET /checkout-assets/{name}        the page's script and style

Every page answer carries a strict Content-Security-Policy (scripts and styles from this origin
only, no inline script, no framing); what is dynamic reaches the page as JSON and is set with
``textContent``.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import asyncio
import json
import time
from collections.abc import AsyncIterator
from functools import cache
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from safescan.api.errors import NotFound
from safescan.api.fields import LineItemField, ShortText
from safescan.api.states import CheckoutState
from safescan.code.errors import SafescanError
from safescan.code.payment import MAX_ITEMS
from safescan.code.qrwarm import warm_qr_imaging
from safescan.institution import outcomes, wire
from safescan.institution.domain.checkout import DEFAULT_EXPIRY, MAX_EXPIRY, MIN_EXPIRY
from safescan.institution.http.common import (
    CurrencyCode,
    IdempotencyKey,
    Strict,
    client_address,
    created,
)
from safescan.institution.http.query import JSONRoute
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution

SessionId = Annotated[str, Path(pattern=r"^cs_[A-Z2-9]{26}$")]
#: a return URL as sent (checked by safescan.institution.domain.checkout_urls)
ReturnUrl = Annotated[str, Field(min_length=1, max_length=512)]
POLL_SECONDS = 0.25  # how often an open page's stream looks at its session
KEEPALIVE_SECONDS = 15.0

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
#: the page's files (package data in ``static/``) and their media types
ASSETS = {
    "checkout.html": "text/html; charset=utf-8",
    "checkout.js": "text/javascript; charset=utf-8",
    "checkout.css": "text/css; charset=utf-8",
}


@cache
def asset(name: str) -> bytes:
    """The bytes of page file ``name`` (one of :data:`ASSETS`)."""
    if name not in ASSETS:
        raise NotFound(f"no file {name}", param="name")
    return (resources.files("safescan.institution.http") / "static" / name).read_bytes()


class CheckoutCreate(Strict):
    """Make a checkout session: the order's lines, its currency, where the customer's browser
    goes after paying (``success_url``; ``{CHECKOUT_SESSION_ID}`` is replaced by the session's
    id) or giving up (``cancel_url``), how long it stays payable, the shop's own reference."""

    items: Annotated[list[LineItemField], Field(min_length=1, max_length=MAX_ITEMS)]
    currency: CurrencyCode
    success_url: ReturnUrl
    cancel_url: ReturnUrl
    expires_in: Annotated[int, Field(ge=MIN_EXPIRY, le=MAX_EXPIRY)] = DEFAULT_EXPIRY
    reference: ShortText | None = None


def base_url(request: Request, public_url: str | None) -> str:
    """Where shoppers reach this server: the operator's ``public_url``, else the scheme and the
    local address the connection reached (its socket's, not anything the client says). Never
    the request's ``Host`` header: a merchant's request (or a proxy or cache in between) with
    ``Host: evil.example`` would otherwise put evil.example in the link the shop hands its
    customers (host header injection)."""
    if public_url is not None:
        return public_url
    scheme = request.scope.get("scheme", "http")
    server = request.scope.get("server")
    if not server:
        return f"{scheme}://127.0.0.1"
    host, port = str(server[0]), server[1]
    if ":" in host:
        host = f"[{host}]"
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" if port in (None, default) else f"{scheme}://{host}:{port}"


def _hosted_url(request: Request, sid: str, public_url: str | None = None) -> str:
    """The session's page on this server (:func:`base_url`)."""
    return f"{base_url(request, public_url)}/checkout/{sid}"


def checkout_router(
    inst: Institution,
    reader: Any,
    writer: Any,
    *,
    limiter: RateLimiter,
    public_url: str | None = None,
) -> APIRouter:
    """The checkout routes over ``inst``; ``reader`` and ``writer`` are the authenticated-merchant
    dependency types (each yields the merchant id) that may read and make or cancel sessions;
    ``limiter`` limits the public routes per client address; ``public_url`` is the base of the
    hosted pages' links (:func:`base_url`)."""
    router = APIRouter(route_class=JSONRoute)

    def hosted_url(request: Request, sid: str) -> str:
        return _hosted_url(request, sid, public_url)

    def limited(request: Request) -> None:
        limiter.check(client_address(request))

    @router.post("/v1/checkout/sessions", status_code=201, tags=["checkout"])
    def create(
        body: CheckoutCreate,
        mid: writer,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Make a checkout session (and its order); answers with its hosted page's ``url``.
        With an ``Idempotency-Key`` a retry gets the first answer, exactly as sent but for the
        ``url``, made now (``public_url`` or the connection's address; never a stored one)."""
        warm_qr_imaging()  # its page will ask for qr.svg: import QR imaging off that request
        made = inst.checkout.create(
            mid,
            items=body.items,
            currency_code=body.currency,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
            expires_in=body.expires_in,
            reference=body.reference,
            idempotency_key=idempotency_key,
            page_url=lambda sid: hosted_url(request, sid),
        )
        return created(made, lambda s: wire.checkout_session(s, hosted_url(request, s.id)))

    @router.post("/v1/checkout/sessions/lookup", tags=["checkout"])
    def lookup(
        body: CheckoutCreate,
        mid: writer,
        request: Request,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        """What a session creation whose answer was lost did (same body, same key); settles
        it (``not_processed``: it never will be)."""
        return outcomes.lookup_checkout(
            inst,
            mid,
            idempotency_key,
            items=body.items,
            currency=body.currency,
            success_url=body.success_url,
            cancel_url=body.cancel_url,
            expires_in=body.expires_in,
            reference=body.reference,
            page_url=lambda sid: hosted_url(request, sid),
        )

    @router.get("/v1/checkout/sessions/{session_id}", tags=["checkout"])
    def get(session_id: SessionId, mid: reader, request: Request) -> dict[str, Any]:
        """A checkout session of the calling merchant (another merchant's: 404)."""
        s = inst.checkout.get(mid, session_id)
        return wire.checkout_session(s, hosted_url(request, s.id))

    @router.post("/v1/checkout/sessions/{session_id}/cancel", tags=["checkout"])
    def cancel(session_id: SessionId, mid: writer, request: Request) -> dict[str, Any]:
        """Cancel an open session: its code can no longer be paid (409 once paid or expired)."""
        s = inst.checkout.cancel(mid, session_id)
        return wire.checkout_session(s, hosted_url(request, s.id))

    # --- the customer's browser --------------------------------------------------------------

    @router.get("/checkout/{session_id}", include_in_schema=False)
    def page(session_id: SessionId, request: Request) -> Response:
        limited(request)
        inst.checkout.get(None, session_id)  # an unknown session: 404, no page
        warm_qr_imaging()  # qr.svg comes next (another API process may have made the session)
        return Response(
            asset("checkout.html"), media_type=ASSETS["checkout.html"], headers=PAGE_HEADERS
        )

    @router.get("/checkout/{session_id}/session", include_in_schema=False)
    def session(session_id: SessionId, request: Request) -> Response:
        limited(request)
        body = json.dumps(wire.hosted_checkout(inst.checkout.hosted(session_id)))
        return Response(body, media_type="application/json", headers=PAGE_HEADERS)

    @router.get("/checkout/{session_id}/qr.svg", include_in_schema=False)
    def qr(session_id: SessionId, request: Request) -> Response:
        limited(request)
        s = inst.checkout.get(None, session_id)
        if s.status is not CheckoutState.OPEN:
            raise NotFound(f"the checkout session is {s.status}: no code", param="session_id")
        # numpy, Pillow, zxing-cpp: only to draw one (warmed up by warm_qr_imaging above)
        from safescan.code.qr import render_svg

        return Response(render_svg(s.code), media_type="image/svg+xml", headers=PAGE_HEADERS)

    @router.get("/checkout/{session_id}/events", include_in_schema=False)
    def events(session_id: SessionId, request: Request) -> StreamingResponse:
        limited(request)
        first = inst.checkout.get(None, session_id)
        headers = {**PAGE_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(
            status_stream(inst, request, session_id, first.status),
            media_type="text/event-stream",
            headers=headers,
        )

    @router.get("/checkout-assets/{name}", include_in_schema=False)
    def files(name: Annotated[str, Path(pattern=r"^checkout\.(js|css)$")]) -> Response:
        return Response(
            asset(name),
            media_type=ASSETS[name],
            headers={**PAGE_HEADERS, "Cache-Control": "public, max-age=300"},
        )

    return router


def _status_event(status: CheckoutState) -> bytes:
    return f"event: status\ndata: {json.dumps({'status': status})}\n\n".encode()


async def status_stream(
    inst: Institution, request: Request, sid: str, status: CheckoutState
) -> AsyncIterator[bytes]:
    """``text/event-stream`` of the session's status: the current one at once, then each change
    (settling the session after its order), a keep-alive comment every 15 s; ends once the
    status is final or the client goes away (the page reconnects if the connection drops)."""
    yield b"retry: 1000\n\n" + _status_event(status)
    last_beat = time.monotonic()
    while status is CheckoutState.OPEN and not await request.is_disconnected():
        await asyncio.sleep(POLL_SECONDS)
        try:
            now = (await asyncio.to_thread(inst.checkout.get, None, sid)).status
        except SafescanError:
            continue  # the database is busy or away: look again (the page keeps its state)
        if now is not status:
            status = now
            yield _status_event(status)
        elif time.monotonic() - last_beat > KEEPALIVE_SECONDS:
            last_beat = time.monotonic()
            yield b": keep-alive\n\n"


__all__ = ["CSP", "CheckoutCreate", "asset", "checkout_router", "status_stream"]
