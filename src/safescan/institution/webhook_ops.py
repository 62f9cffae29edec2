"""What a merchant can do with its webhook endpoint: see it, rotate its secret, send a test
event, read the delivery log, resend an event. Every call is scoped to the calling merchant.

The HTTP routes are in :mod:`.http.webhooks`; the storage in :mod:`.webhook_log` and
:mod:`.webhook_secrets`; the signing and the attempt are the dispatcher's
(:func:`.webhook_dispatcher.signed_headers`, :func:`.webhook_transport.attempt`).
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, select

from safescan.api.errors import Conflict, RateLimited, WebhookUrlRefused
from safescan.api.obslog import current_request_id, new_request_id
from safescan.api.standard_webhooks import public_key_text
from safescan.code.keys import Signer
from safescan.institution import webhook_log
from safescan.institution.db import Database
from safescan.institution.models import MerchantRow, WebhookEndpoint
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.util import canonical_json, new_id
from safescan.institution.webhook_dispatcher import DeliveryLimits, signed_headers
from safescan.institution.webhook_secrets import (
    DEFAULT_OVERLAP,
    EndpointSecrets,
    endpoint_info,
)
from safescan.institution.webhook_targets import TargetPolicy
from safescan.institution.webhook_transport import Attempt, GuardedBackend, attempt, open_pool

log = logging.getLogger("safescan.institution.webhook_ops")

TEST_EVENT = "webhook.test"
#: test deliveries per merchant and API process: a burst of 5, then one every 10 s, one at a
#: time (the merchant-request rate limit alone would let one merchant make the institution
#: send up to ~100 requests a second to a URL of its choosing)
TEST_RATE, TEST_BURST = 0.1, 5.0


class WebhookOps:
    """The merchant's webhook operations over one database and the institution's keys."""

    def __init__(
        self,
        db: Database,
        key: Signer,
        kid: int,
        secrets: EndpointSecrets,
        targets: Callable[[], TargetPolicy],
        *,
        clock: Callable[[], float] = time.time,
        limits: DeliveryLimits | None = None,
        ssl_context: ssl.SSLContext | None = None,
        retention: webhook_log.Retention = webhook_log.RETENTION,
    ) -> None:
        self.db, self.key, self.kid, self.secrets = db, key, kid, secrets
        self.targets = targets  # read at each call: the operator's rules may be set after
        self.clock = clock
        self.limits = limits or DeliveryLimits()
        self.ssl_context = ssl_context
        self.retention = retention
        self._test_limiter = RateLimiter(TEST_RATE, TEST_BURST)
        self._testing: set[str] = set()  # merchants with a test delivery in flight

    def now(self) -> int:
        """Server time, unix seconds."""
        return int(self.clock())

    def endpoint(self, mid: str) -> dict[str, Any]:
        """The URL, the key that signs ``v1a``, the secret's version and dates (never the
        secret) and the delivery log's retention."""
        now = self.now()

        def read(c: Connection) -> dict[str, Any]:
            url = c.execute(select(MerchantRow.webhook_url).where(MerchantRow.id == mid)).scalar()
            return {"url": url, **endpoint_info(c, mid, now)}

        info = self.db.read(read)
        return {
            **info,
            "public_key": public_key_text(self.key.public_key),
            "kid": self.kid,
            "retention": self.retention.to_dict(),
        }

    def rotate(self, mid: str, overlap: int = DEFAULT_OVERLAP) -> dict[str, Any]:
        """A new endpoint secret (the first one, or a replacement keeping the previous one
        ``overlap`` seconds). The only answer that ever contains a secret."""
        now = self.now()
        return self.db.write(
            lambda c: self.secrets.rotate(c, mid, now=now, overlap=overlap)
        ).to_dict()

    def deliveries(
        self, mid: str, *, limit: int, before: int | None, event_id: str | None
    ) -> dict[str, Any]:
        """The delivery log of the merchant's endpoint, newest first."""
        return self.db.read(
            lambda c: webhook_log.list_deliveries(
                c, mid, limit=limit, before=before, event_id=event_id, retention=self.retention
            )
        )

    def resend(self, mid: str, event_id: str) -> dict[str, Any]:
        """Queue the merchant's own event again (idempotent while pending)."""
        now = self.now()
        rid = current_request_id() or new_request_id()  # a command run outside a request
        doc = self.db.write(lambda c: webhook_log.resend(c, mid, event_id, now, rid))
        log.info(
            "webhook resend of %s for merchant %s (request %s; the event's request %s)",
            event_id,
            mid,
            rid,
            doc["original_request_id"],
        )
        return doc

    def _target(self, mid: str) -> tuple[str, tuple[str, ...]]:
        now = self.now()

        def read(c: Connection) -> tuple[str | None, Any]:
            url = c.execute(select(MerchantRow.webhook_url).where(MerchantRow.id == mid)).scalar()
            row = c.execute(
                select(
                    WebhookEndpoint.secret_box,
                    WebhookEndpoint.previous_box,
                    WebhookEndpoint.previous_until,
                ).where(WebhookEndpoint.merchant_id == mid)
            ).one_or_none()
            return url, row

        url, row = self.db.read(read)
        if url is None:
            raise Conflict("no webhook URL is set: set one first (safescan pos webhook set)")
        return url, self.secrets.live(mid, row, now)

    async def test(self, mid: str) -> dict[str, Any]:
        """Send a signed ``webhook.test`` event to the merchant's URL now, once, with the
        dispatcher's bounds and address checks; the attempt is recorded and returned.
        Limited per merchant (:data:`TEST_RATE`, one at a time): ``RateLimited`` beyond."""
        self._test_limiter.check(mid)
        if mid in self._testing:
            raise RateLimited("a test delivery for this endpoint is still running; wait for it")
        self._testing.add(mid)
        try:
            return await self._test(mid)
        finally:
            self._testing.discard(mid)

    async def _test(self, mid: str) -> dict[str, Any]:
        url, live = await asyncio.to_thread(self._target, mid)
        now = self.now()
        event_id = new_id("evt_test_", 20)
        body = canonical_json(
            {
                "id": event_id,
                "type": TEST_EVENT,
                "created": now,
                "merchant_id": mid,
                "data": {"test": True},
            }
        ).encode()
        policy = self.targets()
        try:
            target = policy.parse(url)
        except WebhookUrlRefused as exc:
            att = Attempt(url[:200], time.time(), error_kind="invalid_url", error=exc.message[:200])
        else:
            backend = GuardedBackend(policy, dns_threads=1)
            pool = open_pool(backend, max_connections=1, ssl_context=self.ssl_context)
            lim = self.limits
            try:
                att = await attempt(
                    pool,
                    target,
                    body,
                    signed_headers(self.key, self.kid, event_id, body, live),
                    deadline=lim.deadline,
                    max_bytes=lim.max_bytes,
                    excerpt=lim.excerpt,
                )
            finally:
                await pool.aclose()
                backend.close()
        state = "delivered" if att.ok else "failed"

        def record(c: Connection) -> None:
            webhook_log.record_attempt(
                c,
                merchant_id=mid,
                event_id=event_id,
                kind="test",
                attempt=1,
                att=att,
                state=state,
                next_retry_ms=None,
                retention=self.retention,
                request_id=rid,
            )

        rid = current_request_id()
        await asyncio.to_thread(self.db.write, record)
        return {
            "event_id": event_id,
            "url": att.url,
            "status": att.status,
            "error_kind": None if att.ok else att.error_kind,
            "error": att.summary(),
            "latency_ms": int(att.duration * 1000),
            "state": state,
        }
