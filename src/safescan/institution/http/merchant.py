"""The merchant's routes (``/v1/merchant/...``): every request authenticated once for the whole
router (an API key or a signed request, :class:`.auth.MerchantAuth`); each route names the scope
it needs (:data:`safescan.api.api_keys.SCOPES`)."""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import Field

from safescan.api.encoding import b64e
from safescan.api.errors import InvalidRequest
from safescan.api.fields import Amount, LineItemField, LongText, ShortText
from safescan.code.payment import MAX_ITEMS
from safescan.institution import outcomes, wire
from safescan.institution.http.auth import MerchantAuth
from safescan.institution.http.common import (
    CodeText,
    CurrencyCode,
    Day,
    IdempotencyKey,
    KeyText,
    ObjectId,
    PageAfter,
    Strict,
    Url,
    created,
    settlement_report,
)
from safescan.institution.http.query import JSONRoute
from safescan.institution.http.stream import event_stream
from safescan.institution.service import Institution
from safescan.institution.util import currency_numeric, key32


class WebhookSet(Strict):
    """Set or clear the webhook URL."""

    url: Url | None


class CertifyKey(Strict):
    """Certify a merchant code-signing key."""

    public_key: KeyText
    valid_days: Annotated[int, Field(ge=1, le=366)] = 365


class OrderCreate(Strict):
    """Precreate an order (returns its sealed dynamic code)."""

    items: Annotated[list[LineItemField], Field(min_length=1, max_length=MAX_ITEMS)]
    currency: CurrencyCode
    expires_in: Annotated[int, Field(ge=5, le=7 * 86400)] = 900
    reference: ShortText | None = None


class StaticCodeCreate(Strict):
    """Make a static (printed) code."""

    currency: CurrencyCode | None = None
    valid_days: Annotated[int, Field(ge=1, le=3650)] = 365


class OrderClose(Strict):
    """Close an order; ``code`` withdraws a code the merchant's terminal sealed itself."""

    code: CodeText | None = None


class RefundCreate(Strict):
    """Refund an order fully (no amount) or partially."""

    amount: Amount | None = None
    reason: LongText | None = None


