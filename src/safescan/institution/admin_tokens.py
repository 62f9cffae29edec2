"""Administrator bearer tokens: several can be live, each can be revoked.

``institution init`` creates the first one. Operators with access to the database create
more and revoke them with ``safescan institution admin-token ...`` (so a leaked token is
revoked without downtime: create the new one, hand it over, revoke the old). Only the SHA-256
of a token is stored; the token itself is shown once. Every change is in the audit log.
The last live token cannot be revoked (nobody could administer the institution any more).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from sqlalchemy import Connection, delete, insert, select

from safescan.api.errors import ConfigError, Conflict, UnknownAdminToken
from safescan.institution import audit
from safescan.institution.db import Database, require_current_schema
from safescan.institution.models import AdminToken
from safescan.institution.util import token_hash

TOKEN_PREFIX = "adm_"  # noqa: S105 - a prefix, not a secret


def new_token() -> str:
    """A fresh 256-bit administrator token."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def insert_token(conn: Connection, token: str, now: int) -> int:
    """Store ``token``'s hash (inside the caller's transaction); returns its id."""
    return int(
        conn.execute(
            insert(AdminToken)
            .values(token_hash=token_hash(token), created_at=now)
            .returning(AdminToken.id)
        ).scalar_one()
    )


def _require_initialised(db: Database) -> None:
    """Refuse a database that ``institution init`` has not set up (typed, nothing created)."""
    require_current_schema(db.engine)
    if not db.read(lambda c: c.execute(select(AdminToken.id)).first()):
        raise ConfigError("this database is not initialised: run `safescan institution init`")


def create(db: Database, *, actor: str = "operator") -> tuple[int, str]:
    """A new live token: returns (id, token). The token is not stored and is shown once."""
    _require_initialised(db)
    token, now = new_token(), int(time.time())

    def tx(conn: Connection) -> int:
        token_id = insert_token(conn, token, now)
        audit.append(
            conn,
            at=now,
            actor=actor,
            action="admin_token.create",
            entity=f"admin_token:{token_id}",
            data={"id": token_id, "token_hash": token_hash(token)},
        )
        return token_id

    return db.write(tx), token


def list_tokens(db: Database) -> list[dict[str, Any]]:
    """The live tokens: id and creation time (never the token or its hash)."""
    _require_initialised(db)
    rows = db.read(
        lambda c: c.execute(
            select(AdminToken.id, AdminToken.created_at).order_by(AdminToken.id)
        ).all()
    )
    return [{"id": r.id, "created_at": r.created_at} for r in rows]


def revoke(db: Database, token_id: int, *, actor: str = "operator") -> None:
    """Revoke a token at once (every API process checks the database on each request)."""
    _require_initialised(db)
    now = int(time.time())

    def tx(conn: Connection) -> None:
        # all rows locked (PostgreSQL; SQLite has one writer): two revocations racing cannot
        # both see a second live token and leave none
        live = set(conn.execute(select(AdminToken.id).with_for_update()).scalars())
        if token_id not in live:
            raise UnknownAdminToken(f"no live administrator token {token_id}")
        if len(live) <= 1:
            raise Conflict("this is the last live administrator token: create another one first")
        conn.execute(delete(AdminToken).where(AdminToken.id == token_id))
        audit.append(
            conn,
            at=now,
            actor=actor,
            action="admin_token.revoke",
            entity=f"admin_token:{token_id}",
            data={"id": token_id},
        )

    db.write(tx)
