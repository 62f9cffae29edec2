"""Who may call: administrator bearer tokens, merchant request signatures (with their
single-use nonces) and merchant secret API keys (:mod:`.api_keys`), both drawing on the
merchant's rate bucket."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select

from safescan.api import merchant_auth
from safescan.api.errors import Forbidden, RateLimited, ReplayedRequest, Unauthenticated
from safescan.api.states import Status
from safescan.code.keys import VerifyKey
from safescan.institution import nonces, sql
from safescan.institution.domain.api_keys import ApiKeys, KeyCaller
from safescan.institution.domain.core import Core
from safescan.institution.models import AdminToken, MerchantRow


class Access:
    """Authentication of administrators and merchants around the :class:`Core`."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.api_keys = ApiKeys(core)

    def check_admin(self, token: str | None) -> None:
        """Accept a valid administrator bearer token; raise :class:`Unauthenticated` otherwise."""
        if not token:
            raise Unauthenticated("an administrator token is required (Authorization: Bearer ...)")
        digest = self.core.keys.token_hash(token)
        found = self.core.db.read(
            lambda c: c.execute(
                select(AdminToken.id).where(AdminToken.token_hash == digest)
            ).scalar_one_or_none()
        )
        if found is None:
            raise Unauthenticated("the administrator token is not valid")

    def authenticate_merchant(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> str:
        """Verify a merchant's RFC 9421 request signature (:func:`.merchant_auth.verify_request`:
        method, path, query, Content-Digest of ``body``, Idempotency-Key) and record its nonce
        (see :mod:`.nonces`); returns the merchant id. ``target``: path and query as sent."""
        now = self.core.now()
        rows: dict[str, Any] = {}

        def public_key(mid: str) -> VerifyKey | None:
            row = self.core.db.read(
                lambda c: c.execute(
                    select(MerchantRow.api_public_key, MerchantRow.status).where(
                        MerchantRow.id == mid
                    )
                ).one_or_none()
            )
            if row is None:
                return None
            rows[mid] = row
            return VerifyKey(row.api_public_key)

        signed = merchant_auth.verify_request(method, target, headers, body, public_key, now=now)
        mid, nonce, ts = signed.merchant_id, signed.nonce, signed.created
        if rows[mid].status != Status.ACTIVE:
            raise Forbidden("this merchant has been revoked")

        def tx(conn: Connection) -> tuple[bool, bool]:
            fresh = nonces.record(conn, self.core.elapsed, mid, nonce, ts, now)
            if not fresh:
                return False, True
            return True, self._take_token(conn, mid)

        # the nonce is recorded even when the request is then refused for its rate: a
        # refused request can never be replayed into an accepted one
        fresh, within_rate = self.core.db.write(tx)
        if not fresh:
            raise ReplayedRequest("this request nonce was already used (replay)")
        if not within_rate:
            self._slow_down()
        return mid

    def authenticate_key(self, key: str) -> KeyCaller:
        """Verify a merchant's secret API key (:meth:`.ApiKeys.verify`), take a token from the
        merchant's rate bucket (the same one signed requests use) and note the key's use."""
        caller = self.api_keys.verify(key)
        now = self.core.now()

        def tx(conn: Connection) -> bool:
            ApiKeys.note_use(conn, caller.key_id, now)
            return self._take_token(conn, caller.merchant_id)

        if not self.core.db.write(tx):
            self._slow_down()
        return caller

    def _take_token(self, conn: Connection, mid: str) -> bool:
        """One token from ``mid``'s request bucket (inside the caller's transaction); False
        when it is empty."""
        rate, burst = self.core.merchant_rate
        if rate <= 0:
            return True
        bucket = {
            "mid": mid,
            "now_ms": int(self.core.clock() * 1000),
            "rate_milli": max(1, round(rate * 1000)),
            "burst_milli": max(1000, round(burst * 1000)),
        }
        sql.run(conn, sql.RATE_BUCKET_CREATE, bucket)
        return bool(sql.run(conn, sql.TAKE_TOKEN, bucket).rowcount == 1)

    def _slow_down(self) -> None:
        rate = self.core.merchant_rate[0]
        raise RateLimited(f"more than {rate:g} requests per second for this merchant; slow down")

    def purge_nonces(self) -> int:
        """Forget nonces kept for the whole replay window on the elapsed clock (never on the
        wall clock), raising each merchant's floor (see :mod:`.nonces`)."""
        return self.core.db.write(lambda c: nonces.purge(c, self.core.elapsed))


__all__ = ["Access"]
