"""The institution's HTTP API (FastAPI on uvicorn).

Strict JSON models (unknown fields refused), request bodies limited to ``MAX_BODY`` bytes before
any parsing, every error as ``{"error": {"type", "code", "message", "param"?}}`` with a proper
status. Three kinds of caller: the administrator (bearer token), merchants (request signatures,
see :mod:`.merchant_auth`) and wallets (enrollment token; carrier-signed authorizations).
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from safescan.api.encoding import b64d, b64e
from safescan.api.errors import (
    InvalidRequest,
    Unauthenticated,
    http_status,
    retry_after,
)
from safescan.api.fields import (
    Amount,
    LongText,
    Name,
    Quantity,
    ShortText,
    StrictModel,
    validation_error,
)
from safescan.code.errors import SafescanError
from safescan.code.payment import MAX_ITEMS
from safescan.code.text import preload
from safescan.institution import outcomes, settlement
from safescan.institution.api_carriers import register_carrier_routes
from safescan.institution.api_webhooks import webhook_routes
from safescan.institution.asgi import (
    BODY_KEY,
    INTERNAL_ERROR,
    ASGIApp,
    BodyLimit,
    Scope,
    Send,
    error_body,
    send_json,
    unexpected_error,
)
from safescan.institution.background import maintenance_loop
from safescan.institution.health import (
    Heartbeat,
    Readiness,
    add_health_routes,
    database_check,
    writer_check,
)
from safescan.institution.netguard import Limits, connection_status
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution, Stored
from safescan.institution.stream import event_stream, max_seq
from safescan.institution.util import currency_numeric, key32
from safescan.institution.webhook_dispatcher import WebhookDispatcher

log = logging.getLogger("safescan.institution.api")


def _error_response(exc: SafescanError) -> JSONResponse:
    wait = retry_after(exc)
    headers = {"Retry-After": str(wait)} if wait is not None else None
    return JSONResponse(error_body(exc), status_code=http_status(exc), headers=headers)


# --- request and response models --------------------------------------------------------------


class Strict(StrictModel):
    """Base of every request model: unknown fields refused, JSON integers only (strict)."""


CurrencyCode = Annotated[
    str, Field(min_length=3, max_length=3, pattern=r"^([A-Za-z]{3}|[0-9]{3})$")
]
Url = Annotated[str, Field(min_length=1, max_length=512)]  # rules: institution.webhook_targets
KeyText = Annotated[str, Field(min_length=40, max_length=88, pattern=r"^[A-Za-z0-9+/=_\-]+$")]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
]
OrderId = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._:\-]+$")]


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


class WebhookSet(Strict):
    """Set or clear the webhook URL."""

    url: Url | None


class CertifyKey(Strict):
    """Certify a merchant code-signing key."""

    public_key: KeyText
    valid_days: Annotated[int, Field(ge=1, le=366)] = 365


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


class Item(Strict):
    """One order line."""

    name: Name
    quantity: Quantity
    unit_price: Amount


class OrderCreate(Strict):
    """Precreate an order (returns its sealed dynamic code)."""

    items: Annotated[list[Item], Field(min_length=1, max_length=MAX_ITEMS)]
    currency: CurrencyCode
    expires_in: Annotated[int, Field(ge=5, le=7 * 86400)] = 900
    reference: ShortText | None = None


class StaticCodeCreate(Strict):
    """Make a static (printed) code."""

    currency: CurrencyCode | None = None
    valid_days: Annotated[int, Field(ge=1, le=3650)] = 365


class PaymentCreate(Strict):
    """A wallet pays: the code's text and the carrier's authorization (base64 CBOR)."""

    code: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[\x20-\x7e]+$")]
    authorization: Annotated[
        str, Field(min_length=1, max_length=2000, pattern=r"^[A-Za-z0-9+/=_\-]+$")
    ]


class CodeStatusRequest(Strict):
    """Ask whether a code is still payable."""

    code: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[\x20-\x7e]+$")]


class OrderClose(Strict):
    """Close an order; ``code`` withdraws a code the merchant's terminal sealed itself."""

    code: Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[\x20-\x7e]+$")] | None = (
        None
    )


class RefundCreate(Strict):
    """Refund an order fully (no amount) or partially."""

    amount: Amount | None = None
    reason: LongText | None = None


class ErrorDetail(BaseModel):
    """An error."""

    type: str
    code: str
    message: str
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 402, 403, 404, 409, 413, 422, 429)
}


