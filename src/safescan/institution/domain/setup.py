"""Setting the institution up: the first bootstrap, key records after a rotation, and the
public trust anchors (root keys, scheme keys) every terminal and wallet starts from."""

from __future__ import annotations

from sqlalchemy import Connection, update

from safescan.api.encoding import b64e
from safescan.code.keyupdate import is_epoch_kid
from safescan.institution import admin_tokens, audit
from safescan.institution.domain.certificates import CRL_COUNTER
from safescan.institution.domain.core import Core
from safescan.institution.domain.results import PublicKeys, RootKey, SchemeKeyInfo
from safescan.institution.merchant_sealing import scheme_key_list
from safescan.institution.models import Counter, InstitutionKey
from safescan.institution.sql import insert_ignore as _insert_ignore


class Setup:
    """Bootstrap and key registration around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def bootstrap(self) -> str:
        """First-time setup after migrations: key records, audit chains; returns the admin token."""
        now = self.core.now()
        token = admin_tokens.new_token()

        def tx(conn: Connection) -> None:
            audit.create_heads(conn)
            _insert_ignore(conn, Counter, {"name": CRL_COUNTER, "value": 0})
            self._register_keys(conn, now)
            token_id = admin_tokens.insert_token(conn, token, now)
            audit.append(
                conn,
                at=now,
                actor="system",
                action="institution.init",
                entity="institution",
                data={
                    "root_kid": self.core.keys.root_kid,
                    "root_public_key": b64e(self.core.keys.root.public_key.raw),
                    "admin_token_id": token_id,
                    "admin_token_hash": self.core.keys.token_hash(token),
                },
            )

        self.core.db.write(tx)
        return token

    def register_keys(self) -> None:
        """Record the public halves of the current keys (after a rotation)."""
        self.core.db.write(lambda conn: self._register_keys(conn, self.core.now()))

    def _register_keys(self, conn: Connection, now: int) -> None:
        _insert_ignore(
            conn,
            InstitutionKey,
            {
                "purpose": "root",
                "kid": self.core.keys.root_kid,
                "public_key": self.core.keys.root.public_key.raw,
                "created_at": now,
            },
        )
        for key in self.core.keys.scheme.keys.values():
            inserted = _insert_ignore(
                conn,
                InstitutionKey,
                {
                    "purpose": "scheme",
                    "kid": key.kid,
                    "public_key": key.public.raw,
                    "created_at": now,
                    "retire_at": key.retire_at,
                },
            )
            if not inserted:
                conn.execute(
                    update(InstitutionKey)
                    .where(InstitutionKey.purpose == "scheme", InstitutionKey.kid == key.kid)
                    .values(retire_at=key.retire_at)
                )
            audit.append(
                conn,
                at=now,
                actor="system",
                action="key.register",
                entity="institution",
                data={
                    "purpose": "scheme",
                    "kid": key.kid,
                    "retire_at": key.retire_at,
                    "public_key": b64e(key.public.raw),
                },
            )

    def public_keys(self) -> PublicKeys:
        """Public trust anchors: root signing keys and current scheme public keys."""
        now = self.core.now()
        current = self.core.scheme_keys.current_epoch(now)
        static = self.core.keys.scheme.current(now).kid
        # static and live epoch keys, current = the epoch's: terminals seal dynamic codes to it
        signed = scheme_key_list(
            self.core.scheme_keys, self.core.keys.root, self.core.keys.root_kid, now
        )
        return PublicKeys(
            root_keys=tuple(RootKey(k, v.raw) for k, v in self.core.trust.institution_keys.items()),
            # dynamic codes are sealed to the "current" key (the current epoch's); static codes
            # to the "static" one; every live key still opens codes until its retire_at
            scheme_keys=tuple(
                SchemeKeyInfo(
                    kid=k.kid,
                    public_key=k.public.raw,
                    retire_at=k.retire_at,
                    current=k.kid == current.key.kid,
                    use="dynamic" if is_epoch_kid(k.kid) else "static",
                    current_static=k.kid == static,
                )
                for k in sorted(self.core.scheme_keys.keys.values(), key=lambda k: k.kid)
                if not k.is_retired(now)
            ),
            # the same keys signed under the root key: terminals cache it to seal offline
            scheme_key_list=signed.to_bytes(),
            epoch=current.epoch,
        )


__all__ = ["Setup"]
