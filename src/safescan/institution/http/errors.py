"""Errors as HTTP answers: one handler per error type, Starlette-style.

:data:`HANDLERS` is the app's ``exception_handlers``: Starlette picks the handler of the
nearest class in the raised exception's MRO (and, for an ``HTTPException``, the one registered
for its status code first). Every answer is ``{"error": {"type", "code", "message", "param"?}}``
with the status of :func:`safescan.api.errors.http_status` and, for the errors that mean "not
now", ``Retry-After`` (:func:`safescan.api.errors.retry_after`). The payment fast path
(:mod:`.wallet`) answers its errors with the same table through :func:`answer`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import Request

from safescan.api.errors import (
    InstitutionError,
    NestedTooDeeply,
    NumberOutOfRange,
    OutcomeUnknown,
    RateLimited,
    RequestInProgress,
    StorageError,
)
from safescan.api.fields import validation_error
from safescan.code.errors import (
    CertificateError,
    CodeError,
    KeyMaterialError,
    MalformedData,
    SafescanError,
)

log = logging.getLogger("safescan.institution.api")

RETRY_AFTER_S = 1  # what "not now" errors ask a client to wait

INTERNAL_MESSAGE = (
    "an internal error occurred; if this was a change, its outcome is not known: retry with the"
    " same Idempotency-Key to learn it"
)
INTERNAL_ERROR = {
    "error": {"type": "InternalError", "code": "internal_error", "message": INTERNAL_MESSAGE}
}


class ErrorDetail(BaseModel):
    """An error."""

    type: str
    code: str
    message: str
    param: str | None = None


class ErrorBody(BaseModel):
    """Every error response."""

    error: ErrorDetail


#: the error answers every operation documents (OpenAPI ``responses``)
RESPONSES: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 402, 403, 404, 409, 413, 415, 422, 429)
}


def error_body(exc: SafescanError) -> dict[str, Any]:
    """The JSON error object for ``exc``."""
    return {"error": exc.to_dict()}


@dataclass(frozen=True)
class ErrorAnswer:
    """What the API answers for one error: status, JSON body, ``Retry-After`` seconds."""

    status: int
    body: dict[str, Any]
    retry_after: int | None = None

    def response(self) -> JSONResponse:
        """As a framework response."""
        headers = None if self.retry_after is None else {"Retry-After": str(self.retry_after)}
        return JSONResponse(self.body, status_code=self.status, headers=headers)


# --- one answer per error type ------------------------------------------------------------------


def institution_error(exc: InstitutionError) -> ErrorAnswer:
    """The institution's own errors: the status each type names (the one an Idempotency-Key
    keeps for a final refusal, too)."""
    return ErrorAnswer(exc.status, error_body(exc))


def not_now(exc: InstitutionError) -> ErrorAnswer:
    """Rate limited, a request still in progress, the database unavailable: retry shortly."""
    return ErrorAnswer(exc.status, error_body(exc), RETRY_AFTER_S)


def bad_request(exc: SafescanError) -> ErrorAnswer:
    """A malformed payment code, unusable key material, any other safescan error: 400."""
    return ErrorAnswer(400, error_body(exc))


def unprocessable(exc: SafescanError) -> ErrorAnswer:
    """A well-formed code or certificate that does not hold (signature, expiry, ...): 422."""
    return ErrorAnswer(422, error_body(exc))


def invalid_fields(exc: RequestValidationError) -> ErrorAnswer:
    """A request the schema refuses: 400 ``invalid_request`` naming the first bad field."""
    return institution_error(validation_error(exc.errors()))


def out_of_descriptors(exc: OSError) -> ErrorAnswer:
    """An OS error: out of file descriptors is ``503 outcome_unknown`` (retry shortly with the
    same Idempotency-Key); any other is an internal error."""
    if exc.errno in (errno.EMFILE, errno.ENFILE):
        log.error("out of file descriptors: %s", exc.strerror)
        return not_now(
            OutcomeUnknown(
                "the institution has run out of file descriptors; if this was a change, its"
                " outcome is not known: retry shortly with the same Idempotency-Key to learn it"
            )
        )
    return internal_error(exc)


def internal_error(exc: Exception) -> ErrorAnswer:
    """Anything no other handler expected: logged, 500 with a generic body (no traceback, no
    detail of the exception goes to the client)."""
    log.error("internal error: %s", type(exc).__name__, exc_info=exc)
    return ErrorAnswer(500, INTERNAL_ERROR)


#: error type -> its answer; the nearest class of an exception's MRO decides
ANSWERS: Mapping[type[Exception], Callable[[Any], ErrorAnswer]] = {
    InstitutionError: institution_error,
    RateLimited: not_now,
    RequestInProgress: not_now,
    StorageError: not_now,
    MalformedData: bad_request,
    KeyMaterialError: bad_request,
    CodeError: unprocessable,
    CertificateError: unprocessable,
    SafescanError: bad_request,
    RequestValidationError: invalid_fields,
    OSError: out_of_descriptors,
    Exception: internal_error,
}


def answer(exc: Exception) -> ErrorAnswer:
    """The answer for ``exc``, chosen like Starlette does: the nearest class in its MRO."""
    for cls in type(exc).__mro__:
        found = ANSWERS.get(cls)
        if found is not None:
            return found(exc)
    return internal_error(exc)  # pragma: no cover - Exception is in the table


# --- the framework's own errors (no route, wrong method, ...) ----------------------------------


def body_parse_error(exc: HTTPException) -> InstitutionError | None:
    """What the framework's "error parsing the body" (a ``400`` raised *from* the parser's own
    exception, not a ``JSONDecodeError``) was: an integer beyond Python's 4,300 digits
    (``ValueError``, refused before any conversion work) or nesting beyond the recursion
    limit. None for anything else."""
    cause = exc.__cause__
    if exc.status_code != 400 or cause is None:
        return None
    if isinstance(cause, RecursionError):
        return NestedTooDeeply("the JSON body is nested too deeply")
    if isinstance(cause, ValueError) and "digits" in str(cause):
        return NumberOutOfRange(
            "the JSON body holds a number with too many digits for any field (an amount is at"
            " most 18 digits)"
        )
    return None


def _http_error(type_: str, code: str) -> Callable[[Request, Any], Awaitable[JSONResponse]]:
    async def handle(_request: Request, exc: HTTPException) -> JSONResponse:
        typed = body_parse_error(exc)
        if typed is not None:
            return institution_error(typed).response()
        return JSONResponse(
            {"error": {"type": type_, "code": code, "message": str(exc.detail)}},
            status_code=exc.status_code,
            headers=exc.headers,
        )

    return handle


def _handler(fn: Callable[[Any], ErrorAnswer]) -> Callable[[Request, Any], Awaitable[JSONResponse]]:
    async def handle(_request: Request, exc: Exception) -> JSONResponse:
        return fn(exc).response()

    handle.__name__ = handle.__qualname__ = fn.__name__
    return handle


#: the app's ``exception_handlers``: a status code (``HTTPException``) or an error type -> handler
HANDLERS: dict[int | type[Exception], Callable[[Request, Any], Awaitable[JSONResponse]]] = {
    404: _http_error("NotFound", "not_found"),
    405: _http_error("MethodNotAllowed", "method_not_allowed"),
    HTTPException: _http_error("HttpError", "http_error"),
    **{cls: _handler(fn) for cls, fn in ANSWERS.items()},
}

__all__ = [
    "ANSWERS",
    "HANDLERS",
    "INTERNAL_ERROR",
    "RESPONSES",
    "ErrorAnswer",
    "ErrorBody",
    "answer",
    "error_body",
]
