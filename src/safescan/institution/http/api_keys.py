"""Routes that manage merchants' secret API keys (:mod:`safescan.institution.domain.api_keys`).

``/v1/merchant/api-keys``: the merchant's own keys, with a signed request only (an API key
cannot make, rotate or revoke keys). ``/v1/admin/merchants/{id}/api-keys``: the same for the
administrator. A new key is in the creation (or rotation) answer only. Creation and rotation
take an ``Idempotency-Key``: a retry is answered 409 ``api_key_already_created`` naming the key
made (its secret is not kept), another request under the key 409 ``idempotency_conflict``; the
``.../lookup`` twins tell what a request whose answer was lost did.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import Field

from safescan.api.api_keys import SCOPES, scope_list
from safescan.institution import outcomes
from safescan.institution.domain.api_keys import (
    DEFAULT_GRACE,
    MAX_GRACE,
    ApiKeys,
    create_body,
    rotate_body,
)
from safescan.institution.http.auth import MerchantAuth
from safescan.institution.http.common import IdempotencyKey, ObjectId, Strict
from safescan.institution.http.query import JSONRoute
from safescan.institution.service import Institution

KeyId = Annotated[str, Path(min_length=16, max_length=16, pattern=r"^[a-km-z2-9]{16}$")]
Scope = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[a-z]+:[a-z]+$")]


class KeyCreate(Strict):
    """Make an API key: its scopes (see ``GET /v1/merchant/api-keys/scopes``), an optional label
    and lifetime."""

    scopes: Annotated[list[Scope], Field(min_length=1, max_length=len(SCOPES))]
    name: Annotated[str | None, Field(min_length=1, max_length=64)] = None
    expires_in: Annotated[int | None, Field(ge=60, le=5 * 366 * 86400)] = None


class KeyRotate(Strict):
    """Rotate a key: the old one keeps working ``grace_seconds`` (default a day)."""

    grace_seconds: Annotated[int, Field(ge=0, le=MAX_GRACE)] = DEFAULT_GRACE


def _created(keys: ApiKeys, made: Any) -> JSONResponse:
    # the key is in this answer only: no cache may keep it
    return JSONResponse(
        made.to_dict(keys.core.now()), status_code=201, headers={"Cache-Control": "no-store"}
    )


def _list(keys: ApiKeys, mid: str) -> dict[str, Any]:
    now = keys.core.now()
    return {"api_keys": [k.to_dict(now) for k in keys.list(mid)]}


def merchant_key_router(inst: Institution, auth: MerchantAuth) -> APIRouter:
    """``/v1/merchant/api-keys``: signed requests only."""
    router = APIRouter(tags=["merchant"], dependencies=[auth.caller], route_class=JSONRoute)
    keys = inst.access.api_keys
    Signed = Annotated[str, auth.signed_only()]  # noqa: N806 - a type alias

    @router.get("/v1/merchant/api-keys/scopes")
    def scopes(mid: Signed) -> dict[str, Any]:
        """Every scope a key can carry, with what it allows."""
        return {"scopes": SCOPES}

    @router.post("/v1/merchant/api-keys", status_code=201)
    def create(
        body: KeyCreate, mid: Signed, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """A new secret API key (``key``: shown in this answer only, store it now). A retry
        under the same ``Idempotency-Key``: 409 ``api_key_already_created`` naming the key."""
        made = keys.create(
            mid,
            body.scopes,
            name=body.name,
            expires_in=body.expires_in,
            idempotency_key=idempotency_key,
        )
        return _created(keys, made)

    @router.post("/v1/merchant/api-keys/lookup")
    def create_lookup(
        body: KeyCreate, mid: Signed, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        """What a key creation whose answer was lost did (same body, same key); settles it."""
        wanted = create_body(scope_list(body.scopes), body.name, body.expires_in)
        return outcomes.lookup_api_key(inst, "merchant", mid, idempotency_key, wanted)

    @router.get("/v1/merchant/api-keys")
    def list_keys(mid: Signed) -> dict[str, Any]:
        """The merchant's keys: prefix, scopes, state, dates, last use (never the secret)."""
        return _list(keys, mid)

    @router.post("/v1/merchant/api-keys/{key_id}/rotate", status_code=201)
    def rotate(
        key_id: KeyId, body: KeyRotate, mid: Signed, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """A replacement key (same scopes and label); the old one expires after the grace.
        A retry under the same ``Idempotency-Key``: 409 ``api_key_already_created``."""
        made = keys.rotate(mid, key_id, grace=body.grace_seconds, idempotency_key=idempotency_key)
        return _created(keys, made)

    @router.post("/v1/merchant/api-keys/{key_id}/rotate/lookup")
    def rotate_lookup(
        key_id: KeyId, body: KeyRotate, mid: Signed, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        """What a rotation whose answer was lost did (same body, same key); settles it."""
        wanted = rotate_body(key_id, body.grace_seconds)
        return outcomes.lookup_api_key(inst, "merchant", mid, idempotency_key, wanted)

    @router.post("/v1/merchant/api-keys/{key_id}/revoke")
    def revoke(key_id: KeyId, mid: Signed) -> dict[str, Any]:
        """Revoke a key now."""
        return keys.revoke(mid, key_id).to_dict(keys.core.now())

    return router


def admin_key_router(inst: Institution, admin: Any) -> APIRouter:
    """``/v1/admin/merchants/{id}/api-keys``: the administrator's (``admin``: its bearer-token
    dependency)."""
    router = APIRouter(tags=["admin"], dependencies=[admin], route_class=JSONRoute)
    keys = inst.access.api_keys
    base = "/v1/admin/merchants/{merchant_id}/api-keys"

    @router.post(base, status_code=201)
    def create(
        merchant_id: ObjectId, body: KeyCreate, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """A new secret API key for the merchant (shown in this answer only)."""
        made = keys.create(
            merchant_id,
            body.scopes,
            name=body.name,
            expires_in=body.expires_in,
            actor="admin",
            idempotency_key=idempotency_key,
        )
        return _created(keys, made)

    @router.get(base)
    def list_keys(merchant_id: ObjectId) -> dict[str, Any]:
        """The merchant's keys (never a secret)."""
        return _list(keys, merchant_id)

    @router.post(base + "/{key_id}/rotate", status_code=201)
    def rotate(
        merchant_id: ObjectId,
        key_id: KeyId,
        body: KeyRotate,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """A replacement key; the old one expires after the grace."""
        made = keys.rotate(
            merchant_id,
            key_id,
            grace=body.grace_seconds,
            actor="admin",
            idempotency_key=idempotency_key,
        )
        return _created(keys, made)

    @router.post(base + "/{key_id}/revoke")
    def revoke(merchant_id: ObjectId, key_id: KeyId) -> dict[str, Any]:
        """Revoke a key now."""
        return keys.revoke(merchant_id, key_id, actor="admin").to_dict(keys.core.now())

    return router


__all__ = ["admin_key_router", "merchant_key_router"]
