"""The web POS (``safescan pos serve``): a Starlette app that holds the merchant's credentials.

The browser never sees the API key. Two kinds of visitor, kept apart:

- **staff** sign in (``GET/POST /login``, ``POST /logout``) and then use the counter page
  ``GET /`` and its API: ``POST /api/orders``, ``GET /api/orders/{id}`` (+ ``/qr.svg``,
  ``/qr.png``, ``/events``), ``POST /api/orders/{id}/close``, and refunds in two steps,
  ``POST /api/orders/{id}/refunds/preview`` (amount, reason: what will happen) then
  ``POST /api/orders/{id}/refunds`` with the preview's single-use confirmation;
- **customers** see the online store ``GET /shop``, start a checkout ``POST /shop/checkout``
  and follow their own order at ``/shop/checkout/{token}`` (+ ``/state``, ``/qr.svg``,
  ``/qr.png``, ``/events``): the token is a capability for that one order's status, and no
  staff route accepts it.

Every request passes the Host allow-list and every state-changing one the Origin check
(:mod:`.websec`); staff requests need a live session, and the changing ones its CSRF token.
One background task follows the institution's live event stream; an order is shown as paid
only once the event's signature and the payment's signed receipt verify and match the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

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
from starlette.types import ASGIApp

from safescan.api import obslog
from safescan.client.events import AsyncEventStream
from safescan.code.currency import currency as lookup_currency
from safescan.code.errors import SafescanError
from safescan.code.payment import LineItem
from safescan.merchant import assets, backoffice, pages, posorders
from safescan.merchant.client import MerchantApi
from safescan.merchant.config import PosConfig
from safescan.merchant.input import items_from_json
from safescan.merchant.journal import Journal
from safescan.merchant.staff import StaffStore
from safescan.merchant.webparts import (
    MAX_BODY,
    SECURITY_HEADERS,
    SHOP_PRODUCTS,
    Guard,
    OrderView,
    PosState,
    _form,
    _html_error,
    _json_body,
    _json_error,
    _sse,
    _status_for,
)
from safescan.merchant.websec import (
    CSRF_HEADER,
    LOGIN_COOKIE,
    SESSION_COOKIE,
    HostPolicy,
    PosRequestRefused,
    Session,
    WebRequestRefused,
    check_csrf,
    cleared_cookie,
    default_hosts,
    journal_sessions,
    login_cookie,
    session_cookie,
)
from safescan.web.listen import listen
from safescan.web.serving import ConnectionSection, guarded_server, in_background
from safescan.web.tls import TlsFiles, is_loopback, scheme

log = logging.getLogger("safescan.merchant.web")


class PosServeError(SafescanError):
    """The web POS cannot start (for example, the port is taken, or no staff account)."""

    code = "pos_serve_error"


def create_app(
    config: PosConfig,
    *,
    journal: Journal | None = None,
    staff: StaffStore | None = None,
    hosts: HostPolicy | None = None,
) -> ASGIApp:
    """The web POS application for one merchant configuration."""
    base = config.path if config.path is not None else Path("pos.json")
    journal = journal or Journal(config.journal_path)
    state = PosState(
        config,
        MerchantApi(config),
        journal,
        staff or StaffStore.for_config(base),
        hosts or HostPolicy(default_hosts("127.0.0.1")),
        sessions=journal_sessions(journal),
    )
    posorders.restore(state)

    def known(order_id: str) -> OrderView:
        found = state.orders.get(order_id)
        if found is None:
            raise PosRequestRefused(f"order {order_id} was not made on this terminal")
        return found

    def customer_view(token: str) -> OrderView:
        order_id = state.checkouts.get(token)
        if order_id is None:
            raise PosRequestRefused("no such checkout")
        return state.orders[order_id]

    def staff_session(request: Request) -> tuple[str, Session]:
        sid = request.cookies.get(SESSION_COOKIE, "")
        users = state.staff.users()
        return sid, state.sessions.get(sid, lambda user: user in users)

    def changing(request: Request, form: dict[str, str] | None = None) -> tuple[str, Session]:
        sid, session = staff_session(request)
        check_csrf(session, request.headers.get(CSRF_HEADER) or (form or {}).get("csrf"))
        return sid, session

    async def follow_stream() -> None:
        after: int | None = None
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Task[None]] = set()

        async def catch_up() -> None:
            # what happened while the stream was down: the institution's newest orders
            try:
                await posorders.reconcile(state, pages=1 if state.reconciled_at else 10)
            except SafescanError as exc:
                log.warning("reconciling with the institution: %s", exc.message)

        def opened() -> None:
            state.stream_up = True
            task = loop.create_task(catch_up())
            pending.add(task)
            task.add_done_callback(pending.discard)

        def rejected(reason: str) -> None:
            state.rejected_events += 1
            log.warning("an event was refused: %s", reason)

        streamer = AsyncEventStream(
            config.institution_url, config.merchant_id, config.api_key, config.trust
        )
        async with streamer:
            while True:
                try:
                    stream = streamer.events(after=after, on_rejected=rejected, on_open=opened)
                    async for event in stream:
                        after = event.seq or after
                        try:
                            await posorders.handle_event(state, event)
                        except SafescanError as exc:
                            log.warning("event %s: %s", event.type, exc.message)
                except SafescanError as exc:
                    log.warning("event stream: %s", exc.message)
                state.stream_up = False
                await asyncio.sleep(1.0)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            async with in_background(follow_stream()):
                yield
        finally:
            state.api.close()
            state.journal.close()

    async def make_order(items: list[LineItem], reference: str | None = None) -> OrderView:
        new = await asyncio.to_thread(
            state.api.create_order, items, reference=reference, expires_in=600
        )
        v = OrderView(new, secrets.token_urlsafe(24))
        await asyncio.to_thread(state.journal.add, new, checkout=v.checkout, reference=reference)
        state.orders[new.order_id] = v
        state.checkouts[v.checkout] = new.order_id
        return v

    def page(
        body: str, title: str, script: str, csrf: str = "", nav: str = "", status: int = 200
    ) -> HTMLResponse:
        return HTMLResponse(
            pages.layout(title=title, body=body, csrf=csrf, script=script, nav=nav),
            status_code=status,
            headers=SECURITY_HEADERS,
        )

    def secure(request: Request) -> bool:
        return request.url.scheme == "https"

    # --- staff: sign in and out -------------------------------------------------------------

    async def login_form(request: Request, error: str = "", status: int = 200) -> Response:
        nonce = secrets.token_urlsafe(24)
        resp = page(pages.login_body(nonce, error), "Staff sign-in", "/static/pos.js")
        resp.status_code = status
        resp.headers.append("Set-Cookie", login_cookie(nonce, secure=secure(request)))
        return resp

    async def login_page(request: Request) -> Response:
        return await login_form(request)

    async def login(request: Request) -> Response:
        try:
            form = await _form(request)
            cookie = request.cookies.get(LOGIN_COOKIE, "")
            if not cookie or not secrets.compare_digest(
                cookie.encode(), form.get("nonce", "").encode()
            ):
                raise PosRequestRefused("the sign-in form expired: try again")
            name = form.get("name", "")[:64]
            address = request.client.host if request.client else "unknown"
            state.throttle.check(f"name:{name}", f"addr:{address}")
            ok = await asyncio.to_thread(state.staff.verify, name, form.get("password", ""))
            if not ok:
                state.throttle.fail(f"name:{name}", f"addr:{address}")
                log.warning("failed sign-in from %s", address)
                return await login_form(request, "Wrong name or password.", 401)
        except WebRequestRefused as exc:
            return await login_form(request, exc.message, _status_for(exc))
        state.throttle.succeed(f"name:{name}")
        state.sessions.end(request.cookies.get(SESSION_COOKIE))  # no fixation: always a new id
        sid, _session = state.sessions.create(name)
        resp = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
        resp.headers.append("Set-Cookie", session_cookie(sid, secure=secure(request)))
        resp.headers.append("Set-Cookie", cleared_cookie(LOGIN_COOKIE, secure=secure(request)))
        return resp

    async def logout(request: Request) -> Response:
        try:
            sid, _session = changing(request, await _form(request))
        except WebRequestRefused as exc:
            return _html_error(exc)
        state.sessions.end(sid)
        resp = RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
        resp.headers.append("Set-Cookie", cleared_cookie(SESSION_COOKIE, secure=secure(request)))
        return resp

    # --- staff: the counter page and its API --------------------------------------------------

    async def index(request: Request) -> Response:
        try:
            _sid, session = staff_session(request)
        except WebRequestRefused:
            return RedirectResponse("/login", status_code=303, headers=SECURITY_HEADERS)
        cur = lookup_currency(config.currency)
        body = pages.pos_body(
            merchant=config.merchant_id,
            currency=cur.alpha,
            minor_units=cur.minor_units,
            user=session.user,
            csrf=session.csrf,
        )
        return page(body, "safescan POS", "/static/pos.js", session.csrf, nav="counter")

    def staff_api(
        handler: Callable[[Request, str], Awaitable[Response]], *, changes: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                sid, _session = changing(request) if changes else staff_session(request)
                return await handler(request, sid)
            except SafescanError as exc:
                return _json_error(exc)

        return run

    async def api_create(request: Request, _sid: str) -> Response:
        v = await make_order(items_from_json(await _json_body(request)))
        return JSONResponse(v.staff_json(), status_code=201, headers=SECURITY_HEADERS)

    async def api_get(request: Request, _sid: str) -> Response:
        return JSONResponse(
            known(request.path_params["order_id"]).staff_json(), headers=SECURITY_HEADERS
        )

    async def api_close(request: Request, _sid: str) -> Response:
        v = known(request.path_params["order_id"])
        closed = await asyncio.to_thread(state.api.orders.close, v.order.order_id)
        await posorders.apply(state, closed)
        return JSONResponse(v.staff_json(), headers=SECURITY_HEADERS)

    def order_json(order_id: str) -> dict[str, Any]:
        v = state.orders.get(order_id)
        return v.staff_json() if v is not None else state.journal.get(order_id) or {}

    async def refund_preview(request: Request, sid: str) -> Response:
        user = state.sessions.get(sid).user
        out = await posorders.preview_refund(
            state, request.path_params["order_id"], await _json_body(request), sid, user
        )
        return JSONResponse(out, status_code=201, headers=SECURITY_HEADERS)

    async def refund(request: Request, sid: str) -> Response:
        order_id = request.path_params["order_id"]
        doc = await _json_body(request)
        await posorders.confirm_refund(state, order_id, doc.get("confirmation"), sid)
        return JSONResponse(order_json(order_id), status_code=201, headers=SECURITY_HEADERS)

    async def staff_qr(request: Request, _sid: str) -> Response:
        return await qr_response(known(request.path_params["order_id"]), request.path_params["fmt"])

    async def staff_events(request: Request, _sid: str) -> Response:
        return events_response(known(request.path_params["order_id"]), OrderView.staff_json)

    # --- customers: shop and checkout ---------------------------------------------------------

    async def shop(_request: Request) -> Response:
        cur = lookup_currency(config.currency)
        rows = [
            (i.name, i.quantity, cur.format(i.unit_price), cur.format(i.amount))
            for i in SHOP_PRODUCTS
        ]
        total = cur.format(sum(i.amount for i in SHOP_PRODUCTS))
        return page(pages.shop_body(rows, total), "Checkout", "/static/shop.js")

    async def start_checkout(request: Request) -> Response:
        try:
            address = request.client.host if request.client else "unknown"
            state.throttle.check(f"checkout:{address}")
            state.throttle.fail(f"checkout:{address}")  # counts every checkout, not failures
            v = await make_order(list(SHOP_PRODUCTS), reference="web-shop")
        except SafescanError as exc:
            return _html_error(exc)
        return RedirectResponse(
            f"/shop/checkout/{v.checkout}", status_code=303, headers=SECURITY_HEADERS
        )

    def customer(
        handler: Callable[[Request, OrderView], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request, customer_view(request.path_params["token"]))
            except SafescanError as exc:
                return _json_error(exc) if request.url.path.count("/") > 3 else _html_error(exc)

        return run

    async def checkout_page(_request: Request, v: OrderView) -> Response:
        return page(pages.checkout_body(v.customer_json()), "Checkout", "/static/shop.js")

    async def checkout_state(_request: Request, v: OrderView) -> Response:
        return JSONResponse(v.customer_json(), headers=SECURITY_HEADERS)

    async def checkout_qr(request: Request, v: OrderView) -> Response:
        return await qr_response(v, request.path_params["fmt"])

    async def checkout_events(_request: Request, v: OrderView) -> Response:
        return events_response(v, OrderView.customer_json)

    # --- shared -----------------------------------------------------------------------------

    async def qr_response(v: OrderView, fmt: str) -> Response:
        from safescan.code import qr  # numpy, Pillow, zxing-cpp: only to draw a code

        if fmt == "svg":
            svg = await asyncio.to_thread(qr.render_svg, v.order.code, module_size=6)
            return Response(svg, media_type="image/svg+xml", headers=SECURITY_HEADERS)
        if fmt == "png":
            png = await asyncio.to_thread(qr.render_png, v.order.code, module_size=6)
            return Response(png, media_type="image/png", headers=SECURITY_HEADERS)
        raise PosRequestRefused("the code comes as qr.svg or qr.png")

    def events_response(v: OrderView, view: Callable[[OrderView], dict[str, Any]]) -> Response:
        queue: asyncio.Queue[OrderView] = asyncio.Queue()
        state.listeners.setdefault(v.order.order_id, set()).add(queue)

        async def gen() -> AsyncIterator[bytes]:
            try:
                yield b"retry: 1000\n\n"
                yield _sse(view(v))
                while True:
                    try:
                        changed = await asyncio.wait_for(queue.get(), 15)
                    except TimeoutError:
                        yield b": keep-alive\n\n"
                        continue
                    yield _sse(view(changed))
            finally:
                state.listeners.get(v.order.order_id, set()).discard(queue)

        return StreamingResponse(
            gen(),
            media_type="text/event-stream",
            headers={**SECURITY_HEADERS, "X-Accel-Buffering": "no"},
        )

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        media_type = assets.MEDIA_TYPES.get(name)
        if media_type is None:
            return Response("not found", status_code=404, headers=SECURITY_HEADERS)
        return Response(assets.asset(name), media_type=media_type, headers=SECURITY_HEADERS)

    async def health(_request: Request) -> Response:
        return JSONResponse(
            {"status": "ok", "stream": state.stream_up, "rejected_events": state.rejected_events},
            headers=SECURITY_HEADERS,
        )

    order = "/api/orders/{order_id}"
    checkout = "/shop/checkout/{token}"
    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/", index, methods=["GET"]),
        Route("/api/orders", staff_api(api_create, changes=True), methods=["POST"]),
        Route(order, staff_api(api_get, changes=False), methods=["GET"]),
        Route(order + "/qr.{fmt:str}", staff_api(staff_qr, changes=False), methods=["GET"]),
        Route(order + "/events", staff_api(staff_events, changes=False), methods=["GET"]),
        Route(order + "/close", staff_api(api_close, changes=True), methods=["POST"]),
        Route(
            order + "/refunds/preview", staff_api(refund_preview, changes=True), methods=["POST"]
        ),
        Route(order + "/refunds", staff_api(refund, changes=True), methods=["POST"]),
        Route("/shop", shop, methods=["GET"]),
        Route("/shop/checkout", start_checkout, methods=["POST"]),
        Route(checkout, customer(checkout_page), methods=["GET"]),
        Route(checkout + "/state", customer(checkout_state), methods=["GET"]),
        Route(checkout + "/qr.{fmt:str}", customer(checkout_qr), methods=["GET"]),
        Route(checkout + "/events", customer(checkout_events), methods=["GET"]),
        *backoffice.routes(state, backoffice.StaffKit(page, staff_session, changing)),
        Route("/static/{name}", static, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.pos = state
    return Guard(app, state.hosts)


def run(
    config: PosConfig,
    *,
    host: str = "127.0.0.1",
    port: int = 8090,
    allowed_hosts: list[str] | None = None,
    tls: TlsFiles | None = None,
    connections: ConnectionSection | None = None,
) -> None:
    """Serve the web POS; prints ``READY https://HOST:PORT`` once listening (``http`` without
    ``tls``, which only a loopback address may do). The connection guard
    (:mod:`safescan.web.serving`) bounds its connections with ``connections`` (defaults
    otherwise), and does the TLS handshake.

    Refuses to start without a staff account. ``allowed_hosts`` adds names the POS answers to
    (``pos.example:443``) to the defaults (:func:`~.websec.default_hosts`).
    """
    if tls is None and not is_loopback(host):
        raise PosServeError(
            "the web POS serves plain HTTP on loopback only: give --tls-cert and --tls-key"
            " to listen on another address"
        )
    staff = StaffStore.for_config(config.path if config.path is not None else Path("pos.json"))
    if not staff.users():
        raise PosServeError(
            f"no staff account in {staff.path}: add one with `safescan pos staff add NAME`"
        )
    sock = listen(host, port, error=PosServeError)
    bound = sock.getsockname()[1]
    hosts = HostPolicy([*default_hosts(host), *(allowed_hosts or [])], bound, scheme(tls))
    app = create_app(config, staff=staff, hosts=hosts)
    obslog.configure("info", "json")  # JSON lines on stderr, with the request id
    server = guarded_server(
        obslog.RequestLog(app, service="pos", default_caller="pos"),
        connections or ConnectionSection(),
        tls,
        body_limit=4 * MAX_BODY,  # past MAX_BODY the POS refuses a body itself (typed)
        log_config=None,
        log_level="warning",
        access_log=False,  # RequestLog writes the access line (route templates, no bodies)
        lifespan="on",
        timeout_graceful_shutdown=2,
        proxy_headers=False,  # the peer is the client: no forwarded header is believed
    )
    shown = f"[{host}]" if sock.family == socket.AF_INET6 else host
    print(f"READY {scheme(tls)}://{shown}:{bound}", flush=True)  # term-safe: our address
    print(  # term-safe: our address and merchant id (a uuid from our configuration)
        f"web POS for merchant {config.merchant_id} on {scheme(tls)}://{shown}:{bound}/"
        f"  (staff sign-in: /login; customers' checkout page: /shop)",
        file=sys.stderr,
        flush=True,
    )
    started = time.monotonic()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        log.info("web POS stopped after %.0f s", time.monotonic() - started)
