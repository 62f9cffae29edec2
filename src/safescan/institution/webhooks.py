"""Merchant notifications: the persisted outbox and the webhook retry policy.

Every event is a canonical JSON object ``{"id", "type", "created", "merchant_id", "data"}``
written in the same transaction as the state change it reports. The institution signs it when it
sends it (stream and webhook signatures: :mod:`safescan.api.events`, which merchants use to
verify them).

Delivery (:mod:`.webhook_dispatcher`): a background task in every API process claims due events
and POSTs them; on any non-2xx answer or failure it retries with exponential back-off (base 5 s,
doubling, capped at 1 h, +-20 % jitter) until 72 h after the event, then marks it ``failed``.
State lives in the database, so deliveries survive restarts.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from safescan.api.obslog import current_request_id
from safescan.institution import sql
from safescan.institution.util import canonical_json, new_id


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
        "e_request_id": current_request_id(),  # the request that caused it, if one did
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
