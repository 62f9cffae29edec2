"""The institution's API as a wallet uses it: payments and their status lookup, the code
status, carrier enrollment and key updates, and the account statement (proved with the
carrier). One service per resource; typed parameters in, typed objects out.

    api = WalletClient(url)
    api.payments.until_known(PaymentRequest(code, auth_bytes), idempotency_key=key)
    api.codes.status(code)              # None when the institution offers no such lookup
    api.carriers.key_update(serial, from_epoch=3)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from safescan.api import schema
from safescan.api.encoding import b64e
from safescan.api.errors import NotFound
from safescan.api.schema import Check, max_bytes
from safescan.api.wire import PaymentRequest
from safescan.client.answers import CodeStatus, PaymentLookup, PaymentMade
from safescan.client.fields import Answer
from safescan.client.http import DEFAULT_TIMEOUT, ApiClient, InstitutionHttp, JsonDoc
from safescan.client.public import KeyService, RevocationService
from safescan.client.retry import send_until_known


class PaymentService:
    """``POST /v1/payments`` and its lookup twin ``POST /v1/payments/lookup``."""

    def __init__(self, http: InstitutionHttp) -> None:
        self._http = http

    def _post(self, path: str, request: PaymentRequest, key: str | None) -> JsonDoc:
        headers = {"Idempotency-Key": key} if key else {}
        return self._http.call_object("POST", path, request.to_json(), headers=headers)

    def create(self, request: PaymentRequest, *, idempotency_key: str | None = None) -> PaymentMade:
        """Send the payment once (retry with the same key: :meth:`until_known`; without a key
        it cannot be retried safely); the answer carries the signed ``receipt``."""
        return PaymentMade.from_json(self._post("/v1/payments", request, idempotency_key))

    def lookup(self, request: PaymentRequest, *, idempotency_key: str) -> PaymentLookup:
        """What a payment sent with ``idempotency_key`` did (it also settles it): ``outcome``
        succeeded (with the ``payment``), refused (with the ``error``) or not_processed."""
        return PaymentLookup.from_json(self._post("/v1/payments/lookup", request, idempotency_key))

    def until_known(
        self,
        request: PaymentRequest,
        *,
        idempotency_key: str,
        budget: float | None = None,
        tries: int | None = None,
        lookups: int = 3,
        backoff: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> PaymentMade:
        """Send the payment with one ``idempotency_key`` until its outcome is known
        (:func:`safescan.client.retry.send_until_known`: retried, then looked up); the
        payment made, or the typed error that says it was not made or is not known."""
        doc = send_until_known(
            lambda: self._post("/v1/payments", request, idempotency_key),
            lambda: self._post("/v1/payments/lookup", request, idempotency_key),
            "payment",
            budget=budget,
            tries=tries,
            lookups=lookups,
            backoff=backoff,
            sleep=sleep,
        )
        return PaymentMade.from_json(doc)


class CodeService:
    """``POST /v1/codes/status``: the institution's view of a code."""

    def __init__(self, http: InstitutionHttp) -> None:
        self._http = http

    def status(self, code: str) -> CodeStatus | None:
        """The code's ``state``, its merchant's status ..., or None when the institution has no
        such endpoint (404) or answers no JSON object. Other failures (a malformed object
        among them) are typed errors."""
        try:
            doc = self._http.call("POST", "/v1/codes/status", {"code": code})
        except NotFound:
            return None
        return CodeStatus.from_json(doc) if isinstance(doc, dict) else None


@dataclass(frozen=True)
class Enrolled(Answer, schema.CarrierEnrolled, what="enrollment"):
    """The institution's answer to an enrollment: the carrier's certificate (CBOR), the sealed
    provisioning bundle for PERSONALIZE, the first sealed KEY UPDATE."""


@dataclass(frozen=True)
class KeyUpdate(Answer, schema.CarrierKeyUpdate, what="key update"):
    """The KEY UPDATE sealed to a carrier, to the current ``epoch`` (``key_update`` None: the
    carrier is up to date)."""


@dataclass(frozen=True)
class CarrierKeys:
    """What a key carrier generated, as sent to be certified."""

    signing_public_key: bytes
    transport_public_key: bytes
    attestation: bytes  # the chip's statement that it made these keys, for this token


class CarrierService:
    """``/v1/carriers``: enrollment and key updates."""

    def __init__(self, http: InstitutionHttp) -> None:
        self._http = http

    def enroll(self, token: str, keys: CarrierKeys) -> Enrolled:
        """Register an attested key carrier with an enrollment token."""
        doc = self._http.call_object(
            "POST",
            "/v1/carriers/enroll",
            {
                "token": token,
                "signing_public_key": b64e(keys.signing_public_key),
                "transport_public_key": b64e(keys.transport_public_key),
                "attestation": b64e(keys.attestation),
            },
        )
        return Enrolled.from_json(doc)

    def key_update(self, serial: int, *, from_epoch: int) -> KeyUpdate:
        """The KEY UPDATE sealed to the carrier from ``from_epoch`` to the current epoch
        (``key_update`` None when the carrier is up to date)."""
        path = f"/v1/carriers/{int(serial)}/key-update"
        return KeyUpdate.from_json(self._http.call_object("POST", path, {"from_epoch": from_epoch}))


@dataclass(frozen=True)
class Challenge(Answer, what="challenge"):
    """A one-time challenge for the key carrier to answer, and until when it is valid."""

    challenge: Annotated[bytes, Check(lambda b: len(b) == 32, "is not 32 bytes")]
    expires_at: int


@dataclass(frozen=True)
class SealedStatement(Answer, what="statement"):
    """The customer's statement sealed to the wallet's one-time key
    (:func:`safescan.api.account.open_statement`)."""

    sealed: Annotated[bytes, max_bytes(1 << 20)]


class AccountService:
    """``/v1/account``: the customer's statement, for a carrier that answers a challenge
    (protocol: :mod:`safescan.api.account`)."""

    def __init__(self, http: InstitutionHttp) -> None:
        self._http = http

    def challenge(self, carrier_serial: int, wallet_key: bytes) -> Challenge:
        """A challenge bound to this carrier and to the wallet's one-time key."""
        doc = self._http.call_object(
            "POST",
            "/v1/account/challenge",
            {"carrier_serial": carrier_serial, "wallet_key": b64e(wallet_key)},
        )
        return Challenge.from_json(doc)

    def statement(
        self, carrier_serial: int, wallet_key: bytes, expires_at: int, response: bytes
    ) -> SealedStatement:
        """The statement sealed to ``wallet_key``, for the carrier's ``response``."""
        doc = self._http.call_object(
            "POST",
            "/v1/account",
            {
                "carrier_serial": carrier_serial,
                "wallet_key": b64e(wallet_key),
                "expires_at": expires_at,
                "response": b64e(response),
            },
        )
        return SealedStatement.from_json(doc)


class WalletClient(ApiClient):
    """The institution's API for one wallet, one service per resource."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        super().__init__(base_url, timeout=timeout)
        self.payments = PaymentService(self.http)
        self.codes = CodeService(self.http)
        self.carriers = CarrierService(self.http)
        self.account = AccountService(self.http)
        self.keys = KeyService(self.http)
        self.revocations = RevocationService(self.http)