def merchant_router(inst: Institution, *, auth: MerchantAuth) -> APIRouter:
    """The merchant's routes over ``inst``; ``auth`` authenticates the whole router (an API
    key or a signed request) and each route names the scope it needs."""
    router = APIRouter(tags=["merchant"], dependencies=[auth.caller], route_class=JSONRoute)
    # the merchant id, for a caller with the scope (type aliases)
    OrdersRead = Annotated[str, auth.scope("orders:read")]  # noqa: N806
    OrdersWrite = Annotated[str, auth.scope("orders:write")]  # noqa: N806
    AccountRead = Annotated[str, auth.scope("account:read")]  # noqa: N806
    WebhooksWrite = Annotated[str, auth.scope("webhooks:write")]  # noqa: N806
    CertificatesWrite = Annotated[str, auth.scope("certificates:write")]  # noqa: N806
    RefundsWrite = Annotated[str, auth.scope("refunds:write")]  # noqa: N806
    SettlementRead = Annotated[str, auth.scope("settlement:read")]  # noqa: N806
    EventsRead = Annotated[str, auth.scope("events:read")]  # noqa: N806

    @router.get("/v1/merchant/orders")
    def list_orders(
        mid: OrdersRead,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        starting_after: Annotated[
            str | None, Query(min_length=1, max_length=40, pattern=PageAfter)
        ] = None,
        after: Annotated[str | None, Query(min_length=1, max_length=40, pattern=PageAfter)] = None,
    ) -> dict[str, Any]:
        """The calling merchant's orders, newest first, ``limit`` (1-100) a page: the next page
        with ``starting_after=<the last order id>`` while ``has_more`` (``after``: the same,
        its older name)."""
        if starting_after is not None and after is not None:
            raise InvalidRequest("give starting_after or after, not both", param="starting_after")
        cursor = starting_after if starting_after is not None else after
        return wire.order_page(inst.orders.page(mid, limit=limit, after=cursor))

    @router.get("/v1/merchant/refunds")
    def list_refunds(
        mid: OrdersRead,
        date: Annotated[str | None, Query(pattern=Day)] = None,
        order_id: Annotated[
            str | None, Query(min_length=1, max_length=40, pattern=PageAfter)
        ] = None,
    ) -> dict[str, Any]:
        """The calling merchant's refunds of one UTC day (``date``) and/or of one order, oldest
        first (the web POS's back office: refunds made by every terminal)."""
        if date is None and order_id is None:
            raise InvalidRequest("give date=YYYY-MM-DD or order_id", param="date")
        return wire.refund_list(inst.refunds.listed(mid, day=date, order_id=order_id))

    @router.get("/v1/merchant")
    def me(mid: AccountRead) -> dict[str, Any]:
        """The calling merchant's profile."""
        return wire.merchant(inst.merchants.get(mid))

    @router.put("/v1/merchant/webhook")
    def set_webhook(body: WebhookSet, mid: WebhooksWrite) -> dict[str, Any]:
        """Set or clear the webhook URL."""
        return wire.merchant(inst.merchants.set_webhook(mid, body.url))

    @router.post("/v1/merchant/certificates", status_code=201)
    def certify(body: CertifyKey, mid: CertificatesWrite) -> dict[str, Any]:
        """Certify a code-signing key (for merchant-signed codes)."""
        cert = inst.merchants.certify_key(
            mid, key32(body.public_key, param="public_key"), body.valid_days
        )
        return {
            "serial": cert.serial,
            "not_after": cert.not_after,
            "certificate": b64e(cert.to_bytes()),
        }

    @router.post("/v1/merchant/orders", status_code=201)
    def create_order(
        body: OrderCreate, mid: OrdersWrite, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """Precreate an order; returns the sealed dynamic code to show as a QR code."""
        made = inst.orders.create(
            mid,
            items=body.items,
            currency_code=body.currency,
            expires_in=body.expires_in,
            reference=body.reference,
            idempotency_key=idempotency_key,
        )
        return created(made, wire.order_created)

    @router.post("/v1/merchant/orders/lookup")
    def order_lookup(
        body: OrderCreate, mid: OrdersWrite, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        """What an order creation whose answer was lost did (same body, same key); settles it."""
        return outcomes.lookup_order(
            inst,
            mid,
            idempotency_key,
            items=body.items,
            currency=currency_numeric(body.currency),
            expires_in=body.expires_in,
            reference=body.reference,
        )

    @router.get("/v1/merchant/orders/{order_id}")
    def get_order(order_id: ObjectId, mid: OrdersRead) -> dict[str, Any]:
        """Query an order."""
        return wire.order(inst.orders.get(mid, order_id))

    @router.post("/v1/merchant/orders/{order_id}/close")
    def close_order(
        order_id: ObjectId, mid: OrdersWrite, body: OrderClose | None = None
    ) -> dict[str, Any]:
        """Close an unpaid order (with ``code``: withdraw a code the terminal sealed itself)."""
        return wire.order(inst.orders.close(mid, order_id, body.code if body is not None else None))

    @router.post("/v1/merchant/orders/{order_id}/refunds/lookup")
    def refund_lookup(
        order_id: ObjectId,
        body: RefundCreate,
        mid: RefundsWrite,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        """What a refund request whose answer was lost did (same body, same key); settles it."""
        return outcomes.lookup_refund(
            inst, mid, order_id, idempotency_key, amount=body.amount, reason=body.reason
        )

    @router.post("/v1/merchant/orders/{order_id}/refunds", status_code=201)
    def refund(
        order_id: ObjectId,
        body: RefundCreate,
        mid: RefundsWrite,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Refund a paid order fully or partly."""
        made = inst.refunds.refund(
            mid, order_id, amount=body.amount, reason=body.reason, idempotency_key=idempotency_key
        )
        return created(made, wire.refund_made)

    @router.get("/v1/merchant/payments/{payment_id}")
    def get_payment(payment_id: ObjectId, mid: OrdersRead) -> dict[str, Any]:
        """A payment (with the payer pseudonym and the signed receipt)."""
        return wire.payment(inst.payments.get(mid, payment_id))

    @router.post("/v1/merchant/static-codes", status_code=201)
    def static_code(body: StaticCodeCreate, mid: OrdersWrite) -> dict[str, Any]:
        """A sealed static code to print; the customer enters the amount."""
        return wire.static_code(
            inst.orders.static_code(mid, currency_code=body.currency, valid_days=body.valid_days)
        )

    @router.get("/v1/merchant/settlement", response_model=None)
    def merchant_settlement(
        mid: SettlementRead,
        date: Annotated[str, Query(pattern=Day)],
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Response:
        """The calling merchant's settlement report for one UTC day."""
        return settlement_report(inst.settlement.report(date, mid), format)

    @router.get("/v1/merchant/events", response_class=StreamingResponse)
    async def events(
        request: Request,
        mid: EventsRead,
        after: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    ) -> StreamingResponse:
        """Server-sent events for the POS: every event signed (see ``verify_event``)."""
        # ASCII digits only: "²".isdigit() is true (headers are read as Latin-1) and int("²")
        # raised ValueError, a 500; any other spelling is no position (only new events)
        last = last_event_id or ""
        if after is None and last.isascii() and last.isdigit() and len(last) < 10:
            after = int(last)
        if after is None:
            after = await asyncio.to_thread(inst.event_feed.latest, mid)  # only new events
        return StreamingResponse(
            event_stream(inst.event_feed, request, mid, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return router
