"""Parts of the web POS: order views, request parsing, the Host/Origin guard, responses."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from safescan.client.errors import InstitutionUnreachable, OutcomeUnknown
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.code.payment import LineItem
from safescan.merchant import pages
from safescan.merchant.client import MerchantApi, Order, order_summary
from safescan.merchant.config import PosConfig
from safescan.merchant.journal import Journal
from safescan.merchant.staff import StaffStore
from safescan.merchant.websec import (
    HostPolicy,
    PosRequestRefused,
    Sessions,
    Throttle,
    WebRequestRefused,
    sign_in_throttle,
    staff_sessions,
)
from safescan.web import jsonbody

log = logging.getLogger("safescan.merchant.web")

MAX_BODY = 16 * 1024
REFUND_OFFER_SECONDS = 120
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # same-origin, not no-referrer: with no-referrer a browser sends "Origin: null" on its own
    # form posts, and the Origin check needs the real origin (nothing leaks to other sites)
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
SHOP_PRODUCTS = (
    LineItem("Flat white", 2, 350),
    LineItem("Croissant", 1, 180),
    LineItem("Orange juice", 1, 420),
)


@dataclass
class OrderView:
    """What the pages know about one order."""

    order: Order
    checkout: str  # the customer's capability token for this order's checkout page
    state: str = "CREATED"
    receipt: dict[str, Any] | None = None
    refunded: int = 0
    message: str = ""
    version: int = 0  # raised at every change published: a page keeps the newest it got

    def staff_json(self) -> dict[str, Any]:
        """Everything, for the signed-in staff."""
        cur = lookup_currency(self.order.currency)
        from safescan.code import qr  # numpy, zxing-cpp: once the staff look at an order

        modules = qr.make_qr(self.order.code).size_with_quiet_zone
        paid = self.receipt["amount"] if self.receipt else 0
        base = f"/api/orders/{self.order.order_id}"
        return {
            "qr_px": modules * max(1, 300 // modules),
            **order_summary(self.order),
            "state": self.state,
            "expires_in": max(0, self.order.expires_at - int(time.time())),
            "receipt": self.receipt,
            "refunded": self.refunded,
            "refunded_display": cur.format(self.refunded) if self.refunded else "",
            "refundable": max(0, paid - self.refunded),
            "refundable_display": cur.format(max(0, paid - self.refunded)),
            "minor_units": cur.minor_units,
            "message": self.message,
            "version": self.version,
            "qr_svg": f"{base}/qr.svg",
            "qr_png": f"{base}/qr.png",
            "events": f"{base}/events",
            "checkout_url": f"/shop/checkout/{self.checkout}",
        }

    def customer_json(self) -> dict[str, Any]:
        """What the paying customer may see: the basket, the code, whether it is paid."""
        doc = self.staff_json()
        base = f"/shop/checkout/{self.checkout}"
        return {
            "qr_px": doc["qr_px"],
            "items": doc["items"],
            "total_display": doc["total_display"],
            "state": self.state,
            "expires_in": doc["expires_in"],
            "paid": (
                {
                    "payment_id": self.receipt["payment_id"],
                    "amount_display": self.receipt["amount_display"],
                }
                if self.receipt
                else None
            ),
            "qr_svg": f"{base}/qr.svg",
            "qr_png": f"{base}/qr.png",
            "events": f"{base}/events",
        }


@dataclass
class RefundOffer:
    """A previewed refund waiting for the staff member's confirmation (single use)."""

    order_id: str
    amount: int
    reason: str | None
    sid: str
    expires: float
    user: str = ""


@dataclass
class PosState:
    """The server's state: credentials, known orders, sessions, page subscribers."""

    config: PosConfig
    api: MerchantApi
    journal: Journal
    staff: StaffStore
    hosts: HostPolicy
    sessions: Sessions = field(default_factory=staff_sessions)
    throttle: Throttle = field(default_factory=sign_in_throttle)
    orders: dict[str, OrderView] = field(default_factory=dict)
    checkouts: dict[str, str] = field(default_factory=dict)  # token -> order id
    offers: dict[str, RefundOffer] = field(default_factory=dict)
    listeners: dict[str, set[asyncio.Queue[OrderView]]] = field(default_factory=dict)
    stream_up: bool = False
    rejected_events: int = 0
    reconciled_at: float = 0.0  # when the institution's order list was last read (Unix time)

    def publish(self, view: OrderView) -> None:
        """Tell every page watching the order (a new ``version``: an answer to a page's own
        request that arrives after a newer message is older, and not shown)."""
        view.version += 1
        for q in self.listeners.get(view.order.order_id, set()):
            q.put_nowait(view)


def _status_for(exc: SafescanError) -> int:
    if isinstance(exc, OutcomeUnknown):
        return 504  # sent, outcome not known: the page says so, never "not refunded"
    if isinstance(exc, InstitutionUnreachable):
        return 502
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else 400


def _json_error(exc: SafescanError) -> JSONResponse:
    return JSONResponse(
        {"error": exc.to_dict()}, status_code=_status_for(exc), headers=SECURITY_HEADERS
    )


def _html_error(exc: SafescanError) -> HTMLResponse:
    return HTMLResponse(
        pages.error_page(exc.message), status_code=_status_for(exc), headers=SECURITY_HEADERS
    )


async def _body(request: Request) -> bytes:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise PosRequestRefused("the request is too large")
    return data


async def _json_body(request: Request) -> dict[str, Any]:
    raw = await _body(request)
    try:
        doc = jsonbody.loads(raw or b"{}")
    except ValueError:  # invalid JSON, lone surrogates, NaN, too deep (web.jsonbody)
        raise PosRequestRefused("the request is not JSON") from None
    if not isinstance(doc, dict):
        raise PosRequestRefused("the request is not a JSON object")
    return doc


async def _form(request: Request) -> dict[str, str]:
    raw = (await _body(request)).decode("utf-8", "replace")
    return {k: v[0] for k, v in urllib.parse.parse_qs(raw, max_num_fields=20).items()}


class Guard:
    """ASGI middleware: Host allow-list for every request, Origin for every change."""

    def __init__(self, app: ASGIApp, hosts: HostPolicy) -> None:
        self.app, self.hosts = app, hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        try:
            host = self.hosts.check_host(request.headers.get("host"))
            self.hosts.check_origin(
                request.method,
                request.headers.get("origin"),
                request.headers.get("sec-fetch-site"),
                host,
                scope.get("scheme", "http"),
            )
        except WebRequestRefused as exc:
            log.warning("refused %s %s: %s", request.method, scope["path"], exc.code)
            wants_json = scope["path"].startswith(("/api/", "/shop/checkout/"))
            resp = _json_error(exc) if wants_json else _html_error(exc)
            await resp(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _sse(doc: dict[str, Any]) -> bytes:
    return f"event: order\ndata: {json.dumps(doc, separators=(',', ':'))}\n\n".encode()
