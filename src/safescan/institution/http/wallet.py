"""The wallet's and everyone's routes: the published keys and revocation list, code status,
paying (and its framework-free fast path), carrier enrollment and key updates, the account
statement. No credentials: the carrier's signatures authenticate what needs it.

A payment's path: ``POST /v1/payments`` -> :func:`fast_pay` (the hot path: no framework) or
:func:`wallet_router`'s ``pay`` (the same validation, for the OpenAPI document and in-process
callers) -> ``inst.payments.pay_async`` (:mod:`safescan.institution.domain.payments`): the code
is opened, the carrier's authorization checked, and the ledger transfer, the order's state, the
receipt, the outbox event and the audit entry are written in one transaction.
"""

# No `from __future__ import annotations`: FastAPI must see the local Annotated aliases.

import re
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from safescan.api import account
from safescan.api.encoding import b64d, b64e
from safescan.api.wire import authorization_from_wire
from safescan.institution import outcomes, wire
from safescan.institution.domain.idempotency import Stored
from safescan.institution.http.asgi import FastHandler, Scope, Send, send_json
from safescan.institution.http.common import (
    Closed,
    CodeText,
    IdempotencyKey,
    KeyText,
    Serial,
    Strict,
    client_address,
    created,
)
from safescan.institution.http.errors import answer
from safescan.institution.http.query import JSON_TYPES, JSONRoute
from safescan.institution.ratelimit import RateLimiter
from safescan.institution.service import Institution
from safescan.institution.util import canonical_json, framework_json, key32
from safescan.institution.wire import CREATED

Base64 = r"^[A-Za-z0-9+/=_\-]+$"
CarrierSerial = Annotated[int, Field(ge=1, le=2**31 - 1, strict=True)]
WalletKey = Annotated[str, Field(min_length=40, max_length=48, pattern=Base64)]


class PaymentCreate(Strict):
    """A wallet pays: the code's text and the carrier's authorization (base64 CBOR)."""

    code: CodeText
    authorization: Annotated[str, Field(min_length=1, max_length=2000, pattern=Base64)]


class CodeStatusRequest(Strict):
    """Ask whether a code is still payable."""

    code: CodeText


class Enrollment(Closed):
    """A wallet enrolls its key carrier: the keys it generated and its attestation of them."""

    token: Annotated[str, Field(min_length=8, max_length=128, pattern=r"^[A-Za-z0-9_\-]+$")]
    signing_public_key: KeyText
    transport_public_key: KeyText
    # base64 CBOR (safescan.code.attestation); required, but an absent one is refused by the
    # service with a clear 403 attestation_refused rather than a schema error
    attestation: Annotated[str, Field(min_length=1, max_length=1400, pattern=Base64)] | None = None


class KeyUpdateRequest(Closed):
    """A wallet asks for its carrier's scheme keys newer than the epoch the carrier holds."""

    from_epoch: Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)]  # JSON integers only


class ChallengeRequest(Strict):
    """Ask for a challenge the key carrier will answer."""

    carrier_serial: CarrierSerial
    wallet_key: WalletKey


class StatementRequest(Strict):
    """The carrier's answer to the challenge."""

    carrier_serial: CarrierSerial
    wallet_key: WalletKey
    expires_at: Annotated[int, Field(ge=0, le=2**62, strict=True)]
    response: Annotated[str, Field(min_length=1, max_length=200, pattern=Base64)]


def _authorization(body: PaymentCreate) -> bytes:
    return authorization_from_wire(body.authorization)  # the one JSON form (api.wire)


#: ``GET /v1/revocation-list`` answers JSON, or with ``format=cbor`` the signed bytes themselves:
#: both are in the spec, so a client generated from it reads either
REVOCATION_LIST_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The signed list: JSON, or its raw CBOR bytes with `format=cbor`",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": [
                        "sequence",
                        "issued_at",
                        "next_update",
                        "serials",
                        "subjects",
                        "issuer_kid",
                        "signed",
                    ],
                    "properties": {
                        "sequence": {"type": "integer"},
                        "issued_at": {"type": "integer"},
                        "next_update": {
                            "type": ["integer", "null"],
                            "description": "signed (version-3 lists, scope=all): not relied on"
                            " past this + 12 h; null for a list without one (scope=merchant)",
                        },
                        "serials": {"type": "array", "items": {"type": "integer"}},
                        "subjects": {"type": "array", "items": {"type": "string"}},
                        "issuer_kid": {"type": "integer"},
                        "signed": {"type": "string", "description": "the CBOR bytes, base64"},
                    },
                }
            },
            "application/cbor": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