def _json(stored: Stored) -> JSONResponse:
    return JSONResponse(stored.body, status_code=stored.status)


# --- the app ----------------------------------------------------------------------------------


def create_app(
    inst: Institution,
    *,
    merchant_rate: float = 100.0,
    merchant_burst: float = 200.0,
    background: bool = True,
    dispatcher: WebhookDispatcher | None = None,
    maintenance_interval: float = 5.0,
) -> ASGIApp:
    """The ASGI application (wrapped in the body-size limit).

    With ``background``, runs the maintenance task and, when the institution records webhooks,
    ``dispatcher`` (by default one with the institution's target rules and default limits)."""
    preload()  # what requests would load on first use: none opens a file for it
    inst.merchant_rate = (merchant_rate, merchant_burst)  # buckets in the database
    public_limiter = RateLimiter(merchant_rate, merchant_burst)  # per client address
    if background and inst.webhooks_enabled and dispatcher is None:
        dispatcher = WebhookDispatcher(
            inst.db, inst.keys.root, inst.keys.root_kid, targets=inst.webhook_targets
        )
    if not (background and inst.webhooks_enabled):
        dispatcher = None
    readiness = Readiness()
    readiness.add("database", database_check(inst.db))
    readiness.add("writer", writer_check(inst.db))
    readiness.add("connections", connection_status)
    maintenance_beat = Heartbeat(maintenance_interval)
    if background:
        readiness.add("maintenance", maintenance_beat.check)
    if dispatcher is not None:
        readiness.add("webhooks", dispatcher.health)
    hooks = dispatcher

    def webhooks_state() -> str:
        return "off" if hooks is None else str(hooks.health()["state"])

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        if dispatcher is not None:
            tasks.append(asyncio.create_task(dispatcher.run(stop), name="webhook-dispatcher"))
        if background:
            tasks.append(
                asyncio.create_task(
                    maintenance_loop(inst, stop, maintenance_interval, maintenance_beat)
                )
            )
        try:
            yield
        finally:
            stop.set()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(t, 5)
            inst.db.dispose()

    # the /docs and /redoc pages load their scripts from this server, never from a CDN
    app = FastAPIOffline(
        title="safescan payment institution",
        version="1",
        description="Sealed, signed payment codes, carrier-signed authorizations, a ledger.",
        lifespan=lifespan,
        responses=ERRORS,
    )

    @app.exception_handler(SafescanError)
    async def _safescan_error(_req: Request, exc: SafescanError) -> JSONResponse:
        return _error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
        return _error_response(validation_error(exc.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: ("NotFound", "not_found"), 405: ("MethodNotAllowed", "method_not_allowed")}
        type_, code = kinds.get(exc.status_code, ("HttpError", "http_error"))
        return JSONResponse(
            {"error": {"type": type_, "code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    @app.exception_handler(Exception)
    async def _internal(_req: Request, exc: Exception) -> JSONResponse:
        typed = unexpected_error(exc)
        if typed is not None:
            return _error_response(typed)
        return JSONResponse(INTERNAL_ERROR, status_code=500)

    # OSError too: answered here, the connection stays usable (what is registered for Exception
    # answers, then the exception goes on and the server closes the connection)
    app.add_exception_handler(OSError, _internal)

    # --- callers ---

    def admin(authorization: Annotated[str | None, Header(max_length=512)] = None) -> None:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("an administrator token is required (Authorization: Bearer ...)")
        inst.check_admin(token.strip())

    def merchant(request: Request) -> str:
        scope = request.scope
        path = scope["path"]
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        return inst.authenticate_merchant(
            request.method, path, request.headers, scope.get(BODY_KEY, b"")
        )

    Admin = Annotated[None, Depends(admin)]  # noqa: N806 - a type alias
    MerchantId = Annotated[str, Depends(merchant)]  # noqa: N806 - a type alias

    app.include_router(webhook_routes(inst, dispatcher, MerchantId))  # pos webhook ...

    # --- public ---

    add_health_routes(app, inst.db, inst.now, readiness, webhooks=webhooks_state)

    @app.get("/v1/keys", tags=["public"])
    def keys() -> dict[str, Any]:
        """The institution's public keys (trust anchors for wallets and merchants)."""
        return inst.public_keys()

    @app.get("/v1/revocation-list", tags=["public"])
    def revocation_list(
        format: Annotated[Literal["json", "cbor"], Query()] = "json",
        scope: Annotated[Literal["all", "merchant"], Query()] = "all",
    ) -> Response:
        """The signed revocation list (``format=cbor`` for the raw signed bytes;
        ``scope=merchant``: merchant entries only, the list key carriers keep)."""
        crl = inst.revocation_list(scope)
        raw = crl.to_bytes()
        if format == "cbor":
            return Response(raw, media_type="application/cbor")
        return JSONResponse(
            {
                "sequence": crl.sequence,
                "issued_at": crl.issued_at,
                "serials": sorted(crl.serials),
                "subjects": sorted(crl.subjects),
                "issuer_kid": crl.issuer_kid,
                "signed": b64e(raw),
            }
        )

    # --- administrator ---

    @app.post("/v1/admin/merchants", status_code=201, tags=["admin"])
    def create_merchant(body: MerchantCreate, _: Admin) -> dict[str, Any]:
        """Onboard a merchant; without ``api_public_key`` the API key seed is returned once."""
        pk = key32(body.api_public_key, param="api_public_key") if body.api_public_key else None
        out, secret = inst.create_merchant(
            name=body.name,
            city=body.city,
            country=body.country,
            mcc=body.mcc,
            settlement_account=body.settlement_account,
            api_public_key=pk,
            webhook_url=body.webhook_url,
            allow_protected_name=body.allow_protected_name,
        )
        if secret is not None:
            out["api_secret_key"] = secret
        return out

    @app.get("/v1/admin/webhooks/dispatcher", tags=["admin"])
    def webhook_dispatcher(_: Admin) -> dict[str, Any]:
        """This process's webhook dispatcher: state, limits and counters."""
        if dispatcher is None:
            return {"state": "off", "ok": True}
        return {**dispatcher.health(), "limits": dataclasses.asdict(dispatcher.limits)}

    @app.get("/v1/admin/merchants/{merchant_id}", tags=["admin"])
    def admin_get_merchant(merchant_id: OrderId, _: Admin) -> dict[str, Any]:
        """A merchant."""
        return inst.get_merchant(merchant_id)

    @app.post("/v1/admin/merchants/{merchant_id}/revoke", tags=["admin"])
    def revoke_merchant(merchant_id: OrderId, _: Admin) -> dict[str, Any]:
        """Revoke a merchant and its code certificates."""
        return inst.revoke_merchant(merchant_id)

    @app.post("/v1/admin/customers", status_code=201, tags=["admin"])
    def create_customer(body: CustomerCreate, _: Admin) -> dict[str, Any]:
        """Open a customer."""
        return inst.create_customer(body.name)

    @app.get("/v1/admin/customers/{customer_id}", tags=["admin"])
    def get_customer(customer_id: OrderId, _: Admin) -> dict[str, Any]:
        """A customer with balances and carriers."""
        return inst.get_customer(customer_id)

    @app.post("/v1/admin/customers/{customer_id}/fund", tags=["admin"])
    def fund(customer_id: OrderId, body: Funding, _: Admin) -> dict[str, Any]:
        """Credit a customer from the institution's funding account."""
        return inst.fund_customer(customer_id, body.currency, body.amount)

    @app.post(
        "/v1/admin/customers/{customer_id}/enrollment-tokens", status_code=201, tags=["admin"]
    )
    def enrollment_token(customer_id: OrderId, body: TokenRequest, _: Admin) -> dict[str, Any]:
        """A single-use token for enrolling one key carrier."""
        return inst.issue_enrollment_token(customer_id, body.ttl_seconds)

    @app.post("/v1/admin/carriers/{serial}/revoke", tags=["admin"])
    def revoke_carrier(
        serial: Annotated[int, Path(ge=1, le=2**31 - 1)], _: Admin
    ) -> dict[str, Any]:
        """Revoke a key carrier."""
        return inst.revoke_carrier(serial)

    @app.get("/v1/admin/settlement", tags=["admin"], response_model=None)
    def admin_settlement(
        _: Admin,
        date: Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")],
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Response:
        """Settlement report of every merchant for one UTC day."""
        rows = inst.db.read(lambda c: settlement.report(c, date))
        return _report(rows, format)

    # --- wallets ---

    register_carrier_routes(app, inst, Admin, public_limiter)  # enrollment, key updates, epochs

    @app.post("/v1/payments", status_code=201, tags=["wallet"])
    async def pay(body: PaymentCreate, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Pay a code with a carrier-signed authorization; answers with a signed receipt."""
        auth = b64d(body.authorization, param="authorization", max_bytes=1024)
        return _json(await inst.pay_async(body.code, auth, idempotency_key))

    @app.post("/v1/payments/lookup", tags=["wallet"])
    def payment_lookup(
        body: PaymentCreate, request: Request, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        """What a payment request whose answer was lost did (the same body and key as the
        payment; authenticated by the carrier's signature). Never pays; settles: after
        ``not_processed`` the authorization can never be paid."""
        public_limiter.check(request.client.host if request.client else "unknown")
        auth = b64d(body.authorization, param="authorization", max_bytes=1024)
        return outcomes.lookup_payment(inst, body.code, auth, idempotency_key)

    @app.post("/v1/codes/status", tags=["wallet"])
    def code_status(body: CodeStatusRequest, request: Request) -> dict[str, Any]:
        """Is this exact code still payable? For wallets, before asking the customer anything."""
        public_limiter.check(request.client.host if request.client else "unknown")
        return inst.code_status(body.code)

    # --- merchants ---

    @app.get("/v1/merchant/orders", tags=["merchant"])
    def list_orders(
        mid: MerchantId,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        after: Annotated[
            str | None, Query(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9._:\-]+$")
        ] = None,
    ) -> dict[str, Any]:
        """The calling merchant's orders, newest first (page with ``after=<last order id>``)."""
        return inst.list_orders(mid, limit=limit, after=after)

    @app.get("/v1/merchant", tags=["merchant"])
    def me(mid: MerchantId) -> dict[str, Any]:
        """The calling merchant's profile."""
        return inst.get_merchant(mid)

    @app.put("/v1/merchant/webhook", tags=["merchant"])
    def set_webhook(body: WebhookSet, mid: MerchantId) -> dict[str, Any]:
        """Set or clear the webhook URL."""
        return inst.set_webhook(mid, body.url)

    @app.post("/v1/merchant/certificates", status_code=201, tags=["merchant"])
    def certify(body: CertifyKey, mid: MerchantId) -> dict[str, Any]:
        """Certify a code-signing key (for merchant-signed codes)."""
        cert = inst.certify_merchant_key(
            mid, key32(body.public_key, param="public_key"), body.valid_days
        )
        return {
            "serial": cert.serial,
            "not_after": cert.not_after,
            "certificate": b64e(cert.to_bytes()),
        }

    @app.post("/v1/merchant/orders", status_code=201, tags=["merchant"])
    def create_order(
        body: OrderCreate, mid: MerchantId, idempotency_key: IdempotencyKey = None
    ) -> JSONResponse:
        """Precreate an order; returns the sealed dynamic code to show as a QR code."""
        return _json(
            inst.create_order(
                mid,
                items=[(i.name, i.quantity, i.unit_price) for i in body.items],
                currency_code=body.currency,
                expires_in=body.expires_in,
                reference=body.reference,
                idempotency_key=idempotency_key,
            )
        )

    @app.post("/v1/merchant/orders/lookup", tags=["merchant"])
    def order_lookup(
        body: OrderCreate, mid: MerchantId, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        """What an order creation whose answer was lost did (same body, same key); settles it."""
        return outcomes.lookup_order(
            inst,
            mid,
            idempotency_key,
            items=[(i.name, i.quantity, i.unit_price) for i in body.items],
            currency=currency_numeric(body.currency),
            expires_in=body.expires_in,
            reference=body.reference,
        )

    @app.get("/v1/merchant/orders/{order_id}", tags=["merchant"])
    def get_order(order_id: OrderId, mid: MerchantId) -> dict[str, Any]:
        """Query an order."""
        return inst.get_order(mid, order_id)

    @app.post("/v1/merchant/orders/{order_id}/close", tags=["merchant"])
    def close_order(
        order_id: OrderId, mid: MerchantId, body: OrderClose | None = None
    ) -> dict[str, Any]:
        """Close an unpaid order (with ``code``: withdraw a code the terminal sealed itself)."""
        return inst.close_order(mid, order_id, body.code if body is not None else None)

    @app.post("/v1/merchant/orders/{order_id}/refunds/lookup", tags=["merchant"])
    def refund_lookup(
        order_id: OrderId,
        body: RefundCreate,
        mid: MerchantId,
        idempotency_key: IdempotencyKey = None,
    ) -> dict[str, Any]:
        """What a refund request whose answer was lost did (same body, same key); settles it."""
        return outcomes.lookup_refund(
            inst, mid, order_id, idempotency_key, amount=body.amount, reason=body.reason
        )

    @app.post("/v1/merchant/orders/{order_id}/refunds", status_code=201, tags=["merchant"])
    def refund(
        order_id: OrderId,
        body: RefundCreate,
        mid: MerchantId,
        idempotency_key: IdempotencyKey = None,
    ) -> JSONResponse:
        """Refund a paid order fully or partly."""
        return _json(
            inst.refund(
                mid,
                order_id,
                amount=body.amount,
                reason=body.reason,
                idempotency_key=idempotency_key,
            )
        )

    @app.get("/v1/merchant/payments/{payment_id}", tags=["merchant"])
    def get_payment(payment_id: OrderId, mid: MerchantId) -> dict[str, Any]:
        """A payment (with the payer pseudonym and the signed receipt)."""
        return inst.get_payment(mid, payment_id)

    @app.post("/v1/merchant/static-codes", status_code=201, tags=["merchant"])
    def static_code(body: StaticCodeCreate, mid: MerchantId) -> dict[str, Any]:
        """A sealed static code to print; the customer enters the amount."""
        return inst.create_static_code(mid, currency_code=body.currency, valid_days=body.valid_days)

    @app.get("/v1/merchant/settlement", tags=["merchant"], response_model=None)
    def merchant_settlement(
        mid: MerchantId,
        date: Annotated[str, Query(pattern=r"^\d{4}-\d{2}-\d{2}$")],
        format: Annotated[Literal["json", "csv"], Query()] = "json",
    ) -> Response:
        """The calling merchant's settlement report for one UTC day."""
        rows = inst.db.read(lambda c: settlement.report(c, date, mid))
        return _report(rows, format)

    @app.get("/v1/merchant/events", tags=["merchant"], response_class=StreamingResponse)
    async def events(
        request: Request,
        after: Annotated[int | None, Query(ge=0, le=2**31 - 1)] = None,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    ) -> StreamingResponse:
        """Server-sent events for the POS: every event signed (see ``verify_event``)."""
        mid = await asyncio.to_thread(merchant, request)
        if after is None and last_event_id and last_event_id.isdigit() and len(last_event_id) < 10:
            after = int(last_event_id)
        if after is None:
            after = await asyncio.to_thread(max_seq, inst, mid)  # only new events
        return StreamingResponse(
            event_stream(inst, request, mid, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    from safescan.institution.customer_api import add_customer_routes
    from safescan.institution.docs_pages import keep_docs_offline

    add_customer_routes(app, inst, admin=admin, limiter=public_limiter)
    keep_docs_offline(app)

    idem_re = re.compile(r"[\x21-\x7e]{1,255}")

    async def fast_pay(scope: Scope, body: bytes, send: Send) -> None:
        """POST /v1/payments without the framework (same validation, same answers)."""
        try:
            ctype = b""
            key: str | None = None
            for name, value in scope.get("headers", []):
                if name == b"content-type":
                    ctype = value
                elif name == b"idempotency-key":
                    key = value.decode("latin-1")
            if not ctype.startswith(b"application/json"):
                raise InvalidRequest("the body must be JSON (Content-Type: application/json)")
            if key is not None and not idem_re.fullmatch(key):
                raise InvalidRequest(
                    "Idempotency-Key must be 1-255 printable ASCII characters",
                    param="Idempotency-Key",
                )
            try:
                req = PaymentCreate.model_validate_json(body)
            except ValidationError as exc:
                raise validation_error(exc.errors()) from None
            auth = b64d(req.authorization, param="authorization", max_bytes=1024)
            stored = await inst.pay_async(req.code, auth, key)
            await send_json(send, stored.status, json.dumps(stored.body).encode())
        except SafescanError as exc:
            await send_json(
                send,
                http_status(exc),
                json.dumps(error_body(exc)).encode(),
                retry_after_s=retry_after(exc),
            )
        except Exception as exc:  # noqa: BLE001 - logged; never leak a traceback to a client
            typed = unexpected_error(exc)
            if typed is None:
                await send_json(send, 500, json.dumps(INTERNAL_ERROR).encode())
            else:
                body = json.dumps(error_body(typed)).encode()
                await send_json(send, http_status(typed), body, retry_after_s=retry_after(typed))

    return BodyLimit(
        app,
        fast_routes={("POST", "/v1/payments"): fast_pay},
        body_timeout=Limits.from_env().head_timeout,
    )


def _report(rows: list[dict[str, Any]], format: str) -> Response:
    if format == "csv":
        return PlainTextResponse(settlement.to_csv(rows), media_type="text/csv")
    return JSONResponse({"rows": rows})
