"""A merchant endpoint's ``whsec_`` signing secrets: creation, rotation with overlap, sealing.

The institution must compute HMACs with the secret, so it keeps it, sealed: AES-256-GCM under a
key derived (HKDF-SHA256) from the institution's server secret (the key directory), with the
merchant id as associated data, so a database copy alone does not reveal a secret and a sealed
secret moved to another merchant does not open.

A secret is shown once: in the answer of the call that created it (``rotate``). Nothing else
returns it; the audit entry records the rotation's version and overlap, never the secret; no
log line carries it.

Rotation keeps the previous secret for an overlap window (default 24 h, at most 7 days, 0 ends
it at once): during it every delivery carries a ``v1`` signature with each live secret (Standard
Webhooks allows several space-separated signatures); after it, only the new one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, insert, select, update

from safescan.api.errors import InvalidRequest, StorageError
from safescan.api.standard_webhooks import new_secret
from safescan.institution import audit
from safescan.institution.models import WebhookEndpoint

DEFAULT_OVERLAP = 24 * 3600
MAX_OVERLAP = 7 * 24 * 3600
_INFO = b"safescan webhook endpoint secrets v1"
_AAD = b"safescan webhook secret\0"


@dataclass(frozen=True)
class Rotation:
    """The answer of a rotation: the new secret (shown once) and the overlap's end."""

    secret: str
    version: int
    previous_valid_until: int | None

    def to_dict(self) -> dict[str, Any]:
        """The API answer."""
        return {
            "secret": self.secret,
            "version": self.version,
            "previous_valid_until": self.previous_valid_until,
        }


class EndpointSecrets:
    """Seals, opens and rotates endpoint secrets (key derived from the server secret)."""

    def __init__(self, server_secret: bytes) -> None:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(
            server_secret
        )
        self._aead = AESGCM(key)

    def seal(self, merchant_id: str, secret: str) -> bytes:
        """nonce || AES-GCM(secret) bound to the merchant."""
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), _AAD + merchant_id.encode())

    def open(self, merchant_id: str, box: bytes) -> str:
        """The secret sealed in ``box`` for this merchant (StorageError if it does not open)."""
        try:
            plain = self._aead.decrypt(box[:12], box[12:], _AAD + merchant_id.encode())
        except (InvalidTag, ValueError):
            raise StorageError(
                f"the webhook secret of {merchant_id} does not open (altered, or another key"
                " directory)"
            ) from None
        return plain.decode()

    def live(self, merchant_id: str, row: Any, now: int) -> tuple[str, ...]:
        """The secrets a delivery signs with now: current first, the previous one during the
        overlap. ``row`` has ``secret_box``, ``previous_box``, ``previous_until`` (or is None)."""
        if row is None or row.secret_box is None:
            return ()
        out = [self.open(merchant_id, row.secret_box)]
        if row.previous_box is not None and (row.previous_until or 0) > now:
            out.append(self.open(merchant_id, row.previous_box))
        return tuple(out)

    def rotate(self, conn: Connection, merchant_id: str, *, now: int, overlap: int) -> Rotation:
        """Create the endpoint's first secret, or replace it keeping the old one ``overlap``
        seconds (in the caller's transaction; audited without the secret)."""
        if not 0 <= overlap <= MAX_OVERLAP:
            raise InvalidRequest(
                f"the overlap must be between 0 and {MAX_OVERLAP} seconds", param="overlap_seconds"
            )
        secret = new_secret()
        box = self.seal(merchant_id, secret)
        row = conn.execute(
            select(WebhookEndpoint.version, WebhookEndpoint.secret_box).where(
                WebhookEndpoint.merchant_id == merchant_id
            )
        ).one_or_none()
        if row is None:
            version, until = 1, None
            conn.execute(
                insert(WebhookEndpoint).values(
                    merchant_id=merchant_id,
                    secret_box=box,
                    previous_box=None,
                    previous_until=None,
                    version=1,
                    created_at=now,
                    rotated_at=now,
                )
            )
        else:
            version = row.version + 1
            until = now + overlap if overlap else None
            res = conn.execute(
                update(WebhookEndpoint)
                .where(
                    WebhookEndpoint.merchant_id == merchant_id,
                    WebhookEndpoint.version == version - 1,
                )
                .values(
                    secret_box=box,
                    previous_box=row.secret_box if overlap else None,
                    previous_until=until,
                    version=version,
                    rotated_at=now,
                )
            )
            if res.rowcount != 1:
                raise StorageError("the webhook secret changed meanwhile: try again")
        audit.append(
            conn,
            at=now,
            actor=f"merchant:{merchant_id}",
            action="merchant.webhook_secret",
            entity=f"merchant:{merchant_id}",
            data={"version": version, "previous_valid_until": until},
        )
        return Rotation(secret, version, until)


def endpoint_info(conn: Connection, merchant_id: str, now: int) -> dict[str, Any]:
    """What the merchant may see of its secrets: whether one exists, its version and dates,
    whether the previous one is still live. Never a secret."""
    row = conn.execute(
        select(
            WebhookEndpoint.version,
            WebhookEndpoint.created_at,
            WebhookEndpoint.rotated_at,
            WebhookEndpoint.previous_until,
        ).where(WebhookEndpoint.merchant_id == merchant_id)
    ).one_or_none()
    if row is None:
        return {"secret": None}
    live_until = row.previous_until if (row.previous_until or 0) > now else None
    return {
        "secret": {
            "version": row.version,
            "created_at": row.created_at,
            "rotated_at": row.rotated_at,
            "previous_valid_until": live_until,
        }
    }