def wallet_router(inst: Institution, *, limiter: RateLimiter) -> APIRouter:
    """The public and wallet routes over ``inst``; ``limiter`` limits the public endpoints that
    cost work per client address."""
    router = APIRouter(route_class=JSONRoute)

    def limited(request: Request) -> None:
        limiter.check(client_address(request))

    @router.get("/v1/keys", tags=["public"])
    def keys() -> dict[str, Any]:
        """The institution's public keys (trust anchors for wallets and merchants)."""
        return wire.public_keys(inst.setup.public_keys())

    @router.get("/v1/revocation-list", tags=["public"], responses=REVOCATION_LIST_RESPONSES)
    def revocation_list(
        format: Annotated[Literal["json", "cbor"], Query()] = "json",
        scope: Annotated[Literal["all", "merchant"], Query()] = "all",
    ) -> Response:
        """The signed revocation list (``format=cbor`` for the raw signed bytes;
        ``scope=merchant``: merchant entries only, the list key carriers keep)."""
        crl = inst.certificates.revocation_list(scope)
        raw = crl.to_bytes()
        if format == "cbor":
            return Response(raw, media_type="application/cbor")
        return JSONResponse(
            {
                "sequence": crl.sequence,
                "issued_at": crl.issued_at,
                "next_update": crl.next_update,
                "serials": sorted(crl.serials),
                "subjects": sorted(crl.subjects),
                "issuer_kid": crl.issuer_kid,
                "signed": b64e(raw),
            }
        )

    @router.post("/v1/carriers/enroll", status_code=201, tags=["wallet"])
    def enroll(body: Enrollment) -> dict[str, Any]:
        """Register an attested key carrier: certificate, sealed provisioning bundle and the
        first sealed key update (403 ``attestation_refused`` without a valid attestation)."""
        attestation = (
            b64d(body.attestation, param="attestation", max_bytes=1024)
            if body.attestation is not None
            else None
        )
        return wire.carrier_enrolled(
            inst.carriers.enroll(
                body.token,
                key32(body.signing_public_key, param="signing_public_key"),
                key32(body.transport_public_key, param="transport_public_key"),
                attestation,
            )
        )

    @router.post("/v1/carriers/{serial}/key-update", tags=["wallet"])
    def key_update(serial: Serial, body: KeyUpdateRequest, request: Request) -> dict[str, Any]:
        """The KEY UPDATE (sealed to the carrier's own transport key, so useless to anyone
        else) from the epoch the carrier reports to the current one; ``key_update`` is null
        when it is up to date. A revoked carrier gets 403 ``carrier_revoked``. Rate-limited
        per client address (each update issued is an audit entry)."""
        limited(request)
        return wire.carrier_key_update(inst.carriers.key_update(serial, body.from_epoch))

    @router.post("/v1/payments", status_code=201, tags=["wallet"])
    async def pay(body: PaymentCreate, idempotency_key: IdempotencyKey = None) -> JSONResponse:
        """Pay a code with a carrier-signed authorization; answers with a signed receipt."""
        paid = await inst.payments.pay_async(body.code, _authorization(body), idempotency_key)
        return created(paid, wire.payment_made)

    @router.post("/v1/payments/lookup", tags=["wallet"])
    def payment_lookup(
        body: PaymentCreate, request: Request, idempotency_key: IdempotencyKey = None
    ) -> dict[str, Any]:
        """What a payment request whose answer was lost did (the same body and key as the
        payment; authenticated by the carrier's signature). Never pays; settles: after
        ``not_processed`` the authorization can never be paid."""
        limited(request)
        return outcomes.lookup_payment(inst, body.code, _authorization(body), idempotency_key)

    @router.post("/v1/codes/status", tags=["wallet"])
    def code_status(body: CodeStatusRequest, request: Request) -> dict[str, Any]:
        """Is this exact code still payable? For wallets, before asking the customer anything."""
        limited(request)
        return wire.code_status(inst.orders.code_status(body.code))

    @router.post("/v1/account/challenge", tags=["wallet"])
    def challenge(body: ChallengeRequest, request: Request) -> dict[str, Any]:
        """A one-time challenge for the key carrier to sign (see safescan.api.account)."""
        limited(request)
        wallet_key = b64d(body.wallet_key, param="wallet_key", max_bytes=32)
        issued = inst.accounts.challenge(body.carrier_serial, wallet_key)
        return {"challenge": b64e(issued.value), "expires_at": issued.expires_at}

    @router.post("/v1/account", tags=["wallet"])
    def statement(body: StatementRequest, request: Request) -> dict[str, Any]:
        """The customer's balances, payments and refunds, sealed to the wallet's key, for a
        carrier that answered the challenge."""
        limited(request)
        sealed = inst.accounts.sealed_statement(
            serial=body.carrier_serial,
            wallet_key=b64d(body.wallet_key, param="wallet_key", max_bytes=32),
            expires_at=body.expires_at,
            response=b64d(body.response, param="response", max_bytes=account.RESPONSE_BYTES),
        )
        return {"sealed": b64e(sealed)}

    return router


_IDEMPOTENCY = re.compile(r"[\x21-\x7e]{1,255}")


