"""The web POS (``safescan pos serve``): a Starlette app that holds the merchant's credentials.

The browser never sees the API key. It talks only to this server:

- ``GET /``: the counter page (enter items, show the QR code, live status, refund button);
- ``GET /shop`` and ``GET /checkout/{order}``: an online-store checkout (summary, QR, status);
- ``POST /api/orders``, ``GET /api/orders/{id}`` (+ ``/qr.svg``, ``/qr.png``, ``/events``),
  ``POST /api/orders/{id}/refund``, ``POST /api/orders/{id}/close``.

One background task follows the institution's live event stream. An order is shown as paid
only after (1) the event's institution signature verifies and (2) the payment's signed receipt
verifies and matches the order (merchant, order id, amount, currency, code digest). Pages get
updates over server-sent events. Every state-changing request must carry this server's
anti-CSRF token (embedded in its pages), so other web sites cannot drive the terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
import sys
import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from safescan.code import qr
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import MalformedCode, SafescanError
from safescan.code.payment import LineItem
from safescan.merchant import pages
from safescan.merchant.client import (
    AsyncEventStream,
    MerchantApi,
    Order,
    order_summary,
    receipt_summary,
)
from safescan.merchant.config import PosConfig
from safescan.merchant.journal import Journal
from safescan.remote import InstitutionUnreachable

log = logging.getLogger("safescan.merchant.web")

MAX_BODY = 16 * 1024
CSRF_HEADER = "X-CSRF-Token"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
        " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
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
    state: str = "CREATED"
    receipt: dict[str, Any] | None = None
    refunded: int = 0
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """JSON for the pages (``qr_px``: a whole number of pixels per module, crisp edges)."""
        cur = lookup_currency(self.order.currency)
        modules = qr.make_qr(self.order.code).size_with_quiet_zone
        return {
            "qr_px": modules * max(1, 300 // modules),
            **order_summary(self.order),
            "state": self.state,
            "receipt": self.receipt,
            "refunded": self.refunded,
            "refunded_display": cur.format(self.refunded) if self.refunded else "",
            "message": self.message,
            "qr_svg": f"/api/orders/{self.order.order_id}/qr.svg",
            "qr_png": f"/api/orders/{self.order.order_id}/qr.png",
            "checkout_url": f"/checkout/{self.order.order_id}",
        }


@dataclass
class PosState:
    """The server's state: credentials, known orders, page subscribers, stream health."""

    config: PosConfig
    api: MerchantApi
    journal: Journal
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    orders: dict[str, OrderView] = field(default_factory=dict)
    listeners: dict[str, set[asyncio.Queue[dict[str, Any]]]] = field(default_factory=dict)
    stream_up: bool = False
    rejected_events: int = 0

    def publish(self, view: OrderView) -> None:
        """Send the order's new state to every page watching it."""
        doc = view.to_json()
        for q in self.listeners.get(view.order.order_id, set()):
            q.put_nowait(doc)


