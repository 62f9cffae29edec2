"""A plain request log for ``safescan institution serve``, and the line saying where it listens.

One line per request on stderr, when its response starts::

    2026-05-01T09:12:03Z 127.0.0.1 POST /v1/payments 201 3.4ms

Only the client address, method, path (never the query string, headers or body: no tokens,
signatures or codes), status and time to the first byte. Structured logs come later.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

ENV_ACCESS_LOG = "SAFESCAN_INSTITUTION_ACCESS_LOG"
log = logging.getLogger("safescan.institution.access")


def _configure() -> None:
    if log.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


class AccessLog:
    """ASGI middleware: log each HTTP request once its response starts."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        _configure()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        client = scope.get("client") or ("-", 0)
        logged = False

        def line(status: int | str) -> None:
            ms = (time.perf_counter() - started) * 1000
            path = scope.get("path", "")[:200]
            log.info("%s %s %s %s %.1fms", client[0], scope.get("method"), path, status, ms)

        async def logging_send(message: Message) -> None:
            nonlocal logged
            if message["type"] == "http.response.start" and not logged:
                logged = True
                line(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            if not logged:
                line("-")  # no response (client gone, or an error before any answer)


def announce(url: str, workers: int = 1) -> None:
    """Tell the person who started the server where it listens (stdout)."""
    extra = f", {workers} worker processes" if workers > 1 else ""
    print(
        f"safescan institution listening on {url}{extra} (API docs: {url}/docs; Ctrl-C stops)",
        flush=True,
    )


class AnnouncingServer(uvicorn.Server):
    """A uvicorn server that says where it listens once its socket is bound."""

    async def startup(self, sockets: Any = None) -> None:
        """Start, then print the address actually bound (port 0 resolves to the real one)."""
        await super().startup(sockets)
        if not self.started:
            return
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                scheme = "https" if self.config.is_ssl else "http"
                announce(f"{scheme}://{shown}:{port}")
                return
