"""The webhook delivery log (one row per attempt) and the merchant's resend of an event.

Each attempt the dispatcher makes (and each ``webhook test``) is recorded in the same
transaction as its outcome: event id, attempt number, time, the URL, the HTTP status or the
transport error class (``timeout``, ``connect``, ``tls``, ``refused``, ...), latency, the next
retry time and the state after it (``delivered``, ``retrying``, ``failed``).

**Retention** (bounded): at most :data:`Retention.per_endpoint` rows per merchant (the oldest
go when a new one is written) and none older than :data:`Retention.max_age` seconds (swept by
the dispatcher every minute). Both are settings (``[webhooks] log_per_endpoint``,
``log_max_days``; defaults 1,000 and 30 days). The outbox (``events``) keeps each event's
final state regardless.

**Resend**: a merchant's own event, whatever its state, goes back to ``pending`` with its retry
window restarted and the resend's own request id (a new one, linked to the id of the request
that caused the event: both are in the answer, the log line and each delivery row after it);
an event already pending is left as it is (a second resend adds nothing).
Another merchant's event id, or an unknown one, is ``UnknownEvent`` (a ``NotFound``) and changes
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from safescan.api.errors import Conflict, UnknownEvent
from safescan.institution.models import Event, MerchantRow, WebhookDelivery, WebhookEndpoint
from safescan.institution.webhook_transport import Attempt


@dataclass(frozen=True)
class Retention:
    """How much of the delivery log is kept."""

    per_endpoint: int = 1000
    max_age: int = 30 * 24 * 3600

    def to_dict(self) -> dict[str, int]:
        """As shown to merchants."""
        return {"per_endpoint": self.per_endpoint, "max_age": self.max_age}


RETENTION = Retention()


def record_attempt(
    conn: Connection,
    *,
    merchant_id: str,
    event_id: str,
    kind: str,
    attempt: int,
    att: Attempt,
    state: str,
    next_retry_ms: int | None,
    retention: Retention = RETENTION,
    request_id: str | None = None,
    original_request_id: str | None = None,
) -> None:
    """Insert one attempt (in the caller's transaction) and drop the merchant's oldest rows
    beyond ``retention.per_endpoint``."""
    conn.execute(
        insert(WebhookDelivery).values(
            merchant_id=merchant_id,
            event_id=event_id,
            kind=kind,
            attempt=attempt,
            at_ms=int(att.started_at * 1000),
            url=att.url[:512],
            status=att.status,
            error_kind=(att.error_kind or None) if not att.ok else None,
            error=att.summary(),
            latency_ms=max(0, min(int(att.duration * 1000), 2**31 - 1)),
            next_retry_ms=next_retry_ms,
            state=state,
            request_id=request_id,
            original_request_id=original_request_id,
        )
    )
    cutoff = conn.execute(
        select(WebhookDelivery.id)
        .where(WebhookDelivery.merchant_id == merchant_id)
        .order_by(WebhookDelivery.id.desc())
        .offset(retention.per_endpoint)
        .limit(1)
    ).scalar()
    if cutoff is not None:
        conn.execute(
            delete(WebhookDelivery).where(
                WebhookDelivery.merchant_id == merchant_id, WebhookDelivery.id <= cutoff
            )
        )


def _row(r: Any) -> dict[str, Any]:
    return {
        "id": r.id,
        "event_id": r.event_id,
        "kind": r.kind,
        "attempt": r.attempt,
        "at_ms": r.at_ms,
        "url": r.url,
        "status": r.status,
        "error_kind": r.error_kind,
        "error": r.error,
        "latency_ms": r.latency_ms,
        "next_retry_ms": r.next_retry_ms,
        "state": r.state,
        "request_id": r.request_id,
        "original_request_id": r.original_request_id,
    }


def list_deliveries(
    conn: Connection,
    merchant_id: str,
    *,
    limit: int = 50,
    before: int | None = None,
    event_id: str | None = None,
    retention: Retention = RETENTION,
) -> dict[str, Any]:
    """The merchant's attempts, newest first (page with ``before=<last id>``)."""
    q = select(*WebhookDelivery.__table__.columns).where(WebhookDelivery.merchant_id == merchant_id)
    if before is not None:
        q = q.where(WebhookDelivery.id < before)
    if event_id is not None:
        q = q.where(WebhookDelivery.event_id == event_id)
    rows = conn.execute(q.order_by(WebhookDelivery.id.desc()).limit(limit)).all()
    return {
        "deliveries": [_row(r) for r in rows],
        "retention": retention.to_dict(),
    }


def resend(
    conn: Connection, merchant_id: str, event_id: str, now: int, request_id: str
) -> dict[str, Any]:
    """Put the merchant's own event back in the queue (idempotent while it is pending).

    ``request_id``: the resend's own id (its HTTP request's): the deliveries it causes carry it
    as ``X-Request-Id`` and in the delivery log, next to the id of the request that caused the
    event (``original_request_id``)."""
    ev = conn.execute(
        select(Event.id, Event.webhook_state, Event.attempts, Event.request_id).where(
            Event.id == event_id, Event.merchant_id == merchant_id
        )
    ).one_or_none()
    if ev is None or merchant_id == "":
        raise UnknownEvent(f"no event {event_id}", param="event_id")
    url = conn.execute(
        select(MerchantRow.webhook_url).where(MerchantRow.id == merchant_id)
    ).scalar()
    if url is None:
        raise Conflict("no webhook URL is set: set one first (safescan pos webhook set)")
    linked = {"request_id": request_id, "original_request_id": ev.request_id}
    if ev.webhook_state == "pending":
        return {"event_id": event_id, "state": "pending", "requeued": False, **linked}
    res = conn.execute(
        update(Event)
        .where(
            Event.id == event_id,
            Event.merchant_id == merchant_id,
            Event.webhook_state == ev.webhook_state,
        )
        .values(
            webhook_state="pending",
            delivered_at=None,
            next_attempt_ms=now * 1000,
            requeued_at=now,
            resend_request_id=request_id,
        )
    )
    return {"event_id": event_id, "state": "pending", "requeued": res.rowcount == 1, **linked}


def prune(conn: Connection, *, now: int, retention: Retention = RETENTION) -> int:
    """Drop log rows older than the retention and previous secrets past their overlap."""
    res = conn.execute(
        delete(WebhookDelivery).where(WebhookDelivery.at_ms < (now - retention.max_age) * 1000)
    )
    conn.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.previous_until.is_not(None), WebhookEndpoint.previous_until <= now)
        .values(previous_box=None, previous_until=None)
    )
    return int(res.rowcount or 0)
