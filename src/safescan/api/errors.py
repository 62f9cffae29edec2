"""Typed errors of the payment institution, each with the HTTP status the API answers with.

Every error derives from :class:`safescan.code.errors.SafescanError`, so ``type``/``code``/
``message`` work as everywhere else; :func:`http_status` maps any safescan error to a status.
"""

from __future__ import annotations

from typing import Any

from safescan.code.errors import (
    CertificateError,
    CodeError,
    KeyMaterialError,
    MalformedData,
    SafescanError,
    SignatureInvalid,
)


class InstitutionError(SafescanError):
    """Base class of the institution's own errors."""

    code = "institution_error"
    status = 400

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param

    def to_dict(self) -> dict[str, Any]:
        """JSON form, with ``param`` where it applies."""
        out = super().to_dict()
        if self.param is not None:
            out["param"] = self.param
        return out


class InvalidRequest(InstitutionError):
    """The request is malformed or a field is invalid."""

    code = "invalid_request"
    status = 400


class UnknownParameter(InvalidRequest):
    """A query parameter the route does not declare (a typo, a parameter of another route or
    version): refused, never silently ignored (``param`` names it)."""

    code = "unknown_parameter"


class DuplicateParameter(InvalidRequest):
    """A query parameter given more than once (``?limit=1&limit=500``): refused, since readers
    disagree on which one counts (``param`` names it)."""

    code = "duplicate_parameter"


class DuplicateKey(InvalidRequest):
    """A JSON body naming one key twice in an object (``{"amount": 1, "amount": 999}``):
    refused, since readers disagree on which one counts (``param`` names it)."""

    code = "duplicate_key"


class BodyNotAllowed(InvalidRequest):
    """A body sent with a GET or HEAD request (it would be ignored): refused."""

    code = "body_not_allowed"


class UnsupportedMediaType(InvalidRequest):
    """A body that is not ``application/json`` (UTF-8): another media type, a charset other
    than UTF-8, two Content-Type headers, a byte-order mark or UTF-16."""

    code = "unsupported_media_type"
    status = 415


class BodyTooLarge(InvalidRequest):
    """The request body is larger than the limit; refused before parsing."""

    code = "body_too_large"
    status = 413


class NumberOutOfRange(InvalidRequest):
    """A JSON number no field could hold: an integer of thousands of digits (Python refuses to
    read one beyond 4,300 digits, a bound against quadratic conversion time) or one beyond the
    range of a double (``1e400``). Refused with its own code, never read."""

    code = "number_out_of_range"


class NestedTooDeeply(InvalidRequest):
    """A JSON body nested deeper than the parser's recursion allows (``[[[[...]]]]``)."""

    code = "nested_too_deeply"


class WebhookUrlRefused(InvalidRequest):
    """The webhook URL is malformed or names an address webhooks may not go to (SSRF)."""

    code = "webhook_url_refused"


class Unauthenticated(InstitutionError):
    """Missing or invalid credentials or request signature."""

    code = "unauthenticated"
    status = 401


class ReplayedRequest(Unauthenticated):
    """The request's nonce was already used, or its timestamp is out of tolerance."""

    code = "replayed_request"


class InvalidApiKey(Unauthenticated):
    """The Bearer API key is malformed, unknown, wrong, expired or revoked (HTTP 401)."""

    code = "invalid_api_key"


class ApiKeyInUrl(Unauthenticated):
    """An API key was sent in the URL (query string), where logs and histories keep it:
    refused; keys go in ``Authorization: Bearer``."""

    code = "api_key_in_url"


class Forbidden(InstitutionError):
    """The caller may not do this (e.g. a revoked merchant, another merchant's order)."""

    code = "forbidden"
    status = 403


class InsufficientScope(Forbidden):
    """The API key is valid but lacks the scope this call needs (``param`` names it)."""

    code = "insufficient_scope"


class AttestationRefused(Forbidden):
    """Enrollment refused: the keys do not come with a valid attestation of a genuine carrier
    (missing, self-signed, another chip's, replayed, or an untrusted or revoked manufacturer)."""

    code = "attestation_refused"


class NotFound(InstitutionError):
    """No such object (or not visible to the caller).

    Each meaning is its own subclass (:class:`UnknownMerchant`, :class:`UnknownOrder` ...), so
    code catches and maps exactly the one it means. On the wire they all keep this class's
    ``type`` and ``code`` (``NotFound``, ``not_found``; ``param`` names the field): clients and
    the refusals stored for Idempotency-Keys read exactly as before.
    """

    code = "not_found"
    status = 404

    @property
    def type(self) -> str:
        """``NotFound`` for every subclass (the wire name)."""
        return "NotFound"


class UnknownMerchant(NotFound):
    """No merchant by this id."""


class UnknownCustomer(NotFound):
    """No customer by this id."""


class UnknownCarrier(NotFound):
    """No key carrier by this serial."""


class UnknownOrder(NotFound):
    """No order by this id for this merchant (another merchant's order is not visible)."""


class UnknownPayment(NotFound):
    """No payment by this id for this merchant (another merchant's payment is not visible)."""


