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

from typing import Any

from safescan.api.obslog import RequestLog, get_logger
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


def observed(app: ASGIApp, *, access_log: bool = True) -> RequestLog:
    """``app`` with request ids, the access log (when ``access_log``) and request metrics."""
    return RequestLog(
        app,
        service="institution",
        access_log=access_log,
        observe=metrics.observe,
        exact_routes=FAST_ROUTES,
    )


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
