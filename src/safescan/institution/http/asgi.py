"""ASGI plumbing of the institution's API: the body limit that buffers every request body
(413 beyond the limit, before any parsing, 408 when it is too slow) and hands the framework-free
fast routes (the payment hot path) their buffered body.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, MutableMapping
from types import CoroutineType
from typing import Any

from fastapi.responses import JSONResponse

from safescan.api.errors import InvalidRequest

MAX_BODY = 64 * 1024
BODY_KEY = "safescan.body"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
#: a fast route: answers from the buffered body, or returns False to leave the request to the
#: framework (which then answers it as if there were no fast route)
FastHandler = Callable[[Scope, bytes, Send], Awaitable[bool | None]]


class BodyLimit:
    """ASGI middleware: buffer the body up to ``limit`` bytes (413 beyond), within
    ``body_timeout`` seconds (408 and close beyond: a client that stalls half-way through its
    body cannot hold a connection), then replay it.

    ``fast_routes`` maps (method, path) to a handler that answers from the buffered body
    directly (the payment hot path) or declines (returns False); everything else goes on to
    the FastAPI app.
    """

    def __init__(
        self,
        app: ASGIApp,
        limit: int = MAX_BODY,
        fast_routes: dict[tuple[str, str], FastHandler] | None = None,
        body_timeout: float = 10.0,
    ) -> None:
        self.app, self.limit = app, limit
        self.fast_routes = fast_routes or {}
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await self.read(scope, receive, send)
        if body is None:
            return
        scope[BODY_KEY] = body
        fast = self.fast_routes.get((scope["method"], scope["path"]))
        # a query string (none is declared there) goes to the framework, which refuses it
        if (
            fast is not None
            and not scope.get("query_string")
            and await fast(scope, body, send) is not False
        ):
            return
        await self.framework(scope, body, receive, send)

    async def read(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The whole body of an HTTP request; None when it was answered instead (413 beyond
        the limit, declared or sent; 408 when it came too slowly) or the client left."""
        declared = None
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                declared = value
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await self._too_large(scope, send)
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        # One timer for the whole body (not a wait_for per message: that made a task, a
        # future and a timer per request): at the deadline it cancels this task's wait. It is
        # armed the first time a message is not there yet: a body that has arrived (a payment,
        # nearly always) is read without one (a timer is ~2.7 us under uvloop); the deadline is
        # counted from here either way, and no wait happens before it is armed.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.body_timeout
        timer: asyncio.TimerHandle | None = None
        task: asyncio.Task[Any] | None = None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            assert task is not None
            task.cancel()

        try:
            while more:
                pending = receive()
                if type(pending) is CoroutineType:
                    try:
                        waits_on = pending.send(None)
                    except StopIteration as there:
                        message = there.value  # there already: no wait, no timer
                    else:
                        if timer is None:
                            task = asyncio.current_task()
                            timer = loop.call_at(deadline, expire)
                        message = await _rest_of(pending, waits_on)
                else:  # another kind of awaitable: the timer first
                    if timer is None:
                        task = asyncio.current_task()
                        timer = loop.call_at(deadline, expire)
                    message = await pending
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > self.limit:
                    if timer is not None:
                        timer.cancel()
                    await self._too_large(scope, send)
                    return None
                chunks.append(chunk)
                more = message.get("more_body", False)
        except asyncio.CancelledError:
            if not expired or task is None or task.uncancel() > 0:
                raise  # cancelled by someone else (the server shutting down, ...)
            await self._too_slow(scope, send)
            return None
        finally:
            if timer is not None:
                timer.cancel()
        return b"".join(chunks)

    async def framework(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        """The request to the framework's app, its buffered ``body`` replayed."""
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_slow(self, scope: Scope, send: Send) -> None:
        resp = JSONResponse(
            {
                "error": {
                    "type": "RequestTimeout",
                    "code": "request_timeout",
                    "message": f"the request body did not arrive within {self.body_timeout:g} s",
                }
            },
            status_code=408,
            headers={"Connection": "close"},
        )
        await resp(scope, _noop_receive, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        exc = InvalidRequest(f"the request body is larger than {self.limit} bytes")
        exc.status = 413
        resp = JSONResponse(
            {"error": {**exc.to_dict(), "code": "body_too_large", "type": "BodyTooLarge"}},
            status_code=413,
        )
        await resp(scope, _noop_receive, send)


async def send_json(
    send: Send, status: int, body: bytes, *, retry_after_s: int | None = None
) -> None:
    """Send one JSON response (``Retry-After`` when given)."""
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    if retry_after_s is not None:
        headers.append((b"retry-after", str(retry_after_s).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@types.coroutine
def _rest_of(started: Coroutine[Any, Any, Message], waits_on: Any) -> Generator[Any, Any, Message]:
    """What ``await started`` does from where ``started`` (begun by hand with ``send(None)``)
    stopped to wait on ``waits_on``: each value the task sends in and each exception it throws
    in (a cancellation) goes on to ``started``, and its result is the result."""
    while True:
        try:
            sent = yield waits_on
        except GeneratorExit:
            started.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown in by the task: handed on as it is
            try:
                waits_on = started.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                waits_on = started.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]


async def _noop_receive() -> Message:
    return {"type": "http.disconnect"}