def _json_error(exc: SafescanError, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": exc.to_dict()}, status_code=status, headers=SECURITY_HEADERS)


def _status_for(exc: SafescanError) -> int:
    if isinstance(exc, InstitutionUnreachable):
        return 502
    status = getattr(exc, "status", None)
    return status if isinstance(status, int) and 400 <= status < 600 else 400


async def _body(request: Request) -> bytes:
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            raise MalformedCode("the request is too large")
    return data


def _check_csrf(request: Request, state: PosState, form: dict[str, str] | None = None) -> None:
    token = request.headers.get(CSRF_HEADER) or (form or {}).get("csrf", "")
    if not secrets.compare_digest(token.encode(), state.csrf.encode()):
        raise PosRequestRefused("this request did not come from this terminal's pages")


class PosRequestRefused(SafescanError):
    """A page request was refused (missing anti-CSRF token, unknown order, bad input)."""

    code = "pos_request_refused"


class PosServeError(SafescanError):
    """The web POS cannot start (for example, the port is taken)."""

    code = "pos_serve_error"


def _items_from_json(doc: object) -> list[LineItem]:
    if not isinstance(doc, dict) or not isinstance(doc.get("items"), list) or not doc["items"]:
        raise MalformedCode('send {"items": [{"name", "quantity", "unit_price"}, ...]}')
    items = []
    for raw in doc["items"]:
        if not isinstance(raw, dict):
            raise MalformedCode("each item is an object")
        name, qty, price = raw.get("name"), raw.get("quantity"), raw.get("unit_price")
        if not isinstance(name, str) or not isinstance(qty, int) or not isinstance(price, int):
            raise MalformedCode("an item needs a name, a whole quantity and a unit price")
        items.append(LineItem(name.strip(), qty, price).validated())
    return items


def create_app(config: PosConfig, *, journal: Journal | None = None) -> Starlette:
    """The web POS application for one merchant configuration."""
    state = PosState(config, MerchantApi(config), journal or Journal(config.journal_path))

    def view(order_id: str) -> OrderView:
        found = state.orders.get(order_id)
        if found is None:
            raise PosRequestRefused(f"order {order_id} was not made on this terminal")
        return found

    async def refresh(v: OrderView) -> None:
        """Ask the institution (used after a stream reconnect)."""
        doc = await asyncio.to_thread(state.api.get_order, v.order.order_id)
        if doc.get("payment_id") and v.receipt is None:
            await mark_paid(v, str(doc["payment_id"]))
        elif doc.get("state") != v.state and doc.get("state") in ("CLOSED", "EXPIRED"):
            v.state = str(doc["state"])
            state.publish(v)

    async def mark_paid(v: OrderView, payment_id: str) -> None:
        try:
            receipt = await asyncio.to_thread(state.api.verified_receipt, payment_id, v.order)
        except SafescanError as exc:
            log.warning("payment %s refused: %s", payment_id, exc.message)
            v.message = f"a payment notice was refused: {exc.message}"
            state.publish(v)
            return
        v.state, v.receipt, v.message = "PAID", receipt_summary(receipt), ""
        await asyncio.to_thread(
            state.journal.update, v.order.order_id, {"state": "PAID", **v.receipt}
        )
        state.publish(v)

    def on_rejected(reason: str) -> None:
        state.rejected_events += 1
        log.warning("an event was refused: %s", reason)

    async def follow_stream() -> None:
        streamer = AsyncEventStream(config)
        after: int | None = None
        timeout = httpx.Timeout(10.0, read=30.0)
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        async def refresh_open_orders() -> None:
            for v in list(state.orders.values()):
                if v.state == "CREATED":
                    with contextlib.suppress(SafescanError):
                        await refresh(v)

        def opened() -> None:
            # Whatever happens from now on is on the stream; catch up on what came before.
            state.stream_up = True
            task = loop.create_task(refresh_open_orders())
            pending.add(task)
            task.add_done_callback(pending.discard)

        async with httpx.AsyncClient(timeout=timeout) as client:
            while True:
                try:
                    stream = streamer.events(
                        client, after=after, on_rejected=on_rejected, on_open=opened
                    )
                    async for event in stream:
                        after = event.seq or after
                        await handle(event.type, event.data)
                except SafescanError as exc:
                    log.warning("event stream: %s", exc.message)
                state.stream_up = False
                await asyncio.sleep(1.0)

    async def handle(kind: str, data: dict[str, Any]) -> None:
        v = state.orders.get(str(data.get("order_id")))
        if v is None:
            return
        if kind == "payment.succeeded" and v.receipt is None:
            await mark_paid(v, str(data.get("payment_id")))
        elif kind == "refund.succeeded":
            v.refunded = int(data.get("refunded_amount", v.refunded))
            v.state = str(data.get("order_state", v.state))
            state.publish(v)
        elif kind in ("order.closed", "order.expired") and v.state == "CREATED":
            v.state = "CLOSED" if kind == "order.closed" else "EXPIRED"
            state.publish(v)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(follow_stream())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            state.api.close()
            state.journal.close()

    async def make_order(items: list[LineItem], reference: str | None = None) -> OrderView:
        new = await asyncio.to_thread(
            state.api.create_order, items, reference=reference, expires_in=600
        )
        await asyncio.to_thread(state.journal.add, new)
        v = OrderView(new)
        state.orders[new.order_id] = v
        return v

    # --- pages -----------------------------------------------------------------------------

    def page(body: str, title: str, script: str) -> HTMLResponse:
        return HTMLResponse(
            pages.layout(title=title, body=body, csrf=state.csrf, script=script),
            headers=SECURITY_HEADERS,
        )

    async def index(_request: Request) -> Response:
        cur = lookup_currency(config.currency)
        return page(
            pages.pos_body(
                merchant=config.merchant_id, currency=cur.alpha, minor_units=cur.minor_units
            ),
            "safescan POS",
            "/static/pos.js",
        )

    async def shop(_request: Request) -> Response:
        cur = lookup_currency(config.currency)
        rows = [
            (i.name, i.quantity, cur.format(i.unit_price), cur.format(i.amount))
            for i in SHOP_PRODUCTS
        ]
        total = cur.format(sum(i.amount for i in SHOP_PRODUCTS))
        return page(pages.shop_body(rows, total, state.csrf), "Checkout", "/static/pos.js")

    async def start_checkout(request: Request) -> Response:
        try:
            form = {
                k: v[0]
                for k, v in urllib.parse.parse_qs(
                    (await _body(request)).decode("utf-8", "replace")
                ).items()
            }
            _check_csrf(request, state, form)
            v = await make_order(list(SHOP_PRODUCTS), reference="web-shop")
        except SafescanError as exc:
            return HTMLResponse(
                pages.error_page(exc.message),
                status_code=_status_for(exc),
                headers=SECURITY_HEADERS,
            )
        return RedirectResponse(f"/checkout/{v.order.order_id}", status_code=303)

    async def checkout(request: Request) -> Response:
        try:
            v = view(request.path_params["order_id"])
        except SafescanError as exc:
            return HTMLResponse(
                pages.error_page(exc.message), status_code=404, headers=SECURITY_HEADERS
            )
        return page(pages.checkout_body(v.to_json()), "Checkout", "/static/pos.js")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "pos.js":
            return Response(pages.POS_JS, media_type="text/javascript", headers=SECURITY_HEADERS)
        if name == "pos.css":
            return Response(pages.POS_CSS, media_type="text/css", headers=SECURITY_HEADERS)
        return Response("not found", status_code=404)

    # --- API for the pages ------------------------------------------------------------------

    async def api_create(request: Request) -> Response:
        try:
            _check_csrf(request, state)
            try:
                doc = json.loads(await _body(request))
            except ValueError:
                raise MalformedCode("the request is not JSON") from None
            v = await make_order(_items_from_json(doc))
        except SafescanError as exc:
            return _json_error(exc, _status_for(exc))
        return JSONResponse(v.to_json(), status_code=201, headers=SECURITY_HEADERS)

    async def api_get(request: Request) -> Response:
        try:
            return JSONResponse(
                view(request.path_params["order_id"]).to_json(), headers=SECURITY_HEADERS
            )
        except SafescanError as exc:
            return _json_error(exc, 404)

    async def api_qr(request: Request) -> Response:
        try:
            v = view(request.path_params["order_id"])
        except SafescanError as exc:
            return _json_error(exc, 404)
        if request.path_params["fmt"] == "svg":
            svg = await asyncio.to_thread(qr.render_svg, v.order.code, module_size=6)
            return Response(svg, media_type="image/svg+xml", headers=SECURITY_HEADERS)
        png = await asyncio.to_thread(qr.render_png, v.order.code, module_size=6)
        return Response(png, media_type="image/png", headers=SECURITY_HEADERS)

    async def api_events(request: Request) -> Response:
        try:
            v = view(request.path_params["order_id"])
        except SafescanError as exc:
            return _json_error(exc, 404)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        state.listeners.setdefault(v.order.order_id, set()).add(queue)

        async def gen() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 1000\n\n"
                yield _sse(v.to_json())
                while True:
                    try:
                        doc = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield _sse(doc)
            finally:
                state.listeners.get(v.order.order_id, set()).discard(queue)

        return StreamingResponse(
            gen(),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )

    async def api_refund(request: Request) -> Response:
        try:
            _check_csrf(request, state)
            v = view(request.path_params["order_id"])
            raw = await _body(request)
            try:
                doc = json.loads(raw) if raw else {}
            except ValueError:
                raise MalformedCode("the request is not JSON") from None
            amount = doc.get("amount") if isinstance(doc, dict) else None
            if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int)):
                raise MalformedCode("amount must be whole minor units")
            out = await asyncio.to_thread(state.api.refund, v.order.order_id, amount)
        except SafescanError as exc:
            return _json_error(exc, _status_for(exc))
        v.refunded = int(out.get("refunded_amount", v.refunded))
        v.state = str(out.get("order_state", v.state))
        state.publish(v)
        return JSONResponse(v.to_json(), status_code=201, headers=SECURITY_HEADERS)

    async def api_close(request: Request) -> Response:
        try:
            _check_csrf(request, state)
            v = view(request.path_params["order_id"])
            doc = await asyncio.to_thread(state.api.close_order, v.order.order_id)
        except SafescanError as exc:
            return _json_error(exc, _status_for(exc))
        v.state = str(doc.get("state", "CLOSED"))
        state.publish(v)
        return JSONResponse(v.to_json(), headers=SECURITY_HEADERS)

    async def health(_request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "stream": state.stream_up,
                "rejected_events": state.rejected_events,
                "merchant_id": config.merchant_id,
            }
        )

    routes = [
        Route("/", index),
        Route("/shop", shop),
        Route("/checkout", start_checkout, methods=["POST"]),
        Route("/checkout/{order_id}", checkout),
        Route("/static/{name}", static),
        Route("/health", health),
        Route("/api/orders", api_create, methods=["POST"]),
        Route("/api/orders/{order_id}", api_get),
        Route("/api/orders/{order_id}/qr.{fmt:str}", api_qr),
        Route("/api/orders/{order_id}/events", api_events),
        Route("/api/orders/{order_id}/refund", api_refund, methods=["POST"]),
        Route("/api/orders/{order_id}/close", api_close, methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.pos = state
    return app


def _sse(doc: dict[str, Any]) -> bytes:
    return f"event: order\ndata: {json.dumps(doc, separators=(',', ':'))}\n\n".encode()


def run(config: PosConfig, *, host: str = "127.0.0.1", port: int = 8090) -> None:
    """Serve the web POS; prints ``READY http://HOST:PORT`` once listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise PosServeError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = sock.getsockname()[1]
    app = create_app(config)
    server = uvicorn.Server(
        uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=2
        )
    )
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"READY http://{shown}:{bound}", flush=True)
    print(
        f"web POS for merchant {config.merchant_id} on http://{shown}:{bound}/"
        f"  (checkout page: /shop)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        log.info("web POS stopped after %.0f s", time.monotonic() - started)
