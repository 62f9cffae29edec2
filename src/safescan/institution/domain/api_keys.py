"""Merchant secret API keys: ``Authorization: Bearer sk_live_<id>_<secret>``.

A key is ``sk_live_`` + a 16-character public key id + ``_`` + 43 characters of base64url
(256 random bits). The institution stores the id, the scopes and HMAC-SHA256 of the whole key
under a subkey of the institution secret: a stolen database does not give the keys, nor lets
anyone test guesses offline without the institution secret. The key itself is in the creation
answer only. Comparison is constant-time (:func:`hmac.compare_digest`) and an unknown id is
compared against a dummy hash, so an answer's timing says nothing about the secret.

Rotation makes a new key with the same scopes and label and lets the old one expire after a
grace period; revocation is immediate. Creation and rotation take an Idempotency-Key; since the
secret is never stored, the key's recorded answer is not the creation answer but the refusal
``api_key_already_created`` naming the key made: a retry (or the lookup) learns that it was made
and which key it is, never the secret. Every change is in the audit log (entity
``api_key:<id>``, never the key or its hash: a creation logs the SHA-256 of the stored hash,
which the audit compares with the row). Creating, rotating and revoking keys needs the
merchant's signing key (a signed request) or the administrator: an API key cannot mint keys.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, insert, select, update

from safescan.api.api_keys import KEY_PREFIX, SCOPES, parse_key, scope_list
from safescan.api.errors import (
    ApiKeyAlreadyCreated,
    Conflict,
    Forbidden,
    InvalidApiKey,
    InvalidRequest,
    NotFound,
    UnknownApiKey,
)
from safescan.api.states import Status
from safescan.institution import audit
from safescan.institution.domain import idempotency
from safescan.institution.domain.core import Core
from safescan.institution.domain.idempotency import api_key_request
from safescan.institution.models import MerchantApiKey, MerchantRow

MAX_LIVE_KEYS = 20  # per merchant: live (not revoked, not expired) keys
MAX_GRACE = 30 * 86400  # a rotation keeps the old key working at most this long
DEFAULT_GRACE = 86400
_ID_ALPHABET = "abcdefghijkmnopqrstuvwxyz23456789"  # no l/1, 0/o
_NAME_RE = re.compile(r"[\x20-\x7e]{1,64}")
_KEYS = MerchantApiKey.__table__


@dataclass(frozen=True, slots=True)
class ApiKeyInfo:
    """What is shown of a key (never the secret or its hash)."""

    id: str
    merchant_id: str
    name: str | None
    scopes: tuple[str, ...]
    created_at: int
    expires_at: int | None
    revoked_at: int | None
    last_used_at: int | None
    replaced_by: str | None

    @property
    def prefix(self) -> str:
        """``sk_live_<id>``: how a key is recognised in lists (the secret part is not shown)."""
        return f"{KEY_PREFIX}{self.id}"

    def state(self, now: int) -> str:
        """``active``, ``expiring`` (a rotation's grace period), ``expired`` or ``revoked``."""
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None:
            return "expired" if self.expires_at <= now else "expiring"
        return "active"

    def to_dict(self, now: int) -> dict[str, Any]:
        """The JSON form."""
        return {
            "id": self.id,
            "prefix": self.prefix,
            "merchant_id": self.merchant_id,
            "name": self.name,
            "scopes": list(self.scopes),
            "state": self.state(now),
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
            "replaced_by": self.replaced_by,
        }


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just made: ``secret`` is the whole ``sk_live_...`` key, given this once."""

    info: ApiKeyInfo
    secret: str
    previous: ApiKeyInfo | None = None  # the rotated key, now expiring

    def to_dict(self, now: int) -> dict[str, Any]:
        """The JSON form (with the key: the only time it is shown)."""
        out = self.info.to_dict(now) | {"key": self.secret}
        if self.previous is not None:
            out["previous"] = self.previous.to_dict(now)
        return out


@dataclass(frozen=True, slots=True)
class KeyCaller:
    """Who a valid key speaks for."""

    merchant_id: str
    key_id: str
    scopes: frozenset[str]


def _info(r: Any) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=r.id,
        merchant_id=r.merchant_id,
        name=r.name,
        scopes=tuple(str(r.scopes).split()),
        created_at=r.created_at,
        expires_at=r.expires_at,
        revoked_at=r.revoked_at,
        last_used_at=r.last_used_at,
        replaced_by=r.replaced_by,
    )


def create_body(scopes: list[str], name: str | None, expires_in: int | None) -> dict[str, Any]:
    """What an API key creation's Idempotency-Key is bound to (the scopes as checked)."""
    return {"op": "create", "scopes": scopes, "name": name, "expires_in": expires_in}


def rotate_body(key_id: str, grace: int) -> dict[str, Any]:
    """What an API key rotation's Idempotency-Key is bound to."""
    return {"op": "rotate", "key_id": key_id, "grace_seconds": grace}


def _new_id() -> str:
    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(16))


