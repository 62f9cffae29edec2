"""The JSON forms of the signed wire objects, declared once for the institution's API and
its clients.

An authorization (:class:`safescan.code.authorization.Authorization`, signed by a key
carrier) and a receipt (:class:`~safescan.code.authorization.Receipt`, signed by the
institution) travel in JSON as standard base64 of their deterministic CBOR; a payment request
(``POST /v1/payments`` and its lookup twin) is ``{"code", "authorization"}``. Order lines are
:class:`safescan.code.payment.LineItem` (``to_json`` / ``to_cbor``).
"""

from __future__ import annotations

from dataclasses import dataclass

from safescan.api.encoding import b64d, b64e
from safescan.code.authorization import MAX_SIGNED_BYTES, Authorization, Receipt


def authorization_to_wire(auth: Authorization | bytes) -> str:
    """An authorization (or its CBOR bytes) as the ``authorization`` JSON field."""
    return b64e(auth.to_bytes() if isinstance(auth, Authorization) else auth)


def authorization_from_wire(text: str) -> bytes:
    """The CBOR bytes of an ``authorization`` JSON field (``InvalidRequest`` if not base64 or
    too large; parse them with :meth:`Authorization.from_bytes`)."""
    return b64d(text, param="authorization", max_bytes=MAX_SIGNED_BYTES)


def receipt_to_wire(receipt: Receipt | bytes) -> str:
    """A receipt (or its CBOR bytes) as the ``receipt`` JSON field."""
    return b64e(receipt.to_bytes() if isinstance(receipt, Receipt) else receipt)


def receipt_from_wire(text: str) -> Receipt:
    """A ``receipt`` JSON field, parsed strictly (its signature is not checked here)."""
    return Receipt.from_bytes(b64d(text, param="receipt", max_bytes=MAX_SIGNED_BYTES))


@dataclass(frozen=True)
class PaymentRequest:
    """A payment as the wallet sends it: the code text and the carrier's authorization."""

    code: str
    authorization: bytes

    def to_json(self) -> dict[str, str]:
        """``{"code", "authorization"}``."""
        return {"code": self.code, "authorization": authorization_to_wire(self.authorization)}
