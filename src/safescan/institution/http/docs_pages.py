"""The OpenAPI pages (/docs: Swagger UI, /redoc: ReDoc) work on a machine without internet.

Their scripts and styles are served by the institution itself (``fastapi-offline`` ships
them); a Content-Security-Policy on the two pages keeps the browser from fetching anything
else from another host (ReDoc's bundle would otherwise load its footer logo from a CDN).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DOC_PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class _DocsPolicy:
    """Pure ASGI middleware: the policy header on the documentation pages only (every other
    request, streams included, passes through untouched)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") not in DOC_PAGES:
            await self.app(scope, receive, send)
            return

        async def with_policy(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"content-security-policy"
                ]
                headers.append((b"content-security-policy", CSP.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_policy)


def keep_docs_offline(app: FastAPI) -> None:
    """Add the same-origin-only policy to the documentation pages."""
    app.add_middleware(_DocsPolicy)