class ApiKeys:
    """The merchants' API keys, around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        label = b"safescan merchant api key v1"
        self._mac_key = hmac.new(core.keys.secret, label, "sha256").digest()
        self._dummy = self.hash("sk_live_" + "x" * 16 + "_" + "x" * 43)

    def hash(self, key: str) -> str:
        """HMAC-SHA256 (hex) of a whole key under the institution's API-key subkey."""
        return hmac.new(self._mac_key, key.encode("ascii"), "sha256").hexdigest()

    def hash_digest(self, key: str) -> str:
        """SHA-256 (hex) of the stored keyed hash: what the audit log keeps of a key, so that
        ``safescan institution audit`` finds a replaced hash (neither the key nor its hash is
        logged)."""
        return hashlib.sha256(self.hash(key).encode("ascii")).hexdigest()

    # --- authentication --------------------------------------------------------------------

    def verify(self, key: str) -> KeyCaller:
        """The caller a Bearer key speaks for; :class:`InvalidApiKey` (401) for a malformed,
        unknown, wrong, expired or revoked key, :class:`Forbidden` for a revoked merchant.
        Records nothing (the caller records the use with the rate bucket)."""
        key_id = parse_key(key)  # InvalidApiKey when malformed
        now = self.core.now()
        found = self.core.db.read(
            lambda c: c.execute(
                select(_KEYS, MerchantRow.status)
                .join(MerchantRow, MerchantRow.id == MerchantApiKey.merchant_id)
                .where(MerchantApiKey.id == key_id)
            ).one_or_none()
        )
        stored = str(found.secret_hash) if found is not None else self._dummy
        matches = hmac.compare_digest(self.hash(key), stored)
        if found is None or not matches:
            raise InvalidApiKey("the API key is not valid")
        if found.revoked_at is not None:
            raise InvalidApiKey("this API key has been revoked")
        if found.expires_at is not None and found.expires_at <= now:
            raise InvalidApiKey("this API key has expired (rotated: use its replacement)")
        if found.status != Status.ACTIVE:
            raise Forbidden("this merchant has been revoked")
        return KeyCaller(found.merchant_id, found.id, frozenset(str(found.scopes).split()))

    @staticmethod
    def note_use(conn: Connection, key_id: str, now: int) -> None:
        """Record a key's last use (inside the caller's transaction; at most once a second)."""
        conn.execute(
            update(MerchantApiKey)
            .where(MerchantApiKey.id == key_id)
            .where((MerchantApiKey.last_used_at.is_(None)) | (MerchantApiKey.last_used_at < now))
            .values(last_used_at=now)
        )

    # --- management ------------------------------------------------------------------------

    def create(
        self,
        mid: str,
        scopes: list[str],
        *,
        name: str | None = None,
        expires_in: int | None = None,
        actor: str = "merchant",
        idempotency_key: str | None = None,
    ) -> NewApiKey:
        """A new key for ``mid`` with ``scopes`` (checked against :data:`SCOPES`); the key is
        in the answer only. With an ``idempotency_key``: a retry of the same request is refused
        with :class:`ApiKeyAlreadyCreated` naming the key (the secret is not kept to show it
        again), another request under the key with ``idempotency_conflict``."""
        wanted = scope_list(scopes)
        if name is not None and not _NAME_RE.fullmatch(name):
            raise InvalidRequest("name: 1-64 printable ASCII characters", param="name")
        if expires_in is not None and not 60 <= expires_in <= 5 * 366 * 86400:
            raise InvalidRequest("expires_in: 60 s to 5 years", param="expires_in")
        req = api_key_request(actor, mid, idempotency_key, create_body(wanted, name, expires_in))
        idempotency.recorded(self.core.db, req)  # a retry: its recorded refusal raised
        now = self.core.now()
        expires_at = now + expires_in if expires_in is not None else None
        key_id, secret = _new_id(), secrets.token_urlsafe(32)
        key = f"{KEY_PREFIX}{key_id}_{secret}"
        made = ApiKeyAlreadyCreated(
            f"this Idempotency-Key already made API key {KEY_PREFIX}{key_id}; its secret was in"
            f" that answer only and is not kept: if the answer was lost, revoke {key_id} and"
            " make another key",
            param="Idempotency-Key",
        )

        def tx(conn: Connection) -> None:
            if req is not None:  # first: the key's answer, stored with the key (no secret)
                idempotency.claim(conn, req, now, idempotency.refusal(made))
            self._require_merchant(conn, mid)
            self._require_room(conn, mid, now)
            self._insert(conn, mid, key_id, key, wanted, name, now, expires_at)
            audit.append(
                conn,
                at=now,
                actor=actor,
                action="api_key.create",
                entity=f"api_key:{key_id}",
                data={
                    "id": key_id,
                    "merchant_id": mid,
                    "scopes": " ".join(wanted),
                    "name": name,
                    "expires_at": expires_at,
                    "secret_hash_sha256": self.hash_digest(key),
                },
            )

        self._keyed_write(req, now, tx)
        return NewApiKey(self.get(mid, key_id), key)

    def _keyed_write(
        self, req: idempotency.Request | None, now: int, tx: Callable[[Connection], None]
    ) -> None:
        """Run ``tx`` (which claims ``req`` first); a key answered meanwhile raises its answer,
        a final refusal is stored as the key's answer."""
        # an API key's recorded answers are refusals only: finish raises them
        idempotency.finish(self.core.db, req, now, lambda: self.core.db.write(tx))

    def _insert(
        self,
        conn: Connection,
        mid: str,
        key_id: str,
        key: str,
        scopes: list[str],
        name: str | None,
        now: int,
        expires_at: int | None,
    ) -> None:
        conn.execute(
            insert(MerchantApiKey).values(
                id=key_id,
                merchant_id=mid,
                name=name,
                secret_hash=self.hash(key),
                scopes=" ".join(scopes),
                created_at=now,
                expires_at=expires_at,
            )
        )

    @staticmethod
    def _require_merchant(conn: Connection, mid: str) -> None:
        status = conn.execute(
            select(MerchantRow.status).where(MerchantRow.id == mid)
        ).scalar_one_or_none()
        if status is None:
            raise NotFound(f"no merchant {mid}", param="merchant_id")
        if status != Status.ACTIVE:
            raise Forbidden("this merchant has been revoked")

    @staticmethod
    def _require_room(conn: Connection, mid: str, now: int) -> None:
        live = conn.execute(
            select(MerchantApiKey.id)
            .where(MerchantApiKey.merchant_id == mid)
            .where(MerchantApiKey.revoked_at.is_(None))
            .where((MerchantApiKey.expires_at.is_(None)) | (MerchantApiKey.expires_at > now))
        ).all()
        if len(live) >= MAX_LIVE_KEYS:
            raise Conflict(
                f"this merchant already has {MAX_LIVE_KEYS} live API keys; revoke one first"
            )

    def _row(self, conn: Connection, mid: str, key_id: str) -> Any:
        row = conn.execute(
            select(_KEYS)
            .where(MerchantApiKey.id == key_id)
            .where(MerchantApiKey.merchant_id == mid)
        ).one_or_none()
        if row is None:
            raise UnknownApiKey(f"no API key {key_id} for this merchant", param="key_id")
        return row

    def get(self, mid: str, key_id: str) -> ApiKeyInfo:
        """One of ``mid``'s keys (another merchant's key: not found)."""
        return self.core.db.read(lambda c: _info(self._row(c, mid, key_id)))

    def list(self, mid: str) -> list[ApiKeyInfo]:
        """``mid``'s keys, newest first (revoked and expired ones too)."""
        rows = self.core.db.read(
            lambda c: c.execute(
                select(_KEYS)
                .where(MerchantApiKey.merchant_id == mid)
                .order_by(MerchantApiKey.created_at.desc(), MerchantApiKey.id)
            ).all()
        )
        return [_info(r) for r in rows]

    def revoke(self, mid: str, key_id: str, *, actor: str = "merchant") -> ApiKeyInfo:
        """Revoke a key now (revoking a revoked key changes nothing)."""
        now = self.core.now()

        def tx(conn: Connection) -> None:
            row = self._row(conn, mid, key_id)
            if row.revoked_at is not None:
                return
            conn.execute(
                update(MerchantApiKey).where(MerchantApiKey.id == key_id).values(revoked_at=now)
            )
            audit.append(
                conn,
                at=now,
                actor=actor,
                action="api_key.revoke",
                entity=f"api_key:{key_id}",
                data={"id": key_id, "merchant_id": mid},
            )

        self.core.db.write(tx)
        return self.get(mid, key_id)

    def rotate(
        self,
        mid: str,
        key_id: str,
        *,
        grace: int = DEFAULT_GRACE,
        actor: str = "merchant",
        idempotency_key: str | None = None,
    ) -> NewApiKey:
        """A new key with the old one's scopes and label; the old one keeps working for
        ``grace`` seconds (0: stops now), then expires. Only a live key can be rotated. With an
        ``idempotency_key`` as :meth:`create`."""
        if not 0 <= grace <= MAX_GRACE:
            raise InvalidRequest(f"grace_seconds: 0 to {MAX_GRACE}", param="grace_seconds")
        req = api_key_request(actor, mid, idempotency_key, rotate_body(key_id, grace))
        idempotency.recorded(self.core.db, req)  # a retry: its recorded refusal raised
        now = self.core.now()
        new_id, secret = _new_id(), secrets.token_urlsafe(32)
        key = f"{KEY_PREFIX}{new_id}_{secret}"
        made = ApiKeyAlreadyCreated(
            f"this Idempotency-Key already rotated API key {key_id} to {KEY_PREFIX}{new_id}; the"
            " new key's secret was in that answer only and is not kept: if the answer was lost,"
            f" revoke {new_id} (and rotate {key_id} again while it is still live)",
            param="Idempotency-Key",
        )

        def tx(conn: Connection) -> None:
            if req is not None:  # first: the key's answer, stored with the key (no secret)
                idempotency.claim(conn, req, now, idempotency.refusal(made))
            self._require_merchant(conn, mid)
            old = self._row(conn, mid, key_id)
            if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= now):
                raise Conflict("only a live API key can be rotated (this one is not)")
            if old.replaced_by is not None:
                raise Conflict(f"this API key was already rotated (to {old.replaced_by})")
            until = now + grace if old.expires_at is None else min(old.expires_at, now + grace)
            self._insert(conn, mid, new_id, key, old.scopes.split(), old.name, now, None)
            conn.execute(
                update(MerchantApiKey)
                .where(MerchantApiKey.id == key_id)
                .values(expires_at=until, replaced_by=new_id)
            )
            audit.append(
                conn,
                at=now,
                actor=actor,
                action="api_key.rotate",
                entity=f"api_key:{key_id}",
                data={"id": key_id, "merchant_id": mid, "replaced_by": new_id, "expires_at": until},
            )
            audit.append(
                conn,
                at=now,
                actor=actor,
                action="api_key.create",
                entity=f"api_key:{new_id}",
                data={
                    "id": new_id,
                    "merchant_id": mid,
                    "scopes": old.scopes,
                    "name": old.name,
                    "expires_at": None,
                    "rotated_from": key_id,
                    "secret_hash_sha256": self.hash_digest(key),
                },
            )

        self._keyed_write(req, now, tx)
        return NewApiKey(self.get(mid, new_id), key, previous=self.get(mid, key_id))


__all__ = [
    "DEFAULT_GRACE",
    "MAX_GRACE",
    "MAX_LIVE_KEYS",
    "SCOPES",
    "ApiKeyInfo",
    "ApiKeys",
    "KeyCaller",
    "NewApiKey",
    "create_body",
    "rotate_body",
]
