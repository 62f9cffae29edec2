"""The administrator's routes (``/v1/admin/...``): every one behind the bearer token, checked
once for the whole router (:func:`admin_router`)."""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import Response
from pydantic import Field

from safescan.api.encoding import b64e
from safescan.api.errors import Unauthenticated
from safescan.api.fields import Amount, Name, ShortText
from safescan.institution import wire
from safescan.institution.http.common import (
    CurrencyCode,
    Day,
    KeyText,
    ObjectId,
    PageAfter,
    Serial,
    Strict,
    Url,
    settlement_report,
)
from safescan.institution.http.query import JSONRoute
from safescan.institution.service import Institution
from safescan.institution.util import key32
from safescan.institution.webhook_dispatcher import WebhookDispatcher


class MerchantCreate(Strict):
    """Onboard a merchant."""

    name: Name
    city: Name
    country: Annotated[str, Field(pattern=r"^[A-Z]{2}$")]
    mcc: Annotated[int, Field(ge=0, le=9999)]
    settlement_account: ShortText
    api_public_key: KeyText | None = None
    webhook_url: Url | None = None
    allow_protected_name: bool = False


class CustomerCreate(Strict):
    """Open a customer."""

    name: Name


class Funding(Strict):
    """Credit a customer (administrators; demos and tests)."""

    currency: CurrencyCode
    amount: Amount


class TokenRequest(Strict):
    """Issue an enrollment token."""

    ttl_seconds: Annotated[int, Field(ge=60, le=30 * 86400)] = 7 * 86400


def bearer_token(inst: Institution) -> Any:
    """The dependency that lets only an administrator through (``Authorization: Bearer``)."""

    def admin(authorization: Annotated[str | None, Header(max_length=512)] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("an administrator token is required (Authorization: Bearer ...)")
        inst.access.check_admin(token.strip())

    return Depends(admin)


def admin_router(inst: Institution, *, dispatcher: WebhookDispatcher | None) -> APIRouter:
    """The administrator's routes over ``inst``; ``dispatcher`` is this process's webhook
    dispatcher (None: webhooks are off here)."""
    router = APIRouter(tags=["admin"], dependencies=[bearer_token(inst)], route_class=JSONRoute)

    @router.post("/v1/admin/merchants", status_code=201)
    def create_merchant(body: MerchantCreate) -> dict[str, Any]:
        """Onboard a merchant; without ``api_public_key`` the API key seed is returned once."""
        pk = key32(body.api_public_key, param="api_public_key") if body.api_public_key else None
        made = inst.merchants.create(
            name=body.name,
            city=body.city,
            country=body.country,
            mcc=body.mcc,
            settlement_account=body.settlement_account,
            api_public_key=pk,
            webhook_url=body.webhook_url,
            allow_protected_name=body.allow_protected_name,
        )
        return wire.new_merchant(made)

    @router.get("/v1/admin/webhooks/dispatcher")
    def webhook_dispatcher() -> dict[str, Any]:
        """This process's webhook dispatcher: state, limits and counters."""
        if dispatcher is None:
            return {"state": "off", "ok": True}
        return {**dispatcher.health(), "limits": dataclasses.asdict(dispatcher.limits)}

    @router.get("/v1/admin/merchants/{merchant_id}")
    def admin_get_merchant(merchant_id: ObjectId) -> dict[str, Any]:
        """A merchant."""
        return wire.merchant(inst.merchants.get(merchant_id))

    @router.post("/v1/admin/merchants/{merchant_id}/revoke")
    def revoke_merchant(merchant_id: ObjectId) -> dict[str, Any]:
        """Revoke a merchant and its code certificates."""
        return wire.merchant(inst.merchants.revoke(merchant_id))

    @router.post("/v1/admin/customers", status_code=201)
    def create_customer(body: CustomerCreate) -> dict[str, Any]:
        """Open a customer."""
        return wire.customer(inst.customers.create(body.name))

    @router.get("/v1/admin/customers")
    def list_customers(
        limit: Annotated[int, Query(ge=1, le=500)] = 100,
        after: Annotated[str | None, Query(min_length=1, max_length=40, pattern=PageAfter)] = None,
    ) -> dict[str, Any]:
        """Customers in id order with balances (page with ``after=<last id>``)."""
        return wire.customer_list(inst.accounts.page(limit=limit, after=after))

    @router.get("/v1/admin/customers/{customer_id}")
    def get_customer(customer_id: ObjectId) -> dict[str, Any]:
        """A customer with balances and carriers."""
        return wire.customer(inst.customers.get(customer_id))

    @router.post("/v1/admin/customers/{customer_id}/fund")
    def fund(customer_id: ObjectId, body: Funding) -> dict[str, Any]:
        """Credit a customer from the institution's funding account."""
        return wire.customer(inst.customers.fund(customer_id, body.currency, body.amount))

    @router.post("/v1/admin/customers/{customer_id}/enrollment-tokens", status_code=201)
    def enrollment_token(customer_id: ObjectId, body: TokenRequest) -> dict[str, Any]:
        """A single-use token for enrolling one key carrier."""
        return wire.enrollment_token(
            inst.customers.issue_enrollment_token(customer_id, body.ttl_seconds)
        )

    @router.post("/v1/admin/carriers/{serial}/revoke")
    def revoke_carrier(serial: Serial) -> dict[str, Any]:
        """Revoke a key carrier."""
        return wire.carrier_status(inst.carriers.revoke(serial))

    @router.post("/v1/admin/scheme-epochs", status_code=201)
    def rotate_epoch() -> dict[str, Any]:
        """Start a new scheme-key epoch now (e.g. after revoking a leaked carrier)."""
        epoch = inst.scheme_keys.rotate(inst.now())
        return {
            "epoch": epoch.epoch,
            "kid": epoch.key.kid,
            "public_key": b64e(epoch.key.public.raw),
            "retire_at": epoch.retire_at,
        }

    @router.get("/v1/admin/settlement", response_model=None)
    def admin_settlement(
        date: Annotated[str, Query(pattern=Day)],
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Response:
        """Settlement report of every merchant for one UTC day."""
        return settlement_report(inst.settlement.report(date), format)

    return router
