"""``safescan wallet serve``: the wallet app's local web service (Starlette on 127.0.0.1).

Pages and assets (``/``, ``/sw.js``, ``/manifest.webmanifest``, ``/static/...``) are package
data files served from memory; the JSON API under ``/api/`` drives :class:`.WalletService`.

Who may use it (docs/apps.md, "The wallet app"; docs/threat-model.md):

* every request must name an allowed Host (DNS rebinding), every state-changing request must
  carry this server's Origin (:class:`safescan.web.guard.GuardMiddleware`);
* the API answers only requests with a live session, sent as ``Authorization: Bearer <id>``.
  A session is made by ``POST /api/pair`` with the pairing secret that ``wallet serve``
  prints (``PAIR http://127.0.0.1:PORT/#pair=SECRET``) to the one who started it. The page
  keeps the session id in its origin's storage and sends it in a header: no cookie (cookies
  are shared by every port of 127.0.0.1, so another local server could receive one), and no
  ambient credential a cross-site request could ride on, so the header is the CSRF token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import mimetypes
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from safescan.client.errors import InstitutionUnreachable
from safescan.code.errors import InvalidAmount, QrError, SafescanError
from safescan.code.numbers import parse_int
from safescan.wallet.enroll_checks import EnrollmentInputError
from safescan.wallet.web import frames
from safescan.wallet.web.service import WalletRequestInvalid, WalletService
from safescan.web import jsonbody
from safescan.web.guard import (
    GuardMiddleware,
    HostPolicy,
    NotSignedIn,
    Sessions,
    Throttle,
    WebRequestRefused,
)
from safescan.web.serving import in_background

log = logging.getLogger("safescan.wallet.web")

MAX_JSON_BODY = 16 * 1024
MAX_FRAME_BODY = frames.MAX_PIXELS
SESSION_IDLE = 8 * 3600
SESSION_ABSOLUTE = 24 * 3600
PAIR_FAILURES = 10  # wrong pairing secrets a minute before pairing pauses for that minute

CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self';"
    " img-src 'self' data: blob:; media-src 'self' blob: mediastream:; connect-src 'self';"
    " worker-src 'self'; manifest-src 'self'; frame-ancestors 'none'; base-uri 'none';"
    " form-action 'none'; object-src 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
}
API_HEADERS = {**SECURITY_HEADERS, "Cache-Control": "no-store"}

mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("application/manifest+json", ".webmanifest")
mimetypes.add_type("text/javascript", ".js")


@dataclass(frozen=True)
class Asset:
    """One static file, in memory."""

    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file under the package's ``static/`` directory, by its path there."""
    out: dict[str, Asset] = {}
    root = resources.files("safescan.wallet.web") / "static"

    def walk(node: Any, prefix: str) -> None:
        for child in node.iterdir():
            name = f"{prefix}{child.name}"
            if child.is_dir():
                walk(child, name + "/")
            elif not child.name.startswith("."):
                body = child.read_bytes()
                media = mimetypes.guess_type(child.name)[0] or "application/octet-stream"
                if media.startswith("text/") or media.endswith(("json", "javascript")):
                    media += "; charset=utf-8"
                tag = '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
                out[name] = Asset(body, media, tag)

    walk(root, "")
    return out


def assets_version(assets: dict[str, Asset]) -> str:
    """One hash over every asset: the service worker's cache name changes with any of them."""
    h = hashlib.sha256()
    for name in sorted(assets):
        h.update(name.encode() + b"\0" + assets[name].etag.encode())
    return h.hexdigest()[:16]


@dataclass
class AppState:
    """The running app: its service, sessions, pairing secret and assets."""

    service: WalletService
    pair_secret: str
    sessions: Sessions = field(
        default_factory=lambda: Sessions(
            idle_seconds=SESSION_IDLE, absolute_seconds=SESSION_ABSOLUTE
        )
    )
    pair_throttle: Throttle = field(default_factory=lambda: Throttle(PAIR_FAILURES, 60.0))
    assets: dict[str, Asset] = field(default_factory=load_assets)


def _status_for(exc: SafescanError) -> int:
    if isinstance(exc, WebRequestRefused):
        return exc.status
    if isinstance(exc, InstitutionUnreachable):
        return 502
    if isinstance(exc, WalletRequestInvalid | QrError | EnrollmentInputError):
        return 400
    return 409


def _error(exc: SafescanError) -> JSONResponse:
    return JSONResponse({"error": exc.to_dict()}, status_code=_status_for(exc), headers=API_HEADERS)


async def _read_body(request: Request, limit: int) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            raise WalletRequestInvalid(f"the request is larger than {limit} bytes")
    return bytes(data)


async def _json_body(request: Request) -> object:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise WalletRequestInvalid("send the request as application/json")
    try:
        return jsonbody.loads(await _read_body(request, MAX_JSON_BODY))
    except ValueError:  # invalid JSON, lone surrogates, NaN, too deep (web.jsonbody)
        raise WalletRequestInvalid("the request is not JSON") from None


Handler = Callable[[Request], Awaitable[Any]]


