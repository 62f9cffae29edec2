"""The merchant's live event stream (``GET /v1/merchant/events``, server-sent events)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from fastapi import Request
from sqlalchemy import func, select

from safescan.api.events import sign_event
from safescan.code.errors import SafescanError
from safescan.institution.models import Event

if TYPE_CHECKING:
    from safescan.institution.service import Institution


def max_seq(inst: Institution, mid: str) -> int:
    """The merchant's newest event sequence number (0 when it has none)."""
    return int(
        inst.db.read(
            lambda c: c.execute(
                select(func.coalesce(func.max(Event.seq), 0)).where(Event.merchant_id == mid)
            ).scalar_one()
        )
    )


async def event_stream(
    inst: Institution, request: Request, mid: str, after: int
) -> AsyncIterator[bytes]:
    """``text/event-stream`` of the merchant's events after ``after``, each signed, with a
    keep-alive comment every 15 s; ends when the client disconnects."""
    yield b"retry: 1000\n\n"
    last_beat = time.monotonic()
    while not await request.is_disconnected():
        try:
            batch = await asyncio.to_thread(inst.events_after, mid, after)
        except SafescanError:
            batch = []
        for e in batch:
            after = e["seq"]
            data = json.dumps(
                {
                    "payload": e["payload"],
                    "signature": sign_event(inst.keys.root, e["payload"]),
                    "kid": inst.keys.root_kid,
                },
                separators=(",", ":"),
            )
            yield f"id: {e['seq']}\nevent: {e['type']}\ndata: {data}\n\n".encode()
        if not batch:
            if time.monotonic() - last_beat > 15:
                last_beat = time.monotonic()
                yield b": keep-alive\n\n"
            await asyncio.sleep(0.2)
