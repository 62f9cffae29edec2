"""Merchant notifications: the persisted outbox and the webhook dispatcher.

Every event is a canonical JSON object ``{"id", "type", "created", "merchant_id", "data"}``
written in the same transaction as the state change it reports. The institution signs it when it
sends it (stream and webhook signatures: :mod:`safescan.api.events`, which merchants use to
verify them).

Delivery: a background task in every API process claims due events (an optimistic
``UPDATE ... WHERE next_attempt_ms = <seen>``, safe across processes), POSTs them, and on any
non-2xx answer or network error retries with exponential back-off (base 5 s, doubling, capped at
1 h, +-20 % jitter) until 72 h after the event, then marks it ``failed``. State lives in the
database, so deliveries survive restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, select, update

from safescan.api.events import H_EVENT_ID, H_SIGNATURE, sign_webhook
from safescan.code.errors import SafescanError
from safescan.code.keys import SigningKey
from safescan.institution import sql
from safescan.institution.db import Database
from safescan.institution.models import Event, MerchantRow
from safescan.institution.util import canonical_json, new_id

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("safescan.institution.webhooks")


def event_params(
    event_id: str, merchant_id: str, type_: str, data: dict[str, Any], now: int, webhook: bool
) -> dict[str, Any]:
    """The ``e_*`` parameters of :data:`sql.INSERT_EVENT` for one event."""
    payload = canonical_json(
        {"id": event_id, "type": type_, "created": now, "merchant_id": merchant_id, "data": data}
    )
    return {
        "e_id": event_id,
        "e_mid": merchant_id,
        "e_type": type_,
        "e_payload": payload,
        "e_created": now,
        "e_state": "pending" if webhook else "none",
        "e_next_ms": now * 1000,
    }


def new_event(
    conn: Connection,
    *,
    merchant_id: str,
    type_: str,
    data: dict[str, Any],
    now: int,
    webhook: bool,
) -> str:
    """Insert an event into the outbox (inside the caller's transaction); returns its id.

    Events are signed when sent (stream and webhook), not when stored.
    """
    event_id = new_id("evt_", 20)
    sql.run(conn, sql.INSERT_EVENT, event_params(event_id, merchant_id, type_, data, now, webhook))
    return event_id


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off for webhook deliveries."""

    base_delay: float = 5.0
    max_delay: float = 3600.0
    give_up_after: float = 72 * 3600.0
    lease: float = 30.0

    def delay(self, attempts: int) -> float:
        """Seconds to wait before attempt ``attempts + 1``."""
        d = min(self.base_delay * (2.0 ** max(attempts - 1, 0)), self.max_delay)
        return float(d) * (0.8 + 0.4 * random.random())


@dataclass(frozen=True)
class _Due:
    seq: int
    id: str
    payload: str
    attempts: int
    created_at: int
    url: str


class WebhookDispatcher:
    """Delivers due outbox events; one per API process, all processes may run it."""

    def __init__(
        self,
        db: Database,
        key: SigningKey,
        kid: int,
        *,
        policy: RetryPolicy | None = None,
        poll_interval: float = 0.5,
        timeout: float = 5.0,
        batch: int = 50,
    ) -> None:
        self.db, self.key, self.kid = db, key, kid
        self.policy = policy or RetryPolicy()
        self.poll_interval, self.timeout, self.batch = poll_interval, timeout, batch

    def claim_due(self, now_ms: int) -> list[_Due]:
        """Claim up to ``batch`` due events (lease them for ``policy.lease`` seconds)."""
        rows = self.db.read(
            lambda c: c.execute(
                select(
                    Event.seq,
                    Event.id,
                    Event.payload,
                    Event.attempts,
                    Event.created_at,
                    Event.next_attempt_ms,
                    MerchantRow.webhook_url,
                )
                .join(MerchantRow, MerchantRow.id == Event.merchant_id)
                .where(Event.webhook_state == "pending", Event.next_attempt_ms <= now_ms)
                .order_by(Event.next_attempt_ms)
                .limit(self.batch)
            ).all()
        )
        if not rows:
            return []
        lease_until = now_ms + int(self.policy.lease * 1000)

        def claim(conn: Connection) -> list[_Due]:
            claimed = []
            for r in rows:
                res = conn.execute(
                    update(Event)
                    .where(
                        Event.seq == r.seq,
                        Event.webhook_state == "pending",
                        Event.next_attempt_ms == r.next_attempt_ms,
                    )
                    .values(next_attempt_ms=lease_until)
                )
                if res.rowcount == 1:
                    if r.webhook_url:
                        claimed.append(
                            _Due(r.seq, r.id, r.payload, r.attempts, r.created_at, r.webhook_url)
                        )
                    else:
                        conn.execute(
                            update(Event).where(Event.seq == r.seq).values(webhook_state="none")
                        )
            return claimed

        return self.db.write(claim)

    def record(self, due: _Due, ok: bool, error: str | None, now: float) -> None:
        """Record the outcome of one delivery attempt."""
        attempts = due.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": error}
        if ok:
            values.update(webhook_state="delivered", delivered_at=int(now))
        elif now - due.created_at >= self.policy.give_up_after:
            values.update(webhook_state="failed")
        else:
            values.update(next_attempt_ms=int((now + self.policy.delay(attempts)) * 1000))
        self.db.write(
            lambda c: c.execute(
                update(Event)
                .where(Event.seq == due.seq, Event.webhook_state == "pending")
                .values(**values)
            )
        )

    async def _deliver(self, client: httpx.AsyncClient, due: _Due) -> None:
        import httpx

        now = int(time.time())
        body = due.payload.encode()
        headers = {
            "Content-Type": "application/json",
            H_EVENT_ID: due.id,
            H_SIGNATURE: sign_webhook(self.key, self.kid, body, timestamp=now),
            "User-Agent": "safescan-institution-webhooks/1",
        }
        ok, error = False, None
        try:
            resp = await client.post(due.url, content=body, headers=headers)
            ok = 200 <= resp.status_code < 300
            if not ok:
                error = f"HTTP {resp.status_code}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}"
        await asyncio.to_thread(self.record, due, ok, error, time.time())

    async def run_once(self, client: httpx.AsyncClient) -> int:
        """Claim and deliver one batch; returns how many were attempted."""
        due = await asyncio.to_thread(self.claim_due, int(time.time() * 1000))
        if due:
            await asyncio.gather(*(self._deliver(client, d) for d in due))
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; storage errors are logged and retried."""
        import httpx  # only processes that deliver webhooks pay for it

        async with httpx.AsyncClient(timeout=self.timeout, follow_redirects=False) as client:
            while not stop.is_set():
                try:
                    n = await self.run_once(client)
                except SafescanError as exc:
                    log.warning("webhook delivery paused: %s", exc.message)
                    n = 0
                if n == 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), self.poll_interval)
