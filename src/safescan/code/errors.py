"""Typed errors for everything in :mod:`safescan.code`.

Every failure a caller can meet is one of these, with a message a person understands.
``error.type`` is the class name; ``error.code`` is a stable snake_case identifier for APIs.
Raw library errors (cbor2, cryptography, zxing) never escape: they are wrapped here.
"""

from __future__ import annotations

from typing import Any


class SafescanError(Exception):
    """Base class of every error safescan raises on purpose."""

    code: str = "safescan_error"
    #: the seconds an answer's ``Retry-After`` asked for (set by safescan.client.errors; read
    #: by safescan.client.retry), None when the error came with none
    retry_after_s: int | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def type(self) -> str:
        """The error's class name, e.g. ``"CodeExpired"``."""
        return type(self).__name__

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description: ``{"type", "code", "message"}``."""
        return {"type": self.type, "code": self.code, "message": self.message}


# --- payment smart code -------------------------------------------------------------------


class CodeError(SafescanError):
    """A payment code could not be accepted."""

    code = "code_error"


class MalformedData(CodeError):
    """Bytes that are not the well-formed signed object they claim to be. Each kind is its own
    subclass, so code catches exactly the one it means (or this base for any of them):
    :class:`MalformedCode` (a payment code, and only that), :class:`MalformedAuthorization`,
    :class:`MalformedReceipt`, :class:`MalformedKeyUpdate`, :class:`MalformedProvisioning`,
    :class:`MalformedSchemeList`.

    On the wire they all keep the one form clients, carriers and stored Idempotency-Key
    refusals have always read: ``type`` ``MalformedCode``, ``code`` ``malformed_code`` (HTTP
    400; the card's reason ``MALFORMED_CODE``); the message says which object is malformed
    (docs/protocol.md, "Errors").
    """

    code = "malformed_code"

    @property
    def type(self) -> str:
        """``MalformedCode`` for every kind (the wire name)."""
        return "MalformedCode"


class MalformedCode(MalformedData):
    """The input is not a well-formed safescan payment code."""

    @property
    def type(self) -> str:
        """The class name, as for every other error (``OversizeInput``...)."""
        return type(self).__name__


class MalformedAuthorization(MalformedData):
    """A carrier's payment authorization is not well formed (shape, field type or range)."""


class MalformedReceipt(MalformedData):
    """An institution's payment receipt is not well formed."""


class MalformedKeyUpdate(MalformedData):
    """A sealed scheme-key update for a carrier is not well formed (or names another carrier)."""


class MalformedProvisioning(MalformedData):
    """A carrier's provisioning bundle is not well formed (or does not fit the carrier)."""


class MalformedSchemeList(MalformedData):
    """A signed scheme key list is not well formed."""


class OversizeInput(MalformedData):
    """An input larger than any valid object of its kind (a key update, a provisioning bundle,
    an EMV payload ...), refused before any decoding work. Not a payment code's error: an
    oversize payment code is :class:`OversizeCode` (both this and a :class:`MalformedCode`).

    On the wire: ``type`` the class name, ``code`` ``oversize_input`` (HTTP 400; the card's
    reason ``OVERSIZE_INPUT``)."""

    code = "oversize_input"

    @property
    def type(self) -> str:
        """The class name (``OversizeInput``, ``EmvOversizeError``)."""
        return type(self).__name__


class OversizeCode(OversizeInput, MalformedCode):
    """A payment code (text or binary) larger than any valid one: a bad payment code
    (:class:`MalformedCode`) that is also an :class:`OversizeInput`."""

    @property
    def type(self) -> str:
        """``OversizeInput``: the wire name an oversize code has always had."""
        return "OversizeInput"


class UnsupportedVersion(CodeError):
    """The code uses a format version this software does not support."""

    code = "unsupported_version"


class UnknownKeyId(CodeError):
    """The code names a key id that is unknown here."""

    code = "unknown_key_id"


class KeyRetired(CodeError):
    """The code is sealed to a scheme key that has been retired."""

    code = "key_retired"


class DecryptionFailed(CodeError):
    """The sealed code could not be opened: altered, or sealed to another key."""

    code = "decryption_failed"


class SignatureInvalid(CodeError):
    """A signature does not verify: the data was forged or altered."""

    code = "signature_invalid"


class CodeExpired(CodeError):
    """The code's validity period has ended."""

    code = "code_expired"


class CodeNotYetValid(CodeError):
    """The code's validity period has not started yet."""

    code = "code_not_yet_valid"


class InvalidAmount(CodeError):
    """An amount is zero, negative, out of range or inconsistent."""

    code = "invalid_amount"


class TotalMismatch(InvalidAmount):
    """The line items do not add up to the total."""

    code = "total_mismatch"


class InvalidNumber(InvalidAmount):
    """A money amount or quantity is not a whole number: a JSON boolean, string or decimal,
    or text that is not plain ASCII digits (``"1_0"``, ``"+5"``, ``"1e2"``)."""

    code = "invalid_number"


class UnknownCurrency(CodeError):
    """The currency is not an active ISO 4217 currency."""

    code = "unknown_currency"


class UnsafeText(CodeError):
    """A name contains control, bidirectional-override or invisible characters."""

    code = "unsafe_text"


# --- keys and certificates ------------------------------------------------------------------


class KeyMaterialError(SafescanError):
    """A key could not be loaded, stored or used."""

    code = "key_error"


class KeyFileError(KeyMaterialError):
    """A key file is unreadable, corrupt, or the passphrase is wrong."""

    code = "key_file_error"


class CertificateError(SafescanError):
    """A certificate is malformed, forged, expired, revoked or has the wrong role."""

    code = "certificate_error"


class CertificateExpired(CertificateError):
    """The certificate is outside its validity period."""

    code = "certificate_expired"


class CertificateRevoked(CertificateError):
    """The certificate's serial is on the institution's revocation list."""

    code = "certificate_revoked"


# --- EMVCo merchant-presented mode ----------------------------------------------------------


class EmvError(SafescanError):
    """An EMVCo MPM payload is invalid."""

    code = "emv_error"


class EmvCrcError(EmvError):
    """The CRC-16 in field 63 does not match the payload."""

    code = "emv_crc_error"


class EmvLengthError(EmvError):
    """A TLV length is not two digits, or runs past the end of the payload."""

    code = "emv_length_error"


class EmvDuplicateId(EmvError):
    """A data object ID appears twice in the same template."""

    code = "emv_duplicate_id"


class EmvMissingField(EmvError):
    """A mandatory data object is missing."""

    code = "emv_missing_field"


class EmvFormatError(EmvError):
    """A data object's value has the wrong format (e.g. non-numeric where numeric)."""

    code = "emv_format_error"


# --- QR images ------------------------------------------------------------------------------


class QrError(SafescanError):
    """A QR image could not be made or read."""

    code = "qr_error"


class ImageUnreadable(QrError):
    """The file is not an image this software can read."""

    code = "image_unreadable"


class NoCodeFound(QrError):
    """No QR code was found in the image."""

    code = "no_code_found"


class MultipleCodesFound(QrError):
    """The image holds several QR codes; which one to trust is ambiguous."""

    code = "multiple_codes_found"


class PayloadTooLarge(QrError):
    """The text does not fit in a QR code at the chosen error-correction level."""

    code = "payload_too_large"
