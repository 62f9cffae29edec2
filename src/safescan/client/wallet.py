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

from safescan.api.encoding import b64d, b64e
from safescan.api.errors import InvalidRequest, NotFound
from safescan.api.wire import PaymentRequest
from safescan.client.answers import CodeStatus, PaymentLookup, PaymentMade
from safescan.client.errors import InstitutionProtocolError
from safescan.client.http import DEFAULT_TIMEOUT, ApiClient, InstitutionHttp, JsonDoc
from safescan.client.public import KeyService, RevocationService
from safescan.client.retry import send_until_known


def _b64(doc: JsonDoc, name: str, max_bytes: int = 8192) -> bytes:
    try:
        return b64d(str(doc[name]), param=name, max_bytes=max_bytes)
    except (KeyError, InvalidRequest):
        raise InstitutionProtocolError(
            f"the institution's {name} is missing or not base64"
        ) from None


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
class Enrolled:
    """The institution's answer to an enrollment."""

    certificate: bytes  # the carrier's certificate (CBOR)
    bundle: bytes  # the sealed provisioning bundle for PERSONALIZE
    carrier_serial: int
    customer_id: str | None
    key_update: bytes | None  # the first sealed KEY UPDATE, if any


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
        try:
            serial = int(doc["carrier_serial"])
        except (KeyError, TypeError, ValueError):
            raise InstitutionProtocolError(
                "the institution's enrollment answer is malformed"
            ) from None
        first = doc.get("key_update")
        customer = doc.get("customer_id")
        return Enrolled(
            certificate=_b64(doc, "certificate"),
            bundle=_b64(doc, "bundle"),
            carrier_serial=serial,
            customer_id=customer if isinstance(customer, str) else None,
            key_update=_b64(doc, "key_update", 4096) if first else None,
        )

    def key_update(self, serial: int, *, from_epoch: int) -> bytes | None:
        """The KEY UPDATE sealed to the carrier from ``from_epoch`` to the current epoch, or
        None when the carrier is up to date."""
        doc = self._http.call_object(
            "POST", f"/v1/carriers/{serial}/key-update", {"from_epoch": from_epoch}
        )
        return _b64(doc, "key_update", 4096) if doc.get("key_update") else None


@dataclass(frozen=True)
class Challenge:
    """A one-time challenge for the key carrier to answer, and until when it is valid."""

    challenge: bytes
    expires_at: int


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
        try:
            value = b64d(str(doc["challenge"]), param="challenge", max_bytes=32)
            expires_at = int(doc["expires_at"])
        except (KeyError, TypeError, ValueError, InvalidRequest):
            raise InstitutionProtocolError("the institution's challenge is malformed") from None
        if len(value) != 32:
            raise InstitutionProtocolError("the institution's challenge is not 32 bytes")
        return Challenge(value, expires_at)

    def statement(
        self, carrier_serial: int, wallet_key: bytes, expires_at: int, response: bytes
    ) -> bytes:
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
        try:
            return b64d(str(doc["sealed"]), param="sealed", max_bytes=1 << 20)
        except (KeyError, InvalidRequest):
            raise InstitutionProtocolError("the institution's statement is malformed") from None


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
