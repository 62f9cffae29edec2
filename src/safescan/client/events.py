"""The merchant's live event stream (``GET /v1/merchant/events``, server-sent events).

Each event is verified against the pinned institution keys before anyone sees it; a rejected
event is reported (``rejected`` / ``on_rejected``), never yielded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from safescan.api.events import verify_event
from safescan.client.credentials import MerchantCredential, auth_headers
from safescan.client.errors import (
    InstitutionProtocolError,
    InstitutionUnreachable,
    error_from_response,
)
from safescan.client.event_data import EventData, event_data
from safescan.client.fields import read
from safescan.client.http import InstitutionHttp, async_client
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError

EVENTS_PATH = "/v1/merchant/events"


def events_path(after: int | None) -> str:
    """The stream's path, resuming after sequence number ``after`` when given."""
    return EVENTS_PATH if after is None else f"{EVENTS_PATH}?after={after}"


@dataclass(frozen=True)
class VerifiedEvent:
    """A stream event whose institution signature verified (``data`` as sent; :attr:`payload`
    typed)."""

    seq: int
    type: str
    id: str
    created: int
    data: dict[str, Any]

    @property
    def payload(self) -> EventData | None:
        """``data`` read as its type's dataclass (:mod:`.event_data`; None: a type this client
        does not know); malformed: :class:`~safescan.client.errors.InstitutionProtocolError`."""
        return event_data(self.type, self.data)


class SseParser:
    """Incremental ``text/event-stream`` parser: feed lines, get complete events."""

    def __init__(self) -> None:
        self._data: list[str] = []
        self._event = "message"
        self._id = ""

    def feed(self, line: str) -> tuple[str, str, str] | None:
        """One line (without newline); returns ``(id, event, data)`` at a blank line."""
        if line == "":
            if not self._data:
                self._event = "message"
                return None
            out = (self._id, self._event, "\n".join(self._data))
            self._data, self._event = [], "message"
            return out
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            self._id = value
        return None


@dataclass(frozen=True)
class _Envelope:
    """A signed event's envelope as the institution makes it (``data``: the type's fields)."""

    id: str
    type: str
    created: int
    data: dict[str, Any]


def verified(
    sse_id: str, data: str, trust: TrustStore, on_rejected: Callable[[str], None] | None
) -> VerifiedEvent | None:
    """The event if its signature verifies under ``trust`` and its envelope is well formed,
    else None (reported)."""
    try:
        event = read(_Envelope, verify_event(data, trust), "event")
    except SafescanError as exc:
        if on_rejected is not None:
            on_rejected(exc.message)
        return None
    # ASCII digits only: "²".isdigit() is true and int("²") raised ValueError, ending the stream
    seq = int(sse_id) if sse_id.isascii() and sse_id.isdigit() else 0
    return VerifiedEvent(seq, event.type, event.id, event.created, event.data)


class EventStream:
    """An open ``text/event-stream`` response yielding only verified events."""

    def __init__(
        self,
        http: InstitutionHttp,
        sign: Callable[[str, str], dict[str, str]],
        trust: TrustStore,
        *,
        after: int | None,
        read_timeout: float,
        until: float | None = None,
    ) -> None:
        self._http, self._sign, self._trust = http, sign, trust
        self.until = until
        self.path = events_path(after)
        self.timeout = httpx.Timeout(10.0, read=read_timeout)
        self.rejected: list[str] = []
        self._stack: contextlib.ExitStack | None = None
        self._resp: httpx.Response | None = None

    def __enter__(self) -> EventStream:
        headers = self._sign("GET", self.path)
        headers["Accept"] = "text/event-stream"
        stack = contextlib.ExitStack()
        self._resp = stack.enter_context(self._http.stream(self.path, headers, self.timeout))
        self._stack = stack
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the stream."""
        stack, self._stack, self._resp = self._stack, None, None
        if stack is not None:
            stack.close()

    def __iter__(self) -> Iterator[VerifiedEvent]:
        """Verified events; rejected ones are recorded in :attr:`rejected`, never yielded."""
        if self._resp is None:
            raise InstitutionProtocolError("the event stream is not open")
        parser = SseParser()
        try:
            for line in self._resp.iter_lines():
                if self.until is not None and time.time() >= self.until:
                    return
                got = parser.feed(line)
                if got is None:
                    continue
                event = verified(got[0], got[2], self._trust, self.rejected.append)
                if event is not None:
                    yield event
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the institution's event stream failed ({type(exc).__name__})"
            ) from None


class AsyncEventStream:
    """The same verified stream for asyncio code (the web POS): use as an async context
    manager (it holds the connection pool), then iterate :meth:`events` again after a drop."""

    def __init__(
        self, base_url: str, merchant_id: str, api_key: MerchantCredential, trust: TrustStore
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.merchant_id, self.api_key, self.trust = merchant_id, api_key, trust
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> AsyncEventStream:
        self._client = async_client(self.base_url, httpx.Timeout(10.0, read=30.0))
        return self

    async def __aexit__(self, *exc: object) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def events(
        self,
        *,
        after: int | None = None,
        on_rejected: Callable[[str], None] | None = None,
        on_open: Callable[[], None] | None = None,
    ) -> AsyncIterator[VerifiedEvent]:
        """Verified events; raises :class:`InstitutionUnreachable` when the stream fails."""
        if self._client is None:
            raise InstitutionProtocolError("the event stream is not open")
        path = events_path(after)
        headers = auth_headers(self.api_key, self.merchant_id, "GET", path)
        headers["Accept"] = "text/event-stream"
        parser = SseParser()
        try:
            async with self._client.stream("GET", path, headers=headers) as resp:
                if resp.status_code != 200:
                    await resp.aread()
                    raise error_from_response(resp)
                if on_open is not None:
                    on_open()
                async for line in resp.aiter_lines():
                    got = parser.feed(line)
                    if got is None:
                        continue
                    event = verified(got[0], got[2], self.trust, on_rejected)
                    if event is not None:
                        yield event
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the institution's event stream failed ({type(exc).__name__})"
            ) from None
