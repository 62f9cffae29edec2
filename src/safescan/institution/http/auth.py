"""Who calls a merchant route: a secret API key (``Authorization: Bearer sk_live_...``, with
scopes) or a request signed with the merchant's signing key (every scope). One dependency
authenticates the request (FastAPI runs it once per request, however many routes and routers
name it); each route then names the one scope it needs::

    auth = MerchantAuth(inst)
    router = APIRouter(dependencies=[auth.caller])

    @router.get("/v1/merchant/orders")
    def orders(mid: auth.scope("orders:read")) -> ...: ...

Refusals are typed: no credentials, a malformed, unknown, wrong, expired or revoked key, or a
bad signature answer 401 (``unauthenticated``, ``invalid_api_key``, ``replayed_request``); a
valid key without the scope answers 403 ``insufficient_scope``; a key in the URL 401
``api_key_in_url``. Wrong keys are limited per client address (:data:`FAILED_KEY_RATE`): past
the burst, Bearer requests from that address are refused with 429 before any key is checked, so
guessing gets no answers at all. Nothing of a key reaches a log line (the access log has the
route template only).
"""

# No `from __future__ import annotations`: FastAPI must see the Annotated aliases.

import contextlib
from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import parse_qsl

from fastapi import Depends, Request

from safescan.api import merchant_auth
from safescan.api.api_keys import KEY_PREFIX
from safescan.api.errors import (
    ApiKeyInUrl,
    InsufficientScope,
    InvalidApiKey,
    RateLimited,
    Unauthenticated,
)
from safescan.institution.http.asgi import BODY_KEY
from safescan.institution.http.common import client_address
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution

#: wrong API keys per client address: one a second, bursts of 20
FAILED_KEY_RATE = (1.0, 20.0)
#: query parameter names that would carry a credential (refused whatever their value)
_CREDENTIAL_PARAMS = frozenset({"api_key", "apikey", "access_token", "key", "token", "secret"})


@dataclass(frozen=True, slots=True)
class MerchantCaller:
    """An authenticated merchant request: the merchant, and the key's scopes (None for a
    signed request: every scope)."""

    merchant_id: str
    scopes: frozenset[str] | None
    key_id: str | None = None

    def allows(self, scope: str) -> bool:
        """Whether this caller may use routes that need ``scope``."""
        return self.scopes is None or scope in self.scopes


def refuse_key_in_url(query: bytes) -> None:
    if not query:
        return
    text = query.decode("latin-1")
    if KEY_PREFIX in text:
        raise ApiKeyInUrl("API keys go in the Authorization header (Bearer), never in the URL")
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name.lower() in _CREDENTIAL_PARAMS or KEY_PREFIX in value:
            raise ApiKeyInUrl(
                "credentials go in the Authorization header (Bearer), never in the URL",
                param=name[:40],
            )


class MerchantAuth:
    """The merchant routes' authentication over ``inst``."""

    def __init__(self, inst: Institution, *, failed_limiter: RateLimiter | None = None) -> None:
        self.inst = inst
        self.failed = failed_limiter or RateLimiter(*FAILED_KEY_RATE)

        def authenticate(request: Request) -> MerchantCaller:
            return self.authenticate(request)

        #: the dependency that authenticates (once per request)
        self.caller: Any = Depends(authenticate)
        self._scoped: dict[str, Any] = {}

    def authenticate(self, request: Request) -> MerchantCaller:
        """The caller of ``request``, or a typed refusal."""
        scope = request.scope
        query: bytes = scope.get("query_string") or b""
        refuse_key_in_url(query)
        headers = request.headers
        authorization = headers.get("authorization")
        signed = merchant_auth.is_signed(headers)
        if authorization is not None:
            if signed:
                raise Unauthenticated(
                    "send an API key or a request signature, not both", param="Authorization"
                )
            return self._bearer(authorization, client_address(request))
        if not signed:
            raise Unauthenticated(
                "merchant requests need an API key (Authorization: Bearer sk_live_...) or a"
                " request signature (Signature, Signature-Input, Content-Digest; RFC 9421)"
            )
        # the path as sent (still percent-encoded) and the query as sent: what was signed
        raw_path = scope.get("raw_path")
        target = raw_path.decode("latin-1") if raw_path else scope["path"]
        if query:
            target += "?" + query.decode("latin-1")
        mid = self.inst.access.authenticate_merchant(
            request.method, target, headers, scope.get(BODY_KEY, b"")
        )
        return MerchantCaller(mid, None)

    def _bearer(self, authorization: str, address: str) -> MerchantCaller:
        scheme, _, key = authorization.partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated(
                "the Authorization header must be 'Bearer sk_live_...'", param="Authorization"
            )
        if self.failed.blocked(address):
            raise RateLimited("too many invalid API keys from this address; slow down")
        try:
            caller = self.inst.access.authenticate_key(key.strip())
        except InvalidApiKey:
            with contextlib.suppress(RateLimited):
                self.failed.check(address)  # spend one of the address's failures
            raise
        return MerchantCaller(caller.merchant_id, caller.scopes, caller.key_id)

    def scope(self, name: str) -> Any:
        """The dependency of a route that needs scope ``name``; it yields the merchant id
        (``mid: Annotated[str, auth.scope("orders:read")]``)."""
        if name not in self._scoped:
            caller_dep = self.caller

            def need(caller: Annotated[MerchantCaller, caller_dep]) -> str:
                if not caller.allows(name):
                    raise InsufficientScope(f"this API key lacks the scope {name}", param=name)
                return caller.merchant_id

            self._scoped[name] = Depends(need)
        return self._scoped[name]

    def signed_only(self) -> Any:
        """The dependency of calls no API key may make (managing API keys): only a signed
        request passes; it yields the merchant id."""
        caller_dep = self.caller

        def need(caller: Annotated[MerchantCaller, caller_dep]) -> str:
            if caller.scopes is not None:
                raise InsufficientScope(
                    "API keys are managed with a signed request (the merchant's signing key),"
                    " never with an API key",
                    param="signature",
                )
            return caller.merchant_id

        return Depends(need)


__all__ = ["FAILED_KEY_RATE", "MerchantAuth", "MerchantCaller"]
