"""The webhook dispatcher: delivers due outbox events, one merchant never delaying another.

* **Claiming** (safe across processes): due events are leased with an optimistic
  ``UPDATE ... WHERE next_attempt_ms = <seen>``; the lease outlives an attempt's deadline, so a
  second process does not take an event that is still in flight.
* **Isolation**: every attempt is its own task. A merchant's endpoint has at most
  ``per_endpoint`` attempts in flight in a process; the claim query skips endpoints at their
  limit and takes at most that many events per endpoint (a window over the due events), so a
  backlog or a slow receiver occupies only its own slots. The process runs at most
  ``concurrency`` attempts; the loop claims again as soon as any attempt ends, never waiting for
  a batch. Other merchants are delayed only if ``concurrency / per_endpoint`` endpoints are all
  slow at once, and then for at most one ``deadline``.
* **Bounds per attempt** (:mod:`.webhook_transport`): one total deadline, a byte budget, the
  address checked on every connection (:mod:`.webhook_targets`), no redirects.
* **Signatures** (:mod:`safescan.api.standard_webhooks`): the Standard Webhooks headers
  (``v1a`` Ed25519 with the root key, ``v1`` HMAC with each live endpoint secret) and the
  original ``Safescan-Signature``.
* **Delivery log** (:mod:`.webhook_log`): every attempt's outcome is recorded with it.
* **Survival**: an attempt that fails in any way becomes a recorded failure with back-off; an
  unexpected exception is logged and counted, and the loop goes on. :meth:`health` says whether
  the loop is alive and turning; ``/health`` answers 503 when it is not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import httpcore
from sqlalchemy import Connection, func, select, update

from safescan.api import standard_webhooks
from safescan.api.errors import ConfigError, WebhookUrlRefused
from safescan.api.events import H_EVENT_ID, H_SIGNATURE, sign_webhook
from safescan.api.obslog import REQUEST_ID_HEADER, is_sane_request_id, set_request_id
from safescan.code.errors import SafescanError
from safescan.code.keys import Signer
from safescan.institution.db import Database
from safescan.institution.models import Event, MerchantRow, WebhookEndpoint
from safescan.institution.webhook_log import RETENTION, Retention, prune, record_attempt
from safescan.institution.webhook_secrets import EndpointSecrets
from safescan.institution.webhook_targets import TargetPolicy
from safescan.institution.webhook_transport import (
    Attempt,
    Counters,
    GuardedBackend,
    attempt,
    open_pool,
)
from safescan.institution.webhooks import RetryPolicy

log = logging.getLogger("safescan.institution.webhooks")

USER_AGENT = "safescan-institution-webhooks/1"
PRUNE_EVERY = 60.0  # seconds between sweeps of the delivery log's retention


@dataclass(frozen=True)
class DeliveryLimits:
    """Per-process delivery limits."""

    deadline: float = 10.0  # total seconds for one attempt, connect to last byte
    per_endpoint: int = 2  # attempts in flight per merchant endpoint
    concurrency: int = 64  # attempts in flight in this process
    max_bytes: int = 64 * 1024  # bytes read per attempt (headers and body)
    excerpt: int = 1024  # body bytes kept for the attempt record

    def __post_init__(self) -> None:
        if not 0.1 <= self.deadline <= 300:
            raise ConfigError("the webhook deadline must be between 0.1 and 300 seconds")
        if not 1 <= self.per_endpoint <= self.concurrency <= 10_000:
            raise ConfigError("webhook concurrency: 1 <= per endpoint <= per process <= 10000")
        if not 1024 <= self.max_bytes <= 16 * 1024 * 1024 or not 0 <= self.excerpt <= 65536:
            raise ConfigError("webhook byte limits out of range")


@dataclass(frozen=True)
class _Due:
    seq: int
    id: str
    merchant_id: str
    payload: str
    attempts: int
    created_at: int
    url: str
    requeued_at: int | None = None
    secrets: tuple[str, ...] = ()  # the endpoint's live whsec_ secrets (v1 signatures)
    secret_error: str | None = None  # the sealed secret did not open: nothing is sent
    request_id: str | None = None  # the request that caused the event (sent as X-Request-Id)
    resend_request_id: str | None = None  # the merchant's resend (sent instead, once resent)

    @property
    def sent_request_id(self) -> str | None:
        """The ``X-Request-Id`` of this attempt: the resend's, else the causing request's; a
        stored value that is not a sane request id (CR/LF, controls, non-ASCII, too long: an
        older version's, a restore's, a hand edit's) is never sent (header injection) nor let
        fail every attempt in the HTTP library."""
        for value in (self.resend_request_id, self.request_id):
            if is_sane_request_id(value):
                return value
        return None


@dataclass
class Stats:
    """Counters of one dispatcher (this process)."""

    attempts: int = 0
    delivered: int = 0
    failed_attempts: int = 0
    refused: int = 0  # the URL or the address it resolved to was refused
    gave_up: int = 0
    internal_errors: int = 0  # an attempt raised something unexpected (logged)
    loop_errors: int = 0  # the claim loop raised something unexpected (logged)
    storage_errors: int = 0
    max_attempt_bytes: int = 0
    max_endpoint_in_flight: int = 0  # the most attempts one endpoint ever had at once


def signed_headers(
    key: Signer, kid: int, event_id: str, body: bytes, secrets: tuple[str, ...]
) -> dict[str, str]:
    """Every header of one attempt, signed now: Standard Webhooks and ``Safescan-Signature``."""
    now = int(time.time())
    return {
        "Content-Type": "application/json",
        **standard_webhooks.headers(key, event_id, body, timestamp=now, secrets=secrets),
        H_EVENT_ID: event_id,
        H_SIGNATURE: sign_webhook(key, kid, body, timestamp=now),
        "User-Agent": USER_AGENT,
    }


class WebhookDispatcher:
    """Delivers due outbox events; one per API process, all processes may run it."""

    def __init__(
        self,
        db: Database,
        key: Signer,
        kid: int,
        *,
        policy: RetryPolicy | None = None,
        targets: TargetPolicy | None = None,
        limits: DeliveryLimits | None = None,
        poll_interval: float = 0.5,
        stall_after: float | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_attempt: Callable[[str, Attempt], None] | None = None,
        secrets: EndpointSecrets | None = None,
        retention: Retention = RETENTION,
    ) -> None:
        self.db, self.key, self.kid = db, key, kid
        self.secrets = secrets  # None: v1a (Ed25519) and Safescan-Signature only
        self.retention = retention  # of the delivery log, swept every PRUNE_EVERY seconds
        self._pruned = 0.0
        self.policy = policy or RetryPolicy()
        self.targets = targets or TargetPolicy()
        self.limits = limits or DeliveryLimits()
        self.poll_interval = poll_interval
        self.stall_after = stall_after or max(30.0, 20 * poll_interval)
        self.lease = max(self.policy.lease, 2 * self.limits.deadline + 5)
        self.ssl_context = ssl_context
        self.on_attempt = on_attempt  # called with (event id, attempt) after it is recorded
        self.stats = Stats()
        self.counters = Counters()
        self.in_flight: dict[str, int] = {}
        self.state = "not started"  # running, stopped, dead
        self._tasks: set[asyncio.Task[None]] = set()
        self._wake: asyncio.Event | None = None
        self._beat = time.monotonic()

    # --- storage (called in threads) ---

    def claim_due(self, now_ms: int, slots: int, in_flight: Mapping[str, int]) -> list[_Due]:
        """Lease up to ``slots`` due events, at most what each endpoint has room for."""
        per = self.limits.per_endpoint
        busy = sorted(m for m, n in in_flight.items() if n >= per)
        rank = (
            func.row_number()
            .over(partition_by=Event.merchant_id, order_by=(Event.next_attempt_ms, Event.seq))
            .label("rank")
        )
        where = [Event.webhook_state == "pending", Event.next_attempt_ms <= now_ms]
        if busy:
            where.append(Event.merchant_id.not_in(busy))
        due = (
            select(
                Event.seq,
                Event.id,
                Event.merchant_id,
                Event.payload,
                Event.attempts,
                Event.created_at,
                Event.requeued_at,
                Event.next_attempt_ms,
                Event.request_id,
                Event.resend_request_id,
                rank,
            )
            .where(*where)
            .subquery()
        )
        query = (
            select(
                due,
                MerchantRow.webhook_url,
                WebhookEndpoint.secret_box,
                WebhookEndpoint.previous_box,
                WebhookEndpoint.previous_until,
            )
            .join(MerchantRow, MerchantRow.id == due.c.merchant_id)
            .outerjoin(WebhookEndpoint, WebhookEndpoint.merchant_id == due.c.merchant_id)
            .where(due.c.rank <= per)
            .order_by(due.c.next_attempt_ms, due.c.seq)
            .limit(slots + sum(in_flight.values()))
        )
        rows = self.db.read(lambda c: c.execute(query).all())
        if not rows:
            return []
        taken: dict[str, int] = {}
        chosen: list[Any] = []
        for r in rows:
            if len(chosen) >= slots:
                break
            if in_flight.get(r.merchant_id, 0) + taken.get(r.merchant_id, 0) >= per:
                continue
            taken[r.merchant_id] = taken.get(r.merchant_id, 0) + 1
            chosen.append(r)
        lease_until = now_ms + int(self.lease * 1000)

        def claim(conn: Connection) -> list[_Due]:
            claimed = []
            for r in chosen:
                res = conn.execute(
                    update(Event)
                    .where(
                        Event.seq == r.seq,
                        Event.webhook_state == "pending",
                        Event.next_attempt_ms == r.next_attempt_ms,
                    )
                    .values(next_attempt_ms=lease_until)
                )
                if res.rowcount != 1:
                    continue  # another process took it
                if r.webhook_url is None:  # the merchant removed its URL: stream only
                    conn.execute(
                        update(Event).where(Event.seq == r.seq).values(webhook_state="none")
                    )
                    continue
                live, problem = self._live_secrets(r, now_ms // 1000)
                claimed.append(
                    _Due(
                        r.seq,
                        r.id,
                        r.merchant_id,
                        r.payload,
                        r.attempts,
                        r.created_at,
                        r.webhook_url,
                        r.requeued_at,
                        live,
                        problem,
                        request_id=r.request_id,
                        resend_request_id=r.resend_request_id,
                    )
                )
            return claimed

        return self.db.write(claim)

    def _live_secrets(self, row: Any, now: int) -> tuple[tuple[str, ...], str | None]:
        if self.secrets is None or row.secret_box is None:
            return (), None
        try:
            return self.secrets.live(row.merchant_id, row, now), None
        except SafescanError as exc:
            log.error("webhook %s not sent: %s", row.id, exc.message)
            return (), "the endpoint's signing secret does not open (logged)"

    def record(self, due: _Due, att: Attempt, now: float) -> bool:
        """Record the outcome of one attempt (the event and the delivery log, in one
        transaction); True when the event is now ``failed`` for good."""
        attempts = due.attempts + 1
        values: dict[str, Any] = {"attempts": attempts, "last_error": att.summary()}
        gave_up = False
        next_ms: int | None = None
        since = max(due.created_at, due.requeued_at or 0)  # a resend restarts the window
        if att.ok:
            values.update(webhook_state="delivered", delivered_at=int(now))
            state = "delivered"
        elif now - since >= self.policy.give_up_after:
            values.update(webhook_state="failed")
            gave_up, state = True, "failed"
        else:
            next_ms = int((now + self.policy.delay(attempts)) * 1000)
            values.update(next_attempt_ms=next_ms)
            state = "retrying"

        def tx(c: Connection) -> None:
            c.execute(
                update(Event)
                .where(Event.seq == due.seq, Event.webhook_state == "pending")
                .values(**values)
            )
            record_attempt(
                c,
                merchant_id=due.merchant_id,
                event_id=due.id,
                kind="event",
                attempt=attempts,
                att=att,
                state=state,
                next_retry_ms=next_ms,
                retention=self.retention,
                request_id=due.sent_request_id,
                original_request_id=due.request_id,
            )

        self.db.write(tx)
        return gave_up

    def prune_log(self) -> int:
        """Apply the delivery log's retention (and end past secret overlaps); rows deleted."""
        now = int(time.time())
        return self.db.write(lambda c: prune(c, now=now, retention=self.retention))

    # --- delivery ---

    async def _attempt(self, pool: httpcore.AsyncConnectionPool, due: _Due) -> Attempt:
        try:
            target = self.targets.parse(due.url)
        except WebhookUrlRefused as exc:  # stored before the rules (or the rules tightened)
            return Attempt(
                due.url[:200], time.time(), error_kind="invalid_url", error=exc.message[:200]
            )
        if due.secret_error is not None:
            return Attempt(
                due.url[:200], time.time(), error_kind="internal", error=due.secret_error
            )
        body = due.payload.encode()
        try:
            headers = signed_headers(self.key, self.kid, due.id, body, due.secrets)
        except standard_webhooks.WebhookIdInvalid as exc:  # a restore's or a hand edit's id:
            # nothing is signed or sent; its own event fails (with back-off), like a bad URL
            return Attempt(
                due.url[:200], time.time(), error_kind="invalid_event", error=exc.message
            )
        if due.sent_request_id:  # the merchant's logs can join on it (a resend: its own id)
            headers[REQUEST_ID_HEADER] = due.sent_request_id
        lim = self.limits
        return await attempt(
            pool,
            target,
            body,
            headers,
            deadline=lim.deadline,
            max_bytes=lim.max_bytes,
            excerpt=lim.excerpt,
        )

    def _count(self, att: Attempt) -> None:
        s = self.stats
        s.attempts += 1
        s.max_attempt_bytes = max(s.max_attempt_bytes, att.bytes_received)
        if att.ok:
            s.delivered += 1
            return
        s.failed_attempts += 1
        if att.error_kind in ("refused", "invalid_url"):
            s.refused += 1
        elif att.error_kind == "internal":
            s.internal_errors += 1

    async def _deliver(self, pool: httpcore.AsyncConnectionPool, due: _Due) -> None:
        """One attempt, counted and recorded; never raises (but for cancellation). Its log
        lines carry the attempt's request id (this runs in its own task: the id is local)."""
        set_request_id(due.sent_request_id)
        try:
            try:
                att = await self._attempt(pool, due)
            except Exception:
                log.error("webhook attempt for %s failed unexpectedly", due.id, exc_info=True)
                att = Attempt(
                    due.url[:200],
                    time.time(),
                    error_kind="internal",
                    error="internal error (logged)",
                )
            self._count(att)
            if not att.ok:
                log.info("webhook %s to merchant %s: %s", due.id, due.merchant_id, att.summary())
            try:
                if await asyncio.to_thread(self.record, due, att, time.time()):
                    self.stats.gave_up += 1
            except SafescanError as exc:  # the lease runs out and the event is tried again
                self.stats.storage_errors += 1
                log.warning("webhook outcome not recorded: %s", exc.message)
            if self.on_attempt is not None:
                self.on_attempt(due.id, att)
        except Exception:
            self.stats.internal_errors += 1
            log.error("webhook delivery of %s: unexpected error", due.id, exc_info=True)
        finally:
            n = self.in_flight.get(due.merchant_id, 1) - 1
            if n > 0:
                self.in_flight[due.merchant_id] = n
            else:
                self.in_flight.pop(due.merchant_id, None)
            if self._wake is not None:
                self._wake.set()

    async def _fill(self, pool: httpcore.AsyncConnectionPool) -> int:
        """Claim what fits and start an attempt for each; how many were started."""
        slots = self.limits.concurrency - len(self._tasks)
        if slots <= 0:
            return 0
        due = await asyncio.to_thread(
            self.claim_due, int(time.time() * 1000), slots, dict(self.in_flight)
        )
        for d in due:
            n = self.in_flight[d.merchant_id] = self.in_flight.get(d.merchant_id, 0) + 1
            self.stats.max_endpoint_in_flight = max(self.stats.max_endpoint_in_flight, n)
            task = asyncio.create_task(self._deliver(pool, d), name=f"webhook-{d.id}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return len(due)

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set. Errors are logged and counted; the loop goes on."""
        self.state = "running"
        self._beat = time.monotonic()
        wake = self._wake = asyncio.Event()  # bound to this loop
        backend = GuardedBackend(self.targets, counters=self.counters)
        pool = open_pool(
            backend, max_connections=self.limits.concurrency, ssl_context=self.ssl_context
        )
        try:
            while not stop.is_set():
                self._beat = time.monotonic()
                wake.clear()
                started = 0
                try:
                    if time.monotonic() - self._pruned >= PRUNE_EVERY:
                        self._pruned = time.monotonic()
                        await asyncio.to_thread(self.prune_log)
                    started = await self._fill(pool)
                except SafescanError as exc:
                    self.stats.storage_errors += 1
                    log.warning("webhook delivery paused: %s", exc.message)
                except Exception:
                    self.stats.loop_errors += 1
                    log.error("webhook dispatcher loop error (continuing)", exc_info=True)
                if started and len(self._tasks) < self.limits.concurrency:
                    continue  # there may be more due right now
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.poll_interval):
                        await wake.wait()  # an attempt ended: its slot is free
        finally:
            self.state = "stopped" if stop.is_set() else "dead"
            tasks = list(self._tasks)
            for t in tasks:
                t.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
                await pool.aclose()
            backend.close()
            if self.state == "dead":
                log.critical("the webhook dispatcher stopped unexpectedly")

    # --- readiness ---

    def health(self) -> dict[str, Any]:
        """``state``: ``running``, ``stalled`` (the loop has not turned for ``stall_after``
        seconds), ``dead``, ``stopped`` or ``not started``; with counters."""
        state = self.state
        age = time.monotonic() - self._beat
        if state == "running" and age > self.stall_after:
            state = "stalled"
        return {
            "state": state,
            "ok": state == "running",
            "loop_age": round(age, 3),
            "in_flight": len(self._tasks),
            "endpoints_in_flight": len(self.in_flight),
            **asdict(self.stats),
            **asdict(self.counters),
        }
