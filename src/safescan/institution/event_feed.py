"""A merchant's event feed: the outbox events (:mod:`.webhooks`) in sequence order, each
signed for the live stream (``GET /v1/merchant/events``; signatures: :mod:`safescan.api.events`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from safescan.api.events import sign_event
from safescan.institution.db import Database
from safescan.institution.keystore import InstitutionKeys
from safescan.institution.models import Event


@dataclass(frozen=True)
class FeedEvent:
    """One event as the stream sends it."""

    seq: int  # the merchant's resume point (``Last-Event-ID``)
    type: str
    payload: str  # canonical JSON
    signature: str  # base64 stream signature of ``payload`` by the key ``kid``
    kid: int


class EventFeed:
    """Merchants' events over one database, signed with the institution's root key."""

    def __init__(self, db: Database, keys: InstitutionKeys) -> None:
        self.db = db
        self.keys = keys

    def latest(self, merchant_id: str) -> int:
        """The merchant's newest sequence number (0 when it has no event)."""
        return int(
            self.db.read(
                lambda c: c.execute(
                    select(func.coalesce(func.max(Event.seq), 0)).where(
                        Event.merchant_id == merchant_id
                    )
                ).scalar_one()
            )
        )

    def after(self, merchant_id: str, after: int, limit: int = 100) -> list[FeedEvent]:
        """The merchant's events with a sequence number greater than ``after``, oldest first."""
        rows = self.db.read(
            lambda c: c.execute(
                select(Event.seq, Event.type, Event.payload)
                .where(Event.merchant_id == merchant_id, Event.seq > after)
                .order_by(Event.seq)
                .limit(limit)
            ).all()
        )
        root, kid = self.keys.root, self.keys.root_kid
        return [FeedEvent(r.seq, r.type, r.payload, sign_event(root, r.payload), kid) for r in rows]


__all__ = ["EventFeed", "FeedEvent"]
