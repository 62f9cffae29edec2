"""The body limit in front of every route (safescan.institution.http.asgi.BodyLimit), in-process:
one timer for the whole body (408 when it is late, whatever the chunking), 413 beyond the limit
(declared or sent), a disconnect ends the request, and a cancellation that is not the timer's
(the server shutting down) is never turned into an answer. Over real sockets:
tests/faults/test_writer_descriptors.py (slow bodies) and tests/institution/test_http_errors.py.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from safescan.institution.http.asgi import BODY_KEY, BodyLimit

PATH = "/v1/payments"


def _scope(headers: list[tuple[bytes, bytes]] | None = None) -> dict[str, Any]:
    return {"type": "http", "method": "POST", "path": PATH, "headers": headers or []}


class Recorder:
    """What the app answered, and what the routes behind the limit saw."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.fast: list[bytes] = []
        self.routed: list[bytes] = []

    async def send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)

    @property
    def status(self) -> int:
        return int(self.messages[0]["status"])

    @property
    def error(self) -> dict[str, Any]:
        body = json.loads(b"".join(m.get("body", b"") for m in self.messages[1:]))
        return dict(body["error"])

    def app(self, limit: int = 64, timeout: float = 5.0) -> BodyLimit:
        async def fast(scope: dict[str, Any], body: bytes, send: Any) -> None:
            assert scope[BODY_KEY] == body
            self.fast.append(body)
            await send({"type": "http.response.start", "status": 201, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        async def routed(scope: dict[str, Any], receive: Any, send: Any) -> None:
            message = await receive()
            self.routed.append(message["body"])
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        return BodyLimit(
            routed, limit=limit, fast_routes={("POST", PATH): fast}, body_timeout=timeout
        )


def _chunks(*parts: bytes, then_hang: bool = False) -> Any:
    queue = list(parts)

    async def receive() -> dict[str, Any]:
        if queue:
            part = queue.pop(0)
            await asyncio.sleep(0)  # a real suspension between chunks
            return {"type": "http.request", "body": part, "more_body": bool(queue) or then_hang}
        await asyncio.Event().wait()  # the client stalls
        raise AssertionError

    return receive


@pytest.mark.parametrize(
    "parts",
    [
        (b'{"a":1}',),
        (b'{"a"', b":1}"),
        (b"", b'{"a":1}', b""),
        tuple(bytes([c]) for c in b'{"a":1}'),
    ],
)
def test_a_whole_body_in_any_chunking_reaches_the_route_once(parts: tuple[bytes, ...]) -> None:
    rec = Recorder()
    asyncio.run(rec.app()(_scope(), _chunks(*parts), rec.send))
    assert rec.fast == [b'{"a":1}'] and rec.status == 201


@pytest.mark.parametrize("sent", [(), (b'{"a"',), (b"{", b'"a"', b":")])
def test_a_body_that_stops_arriving_is_answered_408_and_reaches_no_route(
    sent: tuple[bytes, ...],
) -> None:
    rec = Recorder()
    app = rec.app(timeout=0.2)

    async def run() -> None:
        await asyncio.wait_for(app(_scope(), _chunks(*sent, then_hang=True), rec.send), 5)

    asyncio.run(run())
    assert rec.status == 408 and rec.error["code"] == "request_timeout"
    assert rec.fast == [] and rec.routed == []
    assert (b"connection", b"close") in [(k.lower(), v) for k, v in rec.messages[0]["headers"]]


def test_the_timer_does_not_outlive_the_body() -> None:
    """A body that arrived in time is served even when serving takes longer than the body
    timeout (the timer is gone once the body is in)."""
    rec = Recorder()

    async def slow_fast(scope: dict[str, Any], body: bytes, send: Any) -> None:
        await asyncio.sleep(0.4)  # twice the body timeout
        rec.fast.append(body)
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    app = BodyLimit(rec.app(), limit=64, fast_routes={("POST", PATH): slow_fast}, body_timeout=0.2)
    asyncio.run(app(_scope(), _chunks(b"{}"), rec.send))
    assert rec.status == 201 and rec.fast == [b"{}"]


@pytest.mark.parametrize(
    ("declared", "parts"),
    [
        (b"65", (b"x" * 10,)),  # declared too large: refused before reading
        (b"1e3", (b"x",)),  # not a number
        (b"-1", (b"x",)),
        (None, (b"x" * 40, b"x" * 40)),  # sent too large, in chunks
        (b"10", (b"x" * 65,)),  # declared small, sent large
    ],
)
def test_too_large_bodies_are_refused_413(declared: bytes | None, parts: tuple[bytes, ...]) -> None:
    rec = Recorder()
    headers = [(b"content-length", declared)] if declared is not None else []
    asyncio.run(rec.app(limit=64)(_scope(headers), _chunks(*parts), rec.send))
    assert rec.status == 413 and rec.error["code"] == "body_too_large"
    assert rec.fast == [] and rec.routed == []


def test_a_disconnect_ends_the_request_without_an_answer() -> None:
    rec = Recorder()

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    asyncio.run(rec.app()(_scope(), receive, rec.send))
    assert rec.messages == [] and rec.fast == []


def test_a_cancellation_that_is_not_the_timer_propagates() -> None:
    """The server cancelling a request (shutdown) is not a slow body: no 408, the task ends
    cancelled, nothing reaches a route."""
    rec = Recorder()
    app = rec.app(timeout=5.0)

    async def run() -> None:
        task = asyncio.create_task(app(_scope(), _chunks(b"{", then_hang=True), rec.send))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert rec.messages == [] and rec.fast == [] and rec.routed == []


def test_other_routes_get_the_buffered_body_replayed() -> None:
    rec = Recorder()
    scope = _scope()
    scope["path"] = "/v1/payments/lookup"
    asyncio.run(rec.app()(scope, _chunks(b"{", b"}"), rec.send))
    assert rec.routed == [b"{}"] and rec.fast == [] and rec.status == 200


def _counting_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    """The deadlines of the timers armed on ``loop`` from now on."""
    armed: list[float] = []
    call_at = loop.call_at

    def counted(when: float, callback: Any, *args: Any) -> Any:
        armed.append(when)
        return call_at(when, callback, *args)

    loop.call_at = counted  # type: ignore[method-assign]
    return armed


def test_a_body_that_is_there_is_read_without_a_timer_and_one_that_is_not_arms_one() -> None:
    """The timer is armed the first time a message is not there yet, never before a wait, with
    the deadline counted from the start of the read."""
    for parts, suspends, timers in (((b'{"a":1}',), False, 0), ((b"{", b'"a":1}'), True, 1)):
        rec = Recorder()

        async def run(
            parts: tuple[bytes, ...] = parts, suspends: bool = suspends, rec: Recorder = rec
        ) -> list[float]:
            loop = asyncio.get_running_loop()
            armed = _counting_timers(loop)
            queue = list(parts)

            async def receive() -> dict[str, Any]:
                part = queue.pop(0)
                if suspends:
                    await asyncio.sleep(0)
                return {"type": "http.request", "body": part, "more_body": bool(queue)}

            start = loop.time()
            await rec.app(timeout=5.0)(_scope(), receive, rec.send)
            assert all(start + 5.0 <= when <= loop.time() + 5.0 for when in armed)
            return armed

        assert len(asyncio.run(run())) == timers
        assert rec.fast == [b'{"a":1}'] and rec.status == 201


def test_a_body_whose_first_part_was_there_and_the_rest_never_comes_is_answered_408() -> None:
    rec = Recorder()
    app = rec.app(timeout=0.2)
    given = []

    async def receive() -> dict[str, Any]:
        if not given:
            given.append(1)
            return {"type": "http.request", "body": b"{", "more_body": True}  # no wait
        await asyncio.Event().wait()
        raise AssertionError

    async def run() -> None:
        await asyncio.wait_for(app(_scope(), receive, rec.send), 5)

    asyncio.run(run())
    assert rec.status == 408 and rec.fast == [] and rec.routed == []


def test_a_receive_that_is_not_a_coroutine_is_awaited_under_the_timer() -> None:
    """An ASGI server's ``receive`` may return any awaitable: a future resolved later, or
    one that never is (408)."""
    for resolve in (True, False):
        rec = Recorder()

        async def run(resolve: bool = resolve, rec: Recorder = rec) -> None:
            loop = asyncio.get_running_loop()

            def receive() -> asyncio.Future[dict[str, Any]]:
                fut: asyncio.Future[dict[str, Any]] = loop.create_future()
                if resolve:
                    message = {"type": "http.request", "body": b"{}", "more_body": False}
                    loop.call_soon(fut.set_result, message)
                return fut

            await asyncio.wait_for(rec.app(timeout=0.2)(_scope(), receive, rec.send), 5)

        asyncio.run(run())
        assert rec.status == (201 if resolve else 408)


def test_an_error_raised_by_receive_after_a_wait_reaches_the_caller() -> None:
    rec = Recorder()

    async def receive() -> dict[str, Any]:
        await asyncio.sleep(0)
        raise OSError("the connection broke")

    with pytest.raises(OSError, match="the connection broke"):
        asyncio.run(rec.app()(_scope(), receive, rec.send))
    assert rec.messages == [] and rec.fast == []
