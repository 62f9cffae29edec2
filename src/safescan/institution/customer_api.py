"""HTTP routes for customers: the administrator's customer list, and the account statement a
wallet reads with its key carrier (protocol: :mod:`safescan.api.account`).

Registered by :func:`safescan.institution.api.create_app` through :func:`add_customer_routes`.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from pydantic import Field

from safescan.api import account
from safescan.api.encoding import b64d, b64e
from safescan.institution import customers
from safescan.institution.api import Strict
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution

Serial = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
Base64 = r"^[A-Za-z0-9+/=_\-]+$"
WalletKey = Annotated[str, Field(min_length=40, max_length=48, pattern=Base64)]


class ChallengeRequest(Strict):
    """Ask for a challenge the key carrier will answer."""

    carrier_serial: Serial
    wallet_key: WalletKey


class StatementRequest(Strict):
    """The carrier's answer to the challenge."""

    carrier_serial: Serial
    wallet_key: WalletKey
    expires_at: Annotated[int, Field(ge=0, le=2**62, strict=True)]
    response: Annotated[str, Field(min_length=1, max_length=200, pattern=Base64)]


def add_customer_routes(
    app: FastAPI,
    inst: Institution,
    *,
    admin: Callable[..., None],
    limiter: RateLimiter,
) -> None:
    """Add ``GET /v1/admin/customers``, ``POST /v1/account/challenge`` and ``POST /v1/account``."""
    key = account.challenge_key(inst.keys.secret)

    def limited(request: Request) -> None:
        limiter.check(request.client.host if request.client else "unknown")

    @app.get("/v1/admin/customers", tags=["admin"])
    def list_customers(
        _: Annotated[None, Depends(admin)],
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        after: Annotated[
            str | None, Query(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._:\-]+$")
        ] = None,
    ) -> dict[str, Any]:
        """Customers in id order with balances (page with ``after=<last id>``)."""
        return customers.list_customers(inst.db, limit=limit, after=after)

    @app.post("/v1/account/challenge", tags=["wallet"])
    def challenge(body: ChallengeRequest, request: Request) -> dict[str, Any]:
        """A one-time challenge for the key carrier to sign (see safescan.api.account)."""
        limited(request)
        wallet_key = b64d(body.wallet_key, param="wallet_key", max_bytes=32)
        expires_at = inst.now() + account.CHALLENGE_TTL
        value = account.make_challenge(key, body.carrier_serial, expires_at, wallet_key)
        return {"challenge": b64e(value), "expires_at": expires_at}

    @app.post("/v1/account", tags=["wallet"])
    def statement(body: StatementRequest, request: Request) -> dict[str, Any]:
        """The customer's balances, payments and refunds, sealed to the wallet's key, for a
        carrier that answered the challenge."""
        limited(request)
        sealed = customers.read_statement(
            inst.db,
            key,
            serial=body.carrier_serial,
            wallet_key=b64d(body.wallet_key, param="wallet_key", max_bytes=32),
            expires_at=body.expires_at,
            response=b64d(body.response, param="response", max_bytes=account.RESPONSE_BYTES),
            now=inst.now(),
        )
        return {"sealed": b64e(sealed)}