def create_app(
    service: WalletService,
    policy: HostPolicy,
    *,
    pair_secret: str | None = None,
) -> tuple[Any, AppState]:
    """The wallet app (wrapped in the Host/Origin guard) and its state."""
    state = AppState(service, pair_secret or secrets.token_urlsafe(32))
    version = assets_version(state.assets)

    def session_of(request: Request) -> None:
        scheme, _, sid = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not sid:
            raise NotSignedIn("open the pairing link that `safescan wallet serve` printed")
        state.sessions.get(sid.strip())

    def api(fn: Handler, *, status: int = 200) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            try:
                session_of(request)
                result = await fn(request)
            except SafescanError as exc:
                return _error(exc)
            return JSONResponse(result, status_code=status, headers=API_HEADERS)

        return endpoint

    # --- pages and assets -----------------------------------------------------------------

    def asset_response(request: Request, name: str, cache: str = "no-cache") -> Response:
        asset = state.assets.get(name)
        if asset is None:
            return Response("not found", status_code=404, headers=SECURITY_HEADERS)
        headers = {**SECURITY_HEADERS, "Cache-Control": cache, "ETag": asset.etag}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        return Response(asset.body, media_type=asset.media_type, headers=headers)

    async def index(request: Request) -> Response:
        return asset_response(request, "index.html")

    async def static(request: Request) -> Response:
        return asset_response(request, request.path_params["path"])

    async def manifest(request: Request) -> Response:
        return asset_response(request, "manifest.webmanifest")

    async def service_worker(request: Request) -> Response:
        asset = state.assets["sw.js"]
        body = asset.body.replace(b"__ASSETS_VERSION__", version.encode())
        return Response(
            body,
            media_type=asset.media_type,
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def health(_request: Request) -> Response:
        return JSONResponse({"status": "ok"}, headers=API_HEADERS)

    # --- pairing --------------------------------------------------------------------------

    async def pair(request: Request) -> Response:
        client = request.client.host if request.client else "?"
        try:
            state.pair_throttle.check("pair")
            doc = await _json_body(request)
            secret = doc.get("secret") if isinstance(doc, dict) else None
            if not isinstance(secret, str) or not secrets.compare_digest(
                secret.encode(), state.pair_secret.encode()
            ):
                state.pair_throttle.fail("pair")
                log.warning("a pairing attempt with a wrong secret (from %s)", client)
                raise NotSignedIn("this pairing link is not this wallet's (or it is outdated)")
        except SafescanError as exc:
            return _error(exc)
        sid, _session = state.sessions.create("customer")
        return JSONResponse({"session": sid}, status_code=201, headers=API_HEADERS)

    async def signout(request: Request) -> Response:
        try:
            session_of(request)
        except SafescanError as exc:
            return _error(exc)
        state.sessions.end(request.headers["authorization"].partition(" ")[2].strip())
        return JSONResponse({"signed_out": True}, headers=API_HEADERS)

    # --- the API --------------------------------------------------------------------------

    async def get_state(_request: Request) -> Any:
        return await service.run(service.state)

    async def post_enroll(request: Request) -> Any:
        return await service.run(service.enroll, await _json_body(request))

    async def post_scan(request: Request) -> Any:
        return await service.run(service.scan, await _json_body(request))

    async def post_decode(request: Request) -> Any:
        w, h = frames.parse_size(
            request.headers.get("x-frame-width"), request.headers.get("x-frame-height")
        )
        data = await _read_body(request, MAX_FRAME_BODY)
        texts = await asyncio.to_thread(frames.decode_frame, data, w, h)
        return {"texts": texts}

    async def post_picture(request: Request) -> Any:
        data = await _read_body(request, frames.MAX_IMAGE_BYTES)
        return {"texts": await asyncio.to_thread(frames.decode_picture, data)}

    async def post_pay(request: Request) -> Any:
        doc = await _json_body(request)
        return await service.run(service.pay, request.path_params["offer_id"], doc)

    async def post_cancel(request: Request) -> Any:
        return await service.run(service.cancel, request.path_params["offer_id"])

    async def get_history(request: Request) -> Any:
        try:
            limit = parse_int(request.query_params.get("limit", "50"), field="limit", maximum=1000)
        except InvalidAmount as exc:
            raise WalletRequestInvalid(exc.message) from None
        return await service.run(service.history, limit)

    async def get_balance(_request: Request) -> Any:
        return await service.run(service.balance)

    async def get_status(_request: Request) -> Any:
        return await service.run(service.status)

    async def post_change_pin(request: Request) -> Any:
        return await service.run(service.change_pin, await _json_body(request))

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async def expire_offers() -> None:
            while True:
                await asyncio.sleep(5)
                with contextlib.suppress(SafescanError):
                    await service.run(service.expire)

        try:
            async with in_background(expire_offers()):
                yield
        finally:
            await asyncio.to_thread(service.close)

    routes = [
        Route("/", index),
        Route("/sw.js", service_worker),
        Route("/manifest.webmanifest", manifest),
        Route("/static/{path:path}", static),
        Route("/health", health),
        Route("/api/pair", pair, methods=["POST"]),
        Route("/api/signout", signout, methods=["POST"]),
        Route("/api/state", api(get_state)),
        Route("/api/enroll", api(post_enroll, status=201), methods=["POST"]),
        Route("/api/scan", api(post_scan), methods=["POST"]),
        Route("/api/decode", api(post_decode), methods=["POST"]),
        Route("/api/picture", api(post_picture), methods=["POST"]),
        Route("/api/offers/{offer_id}/pay", api(post_pay), methods=["POST"]),
        Route("/api/offers/{offer_id}/cancel", api(post_cancel), methods=["POST"]),
        Route("/api/history", api(get_history)),
        Route("/api/balance", api(get_balance)),
        Route("/api/status", api(get_status)),
        Route("/api/change-pin", api(post_change_pin), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return GuardMiddleware(app, policy, API_HEADERS), state
