"""Serving a local web app (the web POS, the wallet app) behind the connection guard.

:func:`guarded_server` is what ``safescan pos serve`` and ``safescan wallet serve`` start: a
uvicorn server whose protocol is :class:`~safescan.web.netguard.GuardedHttpToolsProtocol` (the
TLS handshake, the connection bounds and the request-head deadline, as for the institution's
API) and whose app sits behind :class:`BodyDeadline` (a request body must arrive in time, else
a typed 408 and the connection closes). Their settings (``[server]`` in the settings file, and
the same options on the command line) are :class:`ConnectionSection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import Field

from safescan.web.settings_file import Section
from safescan.web.tls import TlsFiles

if TYPE_CHECKING:  # (uvicorn and the guard load only when serving: the commands start fast)
    import uvicorn

    from safescan.web.netguard import Limits

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
AsgiApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ConnectionSection(Section):
    """The connection limits of a local web server (fields of its ``[server]`` section)."""

    max_connections: int = Field(default=256, ge=1, description="open client connections")
    max_per_address: int = Field(
        default=32, ge=0, description="open connections from one client address (0: no bound)"
    )
    head_timeout: float = Field(
        default=10.0, gt=0, description="seconds to finish the TLS handshake and a request head"
    )
    body_timeout: float = Field(default=30.0, gt=0, description="seconds to send a request body")

    def limits(self) -> Limits:
        """These settings as the guard's :class:`~safescan.web.netguard.Limits`."""
        from safescan.web.netguard import Limits

        return Limits(self.max_connections, self.head_timeout, self.max_per_address)


# the same settings as command-line options (None: the settings file's, else the default)
MaxConnectionsOpt = Annotated[
    int | None, typer.Option(help="open client connections (kept below RLIMIT_NOFILE) [256]")
]
MaxPerAddressOpt = Annotated[
    int | None, typer.Option(help="open connections from one client address, 0: no bound [32]")
]
HeadTimeoutOpt = Annotated[
    float | None,
    typer.Option(help="seconds a connection has for its TLS handshake and request head [10]"),
]
BodyTimeoutOpt = Annotated[
    float | None, typer.Option(help="seconds a request has to send its body [30]")
]


def connection_options(
    max_connections: int | None,
    max_per_address: int | None,
    head_timeout: float | None,
    body_timeout: float | None,
) -> dict[str, Any]:
    """The options above as ``[server]`` settings (for the settings loader)."""
    return {
        "max_connections": max_connections,
        "max_per_address": max_per_address,
        "head_timeout": head_timeout,
        "body_timeout": body_timeout,
    }


class BodyDeadline:
    """ASGI middleware: a request's body must arrive whole within ``timeout`` seconds of its
    head and be at most ``limit`` bytes; it is buffered, then handed to the app. A body too
    slow is answered ``408 request_timeout`` (``Connection: close``), one too large ``413
    body_too_large``: a client dripping its body cannot hold a connection (nor, with many,
    every place under the connection bound)."""

    def __init__(self, app: AsgiApp, timeout: float, limit: int) -> None:
        self.app, self.timeout, self.limit = app, timeout, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            try:
                message = await asyncio.wait_for(receive(), max(deadline - loop.time(), 0.0))
            except TimeoutError:
                late = f"the request body did not arrive within {self.timeout:g} s"
                await _answer(send, 408, "RequestTimeout", "request_timeout", late)
                return
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                large = f"the request body is larger than {self.limit} bytes"
                await _answer(send, 413, "BodyTooLarge", "body_too_large", large)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _answer(send: Send, status: int, kind: str, code: str, message: str) -> None:
    body = json.dumps({"error": {"type": kind, "code": code, "message": message}}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def guarded_server(
    app: AsgiApp,
    settings: ConnectionSection,
    tls: TlsFiles | None,
    *,
    body_limit: int,
    **config: Any,
) -> uvicorn.Server:
    """A uvicorn server for ``app`` behind the connection guard (which also does the TLS
    handshake when ``tls`` is given: uvicorn itself listens on plain TCP) and
    :class:`BodyDeadline`; ``config``: further ``uvicorn.Config`` settings. SIGTERM and
    SIGINT stop it gracefully and ``run()`` returns (:mod:`safescan.web.graceful`)."""
    import uvicorn

    from safescan.web.graceful import GracefulServer
    from safescan.web.netguard import GuardedHttpToolsProtocol, configure

    configure(settings.limits(), tls)
    guarded = BodyDeadline(app, settings.body_timeout, body_limit)
    return GracefulServer(
        uvicorn.Config(
            guarded,
            loop="uvloop",
            http=GuardedHttpToolsProtocol,
            **config,
        )
    )


@contextlib.asynccontextmanager
async def in_background(work: Coroutine[Any, Any, None]) -> AsyncIterator[None]:
    """Run ``work`` as a task while the block runs (an app's lifespan: the web POS's event
    stream, the wallet app's offer expiry); cancel it and wait for it at the end."""
    task = asyncio.create_task(work)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


__all__ = [
    "BodyDeadline",
    "BodyTimeoutOpt",
    "ConnectionSection",
    "HeadTimeoutOpt",
    "MaxConnectionsOpt",
    "MaxPerAddressOpt",
    "connection_options",
    "guarded_server",
    "in_background",
]
