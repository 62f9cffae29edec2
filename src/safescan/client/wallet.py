"""The institution's API as a wallet uses it: payments and their status lookup, the code
status, carrier enrollment and key updates, and the account statement (proved with the
carrier). One service per resource; typed parameters in, typed objects out.

    api = WalletClient(url)
    api.payments.create(PaymentRequest(code, auth_bytes), idempotency_key=key)
    api.codes.status(code)              # None when the institution offers no such lookup
    api.carriers.key_update(serial, from_epoch=3)
"""

from __future__ import annotations

from dataclasses import dataclass

from safescan.api.encoding import b64d, b64e
from safescan.api.errors import InvalidRequest, NotFound
from safescan.api.wire import PaymentRequest
from safescan.client.errors import InstitutionProtocolError
from safescan.client.http import DEFAULT_TIMEOUT, ApiClient, InstitutionHttp, JsonDoc
from safescan.client.public import KeyService, RevocationService


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

    def create(self, request: PaymentRequest, *, idempotency_key: str | None = None) -> JsonDoc:
        """Send the payment once (retry with the same key: see
        :func:`safescan.client.retry.send_until_known`; without a key it cannot be retried
        safely); the success answer carries the signed ``receipt`` and the ``payment_id``."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._http.call_object("POST", "/v1/payments", request.to_json(), headers=headers)

    def lookup(self, request: PaymentRequest, *, idempotency_key: str) -> JsonDoc:
        """What a payment sent with ``idempotency_key`` did (it also settles it):
        ``{"outcome": "succeeded" | "refused" | "not_processed", ...}``."""
        headers = {"Idempotency-Key": idempotency_key}
        return self._http.call_object(
            "POST", "/v1/payments/lookup", request.to_json(), headers=headers
        )


class CodeService:
    """``POST /v1/codes/status``: the institution's view of a code."""

    def __init__(self, http: InstitutionHttp) -> None:
        self._http = http

    def status(self, code: str) -> JsonDoc | None:
        """``{"state", "merchant_status", ...}``, or None when the institution has no such
        endpoint (404) or answers no JSON object. Other failures are typed errors."""
        try:
            doc = self._http.call("POST", "/v1/codes/status", {"code": code})
        except NotFound:
            return None
        return doc if isinstance(doc, dict) else None


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