def fast_pay(inst: Institution) -> FastHandler:
    """``POST /v1/payments`` without the framework, for well-formed requests (see
    :func:`_well_formed`; anything else declines to the routed ``pay``, which answers it as
    the framework does). The same steps as the routed one: the payment, its answer rendered
    as the framework renders it (a keyed one as recorded), errors through
    :func:`.errors.answer`, the app's handler table."""

    async def handle(scope: Scope, body: bytes, send: Send) -> bool:
        found = _well_formed(scope, body)
        if found is None:
            return False
        code, authorization, key = found
        try:
            paid = await inst.payments.pay_async(code, authorization_from_wire(authorization), key)
            if isinstance(paid, Stored):  # keyed: the answer recorded for its key, as recorded
                await send_json(send, paid.status, canonical_json(paid.body).encode())
            else:
                await send_json(send, CREATED, framework_json(wire.payment_made(paid)))
        except Exception as exc:  # noqa: BLE001 - every error answered by its handler; no traceback leaves
            err = answer(exc)
            await send_json(
                send, err.status, framework_json(err.body), retry_after_s=err.retry_after
            )
        return True

    return handle


def _well_formed(scope: Scope, body: bytes) -> tuple[str, str, str | None] | None:
    """A payment or lookup request a fast route may answer (the one header reader of both):
    one JSON content type, at most one sane Idempotency-Key, a body :func:`payment_fields`
    accepts; returns the code, the authorization and the key. None: anything else, left to
    the routed ``pay`` / ``payment_lookup`` (so every refusal of a malformed request is the
    framework's, byte for byte)."""
    ctype: bytes | None = None
    key: str | None = None
    for name, value in scope.get("headers", []):
        if name == b"content-type":
            if ctype is not None:
                return None
            ctype = value
        elif name == b"idempotency-key":
            if key is not None:
                return None
            key = value.decode("latin-1")
    if ctype is None or ctype.lower() not in JSON_TYPES:
        return None
    if key is not None and not _IDEMPOTENCY.fullmatch(key):
        return None
    fields = payment_fields(body)
    if fields is None:
        return None
    return fields[0], fields[1], key


#: ``PaymentCreate.authorization``'s characters (deleted by ``bytes.translate``: what is left
#: is not allowed)
_AUTHORIZATION_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=_-"
_PAYMENT_KEYS = frozenset({"code", "authorization"})


def payment_fields(body: bytes) -> tuple[str, str] | None:
    """The code and the authorization of a ``POST /v1/payments`` (or lookup) body that
    :class:`PaymentCreate` accepts, read by hand (2.0 us of CPU against the model's 2.7): a JSON
    object of exactly those two keys, both exact JSON strings within the model's length and
    character rules. None for anything else, including bodies the model would accept written
    in a way this reader does not take (they go to the routed route and its model): it never
    accepts what the model refuses and never reads other values than the model's
    (tests/institution/test_fast_routes.py feeds both the same bodies)."""
    # a key given twice (orjson keeps the last) or written with escapes: the routed route's
    # typed refusal (duplicate_key, query.check_body); two byte counts, no second parse
    if b"\\" in body or body.count(b'"code"') != 1 or body.count(b'"authorization"') != 1:
        return None
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(doc) is not dict or doc.keys() != _PAYMENT_KEYS:
        return None
    code = doc["code"]
    authorization = doc["authorization"]
    if type(code) is not str or type(authorization) is not str:
        return None
    # CodeText: 1-2000 of [\x20-\x7e] (printable ASCII); the authorization: 1-2000 of
    # [A-Za-z0-9+/=_-] (the model's patterns, without a regular expression's cost)
    if not (0 < len(code) <= 2000 and code.isascii() and code.isprintable()):
        return None
    if not (0 < len(authorization) <= 2000 and authorization.isascii()):
        return None
    if authorization.encode("ascii").translate(None, _AUTHORIZATION_BYTES):
        return None
    return code, authorization


def fast_lookup(inst: Institution, limiter: RateLimiter) -> FastHandler:
    """``POST /v1/payments/lookup`` without the framework, for well-formed requests (see
    :func:`_well_formed`; anything else declines to the routed ``payment_lookup``, which
    answers it as before). The same steps in the same order as the routed one: the client
    address's rate limit, then the lookup in a worker thread (it waits on the database), the
    answer rendered as the framework renders it, errors through :func:`.errors.answer`."""

    async def handle(scope: Scope, body: bytes, send: Send) -> bool:
        found = _well_formed(scope, body)
        if found is None:
            return False
        code, authorization, key = found
        try:
            client = scope.get("client")
            limiter.check(client[0] if client else "unknown")
            settled = await run_in_threadpool(
                outcomes.lookup_payment, inst, code, authorization_from_wire(authorization), key
            )
            await send_json(send, 200, framework_json(settled))
        except Exception as exc:  # noqa: BLE001 - every error answered by its handler; no traceback leaves
            err = answer(exc)
            await send_json(
                send, err.status, framework_json(err.body), retry_after_s=err.retry_after
            )
        return True

    return handle
