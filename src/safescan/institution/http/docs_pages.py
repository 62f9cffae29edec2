"""The OpenAPI pages (/docs: Swagger UI, /redoc: ReDoc) work on a machine without internet.

Their scripts and styles are served by the institution itself (``fastapi-offline`` ships
them); a Content-Security-Policy on the two pages keeps the browser from fetching anything
else from another host (ReDoc's bundle would otherwise load its footer logo from a CDN).

The framework's own routes outside the app-wide dependency (:func:`.query.strict_query` runs
for API routes only) get its query rules here: the document ``/openapi.json`` is read by
programs, like every operation it describes, so a query parameter there is a ``400
unknown_parameter`` (it takes none); the documentation pages' files under
``/static-offline-docs`` are reached by the pages' links (cache-busting ``?v=``) and ignore
query parameters, as the pages themselves and the hosted checkout pages do. A key in the URL
is ``401 api_key_in_url`` on all of them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI

from safescan.code.errors import SafescanError
from safescan.institution.http.auth import refuse_key_in_url
from safescan.institution.http.errors import answer
from safescan.institution.http.query import check_query

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DOC_PAGES = ("/docs", "/redoc", "/docs/oauth2-redirect")
OPENAPI = "/openapi.json"
DOC_FILES = "/static-offline-docs/"
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline';"
    " img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:;"
    " connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class _DocsPolicy:
    """Pure ASGI middleware: the policy header on the documentation pages only, the query rules
    of ``/openapi.json`` and the pages' files (see the module); every other request, streams
    included, passes through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path") or ""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string") or b""
        if query and (path == OPENAPI or path.startswith(DOC_FILES)):
            try:
                refuse_key_in_url(query)
                if path == OPENAPI:
                    check_query(query, {})
            except SafescanError as exc:
                await answer(exc).response()(scope, receive, send)
                return
        if path not in DOC_PAGES:
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
