"""The client side of the institution's HTTP API, shared by the merchant terminal, the wallet
and the demo: one HTTP client with typed errors, the institution's published keys, receipts.

Every answer of the institution that is not a success becomes the *same* typed error the
institution raised (``OrderNotPayable``, ``CounterReplay``, ``PaymentRefused`` ...), rebuilt
from the error body's ``code``; a network failure becomes :class:`InstitutionUnreachable`.
No raw ``httpx`` exception escapes.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import httpx

from safescan.api import errors as inst_errors
from safescan.api.encoding import b64d
from safescan.api.errors import Unauthenticated
from safescan.code.authorization import Receipt
from safescan.code.certs import TrustStore
from safescan.code.errors import SafescanError
from safescan.code.keys import VerifyKey

DEFAULT_TIMEOUT = 10.0


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


ENV_RETRY_SECONDS = "SAFESCAN_RETRY_SECONDS"
DEFAULT_RETRY_SECONDS = 30.0  # longer than a cluster failover (about 5-8 s, docs/operations.md)
BACKOFF_CAP = 4.0  # the longest pause between two attempts (seconds), unless Retry-After says more
RETRYABLE_STATUSES = frozenset({502, 503, 504})


class RetrySettingInvalid(SafescanError):
    """``$SAFESCAN_RETRY_SECONDS`` is not a number of seconds from 0 to 3600."""

    code = "retry_setting_invalid"


def retry_budget(value: float | None = None) -> float:
    """How long (seconds) a state-changing request is retried before its status is looked up:
    ``value``, else ``$SAFESCAN_RETRY_SECONDS``, else 30 s (long enough to ride through a
    failover). A malformed setting is refused, never silently replaced."""
    if value is None:
        raw = os.environ.get(ENV_RETRY_SECONDS, "").strip()
        if not raw:
            return DEFAULT_RETRY_SECONDS
        try:
            value = float(raw)
        except ValueError:
            raise RetrySettingInvalid(
                f"${ENV_RETRY_SECONDS} must be a number of seconds (0-3600), not {raw[:40]!r}"
            ) from None
    if not 0 <= value <= 3600:  # also refuses NaN
        raise RetrySettingInvalid(f"the retry budget must be 0-3600 seconds, not {value}")
    return float(value)


def _retry_after(exc: SafescanError) -> float | None:
    """The ``Retry-After`` seconds the institution (or a proxy) sent with this error, if any."""
    wait = getattr(exc, "retry_after_s", None)
    return float(wait) if isinstance(wait, int | float) else None


def _worth_retrying(exc: SafescanError) -> bool:
    """Errors a failover produces (no connection, a cut connection, a timeout, 502/503/504, a
    lost COMMIT, "still in progress", a rate limit): the same request may succeed soon."""
    if isinstance(exc, InstitutionUnreachable | inst_errors.RateLimited):
        return True
    if isinstance(exc, inst_errors.RequestInProgress | inst_errors.StorageError):
        return True
    status = getattr(exc, "status", 0)
    return isinstance(status, int) and status in RETRYABLE_STATUSES


def send_until_known(
    attempt: Callable[[], Any],
    lookup: Callable[[], Any],
    what: str,
    *,
    budget: float | None = None,
    tries: int | None = None,
    lookups: int = 3,
    backoff: float = 0.5,
    cap: float = BACKOFF_CAP,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    jitter: Callable[[], float] = random.random,
) -> Any:
    """Send a state-changing request (every ``attempt()`` sends it with the same
    Idempotency-Key) until its outcome is known, and never guess it.

    Attempts are repeated on the errors a failover produces (see :func:`_worth_retrying`)
    with capped exponential back-off and jitter, or after the ``Retry-After`` the answer
    asked for, for at most ``budget`` seconds (:func:`retry_budget`: ``$SAFESCAN_RETRY_SECONDS``,
    30 s by default) and, when given, at most ``tries`` attempts. A definite refusal (a 4xx)
    is never retried. Then, if an attempt may have been delivered, the outcome is asked
    (``lookup()``, the endpoint's lookup twin, which settles the request) up to ``lookups``
    times.

    Returns the success answer. Raises the institution's typed refusal (certain: not done);
    :class:`InstitutionUnreachable` when no attempt ever left this client (certain: not done);
    :class:`RequestNotProcessed` when the status lookup says it was never processed (certain:
    not done, and never will be); and :class:`OutcomeUnknown` when neither the request nor its
    lookup got a definite answer. ``what`` names the answer's field in the lookup's
    ``succeeded`` document.
    """
    deadline = clock() + retry_budget(budget)
    maybe_done = False
    last: SafescanError | None = None
    n = 0
    while True:
        try:
            return attempt()
        except SafescanError as exc:
            kind = error_outcome(exc)
            if kind == "refused":
                raise
            maybe_done = maybe_done or kind == "unknown"
            last = exc
            retry = _worth_retrying(exc)
        n += 1
        if not retry or (tries is not None and n >= tries):
            break
        pause = min(cap, backoff * 2 ** min(n - 1, 16)) * (0.5 + 0.5 * jitter())
        asked = _retry_after(last)
        if asked is not None:
            pause = max(pause, min(asked, 60.0))
        if clock() + pause > deadline:
            break
        sleep(pause)
    assert last is not None
    if not maybe_done:
        raise last  # it never reached the institution (or was refused before running)
    for k in range(max(1, lookups)):
        try:
            doc = lookup()
        except SafescanError as exc:
            last = exc
        else:
            state = doc.get("outcome") if isinstance(doc, dict) else None
            if state == "succeeded" and isinstance(doc.get(what), dict):
                return doc[what]
            if state == "refused":
                raise inst_errors.error_from_dict(doc.get("error"), int(doc.get("status", 400)))
            if state == "not_processed":
                raise RequestNotProcessed(
                    str(doc.get("message", f"the {what} was never processed: nothing was done"))
                )
            last = InstitutionProtocolError("the institution's lookup answer is malformed")
        if k < lookups - 1:
            sleep(min(cap, backoff * 2**k))
    detail = last.message
    raise OutcomeUnknown(
        f"the institution did not confirm the {what} and could not be asked what happened"
        f" ({detail}): it may or may not have been done"
    )


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
    if raw.isdigit() and int(raw) <= 3600:
        exc.retry_after_s = int(raw)  # type: ignore[attr-defined]
    return exc


class InstitutionHttp:
    """A small synchronous HTTP client for the institution's API."""

    def __init__(self, base_url: str, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url.rstrip("/")
        self.http = httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool."""
        self.http.close()

    def __enter__(self) -> InstitutionHttp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send one request; raises :class:`InstitutionUnreachable` on network failure."""
        try:
            return self.http.request(method, path, content=body or None, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # no connection: the request never left
            raise InstitutionUnreachable(
                f"the institution at {self.base_url} cannot be reached ({type(exc).__name__})",
                maybe_delivered=False,
            ) from None
        except httpx.TimeoutException:
            raise InstitutionUnreachable(
                f"the institution at {self.base_url} did not answer in time"
            ) from None
        except httpx.HTTPError as exc:
            raise InstitutionUnreachable(
                f"the connection to the institution at {self.base_url} failed"
                f" ({type(exc).__name__})"
            ) from None

    def call(
        self,
        method: str,
        path: str,
        payload: Any = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """JSON in, JSON out; a typed error for any non-2xx answer."""
        body = b"" if payload is None else encode_json(payload)
        h = {"Content-Type": "application/json", **(headers or {})}
        return decode_answer(self.send(method, path, body=body, headers=h))


def encode_json(payload: Any) -> bytes:
    """The exact bytes sent (and, for merchants, signed)."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_answer(resp: httpx.Response) -> Any:
    """The JSON body of a 2xx answer, or the typed error."""
    if not 200 <= resp.status_code < 300:
        raise error_from_response(resp)
    try:
        return resp.json()
    except ValueError:
        raise InstitutionProtocolError("the institution's answer is not JSON") from None


class TrustFormatError(SafescanError):
    """Stored institution keys (in a POS or wallet configuration) are malformed."""

    code = "trust_format_error"


def trust_from_json(doc: object) -> TrustStore:
    """``{"kid": "hex public key"}`` -> a trust store."""
    if not isinstance(doc, dict) or not doc:
        raise TrustFormatError("trust must map institution key ids to public keys")
    keys: dict[int, VerifyKey] = {}
    for kid, hexkey in doc.items():
        try:
            keys[int(kid)] = VerifyKey(bytes.fromhex(str(hexkey)))
        except (ValueError, SafescanError):
            raise TrustFormatError(f"trust key {kid!r} is not a 32-byte hex public key") from None
    return TrustStore(keys)


def trust_to_json(trust: TrustStore) -> dict[str, str]:
    """Inverse of :func:`trust_from_json`."""
    return {str(k): v.raw.hex() for k, v in sorted(trust.institution_keys.items())}


def fetch_trust(remote: InstitutionHttp) -> TrustStore:
    """The institution's root keys from ``GET /v1/keys`` (trust on first use; pin them after)."""
    doc = remote.call("GET", "/v1/keys")
    try:
        keys = {
            int(k["kid"]): VerifyKey(base64.b64decode(k["public_key"])) for k in doc["root_keys"]
        }
    except (KeyError, TypeError, ValueError, SafescanError):
        raise InstitutionProtocolError("the institution's key list is malformed") from None
    if not keys:
        raise InstitutionProtocolError("the institution published no root key")
    return TrustStore(keys)


class ReceiptMismatch(SafescanError):
    """A receipt is validly signed but does not match the order it should pay."""

    code = "receipt_mismatch"


def verify_receipt(
    receipt_b64: str,
    trust: TrustStore,
    *,
    merchant_id: str,
    order_id: str | None = None,
    amount: int | None = None,
    currency: int | None = None,
    code_digest: bytes | None = None,
) -> Receipt:
    """Parse and verify an institution receipt, and check it is for what we expect."""
    try:
        raw = b64d(receipt_b64, param="receipt", max_bytes=1024)
    except SafescanError:
        raise InstitutionProtocolError("the receipt is not valid base64") from None
    receipt = Receipt.from_bytes(raw)
    receipt.verify(trust)
    expected = {
        "merchant": (receipt.merchant_id, merchant_id),
        "order": (receipt.order_id, order_id),
        "amount": (receipt.amount, amount),
        "currency": (receipt.currency, currency),
        "code": (receipt.code_digest, code_digest),
    }
    for what, (got, want) in expected.items():
        if want is not None and got != want:
            raise ReceiptMismatch(f"the receipt's {what} does not match the order")
    return receipt


class AdminApi:
    """The institution's administrator API."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 10.0) -> None:
        self.remote = InstitutionHttp(base_url, timeout=timeout)
        self._auth = {"Authorization": f"Bearer {token}"}

    def close(self) -> None:
        """Close connections."""
        self.remote.close()

    def __enter__(self) -> AdminApi:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, method: str, path: str, payload: Any = None) -> dict[str, Any]:
        """One administrator request."""
        return dict(self.remote.call(method, path, payload, headers=self._auth))

    def create_customer(self, name: str) -> str:
        """Open a customer; returns its id."""
        return str(self.call("POST", "/v1/admin/customers", {"name": name})["id"])

    def fund(self, customer_id: str, currency: str, amount: int) -> dict[str, Any]:
        """Credit a customer."""
        return self.call(
            "POST",
            f"/v1/admin/customers/{customer_id}/fund",
            {"currency": currency, "amount": amount},
        )

    def customer(self, customer_id: str) -> dict[str, Any]:
        """A customer with balances and carriers."""
        return self.call("GET", f"/v1/admin/customers/{customer_id}")

    def balance(self, customer_id: str, currency: str) -> int:
        """A customer's balance in one currency (minor units)."""
        for b in self.customer(customer_id).get("balances", []):
            if b.get("currency") == currency:
                return int(b["amount"])
        return 0

    def enrollment_token(self, customer_id: str) -> str:
        """A single-use token for enrolling one key carrier."""
        return str(self.issue_enrollment_token(customer_id)["token"])

    def issue_enrollment_token(
        self, customer_id: str, ttl_seconds: int | None = None
    ) -> dict[str, Any]:
        """A single-use enrollment token with its expiry (``token``, ``expires_at``)."""
        body = {} if ttl_seconds is None else {"ttl_seconds": ttl_seconds}
        return self.call("POST", f"/v1/admin/customers/{customer_id}/enrollment-tokens", body)

    def list_customers(self, limit: int = 100, after: str | None = None) -> dict[str, Any]:
        """Customers with balances (``customers``, ``has_more``)."""
        query = f"?limit={limit}" + (f"&after={after}" if after else "")
        return self.call("GET", f"/v1/admin/customers{query}")

    def revoke_merchant(self, merchant_id: str) -> dict[str, Any]:
        """Revoke a merchant and its code certificates."""
        return self.call("POST", f"/v1/admin/merchants/{merchant_id}/revoke", {})

    def settlement(self, date: str) -> list[dict[str, Any]]:
        """Settlement rows of every merchant for one UTC day (YYYY-MM-DD)."""
        return list(self.call("GET", f"/v1/admin/settlement?date={date}")["rows"])


ENV_ADMIN_TOKEN = "SAFESCAN_ADMIN_TOKEN"  # noqa: S105 - a variable name


def read_admin_token(path: Path | None) -> str:
    """The administrator token from a file (first line) or ``$SAFESCAN_ADMIN_TOKEN``."""
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise Unauthenticated(f"cannot read the token file {path}: {exc.strerror}") from None
        token = lines[0].strip() if lines else ""
    else:
        token = os.environ.get(ENV_ADMIN_TOKEN, "").strip()
    if not token:
        raise Unauthenticated(
            f"give the administrator token with --admin-token-file FILE or ${ENV_ADMIN_TOKEN}"
            " (`safescan institution init` printed it)"
        )
    return token
