"""The merchant's live event stream (``GET /v1/merchant/events``, server-sent events): the
framing of :class:`~safescan.institution.event_feed.EventFeed`'s signed events."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

from fastapi import Request

from safescan.code.errors import SafescanError
from safescan.institution.event_feed import EventFeed


async def event_stream(
    feed: EventFeed, request: Request, mid: str, after: int
) -> AsyncIterator[bytes]:
    """``text/event-stream`` of the merchant's events after ``after``, each signed, with a
    keep-alive comment every 15 s; ends when the client disconnects."""
    yield b"retry: 1000\n\n"
    last_beat = time.monotonic()
    while not await request.is_disconnected():
        try:
            batch = await asyncio.to_thread(feed.after, mid, after)
        except SafescanError:
            batch = []
        for e in batch:
            after = e.seq
            data = json.dumps(
                {"payload": e.payload, "signature": e.signature, "kid": e.kid},
                separators=(",", ":"),
            )
            yield f"id: {e.seq}\nevent: {e.type}\ndata: {data}\n\n".encode()
        if not batch:
            if time.monotonic() - last_beat > 15:
                last_beat = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.2)
