"""The institution's request log and the line saying where ``institution serve`` listens.

One JSON line per request on stderr when its response ends (:class:`safescan.api.obslog.
RequestLog`)::

    {"method": "POST", "route": "/v1/payments", "status": 201, "duration_ms": 3.4,
     "caller": "wallet", "client": "127.0.0.1", "error": null, "logger":
     "safescan.institution.access", "event": "request", "level": "info",
     "ts": "2026-05-01T09:12:03.120Z", "request_id": "req_6f1c..."}

Only the method, route template (never the raw path, query string, headers or body: no
tokens, signatures or codes), status, duration, request id, caller kind, client address and,
for an error answer, its error code. The same middleware feeds the metrics
(:func:`safescan.institution.metrics.observe`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from safescan.api.obslog import RequestLog, RouteTable, get_logger
from safescan.institution import metrics
from safescan.institution.http.asgi import ASGIApp
from safescan.web.graceful import GracefulServer
from safescan.web.netguard import serves_tls

#: paths answered before the router (BodyLimit's fast route, /metrics) and their caller kind
FAST_ROUTES = {
    metrics.PAY_ROUTE: "wallet",
    metrics.PAY_ROUTE + "/lookup": "wallet",
    "/metrics": "operator",
}


def observed(
    app: ASGIApp, *, access_log: bool = True, routes: RouteTable | None = None
) -> RequestLog:
    """``app`` with request ids, the access log (when ``access_log``) and request metrics;
    ``routes`` (the API's) name the route of a 408/413/503 answered before the router."""
    return RequestLog(
        app,
        service="institution",
        access_log=access_log,
        observe=metrics.observe,
        exact_routes=FAST_ROUTES,
        routes=routes,
    )


def api_routes(api: Any) -> RouteTable:
    """The route templates of the API app (``api``: FastAPI's), walked from its routes when
    first needed (:class:`~safescan.api.obslog.RouteTable`), in the router's order: a route
    with a path and methods is one entry (its first tag the caller kind); a router included
    (FastAPI's ``include_router``, kept as the original router and its prefix) or mounted is
    walked under its prefix. Not the OpenAPI schema: generating it took ~0.5 s of CPU on the
    event loop at the first early answer. What the walk does not know stays ``<unmatched>``."""

    def walk(routes: Any, prefix: str) -> Iterator[tuple[str, list[str], str | None]]:
        for route in routes:
            inner = getattr(route, "original_router", None)
            path = getattr(route, "path", None)
            methods = getattr(route, "methods", None)
            if inner is not None:  # include_router: the original router under its prefix
                extra = getattr(getattr(route, "include_context", None), "prefix", "") or ""
                yield from walk(getattr(inner, "routes", ()), prefix + extra)
            elif isinstance(path, str) and methods:
                tags = getattr(route, "tags", None) or [None]
                first = tags[0] if isinstance(tags[0], str) else None
                yield prefix + path, sorted(methods), first
            elif isinstance(path, str) and getattr(route, "routes", None) is not None:
                yield from walk(route.routes, prefix + path)  # a mount

    return RouteTable(lambda: walk(getattr(api, "routes", ()), ""))


def announce(url: str, workers: int = 1) -> None:
    """Tell the person who started the server where it listens (stdout)."""
    extra = f", {workers} worker processes" if workers > 1 else ""
    get_logger("safescan.institution").info("listening", url=url, workers=workers)
    print(  # term-safe: the address we bound
        f"safescan institution listening on {url}{extra} (API docs: {url}/docs; Ctrl-C stops)",
        flush=True,
    )


class AnnouncingServer(GracefulServer):
    """A uvicorn server that says where it listens once its socket is bound (and stops
    cleanly on SIGTERM/SIGINT, exit 0: :mod:`safescan.web.graceful`)."""

    async def startup(self, sockets: Any = None) -> None:
        """Start, then print the address actually bound (port 0 resolves to the real one)."""
        await super().startup(sockets)
        if not self.started:
            return
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                scheme = "https" if self.config.is_ssl or serves_tls() else "http"
                announce(f"{scheme}://{shown}:{port}")
                return