class UnknownCheckoutSession(NotFound):
    """No checkout session by this id (for this merchant: another merchant's is not visible)."""


class UnknownEvent(NotFound):
    """No event by this id for this merchant."""


class UnknownApiKey(NotFound):
    """No API key by this id for this merchant (another merchant's key is not visible)."""


class UnknownManufacturerKey(NotFound):
    """No carrier-manufacturer key by this key id."""


class UnknownAdminToken(NotFound):
    """No live administrator token by this id."""


class Conflict(InstitutionError):
    """The request conflicts with the current state."""

    code = "conflict"
    status = 409


class IdempotencyConflict(Conflict):
    """The Idempotency-Key was already used with a different request body."""

    code = "idempotency_conflict"


class RequestInProgress(Conflict):
    """A request with this Idempotency-Key is still being processed (or a write is still
    running): its outcome is not known yet. Retry with the same key after ``Retry-After``
    seconds; never a final answer."""

    code = "request_in_progress"


class RequestWithdrawn(Conflict):
    """The request's outcome was looked up before it was processed, which withdrew it: it was
    not done, and never will be (the answer its Idempotency-Key keeps)."""

    code = "request_withdrawn"


class ApiKeyAlreadyCreated(Conflict):
    """This Idempotency-Key already made (or rotated to) an API key. The key's secret was in
    that first answer only and is never stored, so a retry cannot show it again: the message
    names the key; if the first answer was lost, revoke that key and make another."""

    code = "api_key_already_created"


class OrderNotPayable(Conflict):
    """The order is already paid, closed or expired."""

    code = "order_not_payable"


class OrderNotRefundable(Conflict):
    """The order is not paid, or the refund exceeds what is left to refund."""

    code = "order_not_refundable"


class CounterReplay(Conflict):
    """The carrier's counter is not greater than one already seen: a replayed authorization."""

    code = "counter_replay"


class PaymentRefused(InstitutionError):
    """The authorization does not match the code, order or carrier."""

    code = "payment_refused"
    status = 422


class InsufficientFunds(PaymentRefused):
    """The customer's balance is too low for this payment."""

    code = "insufficient_funds"
    status = 402


class CarrierRevoked(PaymentRefused):
    """The key carrier has been revoked or is unknown."""

    code = "carrier_revoked"
    status = 403


class RateLimited(InstitutionError):
    """Too many requests for this merchant; retry after a short wait."""

    code = "rate_limited"
    status = 429


class StorageError(InstitutionError):
    """The database could not complete the operation (after retries)."""

    code = "storage_error"
    status = 503


class OutcomeUnknown(StorageError):
    """The database connection was lost while a change was being committed: it may or may not
    have been applied. Retrying with the same Idempotency-Key returns the real outcome."""

    code = "outcome_unknown"


class DatabaseRolledBack(StorageError):
    """The database is older than what the institution last wrote (restored from an older
    copy): nothing is served until an operator reconciles it (``institution reconcile``)."""

    code = "database_rolled_back"


class ConfigError(InstitutionError):
    """The institution is not configured correctly (database URL, keys, passphrase)."""

    code = "config_error"
    status = 500


class AuditFailure(InstitutionError):
    """An invariant of the ledger or the audit log does not hold."""

    code = "audit_failure"
    status = 500


def _error_classes() -> dict[str, type[InstitutionError]]:
    table: dict[str, type[InstitutionError]] = {}
    stack: list[type[InstitutionError]] = [InstitutionError]
    while stack:
        cls = stack.pop()
        table.setdefault(cls.code, cls)
        stack.extend(cls.__subclasses__())
    return table


def error_class(code: str) -> type[InstitutionError] | None:
    """The error type with this ``code`` (None for a code this vocabulary does not have)."""
    return _error_classes().get(code)


def error_from_dict(err: Any, status: int) -> InstitutionError:
    """Rebuild the typed error from its JSON object (``{"code", "message", "param"?}``); an
    unknown code becomes a plain :class:`InstitutionError` with that code and ``status``."""
    doc = err if isinstance(err, dict) else {}
    code, message = str(doc.get("code", "")), str(doc.get("message", "an error"))
    param = doc.get("param")
    cls = error_class(code)
    exc = (cls or InstitutionError)(message, param=param if isinstance(param, str) else None)
    if cls is None:
        exc.code, exc.status = code or InstitutionError.code, status
    return exc


def retry_after(exc: SafescanError) -> int | None:
    """Seconds a client should wait before retrying (the ``Retry-After`` header), for the
    errors that mean "not now" rather than "no": rate limits, a request still in progress, an
    unavailable database."""
    if isinstance(exc, RateLimited | RequestInProgress | StorageError):
        return 1
    return None


def http_status(exc: SafescanError) -> int:
    """The HTTP status for any safescan error."""
    if isinstance(exc, InstitutionError):
        return exc.status
    if isinstance(exc, MalformedData | KeyMaterialError):
        return 400
    if isinstance(exc, SignatureInvalid | CodeError | CertificateError):
        return 422
    return 400
