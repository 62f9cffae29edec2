"""The client's error vocabulary: every answer of the institution that is not a success
becomes the *same* typed error the institution raised (``OrderNotPayable``, ``CounterReplay``,
``PaymentRefused`` ...), rebuilt from the error body's ``code``; a network failure becomes
:class:`InstitutionUnreachable`. No raw ``httpx`` exception escapes the client package.
"""

from __future__ import annotations

import ssl
from typing import Literal

import httpx

from safescan.api import errors as inst_errors
from safescan.code.errors import SafescanError


class RemoteError(SafescanError):
    """The institution answered with an error this client has no type for."""

    code = "remote_error"

    def __init__(self, message: str, *, status: int = 0, remote_code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.remote_code = remote_code or self.code


class InstitutionUnreachable(SafescanError):
    """The institution could not be reached or did not answer (down, wrong address, network
    failure, timeout).

    ``maybe_delivered`` is False only when the request certainly never left this client (the
    connection could not even be opened); otherwise the institution may have received it and
    acted on it, and only asking (the request's status lookup) tells.
    """

    code = "institution_unreachable"

    def __init__(self, message: str, *, maybe_delivered: bool = True) -> None:
        super().__init__(message)
        self.maybe_delivered = maybe_delivered


class TlsVerificationFailed(InstitutionUnreachable):
    """The institution's address answered, but its certificate does not verify under the CA
    this client pins (``--institution-ca``, ``$SAFESCAN_TLS_CA``, the wallet's or the POS's
    pinned CA): the wrong CA was given, the certificate expired, or someone is in between.
    Nothing was sent (the handshake failed before any request)."""

    code = "tls_verification_failed"


def tls_verification_failure(exc: BaseException, origin: str) -> TlsVerificationFailed | None:
    """The :class:`TlsVerificationFailed` for ``exc`` when a certificate verification failure
    caused it (anywhere in its chain), else None."""
    seen: BaseException | None = exc
    for _ in range(8):  # httpx -> httpcore -> ssl
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            reason = str(seen.verify_message or "certificate verify failed")
            return TlsVerificationFailed(
                f"the institution at {origin} presented a certificate the pinned CA does not"
                f" verify ({reason}): check the CA given (--institution-ca, $SAFESCAN_TLS_CA)"
                " or whether someone is between you and the institution",
                maybe_delivered=False,
            )
        seen = seen.__cause__ or seen.__context__
    return None


class InstitutionProtocolError(SafescanError):
    """The institution's answer is not what the protocol says (not JSON, missing fields)."""

    code = "institution_protocol_error"


# A state-changing request got no definite answer (timeouts, connection cut, "in progress", a
# server error) and its status lookup could not be done either: it may or may not have been
# done (the same error the institution answers when a COMMIT's outcome is lost).
OutcomeUnknown = inst_errors.OutcomeUnknown


class RequestNotProcessed(SafescanError):
    """The status lookup found the request was never processed and withdrew it: it was not done
    and never will be (certain)."""

    code = "request_not_processed"


class RetrySettingInvalid(SafescanError):
    """``$SAFESCAN_RETRY_SECONDS`` is not a number of seconds from 0 to 3600."""

    code = "retry_setting_invalid"


class TrustFormatError(SafescanError):
    """Stored institution keys (in a POS or wallet configuration) are malformed."""

    code = "trust_format_error"


class ReceiptMismatch(SafescanError):
    """A receipt is validly signed but does not match the order it should pay."""

    code = "receipt_mismatch"


Outcome = Literal["refused", "not_sent", "unknown"]


def error_outcome(exc: SafescanError) -> Outcome:
    """What an error answer to a state-changing request says about the request:
    ``"refused"`` (a definite refusal: it was not done), ``"not_sent"`` (it certainly had no
    effect, but a retry may succeed: never delivered, rate-limited) or ``"unknown"`` (it may
    have been done: a timeout after sending, a cut connection, "in progress", a server-side
    error)."""
    if isinstance(exc, InstitutionUnreachable):
        return "unknown" if exc.maybe_delivered else "not_sent"
    if isinstance(exc, inst_errors.RateLimited):
        return "not_sent"  # refused at authentication, before anything ran
    if isinstance(exc, inst_errors.RequestInProgress | inst_errors.StorageError):
        return "unknown"
    if isinstance(exc, RemoteError):
        return "refused" if 400 <= exc.status < 500 else "unknown"
    if isinstance(exc, inst_errors.InstitutionError):
        return "refused" if 400 <= exc.status < 500 else "unknown"
    return "unknown"  # a malformed answer, anything else


def error_from_response(resp: httpx.Response) -> SafescanError:
    """The typed error for a non-2xx answer."""
    try:
        body = resp.json()
        err = body["error"]
        code, message = str(err["code"]), str(err["message"])
        param = err.get("param")
    except (ValueError, KeyError, TypeError):
        return _with_retry_after(
            RemoteError(
                f"the institution answered HTTP {resp.status_code} without an error description",
                status=resp.status_code,
            ),
            resp,
        )
    cls = inst_errors.error_class(code)
    if cls is not None:
        exc: SafescanError = cls(message, param=param if isinstance(param, str) else None)
    else:
        exc = RemoteError(message, status=resp.status_code, remote_code=code)
        exc.code = code
    return _with_retry_after(exc, resp)


def _with_retry_after(exc: SafescanError, resp: httpx.Response) -> SafescanError:
    """Remember the answer's ``Retry-After`` (delay-seconds form, 0-3600) on the error."""
    raw = resp.headers.get("retry-after", "").strip()
    # ASCII digits only: str.isdigit() is also true of "²" (int() raised ValueError: a crash
    # where the typed error was due) and of other scripts' digits
    if raw.isascii() and raw.isdigit() and int(raw) <= 3600:
        exc.retry_after_s = int(raw)
    return exc
